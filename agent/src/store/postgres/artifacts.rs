//! Step artifacts on PostgreSQL: one row per artifact a step kept, naming its archive by
//! digest (the archives themselves are files, see the SQLite side).

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::PgDb;
use crate::store::codec::{from_ms, from_ms_opt, now_ms, to_ms};
use crate::store::{ArtifactRecord, RunId, StoreError};

const COLUMNS: &str = "run_id, step_id, name, digest, size, files, created_at, expires_at,
                       from_workflow, from_run, from_name";

/// The record of an artifact row (`COLUMNS`, in order).
fn record(r: &postgres::Row) -> Result<ArtifactRecord, StoreError> {
    let size: i64 = r.try_get(4)?;
    let files: i64 = r.try_get(5)?;
    let from: (Option<String>, Option<String>, Option<String>) =
        (r.try_get(8)?, r.try_get(9)?, r.try_get(10)?);
    Ok(ArtifactRecord {
        run_id: RunId(r.try_get(0)?),
        step_id: r.try_get(1)?,
        name: r.try_get(2)?,
        digest: r.try_get(3)?,
        size: u64::try_from(size).unwrap_or(0),
        files: u64::try_from(files).unwrap_or(0),
        created_at: from_ms("created_at", r.try_get(6)?)?,
        expires_at: from_ms_opt("expires_at", r.try_get(7)?)?,
        from: match from {
            (Some(w), Some(r), Some(n)) => Some((w, r, n)),
            _ => None,
        },
    })
}

impl PgDb {
    /// Records the artifacts a step kept (replacing what an earlier try of the same step
    /// recorded under the same names).
    pub(crate) fn record_artifacts(
        &mut self,
        artifacts: &[ArtifactRecord],
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO artifacts ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (run_id, step_id, name) DO UPDATE SET
                 digest = excluded.digest, size = excluded.size, files = excluded.files,
                 created_at = excluded.created_at, expires_at = excluded.expires_at,
                 from_workflow = excluded.from_workflow, from_run = excluded.from_run,
                 from_name = excluded.from_name,
                 seq = nextval(pg_get_serial_sequence('artifacts', 'seq'))"
        );
        self.write(|tx| {
            let insert = tx.prepare(&sql)?;
            for a in artifacts {
                let (fw, fr, fname) = match &a.from {
                    Some((w, r, n)) => (Some(w), Some(r), Some(n)),
                    None => (None, None, None),
                };
                tx.execute(
                    &insert,
                    &[
                        &a.run_id.0,
                        &a.step_id,
                        &a.name,
                        &a.digest,
                        &i64::try_from(a.size).unwrap_or(i64::MAX),
                        &i64::try_from(a.files).unwrap_or(i64::MAX),
                        &to_ms(a.created_at),
                        &a.expires_at.map(to_ms),
                        &fw,
                        &fr,
                        &fname,
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// The artifacts of a run that retention has not removed, in the order they were kept.
    pub(crate) fn list_artifacts(&self, run: RunId) -> Result<Vec<ArtifactRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM artifacts
             WHERE run_id = $1 AND (expires_at IS NULL OR expires_at > $2)
             ORDER BY created_at, seq"
        );
        let rows = self.read(|c| Ok(c.query(&sql, &[&run.0, &now_ms()])?))?;
        rows.iter().map(record).collect()
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
        let row = self.read(|c| {
            Ok(c.query_opt(
                "SELECT a.run_id, a.step_id, a.name, a.digest, a.size, a.files, a.created_at,
                        a.expires_at, a.from_workflow, a.from_run, a.from_name
                 FROM artifacts AS a JOIN runs AS r ON r.id = a.run_id
                 WHERE a.name = $1 AND r.workflow = $2 AND r.status = 'succeeded'
                   AND r.repo IS NOT DISTINCT FROM $3
                   AND r.trigger_branch IS NOT DISTINCT FROM $4
                   AND (a.expires_at IS NULL OR a.expires_at > $5)
                 ORDER BY a.run_id DESC, a.seq DESC LIMIT 1",
                &[&name, &workflow, &repo, &branch, &now_ms()],
            )?)
        })?;
        row.as_ref().map(record).transpose()
    }

    /// Deletes the artifacts whose `expires_at` has passed; answers how many.
    pub(crate) fn prune_artifacts(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let n = self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM artifacts WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&to_ms(now)],
            )?)
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Every digest a kept artifact names.
    pub(crate) fn artifact_digests(&self) -> Result<HashSet<String>, StoreError> {
        self.read(|c| {
            c.query("SELECT DISTINCT digest FROM artifacts", &[])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(db: &PgDb, status: &str, branch: Option<&str>) -> RunId {
        db.write(|tx| {
            Ok(RunId(
                tx.query_one(
                    "INSERT INTO runs (workflow, repo, status, trigger_kind, created_at,
                                       trigger_branch)
                     VALUES ('w', 'app', $1, 'push', 0, $2) RETURNING id",
                    &[&status, &branch],
                )?
                .get(0),
            ))
        })
        .expect("insert")
    }

    fn artifact(run: RunId, name: &str, digest: &str, at: i64) -> ArtifactRecord {
        ArtifactRecord {
            run_id: run,
            step_id: "build".into(),
            name: name.into(),
            digest: digest.into(),
            size: 3,
            files: 1,
            created_at: from_ms("t", at).expect("ms"),
            expires_at: None,
            from: Some(("up".into(), "1".into(), name.into())),
        }
    }

    /// Artifacts on PostgreSQL: a retry replaces a record and moves it last among those
    /// kept in the same millisecond; the newest succeeded run on the branch has the latest;
    /// pruning and digests.
    #[test]
    fn artifacts_replace_list_find_and_prune() {
        let mut db = PgDb::connect(&crate::store::test_pg::database_url()).expect("connect");
        let old = run(&db, "succeeded", Some("main"));
        let new = run(&db, "succeeded", Some("main"));
        let other = run(&db, "succeeded", None);
        let now = now_ms();
        db.record_artifacts(&[
            artifact(new, "bin", "sha256:1", now),
            artifact(new, "doc", "sha256:2", now),
            artifact(old, "bin", "sha256:0", now),
            artifact(other, "bin", "sha256:9", now),
        ])
        .expect("record");
        db.record_artifacts(&[artifact(new, "bin", "sha256:3", now)])
            .expect("again");
        let listed: Vec<_> = db
            .list_artifacts(new)
            .expect("list")
            .into_iter()
            .map(|a| a.digest)
            .collect();
        assert_eq!(listed, ["sha256:2", "sha256:3"]);
        let latest = db
            .latest_artifact("w", Some("app"), Some("main"), "bin")
            .expect("latest")
            .expect("one");
        assert_eq!(latest, artifact(new, "bin", "sha256:3", now));
        let unbranched = db
            .latest_artifact("w", Some("app"), None, "bin")
            .expect("latest")
            .expect("one");
        assert_eq!(unbranched.run_id, other);
        let mut expiring = artifact(old, "tmp", "sha256:t", now);
        expiring.expires_at = Some(from_ms("t", now + 1_000).expect("ms"));
        db.record_artifacts(&[expiring]).expect("record");
        assert_eq!(db.artifact_digests().expect("digests").len(), 5);
        assert_eq!(
            db.prune_artifacts(from_ms("t", now + 1_000).expect("ms"))
                .expect("prune"),
            1
        );
        assert!(!db.artifact_digests().expect("digests").contains("sha256:t"));
    }
}
