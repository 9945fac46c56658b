//! Micro benchmark of the per-step process path: runs `true` sequentially through
//! `runners::run` and compares it with a bare `std::process::Command::status()` loop measured
//! in the same invocation. The work is split into interleaved batches of 100 steps; the
//! figures are the median batch (noise from other processes on a shared machine mostly
//! lands in a few batches).
//!
//! `cargo run --release -p runners --example spawn_bench [-- TOTAL_STEPS]` (default 1000 per
//! variant). The last two rows run two at a time and compare with each other.

use std::process::Command;
use std::time::{Duration, Instant};

use runners::{Cancel, StepCommand, plan_script, run};

const BATCH: usize = 100;

/// `n` bare spawns split over two threads (like `make -j2`).
fn bare_par2(n: usize) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || bare(n / 2)))
        .collect();
    for h in handles {
        h.join().expect("bench thread");
    }
    start.elapsed()
}

/// `n` steps through `run`, two at a time (like `max_parallel: 2`).
async fn ours_par2(n: usize) -> Duration {
    let start = Instant::now();
    let a = tokio::spawn(ours(n / 2, Variant::Protocol));
    let b = tokio::spawn(ours(n / 2, Variant::Protocol));
    a.await.expect("bench task");
    b.await.expect("bench task");
    start.elapsed()
}

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
    Merged,
}

async fn ours(n: usize, variant: Variant) -> Duration {
    let cwd = std::env::current_dir().expect("cwd");
    let cancel = Cancel::new();
    let start = Instant::now();
    for i in 0..n {
        let mut cmd = StepCommand::from_plan(plan_script("true", None));
        if let Variant::Protocol | Variant::Merged = variant {
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
            cmd.merge_output = matches!(variant, Variant::Merged);
        }
        let outcome = run(cmd, |_, _| {}, cancel.clone()).await.expect("run true");
        assert!(outcome.success());
    }
    start.elapsed()
}

/// CPU time (user + system) this process (all threads, not the children) used so far.
fn self_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass; an all-zero rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
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
        "same, multi-thread, merge_output",
        "bare, two threads",
        "runners::run, two tasks",
        "same, current-thread runtime",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..batches {
        for (i, sample) in samples.iter_mut().enumerate() {
            let c0 = self_cpu();
            let d = match i {
                0 => bare(BATCH),
                // Inside a spawned task, as the engine runs steps (not on the block_on
                // thread).
                1 => multi
                    .block_on(multi.spawn(ours(BATCH, Variant::Plain)))
                    .expect("bench task"),
                2 => multi
                    .block_on(multi.spawn(ours(BATCH, Variant::Protocol)))
                    .expect("bench task"),
                3 => single.block_on(ours(BATCH, Variant::Protocol)),
                4 => multi
                    .block_on(multi.spawn(ours(BATCH, Variant::Merged)))
                    .expect("bench task"),
                5 => bare_par2(BATCH),
                6 => multi
                    .block_on(multi.spawn(ours_par2(BATCH)))
                    .expect("bench task"),
                _ => single.block_on(ours_par2(BATCH)),
            };
            cpu[i].push(ms_per_step(self_cpu() - c0, BATCH));
            sample.push(ms_per_step(d, BATCH));
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    let cpu: Vec<f64> = cpu.into_iter().map(median).collect();
    println!(
        "{} sequential `true` steps per variant, median of {batches} batches of {BATCH}",
        batches * BATCH
    );
    println!(
        "  {:<30} {:>13}  {:>11}  {:>11}  {:>21}",
        "", "wall", "ratio", "overhead", "agent-side CPU"
    );
    for (i, ((name, ms), c)) in names.iter().zip(&medians).zip(&cpu).enumerate() {
        // Parallel rows compare with the parallel baseline.
        let (base, base_cpu) = if i >= 5 {
            (medians[5], cpu[5])
        } else {
            (medians[0], cpu[0])
        };
        println!(
            "  {name:<30} {ms:>7.3} ms/step  {:>11.3}  {:>+8.3} ms  {c:>7.3} ms/step ({:+.3})",
            ms / base,
            ms - base,
            c - base_cpu
        );
    }
}
