//! The store's keyed state and self-watching records on each backend (SQLite and
//! PostgreSQL): branch heads, inbound hook ids, anomalies, delivery metrics, run samples,
//! artifacts and the step history.

use agent::store::{
    ArtifactRecord, Db, DeliveryOutcome, NewAnomaly, NewDelivery, NewRun, RunFinish, RunId,
    RunStatus, StepFinish, StepStart, StepStatus, Trigger, TriggerKind,
};
use chrono::{Duration, Utc};
use serde_json::json;

use crate::common::backends::on_each_backend;

/// Queues a manual run of `workflow` in `repo` and ends it with `status` (and `report`).
fn finished_run(
    store: &mut Db,
    workflow: &str,
    repo: Option<&str>,
    status: RunStatus,
    report: Option<serde_json::Value>,
) -> RunId {
    let mut run = NewRun::new(workflow, Trigger::new(TriggerKind::Manual));
    run.repo = repo.map(str::to_string);
    let id = store.enqueue_run(&run).expect("enqueue").run_id();
    store.mark_running(id).expect("running");
    let mut finish = RunFinish::new(status);
    finish.report = report;
    store.finish_run(id, &finish).expect("finish");
    id
}

/// The last handled commit of each branch: replaced, listed by branch name, per repository.
#[test]
fn branch_heads_are_kept_per_repository() {
    on_each_backend(|b| {
        let mut store = b.open();
        assert_eq!(store.last_seen_commit("app", "main").unwrap(), None);
        store.set_last_seen_commit("app", "main", "c1").unwrap();
        store.set_last_seen_commit("app", "main", "c2").unwrap();
        store.set_last_seen_commit("app", "Dev", "d1").unwrap();
        store.set_last_seen_commit("lib", "main", "l1").unwrap();
        assert_eq!(
            store.last_seen_commit("app", "main").unwrap().as_deref(),
            Some("c2")
        );
        assert_eq!(
            store.seen_branches("app").unwrap(),
            vec![("Dev".into(), "d1".into()), ("main".into(), "c2".into())]
        );
        assert_eq!(store.last_cron_fire("none").unwrap(), None);
    });
}

/// An inbound hook's delivery id is remembered once per source, also by another connection
/// (an agent restarted, or another agent of the fleet).
#[test]
fn hook_deliveries_are_remembered_once() {
    on_each_backend(|b| {
        let mut store = b.open();
        assert!(
            store
                .record_hook_delivery("github", "d1", Some("app"))
                .unwrap()
        );
        assert!(!store.record_hook_delivery("github", "d1", None).unwrap());
        assert!(store.record_hook_delivery("gitea", "d1", None).unwrap());
        drop(store);
        let mut again = b.open();
        assert!(!again.record_hook_delivery("github", "d1", None).unwrap());
    });
}

fn anomaly(run: i64) -> NewAnomaly {
    NewAnomaly {
        kind: "slow_run".into(),
        workflow: "w".into(),
        repo: Some("app".into()),
        run_id: Some(RunId(run)),
        step: None,
        message: "slow".into(),
        details: json!({"duration_ms": 10}),
    }
}

/// One anomaly per kind, run and step; listed newest first, by workflow.
#[test]
fn anomalies_are_recorded_once_per_run_and_listed_newest_first() {
    on_each_backend(|b| {
        let mut store = b.open();
        let first = store.record_anomaly(&anomaly(1)).unwrap();
        assert_eq!(first.as_ref().map(|a| &a.anomaly), Some(&anomaly(1)));
        assert!(store.record_anomaly(&anomaly(1)).unwrap().is_none());
        let mut step = anomaly(1);
        step.kind = "step_memory".into();
        step.step = Some("a".into());
        assert!(store.record_anomaly(&step).unwrap().is_some());
        let mut other_step = step.clone();
        other_step.step = Some("b".into());
        assert!(store.record_anomaly(&other_step).unwrap().is_some());
        assert!(store.record_anomaly(&step).unwrap().is_none());
        let listed = store.list_anomalies(None, 10).unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].anomaly, other_step);
        assert_eq!(listed[2].anomaly, anomaly(1));
        assert_eq!(listed[2].id, first.unwrap().id);
        assert_eq!(store.list_anomalies(Some("w"), 2).unwrap().len(), 2);
        assert!(store.list_anomalies(Some("x"), 10).unwrap().is_empty());
    });
}

/// The delivery figures `/metrics` and the notifier read: by status, attempts by outcome,
/// pending per webhook, the latest attempt.
#[test]
fn delivery_counts_by_status_and_outcome() {
    on_each_backend(|b| {
        let mut store = b.open();
        let queue = |store: &mut Db, webhook: &str| {
            store
                .enqueue_delivery(&NewDelivery {
                    webhook: webhook.into(),
                    event: "run.started".into(),
                    run_id: None,
                    body: json!({}),
                })
                .unwrap()
        };
        let a = queue(&mut store, "b-hook");
        let c = queue(&mut store, "a-hook");
        queue(&mut store, "a-hook");
        assert_eq!(store.last_delivery_attempt(&a).unwrap(), None);
        let later = Utc::now() + Duration::seconds(30);
        for code in [None, Some(404), Some(503)] {
            store
                .record_delivery_attempt(
                    &a,
                    &DeliveryOutcome::Retry {
                        status_code: code,
                        error: "no".into(),
                        next_attempt_at: later,
                    },
                )
                .unwrap();
        }
        store
            .record_delivery_attempt(&a, &DeliveryOutcome::Delivered { status_code: 204 })
            .unwrap();
        store
            .record_delivery_attempt(
                &c,
                &DeliveryOutcome::GaveUp {
                    status_code: Some(410),
                    error: "gone".into(),
                },
            )
            .unwrap();
        let last = store.last_delivery_attempt(&a).unwrap().unwrap();
        assert_eq!((last.attempt, last.status_code), (4, Some(204)));
        let mut by_status = store.count_deliveries_by_status().unwrap();
        by_status.sort();
        assert_eq!(
            by_status,
            vec![
                ("delivered".into(), 1),
                ("failed".into(), 1),
                ("pending".into(), 1)
            ]
        );
        let mut outcomes = store.count_delivery_attempts().unwrap();
        outcomes.sort();
        assert_eq!(
            outcomes,
            vec![
                ("error".into(), 1),
                ("http_4xx".into(), 2),
                ("http_5xx".into(), 1),
                ("ok".into(), 1)
            ]
        );
        assert_eq!(
            store.pending_delivery_counts().unwrap(),
            vec![("a-hook".into(), 1)]
        );
    });
}

/// Run samples take the engine's duration from the report, newest first, up to a run.
#[test]
fn run_samples_use_the_report_duration() {
    on_each_backend(|b| {
        let mut store = b.open();
        let mut ids = Vec::new();
        for (i, status) in [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Succeeded,
        ]
        .into_iter()
        .enumerate()
        {
            let report = json!({"duration_ms": 100 * (i + 1)});
            ids.push(finished_run(
                &mut store,
                "w",
                Some("app"),
                status,
                Some(report),
            ));
        }
        let all = store
            .recent_run_samples("w", Some("app"), ids[2], false, 10)
            .unwrap();
        let durations: Vec<_> = all.iter().map(|s| s.duration_ms).collect();
        assert_eq!(durations, [Some(300), Some(200), Some(100)]);
        let ok = store
            .recent_run_samples("w", Some("app"), ids[1], true, 10)
            .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].id, ids[0]);
        assert!(
            store
                .recent_run_samples("w", None, ids[2], false, 10)
                .unwrap()
                .is_empty()
        );
    });
}

fn artifact(run: RunId, step: &str, name: &str, digest: &str) -> ArtifactRecord {
    ArtifactRecord {
        run_id: run,
        step_id: step.into(),
        name: name.into(),
        digest: digest.into(),
        size: 10,
        files: 2,
        created_at: Utc::now(),
        expires_at: None,
        from: None,
    }
}

/// Artifacts: a retried step replaces its record, a run lists its own in the order kept,
/// the newest succeeded run's is found by name, expired ones are pruned and their digests
/// forgotten.
#[test]
fn artifacts_are_recorded_listed_found_and_pruned() {
    on_each_backend(|b| {
        let mut store = b.open();
        let old = finished_run(&mut store, "w", Some("app"), RunStatus::Succeeded, None);
        let new = finished_run(&mut store, "w", Some("app"), RunStatus::Succeeded, None);
        let failed = finished_run(&mut store, "w", Some("app"), RunStatus::Failed, None);
        store
            .record_artifacts(&[artifact(old, "build", "bin", "sha256:old")])
            .unwrap();
        let mut expiring = artifact(new, "build", "logs", "sha256:logs");
        expiring.expires_at = Some(Utc::now() + Duration::hours(1));
        let mut taken = artifact(new, "build", "bin", "sha256:first");
        taken.from = Some(("up".into(), "7".into(), "bin".into()));
        store.record_artifacts(&[taken, expiring]).unwrap();
        // A retry of the step records `bin` again: it replaces the first record.
        store
            .record_artifacts(&[artifact(new, "build", "bin", "sha256:new")])
            .unwrap();
        store
            .record_artifacts(&[artifact(failed, "build", "bin", "sha256:failed")])
            .unwrap();
        let listed: Vec<(String, String)> = store
            .list_artifacts(new)
            .unwrap()
            .into_iter()
            .map(|a| (a.name, a.digest))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("logs".into(), "sha256:logs".into()),
                ("bin".into(), "sha256:new".into())
            ]
        );
        let latest = store
            .latest_artifact("w", Some("app"), None, "bin")
            .unwrap()
            .expect("found");
        assert_eq!((latest.run_id, latest.digest.as_str()), (new, "sha256:new"));
        assert_eq!(latest.from, None);
        assert!(
            store
                .latest_artifact("w", None, None, "bin")
                .unwrap()
                .is_none()
        );
        assert_eq!(store.artifact_digests().unwrap().len(), 4);
        assert_eq!(store.prune_artifacts(Utc::now()).unwrap(), 0);
        assert_eq!(
            store
                .prune_artifacts(Utc::now() + Duration::hours(2))
                .unwrap(),
            1
        );
        assert!(!store.artifact_digests().unwrap().contains("sha256:logs"));
        assert_eq!(store.list_artifacts(new).unwrap().len(), 1);
    });
}

/// The step history: succeeded runs, per-step durations and outputs (cached results left
/// out).
#[test]
fn step_history_leaves_cached_results_out() {
    on_each_backend(|b| {
        let mut store = b.open();
        for cached in [false, true] {
            let id = store
                .enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
                .unwrap()
                .run_id();
            store.mark_running(id).unwrap();
            let start = StepStart {
                stage: "s".into(),
                step_id: "a".into(),
                attempt: 1,
            };
            store.record_step_started(id, &start).unwrap();
            let mut finish = StepFinish::new("s", "a", 1, StepStatus::Succeeded);
            finish.outputs = Some(json!({"x": "1"}));
            finish.cached = cached;
            store.record_step_finished(id, &finish).unwrap();
            store
                .finish_run(id, &RunFinish::new(RunStatus::Succeeded))
                .unwrap();
        }
        let history = store.step_history("w").unwrap();
        assert_eq!(history.succeeded_runs, 2);
        assert_eq!(history.durations.len(), 1);
        assert_eq!(history.durations[0].step_id, "a");
        assert_eq!(history.durations[0].count, 1);
        assert_eq!(history.outputs.len(), 1);
        assert_eq!(history.outputs[0].outputs, r#"{"x":"1"}"#);
        assert_eq!(store.step_history("other").unwrap().succeeded_runs, 0);
    });
}
