//! The outbox as the notifier uses it: a webhook's queue is FIFO, a run's end queued by
//! `finish_run` is held until released and then goes behind the run's earlier events, with
//! the same delivery id.

use agent::store::{NewDelivery, NewRun, RunFinish, RunStatus, Trigger, TriggerKind};
use chrono::Utc;
use serde_json::json;

use crate::common::backends::on_each_backend;

fn delivery(webhook: &str, event: &str, run: agent::store::RunId) -> NewDelivery {
    NewDelivery {
        webhook: webhook.into(),
        event: event.into(),
        run_id: Some(run),
        body: json!({"url": "http://127.0.0.1:9/", "payload": {"event": event}}),
    }
}

#[test]
fn run_end_is_held_then_released_behind_earlier_events() {
    on_each_backend(|b| {
        let mut store = b.open();
        let run = store
            .enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
            .expect("enqueue")
            .run_id();
        assert_eq!(
            store
                .claim("test", 1, std::time::Duration::from_secs(60))
                .expect("claim")
                .len(),
            1
        );
        store
            .enqueue_delivery(&delivery("chat", "run.started", run))
            .expect("queue");
        let mut finish = RunFinish::new(RunStatus::Failed);
        finish.deliveries.push(delivery("chat", "run.failed", run));
        store.finish_run(run, &finish).expect("finish");
        // Queued by the notifier a moment later than the run's end (the race it guards against).
        store
            .enqueue_delivery(&delivery("chat", "step.failed", run))
            .expect("queue");
        let end_id = store
            .list_deliveries(10)
            .expect("list")
            .into_iter()
            .find(|d| d.event == "run.failed")
            .expect("run end queued")
            .id;
        // Held: not due now.
        let due: Vec<String> = store
            .due_deliveries(Utc::now(), 10)
            .expect("due")
            .into_iter()
            .map(|d| d.event)
            .collect();
        assert_eq!(due, vec!["run.started", "step.failed"]);

        // Released: due, and behind step.failed in the webhook's queue, with its id kept.
        let released = store
            .release_run_deliveries(run, &["run.succeeded", "run.failed", "run.cancelled"])
            .expect("release");
        assert_eq!(released, 1);
        assert_eq!(
            store
                .release_run_deliveries(run, &["run.failed"])
                .expect("again"),
            0
        );
        let mut order = Vec::new();
        while let Some(head) = store.next_pending_delivery("chat").expect("head") {
            order.push((head.event.clone(), head.id.clone()));
            store
                .record_delivery_attempt(
                    &head.id,
                    &agent::store::DeliveryOutcome::Delivered { status_code: 200 },
                )
                .expect("record");
        }
        let events: Vec<&str> = order.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(events, vec!["run.started", "step.failed", "run.failed"]);
        assert_eq!(order[2].1, end_id);
        assert!(
            store
                .next_pending_delivery("other")
                .expect("none")
                .is_none()
        );

        // Pruning drops finished deliveries last touched before the cutoff, never pending ones.
        store
            .enqueue_delivery(&delivery("chat", "run.queued", run))
            .expect("queue");
        assert_eq!(
            store
                .prune_deliveries(Utc::now() - chrono::Duration::hours(1))
                .expect("prune"),
            0
        );
        let pruned = store
            .prune_deliveries(Utc::now() + chrono::Duration::seconds(1))
            .expect("prune");
        assert_eq!(pruned, 3);
        let left = store.list_deliveries(10).expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].event, "run.queued");
    });
}

/// A run's end is written as one un-rendered outbox event in the transaction that ends the
/// run, and rendered into deliveries exactly once: in one transaction with the event row's
/// removal, so a crash renders it again or not at all, never twice.
#[test]
fn run_end_event_is_rendered_once_into_deliveries() {
    on_each_backend(|b| {
        let mut store = b.open();
        let run = store
            .enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
            .expect("enqueue")
            .run_id();
        assert_eq!(
            store
                .claim("test", 1, std::time::Duration::from_secs(60))
                .expect("claim")
                .len(),
            1
        );
        let mut finish = RunFinish::new(RunStatus::Succeeded);
        finish.event = Some("run.succeeded".into());
        store.finish_run(run, &finish).expect("finish");
        assert!(store.list_deliveries(10).expect("list").is_empty());

        // Only events written at or before the given time: none before the run ended.
        let before = Utc::now() - chrono::Duration::hours(1);
        let none = store
            .render_outbox_events(None, Some(before), |_, _| panic!("nothing to render"))
            .expect("render");
        assert!(none.is_empty());

        let mut seen = Vec::new();
        let queued = store
            .render_outbox_events(Some(run), None, |record, event| {
                seen.push((record.id, record.status, event.to_string()));
                vec![delivery("chat", event, record.id)]
            })
            .expect("render");
        assert_eq!(
            seen,
            vec![(run, RunStatus::Succeeded, "run.succeeded".into())]
        );
        assert_eq!(queued.len(), 1);
        let due = store.due_deliveries(Utc::now(), 10).expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].event, "run.succeeded");
        // Gone with its rendering.
        let again = store
            .render_outbox_events(None, None, |_, _| panic!("rendered twice"))
            .expect("render");
        assert!(again.is_empty());
    });
}

/// Agents of a fleet render the outbox at the same time: every run's end event becomes its
/// deliveries exactly once, whichever connection takes it (two connections, two threads,
/// rendering in a loop while the runs end).
#[test]
fn concurrent_renderers_render_each_event_once() {
    on_each_backend(|b| {
        const RUNS: usize = 40;
        let mut store = b.open();
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let run = store
                .enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
                .expect("enqueue")
                .run_id();
            runs.push(run);
        }
        let ended = std::sync::atomic::AtomicBool::new(false);
        let rendered: Vec<Vec<agent::store::RunId>> = std::thread::scope(|scope| {
            let renderers: Vec<_> = (0..2)
                .map(|_| {
                    let mut own = b.open();
                    let ended = &ended;
                    scope.spawn(move || {
                        let mut seen = Vec::new();
                        loop {
                            // Read before rendering: after the last run ended, one more pass
                            // takes whatever is left.
                            let last = ended.load(std::sync::atomic::Ordering::SeqCst);
                            let queued = own
                                .render_outbox_events(None, None, |record, event| {
                                    vec![delivery("chat", event, record.id)]
                                })
                                .expect("render");
                            seen.extend(queued.iter().filter_map(|d| d.run_id));
                            if last {
                                return seen;
                            }
                        }
                    })
                })
                .collect();
            for run in &runs {
                store.mark_running(*run).expect("running");
                let mut finish = RunFinish::new(RunStatus::Succeeded);
                finish.event = Some("run.succeeded".into());
                store.finish_run(*run, &finish).expect("finish");
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
            renderers
                .into_iter()
                .map(|r| r.join().expect("renderer"))
                .collect()
        });
        let mut all: Vec<_> = rendered.concat();
        all.sort();
        assert_eq!(all, runs, "each event rendered once");
        let mut queued: Vec<_> = store
            .list_deliveries(1000)
            .expect("list")
            .into_iter()
            .filter_map(|d| d.run_id)
            .collect();
        queued.sort();
        assert_eq!(queued, runs, "one delivery per event");
    });
}
