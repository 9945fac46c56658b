//! Payload formats: a [`Notice`] rendered for one webhook as the request it will get (URL,
//! content type, body), secrets masked.
//!
//! - `generic`: [`Notice::generic_body`], a versioned JSON document (README, "Webhooks").
//! - `slack`: an incoming-webhook message, `text` plus one `attachments` entry with a status
//!   `color`, a title linking to the run, and fields.
//! - `discord`: `content` plus one of `embeds`, with an integer `color`.
//! - `teams`: an Office 365 connector `MessageCard` with `themeColor`, facts and an
//!   `OpenUri` action.
//! - `github_status`: a commit status for `run.*` events, POSTed to
//!   `{api}/repos/{owner}/{repo}/statuses/{sha}`.
//! - any format with a `template`: the minijinja template rendered (Strict undefined) with
//!   [`Notice::template_context`]; sent as JSON when the text parses as JSON, else as text.
//!
//! What a delivery stores as its body is a [`Rendered`] envelope, so the worker sends exactly
//! what was decided when the event happened, even after a restart.

use serde_json::{Value, json};

use super::event::{EventKind, Notice};
use crate::config::{WebhookConfig, WebhookFormat};
use crate::model::fmt::duration_ms as human_duration;
use crate::model::mask::Masker;

/// The GitHub API used by `github_status` when the webhook sets no `api`.
pub(crate) const DEFAULT_GITHUB_API: &str = "https://api.github.com";

/// Content type of JSON bodies.
pub(crate) const JSON: &str = "application/json";
/// Content type of template output that is not JSON.
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";

/// Why a notice cannot be rendered for a webhook.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenderError {
    /// The webhook's template does not compile or fails (an undefined variable, ...).
    #[error("template: {0}")]
    Template(String),
}

/// One request, ready to be queued: what the outbox row's body holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rendered {
    /// Where to POST.
    pub(crate) url: String,
    /// `application/json` or `text/plain; charset=utf-8`.
    pub(crate) content_type: &'static str,
    /// The body: JSON, or a string sent as is.
    pub(crate) payload: Value,
}

impl Rendered {
    /// The envelope stored as the delivery's body.
    pub(crate) fn to_envelope(&self) -> Value {
        json!({
            "url": self.url,
            "content_type": self.content_type,
            "payload": self.payload,
        })
    }

    /// Reads a stored envelope back; `None` when it is not one.
    pub(crate) fn from_envelope(body: &Value) -> Option<Rendered> {
        let url = body.get("url")?.as_str()?.to_string();
        let content_type = match body.get("content_type").and_then(Value::as_str) {
            Some(JSON) | None => JSON,
            Some(_) => TEXT,
        };
        Some(Rendered {
            url,
            content_type,
            payload: body.get("payload")?.clone(),
        })
    }

    /// The bytes sent: a string payload as is, anything else as compact JSON.
    pub(crate) fn body_bytes(&self) -> Vec<u8> {
        match &self.payload {
            Value::String(s) => s.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap_or_default(),
        }
    }
}

/// Status colours (hex, without `#`).
mod colour {
    pub(super) const SUCCESS: &str = "2EB886";
    pub(super) const FAILURE: &str = "D50200";
    pub(super) const WARNING: &str = "DAA038";
    pub(super) const NEUTRAL: &str = "808080";
    pub(super) const INFO: &str = "439FE0";
}

/// The status colour of a notice (hex `RRGGBB`).
pub(crate) fn status_colour(notice: &Notice) -> &'static str {
    match notice.kind {
        EventKind::RunSucceeded => colour::SUCCESS,
        EventKind::RunFailed | EventKind::StepFailed | EventKind::Escalation => colour::FAILURE,
        EventKind::RunCancelled => colour::NEUTRAL,
        EventKind::RunQueued | EventKind::RunStarted | EventKind::RollbackStarted => colour::INFO,
        EventKind::RollbackFinished => {
            let ok = notice
                .details
                .as_ref()
                .and_then(|d| d.get("status"))
                .and_then(Value::as_str)
                == Some("succeeded");
            if ok { colour::SUCCESS } else { colour::FAILURE }
        }
        EventKind::StepRetrying | EventKind::HandlerNotify | EventKind::Anomaly => colour::WARNING,
    }
}

fn short_commit(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn step_id(notice: &Notice) -> Option<&str> {
    notice.step.as_ref()?.get("id")?.as_str()
}

/// One line saying what happened, in plain text.
pub(crate) fn headline(notice: &Notice) -> String {
    let wf = &notice.workflow;
    let run = notice
        .run
        .as_ref()
        .map(|r| format!(" run {}", r.run_id))
        .unwrap_or_default();
    let step = step_id(notice).unwrap_or("?");
    let after = notice
        .duration_ms()
        .map(|ms| format!(" after {}", human_duration(ms)))
        .unwrap_or_default();
    match notice.kind {
        EventKind::RunQueued => format!("{wf}{run} queued"),
        EventKind::RunStarted => format!("{wf}{run} started"),
        EventKind::RunSucceeded => format!("{wf}{run} succeeded{after}"),
        EventKind::RunFailed => format!("{wf}{run} failed{after}"),
        EventKind::RunCancelled => format!("{wf}{run} was cancelled{after}"),
        EventKind::StepFailed => format!("{wf}{run}: step {step} failed"),
        EventKind::StepRetrying => {
            let delay = notice
                .step
                .as_ref()
                .and_then(|s| s.get("delay_ms"))
                .and_then(Value::as_i64)
                .map(|ms| format!(" in {}", human_duration(ms)))
                .unwrap_or_default();
            format!("{wf}{run}: step {step} failed, retrying{delay}")
        }
        EventKind::RollbackStarted => format!("{wf}{run}: rollback started"),
        EventKind::RollbackFinished => {
            let status = notice
                .details
                .as_ref()
                .and_then(|d| d.get("status"))
                .and_then(Value::as_str)
                .unwrap_or("finished");
            format!("{wf}{run}: rollback {status}")
        }
        EventKind::Escalation => format!("{wf}{run}: step {step} escalated"),
        EventKind::HandlerNotify => format!("{wf}{run}: error handler matched step {step}"),
        EventKind::Anomaly => {
            let kind = notice
                .details
                .as_ref()
                .and_then(|d| d.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or("anomaly");
            format!("{wf}: anomaly ({kind})")
        }
    }
}

/// The (label, value) facts every chat format shows, in order; empty ones left out.
pub(crate) fn facts(notice: &Notice) -> Vec<(&'static str, String)> {
    let mut out = vec![("Workflow", notice.workflow.clone())];
    let mut push = |label: &'static str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push((label, v));
        }
    };
    let run = notice.run.as_ref();
    push("Status", run.map(|r| r.status.as_str().to_string()));
    push("Repository", run.and_then(|r| r.repo.clone()));
    push("Branch", run.and_then(|r| r.branch.clone()));
    push(
        "Commit",
        run.and_then(|r| r.commit.as_deref())
            .map(|c| short_commit(c).to_string()),
    );
    push("Duration", notice.duration_ms().map(human_duration));
    push("Trigger", run.map(|r| r.trigger.as_str().to_string()));
    let step = notice.step.as_ref().map(|s| {
        let id = s.get("id").and_then(Value::as_str).unwrap_or("?");
        let class = s.get("error_class").and_then(Value::as_str);
        let code = s.get("exit_code").and_then(Value::as_i64);
        match (class, code) {
            (Some(c), Some(x)) => format!("{id} ({c}, exit code {x})"),
            (Some(c), None) => format!("{id} ({c})"),
            (None, Some(x)) => format!("{id} (exit code {x})"),
            (None, None) => id.to_string(),
        }
    });
    push(
        if notice.kind.is_run_end() {
            "Failing step"
        } else {
            "Step"
        },
        step,
    );
    push("Error", notice.error.as_ref().map(|e| clip(e, 900)));
    out
}

fn slack(notice: &Notice) -> Value {
    let title = headline(notice);
    let url = notice.url();
    let text = match url {
        Some(u) => format!("<{u}|{}>", slack_escape(&title)),
        None => slack_escape(&title),
    };
    let fields: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(label, value)| {
            json!({"title": label, "value": slack_escape(&value),
                   "short": !matches!(label, "Error" | "Failing step" | "Step")})
        })
        .collect();
    let mut attachment = json!({
        "color": format!("#{}", status_colour(notice)),
        "fallback": title,
        "title": title,
        "fields": fields,
        "footer": "agent",
        "ts": notice.occurred_at.timestamp(),
    });
    if let Some(u) = url {
        attachment["title_link"] = json!(u);
    }
    json!({ "text": text, "attachments": [attachment] })
}

/// Slack's three control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn discord(notice: &Notice) -> Value {
    let title = clip(&headline(notice), 256);
    let fields: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(label, value)| {
            json!({"name": label, "value": clip(&value, 1024),
                   "inline": !matches!(label, "Error" | "Failing step" | "Step")})
        })
        .collect();
    let colour = i64::from_str_radix(status_colour(notice), 16).unwrap_or(0);
    let mut embed = json!({
        "title": title,
        "color": colour,
        "fields": fields,
        "timestamp": crate::model::report::rfc3339(notice.occurred_at),
        "footer": {"text": "agent"},
    });
    if let Some(u) = notice.url() {
        embed["url"] = json!(u);
    }
    json!({ "content": clip(&headline(notice), 2000), "embeds": [embed] })
}

fn teams(notice: &Notice) -> Value {
    let title = headline(notice);
    let facts: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(label, value)| json!({"name": label, "value": value}))
        .collect();
    let mut card = json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "themeColor": status_colour(notice),
        "summary": title,
        "title": title,
        "sections": [{"facts": facts, "markdown": false}],
    });
    if let Some(u) = notice.url() {
        card["potentialAction"] = json!([{
            "@type": "OpenUri",
            "name": "View run",
            "targets": [{"os": "default", "uri": u}],
        }]);
    }
    card
}

/// The commit status of a `run.*` event; `None` for other events and for runs without a
/// commit or a repository `full_name`.
fn github_status(webhook: &WebhookConfig, notice: &Notice) -> Option<(String, Value)> {
    let state = match notice.kind {
        EventKind::RunQueued | EventKind::RunStarted => "pending",
        EventKind::RunSucceeded => "success",
        EventKind::RunFailed => "failure",
        EventKind::RunCancelled => "error",
        _ => return None,
    };
    let sha = notice.run.as_ref()?.commit.as_deref()?;
    let full_name = notice.repo_full_name.as_deref()?;
    let api = webhook
        .api
        .as_deref()
        .unwrap_or(DEFAULT_GITHUB_API)
        .trim_end_matches('/');
    let url = format!("{api}/repos/{full_name}/statuses/{sha}");
    let mut description = headline(notice);
    if let (EventKind::RunFailed, Some(step)) = (notice.kind, step_id(notice)) {
        description = format!("{description} (step {step})");
    }
    let mut body = json!({
        "state": state,
        "context": format!("agent/{}", notice.workflow),
        "description": clip(&description, 140),
    });
    if let Some(u) = notice.url() {
        body["target_url"] = json!(u);
    }
    Some((url, body))
}

/// Renders a notice for a webhook. `Ok(None)`: this format has nothing to say about it
/// (`github_status` for a non-run event or a run with no commit or `full_name`).
pub(crate) fn render(
    webhook: &WebhookConfig,
    notice: &Notice,
    masker: &Masker,
) -> Result<Option<Rendered>, RenderError> {
    let (url, built) = match webhook.format {
        WebhookFormat::Generic => (webhook.url.clone(), notice.generic_body()),
        WebhookFormat::Slack => (webhook.url.clone(), slack(notice)),
        WebhookFormat::Discord => (webhook.url.clone(), discord(notice)),
        WebhookFormat::Teams => (webhook.url.clone(), teams(notice)),
        WebhookFormat::GithubStatus => match github_status(webhook, notice) {
            Some(pair) => pair,
            None => return Ok(None),
        },
    };
    let (content_type, mut payload) = match &webhook.template {
        Some(template) => {
            let text = render_template(template, &notice.template_context())?;
            let kind = if serde_json::from_str::<Value>(&text).is_ok() {
                JSON
            } else {
                TEXT
            };
            (kind, Value::String(text))
        }
        None => (JSON, built),
    };
    masker.mask_value(&mut payload);
    Ok(Some(Rendered {
        url,
        content_type,
        payload,
    }))
}

/// Renders a minijinja template with Strict undefined (a missing variable is an error).
pub(crate) fn render_template(template: &str, context: &Value) -> Result<String, RenderError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.render_str(template, context)
        .map_err(|e| RenderError::Template(template_error(&e)))
}

/// Checks that a template compiles (at start-up, so a typo is reported before any event).
pub(crate) fn check_template(template: &str) -> Result<(), RenderError> {
    let env = minijinja::Environment::new();
    env.template_from_str(template)
        .map(|_| ())
        .map_err(|e| RenderError::Template(template_error(&e)))
}

fn template_error(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookRetry;

    fn hook(format: WebhookFormat) -> WebhookConfig {
        WebhookConfig {
            name: "h".into(),
            url: "http://127.0.0.1:9/hook".into(),
            events: Vec::new(),
            workflows: Vec::new(),
            format,
            api: Some("http://127.0.0.1:9/gh/".into()),
            token_env: Some("GH_TOKEN".into()),
            template: None,
            secret: None,
            headers: Default::default(),
            retry: WebhookRetry::default(),
            rate_limit: None,
        }
    }

    fn failed() -> Notice {
        let mut n = Notice::new(EventKind::RunFailed, "deploy");
        n.run = Some(super::super::event::RunSummary {
            run_id: "7".into(),
            workflow: "deploy".into(),
            repo: Some("app".into()),
            status: crate::model::RunStatus::Failed,
            trigger: crate::model::status::TriggerKind::Push,
            branch: Some("main".into()),
            commit: Some("0123456789abcdef0123".into()),
            created_at: "2026-01-01T00:00:00Z".into(),
            started_at: None,
            finished_at: None,
            duration_ms: Some(3200),
            url: "http://127.0.0.1:8420/api/v1/runs/7".into(),
        });
        n.step = Some(json!({"id": "build", "status": "failed", "exit_code": 2,
                             "error_class": "exit_code"}));
        n.error = Some("step `build` failed: hunter2 leaked".into());
        n.repo_full_name = Some("me/app".into());
        n.report = Some(super::super::event::NoticeReport::EndedEarly {
            run_id: "7".into(),
            workflow: "deploy".into(),
            status: crate::model::RunStatus::Failed,
            stages: Vec::new(),
            error: None,
        });
        n
    }

    fn masker() -> Masker {
        Masker::new(["hunter2"])
    }

    fn rendered(format: WebhookFormat) -> Rendered {
        render(&hook(format), &failed(), &masker())
            .expect("renders")
            .expect("something to send")
    }

    #[test]
    fn slack_shape() {
        let r = rendered(WebhookFormat::Slack);
        assert_eq!(r.url, "http://127.0.0.1:9/hook");
        let p = &r.payload;
        assert!(
            p["text"]
                .as_str()
                .expect("text")
                .contains("deploy run 7 failed")
        );
        let a = &p["attachments"][0];
        assert_eq!(a["color"], "#D50200");
        assert_eq!(a["title_link"], "http://127.0.0.1:8420/api/v1/runs/7");
        let fields: Vec<(String, String)> = a["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| {
                (
                    f["title"].as_str().expect("title").to_string(),
                    f["value"].as_str().expect("value").to_string(),
                )
            })
            .collect();
        for (label, value) in [
            ("Repository", "app"),
            ("Branch", "main"),
            ("Commit", "0123456789ab"),
            ("Duration", "3.2s"),
            ("Failing step", "build (exit_code, exit code 2)"),
            ("Error", "step `build` failed: *** leaked"),
        ] {
            assert!(
                fields.contains(&(label.to_string(), value.to_string())),
                "{label}: {fields:?}"
            );
        }
        assert!(!r.body_bytes().windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn discord_and_teams_shapes() {
        let d = rendered(WebhookFormat::Discord).payload;
        assert!(d["content"].as_str().expect("content").contains("failed"));
        assert_eq!(d["embeds"][0]["color"], 0xD50200);
        assert_eq!(d["embeds"][0]["url"], "http://127.0.0.1:8420/api/v1/runs/7");
        let t = rendered(WebhookFormat::Teams).payload;
        assert_eq!(t["@type"], "MessageCard");
        assert_eq!(t["themeColor"], "D50200");
        assert_eq!(
            t["potentialAction"][0]["targets"][0]["uri"],
            "http://127.0.0.1:8420/api/v1/runs/7"
        );
    }

    #[test]
    fn generic_is_versioned() {
        let g = rendered(WebhookFormat::Generic).payload;
        assert_eq!(g["version"], 1);
        assert_eq!(g["event"], "run.failed");
        assert_eq!(g["run"]["commit"], "0123456789abcdef0123");
        assert_eq!(g["step"]["id"], "build");
        assert_eq!(g["error"], "step `build` failed: *** leaked");
    }

    #[test]
    fn github_status_targets_the_commit() {
        let r = rendered(WebhookFormat::GithubStatus);
        assert_eq!(
            r.url,
            "http://127.0.0.1:9/gh/repos/me/app/statuses/0123456789abcdef0123"
        );
        assert_eq!(r.payload["state"], "failure");
        assert_eq!(r.payload["context"], "agent/deploy");
        assert_eq!(
            r.payload["target_url"],
            "http://127.0.0.1:8420/api/v1/runs/7"
        );
        let step = Notice::new(EventKind::StepFailed, "deploy");
        assert!(
            render(&hook(WebhookFormat::GithubStatus), &step, &masker())
                .expect("renders")
                .is_none()
        );
    }

    #[test]
    fn templates_are_strict_and_masked() {
        let mut h = hook(WebhookFormat::Generic);
        h.template = Some(r#"{"msg": "{{ workflow }} {{ status }} {{ error }}"}"#.into());
        let r = render(&h, &failed(), &masker())
            .expect("renders")
            .expect("sent");
        assert_eq!(r.content_type, JSON);
        assert_eq!(
            String::from_utf8(r.body_bytes()).expect("utf-8"),
            r#"{"msg": "deploy failed step `build` failed: *** leaked"}"#
        );
        h.template = Some("{{ workflow }} at {{ commit[:7] }}".into());
        let r = render(&h, &failed(), &masker())
            .expect("renders")
            .expect("sent");
        assert_eq!(r.content_type, TEXT);
        assert_eq!(r.body_bytes(), b"deploy at 0123456");
        h.template = Some("{{ no_such_thing }}".into());
        let err = render(&h, &failed(), &masker()).expect_err("strict");
        assert!(err.to_string().contains("undefined"), "{err}");
        assert!(check_template("{% if %}").is_err());
    }

    #[test]
    fn envelopes_round_trip() {
        let r = rendered(WebhookFormat::Slack);
        assert_eq!(Rendered::from_envelope(&r.to_envelope()), Some(r));
        assert!(Rendered::from_envelope(&json!({"text": "x"})).is_none());
    }
}
