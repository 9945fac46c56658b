//! The fleet's node rows and the heartbeat that renews a node's run leases, on each backend.

use std::time::Duration;

use agent::store::{NewRun, NodeBeat, Trigger, TriggerKind};
use chrono::{TimeZone, Utc};

use crate::common::backends::on_each_backend;

fn beat(name: &str, lease: Duration) -> NodeBeat {
    NodeBeat {
        name: name.into(),
        started_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        lease,
        capacity: 4,
        address: Some("http://127.0.0.1:8420".into()),
        version: Some("1.2.3".into()),
    }
}

/// A heartbeat writes the node's row, a later one refreshes it; rows are listed by name
/// with their heartbeat, lease and capacity; `lost` is true once the node has been silent
/// longer than its lease; a removed node is no longer listed.
#[test]
fn heartbeats_write_node_rows_that_list_and_go_lost() {
    on_each_backend(|b| {
        let mut db = b.open();
        let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let lease = Duration::from_secs(15);
        db.heartbeat_node(&beat("b-node", lease), &[], t0)
            .expect("beat");
        db.heartbeat_node(&beat("a-node", lease), &[], t0)
            .expect("beat");
        let later = t0 + chrono::Duration::seconds(2);
        let answer = db
            .heartbeat_node(&beat("a-node", lease), &[], later)
            .expect("beat again");
        assert!(answer.cancel.is_empty() && answer.lost.is_empty());
        let nodes = db.list_nodes().expect("list");
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a-node", "b-node"]);
        let a = &nodes[0];
        assert_eq!(a.heartbeat_at, later);
        assert_eq!(a.lease, lease);
        assert_eq!(a.capacity, 4);
        assert_eq!(a.runs, 0);
        assert_eq!(a.address.as_deref(), Some("http://127.0.0.1:8420"));
        assert!(!a.lost(later + chrono::Duration::seconds(15)));
        assert!(a.lost(later + chrono::Duration::seconds(16)));
        assert!(db.remove_node("b-node").expect("remove"));
        assert!(!db.remove_node("b-node").expect("remove again"));
        assert_eq!(db.list_nodes().expect("list").len(), 1);
    });
}

/// A heartbeat renews the leases of the runs its node holds (a reclaim at the old expiry
/// takes nothing), answers the ones whose cancellation was requested elsewhere, and names
/// the ones it lost: reclaimed by another node after the lease lapsed, or held by another
/// owner. The node's `runs` counts the runs it holds.
#[test]
fn heartbeats_renew_held_runs_and_report_cancels_and_losses() {
    on_each_backend(|b| {
        let mut db = b.open();
        let lease = Duration::from_secs(30);
        let mut ids = Vec::new();
        for w in ["a", "b", "c"] {
            ids.push(
                db.enqueue_run(&NewRun::new(w, Trigger::new(TriggerKind::Manual)))
                    .expect("enqueue")
                    .run_id(),
            );
        }
        let claimed = db.claim("n1", 2, lease).expect("claim");
        assert_eq!(claimed.len(), 2);
        for run in &claimed {
            db.mark_running(run.id).expect("running");
        }
        let other = db.claim("n2", 1, lease).expect("claim");
        assert_eq!(other.len(), 1);
        let now = Utc::now();
        let answer = db
            .heartbeat_node(&beat("n1", lease), &[ids[0], ids[1]], now)
            .expect("beat");
        assert!(
            answer.cancel.is_empty() && answer.lost.is_empty(),
            "{answer:?}"
        );
        let nodes = db.list_nodes().expect("list");
        assert_eq!(nodes[0].runs, 2);
        // Renewed: nothing has lapsed a little after the claim's own lease.
        let reclaimed = db
            .reclaim_expired(now + chrono::Duration::seconds(20))
            .expect("reclaim");
        assert!(reclaimed.iter().all(|r| r.id == ids[2]), "{reclaimed:?}");
        assert!(db.request_cancel(ids[1]).expect("cancel"));
        let answer = db
            .heartbeat_node(&beat("n1", lease), &[ids[0], ids[1], ids[2]], Utc::now())
            .expect("beat");
        assert_eq!(answer.cancel, vec![ids[1]]);
        assert_eq!(answer.lost, vec![ids[2]]);
        // The lease lapses (the node was cut off) and another node reclaims the run.
        let reclaimed = db
            .reclaim_expired(Utc::now() + chrono::Duration::seconds(3600))
            .expect("reclaim");
        assert!(reclaimed.iter().any(|r| r.id == ids[0]));
        let answer = db
            .heartbeat_node(&beat("n1", lease), &[ids[0]], Utc::now())
            .expect("beat");
        assert_eq!(answer.lost, vec![ids[0]]);
    });
}
