//! Copying step logs into a shared store (PostgreSQL), so the API and dashboard of every
//! node of a fleet serve every run's logs, live ones included.
//!
//! The log file stays the source of truth on the node that runs the step ([`super::logs`]
//! writes it as on a lone agent); [`LogShipper`] copies what the file holds into the store
//! off the output path: the writer only tells it how long the file has grown (a lock and a
//! counter, no I/O), and one thread per daemon reads the new bytes back from the file and
//! appends them with [`crate::store::Db::append_log`], every [`INTERVAL`] or as soon as
//! [`PIECE`] bytes wait, in pieces of at most [`PIECE`] bytes, many steps per transaction.
//! Since it copies the file's bytes from where the store's copy ends, the cap (the head as
//! it comes, the dropped marker and the tail at the end) applies as it does to the file;
//! a write that failed or whose answer was lost is simply sent again (the store skips what it
//! already holds), so the copy is complete, in order and never doubled.
//!
//! When a step ends, the recorder waits (at most [`SETTLE`]) until the store holds the
//! whole log before it records the step's end: a reader that sees the step ended in the
//! store then finds its last lines there too.
//!
//! A step resumed on another node (its first node died) has no file there: the file is first
//! filled with what the store holds ([`LogShipper::stored`]), so the file and the store's
//! copy stay one log. A file the store's copy does not start with (the store could not be
//! read when it was opened) is not copied, with a warning.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::store::{LogAppend, RunId, Store, StoreError};

/// How often new output is copied into the store.
pub(crate) const INTERVAL: Duration = Duration::from_millis(250);
/// The most bytes of one piece; this many bytes waiting are copied at once.
pub(crate) const PIECE: usize = 64 * 1024;
/// The most bytes one transaction copies.
const BATCH: usize = 1024 * 1024;
/// The longest pause between tries while the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the end of a step waits for its log to be in the store.
pub(crate) const SETTLE: Duration = Duration::from_secs(5);

/// What the shipper knows of one step's log.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    /// Bytes in the file.
    written: u64,
    /// Bytes in the store; `None` until read from it.
    shipped: Option<u64>,
    /// Bytes the file held when it was opened without the store's copy in it: the store's
    /// copy must not be longer.
    opened_with: u64,
    /// The step ended: the entry goes once its log is in the store.
    ended: bool,
    /// Not copied (the file cannot be read, or does not match the store's copy).
    failed: bool,
}

impl Entry {
    fn settled(&self) -> bool {
        self.failed || self.shipped.is_some_and(|s| s >= self.written)
    }
}

#[derive(Debug, Default)]
struct State {
    steps: HashMap<RunId, HashMap<String, Entry>>,
    /// Copy at once, without waiting for the interval.
    urgent: bool,
}

impl State {
    fn entry(&mut self, run: RunId, step: &str) -> Option<&mut Entry> {
        self.steps.get_mut(&run).and_then(|m| m.get_mut(step))
    }

    fn remove(&mut self, run: RunId, step: &str) {
        if let Some(m) = self.steps.get_mut(&run) {
            m.remove(step);
            if m.is_empty() {
                self.steps.remove(&run);
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Wakes the shipping thread.
    work: Condvar,
    /// Wakes those waiting for a step's log to be in the store.
    progress: Condvar,
    store: Store,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handle to the daemon's log-copying thread (cheap to clone). The thread ends once
/// every handle is gone, after a last copy.
#[derive(Debug, Clone)]
pub(crate) struct LogShipper {
    inner: Arc<Inner>,
}

/// One step's share of a copy.
struct Job {
    run: RunId,
    step: String,
    path: PathBuf,
    from: Option<u64>,
    to: u64,
    opened_with: u64,
}

impl LogShipper {
    /// A shipper when the store is shared (PostgreSQL); `None` on SQLite, whose node keeps
    /// its logs in files only.
    pub(crate) fn for_store(store: &Store) -> Option<LogShipper> {
        (store.kind() == "postgres").then(|| LogShipper::start(store.clone()))
    }

    /// Starts the copying thread on `store`.
    pub(crate) fn start(store: Store) -> LogShipper {
        let inner = Arc::new(Inner {
            state: Mutex::default(),
            work: Condvar::new(),
            progress: Condvar::new(),
            store,
        });
        let thread = inner.clone();
        if let Err(err) = std::thread::Builder::new()
            .name("log-shipper".into())
            .spawn(move || ship_loop(&thread))
        {
            tracing::error!(error = %err, "cannot start the thread that copies step logs to the store");
        }
        LogShipper { inner }
    }

    /// What the store holds of a step's log (to fill a new file with). Blocking.
    pub(crate) fn stored(&self, run: RunId, step: &str) -> Result<Vec<u8>, StoreError> {
        self.inner
            .store
            .blocking_read(|db| db.read_log(run, step, 0, usize::MAX))
            .map(|r| r.data)
    }

    /// A step's log file was opened holding `written` bytes; `stored`: how many of them are
    /// the store's copy put there (`None`: the store was not read).
    pub(crate) fn opened(
        &self,
        run: RunId,
        step: &str,
        path: PathBuf,
        written: u64,
        stored: Option<u64>,
    ) {
        let mut st = self.inner.lock();
        let steps = st.steps.entry(run).or_default();
        match steps.get_mut(step) {
            Some(e) => {
                e.written = written;
                e.ended = false;
            }
            None => {
                steps.insert(
                    step.to_string(),
                    Entry {
                        path,
                        written,
                        shipped: stored,
                        opened_with: written,
                        ended: false,
                        failed: false,
                    },
                );
            }
        }
    }

    /// The step's log file holds `written` bytes now.
    pub(crate) fn wrote(&self, run: RunId, step: &str, written: u64) {
        let mut st = self.inner.lock();
        let Some(e) = st.entry(run, step) else {
            return;
        };
        e.written = written;
        let waiting = written.saturating_sub(e.shipped.unwrap_or(0));
        if waiting >= PIECE as u64 && !st.urgent {
            st.urgent = true;
            self.inner.work.notify_one();
        }
    }

    /// The step ended: its log is complete at `written` bytes; copy it at once.
    pub(crate) fn ended(&self, run: RunId, step: &str, written: u64) {
        let mut st = self.inner.lock();
        let Some(e) = st.entry(run, step) else {
            return;
        };
        e.written = written;
        e.ended = true;
        st.urgent = true;
        self.inner.work.notify_one();
    }

    /// Waits until the store holds the whole log of `step` (true), or not past `limit` or
    /// once `stop` says so (false: the reader may miss the last lines for a while).
    pub(crate) fn settle(
        &self,
        run: RunId,
        step: &str,
        limit: Duration,
        stop: &dyn Fn() -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        let mut st = self.inner.lock();
        st.urgent = true;
        self.inner.work.notify_one();
        loop {
            match st.entry(run, step) {
                None => return true,
                Some(e) if e.settled() => return !e.failed,
                Some(_) => {}
            }
            let now = Instant::now();
            if now >= deadline || stop() {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            st = self
                .inner
                .progress
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The copying thread: a copy every [`INTERVAL`] (or at once when asked), pausing longer
/// while the store fails; ends after a last copy once every handle is gone.
fn ship_loop(inner: &Arc<Inner>) {
    let mut last = Instant::now();
    let mut backoff: Option<Duration> = None;
    let mut failing = false;
    loop {
        let alone = || Arc::strong_count(inner) == 1;
        let jobs = {
            let mut st = inner.lock();
            let pause = backoff.unwrap_or(INTERVAL);
            loop {
                if alone() || (backoff.is_none() && st.urgent) {
                    break;
                }
                let now = Instant::now();
                if now >= last + pause {
                    break;
                }
                let wait = (last + pause - now).min(INTERVAL);
                st = inner
                    .work
                    .wait_timeout(st, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            st.urgent = false;
            collect(&mut st)
        };
        inner.progress.notify_all();
        let last_round = alone();
        last = Instant::now();
        if !jobs.is_empty() {
            match ship(inner, jobs) {
                Ok(()) => {
                    if failing {
                        tracing::info!("step logs are copied to the store again");
                    }
                    failing = false;
                    backoff = None;
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %err, "cannot copy step logs to the store; retrying");
                    }
                    failing = true;
                    backoff = Some(backoff.map_or(INTERVAL * 2, |b| (b * 2).min(MAX_BACKOFF)));
                }
            }
            inner.progress.notify_all();
        }
        if last_round {
            return;
        }
    }
}

/// The steps with bytes to copy; forgets ended steps whose log is in the store.
fn collect(st: &mut State) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut done = Vec::new();
    for (run, steps) in &st.steps {
        for (step, e) in steps {
            if e.failed || e.shipped.is_some_and(|s| s >= e.written) {
                if e.ended {
                    done.push((*run, step.clone()));
                }
                continue;
            }
            jobs.push(Job {
                run: *run,
                step: step.clone(),
                path: e.path.clone(),
                from: e.shipped,
                to: e.written,
                opened_with: e.opened_with,
            });
        }
    }
    for (run, step) in done {
        st.remove(run, &step);
    }
    jobs
}

/// Copies what `jobs` name into the store, in one transaction (at most [`BATCH`] bytes; the
/// rest goes next round).
fn ship(inner: &Inner, mut jobs: Vec<Job>) -> Result<(), StoreError> {
    // Where the store's copy of each newly seen log ends.
    for job in jobs.iter_mut().filter(|j| j.from.is_none()) {
        let (run, step) = (job.run, job.step.clone());
        let length = inner
            .store
            .blocking_read(move |db| db.read_log(run, &step, 0, 0))?
            .length;
        let mut st = inner.lock();
        let Some(e) = st.entry(job.run, &job.step) else {
            continue;
        };
        if length > job.opened_with {
            tracing::warn!(
                run = %job.run,
                step = %job.step,
                "the store's copy of this step log is not where the log file starts; not copying it"
            );
            e.failed = true;
        } else {
            e.shipped = Some(length);
            job.from = Some(length);
        }
    }
    let mut pieces = Vec::new();
    let mut budget = BATCH;
    for job in &jobs {
        let Some(from) = job.from else { continue };
        if from >= job.to || budget == 0 {
            continue;
        }
        let want = usize::try_from(job.to - from)
            .unwrap_or(usize::MAX)
            .min(budget);
        match read_range(&job.path, from, want) {
            Ok(bytes) => {
                budget -= bytes.len();
                let mut offset = from;
                for part in bytes.chunks(PIECE) {
                    pieces.push(LogAppend {
                        run: job.run,
                        step: job.step.clone(),
                        offset,
                        data: part.to_vec(),
                    });
                    offset += part.len() as u64;
                }
            }
            Err(err) => {
                tracing::warn!(
                    run = %job.run,
                    step = %job.step,
                    path = %job.path.display(),
                    error = %err,
                    "cannot read the step log to copy it to the store"
                );
                if let Some(e) = inner.lock().entry(job.run, &job.step) {
                    e.failed = true;
                }
            }
        }
    }
    if pieces.is_empty() {
        return Ok(());
    }
    let keys: Vec<(RunId, String)> = pieces.iter().map(|p| (p.run, p.step.clone())).collect();
    let answers = inner
        .store
        .blocking_write(move |db| db.append_log(&pieces))?;
    let mut st = inner.lock();
    for ((run, step), answer) in keys.into_iter().zip(answers) {
        match answer {
            // Where the store's copy ends now (short of the file after a gap: the next
            // round copies from there).
            Some(length) => {
                if let Some(e) = st.entry(run, &step) {
                    e.shipped = Some(length);
                }
            }
            // The run is gone (retention): nothing more to copy.
            None => st.remove(run, &step),
        }
    }
    Ok(())
}

/// Up to `len` bytes of the file at `path` from `from`.
fn read_range(path: &std::path::Path, from: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::with_capacity(len.min(BATCH));
    file.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::run::logs::{RunLogs, dropped_marker};
    use crate::state_dir::step_log_path;
    use crate::store::{NewRun, Trigger, TriggerKind};

    /// A new run on `store`.
    fn new_run(store: &Store) -> RunId {
        store
            .blocking_write(|db| {
                db.enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
                    .map(|e| e.run_id())
            })
            .expect("a run")
    }

    fn stored(store: &Store, run: RunId, step: &str) -> Vec<u8> {
        store
            .blocking_read(|db| db.read_log(run, step, 0, usize::MAX))
            .expect("read the stored log")
            .data
    }

    fn file(dir: &std::path::Path, run: RunId, step: &str) -> Vec<u8> {
        std::fs::read(step_log_path(dir, run, step)).expect("read the log file")
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn postgres() -> Store {
        Store::connect_postgres(&crate::store::test_pg::database_url(), 2).expect("connect")
    }

    /// Guards the copy of a running step's log: its lines reach the store while the step
    /// still prints, and once the step's end is settled the store holds the file's bytes
    /// exactly, the cap (head, dropped marker, tail) included.
    #[test]
    fn a_log_reaches_the_store_live_and_whole_with_its_cap() {
        let store = postgres();
        let run = new_run(&store);
        let dir = tempfile::tempdir().expect("tempdir");
        let shipper = LogShipper::start(store.clone());
        let mut logs = RunLogs::new(dir.path(), run, 400).shipping(Some(shipper));
        logs.start("build", 1);
        let mut early = String::new();
        for n in 0..5 {
            logs.line("build", &format!("early {n}"));
            early.push_str(&format!("early {n}\n"));
        }
        wait_until("the first lines in the store", || {
            stored(&store, run, "build") == early.as_bytes()
        });
        for n in 0..300 {
            logs.line("build", &format!("middle {n}"));
        }
        logs.line("build", "error: it broke");
        logs.finish("build");
        assert!(logs.settle("build", &|| false), "settled");
        let text = file(dir.path(), run, "build");
        assert_eq!(stored(&store, run, "build"), text);
        let text = String::from_utf8(text).expect("utf-8");
        assert!(text.starts_with(&early), "{text}");
        let marker = dropped_marker(0);
        let marker = marker.trim_start_matches("[... 0");
        assert!(text.contains(marker), "no dropped marker: {text}");
        assert!(text.ends_with("middle 299\nerror: it broke\n"), "{text}");
    }

    /// Guards a step resumed on another node (its first node died): the new node's file
    /// starts with what the store holds, so its copy continues the same log, byte for byte.
    #[test]
    fn a_step_resumed_elsewhere_continues_the_stored_log() {
        let store = postgres();
        let run = new_run(&store);
        let (a, c) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("c"),
        );
        let mut first =
            RunLogs::new(a.path(), run, 10_000).shipping(Some(LogShipper::start(store.clone())));
        first.start("deploy", 1);
        first.line("deploy", "from node a");
        wait_until("node a's line in the store", || {
            stored(&store, run, "deploy") == b"from node a\n"
        });
        // Node a dies here; node c runs the step again.
        std::mem::forget(first);
        let mut second =
            RunLogs::new(c.path(), run, 10_000).shipping(Some(LogShipper::start(store.clone())));
        second.start("deploy", 1);
        second.line("deploy", "from node c");
        second.finish("deploy");
        assert!(second.settle("deploy", &|| false));
        assert_eq!(file(c.path(), run, "deploy"), b"from node a\nfrom node c\n");
        assert_eq!(stored(&store, run, "deploy"), b"from node a\nfrom node c\n");
    }

    /// Guards a restart on the same node whose last lines never reached the store: the
    /// file's bytes past the store's copy are copied, none twice.
    #[test]
    fn a_restart_copies_what_the_store_missed() {
        let store = postgres();
        let run = new_run(&store);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut before = RunLogs::new(dir.path(), run, 10_000);
        before.line("t", "one");
        before.line("t", "two");
        drop(before);
        store
            .blocking_write(move |db| {
                db.append_log(&[LogAppend {
                    run,
                    step: "t".into(),
                    offset: 0,
                    data: b"one\n".to_vec(),
                }])
            })
            .expect("the part copied before the crash");
        let mut after =
            RunLogs::new(dir.path(), run, 10_000).shipping(Some(LogShipper::start(store.clone())));
        after.start("t", 2);
        after.line("t", "three");
        after.finish("t");
        assert!(after.settle("t", &|| false));
        let want = b"one\ntwo\n[agent: attempt 2]\nthree\n";
        assert_eq!(file(dir.path(), run, "t"), want);
        assert_eq!(stored(&store, run, "t"), want);
    }

    /// Guards the copy across a database outage: the lines printed while the server is down
    /// reach the store once it is back, in order, complete and never twice.
    #[test]
    fn lines_printed_while_the_database_is_down_arrive_once_it_is_back() {
        let cluster = crate::store::test_pg::Cluster::start().expect("a cluster");
        crate::store::test_pg::create_database(&cluster.url("postgres"), "logs")
            .expect("a database");
        let store = Store::connect_postgres(&cluster.url("logs"), 2).expect("connect");
        let run = new_run(&store);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut logs =
            RunLogs::new(dir.path(), run, 1 << 20).shipping(Some(LogShipper::start(store.clone())));
        logs.start("s", 1);
        logs.line("s", "before");
        wait_until("the first line in the store", || {
            stored(&store, run, "s") == b"before\n"
        });
        cluster.stop_server();
        for n in 0..50 {
            logs.line("s", &format!("during {n}"));
        }
        // Not settled while the database is down.
        assert!(!logs.settle("s", &|| true));
        cluster.start_server().expect("the server again");
        logs.line("s", "after");
        logs.finish("s");
        let want = file(dir.path(), run, "s");
        wait_until("the whole log in the store", || {
            store
                .blocking_read(|db| db.read_log(run, "s", 0, usize::MAX))
                .is_ok_and(|r| r.data == want)
        });
    }
}
