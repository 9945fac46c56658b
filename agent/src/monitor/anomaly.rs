//! Anomaly detection (the config's `anomalies`): per workflow (and repository), three
//! rules, with thresholds from the config.
//!
//! - **`slow_run`**: a succeeded run whose duration (the engine's `duration_ms`, so checkout
//!   time does not count) is above `slow_factor` × the p95 (nearest rank) of the durations
//!   of the workflow's last `window` succeeded runs before it, once `min_samples` of those
//!   exist, and also at least `min_slowdown` (default 5 s) above that p95: a 50 ms run is not
//!   slow against a 10 ms p95. Failed runs are neither judged nor part of the history.
//! - **`failure_rate`**: the share of failed runs among the last `failure_window` finished
//!   (succeeded or failed; cancelled runs do not count) runs rises *above* `failure_rate`.
//!   It is raised once when the rate crosses the threshold (the window ending at the
//!   previous run was not above it), not on every failed run while it stays high; a window
//!   is judged once it holds `min(min_samples, failure_window)` runs.
//! - **`step_memory`** (only when `step_memory_mb` is set): while steps run, every
//!   [`MEMORY_SAMPLE_INTERVAL`] the resident memory (sysinfo) of every process of each step
//!   is summed: the processes whose environment carries the run's `AGENT_RUN_MARKER` and the
//!   step's `AGENT_STEP_ID` (the whole process tree, even what left the step's process group
//!   with `setsid`). A step above the limit raises one anomaly.
//!
//! Runs are judged from the store when their `RunFinished` event arrives, so the history
//! survives restarts and a lagging event receiver only loses the judgement of the runs it
//! missed. Each anomaly is stored once (the store refuses a second one of the same kind for
//! the same run and step), listed by `GET /api/v1/anomalies`, and published as
//! [`DaemonEvent::Anomaly`] for the notifier. What this module does not own: the
//! notification (`crate::notify`) and the metrics.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::AnomaliesConfig;
use crate::daemon::handle::{DaemonEvent, DaemonHandle, Shared};
use crate::model::report::rfc3339;
use crate::store::{AnomalyRecord, Db, NewAnomaly, RunId, RunSample, RunStatus, StoreError};

/// How often running steps' memory is sampled.
pub(crate) const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// The kind of a slow run.
pub(crate) const SLOW_RUN: &str = "slow_run";
/// The kind of a failure rate above the threshold.
pub(crate) const FAILURE_RATE: &str = "failure_rate";
/// The kind of a step above the memory limit.
pub(crate) const STEP_MEMORY: &str = "step_memory";

/// An anomaly as the API lists it and the `anomaly` event carries it.
pub(crate) fn anomaly_body(record: &AnomalyRecord) -> crate::model::api::Anomaly {
    let a = &record.anomaly;
    crate::model::api::Anomaly {
        id: record.id,
        kind: a.kind.clone(),
        workflow: a.workflow.clone(),
        repo: a.repo.clone(),
        run_id: a.run_id.map(|r| r.to_string()),
        step: a.step.clone(),
        message: a.message.clone(),
        details: a.details.clone(),
        created_at: rfc3339(record.created_at),
    }
}

/// [`anomaly_body`] as JSON, for the `anomaly` event's webhooks.
pub(crate) fn anomaly_json(record: &AnomalyRecord) -> Value {
    serde_json::to_value(anomaly_body(record)).unwrap_or(Value::Null)
}

/// The p95 of `values` by the nearest-rank method; `None` when empty.
pub(crate) fn p95(values: &[u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    // ceil(0.95 n) in integers, 1-based.
    let rank = (sorted.len() * 95).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Judges a run against the ones before it: `samples` are the workflow's latest finished
/// runs up to and including `run`, newest first (succeeded and failed). Pure: returns the
/// anomalies to record.
pub(crate) fn judge_run(
    config: &AnomaliesConfig,
    workflow: &str,
    repo: Option<&str>,
    run: RunId,
    samples: &[RunSample],
) -> Vec<NewAnomaly> {
    let mut out = Vec::new();
    let Some(this) = samples.first().filter(|s| s.id == run) else {
        return out;
    };
    let anomaly = |kind: &str, message: String, details: Value| NewAnomaly {
        kind: kind.to_string(),
        workflow: workflow.to_string(),
        repo: repo.map(str::to_string),
        run_id: Some(run),
        step: None,
        message,
        details,
    };
    // Slow run.
    if this.status == RunStatus::Succeeded
        && let Some(duration) = this.duration_ms
    {
        let history: Vec<u64> = samples[1..]
            .iter()
            .filter(|s| s.status == RunStatus::Succeeded)
            .filter_map(|s| s.duration_ms)
            .take(config.window)
            .collect();
        if history.len() >= config.min_samples.max(1)
            && let Some(p) = p95(&history)
        {
            let floor = p as f64 + config.min_slowdown.as_secs_f64() * 1000.0;
            let threshold = (p as f64 * config.slow_factor).max(floor);
            if duration as f64 > threshold {
                out.push(anomaly(
                    SLOW_RUN,
                    format!(
                        "run {run} of `{workflow}` took {:.2} s, more than {} × the p95 of its last {} successful runs ({:.2} s)",
                        duration as f64 / 1000.0,
                        config.slow_factor,
                        history.len(),
                        p as f64 / 1000.0
                    ),
                    json!({
                        "duration_ms": duration,
                        "p95_ms": p,
                        "threshold_ms": threshold.round() as u64,
                        "slow_factor": config.slow_factor,
                        "samples": history.len(),
                    }),
                ));
            }
        }
    }
    // Failure rate crossing the threshold.
    let window = config.failure_window.max(1);
    let needed = config.min_samples.clamp(1, window);
    let rate = |w: &[RunSample]| -> Option<(usize, f64)> {
        if w.len() < needed {
            return None;
        }
        let failed = w.iter().filter(|s| s.status == RunStatus::Failed).count();
        Some((failed, failed as f64 / w.len() as f64))
    };
    let now = rate(&samples[..samples.len().min(window)]);
    let before = if samples.len() > 1 {
        rate(&samples[1..samples.len().min(window + 1)])
    } else {
        None
    };
    let above = |r: Option<(usize, f64)>| r.is_some_and(|(_, rate)| rate > config.failure_rate);
    if above(now)
        && !above(before)
        && let Some((failed, rate)) = now
    {
        let runs = samples.len().min(window);
        out.push(anomaly(
            FAILURE_RATE,
            format!(
                "`{workflow}` failed {failed} of its last {runs} runs ({:.0} %), above {:.0} %",
                rate * 100.0,
                config.failure_rate * 100.0
            ),
            json!({
                "failed": failed,
                "runs": runs,
                "failure_rate": rate,
                "threshold": config.failure_rate,
            }),
        ));
    }
    out
}

/// Reads a finished run's history and records what [`judge_run`] finds (blocking).
fn check_finished_run(
    store: &mut Db,
    config: &AnomaliesConfig,
    run: RunId,
) -> Result<Vec<AnomalyRecord>, StoreError> {
    let Some(record) = store.get_run(run)? else {
        return Ok(Vec::new());
    };
    if !matches!(record.status, RunStatus::Succeeded | RunStatus::Failed) {
        return Ok(Vec::new());
    }
    let want = config.window.max(config.failure_window) + 1;
    let samples = store.recent_run_samples(
        &record.workflow,
        record.repo.as_deref(),
        run,
        false,
        // Enough runs for the failure windows; succeeded ones for the slow history.
        want,
    )?;
    let mut samples = samples;
    if samples
        .iter()
        .filter(|s| s.status == RunStatus::Succeeded)
        .count()
        < config.window + 1
    {
        // Many failures in between: read the succeeded history on its own.
        let ok = store.recent_run_samples(
            &record.workflow,
            record.repo.as_deref(),
            run,
            true,
            config.window + 1,
        )?;
        let seen: HashSet<RunId> = samples.iter().map(|s| s.id).collect();
        let extra: Vec<RunSample> = ok.into_iter().filter(|s| !seen.contains(&s.id)).collect();
        samples.extend(extra);
        samples.sort_by_key(|s| std::cmp::Reverse(s.id));
    }
    let found = judge_run(
        config,
        &record.workflow,
        record.repo.as_deref(),
        run,
        &samples,
    );
    let mut recorded = Vec::new();
    for anomaly in found {
        if let Some(r) = store.record_anomaly(&anomaly)? {
            recorded.push(r);
        }
    }
    Ok(recorded)
}

/// A running step, as the memory sampler knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RunningStep {
    run: RunId,
    step: Arc<str>,
}

/// What a run is, for naming its anomalies.
#[derive(Debug, Clone)]
struct RunInfo {
    workflow: Arc<str>,
    repo: Option<Arc<str>>,
}

/// Sums resident memory per running step from `/proc` through sysinfo.
struct MemorySampler {
    /// `None` when sysinfo cannot read processes here (nothing is sampled then).
    system: Option<sysinfo::System>,
    /// `AGENT_RUN_MARKER=` value prefix of this process's runs.
    marker_prefix: String,
}

impl MemorySampler {
    /// `scope`: the engine's [`marker_scope`](crate::engine::EngineConfig::marker_scope).
    fn new(scope: Option<&str>) -> MemorySampler {
        MemorySampler {
            system: sysinfo::System::new().ok(),
            marker_prefix: crate::engine::run_marker(scope, ""),
        }
    }

    /// Bytes of resident memory of each step's processes (steps with no process left out).
    fn sample(&mut self, steps: &HashSet<RunningStep>) -> HashMap<RunningStep, u64> {
        use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, UpdateKind};
        let mut out = HashMap::new();
        let Some(system) = self.system.as_mut() else {
            return out;
        };
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_memory()
                .with_environ(UpdateKind::Always),
        );
        let run_var = OsString::from(format!("{}=", runners::RUN_MARKER_VAR));
        for process in system.processes().values() {
            let env = process.environ();
            let mut run = None;
            let mut step = None;
            for entry in env {
                let bytes = entry.as_encoded_bytes();
                if let Some(value) = bytes.strip_prefix(run_var.as_encoded_bytes()) {
                    run = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.strip_prefix(self.marker_prefix.as_str()))
                        .and_then(|id| id.parse::<i64>().ok())
                        .map(RunId);
                } else if let Some(value) = bytes.strip_prefix(b"AGENT_STEP_ID=") {
                    step = std::str::from_utf8(value).ok().map(Arc::<str>::from);
                }
            }
            if let (Some(run), Some(step)) = (run, step) {
                let key = RunningStep { run, step };
                if steps.contains(&key) {
                    *out.entry(key).or_insert(0) += process.memory();
                }
            }
        }
        out
    }
}

/// The detector: judges finished runs and samples running steps' memory until shutdown.
/// `events` must be subscribed before the scheduler starts, so no run is missed.
pub(crate) async fn run(handle: DaemonHandle, mut events: mpsc::UnboundedReceiver<DaemonEvent>) {
    let shared = handle.shared.clone();
    let config = shared.config.anomalies;
    let mut runs: HashMap<RunId, RunInfo> = HashMap::new();
    let mut running: HashSet<RunningStep> = HashSet::new();
    let mut flagged: HashSet<RunningStep> = HashSet::new();
    let scope = shared.engine.config().marker_scope.clone();
    let mut sampler = config
        .step_memory_mb
        .map(|_| MemorySampler::new(scope.as_deref()));
    let mut tick = tokio::time::interval(MEMORY_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = handle.shutdown_requested() => return,
            event = events.recv() => match event {
                Some(DaemonEvent::RunStarted { run_id, workflow, repo }) => {
                    runs.insert(run_id, RunInfo { workflow, repo });
                }
                Some(DaemonEvent::StepStarted { run_id, step, .. }) if sampler.is_some() => {
                    running.insert(RunningStep { run: run_id, step });
                }
                Some(DaemonEvent::StepFinished { run_id, step, .. }) => {
                    running.remove(&RunningStep { run: run_id, step });
                }
                Some(DaemonEvent::RunFinished { run_id, status, .. }) => {
                    runs.remove(&run_id);
                    running.retain(|s| s.run != run_id);
                    flagged.retain(|s| s.run != run_id);
                    if matches!(status, RunStatus::Succeeded | RunStatus::Failed) {
                        let found = judge(&shared, run_id).await;
                        for record in found {
                            publish(&handle, &record);
                        }
                    }
                }
                Some(_) => {}
                None => return,
            },
            _ = tick.tick(), if sampler.is_some() && !running.is_empty() => {
                let Some(limit_mb) = config.step_memory_mb else { continue };
                let Some(mut s) = sampler.take() else { continue };
                let steps = running.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    let usage = s.sample(&steps);
                    (s, usage)
                })
                .await;
                let Ok((s, usage)) = joined else {
                    tracing::warn!("memory sampling failed");
                    sampler = Some(MemorySampler::new(scope.as_deref()));
                    continue;
                };
                sampler = Some(s);
                for (step, bytes) in usage {
                    let limit = limit_mb.saturating_mul(1024 * 1024);
                    if bytes <= limit || !running.contains(&step) || flagged.contains(&step) {
                        continue;
                    }
                    flagged.insert(step.clone());
                    let info = runs.get(&step.run).cloned();
                    let anomaly = memory_anomaly(&step, info, bytes, limit_mb);
                    let recorded = record(&shared, anomaly).await;
                    if let Some(record) = recorded {
                        publish(&handle, &record);
                    }
                }
            }
        }
    }
}

fn memory_anomaly(
    step: &RunningStep,
    info: Option<RunInfo>,
    bytes: u64,
    limit_mb: u64,
) -> NewAnomaly {
    let used_mb = bytes as f64 / (1024.0 * 1024.0);
    let workflow = info
        .as_ref()
        .map(|i| i.workflow.to_string())
        .unwrap_or_default();
    NewAnomaly {
        kind: STEP_MEMORY.to_string(),
        workflow: workflow.clone(),
        repo: info.and_then(|i| i.repo.map(|r| r.to_string())),
        run_id: Some(step.run),
        step: Some(step.step.to_string()),
        message: format!(
            "step `{}` of run {} (`{workflow}`) uses {used_mb:.0} MiB, above the {limit_mb} MiB limit",
            step.step, step.run
        ),
        details: json!({
            "memory_bytes": bytes,
            "memory_mb": used_mb.round() as u64,
            "limit_mb": limit_mb,
        }),
    }
}

fn publish(handle: &DaemonHandle, record: &AnomalyRecord) {
    tracing::warn!(kind = %record.anomaly.kind, workflow = %record.anomaly.workflow,
        run = ?record.anomaly.run_id.map(|r| r.0), "anomaly: {}", record.anomaly.message);
    handle.emit(DaemonEvent::Anomaly {
        kind: record.anomaly.kind.as_str().into(),
        workflow: record.anomaly.workflow.as_str().into(),
        run_id: record.anomaly.run_id,
        anomaly: Arc::new(anomaly_json(record)),
    });
}

/// Judges a finished run on the store's writer (reads and the anomaly's insert together).
async fn judge(shared: &Arc<Shared>, run: RunId) -> Vec<AnomalyRecord> {
    let config = shared.config.anomalies;
    match shared
        .store
        .write(move |db| check_finished_run(db, &config, run))
        .await
    {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(run = %run, error = %err, "anomaly detection cannot read the run");
            Vec::new()
        }
    }
}

/// Records one anomaly.
async fn record(shared: &Arc<Shared>, anomaly: NewAnomaly) -> Option<AnomalyRecord> {
    match shared
        .store
        .write(move |db| db.record_anomaly(&anomaly))
        .await
    {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(error = %err, "cannot record an anomaly");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: i64, ok: bool, ms: u64) -> RunSample {
        RunSample {
            id: RunId(id),
            status: if ok {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            duration_ms: Some(ms),
        }
    }

    /// Newest first, like the store answers.
    fn history(runs: &[(bool, u64)]) -> Vec<RunSample> {
        let mut v: Vec<RunSample> = runs
            .iter()
            .enumerate()
            .map(|(i, (ok, ms))| sample(i as i64 + 1, *ok, *ms))
            .collect();
        v.reverse();
        v
    }

    fn kinds(found: &[NewAnomaly]) -> Vec<&str> {
        found.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        assert_eq!(p95(&[]), None);
        assert_eq!(p95(&[7]), Some(7));
        assert_eq!(p95(&[1, 2, 3, 4, 5]), Some(5));
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(p95(&v), Some(19));
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(p95(&v), Some(95));
    }

    /// The default thresholds without the absolute floor (these histories are in ms).
    fn no_floor() -> AnomaliesConfig {
        AnomaliesConfig {
            min_slowdown: Duration::ZERO,
            ..AnomaliesConfig::default()
        }
    }

    /// A run slower than `slow_factor` × p95 is slow only if it is also `min_slowdown`
    /// slower: 50 ms against a 10 ms p95 is noise, not an anomaly.
    #[test]
    fn a_slow_run_must_also_pass_the_absolute_floor() {
        let mut runs = vec![(true, 10); 5];
        runs.push((true, 50));
        let config = AnomaliesConfig::default();
        assert!(judge_run(&config, "w", None, RunId(6), &history(&runs)).is_empty());
        // 10 s against a 1 s p95 is past both the factor and the 5 s floor.
        let mut runs = vec![(true, 1000); 5];
        runs.push((true, 10_000));
        let found = judge_run(&config, "w", None, RunId(6), &history(&runs));
        assert_eq!(kinds(&found), [SLOW_RUN]);
        assert_eq!(found[0].details["threshold_ms"], 6000);
        // 5.9 s against 1 s is not.
        runs[5] = (true, 5900);
        assert!(judge_run(&config, "w", None, RunId(6), &history(&runs)).is_empty());
    }

    #[test]
    fn a_run_three_times_slower_than_its_history_is_slow() {
        let config = no_floor();
        let mut runs = vec![(true, 200); 5];
        runs.push((true, 600));
        let found = judge_run(&config, "w", None, RunId(6), &history(&runs));
        assert_eq!(kinds(&found), [SLOW_RUN]);
        assert_eq!(found[0].details["p95_ms"], 200);
        assert_eq!(found[0].run_id, Some(RunId(6)));
        // Not with fewer than min_samples runs before it.
        let found = judge_run(&config, "w", None, RunId(5), &history(&runs[1..]));
        assert!(found.is_empty(), "{found:?}");
        // Not when within the factor.
        runs[5] = (true, 290);
        assert!(judge_run(&config, "w", None, RunId(6), &history(&runs)).is_empty());
        // A failed slow run is not judged slow.
        runs[5] = (false, 900);
        let mut cfg = config;
        cfg.failure_rate = 1.0;
        assert!(judge_run(&cfg, "w", None, RunId(6), &history(&runs)).is_empty());
        // The history is the last `window` succeeded runs.
        cfg.window = 2;
        cfg.min_samples = 2;
        let runs = [
            (true, 1000),
            (true, 100),
            (false, 5),
            (true, 100),
            (true, 400),
        ];
        let found = judge_run(&cfg, "w", None, RunId(5), &history(&runs));
        assert_eq!(kinds(&found), [SLOW_RUN]);
    }

    #[test]
    fn the_failure_rate_is_raised_once_when_it_crosses() {
        let config = AnomaliesConfig {
            failure_window: 4,
            min_samples: 4,
            failure_rate: 0.5,
            ..AnomaliesConfig::default()
        };
        let mut seq: Vec<(bool, u64)> = Vec::new();
        let mut raised = Vec::new();
        for (i, ok) in [
            true, false, true, false, false, false, true, true, true, false, false, false,
        ]
        .into_iter()
        .enumerate()
        {
            seq.push((ok, 100));
            let found = judge_run(&config, "w", None, RunId(i as i64 + 1), &history(&seq));
            if found.iter().any(|a| a.kind == FAILURE_RATE) {
                raised.push(i + 1);
            }
        }
        // Run 5: 3 of the last 4 failed (crosses). Runs 6 and 7 stay above; run 8 is back
        // at 2 of 4 (not above 0.5); run 11 is at 2 of 4 again; run 12: 3 of 4, crosses.
        assert_eq!(raised, [5, 12]);
    }

    #[test]
    fn a_run_not_first_in_its_samples_is_not_judged() {
        let config = AnomaliesConfig::default();
        let runs = vec![(true, 100); 8];
        assert!(judge_run(&config, "w", None, RunId(3), &history(&runs)).is_empty());
    }

    /// Finishes a run of `w` in `app` with this status and engine duration.
    fn finish(store: &mut Db, ok: bool, ms: u64) -> RunId {
        use crate::store::{NewRun, RunFinish, Trigger, TriggerKind};
        let mut run = NewRun::new("w", Trigger::new(TriggerKind::Manual));
        run.repo = Some("app".into());
        let id = store.enqueue_run(&run).expect("enqueue").run_id();
        store.mark_running(id).expect("running");
        let status = if ok {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        let mut f = RunFinish::new(status);
        f.report = Some(json!({ "duration_ms": ms }));
        store.finish_run(id, &f).expect("finish");
        id
    }

    #[test]
    fn finished_runs_are_judged_from_the_store_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Db::open_in_dir(dir.path()).expect("open");
        let config = AnomaliesConfig {
            failure_window: 4,
            min_samples: 4,
            ..no_floor()
        };
        let mut raised = Vec::new();
        for ms in [200, 210, 190, 205] {
            let id = finish(&mut store, true, ms);
            raised.extend(check_finished_run(&mut store, &config, id).expect("check"));
        }
        assert!(raised.is_empty(), "{raised:?}");
        let slow = finish(&mut store, true, 600);
        let found = check_finished_run(&mut store, &config, slow).expect("check");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].anomaly.kind, SLOW_RUN);
        assert_eq!(found[0].anomaly.repo.as_deref(), Some("app"));
        // Looking again records nothing new.
        assert!(
            check_finished_run(&mut store, &config, slow)
                .expect("again")
                .is_empty()
        );
        // Three failures in the last four: one failure_rate anomaly, at the crossing.
        let mut kinds = Vec::new();
        for _ in 0..4 {
            let id = finish(&mut store, false, 50);
            for r in check_finished_run(&mut store, &config, id).expect("check") {
                kinds.push((id, r.anomaly.kind));
            }
        }
        assert_eq!(kinds.len(), 1, "{kinds:?}");
        assert_eq!(kinds[0].1, FAILURE_RATE);
        assert_eq!(store.list_anomalies(Some("w"), 10).expect("list").len(), 2);
    }

    #[test]
    fn a_memory_sample_of_no_steps_is_empty() {
        // This process is not a step; a sample of no steps finds nothing.
        let mut s = MemorySampler::new(None);
        assert!(s.sample(&HashSet::new()).is_empty());
    }
}
