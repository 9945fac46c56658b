//! The commands that talk to a running daemon over its HTTP API: `agent runs`, `agent logs
//! RUN [STEP] [-f]`, `agent trigger WORKFLOW [-p NAME=VALUE]...`, `agent cancel RUN` and
//! `agent retry RUN`.
//!
//! Every command finds the daemon by `--server URL`, else `AGENT_SERVER`, else the address
//! the daemon wrote to `STATE_DIR/daemon.addr`, else `http://127.0.0.1:8420` (a URL without
//! a scheme, `HOST:PORT`, means `http://HOST:PORT`); and the token by `AGENT_TOKEN`, else
//! `STATE_DIR/api_token`. `STATE_DIR` is `--state-dir`, default `.agent` in the current
//! directory (where a daemon started on the embedded defaults keeps both files).
//! Output is a readable table or text; `--json` prints the API's JSON as it came.
//!
//! Exit codes: 0 done, 1 the daemon refused or failed (or could not be reached), 2 invalid
//! arguments or parameters (nothing was queued).
//!
//! The HTTP client is hyper's HTTP/1 connection API over one TCP connection per request:
//! plain HTTP to a local daemon, no TLS, no pooling needed.

use std::io::Write;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// The daemon's address when `--server` is not given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8420";

/// How long one request may take (log streams excepted).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Options every client command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The daemon's base URL (default: `AGENT_SERVER`, else the address in
    /// `STATE_DIR/daemon.addr`, else http://127.0.0.1:8420).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The daemon's state directory, for its address and token files.
    #[arg(long, value_name = "DIR", default_value = ".agent")]
    pub state_dir: std::path::PathBuf,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `agent runs`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunsArgs {
    /// Show this run with its steps instead of the list.
    pub run: Option<String>,
    /// With RUN: exit 1 when the run failed, was cancelled or interrupted (as `gh run view
    /// --exit-status`).
    #[arg(long, requires = "run")]
    pub exit_status: bool,
    /// Only runs of this workflow.
    #[arg(long, short = 'w')]
    pub workflow: Option<String>,
    /// Only runs in this status (queued, running, succeeded, failed, cancelled, interrupted).
    #[arg(long, short = 's')]
    pub status: Option<String>,
    /// Only runs of this repository.
    #[arg(long)]
    pub repo: Option<String>,
    /// At most this many runs (1 to 1000).
    #[arg(long, short = 'n', default_value_t = 50)]
    pub limit: usize,
    /// Only runs older than this run id (the next page: the `next_before` a listing printed).
    #[arg(long)]
    pub before: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `agent deliveries`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveriesArgs {
    /// Only deliveries of this webhook (its `name`, or its URL when it has none).
    #[arg(long)]
    pub webhook: Option<String>,
    /// Only deliveries of this event (`run.failed`, ...).
    #[arg(long, short = 'e')]
    pub event: Option<String>,
    /// Only deliveries in this status (pending, delivered, failed).
    #[arg(long, short = 's')]
    pub status: Option<String>,
    /// Only deliveries about this run.
    #[arg(long)]
    pub run: Option<String>,
    /// Show every attempt of each delivery.
    #[arg(long, short = 'a')]
    pub attempts: bool,
    /// At most this many deliveries (1 to 1000).
    #[arg(long, short = 'n', default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `agent logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The run.
    pub run: String,
    /// One step (default: every step of the run, in order).
    pub step: Option<String>,
    /// Keep printing new lines until the step (or the run) ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Exit 1 when the step (or the run) did not succeed (as `gh run watch --exit-status`).
    #[arg(long)]
    pub exit_status: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `agent trigger`.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// The workflow's name.
    pub workflow: String,
    /// A parameter, `NAME=VALUE` (repeatable); the daemon converts it to the declared type.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// The repository (needed when several have a workflow of this name).
    #[arg(long)]
    pub repo: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `agent cancel` and `agent retry`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The run.
    pub run: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Why a request did not get a useful answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` is not an `http://host:port` URL.
    #[error("invalid server url `{0}` (expected `http://HOST:PORT`)")]
    BadUrl(String),
    /// No connection.
    #[error("cannot reach the daemon at {server}: {source}")]
    Connect {
        /// The server URL.
        server: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// HTTP failed mid-way.
    #[error("http error talking to {server}: {message}")]
    Http {
        /// The server URL.
        server: String,
        /// What failed.
        message: String,
    },
    /// The request took too long.
    #[error("no answer from {0} within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
    /// The daemon answered with an error status.
    #[error("{message}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The `error` text of the body (or the body).
        message: String,
        /// The JSON body, if it was JSON.
        body: Option<Value>,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the daemon: {0}")]
    BadAnswer(String),
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

impl ClientError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::BadUrl(_) => EXIT_INVALID,
            ClientError::Status { status, .. }
                if *status == StatusCode::UNPROCESSABLE_ENTITY
                    || *status == StatusCode::BAD_REQUEST =>
            {
                EXIT_INVALID
            }
            _ => EXIT_FAILED,
        }
    }
}

/// A daemon to talk to.
#[derive(Debug, Clone)]
pub struct Client {
    server: String,
    authority: String,
    prefix: String,
    token: Option<String>,
}

/// The token: `AGENT_TOKEN`, else `STATE_DIR/api_token`.
fn find_token(state_dir: &std::path::Path) -> Option<String> {
    if let Ok(token) = std::env::var("AGENT_TOKEN")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_string());
    }
    let stored = state_dir.join(crate::api::TOKEN_FILE_NAME);
    std::fs::read_to_string(stored)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

impl Client {
    /// A client for `server` (`http://host:port[/prefix]`) with an explicit token.
    pub fn new(server: &str, token: Option<String>) -> Result<Client, ClientError> {
        let bad = || ClientError::BadUrl(server.to_string());
        let uri: Uri = server.trim().parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority.host();
        if host.is_empty() {
            return Err(bad());
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(Client {
            server: server.trim().trim_end_matches('/').to_string(),
            authority: format!("{host}:{port}"),
            prefix: uri.path().trim_end_matches('/').to_string(),
            token,
        })
    }

    /// A client for the daemon the arguments and the environment name (see the module
    /// docs), with the token from the environment or the state directory.
    pub fn from_env(args: &ServerArgs) -> Result<Client, ClientError> {
        let from_env = std::env::var("AGENT_SERVER")
            .ok()
            .filter(|s| !s.trim().is_empty());
        let from_file = || {
            std::fs::read_to_string(args.state_dir.join(crate::daemon::ADDR_FILE_NAME))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let server = args
            .server
            .clone()
            .or(from_env)
            .or_else(from_file)
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        Client::new(&with_scheme(&server), find_token(&args.state_dir))
    }

    /// Sends a request and returns the response (status and body not yet read).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        accept: &str,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|source| ClientError::Connect {
                server: self.server.clone(),
                source,
            })?;
        let http = |e: hyper::Error| ClientError::Http {
            server: self.server.clone(),
            message: e.to_string(),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            // Ends when the response body has been read (or dropped).
            let _ = connection.await;
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::ACCEPT, accept);
        if let Some(token) = &self.token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => builder
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())).boxed()),
            None => builder.body(Empty::<Bytes>::new().boxed()),
        }
        .map_err(|e| ClientError::Http {
            server: self.server.clone(),
            message: e.to_string(),
        })?;
        sender.send_request(request).await.map_err(http)
    }

    /// Reads a whole body.
    async fn body_bytes(&self, response: hyper::Response<Incoming>) -> Result<Bytes, ClientError> {
        response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| ClientError::Http {
                server: self.server.clone(),
                message: e.to_string(),
            })
    }

    /// Turns an error status into [`ClientError::Status`] with the body's `error` text.
    async fn check(
        &self,
        response: hyper::Response<Incoming>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = self.body_bytes(response).await?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let mut message = body
            .as_ref()
            .and_then(|b| b.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        if message.is_empty() {
            message = status.to_string();
        }
        if status == StatusCode::UNAUTHORIZED {
            message.push_str(if self.token.is_some() {
                " (check AGENT_TOKEN)"
            } else {
                " (set AGENT_TOKEN to the daemon's api token)"
            });
        }
        Err(ClientError::Status {
            status,
            message,
            body,
        })
    }

    /// A JSON request with a deadline; the answer's JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let exchange = async {
            let response = self.send(method, path, body, "application/json").await?;
            let response = self.check(response).await?;
            let bytes = self.body_bytes(response).await?;
            serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.server.clone()))?
    }

    /// A text request with a deadline.
    pub async fn text(&self, path: &str) -> Result<Bytes, ClientError> {
        let exchange = async {
            let response = self.send(Method::GET, path, None, "text/plain").await?;
            let response = self.check(response).await?;
            self.body_bytes(response).await
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.server.clone()))?
    }

    /// Follows a server-sent event stream, calling `on_event(name, data)` per event, until
    /// the stream ends or `on_event` returns false.
    pub async fn follow(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.send(Method::GET, path, None, "text/event-stream"),
        )
        .await
        .map_err(|_| ClientError::Timeout(self.server.clone()))??;
        let response = self.check(response).await?;
        let mut body = response.into_body();
        let mut parser = SseParser::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http {
                server: self.server.clone(),
                message: e.to_string(),
            })?;
            if let Ok(data) = frame.into_data() {
                for (name, data) in parser.push(&data) {
                    if !on_event(&name, &data) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// An incremental parser of the `text/event-stream` format: `event:` and `data:` fields,
/// events separated by a blank line, comments (`:`) ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them as `(name, data)`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if line.is_empty() {
                let name = self.event.take();
                let data = self.data.take();
                if name.is_some() || data.is_some() {
                    out.push((
                        name.unwrap_or_else(|| "message".into()),
                        data.unwrap_or_default(),
                    ));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                _ => {}
            }
        }
        out
    }
}

/// `HOST:PORT` as `http://HOST:PORT`; anything with a scheme as it is.
fn with_scheme(server: &str) -> String {
    let server = server.trim();
    if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// Runs an async client command on a small runtime and maps errors to exit codes.
fn block_on(f: impl std::future::Future<Output = Result<i32, ClientError>>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", ClientError::Runtime(e));
            return EXIT_FAILED;
        }
    };
    match runtime.block_on(f) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if let ClientError::Status {
                body: Some(body), ..
            } = &e
                && let Some(diags) = body.get("diagnostics").and_then(Value::as_array)
            {
                for d in diags.iter().filter_map(Value::as_str) {
                    eprintln!("  {d}");
                }
            }
            e.exit_code()
        }
    }
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print json: {e}"),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// A duration in milliseconds as `850ms`, `12.3s`, `4m05s` or `2h03m`; `-` when unknown.
pub fn human_duration(ms: Option<i64>) -> String {
    crate::model::fmt::duration_opt(ms)
}

/// An RFC 3339 time in this machine's local time with its zone: `YYYY-MM-DD HH:MM:SS UTC`
/// or `YYYY-MM-DD HH:MM:SS +01:00`; text that is not a time as it is.
fn short_time(t: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(time) => time_in(time.with_timezone(&chrono::Local).fixed_offset()),
        Err(_) => t.to_string(),
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS` and its zone (`UTC` for offset 0).
fn time_in(time: chrono::DateTime<chrono::FixedOffset>) -> String {
    if time.offset().local_minus_utc() == 0 {
        time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    } else {
        time.format("%Y-%m-%d %H:%M:%S %:z").to_string()
    }
}

/// The exit code of a finished run or step for `--exit-status`: 0 only when it succeeded.
fn exit_status_of(status: &str) -> i32 {
    if status == "succeeded" {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The runs table of `agent runs`.
pub fn runs_table(runs: &[Value]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let trigger = r.get("trigger").cloned().unwrap_or(Value::Null);
            let mut what = text(&trigger, "kind").to_string();
            if let Some(branch) = trigger.get("branch").and_then(Value::as_str) {
                what.push_str(&format!(" {branch}"));
            }
            if let Some(commit) = trigger.get("commit").and_then(Value::as_str) {
                what.push_str(&format!("@{}", commit.get(..8).unwrap_or(commit)));
            }
            vec![
                text(r, "run_id").to_string(),
                text(r, "workflow").to_string(),
                text(r, "repo").to_string(),
                text(r, "status").to_string(),
                what,
                short_time(text(r, "created_at")),
                human_duration(r.get("duration_ms").and_then(Value::as_i64)),
            ]
        })
        .collect();
    table(
        &[
            "RUN", "WORKFLOW", "REPO", "STATUS", "TRIGGER", "CREATED", "DURATION",
        ],
        &rows,
    )
}

/// Every step of a run report in the order they ran, as `(section, step)`: each stage's
/// steps (section: the stage), a called workflow's steps right after the step that called
/// it (section `CALL/STAGE`, ids `CALL/ID` as their logs are named), then the compensation
/// steps (section `compensation`) and the rollback steps (section `rollback`).
fn report_steps(report: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    collect_steps(report, "", &mut out);
    out
}

fn collect_steps(report: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    let list = |v: Option<&Value>| -> Vec<Value> {
        v.and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let add = |section: String, mut step: Value, out: &mut Vec<(String, Value)>| {
        let id = format!("{prefix}{}", text(&step, "id"));
        if let Some(obj) = step.as_object_mut() {
            obj.insert("id".into(), json!(id));
        }
        let called = step.get("workflow").filter(|w| w.is_object()).cloned();
        out.push((section, step));
        if let Some(called) = called {
            collect_steps(&called, &format!("{id}/"), out);
        }
    };
    for stage in list(report.get("stages")) {
        let section = format!("{prefix}{}", text(&stage, "name"));
        for step in list(stage.get("steps")) {
            add(section.clone(), step, out);
        }
    }
    for step in list(report.get("compensation")) {
        add(format!("{prefix}compensation"), step, out);
    }
    for step in list(report.get("rollback").and_then(|r| r.get("steps"))) {
        add(format!("{prefix}rollback"), step, out);
    }
}

/// True for a step that called a workflow (its own log is empty: its steps have theirs).
fn is_call(step: &Value) -> bool {
    step.get("workflow").is_some_and(Value::is_object)
}

/// The failed steps of a report for the recap, in order: a call step only when none of the
/// steps it called failed (otherwise they stand for it).
fn failed_steps(steps: &[(String, Value)]) -> Vec<&Value> {
    steps
        .iter()
        .map(|(_, s)| s)
        .filter(|s| text(s, "status") == "failed")
        .filter(|s| {
            let inner = format!("{}/", text(s, "id"));
            !steps
                .iter()
                .any(|(_, o)| text(o, "status") == "failed" && text(o, "id").starts_with(&inner))
        })
        .collect()
}

/// The recap that ends `agent logs RUN`: each failed step, its error and the last lines of
/// its log.
async fn logs_recap(client: &Client, run: &str, steps: &[(String, Value)]) -> String {
    use crate::engine::recap::{FailedStep, Tail, describe, render};
    let mut failed = Vec::new();
    for step in failed_steps(steps) {
        let id = text(step, "id");
        let tail = match client
            .text(&format!(
                "/api/v1/runs/{}/steps/{}/log",
                encode(run),
                encode(id)
            ))
            .await
        {
            Ok(bytes) => Tail::of_text(&String::from_utf8_lossy(&bytes)),
            Err(_) => Tail::new(),
        };
        failed.push(FailedStep {
            id: id.to_string(),
            error: describe(
                step.get("error_class").and_then(Value::as_str),
                step.get("exit_code")
                    .and_then(Value::as_i64)
                    .and_then(|c| i32::try_from(c).ok()),
            ),
            tail,
        });
    }
    render(&failed, false)
}

/// The text of `agent runs RUN`.
pub fn run_details(report: &Value) -> String {
    let trigger = report.get("trigger").cloned().unwrap_or(Value::Null);
    let mut out = format!(
        "run {}  {}  {}\nworkflow: {}\nrepo: {}\ntrigger: {}",
        text(report, "run_id"),
        text(report, "status"),
        human_duration(report.get("duration_ms").and_then(Value::as_i64)),
        text(report, "workflow"),
        text(report, "repo"),
        text(&trigger, "kind"),
    );
    for key in ["branch", "commit", "scheduled_for"] {
        if let Some(v) = trigger.get(key).and_then(Value::as_str) {
            out.push_str(&format!(" {key}={v}"));
        }
    }
    out.push('\n');
    out.push_str(&format!(
        "created: {}  started: {}  finished: {}\n",
        short_time(text(report, "created_at")),
        short_time(text(report, "started_at")),
        short_time(text(report, "finished_at")),
    ));
    if let Some(error) = report.get("error").and_then(Value::as_str) {
        out.push_str(&format!("error: {error}\n"));
    }
    let steps = report_steps(report);
    // A NAME column only when some step has a `name:`.
    let named = steps
        .iter()
        .any(|(_, s)| s.get("name").and_then(Value::as_str).is_some());
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|(stage, s)| {
            let status = match text(s, "status") {
                "failed" if s.get("continued").and_then(Value::as_bool) == Some(true) => {
                    "failed (continued)".to_string()
                }
                other => other.to_string(),
            };
            let mut row = vec![stage.clone(), text(s, "id").to_string()];
            if named {
                row.push(
                    s.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_string(),
                );
            }
            row.extend([
                status,
                s.get("attempts")
                    .and_then(Value::as_u64)
                    .map_or("-".into(), |a| a.to_string()),
                s.get("exit_code")
                    .and_then(Value::as_i64)
                    .map_or("-".into(), |c| c.to_string()),
                s.get("error_class")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_string(),
                human_duration(s.get("duration_ms").and_then(Value::as_i64)),
            ]);
            row
        })
        .collect();
    if !rows.is_empty() {
        let mut header = vec!["STAGE", "STEP"];
        if named {
            header.push("NAME");
        }
        header.extend(["STATUS", "ATTEMPTS", "EXIT", "ERROR", "DURATION"]);
        out.push('\n');
        out.push_str(&table(&header, &rows));
    }
    out
}

/// `agent runs [RUN]`.
pub fn runs(args: RunsArgs) -> i32 {
    block_on(async move {
        let client = Client::from_env(&args.server)?;
        if let Some(run) = &args.run {
            let report = client
                .json(Method::GET, &format!("/api/v1/runs/{}", encode(run)), None)
                .await?;
            if args.server.json {
                print_json(&report);
            } else {
                print!("{}", run_details(&report));
            }
            if args.exit_status {
                return Ok(exit_status_of(text(&report, "status")));
            }
            return Ok(EXIT_OK);
        }
        let mut query = format!("?limit={}", args.limit);
        for (key, value) in [
            ("workflow", &args.workflow),
            ("status", &args.status),
            ("repo", &args.repo),
            ("before", &args.before),
        ] {
            if let Some(v) = value {
                query.push_str(&format!("&{key}={}", encode(v)));
            }
        }
        let answer = client
            .json(Method::GET, &format!("/api/v1/runs{query}"), None)
            .await?;
        if args.server.json {
            print_json(&answer);
            return Ok(EXIT_OK);
        }
        let runs = answer
            .get("runs")
            .and_then(Value::as_array)
            .ok_or_else(|| ClientError::BadAnswer("no `runs` list".into()))?;
        if runs.is_empty() {
            println!("no runs");
        } else {
            print!("{}", runs_table(runs));
        }
        if let Some(next) = answer.get("next_before").and_then(Value::as_str) {
            eprintln!("older runs: agent runs --before {next}");
        }
        Ok(EXIT_OK)
    })
}

/// The table of `agent deliveries`; with `attempts`, each delivery's attempts under it.
pub fn deliveries_table(deliveries: &[Value], attempts: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for d in deliveries {
        let last_code = d
            .get("history")
            .and_then(Value::as_array)
            .and_then(|h| h.last())
            .and_then(|a| a.get("status_code"))
            .and_then(Value::as_u64)
            .map_or_else(|| "-".to_string(), |c| c.to_string());
        rows.push(vec![
            text(d, "id").to_string(),
            text(d, "webhook").to_string(),
            text(d, "event").to_string(),
            text(d, "run_id").to_string(),
            text(d, "status").to_string(),
            d.get("attempts")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .to_string(),
            last_code,
            short_time(text(d, "created_at")),
            text(d, "last_error").to_string(),
        ]);
        if attempts {
            for a in d
                .get("history")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let code = a
                    .get("status_code")
                    .and_then(Value::as_u64)
                    .map_or_else(|| "-".to_string(), |c| c.to_string());
                let n = a.get("attempt").and_then(Value::as_u64).unwrap_or(0);
                rows.push(vec![
                    format!("  #{n}"),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    code,
                    short_time(text(a, "at")),
                    text(a, "error").to_string(),
                ]);
            }
        }
    }
    table(
        &[
            "DELIVERY", "WEBHOOK", "EVENT", "RUN", "STATUS", "ATTEMPTS", "HTTP", "CREATED", "ERROR",
        ],
        &rows,
    )
}

/// `agent deliveries`.
pub fn deliveries(args: DeliveriesArgs) -> i32 {
    block_on(async move {
        let client = Client::from_env(&args.server)?;
        let mut query = format!("?limit={}", args.limit);
        for (key, value) in [
            ("webhook", &args.webhook),
            ("event", &args.event),
            ("status", &args.status),
            ("run", &args.run),
        ] {
            if let Some(v) = value {
                query.push_str(&format!("&{key}={}", encode(v)));
            }
        }
        let answer = client
            .json(Method::GET, &format!("/api/v1/deliveries{query}"), None)
            .await?;
        if args.server.json {
            print_json(&answer);
            return Ok(EXIT_OK);
        }
        let list = answer
            .get("deliveries")
            .and_then(Value::as_array)
            .ok_or_else(|| ClientError::BadAnswer("no `deliveries` list".into()))?;
        if list.is_empty() {
            println!("no deliveries");
        } else {
            print!("{}", deliveries_table(list, args.attempts));
        }
        Ok(EXIT_OK)
    })
}

/// `agent trigger WORKFLOW [-p NAME=VALUE]...`.
pub fn trigger(args: TriggerArgs) -> i32 {
    let pairs = match dsl::params::parse_assignments(&args.params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let mut parameters = Map::new();
    for (name, value) in pairs {
        if parameters.contains_key(&name) {
            eprintln!("error: parameter `{name}` given twice");
            return EXIT_INVALID;
        }
        // Text, converted by the daemon to the declared type (as `-p` is for `agent exec`).
        parameters.insert(name, Value::String(value));
    }
    block_on(async move {
        let client = Client::from_env(&args.server)?;
        let mut body = json!({ "parameters": parameters });
        if let Some(repo) = &args.repo {
            body["repo"] = Value::String(repo.clone());
        }
        let answer = client
            .json(
                Method::POST,
                &format!("/api/v1/workflows/{}/runs", encode(&args.workflow)),
                Some(&body),
            )
            .await?;
        if args.server.json {
            print_json(&answer);
        } else {
            println!(
                "queued run {} of workflow `{}`",
                text(&answer, "run_id"),
                args.workflow
            );
        }
        Ok(EXIT_OK)
    })
}

/// `agent cancel RUN`.
pub fn cancel(args: RunArgs) -> i32 {
    block_on(async move {
        let client = Client::from_env(&args.server)?;
        let answer = client
            .json(
                Method::POST,
                &format!("/api/v1/runs/{}/cancel", encode(&args.run)),
                None,
            )
            .await?;
        if args.server.json {
            print_json(&answer);
        } else {
            println!("cancelling run {}", args.run);
        }
        Ok(EXIT_OK)
    })
}

/// `agent retry RUN`.
pub fn retry(args: RunArgs) -> i32 {
    block_on(async move {
        let client = Client::from_env(&args.server)?;
        let answer = client
            .json(
                Method::POST,
                &format!("/api/v1/runs/{}/retry", encode(&args.run)),
                None,
            )
            .await?;
        if args.server.json {
            print_json(&answer);
        } else {
            let new = text(&answer, "run_id");
            if new == args.run {
                println!("resuming run {new}");
            } else {
                println!("queued run {new} (retry of run {})", args.run);
            }
        }
        Ok(EXIT_OK)
    })
}

/// Writes bytes to stdout; false when stdout is closed (a pager quit).
fn out(bytes: &[u8]) -> bool {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .is_ok()
}

/// Follows one step's log to stdout until it ends; returns the step's final status.
async fn follow_step(client: &Client, run: &str, step: &str) -> Result<String, ClientError> {
    let path = format!(
        "/api/v1/runs/{}/steps/{}/log?follow=true",
        encode(run),
        encode(step)
    );
    let mut status = String::from("unknown");
    client
        .follow(&path, |name, data| match name {
            "log" => out(format!("{data}\n").as_bytes()),
            "end" => {
                if let Ok(v) = serde_json::from_str::<Value>(data) {
                    status = text(&v, "status").to_string();
                }
                false
            }
            "error" => {
                eprintln!("error: {data}");
                false
            }
            _ => true,
        })
        .await?;
    Ok(status)
}

/// `agent logs RUN [STEP] [-f]`.
pub fn logs(args: LogsArgs) -> i32 {
    block_on(async move {
        if args.server.json {
            eprintln!(
                "error: `agent logs` prints text only; `--json` is not supported here (use `agent runs RUN --json` for the report)"
            );
            return Ok(EXIT_INVALID);
        }
        let client = Client::from_env(&args.server)?;
        let run = args.run.as_str();
        if let Some(step) = &args.step {
            if args.follow {
                let status = follow_step(&client, run, step).await?;
                eprintln!("==> step {step} {status} <==");
                if args.exit_status {
                    return Ok(exit_status_of(&status));
                }
            } else {
                let bytes = client
                    .text(&format!(
                        "/api/v1/runs/{}/steps/{}/log",
                        encode(run),
                        encode(step)
                    ))
                    .await?;
                out(&bytes);
            }
            return Ok(EXIT_OK);
        }
        // Every step in order: print each finished one, follow each live one, and (with -f)
        // wait for the next until the run ends.
        let mut done: Vec<String> = Vec::new();
        loop {
            let report = client
                .json(Method::GET, &format!("/api/v1/runs/{}", encode(run)), None)
                .await?;
            let run_status = text(&report, "status").to_string();
            let next = report_steps(&report)
                .into_iter()
                .find(|(_, s)| !done.iter().any(|d| d == text(s, "id")));
            let calls = |id: &str| {
                let inner = format!("{id}/");
                report_steps(&report)
                    .iter()
                    .any(|(_, s)| text(s, "id").starts_with(&inner))
            };
            match next {
                // A call's own log is empty: its steps follow with theirs.
                Some((_, step)) if is_call(&step) || calls(text(&step, "id")) => {
                    done.push(text(&step, "id").to_string())
                }
                Some((_, step)) => {
                    let id = text(&step, "id").to_string();
                    let status = text(&step, "status").to_string();
                    if !out(format!("==> {id} ({status}) <==\n").as_bytes()) {
                        return Ok(EXIT_OK);
                    }
                    if args.follow && status == "running" {
                        follow_step(&client, run, &id).await?;
                    } else {
                        match client
                            .text(&format!(
                                "/api/v1/runs/{}/steps/{}/log",
                                encode(run),
                                encode(&id)
                            ))
                            .await
                        {
                            Ok(bytes) => {
                                out(&bytes);
                            }
                            Err(ClientError::Status { status, .. })
                                if status == StatusCode::NOT_FOUND => {}
                            Err(e) => return Err(e),
                        }
                    }
                    done.push(id);
                }
                None => {
                    let over = !matches!(run_status.as_str(), "queued" | "running");
                    if !args.follow || over {
                        if done.is_empty() {
                            eprintln!("run {run} has no step logs ({run_status})");
                        }
                        out(logs_recap(&client, run, &report_steps(&report))
                            .await
                            .as_bytes());
                        if args.follow {
                            eprintln!("==> run {run} {run_status} <==");
                        }
                        if args.exit_status && over {
                            return Ok(exit_status_of(&run_status));
                        }
                        return Ok(EXIT_OK);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let c = Client::new("http://127.0.0.1:8420", None).expect("plain");
        assert_eq!(c.authority, "127.0.0.1:8420");
        assert_eq!(c.prefix, "");
        let c = Client::new("http://localhost/agent/", None).expect("prefix");
        assert_eq!(c.authority, "localhost:80");
        assert_eq!(c.prefix, "/agent");
        let c = Client::new("http://[::1]:9000", None).expect("ipv6");
        assert_eq!(c.authority, "[::1]:9000");
        for bad in ["127.0.0.1:8420", "https://x:1", "ftp://x", "", "http://"] {
            assert!(Client::new(bad, None).is_err(), "{bad} accepted");
        }
    }

    /// `--server 127.0.0.1:8420` (no scheme) was refused; it means `http://127.0.0.1:8420`.
    #[test]
    fn a_server_without_scheme_is_http() {
        assert_eq!(with_scheme("127.0.0.1:8420"), "http://127.0.0.1:8420");
        assert_eq!(with_scheme(" localhost:1 "), "http://localhost:1");
        assert_eq!(with_scheme("http://h:2/p"), "http://h:2/p");
        let c = Client::new(&with_scheme("127.0.0.1:9"), None).expect("host:port");
        assert_eq!(c.authority, "127.0.0.1:9");
        assert!(Client::new(&with_scheme("ftp://x"), None).is_err());
    }

    /// Times were shown in UTC without saying so: they carry their zone now.
    #[test]
    fn times_carry_their_zone() {
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("time");
        assert_eq!(
            time_in(t("2026-11-27T08:00:01.250Z")),
            "2026-11-27 08:00:01 UTC"
        );
        assert_eq!(
            time_in(t("2026-11-27T09:00:01+01:00")),
            "2026-11-27 09:00:01 +01:00"
        );
        assert_eq!(short_time("-"), "-");
        let local = short_time("2026-11-27T08:00:01Z");
        assert!(
            local.ends_with(" UTC") || local.contains(" +") || local.contains(" -"),
            "{local}"
        );
        assert_eq!(exit_status_of("succeeded"), EXIT_OK);
        assert_eq!(exit_status_of("failed"), EXIT_FAILED);
        assert_eq!(exit_status_of("cancelled"), EXIT_FAILED);
    }

    #[test]
    fn sse_parsing_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: log\nid: 4\ndata: a").is_empty());
        let got = p.push(b"bc\n\n: keep-alive\n\nevent: log\ndata\n\nevent: end\r\ndata: {\"status\":\"succeeded\"}\r\n\r\n");
        assert_eq!(
            got,
            vec![
                ("log".to_string(), "abc".to_string()),
                ("log".to_string(), String::new()),
                ("end".to_string(), "{\"status\":\"succeeded\"}".to_string()),
            ]
        );
    }

    #[test]
    fn what_users_read() {
        let runs = vec![
            json!({"run_id": "12", "workflow": "deploy", "repo": "app", "status": "running",
                   "trigger": {"kind": "push", "branch": "main", "commit": "0123456789abcdef",
                               "scheduled_for": null},
                   "created_at": "2026-11-27T08:00:01.250Z", "duration_ms": 65_000}),
            json!({"run_id": "9", "workflow": "nightly", "repo": null, "status": "queued",
                   "trigger": {"kind": "schedule", "branch": null, "commit": null},
                   "created_at": "2026-11-27T07:59:00.000Z", "duration_ms": null}),
        ];
        // Times are shown in the local zone of whoever runs the tests.
        let (a, b) = (
            short_time("2026-11-27T08:00:01.250Z"),
            short_time("2026-11-27T07:59:00.000Z"),
        );
        let pad = " ".repeat(a.len().saturating_sub("CREATED".len()));
        assert_eq!(
            runs_table(&runs),
            format!(
                "RUN  WORKFLOW  REPO  STATUS   TRIGGER             CREATED{pad}  DURATION\n\
                 12   deploy    app   running  push main@01234567  {a}  1m05s\n\
                 9    nightly   -     queued   schedule            {b}  -\n"
            )
        );
        let report = json!({
            "run_id": "12", "workflow": "deploy", "repo": "app", "status": "failed",
            "duration_ms": 1500, "error": "step `b` failed",
            "trigger": {"kind": "manual", "commit": "abc", "branch": null, "scheduled_for": null},
            "created_at": "2026-11-27T08:00:00.000Z", "started_at": "2026-11-27T08:00:00.100Z",
            "finished_at": "2026-11-27T08:00:01.600Z",
            "stages": [{"name": "build", "status": "failed", "steps": [
                {"id": "a", "status": "succeeded", "attempts": 1, "exit_code": 0,
                 "error_class": null, "duration_ms": 20},
                {"id": "b", "status": "failed", "attempts": 3, "exit_code": 2,
                 "error_class": "ExitCode", "duration_ms": 1400}]}],
        });
        let (c, st, f) = (
            short_time("2026-11-27T08:00:00.000Z"),
            short_time("2026-11-27T08:00:00.100Z"),
            short_time("2026-11-27T08:00:01.600Z"),
        );
        assert_eq!(
            run_details(&report),
            format!(
                "run 12  failed  1.5s\n\
             workflow: deploy\n\
             repo: app\n\
             trigger: manual commit=abc\n\
             created: {c}  started: {st}  finished: {f}\n\
             error: step `b` failed\n\
             \n\
             STAGE  STEP  STATUS     ATTEMPTS  EXIT  ERROR     DURATION\n\
             build  a     succeeded  1         0     -         20ms\n\
             build  b     failed     3         2     ExitCode  1.4s\n"
            )
        );
    }

    /// Guards `agent runs RUN` for a step `name:` and a tolerated failure.
    #[test]
    fn run_details_show_names_and_tolerated_failures() {
        let report = json!({
            "run_id": "3", "workflow": "w", "repo": "app", "status": "succeeded",
            "duration_ms": 50, "error": null,
            "trigger": {"kind": "manual", "commit": null, "branch": null, "scheduled_for": null},
            "created_at": "2026-11-27T08:00:00.000Z", "started_at": "2026-11-27T08:00:00.000Z",
            "finished_at": "2026-11-27T08:00:00.050Z",
            "stages": [{"name": "s", "status": "failed", "steps": [
                {"id": "probe", "name": "Probe", "status": "failed", "continued": true,
                 "attempts": 1, "exit_code": 3, "error_class": "ExitCode", "duration_ms": 10},
                {"id": "b", "status": "succeeded", "attempts": 1, "exit_code": 0,
                 "error_class": null, "duration_ms": 20}]}],
        });
        let text = run_details(&report);
        assert!(
            text.ends_with(
                "STAGE  STEP   NAME   STATUS              ATTEMPTS  EXIT  ERROR     DURATION\n\
                 s      probe  Probe  failed (continued)  1         3     ExitCode  10ms\n\
                 s      b      -      succeeded           1         0     -         20ms\n"
            ),
            "{text}"
        );
    }

    /// A finished run's report nests a called workflow's steps under their call; the client
    /// lists them (with the ids their logs have), then compensation and rollback steps, and
    /// recaps the failed ones without their calls.
    #[test]
    fn nested_and_cleanup_steps_are_listed_in_order() {
        let step = |id: &str, status: &str| json!({"id": id, "status": status});
        let mut call = step("ci", "failed");
        call["workflow"] = json!({"name": "ci", "status": "failed", "stages": [
            {"name": "test", "status": "failed", "steps": [step("unit", "failed"), step("lint", "succeeded")]}
        ], "rollback": null, "compensated": [], "error": "x"});
        let report = json!({
            "stages": [{"name": "build", "status": "failed", "steps": [step("a", "succeeded"), call, step("b", "failed")]}],
            "compensation": [step("undo_a", "succeeded")],
            "rollback": {"status": "failed", "steps": [step("restore", "failed")]},
        });
        let steps = report_steps(&report);
        let got: Vec<(String, String)> = steps
            .iter()
            .map(|(section, s)| (section.clone(), text(s, "id").to_string()))
            .collect();
        let want = [
            ("build", "a"),
            ("build", "ci"),
            ("ci/test", "ci/unit"),
            ("ci/test", "ci/lint"),
            ("build", "b"),
            ("compensation", "undo_a"),
            ("rollback", "restore"),
        ];
        assert_eq!(
            got,
            want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
        );
        let failed: Vec<&str> = failed_steps(&steps).iter().map(|s| text(s, "id")).collect();
        assert_eq!(failed, ["ci/unit", "b", "restore"]);
        assert!(is_call(&steps[1].1) && !is_call(&steps[0].1));
        let details = run_details(&report);
        assert!(details.contains("ci/test       ci/unit "), "{details}");
        assert!(details.contains("rollback      restore "), "{details}");
    }

    #[test]
    fn deliveries_table_with_attempts() {
        let list = vec![json!({
            "id": "0b6a-1", "webhook": "chat", "event": "run.failed", "run_id": "4",
            "status": "delivered", "attempts": 2, "created_at": "2026-11-27T08:00:01.250Z",
            "last_error": "HTTP 500", "history": [
                {"attempt": 1, "at": "2026-11-27T08:00:01.300Z", "status_code": 500,
                 "error": "HTTP 500"},
                {"attempt": 2, "at": "2026-11-27T08:00:02.300Z", "status_code": 200,
                 "error": null}]
        })];
        let at = short_time("2026-11-27T08:00:01.250Z");
        let pad = " ".repeat(at.len().saturating_sub("CREATED".len()));
        assert_eq!(
            deliveries_table(&list, false),
            format!(
                "DELIVERY  WEBHOOK  EVENT       RUN  STATUS     ATTEMPTS  HTTP  CREATED{pad}  ERROR\n\
                 0b6a-1    chat     run.failed  4    delivered  2         200   {at}  HTTP 500\n"
            )
        );
        let with = deliveries_table(&list, true);
        assert!(with.contains("  #1"), "{with}");
        let first = short_time("2026-11-27T08:00:01.300Z");
        assert!(with.contains(&format!("500   {first}  HTTP 500")), "{with}");
    }

    #[test]
    fn durations_and_tables() {
        assert_eq!(human_duration(None), "-");
        assert_eq!(human_duration(Some(850)), "850ms");
        assert_eq!(human_duration(Some(12_340)), "12.3s");
        assert_eq!(human_duration(Some(245_000)), "4m05s");
        assert_eq!(human_duration(Some(7_380_000)), "2h03m");
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
