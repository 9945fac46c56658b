//! The step history of a workflow on PostgreSQL (what `agent plan` reads).

use super::PgDb;
use crate::store::{StepDuration, StepHistory, StepOutputSample, StoreError};

/// At most this many output samples are read (as on SQLite).
const OUTPUT_SAMPLES: i64 = 20_000;

impl PgDb {
    /// The step history of `workflow`: its succeeded runs, the mean duration of each step
    /// and the outputs of its recent executions (cached results left out).
    pub(crate) fn step_history(&self, workflow: &str) -> Result<StepHistory, StoreError> {
        self.read(|c| {
            let runs: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM runs WHERE workflow = $1 AND status = 'succeeded'",
                    &[&workflow],
                )?
                .try_get(0)?;
            let durations = c
                .query(
                    "SELECT s.step_id, AVG(s.finished_at - s.started_at)::FLOAT8, COUNT(*)
                       FROM steps s JOIN runs r ON r.id = s.run_id
                      WHERE r.workflow = $1 AND s.status = 'succeeded' AND s.cached = 0
                        AND s.started_at IS NOT NULL AND s.finished_at IS NOT NULL
                        AND s.finished_at >= s.started_at
                      GROUP BY s.step_id",
                    &[&workflow],
                )?
                .iter()
                .map(|r| {
                    let mean: f64 = r.try_get(1)?;
                    let count: i64 = r.try_get(2)?;
                    Ok(StepDuration {
                        step_id: r.try_get(0)?,
                        mean_ms: mean.max(0.0).round() as u64,
                        count: u64::try_from(count).unwrap_or(0),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let outputs = c
                .query(
                    "SELECT s.step_id, r.parameters, COALESCE(r.trigger_commit, ''),
                            COALESCE(s.outputs, '')
                       FROM steps s JOIN runs r ON r.id = s.run_id
                      WHERE r.workflow = $1 AND s.status = 'succeeded' AND s.cached = 0
                      ORDER BY r.id DESC LIMIT $2",
                    &[&workflow, &OUTPUT_SAMPLES],
                )?
                .iter()
                .map(|r| {
                    Ok(StepOutputSample {
                        step_id: r.try_get(0)?,
                        parameters: r.try_get(1)?,
                        commit: r.try_get(2)?,
                        outputs: r.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(StepHistory {
                succeeded_runs: u64::try_from(runs).unwrap_or(0),
                durations,
                outputs,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step history on PostgreSQL: succeeded runs, the mean of non-cached durations
    /// (a float rounded), outputs newest run first, cached results left out.
    #[test]
    fn step_history_leaves_cached_results_out() {
        let db = PgDb::connect(&crate::store::test_pg::database_url()).expect("connect");
        for (cached, took) in [(0_i64, 10_i64), (0, 15), (1, 1000)] {
            db.write(|tx| {
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO runs (workflow, status, trigger_kind, created_at,
                                           trigger_commit)
                         VALUES ('w', 'succeeded', 'manual', 0, 'c') RETURNING id",
                        &[],
                    )?
                    .get(0);
                tx.execute(
                    "INSERT INTO steps (run_id, step_id, stage, status, cached, started_at,
                                        finished_at, seq, outputs)
                     VALUES ($1, 'a', 's', 'succeeded', $2, 0, $3, 0, $4)",
                    &[&id, &cached, &took, &format!(r#"{{"took":{took}}}"#)],
                )?;
                Ok(())
            })
            .expect("insert");
        }
        let history = db.step_history("w").expect("history");
        assert_eq!(history.succeeded_runs, 3);
        assert_eq!(
            history.durations,
            [StepDuration {
                step_id: "a".into(),
                mean_ms: 13,
                count: 2
            }]
        );
        let outputs: Vec<_> = history.outputs.iter().map(|o| o.outputs.as_str()).collect();
        assert_eq!(outputs, [r#"{"took":15}"#, r#"{"took":10}"#]);
        assert_eq!(history.outputs[0].commit, "c");
        assert_eq!(db.step_history("x").expect("none"), StepHistory::default());
    }
}
