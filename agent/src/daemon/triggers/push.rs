//! Push triggers: which workflows a new commit on a watched branch starts.
//!
//! [`scan_repo`] compares every watched branch of a repository's mirror with the last commit
//! the store has seen on it and, for each branch that moved, reads `.workflows/*.y{a,}ml` at
//! the new head (from the mirror, no checkout), matches each workflow's `on.push` against the
//! branch and the files changed since the last seen commit, and hands the store one
//! [`Db::record_push`] per branch: the runs to queue, the failed runs of invalid files and
//! the branch's new head, in one transaction. Every run carries the dedup key
//! `push:<repo>:<workflow file>:<commit>`, so a commit runs at most once per workflow, also
//! when a crash makes the daemon handle it again.
//!
//! Rules a user can rely on:
//! - One run per workflow per push, for the head commit (several commits pushed at once run
//!   once, with the union of their changes for `paths`).
//! - The first time a repository is seen (no branch of it in the store), what it held when
//!   the daemon started is history and runs nothing: those heads are recorded as the
//!   baseline ([`Baseline`]; the git watcher reads a local repository's heads before anything
//!   else, so a commit made while the daemon boots still runs). Commits after that run,
//!   including the one that adds a workflow. A repository that was empty at boot runs its
//!   first commit. After a restart the store's heads are the baseline: commits made while the
//!   daemon was down run once, for the branch's head.
//! - A branch that appears later is a push of a new branch: its changes are counted from the
//!   most recent commit it shares with a branch already seen (everything, when it shares
//!   none); a workflow already run for the same commit does not run again. A new branch that
//!   points at a commit already seen (`git checkout -b`) brings no new code and runs nothing
//!   until it gets a commit of its own.
//! - `on.branch` runs a workflow for pushes to branches other than the default one (matched
//!   by its `branches` globs), with the same dedup key as `on.push`: a workflow with both
//!   runs once per commit. `on.push` with `tags` and no `branches` does not run on branch
//!   pushes (tags are scanned by [`crate::daemon::triggers::tags`]).
//! - A workflow runs on push only if it has `on.push`. A file without `on:` runs only when
//!   asked (a manual trigger, `agent exec`, or a call from another workflow): sub-workflow
//!   files and the example workflows, which have no `on:`, never run on push.
//! - Globs (`branches`, `paths`) follow GitHub Actions: `*` stops at `/`, `**` crosses it, and a
//!   pattern starting with `!` excludes; the last pattern that matches decides.
//! - An invalid workflow file becomes a failed run named after its file stem, carrying its
//!   diagnostics, on the push that added or changed it; the other workflows run as usual.
//! - Loop guard: a commit made by a run of workflow W does not start W again (a workflow
//!   that pushes to its own repository would otherwise run forever). Steps of daemon runs
//!   commit as `Agent <agent-run-ID@agent.invalid>` ([`committer_env`](crate::daemon::run::committer::committer_env)); a commit is W's when
//!   its committer address names a run of W, or its message has an `Agent-Workflow: W` or
//!   `Agent-Run: ID` trailer. A push starts nothing of W when every new commit is W's.
//!   A head commit whose message says `[skip ci]`, `[ci skip]`, `[no ci]`, `[skip agent]` or
//!   `[agent skip]` starts no push run at all (as on GitHub).
//! - Rate limit: at most `limits.max_runs_per_minute` push runs of one workflow per
//!   repository are queued in any 60 s (a loop between two workflows pushing to each other
//!   is slowed to that); a push past the limit queues nothing of that workflow and logs a
//!   `rate limited` warning.
//!
//! What this module does not do: fetching (see [`crate::daemon::triggers::git_watch`]), running (the
//! scheduler) or cron (see [`crate::daemon::triggers::cron`], which re-reads the default branch's workflows when
//! [`PushScan::default_branch_moved`] says so).

use std::collections::BTreeSet;

use dsl::Workflow;
use dsl::expr::MapContext;
use git2::Oid;
use globset::{Glob, GlobBuilder, GlobMatcher};
use serde_json::{Map, Value};

use crate::daemon::catalog::{ParsedFile, workflows_at};
use crate::daemon::run::mirror::{Mirror, MirrorError};
use crate::store::{Db, Enqueued, NewRun, RunId, Store, StoreError, Trigger, TriggerKind};

/// Errors while scanning a repository for pushes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TriggerError {
    /// Reading the mirror failed.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one scan of a repository did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PushScan {
    /// Runs newly queued (the scheduler should wake up when this is not empty).
    pub queued: Vec<RunId>,
    /// Failed runs recorded for invalid workflow files or bad parameters.
    pub failed: Vec<RunId>,
    /// Branches whose head moved, with their new head.
    pub moved: Vec<(String, String)>,
    /// The repository's default branch moved (or was seen for the first time): its
    /// schedules must be re-read.
    pub default_branch_moved: bool,
    /// This scan recorded the baseline of a repository seen for the first time.
    pub baseline: bool,
}

/// Markers in a head commit's message that start no push run (GitHub's and our own).
const SKIP_MARKERS: &[&str] = &[
    "[skip ci]",
    "[ci skip]",
    "[no ci]",
    "[skip agent]",
    "[agent skip]",
];

/// Whether a commit message asks for no push runs.
pub(crate) fn skips_ci(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    SKIP_MARKERS.iter().any(|m| lower.contains(m))
}

/// What a commit says about the run that made it: the run id in its committer address or
/// `Agent-Run:` trailer, the workflow in an `Agent-Workflow:` trailer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MadeBy {
    /// `Agent-Workflow: NAME`.
    pub workflow: Option<String>,
    /// The run id (`agent-run-ID@agent.invalid`, or `Agent-Run: ID`).
    pub run: Option<RunId>,
}

impl MadeBy {
    /// Reads a commit's committer address and message.
    pub(crate) fn of(committer_email: &str, message: &str) -> MadeBy {
        let mut made = MadeBy {
            workflow: None,
            run: committer_email
                .strip_prefix("agent-run-")
                .and_then(|rest| rest.strip_suffix("@agent.invalid"))
                .and_then(|id| id.parse().ok())
                .map(RunId),
        };
        for line in message.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if key.trim().eq_ignore_ascii_case("Agent-Workflow") && !value.is_empty() {
                made.workflow = Some(value.to_string());
            } else if key.trim().eq_ignore_ascii_case("Agent-Run")
                && let Ok(id) = value.parse()
            {
                made.run = Some(RunId(id));
            }
        }
        made
    }
}

/// The workflow whose run made `commit`, if any (a run id is looked up in the store).
fn maker_of(store: &Db, commit: &git2::Commit<'_>) -> Option<String> {
    let email = String::from_utf8_lossy(commit.committer().email_bytes()).into_owned();
    let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
    let made = MadeBy::of(&email, &message);
    if made.workflow.is_some() {
        return made.workflow;
    }
    let run = store.get_run(made.run?).ok()??;
    Some(run.workflow)
}

/// The most new commits of one push looked at by the loop guard.
const GUARD_WALK_LIMIT: usize = 256;

/// The workflow whose runs made every commit in `old..head` (just `head` without `old`),
/// if one did: that workflow is not started by this push.
fn loop_guard(store: &Db, mirror: &Mirror, old: Option<Oid>, head: Oid) -> Option<String> {
    let repo = mirror.repository();
    let mut walk = repo.revwalk().ok()?;
    walk.push(head).ok()?;
    match old {
        Some(old) => walk.hide(old).ok()?,
        None => walk.simplify_first_parent().ok()?,
    }
    let mut maker: Option<String> = None;
    for (i, oid) in walk.enumerate() {
        if i >= GUARD_WALK_LIMIT || (old.is_none() && i > 0) {
            break;
        }
        let commit = repo.find_commit(oid.ok()?).ok()?;
        let this = maker_of(store, &commit)?;
        match &maker {
            Some(m) if *m != this => return None,
            _ => maker = Some(this),
        }
    }
    maker
}

/// A list of GitHub-style globs: `*` stops at `/`, `**` crosses it, `!pattern` excludes, and
/// the last matching pattern decides. An empty list matches everything.
#[derive(Debug, Clone)]
pub(crate) struct GlobList {
    patterns: Vec<(bool, GlobMatcher)>,
}

impl GlobList {
    /// Compiles the patterns; a pattern that does not compile is an error naming it.
    pub(crate) fn new<S: AsRef<str>>(patterns: &[S]) -> Result<GlobList, globset::Error> {
        let mut out = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = p.as_ref();
            let (include, text) = match p.strip_prefix('!') {
                Some(rest) => (false, rest),
                None => (true, p),
            };
            let glob: Glob = GlobBuilder::new(text)
                .literal_separator(true)
                .backslash_escape(true)
                .build()?;
            out.push((include, glob.compile_matcher()));
        }
        Ok(GlobList { patterns: out })
    }

    /// True when the list is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `text` is selected: the last matching pattern decides; with no match, it is
    /// selected only if every pattern is an exclusion (or there are none).
    pub(crate) fn matches(&self, text: &str) -> bool {
        let mut selected = self.patterns.iter().all(|(include, _)| !include);
        for (include, matcher) in &self.patterns {
            if matcher.is_match(text) {
                selected = *include;
            }
        }
        selected
    }

    /// Whether any of `texts` is selected.
    pub(crate) fn matches_any<S: AsRef<str>>(&self, texts: &[S]) -> bool {
        texts.iter().any(|t| self.matches(t.as_ref()))
    }
}

/// Whether a workflow runs on a push of `branch` changing `changed`. A glob that does not
/// compile (validation should have caught it) matches nothing.
pub(crate) fn push_matches(workflow: &Workflow, branch: &str, changed: &[String]) -> bool {
    let on = &workflow.on;
    // No `on.push` (no `on:` at all included): the workflow runs only when asked.
    let Some(push) = &on.push else {
        return false;
    };
    // `on.push` with `tags` and no `branches` runs for tags only (see `tags.rs`).
    if !push.runs_on_branches() {
        return false;
    }
    let branches: Vec<&str> = push.branches.iter().map(|b| b.value.as_str()).collect();
    let paths: Vec<&str> = push.paths.iter().map(|p| p.value.as_str()).collect();
    let (Ok(branches), Ok(paths)) = (GlobList::new(&branches), GlobList::new(&paths)) else {
        return false;
    };
    branches.matches(branch) && (paths.is_empty() || paths.matches_any(changed))
}

/// Whether a workflow's `on.branch` runs it for a push to `branch`: only for branches other
/// than the repository's default one, filtered by its `branches` globs.
pub(crate) fn branch_trigger_matches(workflow: &Workflow, branch: &str, is_default: bool) -> bool {
    let Some(trigger) = &workflow.on.branch else {
        return false;
    };
    if is_default {
        return false;
    }
    let globs: Vec<&str> = trigger.branches.iter().map(|b| b.value.as_str()).collect();
    GlobList::new(&globs).is_ok_and(|g| g.matches(branch))
}

/// The run of `workflow` for `trigger`: parameters resolved (types, defaults, `required`)
/// from `given`, priority, concurrency group and overlap rule from the file. `Err` carries the parameter
/// errors as text, for a failed run.
pub(crate) fn new_run_for(
    workflow: &Workflow,
    repo: &str,
    trigger: Trigger,
    given: &Map<String, Value>,
) -> (NewRun, Result<(), String>) {
    let mut run = NewRun::new(workflow.name.value.clone(), trigger);
    run.repo = Some(repo.to_string());
    run.priority = workflow
        .metadata
        .priority
        .as_ref()
        .map(|p| p.value)
        .unwrap_or(0);
    let params = dsl::params::resolve_json(workflow, given);
    let outcome = match params {
        Ok(params) => {
            run.parameters = Value::Object(params);
            Ok(())
        }
        Err(errors) => {
            run.parameters = Value::Object(given.clone());
            Err(errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"))
        }
    };
    run.concurrency_group = concurrency_group(workflow, repo, &run);
    run.overlap = crate::store::overlap::mode(
        workflow.concurrency.as_ref().map(|c| c.overlap.value),
        run.trigger.kind,
    );
    (run, outcome)
}

/// `concurrency.group` rendered against the run's parameters (the workflow's name when the
/// section has no group or the template cannot be rendered); `None` without the section.
fn concurrency_group(workflow: &Workflow, repo: &str, run: &NewRun) -> Option<String> {
    let concurrency = workflow.concurrency.as_ref()?;
    let fallback = workflow.name.value.clone();
    let Some(group) = &concurrency.group else {
        return Some(fallback);
    };
    let mut ctx = MapContext::new(Map::new()).with_base_env(crate::engine::step_env::base_env(&[]));
    ctx.insert("parameters", run.parameters.clone());
    ctx.insert(
        "workflow",
        serde_json::json!({ "name": workflow.name.value }),
    );
    ctx.insert(
        "repo",
        serde_json::json!({
            "name": repo,
            "branch": run.trigger.branch,
            "commit": run.trigger.commit,
        }),
    );
    match group.render(&ctx) {
        Ok(Value::String(s)) if !s.is_empty() => Some(s),
        Ok(Value::Null) | Err(_) => Some(fallback),
        Ok(other) => Some(other.to_string()),
    }
}

/// The dedup key of a push run: a commit runs at most once per workflow file (two files
/// that happen to share a `name:` both run).
pub(crate) fn push_dedup_key(repo: &str, file: &str, commit: &str) -> String {
    format!("push:{repo}:{file}:{commit}")
}

/// How a scan treats a repository of which the store has seen no branch yet.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Baseline<'a> {
    /// Every branch is a new branch (a later look in the same daemon process: the
    /// repository was empty when the daemon started).
    Nothing,
    /// Its heads in the mirror now are history: recorded, nothing runs.
    CurrentHeads,
    /// These heads, read when the daemon started, are history; what moved since then runs.
    Heads(&'a [(String, Oid)]),
}

/// Scans every branch of `mirror` selected by `watched` (`None`: the default branch only)
/// against the store's last seen commits, and queues what the pushes start. `baseline` says
/// what counts as existing history for a repository the store has never seen;
/// `max_runs_per_minute` is the per-workflow rate limit of push runs (0: none). See the
/// module docs for the rules.
pub(crate) fn scan_repo(
    store: &Store,
    mirror: &Mirror,
    repo: &str,
    watched: Option<&GlobList>,
    baseline: Baseline<'_>,
    max_runs_per_minute: u32,
) -> Result<PushScan, TriggerError> {
    let default_branch = mirror.default_branch();
    let selected = |branch: &str| match watched {
        Some(globs) => globs.matches(branch),
        None => default_branch.as_deref() == Some(branch),
    };
    let seen_branches = || store.blocking_read(|db: &Db| db.seen_branches(repo));
    let set_seen = |branch: &str, head: &str| {
        let (repo, branch, head) = (repo.to_string(), branch.to_string(), head.to_string());
        store.blocking_write(move |db| db.set_last_seen_commit(&repo, &branch, &head))
    };
    let mut seen: Vec<(String, String)> = seen_branches()?;
    let mut scan = PushScan::default();
    if seen.is_empty() {
        let heads = match baseline {
            Baseline::Nothing => Vec::new(),
            Baseline::CurrentHeads => mirror.branches()?,
            Baseline::Heads(heads) => heads.to_vec(),
        };
        for (branch, head) in heads.iter().filter(|(b, _)| selected(b)) {
            set_seen(branch, &head.to_string())?;
            scan.baseline = true;
        }
        if scan.baseline {
            // The default branch's workflows are known now (for cron and the API).
            scan.default_branch_moved = true;
            seen = seen_branches()?;
        }
    }
    for (branch, head) in mirror.branches()? {
        if !selected(&branch) {
            continue;
        }
        let head_text = head.to_string();
        let last = seen
            .iter()
            .find(|(b, _)| *b == branch)
            .map(|(_, c)| c.as_str());
        if last == Some(head_text.as_str()) {
            continue;
        }
        let is_default = default_branch.as_deref() == Some(branch.as_str());
        let old = match last {
            Some(last) => Oid::from_str(last)
                .ok()
                .filter(|oid| mirror.repository().find_commit(*oid).is_ok()),
            None => fork_point(mirror, head, &seen),
        };
        if last.is_none() && old == Some(head) {
            // A new branch at a commit already seen (`git checkout -b`, `git branch`): no new
            // code, nothing runs until it gets a commit of its own.
            set_seen(&branch, &head_text)?;
            scan.default_branch_moved |= is_default;
            scan.moved.push((branch, head_text));
            continue;
        }
        // A force-push to an unrelated history leaves no known old commit: everything counts.
        let changed = mirror.changed_paths(old, head)?;
        let message = mirror.commit_info(head)?.message;
        let guard = PushGuard {
            skip_all: skips_ci(&message),
            not: store
                .blocking_read(|db: &Db| Ok::<_, StoreError>(loop_guard(db, mirror, old, head)))?,
            max_runs_per_minute,
        };
        if guard.skip_all {
            tracing::info!(repo, branch = %branch, commit = %head_text,
                "the commit message asks to skip CI: no push runs");
        }
        let (runs, failed) = store.blocking_read(|db: &Db| {
            runs_for_push(
                db,
                mirror,
                repo,
                (&branch, is_default),
                head,
                &changed,
                &guard,
            )
            .map_err(TriggerError::from)
        })?;
        let written = {
            let (repo, branch, head) = (repo.to_string(), branch.clone(), head_text.clone());
            let (runs, failed) = (runs.clone(), failed.clone());
            store.blocking_write(move |db| db.record_push(&repo, &branch, &head, &runs, &failed))?
        };
        // `record_push` answers the queued runs first, then the failed ones.
        let mut created = Vec::new();
        for (i, enqueued) in written.into_iter().enumerate() {
            if let Enqueued::Created(id) = enqueued {
                created.push(id);
                if i < runs.len() {
                    scan.queued.push(id);
                } else {
                    scan.failed.push(id);
                }
            }
        }
        if !created.is_empty() {
            let summary = commit_summary(&message);
            // The runs are queued already: a message that cannot be written is only missing
            // from the listing.
            if let Err(e) =
                store.blocking_write(move |db| db.set_commit_message(&created, &summary))
            {
                tracing::warn!(repo, commit = %head_text, "recording the commit message failed: {e}");
            }
        }
        tracing::info!(repo, branch = %branch, commit = %head_text,
            runs = runs.len(), failed = failed.len(), "new commit");
        scan.default_branch_moved |= is_default;
        scan.moved.push((branch, head_text));
    }
    Ok(scan)
}

/// The summary line of a commit message as runs show it: the first non-empty line, trimmed,
/// at most 200 characters.
pub(crate) fn commit_summary(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// Where a new branch forked off the history already seen: the most recent merge base of
/// its head with the heads seen on other branches (none when it shares no history).
fn fork_point(mirror: &Mirror, head: Oid, seen: &[(String, String)]) -> Option<Oid> {
    let repo = mirror.repository();
    seen.iter()
        .filter_map(|(_, commit)| Oid::from_str(commit).ok())
        .filter_map(|other| repo.merge_base(other, head).ok())
        .filter_map(|base| {
            repo.find_commit(base)
                .ok()
                .map(|c| (c.time().seconds(), base))
        })
        .max()
        .map(|(_, base)| base)
}

/// Runs to queue, and failed runs with their error text.
type PushRuns = (Vec<NewRun>, Vec<(NewRun, String)>);

/// What keeps a push from starting runs.
#[derive(Debug)]
struct PushGuard {
    /// The head commit says `[skip ci]` (or the like): nothing starts.
    skip_all: bool,
    /// The workflow whose runs made every new commit: it does not start again.
    not: Option<String>,
    /// Push runs of one workflow per minute (0: no limit).
    max_runs_per_minute: u32,
}

impl PushGuard {
    /// Whether `workflow` may start now; logs why not.
    fn admits(&self, store: &Db, repo: &str, workflow: &str, commit: &str) -> bool {
        if self.skip_all {
            return false;
        }
        if self.not.as_deref() == Some(workflow) {
            tracing::info!(
                repo,
                workflow,
                commit,
                "loop guard: the new commits were made by runs of this workflow; not started again"
            );
            return false;
        }
        if self.max_runs_per_minute > 0 {
            let since = chrono::Utc::now() - chrono::Duration::seconds(60);
            let recent = store
                .count_runs_since(repo, workflow, TriggerKind::Push, since)
                .unwrap_or(0);
            if recent >= self.max_runs_per_minute as usize {
                tracing::warn!(
                    repo,
                    workflow,
                    commit,
                    recent,
                    limit = self.max_runs_per_minute,
                    "rate limited: {recent} push runs of `{workflow}` in the last minute \
                     (limits.max_runs_per_minute); this push does not run it"
                );
                return false;
            }
        }
        true
    }
}

/// The runs (and failed runs) a push of `head` to `branch` changing `changed` starts.
fn runs_for_push(
    store: &Db,
    mirror: &Mirror,
    repo: &str,
    (branch, is_default): (&str, bool),
    head: Oid,
    changed: &[String],
    guard: &PushGuard,
) -> Result<PushRuns, MirrorError> {
    let commit = head.to_string();
    let trigger = Trigger {
        kind: TriggerKind::Push,
        commit: Some(commit.clone()),
        branch: Some(branch.to_string()),
        scheduled_for: None,
    };
    let changed_set: BTreeSet<&str> = changed.iter().map(String::as_str).collect();
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for file in workflows_at(mirror, head)? {
        match file {
            ParsedFile::Valid { path, workflow } => {
                let selected = push_matches(&workflow, branch, changed)
                    || branch_trigger_matches(&workflow, branch, is_default);
                if !selected || !guard.admits(store, repo, &workflow.name.value, &commit) {
                    continue;
                }
                let (mut run, outcome) = new_run_for(&workflow, repo, trigger.clone(), &Map::new());
                run.dedup_key = Some(push_dedup_key(repo, &path, &commit));
                run.workflow_file = Some(path.clone());
                match outcome {
                    Ok(()) => runs.push(run),
                    Err(errors) => failed.push((run, errors)),
                }
            }
            ParsedFile::Invalid {
                path,
                stem,
                diagnostics,
            } => {
                // Reported on the push that added or changed the file, not on every push after.
                if !changed_set.contains(path.as_str()) || guard.skip_all {
                    continue;
                }
                let mut run = NewRun::new(stem.clone(), trigger.clone());
                run.repo = Some(repo.to_string());
                run.dedup_key = Some(push_dedup_key(repo, &path, &commit));
                failed.push((run, diagnostics));
            }
        }
    }
    Ok((runs, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(p: &[&str]) -> GlobList {
        GlobList::new(p).expect("globs compile")
    }

    /// Guards the message runs show: the first non-empty line, trimmed, cut at 200
    /// characters (on a character boundary).
    #[test]
    fn commit_summaries_are_the_first_line() {
        assert_eq!(
            commit_summary("\n  fix the cache  \n\nbody"),
            "fix the cache"
        );
        assert_eq!(commit_summary(""), "");
        let long = "é".repeat(250);
        let cut = commit_summary(&long);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn globs_follow_github_rules() {
        assert!(globs(&[]).matches("anything/at/all"));
        assert!(globs(&["main"]).matches("main"));
        assert!(!globs(&["main"]).matches("maint"));
        assert!(globs(&["release/*"]).matches("release/1.0"));
        assert!(!globs(&["release/*"]).matches("release/1.0/hotfix"));
        assert!(globs(&["release/**"]).matches("release/1.0/hotfix"));
        assert!(globs(&["**"]).matches("a/b/c"));
        assert!(globs(&["src/**/*.rs"]).matches("src/a/b.rs"));
        assert!(globs(&["src/**/*.rs"]).matches("src/b.rs"));
        assert!(!globs(&["*.rs"]).matches("src/b.rs"));
        // Exclusions: the last match decides; only-exclusions start from "everything".
        assert!(!globs(&["**", "!docs/**"]).matches("docs/a.md"));
        assert!(globs(&["**", "!docs/**"]).matches("src/a.rs"));
        assert!(globs(&["!docs/**"]).matches("src/a.rs"));
        assert!(!globs(&["!docs/**"]).matches("docs/a.md"));
        assert!(globs(&["**", "!docs/**", "docs/keep.md"]).matches("docs/keep.md"));
    }

    fn parse(text: &str) -> Workflow {
        dsl::parse_str("w.yaml", text).expect("valid workflow").0
    }

    #[test]
    fn push_filters_select_branches_and_paths() {
        let wf = parse(
            "workflow:\n  name: w\n  on:\n    push:\n      branches: [main, 'release/*']\n      paths: ['src/**']\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n",
        );
        let src = vec!["src/lib.rs".to_string()];
        let docs = vec!["docs/x.md".to_string()];
        assert!(push_matches(&wf, "main", &src));
        assert!(push_matches(&wf, "release/2", &src));
        assert!(!push_matches(&wf, "feature", &src));
        assert!(!push_matches(&wf, "main", &docs));
    }

    #[test]
    /// A file without `on:` (a sub-workflow, the example workflows) runs only when asked, never
    /// on push: copying such files into a watched repository must not fail on every commit.
    fn triggerless_and_manual_only_workflows_do_not_run_on_push() {
        let none = parse(
            "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n",
        );
        assert!(!push_matches(&none, "any", &[]));
        let manual = parse(
            "workflow:\n  name: w\n  on:\n    manual: true\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n",
        );
        assert!(!push_matches(&manual, "any", &[]));
    }
}

/// Scans against real repositories (made with the git CLI), mirrors and stores.
#[cfg(test)]
mod scan_tests {
    use super::*;
    use crate::daemon::run::committer::{COMMITTER_NAME, committer_email};
    use crate::store::{RunFilter, RunRecord, RunStatus};
    use std::path::Path;

    use crate::daemon::test_git::git;

    fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
        git(dir, &["rev-parse", "HEAD"])
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        repo: std::path::PathBuf,
        state: std::path::PathBuf,
        store: Store,
        mirror: Mirror,
    }

    impl Fixture {
        fn new(files: &[(&str, &str)]) -> Fixture {
            let tmp = tempfile::tempdir().expect("tempdir");
            let repo = tmp.path().join("repo");
            std::fs::create_dir_all(&repo).expect("mkdir");
            git(&repo, &["init", "-q", "-b", "main"]);
            commit(&repo, files, "initial");
            let state = tmp.path().join("state");
            let store = Store::open_in_dir(&state).expect("store");
            let mirror =
                Mirror::open_or_clone(&state, "app", &repo.to_string_lossy()).expect("mirror");
            Fixture {
                _tmp: tmp,
                repo,
                state,
                store,
                mirror,
            }
        }

        fn scan(&mut self, watched: Option<&GlobList>, baseline: bool) -> PushScan {
            self.mirror.fetch().expect("fetch");
            let baseline = if baseline {
                Baseline::CurrentHeads
            } else {
                Baseline::Nothing
            };
            scan_repo(&self.store, &self.mirror, "app", watched, baseline, 0).expect("scan")
        }

        fn runs(&self) -> Vec<RunRecord> {
            let mut runs = self
                .store
                .blocking_read(|db: &Db| db.list_runs(&RunFilter::default(), 100))
                .expect("list");
            runs.reverse();
            runs
        }
    }

    /// The `on:` section of a workflow that runs on every push.
    const PUSH: &str = "  on:\n    push: {}\n";

    fn workflow(name: &str, on: &str) -> String {
        format!(
            "workflow:\n  name: {name}\n{on}  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n"
        )
    }

    #[test]
    fn existing_history_runs_nothing_and_a_new_commit_runs_once() {
        let old = workflow("old", PUSH);
        let mut f = Fixture::new(&[(".workflows/old.yaml", &old)]);
        let scan = f.scan(None, true);
        assert!(scan.baseline && scan.default_branch_moved);
        assert!(f.runs().is_empty(), "history ran: {:?}", f.runs());

        let new = workflow("new", "  on:\n    push: {}\n");
        let head = commit(&f.repo, &[(".workflows/new.yaml", &new)], "add");
        let scan = f.scan(None, false);
        assert_eq!(scan.queued.len(), 2, "{scan:?}");
        let runs = f.runs();
        let names: Vec<_> = runs.iter().map(|r| r.workflow.as_str()).collect();
        assert_eq!(names, ["new", "old"]);
        for r in &runs {
            assert_eq!(r.status, RunStatus::Queued);
            assert_eq!(r.trigger.kind, TriggerKind::Push);
            assert_eq!(r.trigger.commit.as_deref(), Some(head.as_str()));
            assert_eq!(r.trigger.branch.as_deref(), Some("main"));
            assert_eq!(r.repo.as_deref(), Some("app"));
        }
        // Nothing new: nothing queued; a restart (new store handle, baseline allowed) neither.
        assert!(f.scan(None, false).queued.is_empty());
        let again = Store::open_in_dir(&f.state).expect("reopen");
        let scan =
            scan_repo(&again, &f.mirror, "app", None, Baseline::CurrentHeads, 0).expect("scan");
        assert_eq!(scan, PushScan::default());
        assert_eq!(f.runs().len(), 2);
    }

    #[test]
    fn a_repository_empty_at_boot_runs_its_first_commit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir");
        git(&repo, &["init", "-q", "-b", "main"]);
        let state = tmp.path().join("state");
        let store = Store::open_in_dir(&state).expect("store");
        let mut mirror =
            Mirror::open_or_clone(&state, "app", &repo.to_string_lossy()).expect("mirror");
        let scan =
            scan_repo(&store, &mirror, "app", None, Baseline::CurrentHeads, 0).expect("scan");
        assert!(scan.moved.is_empty());
        commit(
            &repo,
            &[(".workflows/w.yaml", &workflow("w", PUSH))],
            "first",
        );
        mirror.fetch().expect("fetch");
        let scan = scan_repo(&store, &mirror, "app", None, Baseline::Nothing, 0).expect("scan");
        assert_eq!(scan.queued.len(), 1, "{scan:?}");
    }

    #[test]
    fn a_commit_made_before_the_first_look_still_runs() {
        let mut f = Fixture::new(&[("README", "x")]);
        let boot = vec![(
            "main".to_string(),
            Oid::from_str(&git(&f.repo, &["rev-parse", "HEAD"])).expect("oid"),
        )];
        commit(
            &f.repo,
            &[(".workflows/w.yaml", &workflow("w", PUSH))],
            "raced",
        );
        f.mirror.fetch().expect("fetch");
        let scan =
            scan_repo(&f.store, &f.mirror, "app", None, Baseline::Heads(&boot), 0).expect("scan");
        assert!(scan.baseline);
        assert_eq!(scan.queued.len(), 1, "{scan:?}");
    }

    /// `on.branch` runs for new commits on non-default branches its globs select (once per
    /// commit, also with `on.push`); `on.push` with only `tags` never runs on branch pushes.
    #[test]
    fn branch_triggers_and_tag_only_pushes() {
        let branchy = workflow(
            "branchy",
            "  on:\n    branch:\n      branches: ['feature/*']\n",
        );
        let both = workflow("both", "  on:\n    push: {}\n    branch: {}\n");
        let tags_only = workflow("tags", "  on:\n    push:\n      tags: ['v*']\n");
        let mut f = Fixture::new(&[
            (".workflows/branchy.yaml", &branchy),
            (".workflows/both.yaml", &both),
            (".workflows/tags.yaml", &tags_only),
        ]);
        let all = GlobList::new::<&str>(&[]).expect("glob");
        f.scan(Some(&all), true);
        commit(&f.repo, &[("m", "1")], "on main");
        let scan = f.scan(Some(&all), false);
        assert_eq!(queued_names(&f, &scan), ["both"], "{scan:?}");
        git(&f.repo, &["checkout", "-q", "-b", "feature/x"]);
        commit(&f.repo, &[("x", "1")], "on feature");
        // The default branch is the one the repository's HEAD names: keep it `main`.
        git(&f.repo, &["symbolic-ref", "HEAD", "refs/heads/main"]);
        let scan = f.scan(Some(&all), false);
        assert_eq!(queued_names(&f, &scan), ["both", "branchy"], "{scan:?}");
    }

    #[test]
    fn branch_and_path_filters_select() {
        let src = workflow(
            "src",
            "  on:\n    push:\n      branches: [main]\n      paths: ['src/**']\n",
        );
        let docs = workflow(
            "docs",
            "  on:\n    push:\n      paths: ['docs/**', '!docs/draft/**']\n",
        );
        let feature = workflow(
            "feature",
            "  on:\n    push:\n      branches: ['feature/*']\n",
        );
        let mut f = Fixture::new(&[
            (".workflows/src.yaml", &src),
            (".workflows/docs.yml", &docs),
            (".workflows/feature.yaml", &feature),
        ]);
        let all = GlobList::new(&["**"]).expect("glob");
        f.scan(Some(&all), true);

        commit(&f.repo, &[("docs/draft/x.md", "x")], "draft");
        assert!(f.scan(Some(&all), false).queued.is_empty());
        commit(&f.repo, &[("docs/guide.md", "x")], "docs");
        f.scan(Some(&all), false);
        commit(&f.repo, &[("src/lib.rs", "x")], "src");
        f.scan(Some(&all), false);
        git(&f.repo, &["checkout", "-q", "-b", "feature/x"]);
        commit(&f.repo, &[("src/other.rs", "x")], "on feature");
        f.scan(Some(&all), false);

        let got: Vec<(String, String)> = f
            .runs()
            .iter()
            .map(|r| {
                (
                    r.workflow.clone(),
                    r.trigger.branch.clone().unwrap_or_default(),
                )
            })
            .collect();
        let want: Vec<(String, String)> =
            [("docs", "main"), ("src", "main"), ("feature", "feature/x")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_new_branch_without_new_commits_runs_nothing() {
        let mut f = Fixture::new(&[(".workflows/w.yaml", &workflow("w", PUSH))]);
        let all = GlobList::new::<&str>(&[]).expect("glob");
        f.scan(Some(&all), true);
        git(&f.repo, &["branch", "topic"]);
        let scan = f.scan(Some(&all), false);
        assert!(scan.queued.is_empty(), "{scan:?}");
        assert_eq!(scan.moved.len(), 1, "{scan:?}");
        git(&f.repo, &["checkout", "-q", "topic"]);
        commit(&f.repo, &[("t", "1")], "topic work");
        assert_eq!(f.scan(Some(&all), false).queued.len(), 1);
    }

    #[test]
    fn only_the_default_branch_is_watched_without_globs() {
        let mut f = Fixture::new(&[(".workflows/w.yaml", &workflow("w", PUSH))]);
        f.scan(None, true);
        git(&f.repo, &["checkout", "-q", "-b", "side"]);
        commit(&f.repo, &[("a", "1")], "side");
        git(&f.repo, &["checkout", "-q", "main"]);
        assert!(f.scan(None, false).queued.is_empty());
        commit(&f.repo, &[("b", "1")], "main");
        assert_eq!(f.scan(None, false).queued.len(), 1);
    }

    #[test]
    fn a_bad_workflow_file_fails_alone() {
        let mut f = Fixture::new(&[("README", "x")]);
        f.scan(None, true);
        let good = workflow("good", PUSH);
        commit(
            &f.repo,
            &[
                (".workflows/good.yaml", &good),
                (
                    ".workflows/broken.yaml",
                    "workflow:\n  name: broken\n  stagez: []\n",
                ),
            ],
            "add",
        );
        let scan = f.scan(None, false);
        assert_eq!((scan.queued.len(), scan.failed.len()), (1, 1), "{scan:?}");
        let runs = f.runs();
        let broken = runs
            .iter()
            .find(|r| r.workflow == "broken")
            .expect("failed run");
        assert_eq!(broken.status, RunStatus::Failed);
        let error = broken.error.as_deref().unwrap_or_default();
        assert!(error.contains(".workflows/broken.yaml:3:3"), "{error}");
        assert!(error.contains("stagez"), "{error}");
        assert!(
            runs.iter()
                .any(|r| r.workflow == "good" && r.status == RunStatus::Queued)
        );
        // An unrelated commit does not report the same broken file again.
        commit(&f.repo, &[("c", "1")], "more");
        let scan = f.scan(None, false);
        assert_eq!((scan.queued.len(), scan.failed.len()), (1, 0), "{scan:?}");
    }

    /// Commits everything (or nothing) with this committer address and message.
    fn commit_by(dir: &Path, email: &str, message: &str) {
        std::fs::write(dir.join("generated.txt"), message).expect("write");
        git(dir, &["add", "-A"]);
        let out = std::process::Command::new("git")
            .args(["commit", "-q", "-m", message])
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "T")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", COMMITTER_NAME)
            .env("GIT_COMMITTER_EMAIL", email)
            .output()
            .expect("git commit");
        assert!(out.status.success(), "{out:?}");
    }

    fn queued_names(f: &Fixture, scan: &PushScan) -> Vec<String> {
        let runs = f.runs();
        let mut names: Vec<String> = scan
            .queued
            .iter()
            .filter_map(|id| runs.iter().find(|r| r.id == *id))
            .map(|r| r.workflow.clone())
            .collect();
        names.sort();
        names
    }

    /// A workflow whose run pushes to its own repository must not start itself again (it
    /// made 935 runs in 40 s): commits by a run of W (its committer address, or an
    /// `Agent-Workflow`/`Agent-Run` trailer) start everything but W; `[skip ci]` starts
    /// nothing; a commit of a person on top starts W again.
    #[test]
    fn commits_made_by_a_run_do_not_start_its_workflow_again() {
        let mut f = Fixture::new(&[
            (".workflows/w.yaml", &workflow("w", PUSH)),
            (".workflows/v.yaml", &workflow("v", PUSH)),
        ]);
        f.scan(None, true);
        commit(&f.repo, &[("a", "1")], "by a person");
        let scan = f.scan(None, false);
        assert_eq!(queued_names(&f, &scan), ["v", "w"]);
        let w_run = f
            .runs()
            .into_iter()
            .find(|r| r.workflow == "w")
            .expect("run of w")
            .id;

        commit_by(&f.repo, &committer_email(w_run), "bump by w");
        let scan = f.scan(None, false);
        assert_eq!(queued_names(&f, &scan), ["v"], "{scan:?}");

        commit(&f.repo, &[("b", "1")], "release\n\nAgent-Workflow: w\n");
        let scan = f.scan(None, false);
        assert_eq!(queued_names(&f, &scan), ["v"]);
        commit(
            &f.repo,
            &[("c", "1")],
            &format!("x\n\nAgent-Run: {w_run}\n"),
        );
        let scan = f.scan(None, false);
        assert_eq!(queued_names(&f, &scan), ["v"]);

        commit(&f.repo, &[("d", "1")], "docs [skip ci]");
        let scan = f.scan(None, false);
        assert!(scan.queued.is_empty() && scan.failed.is_empty(), "{scan:?}");

        // Two commits pushed at once, one of them a person's: everything runs.
        commit_by(&f.repo, &committer_email(w_run), "by w again");
        commit(&f.repo, &[("e", "1")], "by a person, on top");
        let scan = f.scan(None, false);
        assert_eq!(queued_names(&f, &scan), ["v", "w"]);
    }

    /// Workflows that push to each other are not caught by the loop guard: the rate limit
    /// queues at most `max_runs_per_minute` push runs of a workflow per minute.
    #[test]
    fn push_runs_are_rate_limited_per_workflow() {
        let mut f = Fixture::new(&[(".workflows/w.yaml", &workflow("w", PUSH))]);
        f.mirror.fetch().expect("fetch");
        scan_repo(&f.store, &f.mirror, "app", None, Baseline::CurrentHeads, 2).expect("scan");
        let mut queued = Vec::new();
        for i in 0..4 {
            commit(&f.repo, &[("n", &i.to_string())], "push");
            f.mirror.fetch().expect("fetch");
            let scan =
                scan_repo(&f.store, &f.mirror, "app", None, Baseline::Nothing, 2).expect("scan");
            queued.push(scan.queued.len());
        }
        assert_eq!(queued, [1, 1, 0, 0]);
    }

    #[test]
    fn commit_identities_and_trailers_name_the_run() {
        assert_eq!(
            MadeBy::of("agent-run-42@agent.invalid", "x"),
            MadeBy {
                workflow: None,
                run: Some(RunId(42))
            }
        );
        let m = MadeBy::of(
            "me@example.com",
            "subject\n\nbody\n\nagent-workflow: deploy it\n",
        );
        assert_eq!(m.workflow.as_deref(), Some("deploy it"));
        assert_eq!(
            MadeBy::of("agent-run-x@agent.invalid", "Agent-Run: nope"),
            MadeBy::default()
        );
        assert!(skips_ci("fix typo [Skip CI]"));
        assert!(!skips_ci("skip ci"));
    }

    /// Two files with one `name:` left one unreachable without a word: the later one (in
    /// path order) is an invalid file now, reported on the push that adds it.
    #[test]
    fn a_duplicate_workflow_name_is_an_error() {
        let mut f = Fixture::new(&[("README", "x")]);
        f.scan(None, true);
        commit(
            &f.repo,
            &[
                (".workflows/a.yaml", &workflow("same", PUSH)),
                (".workflows/b.yaml", &workflow("same", PUSH)),
            ],
            "add",
        );
        let scan = f.scan(None, false);
        assert_eq!((scan.queued.len(), scan.failed.len()), (1, 1), "{scan:?}");
        let failed = f
            .runs()
            .into_iter()
            .find(|r| r.status == RunStatus::Failed)
            .expect("failed run");
        assert_eq!(failed.workflow, "b");
        let error = failed.error.unwrap_or_default();
        assert!(
            error.contains(".workflows/b.yaml:2:9: error: duplicate workflow name `same`")
                && error.contains(".workflows/a.yaml"),
            "{error}"
        );
    }

    #[test]
    fn missing_required_parameters_make_a_failed_run() {
        let wf = "workflow:\n  name: p\n  on:\n    push: {}\n  parameters:\n    - name: version\n      required: true\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: echo ${{ parameters.version }}\n";
        let mut f = Fixture::new(&[("README", "x")]);
        f.scan(None, true);
        commit(&f.repo, &[(".workflows/p.yaml", wf)], "add");
        let scan = f.scan(None, false);
        assert_eq!(scan.failed.len(), 1, "{scan:?}");
        let run = &f.runs()[0];
        assert!(
            run.error.as_deref().unwrap_or_default().contains("version"),
            "{run:?}"
        );
    }
}
