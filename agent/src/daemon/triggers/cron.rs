//! Cron: the `on.schedule` entries of the workflows on each repository's default branch.
//!
//! The git watcher ([`crate::daemon::triggers::git_watch`]) publishes the default branch's head of every
//! repository in [`RepoRegistry`](crate::daemon::handle::RepoRegistry) and pings
//! [`RepoRegistry::workflows_changed`](crate::daemon::handle::RepoRegistry::workflows_changed); this
//! task then re-reads that commit's workflows from the mirror and rebuilds its table of
//! schedules. It sleeps until the earliest next slot (or a change, or shutdown): no polling
//! loop. The sleep is capped at [`MAX_SLEEP`] so that a wall clock that jumps (NTP, suspend)
//! is noticed within a minute.
//!
//! Each slot is keyed by the schedule (`repo`, workflow, entry index, cron line, time zone)
//! and its UTC instant, and claimed in the store ([`Db::enqueue_scheduled_run`],
//! [`Db::claim_cron_slot`]) in the same transaction that queues its run, so a slot fires
//! at most once, also across restarts and DST changes (croner never repeats a wall-clock time
//! at a fall-back). Slots missed while the daemon was down (after the schedule's last claimed
//! slot, within [`CATCHUP_WINDOW`]) follow `catchup`: `skip` runs none, `latest` (the
//! default) the latest one, `all` each of them (at most [`MAX_CATCHUP`], the latest ones). A
//! schedule never claimed before (new, or its cron line changed) starts from now.
//!
//! In a fleet one node at a time evaluates the schedules: the holder of the `cron` lease
//! ([`crate::daemon::leases`]), renewed every tick. The others keep the schedules loaded (for
//! the API's next fire times) and fire nothing. A node that takes the lease over catches each
//! schedule up from its last claimed slot in the store once, by the same `catchup` rule as
//! after a restart. The slot claim stays the guard: even two evaluators at once (one that has
//! not noticed yet that it lost the lease) never fire a slot twice.
//!
//! A slot that finds a run of its group (without a `concurrency` section: of the same
//! workflow in the repository) still queued or running follows `concurrency.overlap`, decided
//! by the store in the transaction that claims the slot ([`crate::store::overlap`]): `skip`
//! (the default without a `concurrency` section) claims the slot without a run, `queue`
//! queues it, `cancel_previous` queues it and marks the active runs for the scheduler to
//! cancel. A schedule's `parameters` are the run's parameters (`${{ }}`
//! over `workflow` and `env` rendered when the slot fires; checked against the declarations;
//! bad ones make a failed run that still claims the slot). The run records its slot
//! (`scheduled_for`) and checks out the default branch's head.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::store::overlap::Admission;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::{Cron, Direction};
use dsl::Workflow;
use dsl::expr::MapContext;
use dsl::model::{Catchup, TemplateValue};
use git2::Oid;
use serde_json::{Map, Value};

use crate::daemon::catalog::Catalog;
use crate::daemon::handle::DaemonHandle;
use crate::daemon::leases::{self, Held, Lease};
use crate::daemon::run::mirror::Mirror;
use crate::daemon::triggers::push::new_run_for;
use crate::store::{Db, Enqueued, Store, Trigger, TriggerKind};

/// How far back missed slots are caught up after downtime.
pub(crate) const CATCHUP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// At most this many missed slots run with `catchup: all` (the latest ones).
pub(crate) const MAX_CATCHUP: usize = 100;

/// The longest single sleep, so that wall-clock jumps are noticed.
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(60);

/// One `on.schedule` entry of one workflow.
#[derive(Debug, Clone)]
struct Entry {
    /// Db key of the schedule.
    key: String,
    repo: String,
    workflow: Box<Workflow>,
    cron: Cron,
    tz: Tz,
    catchup: Catchup,
    /// The workflow file (`.workflows/…`) the schedule's runs execute.
    file: String,
    /// The schedule's `parameters`, rendered when a slot fires.
    parameters: indexmap::IndexMap<String, TemplateValue>,
    /// The commit and branch scheduled runs check out.
    commit: String,
    branch: Option<String>,
    /// The next slot to fire.
    next: Option<DateTime<Utc>>,
}

/// The key of a schedule in the store: changing the cron line or time zone makes it a new
/// schedule (no catch-up of the old one's slots).
pub(crate) fn schedule_key(
    repo: &str,
    workflow: &str,
    index: usize,
    cron: &str,
    tz: &str,
) -> String {
    format!("{repo}:{workflow}:{index}:{cron}@{tz}")
}

/// The first slot strictly after `after`.
pub(crate) fn next_slot(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The slots in `(after, until]`, oldest first; at most `limit`, the latest ones.
pub(crate) fn slots_between(
    cron: &Cron,
    tz: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Vec<DateTime<Utc>> {
    if until <= after || limit == 0 {
        return Vec::new();
    }
    let mut slots: Vec<DateTime<Utc>> = cron
        .iter_from(until.with_timezone(&tz), Direction::Backward)
        .map(|t| t.with_timezone(&Utc))
        .take_while(|t| *t > after)
        .take(limit)
        .collect();
    slots.reverse();
    slots
}

/// Which of the missed slots (oldest first) run under `policy`.
pub(crate) fn catchup_slots(policy: Catchup, missed: Vec<DateTime<Utc>>) -> Vec<DateTime<Utc>> {
    match policy {
        Catchup::Skip => Vec::new(),
        Catchup::Latest => missed.last().copied().into_iter().collect(),
        Catchup::All => missed,
    }
}

/// The cron task: returns after shutdown. See the module docs.
pub(crate) async fn run(handle: DaemonHandle) {
    let store = handle.shared.store.clone();
    let config = &handle.shared.config;
    let lease = Lease::new(
        CRON_LEASE,
        leases::holder(&store, config),
        leases::ttl(config),
    );
    let mut table = Some(CronTable {
        store,
        handle: handle.clone(),
        entries: Vec::new(),
        heads: BTreeMap::new(),
        lease,
        holding: false,
    });
    let changed = handle.shared.repos.workflows_changed();
    loop {
        // Renew the lease, re-read what changed, fire what is due, and find the next slot:
        // blocking work (the store, libgit2) off the async threads.
        let Some(mut t) = table.take() else { return };
        let result = tokio::task::spawn_blocking(move || {
            t.renew_lease(Utc::now());
            t.reload();
            t.fire_due(Utc::now());
            t.publish_next_fires();
            let next = t.next_due();
            (t, next)
        })
        .await;
        let (t, next) = match result {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(error = %err, "cron: table update panicked; schedules are off");
                return;
            }
        };
        let sleep = match next {
            Some(at) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            None => MAX_SLEEP,
        }
        .min(MAX_SLEEP)
        // The lease is renewed (or asked for) every tick.
        .min(leases::tick(&handle.shared.config));
        tokio::select! {
            _ = handle.shutdown_requested() => {
                // Another node takes the schedules over at once.
                let mut t = t;
                t.lease.release(&t.store).await;
                return;
            }
            _ = changed.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
        table = Some(t);
    }
}

/// The lease of the node that evaluates the schedules.
pub(crate) const CRON_LEASE: &str = "cron";

/// The schedules of every repository, with the store they are claimed in.
struct CronTable {
    store: Store,
    handle: DaemonHandle,
    entries: Vec<Entry>,
    /// The default-branch head each repository's entries were read from.
    heads: BTreeMap<String, String>,
    /// The `cron` lease: only its holder fires slots.
    lease: Lease,
    /// Whether this node held the lease at the last renewal.
    holding: bool,
}

impl CronTable {
    /// Renews (or asks for) the `cron` lease. A node that just took it over catches every
    /// schedule up from its last claimed slot in the store, as after a restart: the slots the
    /// previous holder did not fire (it died, or lost the database) follow `catchup` once.
    fn renew_lease(&mut self, now: DateTime<Utc>) {
        let held = self.lease.blocking_tick(&self.store);
        self.holding = held.is_held();
        if let Held::Gained(token) = held {
            tracing::info!(token, "cron: evaluating the schedules on this node");
            let mut entries = std::mem::take(&mut self.entries);
            for entry in &mut entries {
                self.start(entry, now);
            }
            self.entries = entries;
        }
    }

    /// Re-reads the schedules of every repository whose default-branch head changed.
    fn reload(&mut self) {
        let shared = std::sync::Arc::clone(&self.handle.shared);
        for (repo, info) in shared.repos.snapshot() {
            let Some(head) = info.head.clone() else {
                continue;
            };
            if self.heads.get(&repo) == Some(&head) {
                continue;
            }
            let workflows = match read_workflows(&shared.state_dir, &repo, &head) {
                Ok(w) => w,
                Err(err) => {
                    tracing::warn!(repo = %repo, commit = %head, error = %err,
                        "cron: cannot read the workflows");
                    continue;
                }
            };
            self.heads.insert(repo.clone(), head.clone());
            let old: Vec<Entry> = self
                .entries
                .iter()
                .filter(|e| e.repo == repo)
                .cloned()
                .collect();
            self.entries.retain(|e| e.repo != repo);
            let now = Utc::now();
            for (file, wf) in workflows {
                for (index, schedule) in wf.on.schedule.iter().enumerate() {
                    let Ok(cron) = schedule.cron() else { continue };
                    let tz = schedule.tz();
                    let key = schedule_key(
                        &repo,
                        &wf.name.value,
                        index,
                        &schedule.cron.value,
                        tz.name(),
                    );
                    let parameters = schedule.parameters.clone();
                    let mut entry = Entry {
                        key,
                        repo: repo.clone(),
                        workflow: Box::new(wf.clone()),
                        cron,
                        tz,
                        catchup: schedule.catchup.value,
                        file: file.clone(),
                        parameters,
                        commit: head.clone(),
                        branch: info.default_branch.clone(),
                        next: None,
                    };
                    match old.iter().find(|o| o.key == entry.key) {
                        // A schedule we already run: keep its place in time.
                        Some(o) => entry.next = o.next,
                        None if self.holding => self.start(&mut entry, now),
                        // Started (caught up) if and when this node takes the lease.
                        None => entry.next = next_slot(&entry.cron, entry.tz, now),
                    }
                    self.entries.push(entry);
                }
            }
            tracing::info!(repo = %repo, commit = %head,
                schedules = self.entries.iter().filter(|e| e.repo == repo).count(),
                "cron: schedules loaded");
        }
    }

    /// Catches a newly loaded schedule up after downtime and sets its next slot.
    fn start(&mut self, entry: &mut Entry, now: DateTime<Utc>) {
        let last = match self
            .store
            .blocking_read(|db: &Db| db.last_cron_fire(&entry.key))
        {
            Ok(last) => last,
            Err(err) => {
                tracing::warn!(schedule = %entry.key, error = %err, "cron: cannot read the last fire");
                None
            }
        };
        if let Some(last) = last {
            let window =
                chrono::Duration::from_std(CATCHUP_WINDOW).unwrap_or(chrono::Duration::MAX);
            let from = last.max(now - window);
            let missed = slots_between(&entry.cron, entry.tz, from, now, MAX_CATCHUP);
            for slot in catchup_slots(entry.catchup, missed) {
                // Catch-up runs never cancel anything: they are history.
                self.fire(entry, slot);
            }
        }
        entry.next = next_slot(&entry.cron, entry.tz, now);
    }

    /// Fires every entry whose next slot is due.
    fn fire_due(&mut self, now: DateTime<Utc>) {
        let mut entries = std::mem::take(&mut self.entries);
        for entry in &mut entries {
            let Some(next) = entry.next else { continue };
            if next > now {
                continue;
            }
            if !self.holding {
                // Another node fires it; this one only keeps the next slot for the API.
                entry.next = next_slot(&entry.cron, entry.tz, now);
                continue;
            }
            // Slots that went by while we were not looking (a late wake-up, a suspended
            // machine) follow the catch-up policy; the one just due always fires.
            let mut due = slots_between(&entry.cron, entry.tz, next, now, MAX_CATCHUP);
            let late: Vec<_> = std::iter::once(next).chain(due.drain(..)).collect();
            let (last, earlier) = late.split_last().expect("at least the due slot");
            for slot in catchup_slots(entry.catchup, earlier.to_vec()) {
                self.fire(entry, slot);
            }
            self.fire(entry, *last);
            entry.next = next_slot(&entry.cron, entry.tz, now.max(*last));
        }
        self.entries = entries;
    }

    /// Fires one slot (claim + run, or claim only when its overlap rule skips it).
    fn fire(&mut self, entry: &Entry, slot: DateTime<Utc>) {
        if let Err(err) = self.try_fire(entry, slot) {
            tracing::warn!(schedule = %entry.key, slot = %slot, error = %err,
                "cron: cannot fire");
        }
    }

    fn try_fire(
        &mut self,
        entry: &Entry,
        slot: DateTime<Utc>,
    ) -> Result<(), crate::store::StoreError> {
        let trigger = Trigger {
            kind: TriggerKind::Schedule,
            commit: Some(entry.commit.clone()),
            branch: entry.branch.clone(),
            scheduled_for: Some(slot),
        };
        let (given, render_errors) = render_parameters(entry);
        let (mut run, mut outcome) = new_run_for(&entry.workflow, &entry.repo, trigger, &given);
        run.workflow_file = Some(entry.file.clone());
        if !render_errors.is_empty() {
            outcome = Err(render_errors.join("\n"));
        }
        run.dedup_key = Some(format!(
            "schedule:{}:{}",
            entry.key,
            slot.timestamp_millis()
        ));
        match outcome {
            Ok(()) => {
                // Slot claim, overlap rule and run: one transaction.
                let key = entry.key.clone();
                let admitted = self
                    .store
                    .blocking_write(move |db| db.enqueue_scheduled_run(&key, slot, &run))?;
                match admitted {
                    Some(Admission::Queued {
                        run: Enqueued::Created(id),
                        ..
                    }) => {
                        tracing::info!(schedule = %entry.key, slot = %slot, run = %id, "cron: fired");
                        self.handle
                            .emit(crate::model::event::DaemonEvent::CronFired);
                        self.handle.wake();
                    }
                    Some(Admission::Skipped { active }) => {
                        tracing::info!(schedule = %entry.key, slot = %slot, active = %active,
                            "cron: slot skipped, the previous run is still active");
                    }
                    Some(Admission::Queued { .. }) | None => {}
                }
            }
            Err(errors) => {
                if self.claim_slot(entry, slot)? {
                    self.store
                        .blocking_write(move |db| db.record_failed_run(&run, &errors))?;
                }
            }
        }
        Ok(())
    }

    /// Claims a slot without a run (blocking).
    fn claim_slot(
        &self,
        entry: &Entry,
        slot: DateTime<Utc>,
    ) -> Result<bool, crate::store::StoreError> {
        let key = entry.key.clone();
        self.store
            .blocking_write(move |db| db.claim_cron_slot(&key, slot))
    }

    /// The earliest next slot of all entries.
    fn next_due(&self) -> Option<DateTime<Utc>> {
        self.entries.iter().filter_map(|e| e.next).min()
    }

    /// Writes each workflow's earliest next slot into the registry, for the API.
    fn publish_next_fires(&self) {
        let mut by_repo: BTreeMap<&str, BTreeMap<&str, DateTime<Utc>>> = BTreeMap::new();
        for e in &self.entries {
            if let Some(next) = e.next {
                let slot = by_repo
                    .entry(e.repo.as_str())
                    .or_default()
                    .entry(e.workflow.name.value.as_str())
                    .or_insert(next);
                *slot = (*slot).min(next);
            }
        }
        for repo in self.heads.keys() {
            let fires = by_repo.get(repo.as_str());
            self.handle.shared.repos.update(repo, |info| {
                for wf in &mut info.workflows {
                    wf.next_fire = fires.and_then(|f| f.get(wf.name.as_str()).copied());
                }
            });
        }
    }
}

/// Renders a schedule's `parameters`: they may use `${{ }}` over `workflow` (`name`,
/// `version`) and `env` (the workflow's literal `env` values), plus functions such as
/// `now()`. Secrets are not offered: parameters are stored and shown unmasked. Answers the
/// values and the errors.
fn render_parameters(entry: &Entry) -> (Map<String, Value>, Vec<String>) {
    let wf = &entry.workflow;
    let mut ctx = MapContext::new(Map::new()).with_base_env(crate::engine::step_env::base_env(&[]));
    ctx.insert(
        "workflow",
        serde_json::json!({
            "name": wf.name.value,
            "version": wf.version.as_ref().map(|v| v.value.clone()),
        }),
    );
    let env: Map<String, Value> = wf
        .env
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.to_static_json()?)))
        .collect();
    ctx.insert("env", Value::Object(env));
    let mut values = Map::new();
    let mut errors = Vec::new();
    for (name, value) in &entry.parameters {
        match value.render(&ctx) {
            Ok(v) => {
                values.insert(name.clone(), v);
            }
            Err(err) => errors.push(format!("schedule parameter `{name}`: {err}")),
        }
    }
    (values, errors)
}

/// The valid workflows of a repository at a commit (from its mirror).
fn read_workflows(
    state_dir: &std::path::Path,
    repo: &str,
    head: &str,
) -> Result<Vec<(String, Workflow)>, crate::daemon::run::mirror::MirrorError> {
    let mirror = Mirror::open(state_dir, repo)?;
    let oid = Oid::from_str(head)
        .map_err(|_| crate::daemon::run::mirror::MirrorError::UnknownCommit(head.to_string()))?;
    Ok(Catalog::at(&mirror, oid)?
        .valid()
        .map(|(path, workflow)| (path.to_string(), workflow.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cron(line: &str) -> Cron {
        dsl::validate::parse_cron(line).expect("valid cron")
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid time")
    }

    #[test]
    fn six_fields_have_seconds() {
        let c = cron("*/2 * * * * *");
        let t = utc(2026, 1, 1, 0, 0, 1);
        assert_eq!(
            next_slot(&c, chrono_tz::UTC, t),
            Some(utc(2026, 1, 1, 0, 0, 2))
        );
        assert_eq!(
            next_slot(&c, chrono_tz::UTC, utc(2026, 1, 1, 0, 0, 2)),
            Some(utc(2026, 1, 1, 0, 0, 4))
        );
    }

    #[test]
    fn missed_slots_are_bounded_and_ordered() {
        let c = cron("0 * * * *");
        let slots = slots_between(
            &c,
            chrono_tz::UTC,
            utc(2026, 1, 1, 0, 0, 0),
            utc(2026, 1, 1, 5, 30, 0),
            3,
        );
        assert_eq!(
            slots,
            vec![
                utc(2026, 1, 1, 3, 0, 0),
                utc(2026, 1, 1, 4, 0, 0),
                utc(2026, 1, 1, 5, 0, 0)
            ]
        );
        // The lower bound is exclusive, the upper inclusive.
        let slots = slots_between(
            &c,
            chrono_tz::UTC,
            utc(2026, 1, 1, 1, 0, 0),
            utc(2026, 1, 1, 2, 0, 0),
            10,
        );
        assert_eq!(slots, vec![utc(2026, 1, 1, 2, 0, 0)]);
        assert_eq!(catchup_slots(Catchup::Latest, slots.clone()), slots);
        assert!(catchup_slots(Catchup::Skip, slots).is_empty());
    }

    #[test]
    fn a_dst_fall_back_fires_once() {
        // Europe/Berlin leaves summer time on 2026-10-25: 02:30 local happens twice.
        let c = cron("30 2 * * *");
        let tz: Tz = "Europe/Berlin".parse().expect("zone");
        let slots = slots_between(
            &c,
            tz,
            utc(2026, 10, 24, 12, 0, 0),
            utc(2026, 10, 25, 12, 0, 0),
            10,
        );
        assert_eq!(slots.len(), 1, "{slots:?}");
    }

    #[test]
    fn a_dst_spring_forward_still_fires() {
        // 2026-03-29 02:30 does not exist in Berlin; the slot fires once, at the gap's end.
        let c = cron("30 2 * * *");
        let tz: Tz = "Europe/Berlin".parse().expect("zone");
        let slots = slots_between(
            &c,
            tz,
            utc(2026, 3, 28, 12, 0, 0),
            utc(2026, 3, 29, 12, 0, 0),
            10,
        );
        // 03:00 CEST, when the clock jumps past the missing 02:30.
        assert_eq!(slots, vec![utc(2026, 3, 29, 1, 0, 0)]);
    }

    #[test]
    fn time_zones_shift_slots() {
        let c = cron("0 9 * * *");
        let tz: Tz = "America/New_York".parse().expect("zone");
        // 09:00 EST is 14:00 UTC in January.
        assert_eq!(
            next_slot(&c, tz, utc(2026, 1, 5, 0, 0, 0)),
            Some(utc(2026, 1, 5, 14, 0, 0))
        );
    }
}

/// The cron task against a real mirror and store, without a scheduler (runs stay queued).
#[cfg(test)]
mod task_tests {
    use super::*;
    use crate::config::Config;
    use crate::daemon::handle::HandleParts;
    use crate::engine::{Engine, EngineConfig};
    use crate::store::{RunFilter, RunRecord};
    use std::path::Path;
    use std::sync::Arc;

    use crate::daemon::test_git::git;

    /// A repository whose default branch holds `workflow`, mirrored under `state`; returns
    /// the head commit.
    fn mirrored_repo(root: &Path, state: &Path, workflow: &str) -> String {
        let repo = root.join("repo");
        std::fs::create_dir_all(repo.join(".workflows")).expect("mkdir");
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join(".workflows/tick.yaml"), workflow).expect("write");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "tick"]);
        Mirror::open_or_clone(state, "app", &repo.to_string_lossy()).expect("mirror");
        git(&repo, &["rev-parse", "HEAD"])
    }

    fn start(state: &Path, head: &str) -> (DaemonHandle, HandleParts, tokio::task::JoinHandle<()>) {
        let engine = Arc::new(Engine::new(EngineConfig::default()));
        let (handle, parts) = DaemonHandle::new(
            Config::default(),
            state.to_path_buf(),
            Store::open_in_dir(state).expect("store"),
            engine,
            Default::default(),
        );
        handle.shared.repos.update("app", |info| {
            info.default_branch = Some("main".into());
            info.head = Some(head.to_string());
        });
        handle.shared.repos.workflows_changed().notify_one();
        let task = tokio::spawn(run(handle.clone()));
        (handle, parts, task)
    }

    fn schedule_runs(state: &Path) -> Vec<RunRecord> {
        let store = Db::open_in_dir(state).expect("store");
        let mut runs = store.list_runs(&RunFilter::default(), 1000).expect("list");
        runs.reverse();
        runs
    }

    async fn wait_for_runs(state: &Path, n: usize, limit: Duration) -> Vec<RunRecord> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let runs = schedule_runs(state);
            if runs.len() >= n {
                return runs;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} runs after {limit:?}, wanted {n}",
                runs.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_second_slot_fires_once_across_restarts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        let wf = "workflow:\n  name: tick\n  concurrency:\n    overlap: queue\n  on:\n    schedule:\n      - cron: '* * * * * *'\n        parameters: {who: cron, how: '${{ workflow.name }}'}\n  parameters:\n    - name: who\n    - name: how\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n";
        let head = mirrored_repo(tmp.path(), &state, wf);

        let (handle, parts, task) = start(&state, &head);
        let runs = wait_for_runs(&state, 2, Duration::from_secs(10)).await;
        let info = handle.shared.repos.get("app").expect("repo info");
        assert!(
            info.workflows.is_empty(),
            "cron does not invent workflow entries"
        );
        parts.shutdown.send(true).expect("shutdown");
        task.await.expect("cron task");
        let first = runs[0].clone();
        assert_eq!(first.trigger.kind, TriggerKind::Schedule);
        assert_eq!(first.trigger.commit.as_deref(), Some(head.as_str()));
        let slot = first.trigger.scheduled_for.expect("scheduled time");
        assert_eq!(
            first.parameters,
            serde_json::json!({"who": "cron", "how": "tick"})
        );
        assert_eq!(slot.timestamp_subsec_millis(), 0, "slots are whole seconds");

        // Down for a moment, then up again: the missed slots catch up as `latest` (one run),
        // and no slot ever appears twice.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let before = schedule_runs(&state).len();
        let (_handle, parts, task) = start(&state, &head);
        wait_for_runs(&state, before + 2, Duration::from_secs(10)).await;
        parts.shutdown.send(true).expect("shutdown");
        task.await.expect("cron task");
        let runs = schedule_runs(&state);
        let mut slots: Vec<_> = runs
            .iter()
            .map(|r| r.trigger.scheduled_for.expect("slot"))
            .collect();
        let n = slots.len();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), n, "a slot fired twice: {slots:?}");
        // The catch-up: the latest missed slot ran, the ones before it did not.
        let gap: Vec<_> = slots
            .windows(2)
            .map(|w| (w[1] - w[0]).num_seconds())
            .collect();
        assert!(
            gap.iter().any(|g| *g >= 2),
            "no gap over the downtime: {gap:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slot_finding_the_previous_run_active_is_skipped_by_default() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        let wf = "workflow:\n  name: tick\n  on:\n    schedule:\n      - cron: '* * * * * *'\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n";
        let head = mirrored_repo(tmp.path(), &state, wf);
        let (_handle, parts, task) = start(&state, &head);
        wait_for_runs(&state, 1, Duration::from_secs(10)).await;
        // The first run stays queued (no scheduler here): the next slots are claimed, not run.
        let key = schedule_key("app", "tick", 0, "* * * * * *", "UTC");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let store = Db::open_in_dir(&state).expect("store");
            let first = schedule_runs(&state)[0]
                .trigger
                .scheduled_for
                .expect("slot");
            if store
                .last_cron_fire(&key)
                .expect("last")
                .is_some_and(|l| l > first)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no later slot was claimed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        parts.shutdown.send(true).expect("shutdown");
        task.await.expect("cron task");
        assert_eq!(schedule_runs(&state).len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_previous_queues_the_slot_and_cancels_the_active_run() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        let wf = "workflow:\n  name: tick\n  concurrency:\n    overlap: cancel_previous\n  on:\n    schedule:\n      - cron: '* * * * * *'\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n";
        let head = mirrored_repo(tmp.path(), &state, wf);
        let (_handle, parts, task) = start(&state, &head);
        let runs = wait_for_runs(&state, 2, Duration::from_secs(10)).await;
        // The first run is still queued (no scheduler here): the second slot's transaction
        // marked it for the scheduler to cancel.
        assert!(runs[0].cancel_requested, "{:?}", runs[0]);
        parts.shutdown.send(true).expect("shutdown");
        task.await.expect("cron task");
    }
}
