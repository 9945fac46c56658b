//! The bodies of the HTTP API under `/api/v1` (and `/health`, the hooks and the log
//! stream's events), shared by the server (`api/`) and the CLI client: requests and
//! answers are these types, serialised with the field names and order clients see. Run
//! ids are strings in every body, as in `agent exec --json`; times are RFC 3339 text.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::report::{ArtifactOrigin, RunReport};
use super::status::{DeliveryStatus, RunStatus, TriggerKind};

/// `GET /health`: `{"status":"ok"}`, or `degraded` (503) with the store's error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Health {
    /// `ok` or `degraded`.
    pub(crate) status: String,
    /// Why the store is degraded (absent when ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Every error answer: the message, and for 422 the diagnostics (one per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    /// What went wrong, for people.
    pub(crate) error: String,
    /// Diagnostics of invalid parameters or an invalid workflow (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) diagnostics: Option<Vec<String>>,
}

/// What started a run: `kind`, `commit`, `branch`, `scheduled_for`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TriggerInfo {
    /// `push`, `pull_request`, `schedule`, `manual`, `webhook` or `retry`.
    pub(crate) kind: TriggerKind,
    /// The commit the run checks out.
    pub(crate) commit: Option<String>,
    /// The branch the commit was seen on.
    pub(crate) branch: Option<String>,
    /// For a schedule, the cron slot the run stands for.
    pub(crate) scheduled_for: Option<String>,
    /// The run's own ref, when it is not its branch's: `refs/tags/NAME` for a tag push,
    /// `refs/pull/N/head` for a pull request (run details only).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub(crate) git_ref: Option<String>,
    /// A pull-request run's pull request: `number`, `action`, `base`, `head`, `head_sha`,
    /// `head_repo`, `fork` (run details only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pull_request: Option<Value>,
    /// In run listings: the summary line of the commit's message, when the daemon recorded
    /// it (push runs). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}

/// One run in `GET /api/v1/runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunSummary {
    /// The run's id.
    pub(crate) run_id: String,
    /// The workflow's name.
    pub(crate) workflow: String,
    /// The configured repository, if any.
    pub(crate) repo: Option<String>,
    /// Where the run is.
    pub(crate) status: RunStatus,
    /// What started it.
    pub(crate) trigger: TriggerInfo,
    /// When it was queued.
    pub(crate) created_at: String,
    /// When it started.
    pub(crate) started_at: Option<String>,
    /// When it ended.
    pub(crate) finished_at: Option<String>,
    /// Wall time so far (running) or in all (finished).
    pub(crate) duration_ms: Option<i64>,
    /// Why it failed.
    pub(crate) error: Option<String>,
    /// The run this one retries.
    pub(crate) retry_of: Option<String>,
}

/// `GET /api/v1/runs`: newest first, and the id to pass as `before` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunList {
    /// The page of runs.
    pub(crate) runs: Vec<RunSummary>,
    /// `before` for the next page; null on the last one.
    pub(crate) next_before: Option<String>,
}

/// `GET /api/v1/runs/{id}`: the run report, plus what the daemon knows of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunDetail {
    /// The report (live while the run is not finished).
    #[serde(flatten)]
    pub(crate) report: RunReport,
    /// The configured repository, if any.
    pub(crate) repo: Option<String>,
    /// What started it.
    pub(crate) trigger: TriggerInfo,
    /// When it was queued.
    pub(crate) created_at: String,
    /// The run this one retries.
    pub(crate) retry_of: Option<String>,
}

/// `POST /api/v1/workflows/{name}/runs`: every field may be left out (an empty body too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerRequest {
    /// Parameter values (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parameters: Option<Value>,
    /// The repository whose workflow to run (needed when several have that name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) repo: Option<String>,
    /// The commit to run at (default: the branch's head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) commit: Option<String>,
    /// The branch whose head to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) branch: Option<String>,
}

impl TriggerRequest {
    /// A request with these parameters.
    pub(crate) fn with_parameters(parameters: Map<String, Value>) -> Self {
        TriggerRequest {
            parameters: Some(Value::Object(parameters)),
            ..TriggerRequest::default()
        }
    }
}

/// `202` to a trigger: the queued run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TriggerResponse {
    /// The new run's id.
    pub(crate) run_id: String,
}

/// `202` to `POST /api/v1/runs/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CancelResponse {
    /// The run.
    pub(crate) run_id: String,
    /// `cancelling`.
    pub(crate) status: String,
}

/// `202` to `POST /api/v1/runs/{id}/retry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RetryResponse {
    /// The new run.
    pub(crate) run_id: String,
    /// The run it retries.
    pub(crate) retry_of: String,
}

/// One workflow in `GET /api/v1/workflows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkflowInfo {
    /// Its `name:` (the file stem when the file is invalid).
    pub(crate) name: String,
    /// The configured repository.
    pub(crate) repo: String,
    /// Its path in the repository.
    pub(crate) file: String,
    /// Its `on:` section (`push`, `schedule`, `manual`), or null.
    pub(crate) triggers: Value,
    /// The next cron fire time.
    pub(crate) next_fire: Option<String>,
    /// The file's diagnostics when it does not load.
    pub(crate) error: Option<String>,
}

/// `GET /api/v1/workflows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkflowList {
    /// Every workflow of every configured repository.
    pub(crate) workflows: Vec<WorkflowInfo>,
}

/// One attempt of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeliveryAttempt {
    /// 1 for the first.
    pub(crate) attempt: u32,
    /// When it was made.
    pub(crate) at: String,
    /// The receiver's HTTP status, when it answered.
    pub(crate) status_code: Option<u16>,
    /// Why it failed.
    pub(crate) error: Option<String>,
}

/// One webhook delivery in `GET /api/v1/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Delivery {
    /// Its id (the `X-Agent-Delivery` header).
    pub(crate) id: String,
    /// The webhook's name.
    pub(crate) webhook: String,
    /// The event (`run.failed`, ...).
    pub(crate) event: String,
    /// The run it is about.
    pub(crate) run_id: Option<String>,
    /// `pending`, `delivered` or `failed`.
    pub(crate) status: DeliveryStatus,
    /// Attempts made.
    pub(crate) attempts: u32,
    /// When the next attempt is due.
    pub(crate) next_attempt_at: Option<String>,
    /// The last attempt's error.
    pub(crate) last_error: Option<String>,
    /// When it was queued.
    pub(crate) created_at: String,
    /// Where it goes.
    pub(crate) url: Option<String>,
    /// Its content type.
    pub(crate) content_type: Option<String>,
    /// The body sent.
    pub(crate) payload: Value,
    /// Every attempt, in order.
    pub(crate) history: Vec<DeliveryAttempt>,
}

/// `GET /api/v1/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeliveryList {
    /// Newest first.
    pub(crate) deliveries: Vec<Delivery>,
}

/// One anomaly in `GET /api/v1/anomalies` (and the body of an `anomaly` webhook).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Anomaly {
    /// Its id (increasing).
    pub(crate) id: i64,
    /// `slow_run`, `failure_rate` or `step_memory`.
    pub(crate) kind: String,
    /// The workflow.
    pub(crate) workflow: String,
    /// Its repository.
    pub(crate) repo: Option<String>,
    /// The run that showed it.
    pub(crate) run_id: Option<String>,
    /// The step, for `step_memory`.
    pub(crate) step: Option<String>,
    /// One line for people.
    pub(crate) message: String,
    /// The figures behind it.
    pub(crate) details: Value,
    /// When it was detected.
    pub(crate) created_at: String,
}

/// `GET /api/v1/anomalies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AnomalyList {
    /// Newest first.
    pub(crate) anomalies: Vec<Anomaly>,
}

/// The last event of a followed step log: how the step ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LogEnd {
    /// The step's (or the run's) final status.
    pub(crate) status: String,
}

/// The answer to an inbound push hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HookAnswer {
    /// `accepted`, `duplicate` or `ignored`.
    pub(crate) status: String,
    /// The repositories fetched now (absent for a duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) repos: Option<Vec<String>>,
    /// The delivery id the sender gave.
    pub(crate) delivery: Option<String>,
    /// Why nothing was started (an ignored pull-request action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// The runs a pull-request hook queued now (absent for pushes, which run after the fetch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) runs: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::report::{StageReport, StepReport};

    /// A run detail is the report's fields followed by the daemon's, flat; it reads back.
    #[test]
    fn a_run_detail_is_the_report_plus_the_daemon_fields() {
        let detail = RunDetail {
            report: RunReport {
                run_id: "7".into(),
                workflow: "w".into(),
                status: RunStatus::Running,
                started_at: None,
                finished_at: None,
                duration_ms: Some(3),
                parameters: Map::new(),
                stages: vec![StageReport {
                    name: "s".into(),
                    status: crate::model::StepStatus::Running,
                    steps: vec![StepReport::pending("a")],
                }],
                rollback: None,
                compensated: Vec::new(),
                compensation: Vec::new(),
                error: None,
            },
            repo: Some("r".into()),
            trigger: TriggerInfo {
                kind: TriggerKind::Push,
                commit: Some("abc".into()),
                branch: None,
                scheduled_for: None,
                git_ref: None,
                pull_request: None,
                message: None,
            },
            created_at: "1970-01-01T00:00:00.000Z".into(),
            retry_of: None,
        };
        let text = serde_json::to_string(&detail).expect("serialize");
        assert!(text.starts_with(r#"{"run_id":"7","workflow":"w","status":"running","#));
        assert!(text.ends_with(
            r#""error":null,"repo":"r","trigger":{"kind":"push","commit":"abc","branch":null,"scheduled_for":null},"created_at":"1970-01-01T00:00:00.000Z","retry_of":null}"#
        ), "{text}");
        let back: RunDetail = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, detail);
    }

    #[test]
    fn errors_carry_diagnostics_only_when_there_are_some() {
        let plain = ErrorBody {
            error: "boom".into(),
            diagnostics: None,
        };
        assert_eq!(
            serde_json::to_string(&plain).expect("json"),
            r#"{"error":"boom"}"#
        );
        let empty: TriggerRequest = serde_json::from_str("{}").expect("empty");
        assert_eq!(empty, TriggerRequest::default());
        assert!(serde_json::from_str::<TriggerRequest>(r#"{"x":1}"#).is_err());
    }
}

/// One artifact in `GET /api/v1/runs/{id}/artifacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ArtifactInfo {
    /// Its `name:`.
    pub(crate) name: String,
    /// The step that kept it (`CALL/ID` inside a called workflow).
    pub(crate) step: String,
    /// Bytes of the `.tar.gz` archive.
    pub(crate) size: u64,
    /// Files in it.
    pub(crate) files: u64,
    /// `sha256:<hex>` of the archive.
    pub(crate) digest: String,
    /// When it was kept.
    pub(crate) created_at: String,
    /// When retention removes it; null: with its run.
    pub(crate) expires_at: Option<String>,
    /// Taken with `from:`: the workflow, run and artifact it came from (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<ArtifactOrigin>,
}

/// `GET /api/v1/runs/{id}/artifacts`: the run's artifacts, in the order they were kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ArtifactList {
    /// The run.
    pub(crate) run_id: String,
    /// Its artifacts.
    pub(crate) artifacts: Vec<ArtifactInfo>,
}

/// One node of the fleet in `GET /api/v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeInfo {
    /// The node's name (config `node`).
    pub name: String,
    /// Its last heartbeat (RFC 3339).
    pub last_heartbeat: String,
    /// Runs it holds now (claimed or running).
    pub runs: u64,
    /// Runs it may run at once (`limits.max_concurrent_runs`).
    pub capacity: u64,
    /// No heartbeat for longer than its lease: its runs go to the other nodes.
    pub lost: bool,
}

/// `GET /api/v1/nodes`: every node that shares the store, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeList {
    /// The nodes.
    pub nodes: Vec<NodeInfo>,
}
