//! A step's environment layers and working directory.
//!
//! Environment, nearer wins: the minimal base and the workflow's `env:` (already in the run's
//! base environment), then what earlier steps wrote to `$AGENT_ENV` / `$AGENT_PATH` (unless an
//! `env:` in scope names the same variable), then the stage's `env:`, then the step's `env:`.
//! Stage and step values are expressions rendered when the step starts; the step's see the
//! stage's through `${{ env.X }}`.
//!
//! `working_directory:` (step, else stage) is rendered, taken relative to the workspace, and
//! must name an existing directory inside it (symbolic links resolved).

use std::path::{Path, PathBuf};

use dsl::model::{Stage, Step, StepKind};
use serde_json::{Map, Value};

use super::run_ctx::RunCtx;
use super::scope::{Scope, env_text};

/// The stage whose steps (or decision branches, at any depth) hold the step `id`.
pub(crate) fn stage_of<'w>(stages: &'w [Stage], id: &str) -> Option<&'w Stage> {
    fn holds(steps: &[Step], id: &str) -> bool {
        steps.iter().any(|s| {
            s.id.value == id
                || matches!(&s.kind, StepKind::Decision(d)
                    if d.branches.iter().any(|b| holds(&b.steps, id)))
        })
    }
    stages.iter().find(|s| holds(&s.steps, id))
}

/// A step's rendered environment layers.
pub(crate) struct Layers {
    /// Entries to add after the run's base environment, in order (later wins).
    pub(crate) process_env: Vec<(String, String)>,
    /// The `env` context for the step's expressions when it differs from the workflow's.
    pub(crate) merged: Option<Value>,
}

/// Renders the stage and step `env:` over the workflow's and adds what `$AGENT_ENV` and
/// `$AGENT_PATH` set. The error is (which key, the expression error).
pub(crate) fn layers(
    ctx: &RunCtx<'_>,
    stage: Option<&Stage>,
    step: &Step,
    base: &Scope<'_>,
    workflow_env: Option<&Value>,
) -> Result<Layers, (&'static str, dsl::expr::ExprError)> {
    let stage_env = stage.map(|s| &s.env).filter(|e| !e.is_empty());
    let declared = |k: &str| {
        ctx.wf.env.contains_key(k)
            || stage_env.is_some_and(|e| e.contains_key(k))
            || step.env.contains_key(k)
    };
    let base_path = ctx
        .base_env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let mut process_env = ctx.file_env.step_env(declared, base_path);
    let file_vars = ctx.file_env.vars();
    if stage_env.is_none() && step.env.is_empty() && file_vars.is_empty() {
        return Ok(Layers {
            process_env,
            merged: None,
        });
    }
    let mut all: Map<String, Value> = Map::new();
    for (k, v) in &file_vars {
        all.insert(k.clone(), Value::String(v.clone()));
    }
    if let Some(Value::Object(m)) = workflow_env {
        for (k, v) in m {
            all.insert(k.clone(), v.clone());
        }
    }
    if let Some(env) = stage_env {
        let rendered = {
            let snapshot = Value::Object(all.clone());
            let view = base.with_env(&snapshot);
            dsl::model::render_map(env, &view).map_err(|e| ("stage env", e))?
        };
        for (k, v) in rendered {
            process_env.push((k.clone(), env_text(&v)));
            all.insert(k, v);
        }
    }
    if !step.env.is_empty() {
        let rendered = {
            let snapshot = Value::Object(all.clone());
            let view = base.with_env(&snapshot);
            dsl::model::render_map(&step.env, &view).map_err(|e| ("env", e))?
        };
        for (k, v) in rendered {
            process_env.push((k.clone(), env_text(&v)));
            all.insert(k, v);
        }
    }
    Ok(Layers {
        process_env,
        merged: Some(Value::Object(all)),
    })
}

/// The directory the step runs in: its `working_directory`, else its stage's, else the
/// workspace. The error is the step's failure message.
pub(crate) fn working_dir(
    workspace: &Path,
    stage: Option<&Stage>,
    step: &Step,
    view: &Scope<'_>,
) -> Result<PathBuf, String> {
    let Some(wd) = step
        .working_directory
        .as_ref()
        .or_else(|| stage.and_then(|s| s.working_directory.as_ref()))
    else {
        return Ok(workspace.to_path_buf());
    };
    let text = match dsl::expr::Template::parse(&wd.value) {
        Ok(t) => t
            .render(view)
            .map(|v| env_text(&v))
            .map_err(|e| format!("working_directory: {e}"))?,
        Err(errs) => {
            let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
            return Err(format!("working_directory: {}", text.join("; ")));
        }
    };
    let joined = workspace.join(&text);
    if leaves_lexically(workspace, &joined) {
        return Err(format!("working_directory `{text}` leaves the workspace"));
    }
    let root = workspace
        .canonicalize()
        .map_err(|e| format!("the workspace {}: {e}", workspace.display()))?;
    let real = match joined.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "working_directory `{text}` does not exist in the workspace ({})",
                joined.display()
            ));
        }
        Err(e) => return Err(format!("working_directory `{text}`: {e}")),
    };
    if !real.starts_with(&root) {
        return Err(format!(
            "working_directory `{text}` leaves the workspace ({} is outside {})",
            real.display(),
            root.display()
        ));
    }
    if !real.is_dir() {
        return Err(format!("working_directory `{text}` is not a directory"));
    }
    Ok(joined)
}

/// Whether `path` (made of `workspace` and more) names a place outside `workspace` by its
/// `..` components or an absolute path elsewhere, before looking at the disk.
fn leaves_lexically(workspace: &Path, path: &Path) -> bool {
    use std::path::Component;
    let Ok(rest) = path.strip_prefix(workspace) else {
        return true;
    };
    let mut depth: usize = 0;
    for c in rest.components() {
        match c {
            Component::ParentDir => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}
