//! `agent import-gha [FILE|DIR]... [-o DIR] [--check] [--force] [--json] [--job ID]...
//! [--matrix AXIS=V1,V2]...`: convert GitHub Actions workflow files into ours (the
//! conversion itself is `crate::gha`).
//!
//! Without paths, `.github/workflows/` of the current directory is read; a directory means
//! its `*.yml` / `*.yaml` files. Each source `NAME.yml` becomes `DIR/NAME.yaml` (default
//! `.workflows/`), with a header comment naming its source and listing the notes. Nothing
//! is overwritten without `--force`: existing files are named and nothing is written. A
//! compatibility report (jobs and steps converted, with notes, and those not) is printed
//! per file on stdout, or one JSON document with `--json`.
//!
//! Exit codes: 0 written (with `--check`: everything converts); 1 some part could not be
//! converted (`--check`), a source is not a workflow, or a file could not be written; 2
//! usage errors (no such path, no workflow files, existing files without `--force`, a
//! `--job` or `--matrix` naming nothing of the sources).

use std::path::{Path, PathBuf};

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::gha::{self, Conversion};

/// Arguments of `agent import-gha`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ImportGhaArgs {
    /// Workflow files or directories of them (default: `.github/workflows/`).
    pub(crate) paths: Vec<PathBuf>,
    /// Where the converted files go.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "DIR",
        default_value = ".workflows"
    )]
    pub(crate) output: PathBuf,
    /// Write nothing; exit 1 when something could not be converted.
    #[arg(long)]
    pub(crate) check: bool,
    /// Replace files that already exist.
    #[arg(long)]
    pub(crate) force: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Convert only this job and the jobs it needs (repeatable); the others are left out
    /// with a note.
    #[arg(long = "job", value_name = "ID")]
    pub(crate) jobs: Vec<String>,
    /// Keep only these values of a matrix axis, as written in the source (repeatable), e.g.
    /// `--matrix python-version=3.11,3.12`: for the versions this host has installed.
    #[arg(long = "matrix", value_name = "AXIS=V1,V2")]
    pub(crate) matrix: Vec<String>,
}

/// `--job` and `--matrix` as a [`gha::Selection`], or the usage error.
fn selection(args: &ImportGhaArgs) -> Result<gha::Selection, String> {
    let mut sel = gha::Selection {
        jobs: args.jobs.clone(),
        matrix: Vec::new(),
    };
    for m in &args.matrix {
        let (axis, values) = m
            .split_once('=')
            .filter(|(a, _)| !a.trim().is_empty())
            .ok_or_else(|| format!("--matrix `{m}`: write AXIS=VALUE[,VALUE...]"))?;
        let values: Vec<String> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
        if values.is_empty() {
            return Err(format!("--matrix `{m}`: no value to keep"));
        }
        let axis = axis.trim().to_string();
        match sel.matrix.iter_mut().find(|(a, _)| *a == axis) {
            Some((_, have)) => have.extend(values),
            None => sel.matrix.push((axis, values)),
        }
    }
    Ok(sel)
}

/// The parts of the selection no source has (each a usage error).
fn unmatched(sel: &gha::Selection, matched: &std::collections::HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for j in &sel.jobs {
        if !matched.contains(&format!("job {j}")) {
            out.push(format!("--job {j}: no such job"));
        }
    }
    for (axis, values) in &sel.matrix {
        if !matched.contains(&format!("matrix {axis}")) {
            out.push(format!(
                "--matrix {axis}: no job has a matrix axis `{axis}`"
            ));
            continue;
        }
        for v in values {
            if !matched.contains(&format!("matrix {axis}={v}")) {
                out.push(format!(
                    "--matrix {axis}={v}: the axis has no value `{v}` (values are compared as written)"
                ));
            }
        }
    }
    out
}

/// Runs the command and returns its exit code.
pub(crate) fn run(args: ImportGhaArgs) -> i32 {
    let sel = match selection(&args) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("error: {msg}");
            return EXIT_INVALID;
        }
    };
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".github/workflows")]
    } else {
        args.paths.clone()
    };
    let mut files = Vec::new();
    for p in &paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = match std::fs::read_dir(p) {
                Ok(rd) => rd
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|f| {
                        f.is_file()
                            && matches!(
                                f.extension().and_then(|e| e.to_str()),
                                Some("yml" | "yaml")
                            )
                    })
                    .collect(),
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", p.display());
                    return EXIT_INVALID;
                }
            };
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            eprintln!("error: {}: no such file or directory", p.display());
            return EXIT_INVALID;
        }
    }
    if files.is_empty() {
        eprintln!("error: no workflow files (*.yml, *.yaml) found");
        return EXIT_INVALID;
    }
    let mut results: Vec<(PathBuf, PathBuf, Conversion)> = Vec::new();
    let mut failed = false;
    for f in &files {
        let label = f.display().to_string();
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "workflow".into());
        let stem = sanitize_stem(&stem);
        let conv = match read_source(f) {
            Ok(text) => gha::convert_selected(&label, &text, &stem, &sel),
            Err(msg) => {
                eprintln!("error: {label}: {msg}");
                failed = true;
                continue;
            }
        };
        let out = args.output.join(format!("{stem}.yaml"));
        if results.iter().any(|(_, o, _)| *o == out) {
            eprintln!(
                "error: {label}: converts to {}, which another source also converts to",
                out.display()
            );
            return EXIT_INVALID;
        }
        results.push((f.clone(), out, conv));
    }
    let matched = results
        .iter()
        .flat_map(|(_, _, c)| c.matched.iter().cloned())
        .collect();
    let missing = unmatched(&sel, &matched);
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("error: {m} in the converted files");
        }
        return EXIT_INVALID;
    }
    if !args.check && !args.force {
        let existing: Vec<String> = results
            .iter()
            .filter(|(_, o, c)| c.yaml.is_some() && o.exists())
            .map(|(_, o, _)| o.display().to_string())
            .collect();
        if !existing.is_empty() {
            for e in &existing {
                eprintln!("error: {e} exists (use --force to replace it)");
            }
            return EXIT_INVALID;
        }
    }
    let mut incomplete = false;
    let mut written = Vec::new();
    for (src, out, conv) in &results {
        if !conv.report.converted {
            incomplete = true;
        }
        match &conv.yaml {
            None => failed = true,
            Some(text) if !args.check => {
                if let Err(e) = write(out, text) {
                    eprintln!("error: cannot write {}: {e}", out.display());
                    failed = true;
                } else {
                    written.push(out.clone());
                }
            }
            Some(_) => {}
        }
        let _ = src;
    }
    if args.json {
        let doc = serde_json::json!({
            "files": results.iter().map(|(_, out, c)| {
                let mut v = serde_json::to_value(&c.report).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("output".into(), if c.yaml.is_some() {
                        serde_json::Value::String(out.display().to_string())
                    } else {
                        serde_json::Value::Null
                    });
                    o.insert("written".into(), written.contains(out).into());
                }
                v
            }).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
        );
    } else {
        for (_, out, c) in &results {
            print!("{}", render_report(c, out, args.check));
        }
    }
    if failed || (args.check && incomplete) {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

fn sanitize_stem(stem: &str) -> String {
    let s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(['-', '.']).to_string();
    if s.is_empty() { "workflow".into() } else { s }
}

fn read_source(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > 1024 * 1024 {
        return Err("file is too large (over 1 MiB)".into());
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "file is not valid UTF-8".into())
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// The printed report of one file.
fn render_report(c: &Conversion, out: &Path, check: bool) -> String {
    let r = &c.report;
    let steps: usize = r.jobs.iter().map(|j| j.steps.len()).sum();
    let steps_ok: usize = r
        .jobs
        .iter()
        .map(|j| j.steps.iter().filter(|s| s.converted).count())
        .sum();
    let jobs_ok = r.jobs.iter().filter(|j| j.converted).count();
    let target = match (&c.yaml, check) {
        (None, _) => "not converted".to_string(),
        (Some(_), true) => format!("{} (not written: --check)", out.display()),
        (Some(_), false) => out.display().to_string(),
    };
    let mut s = format!(
        "{} -> {target}: {jobs_ok} of {} jobs, {steps_ok} of {steps} steps converted{}\n",
        r.source,
        r.jobs.len(),
        if r.valid || c.yaml.is_none() {
            ""
        } else {
            " (the output does not validate)"
        }
    );
    for j in &r.jobs {
        let ok = j.steps.iter().filter(|s| s.converted).count();
        s.push_str(&format!(
            "  job {}: {ok} of {} steps converted\n",
            j.id,
            j.steps.len()
        ));
        for st in j.steps.iter().filter(|s| !s.converted) {
            s.push_str(&format!(
                "    step {} ({}): not converted\n",
                st.index, st.name
            ));
        }
    }
    for d in &r.diagnostics {
        s.push_str(&format!("  {}\n", d.render(&r.source)));
    }
    s
}
