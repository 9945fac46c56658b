//! The run report: what `agent exec --json` prints and what the API returns for
//! a run. Field names and status strings are part of the contract; times are RFC 3339 (UTC,
//! milliseconds).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(crate) use super::status::{RunStatus, StepStatus};

/// RFC 3339 text of a time, UTC with milliseconds.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One step in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepReport {
    /// The step id.
    pub id: String,
    /// The step's `name:`, when it has one (absent from the JSON otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Final (or live) status.
    pub status: StepStatus,
    /// True when the result came from the cache.
    pub cached: bool,
    /// On a cached step (`cache:` or a deterministic skill): its key and, when it was
    /// served from the cache, the run whose result it is. Absent on other steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Box<StepCache>>,
    /// Tries made (0 when the step never started).
    pub attempts: u32,
    /// Exit code of the last try's process, if it exited.
    pub exit_code: Option<i32>,
    /// Error class of the failure (`ExitCode`, `Timeout`, a class the step wrote, ...).
    pub error_class: Option<String>,
    /// True for a failure the run tolerated (`on_failure: continue`, or an error handler's
    /// `continue`): the step failed, the run went on as if it had not. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continued: bool,
    /// Outputs the step wrote (masked).
    pub outputs: Map<String, Value>,
    /// Time the step waited for admission (CPU and memory slots) before its first
    /// process started; null when it never started.
    #[serde(default)]
    pub queued_ms: Option<u64>,
    /// When the first try's process started (after admission).
    pub started_at: Option<String>,
    /// End of the last try.
    pub finished_at: Option<String>,
    /// Wall time from `started_at` to `finished_at`: the tries and the backoff waits
    /// between them, without the wait for admission before the first try.
    pub duration_ms: Option<u64>,
    /// On a `type: workflow` step: the called workflow as its last try ran, with its own
    /// stages and steps (their ids without the caller's prefix; their logs are named
    /// `CALL/ID`). Absent on every other step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Box<CalledWorkflow>>,
    /// On an instance of a matrix step (its id `ID (k=v, ...)`): the instance's `matrix`
    /// values. Absent on every other step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Box<Map<String, Value>>>,
    /// The artifacts the step kept (its `artifacts:` entries, collected after it
    /// succeeded, or taken from another workflow's run). Absent when there are none
    /// (boxed: most steps keep none, and every event carrying a report stays small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(
        clippy::box_collection,
        reason = "boxed on purpose (see above); an allow, as the lint fires only while the type is not exported"
    )]
    pub artifacts: Option<Box<Vec<ArtifactReport>>>,
}

/// One artifact of a step, as the report lists it. The archive itself lives in the state
/// directory under its digest (`artifacts/<hex>.tar.gz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ArtifactReport {
    /// Its `name:`.
    pub name: String,
    /// `sha256:<hex>` of the `.tar.gz` archive (the name it is stored under).
    pub digest: String,
    /// Bytes of the archive (compressed).
    pub size: u64,
    /// Files in it.
    pub files: u64,
    /// When it is removed (its `retention:` after the step ended); null: with its run.
    pub expires_at: Option<String>,
    /// For an artifact taken with `from:`: the run it was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ArtifactOrigin>,
}

/// Where an artifact taken with `from:` came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ArtifactOrigin {
    /// The other workflow.
    pub workflow: String,
    /// Its run the artifact was taken from.
    pub run_id: String,
    /// The artifact's name in that run.
    pub name: String,
}

impl StepReport {
    /// A report for a step that has not started.
    pub(crate) fn pending(id: impl Into<String>) -> Self {
        StepReport {
            id: id.into(),
            name: None,
            status: StepStatus::Pending,
            cached: false,
            cache: None,
            attempts: 0,
            exit_code: None,
            error_class: None,
            continued: false,
            outputs: Map::new(),
            queued_ms: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            workflow: None,
            matrix: None,
            artifacts: None,
        }
    }
}

/// A cached step's `cache` in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepCache {
    /// The key (hex SHA-256 of what the step's result depends on).
    pub key: String,
    /// On a hit: the run that saved the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_run: Option<String>,
    /// What the lookup found, for `agent exec --explain-cache` (`hit ...`, `miss: ...`);
    /// not part of the JSON.
    #[serde(skip)]
    pub note: Option<String>,
}

/// A workflow called by a step, as it ran: the part of a [`RunReport`] that a nested run
/// has of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CalledWorkflow {
    /// The called workflow's name.
    pub name: String,
    /// How it ended (`succeeded`, `failed` or `cancelled`).
    pub status: RunStatus,
    /// Its stages in order.
    pub stages: Vec<StageReport>,
    /// Its rollback, when one ran.
    pub rollback: Option<RollbackReport>,
    /// Ids of its steps whose `compensate` steps ran, in the order they were undone.
    pub compensated: Vec<String>,
    /// Its compensation steps as they ran (absent when none ran).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensation: Vec<StepReport>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// One stage in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StageReport {
    /// The stage name.
    pub name: String,
    /// `succeeded` when all its steps succeeded or were skipped, `failed` when one failed,
    /// `skipped` when it never started, `cancelled` when the run was cancelled in it.
    pub status: StepStatus,
    /// Its steps, in file order.
    pub steps: Vec<StepReport>,
}

/// The workflow's `rollback` section as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RollbackReport {
    /// `succeeded` or `failed`.
    pub status: StepStatus,
    /// Its steps.
    pub steps: Vec<StepReport>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// Final status.
    pub status: RunStatus,
    /// When the run started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Wall time.
    pub duration_ms: Option<u64>,
    /// The parameters after conversion and defaults.
    pub parameters: Map<String, Value>,
    /// Stages in order.
    pub stages: Vec<StageReport>,
    /// The rollback, when one ran.
    pub rollback: Option<RollbackReport>,
    /// Ids of the steps whose `compensate` steps ran, in the order they were undone.
    pub compensated: Vec<String>,
    /// The `compensate` steps as they ran, in order (absent when none ran).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensation: Vec<StepReport>,
    /// Why the run failed, if it did.
    pub error: Option<String>,
}

impl RunReport {
    /// The report of a run that ended without running a step (it failed before it started,
    /// or was cancelled while queued): its status and why, no stages.
    pub(crate) fn ended_early(
        run_id: impl Into<String>,
        workflow: impl Into<String>,
        status: RunStatus,
        error: impl Into<String>,
    ) -> RunReport {
        RunReport {
            run_id: run_id.into(),
            workflow: workflow.into(),
            status,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            parameters: Map::new(),
            stages: Vec::new(),
            rollback: None,
            compensated: Vec::new(),
            compensation: Vec::new(),
            error: Some(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_and_status_strings() {
        let mut step = StepReport::pending("a");
        step.status = StepStatus::Succeeded;
        step.attempts = 2;
        let report = RunReport {
            run_id: "r1".into(),
            workflow: "w".into(),
            status: RunStatus::Failed,
            started_at: Some(rfc3339(
                DateTime::<Utc>::from_timestamp(0, 0).expect("epoch"),
            )),
            finished_at: None,
            duration_ms: Some(5),
            parameters: Map::new(),
            stages: vec![StageReport {
                name: "s".into(),
                status: StepStatus::Failed,
                steps: vec![step],
            }],
            rollback: None,
            compensated: vec!["a".into()],
            compensation: Vec::new(),
            error: Some("boom".into()),
        };
        let v = serde_json::to_value(&report).expect("serialize");
        assert_eq!(v["status"], "failed");
        assert_eq!(v["started_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["rollback"], Value::Null);
        assert_eq!(v["compensated"][0], "a");
        let s = &v["stages"][0]["steps"][0];
        for key in [
            "id",
            "status",
            "cached",
            "attempts",
            "exit_code",
            "error_class",
            "outputs",
            "queued_ms",
            "started_at",
            "finished_at",
            "duration_ms",
        ] {
            assert!(s.get(key).is_some(), "missing {key}");
        }
        assert_eq!(s["attempts"], 2);
        assert_eq!(s["status"], "succeeded");
        assert!(s.get("name").is_none() && s.get("continued").is_none());
        let back: RunReport = serde_json::from_value(v).expect("deserialize");
        assert_eq!(back, report);
    }

    /// A call step carries its workflow's report; other steps and runs without
    /// compensation keep exactly the fields they had, and reports stored before read back.
    #[test]
    fn called_workflows_nest_and_old_reports_still_read() {
        let plain = serde_json::to_value(StepReport::pending("a")).expect("serialize");
        assert!(plain.get("workflow").is_none(), "{plain}");
        let mut call = StepReport::pending("ci");
        call.workflow = Some(Box::new(CalledWorkflow {
            name: "child".into(),
            status: RunStatus::Failed,
            stages: vec![StageReport {
                name: "test".into(),
                status: StepStatus::Failed,
                steps: vec![StepReport::pending("unit")],
            }],
            rollback: None,
            compensated: Vec::new(),
            compensation: Vec::new(),
            error: Some("boom".into()),
        }));
        let v = serde_json::to_value(&call).expect("serialize");
        assert_eq!(v["workflow"]["stages"][0]["steps"][0]["id"], "unit");
        assert_eq!(v["workflow"]["status"], "failed");
        assert!(v["workflow"].get("compensation").is_none());
        let back: StepReport = serde_json::from_value(v).expect("deserialize");
        assert_eq!(back, call);
        let old = serde_json::json!({
            "run_id": "1", "workflow": "w", "status": "succeeded", "started_at": null,
            "finished_at": null, "duration_ms": null, "parameters": {}, "stages": [{
                "name": "s", "status": "succeeded", "steps": [{"id": "a",
                "status": "succeeded", "cached": false, "attempts": 1, "exit_code": 0,
                "error_class": null, "outputs": {}, "started_at": null,
                "finished_at": null, "duration_ms": null}]}],
            "rollback": null, "compensated": [], "error": null
        });
        let old: RunReport = serde_json::from_value(old).expect("an old report reads");
        assert!(old.compensation.is_empty() && old.stages[0].steps[0].workflow.is_none());
        assert!(
            serde_json::to_value(&old)
                .expect("serialize")
                .get("compensation")
                .is_none()
        );
    }
}
