//! Measures a run's checkout against `git clone --local` of the same repository.
//!
//! `cargo run --release -p agent --example checkout_bench -- REPO [ROUNDS]` (driven by
//! `bench/checkout.sh`, which also generates REPO). Mirrors REPO once, then alternates,
//! ROUNDS times: our checkout of HEAD from the mirror (in-process, as the daemon does it:
//! the tree, then its `.git` with the default `checkout` settings), the tree alone (the
//! workspace without `.git` of earlier versions) and `git clone --local -q MIRROR DIR` (which hardlinks the mirror's objects and checks
//! out with an index). Each side writes into a fresh directory; removal is not timed.
//! Prints each side's median and the ratio.

use std::process::Command;
use std::time::{Duration, Instant};

use agent::daemon::{CheckoutMethod, CheckoutSpec, Mirror, Workspace, add_git};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let repo = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: checkout_bench REPO [ROUNDS]"))?;
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(7);
    let work = tempfile::tempdir()?;
    let state = work.path().join("state");
    let mirror = Mirror::open_or_clone(&state, "bench", &repo)?;
    let head = mirror.resolve_commit("HEAD")?;
    let files = count_files(&mirror, head)?;

    let ours_of = |method: CheckoutMethod, with_git: bool, n: usize| -> anyhow::Result<Duration> {
        let dest = work.path().join(format!("ours-{method:?}-{with_git}-{n}"));
        let start = Instant::now();
        let ws = Workspace::create(&mirror, head, &dest, method)?;
        if with_git {
            let spec = CheckoutSpec {
                branch: Some("main".into()),
                depth: Some(1),
                ..CheckoutSpec::default()
            };
            add_git(&mirror, head, &dest, &spec)?;
        }
        let took = start.elapsed();
        drop(ws);
        Ok(took)
    };
    let git_clone = |n: usize| -> anyhow::Result<Duration> {
        let dest = work.path().join(format!("git-{n}"));
        let start = Instant::now();
        let status = Command::new("git")
            .args(["clone", "--local", "-q"])
            .arg(mirror.path())
            .arg(&dest)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()?;
        let took = start.elapsed();
        anyhow::ensure!(status.success(), "git clone --local failed");
        std::fs::remove_dir_all(&dest)?;
        Ok(took)
    };

    // One untimed round of each warms the page cache and the binaries.
    ours_of(CheckoutMethod::Auto, true, 0)?;
    git_clone(0)?;
    let (mut ours, mut tree_only, mut libgit2, mut git) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in 1..=rounds {
        // Alternate which side goes first.
        if n % 2 == 1 {
            ours.push(ours_of(CheckoutMethod::Auto, true, n)?);
            git.push(git_clone(n)?);
        } else {
            git.push(git_clone(n)?);
            ours.push(ours_of(CheckoutMethod::Auto, true, n)?);
        }
        tree_only.push(ours_of(CheckoutMethod::Auto, false, n)?);
        libgit2.push(ours_of(CheckoutMethod::Libgit2, false, n)?);
    }
    let (ours, tree_only, libgit2, git) = (
        median(ours),
        median(tree_only),
        median(libgit2),
        median(git),
    );
    println!("repository: {repo} ({files} files), {rounds} alternating rounds, medians:");
    println!("  git clone --local      {:8.2} ms", ms(git));
    println!("  agent checkout (.git)  {:8.2} ms", ms(ours));
    println!(
        "  tree only, no .git     {:8.2} ms  (the workspace before it had .git)",
        ms(tree_only)
    );
    println!(
        "  libgit2 checkout_tree  {:8.2} ms  (for reference)",
        ms(libgit2)
    );
    println!(
        "ratio agent / git clone --local: {:.3} (target <= 1.1)",
        ours.as_secs_f64() / git.as_secs_f64()
    );
    Ok(())
}

fn count_files(mirror: &Mirror, head: git2::Oid) -> anyhow::Result<usize> {
    let tree = mirror.repository().find_commit(head)?.tree()?;
    let mut n = 0;
    tree.walk(git2::TreeWalkMode::PreOrder, |_, e| {
        if e.kind() == Some(git2::ObjectType::Blob) {
            n += 1;
        }
        git2::TreeWalkResult::Ok
    })?;
    Ok(n)
}
