//! Retention: once an hour the scheduler deletes finished runs beyond `retention.max_runs`
//! or older than `retention.max_age`, with their step logs, kept workspaces and artifacts
//! (and artifacts past their own `retention:` earlier), and forgets fired cron slots older
//! than a day (each schedule's latest is always kept).

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

use crate::daemon::handle::Shared;
use crate::store::{Db, Retention, RunFilter, RunStatus, Store};

/// How long fired cron slots are remembered (each schedule's latest is always kept).
const CRON_FIRES_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// The scheduler's retention timer (a missed tick is not made up for).
pub(super) fn timer() -> Interval {
    let mut retention = tokio::time::interval(RETENTION_INTERVAL);
    retention.set_missed_tick_behavior(MissedTickBehavior::Delay);
    retention
}

/// Prunes finished runs, their logs and workspaces, and old cron fires.
pub(super) async fn prune(store: &Store, shared: &Shared) {
    let r = shared.config.retention;
    let retention = Retention {
        max_runs: r.max_runs,
        finished_before: r.max_age.and_then(|age| {
            chrono::Duration::from_std(age)
                .ok()
                .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        }),
        cron_fires_before: chrono::Utc::now().checked_sub_signed(CRON_FIRES_KEPT),
    };
    match store.prune_runs(retention).await {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(runs = ids.len(), "retention: deleted finished runs");
            let state_dir = &shared.state_dir;
            crate::daemon::run::logs::remove_run_logs(state_dir, &ids);
            // Kept workspaces of failed runs go with their runs.
            for id in &ids {
                let ws = crate::daemon::run::workspace::Workspace::path_for_run(state_dir, id);
                if ws.exists()
                    && let Err(err) = std::fs::remove_dir_all(&ws)
                {
                    tracing::warn!(workspace = %ws.display(), error = %err, "cannot remove workspace");
                }
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "retention failed"),
    }
    prune_artifacts(store, shared).await;
}

/// Deletes the artifacts past their `retention:`, then the archives no artifact names any
/// more (those of deleted runs included). Archives written since the oldest running run was
/// created are spared: that run's artifacts may not be recorded yet.
async fn prune_artifacts(store: &Store, shared: &Shared) {
    let now = chrono::Utc::now();
    match store.write(move |db| db.prune_artifacts(now)).await {
        Ok(n) if n > 0 => tracing::info!(artifacts = n, "retention: deleted expired artifacts"),
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(error = %err, "artifact retention failed");
            return;
        }
    }
    let running = RunFilter {
        status: Some(RunStatus::Running),
        ..RunFilter::default()
    };
    let (keep, running) = match (
        store.query(|db: &Db| db.artifact_digests()).await,
        store.list_runs(running, 1000).await,
    ) {
        (Ok(keep), Ok(running)) => (keep, running),
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(error = %err, "artifact retention failed");
            return;
        }
    };
    let spare_since = running
        .iter()
        .map(|r| r.created_at)
        .min()
        .map_or_else(std::time::SystemTime::now, std::time::SystemTime::from);
    let dir = crate::state_dir::artifacts_dir(&shared.state_dir);
    let removed = tokio::task::spawn_blocking(move || {
        crate::engine::archive::sweep(&dir, &keep, spare_since)
    })
    .await
    .unwrap_or(0);
    if removed > 0 {
        tracing::info!(
            archives = removed,
            "retention: deleted unused artifact archives"
        );
    }
}
