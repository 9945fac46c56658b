//! `GET /api/v1/runs/{id}/steps/{step}/log`: a step's log file as `text/plain`, or with
//! `?follow=true` a server-sent event stream that tails the file until the step ends.
//!
//! The scheduler writes the files (capped, secrets masked) under `state_dir/logs/`; this
//! module only reads them. Follow mode sends one `log` event per line (the event id is the
//! byte offset after the line, so a client that reconnects with `Last-Event-ID` resumes where
//! it stopped), then one `end` event whose data is `{"status": ...}` of the step (or of the
//! run, when it ended without the step running). New lines are noticed through the daemon's
//! log broadcast and lifecycle events (both lossy: a follower that lags just reads the file
//! again), with a slow poll of the file as a fallback. The file is read in chunks of at
//! most [`CHUNK`] bytes and sent through a small queue, so a slow client holds the reader
//! back instead of growing memory.
//!
//! On a shared store (a fleet on PostgreSQL) a step another node runs or ran has no file here:
//! its log is read from the store, where that node copies its file byte for byte (see
//! [`crate::daemon::run::log_ship`]), so offsets and `Last-Event-ID` mean the same on every
//! node. A follower of such a step polls the store every [`POLL`] until the step ends; the
//! node that runs a step has its whole log in the store before it records the step's end, so
//! a follower that saw the end reads every line.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::api::{ErrorBody, LogEnd};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{broadcast, mpsc};

use super::ApiState;
use super::error::ApiError;
use super::view;
use crate::bus::LogChunk;
use crate::daemon::handle::DaemonEvent;
use crate::state_dir::step_log_read_path;
use crate::store::{RunId, RunStatus, StepStatus};

/// How often a follower looks at the file when no event wakes it.
const POLL: Duration = Duration::from_millis(250);
/// The most bytes one read hands to the stream.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
}

/// A step id from the path: any text a workflow may use as a step id (a sub-workflow's
/// steps hold `/` or `.`); the file name is derived by
/// [`crate::state_dir::step_log_path`], which keeps it inside the run's log directory.
fn step_id(text: &str) -> Result<&str, ApiError> {
    if text.is_empty() || text.len() > 512 || text.chars().any(char::is_control) {
        Err(ApiError::NotFound(format!(
            "step `{}` not found",
            text.escape_debug()
        )))
    } else {
        Ok(text)
    }
}

/// Where the step's log file is.
fn log_path(state: &ApiState, run: RunId, step: &str) -> PathBuf {
    step_log_read_path(&state.handle.shared.state_dir, run, step)
}

/// Whether logs of steps run by other nodes are in the store (a fleet's shared store).
fn shared_store(state: &ApiState) -> bool {
    state.handle.shared.store.kind() == "postgres"
}

/// What the store holds of a step's log from `from` (at most `max` bytes); nothing on a
/// store that keeps no logs.
async fn stored_log(
    state: &ApiState,
    run: RunId,
    step: &str,
    from: u64,
    max: usize,
) -> Result<Vec<u8>, ApiError> {
    if !shared_store(state) {
        return Ok(Vec::new());
    }
    let step = step.to_string();
    state
        .stores
        .read(move |db| Ok(db.read_log(run, &step, from, max)?.data))
        .await
}

/// Where a run and one of its steps are, as the store says.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Progress {
    run: RunStatus,
    step: Option<StepStatus>,
}

impl Progress {
    /// True when no more lines will be written for the step.
    fn step_ended(self) -> bool {
        let step_done = matches!(self.step, Some(s) if s != StepStatus::Running);
        let run_done = self.run.is_final() || self.run == RunStatus::Interrupted;
        step_done || run_done
    }

    /// The status reported in the `end` event.
    fn end_status(self) -> &'static str {
        match self.step {
            Some(StepStatus::Running) | None => self.run.as_str(),
            Some(s) => s.as_str(),
        }
    }
}

/// Reads the run's and the step's status; `None` when the run does not exist.
async fn progress(state: &ApiState, run: RunId, step: &str) -> Result<Option<Progress>, ApiError> {
    let step = step.to_string();
    state
        .stores
        .read(move |store| {
            Ok(store
                .get_run_with_steps(run)?
                .map(|(record, steps)| Progress {
                    run: record.status,
                    step: steps.iter().find(|s| s.step_id == step).map(|s| s.status),
                }))
        })
        .await
}

/// The handler.
pub(crate) async fn step_log(
    State(state): State<ApiState>,
    Path((id, step)): Path<(String, String)>,
    query: Result<Query<LogQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
    let follow = match query.follow.as_deref().map(str::trim) {
        None | Some("" | "false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`follow` must be `true` or `false`, not `{other}`"
            )));
        }
    };
    let run = view::parse_run_id(&id)
        .ok_or_else(|| ApiError::NotFound(format!("run `{id}` not found")))?;
    let step = step_id(&step)?.to_string();
    let Some(now) = progress(&state, run, &step).await? else {
        return Err(ApiError::NotFound(format!("run {run} not found")));
    };
    let path = log_path(&state, run, &step);
    if !follow {
        return match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(text_plain(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Another node's step: its log is in the store.
                let stored = stored_log(&state, run, &step, 0, usize::MAX).await?;
                match now.step {
                    _ if !stored.is_empty() => Ok(text_plain(stored)),
                    // Recorded but nothing written (yet): an empty log.
                    Some(_) => Ok(text_plain(Vec::new())),
                    None => Err(ApiError::NotFound(format!(
                        "step `{step}` of run {run} has no log"
                    ))),
                }
            }
            Err(e) => Err(ApiError::Internal(format!(
                "cannot read `{}`: {e}",
                path.display()
            ))),
        };
    }
    if now.step.is_none() && (now.run.is_final() || now.run == RunStatus::Interrupted) {
        // The run is over and never reached the step: there is nothing to follow.
        if tokio::fs::metadata(&path).await.is_err()
            && stored_log(&state, run, &step, 0, 1).await?.is_empty()
        {
            return Err(ApiError::NotFound(format!(
                "step `{step}` of run {run} has no log"
            )));
        }
    }
    let offset = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let wake = Wake {
        events: state.handle.shared.events.watch(),
        logs: state.handle.shared.events.logs(),
    };
    tokio::spawn(follow_task(state, run, step, path, offset, wake, tx));
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|e| e.map(Ok::<Event, Infallible>))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn text_plain(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response()
}

/// What wakes a follower up: lifecycle events and output notices (both lossy).
struct Wake {
    events: broadcast::Receiver<DaemonEvent>,
    logs: broadcast::Receiver<LogChunk>,
}

/// Tails one step's log into `tx` until the step ends, the client goes away or the daemon
/// shuts down.
async fn follow_task(
    state: ApiState,
    run: RunId,
    step: String,
    path: PathBuf,
    mut offset: u64,
    wake: Wake,
    tx: mpsc::Sender<Event>,
) {
    let Wake {
        mut events,
        mut logs,
    } = wake;
    let mut partial: Vec<u8> = Vec::new();
    let handle = state.handle.clone();
    loop {
        // Notices of output already in the file are stale: the read below sees it.
        while !matches!(
            logs.try_recv(),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
        ) {}
        // Status first, then the file: every line written before the step ended is read
        // after we saw it end.
        let now = match progress(&state, run, &step).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                let _ = tx.send(end_event("deleted")).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(error_event(&e.to_string())).await;
                return;
            }
        };
        let more;
        match read_more(&state, run, &step, &path, offset).await {
            Ok(bytes) => {
                more = bytes.len() == CHUNK;
                offset += bytes.len() as u64;
                partial.extend_from_slice(&bytes);
                if !send_lines(&tx, &mut partial, offset, false).await {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(error_event(&e)).await;
                return;
            }
        }
        if now.step_ended() {
            // Drain what is left of the file, including a last line without newline.
            loop {
                match read_more(&state, run, &step, &path, offset).await {
                    Ok(bytes) if !bytes.is_empty() => {
                        offset += bytes.len() as u64;
                        partial.extend_from_slice(&bytes);
                        if !send_lines(&tx, &mut partial, offset, false).await {
                            return;
                        }
                    }
                    _ => break,
                }
            }
            if !send_lines(&tx, &mut partial, offset, true).await {
                return;
            }
            let _ = tx.send(end_event(now.end_status())).await;
            return;
        }
        if more {
            // The file holds more than one read: go on at the client's pace.
            continue;
        }
        // Wait for a sign of life: output or an event about this run, the poll tick, the
        // client leaving, or shutdown.
        let output = async {
            loop {
                match logs.recv().await {
                    Ok(chunk) if chunk.run_id == run && *chunk.step == *step => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(
                        DaemonEvent::StepStarted { run_id, .. }
                        | DaemonEvent::StepFinished { run_id, .. }
                        | DaemonEvent::RunStarted { run_id, .. }
                        | DaemonEvent::RunFinished { run_id, .. },
                    ) if run_id == run => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    // No more events: fall back to polling.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        tokio::select! {
            () = wait => {}
            () = output => {}
            () = tokio::time::sleep(POLL) => {}
            () = tx.closed() => return,
            () = handle.shutdown_requested() => {
                let _ = tx.send(end_event("shutdown")).await;
                return;
            }
        }
    }
}

/// Reads what the log holds past `offset` (at most [`CHUNK`] bytes): the file, or when there
/// is none here (another node runs the step) the store's copy; nothing when neither exists
/// yet.
async fn read_more(
    state: &ApiState,
    run: RunId,
    step: &str,
    path: &std::path::Path,
    offset: u64,
) -> Result<Vec<u8>, String> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return stored_log(state, run, step, offset, CHUNK)
                .await
                .map_err(|e| e.to_string());
        }
        Err(e) => return Err(format!("cannot open `{}`: {e}", path.display())),
    };
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(CHUNK as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    Ok(buf)
}

/// Sends every complete line of `partial` (all of it when `flush`) as `log` events; false
/// when the client has gone.
async fn send_lines(
    tx: &mpsc::Sender<Event>,
    partial: &mut Vec<u8>,
    offset: u64,
    flush: bool,
) -> bool {
    let end = if flush {
        partial.len()
    } else {
        match partial.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None => return true,
        }
    };
    if end == 0 {
        return true;
    }
    let rest = partial.split_off(end);
    let done = std::mem::replace(partial, rest);
    // The id of each event is the offset after its line.
    let mut line_end = offset - partial.len() as u64 - done.len() as u64;
    for line in done.split_inclusive(|b| *b == b'\n') {
        line_end += line.len() as u64;
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\n').trim_end_matches('\r');
        let event = Event::default()
            .event("log")
            .id(line_end.to_string())
            .data(text);
        if tx.send(event).await.is_err() {
            return false;
        }
    }
    true
}

fn end_event(status: &str) -> Event {
    Event::default().event("end").data(body(&LogEnd {
        status: status.to_string(),
    }))
}

fn error_event(message: &str) -> Event {
    Event::default().event("error").data(body(&ErrorBody {
        error: message.to_string(),
        diagnostics: None,
    }))
}

fn body(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_dir::step_log_path;
    use std::path::Path;

    #[test]
    fn step_ids_never_name_paths() {
        for ok in ["build-1.x_y", "call/inner", "..", "../../etc/passwd"] {
            let id = step_id(ok).expect("accepted");
            let path = step_log_path(Path::new("/state"), RunId(3), id);
            assert_eq!(path.parent(), Some(Path::new("/state/logs/3")), "{ok}");
        }
        for bad in ["", "a\nb", "a\u{0}b"] {
            assert!(step_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_step_ends_when_it_or_its_run_does() {
        let p = |run, step| Progress { run, step };
        assert!(!p(RunStatus::Queued, None).step_ended());
        assert!(!p(RunStatus::Running, None).step_ended());
        assert!(!p(RunStatus::Running, Some(StepStatus::Running)).step_ended());
        assert!(p(RunStatus::Running, Some(StepStatus::Failed)).step_ended());
        assert!(p(RunStatus::Succeeded, None).step_ended());
        assert!(p(RunStatus::Interrupted, Some(StepStatus::Running)).step_ended());
        assert_eq!(
            p(RunStatus::Cancelled, Some(StepStatus::Running)).end_status(),
            "cancelled"
        );
        assert_eq!(
            p(RunStatus::Running, Some(StepStatus::Succeeded)).end_status(),
            "succeeded"
        );
    }

    /// An API state over `store`, its files under `state_dir`.
    fn api_state(store: crate::store::Store, state_dir: &Path) -> ApiState {
        let (handle, _parts) = crate::daemon::handle::DaemonHandle::new(
            crate::config::Config::default(),
            state_dir.to_path_buf(),
            store.clone(),
            std::sync::Arc::new(crate::engine::Engine::new(
                crate::engine::EngineConfig::default(),
            )),
            Default::default(),
        );
        ApiState {
            handle,
            stores: super::super::Reads(store),
            metrics: Default::default(),
        }
    }

    /// A new run on `store`.
    fn new_run(store: &crate::store::Store) -> RunId {
        use crate::store::{NewRun, Trigger, TriggerKind};
        store
            .blocking_write(|db| {
                db.enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
                    .map(|e| e.run_id())
            })
            .expect("a run")
    }

    fn put_log(store: &crate::store::Store, run: RunId, step: &str, data: &[u8]) {
        let piece = crate::store::LogAppend {
            run,
            step: step.into(),
            offset: 0,
            data: data.to_vec(),
        };
        store
            .blocking_write(move |db| db.append_log(&[piece]))
            .expect("append");
    }

    /// Guards the reads of a step another node runs: with no file here, a shared store's
    /// copy is read from any offset (the offsets a follower's `Last-Event-ID` names); the
    /// file wins when there is one; on SQLite the store is never read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_without_a_file_here_is_read_from_the_shared_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = tokio::task::spawn_blocking(|| {
            crate::store::Store::connect_postgres(&crate::store::test_pg::database_url(), 2)
        })
        .await
        .expect("join")
        .expect("connect");
        let state = api_state(store.clone(), dir.path());
        let run = tokio::task::block_in_place(|| {
            let run = new_run(&store);
            put_log(&store, run, "s", b"one\ntwo\n");
            run
        });
        let path = log_path(&state, run, "s");
        let read = |from| read_more(&state, run, "s", &path, from);
        assert_eq!(read(0).await.expect("read"), b"one\ntwo\n");
        assert_eq!(read(4).await.expect("read"), b"two\n");
        assert_eq!(read(8).await.expect("read"), b"");
        assert_eq!(
            stored_log(&state, run, "s", 0, usize::MAX)
                .await
                .expect("stored"),
            b"one\ntwo\n"
        );
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, "here\n").expect("write");
        assert_eq!(read(0).await.expect("read"), b"here\n");

        let lone = tempfile::tempdir().expect("tempdir");
        let sqlite = crate::store::Store::open_in_dir(lone.path()).expect("sqlite");
        let lone_state = api_state(sqlite.clone(), lone.path());
        let run = tokio::task::block_in_place(|| {
            let run = new_run(&sqlite);
            put_log(&sqlite, run, "s", b"never read\n");
            run
        });
        let path = log_path(&lone_state, run, "s");
        assert_eq!(
            read_more(&lone_state, run, "s", &path, 0)
                .await
                .expect("read"),
            b""
        );
    }

    #[tokio::test]
    async fn lines_become_events_with_offsets() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut partial = b"one\ntwo\nthr".to_vec();
        assert!(send_lines(&tx, &mut partial, 11, false).await);
        assert_eq!(partial, b"thr");
        assert!(send_lines(&tx, &mut partial, 11, true).await);
        drop(tx);
        let mut got = Vec::new();
        while let Some(e) = rx.recv().await {
            got.push(format!("{e:?}"));
        }
        assert_eq!(got.len(), 3);
    }
}
