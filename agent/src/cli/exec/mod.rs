//! `agent exec FILE [-p NAME=VALUE]... [--workdir DIR] [--state-dir DIR] [--secret NAME]...
//! [--secrets-file FILE] [--env-passthrough NAME]... [--json] [--no-cache] [--explain-cache]`: run one workflow locally with the same engine the daemon
//! uses.
//!
//! Progress goes to stderr (a live view on a terminal, plain lines otherwise); `--json`
//! prints the run report on stdout. Exit codes: 0 succeeded, 1 failed or
//! cancelled, 2 invalid file, parameters, secrets or directories (nothing ran). The only
//! files written are the preserved context (`context: {preserve: true}`) and the step
//! cache's entries (`--no-cache`: none; `--explain-cache` says why each cached step hit or
//! missed) under the state directory (default `.agent/` in the workdir): no per-step
//! files, no database.
//!
//! Ctrl-C (or SIGTERM) cancels the run gracefully (SIGTERM to each step's process group,
//! then SIGKILL after the grace period); a second one kills at once.

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::engine::{self, Cancel, Engine, EngineConfig, EventSender, RunRequest, RunStatus};

pub(crate) mod context;
pub(crate) mod progress;
pub(crate) mod secrets;

/// Arguments of `agent exec`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ExecArgs {
    /// The workflow file.
    pub(crate) file: PathBuf,
    /// A parameter, `NAME=VALUE` (repeatable); converted to the declared type.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,
    /// Working directory of every step (default: the current directory).
    #[arg(long)]
    pub(crate) workdir: Option<PathBuf>,
    /// Where a preserved context is kept (default: `.agent/` in the workdir).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// A secret taken from the environment variable of this name (repeatable).
    #[arg(long = "secret", value_name = "NAME")]
    pub(crate) secrets: Vec<String>,
    /// A file of `NAME=VALUE` secret lines.
    #[arg(long, value_name = "FILE")]
    pub(crate) secrets_file: Option<PathBuf>,
    /// A variable of this environment that steps see (repeatable); besides these, steps get
    /// only `PATH`, `HOME`, `USER`, `LOGNAME`, `SHELL`, `LANG`, `LANGUAGE`, `LC_*`, `TZ`,
    /// `TMPDIR` and `TERM`, as under the daemon.
    #[arg(long = "env-passthrough", value_name = "NAME")]
    pub(crate) env_passthrough: Vec<String>,
    /// Print the run report as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Seconds between SIGTERM and SIGKILL when a step times out or is cancelled.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub(crate) kill_grace: f64,
    /// Run every step: read and write no step cache entry.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Print, for each cached step, whether its entry was found and, on a miss, what
    /// changed against the step's last entry.
    #[arg(long)]
    pub(crate) explain_cache: bool,
}

fn invalid(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_INVALID
}

/// `repo.*` from the git repository around `dir`, or null when it is not in one.
fn repo_info(dir: &Path) -> Value {
    let git = |args: &[&str]| -> Option<String> {
        let out = StdCommand::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    };
    let Some(log) = git(&["log", "-1", "--format=%H%n%an <%ae>%n%s"]) else {
        return Value::Null;
    };
    let mut lines = log.lines();
    let commit = lines.next().unwrap_or_default().to_string();
    let author = lines.next().unwrap_or_default().to_string();
    let message = lines.next().unwrap_or_default().to_string();
    let branch = git(&["symbolic-ref", "--short", "-q", "HEAD"]).unwrap_or_default();
    let url = git(&["config", "--get", "remote.origin.url"])
        .or_else(|| git(&["rev-parse", "--show-toplevel"]))
        .unwrap_or_default();
    let top = git(&["rev-parse", "--show-toplevel"]).unwrap_or_default();
    json!({
        "name": repo_name(&top),
        "full_name": full_name_of(&url),
        "url": url,
        "branch": branch,
        "commit": commit,
        "message": message,
        "author": author,
    })
}

/// What the standard step variables need of the workdir's repository (`name`,
/// `full_name`, `commit`, `branch`); `null` outside a repository.
///
/// Read from the files of `.git` directly rather than through libgit2: opening a
/// repository with libgit2 initialises OpenSSL, which loads the whole system CA bundle
/// (tens of milliseconds, more than the rest of a one-step run).
fn repo_env_info(dir: &Path) -> Value {
    let Some(git) = local_git::find(dir) else {
        return Value::Null;
    };
    let head = git.head();
    let url = git.origin_url().unwrap_or_default();
    json!({
        "name": repo_name(&git.top.to_string_lossy()),
        "full_name": full_name_of(&url),
        "commit": head.commit.unwrap_or_default(),
        "branch": head.branch.unwrap_or_default(),
    })
}

/// The few facts `agent exec` reads from a repository's `.git`: its top level, `HEAD` (the
/// branch and the commit it points at) and `origin`'s URL. Plain file reads: loose refs,
/// `packed-refs`, `config`; a `.git` file (`gitdir: …`, as in worktrees and submodules)
/// and a `commondir` are followed.
mod local_git {
    use std::path::{Path, PathBuf};

    pub(super) struct Git {
        /// The working tree's top level.
        pub(super) top: PathBuf,
        /// The directory holding `HEAD`.
        git_dir: PathBuf,
        /// The directory holding refs and config (differs from `git_dir` in a worktree).
        common_dir: PathBuf,
    }

    /// Where `HEAD` points.
    pub(super) struct Head {
        pub(super) branch: Option<String>,
        pub(super) commit: Option<String>,
    }

    /// The repository `dir` is in, looking upwards.
    pub(super) fn find(dir: &Path) -> Option<Git> {
        let start = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        for top in start.ancestors() {
            let dot_git = top.join(".git");
            let git_dir = if dot_git.is_dir() {
                dot_git
            } else if let Ok(text) = std::fs::read_to_string(&dot_git) {
                let target = text.strip_prefix("gitdir:")?.trim();
                let target = Path::new(target);
                if target.is_absolute() {
                    target.to_path_buf()
                } else {
                    top.join(target)
                }
            } else {
                continue;
            };
            if !git_dir.join("HEAD").is_file() {
                return None;
            }
            let common_dir = match std::fs::read_to_string(git_dir.join("commondir")) {
                Ok(c) => git_dir.join(c.trim()),
                Err(_) => git_dir.clone(),
            };
            return Some(Git {
                top: top.to_path_buf(),
                git_dir,
                common_dir,
            });
        }
        None
    }

    impl Git {
        /// The branch `HEAD` names (if any) and the commit it resolves to.
        pub(super) fn head(&self) -> Head {
            let text = std::fs::read_to_string(self.git_dir.join("HEAD")).unwrap_or_default();
            let text = text.trim();
            match text.strip_prefix("ref:") {
                Some(name) => {
                    let name = name.trim();
                    Head {
                        branch: name.strip_prefix("refs/heads/").map(str::to_string),
                        commit: self.resolve(name),
                    }
                }
                None if is_oid(text) => Head {
                    branch: None,
                    commit: Some(text.to_string()),
                },
                None => Head {
                    branch: None,
                    commit: None,
                },
            }
        }

        /// A ref's commit: its loose file, else its line in `packed-refs` (symbolic refs
        /// followed a few levels).
        fn resolve(&self, name: &str) -> Option<String> {
            let mut name = name.to_string();
            for _ in 0..5 {
                let loose = [&self.git_dir, &self.common_dir]
                    .iter()
                    .find_map(|d| std::fs::read_to_string(d.join(&name)).ok());
                match loose {
                    Some(text) => {
                        let text = text.trim();
                        match text.strip_prefix("ref:") {
                            Some(next) => name = next.trim().to_string(),
                            None => return is_oid(text).then(|| text.to_string()),
                        }
                    }
                    None => {
                        let packed =
                            std::fs::read_to_string(self.common_dir.join("packed-refs")).ok()?;
                        return packed.lines().find_map(|line| {
                            let (oid, r) = line.split_once(' ')?;
                            (r.trim() == name && is_oid(oid)).then(|| oid.to_string())
                        });
                    }
                }
            }
            None
        }

        /// `remote.origin.url` from the repository's `config`.
        pub(super) fn origin_url(&self) -> Option<String> {
            let text = std::fs::read_to_string(self.common_dir.join("config")).ok()?;
            let mut in_origin = false;
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with('[') {
                    let section: String = line.chars().filter(|c| !c.is_whitespace()).collect();
                    in_origin = section == "[remote\"origin\"]";
                } else if in_origin
                    && let Some((key, value)) = line.split_once('=')
                    && key.trim().eq_ignore_ascii_case("url")
                {
                    return Some(value.trim().trim_matches('"').to_string());
                }
            }
            None
        }
    }

    /// A full hexadecimal object id (SHA-1 or SHA-256).
    fn is_oid(text: &str) -> bool {
        matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The facts read from the files match what libgit2 reads from the same repository:
        /// a branch with a loose ref, then the same ref packed, then a detached `HEAD`.
        #[test]
        fn head_branch_commit_and_origin_match_libgit2() {
            let dir = tempfile::tempdir().expect("tempdir");
            let repo = git2::Repository::init(dir.path()).expect("init");
            std::fs::write(dir.path().join("f"), "x").expect("write");
            let mut index = repo.index().expect("index");
            index.add_path(Path::new("f")).expect("add");
            let tree = repo
                .find_tree(index.write_tree().expect("tree"))
                .expect("tree");
            let sig = git2::Signature::now("t", "t@t").expect("sig");
            let oid = repo
                .commit(Some("HEAD"), &sig, &sig, "first", &tree, &[])
                .expect("commit");
            repo.remote("origin", "https://example.invalid/me/app.git")
                .expect("remote");
            let sub = dir.path().join("sub");
            std::fs::create_dir(&sub).expect("mkdir");
            let branch = repo
                .head()
                .expect("head")
                .shorthand()
                .expect("name")
                .to_string();

            let git = find(&sub).expect("found from a subdirectory");
            assert_eq!(
                git.top.canonicalize().expect("top"),
                dir.path().canonicalize().expect("dir")
            );
            let head = git.head();
            assert_eq!(head.branch.as_deref(), Some(branch.as_str()));
            assert_eq!(head.commit, Some(oid.to_string()));
            assert_eq!(
                git.origin_url().as_deref(),
                Some("https://example.invalid/me/app.git")
            );

            // The same ref packed.
            let loose = dir.path().join(".git/refs/heads").join(&branch);
            std::fs::remove_file(&loose).expect("unpack");
            std::fs::write(
                dir.path().join(".git/packed-refs"),
                format!("# pack-refs with: peeled\n{oid} refs/heads/{branch}\n"),
            )
            .expect("packed-refs");
            assert_eq!(git.head().commit, Some(oid.to_string()));

            // Detached.
            repo.set_head_detached(oid).expect("detach");
            let head = git.head();
            assert_eq!(head.branch, None);
            assert_eq!(head.commit, Some(oid.to_string()));

            let outside = tempfile::tempdir().expect("tempdir");
            assert!(find(outside.path()).is_none() || outside.path().starts_with(dir.path()));
        }
    }
}

/// The last component of a repository's top-level directory.
fn repo_name(top: &str) -> String {
    Path::new(top.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `owner/name` from a remote URL (`https://host/owner/name.git`, `git@host:owner/name`);
/// empty for a local path or a URL with fewer than two path components.
fn full_name_of(url: &str) -> String {
    let url = url.trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let path = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/').map_or("", |(_, p)| p)
    } else if let Some((host, rest)) = url.split_once(':')
        && !host.contains('/')
    {
        rest
    } else {
        ""
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [.., owner, name] => format!("{owner}/{name}"),
        _ => String::new(),
    }
}

/// What to say when `agent exec` is given a directory: which files to give instead.
fn directory_message(dir: &Path) -> String {
    let workflows = dir.join(".workflows");
    let mut files: Vec<String> = std::fs::read_dir(&workflows)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    match files.as_slice() {
        [] => format!(
            "`{}` is a directory: give a workflow file, such as `{}`",
            dir.display(),
            workflows.join("NAME.yaml").display()
        ),
        some => format!(
            "`{}` is a directory: give one of its workflow files: {}",
            dir.display(),
            some.iter()
                .take(10)
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: ExecArgs) -> i32 {
    if args.file.is_dir() {
        return invalid(directory_message(&args.file));
    }
    let loaded = match dsl::load_workflow(&args.file) {
        Ok(l) => l,
        Err(diags) => {
            eprint!("{}", diags.render());
            return EXIT_INVALID;
        }
    };
    if !loaded.warnings.0.is_empty() {
        eprint!("{}", loaded.warnings.render());
    }
    let wf = &loaded.workflow;
    let parameters = match dsl::params::resolve_text(wf, &args.params) {
        Ok(p) => p,
        Err(errs) => {
            for e in errs {
                eprintln!("error: {e}");
            }
            return EXIT_INVALID;
        }
    };
    let secrets = match secrets::load(&args.secrets, args.secrets_file.as_deref()) {
        Ok(s) => s,
        Err(e) => return invalid(e),
    };
    let workdir = match args.workdir.clone() {
        Some(d) => d,
        None => match std::env::current_dir() {
            Ok(d) => d,
            Err(e) => return invalid(format!("current directory: {e}")),
        },
    };
    let workdir = match std::fs::canonicalize(&workdir) {
        Ok(d) if d.is_dir() => d,
        Ok(d) => return invalid(format!("workdir `{}` is not a directory", d.display())),
        Err(e) => return invalid(format!("workdir `{}`: {e}", workdir.display())),
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| workdir.join(".agent"));
    let preserve = wf.context.preserve;
    let initial_context = if preserve {
        match context::load(&state_dir, &wf.name.value) {
            Ok(c) => c,
            Err(e) => return invalid(e),
        }
    } else {
        Default::default()
    };
    if !(0.0..=86_400.0).contains(&args.kill_grace) {
        return invalid("`--kill-grace` must be between 0 and 86400 seconds");
    }
    // `repo.*` costs a few git processes: only when the file mentions it.
    let mentions_repo = loaded
        .source
        .text
        .as_deref()
        .is_none_or(|t| t.contains("repo"));
    let repo = if mentions_repo {
        repo_info(&workdir)
    } else {
        repo_env_info(&workdir)
    };

    // Orphans a step leaves behind are re-parented to this process instead of init, so the
    // sweep at the run's end walks only our own descendants, not every process.
    if let Err(err) = runners::become_subreaper() {
        tracing::warn!(error = %err, "cannot become a child subreaper; processes a step left behind with setsid may outlive the run");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return invalid(format!("cannot start the runtime: {e}")),
    };
    if let Some(bad) = args
        .env_passthrough
        .iter()
        .find(|n| n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return invalid(format!(
            "`--env-passthrough`: `{bad}` is not an environment variable name"
        ));
    }
    // Skills beside the workflow file (`X/.workflows/skills/` for `X/.workflows/f.yaml`)
    // are found also when the workdir is elsewhere, after the workdir's own.
    let beside = args
        .file
        .parent()
        .map(|d| d.join("skills"))
        .and_then(|d| std::fs::canonicalize(d).ok())
        .filter(|d| d.is_dir() && *d != workdir.join(".workflows").join("skills"));
    let cache: Option<Arc<dyn engine::step_cache::CacheBackend>> = if args.no_cache {
        None
    } else {
        Some(Arc::new(crate::cache::DiskCache::new(
            &state_dir,
            crate::cache::DEFAULT_CACHE_MAX_BYTES,
        )))
    };
    let config = EngineConfig {
        grace: Duration::from_secs_f64(args.kill_grace),
        skills_dirs: beside.into_iter().collect(),
        env_passthrough: args.env_passthrough.clone(),
        cache,
        explain_cache: args.explain_cache,
        ..EngineConfig::default()
    };
    let workflow_name = wf.name.value.clone();
    let json_out = args.json;
    // Artifacts are kept under the state directory (made here, it ignores itself in git).
    let artifacts_dir = crate::state_dir::artifacts_dir(&state_dir);
    if std::iter::once(&loaded.workflow)
        .chain(loaded.subworkflows.values())
        .any(|w| w.steps().any(|s| !s.artifacts.is_empty()))
        && let Err(e) = crate::daemon::state_lock::create_state_dir(&state_dir)
    {
        eprintln!("warning: state directory `{}`: {e}", state_dir.display());
    }
    let loaded = Arc::new(loaded);
    let result = runtime.block_on(async move {
        let engine = Engine::new(config);
        let cancel = Cancel::new();
        let (events, rx) = EventSender::channel();
        let sink = tokio::spawn(progress::run_stderr_sink(rx));
        let signals = tokio::spawn(forward_signals(cancel.clone()));
        let artifacts = Some(engine::archive::ArtifactStore {
            dir: artifacts_dir,
            lookup: None,
        });
        let request = RunRequest {
            workflow: loaded,
            parameters,
            run_id: engine::new_run_id(),
            env: Vec::new(),
            workdir,
            secrets,
            repo,
            trigger: "manual".into(),
            event: [("event".to_string(), serde_json::json!("manual"))]
                .into_iter()
                .collect(),
            attempt: 1,
            context: initial_context,
            events,
            cancel,
            resume: Vec::new(),
            artifacts,
        };
        let result = engine.run(request).await;
        signals.abort();
        let _ = sink.await;
        result
    });
    if preserve {
        // A state directory made here ignores itself in git (it sits in the user's checkout).
        if let Err(e) = crate::daemon::state_lock::create_state_dir(&state_dir) {
            eprintln!("warning: state directory `{}`: {e}", state_dir.display());
        }
        if let Err(e) = context::save(&state_dir, &workflow_name, &result.context) {
            eprintln!("warning: {e}");
        }
    }
    if args.explain_cache {
        explain_cache(&result.report);
    }
    if json_out {
        match serde_json::to_string_pretty(&result.report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot print the report: {e}"),
        }
    }
    match result.report.status {
        RunStatus::Succeeded => EXIT_OK,
        _ => EXIT_FAILED,
    }
}

/// `--explain-cache`: one line per cached step on stderr.
fn explain_cache(report: &engine::RunReport) {
    let steps = report.stages.iter().flat_map(|s| s.steps.iter());
    for step in steps {
        if let Some(note) = step.cache.as_ref().and_then(|c| c.note.as_ref()) {
            eprintln!("cache: {}: {note}", step.id);
        }
    }
}

/// First Ctrl-C/SIGTERM: graceful cancel; second: kill at once.
async fn forward_signals(cancel: Cancel) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut n = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        n += 1;
        if n == 1 {
            eprintln!("\ncancelling (press Ctrl-C again to kill at once)");
        }
        cancel.request();
    }
}
