//! [`Store`]: the cloneable, async handle every part of the daemon holds.
//!
//! One writer thread owns the write connection ([`Db`]) and runs write jobs one at a time, in
//! the order they were sent; each job is one store method, so one transaction. Reads run on
//! the blocking pool with pooled read connections ([`Readers`]), so neither ever runs SQLite
//! on an async worker thread. The writer thread ends when the last handle is dropped (after
//! the jobs already sent have run).

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc;

use super::readers::MAX_IDLE;

use tokio::sync::oneshot;

use super::{Db, Readers, StoreError};

/// A write job: runs on the writer thread with the write connection.
type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// The handle to the store: cheap to clone, usable from async code and from blocking threads.
#[derive(Debug, Clone)]
pub struct Store {
    writer: mpsc::Sender<Job>,
    readers: Readers,
    kind: &'static str,
}

impl Store {
    /// Opens (creating if needed) `state_dir/agent.sqlite3`, migrates it and starts the
    /// writer thread. Blocks: call it at boot, off the async runtime or before it.
    pub fn open_in_dir(state_dir: &Path) -> Result<Store, StoreError> {
        Store::from_db(Db::open_in_dir(state_dir)?)
    }

    /// Connects to the PostgreSQL database at `url` (migrating it) and starts the writer
    /// thread; the read pool keeps up to `pool` idle connections. Blocks, like
    /// [`Store::open_in_dir`].
    pub fn connect_postgres(url: &str, pool: usize) -> Result<Store, StoreError> {
        Store::with_pool(Db::connect_postgres(url)?, pool)
    }

    /// A handle whose writer thread owns `db`.
    pub(crate) fn from_db(db: Db) -> Result<Store, StoreError> {
        Store::with_pool(db, MAX_IDLE)
    }

    /// [`Store::from_db`] with up to `pool` idle read connections (`store.pool`).
    pub(crate) fn with_db_pool(db: Db, pool: usize) -> Result<Store, StoreError> {
        Store::with_pool(db, pool)
    }

    /// A handle whose writer thread owns `db`, with up to `pool` idle read connections.
    fn with_pool(db: Db, pool: usize) -> Result<Store, StoreError> {
        let kind = db.kind();
        let readers = Readers::new(db.another()?, pool);
        let (writer, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut db = db;
                while let Ok(job) = jobs.recv() {
                    // A panicking job drops its reply (its caller sees `Closed`); the writer
                    // goes on with the next one.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut db)));
                }
            })
            .map_err(|e| StoreError::Backend {
                message: format!("cannot start the store's writer thread: {e}"),
                transient: false,
            })?;
        Ok(Store {
            writer,
            readers,
            kind,
        })
    }

    /// The backend: `sqlite` or `postgres`.
    pub(crate) fn kind(&self) -> &'static str {
        self.kind
    }

    fn send<T, F>(&self, f: F) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let _ = tx.send(f(db));
        });
        self.writer.send(job).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Runs `f` on the writer thread (one transaction per store method) and waits for it.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.send(f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for code already on a blocking thread (never call it on an async
    /// worker thread: it blocks until the writer has run `f`).
    pub(crate) fn blocking_write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.send(f)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// Runs the read `f` on the blocking pool with a read connection.
    pub(crate) async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Db) -> Result<T, E> + Send + 'static,
    {
        self.readers.read(f).await
    }

    /// [`Store::read`] answering the store's own error.
    pub(crate) async fn query<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.read(f).await
    }

    /// [`Store::read`] for code already on a blocking thread.
    pub(crate) fn blocking_read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnOnce(&Db) -> Result<T, E>,
    {
        self.readers.blocking(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::overlap::{Admission, Overlap};
    use crate::store::{NewRun, RunFilter, RunStatus, Trigger, TriggerKind};

    /// A fresh store handle on each backend: SQLite in `dir` and a fresh PostgreSQL
    /// database, named. The PostgreSQL connection is opened on the blocking pool, as the
    /// daemon does.
    async fn each_backend(dir: &std::path::Path) -> Vec<(&'static str, Store)> {
        let sqlite = Store::open_in_dir(dir).expect("open");
        let postgres = tokio::task::spawn_blocking(|| {
            Store::connect_postgres(&crate::store::test_pg::database_url(), 4)
        })
        .await
        .expect("join")
        .expect("connect");
        vec![("sqlite", sqlite), ("postgres", postgres)]
    }

    fn grouped(workflow: &str) -> NewRun {
        let mut run = NewRun::new(workflow, Trigger::new(TriggerKind::Manual));
        run.concurrency_group = Some("deploy".into());
        run
    }

    /// Two tasks enqueue a run of the same concurrency group under `skip` at once, through
    /// clones of one handle: the rule is decided in the transaction that inserts, so exactly
    /// one run is queued and the other names it as the active run. On each backend.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_enqueues_under_skip_queue_exactly_one_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (backend, store) in each_backend(dir.path()).await {
            for round in 0..20 {
                let tasks: Vec<_> = (0..2)
                    .map(|i| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let mut run = grouped(&format!("w{round}-{i}"));
                            run.overlap = Some(Overlap::Skip);
                            store.write(move |db| db.enqueue(&run)).await
                        })
                    })
                    .collect();
                let mut queued = Vec::new();
                let mut skipped = Vec::new();
                for t in tasks {
                    match t.await.expect("join").expect("enqueue") {
                        Admission::Queued { run, cancel } => {
                            assert!(cancel.is_empty());
                            queued.push(run.run_id());
                        }
                        Admission::Skipped { active } => skipped.push(active),
                    }
                }
                assert_eq!(
                    queued.len(),
                    1,
                    "{backend}, round {round}: {queued:?} {skipped:?}"
                );
                assert_eq!(
                    skipped, queued,
                    "{backend}: the skipped one names the queued run"
                );
                let active = store
                    .query(|db| db.active_runs_in_group("deploy"))
                    .await
                    .expect("group");
                assert_eq!(active.len(), 1);
                // Ends the round's run so the next round starts with an empty group.
                let id = queued[0];
                store
                    .write(move |db| {
                        db.finish_run(id, &crate::store::RunFinish::new(RunStatus::Cancelled))
                    })
                    .await
                    .expect("cancel");
            }
            let runs = store
                .query(|db| db.list_runs(&RunFilter::default(), 100))
                .await
                .expect("list");
            assert_eq!(runs.len(), 20, "{backend}");
        }
    }

    /// `cancel_previous` queues the new run and names every older active run of the group
    /// (decided in the same transaction); `queue` leaves them. On each backend.
    #[tokio::test]
    async fn cancel_previous_names_the_older_runs_of_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (backend, store) in each_backend(dir.path()).await {
            let mut first = grouped("a");
            first.overlap = Some(Overlap::Queue);
            let first = match store
                .write(move |db| db.enqueue(&first))
                .await
                .expect("enqueue")
            {
                Admission::Queued { run, .. } => run.run_id(),
                other => panic!("{other:?}"),
            };
            let mut second = grouped("b");
            second.overlap = Some(Overlap::CancelPrevious);
            match store
                .write(move |db| db.enqueue(&second))
                .await
                .expect("enqueue")
            {
                Admission::Queued { cancel, .. } => assert_eq!(cancel, [first], "{backend}"),
                other => panic!("{backend}: {other:?}"),
            }
        }
    }

    /// The writer goes on after a job panics; the panicking caller gets `Closed`. (The
    /// handle's own mechanics: SQLite only.)
    #[tokio::test]
    async fn a_panicking_job_does_not_stop_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_in_dir(dir.path()).expect("open");
        let err = store
            .write(|_db| -> Result<(), StoreError> { panic!("boom") })
            .await
            .expect_err("panicked");
        assert!(matches!(err, StoreError::Closed));
        let run = grouped("after");
        store
            .write(move |db| db.enqueue_run(&run))
            .await
            .expect("the writer is still there");
    }
}
