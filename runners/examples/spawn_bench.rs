//! Micro benchmark of the per-step process path: runs `true` sequentially through
//! `runners::run` and compares it with a bare `std::process::Command::status()` loop measured
//! in the same invocation. The work is split into interleaved batches of 100 steps; the
//! figures are the median batch (noise from other processes on a shared machine mostly
//! lands in a few batches).
//!
//! `cargo run --release -p runners --example spawn_bench [-- TOTAL_STEPS]` (default 1000 per
//! variant)

use std::process::Command;
use std::time::{Duration, Instant};

use runners::{Cancel, StepCommand, plan_script, run};

const BATCH: usize = 100;

fn bare(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let status = Command::new("true").status().expect("spawn true");
        assert!(status.success());
    }
    start.elapsed()
}

#[derive(Clone, Copy)]
enum Variant {
    Plain,
    Protocol,
}

async fn ours(n: usize, variant: Variant) -> Duration {
    let cwd = std::env::current_dir().expect("cwd");
    let cancel = Cancel::new();
    let start = Instant::now();
    for i in 0..n {
        let mut cmd = StepCommand::from_plan(plan_script("true", None));
        if let Variant::Protocol = variant {
            // What the engine adds for every step.
            cmd = cmd
                .cwd(&cwd)
                .stdin(r#"{"name":"x"}"#)
                .marker("bench-run")
                .env("AGENT_PARAM_NAME", "x")
                .env("AGENT_OUTPUT", format!("/nonexistent/{i}.output"))
                .env("AGENT_CONTEXT", format!("/nonexistent/{i}.context"))
                .env("AGENT_WORKSPACE", cwd.to_string_lossy())
                .env("AGENT_RUN_ID", "bench")
                .env("AGENT_STEP_ID", "s")
                .env("AGENT_ATTEMPT", "1");
        }
        let outcome = run(cmd, |_, _| {}, cancel.clone()).await.expect("run true");
        assert!(outcome.success());
    }
    start.elapsed()
}

fn ms_per_step(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1000.0 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let batches = (total / BATCH).max(1);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Warm up the page cache and the runtimes.
    bare(50);
    multi
        .block_on(multi.spawn(ours(50, Variant::Protocol)))
        .expect("bench task");

    let names = [
        "bare Command::status()",
        "runners::run, nothing extra",
        "runners::run, stdin+cwd+env",
        "same, current-thread runtime",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..batches {
        samples[0].push(ms_per_step(bare(BATCH), BATCH));
        // Inside a spawned task, as the engine runs steps (not on the block_on thread).
        let d = multi
            .block_on(multi.spawn(ours(BATCH, Variant::Plain)))
            .expect("bench task");
        samples[1].push(ms_per_step(d, BATCH));
        let d = multi
            .block_on(multi.spawn(ours(BATCH, Variant::Protocol)))
            .expect("bench task");
        samples[2].push(ms_per_step(d, BATCH));
        let d = single.block_on(ours(BATCH, Variant::Protocol));
        samples[3].push(ms_per_step(d, BATCH));
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    let base = medians[0];
    println!(
        "{} sequential `true` steps per variant, median of {batches} batches of {BATCH}",
        batches * BATCH
    );
    for (name, ms) in names.iter().zip(&medians) {
        println!(
            "  {name:<30} {ms:.3} ms/step  ratio {:.3}  ({:+.3} ms)",
            ms / base,
            ms - base
        );
    }
}
