//! Services: long-running processes (a database, a web server) started before the steps of
//! their scope and stopped when it ends. A workflow's `services` run for the whole run
//! (rollback and compensation included), a stage's while that stage runs.
//!
//! - Ports: before anything starts, every service of the scope gets a free port on
//!   127.0.0.1: a listener is bound to port 0, the port the kernel chose is read, and the
//!   listener is closed. The service gets it as `PORT` and every template of the scope as
//!   `${{ services.NAME.port }}` (`host` is `127.0.0.1`). Ports handed out and not yet given
//!   back are remembered process-wide, so two runs of one daemon never get the same one.
//!   Between closing the listener and the service binding the port, another process of
//!   the machine may take it (a small race no port-0 scheme avoids). When a service ends
//!   before it is ready and its port is then held by someone else, that is such a clash:
//!   the service is started again on a new port, at most [`PORT_TRIES`] times in all.
//! - Start: in file order, each one ready before the next starts (so a later service may use
//!   an earlier one). A service is its `run:` script (run like a step's: expressions through
//!   the environment, a shell only when needed) or a skill (its parameters on stdin), with
//!   the step environment, the service's `env` and `PORT`, in the workspace, as the run's
//!   user, in a process group of its own carrying the run's marker (so the sweep at the end
//!   of the run finds whatever it leaves behind).
//! - Ready: the `ready` probe (`tcp`: a connection to 127.0.0.1:PORT succeeds; `http`: a GET
//!   answers 2xx; `run`: the command exits with 0) is polled, from every 50 ms up to every
//!   500 ms, until `ready_timeout` (default 60 s). Without a probe a service is ready once
//!   started. Not ready in time, or ended before: the run fails (class `ServiceError`) with
//!   the service's last output lines, and the scope's steps are judged as after any failure.
//! - Output: each service's lines are step output of the pseudo-step `services.NAME` (its
//!   own stream in `agent exec`, its own log file in the daemon), masked like a step's.
//! - A service that ends while its scope runs fails the run with its last lines: no new step
//!   starts, running steps finish.
//! - Stop: when the scope ends (success, failure or cancel) every service gets SIGTERM to its
//!   process group, the engine's grace period, then SIGKILL (a second Ctrl-C kills at once).
//!   A run future dropped half-way kills its services at once.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsl::model::{Service, ServiceKind, ServiceReady, Stage};
use runners::{OutputSink, ProcessOutcome, StepCommand};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Cancel;
use super::events::{EngineEvent, LogCredit, LogStream, OutputChunks};
use super::failure::Disposition;
use super::run_ctx::RunCtx;
use super::scope::env_text;

/// How many times a service is started when its port was taken by another process.
pub(crate) const PORT_TRIES: usize = 3;
/// Output lines of a service kept for the message when it fails.
const TAIL_LINES: usize = 20;
/// The host every service listens on.
const HOST: &str = "127.0.0.1";
/// The error class of a run failed by a service.
const CLASS: &str = "ServiceError";

/// Ports handed to services and not yet given back, process-wide.
static HELD: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn held() -> std::sync::MutexGuard<'static, BTreeSet<u16>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free port on 127.0.0.1 that no other service of this process holds.
fn free_port() -> std::io::Result<u16> {
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind((HOST, 0))?;
        let port = listener.local_addr()?.port();
        drop(listener);
        if held().insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port on 127.0.0.1"))
}

fn release(port: u16) {
    held().remove(&port);
}

/// Whether some process listens on `port` of 127.0.0.1 (binding it fails).
pub(crate) fn port_taken(port: u16) -> bool {
    std::net::TcpListener::bind((HOST, port)).is_err()
}

/// The pseudo-step id a service's output is shown and logged under.
pub(crate) fn log_id(name: &str) -> String {
    format!("services.{name}")
}

/// Runs `work` with `services` up around it. `stage` is the stage the services belong to
/// (`None`: the workflow's).
pub(crate) async fn scoped<F: Future<Output = ()>>(
    ctx: &RunCtx<'_>,
    services: &[Service],
    stage: Option<(usize, &Stage)>,
    work: F,
) {
    if services.is_empty() {
        return work.await;
    }
    let mut set = ServiceSet::default();
    let wanted = match stage {
        None => !ctx.cancel.is_cancelled(),
        // After a failure a stage's steps run only when their `when` asks for it.
        Some((_, st)) => {
            !ctx.cancel.is_cancelled()
                && (!ctx.state().failed
                    || st.steps.iter().any(|s| {
                        s.when
                            .as_ref()
                            .is_some_and(|w| super::scope::has_status_fn(&w.text))
                    }))
        }
    };
    let started = if wanted {
        set.start_all(ctx, services).await
    } else {
        Ok(())
    };
    match started {
        Err(Some(message)) => {
            set.stop(ctx).await;
            fail(ctx, &message);
            work.await;
            if let Some((index, _)) = stage
                && let Some(rep) = ctx.state().stages.get_mut(index)
            {
                rep.status = crate::model::report::StepStatus::Failed;
            }
        }
        Err(None) => {
            // Cancelled while starting.
            set.stop(ctx).await;
            work.await;
        }
        Ok(()) => {
            tokio::pin!(work);
            let mut watching = !set.running.is_empty();
            loop {
                tokio::select! {
                    () = &mut work => break,
                    message = set.died(), if watching => {
                        watching = false;
                        fail(ctx, &message);
                    }
                }
            }
            set.stop(ctx).await;
        }
    }
    set.forget(ctx);
}

fn fail(ctx: &RunCtx<'_>, message: &str) {
    tracing::warn!(run = %ctx.run_id, "{message}");
    ctx.apply(Disposition::Abort, "", CLASS, message);
}

/// One started service.
struct Running {
    name: String,
    cancel: Cancel,
    /// Its last output lines.
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Set to how it ended once it has.
    ended: watch::Receiver<Option<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn last_lines(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.is_empty() {
            return " (it printed nothing)".to_string();
        }
        let mut out = String::from("; its last lines:");
        for line in tail.iter() {
            out.push_str("\n  ");
            out.push_str(line);
        }
        out
    }

    fn end_text(&self) -> Option<String> {
        self.ended.borrow().clone()
    }
}

/// The services of one scope.
#[derive(Default)]
struct ServiceSet {
    running: Vec<Running>,
    /// Every port handed out, with its service's name.
    ports: Vec<(String, u16)>,
}

impl Drop for ServiceSet {
    /// A scope left without [`ServiceSet::stop`] (its future dropped) kills its services.
    fn drop(&mut self) {
        for r in &self.running {
            r.cancel.kill_now();
        }
        for (_, port) in &self.ports {
            release(*port);
        }
    }
}

/// Why a service did not become ready.
enum NotReady {
    /// Ended first (how).
    Ended(String),
    /// The probe did not pass in time (its last answer).
    Timeout(String),
    Cancelled,
    /// Its probe could not be rendered.
    Invalid(String),
}

impl ServiceSet {
    /// Hands out the ports, then starts the services in file order, each ready before the
    /// next. `Err(None)`: cancelled meanwhile; `Err(Some(message))`: a service failed.
    async fn start_all(
        &mut self,
        ctx: &RunCtx<'_>,
        services: &[Service],
    ) -> Result<(), Option<String>> {
        for svc in services {
            let port = free_port().map_err(|e| {
                Some(format!(
                    "service `{}`: cannot find a free port: {e}",
                    svc.name.value
                ))
            })?;
            self.ports.push((svc.name.value.clone(), port));
            self.publish(ctx, &svc.name.value, port);
        }
        for (i, svc) in services.iter().enumerate() {
            let name = &svc.name.value;
            let mut tries = 0;
            loop {
                tries += 1;
                let port = self.port_of(name);
                let t0 = Instant::now();
                let running = start(ctx, svc, port).map_err(Some)?;
                let idx = self.running.len();
                self.running.push(running);
                match wait_ready(ctx, svc, port, &self.running[idx]).await {
                    Ok(()) => {
                        note(
                            ctx,
                            name,
                            &format!(
                                "[agent: service `{name}` ready on {HOST}:{port} after {}]",
                                crate::model::fmt::duration(t0.elapsed())
                            ),
                        );
                        break;
                    }
                    Err(NotReady::Cancelled) => return Err(None),
                    Err(NotReady::Invalid(message)) => return Err(Some(message)),
                    Err(NotReady::Ended(how)) => {
                        let r = self.running.pop().expect("just pushed");
                        if tries < PORT_TRIES && port_taken(port) {
                            // Another process took the port between its release and the
                            // service's bind: a new port, a new start.
                            let new = free_port().map_err(|e| {
                                Some(format!("service `{name}`: cannot find a free port: {e}"))
                            })?;
                            note(
                                ctx,
                                name,
                                &format!(
                                    "[agent: port {port} was taken by another process; starting `{name}` again on port {new}]"
                                ),
                            );
                            release(port);
                            if let Some(p) = self.ports.get_mut(i) {
                                p.1 = new;
                            }
                            self.publish(ctx, name, new);
                            continue;
                        }
                        return Err(Some(format!(
                            "service `{name}` {how} before it was ready{}",
                            r.last_lines()
                        )));
                    }
                    Err(NotReady::Timeout(last)) => {
                        let r = &self.running[idx];
                        let limit = svc
                            .ready_timeout
                            .as_ref()
                            .map_or(Service::DEFAULT_READY_TIMEOUT, |t| t.value);
                        return Err(Some(format!(
                            "service `{name}` was not ready within {} ({last}){}",
                            crate::model::fmt::duration(limit),
                            r.last_lines()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn port_of(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, p)| *p)
    }

    /// Puts `services.NAME` into the run's expression roots.
    fn publish(&self, ctx: &RunCtx<'_>, name: &str, port: u16) {
        let mut data = ctx.data();
        let root = data
            .roots
            .entry("services")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = root {
            m.insert(name.to_string(), json!({"port": port, "host": HOST}));
        }
    }

    /// Takes this scope's services out of the expression roots and gives their ports back.
    fn forget(&mut self, ctx: &RunCtx<'_>) {
        let mut data = ctx.data();
        if let Some(Value::Object(m)) = data.roots.get_mut("services") {
            for (name, _) in &self.ports {
                m.remove(name);
            }
        }
        drop(data);
        for (_, port) in self.ports.drain(..) {
            release(port);
        }
    }

    /// Resolves when a service ends, with the run's error message.
    async fn died(&self) -> String {
        let waits = self.running.iter().map(|r| {
            let mut rx = r.ended.clone();
            Box::pin(async move {
                let _ = rx.wait_for(Option::is_some).await;
            })
        });
        let (_, i, _) = futures_util::future::select_all(waits).await;
        let r = &self.running[i];
        let how = r.end_text().unwrap_or_else(|| "ended".into());
        format!(
            "service `{}` {how} while its steps ran{}",
            r.name,
            r.last_lines()
        )
    }

    /// Stops every service (SIGTERM to its group, grace, SIGKILL) and waits for them.
    async fn stop(&mut self, ctx: &RunCtx<'_>) {
        for r in &self.running {
            if ctx.cancel.immediate_token().is_cancelled() {
                r.cancel.kill_now();
            } else {
                r.cancel.request();
            }
        }
        let tasks: Vec<_> = self
            .running
            .iter_mut()
            .filter_map(|r| r.task.take())
            .collect();
        let all = futures_util::future::join_all(tasks);
        tokio::pin!(all);
        tokio::select! {
            _ = &mut all => {}
            () = ctx.cancel.immediate_token().cancelled() => {
                for r in &self.running {
                    r.cancel.kill_now();
                }
                all.await;
            }
        }
        self.running.clear();
    }
}

/// Shows an engine line in a service's output.
fn note(ctx: &RunCtx<'_>, name: &str, text: &str) {
    let step: Arc<str> = ctx.event_id(&log_id(name));
    ctx.events.emit(|| EngineEvent::StepOutput {
        run_id: ctx.run_id.clone(),
        step,
        stream: LogStream::Stdout,
        text: format!("{text}\n"),
        credit: LogCredit::default(),
    });
}

/// The environment of a service's processes: the steps' base, `PORT`, then its `env`.
fn service_env(
    ctx: &RunCtx<'_>,
    svc: &Service,
    port: u16,
) -> Result<Vec<(String, String)>, String> {
    let name = &svc.name.value;
    let mut env = ctx.base_env.clone();
    env.push(("PORT".into(), port.to_string()));
    env.push(("AGENT_SERVICE".into(), name.clone()));
    if !svc.env.is_empty() {
        let data = ctx.data();
        let view = data.view(&ctx.workdir);
        let rendered = dsl::model::render_map(&svc.env, &view)
            .map_err(|e| format!("service `{name}`: env: {e}"))?;
        env.extend(rendered.iter().map(|(k, v)| (k.clone(), env_text(v))));
    }
    Ok(env)
}

/// A process of the service (itself or its `run` probe), as a step's would be.
fn protocol(ctx: &RunCtx<'_>, mut cmd: StepCommand, env: &[(String, String)]) -> StepCommand {
    cmd.cwd = Some(ctx.workdir.clone());
    cmd.inherit_env = false;
    let mut all = env.to_vec();
    all.append(&mut cmd.env);
    cmd.env = all;
    cmd.grace = ctx.engine.config().grace;
    cmd.merge_output = true;
    cmd.marker = Some(ctx.marker.to_string());
    cmd.user = ctx.run_user.clone();
    cmd
}

/// Renders and spawns one service.
fn start(ctx: &RunCtx<'_>, svc: &Service, port: u16) -> Result<Running, String> {
    let name = svc.name.value.clone();
    let env = service_env(ctx, svc, port)?;
    let cmd = {
        let data = ctx.data();
        let view = data.view(&ctx.workdir);
        match &svc.kind {
            ServiceKind::Run(script) => {
                let prepared = super::script_env::prepare(&script.template, None, &view)
                    .map_err(|e| format!("service `{name}`: run: {e}"))?;
                let mut cmd = StepCommand::from_plan(runners::plan_script(&prepared.text, None));
                cmd.env.extend(prepared.env);
                protocol(ctx, cmd, &env)
            }
            ServiceKind::Skill(skill) => {
                let params = dsl::model::render_map(&svc.parameters, &view)
                    .map_err(|e| format!("service `{name}`: parameters: {e}"))?;
                let found = runners::find_skill(
                    &skill.value,
                    &ctx.workdir,
                    &ctx.engine.config().skills_dirs,
                )
                .map_err(|e| format!("service `{name}`: {e}"))?;
                let p = Value::Object(params);
                let mut cmd = found.command();
                cmd.env.extend(runners::param_env(&p));
                cmd.stdin = p.to_string().into_bytes();
                protocol(ctx, cmd, &env)
            }
        }
    };
    let cancel = Cancel::new();
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, ended) = watch::channel(None);
    let mut sink = TailSink {
        chunks: ctx.events.output(
            ctx.run_id.clone(),
            ctx.event_id(&log_id(&name)),
            ctx.masker.clone(),
        ),
        tail: tail.clone(),
        masker: ctx.masker.clone(),
    };
    let c = cancel.clone();
    let task = tokio::spawn(async move {
        let how = match runners::run_with_sink(cmd, &mut sink, c).await {
            Ok(outcome) => describe(&outcome),
            Err(e) => format!("could not be started: {e}"),
        };
        drop(sink);
        let _ = tx.send(Some(how));
    });
    Ok(Running {
        name,
        cancel,
        tail,
        ended,
        task: Some(task),
    })
}

fn describe(o: &ProcessOutcome) -> String {
    match (o.exit_code, o.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was ended by signal {sig}"),
        (None, None) => "ended".to_string(),
    }
}

/// Passes a service's output on as step output and keeps its last lines.
struct TailSink {
    chunks: OutputChunks,
    tail: Arc<Mutex<VecDeque<String>>>,
    masker: crate::model::mask::Masker,
}

impl TailSink {
    fn keep(&self, line: &str) {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(self.masker.mask(line).into_owned());
    }
}

impl OutputSink for TailSink {
    fn line(&mut self, stream: runners::Stream, line: &str) {
        self.keep(line);
        self.chunks.line(stream, line);
    }

    fn lines(&mut self, stream: runners::Stream, lines: &str) {
        let all: Vec<&str> = lines.split_terminator('\n').collect();
        for line in all.iter().skip(all.len().saturating_sub(TAIL_LINES)) {
            self.keep(line);
        }
        self.chunks.lines(stream, lines);
    }

    fn end_of_read(&mut self) -> bool {
        self.chunks.end_of_read()
    }

    fn ready(&mut self) -> impl Future<Output = ()> + Send {
        self.chunks.ready()
    }
}

/// A rendered readiness probe.
enum Probe {
    None,
    Tcp(u16),
    Http(String),
    Run(StepCommand),
}

fn render_probe(ctx: &RunCtx<'_>, svc: &Service, port: u16) -> Result<Probe, String> {
    let name = &svc.name.value;
    let data = ctx.data();
    let view = data.view(&ctx.workdir);
    Ok(match &svc.ready {
        None => Probe::None,
        Some(ServiceReady::Tcp(v)) => {
            let value = v
                .render(&view)
                .map_err(|e| format!("service `{name}`: ready.tcp: {e}"))?;
            let text = env_text(&value);
            let p = text.trim().parse::<u16>().map_err(|_| {
                format!("service `{name}`: ready.tcp: `{text}` is not a port number")
            })?;
            Probe::Tcp(p)
        }
        Some(ServiceReady::Http(t)) => {
            let value = t
                .render(&view)
                .map_err(|e| format!("service `{name}`: ready.http: {e}"))?;
            Probe::Http(env_text(&value))
        }
        Some(ServiceReady::Run(t)) => {
            let prepared = super::script_env::prepare(&t.template, None, &view)
                .map_err(|e| format!("service `{name}`: ready.run: {e}"))?;
            drop(data);
            let env = service_env(ctx, svc, port)?;
            let mut cmd = StepCommand::from_plan(runners::plan_script(&prepared.text, None));
            cmd.env.extend(prepared.env);
            Probe::Run(protocol(ctx, cmd, &env))
        }
    })
}

impl Probe {
    /// One try: `Ok(())` when ready, else what it saw.
    async fn check(&self, client: &reqwest::Client, left: Duration) -> Result<(), String> {
        match self {
            Probe::None => Ok(()),
            Probe::Tcp(port) => {
                let connect = tokio::net::TcpStream::connect((HOST, *port));
                match tokio::time::timeout(left.min(Duration::from_secs(2)), connect).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("tcp {HOST}:{port}: {e}")),
                    Err(_) => Err(format!("tcp {HOST}:{port}: no answer")),
                }
            }
            Probe::Http(url) => {
                let get = client.get(url).timeout(left.min(Duration::from_secs(5)));
                match get.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("http {url}: status {}", r.status().as_u16())),
                    Err(e) => Err(format!("http {url}: {e}")),
                }
            }
            Probe::Run(cmd) => {
                let mut cmd = cmd.clone();
                cmd.timeout = Some(left.min(Duration::from_secs(10)));
                let mut last = String::new();
                let outcome = runners::run(
                    cmd,
                    |_, line| {
                        if !line.trim().is_empty() {
                            last = line.to_string();
                        }
                    },
                    Cancel::new(),
                )
                .await;
                match outcome {
                    Ok(o) if o.success() => Ok(()),
                    Ok(o) if last.is_empty() => Err(format!("ready command {}", describe(&o))),
                    Ok(o) => Err(format!("ready command {}: {last}", describe(&o))),
                    Err(e) => Err(format!("ready command: {e}")),
                }
            }
        }
    }
}

/// Polls the service's probe until it passes, the service ends, the timeout passes or the
/// run is cancelled.
async fn wait_ready(
    ctx: &RunCtx<'_>,
    svc: &Service,
    port: u16,
    running: &Running,
) -> Result<(), NotReady> {
    let probe = render_probe(ctx, svc, port).map_err(NotReady::Invalid)?;
    let limit = svc
        .ready_timeout
        .as_ref()
        .map_or(Service::DEFAULT_READY_TIMEOUT, |t| t.value);
    let deadline = Instant::now() + limit.min(super::run_ctx::MAX_TIMEOUT);
    let client = reqwest::Client::builder().no_proxy().build().map_err(|e| {
        NotReady::Invalid(format!("service `{}`: http client: {e}", svc.name.value))
    })?;
    let mut ended = running.ended.clone();
    let mut delay = Duration::from_millis(50);
    let mut last;
    let cancel = ctx.cancel.graceful_token();
    loop {
        if let Some(how) = running.end_text() {
            return Err(NotReady::Ended(how));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            r = probe.check(&client, left.max(Duration::from_millis(100))) => match r {
                Ok(()) => {
                    // A probe may pass just as the service dies (another process's port).
                    if let Some(how) = running.end_text() {
                        return Err(NotReady::Ended(how));
                    }
                    return Ok(());
                }
                Err(e) => last = e,
            },
            _ = ended.wait_for(Option::is_some) => {
                return Err(NotReady::Ended(running.end_text().unwrap_or_default()));
            }
            () = cancel.cancelled() => return Err(NotReady::Cancelled),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(NotReady::Timeout(last));
        }
        tokio::select! {
            () = tokio::time::sleep(delay.min(deadline - now)) => {}
            _ = ended.wait_for(Option::is_some) => {
                return Err(NotReady::Ended(running.end_text().unwrap_or_default()));
            }
            () = cancel.cancelled() => return Err(NotReady::Cancelled),
        }
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the clash check behind the restart on a new port: a port someone listens on
    /// is taken, a released one is not, and ports handed out are never handed out twice
    /// while held.
    #[test]
    fn ports_are_unique_and_clashes_are_seen() {
        let a = free_port().expect("port");
        let b = free_port().expect("port");
        assert_ne!(a, b);
        assert!(held().contains(&a) && held().contains(&b));
        assert!(!port_taken(a));
        let l = std::net::TcpListener::bind((HOST, a)).expect("bind");
        assert!(port_taken(a));
        drop(l);
        release(a);
        release(b);
        assert!(!held().contains(&a));
    }
}
