//! Step artifacts (schema version 8): one row per artifact a step kept, naming its archive
//! by digest. The archives are files under the state directory (`state_dir::artifacts_dir`);
//! rows go with their run (`ON DELETE CASCADE`) or earlier, at `expires_at`, and the
//! retention sweep then deletes the archives no row names any more.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};

use crate::model::report::{ArtifactOrigin, ArtifactReport, rfc3339};

use super::{RunId, SqliteDb, StoreError, from_ms, from_ms_opt, now_ms, to_ms};

/// One kept artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    /// The run that kept it.
    pub run_id: RunId,
    /// The step (as events name it: `CALL/ID` inside a called workflow).
    pub step_id: String,
    /// Its `name:`.
    pub name: String,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
    /// Bytes of the archive.
    pub size: u64,
    /// Files in it.
    pub files: u64,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When retention removes it; `None`: with its run.
    pub expires_at: Option<DateTime<Utc>>,
    /// Taken with `from:`: the workflow, run and artifact name it came from.
    pub from: Option<(String, String, String)>,
}

const COLUMNS: &str = "run_id, step_id, name, digest, size, files, created_at, expires_at,
                       from_workflow, from_run, from_name";

fn read_row(r: &Row<'_>) -> rusqlite::Result<ArtifactRow> {
    Ok(ArtifactRow {
        run_id: r.get(0)?,
        step_id: r.get(1)?,
        name: r.get(2)?,
        digest: r.get(3)?,
        size: r.get(4)?,
        files: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        from_workflow: r.get(8)?,
        from_run: r.get(9)?,
        from_name: r.get(10)?,
    })
}

struct ArtifactRow {
    run_id: i64,
    step_id: String,
    name: String,
    digest: String,
    size: i64,
    files: i64,
    created_at: i64,
    expires_at: Option<i64>,
    from_workflow: Option<String>,
    from_run: Option<String>,
    from_name: Option<String>,
}

impl ArtifactRow {
    fn record(self) -> Result<ArtifactRecord, StoreError> {
        Ok(ArtifactRecord {
            run_id: RunId(self.run_id),
            step_id: self.step_id,
            name: self.name,
            digest: self.digest,
            size: u64::try_from(self.size).unwrap_or(0),
            files: u64::try_from(self.files).unwrap_or(0),
            created_at: from_ms("created_at", self.created_at)?,
            expires_at: from_ms_opt("expires_at", self.expires_at)?,
            from: match (self.from_workflow, self.from_run, self.from_name) {
                (Some(w), Some(r), Some(n)) => Some((w, r, n)),
                _ => None,
            },
        })
    }
}

impl ArtifactRecord {
    /// The artifact as the run report lists it.
    pub(crate) fn report(&self) -> ArtifactReport {
        ArtifactReport {
            name: self.name.clone(),
            digest: self.digest.clone(),
            size: self.size,
            files: self.files,
            expires_at: self.expires_at.map(rfc3339),
            from: self.from.as_ref().map(|(w, r, n)| ArtifactOrigin {
                workflow: w.clone(),
                run_id: r.clone(),
                name: n.clone(),
            }),
        }
    }
}

impl SqliteDb {
    /// Records the artifacts a step kept (replacing what an earlier try of the same step
    /// recorded under the same names).
    pub(crate) fn record_artifacts(
        &mut self,
        artifacts: &[ArtifactRecord],
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO artifacts ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))?;
            for a in artifacts {
                let (fw, fr, fname) = match &a.from {
                    Some((w, r, n)) => (Some(w), Some(r), Some(n)),
                    None => (None, None, None),
                };
                insert.execute(params![
                    a.run_id.0,
                    a.step_id,
                    a.name,
                    a.digest,
                    i64::try_from(a.size).unwrap_or(i64::MAX),
                    i64::try_from(a.files).unwrap_or(i64::MAX),
                    to_ms(a.created_at),
                    a.expires_at.map(to_ms),
                    fw,
                    fr,
                    fname,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The artifacts of a run that retention has not removed, in the order they were kept.
    pub(crate) fn list_artifacts(&self, run: RunId) -> Result<Vec<ArtifactRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM artifacts
             WHERE run_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)
             ORDER BY created_at, rowid"
        ))?;
        let rows = stmt
            .query_map(params![run.0, now_ms()], read_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(ArtifactRow::record).collect()
    }

    /// Artifact `name` of the newest succeeded run of `workflow` in repository `repo` on
    /// `branch` that kept one (not expired).
    pub(crate) fn latest_artifact(
        &self,
        workflow: &str,
        repo: Option<&str>,
        branch: Option<&str>,
        name: &str,
    ) -> Result<Option<ArtifactRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.run_id, a.step_id, a.name, a.digest, a.size, a.files, a.created_at,
                    a.expires_at, a.from_workflow, a.from_run, a.from_name
             FROM artifacts AS a JOIN runs AS r ON r.id = a.run_id
             WHERE a.name = ?1 AND r.workflow = ?2 AND r.status = 'succeeded'
               AND r.repo IS ?3 AND r.trigger_branch IS ?4
               AND (a.expires_at IS NULL OR a.expires_at > ?5)
             ORDER BY a.run_id DESC, a.rowid DESC LIMIT 1",
        )?;
        let row = stmt
            .query_map(params![name, workflow, repo, branch, now_ms()], read_row)?
            .next()
            .transpose()?;
        row.map(ArtifactRow::record).transpose()
    }

    /// Deletes the artifacts whose `expires_at` has passed; answers how many.
    pub(crate) fn prune_artifacts(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let n = tx.execute(
            "DELETE FROM artifacts WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            params![to_ms(now)],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Every digest a kept artifact names.
    pub(crate) fn artifact_digests(&self) -> Result<HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT digest FROM artifacts")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<HashSet<_>>>()?;
        Ok(rows)
    }
}
