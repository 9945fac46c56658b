//! Step logs kept in the store (see [`crate::store::LogAppend`]). A lone agent keeps its logs
//! in files and never writes here; the operations exist on both backends so the store has one
//! interface.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::{RunId, SqliteDb, StoreError, now_ms};
use crate::store::logs::{LogAppend, LogRead, assemble, from_column, new_part, to_column};

/// The stored length of a step's log.
fn length(conn: &rusqlite::Connection, run: RunId, step: &str) -> Result<u64, StoreError> {
    let end: Option<i64> = conn
        .prepare_cached(
            "SELECT byte_offset + length(data) FROM log_chunks
             WHERE run_id = ?1 AND step_id = ?2 ORDER BY byte_offset DESC LIMIT 1",
        )?
        .query_row(params![run.0, step], |r| r.get(0))
        .optional()?;
    Ok(end.map_or(0, from_column))
}

impl SqliteDb {
    /// Appends pieces of step logs, in one transaction. Each piece is appended where its log
    /// ends: the part already stored is skipped, a piece that starts past the end is not
    /// written. Answers, for each piece, its log's stored length after it (`None`: the run
    /// does not exist, nothing was written for it).
    pub(crate) fn append_log(
        &mut self,
        pieces: &[LogAppend],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let tx = self.write()?;
        let now = now_ms();
        let mut runs: HashMap<RunId, bool> = HashMap::new();
        let mut answers = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let exists = match runs.get(&piece.run) {
                Some(e) => *e,
                None => {
                    let e = tx
                        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")?
                        .query_row(params![piece.run.0], |_| Ok(()))
                        .optional()?
                        .is_some();
                    runs.insert(piece.run, e);
                    e
                }
            };
            if !exists {
                answers.push(None);
                continue;
            }
            let mut stored = length(&tx, piece.run, &piece.step)?;
            if let Some(part) = new_part(stored, piece).filter(|p| !p.is_empty()) {
                tx.prepare_cached(
                    "INSERT INTO log_chunks (run_id, step_id, byte_offset, data, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    piece.run.0,
                    piece.step,
                    to_column(stored),
                    part,
                    now
                ])?;
                stored += part.len() as u64;
            }
            answers.push(Some(stored));
        }
        tx.commit()?;
        Ok(answers)
    }

    /// The stored log of a step from byte `from`, at most `max` bytes, and its stored length.
    pub(crate) fn read_log(
        &self,
        run: RunId,
        step: &str,
        from: u64,
        max: usize,
    ) -> Result<LogRead, StoreError> {
        let length = length(&self.conn, run, step)?;
        if from >= length || max == 0 {
            return Ok(LogRead {
                data: Vec::new(),
                length,
            });
        }
        let end = from.saturating_add(max as u64).min(length);
        let chunks = self
            .conn
            .prepare_cached(
                "SELECT byte_offset, data FROM log_chunks
                 WHERE run_id = ?1 AND step_id = ?2 AND byte_offset < ?4
                   AND byte_offset >= coalesce((SELECT max(byte_offset) FROM log_chunks
                        WHERE run_id = ?1 AND step_id = ?2 AND byte_offset <= ?3), 0)
                 ORDER BY byte_offset",
            )?
            .query_map(params![run.0, step, to_column(from), to_column(end)], |r| {
                Ok((from_column(r.get(0)?), r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(LogRead {
            data: assemble(chunks, from, max),
            length,
        })
    }
}
