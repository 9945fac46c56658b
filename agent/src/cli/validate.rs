//! `agent validate PATH... [--config FILE]`: check workflow files and print every problem.
//!
//! A file argument is checked as it is. A directory means its `.workflows/*.yaml|yml`, or,
//! when it has no `.workflows/`, every `*.yaml|yml` file directly in it whose text has a
//! top-level `workflow:` key. Diagnostics go to stderr, the summary to stdout. Exit codes:
//! 0 all valid, 1 some file invalid, 2 usage error (a path that does not exist, an empty
//! selection). `--config FILE` also checks a daemon config file (alone, when no path is
//! given), with the same diagnostics.

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Runs the command; returns the exit code.
pub(crate) fn run(paths: &[PathBuf], config: Option<&Path>) -> i32 {
    if let Some(cfg) = config
        && let Err(e) = std::fs::metadata(cfg)
    {
        eprintln!(
            "error: cannot access `{}`: {}",
            cfg.display(),
            lower(&e.to_string())
        );
        return EXIT_INVALID;
    }
    let config_valid = config.map(check_config);
    if paths.is_empty() {
        return match config_valid {
            Some(true) => EXIT_OK,
            Some(false) => EXIT_FAILED,
            None => EXIT_INVALID,
        };
    }
    let mut files = Vec::new();
    for p in paths {
        match select(p) {
            Ok(found) => files.extend(found),
            Err(msg) => {
                eprintln!("error: {msg}");
                return EXIT_INVALID;
            }
        }
    }
    let mut seen = HashSet::new();
    files.retain(|f| seen.insert(f.clone()));

    let mut invalid = 0usize;
    let (mut errors, mut warnings) = (0usize, 0usize);
    // A sub-workflow's problems are found both through its callers and on its own; print
    // each problem once.
    let mut printed: HashSet<(PathBuf, usize, usize, String)> = HashSet::new();
    let mut out = String::new();
    // Workflows are named by `name:`: two files of one directory with the same name would
    // leave one unreachable.
    let mut names: HashMap<(PathBuf, String), PathBuf> = HashMap::new();
    let mut hints = String::new();
    for f in &files {
        let diags = match dsl::load_workflow(f) {
            Ok(loaded) => {
                let mut diags = loaded.warnings;
                let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
                let name = loaded.workflow.name.value.clone();
                match names.get(&(dir.clone(), name.clone())) {
                    Some(first) => {
                        invalid += 1;
                        diags.0.push(
                            dsl::Diagnostic::error(
                                loaded.workflow.name.span,
                                format!(
                                    "duplicate workflow name `{name}`: `{}` has it too, and a workflow is triggered and listed by its name",
                                    first.display()
                                ),
                            )
                            .with_hint("give each workflow file its own `name:`")
                            .in_file(&loaded.source),
                        );
                    }
                    None => {
                        names.insert((dir, name), f.clone());
                    }
                }
                diags
            }
            Err(d) => {
                invalid += 1;
                if let Some(hint) = foreign_file_hint(f) {
                    hints.push_str(&hint);
                }
                d
            }
        };
        for d in diags.iter() {
            let file = d.file.as_ref().map(|s| s.path.clone()).unwrap_or_default();
            let key = (
                file,
                d.span.start.line,
                d.span.start.column,
                d.message.clone(),
            );
            if printed.insert(key) {
                if d.is_error() {
                    errors += 1;
                } else {
                    warnings += 1;
                }
                out.push_str(&d.render());
            }
        }
    }
    eprint!("{out}{hints}");
    let n = files.len();
    let noun = if n == 1 { "file" } else { "files" };
    let mut summary = format!("checked {n} workflow {noun}");
    if invalid == 0 {
        summary.push_str(": all valid");
    } else {
        summary.push_str(&format!(": {invalid} invalid"));
    }
    if errors + warnings > 0 {
        summary.push_str(&format!(
            " ({} {}, {} {})",
            errors,
            if errors == 1 { "error" } else { "errors" },
            warnings,
            if warnings == 1 { "warning" } else { "warnings" }
        ));
    }
    println!("{summary}");
    if invalid > 0 || config_valid == Some(false) {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// Checks a daemon config file: diagnostics on stderr, a summary line on stdout; true when
/// valid.
fn check_config(path: &Path) -> bool {
    match crate::daemon::Config::load(path) {
        Ok(config) => {
            if !config.repos_given {
                eprintln!(
                    "note: `{}` has no `repos`: the daemon watches the git repository it is started in (and nothing outside one)",
                    path.display()
                );
            } else if config.repos.is_empty() {
                eprintln!(
                    "warning: `{}`: no repository configured: nothing will run",
                    path.display()
                );
            }
            println!("checked config `{}`: valid", path.display());
            true
        }
        Err(diags) => {
            eprint!("{}", diags.render());
            println!(
                "checked config `{}`: invalid ({} {})",
                path.display(),
                diags.error_count(),
                if diags.error_count() == 1 {
                    "error"
                } else {
                    "errors"
                }
            );
            false
        }
    }
}

/// A hint for a file that is not an Agent workflow but looks like something else users pass
/// to `agent validate`: a daemon config, or a GitHub Actions workflow.
fn foreign_file_hint(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let top: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with([' ', '\t', '#', '-']))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()))
        .collect();
    if top.contains(&"workflow") {
        return None;
    }
    let shown = path.display();
    if top.contains(&"jobs") || text.contains("runs-on:") {
        return Some(format!(
            "hint: `{shown}` looks like a GitHub Actions workflow (`jobs:`, `runs-on:`); an Agent workflow has a top-level `workflow:` with `stages:` of `steps:` (see docs/language.md)\n"
        ));
    }
    const CONFIG_KEYS: &[&str] = &["repos", "listen", "state_dir", "webhooks", "api_token"];
    if top.iter().any(|k| CONFIG_KEYS.contains(k)) {
        return Some(format!(
            "hint: `{shown}` looks like a daemon config: check it with `agent validate --config {shown}`\n"
        ));
    }
    None
}

/// The workflow files a command-line path stands for.
fn select(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "cannot access `{}`: {}",
            path.display(),
            lower(&e.to_string())
        )
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let dotdir = path.join(".workflows");
    if dotdir.is_dir() {
        let files = yaml_files(&dotdir)?;
        if files.is_empty() {
            return Err(format!("no workflow files in `{}`", dotdir.display()));
        }
        return Ok(files);
    }
    let files: Vec<PathBuf> = yaml_files(path)?
        .into_iter()
        .filter(|f| has_workflow_key(f))
        .collect();
    if files.is_empty() {
        return Err(format!(
            "no workflow files in `{}` (no `.workflows/` directory and no YAML file with a top-level `workflow:` key)",
            path.display()
        ));
    }
    Ok(files)
}

/// `*.yaml` and `*.yml` files directly in a directory, sorted.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read `{}`: {}", dir.display(), lower(&e.to_string())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Whether a file's first MiB has a line starting with `workflow:`.
fn has_workflow_key(path: &Path) -> bool {
    let mut buf = Vec::new();
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    if f.take(dsl::yaml::MAX_FILE_BYTES)
        .read_to_end(&mut buf)
        .is_err()
    {
        return false;
    }
    String::from_utf8_lossy(&buf).lines().any(|l| {
        l.strip_prefix("workflow")
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })
}

fn lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}
