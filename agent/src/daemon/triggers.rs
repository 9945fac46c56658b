//! Push triggers: which workflows a new commit on a watched branch starts.
//!
//! [`scan_repo`] compares every watched branch of a repository's mirror with the last commit
//! the store has seen on it and, for each branch that moved, reads `.workflows/*.y{a,}ml` at
//! the new head (from the mirror, no checkout), matches each workflow's `on.push` against the
//! branch and the files changed since the last seen commit, and hands the store one
//! [`Store::record_push`] per branch: the runs to queue, the failed runs of invalid files and
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
//! - A workflow with an `on:` section runs on push only if it has `on.push`; a workflow with no
//!   trigger at all (no `on:`, as in the seed's examples) runs on every push.
//! - Globs (`branches`, `paths`) follow GitHub Actions: `*` stops at `/`, `**` crosses it, and a
//!   pattern starting with `!` excludes; the last pattern that matches decides.
//! - An invalid workflow file becomes a failed run named after its file stem, carrying its
//!   diagnostics, on the push that added or changed it; the other workflows run as usual.
//!
//! What this module does not do: fetching (see [`super::git_watch`]), running (the
//! scheduler) or cron (see [`super::cron`], which re-reads the default branch's workflows when
//! [`PushScan::default_branch_moved`] says so).

use std::collections::BTreeSet;

use dsl::Workflow;
use dsl::expr::MapContext;
use git2::Oid;
use globset::{Glob, GlobBuilder, GlobMatcher};
use serde_json::{Map, Value};

use super::mirror::{Mirror, MirrorError};
use crate::store::{Enqueued, NewRun, RunId, Store, StoreError, Trigger, TriggerKind};

/// Errors while scanning a repository for pushes.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// Reading the mirror failed.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one scan of a repository did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushScan {
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

/// A workflow file read at a commit: the valid workflow, or its stem and diagnostics.
#[derive(Debug, Clone)]
pub enum ParsedFile {
    /// A valid workflow.
    Valid {
        /// Its path in the repository.
        path: String,
        /// The workflow.
        workflow: Box<Workflow>,
    },
    /// A file with errors.
    Invalid {
        /// Its path in the repository.
        path: String,
        /// The file stem, which names the failed run.
        stem: String,
        /// The rendered diagnostics.
        diagnostics: String,
    },
}

impl ParsedFile {
    /// The file's path in the repository.
    pub fn path(&self) -> &str {
        match self {
            ParsedFile::Valid { path, .. } | ParsedFile::Invalid { path, .. } => path,
        }
    }
}

/// Reads and parses every workflow file of a commit.
pub fn workflows_at(mirror: &Mirror, commit: Oid) -> Result<Vec<ParsedFile>, MirrorError> {
    let files = mirror.read_workflow_files(commit)?;
    Ok(files
        .into_iter()
        .map(|file| match dsl::parse_str(&file.path, &file.text) {
            Ok((workflow, _warnings)) => ParsedFile::Valid {
                path: file.path,
                workflow: Box::new(workflow),
            },
            Err(diags) => ParsedFile::Invalid {
                stem: file_stem(&file.path),
                diagnostics: diags.render(),
                path: file.path,
            },
        })
        .collect())
}

/// The stem of a repository path: `.workflows/build.yaml` -> `build`.
fn file_stem(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
        .unwrap_or(name)
        .to_string()
}

/// A list of GitHub-style globs: `*` stops at `/`, `**` crosses it, `!pattern` excludes, and
/// the last matching pattern decides. An empty list matches everything.
#[derive(Debug, Clone)]
pub struct GlobList {
    patterns: Vec<(bool, GlobMatcher)>,
}

impl GlobList {
    /// Compiles the patterns; a pattern that does not compile is an error naming it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<GlobList, globset::Error> {
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
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `text` is selected: the last matching pattern decides; with no match, it is
    /// selected only if every pattern is an exclusion (or there are none).
    pub fn matches(&self, text: &str) -> bool {
        let mut selected = self.patterns.iter().all(|(include, _)| !include);
        for (include, matcher) in &self.patterns {
            if matcher.is_match(text) {
                selected = *include;
            }
        }
        selected
    }

    /// Whether any of `texts` is selected.
    pub fn matches_any<S: AsRef<str>>(&self, texts: &[S]) -> bool {
        texts.iter().any(|t| self.matches(t.as_ref()))
    }
}

/// Whether a workflow runs on a push of `branch` changing `changed`. A glob that does not
/// compile (validation should have caught it) matches nothing.
pub fn push_matches(workflow: &Workflow, branch: &str, changed: &[String]) -> bool {
    let on = &workflow.on;
    let push = match &on.push {
        Some(push) => push,
        // No trigger of any kind: the workflow runs on every push.
        None if on.schedule.is_empty() && on.manual.is_none() => return true,
        None => return false,
    };
    let branches: Vec<&str> = push.branches.iter().map(|b| b.value.as_str()).collect();
    let paths: Vec<&str> = push.paths.iter().map(|p| p.value.as_str()).collect();
    let (Ok(branches), Ok(paths)) = (GlobList::new(&branches), GlobList::new(&paths)) else {
        return false;
    };
    branches.matches(branch) && (paths.is_empty() || paths.matches_any(changed))
}

/// The run of `workflow` for `trigger`: parameters resolved (types, defaults, `required`)
/// from `given`, priority and concurrency group from the file. `Err` carries the parameter
/// errors as text, for a failed run.
pub fn new_run_for(
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
pub fn push_dedup_key(repo: &str, file: &str, commit: &str) -> String {
    format!("push:{repo}:{file}:{commit}")
}

/// How a scan treats a repository of which the store has seen no branch yet.
#[derive(Debug, Clone, Copy)]
pub enum Baseline<'a> {
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
/// what counts as existing history for a repository the store has never seen. See the module
/// docs for the rules.
pub fn scan_repo(
    store: &mut Store,
    mirror: &Mirror,
    repo: &str,
    watched: Option<&GlobList>,
    baseline: Baseline<'_>,
) -> Result<PushScan, TriggerError> {
    let default_branch = mirror.default_branch();
    let selected = |branch: &str| match watched {
        Some(globs) => globs.matches(branch),
        None => default_branch.as_deref() == Some(branch),
    };
    let mut seen: Vec<(String, String)> = store.seen_branches(repo)?;
    let mut scan = PushScan::default();
    if seen.is_empty() {
        let heads = match baseline {
            Baseline::Nothing => Vec::new(),
            Baseline::CurrentHeads => mirror.branches()?,
            Baseline::Heads(heads) => heads.to_vec(),
        };
        for (branch, head) in heads.iter().filter(|(b, _)| selected(b)) {
            store.set_last_seen_commit(repo, branch, &head.to_string())?;
            scan.baseline = true;
        }
        if scan.baseline {
            // The default branch's workflows are known now (for cron and the API).
            scan.default_branch_moved = true;
            seen = store.seen_branches(repo)?;
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
            store.set_last_seen_commit(repo, &branch, &head_text)?;
            scan.default_branch_moved |= is_default;
            scan.moved.push((branch, head_text));
            continue;
        }
        // A force-push to an unrelated history leaves no known old commit: everything counts.
        let changed = mirror.changed_paths(old, head)?;
        let (runs, failed) = runs_for_push(mirror, repo, &branch, head, &changed)?;
        let written = store.record_push(repo, &branch, &head_text, &runs, &failed)?;
        // `record_push` answers the queued runs first, then the failed ones.
        for (i, enqueued) in written.into_iter().enumerate() {
            if let Enqueued::Created(id) = enqueued {
                if i < runs.len() {
                    scan.queued.push(id);
                } else {
                    scan.failed.push(id);
                }
            }
        }
        tracing::info!(repo, branch = %branch, commit = %head_text,
            runs = runs.len(), failed = failed.len(), "new commit");
        scan.default_branch_moved |= is_default;
        scan.moved.push((branch, head_text));
    }
    Ok(scan)
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

/// The runs (and failed runs) a push of `head` to `branch` changing `changed` starts.
fn runs_for_push(
    mirror: &Mirror,
    repo: &str,
    branch: &str,
    head: Oid,
    changed: &[String],
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
                if !push_matches(&workflow, branch, changed) {
                    continue;
                }
                let (mut run, outcome) = new_run_for(&workflow, repo, trigger.clone(), &Map::new());
                run.dedup_key = Some(push_dedup_key(repo, &path, &commit));
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
                if !changed_set.contains(path.as_str()) {
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
    fn triggerless_workflows_run_on_push_and_schedule_only_ones_do_not() {
        let none = parse(
            "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n",
        );
        assert!(push_matches(&none, "any", &[]));
        let manual = parse(
            "workflow:\n  name: w\n  on:\n    manual: true\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n",
        );
        assert!(!push_matches(&manual, "any", &[]));
    }

    #[test]
    fn stems_name_invalid_files() {
        assert_eq!(file_stem(".workflows/build.yaml"), "build");
        assert_eq!(file_stem(".workflows/x.y.yml"), "x.y");
    }
}

/// Scans against real repositories (made with the git CLI), mirrors and stores.
#[cfg(test)]
mod scan_tests {
    use super::*;
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
            scan_repo(&mut self.store, &self.mirror, "app", watched, baseline).expect("scan")
        }

        fn runs(&self) -> Vec<RunRecord> {
            let mut runs = self
                .store
                .list_runs(&RunFilter::default(), 100)
                .expect("list");
            runs.reverse();
            runs
        }
    }

    fn workflow(name: &str, on: &str) -> String {
        format!(
            "workflow:\n  name: {name}\n{on}  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n"
        )
    }

    #[test]
    fn existing_history_runs_nothing_and_a_new_commit_runs_once() {
        let old = workflow("old", "");
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
        let mut again = Store::open_in_dir(&f.state).expect("reopen");
        let scan =
            scan_repo(&mut again, &f.mirror, "app", None, Baseline::CurrentHeads).expect("scan");
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
        let mut store = Store::open_in_dir(&state).expect("store");
        let mut mirror =
            Mirror::open_or_clone(&state, "app", &repo.to_string_lossy()).expect("mirror");
        let scan =
            scan_repo(&mut store, &mirror, "app", None, Baseline::CurrentHeads).expect("scan");
        assert!(scan.moved.is_empty());
        commit(&repo, &[(".workflows/w.yaml", &workflow("w", ""))], "first");
        mirror.fetch().expect("fetch");
        let scan = scan_repo(&mut store, &mirror, "app", None, Baseline::Nothing).expect("scan");
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
            &[(".workflows/w.yaml", &workflow("w", ""))],
            "raced",
        );
        f.mirror.fetch().expect("fetch");
        let scan =
            scan_repo(&mut f.store, &f.mirror, "app", None, Baseline::Heads(&boot)).expect("scan");
        assert!(scan.baseline);
        assert_eq!(scan.queued.len(), 1, "{scan:?}");
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
        let mut f = Fixture::new(&[(".workflows/w.yaml", &workflow("w", ""))]);
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
        let mut f = Fixture::new(&[(".workflows/w.yaml", &workflow("w", ""))]);
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
        let good = workflow("good", "");
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

    #[test]
    fn missing_required_parameters_make_a_failed_run() {
        let wf = "workflow:\n  name: p\n  parameters:\n    - name: version\n      required: true\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: echo ${{ parameters.version }}\n";
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
