//! Step logs kept in the store (`append_log`, `read_log`), on each backend: pieces land in
//! order, once, where their log ends, also when a write is sent again; any range reads back
//! byte for byte; pieces go with their run.

use agent::store::{
    Db, LogAppend, LogRead, NewRun, Retention, RunFinish, RunId, RunStatus, Trigger, TriggerKind,
};

use crate::common::backends::on_each_backend;

/// A new run.
fn new_run(db: &mut Db) -> RunId {
    db.enqueue_run(&NewRun::new("logs", Trigger::new(TriggerKind::Manual)))
        .expect("enqueue")
        .run_id()
}

/// Deletes a run the way retention does.
fn delete_run(db: &mut Db, run: RunId) {
    db.finish_run(run, &RunFinish::new(RunStatus::Succeeded))
        .expect("finish");
    let pruned = db
        .prune_runs(&Retention {
            max_runs: Some(0),
            ..Retention::default()
        })
        .expect("prune");
    assert_eq!(pruned, [run]);
}

fn piece(run: RunId, step: &str, offset: u64, data: &[u8]) -> LogAppend {
    LogAppend {
        run,
        step: step.to_string(),
        offset,
        data: data.to_vec(),
    }
}

fn read_all(db: &Db, run: RunId, step: &str) -> Vec<u8> {
    db.read_log(run, step, 0, usize::MAX).expect("read").data
}

/// Guards that a piece sent again (a retried write whose commit was not seen), a piece that
/// overlaps what is stored, and a piece past the end never duplicate or misplace bytes: the
/// stored log stays the file's bytes, in order.
#[test]
fn log_pieces_land_once_in_order_where_the_log_ends() {
    on_each_backend(|b| {
        let mut db = b.open();
        let run = new_run(&mut db);
        assert_eq!(
            db.read_log(run, "s", 0, 100).expect("empty"),
            LogRead::default()
        );
        let first = [
            piece(run, "s", 0, b"one\n"),
            piece(run, "s", 4, b"two\n"),
            piece(run, "t", 0, b"other\n"),
        ];
        assert_eq!(
            db.append_log(&first).expect("append"),
            [Some(4), Some(8), Some(6)]
        );
        // The same batch again: nothing changes.
        assert_eq!(
            db.append_log(&first).expect("again"),
            [Some(8), Some(8), Some(6)]
        );
        // Overlapping the end: only the new part lands. Past the end: refused, the answer
        // says where the log ends.
        assert_eq!(
            db.append_log(&[
                piece(run, "s", 4, b"two\nthree\n"),
                piece(run, "s", 20, b"gap\n"),
            ])
            .expect("overlap"),
            [Some(14), Some(14)]
        );
        assert_eq!(read_all(&db, run, "s"), b"one\ntwo\nthree\n");
        assert_eq!(read_all(&db, run, "t"), b"other\n");
        // Any range reads back, across pieces.
        let r = db.read_log(run, "s", 2, 7).expect("range");
        assert_eq!((r.data.as_slice(), r.length), (&b"e\ntwo\nt"[..], 14));
        assert_eq!(db.read_log(run, "s", 14, 10).expect("end").data, b"");
        assert_eq!(db.read_log(run, "s", 99, 10).expect("past").data, b"");
        assert_eq!(db.read_log(run, "s", 3, 0).expect("none").length, 14);
        // A run that does not exist gets nothing.
        assert_eq!(
            db.append_log(&[piece(RunId(run.0 + 1000), "s", 0, b"x\n")])
                .expect("no run"),
            [None]
        );
        // Any bytes, as they are (a log is not always UTF-8).
        let binary: Vec<u8> = (0..=255u8).collect();
        assert_eq!(
            db.append_log(&[piece(run, "bin", 0, &binary)])
                .expect("bin"),
            [Some(256)]
        );
        assert_eq!(read_all(&db, run, "bin"), binary);
    });
}

/// Guards that a log written in many small pieces reads back whole from every offset (the
/// reader finds the piece an offset falls in), through the cloneable handle, from a second
/// connection.
#[test]
fn a_log_of_many_pieces_reads_back_from_every_offset() {
    on_each_backend(|b| {
        let mut db = b.open();
        let run = new_run(&mut db);
        let mut log = Vec::new();
        let mut pieces = Vec::new();
        for n in 0..200 {
            let line = format!("line {n} {}\n", "x".repeat(n % 17));
            pieces.push(piece(run, "many", log.len() as u64, line.as_bytes()));
            log.extend_from_slice(line.as_bytes());
        }
        for batch in pieces.chunks(37) {
            db.append_log(batch).expect("append");
        }
        let reader = b.open();
        for from in (0..=log.len()).step_by(13) {
            let r = reader.read_log(run, "many", from as u64, 50).expect("read");
            let want = &log[from..(from + 50).min(log.len())];
            assert_eq!(r.data, want, "from {from}");
            assert_eq!(r.length, log.len() as u64);
        }
        assert_eq!(read_all(&reader, run, "many"), log);
    });
}

/// Guards retention: a run's log pieces are deleted with the run.
#[test]
fn log_pieces_go_with_their_run() {
    on_each_backend(|b| {
        let mut db = b.open();
        let run = new_run(&mut db);
        let kept = new_run(&mut db);
        db.append_log(&[
            piece(run, "s", 0, b"gone\n"),
            piece(kept, "s", 0, b"kept\n"),
        ])
        .expect("append");
        delete_run(&mut db, run);
        assert_eq!(
            db.read_log(run, "s", 0, 100).expect("read"),
            LogRead::default()
        );
        assert_eq!(read_all(&db, kept, "s"), b"kept\n");
    });
}
