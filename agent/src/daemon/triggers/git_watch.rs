//! Git watching: noticing new commits in every configured repository and handing them to
//! [`crate::daemon::triggers::push`].
//!
//! One task per repository keeps its bare mirror ([`Mirror`]) current and, after each fetch,
//! runs [`scan_repo`] (which queues the matching workflows through the store's deduping
//! writes), then wakes the scheduler when something was queued. When the default branch
//! moved, it publishes that branch's head and workflows in
//! [`RepoRegistry`](crate::daemon::handle::RepoRegistry) (for the API) and pings
//! [`RepoRegistry::workflows_changed`](crate::daemon::handle::RepoRegistry::workflows_changed) so that
//! [`crate::daemon::triggers::cron`] re-reads the schedules.
//!
//! When a repository is looked at:
//! - **Local paths** are watched on their refs with one shared `notify` (inotify) watcher:
//!   `refs/heads/**`, `refs/tags/**`, `packed-refs` and `HEAD` of the repository's git directory. Changes are
//!   debounced (a quiet window of [`QUIET`], at most [`DEBOUNCE_MAX`] after the first change),
//!   and the repository is also checked every `poll_interval` (default 30 s) in case an event
//!   was missed (inotify queue overflow, a path created after boot).
//! - **Remote URLs** are fetched every `poll_interval` (default 60 s).
//! - **Inbound push hooks** ask for a fetch now through
//!   [`Shared::fetch_requests`](crate::daemon::handle::Shared::fetch_requests).
//!
//! In a fleet each repository is scanned by one node at a time: the holder of its
//! `poll:<repo>` lease ([`crate::daemon::leases`]), which queues the runs its commits start.
//! The other nodes still fetch on the same schedule (their cron and their runs read their own
//! mirror) but queue nothing, except on an inbound push hook they received, which makes them
//! scan at once; the store's per-commit records and run dedup keys queue each run once
//! whichever nodes scan. A node that takes a repository's lease over looks at it at once.
//!
//! A failed fetch (remote down, path missing) is retried with exponential backoff (from the
//! interval, doubling, capped at [`MAX_BACKOFF_FACTOR`] times it) and logged without the
//! URL's user information. Nothing polls in a short loop: between events a task sleeps.
//! Fetches and scans are blocking (libgit2, SQLite) and run on the blocking pool, at most
//! [`PARALLEL_PASSES`] at once; each goes through the store handle.
//!
//! What counts as history: a local repository's branches are read as [`run`] starts, a
//! remote's at its first fetch; the daemon's entry point waits (bounded) with [`first_look`]
//! before it announces its address, so a push made right after that runs. See
//! [`crate::daemon::triggers::push`] for the rules.
//!
//! Credentials: libgit2 is built without https and ssh for now, so only transports that need
//! none (local paths, `file://`, `git://`) work, and the config's credential variables are not
//! used yet; they are never read into logs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::config::{RepoConfig, RepoSource};
use crate::daemon::catalog::{ParsedFile, workflows_at};
use crate::daemon::handle::{DaemonHandle, WorkflowInfo};
use crate::daemon::leases::{self, Held, Lease};
use crate::daemon::run::mirror::Mirror;
use crate::daemon::run::mirror::redact;
use crate::daemon::triggers::push::{Baseline, GlobList, PushScan, scan_repo};

/// A change is handled once no other ref change came for this long (git replaces the refs of
/// one command within microseconds of each other; a later straggler just causes another
/// cheap pass)...
pub(crate) const QUIET: Duration = Duration::from_millis(5);

/// ...or this long after the first change, whichever comes first.
pub(crate) const DEBOUNCE_MAX: Duration = Duration::from_millis(100);

/// Fetches and scans running at once, across repositories: each runs on a blocking-pool
/// thread, and a daemon watching many repositories should not grow a thread (and a malloc
/// arena) per repository at boot. Git and SQLite work is short: a pass waits only while
/// others run.
pub(crate) const PARALLEL_PASSES: usize = 2;

/// A failing repository is retried at most this many intervals apart.
pub(crate) const MAX_BACKOFF_FACTOR: u32 = 16;

/// The git watcher: one task per configured repository; returns after shutdown.
pub(crate) async fn run(handle: DaemonHandle) {
    let repos = handle.shared.config.repos.clone();
    let mut routes = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let passes = Arc::new(tokio::sync::Semaphore::new(PARALLEL_PASSES));
    for repo in repos {
        let (tx, rx) = mpsc::channel(1);
        let rx = match &repo.source {
            RepoSource::Path(path) => match git_common_dir(path) {
                Some(dir) => {
                    routes.push((dir, tx));
                    Some(rx)
                }
                None => {
                    tracing::warn!(repo = %repo.name, path = %path.display(),
                        "not a git repository (yet): checked every poll interval only");
                    None
                }
            },
            RepoSource::Url(_) => None,
        };
        // What the repository holds as the daemon starts is history; read before anything
        // awaits, so that a commit made right after the daemon answers runs.
        let boot_heads = match &repo.source {
            RepoSource::Path(path) => local_heads(path),
            RepoSource::Url(_) => None,
        };
        let config = &handle.shared.config;
        let lease = Lease::new(
            poll_lease(&repo.name),
            leases::holder(&handle.shared.store, config),
            leases::ttl(config),
        );
        let watcher = RepoWatcher {
            handle: handle.clone(),
            boot_heads,
            lease,
            renew_at: Instant::now(),
            requested: false,
            repo,
            changes: rx,
            fetch_requests: Some(handle.shared.fetch_requests.subscribe()),
            passes: Arc::clone(&passes),
        };
        tasks.spawn(watcher.run());
    }
    // Kept alive until every task ends; dropping it stops the inotify thread.
    let _watcher = match watch_refs(routes) {
        Ok(w) => w,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch refs: local repositories are checked every poll interval only");
            None
        }
    };
    while tasks.join_next().await.is_some() {}
}

/// Waits (at most `limit`) until every configured repository has been looked at once, so
/// that what the daemon treats as a remote's existing history is what it held when the
/// daemon started answering. Meant for the daemon's entry point, between spawning [`run`]
/// and announcing its address; a slow or unreachable remote only delays that by `limit`.
pub(crate) async fn first_look(handle: &DaemonHandle, limit: Duration) {
    let deadline = Instant::now() + limit;
    let names: Vec<&str> = handle
        .shared
        .config
        .repos
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    loop {
        let seen = handle.shared.repos.snapshot();
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !seen.contains_key(*n))
            .collect();
        if missing.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(repos = ?missing, "starting before the first look at these repositories");
            return;
        }
        // Boot only, bounded by `limit`: a short poll is simpler than a per-repository signal.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The git directory that holds a repository's refs (the common one, for a worktree).
fn git_common_dir(path: &Path) -> Option<PathBuf> {
    let repo = git2::Repository::open(path).ok()?;
    std::fs::canonicalize(repo.commondir()).ok()
}

/// The branches of a local repository with their commits (`None` if it cannot be read).
fn local_heads(path: &Path) -> Option<Vec<(String, git2::Oid)>> {
    let repo = git2::Repository::open(path).ok()?;
    let refs = repo.references_glob("refs/heads/*").ok()?;
    let mut heads = Vec::new();
    for reference in refs.flatten() {
        if let (Ok(name), Ok(commit)) = (reference.name(), reference.peel_to_commit())
            && let Some(branch) = name.strip_prefix("refs/heads/")
        {
            heads.push((branch.to_string(), commit.id()));
        }
    }
    Some(heads)
}

/// Starts one watcher for every local repository's refs; each relevant change sends on the
/// repository's channel (a full channel already means "look").
fn watch_refs(
    routes: Vec<(PathBuf, mpsc::Sender<()>)>,
) -> Result<Option<RecommendedWatcher>, notify::Error> {
    if routes.is_empty() {
        return Ok(None);
    }
    let dirs: Vec<PathBuf> = routes.iter().map(|(d, _)| d.clone()).collect();
    let routes = Arc::new(routes);
    let handler_routes = Arc::clone(&routes);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
        let event = match res {
            Ok(event) => event,
            // An overflow or watch error: the periodic check catches what was missed.
            Err(_) => return,
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for path in &event.paths {
            for (dir, tx) in handler_routes.iter() {
                if let Ok(rel) = path.strip_prefix(dir)
                    && is_ref_path(rel)
                {
                    let _ = tx.try_send(());
                }
            }
        }
    })?;
    for dir in &dirs {
        // `HEAD` and `packed-refs` sit directly in the git directory; branches below.
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        // Branches and tags (a new tag runs `on.push.tags` workflows).
        for sub in ["heads", "tags"] {
            let refs = dir.join("refs").join(sub);
            if refs.is_dir() {
                watcher.watch(&refs, RecursiveMode::Recursive)?;
            }
        }
    }
    Ok(Some(watcher))
}

/// Whether a path inside a git directory is a ref that matters (lock files do not: the
/// rename that replaces the ref follows).
fn is_ref_path(rel: &Path) -> bool {
    let text = rel.to_string_lossy();
    if text.ends_with(".lock") {
        return false;
    }
    text == "HEAD"
        || text == "packed-refs"
        || text.starts_with("refs/heads/")
        || text.starts_with("refs/tags/")
}

/// The watcher of one repository.
struct RepoWatcher {
    handle: DaemonHandle,
    repo: RepoConfig,
    /// A local repository's branches when the daemon started.
    boot_heads: Option<Vec<(String, git2::Oid)>>,
    /// Ref changes of a local repository (`None`: not watched).
    changes: Option<mpsc::Receiver<()>>,
    /// Inbound hooks' fetch requests (`None` once the sender is gone).
    fetch_requests: Option<broadcast::Receiver<String>>,
    /// Shared by every repository: at most [`PARALLEL_PASSES`] passes at once.
    passes: Arc<tokio::sync::Semaphore>,
    /// The `poll:<repo>` lease: its holder scans the repository and queues its runs.
    lease: Lease,
    /// When the lease is renewed next while waiting.
    renew_at: Instant,
    /// The coming pass was asked for by an inbound hook received by this node.
    requested: bool,
}

/// The lease of the node that scans repository `repo` for new commits.
pub(crate) fn poll_lease(repo: &str) -> String {
    format!("poll:{repo}")
}

/// What a task keeps between passes (moved into the blocking pool and back).
struct RepoState {
    /// See [`RepoWatcher::boot_heads`].
    boot_heads: Option<Vec<(String, git2::Oid)>>,
    mirror: Option<Mirror>,
    /// The daemon has looked at the repository since it started.
    scanned: bool,
    /// The default-branch head last published in the registry.
    published: Option<String>,
}

/// What a pass found.
struct PassOutcome {
    scan: PushScan,
    workflows_changed: bool,
}

impl RepoWatcher {
    async fn run(mut self) {
        let mut state = Some(RepoState {
            boot_heads: self.boot_heads.take(),
            mirror: None,
            scanned: false,
            published: None,
        });
        let mut failures: u32 = 0;
        loop {
            if self.handle.is_shutting_down() {
                return;
            }
            let Some(s) = state.take() else { return };
            // The lease holder scans and queues; so does a node an inbound hook for this
            // repository reached (the store's per-commit dedup keeps that to one run). Every
            // node fetches, for the workflows its cron and its runs read from its mirror.
            let held = self.lease.tick(&self.handle.shared.store).await;
            self.renew_at = Instant::now() + leases::tick(&self.handle.shared.config);
            let scan = held.is_held() || std::mem::take(&mut self.requested);
            let handle = self.handle.clone();
            let repo = self.repo.clone();
            let Ok(permit) = Arc::clone(&self.passes).acquire_owned().await else {
                return;
            };
            let joined = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let mut s = s;
                let outcome = pass(&handle, &repo, &mut s, scan);
                (s, outcome)
            })
            .await;
            let (s, outcome) = match joined {
                Ok(r) => r,
                Err(err) => {
                    tracing::error!(repo = %self.repo.name, error = %err, "git watcher panicked");
                    return;
                }
            };
            state = Some(s);
            match outcome {
                Ok(outcome) => {
                    failures = 0;
                    if !outcome.scan.queued.is_empty() {
                        self.handle.wake();
                    }
                    if outcome.workflows_changed {
                        self.handle.shared.repos.workflows_changed().notify_one();
                    }
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    self.handle
                        .emit(crate::model::event::DaemonEvent::FetchFailed {
                            repo: self.repo.name.as_str().into(),
                        });
                    tracing::warn!(repo = %self.repo.name, failures, error = %err,
                        "cannot update the repository");
                }
            }
            // The repository has been looked at (well or not): `first_look` stops waiting.
            self.handle.shared.repos.update(&self.repo.name, |_| {});
            if !self.wait(backoff(self.repo.poll_interval, failures)).await {
                return;
            }
        }
    }

    /// Waits for a reason to look again: a ref change (debounced), a fetch request for this
    /// repository, or the interval. False on shutdown.
    async fn wait(&mut self, interval: Duration) -> bool {
        let deadline = Instant::now() + interval;
        loop {
            tokio::select! {
                _ = self.handle.shutdown_requested() => {
                    // Another node takes the repository over at once.
                    self.lease.release(&self.handle.shared.store).await;
                    return false;
                }
                _ = tokio::time::sleep_until(deadline) => return true,
                _ = tokio::time::sleep_until(self.renew_at) => {
                    self.renew_at = Instant::now() + leases::tick(&self.handle.shared.config);
                    // A node that takes the repository over looks at it at once.
                    if let Held::Gained(_) = self.lease.tick(&self.handle.shared.store).await {
                        return true;
                    }
                }
                change = recv_change(&mut self.changes) => {
                    if change {
                        self.debounce().await;
                        return true;
                    }
                    // The watcher is gone: only the interval is left.
                    self.changes = None;
                }
                request = recv_request(&mut self.fetch_requests) => match request {
                    Ok(name) if name == self.repo.name => {
                        self.requested = true;
                        return true;
                    }
                    Ok(_) => {}
                    // Missed requests may have named this repository: look.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.requested = true;
                        return true;
                    }
                    // Nobody can ask any more: only the other reasons are left.
                    Err(broadcast::error::RecvError::Closed) => self.fetch_requests = None,
                },
            }
        }
    }

    /// Swallows the rest of a burst of ref changes: returns after [`QUIET`] without one, or
    /// [`DEBOUNCE_MAX`] after the first.
    async fn debounce(&mut self) {
        let Some(changes) = self.changes.as_mut() else {
            return;
        };
        let end = Instant::now() + DEBOUNCE_MAX;
        loop {
            let quiet_end = (Instant::now() + QUIET).min(end);
            match tokio::time::timeout_at(quiet_end, changes.recv()).await {
                Ok(Some(())) if Instant::now() < end => continue,
                _ => return,
            }
        }
    }
}

/// The next ref change; false when the watcher is gone. Pending forever without a watcher.
async fn recv_change(changes: &mut Option<mpsc::Receiver<()>>) -> bool {
    match changes {
        Some(rx) => rx.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

/// The next fetch request; pending forever once there is no receiver.
async fn recv_request(
    requests: &mut Option<broadcast::Receiver<String>>,
) -> Result<String, broadcast::error::RecvError> {
    match requests {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The wait before the next look: the interval, doubled per consecutive failure, capped.
pub(crate) fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 2u32
        .saturating_pow(failures.min(16))
        .min(MAX_BACKOFF_FACTOR);
    interval.saturating_mul(factor)
}

/// One look at a repository: fetch into the mirror, scan for pushes (when `scan`: this node
/// holds the repository's lease, or an inbound hook asked), publish the default branch's
/// workflows if it moved. Blocking (libgit2, the store).
fn pass(
    handle: &DaemonHandle,
    repo: &RepoConfig,
    s: &mut RepoState,
    scan: bool,
) -> Result<PassOutcome, String> {
    let shared = &handle.shared;
    let url = repo.source.clone_url();
    // libgit2 calls a missing local path an "unsupported URL protocol": say what it is.
    let local = match &repo.source {
        RepoSource::Path(p) => Some(p.clone()),
        RepoSource::Url(u) => u.strip_prefix("file://").map(std::path::PathBuf::from),
    };
    if let Some(path) = local
        && !path.exists()
    {
        return Err(format!(
            "repository `{}`: local path `{}` does not exist",
            repo.name,
            path.display()
        ));
    }
    let store = shared.store.clone();
    match s.mirror.as_mut() {
        Some(mirror) => mirror.fetch().map_err(|e| redact(&e.to_string(), &url))?,
        None => {
            let existed = Mirror::path_for(&shared.state_dir, &repo.name).exists();
            let mut mirror = Mirror::open_or_clone_with(
                &shared.state_dir,
                &repo.name,
                &url,
                repo.credentials.as_ref(),
            )
            .map_err(|e| redact(&e.to_string(), &url))?;
            // A fresh clone has just fetched; an existing mirror was only opened.
            if existed {
                mirror.fetch().map_err(|e| redact(&e.to_string(), &url))?;
            }
            s.mirror = Some(mirror);
        }
    }
    let Some(mirror) = s.mirror.as_ref() else {
        return Err("internal: repository state missing".to_string());
    };
    // No `branches`: every branch is watched, and each workflow's `on.push.branches` decides
    // (as on GitHub). The embedded config lists the current branch.
    let globs = GlobList::new(&repo.branches).map_err(|e| format!("bad branch glob: {e}"))?;
    let baseline = match (&s.boot_heads, s.scanned) {
        (_, true) => Baseline::Nothing,
        (Some(heads), false) => Baseline::Heads(heads),
        (None, false) => Baseline::CurrentHeads,
    };
    let limit = shared.config.limits.max_runs_per_minute;
    let scan = if scan {
        let mut scan = scan_repo(&store, mirror, &repo.name, Some(&globs), baseline, limit)
            .map_err(|e| redact(&e.to_string(), &url))?;
        let tagged = crate::daemon::triggers::tags::scan_tags(&store, mirror, &repo.name)
            .map_err(|e| redact(&e.to_string(), &url))?;
        scan.queued.extend(tagged);
        s.scanned = true;
        scan
    } else {
        PushScan::default()
    };
    let default_branch = mirror.default_branch();
    let head = match &default_branch {
        Some(branch) => mirror
            .branch_head(branch)
            .map_err(|e| e.to_string())?
            .map(|oid| oid.to_string()),
        None => None,
    };
    let mut workflows_changed = false;
    if head != s.published {
        let workflows = match head.as_deref().and_then(|h| git2::Oid::from_str(h).ok()) {
            Some(oid) => workflows_at(mirror, oid).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let infos: Vec<WorkflowInfo> = workflows.iter().map(workflow_info).collect();
        shared.repos.update(&repo.name, |info| {
            // Keep the known next fire times until cron recomputes them.
            let mut infos = infos;
            for new in &mut infos {
                new.next_fire = info
                    .workflows
                    .iter()
                    .find(|old| old.name == new.name)
                    .and_then(|old| old.next_fire);
            }
            info.default_branch = default_branch.clone();
            info.head = head.clone();
            info.workflows = infos;
        });
        s.published = head;
        workflows_changed = true;
    }
    Ok(PassOutcome {
        scan,
        workflows_changed,
    })
}

/// What the API lists for a workflow file.
fn workflow_info(file: &ParsedFile) -> WorkflowInfo {
    match file {
        ParsedFile::Valid { path, workflow } => WorkflowInfo {
            name: workflow.name.value.clone(),
            file: path.clone(),
            triggers: triggers_json(workflow),
            next_fire: None,
            error: None,
            parameters: parameters_json(workflow),
        },
        ParsedFile::Invalid {
            path,
            stem,
            diagnostics,
        } => WorkflowInfo {
            name: stem.clone(),
            file: path.clone(),
            triggers: Value::Null,
            next_fire: None,
            error: Some(diagnostics.clone()),
            parameters: Vec::new(),
        },
    }
}

/// A workflow's declared parameters as JSON, for the dashboard's trigger form.
pub(crate) fn parameters_json(workflow: &dsl::Workflow) -> Vec<Value> {
    workflow
        .parameters
        .iter()
        .map(|p| {
            json!({
                "name": p.name.value,
                "type": p.ty.value.as_str(),
                "required": p.required.value,
                "default": p.default.as_ref().map(|d| d.value.clone()),
                "enum": p.allowed.as_ref().map(|a| a.value.clone()),
                "description": p.description.as_ref().map(|d| d.value.clone()),
            })
        })
        .collect()
}

/// A workflow's `on:` section as JSON.
pub(crate) fn triggers_json(workflow: &dsl::Workflow) -> Value {
    let on = &workflow.on;
    let push = on.push.as_ref().map(|p| {
        json!({
            "branches": p.branches.iter().map(|b| b.value.clone()).collect::<Vec<_>>(),
            "paths": p.paths.iter().map(|b| b.value.clone()).collect::<Vec<_>>(),
            "tags": p.tags.as_ref().map(|t| t.iter().map(|b| b.value.clone()).collect::<Vec<_>>()),
        })
    });
    let pull_request = on.pull_request.as_ref().map(|p| {
        json!({
            "branches": p.branches.iter().map(|b| b.value.clone()).collect::<Vec<_>>(),
            "paths": p.paths.iter().map(|b| b.value.clone()).collect::<Vec<_>>(),
        })
    });
    let branch = on.branch.as_ref().map(|b| {
        json!({
            "branches": b.branches.iter().map(|b| b.value.clone()).collect::<Vec<_>>(),
        })
    });
    let schedule: Vec<Value> = on
        .schedule
        .iter()
        .map(|s| {
            json!({
                "cron": s.cron.value,
                "timezone": s.tz().name(),
                "catchup": s.catchup.value.as_str(),
                "parameters": s.parameters.iter()
                    .map(|(k, v)| (k.clone(), v.to_static_json().unwrap_or(Value::Null)))
                    .collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    json!({
        "push": push,
        "pull_request": pull_request,
        "branch": branch,
        "schedule": schedule,
        "manual": on.manual.as_ref().map(|m| m.value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_and_tag_refs_matter() {
        assert!(is_ref_path(Path::new("refs/heads/main")));
        assert!(is_ref_path(Path::new("refs/heads/feature/x")));
        assert!(is_ref_path(Path::new("packed-refs")));
        assert!(is_ref_path(Path::new("HEAD")));
        assert!(!is_ref_path(Path::new("refs/heads/main.lock")));
        assert!(!is_ref_path(Path::new("index")));
        assert!(!is_ref_path(Path::new("index.lock")));
        assert!(is_ref_path(Path::new("refs/tags/v1")));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs(60);
        assert_eq!(backoff(s, 0), s);
        assert_eq!(backoff(s, 1), s * 2);
        assert_eq!(backoff(s, 3), s * 8);
        assert_eq!(backoff(s, 100), s * MAX_BACKOFF_FACTOR);
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        let url = "https://bob:hunter2@example.com/r.git";
        let text = format!("fetch `{url}`: refused");
        let out = redact(&text, url);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("https://***@example.com/r.git"), "{out}");
        assert_eq!(redact("x", "/local/path"), "x");
    }
}

/// The watcher task against a real local repository and store, without a scheduler.
#[cfg(test)]
mod task_tests {
    use super::*;
    use crate::config::Config;
    use crate::daemon::handle::HandleParts;
    use crate::engine::{Engine, EngineConfig};
    use crate::store::RunFilter;
    use std::path::PathBuf;

    use crate::daemon::test_git::git;

    /// A repository with one commit (no workflow yet) in `tmp/repo`.
    fn init_repo(tmp: &Path) -> PathBuf {
        let repo = tmp.join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir");
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README"), "x").expect("write");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        repo
    }

    /// Commits `.workflows/w.yaml`, a one-step workflow named `w` that runs on push.
    fn commit_workflow(repo: &Path) {
        std::fs::create_dir_all(repo.join(".workflows")).expect("mkdir");
        std::fs::write(
            repo.join(".workflows/w.yaml"),
            "workflow:\n  name: w\n  on:\n    push: {}\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n",
        )
        .expect("write");
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", "add w"]);
    }

    /// A watcher task for one repository polled only hourly, with its state in `tmp/state`;
    /// returns the handle, the shutdown parts, the task and the store's path.
    fn start_watcher(
        tmp: &Path,
        name: &str,
        source: RepoSource,
    ) -> (
        DaemonHandle,
        HandleParts,
        tokio::task::JoinHandle<()>,
        PathBuf,
    ) {
        let state = tmp.join("state");
        let mut config = Config::default();
        config.repos.push(RepoConfig {
            name: name.into(),
            source,
            full_name: None,
            branches: Vec::new(),
            // Long: only the ref watch or a request can explain a quick run.
            poll_interval: Duration::from_secs(3600),
            credentials: None,
            secrets_for_forks: false,
        });
        let store_path = crate::state_dir::db_file(&state);
        let store = crate::store::Store::open_in_dir(&state).expect("store");
        let (handle, parts) = DaemonHandle::new(
            config,
            state,
            store,
            Arc::new(Engine::new(EngineConfig::default())),
            Default::default(),
        );
        let task = tokio::spawn(run(handle.clone()));
        (handle, parts, task, store_path)
    }

    async fn stop(parts: HandleParts, task: tokio::task::JoinHandle<()>) {
        parts.shutdown.send(true).expect("shutdown");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the watcher stops on shutdown")
            .expect("watcher task");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_to_a_watched_repository_is_queued_at_once() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = init_repo(tmp.path());
        let (handle, parts, task, store_path) =
            start_watcher(tmp.path(), "app", RepoSource::Path(repo.clone()));
        // The first look publishes the default branch.
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle
            .shared
            .repos
            .get("app")
            .and_then(|i| i.head)
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "the repository was never looked at"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        commit_workflow(&repo);
        let committed = Instant::now();
        let store = crate::store::Db::open(&store_path).expect("store");
        let run = loop {
            let runs = store.list_runs(&RunFilter::default(), 10).expect("list");
            if let Some(run) = runs.into_iter().next() {
                break run;
            }
            // The watcher polls hourly: a run long before that (an eventual check with a
            // generous deadline) comes from watching the files. The latency is measured by
            // `bench/daemon.sh`.
            assert!(
                committed.elapsed() < Duration::from_secs(120),
                "no run 120 s after the commit"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        eprintln!("commit to queued run: {:?}", committed.elapsed());
        assert_eq!(run.workflow, "w");
        // The run is queued first, the repository's workflows published right after.
        let info = loop {
            let info = handle.shared.repos.get("app").expect("info");
            if !info.workflows.is_empty() || committed.elapsed() > Duration::from_secs(120) {
                break info;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(info.default_branch.as_deref(), Some("main"));
        assert_eq!(info.workflows.len(), 1);
        assert_eq!(info.workflows[0].file, ".workflows/w.yaml");
        stop(parts, task).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_request_fetches_a_polled_repository_at_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = init_repo(tmp.path());
        // A URL is polled, never watched: only the request can explain a quick run.
        let source = RepoSource::Url(format!("file://{}", repo.display()));
        let (handle, parts, task, store_path) = start_watcher(tmp.path(), "remote", source);
        first_look(&handle, Duration::from_secs(10)).await;
        let info = handle.shared.repos.get("remote").expect("looked at");
        assert!(info.head.is_some(), "the first look fetched: {info:?}");
        commit_workflow(&repo);
        // Requests for other repositories do not fetch this one.
        handle.fetch_now("other");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let store = crate::store::Db::open(&store_path).expect("store");
        assert!(
            store
                .list_runs(&RunFilter::default(), 10)
                .expect("list")
                .is_empty()
        );
        handle.fetch_now("remote");
        let asked = Instant::now();
        loop {
            let runs = store.list_runs(&RunFilter::default(), 10).expect("list");
            if !runs.is_empty() {
                assert_eq!(runs[0].workflow, "w");
                break;
            }
            // The repository is polled hourly: a run long before that (an eventual check with
            // a generous deadline) comes from the request.
            assert!(
                asked.elapsed() < Duration::from_secs(120),
                "no run after the fetch request"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop(parts, task).await;
    }
}
