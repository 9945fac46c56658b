//! Read-only access for tools beside the daemon (`agent plan`): a connection that never
//! creates, migrates or writes the file, and the step history of a workflow.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{SqliteDb, StoreError};

/// How long a read-only reader waits for a lock before giving up.
const READ_ONLY_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the store knows of a workflow's past steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepHistory {
    /// How many runs of the workflow succeeded.
    pub succeeded_runs: u64,
    /// Per step id: the mean duration of its succeeded, non-cached executions.
    pub durations: Vec<StepDuration>,
    /// The outputs of succeeded, non-cached executions with their run's inputs, newest runs
    /// first, at most [`OUTPUT_SAMPLES`].
    pub outputs: Vec<StepOutputSample>,
}

/// At most this many output samples are read.
pub(super) const OUTPUT_SAMPLES: usize = 20_000;

/// The mean duration of one step id.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDuration {
    /// The step id.
    pub step_id: String,
    /// Mean duration in milliseconds.
    pub mean_ms: u64,
    /// How many executions the mean is over.
    pub count: u64,
}

/// One succeeded execution's outputs and the inputs of its run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutputSample {
    /// The step id.
    pub step_id: String,
    /// The run's parameters, as stored (JSON text).
    pub parameters: String,
    /// The run's commit (`""` without one).
    pub commit: String,
    /// The step's outputs, as stored (JSON text, `""` without any).
    pub outputs: String,
}

impl SqliteDb {
    /// Opens an existing database file read-only: nothing is created, migrated or written,
    /// so a tool can read a live daemon's store (or one it may not write).
    pub(crate) fn open_read_only(path: &Path) -> Result<SqliteDb, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(READ_ONLY_BUSY_TIMEOUT)?;
        Ok(SqliteDb {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The step history of `workflow`: its succeeded runs, the mean duration of each step
    /// and the outputs of its recent executions (cached results left out).
    pub(crate) fn step_history(&self, workflow: &str) -> Result<StepHistory, StoreError> {
        let runs: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM runs WHERE workflow = ?1 AND status = 'succeeded'",
            [workflow],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT s.step_id, AVG(s.finished_at - s.started_at), COUNT(*)
               FROM steps s JOIN runs r ON r.id = s.run_id
              WHERE r.workflow = ?1 AND s.status = 'succeeded' AND s.cached = 0
                AND s.started_at IS NOT NULL AND s.finished_at IS NOT NULL
                AND s.finished_at >= s.started_at
              GROUP BY s.step_id",
        )?;
        let durations = stmt
            .query_map([workflow], |r| {
                let mean: f64 = r.get(1)?;
                let count: i64 = r.get(2)?;
                Ok(StepDuration {
                    step_id: r.get(0)?,
                    mean_ms: mean.max(0.0).round() as u64,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT s.step_id, r.parameters, COALESCE(r.trigger_commit, ''),
                    COALESCE(s.outputs, '')
               FROM steps s JOIN runs r ON r.id = s.run_id
              WHERE r.workflow = ?1 AND s.status = 'succeeded' AND s.cached = 0
              ORDER BY r.id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(OUTPUT_SAMPLES).unwrap_or(i64::MAX);
        let outputs = stmt
            .query_map(rusqlite::params![workflow, limit], |r| {
                Ok(StepOutputSample {
                    step_id: r.get(0)?,
                    parameters: r.get(1)?,
                    commit: r.get(2)?,
                    outputs: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(StepHistory {
            succeeded_runs: u64::try_from(runs).unwrap_or(0),
            durations,
            outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRun, RunFinish, RunStatus, StepFinish, StepStart, StepStatus};
    use crate::store::{Trigger, TriggerKind};

    /// The history a read-only connection reads: succeeded runs, per-step samples (cached
    /// results left out) and outputs with their run's inputs; opening a missing file fails
    /// instead of creating it.
    #[test]
    fn a_read_only_store_answers_the_step_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = SqliteDb::open_in_dir(dir.path()).expect("open");
        for cached in [false, true] {
            let id = db
                .enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
                .expect("enqueue")
                .run_id();
            db.mark_running(id).expect("running");
            let start = StepStart {
                stage: "s".into(),
                step_id: "a".into(),
                attempt: 1,
            };
            db.record_step_started(id, &start).expect("start");
            let mut finish = StepFinish::new("s", "a", 1, StepStatus::Succeeded);
            finish.outputs = Some(serde_json::json!({"x": "1"}));
            finish.cached = cached;
            db.record_step_finished(id, &finish).expect("finish");
            db.finish_run(id, &RunFinish::new(RunStatus::Succeeded))
                .expect("end");
        }
        let path = dir.path().join(crate::store::DB_FILE_NAME);
        let reader = SqliteDb::open_read_only(&path).expect("read-only");
        let history = reader.step_history("w").expect("history");
        assert_eq!(history.succeeded_runs, 2);
        assert_eq!(history.durations.len(), 1);
        assert_eq!(history.durations[0].step_id, "a");
        assert_eq!(
            history.durations[0].count, 1,
            "the cached result is left out"
        );
        assert_eq!(history.outputs.len(), 1);
        assert_eq!(history.outputs[0].outputs, r#"{"x":"1"}"#);
        assert_eq!(
            reader.step_history("other").expect("none").succeeded_runs,
            0
        );

        let missing = dir.path().join("nothing.sqlite3");
        assert!(SqliteDb::open_read_only(&missing).is_err());
        assert!(!missing.exists(), "a read-only open creates nothing");
    }
}
