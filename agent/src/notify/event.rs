//! What a notification is about: the event kinds webhooks subscribe to, the [`Notice`] every
//! payload format is rendered from, and how a webhook's `events` and `workflows` filters
//! match a notice.
//!
//! A notice carries typed pieces (the [`RunSummary`], the [`NoticeReport`]) and plain JSON
//! (the step, the event's details) so that the formats in [`super::format`] never touch the
//! store; building it from a daemon event (and the run's
//! stored record) is the notifier's job ([`super::Notifier`]).

use chrono::{DateTime, Utc};
use globset::{Glob, GlobMatcher};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::WebhookConfig;
use crate::model::StepStatus;
use crate::model::report::{RunReport, StageReport, rfc3339};
use crate::store::{RunId, RunRecord, RunStatus, TriggerKind};

pub(crate) use crate::model::event::EventKind;

/// One thing to tell webhooks about, in format-neutral JSON pieces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Notice {
    /// What happened.
    pub(crate) kind: EventKind,
    /// When the daemon saw it.
    pub(crate) occurred_at: DateTime<Utc>,
    /// The workflow it is about.
    pub(crate) workflow: String,
    /// The run it is about, if any.
    pub(crate) run_id: Option<RunId>,
    /// The run summary ([`run_summary`]), if it is about a run.
    pub(crate) run: Option<RunSummary>,
    /// The step it is about: `id`, `status`, `attempt`, `exit_code`, `error_class`, and for
    /// `step.retrying` `delay_ms`; for run ends, the step whose failure failed the run
    /// ([`failing_step`]; none for a succeeded run).
    pub(crate) step: Option<Value>,
    /// The error text, if any.
    pub(crate) error: Option<String>,
    /// Event-specific figures (the anomaly, the escalation, the handler), if any.
    pub(crate) details: Option<Value>,
    /// The full run report (what `agent exec --json` prints), for run ends.
    pub(crate) report: Option<NoticeReport>,
    /// The repository's `owner/name` (`full_name` in the config), for `github_status`.
    pub(crate) repo_full_name: Option<String>,
}

impl Notice {
    /// A notice with only the event and workflow set.
    pub(crate) fn new(kind: EventKind, workflow: impl Into<String>) -> Notice {
        Notice {
            kind,
            occurred_at: Utc::now(),
            workflow: workflow.into(),
            run_id: None,
            run: None,
            step: None,
            error: None,
            details: None,
            report: None,
            repo_full_name: None,
        }
    }

    /// The run's duration in milliseconds, when known.
    pub(crate) fn duration_ms(&self) -> Option<i64> {
        self.run.as_ref()?.duration_ms
    }

    /// The link to the run's page (`{base}/runs/{id}`), when it is about a run.
    pub(crate) fn url(&self) -> Option<&str> {
        self.run.as_ref().map(|r| r.url.as_str())
    }

    /// The generic format's body (version 1; documented in the README).
    pub(crate) fn generic_body(&self) -> Value {
        json!({
            "version": 1,
            "event": self.kind.as_str(),
            "occurred_at": rfc3339(self.occurred_at),
            "workflow": self.workflow,
            "run": self.run,
            "step": self.step,
            "error": self.error,
            "details": self.details,
        })
    }

    /// The context of a webhook's minijinja `template`: the run report's fields (for run
    /// ends), then every key of the generic body, `report`, and the shortcuts `run_id`,
    /// `status`, `repo`, `branch`, `commit`, `url` and `duration_ms`.
    pub(crate) fn template_context(&self) -> Value {
        let report = json!(self.report);
        let mut ctx = match &report {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        if let Value::Object(body) = self.generic_body() {
            ctx.extend(body);
        }
        ctx.insert("report".into(), report);
        let run = self.run.as_ref();
        let shortcuts = [
            ("run_id", run.map(|r| json!(r.run_id))),
            ("status", run.map(|r| json!(r.status))),
            ("repo", run.map(|r| json!(r.repo))),
            ("branch", run.map(|r| json!(r.branch))),
            ("commit", run.map(|r| json!(r.commit))),
            ("url", run.map(|r| json!(r.url))),
        ];
        for (key, v) in shortcuts {
            ctx.insert(key.into(), v.unwrap_or(Value::Null));
        }
        ctx.insert(
            "duration_ms".into(),
            self.duration_ms().map_or(Value::Null, Value::from),
        );
        ctx.entry("stages").or_insert_with(|| json!([]));
        Value::Object(ctx)
    }
}

/// The run summary inside every notice about a run (the `run` of the generic body; its
/// fields in this order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RunSummary {
    /// The run id, as a string.
    pub(crate) run_id: String,
    /// The workflow's name.
    pub(crate) workflow: String,
    /// The repository, if any.
    pub(crate) repo: Option<String>,
    /// The run's status as of the notice.
    pub(crate) status: RunStatus,
    /// What queued the run.
    pub(crate) trigger: TriggerKind,
    /// The branch of a push or a hook.
    pub(crate) branch: Option<String>,
    /// The commit the run builds.
    pub(crate) commit: Option<String>,
    /// When the run was queued (RFC 3339).
    pub(crate) created_at: String,
    /// When it started.
    pub(crate) started_at: Option<String>,
    /// When it ended (now, for a final status not yet written).
    pub(crate) finished_at: Option<String>,
    /// From `started_at` to `finished_at` (or now).
    pub(crate) duration_ms: Option<i64>,
    /// The run's page on the dashboard.
    pub(crate) url: String,
}

/// The report of a run's end notice: the engine's report, or, for a run that ended before
/// it started (failed to start, cancelled while queued), the minimal one the API shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum NoticeReport {
    /// The engine's report, as stored.
    Full(Box<RunReport>),
    /// `run_id`, `workflow`, `status`, no `stages`, `error`.
    EndedEarly {
        /// The run id, as a string.
        run_id: String,
        /// The workflow's name.
        workflow: String,
        /// Its final status.
        status: RunStatus,
        /// Always empty.
        stages: Vec<StageReport>,
        /// Why it ended.
        error: Option<String>,
    },
}

impl NoticeReport {
    /// The stored report of `run`, or the minimal one when it has none (or one that does not
    /// read as a report).
    pub(crate) fn of(run: &RunRecord) -> NoticeReport {
        run.report
            .as_ref()
            .and_then(|r| serde_json::from_value::<RunReport>(r.clone()).ok())
            .map(|r| NoticeReport::Full(Box::new(r)))
            .unwrap_or_else(|| NoticeReport::EndedEarly {
                run_id: run.id.to_string(),
                workflow: run.workflow.clone(),
                status: run.status,
                stages: Vec::new(),
                error: run.error.clone(),
            })
    }

    /// The engine's report, when there is one.
    pub(crate) fn full(&self) -> Option<&RunReport> {
        match self {
            NoticeReport::Full(r) => Some(r),
            NoticeReport::EndedEarly { .. } => None,
        }
    }

    /// Why the run failed, if it says.
    pub(crate) fn error(&self) -> Option<&str> {
        match self {
            NoticeReport::Full(r) => r.error.as_deref(),
            NoticeReport::EndedEarly { error, .. } => error.as_deref(),
        }
    }
}

/// The run summary of `run` with `status`, linked under `link_base`.
pub(crate) fn run_summary(run: &RunRecord, status: RunStatus, link_base: &str) -> RunSummary {
    let now = Utc::now();
    let finished_at = run.finished_at.or_else(|| {
        matches!(
            status,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
        .then_some(now)
    });
    let duration_ms = run
        .started_at
        .map(|s| (finished_at.unwrap_or(now) - s).num_milliseconds().max(0));
    RunSummary {
        run_id: run.id.to_string(),
        workflow: run.workflow.clone(),
        repo: run.repo.clone(),
        status,
        trigger: run.trigger.kind,
        branch: run.trigger.branch.clone(),
        commit: run.trigger.commit.clone(),
        created_at: rfc3339(run.created_at),
        started_at: run.started_at.map(rfc3339),
        finished_at: finished_at.map(rfc3339),
        duration_ms,
        url: run_url(link_base, run.id),
    }
}

/// `{base}/runs/{id}`: the run's page on the dashboard.
pub(crate) fn run_url(link_base: &str, id: RunId) -> String {
    format!("{}/runs/{id}", link_base.trim_end_matches('/'))
}

/// The step whose failure failed the run, as the notice's `step`: the first in time (the
/// one the run's `error` names) of the failed steps whose failure was not tolerated
/// (`continued`); ties go to file order. `None` when no failure decided the run.
pub(crate) fn failing_step(report: &RunReport) -> Option<Value> {
    report
        .stages
        .iter()
        .flat_map(|stage| &stage.steps)
        .filter(|s| s.status == StepStatus::Failed && !s.continued)
        // Steps without an end sort last.
        .min_by_key(|s| (s.finished_at.is_none(), s.finished_at.clone()))
        .map(|s| {
            json!({
                "id": s.id,
                "status": "failed",
                "attempt": s.attempts,
                "exit_code": s.exit_code,
                "error_class": s.error_class,
            })
        })
}

/// A webhook's `events` and `workflows` filters, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    events: Vec<GlobMatcher>,
    run_end_alias: bool,
    workflows: Vec<GlobMatcher>,
}

impl Filter {
    /// Compiles a webhook's filters; returns the patterns that are not valid globs (they
    /// match by equality instead) and the event names that match no event.
    pub(crate) fn new(webhook: &WebhookConfig) -> (Filter, Vec<String>) {
        let mut problems = Vec::new();
        let mut compile = |patterns: &[String]| -> Vec<GlobMatcher> {
            patterns
                .iter()
                .map(|p| match Glob::new(p) {
                    Ok(g) => g.compile_matcher(),
                    Err(e) => {
                        problems.push(format!("`{p}` is not a valid glob ({e})"));
                        Glob::new(&globset::escape(p))
                            .expect("an escaped pattern is a valid glob")
                            .compile_matcher()
                    }
                })
                .collect()
        };
        let run_end_alias = webhook.events.iter().any(|e| e == "run.finished");
        let events = compile(&webhook.events);
        let workflows = compile(&webhook.workflows);
        for (pattern, matcher) in webhook.events.iter().zip(&events) {
            if pattern != "run.finished"
                && !EventKind::ALL.iter().any(|k| matcher.is_match(k.as_str()))
            {
                problems.push(format!("event `{pattern}` matches no event"));
            }
        }
        (
            Filter {
                events,
                run_end_alias,
                workflows,
            },
            problems,
        )
    }

    /// True when the webhook wants this event of this workflow (empty lists match all;
    /// `run.finished` stands for the three run ends).
    pub(crate) fn matches(&self, kind: EventKind, workflow: &str) -> bool {
        let event_ok = self.events.is_empty()
            || (self.run_end_alias && kind.is_run_end())
            || self.events.iter().any(|m| m.is_match(kind.as_str()));
        let workflow_ok =
            self.workflows.is_empty() || self.workflows.iter().any(|m| m.is_match(workflow));
        event_ok && workflow_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{WebhookFormat, WebhookRetry};
    use crate::model::RunStatus;
    use crate::model::report::{StageReport, StepReport};

    fn hook(events: &[&str], workflows: &[&str]) -> WebhookConfig {
        WebhookConfig {
            name: "h".into(),
            url: "http://127.0.0.1:9/".into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            workflows: workflows.iter().map(|s| s.to_string()).collect(),
            format: WebhookFormat::Generic,
            api: None,
            token_env: None,
            template: None,
            secret: None,
            headers: Default::default(),
            retry: WebhookRetry::default(),
            rate_limit: None,
        }
    }

    #[test]
    fn filters_by_event_and_workflow_globs() {
        let (all, problems) = Filter::new(&hook(&[], &[]));
        assert!(problems.is_empty());
        for k in EventKind::ALL {
            assert!(all.matches(*k, "anything"));
        }
        let (f, problems) = Filter::new(&hook(&["run.failed", "step.*"], &["deploy-*", "ci"]));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(f.matches(EventKind::RunFailed, "deploy-prod"));
        assert!(f.matches(EventKind::StepRetrying, "ci"));
        assert!(!f.matches(EventKind::RunSucceeded, "ci"));
        assert!(!f.matches(EventKind::RunFailed, "cid"));
        let (f, _) = Filter::new(&hook(&["run.finished"], &[]));
        assert!(f.matches(EventKind::RunCancelled, "x"));
        assert!(!f.matches(EventKind::RunStarted, "x"));
        let (_, problems) = Filter::new(&hook(&["run.faild"], &[]));
        assert_eq!(
            problems,
            vec!["event `run.faild` matches no event".to_string()]
        );
    }

    /// Guards the run-end `step`: the first failure in time that was not tolerated, not the
    /// first failed step in file order nor a `continue`d one.
    #[test]
    fn failing_step_is_the_first_failure_that_counted() {
        let report = report_of(vec![vec![
            failed("tolerated", Some("2026-01-01T00:00:00.100Z"), true),
            failed("late", Some("2026-01-01T00:00:02.000Z"), false),
            {
                let mut s = failed("early", Some("2026-01-01T00:00:01.000Z"), false);
                s.exit_code = Some(5);
                s
            },
        ]]);
        let step = failing_step(&report).expect("a failed step");
        assert_eq!(step["id"], "early");
        assert_eq!(step["exit_code"], 5);
        let only_tolerated = report_of(vec![vec![failed("t", None, true)]]);
        assert!(failing_step(&only_tolerated).is_none());
    }

    fn failed(id: &str, end: Option<&str>, continued: bool) -> StepReport {
        let mut s = StepReport::pending(id);
        s.status = StepStatus::Failed;
        s.finished_at = end.map(str::to_string);
        s.continued = continued;
        s
    }

    fn report_of(stages: Vec<Vec<StepReport>>) -> RunReport {
        RunReport {
            run_id: "1".into(),
            workflow: "w".into(),
            status: RunStatus::Failed,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            parameters: serde_json::Map::new(),
            stages: stages
                .into_iter()
                .enumerate()
                .map(|(i, steps)| StageReport {
                    name: format!("s{i}"),
                    status: StepStatus::Failed,
                    steps,
                })
                .collect(),
            rollback: None,
            compensated: Vec::new(),
            compensation: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn failing_step_is_the_first_failed_one() {
        let mut ok = StepReport::pending("ok");
        ok.status = StepStatus::Succeeded;
        let mut bad = failed("bad", None, false);
        bad.attempts = 2;
        bad.exit_code = Some(3);
        bad.error_class = Some("exit_code".into());
        let report = report_of(vec![vec![ok], vec![bad, failed("later", None, false)]]);
        let step = failing_step(&report).expect("a failed step");
        assert_eq!(step["id"], "bad");
        assert_eq!(step["exit_code"], 3);
        assert_eq!(step["attempt"], 2);
        assert!(failing_step(&report_of(Vec::new())).is_none());
    }

    #[test]
    fn template_context_has_the_report_and_shortcuts() {
        let mut n = Notice::new(EventKind::RunFailed, "w");
        n.run = Some(RunSummary {
            run_id: "4".into(),
            workflow: "w".into(),
            repo: Some("app".into()),
            status: RunStatus::Failed,
            trigger: TriggerKind::Push,
            branch: Some("main".into()),
            commit: Some("abc".into()),
            created_at: "2026-01-01T00:00:00Z".into(),
            started_at: None,
            finished_at: None,
            duration_ms: Some(12),
            url: "http://x/api/v1/runs/4".into(),
        });
        let mut report = report_of(vec![Vec::new()]);
        report.error = Some("boom".into());
        n.report = Some(NoticeReport::Full(Box::new(report)));
        let ctx = n.template_context();
        assert_eq!(ctx["event"], "run.failed");
        assert_eq!(ctx["stages"][0]["name"], "s0");
        assert_eq!(ctx["report"]["error"], "boom");
        assert_eq!(ctx["commit"], "abc");
        assert_eq!(ctx["duration_ms"], 12);
        assert_eq!(ctx["version"], 1);
    }
}
