//! Pull-request triggers: the runs an inbound `pull_request` hook starts (`on.pull_request`).
//!
//! [`queue_pull_request`] takes a pull request a forge announced (opened, updated or
//! reopened; see [`crate::api::hooks`] for the payloads) for a configured repository and:
//! 1. makes sure the mirror has the head commit: when the hook's head SHA is not there yet,
//!    it fetches the forge's `refs/pull/N/head` from the repository's configured URL (never
//!    from a URL in the payload) into the mirror;
//! 2. reads `.workflows/*.y{a,}ml` at the head commit (from the mirror, no checkout) and the
//!    files the pull request changes (from the merge base with the base branch's head in the
//!    mirror; every file when the base is unknown);
//! 3. queues every workflow whose `on.pull_request` matches: `branches` globs over the base
//!    branch, `paths` globs over the changed files.
//!
//! Each run is a `pull_request` run of the head commit (its `branch` is the head branch) with
//! the pull request in [`RunEvent::pull_request`]; its dedup key
//! `pr:<repo>:<workflow file>:<number>:<head sha>` makes the same head delivered twice (or
//! re-delivered after a crash) queue once, while a new push to the pull request runs again.
//! Runs of pull requests from forks get no secrets unless the repository says
//! `secrets_for_forks: true` (applied when the run starts).
//!
//! What this module does not do: verify or parse hooks (the API), run anything (the
//! scheduler), or post statuses (the notifier reports on the run's commit, the head).

use dsl::Workflow;
use git2::Oid;
use serde_json::Map;

use crate::config::RepoConfig;
use crate::daemon::catalog::{ParsedFile, workflows_at};
use crate::daemon::handle::Shared;
use crate::daemon::run::mirror::{Mirror, MirrorError};
use crate::daemon::run::task;
use crate::daemon::triggers::push::{GlobList, TriggerError, new_run_for};
use crate::store::{Db, Enqueued, NewRun, PullRequestEvent, RunEvent, RunId, Trigger, TriggerKind};

/// The forge ref that holds a pull request's head commit.
pub(crate) fn head_ref(number: u64) -> String {
    format!("refs/pull/{number}/head")
}

/// Whether a workflow's `on.pull_request` selects a pull request into `base` changing
/// `changed`. A glob that does not compile (validation should have caught it) matches
/// nothing.
pub(crate) fn pull_request_matches(workflow: &Workflow, base: &str, changed: &[String]) -> bool {
    let Some(trigger) = &workflow.on.pull_request else {
        return false;
    };
    let branches: Vec<&str> = trigger.branches.iter().map(|b| b.value.as_str()).collect();
    let paths: Vec<&str> = trigger.paths.iter().map(|p| p.value.as_str()).collect();
    let (Ok(branches), Ok(paths)) = (GlobList::new(&branches), GlobList::new(&paths)) else {
        return false;
    };
    branches.matches(base) && (paths.is_empty() || paths.matches_any(changed))
}

/// The dedup key of a pull-request run.
pub(crate) fn pull_request_dedup_key(
    repo: &str,
    file: &str,
    number: u64,
    head_sha: &str,
) -> String {
    format!("pr:{repo}:{file}:{number}:{head_sha}")
}

/// What [`queue_pull_request`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PullRequestScan {
    /// The head commit the runs check out.
    pub head: String,
    /// Runs newly queued.
    pub queued: Vec<RunId>,
    /// Runs that were already queued for this head (a repeated delivery).
    pub duplicates: Vec<RunId>,
}

/// The head commit of `pr` in the mirror, fetching `refs/pull/N/head` when the hook's head
/// SHA is not there yet. Blocking.
pub(crate) fn ensure_head(mirror: &mut Mirror, pr: &PullRequestEvent) -> Result<Oid, MirrorError> {
    if let Ok(oid) = Oid::from_str(&pr.head_sha)
        && mirror.find_commit(oid).is_ok()
    {
        return Ok(oid);
    }
    // Once more after a failure: the git watcher may hold a lock of the mirror for a moment.
    let fetched = match mirror.fetch_ref(&head_ref(pr.number)) {
        Ok(oid) => oid,
        Err(MirrorError::UnknownCommit(name)) => return Err(MirrorError::UnknownCommit(name)),
        Err(first) => {
            tracing::info!(pull_request = pr.number, error = %first, "fetching the head again");
            mirror.fetch_ref(&head_ref(pr.number))?
        }
    };
    if pr.head_sha.is_empty() {
        return Ok(fetched);
    }
    // The pull request may have moved since the hook was sent: the hook's commit is the one
    // it announced, if the fetch brought it.
    match Oid::from_str(&pr.head_sha) {
        Ok(oid) if mirror.find_commit(oid).is_ok() => Ok(oid),
        _ => Err(MirrorError::UnknownCommit(pr.head_sha.clone())),
    }
}

/// Queues the runs of a pull request for `repo` (see the module docs). Blocking: git and
/// SQLite.
pub(crate) fn queue_pull_request(
    shared: &Shared,
    repo: &RepoConfig,
    pr: &PullRequestEvent,
) -> Result<PullRequestScan, TriggerError> {
    let mut mirror = task::open_mirror(shared, repo)?;
    let head = ensure_head(&mut mirror, pr)?;
    let head_text = head.to_string();
    let base_head = mirror.branch_head(&pr.base)?;
    let fork_point = base_head.and_then(|b| mirror.repository().merge_base(b, head).ok());
    let changed = mirror.changed_paths(fork_point, head)?;
    let mut event = pr.clone();
    event.head_sha = head_text.clone();
    let trigger = Trigger {
        kind: TriggerKind::PullRequest,
        commit: Some(head_text.clone()),
        branch: Some(pr.head.clone()),
        scheduled_for: None,
    };
    let mut runs: Vec<NewRun> = Vec::new();
    let mut failed: Vec<(NewRun, String)> = Vec::new();
    for file in workflows_at(&mirror, head)? {
        let ParsedFile::Valid { path, workflow } = file else {
            continue;
        };
        if !pull_request_matches(&workflow, &pr.base, &changed) {
            continue;
        }
        let (mut run, outcome) = new_run_for(&workflow, &repo.name, trigger.clone(), &Map::new());
        run.dedup_key = Some(pull_request_dedup_key(
            &repo.name, &path, pr.number, &head_text,
        ));
        run.workflow_file = Some(path);
        run.event = Some(RunEvent {
            git_ref: Some(head_ref(pr.number)),
            pull_request: Some(event.clone()),
        });
        match outcome {
            Ok(()) => runs.push(run),
            // A pull request gives no parameters: a required one without a default fails
            // the run, visibly.
            Err(errors) => failed.push((run, errors)),
        }
    }
    let written = shared.store.blocking_write(move |db: &mut Db| {
        let mut out = Vec::with_capacity(runs.len());
        for run in &runs {
            out.push(db.enqueue_run(run)?);
        }
        for (run, error) in &failed {
            db.record_failed_run(run, error)?;
        }
        Ok::<Vec<Enqueued>, crate::store::StoreError>(out)
    })?;
    let mut scan = PullRequestScan {
        head: head_text,
        ..PullRequestScan::default()
    };
    for enqueued in written {
        match enqueued {
            // A run its overlap rule skipped is recorded (cancelled, saying why): the hook
            // answers with it like a queued one.
            Enqueued::Created(id) | Enqueued::Skipped { run: id, .. } => scan.queued.push(id),
            Enqueued::Duplicate(id) => scan.duplicates.push(id),
        }
    }
    tracing::info!(repo = %repo.name, pull_request = pr.number, head = %scan.head,
        queued = scan.queued.len(), duplicates = scan.duplicates.len(), fork = pr.fork,
        "pull request");
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(on: &str) -> Workflow {
        let text = format!(
            "workflow:\n  name: w\n  on:\n{on}  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n"
        );
        dsl::parse_str("w.yaml", &text).expect("valid workflow").0
    }

    #[test]
    fn base_branch_and_path_filters_select() {
        let any = parse("    pull_request:\n");
        let main_src =
            parse("    pull_request:\n      branches: [main]\n      paths: ['src/**']\n");
        let push_only = parse("    push: {}\n");
        let src = vec!["src/lib.rs".to_string()];
        let docs = vec!["docs/a.md".to_string()];
        assert!(pull_request_matches(&any, "anything", &docs));
        assert!(pull_request_matches(&main_src, "main", &src));
        assert!(!pull_request_matches(&main_src, "release", &src));
        assert!(!pull_request_matches(&main_src, "main", &docs));
        assert!(!pull_request_matches(&push_only, "main", &src));
    }
}
