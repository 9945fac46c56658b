//! Inbound push webhooks: `POST /hooks/github` and `POST /hooks/gitea`.
//!
//! A forge calls these when someone pushes; the daemon then fetches that repository at once
//! instead of waiting for its next poll. The routes take no Bearer token: the body's
//! HMAC-SHA256 signature is the authentication. In order:
//!
//! 1. The raw body is read, at most [`MAX_BODY_BYTES`] (else 413).
//! 2. The signature is checked over the raw bytes, in constant time, **before anything is
//!    parsed**: `X-Hub-Signature-256: sha256=<hex>` keyed with `hooks.github_secret` (or
//!    `hooks.gitea_secret` on `/hooks/gitea`, which also accepts Gitea's `X-Gitea-Signature:
//!    <hex>`). A missing or wrong signature, or no secret configured for the route, is 401
//!    and nothing else happens.
//! 3. The body must be a push: the event header (`X-GitHub-Event` / `X-Gitea-Event`), when
//!    present, must say `push`, and the payload (JSON, or GitHub's form encoding
//!    `payload=<json>`) must have a `ref` and a `repository` object; anything else (GitHub's
//!    `ping`, a body that is not JSON) is 400.
//! 4. The repository is matched: a configured repository whose `full_name` equals
//!    `repository.full_name` (ignoring case, as forges do), or whose `url` (or local path)
//!    equals its `clone_url`, `ssh_url` or `git_url` (ignoring a trailing `/` or `.git`).
//!    No match is **404**, so the forge's delivery log shows the misconfiguration.
//! 5. The delivery id (`X-GitHub-Delivery` / `X-Gitea-Delivery`) is stored (store schema
//!    v2); an id already seen, even before a restart, is answered 200 `{"status":
//!    "duplicate"}` and starts nothing. A hook without an id is not deduplicated.
//! 6. [`DaemonCommand::FetchNow`] goes to the scheduler for each matched repository and the
//!    answer is 202 `{"status": "accepted", "repos": [...]}` at once: the fetch, the scan
//!    and any run happen afterwards (the git watcher of the repository does them). A push
//!    of a tag (`ref: refs/tags/...`) is the same: the watcher's scan finds the new tag.
//!
//! Pull requests: an event header `pull_request` (GitHub, Gitea) takes the same steps 1, 2,
//! 4 and 5, but the payload is a pull request (`action`, `number`, `pull_request.head`
//! and `.base` with `ref`, `sha` and `repo`, and `repository`). Actions `opened`,
//! `synchronize` (Gitea: `synchronized`) and `reopened` start runs; any other is answered
//! 200 `{"status": "ignored", "reason": ...}`. The runs are queued before the answer
//! ([`DaemonHandle::pull_request`](crate::daemon::handle::DaemonHandle::pull_request): the
//! head commit is fetched from the forge's `refs/pull/N/head` when the mirror lacks it), which is 202 `{"status": "accepted", "repos": [...], "runs":
//! [...]}`; the same head delivered again queues nothing (`runs` is empty). A head
//! repository other than the base (`full_name` differs, or the head repository is gone)
//! makes the pull request a fork's.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::ApiState;
use super::error::ApiError;
use crate::config::{Config, RepoConfig};
use crate::daemon::handle::{DaemonCommand, DaemonError};
use crate::model::api::{ErrorBody, HookAnswer};
use crate::store::PullRequestEvent;

/// The largest hook body accepted (GitHub caps its payloads at 25 MB, but pushes are small).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a hook waits to hand its fetch request to the scheduler before it goes to the
/// watchers directly (the answer must not wait on a busy scheduler).
const SEND_WAIT: Duration = Duration::from_millis(200);

/// Which forge a hook claims to come from: its secret and header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookSource {
    /// `/hooks/github`.
    Github,
    /// `/hooks/gitea`.
    Gitea,
}

impl HookSource {
    /// The name stored with its delivery ids and used in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HookSource::Github => "github",
            HookSource::Gitea => "gitea",
        }
    }

    fn secret(self, config: &Config) -> Option<&str> {
        match self {
            HookSource::Github => config.hooks.github_secret.as_deref(),
            HookSource::Gitea => config.hooks.gitea_secret.as_deref(),
        }
    }

    /// The event header, then the delivery header, most specific first.
    fn event_headers(self) -> &'static [&'static str] {
        match self {
            HookSource::Github => &["x-github-event"],
            HookSource::Gitea => &["x-gitea-event", "x-gogs-event", "x-github-event"],
        }
    }

    fn delivery_headers(self) -> &'static [&'static str] {
        match self {
            HookSource::Github => &["x-github-delivery"],
            HookSource::Gitea => &["x-gitea-delivery", "x-gogs-delivery", "x-github-delivery"],
        }
    }
}

/// Why a hook was refused, before its body was trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    /// The route's secret is not configured: nothing can be verified.
    #[error("inbound hooks are disabled: `hooks.{0}_secret` is not set")]
    NoSecret(&'static str),
    /// No signature header.
    #[error("missing signature header")]
    Missing,
    /// A signature header that does not verify (or is not `sha256=<hex>`).
    #[error("invalid signature")]
    Invalid,
}

/// Checks the signature headers of `source` over `body` with `secret`, in constant time.
/// GitHub sends `X-Hub-Signature-256: sha256=<hex>`; Gitea sends the same header and
/// `X-Gitea-Signature: <hex>` (accepted on the Gitea route only).
pub(crate) fn verify_signature(
    source: HookSource,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SignatureError> {
    let mut candidates = Vec::new();
    if let Some(v) = headers.get("x-hub-signature-256") {
        let text = v.to_str().map_err(|_| SignatureError::Invalid)?.trim();
        let hex = text
            .strip_prefix("sha256=")
            .ok_or(SignatureError::Invalid)?;
        candidates.push(hex.to_string());
    }
    if source == HookSource::Gitea
        && let Some(v) = headers.get("x-gitea-signature")
    {
        candidates.push(
            v.to_str()
                .map_err(|_| SignatureError::Invalid)?
                .trim()
                .to_string(),
        );
    }
    if candidates.is_empty() {
        return Err(SignatureError::Missing);
    }
    for hex in candidates {
        let Some(given) = decode_hex(&hex) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        if mac.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Invalid)
}

/// Lowercase or uppercase hex to bytes; `None` unless it is exactly 32 bytes of hex.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// What a push payload says, as far as the daemon cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushHook {
    /// `ref`, e.g. `refs/heads/main`.
    pub(crate) git_ref: String,
    /// `repository.full_name`.
    pub(crate) full_name: Option<String>,
    /// `repository.clone_url`, `ssh_url` and `git_url`, those present.
    pub(crate) urls: Vec<String>,
    /// `after`, the new head.
    pub(crate) after: Option<String>,
}

/// Why a verified body is not a push the daemon can use (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PayloadError {
    /// The event header names another event (`ping`, `pull_request`...).
    #[error("event `{0}` ignored: only `push` events start a fetch")]
    NotPush(String),
    /// The body is not JSON (nor a form with a `payload` field).
    #[error("the body is not a JSON push payload: {0}")]
    NotJson(String),
    /// JSON without the fields of a push.
    #[error("not a push payload: {0}")]
    Shape(&'static str),
}

/// Parses a verified body as a push. `event` is the value of the event header, if any;
/// `form` is true for `application/x-www-form-urlencoded` bodies (`payload=<json>`).
pub(crate) fn parse_push(
    event: Option<&str>,
    form: bool,
    body: &[u8],
) -> Result<PushHook, PayloadError> {
    if let Some(event) = event
        && !event.trim().eq_ignore_ascii_case("push")
    {
        return Err(PayloadError::NotPush(event.trim().to_string()));
    }
    let json_bytes = if form {
        form_payload(body)
            .ok_or_else(|| PayloadError::NotJson("a form body without a `payload` field".into()))?
    } else {
        body.to_vec()
    };
    let value: Value =
        serde_json::from_slice(&json_bytes).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let git_ref = value
        .get("ref")
        .and_then(Value::as_str)
        .ok_or(PayloadError::Shape("no `ref`"))?
        .to_string();
    let repo = value
        .get("repository")
        .and_then(Value::as_object)
        .ok_or(PayloadError::Shape("no `repository` object"))?;
    let text = |key: &str| {
        repo.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let urls: Vec<String> = ["clone_url", "ssh_url", "git_url"]
        .iter()
        .filter_map(|k| text(k))
        .collect();
    let full_name = text("full_name");
    if full_name.is_none() && urls.is_empty() {
        return Err(PayloadError::Shape(
            "the repository has no `full_name` and no url",
        ));
    }
    Ok(PushHook {
        git_ref,
        full_name,
        urls,
        after: value
            .get("after")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The `payload` field of a form-encoded body, percent-decoded.
fn form_payload(body: &[u8]) -> Option<Vec<u8>> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let value = pair.strip_prefix(b"payload=")?;
        let mut out = Vec::with_capacity(value.len());
        let mut i = 0;
        while i < value.len() {
            match value[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(value.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        Some(out)
    })
}

/// The pull-request actions that start runs (Gitea says `synchronized`).
pub(crate) const PULL_REQUEST_ACTIONS: &[&str] =
    &["opened", "synchronize", "synchronized", "reopened"];

/// What a pull-request payload says, as far as the daemon cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PullRequestHook {
    /// `action`.
    pub(crate) action: String,
    /// The base repository, as a push would name it (for matching the configuration).
    pub(crate) target: PushHook,
    /// The pull request.
    pub(crate) pr: PullRequestEvent,
}

/// Whether an event header names a pull request.
fn is_pull_request_event(event: Option<&str>) -> bool {
    event.is_some_and(|e| e.trim().eq_ignore_ascii_case("pull_request"))
}

/// Parses a verified `pull_request` body (GitHub's or Gitea's).
pub(crate) fn parse_pull_request(form: bool, body: &[u8]) -> Result<PullRequestHook, PayloadError> {
    let json_bytes = if form {
        form_payload(body)
            .ok_or_else(|| PayloadError::NotJson("a form body without a `payload` field".into()))?
    } else {
        body.to_vec()
    };
    let value: Value =
        serde_json::from_slice(&json_bytes).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let action = text(value.get("action")).ok_or(PayloadError::Shape("no `action`"))?;
    let pr = value
        .get("pull_request")
        .filter(|v| v.is_object())
        .ok_or(PayloadError::Shape("no `pull_request` object"))?;
    let number = value
        .get("number")
        .or_else(|| pr.get("number"))
        .and_then(Value::as_u64)
        .ok_or(PayloadError::Shape("no pull request `number`"))?;
    let side = |name: &str| pr.get(name).filter(|v| v.is_object());
    let (head, base) = (side("head"), side("base"));
    let head_ref_name = text(head.and_then(|h| h.get("ref")))
        .ok_or(PayloadError::Shape("no `pull_request.head.ref`"))?;
    let base_ref_name = text(base.and_then(|b| b.get("ref")))
        .ok_or(PayloadError::Shape("no `pull_request.base.ref`"))?;
    let head_sha = text(head.and_then(|h| h.get("sha"))).unwrap_or_default();
    let repository = value.get("repository").filter(|v| v.is_object());
    let repo_text = |repo: Option<&Value>, key: &str| text(repo.and_then(|r| r.get(key)));
    let base_repo = base.and_then(|b| b.get("repo")).filter(|v| v.is_object());
    let target_repo = repository.or(base_repo);
    let urls: Vec<String> = ["clone_url", "ssh_url", "git_url"]
        .iter()
        .filter_map(|k| repo_text(target_repo, k))
        .collect();
    let full_name = repo_text(target_repo, "full_name");
    if full_name.is_none() && urls.is_empty() {
        return Err(PayloadError::Shape(
            "the repository has no `full_name` and no url",
        ));
    }
    let head_repo = head.and_then(|h| h.get("repo")).filter(|v| v.is_object());
    let head_full = repo_text(head_repo, "full_name");
    let base_full = repo_text(base_repo, "full_name").or_else(|| full_name.clone());
    // A fork unless the head repository is known to be the base one (a deleted fork's head
    // repository is null: a fork).
    let fork = match (&head_full, &base_full) {
        (Some(h), Some(b)) => !h.eq_ignore_ascii_case(b),
        _ => {
            let head_url = repo_text(head_repo, "clone_url").map(|u| normalise_url(&u));
            let base_url = repo_text(base_repo, "clone_url").map(|u| normalise_url(&u));
            head_url.is_none() || head_url != base_url
        }
    };
    Ok(PullRequestHook {
        action,
        target: PushHook {
            git_ref: format!("refs/pull/{number}/head"),
            full_name,
            urls,
            after: Some(head_sha.clone()),
        },
        pr: PullRequestEvent {
            number,
            action: String::new(),
            base: base_ref_name,
            head: head_ref_name,
            head_sha,
            head_repo: head_full,
            fork,
        },
    })
}

/// A URL or path for comparison: no trailing `/` or `.git`.
fn normalise_url(url: &str) -> String {
    let mut u = url.trim().trim_end_matches('/');
    if let Some(stripped) = u.strip_suffix(".git") {
        u = stripped;
    }
    u.trim_end_matches('/').to_string()
}

/// The configured repositories a push names (by `full_name`, or by url).
pub(crate) fn matching_repos<'a>(repos: &'a [RepoConfig], push: &PushHook) -> Vec<&'a RepoConfig> {
    let urls: Vec<String> = push.urls.iter().map(|u| normalise_url(u)).collect();
    repos
        .iter()
        .filter(|r| {
            let by_name = matches!((&r.full_name, &push.full_name),
                (Some(a), Some(b)) if a.eq_ignore_ascii_case(b));
            let own = normalise_url(&r.source.clone_url());
            by_name || urls.contains(&own)
        })
        .collect()
}

/// The first of `names` present in `headers`, as text.
fn header<'h>(headers: &'h HeaderMap, names: &[&str]) -> Option<&'h str> {
    names
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
}

/// `POST /hooks/github`.
pub(crate) async fn github(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, HookSource::Github, headers, body).await
}

/// `POST /hooks/gitea`.
pub(crate) async fn gitea(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, HookSource::Gitea, headers, body).await
}

fn reply(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, Json(body)).into_response()
}

fn error_body(error: impl Into<String>) -> ErrorBody {
    ErrorBody {
        error: error.into(),
        diagnostics: None,
    }
}

async fn handle(state: ApiState, source: HookSource, headers: HeaderMap, body: Body) -> Response {
    let (outcome, response) = answer(&state, source, headers, body).await;
    state.metrics.hook(source.as_str(), outcome);
    response
}

/// The hook's outcome (for the metrics) and its answer.
async fn answer(
    state: &ApiState,
    source: HookSource,
    headers: HeaderMap,
    body: Body,
) -> (&'static str, Response) {
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return (
                "too_large",
                reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    error_body(format!("the body is larger than {MAX_BODY_BYTES} bytes")),
                ),
            );
        }
    };
    let shared = &state.handle.shared;
    let verified = match source.secret(&shared.config) {
        None => Err(SignatureError::NoSecret(source.as_str())),
        Some(secret) => verify_signature(source, secret, &headers, &body),
    };
    if let Err(err) = verified {
        tracing::warn!(source = source.as_str(), error = %err, "inbound hook refused");
        return (
            "unauthorized",
            reply(StatusCode::UNAUTHORIZED, error_body(err.to_string())),
        );
    }
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let event = header(&headers, source.event_headers());
    if is_pull_request_event(event) {
        return answer_pull_request(state, source, &headers, form, &body).await;
    }
    let push = match parse_push(event, form, &body) {
        Ok(p) => p,
        Err(err) => {
            return (
                "bad_request",
                reply(StatusCode::BAD_REQUEST, error_body(err.to_string())),
            );
        }
    };
    let repos: Vec<String> = matching_repos(&shared.config.repos, &push)
        .into_iter()
        .map(|r| r.name.clone())
        .collect();
    if repos.is_empty() {
        let named = push
            .full_name
            .clone()
            .or_else(|| push.urls.first().cloned())
            .unwrap_or_default();
        tracing::info!(source = source.as_str(), repository = %named,
            "inbound hook for a repository that is not configured");
        return (
            "unknown_repo",
            reply(
                StatusCode::NOT_FOUND,
                error_body(format!("no configured repository matches `{named}`")),
            ),
        );
    }
    let delivery = header(&headers, source.delivery_headers())
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    if let Some(id) = &delivery {
        let (id2, repo) = (id.clone(), repos[0].clone());
        let fresh = shared
            .store
            .write(move |db| db.record_hook_delivery(source.as_str(), &id2, Some(&repo)))
            .await;
        match fresh {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(source = source.as_str(), delivery = %id,
                    "inbound hook replayed: ignored");
                return (
                    "duplicate",
                    reply(
                        StatusCode::OK,
                        HookAnswer {
                            status: "duplicate".into(),
                            repos: None,
                            delivery: Some(id.clone()),
                            reason: None,
                            runs: None,
                        },
                    ),
                );
            }
            Err(err) => return ("error", ApiError::Store(err).into_response()),
        }
    }
    for repo in &repos {
        tracing::info!(source = source.as_str(), repo = %repo, git_ref = %push.git_ref,
            delivery = delivery.as_deref().unwrap_or("-"), "inbound push hook: fetching now");
        let sent = tokio::time::timeout(
            SEND_WAIT,
            state.handle.send(DaemonCommand::FetchNow(repo.clone())),
        )
        .await;
        if !matches!(sent, Ok(true)) {
            // The scheduler is busy or stopping: tell the watchers directly.
            state.handle.fetch_now(repo);
        }
    }
    (
        "accepted",
        reply(
            StatusCode::ACCEPTED,
            HookAnswer {
                status: "accepted".into(),
                repos: Some(repos),
                delivery,
                reason: None,
                runs: None,
            },
        ),
    )
}

/// The delivery id of a hook, recorded: `Ok(None)` when there is none, `Err` with the
/// answer when it was seen before or the store failed.
async fn record_delivery(
    state: &ApiState,
    source: HookSource,
    headers: &HeaderMap,
    repo: &str,
) -> Result<Option<String>, (&'static str, Response)> {
    let Some(id) = header(headers, source.delivery_headers())
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let (id2, repo) = (id.clone(), repo.to_string());
    let fresh = state
        .handle
        .shared
        .store
        .write(move |db| db.record_hook_delivery(source.as_str(), &id2, Some(&repo)))
        .await;
    match fresh {
        Ok(true) => Ok(Some(id)),
        Ok(false) => {
            tracing::info!(source = source.as_str(), delivery = %id,
                "inbound hook replayed: ignored");
            Err((
                "duplicate",
                reply(
                    StatusCode::OK,
                    HookAnswer {
                        status: "duplicate".into(),
                        repos: None,
                        delivery: Some(id),
                        reason: None,
                        runs: None,
                    },
                ),
            ))
        }
        Err(err) => Err(("error", ApiError::Store(err).into_response())),
    }
}

/// A verified `pull_request` hook: ignored actions, repository matching, delivery dedup,
/// then the runs queued (see the module docs).
async fn answer_pull_request(
    state: &ApiState,
    source: HookSource,
    headers: &HeaderMap,
    form: bool,
    body: &[u8],
) -> (&'static str, Response) {
    let hook = match parse_pull_request(form, body) {
        Ok(h) => h,
        Err(err) => {
            return (
                "bad_request",
                reply(StatusCode::BAD_REQUEST, error_body(err.to_string())),
            );
        }
    };
    let action = hook.action.to_ascii_lowercase();
    if !PULL_REQUEST_ACTIONS.contains(&action.as_str()) {
        tracing::info!(source = source.as_str(), action = %action, number = hook.pr.number,
            "pull-request hook ignored: its action starts no runs");
        return (
            "ignored",
            reply(
                StatusCode::OK,
                HookAnswer {
                    status: "ignored".into(),
                    repos: None,
                    delivery: None,
                    reason: Some(format!(
                        "pull request action `{action}` starts no runs (only opened, synchronize, reopened)"
                    )),
                    runs: None,
                },
            ),
        );
    }
    let shared = &state.handle.shared;
    let repos: Vec<String> = matching_repos(&shared.config.repos, &hook.target)
        .into_iter()
        .map(|r| r.name.clone())
        .collect();
    if repos.is_empty() {
        let named = hook
            .target
            .full_name
            .clone()
            .or_else(|| hook.target.urls.first().cloned())
            .unwrap_or_default();
        tracing::info!(source = source.as_str(), repository = %named,
            "inbound pull-request hook for a repository that is not configured");
        return (
            "unknown_repo",
            reply(
                StatusCode::NOT_FOUND,
                error_body(format!("no configured repository matches `{named}`")),
            ),
        );
    }
    let delivery = match record_delivery(state, source, headers, &repos[0]).await {
        Ok(d) => d,
        Err(answer) => return answer,
    };
    let mut pr = hook.pr;
    pr.action = action;
    let mut runs = Vec::new();
    for repo in &repos {
        match state.handle.pull_request(repo, pr.clone()).await {
            Ok(queued) => runs.extend(queued.iter().map(|id| id.to_string())),
            Err(err) => {
                tracing::warn!(source = source.as_str(), repo = %repo, error = %err,
                    "pull-request hook: cannot queue its runs");
                let status = match err {
                    DaemonError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_GATEWAY,
                };
                return (
                    "error",
                    reply(status, error_body(format!("repository `{repo}`: {err}"))),
                );
            }
        }
    }
    (
        "accepted",
        reply(
            StatusCode::ACCEPTED,
            HookAnswer {
                status: "accepted".into(),
                repos: Some(repos),
                delivery,
                reason: None,
                runs: Some(runs),
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// GitHub's documented example ("Validating webhook deliveries").
    const DOC_SECRET: &str = "It's a Secret to Everybody";
    const DOC_BODY: &str = "Hello, World!";
    const DOC_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn githubs_test_vector_verifies_and_then_is_not_a_push() {
        let h = headers(&[("x-hub-signature-256", DOC_SIGNATURE)]);
        assert_eq!(
            verify_signature(HookSource::Github, DOC_SECRET, &h, DOC_BODY.as_bytes()),
            Ok(())
        );
        assert!(matches!(
            parse_push(None, false, DOC_BODY.as_bytes()),
            Err(PayloadError::NotJson(_))
        ));
        // Uppercase hex is hex too.
        let upper = format!("sha256={}", DOC_SIGNATURE[7..].to_ascii_uppercase());
        let h = headers(&[("x-hub-signature-256", &upper)]);
        assert_eq!(
            verify_signature(HookSource::Github, DOC_SECRET, &h, DOC_BODY.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn bad_and_missing_signatures_are_refused() {
        let body = DOC_BODY.as_bytes();
        let check = |h: &HeaderMap, src| verify_signature(src, DOC_SECRET, h, body);
        assert_eq!(
            check(&HeaderMap::new(), HookSource::Github),
            Err(SignatureError::Missing)
        );
        for bad in [
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=757107ea",
            "sha256=zz",
            "sha256=",
        ] {
            let h = headers(&[("x-hub-signature-256", bad)]);
            assert_eq!(
                check(&h, HookSource::Github),
                Err(SignatureError::Invalid),
                "{bad}"
            );
        }
        // The right signature over another body.
        let h = headers(&[("x-hub-signature-256", DOC_SIGNATURE)]);
        assert_eq!(
            verify_signature(HookSource::Github, DOC_SECRET, &h, b"Hello, World?"),
            Err(SignatureError::Invalid)
        );
        // Another secret.
        assert_eq!(
            verify_signature(HookSource::Github, "other", &h, body),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn gitea_signs_with_bare_hex_too() {
        let body = br#"{"ref":"refs/heads/main","repository":{"full_name":"me/app"}}"#;
        let sig = sign("s", body);
        let h = headers(&[("x-gitea-signature", &sig)]);
        assert_eq!(verify_signature(HookSource::Gitea, "s", &h, body), Ok(()));
        // The GitHub route does not read Gitea's header.
        assert_eq!(
            verify_signature(HookSource::Github, "s", &h, body),
            Err(SignatureError::Missing)
        );
        let prefixed = format!("sha256={sig}");
        let h = headers(&[("x-hub-signature-256", &prefixed)]);
        assert_eq!(verify_signature(HookSource::Gitea, "s", &h, body), Ok(()));
    }

    #[test]
    fn push_payloads_parse_and_others_do_not() {
        let body = br#"{"ref":"refs/heads/main","after":"abc","repository":{"full_name":"me/app","clone_url":"https://example.com/me/app.git","ssh_url":"git@example.com:me/app.git"}}"#;
        let push = parse_push(Some("push"), false, body).expect("push");
        assert_eq!(push.git_ref, "refs/heads/main");
        assert_eq!(push.full_name.as_deref(), Some("me/app"));
        assert_eq!(push.urls.len(), 2);
        assert_eq!(push.after.as_deref(), Some("abc"));
        assert_eq!(
            parse_push(Some("ping"), false, body),
            Err(PayloadError::NotPush("ping".into()))
        );
        assert!(matches!(
            parse_push(None, false, br#"{"zen":"Keep it logically awesome."}"#),
            Err(PayloadError::Shape(_))
        ));
        assert!(matches!(
            parse_push(None, false, br#"{"ref":"x","repository":{}}"#),
            Err(PayloadError::Shape(_))
        ));
        // GitHub's form encoding.
        let form = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%2C%22repository%22%3A%7B%22full_name%22%3A%22me%2Fapp%22%7D%7D";
        let push = parse_push(Some("push"), true, form).expect("form push");
        assert_eq!(push.full_name.as_deref(), Some("me/app"));
        assert!(parse_push(None, true, b"other=1").is_err());
        assert!(parse_push(None, true, b"payload=%7").is_err());
    }

    /// GitHub's and Gitea's pull-request payloads: number, base, head, head SHA; a head in
    /// another repository (or a deleted one) is a fork.
    #[test]
    fn pull_request_payloads_parse() {
        let body = |head_repo: Value| {
            serde_json::json!({
                "action": "synchronize",
                "number": 7,
                "pull_request": {
                    "head": {"ref": "topic", "sha": "abc", "repo": head_repo},
                    "base": {"ref": "main", "sha": "def", "repo": {"full_name": "me/app"}},
                },
                "repository": {"full_name": "me/app", "clone_url": "https://example.com/me/app.git"},
            })
            .to_string()
        };
        let same = parse_pull_request(
            false,
            body(serde_json::json!({"full_name": "Me/App"})).as_bytes(),
        )
        .expect("pull request");
        assert_eq!(same.action, "synchronize");
        assert_eq!(same.target.full_name.as_deref(), Some("me/app"));
        assert_eq!(same.target.git_ref, "refs/pull/7/head");
        assert_eq!(
            (
                same.pr.number,
                same.pr.base.as_str(),
                same.pr.head.as_str(),
                same.pr.head_sha.as_str()
            ),
            (7, "main", "topic", "abc")
        );
        assert!(!same.pr.fork);
        let fork = parse_pull_request(
            false,
            body(serde_json::json!({"full_name": "you/app"})).as_bytes(),
        )
        .expect("pull request");
        assert!(fork.pr.fork);
        assert_eq!(fork.pr.head_repo.as_deref(), Some("you/app"));
        let gone = parse_pull_request(false, body(Value::Null).as_bytes()).expect("pull request");
        assert!(gone.pr.fork, "a deleted head repository counts as a fork");
        for bad in [
            r#"{"number":1,"pull_request":{}}"#,
            r#"{"action":"opened","pull_request":{"head":{"ref":"a"},"base":{"ref":"b"}},"repository":{"full_name":"me/app"}}"#,
            r#"{"action":"opened","number":1,"pull_request":{"head":{"ref":"a"}},"repository":{"full_name":"me/app"}}"#,
            "not json",
        ] {
            assert!(parse_pull_request(false, bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(is_pull_request_event(Some(" Pull_Request ")));
        assert!(!is_pull_request_event(Some("push")) && !is_pull_request_event(None));
        assert!(PULL_REQUEST_ACTIONS.contains(&"synchronized"));
        assert!(!PULL_REQUEST_ACTIONS.contains(&"closed"));
    }

    #[test]
    fn repositories_match_by_full_name_or_url() {
        use crate::config::RepoSource;
        let repo = |name: &str, source: RepoSource, full: Option<&str>| RepoConfig {
            name: name.into(),
            source,
            full_name: full.map(str::to_string),
            branches: Vec::new(),
            poll_interval: Duration::from_secs(60),
            credentials: None,
            secrets_for_forks: false,
        };
        let repos = vec![
            repo(
                "a",
                RepoSource::Url("https://example.com/me/a.git".into()),
                None,
            ),
            repo("b", RepoSource::Url("git://x/b".into()), Some("Me/B")),
            repo("c", RepoSource::Path("/srv/c".into()), None),
        ];
        let push = |full: Option<&str>, urls: &[&str]| PushHook {
            git_ref: "refs/heads/main".into(),
            full_name: full.map(str::to_string),
            urls: urls.iter().map(|u| u.to_string()).collect(),
            after: None,
        };
        let names = |p: &PushHook| -> Vec<String> {
            matching_repos(&repos, p)
                .iter()
                .map(|r| r.name.clone())
                .collect()
        };
        assert_eq!(names(&push(Some("me/b"), &[])), ["b"]);
        assert_eq!(names(&push(None, &["https://example.com/me/a"])), ["a"]);
        assert_eq!(
            names(&push(Some("x/y"), &["https://example.com/me/a.git/"])),
            ["a"]
        );
        assert_eq!(names(&push(None, &["/srv/c"])), ["c"]);
        assert!(names(&push(Some("me/a"), &["https://example.com/other"])).is_empty());
    }
}
