//! Tag triggers: which workflows a new tag starts (`on.push.tags`).
//!
//! [`scan_tags`] compares the tags of a repository's mirror with the tags the store has seen
//! (kept beside the branches' last seen commits, under the key `refs/tags/NAME`) and, for each
//! tag that is new or moved, reads `.workflows/*.y{a,}ml` at the tagged commit and queues the
//! workflows whose `on.push.tags` globs match the tag's name, in one [`Db::record_push`] per
//! tag. Each run is a `push` run at the tagged commit with no branch and the ref
//! `refs/tags/NAME` ([`RunEvent::git_ref`]), so `AGENT_REF` names the tag and the checkout
//! holds the tag; its dedup key `tag:<repo>:<workflow file>:<tag>:<commit>` makes a tag run at
//! most once per workflow, also when a crash makes the daemon look again.
//!
//! Rules a user can rely on:
//! - A tag push runs only workflows with `on.push.tags` (a branch push never does; a workflow
//!   with only `tags` does not run on branch pushes). `on.push.paths` does not filter tags.
//! - The tags a repository holds the first time the daemon looks at its tags (also after an
//!   upgrade from a version without tag triggers) are history and run nothing; the store then
//!   records the marker `refs/tags/` so that later tags run, also across restarts.
//! - A tag moved to another commit (`git tag -f`) runs again; a deleted tag runs nothing.
//! - Invalid workflow files are reported by branch pushes, not by tags.

use dsl::Workflow;
use git2::Oid;
use serde_json::Map;

use crate::daemon::catalog::{ParsedFile, workflows_at};
use crate::daemon::run::mirror::Mirror;
use crate::daemon::triggers::push::{GlobList, TriggerError, new_run_for};
use crate::store::{Db, Enqueued, NewRun, RunEvent, RunId, Store, Trigger, TriggerKind};

/// The key under which the store's seen refs record that a repository's tags were looked at.
pub(crate) const TAGS_SEEN_MARKER: &str = "refs/tags/";

/// Whether a workflow's `on.push.tags` selects the tag `name` (without `refs/tags/`). A glob
/// that does not compile (validation should have caught it) matches nothing.
pub(crate) fn tag_matches(workflow: &Workflow, name: &str) -> bool {
    let Some(tags) = workflow.on.push.as_ref().and_then(|p| p.tags.as_ref()) else {
        return false;
    };
    let globs: Vec<&str> = tags.iter().map(|t| t.value.as_str()).collect();
    GlobList::new(&globs).is_ok_and(|g| g.matches(name))
}

/// The dedup key of a tag run.
pub(crate) fn tag_dedup_key(repo: &str, file: &str, tag: &str, commit: &str) -> String {
    format!("tag:{repo}:{file}:{tag}:{commit}")
}

/// Queues the runs of every new or moved tag of `mirror` (see the module docs); answers the
/// runs queued.
pub(crate) fn scan_tags(
    store: &Store,
    mirror: &Mirror,
    repo: &str,
) -> Result<Vec<RunId>, TriggerError> {
    let seen: Vec<(String, String)> = store
        .blocking_read(|db: &Db| db.seen_branches(repo))?
        .into_iter()
        .filter(|(key, _)| key.starts_with(TAGS_SEEN_MARKER))
        .collect();
    let tags = mirror.tags()?;
    let set_seen = |key: String, commit: String| {
        let repo = repo.to_string();
        store.blocking_write(move |db| db.set_last_seen_commit(&repo, &key, &commit))
    };
    if !seen.iter().any(|(key, _)| key == TAGS_SEEN_MARKER) {
        // The first look at this repository's tags: what it holds is history.
        for (name, commit) in &tags {
            set_seen(format!("{TAGS_SEEN_MARKER}{name}"), commit.to_string())?;
        }
        set_seen(TAGS_SEEN_MARKER.to_string(), String::new())?;
        return Ok(Vec::new());
    }
    let mut queued = Vec::new();
    for (name, commit) in tags {
        let key = format!("{TAGS_SEEN_MARKER}{name}");
        let commit_text = commit.to_string();
        if seen.iter().any(|(k, c)| *k == key && *c == commit_text) {
            continue;
        }
        let (runs, failed) = runs_for_tag(mirror, repo, &name, commit)?;
        let written = {
            let (repo, key, commit) = (repo.to_string(), key.clone(), commit_text.clone());
            let n = runs.len();
            let written = store
                .blocking_write(move |db| db.record_push(&repo, &key, &commit, &runs, &failed))?;
            // `record_push` answers the queued runs first, then the failed ones.
            written.into_iter().take(n).collect::<Vec<_>>()
        };
        let mut count = 0;
        for enqueued in written {
            if let Enqueued::Created(id) = enqueued {
                queued.push(id);
                count += 1;
            }
        }
        tracing::info!(repo, tag = %name, commit = %commit_text, runs = count, "new tag");
    }
    Ok(queued)
}

/// Runs to queue, and failed runs with their error text.
type TagRuns = (Vec<NewRun>, Vec<(NewRun, String)>);

/// The runs a push of tag `name` at `commit` starts: workflows at that commit whose
/// `on.push.tags` match, with parameters from their defaults; a run whose parameters do not
/// resolve is a failed run carrying the errors.
fn runs_for_tag(
    mirror: &Mirror,
    repo: &str,
    name: &str,
    commit: Oid,
) -> Result<TagRuns, TriggerError> {
    let commit_text = commit.to_string();
    let trigger = Trigger {
        kind: TriggerKind::Push,
        commit: Some(commit_text.clone()),
        branch: None,
        scheduled_for: None,
    };
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for file in workflows_at(mirror, commit)? {
        let ParsedFile::Valid { path, workflow } = file else {
            continue;
        };
        if !tag_matches(&workflow, name) {
            continue;
        }
        let (mut run, outcome) = new_run_for(&workflow, repo, trigger.clone(), &Map::new());
        run.dedup_key = Some(tag_dedup_key(repo, &path, name, &commit_text));
        run.workflow_file = Some(path);
        run.event = Some(RunEvent {
            git_ref: Some(format!("refs/tags/{name}")),
            pull_request: None,
        });
        match outcome {
            Ok(()) => runs.push(run),
            Err(errors) => failed.push((run, errors)),
        }
    }
    Ok((runs, failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::test_git::git;
    use crate::store::RunFilter;

    fn workflow(name: &str, on: &str) -> String {
        format!(
            "workflow:\n  name: {name}\n  on:\n{on}  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n"
        )
    }

    /// A tag runs only the workflows whose `on.push.tags` match it, once, at the tagged
    /// commit with the tag's ref; tags present at the first look are history.
    #[test]
    fn new_tags_run_tag_workflows_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join(".workflows")).expect("mkdir");
        git(&repo, &["init", "-q", "-b", "main"]);
        let files = [
            ("release", "    push:\n      tags: ['v*']\n"),
            ("ci", "    push: {}\n"),
            (
                "both",
                "    push:\n      branches: [main]\n      tags: ['v1.*']\n",
            ),
        ];
        for (name, on) in files {
            std::fs::write(
                repo.join(format!(".workflows/{name}.yaml")),
                workflow(name, on),
            )
            .expect("write");
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        git(&repo, &["tag", "v0.1"]);
        let state = tmp.path().join("state");
        let store = Store::open_in_dir(&state).expect("store");
        let mut mirror =
            Mirror::open_or_clone(&state, "app", &repo.to_string_lossy()).expect("mirror");
        assert!(scan_tags(&store, &mirror, "app").expect("scan").is_empty());

        git(&repo, &["tag", "-a", "v1.2.0", "-m", "release"]);
        git(&repo, &["tag", "other"]);
        mirror.fetch().expect("fetch");
        let queued = scan_tags(&store, &mirror, "app").expect("scan");
        assert_eq!(queued.len(), 2, "{queued:?}");
        let runs = store
            .blocking_read(|db: &Db| db.list_runs(&RunFilter::default(), 10))
            .expect("list");
        let mut names: Vec<&str> = runs.iter().map(|r| r.workflow.as_str()).collect();
        names.sort();
        assert_eq!(names, ["both", "release"]);
        let head = git(&repo, &["rev-parse", "HEAD"]);
        for r in &runs {
            assert_eq!(r.trigger.kind, TriggerKind::Push);
            assert_eq!(r.trigger.commit.as_deref(), Some(head.as_str()));
            assert_eq!(r.trigger.branch, None);
            let event = r.event.clone().expect("event");
            assert_eq!(event.git_ref.as_deref(), Some("refs/tags/v1.2.0"));
        }
        // Looking again queues nothing; a restart (new handle) neither.
        assert!(scan_tags(&store, &mirror, "app").expect("scan").is_empty());
        let again = Store::open_in_dir(&state).expect("reopen");
        assert!(scan_tags(&again, &mirror, "app").expect("scan").is_empty());
    }
}
