//! `agent daemon [--config FILE]`: run the daemon in the foreground until SIGTERM or SIGINT.
//!
//! With no `--config` the daemon runs on the embedded defaults (state in `./.agent/`,
//! listening on 127.0.0.1:8420, watching the git repository around the current directory);
//! a config file without a `repos` key also watches that repository. `--listen ADDR`
//! overrides the listen address. With no repository at all it warns that nothing will run.
//! Logs go to stderr (`RUST_LOG` filters them, default `info`). A second SIGTERM or SIGINT
//! ends the shutdown grace period at once. Exit codes: 0 after a clean
//! shutdown, 1 when the daemon cannot start or fails, 2 for an invalid config file.

use std::path::PathBuf;

use clap::Args;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::config::Config;

/// Arguments of `agent daemon`.
#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// The config file (YAML, see `examples/agent.yaml`). Without it: the embedded defaults.
    #[arg(long, short = 'c')]
    pub(crate) config: Option<PathBuf>,
    /// The API's address (`PORT`, `IP:PORT` or `HOST:PORT`; port 0 picks a free one),
    /// instead of the config's `listen`.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: DaemonArgs) -> i32 {
    init_logging();
    let listen = match args.listen.as_deref().map(crate::config::parse_listen) {
        None => None,
        Some(Ok(addr)) => Some(addr),
        Some(Err(e)) => {
            eprintln!("error: --listen: {e}");
            return EXIT_INVALID;
        }
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("error: cannot read the current directory: {err}");
            return EXIT_FAILED;
        }
    };
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(mut c) => {
                c.watch_cwd_if_unset(&cwd);
                c
            }
            Err(diags) => {
                eprint!("{}", diags.render());
                eprintln!("error: invalid config file `{}`", path.display());
                return EXIT_INVALID;
            }
        },
        None => Config::embedded(&cwd),
    };
    if let Some(addr) = listen {
        config.listen = addr;
    }
    if config.repos.is_empty() {
        tracing::warn!(
            "no repository configured: nothing will run (list some under `repos:` in the config, or start the daemon inside a git repository)"
        );
    }
    // Steps running as another user must not read the config (it may hold the API token
    // and secrets' sources).
    if let Some(path) = &args.config
        && config.run_as.is_some()
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the config file is readable by other users: making it 0600");
            if let Err(err) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!(error = %err, "cannot restrict the config file's mode");
            }
        }
    }
    // Before any thread exists: the environment and libgit2's globals.
    if let Err(err) = crate::server::prepare_process(&config) {
        return crate::errors::report(&err);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return EXIT_FAILED;
        }
    };
    let result = runtime.block_on(async {
        let (count_tx, count) = tokio::sync::watch::channel(0u32);
        tokio::spawn(count_signals(count_tx));
        let wait = |n: u32| {
            let mut rx = count.clone();
            async move {
                let _ = rx.wait_for(|c| *c >= n).await;
            }
        };
        crate::server::run_until(config, wait(1), wait(2)).await
    });
    // Blocking threads (a git fetch, a SQLite write) are not waited for forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => EXIT_OK,
        Err(err) => crate::errors::report(&err),
    }
}

/// Counts SIGTERM and SIGINT: the first starts a graceful shutdown, the second ends its
/// grace period.
async fn count_signals(count: tokio::sync::watch::Sender<u32>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers (should not happen on Unix) Ctrl-C still works.
        let _ = tokio::signal::ctrl_c().await;
        count.send_modify(|c| *c += 1);
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        count.send_modify(|c| *c += 1);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
