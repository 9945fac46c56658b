//! `agent cache ls|rm|prune [--state-dir DIR | --config FILE]`: the step cache of a state
//! directory (`agent exec`'s, default `.agent/` in the current directory, or the daemon's
//! with `--config`).
//!
//! - `ls [--json]`: one line per entry (newest use first): key, step, scope, size, run, age.
//! - `rm KEY...`: removes the entries whose key (or entry id) starts with each `KEY`.
//! - `prune [--all]`: drops expired entries (every entry with `--all`), files no entry
//!   uses, and evicts the least recently used entries down to the cap.
//!
//! Exit codes: 0 done, 1 a `rm` key matched nothing, 2 invalid arguments or config.

use std::path::PathBuf;

use serde_json::json;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::cache::{CacheStore, DEFAULT_CACHE_MAX_BYTES};

/// Arguments of `agent cache`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CacheArgs {
    #[command(subcommand)]
    pub(crate) command: CacheCommand,
    /// The state directory holding the cache (default: `AGENT_STATE_DIR`, else `.agent` in
    /// the current directory).
    #[arg(long, value_name = "DIR", global = true)]
    pub(crate) state_dir: Option<PathBuf>,
    /// The daemon's config file: its `state_dir` and `limits.cache_max_bytes`.
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,
}

/// `agent cache` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum CacheCommand {
    /// List the entries, most recently used first.
    Ls {
        /// One JSON object on stdout: `{"entries": [...], "bytes": N, "max_bytes": N}`.
        #[arg(long)]
        json: bool,
    },
    /// Remove the entries whose key starts with each KEY.
    Rm {
        /// Keys or key prefixes.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Remove expired entries and unused files, and evict down to the cap.
    Prune {
        /// Remove every entry.
        #[arg(long)]
        all: bool,
    },
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: CacheArgs) -> i32 {
    let (state_dir, max_bytes) = match &args.config {
        Some(path) => match crate::config::Config::load(path) {
            Ok(c) => (c.state_dir.clone(), c.limits.cache_max_bytes),
            Err(d) => {
                eprint!("{}", d.render());
                return EXIT_INVALID;
            }
        },
        None => (
            args.state_dir
                .clone()
                .or_else(|| std::env::var_os("AGENT_STATE_DIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(".agent")),
            DEFAULT_CACHE_MAX_BYTES,
        ),
    };
    let store = CacheStore::new(&state_dir, max_bytes);
    match args.command {
        CacheCommand::Ls { json } => {
            let entries = match store.list() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_FAILED;
                }
            };
            if json {
                let list: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        json!({
                            "key": e.key, "id": e.id, "step": e.identity, "repo": e.repo,
                            "scope": e.scope, "branch": e.branch, "run_id": e.run_id,
                            "bytes": e.bytes, "files": e.files.len(),
                            "created_at": chrono::DateTime::from_timestamp_millis(e.created_at).map(crate::model::rfc3339),
                            "last_used": chrono::DateTime::from_timestamp_millis(e.last_used).map(crate::model::rfc3339),
                            "expires_at": e.expires_at.and_then(chrono::DateTime::from_timestamp_millis).map(crate::model::rfc3339),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"entries": list, "bytes": store.disk_bytes(), "max_bytes": max_bytes})
                );
                return EXIT_OK;
            }
            if entries.is_empty() {
                println!("no cache entries in `{}`", store.dir().display());
                return EXIT_OK;
            }
            let now = chrono::Utc::now().timestamp_millis();
            for e in &entries {
                let age =
                    std::time::Duration::from_millis(u64::try_from(now - e.last_used).unwrap_or(0));
                let scope = if e.scope == "branch" {
                    format!("branch {}", e.branch)
                } else {
                    "repo".to_string()
                };
                println!(
                    "{}  {}  {}  {}  run {}  used {} ago",
                    &e.key[..12.min(e.key.len())],
                    e.identity,
                    scope,
                    human(e.bytes),
                    e.run_id,
                    crate::model::fmt::duration(std::time::Duration::from_secs(age.as_secs()))
                );
            }
            println!(
                "{} entries, {} of {}",
                entries.len(),
                human(store.disk_bytes()),
                human(max_bytes)
            );
            EXIT_OK
        }
        CacheCommand::Rm { keys } => {
            let mut code = EXIT_OK;
            for k in &keys {
                match store.remove(k) {
                    Ok(0) => {
                        eprintln!("error: no cache entry with key `{k}`");
                        code = EXIT_FAILED;
                    }
                    Ok(n) => println!(
                        "removed {n} entr{} for `{k}`",
                        if n == 1 { "y" } else { "ies" }
                    ),
                    Err(e) => {
                        eprintln!("error: {e}");
                        code = EXIT_FAILED;
                    }
                }
            }
            code
        }
        CacheCommand::Prune { all } => match store.prune(all) {
            Ok(p) => {
                println!(
                    "removed {} entr{}, freed {}",
                    p.entries,
                    if p.entries == 1 { "y" } else { "ies" },
                    human(p.bytes)
                );
                EXIT_OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_FAILED
            }
        },
    }
}
