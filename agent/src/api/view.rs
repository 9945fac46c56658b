//! The JSON shapes the API answers with (the README's route table), built from store
//! records: run summaries for lists and the full run report (plus `trigger` and `repo`) for
//! one run.
//!
//! A finished run carries the report the engine wrote; a queued, running or interrupted one
//! gets a report assembled from its recorded steps, so both look the same to clients. Run ids
//! are strings in every shape, as in `agent exec --json`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::engine::report::rfc3339;
use crate::store::{RunId, RunRecord, RunStatus, RunSummary, StepRecord, Trigger};

/// The `trigger` object: `kind`, `commit`, `branch`, `scheduled_for`.
pub fn trigger_json(trigger: &Trigger) -> Value {
    json!({
        "kind": trigger.kind.as_str(),
        "commit": trigger.commit,
        "branch": trigger.branch,
        "scheduled_for": trigger.scheduled_for.map(rfc3339),
    })
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

fn duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Value {
    match start {
        Some(start) => {
            let ms = (end.unwrap_or(now) - start).num_milliseconds().max(0);
            Value::from(ms)
        }
        None => Value::Null,
    }
}

/// A run's summary, as in `GET /api/v1/runs`.
pub fn summary(run: &RunSummary, now: DateTime<Utc>) -> Value {
    json!({
        "run_id": run.id.to_string(),
        "workflow": run.workflow,
        "repo": run.repo,
        "status": run.status.as_str(),
        "trigger": trigger_json(&run.trigger),
        "created_at": rfc3339(run.created_at),
        "started_at": time(run.started_at),
        "finished_at": time(run.finished_at),
        "duration_ms": run.duration_ms(now),
        "error": run.error,
        "retry_of": run.retry_of.map(|r| r.to_string()),
    })
}

/// One step of a live report, from its record.
fn step_json(step: &StepRecord, now: DateTime<Utc>) -> Value {
    json!({
        "id": step.step_id,
        "status": step.status.as_str(),
        "cached": step.cached,
        "attempts": step.attempts,
        "exit_code": step.exit_code,
        "error_class": step.error_class,
        "outputs": step.outputs.clone().unwrap_or_else(|| Value::Object(Map::new())),
        "queued_ms": step.queued_ms,
        "started_at": time(step.started_at),
        "finished_at": time(step.finished_at),
        "duration_ms": duration(step.started_at, step.finished_at, now),
    })
}

/// A stage's status from its steps' statuses.
fn stage_status(steps: &[&StepRecord]) -> &'static str {
    use crate::store::StepStatus as S;
    let has = |s: S| steps.iter().any(|step| step.status == s);
    if has(S::Running) {
        "running"
    } else if has(S::Failed) {
        "failed"
    } else if has(S::Cancelled) {
        "cancelled"
    } else if has(S::Interrupted) {
        "interrupted"
    } else if !steps.is_empty() && steps.iter().all(|s| s.status == S::Skipped) {
        "skipped"
    } else {
        "succeeded"
    }
}

/// Stages in the order their first step was recorded, each with its steps.
fn stages_json(steps: &[StepRecord], now: DateTime<Utc>) -> Value {
    let mut order: Vec<(&str, Vec<&StepRecord>)> = Vec::new();
    for step in steps {
        match order.iter_mut().find(|(name, _)| *name == step.stage) {
            Some((_, list)) => list.push(step),
            None => order.push((&step.stage, vec![step])),
        }
    }
    Value::Array(
        order
            .into_iter()
            .map(|(name, list)| {
                json!({
                    "name": name,
                    "status": stage_status(&list),
                    "steps": list.iter().map(|s| step_json(s, now)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The full report of one run: the engine's report when the run finished with one (its
/// status and times taken from the store, which knows of later transitions), else one built
/// from the recorded steps; plus `trigger`, `repo` and `created_at`.
pub fn report(run: &RunRecord, steps: &[StepRecord], now: DateTime<Utc>) -> Value {
    let mut report = match &run.report {
        Some(Value::Object(stored)) if run.status.is_final() => stored.clone(),
        _ => {
            let mut live = Map::new();
            live.insert("stages".into(), stages_json(steps, now));
            live.insert("rollback".into(), Value::Null);
            live.insert("compensated".into(), Value::Array(Vec::new()));
            live
        }
    };
    report.insert("run_id".into(), Value::String(run.id.to_string()));
    report.insert("workflow".into(), Value::String(run.workflow.clone()));
    report.insert("status".into(), Value::String(run.status.as_str().into()));
    report.insert("repo".into(), json!(run.repo));
    report.insert("trigger".into(), trigger_json(&run.trigger));
    report.insert("created_at".into(), Value::String(rfc3339(run.created_at)));
    report.insert("started_at".into(), time(run.started_at));
    report.insert("finished_at".into(), time(run.finished_at));
    report.insert("duration_ms".into(), json!(run.duration_ms(now)));
    report
        .entry("parameters")
        .or_insert_with(|| run.parameters.clone());
    if run.error.is_some() || !report.contains_key("error") {
        report.insert("error".into(), json!(run.error));
    }
    report.insert(
        "retry_of".into(),
        json!(run.retry_of.map(|r| r.to_string())),
    );
    Value::Object(report)
}

/// True when `status` is one the store knows.
pub fn parse_status(text: &str) -> Option<RunStatus> {
    text.parse().ok()
}

/// A run id from a path segment: a positive integer, else `None` (answered with 404).
pub fn parse_run_id(text: &str) -> Option<RunId> {
    match text.parse::<RunId>() {
        Ok(id) if id.0 > 0 => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StepStatus, TriggerKind};

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
        let v = summary(&record(RunStatus::Running).summary(), now);
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
        let v = report(&record(RunStatus::Running), &steps, now);
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
            json!({"run_id": "x", "status": "succeeded", "stages": [{"name": "s"}],
            "rollback": null, "compensated": ["q"], "error": null, "parameters": {}}),
        );
        let v = report(&run, &[], Utc::now());
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
