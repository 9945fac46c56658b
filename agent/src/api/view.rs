//! The JSON shapes the API answers with (the README's route table), built from store
//! records: run summaries for lists and the full run report (plus `trigger` and `repo`) for
//! one run.
//!
//! A finished run carries the report the engine wrote; a queued, running or interrupted one
//! gets a report assembled from its recorded steps, so both look the same to clients. Run ids
//! are strings in every shape, as in `agent exec --json`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::model::api::{self, RunDetail, TriggerInfo};
use crate::model::report::{RunReport, StageReport, StepReport};
use crate::model::{StepStatus, rfc3339};
use crate::store::{RunId, RunRecord, RunStatus, RunSummary, StepRecord, Trigger};

/// The `trigger` object: `kind`, `commit`, `branch`, `scheduled_for`.
pub(crate) fn trigger_info(trigger: &Trigger) -> TriggerInfo {
    TriggerInfo {
        kind: trigger.kind,
        commit: trigger.commit.clone(),
        branch: trigger.branch.clone(),
        scheduled_for: trigger.scheduled_for.map(rfc3339),
        git_ref: None,
        pull_request: None,
        message: None,
    }
}

fn duration(
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<u64> {
    start.map(|start| u64::try_from((end.unwrap_or(now) - start).num_milliseconds()).unwrap_or(0))
}

/// A run's summary, as in `GET /api/v1/runs`.
pub(crate) fn summary(run: &RunSummary, now: DateTime<Utc>) -> api::RunSummary {
    api::RunSummary {
        run_id: run.id.to_string(),
        workflow: run.workflow.clone(),
        repo: run.repo.clone(),
        status: run.status,
        trigger: TriggerInfo {
            message: run.commit_message.clone(),
            ..trigger_info(&run.trigger)
        },
        created_at: rfc3339(run.created_at),
        started_at: run.started_at.map(rfc3339),
        finished_at: run.finished_at.map(rfc3339),
        duration_ms: run.duration_ms(now),
        error: run.error.clone(),
        retry_of: run.retry_of.map(|r| r.to_string()),
    }
}

/// One step of a live report, from its record.
fn step_report(step: &StepRecord, now: DateTime<Utc>) -> StepReport {
    let mut report = StepReport::pending(step.step_id.clone());
    report.status = step.status;
    report.cached = step.cached;
    report.attempts = step.attempts;
    report.exit_code = step.exit_code;
    report.error_class = step.error_class.clone();
    report.outputs = match &step.outputs {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    report.queued_ms = step.queued_ms;
    report.started_at = step.started_at.map(rfc3339);
    report.finished_at = step.finished_at.map(rfc3339);
    report.duration_ms = duration(step.started_at, step.finished_at, now);
    report
}

/// A stage's status from its steps' statuses.
fn stage_status(steps: &[&StepRecord]) -> StepStatus {
    use StepStatus as S;
    let has = |s: S| steps.iter().any(|step| step.status == s);
    if has(S::Running) {
        S::Running
    } else if has(S::Failed) {
        S::Failed
    } else if has(S::Cancelled) {
        S::Cancelled
    } else if has(S::Interrupted) {
        S::Interrupted
    } else if !steps.is_empty() && steps.iter().all(|s| s.status == S::Skipped) {
        S::Skipped
    } else {
        S::Succeeded
    }
}

/// Stages in the order their first step was recorded, each with its steps.
fn live_stages(steps: &[StepRecord], now: DateTime<Utc>) -> Vec<StageReport> {
    let mut order: Vec<(&str, Vec<&StepRecord>)> = Vec::new();
    for step in steps {
        match order.iter_mut().find(|(name, _)| *name == step.stage) {
            Some((_, list)) => list.push(step),
            None => order.push((&step.stage, vec![step])),
        }
    }
    order
        .into_iter()
        .map(|(name, list)| StageReport {
            name: name.to_string(),
            status: stage_status(&list),
            steps: list.iter().map(|s| step_report(s, now)).collect(),
        })
        .collect()
}

/// The full report of one run: the engine's report when the run finished with one (its
/// status and times taken from the store, which knows of later transitions), else one built
/// from the recorded steps; plus `trigger`, `repo` and `created_at`.
pub(crate) fn report(run: &RunRecord, steps: &[StepRecord], now: DateTime<Utc>) -> RunDetail {
    let stored = run
        .report
        .as_ref()
        .filter(|_| run.status.is_final())
        .and_then(|r| serde_json::from_value::<RunReport>(r.clone()).ok());
    let mut report = stored.unwrap_or_else(|| RunReport {
        run_id: String::new(),
        workflow: String::new(),
        status: run.status,
        started_at: None,
        finished_at: None,
        duration_ms: None,
        parameters: match &run.parameters {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        },
        stages: live_stages(steps, now),
        rollback: None,
        compensated: Vec::new(),
        compensation: Vec::new(),
        error: None,
    });
    report.run_id = run.id.to_string();
    report.workflow = run.workflow.clone();
    report.status = run.status;
    report.started_at = run.started_at.map(rfc3339);
    report.finished_at = run.finished_at.map(rfc3339);
    report.duration_ms = run
        .duration_ms(now)
        .map(|ms| u64::try_from(ms).unwrap_or(0));
    if run.error.is_some() {
        report.error = run.error.clone();
    }
    RunDetail {
        report,
        repo: run.repo.clone(),
        trigger: TriggerInfo {
            git_ref: run.event.as_ref().and_then(|e| e.git_ref.clone()),
            pull_request: run
                .event
                .as_ref()
                .and_then(|e| e.pull_request.as_ref())
                .and_then(|pr| serde_json::to_value(pr).ok()),
            ..trigger_info(&run.trigger)
        },
        created_at: rfc3339(run.created_at),
        retry_of: run.retry_of.map(|r| r.to_string()),
    }
}

/// True when `status` is one the store knows.
pub(crate) fn parse_status(text: &str) -> Option<RunStatus> {
    text.parse().ok()
}

/// A run id from a path segment: a positive integer, else `None` (answered with 404).
pub(crate) fn parse_run_id(text: &str) -> Option<RunId> {
    match text.parse::<RunId>() {
        Ok(id) if id.0 > 0 => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TriggerKind;
    use serde_json::json;

    fn record(status: RunStatus) -> RunRecord {
        let t0 = DateTime::from_timestamp_millis(1_000_000).expect("time");
        RunRecord {
            id: RunId(7),
            workflow: "build".into(),
            repo: Some("default".into()),
            status,
            trigger: Trigger {
                kind: TriggerKind::Push,
                commit: Some("abc".into()),
                branch: Some("main".into()),
                scheduled_for: None,
            },
            parameters: json!({"n": 1}),
            created_at: t0,
            started_at: Some(t0),
            finished_at: None,
            claimed_at: None,
            error: None,
            priority: 0,
            concurrency_group: None,
            dedup_key: None,
            retry_of: None,
            context: None,
            report: None,
            workflow_file: None,
            claim_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            event: None,
        }
    }

    fn step(stage: &str, id: &str, status: StepStatus) -> StepRecord {
        StepRecord {
            run_id: RunId(7),
            stage: stage.into(),
            step_id: id.into(),
            status,
            attempts: 1,
            exit_code: None,
            error_class: None,
            outputs: None,
            cached: false,
            started_at: None,
            finished_at: None,
            queued_ms: None,
        }
    }

    #[test]
    fn summary_has_the_documented_fields() {
        let now = DateTime::from_timestamp_millis(1_000_250).expect("time");
        let v = serde_json::to_value(summary(&record(RunStatus::Running).summary(), now))
            .expect("json");
        for key in [
            "run_id",
            "workflow",
            "repo",
            "status",
            "trigger",
            "created_at",
            "started_at",
            "duration_ms",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["run_id"], "7");
        assert_eq!(v["duration_ms"], 250);
        assert_eq!(v["trigger"]["kind"], "push");
        assert_eq!(v["trigger"]["scheduled_for"], Value::Null);
    }

    #[test]
    fn a_live_report_groups_steps_by_stage_in_order() {
        let now = Utc::now();
        let steps = vec![
            step("build", "a", StepStatus::Succeeded),
            step("test", "b", StepStatus::Running),
            step("build", "c", StepStatus::Succeeded),
        ];
        let v =
            serde_json::to_value(report(&record(RunStatus::Running), &steps, now)).expect("json");
        assert_eq!(v["status"], "running");
        assert_eq!(v["stages"][0]["name"], "build");
        assert_eq!(v["stages"][0]["steps"][1]["id"], "c");
        assert_eq!(v["stages"][0]["status"], "succeeded");
        assert_eq!(v["stages"][1]["status"], "running");
        assert_eq!(v["stages"][1]["steps"][0]["outputs"], json!({}));
        assert_eq!(v["repo"], "default");
        assert_eq!(v["trigger"]["commit"], "abc");
        assert_eq!(v["parameters"]["n"], 1);
        assert_eq!(v["compensated"], json!([]));
    }

    #[test]
    fn a_finished_report_keeps_the_engine_report_with_store_status() {
        let mut run = record(RunStatus::Succeeded);
        run.report = Some(
            json!({"run_id": "x", "workflow": "build", "status": "succeeded",
            "started_at": null, "finished_at": null, "duration_ms": null,
            "stages": [{"name": "s", "status": "succeeded", "steps": []}],
            "rollback": null, "compensated": ["q"], "error": null, "parameters": {}}),
        );
        let v = serde_json::to_value(report(&run, &[], Utc::now())).expect("json");
        assert_eq!(v["run_id"], "7");
        assert_eq!(v["stages"][0]["name"], "s");
        assert_eq!(v["compensated"][0], "q");
        assert_eq!(v["trigger"]["branch"], "main");
    }

    #[test]
    fn run_ids_from_paths() {
        assert_eq!(parse_run_id("12"), Some(RunId(12)));
        assert_eq!(parse_run_id("0"), None);
        assert_eq!(parse_run_id("-3"), None);
        assert_eq!(parse_run_id("abc"), None);
        assert_eq!(parse_run_id("99999999999999999999999"), None);
    }
}
