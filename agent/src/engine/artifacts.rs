//! Step artifacts in a run: after a step succeeds, each `artifacts:` entry is packed
//! ([`super::archive`]) or, with `from:`, taken from the latest successful run of another
//! workflow on the same branch, and unpacked into a directory of the run (it goes with the
//! run directory) that later steps read as `${{ steps.ID.artifacts.NAME }}`. A resumed step
//! that kept artifacts before unpacks them again.

use std::path::PathBuf;

use chrono::Utc;
use dsl::model::Step;
use serde_json::{Map, Value};

use super::archive::{blob_path, pack, touch, unpack};
use super::run_ctx::RunCtx;
use crate::model::report::{ArtifactReport, rfc3339};

/// The error class of a step whose artifacts cannot be collected.
pub(crate) const ARTIFACT_ERROR: &str = "ArtifactError";

/// A step's collected artifacts.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// What the report lists.
    pub(crate) reports: Vec<ArtifactReport>,
    /// `steps.ID.artifacts`: name to the directory holding the files.
    pub(crate) dirs: Map<String, Value>,
}

/// Collects the artifacts of step `step` (it just succeeded) from `root` (the workspace, or
/// the private copy an `isolate: true` step ran in) and unpacks each for later steps. An
/// error fails the step.
pub(crate) async fn collect(
    ctx: &RunCtx<'_>,
    step: &Step,
    root: &std::path::Path,
) -> Result<Collected, String> {
    let id = &step.id.value;
    let Some(store) = ctx.artifacts.clone() else {
        return Err(format!(
            "step `{id}`: artifacts need a state directory, and this run has none"
        ));
    };
    let mut reports = Vec::new();
    let mut dirs = Map::new();
    let base = run_dir(ctx, id);
    for a in &step.artifacts {
        let name = a.name.value.clone();
        let dest = base.join(&name);
        let report = match &a.from {
            None => {
                let patterns: Vec<String> = a.paths.iter().map(|p| p.value.clone()).collect();
                let (workdir, dir, dest) = (root.to_path_buf(), store.dir.clone(), dest.clone());
                let packed = tokio::task::spawn_blocking(move || {
                    let packed = pack(&workdir, &patterns, &dir)?;
                    let blob = blob_path(&dir, &packed.digest).ok_or("bad digest")?;
                    unpack(&blob, &dest).map_err(|e| format!("cannot unpack: {e}"))?;
                    Ok::<_, String>(packed)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|e| format!("step `{id}`: artifact `{name}`: {e}"))?;
                ArtifactReport {
                    name: name.clone(),
                    digest: packed.digest,
                    size: packed.size,
                    files: packed.files,
                    expires_at: None,
                    from: None,
                }
            }
            Some(from) => {
                let wanted = from.name.as_ref().map_or(&name, |n| &n.value).clone();
                let workflow = &from.workflow.value;
                let Some(lookup) = &store.lookup else {
                    return Err(format!(
                        "step `{id}`: artifact `{name}`: `from:` takes artifacts of the daemon's \
                         runs; `agent exec` keeps none of other workflows"
                    ));
                };
                let found = lookup
                    .latest(workflow, &wanted)
                    .await
                    .map_err(|e| format!("step `{id}`: artifact `{name}`: {e}"))?
                    .ok_or_else(|| {
                        format!(
                            "step `{id}`: artifact `{name}`: no successful run of workflow \
                             `{workflow}` on this branch has an artifact `{wanted}`"
                        )
                    })?;
                let blob = blob_path(&store.dir, &found.digest)
                    .ok_or_else(|| format!("step `{id}`: artifact `{name}`: bad digest"))?;
                let target = dest.clone();
                tokio::task::spawn_blocking(move || {
                    touch(&blob);
                    unpack(&blob, &target)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| format!("step `{id}`: artifact `{name}`: cannot unpack: {e}"))?;
                ArtifactReport {
                    name: name.clone(),
                    expires_at: None,
                    ..found
                }
            }
        };
        let expires_at = a.retention.as_ref().and_then(|r| {
            chrono::Duration::from_std(r.value)
                .ok()
                .and_then(|d| Utc::now().checked_add_signed(d))
        });
        if let Some(user) = &ctx.run_user
            && let Err(err) = user.chown_tree(&dest)
        {
            tracing::warn!(dir = %dest.display(), error = %err, "cannot give an artifact to the run user");
        }
        dirs.insert(name, Value::String(dest.to_string_lossy().into_owned()));
        reports.push(ArtifactReport {
            expires_at: expires_at.map(rfc3339),
            ..report
        });
    }
    Ok(Collected { reports, dirs })
}

/// A resumed run's step that kept artifacts before: unpacks them again for later steps.
pub(crate) async fn restore(ctx: &RunCtx<'_>, id: &str, reports: &[ArtifactReport]) {
    let Some(store) = ctx.artifacts.clone() else {
        return;
    };
    let base = run_dir(ctx, id);
    let mut dirs = Map::new();
    for r in reports {
        let dest = base.join(&r.name);
        if let Some(blob) = blob_path(&store.dir, &r.digest) {
            let target = dest.clone();
            let done = tokio::task::spawn_blocking(move || unpack(&blob, &target)).await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::warn!(step = id, artifact = %r.name, "cannot unpack a kept artifact");
            }
        }
        dirs.insert(
            r.name.clone(),
            Value::String(dest.to_string_lossy().into_owned()),
        );
    }
    ctx.data().record_artifacts(id, dirs);
}

/// The directory of step `id`'s unpacked artifacts: inside the run directory, so they go
/// with it at the run's end (the archives stay in the state directory).
fn run_dir(ctx: &RunCtx<'_>, id: &str) -> PathBuf {
    let key = format!("{}{id}", ctx.prefix);
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    ctx.rundir
        .path()
        .join("artifacts")
        .join(format!("{safe}.{}", ctx.next_seq()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::archive::ArtifactStore;

    fn write(root: &std::path::Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    }

    use crate::engine::{Engine, EngineConfig, RunRequest, RunResult};
    use crate::model::report::{RunStatus, StepReport, StepStatus};

    /// Runs `yaml` in `ws` with artifacts under `store`, taking over `resume`.
    fn run(yaml: &str, ws: &std::path::Path, store: PathBuf, resume: Vec<StepReport>) -> RunResult {
        let request = RunRequest {
            resume,
            artifacts: Some(ArtifactStore {
                dir: store,
                lookup: None,
            }),
            ..crate::engine::test_request(yaml, ws)
        };
        let engine = Engine::new(EngineConfig::default());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(engine.run(request))
    }

    /// Guards resumed runs: a step taken over from the interrupted attempt gives its kept
    /// artifact back (unpacked again from the state directory), so a later step still reads
    /// `${{ steps.ID.artifacts.NAME }}`.
    #[test]
    fn a_resumed_step_gives_its_kept_artifact_back() {
        let ws = tempfile::tempdir().expect("ws");
        let state = tempfile::tempdir().expect("state");
        let store = state.path().join("artifacts");
        write(ws.path(), "f.txt", b"kept\n");
        let packed = pack(ws.path(), &["f.txt".into()], &store).expect("pack");
        std::fs::remove_file(ws.path().join("f.txt")).expect("rm");
        let mut prior = StepReport::pending("a");
        prior.status = StepStatus::Succeeded;
        prior.attempts = 1;
        prior.artifacts = Some(Box::new(vec![ArtifactReport {
            name: "x".into(),
            digest: packed.digest,
            size: packed.size,
            files: packed.files,
            expires_at: None,
            from: None,
        }]));
        let yaml = "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: exit 1\n          artifacts:\n            - name: x\n              paths: [f.txt]\n        - id: b\n          run: test \"$(cat '${{ steps.a.artifacts.x }}/f.txt')\" = kept\n";
        let result = run(yaml, ws.path(), store, vec![prior]);
        let r = &result.report;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        assert_eq!(
            r.stages[0].steps[0].artifacts.as_ref().map(|a| a.len()),
            Some(1),
            "{r:?}"
        );
    }

    /// Guards error handlers: a step that succeeds on a handler's retry keeps its artifacts
    /// like one that succeeded at once.
    #[test]
    fn a_step_that_succeeds_on_a_handler_retry_keeps_its_artifacts() {
        let ws = tempfile::tempdir().expect("ws");
        let state = tempfile::tempdir().expect("state");
        let yaml = "workflow:\n  name: w\n  error_handlers:\n    - {error: ExitCode, action: retry, max_retries: 1}\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: |\n            echo made > f.txt\n            test -e again || { touch again; exit 1; }\n          artifacts:\n            - name: x\n              paths: [f.txt]\n        - id: b\n          run: test \"$(cat '${{ steps.a.artifacts.x }}/f.txt')\" = made\n";
        let result = run(yaml, ws.path(), state.path().join("artifacts"), Vec::new());
        let r = &result.report;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        assert_eq!(r.stages[0].steps[0].attempts, 2, "{r:?}");
        assert!(r.stages[0].steps[0].artifacts.is_some(), "{r:?}");
    }
}
