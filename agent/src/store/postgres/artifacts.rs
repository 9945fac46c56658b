//! STUB: the PostgreSQL side of these operations is being written.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::store::{ArtifactRecord, RunId, StoreError};

use super::PgDb;

impl PgDb {
    /// Records the artifacts a step kept (replacing what an earlier try of the same step
    /// recorded under the same names).
    pub fn record_artifacts(&mut self, _artifacts: &[ArtifactRecord]) -> Result<(), StoreError> {
        Err(super::unsupported("record_artifacts"))
    }

    /// The artifacts of a run that retention has not removed, in the order they were kept.
    pub fn list_artifacts(&self, _run: RunId) -> Result<Vec<ArtifactRecord>, StoreError> {
        Err(super::unsupported("list_artifacts"))
    }

    /// Artifact `name` of the newest succeeded run of `workflow` in repository `repo` on
    /// `branch` that kept one (not expired).
    pub fn latest_artifact(
        &self,
        _workflow: &str,
        _repo: Option<&str>,
        _branch: Option<&str>,
        _name: &str,
    ) -> Result<Option<ArtifactRecord>, StoreError> {
        Err(super::unsupported("latest_artifact"))
    }

    /// Deletes the artifacts whose `expires_at` has passed; answers how many.
    pub fn prune_artifacts(&mut self, _now: DateTime<Utc>) -> Result<usize, StoreError> {
        Err(super::unsupported("prune_artifacts"))
    }

    /// Every digest a kept artifact names.
    pub fn artifact_digests(&self) -> Result<HashSet<String>, StoreError> {
        Err(super::unsupported("artifact_digests"))
    }
}
