//! The daemon's side of step artifacts: the engine packs them into the state directory
//! (`engine::artifacts`); here they become store rows (so the API lists them and retention
//! removes them), `from:` is answered from the store, and a resumed run gets back the
//! artifacts its finished steps kept.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::engine::StepReport;
use crate::engine::archive::{ArtifactLookup, ArtifactStore, LookupFuture};
use crate::model::report::ArtifactOrigin;
use crate::store::{ArtifactRecord, Db, RunId, Store};

/// `from:` answered from the store: the newest succeeded run of the other workflow in the
/// same repository and on the same branch that kept the artifact.
#[derive(Debug)]
struct StoreLookup {
    store: Store,
    repo: Option<String>,
    branch: Option<String>,
}

impl ArtifactLookup for StoreLookup {
    fn latest(&self, workflow: &str, name: &str) -> LookupFuture {
        let (store, repo, branch) = (self.store.clone(), self.repo.clone(), self.branch.clone());
        let (workflow, name) = (workflow.to_string(), name.to_string());
        let producer = workflow.clone();
        Box::pin(async move {
            let found = store
                .query(move |db: &Db| {
                    db.latest_artifact(&workflow, repo.as_deref(), branch.as_deref(), &name)
                })
                .await
                .map_err(|e| format!("cannot read the store: {e}"))?;
            Ok(found.map(|a| {
                let mut report = a.report();
                report.from = Some(ArtifactOrigin {
                    workflow: producer,
                    run_id: a.run_id.to_string(),
                    name: a.name.clone(),
                });
                report
            }))
        })
    }
}

/// The artifact store of a daemon run of `workflow`'s repository `repo` on `branch`.
pub(crate) fn store_for_run(
    state_dir: &std::path::Path,
    store: Store,
    repo: Option<String>,
    branch: Option<String>,
) -> ArtifactStore {
    ArtifactStore {
        dir: crate::state_dir::artifacts_dir(state_dir),
        lookup: Some(Arc::new(StoreLookup {
            store,
            repo,
            branch,
        })),
    }
}

fn time(t: Option<&str>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The rows of the artifacts a finished step kept.
pub(crate) fn records(run: RunId, report: &StepReport) -> Vec<ArtifactRecord> {
    let now = Utc::now();
    report
        .artifacts
        .iter()
        .flat_map(|list| list.iter())
        .map(|a| ArtifactRecord {
            run_id: run,
            step_id: report.id.clone(),
            name: a.name.clone(),
            digest: a.digest.clone(),
            size: a.size,
            files: a.files,
            created_at: now,
            expires_at: time(a.expires_at.as_deref()),
            from: a
                .from
                .as_ref()
                .map(|f| (f.workflow.clone(), f.run_id.clone(), f.name.clone())),
        })
        .collect()
}

/// Gives the finished steps a resumed run takes over the artifacts they kept.
pub(crate) fn attach(resume: &mut [StepReport], kept: &[ArtifactRecord]) {
    for step in resume {
        let mine: Vec<_> = kept
            .iter()
            .filter(|a| a.step_id == step.id)
            .map(ArtifactRecord::report)
            .collect();
        step.artifacts = (!mine.is_empty()).then(|| Box::new(mine));
    }
}
