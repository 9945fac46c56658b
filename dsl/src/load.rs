//! Entry points: read a workflow file (and the sub-workflows it calls, found next to it),
//! lower and validate everything, and hand back the model or every diagnostic.
//!
//! This module owns file-system concerns: the size limit before reading, sub-workflow
//! lookup (`NAME.yaml` / `NAME.yml` in the caller's directory), cycles between files and the
//! nesting depth of calls.

use crate::diagnostic::{Diagnostic, Diagnostics, SourceFile, suggest};
use crate::lower;
use crate::model::{StepKind, Workflow};
use crate::validate;
use crate::yaml;
use indexmap::IndexMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Deepest chain of workflows calling workflows (the root is depth 0).
pub(crate) const MAX_CALL_DEPTH: usize = 10;

/// A loaded, valid workflow.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The workflow in the file that was asked for.
    pub workflow: Workflow,
    /// Every sub-workflow it calls, directly or not, by the name used in `workflow:` steps
    /// (each already parsed and validated).
    pub subworkflows: IndexMap<String, Workflow>,
    /// Warnings from all files.
    pub warnings: Diagnostics,
    /// The root file and its text.
    pub source: Arc<SourceFile>,
}

impl Loaded {
    /// The sub-workflow a `workflow:` step names.
    pub fn subworkflow(&self, name: &str) -> Option<&Workflow> {
        self.subworkflows.get(name)
    }
}

/// Loads and validates a workflow file and the sub-workflows it calls.
pub fn load_workflow(path: &Path) -> Result<Loaded, Diagnostics> {
    let mut loader = Loader {
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        loaded: IndexMap::new(),
        diags: Vec::new(),
    };
    let stem = file_stem(path);
    let (root, source) = loader.load_file(path, &stem);
    let Some(root) = root else {
        return Err(Diagnostics(loader.diags));
    };
    let mut stack = vec![stem];
    loader.calls(&root, &source, &mut stack);
    if loader.diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics(loader.diags));
    }
    let subworkflows = loader
        .loaded
        .into_iter()
        .filter_map(|(name, wf)| Some((name, wf?)))
        .collect();
    Ok(Loaded {
        workflow: root,
        subworkflows,
        warnings: Diagnostics(loader.diags),
        source,
    })
}

/// Parses and validates workflow text without touching the file system (sub-workflows are
/// not looked up). `name` is used as the file name in diagnostics and, without its
/// extension, as the workflow name when the file has no `name:`.
pub fn parse_str(name: &str, text: &str) -> Result<(Workflow, Diagnostics), Diagnostics> {
    let file = SourceFile::new(name, Some(text.to_owned()));
    let stem = file_stem(Path::new(name));
    let diags = match yaml::parse_str(text) {
        Err(d) => d,
        Ok(parsed) => {
            let (wf, mut d) = lower::lower(&parsed.root, text, &stem);
            d.extend(parsed.diagnostics);
            if let Some(wf) = &wf {
                d.extend(validate::validate(wf, text));
            }
            d.sort_by_key(|d| (d.span.start.line, d.span.start.column));
            if let Some(wf) = wf
                && !d.iter().any(Diagnostic::is_error)
            {
                let warnings = d.into_iter().map(|x| x.in_file(&file)).collect();
                return Ok((wf, Diagnostics(warnings)));
            }
            d
        }
    };
    Err(Diagnostics(
        diags.into_iter().map(|x| x.in_file(&file)).collect(),
    ))
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workflow".to_owned())
}

struct Loader {
    dir: PathBuf,
    /// Sub-workflows by name; `None` when the file was found but is invalid.
    loaded: IndexMap<String, Option<Workflow>>,
    diags: Vec<Diagnostic>,
}

impl Loader {
    /// Reads, lowers and validates one file; pushes its diagnostics.
    fn load_file(&mut self, path: &Path, stem: &str) -> (Option<Workflow>, Arc<SourceFile>) {
        let (text, tree) = yaml::parse_file(path);
        let file = SourceFile::new(path, text);
        let text = file.text.as_deref().unwrap_or_default();
        let mut diags = Vec::new();
        let wf = match tree {
            Err(d) => {
                diags = d;
                None
            }
            Ok(parsed) => {
                let (wf, d) = lower::lower(&parsed.root, text, stem);
                diags.extend(d);
                diags.extend(parsed.diagnostics);
                if let Some(wf) = &wf {
                    diags.extend(validate::validate(wf, text));
                }
                wf
            }
        };
        let ok = !diags.iter().any(Diagnostic::is_error);
        diags.sort_by_key(|d| (d.span.start.line, d.span.start.column));
        self.diags
            .extend(diags.into_iter().map(|d| d.in_file(&file)));
        let wf = wf.filter(|_| ok).map(|mut w| {
            w.file = Some(path.to_path_buf());
            w
        });
        (wf, file)
    }

    /// Resolves the sub-workflows `wf` calls, depth first; `stack` holds the names of the
    /// files being loaded (the root first).
    fn calls(&mut self, wf: &Workflow, file: &Arc<SourceFile>, stack: &mut Vec<String>) {
        for step in wf.steps() {
            let StepKind::Workflow(name) = &step.kind else {
                continue;
            };
            if let Some(pos) = stack.iter().position(|s| s == &name.value) {
                let mut cycle: Vec<&str> = stack[pos..].iter().map(String::as_str).collect();
                cycle.push(&name.value);
                self.diags.push(
                    Diagnostic::error(
                        name.span,
                        format!("sub-workflow cycle: {}", cycle.join(" -> ")),
                    )
                    .in_file(file),
                );
                continue;
            }
            if stack.len() > MAX_CALL_DEPTH {
                self.diags.push(
                    Diagnostic::error(
                        name.span,
                        format!(
                            "sub-workflows nest too deeply: {} -> {} (at most {MAX_CALL_DEPTH} levels)",
                            stack.join(" -> "),
                            name.value
                        ),
                    )
                    .in_file(file),
                );
                continue;
            }
            if self.loaded.contains_key(&name.value) {
                continue;
            }
            let Some(path) = self.find(&name.value) else {
                let mut d = Diagnostic::error(
                    name.span,
                    format!(
                        "sub-workflow `{}` not found: no `{0}.yaml` or `{0}.yml` in {}",
                        name.value,
                        display_dir(&self.dir)
                    ),
                );
                if let Some(s) = self.similar(&name.value) {
                    d = d.with_hint(format!("did you mean `{s}`?"));
                }
                self.diags.push(d.in_file(file));
                continue;
            };
            self.loaded.insert(name.value.clone(), None);
            let (sub, sub_file) = self.load_file(&path, &name.value);
            if let Some(sub) = sub {
                self.check_call(step, &sub, file);
                stack.push(name.value.clone());
                self.calls(&sub, &sub_file, stack);
                stack.pop();
                self.loaded.insert(name.value.clone(), Some(sub));
            }
        }
    }

    /// The parameters a call passes must be declared by the callee; required ones must be
    /// passed.
    fn check_call(&mut self, step: &crate::model::Step, callee: &Workflow, file: &Arc<SourceFile>) {
        for (k, v) in &step.parameters {
            if let Some(p) = callee.parameter(k) {
                // A value without expressions can be checked now.
                if let Some(json) = v.to_static_json()
                    && let Err(errors) = crate::params::check_value(p, &json)
                {
                    for e in errors {
                        self.diags
                            .push(Diagnostic::error(v.span, e.to_string()).in_file(file));
                    }
                }
            } else {
                let names = callee.parameters.iter().map(|p| p.name.value.as_str());
                let mut msg = format!("workflow `{}` has no parameter `{k}`", callee.name.value);
                if let Some(s) = suggest(k, names) {
                    msg.push_str(&format!(", did you mean `{s}`?"));
                }
                self.diags
                    .push(Diagnostic::error(v.span, msg).in_file(file));
            }
        }
        for p in &callee.parameters {
            if p.required.value
                && p.default.is_none()
                && !step.parameters.contains_key(&p.name.value)
            {
                self.diags.push(
                    Diagnostic::error(
                        step.id.span,
                        format!(
                            "step `{}` calls workflow `{}` without its required parameter `{}`",
                            step.id.value, callee.name.value, p.name.value
                        ),
                    )
                    .in_file(file),
                );
            }
        }
    }

    fn find(&self, name: &str) -> Option<PathBuf> {
        ["yaml", "yml"]
            .iter()
            .map(|ext| self.dir.join(format!("{name}.{ext}")))
            .find(|p| p.is_file())
    }

    fn similar(&self, name: &str) -> Option<String> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        let stems: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .map(|p| file_stem(&p))
            .collect();
        suggest(name, stems.iter().map(String::as_str)).map(str::to_owned)
    }
}

fn display_dir(dir: &Path) -> String {
    if dir.as_os_str().is_empty() {
        "the current directory".to_owned()
    } else {
        format!("`{}`", dir.display())
    }
}
