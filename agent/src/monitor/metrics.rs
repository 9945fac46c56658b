//! The daemon's metrics registry (built with `prometheus-client`) and its collector; the API
//! renders it at `GET /metrics` (behind the Bearer token, like the rest of the API).
//!
//! Where each figure comes from:
//! - **From the daemon's events** ([`collect`] subscribes to the lossless bus before the
//!   scheduler starts): runs finished by workflow and status (`agent_runs_total`), run and
//!   step duration histograms (from the run report's `duration_ms`), steps running now,
//!   anomalies by kind.
//! - **Counted where they happen** (one call each): cron fires ([`Metrics::cron_fired`]),
//!   failed git fetches by repository ([`Metrics::fetch_failed`]), inbound hooks by outcome
//!   ([`Metrics::hook`]).
//! - **Read at scrape time**: the queue (queued and running runs, from the store), webhook
//!   deliveries by status and their attempts by outcome (from the outbox), and the engine's
//!   admission: CPU slots and memory, capacity and in use, and waiting steps.
//!
//! Series are bounded: step durations are labelled by workflow only (never by step id), and
//! the series of a workflow no run has finished for [`SERIES_RETENTION`] are dropped at the
//! next scrape, so `/metrics` grows with the workflows in use, not with the steps or the
//! workflows ever run.
//!
//! Counters start at zero when the daemon starts (Prometheus handles resets). A scraper that
//! asks for OpenMetrics (`Accept: application/openmetrics-text`, as Prometheus does) gets the
//! OpenMetrics text `prometheus-client` writes; anyone else gets the classic Prometheus text
//! format (`text/plain; version=0.0.4`, see [`to_classic_text`]): counter families named
//! with their `_total` suffix and no `# EOF` line.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::bus::Shutdown;
use crate::model::event::DaemonEvent;
use crate::model::report::{RunReport, StepStatus};
#[cfg(test)]
use crate::model::report::{StageReport, StepReport};
use crate::store::{RunId, RunStatus};

/// Labels of a run counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    workflow: String,
    status: String,
}

/// A workflow label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}

/// A status or outcome label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// An outcome label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// A repository label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepoLabels {
    repo: String,
}

/// An inbound hook's source and outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    source: String,
    outcome: String,
}

/// An anomaly kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// How long the series of a workflow stay once no run of it finishes: a workflow renamed or
/// removed stops being reported a day after its last run.
pub(crate) const SERIES_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Duration buckets, in seconds: 50 ms doubling up to about 1.8 hours.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 18))
}

/// The figures the daemon reads at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Runs waiting in the queue.
    pub(crate) queued: u64,
    /// Runs in progress.
    pub(crate) running: u64,
    /// Admission: CPU slots in total.
    pub(crate) cpu_capacity: u64,
    /// Admission: CPU slots held by running steps.
    pub(crate) cpu_in_use: u64,
    /// Admission: memory that can be given, MiB.
    pub(crate) memory_capacity_mb: u64,
    /// Admission: memory reserved by running steps, MiB.
    pub(crate) memory_in_use_mb: u64,
    /// Admission: steps waiting for resources.
    pub(crate) waiting_steps: u64,
    /// Webhook deliveries by status.
    pub(crate) deliveries: Vec<(String, u64)>,
    /// Webhook delivery attempts by outcome.
    pub(crate) delivery_attempts: Vec<(String, u64)>,
}

/// The daemon's metrics: the registry and the handles to its families.
pub(crate) struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_duration: HistogramFamily<WorkflowLabels>,
    step_duration: HistogramFamily<WorkflowLabels>,
    queued: Gauge,
    running_runs: Gauge,
    running_steps: Gauge,
    cpu_capacity: Gauge,
    cpu_in_use: Gauge,
    memory_capacity: Gauge,
    memory_in_use: Gauge,
    waiting_steps: Gauge,
    deliveries: Family<StatusLabels, Gauge>,
    delivery_attempts: Family<OutcomeLabels, Gauge>,
    cron_fires: Counter,
    fetch_errors: Family<RepoLabels, Counter>,
    hooks: Family<HookLabels, Counter>,
    anomalies: Family<KindLabels, Counter>,
    /// Steps running now, by run (a retried step starts twice, finishes once).
    steps_now: Mutex<HashSet<(RunId, Arc<str>)>>,
    /// When a run of each workflow last finished (for dropping stale series).
    workflows_seen: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Every metric registered, at zero.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("agent");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs finished, by workflow and status",
            runs.clone(),
        );
        let run_duration: HistogramFamily<WorkflowLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "run_duration_seconds",
            "Duration of finished runs (the engine's time, without checkout)",
            run_duration.clone(),
        );
        let step_duration: HistogramFamily<WorkflowLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "step_duration_seconds",
            "Duration of finished steps (all their attempts), by workflow",
            step_duration.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let queued = gauge(&mut registry, "runs_queued", "Runs waiting in the queue");
        let running_runs = gauge(&mut registry, "runs_running", "Runs in progress");
        let running_steps = gauge(&mut registry, "steps_running", "Steps running now");
        let cpu_capacity = gauge(
            &mut registry,
            "resource_cpu_capacity",
            "CPU slots the admission shares among steps",
        );
        let cpu_in_use = gauge(
            &mut registry,
            "resource_cpu_in_use",
            "CPU slots held by running steps",
        );
        let memory_capacity = gauge(
            &mut registry,
            "resource_memory_capacity_bytes",
            "Memory the admission can give to steps (available minus the reserve)",
        );
        let memory_in_use = gauge(
            &mut registry,
            "resource_memory_in_use_bytes",
            "Memory reserved by running steps",
        );
        let waiting_steps = gauge(
            &mut registry,
            "resource_waiting_steps",
            "Steps waiting for CPU or memory",
        );
        let deliveries = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "webhook_deliveries",
            "Outgoing webhook deliveries in the outbox, by status",
            deliveries.clone(),
        );
        let delivery_attempts = Family::<OutcomeLabels, Gauge>::default();
        registry.register(
            "webhook_delivery_attempts",
            "Outgoing webhook delivery attempts in the outbox, by outcome",
            delivery_attempts.clone(),
        );
        let cron_fires = Counter::default();
        registry.register("cron_fires", "Cron slots fired", cron_fires.clone());
        let fetch_errors = Family::<RepoLabels, Counter>::default();
        registry.register(
            "git_fetch_errors",
            "Failed fetches or checks of a repository",
            fetch_errors.clone(),
        );
        let hooks = Family::<HookLabels, Counter>::default();
        registry.register(
            "inbound_hooks",
            "Inbound push hooks, by source and outcome",
            hooks.clone(),
        );
        let anomalies = Family::<KindLabels, Counter>::default();
        registry.register("anomalies", "Anomalies detected", anomalies.clone());
        Metrics {
            registry,
            runs,
            run_duration,
            step_duration,
            queued,
            running_runs,
            running_steps,
            cpu_capacity,
            cpu_in_use,
            memory_capacity,
            memory_in_use,
            waiting_steps,
            deliveries,
            delivery_attempts,
            cron_fires,
            fetch_errors,
            hooks,
            anomalies,
            steps_now: Mutex::new(HashSet::new()),
            workflows_seen: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that a run of `workflow` finished at `at`.
    fn workflow_seen(&self, workflow: &str, at: Instant) {
        let mut seen = self
            .workflows_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.get_mut(workflow) {
            Some(last) => *last = (*last).max(at),
            None => {
                seen.insert(workflow.to_string(), at);
            }
        }
    }

    /// Drops the series of every workflow no run of which finished within `retention`
    /// before `now`.
    pub(crate) fn expire_stale(&self, now: Instant, retention: Duration) {
        let mut seen = self
            .workflows_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|workflow, last| {
            if now.saturating_duration_since(*last) <= retention {
                return true;
            }
            let labels = WorkflowLabels {
                workflow: workflow.clone(),
            };
            self.run_duration.remove(&labels);
            self.step_duration.remove(&labels);
            for status in RunStatus::ALL {
                self.runs.remove(&RunLabels {
                    workflow: workflow.clone(),
                    status: status.as_str().to_string(),
                });
            }
            false
        });
    }

    /// A cron slot fired (a run was queued for it).
    pub(crate) fn cron_fired(&self) {
        self.cron_fires.inc();
    }

    /// Fetching or checking `repo` failed.
    pub(crate) fn fetch_failed(&self, repo: &str) {
        self.fetch_errors
            .get_or_create(&RepoLabels {
                repo: repo.to_string(),
            })
            .inc();
    }

    /// An inbound hook from `source` ended with `outcome` (`accepted`, `duplicate`,
    /// `unauthorized`, `bad_request`, `unknown_repo`, `too_large`, `error`).
    pub(crate) fn hook(&self, source: &str, outcome: &str) {
        self.hooks
            .get_or_create(&HookLabels {
                source: source.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    fn steps_now(&self) -> std::sync::MutexGuard<'_, HashSet<(RunId, Arc<str>)>> {
        self.steps_now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts what an event says.
    pub(crate) fn observe(&self, event: &DaemonEvent) {
        match event {
            DaemonEvent::CronFired => self.cron_fired(),
            DaemonEvent::FetchFailed { repo } => self.fetch_failed(repo),
            DaemonEvent::StepStarted { run_id, step, .. } => {
                let mut now = self.steps_now();
                now.insert((*run_id, step.clone()));
                self.running_steps.set(gauge_value(now.len() as u64));
            }
            DaemonEvent::StepFinished { run_id, step, .. } => {
                let mut now = self.steps_now();
                now.remove(&(*run_id, step.clone()));
                self.running_steps.set(gauge_value(now.len() as u64));
            }
            DaemonEvent::RunFinished {
                run_id,
                workflow,
                status,
                report,
            } => {
                {
                    let mut now = self.steps_now();
                    now.retain(|(run, _)| run != run_id);
                    self.running_steps.set(gauge_value(now.len() as u64));
                }
                self.workflow_seen(workflow, Instant::now());
                self.runs
                    .get_or_create(&RunLabels {
                        workflow: workflow.to_string(),
                        status: status.as_str().to_string(),
                    })
                    .inc();
                self.observe_report(workflow, report);
            }
            DaemonEvent::Anomaly { kind, .. } => {
                self.anomalies
                    .get_or_create(&KindLabels {
                        kind: kind.to_string(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// The durations of a finished run's report: the run's and its steps' (not cached or
    /// skipped ones, which did not run).
    fn observe_report(&self, workflow: &str, report: &RunReport) {
        let seconds = |ms: Option<u64>| ms.map(|ms| ms as f64 / 1000.0);
        if let Some(s) = seconds(report.duration_ms) {
            self.run_duration
                .get_or_create(&WorkflowLabels {
                    workflow: workflow.to_string(),
                })
                .observe(s);
        }
        let step_duration = self.step_duration.get_or_create(&WorkflowLabels {
            workflow: workflow.to_string(),
        });
        for step in report.stages.iter().flat_map(|stage| &stage.steps) {
            let ran = matches!(
                step.status,
                StepStatus::Succeeded | StepStatus::Failed | StepStatus::Cancelled
            ) && !step.cached;
            if let (Some(s), true) = (seconds(step.duration_ms), ran) {
                step_duration.observe(s);
            }
        }
    }

    /// Sets the scrape-time figures.
    pub(crate) fn update(&self, s: &Snapshot) {
        self.queued.set(gauge_value(s.queued));
        self.running_runs.set(gauge_value(s.running));
        self.cpu_capacity.set(gauge_value(s.cpu_capacity));
        self.cpu_in_use.set(gauge_value(s.cpu_in_use));
        self.memory_capacity
            .set(gauge_value(s.memory_capacity_mb.saturating_mul(1 << 20)));
        self.memory_in_use
            .set(gauge_value(s.memory_in_use_mb.saturating_mul(1 << 20)));
        self.waiting_steps.set(gauge_value(s.waiting_steps));
        for status in ["pending", "delivered", "failed"] {
            let n = s
                .deliveries
                .iter()
                .find(|(st, _)| st == status)
                .map_or(0, |(_, n)| *n);
            self.deliveries
                .get_or_create(&StatusLabels {
                    status: status.to_string(),
                })
                .set(gauge_value(n));
        }
        for outcome in ["ok", "http_4xx", "http_5xx", "error"] {
            let n = s
                .delivery_attempts
                .iter()
                .find(|(o, _)| o == outcome)
                .map_or(0, |(_, n)| *n);
            self.delivery_attempts
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_string(),
                })
                .set(gauge_value(n));
        }
    }

    /// The text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; keep what was written.
            tracing::warn!("metrics encoding failed");
        }
        out
    }
}

/// OpenMetrics text to the classic Prometheus text format: a counter family `x` (whose
/// samples are `x_total`) is described as `x_total`, as classic parsers expect, and the
/// `# EOF` line goes.
pub(crate) fn to_classic_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match described {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Feeds the daemon's events into its metrics until shutdown. `events` must be subscribed
/// before the scheduler starts.
pub(crate) async fn collect(
    metrics: Arc<Metrics>,
    mut events: mpsc::UnboundedReceiver<DaemonEvent>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.requested() => return,
            event = events.recv() => match event {
                Some(event) => metrics.observe(&event),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StepStatus;

    #[test]
    fn events_become_counters_and_histograms() {
        let m = Metrics::new();
        let run = RunId(1);
        m.observe(&DaemonEvent::StepStarted {
            run_id: run,
            step: "a".into(),
            attempt: 1,
        });
        m.observe(&DaemonEvent::StepStarted {
            run_id: run,
            step: "b".into(),
            attempt: 1,
        });
        m.observe(&DaemonEvent::StepFinished {
            run_id: run,
            step: "a".into(),
            status: StepStatus::Succeeded,
        });
        assert_eq!(m.running_steps.get(), 1);
        m.observe(&DaemonEvent::RunFinished {
            run_id: run,
            workflow: "build".into(),
            status: RunStatus::Failed,
            report: Arc::new(report(
                1500,
                vec![
                    step("a", StepStatus::Succeeded, 500),
                    step("b", StepStatus::Failed, 900),
                    step("c", StepStatus::Skipped, 0),
                ],
            )),
        });
        assert_eq!(m.running_steps.get(), 0);
        m.cron_fired();
        m.fetch_failed("app");
        m.hook("github", "accepted");
        m.update(&Snapshot {
            queued: 2,
            cpu_capacity: 4,
            deliveries: vec![("delivered".into(), 3)],
            ..Snapshot::default()
        });
        let text = m.render();
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>();
        assert!(
            samples.contains(&r#"agent_runs_total{workflow="build",status="failed"} 1"#),
            "{text}"
        );
        assert!(
            samples.contains(&r#"agent_run_duration_seconds_count{workflow="build"} 1"#),
            "{text}"
        );
        // Steps a and b ran (c was skipped): two observations of the workflow's histogram.
        assert!(
            samples.contains(&r#"agent_step_duration_seconds_count{workflow="build"} 2"#),
            "{text}"
        );
        assert!(!text.contains("step="), "{text}");
        assert!(samples.contains(&"agent_runs_queued 2"), "{text}");
        assert!(samples.contains(&"agent_cron_fires_total 1"), "{text}");
        assert!(
            samples.contains(&r#"agent_webhook_deliveries{status="delivered"} 3"#),
            "{text}"
        );
        assert!(
            samples.contains(&r#"agent_webhook_deliveries{status="failed"} 0"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        let classic = to_classic_text(&text);
        assert!(!classic.contains("# EOF"), "{classic}");
        assert!(
            classic.contains("# TYPE agent_runs_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP agent_runs_total Runs finished"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE agent_run_duration_seconds histogram\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE agent_runs_queued gauge\n"),
            "{classic}"
        );
        assert_eq!(
            classic.lines().filter(|l| !l.starts_with('#')).count(),
            samples.len(),
            "{classic}"
        );
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use crate::store::RunStatus;

    /// A finished run of `workflow` with `steps` steps that all ran.
    fn finished(m: &Metrics, workflow: &str, steps: usize) {
        let steps: Vec<StepReport> = (0..steps)
            .map(|i| step(&format!("s{i}"), StepStatus::Succeeded, 10 + i as u64))
            .collect();
        m.observe(&DaemonEvent::RunFinished {
            run_id: RunId(1),
            workflow: workflow.into(),
            status: RunStatus::Succeeded,
            report: Arc::new(report(5000, steps)),
        });
    }

    /// The exposition does not grow with the number of steps a workflow has: with series
    /// labelled by step, a 300-step run added 21 lines per step (over 6,000 lines).
    #[test]
    fn metrics_size_does_not_grow_with_steps() {
        let one = Metrics::new();
        finished(&one, "build", 1);
        let many = Metrics::new();
        for _ in 0..3 {
            finished(&many, "build", 300);
        }
        let (one, many) = (one.render(), many.render());
        assert_eq!(one.lines().count(), many.lines().count(), "{many}");
        assert!(many.len() < 8 * 1024, "{} bytes", many.len());
        assert!(
            many.contains(r#"agent_step_duration_seconds_count{workflow="build"} 900"#),
            "{many}"
        );
    }

    /// A workflow whose runs stopped finishing loses its series after the retention period;
    /// one still running keeps them.
    #[test]
    fn stale_workflow_series_expire() {
        let m = Metrics::new();
        finished(&m, "old", 3);
        finished(&m, "kept", 3);
        let later = Instant::now() + Duration::from_secs(3600);
        m.workflow_seen("kept", later);
        m.expire_stale(later, Duration::from_secs(60));
        let text = m.render();
        assert!(!text.contains(r#"workflow="old""#), "{text}");
        assert!(
            text.contains(r#"agent_runs_total{workflow="kept",status="succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"agent_step_duration_seconds_count{workflow="kept"} 3"#),
            "{text}"
        );
        // Nothing expires within the retention period.
        m.expire_stale(later, SERIES_RETENTION);
        let text = m.render();
        assert!(text.contains(r#"workflow="kept""#), "{text}");
    }
}

/// A finished run's report with one stage of `steps`, for the tests.
#[cfg(test)]
fn report(duration_ms: u64, steps: Vec<StepReport>) -> RunReport {
    let mut report = RunReport::ended_early("1", "w", crate::store::RunStatus::Failed, "x");
    report.error = None;
    report.duration_ms = Some(duration_ms);
    report.stages = vec![StageReport {
        name: "s".into(),
        status: StepStatus::Succeeded,
        steps,
    }];
    report
}

/// A step that ran (not cached) for `duration_ms`, for the tests.
#[cfg(test)]
fn step(id: &str, status: StepStatus, duration_ms: u64) -> StepReport {
    let mut step = StepReport::pending(id);
    step.status = status;
    step.duration_ms = Some(duration_ms);
    step
}
