//! Step logs kept in the store (see [`crate::store::LogAppend`]): the node that runs a step
//! copies its log file here, so every node's API serves it.

use std::collections::HashMap;

use postgres::GenericClient;

use super::PgDb;
use crate::store::logs::{LogAppend, LogRead, assemble, from_column, new_part, to_column};
use crate::store::{RunId, StoreError};

/// The stored length of a step's log.
fn length(client: &mut impl GenericClient, run: RunId, step: &str) -> Result<u64, StoreError> {
    let row = client.query_opt(
        "SELECT byte_offset + length(data) FROM log_chunks
         WHERE run_id = $1 AND step_id = $2 ORDER BY byte_offset DESC LIMIT 1",
        &[&run.0, &step],
    )?;
    Ok(row.map_or(0, |r| from_column(r.get(0))))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl PgDb {
    /// Appends pieces of step logs, in one transaction. Each piece is appended where its log
    /// ends: the part already stored is skipped, a piece that starts past the end is not
    /// written. Answers, for each piece, its log's stored length after it (`None`: the run
    /// does not exist, nothing was written for it).
    pub(crate) fn append_log(
        &mut self,
        pieces: &[LogAppend],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let now = now_ms();
        self.write(|tx| {
            let mut runs: HashMap<RunId, bool> = HashMap::new();
            let mut answers = Vec::with_capacity(pieces.len());
            for piece in pieces {
                let exists = match runs.get(&piece.run) {
                    Some(e) => *e,
                    None => {
                        // FOR KEY SHARE: the run cannot be deleted before this commits.
                        let e = tx
                            .query_opt(
                                "SELECT 1 FROM runs WHERE id = $1 FOR KEY SHARE",
                                &[&piece.run.0],
                            )?
                            .is_some();
                        runs.insert(piece.run, e);
                        e
                    }
                };
                if !exists {
                    answers.push(None);
                    continue;
                }
                let mut stored = length(tx, piece.run, &piece.step)?;
                if let Some(part) = new_part(stored, piece).filter(|p| !p.is_empty()) {
                    tx.execute(
                        "INSERT INTO log_chunks (run_id, step_id, byte_offset, data, created_at)
                         VALUES ($1, $2, $3, $4, $5)",
                        &[&piece.run.0, &piece.step, &to_column(stored), &part, &now],
                    )?;
                    stored += part.len() as u64;
                }
                answers.push(Some(stored));
            }
            Ok(answers)
        })
    }

    /// The stored log of a step from byte `from`, at most `max` bytes, and its stored length.
    pub(crate) fn read_log(
        &self,
        run: RunId,
        step: &str,
        from: u64,
        max: usize,
    ) -> Result<LogRead, StoreError> {
        self.read(|client| {
            let length = length(client, run, step)?;
            if from >= length || max == 0 {
                return Ok(LogRead {
                    data: Vec::new(),
                    length,
                });
            }
            let end = from.saturating_add(max as u64).min(length);
            let chunks = client
                .query(
                    "SELECT byte_offset, data FROM log_chunks
                     WHERE run_id = $1 AND step_id = $2 AND byte_offset < $4
                       AND byte_offset >= coalesce((SELECT max(byte_offset) FROM log_chunks
                            WHERE run_id = $1 AND step_id = $2 AND byte_offset <= $3), 0)
                     ORDER BY byte_offset",
                    &[&run.0, &step, &to_column(from), &to_column(end)],
                )?
                .into_iter()
                .map(|r| (from_column(r.get(0)), r.get::<_, Vec<u8>>(1)))
                .collect();
            Ok(LogRead {
                data: assemble(chunks, from, max),
                length,
            })
        })
    }
}
