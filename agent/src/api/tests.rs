//! In-process tests of the API: a real server on 127.0.0.1:0 in front of a stand-in
//! scheduler (which answers commands from the store), driven over HTTP by a small reqwest
//! client of its own ([`Client`] below: the API does not depend on the CLI).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::daemon::handle::{DaemonCommand, DaemonError, DaemonHandle, HandleParts};
use crate::engine::{Engine, EngineConfig};
use crate::model::api::ErrorBody;
use crate::store::{
    Db, NewRun, RunFinish, RunId, RunStatus, StepFinish, StepStart, StepStatus, Trigger,
    TriggerKind,
};

const TOKEN: &str = "in-process-token";

/// A plain HTTP client for these tests: bearer token, JSON or text answers, and a
/// server-sent event reader.
#[derive(Clone)]
struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A request that failed: an error status (with the JSON error body, if it was one), or no
/// answer at all.
#[derive(Debug)]
enum ClientError {
    Status {
        status: StatusCode,
        body: Option<ErrorBody>,
    },
    Http(reqwest::Error),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Status { status, body } => write!(f, "{status}: {body:?}"),
            ClientError::Http(e) => write!(f, "{e}"),
        }
    }
}

impl Client {
    fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(ClientError::Http)?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// Sends a request; an error status becomes [`ClientError::Status`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = tokio::time::timeout(Duration::from_secs(30), request.send())
            .await
            .expect("an answer within 30 s")
            .map_err(ClientError::Http)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.map_err(ClientError::Http)?;
        Err(ClientError::Status {
            status,
            body: serde_json::from_slice(&bytes).ok(),
        })
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let response = self.send(method, path, body).await?;
        let bytes = response.bytes().await.map_err(ClientError::Http)?;
        Ok(serde_json::from_slice(&bytes).expect("a JSON answer"))
    }

    async fn text(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let response = self.send(Method::GET, path, None).await?;
        Ok(response.bytes().await.map_err(ClientError::Http)?.to_vec())
    }

    /// Reads the event stream at `path`, calling `on_event(name, data)` per event until the
    /// stream ends or `on_event` returns false.
    async fn follow(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        let mut response = self.send(Method::GET, path, None).await?;
        let mut buffer = String::new();
        while let Some(chunk) = response.chunk().await.map_err(ClientError::Http)? {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let (mut name, mut data) = ("message".to_string(), None::<String>);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        let v = v.strip_prefix(' ').unwrap_or(v);
                        data = Some(match data {
                            Some(d) => format!("{d}\n{v}"),
                            None => v.to_string(),
                        });
                    }
                }
                if let Some(data) = data
                    && !on_event(&name, &data)
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

struct Api {
    url: String,
    handle: DaemonHandle,
    state_dir: PathBuf,
    _dir: tempfile::TempDir,
    _parts: tokio::sync::watch::Sender<bool>,
}

impl Api {
    fn client(&self) -> Client {
        Client::new(&self.url, Some(TOKEN.into())).expect("client")
    }

    fn store(&self) -> Db {
        Db::open_in_dir(&self.state_dir).expect("store")
    }
}

/// Answers scheduler commands from the store, like the real scheduler would.
async fn stand_in_scheduler(mut commands: mpsc::Receiver<DaemonCommand>, state_dir: PathBuf) {
    while let Some(command) = commands.recv().await {
        let mut store = Db::open_in_dir(&state_dir).expect("store");
        match command {
            DaemonCommand::Enqueue(request, reply) => {
                let answer = if request.workflow != "greet" {
                    Err(DaemonError::UnknownWorkflow {
                        workflow: request.workflow.clone(),
                        repo: "app".into(),
                    })
                } else if !request.parameters.contains_key("count") {
                    Err(DaemonError::InvalidParameters(vec![
                        "missing required parameter `count`".into(),
                    ]))
                } else {
                    let mut run = NewRun::new("greet", Trigger::new(request.trigger));
                    run.repo = Some("app".into());
                    run.parameters = Value::Object(request.parameters.clone());
                    Ok(store.enqueue_run(&run).expect("enqueue").run_id())
                };
                let _ = reply.send(answer);
            }
            DaemonCommand::Cancel(id, reply) => {
                let answer = match store.get_run(id).expect("get") {
                    None => Err(DaemonError::RunNotFound(id)),
                    Some(run) if run.status.is_final() => Err(DaemonError::WrongState {
                        run: id,
                        status: run.status,
                        why: "only queued or running runs can be cancelled",
                    }),
                    Some(_) => {
                        store
                            .finish_run(id, &RunFinish::new(RunStatus::Cancelled))
                            .expect("finish");
                        Ok(())
                    }
                };
                let _ = reply.send(answer);
            }
            DaemonCommand::Retry(id, reply) => {
                let answer = match store.get_run(id).expect("get") {
                    None => Err(DaemonError::RunNotFound(id)),
                    Some(run) => {
                        let mut new = NewRun::new(run.workflow, Trigger::new(TriggerKind::Retry));
                        new.retry_of = Some(id);
                        Ok(store.enqueue_run(&new).expect("enqueue").run_id())
                    }
                };
                let _ = reply.send(answer);
            }
            DaemonCommand::PullRequest(request, reply) => {
                let _ = reply.send(Err(DaemonError::UnknownRepo(request.0)));
            }
            DaemonCommand::Wake | DaemonCommand::FetchNow(_) | DaemonCommand::Shutdown => {}
        }
    }
}

async fn start() -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let store = crate::store::Store::open_in_dir(&state_dir).expect("store");
    let config = Config {
        api_token: Some(TOKEN.into()),
        state_dir: state_dir.clone(),
        ..Config::default()
    };
    let engine = Arc::new(Engine::new(EngineConfig::default()));
    let (handle, HandleParts { commands, shutdown }) = DaemonHandle::new(
        config,
        state_dir.clone(),
        store.clone(),
        engine,
        Default::default(),
    );
    tokio::spawn(stand_in_scheduler(commands, state_dir.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(super::serve(listener, handle.clone(), Arc::default()));
    Api {
        url: format!("http://{addr}"),
        handle,
        state_dir,
        _dir: dir,
        _parts: shutdown,
    }
}

fn status_of(e: ClientError) -> StatusCode {
    match e {
        ClientError::Status { status, .. } => status,
        other => panic!("not an HTTP status: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_need_the_token_and_answer_json_errors() {
    let api = start().await;
    let anonymous = Client::new(&api.url, None).expect("client");
    let wrong = Client::new(&api.url, Some("in-process-tokeN".into())).expect("client");
    for client in [&anonymous, &wrong] {
        for (method, path) in [
            (Method::GET, "/api/v1/runs"),
            (Method::GET, "/api/v1/runs/1"),
            (Method::POST, "/api/v1/runs/1/cancel"),
            (Method::POST, "/api/v1/workflows/greet/runs"),
            (Method::GET, "/api/v1/workflows"),
            (Method::GET, "/metrics"),
            (Method::GET, "/elsewhere"),
        ] {
            let e = client.json(method, path, None).await.expect_err("401");
            assert_eq!(status_of(e), StatusCode::UNAUTHORIZED, "{path}");
        }
    }
    let health = anonymous
        .json(Method::GET, "/health", None)
        .await
        .expect("health");
    assert_eq!(health, json!({"status": "ok"}));

    let client = api.client();
    for (path, want) in [
        ("/api/v1/runs?limit=0", StatusCode::BAD_REQUEST),
        ("/api/v1/runs?limit=1001", StatusCode::BAD_REQUEST),
        ("/api/v1/runs?status=done", StatusCode::BAD_REQUEST),
        ("/api/v1/runs?before=x", StatusCode::BAD_REQUEST),
        ("/api/v1/runs/x", StatusCode::NOT_FOUND),
        ("/api/v1/runs/7", StatusCode::NOT_FOUND),
        ("/elsewhere", StatusCode::NOT_FOUND),
    ] {
        let e = client.json(Method::GET, path, None).await.expect_err(path);
        assert_eq!(status_of(e), want, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_list_get_cancel_retry() {
    let api = start().await;
    let client = api.client();
    let e = client
        .json(
            Method::POST,
            "/api/v1/workflows/greet/runs",
            Some(&json!({"parameters": {}})),
        )
        .await
        .expect_err("422");
    match e {
        ClientError::Status { status, body } => {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            let body = body.expect("json body");
            assert_eq!(
                body.diagnostics.expect("diagnostics")[0],
                "missing required parameter `count`"
            );
            assert!(body.error.contains("greet"));
        }
        other => panic!("{other}"),
    }
    let e = client
        .json(Method::POST, "/api/v1/workflows/other/runs", None)
        .await
        .expect_err("404");
    assert_eq!(status_of(e), StatusCode::NOT_FOUND);

    let mut ids = Vec::new();
    for n in 0..3 {
        let answer = client
            .json(
                Method::POST,
                "/api/v1/workflows/greet/runs",
                Some(&json!({"parameters": {"count": n}, "repo": "app"})),
            )
            .await
            .expect("202");
        ids.push(answer["run_id"].as_str().expect("id").to_string());
    }
    let list = client
        .json(Method::GET, "/api/v1/runs?limit=2", None)
        .await
        .expect("list");
    let listed: Vec<&str> = list["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(list["runs"][0]["status"], "queued");
    assert_eq!(list["runs"][0]["trigger"]["kind"], "manual");
    // The cursor lists the older runs; the last page says there is no next one.
    assert_eq!(list["next_before"], ids[1].as_str());
    let rest = client
        .json(
            Method::GET,
            &format!("/api/v1/runs?limit=2&before={}", ids[1]),
            None,
        )
        .await
        .expect("next page");
    assert_eq!(rest["runs"].as_array().expect("runs").len(), 1);
    assert_eq!(rest["runs"][0]["run_id"], ids[0].as_str());
    assert_eq!(rest["next_before"], Value::Null);

    let run = client
        .json(Method::GET, &format!("/api/v1/runs/{}", ids[0]), None)
        .await
        .expect("get");
    assert_eq!(run["status"], "queued");
    assert_eq!(run["repo"], "app");
    assert_eq!(run["parameters"]["count"], 0);
    assert_eq!(run["stages"], json!([]));

    let cancelled = client
        .json(
            Method::POST,
            &format!("/api/v1/runs/{}/cancel", ids[0]),
            None,
        )
        .await
        .expect("cancel");
    assert_eq!(cancelled["run_id"], ids[0].as_str());
    let e = client
        .json(
            Method::POST,
            &format!("/api/v1/runs/{}/cancel", ids[0]),
            None,
        )
        .await
        .expect_err("409");
    assert_eq!(status_of(e), StatusCode::CONFLICT);
    let retried = client
        .json(
            Method::POST,
            &format!("/api/v1/runs/{}/retry", ids[0]),
            None,
        )
        .await
        .expect("retry");
    assert_eq!(retried["retry_of"], ids[0].as_str());
    let new = retried["run_id"].as_str().expect("id");
    let run = client
        .json(Method::GET, &format!("/api/v1/runs/{new}"), None)
        .await
        .expect("get");
    assert_eq!(run["trigger"]["kind"], "retry");
    assert_eq!(run["retry_of"], ids[0].as_str());
}

fn log_file(state_dir: &Path, run: RunId, step: &str) -> PathBuf {
    let path = crate::state_dir::step_log_path(state_dir, run, step);
    std::fs::create_dir_all(path.parent().expect("run log dir")).expect("log dir");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_as_text_and_followed_until_the_step_ends() {
    let api = start().await;
    let client = api.client();
    let mut store = api.store();
    let id = store
        .enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
        .expect("enqueue")
        .run_id();
    store.mark_running(id).expect("running");
    let start = |step: &str| StepStart {
        stage: "main".into(),
        step_id: step.into(),
        attempt: 1,
    };
    store.record_step_started(id, &start("one")).expect("start");
    let path = log_file(&api.state_dir, id, "one");
    std::fs::write(&path, "first\nsecond\npart").expect("write log");

    let text = client
        .text(&format!("/api/v1/runs/{id}/steps/one/log"))
        .await
        .expect("text");
    assert_eq!(&text[..], b"first\nsecond\npart");
    let e = client
        .text(&format!("/api/v1/runs/{id}/steps/two/log"))
        .await
        .expect_err("no such step");
    assert_eq!(status_of(e), StatusCode::NOT_FOUND);

    // Follow: the lines so far, more as they come, and the end when the step finishes.
    let (mut seen, follower) = follow(
        &client,
        &format!("/api/v1/runs/{id}/steps/one/log?follow=1"),
    );
    assert_eq!(next_event(&mut seen).await, ("log".into(), "first".into()));
    assert_eq!(next_event(&mut seen).await, ("log".into(), "second".into()));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open log");
        writeln!(f, "ial\r\nthird").expect("append");
    }
    api.handle.shared.events.send_log(|| crate::bus::LogChunk {
        run_id: id,
        step: "one".into(),
        stream: crate::engine::LogStream::Stdout,
        text: "ial\nthird\n".into(),
    });
    assert_eq!(
        next_event(&mut seen).await,
        ("log".into(), "partial".into())
    );
    assert_eq!(next_event(&mut seen).await, ("log".into(), "third".into()));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"no newline"))
        .expect("append");
    store
        .record_step_finished(id, &StepFinish::new("main", "one", 1, StepStatus::Failed))
        .expect("finish");
    assert_eq!(
        next_event(&mut seen).await,
        ("log".into(), "no newline".into())
    );
    assert_eq!(
        next_event(&mut seen).await,
        ("end".into(), r#"{"status":"failed"}"#.into())
    );
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the stream ends with the step")
        .expect("join");

    // Followers end on shutdown too.
    store.record_step_started(id, &start("two")).expect("start");
    std::fs::write(log_file(&api.state_dir, id, "two"), "2\n").expect("write log");
    let (mut seen, follower) = follow(
        &client,
        &format!("/api/v1/runs/{id}/steps/two/log?follow=true"),
    );
    assert_eq!(next_event(&mut seen).await, ("log".into(), "2".into()));
    api._parts.send(true).expect("shutdown");
    assert_eq!(
        next_event(&mut seen).await,
        ("end".into(), r#"{"status":"shutdown"}"#.into())
    );
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("ends on shutdown")
        .expect("join");
}

/// Follows `path` in a task; its events arrive on the returned channel.
fn follow(
    client: &Client,
    path: &str,
) -> (
    mpsc::UnboundedReceiver<(String, String)>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = client.clone();
    let path = path.to_string();
    let task = tokio::spawn(async move {
        client
            .follow(&path, |e, d| {
                tx.send((e.to_string(), d.to_string())).is_ok()
            })
            .await
            .expect("follow");
    });
    (rx, task)
}

/// The next event, with a deadline.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("stream still open")
}

/// A client that never finishes its request does not hold shutdown up past the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_does_not_hold_shutdown_up() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let store = crate::store::Store::open_in_dir(&state_dir).expect("store");
    let config = Config {
        api_token: Some(TOKEN.into()),
        ..Config::default()
    };
    let (handle, parts) = DaemonHandle::new(
        config,
        state_dir.clone(),
        store.clone(),
        Arc::new(Engine::new(EngineConfig::default())),
        Default::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let drain = Duration::from_millis(300);
    let server = tokio::spawn(super::serve_with_drain(
        listener,
        handle,
        Arc::default(),
        drain,
    ));
    let mut stuck = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stuck
        .write_all(
            format!(
                "POST /api/v1/workflows/greet/runs HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .expect("send half a request");
    // Let the server read the head before shutdown begins.
    let client = Client::new(&format!("http://{addr}"), None).expect("client");
    client
        .json(Method::GET, "/health", None)
        .await
        .expect("health");
    parts.shutdown.send(true).expect("shutdown");
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after the drain")
        .expect("join")
        .expect("serve ok");
    assert!(
        started.elapsed() >= drain,
        "the stuck request was waited for"
    );
    drop(stuck);
}

/// A follower that reconnects with `Last-Event-ID` gets only the lines after that offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_resumes_after_the_last_event_id() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = start().await;
    let mut store = api.store();
    let id = store
        .enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
        .expect("enqueue")
        .run_id();
    store.mark_running(id).expect("running");
    let finish = StepFinish::new("main", "s", 1, StepStatus::Succeeded);
    store.record_step_finished(id, &finish).expect("finish");
    // Offsets after each line: 4 ("one\n"), 8 ("two\n"), 14 ("three\n").
    std::fs::write(log_file(&api.state_dir, id, "s"), "one\ntwo\nthree\n").expect("log");
    let addr = api.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /api/v1/runs/{id}/steps/s/log?follow=true HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {TOKEN}\r\nLast-Event-ID: 4\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the stream ends: the step is over")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.contains("data: one"), "{text}");
    assert!(text.contains("id: 8\ndata: two\n"), "{text}");
    assert!(text.contains("id: 14\ndata: three\n"), "{text}");
    assert!(
        text.contains("event: end\ndata: {\"status\":\"succeeded\"}"),
        "{text}"
    );
}
