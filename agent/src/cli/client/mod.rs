//! The commands that talk to a running daemon over its HTTP API: `agent runs`, `agent logs
//! RUN [STEP] [-f]`, `agent trigger WORKFLOW [-p NAME=VALUE]...`, `agent cancel RUN`,
//! `agent retry RUN` and `agent artifacts RUN [NAME] [-o DIR]`.
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
//! The HTTP client is reqwest ([`http`]): `http://` and `https://` servers alike; an
//! `https://` server's certificate must verify against OpenSSL's CA store, which
//! `SSL_CERT_FILE` in the client's environment replaces (for a private CA).

mod artifacts;
mod http;
mod sse;
mod tables;

use std::io::Write;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

pub(crate) use artifacts::{ArtifactsArgs, artifacts};
pub(crate) use http::{Client, ClientError};
use http::{decode, encode};
pub(crate) use tables::{deliveries_table, run_details, runs_table, table};
use tables::{exit_status_of, is_call, report_steps};

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::model::api::LogEnd;
use crate::model::api::{
    DeliveryList, RetryResponse, RunDetail, RunList, TriggerRequest, TriggerResponse,
};
use crate::model::report::StepReport;

/// Options every client command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// The daemon's base URL (default: `AGENT_SERVER`, else the address in
    /// `STATE_DIR/daemon.addr`, else http://127.0.0.1:8420).
    #[arg(long, value_name = "URL")]
    pub(crate) server: Option<String>,
    /// The daemon's state directory, for its address and token files.
    #[arg(long, value_name = "DIR", default_value = ".agent")]
    pub(crate) state_dir: std::path::PathBuf,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Arguments of `agent runs`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunsArgs {
    /// Show this run with its steps instead of the list.
    pub(crate) run: Option<String>,
    /// With RUN: exit 1 when the run failed, was cancelled or interrupted (as `gh run view
    /// --exit-status`).
    #[arg(long, requires = "run")]
    pub(crate) exit_status: bool,
    /// Only runs of this workflow.
    #[arg(long, short = 'w')]
    pub(crate) workflow: Option<String>,
    /// Only runs in this status (queued, running, succeeded, failed, cancelled, interrupted).
    #[arg(long, short = 's')]
    pub(crate) status: Option<String>,
    /// Only runs of this repository.
    #[arg(long)]
    pub(crate) repo: Option<String>,
    /// At most this many runs (1 to 1000).
    #[arg(long, short = 'n', default_value_t = 50)]
    pub(crate) limit: usize,
    /// Only runs older than this run id (the next page: the `next_before` a listing printed).
    #[arg(long)]
    pub(crate) before: Option<String>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// Arguments of `agent deliveries`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DeliveriesArgs {
    /// Only deliveries of this webhook (its `name`, or its URL when it has none).
    #[arg(long)]
    pub(crate) webhook: Option<String>,
    /// Only deliveries of this event (`run.failed`, ...).
    #[arg(long, short = 'e')]
    pub(crate) event: Option<String>,
    /// Only deliveries in this status (pending, delivered, failed).
    #[arg(long, short = 's')]
    pub(crate) status: Option<String>,
    /// Only deliveries about this run.
    #[arg(long)]
    pub(crate) run: Option<String>,
    /// Show every attempt of each delivery.
    #[arg(long, short = 'a')]
    pub(crate) attempts: bool,
    /// At most this many deliveries (1 to 1000).
    #[arg(long, short = 'n', default_value_t = 50)]
    pub(crate) limit: usize,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// Arguments of `agent logs`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LogsArgs {
    /// The run.
    pub(crate) run: String,
    /// One step (default: every step of the run, in order).
    pub(crate) step: Option<String>,
    /// Keep printing new lines until the step (or the run) ends.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// Exit 1 when the step (or the run) did not succeed (as `gh run watch --exit-status`).
    #[arg(long)]
    pub(crate) exit_status: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// Arguments of `agent trigger`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TriggerArgs {
    /// The workflow's name.
    pub(crate) workflow: String,
    /// A parameter, `NAME=VALUE` (repeatable); the daemon converts it to the declared type.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,
    /// The repository (needed when several have a workflow of this name).
    #[arg(long)]
    pub(crate) repo: Option<String>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// Arguments of `agent cancel` and `agent retry`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// The run.
    pub(crate) run: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
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
                && let Some(diags) = &body.diagnostics
            {
                for d in diags {
                    eprintln!("  {d}");
                }
            }
            e.exit_code()
        }
    }
}

fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print json: {e}"),
    }
}

/// The recap that ends `agent logs RUN`: each failed step, its error and the last lines of
/// its log.
async fn logs_recap(client: &Client, run: &str, steps: &[(String, StepReport)]) -> String {
    use crate::engine::recap::{FailedStep, Tail, describe, render};
    let mut failed = Vec::new();
    for step in tables::failed_steps(steps) {
        let id = step.id.as_str();
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
            error: describe(step.error_class.as_deref(), step.exit_code),
            tail,
        });
    }
    render(&failed, false)
}

/// `agent runs [RUN]`.
pub(crate) fn runs(args: RunsArgs) -> i32 {
    block_on(async move {
        let client = Client::from_env(&args.server)?;
        if let Some(run) = &args.run {
            let (detail, raw) = client
                .get::<RunDetail>(&format!("/api/v1/runs/{}", encode(run)))
                .await?;
            if args.server.json {
                print_json(&raw);
            } else {
                print!("{}", run_details(&detail));
            }
            if args.exit_status {
                return Ok(exit_status_of(detail.report.status.as_str()));
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
        let (answer, raw) = client
            .get::<RunList>(&format!("/api/v1/runs{query}"))
            .await?;
        if args.server.json {
            print_json(&raw);
            return Ok(EXIT_OK);
        }
        if answer.runs.is_empty() {
            println!("no runs");
        } else {
            print!("{}", runs_table(&answer.runs));
        }
        if let Some(next) = &answer.next_before {
            eprintln!("older runs: agent runs --before {next}");
        }
        Ok(EXIT_OK)
    })
}

/// `agent deliveries`.
pub(crate) fn deliveries(args: DeliveriesArgs) -> i32 {
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
        let (answer, raw) = client
            .get::<DeliveryList>(&format!("/api/v1/deliveries{query}"))
            .await?;
        if args.server.json {
            print_json(&raw);
            return Ok(EXIT_OK);
        }
        if answer.deliveries.is_empty() {
            println!("no deliveries");
        } else {
            print!("{}", deliveries_table(&answer.deliveries, args.attempts));
        }
        Ok(EXIT_OK)
    })
}

/// Arguments of `agent nodes`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `agent nodes`: the agents sharing the daemon's store, with their last heartbeat, the
/// runs each holds, its capacity and whether it is lost.
pub fn nodes(args: NodesArgs) -> i32 {
    block_on(async move {
        let client = Client::from_env(&args.server)?;
        let (answer, raw) = client
            .get::<crate::model::api::NodeList>("/api/v1/nodes")
            .await?;
        if args.server.json {
            print_json(&raw);
            return Ok(EXIT_OK);
        }
        if answer.nodes.is_empty() {
            println!("no nodes");
        } else {
            print!("{}", tables::nodes_table(&answer.nodes));
        }
        Ok(EXIT_OK)
    })
}

/// `agent trigger WORKFLOW [-p NAME=VALUE]...`.
pub(crate) fn trigger(args: TriggerArgs) -> i32 {
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
        let body = TriggerRequest {
            repo: args.repo.clone(),
            ..TriggerRequest::with_parameters(parameters)
        };
        let answer = client
            .send_json(
                Method::POST,
                &format!("/api/v1/workflows/{}/runs", encode(&args.workflow)),
                &body,
            )
            .await?;
        if args.server.json {
            print_json(&answer);
        } else {
            let queued: TriggerResponse = decode(&answer)?;
            println!(
                "queued run {} of workflow `{}`",
                queued.run_id, args.workflow
            );
        }
        Ok(EXIT_OK)
    })
}

/// `agent cancel RUN`.
pub(crate) fn cancel(args: RunArgs) -> i32 {
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
pub(crate) fn retry(args: RunArgs) -> i32 {
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
            let retried: RetryResponse = decode(&answer)?;
            let new = retried.run_id;
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
                if let Ok(end) = serde_json::from_str::<LogEnd>(data) {
                    status = end.status;
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
pub(crate) fn logs(args: LogsArgs) -> i32 {
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
            let (detail, _) = client
                .get::<RunDetail>(&format!("/api/v1/runs/{}", encode(run)))
                .await?;
            let run_status = detail.report.status;
            let steps = report_steps(&detail.report);
            let next = steps.iter().find(|(_, s)| !done.contains(&s.id));
            let calls = |id: &str| {
                let inner = format!("{id}/");
                steps.iter().any(|(_, s)| s.id.starts_with(&inner))
            };
            match next {
                // A call's own log is empty: its steps follow with theirs.
                Some((_, step)) if is_call(step) || calls(&step.id) => done.push(step.id.clone()),
                Some((_, step)) => {
                    let id = step.id.clone();
                    let status = step.status;
                    if !out(format!("==> {id} ({status}) <==\n").as_bytes()) {
                        return Ok(EXIT_OK);
                    }
                    if args.follow && status == crate::model::StepStatus::Running {
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
                    let over = !tables::is_live(run_status);
                    if !args.follow || over {
                        if done.is_empty() {
                            eprintln!("run {run} has no step logs ({run_status})");
                        }
                        out(logs_recap(&client, run, &steps).await.as_bytes());
                        if args.follow {
                            eprintln!("==> run {run} {run_status} <==");
                        }
                        if args.exit_status && over {
                            return Ok(exit_status_of(run_status.as_str()));
                        }
                        return Ok(EXIT_OK);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
}
