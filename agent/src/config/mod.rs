//! The daemon config file (see the README's `agent daemon` reference): its typed model with
//! defaults, and its parser.
//!
//! The file is read with the `dsl` crate's YAML tree (positions kept) and checked in one
//! pass, so every problem is reported like a workflow file's: `FILE:LINE:COL: error: TEXT`,
//! unknown keys with a did-you-mean hint, wrong types and enum values named. Meaning that
//! depends on the outside world (does an environment variable exist, can a secrets file be
//! read) is checked when the daemon starts ([`Config::load_secrets`]), not here.
//!
//! `schemas/config.schema.json` describes the same keys for editors; a test keeps the two
//! in step.
//!
//! With no file, [`Config::embedded`] gives the defaults the daemon runs on: state in
//! `./.agent/`, listening on 127.0.0.1:8420, watching the git repository around the current
//! directory as repository `default` on its current branch.

mod secrets;

pub(crate) use secrets::{SecretError, SecretSource};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dsl::yaml::{Node, NodeKind, ScalarValue, Span};
use dsl::{Diagnostic, Diagnostics, SourceFile};
use indexmap::IndexMap;

/// The default listen address.
const DEFAULT_LISTEN: &str = "127.0.0.1:8420";
/// The default state directory (relative to the daemon's working directory).
const DEFAULT_STATE_DIR: &str = ".agent";
/// How often a remote repository is fetched by default.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// How often a local repository is checked besides its ref watch, by default.
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// The default cap of one step's log file.
const DEFAULT_MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// The default number of runs run at once.
const DEFAULT_MAX_CONCURRENT_RUNS: usize = 4;
/// How long running steps may take to finish after SIGTERM before they are cancelled.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long a git fetch may get nothing from the remote before it fails.
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `limits.store_busy_timeout`.
const DEFAULT_STORE_BUSY_TIMEOUT: Duration = crate::store::BUSY_TIMEOUT;
/// Default of `limits.record_timeout`.
const DEFAULT_RECORD_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `limits.max_runs_per_minute`: push runs of one workflow queued per minute.
const DEFAULT_MAX_RUNS_PER_MINUTE: u32 = 30;
/// Default `limits.heartbeat`: how often a node renews its row and its runs' leases.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);
/// Default `limits.lease`: how long a node's claim on a run holds without a heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// Default `store.pool`: idle read connections kept to PostgreSQL.
pub const DEFAULT_STORE_POOL: usize = 8;
/// Default `anomalies.min_slowdown`: the absolute floor of a slow run's excess over the p95.
const DEFAULT_MIN_SLOWDOWN: Duration = Duration::from_secs(5);

/// Where a repository comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoSource {
    /// A URL fetched every `poll_interval` (`git://`, `file://`, `https://`, ...).
    Url(String),
    /// A local repository, watched on its refs.
    Path(PathBuf),
}

impl RepoSource {
    /// The URL (or path) the mirror clones from.
    pub(crate) fn clone_url(&self) -> String {
        match self {
            RepoSource::Url(u) => u.clone(),
            RepoSource::Path(p) => p.to_string_lossy().into_owned(),
        }
    }

    /// True for a local path.
    pub(crate) fn is_local(&self) -> bool {
        matches!(self, RepoSource::Path(_))
    }
}

/// Credentials for a remote repository, by environment variable name (never the values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The variable holding the user name (`x-access-token` when only a token is given).
    pub username_env: Option<String>,
    /// The variable holding the password or token.
    pub password_env: Option<String>,
}

/// One watched repository.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoConfig {
    /// Its name (letters, digits, `.`, `_`, `-`): the mirror directory and the API's `repo`.
    pub name: String,
    /// Where it comes from.
    pub source: RepoSource,
    /// `owner/name`, to match inbound push hooks.
    pub full_name: Option<String>,
    /// Branch globs watched; empty means every branch (each workflow's `on.push.branches`
    /// still filters).
    pub branches: Vec<String>,
    /// How often a remote is fetched (and a local repository checked besides its watch).
    pub poll_interval: Duration,
    /// Credentials by environment variable name.
    pub credentials: Option<Credentials>,
    /// Runs of pull requests from forks (head repository other than the base) get the
    /// daemon's secrets too (default false: they get none).
    pub secrets_for_forks: bool,
}

/// The format of an outgoing webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// Agent's own JSON.
    #[default]
    Generic,
    /// Slack incoming webhook.
    Slack,
    /// Discord webhook.
    Discord,
    /// Microsoft Teams.
    Teams,
    /// GitHub commit statuses.
    GithubStatus,
}

impl WebhookFormat {
    /// Every format with its config text.
    pub(crate) const ALL: &'static [(&'static str, WebhookFormat)] = &[
        ("generic", WebhookFormat::Generic),
        ("slack", WebhookFormat::Slack),
        ("discord", WebhookFormat::Discord),
        ("teams", WebhookFormat::Teams),
        ("github_status", WebhookFormat::GithubStatus),
    ];
}

/// Retry schedule of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookRetry {
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Cap of the delay between attempts.
    pub max_delay: Duration,
    /// Give up after this long since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for WebhookRetry {
    fn default() -> Self {
        WebhookRetry {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5 * 60),
            max_elapsed: Duration::from_secs(24 * 3600),
        }
    }
}

/// One outgoing webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Its name (defaults to its URL).
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Events sent (`run.started`, `run.finished`, ...); empty means all.
    pub events: Vec<String>,
    /// Workflow names (globs) it is about; empty means all.
    pub workflows: Vec<String>,
    /// Payload format.
    pub format: WebhookFormat,
    /// The API base URL, for `github_status`.
    pub api: Option<String>,
    /// The variable holding the API token, for `github_status`.
    pub token_env: Option<String>,
    /// A minijinja template for the body.
    pub template: Option<String>,
    /// HMAC-SHA256 signing secret.
    pub secret: Option<String>,
    /// Extra headers.
    pub headers: IndexMap<String, String>,
    /// Retry schedule.
    pub retry: WebhookRetry,
    /// At most this many deliveries per second.
    pub rate_limit: Option<f64>,
}

/// Inbound push hook secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HooksConfig {
    /// The secret GitHub signs `/hooks/github` payloads with.
    pub github_secret: Option<String>,
    /// The secret Gitea signs `/hooks/gitea` payloads with.
    pub gitea_secret: Option<String>,
}

/// Anomaly detection thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomaliesConfig {
    /// A succeeded run slower than this factor times the p95 of the `window` succeeded runs
    /// before it is slow.
    pub slow_factor: f64,
    /// Succeeded runs needed before slowness is judged (and finished runs before the
    /// failure rate is).
    pub min_samples: usize,
    /// Succeeded runs the p95 is taken over.
    pub window: usize,
    /// A failure rate above this over `failure_window` is an anomaly (raised when it crosses).
    pub failure_rate: f64,
    /// Runs the failure rate is taken over.
    pub failure_window: usize,
    /// A step using more memory than this (MiB) is an anomaly.
    pub step_memory_mb: Option<u64>,
    /// A run is slow only if it is also at least this much slower than the p95 (an
    /// absolute floor, so that a 50 ms run is not "slow" against a 10 ms p95).
    pub min_slowdown: Duration,
}

impl Default for AnomaliesConfig {
    fn default() -> Self {
        AnomaliesConfig {
            slow_factor: 1.5,
            min_samples: 5,
            window: 20,
            failure_rate: 0.5,
            failure_window: 10,
            step_memory_mb: None,
            min_slowdown: DEFAULT_MIN_SLOWDOWN,
        }
    }
}

/// Default of `limits.cache_max_bytes`: 5 GiB.
pub(crate) const DEFAULT_CACHE_MAX_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// Default of `limits.max_run_processes`.
const DEFAULT_MAX_RUN_PROCESSES: u32 = 1024;

/// Limits across runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Runs running at once.
    pub max_concurrent_runs: usize,
    /// CPU slots shared by every run's steps (default: the cores available); steps that
    /// request no CPU (`cpu: 0`) are not counted.
    pub max_parallel_steps: Option<usize>,
    /// Processes one run may have at once (the run's cgroup `pids.max`; see
    /// `runners::RunScope`).
    pub max_run_processes: u32,
    /// Memory kept free for the system (MiB) when admitting steps.
    pub memory_reserve_mb: Option<u64>,
    /// Cap of one step's log file, in bytes.
    pub max_log_bytes: u64,
    /// After SIGTERM, how long running steps may take before they are cancelled.
    pub shutdown_grace: Duration,
    /// A git fetch or clone fails when the remote sends nothing for this long (connecting
    /// may take at most 10 s of it).
    pub fetch_timeout: Duration,
    /// How long one database write waits for SQLite's lock before it counts as failed (and
    /// is retried with backoff).
    pub store_busy_timeout: Duration,
    /// How long a step waits for its start to be recorded (behind earlier writes being
    /// retried) before it fails with `StorageError` without running.
    pub record_timeout: Duration,
    /// Push runs of one workflow (per repository) queued in any one minute; more are not
    /// queued and a `rate limited` line is logged (0: no limit). The guard against loops
    /// that the commit-identity check does not catch (workflows pushing to each other).
    pub max_runs_per_minute: u32,
    /// Most bytes the step cache (entries and their files) takes under the state
    /// directory; least recently used entries are evicted beyond it.
    pub cache_max_bytes: u64,
    /// How often the node writes its heartbeat and renews the leases of the runs it holds.
    pub heartbeat: Duration,
    /// How long a claim on a run holds without renewal; a node silent for longer loses its
    /// runs to the others (and is shown `lost`). Always more than `heartbeat`.
    pub lease: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_runs: DEFAULT_MAX_CONCURRENT_RUNS,
            max_parallel_steps: None,
            max_run_processes: DEFAULT_MAX_RUN_PROCESSES,
            memory_reserve_mb: None,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            store_busy_timeout: DEFAULT_STORE_BUSY_TIMEOUT,
            record_timeout: DEFAULT_RECORD_TIMEOUT,
            max_runs_per_minute: DEFAULT_MAX_RUNS_PER_MINUTE,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            heartbeat: DEFAULT_HEARTBEAT,
            lease: DEFAULT_LEASE,
        }
    }
}

/// How long finished runs (and their logs) are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Keep at most this many finished runs.
    pub max_runs: Option<usize>,
    /// Delete finished runs older than this.
    pub max_age: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_runs: Some(10_000),
            max_age: Some(Duration::from_secs(90 * 24 * 3600)),
        }
    }
}

/// Where the daemon keeps its state (`store:`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreConfig {
    /// The embedded SQLite file under `state_dir` (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by a fleet of agents.
    Postgres {
        /// The environment variable holding the database URL (never written to the config,
        /// never printed).
        url_env: String,
        /// Idle read connections kept open.
        pool: usize,
    },
}

impl StoreConfig {
    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::Sqlite => "sqlite",
            StoreConfig::Postgres { .. } => "postgres",
        }
    }

    /// The PostgreSQL URL from its environment variable; `None` for SQLite. The error names
    /// the variable, never its value.
    pub fn postgres_url(&self) -> Option<Result<String, String>> {
        match self {
            StoreConfig::Sqlite => None,
            StoreConfig::Postgres { url_env, .. } => Some(match std::env::var(url_env) {
                Ok(url) if !url.trim().is_empty() => Ok(url),
                Ok(_) => Err(format!(
                    "`store.url_env`: environment variable `{url_env}` is empty"
                )),
                Err(_) => Err(format!(
                    "`store.url_env`: environment variable `{url_env}` is not set"
                )),
            }),
        }
    }
}

/// This machine's host name (`localhost` when it cannot be read).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}

/// The default `node`: the host name, `-`, and the daemon's pid.
pub fn default_node_name() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// The daemon's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the database, mirrors, workspaces and logs live.
    pub state_dir: PathBuf,
    /// The API's listen address (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The API's Bearer token. `None`: the API answers 401 to everything but `/health`.
    pub api_token: Option<String>,
    /// The daemon's address as people and services reach it (`https://ci.example.com`), for
    /// the links to runs in notifications; `None`: `http://` and the bound `listen` address.
    pub public_url: Option<String>,
    /// Watched repositories.
    pub repos: Vec<RepoConfig>,
    /// Whether the file had a `repos` key. Without one the daemon watches the git repository
    /// it is started in, as on the embedded defaults ([`Config::watch_cwd_if_unset`]);
    /// `repos: []` watches nothing.
    pub repos_given: bool,
    /// Skill directories searched after the workspace's own.
    pub skills_dirs: Vec<PathBuf>,
    /// Secrets by name.
    pub secrets: IndexMap<String, SecretSource>,
    /// Names of daemon environment variables steps see besides the minimal ones (`PATH`,
    /// `HOME`, ...); nothing else of the daemon's environment reaches a step.
    pub env_passthrough: Vec<String>,
    /// Keep the workspace of a failed run.
    pub keep_failed_workspaces: bool,
    /// The user steps run as when the daemon runs as root (a name or a uid).
    pub run_as: Option<String>,
    /// With `run_as`: the uids (`FIRST..=LAST`) runs take one each, so that runs running at
    /// the same time cannot reach each other (`run_as`'s group and home stay).
    pub run_as_uids: Option<(u32, u32)>,
    /// Outgoing webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// Inbound hook secrets.
    pub hooks: HooksConfig,
    /// Anomaly thresholds.
    pub anomalies: AnomaliesConfig,
    /// Limits.
    pub limits: Limits,
    /// Retention of finished runs and logs.
    pub retention: RetentionConfig,
    /// The database: SQLite under `state_dir`, or a PostgreSQL database shared by a fleet.
    pub store: StoreConfig,
    /// This agent's name in the fleet (owner of the runs it claims, its row in `agent
    /// nodes`); default `<hostname>-<pid>`.
    pub node: String,
}

impl Default for Config {
    /// The defaults with no repository.
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            api_token: None,
            public_url: None,
            repos: Vec::new(),
            repos_given: false,
            skills_dirs: Vec::new(),
            secrets: IndexMap::new(),
            env_passthrough: Vec::new(),
            keep_failed_workspaces: false,
            run_as: None,
            run_as_uids: None,
            webhooks: Vec::new(),
            hooks: HooksConfig::default(),
            anomalies: AnomaliesConfig::default(),
            limits: Limits::default(),
            retention: RetentionConfig::default(),
            store: StoreConfig::default(),
            node: default_node_name(),
        }
    }
}

/// A repository `url` the mirror can fetch: `http(s)://`, `git://`, `file://` or an absolute
/// path. ssh remotes (`git@host:path`, `ssh://`) are not supported.
fn check_remote_url(u: &str) -> Result<(), String> {
    let scheme = u.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http" | "https" | "git" | "file") => Ok(()),
        Some("ssh" | "git+ssh" | "ssh+git") => Err(format!(
            "ssh remotes are not supported (`{u}`): use the `https://` URL with `credentials`, or `git://`"
        )),
        Some(other) => Err(format!(
            "unsupported URL scheme `{other}://` in `{u}`: use `https://`, `http://`, `git://` or `file://` (or `path:` for a local repository)"
        )),
        None if u.starts_with('/') => Ok(()),
        None if u.contains('@') && u.contains(':') => Err(format!(
            "`{u}` is an ssh remote, which is not supported: use the `https://` URL with `credentials`, or `git://`"
        )),
        None => Err(format!(
            "`{u}` is not a repository URL: use `https://HOST/OWNER/NAME.git`, `git://`, `file://`, or `path:` for a local repository"
        )),
    }
}

/// A webhook `url`: an absolute `http://` or `https://` URL with a host.
fn check_webhook_url(u: &str) -> Result<(), String> {
    match reqwest::Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(url) => Err(format!(
            "webhook `url` must be an `http://` or `https://` URL, found `{}://` in `{u}`",
            url.scheme()
        )),
        Err(e) => Err(format!("webhook `url` `{u}` is not a URL: {e}")),
    }
}

/// A listen address: `PORT` (on 127.0.0.1), `IP:PORT`, or `HOST:PORT` (resolved).
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| {
            use std::net::ToSocketAddrs;
            s.to_socket_addrs().ok().and_then(|mut a| a.next())
        })
        .ok_or_else(|| {
            format!("`listen` must be an address such as `{DEFAULT_LISTEN}`, found `{s}`")
        })
}

impl Config {
    /// A config file without a `repos` key watches the git repository around `cwd`, as the
    /// embedded defaults do (a file that sets only `listen:` used to watch nothing).
    pub(crate) fn watch_cwd_if_unset(&mut self, cwd: &Path) {
        if !self.repos_given && self.repos.is_empty() {
            self.repos = Config::embedded(cwd).repos;
        }
    }

    /// The embedded defaults: the git repository around `cwd` (if any) as repository
    /// `default`, watched on its current branch; state in `cwd/.agent`.
    pub(crate) fn embedded(cwd: &Path) -> Config {
        let mut config = Config {
            state_dir: cwd.join(DEFAULT_STATE_DIR),
            ..Config::default()
        };
        if let Ok(repo) = git2::Repository::discover(cwd)
            && let Some(workdir) = repo.workdir()
        {
            // HEAD's symbolic target also names the branch of a repository with no commit.
            let branch = repo
                .find_reference("HEAD")
                .ok()
                .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string))
                .and_then(|t| t.strip_prefix("refs/heads/").map(str::to_string));
            config.repos.push(RepoConfig {
                name: "default".into(),
                source: RepoSource::Path(workdir.to_path_buf()),
                full_name: None,
                branches: branch.into_iter().collect(),
                poll_interval: DEFAULT_CHECK_INTERVAL,
                credentials: None,
                secrets_for_forks: false,
            });
        }
        config
    }

    /// Reads and checks a config file. Relative paths in it (`state_dir`, repository paths,
    /// skill directories, secret files) are taken relative to the file's directory.
    pub(crate) fn load(path: &Path) -> Result<Config, Diagnostics> {
        let (text, tree) = dsl::yaml::parse_file(path);
        let file = SourceFile::new(path, text);
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if file.text.as_deref().is_some_and(is_blank) {
            return Ok(Config::default().rebased(&base));
        }
        let result = tree.and_then(|parsed| parse_parsed(parsed, &base));
        result.map_err(|diags| attach(diags, &file))
    }

    /// Parses config text (diagnostics name the file `name`); relative paths are taken
    /// relative to `base`.
    pub fn parse_str(name: &str, text: &str, base: &Path) -> Result<Config, Diagnostics> {
        if is_blank(text) {
            return Ok(Config::default().rebased(base));
        }
        let file = SourceFile::new(name, Some(text.to_string()));
        dsl::yaml::parse_str(text)
            .and_then(|parsed| parse_parsed(parsed, base))
            .map_err(|diags| attach(diags, &file))
    }

    /// Reads every configured secret's value (from the environment or files).
    pub(crate) fn load_secrets(&self) -> Result<IndexMap<String, String>, SecretError> {
        secrets::load(&self.secrets)
    }

    /// The repository called `name`.
    pub(crate) fn repo(&self, name: &str) -> Option<&RepoConfig> {
        self.repos.iter().find(|r| r.name == name)
    }
}

fn attach(diags: Vec<Diagnostic>, file: &Arc<SourceFile>) -> Diagnostics {
    Diagnostics(diags.into_iter().map(|d| d.in_file(file)).collect())
}

/// Collects diagnostics while reading the tree.
struct Reader {
    diags: Vec<Diagnostic>,
    base: PathBuf,
}

const TOP_KEYS: &[&str] = &[
    "state_dir",
    "listen",
    "api_token",
    "public_url",
    "repos",
    "skills_dirs",
    "secrets",
    "env_passthrough",
    "keep_failed_workspaces",
    "run_as",
    "run_as_uids",
    "webhooks",
    "hooks",
    "anomalies",
    "limits",
    "retention",
    "store",
    "node",
];
const REPO_KEYS: &[&str] = &[
    "name",
    "url",
    "path",
    "full_name",
    "branches",
    "poll_interval",
    "credentials",
    "secrets_for_forks",
];
const CREDENTIAL_KEYS: &[&str] = &["username_env", "password_env", "token_env"];
const SECRET_KEYS: &[&str] = &["env", "file"];
const WEBHOOK_KEYS: &[&str] = &[
    "name",
    "url",
    "events",
    "workflows",
    "format",
    "api",
    "token_env",
    "template",
    "secret",
    "headers",
    "retry",
    "rate_limit",
];
const WEBHOOK_RETRY_KEYS: &[&str] = &["initial_delay", "max_delay", "max_elapsed"];
const HOOKS_KEYS: &[&str] = &["github_secret", "gitea_secret"];
const ANOMALY_KEYS: &[&str] = &[
    "slow_factor",
    "min_samples",
    "window",
    "failure_rate",
    "failure_window",
    "step_memory_mb",
    "min_slowdown",
];
const LIMIT_KEYS: &[&str] = &[
    "max_concurrent_runs",
    "max_parallel_steps",
    "max_run_processes",
    "memory_reserve_mb",
    "max_log_bytes",
    "shutdown_grace",
    "fetch_timeout",
    "store_busy_timeout",
    "record_timeout",
    "max_runs_per_minute",
    "cache_max_bytes",
    "heartbeat",
    "lease",
];
const STORE_KEYS: &[&str] = &["kind", "url_env", "pool"];
const RETENTION_KEYS: &[&str] = &["max_runs", "max_age"];

/// Reads a parsed file: its tree's problems (duplicate keys, ...) and the config's, together.
fn parse_parsed(parsed: dsl::yaml::Parsed, base: &Path) -> Result<Config, Vec<Diagnostic>> {
    let result = parse_tree(&parsed.root, base);
    if parsed.diagnostics.is_empty() {
        return result;
    }
    let mut diags = parsed.diagnostics;
    if let Err(more) = result {
        diags.extend(more);
    }
    diags.sort_by_key(|d| (d.span.start.line, d.span.start.column));
    Err(diags)
}

fn parse_tree(root: &Node, base: &Path) -> Result<Config, Vec<Diagnostic>> {
    let mut r = Reader {
        diags: Vec::new(),
        base: base.to_path_buf(),
    };
    let mut config = Config::default().rebased(base);
    if root.is_null() {
        return Ok(config);
    }
    let Some(entries) = r.map(root, "the config file") else {
        return Err(r.diags);
    };
    r.check_keys(entries, TOP_KEYS);
    for (key, value) in entries {
        match key.as_str().unwrap_or_default() {
            "state_dir" => {
                if let Some(p) = r.path(value) {
                    config.state_dir = p;
                }
            }
            "listen" => {
                // A bare port means 127.0.0.1:PORT; a host name (`localhost:8420`) is resolved.
                if let Some(ScalarValue::Int(port)) = value.as_scalar().map(|s| &s.value)
                    && let Ok(port) = u16::try_from(*port)
                {
                    config.listen = SocketAddr::from(([127, 0, 0, 1], port));
                } else if let Some(s) = r.string(value) {
                    match parse_listen(&s) {
                        Ok(a) => config.listen = a,
                        Err(e) => r.error(value.span, e),
                    }
                }
            }
            "api_token" => config.api_token = r.string(value),
            "public_url" => {
                if let Some(u) = r.string(value) {
                    if u.starts_with("http://") || u.starts_with("https://") {
                        config.public_url = Some(u.trim_end_matches('/').to_string());
                    } else {
                        r.error(
                            value.span,
                            format!(
                                "`public_url` must start with `http://` or `https://`, found `{u}`"
                            ),
                        );
                    }
                }
            }
            "repos" => {
                config.repos = r.repos(value);
                config.repos_given = true;
            }
            "skills_dirs" => {
                config.skills_dirs = r.list(value, |r, n| r.path(n));
            }
            "secrets" => config.secrets = r.secrets(value),
            "env_passthrough" => config.env_passthrough = r.list(value, Reader::env_name),
            "keep_failed_workspaces" => {
                if let Some(b) = r.bool(value) {
                    config.keep_failed_workspaces = b;
                }
            }
            "run_as" => {
                config.run_as = match value.as_scalar().map(|s| &s.value) {
                    Some(ScalarValue::Int(i)) if *i >= 0 => Some(i.to_string()),
                    _ => r.string(value).filter(|s| !s.is_empty()),
                }
            }
            "run_as_uids" => {
                config.run_as_uids = r.uid_range(value);
                if config.run_as_uids.is_some()
                    && !entries.iter().any(|(k, _)| k.as_str() == Some("run_as"))
                {
                    r.error(
                        value.span,
                        "`run_as_uids` needs `run_as` (the group and home of the run uids)",
                    );
                }
            }
            "webhooks" => config.webhooks = r.list(value, Reader::webhook),
            "hooks" => config.hooks = r.hooks(value),
            "anomalies" => config.anomalies = r.anomalies(value),
            "limits" => config.limits = r.limits(value),
            "retention" => config.retention = r.retention(value),
            "store" => config.store = r.store(value),
            "node" => {
                if let Some(name) = r.string(value) {
                    if name.is_empty()
                        || name.len() > 200
                        || name.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        r.error(
                            value.span,
                            format!(
                                "`node` must be a name of 1 to 200 characters without spaces, found `{}`",
                                name.escape_debug()
                            ),
                        );
                    } else {
                        config.node = name;
                    }
                }
            }
            _ => {}
        }
    }
    if r.diags.iter().any(Diagnostic::is_error) {
        r.diags
            .sort_by_key(|d| (d.span.start.line, d.span.start.column));
        Err(r.diags)
    } else {
        Ok(config)
    }
}

impl Reader {
    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(span, message));
    }

    fn wrong_type(&mut self, node: &Node, expected: &str) {
        self.error(
            node.span,
            format!("expected {expected}, found {}", node.type_name()),
        );
    }

    fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Node, Node)]> {
        match &node.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be a mapping, found {}", node.type_name()),
                );
                None
            }
        }
    }

    fn check_keys(&mut self, entries: &[(Node, Node)], known: &[&str]) {
        for (key, _) in entries {
            let name = key.as_str().unwrap_or_default();
            if !known.contains(&name) {
                let mut d = Diagnostic::error(key.span, format!("unknown key `{name}`"));
                if let Some(s) = dsl::lower::suggest(name, known.iter().copied()) {
                    d.message.push_str(&format!(", did you mean `{s}`?"));
                } else {
                    d = d.with_hint(format!("known keys: {}", backticked(known)));
                }
                self.diags.push(d);
            }
        }
    }

    /// `FIRST-LAST`: a range of unprivileged uids (`1000 <= FIRST <= LAST < 4294967295`).
    fn uid_range(&mut self, node: &Node) -> Option<(u32, u32)> {
        let text = self.string(node)?;
        let parsed = text.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
        });
        match parsed {
            Some((first, last)) if first >= 1000 && first <= last && last < u32::MAX => {
                Some((first, last))
            }
            Some((first, last)) if first > last => {
                self.error(
                    node.span,
                    format!("`{text}`: the first uid is above the last"),
                );
                None
            }
            Some(_) => {
                self.error(
                    node.span,
                    format!(
                        "`{text}`: run uids must be unprivileged (1000 to 4294967294), never \
                         root or a system account"
                    ),
                );
                None
            }
            None => {
                self.error(
                    node.span,
                    format!("`{text}` is not a uid range `FIRST-LAST` (e.g. `200000-200999`)"),
                );
                None
            }
        }
    }

    fn string(&mut self, node: &Node) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar(s) if !matches!(s.value, ScalarValue::Null) => Some(s.text.clone()),
            _ => {
                self.wrong_type(node, "a string");
                None
            }
        }
    }

    fn opt_string(&mut self, node: &Node) -> Option<String> {
        if node.is_null() {
            None
        } else {
            self.string(node)
        }
    }

    fn path(&mut self, node: &Node) -> Option<PathBuf> {
        let s = self.string(node)?;
        let p = expand_home(&s);
        Some(if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        })
    }

    fn bool(&mut self, node: &Node) -> Option<bool> {
        match node.as_scalar().map(|s| &s.value) {
            Some(ScalarValue::Bool(b)) => Some(*b),
            _ => {
                self.wrong_type(node, "`true` or `false`");
                None
            }
        }
    }

    fn uint(&mut self, node: &Node) -> Option<u64> {
        match node.as_scalar().map(|s| &s.value) {
            Some(ScalarValue::Int(i)) if *i >= 0 => Some(*i as u64),
            _ => {
                self.wrong_type(node, "a non-negative integer");
                None
            }
        }
    }

    fn positive(&mut self, node: &Node) -> Option<usize> {
        match node.as_scalar().map(|s| &s.value) {
            Some(ScalarValue::Int(i)) if *i >= 1 => usize::try_from(*i).ok(),
            _ => {
                self.error(
                    node.span,
                    format!("expected a positive integer, found {}", describe(node)),
                );
                None
            }
        }
    }

    fn number(&mut self, node: &Node) -> Option<f64> {
        match node.as_scalar().map(|s| &s.value) {
            Some(ScalarValue::Int(i)) => Some(*i as f64),
            Some(ScalarValue::Float(f)) if f.is_finite() => Some(*f),
            _ => {
                self.wrong_type(node, "a number");
                None
            }
        }
    }

    /// A duration: seconds (fractions allowed) or a humantime string (`90s`, `5m`).
    fn duration(&mut self, node: &Node) -> Option<Duration> {
        let parsed = match node.as_scalar().map(|s| (&s.value, s.text.as_str())) {
            Some((ScalarValue::Int(i), _)) if *i >= 0 => Some(Duration::from_secs(*i as u64)),
            Some((ScalarValue::Float(f), _)) if f.is_finite() && *f >= 0.0 => {
                Duration::try_from_secs_f64(*f).ok()
            }
            Some((ScalarValue::Str, text)) => humantime::parse_duration(text.trim()).ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.error(
                node.span,
                format!(
                    "expected a duration (seconds, or text such as `90s` or `5m`), found {}",
                    describe(node)
                ),
            );
        }
        parsed
    }

    fn list<T>(
        &mut self,
        node: &Node,
        mut item: impl FnMut(&mut Self, &Node) -> Option<T>,
    ) -> Vec<T> {
        match &node.kind {
            NodeKind::Seq(items) => items.iter().filter_map(|n| item(self, n)).collect(),
            _ if node.is_null() => Vec::new(),
            _ => {
                self.wrong_type(node, "a list");
                Vec::new()
            }
        }
    }

    fn string_list(&mut self, node: &Node) -> Vec<String> {
        self.list(node, |r, n| r.string(n))
    }

    fn env_name(&mut self, node: &Node) -> Option<String> {
        let s = self.string(node)?;
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Some(s)
        } else {
            self.error(
                node.span,
                format!("`{s}` is not an environment variable name"),
            );
            None
        }
    }

    fn repos(&mut self, node: &Node) -> Vec<RepoConfig> {
        let repos = self.list(node, Reader::repo);
        let mut seen = std::collections::HashSet::new();
        if let NodeKind::Seq(items) = &node.kind {
            for (repo, item) in repos.iter().zip(items) {
                if !seen.insert(repo.name.clone()) {
                    self.error(
                        item.span,
                        format!("duplicate repository name `{}`", repo.name),
                    );
                }
            }
        }
        repos
    }

    fn repo(&mut self, node: &Node) -> Option<RepoConfig> {
        let entries = self.map(node, "a repository")?;
        self.check_keys(entries, REPO_KEYS);
        let mut name = None;
        let mut source = None;
        let mut full_name = None;
        let mut branches = Vec::new();
        let mut poll_interval = None;
        let mut credentials = None;
        let mut secrets_for_forks = false;
        let mut ok = true;
        for (key, value) in entries {
            match key.as_str().unwrap_or_default() {
                "name" => {
                    name = self.string(value);
                    if let Some(n) = &name {
                        let valid = !n.is_empty()
                            && !n.starts_with('.')
                            && n.chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                        if !valid {
                            self.error(
                                value.span,
                                format!("invalid repository name `{n}`: use letters, digits, `.`, `_` and `-`"),
                            );
                            ok = false;
                        }
                    }
                }
                "url" | "path" if source.is_some() => {
                    self.error(key.span, "give either `url` or `path`, not both");
                    ok = false;
                }
                "url" => {
                    source = self.string(value).map(RepoSource::Url);
                    if let Some(RepoSource::Url(u)) = &source
                        && let Err(e) = check_remote_url(u)
                    {
                        self.error(value.span, e);
                        ok = false;
                    }
                }
                "path" => source = self.path(value).map(RepoSource::Path),
                "full_name" => {
                    full_name = self.string(value);
                    if let Some(f) = &full_name
                        && f.split('/').filter(|p| !p.is_empty()).count() != 2
                    {
                        self.error(
                            value.span,
                            format!("`full_name` must be `owner/name`, found `{f}`"),
                        );
                    }
                }
                "branches" => branches = self.string_list(value),
                "poll_interval" => poll_interval = self.duration(value),
                "credentials" => credentials = self.credentials(value),
                "secrets_for_forks" => secrets_for_forks = self.bool(value).unwrap_or(false),
                _ => {}
            }
        }
        if name.is_none() && ok {
            self.error(node.span, "a repository needs a `name`");
            ok = false;
        }
        if source.is_none() && ok {
            self.error(node.span, "a repository needs a `url` or a local `path`");
            ok = false;
        }
        if !ok {
            return None;
        }
        let source = source?;
        let poll_interval = poll_interval.unwrap_or(if source.is_local() {
            DEFAULT_CHECK_INTERVAL
        } else {
            DEFAULT_POLL_INTERVAL
        });
        Some(RepoConfig {
            name: name?,
            source,
            full_name,
            branches,
            poll_interval,
            credentials,
            secrets_for_forks,
        })
    }

    fn credentials(&mut self, node: &Node) -> Option<Credentials> {
        let entries = self.map(node, "`credentials`")?;
        self.check_keys(entries, CREDENTIAL_KEYS);
        let mut c = Credentials::default();
        for (key, value) in entries {
            match key.as_str().unwrap_or_default() {
                "username_env" => c.username_env = self.env_name(value),
                "password_env" | "token_env" => c.password_env = self.env_name(value),
                _ => {}
            }
        }
        Some(c)
    }

    fn secrets(&mut self, node: &Node) -> IndexMap<String, SecretSource> {
        let mut out = IndexMap::new();
        if node.is_null() {
            return out;
        }
        let Some(entries) = self.map(node, "`secrets`") else {
            return out;
        };
        for (key, value) in entries {
            let name = key.as_str().unwrap_or_default().to_string();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.error(
                    key.span,
                    format!("secret name `{name}` must be letters, digits and `_`"),
                );
                continue;
            }
            // `NAME: VAR` is short for `NAME: {env: VAR}`.
            if value.as_scalar().is_some() {
                if let Some(var) = self.env_name(value) {
                    out.insert(name, SecretSource::Env(var));
                }
                continue;
            }
            let Some(fields) = self.map(value, "a secret") else {
                continue;
            };
            self.check_keys(fields, SECRET_KEYS);
            let mut source = None;
            for (k, v) in fields {
                match k.as_str().unwrap_or_default() {
                    "env" => source = self.env_name(v).map(SecretSource::Env),
                    "file" => source = self.path(v).map(SecretSource::File),
                    _ => {}
                }
            }
            if fields.len() > 1 {
                self.error(value.span, "a secret comes from one of `env` or `file`");
            } else if let Some(s) = source {
                out.insert(name, s);
            } else if fields.is_empty() {
                self.error(value.span, "a secret needs `env` or `file`");
            }
        }
        out
    }

    fn webhook(&mut self, node: &Node) -> Option<WebhookConfig> {
        let entries = self.map(node, "a webhook")?;
        self.check_keys(entries, WEBHOOK_KEYS);
        let mut name = None;
        let mut url = None;
        let mut w = WebhookConfig {
            name: String::new(),
            url: String::new(),
            events: Vec::new(),
            workflows: Vec::new(),
            format: WebhookFormat::Generic,
            api: None,
            token_env: None,
            template: None,
            secret: None,
            headers: IndexMap::new(),
            retry: WebhookRetry::default(),
            rate_limit: None,
        };
        for (key, value) in entries {
            match key.as_str().unwrap_or_default() {
                "name" => name = self.string(value),
                "url" => {
                    url = self.string(value);
                    if let Some(u) = &url
                        && let Err(e) = check_webhook_url(u)
                    {
                        self.error(value.span, e);
                    }
                }
                "events" => w.events = self.list(value, Reader::webhook_event),
                "workflows" => w.workflows = self.list(value, Reader::glob),
                "format" => {
                    if let Some(s) = self.string(value) {
                        match WebhookFormat::ALL.iter().find(|(t, _)| *t == s) {
                            Some((_, f)) => w.format = *f,
                            None => {
                                let names: Vec<&str> =
                                    WebhookFormat::ALL.iter().map(|(t, _)| *t).collect();
                                let mut msg = format!(
                                    "unknown webhook format `{s}`, expected one of {}",
                                    backticked(&names)
                                );
                                if let Some(sug) = dsl::lower::suggest(&s, names.iter().copied()) {
                                    msg = format!(
                                        "unknown webhook format `{s}`, did you mean `{sug}`?"
                                    );
                                }
                                self.error(value.span, msg);
                            }
                        }
                    }
                }
                "api" => w.api = self.opt_string(value),
                "token_env" => w.token_env = self.env_name(value),
                "template" => {
                    w.template = self.opt_string(value);
                    if let Some(t) = &w.template
                        && let Err(e) = check_template(t)
                    {
                        self.error(value.span, format!("invalid `template`: template: {e}"));
                    }
                }
                "secret" => w.secret = self.opt_string(value),
                "headers" => {
                    if let Some(hs) = self.map(value, "`headers`") {
                        for (k, v) in hs {
                            if let Some(v) = self.string(v) {
                                w.headers
                                    .insert(k.as_str().unwrap_or_default().to_string(), v);
                            }
                        }
                    }
                }
                "retry" => {
                    if let Some(rs) = self.map(value, "`retry`") {
                        self.check_keys(rs, WEBHOOK_RETRY_KEYS);
                        for (k, v) in rs {
                            let d = self.duration(v);
                            match (k.as_str().unwrap_or_default(), d) {
                                ("initial_delay", Some(d)) => w.retry.initial_delay = d,
                                ("max_delay", Some(d)) => w.retry.max_delay = d,
                                ("max_elapsed", Some(d)) => w.retry.max_elapsed = d,
                                _ => {}
                            }
                        }
                    }
                }
                "rate_limit" => {
                    if let Some(n) = self.number(value) {
                        if n > 0.0 {
                            w.rate_limit = Some(n);
                        } else {
                            self.error(value.span, "`rate_limit` must be above 0");
                        }
                    }
                }
                _ => {}
            }
        }
        // A `github_status` webhook posts to its `api`; `url` is not needed there.
        let url = match url {
            Some(u) => u,
            None if w.format == WebhookFormat::GithubStatus => w
                .api
                .clone()
                .unwrap_or_else(|| "https://api.github.com".to_string()),
            None => {
                self.error(node.span, "a webhook needs a `url`");
                return None;
            }
        };
        if w.format == WebhookFormat::GithubStatus && w.token_env.is_none() {
            self.error(node.span, "a `github_status` webhook needs `token_env`");
        }
        w.name = name.unwrap_or_else(|| url.clone());
        w.url = url;
        Some(w)
    }

    /// One of a webhook's `events`: an event name (or `run.finished`), or a glob matching
    /// some.
    fn webhook_event(&mut self, node: &Node) -> Option<String> {
        let s = self.string(node)?;
        let names: Vec<&str> = crate::model::event::EventKind::ALL
            .iter()
            .map(|k| k.as_str())
            .chain(["run.finished"])
            .collect();
        let matches_some = globset::Glob::new(&s)
            .map(|g| g.compile_matcher())
            .is_ok_and(|m| names.iter().any(|n| m.is_match(n)));
        if !matches_some {
            let msg = match dsl::lower::suggest(&s, names.iter().copied()) {
                Some(sug) => format!("unknown webhook event `{s}`, did you mean `{sug}`?"),
                None => format!(
                    "unknown webhook event `{s}`, expected one of {}",
                    backticked(&names)
                ),
            };
            self.error(node.span, msg);
            return None;
        }
        Some(s)
    }

    /// A glob pattern (a name is one too).
    fn glob(&mut self, node: &Node) -> Option<String> {
        let s = self.string(node)?;
        if let Err(e) = globset::Glob::new(&s) {
            self.error(node.span, format!("invalid pattern `{s}`: {}", e.kind()));
            return None;
        }
        Some(s)
    }

    fn hooks(&mut self, node: &Node) -> HooksConfig {
        let mut h = HooksConfig::default();
        if node.is_null() {
            return h;
        }
        if let Some(entries) = self.map(node, "`hooks`") {
            self.check_keys(entries, HOOKS_KEYS);
            for (key, value) in entries {
                match key.as_str().unwrap_or_default() {
                    "github_secret" => h.github_secret = self.opt_string(value),
                    "gitea_secret" => h.gitea_secret = self.opt_string(value),
                    _ => {}
                }
            }
        }
        h
    }

    fn anomalies(&mut self, node: &Node) -> AnomaliesConfig {
        let mut a = AnomaliesConfig::default();
        if node.is_null() {
            return a;
        }
        if let Some(entries) = self.map(node, "`anomalies`") {
            self.check_keys(entries, ANOMALY_KEYS);
            for (key, value) in entries {
                match key.as_str().unwrap_or_default() {
                    "slow_factor" => {
                        if let Some(n) = self.number(value) {
                            a.slow_factor = n;
                        }
                    }
                    "min_samples" => {
                        if let Some(n) = self.positive(value) {
                            a.min_samples = n;
                        }
                    }
                    "window" => {
                        if let Some(n) = self.positive(value) {
                            a.window = n;
                        }
                    }
                    "failure_rate" => {
                        if let Some(n) = self.number(value) {
                            if (0.0..=1.0).contains(&n) {
                                a.failure_rate = n;
                            } else {
                                self.error(value.span, "`failure_rate` must be between 0 and 1");
                            }
                        }
                    }
                    "failure_window" => {
                        if let Some(n) = self.positive(value) {
                            a.failure_window = n;
                        }
                    }
                    "step_memory_mb" => a.step_memory_mb = self.uint(value),
                    "min_slowdown" => {
                        if let Some(d) = self.duration(value) {
                            a.min_slowdown = d;
                        }
                    }
                    _ => {}
                }
            }
        }
        a
    }

    fn limits(&mut self, node: &Node) -> Limits {
        let mut l = Limits::default();
        if node.is_null() {
            return l;
        }
        if let Some(entries) = self.map(node, "`limits`") {
            self.check_keys(entries, LIMIT_KEYS);
            for (key, value) in entries {
                match key.as_str().unwrap_or_default() {
                    "max_concurrent_runs" => {
                        if let Some(n) = self.positive(value) {
                            l.max_concurrent_runs = n;
                        }
                    }
                    "max_parallel_steps" => l.max_parallel_steps = self.positive(value),
                    "max_run_processes" => {
                        if let Some(n) = self.positive(value) {
                            l.max_run_processes = u32::try_from(n).unwrap_or(u32::MAX);
                        }
                    }
                    "memory_reserve_mb" => l.memory_reserve_mb = self.uint(value),
                    "max_log_bytes" => {
                        if let Some(n) = self.uint(value) {
                            l.max_log_bytes = n;
                        }
                    }
                    "shutdown_grace" => {
                        if let Some(d) = self.duration(value) {
                            l.shutdown_grace = d;
                        }
                    }
                    "fetch_timeout" => {
                        if let Some(d) = self.duration(value) {
                            if d.is_zero() {
                                self.error(value.span, "`fetch_timeout` must be more than 0");
                            } else {
                                l.fetch_timeout = d;
                            }
                        }
                    }
                    "store_busy_timeout" => {
                        if let Some(d) = self.duration(value) {
                            l.store_busy_timeout = d;
                        }
                    }
                    "record_timeout" => {
                        if let Some(d) = self.duration(value) {
                            l.record_timeout = d;
                        }
                    }
                    "cache_max_bytes" => {
                        if let Some(n) = self.uint(value) {
                            l.cache_max_bytes = n;
                        }
                    }
                    "heartbeat" => {
                        if let Some(d) = self.duration(value) {
                            if d.is_zero() {
                                self.error(value.span, "`heartbeat` must be more than 0");
                            } else {
                                l.heartbeat = d;
                            }
                        }
                    }
                    "lease" => {
                        if let Some(d) = self.duration(value) {
                            l.lease = d;
                        }
                    }
                    "max_runs_per_minute" => {
                        if let Some(n) = self.uint(value) {
                            match u32::try_from(n) {
                                Ok(n) => l.max_runs_per_minute = n,
                                Err(_) => self.error(
                                    value.span,
                                    format!("`max_runs_per_minute` must be at most {}", u32::MAX),
                                ),
                            }
                        }
                    }
                    _ => {}
                }
            }
            if l.lease <= l.heartbeat {
                let at = entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some("lease"))
                    .or_else(|| {
                        entries
                            .iter()
                            .find(|(k, _)| k.as_str() == Some("heartbeat"))
                    })
                    .map_or(node.span, |(_, v)| v.span);
                self.error(
                    at,
                    format!(
                        "`lease` ({}) must be longer than `heartbeat` ({}): a node renews its leases every heartbeat",
                        humantime::format_duration(l.lease),
                        humantime::format_duration(l.heartbeat)
                    ),
                );
            }
        }
        l
    }

    /// `store: {kind: sqlite}` or `store: {kind: postgres, url_env: NAME, pool: N}`; the
    /// variable must be set and not empty (its value is never shown).
    fn store(&mut self, node: &Node) -> StoreConfig {
        if node.is_null() {
            return StoreConfig::Sqlite;
        }
        let Some(entries) = self.map(node, "`store`") else {
            return StoreConfig::Sqlite;
        };
        self.check_keys(entries, STORE_KEYS);
        let get = |name: &str| entries.iter().find(|(k, _)| k.as_str() == Some(name));
        let kind = match get("kind") {
            None => {
                self.error(node.span, "`store` needs `kind`: `sqlite` or `postgres`");
                return StoreConfig::Sqlite;
            }
            Some((_, v)) => match self.string(v) {
                Some(k) => (k, v.span),
                None => return StoreConfig::Sqlite,
            },
        };
        match kind.0.as_str() {
            "sqlite" => {
                for key in ["url_env", "pool"] {
                    if let Some((k, _)) = get(key) {
                        self.error(k.span, format!("`{key}` is only for `kind: postgres`"));
                    }
                }
                StoreConfig::Sqlite
            }
            "postgres" => {
                let pool = match get("pool") {
                    Some((_, v)) => self.positive(v).unwrap_or(DEFAULT_STORE_POOL),
                    None => DEFAULT_STORE_POOL,
                };
                let url_env = match get("url_env") {
                    None => {
                        self.error(
                            node.span,
                            "`kind: postgres` needs `url_env`: the environment variable holding the database URL",
                        );
                        String::new()
                    }
                    Some((_, v)) => {
                        match self.env_name(v) {
                            Some(var) => {
                                match std::env::var(&var) {
                                Ok(url) if !url.trim().is_empty() => {}
                                Ok(_) => self.error(
                                    v.span,
                                    format!("environment variable `{var}` (the database URL) is empty"),
                                ),
                                Err(_) => self.error(
                                    v.span,
                                    format!("environment variable `{var}` (the database URL) is not set"),
                                ),
                            }
                                var
                            }
                            None => String::new(),
                        }
                    }
                };
                StoreConfig::Postgres { url_env, pool }
            }
            other => {
                self.error(
                    kind.1,
                    format!("unknown store kind `{other}`: expected `sqlite` or `postgres`"),
                );
                StoreConfig::Sqlite
            }
        }
    }

    fn retention(&mut self, node: &Node) -> RetentionConfig {
        let mut r = RetentionConfig::default();
        if node.is_null() {
            return r;
        }
        if let Some(entries) = self.map(node, "`retention`") {
            self.check_keys(entries, RETENTION_KEYS);
            for (key, value) in entries {
                match key.as_str().unwrap_or_default() {
                    "max_runs" => {
                        r.max_runs = if value.is_null() {
                            None
                        } else {
                            self.positive(value)
                        }
                    }
                    "max_age" => {
                        r.max_age = if value.is_null() {
                            None
                        } else {
                            self.duration(value)
                        }
                    }
                    _ => {}
                }
            }
        }
        r
    }
}

/// True for a text with nothing but blank lines and comments.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
}

impl Config {
    /// The default state directory taken relative to the config file's directory.
    fn rebased(mut self, base: &Path) -> Config {
        self.state_dir = base.join(&self.state_dir);
        self
    }
}

/// `~/x` becomes `$HOME/x`.
fn expand_home(s: &str) -> PathBuf {
    if let Some(rest) = s.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    PathBuf::from(s)
}

fn describe(node: &Node) -> String {
    match node.as_scalar() {
        Some(s) if !matches!(s.value, ScalarValue::Null) => format!("`{}`", s.text),
        _ => node.type_name().to_string(),
    }
}

fn backticked(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that a webhook template compiles (at start-up, so a typo is reported before any
/// event); the notifier renders it with the same engine.
fn check_template(template: &str) -> Result<(), String> {
    let env = minijinja::Environment::new();
    env.template_from_str(template).map(|_| ()).map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse_str("agent.yaml", text, Path::new("/etc/agent")).map_err(|d| d.render())
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").expect("valid");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.limits.max_concurrent_runs, DEFAULT_MAX_CONCURRENT_RUNS);
        assert_eq!(c.limits.max_log_bytes, DEFAULT_MAX_LOG_BYTES);
    }

    #[test]
    fn listen_takes_a_port_or_a_host_name() {
        assert_eq!(
            parse("listen: 9000\n").expect("valid").listen.to_string(),
            "127.0.0.1:9000"
        );
        let c = parse("listen: localhost:9001\n").expect("valid");
        assert_eq!(c.listen.port(), 9001);
        assert!(c.listen.ip().is_loopback());
    }

    /// Guards `run_as_uids`: `FIRST-LAST` of unprivileged uids, with `run_as`; root, system
    /// uids, a reversed or malformed range and a range without `run_as` are errors.
    #[test]
    fn run_as_uids_is_an_unprivileged_range_with_run_as() {
        let c = parse("run_as: nobody\nrun_as_uids: 200000-200999\n").expect("valid");
        assert_eq!(c.run_as_uids, Some((200000, 200999)));
        assert_eq!(parse("").expect("valid").run_as_uids, None);
        let one = parse("run_as: nobody\nrun_as_uids: 5000-5000\n").expect("valid");
        assert_eq!(one.run_as_uids, Some((5000, 5000)));
        for (text, why) in [
            ("0-10", "unprivileged"),
            ("0-0", "unprivileged"),
            ("999-2000", "unprivileged"),
            ("1000-4294967295", "unprivileged"),
            ("3000-2000", "first uid is above the last"),
            ("2000", "not a uid range"),
            ("a-b", "not a uid range"),
            ("-5-10", "not a uid range"),
        ] {
            let err = parse(&format!("run_as: nobody\nrun_as_uids: \"{text}\"\n")).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
        let err = parse("run_as_uids: 200000-200999\n").expect_err("no run_as");
        assert!(err.contains("needs `run_as`"), "{err}");
    }

    /// Guards `env_passthrough`: a list of variable names, anything else is an error.
    #[test]
    fn env_passthrough_is_a_list_of_names() {
        let c = parse("env_passthrough: [SSH_AUTH_SOCK, HTTP_PROXY]\n").expect("valid");
        assert_eq!(c.env_passthrough, vec!["SSH_AUTH_SOCK", "HTTP_PROXY"]);
        let err = parse("env_passthrough: [A-B]\n").expect_err("bad name");
        assert!(
            err.contains("`A-B` is not an environment variable name"),
            "{err}"
        );
        assert!(parse("env_passthrough: PATH\n").is_err());
    }

    /// `secrets_for_forks` is a repository's opt-in (default off), and must be a boolean.
    #[test]
    fn secrets_for_forks_is_an_opt_in() {
        let c = parse(
            "state_dir: s\nrepos:\n  - name: a\n    path: a\n  - name: b\n    path: b\n    secrets_for_forks: true\n",
        )
        .expect("valid");
        assert!(!c.repos[0].secrets_for_forks);
        assert!(c.repos[1].secrets_for_forks);
        assert!(
            parse("state_dir: s\nrepos:\n  - name: a\n    path: a\n    secrets_for_forks: maybe\n")
                .is_err()
        );
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            "state_dir: state\nlisten: 127.0.0.1:0\napi_token: t\nrepos:\n  - name: app\n    path: ../app\n    branches: [main, 'release/*']\n  - name: lib\n    url: git://127.0.0.1/lib\n    full_name: me/lib\n    poll_interval: 5s\n    credentials: {token_env: GIT_TOKEN}\nskills_dirs: [/opt/skills]\nsecrets:\n  A: {env: A_VAR}\n  B: {file: b.txt}\n  C: C_VAR\nkeep_failed_workspaces: true\nwebhooks:\n  - url: http://127.0.0.1:9/x\n    format: slack\n    retry: {initial_delay: 0.5}\nhooks: {github_secret: s}\nanomalies: {slow_factor: 2}\nlimits: {max_concurrent_runs: 2, shutdown_grace: 1m}\nretention: {max_runs: 5, max_age: 7d}\n",
        )
        .expect("valid");
        assert_eq!(c.state_dir, PathBuf::from("/etc/agent/state"));
        assert_eq!(c.repos.len(), 2);
        assert_eq!(
            c.repos[0].source,
            RepoSource::Path("/etc/agent/../app".into())
        );
        assert_eq!(c.repos[0].poll_interval, DEFAULT_CHECK_INTERVAL);
        assert_eq!(c.repos[1].poll_interval, Duration::from_secs(5));
        assert_eq!(
            c.repos[1]
                .credentials
                .as_ref()
                .and_then(|c| c.password_env.as_deref()),
            Some("GIT_TOKEN")
        );
        assert_eq!(
            c.secrets["B"],
            SecretSource::File("/etc/agent/b.txt".into())
        );
        assert_eq!(c.secrets["C"], SecretSource::Env("C_VAR".into()));
        assert_eq!(c.webhooks[0].format, WebhookFormat::Slack);
        assert_eq!(
            c.webhooks[0].retry.initial_delay,
            Duration::from_millis(500)
        );
        assert_eq!(c.limits.max_concurrent_runs, 2);
        assert_eq!(c.limits.shutdown_grace, Duration::from_secs(60));
        assert_eq!(c.retention.max_runs, Some(5));
        assert_eq!(c.anomalies.slow_factor, 2.0);
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let err = parse(
            "listen: nowhere\nrepoz: []\nlimits:\n  max_concurrent_runs: 0\nwebhooks:\n  - url: http://x\n    format: slak\nrepos:\n  - name: a b\n    url: x\n  - path: /x\n",
        )
        .expect_err("invalid");
        assert!(
            err.contains("agent.yaml:1:9: error: `listen` must be an address"),
            "{err}"
        );
        assert!(
            err.contains("agent.yaml:2:1: error: unknown key `repoz`, did you mean `repos`?"),
            "{err}"
        );
        assert!(
            err.contains("agent.yaml:4:24: error: expected a positive integer, found `0`"),
            "{err}"
        );
        assert!(
            err.contains("unknown webhook format `slak`, did you mean `slack`?"),
            "{err}"
        );
        assert!(err.contains("invalid repository name `a b`"), "{err}");
        assert!(err.contains("a repository needs a `name`"), "{err}");
    }

    #[test]
    fn wrong_types_are_named() {
        let err = parse("keep_failed_workspaces: yes please\nrepos: {}\n").expect_err("invalid");
        assert!(
            err.contains("expected `true` or `false`, found a string"),
            "{err}"
        );
        assert!(err.contains("expected a list, found a mapping"), "{err}");
    }

    #[test]
    fn secrets_load_from_env_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("s.txt"), "from-file\n").expect("write");
        let c = Config::parse_str(
            "agent.yaml",
            "secrets:\n  F: {file: s.txt}\n  P: {env: PATH}\n",
            dir.path(),
        )
        .expect("valid");
        let s = c.load_secrets().expect("load");
        assert_eq!(s["F"], "from-file");
        assert!(!s["P"].is_empty());
        let c = Config::parse_str(
            "agent.yaml",
            "secrets:\n  X: {env: AGENT_TEST_SURELY_UNSET_VAR}\n",
            dir.path(),
        )
        .expect("valid");
        assert!(c.load_secrets().is_err());
    }

    #[test]
    fn webhook_events_workflows_and_templates_are_checked() {
        let err = parse(
            "webhooks:\n  - url: http://x\n    events: [run.faild, 'step.*', run.finished]\n    workflows: ['a[']\n    template: '{% if %}'\n",
        )
        .expect_err("invalid");
        assert!(
            err.contains("unknown webhook event `run.faild`, did you mean `run.failed`?"),
            "{err}"
        );
        assert!(!err.contains("`step.*`"), "{err}");
        assert!(err.contains("invalid pattern `a[`"), "{err}");
        assert!(err.contains("invalid `template`"), "{err}");
        let c =
            parse("webhooks:\n  - url: http://x\n    events: ['run.*', anomaly]\n").expect("valid");
        assert_eq!(c.webhooks[0].events, vec!["run.*", "anomaly"]);
    }

    /// `store`, `node`, `limits.heartbeat` and `limits.lease`: defaults, a PostgreSQL store
    /// read from its variable, and each mistake reported at its key (the URL never shown).
    #[test]
    fn store_node_and_lease_keys_are_read_and_checked() {
        let c = parse("").expect("valid");
        assert_eq!(c.store, StoreConfig::Sqlite);
        assert_eq!(c.limits.heartbeat, DEFAULT_HEARTBEAT);
        assert_eq!(c.limits.lease, DEFAULT_LEASE);
        assert_eq!(c.node, default_node_name());
        assert!(
            c.node.ends_with(&format!("-{}", std::process::id())),
            "{}",
            c.node
        );

        // SAFETY: only this test reads or writes these variables.
        unsafe {
            std::env::set_var(
                "AGENT_CFG_TEST_PG_URL",
                "postgres://u:pw-xyzzy@127.0.0.1/db",
            );
            std::env::set_var("AGENT_CFG_TEST_EMPTY", "");
        }
        let c = parse(
            "node: ci-1\nstore: {kind: postgres, url_env: AGENT_CFG_TEST_PG_URL}\nlimits: {heartbeat: 500ms, lease: 3s}\n",
        )
        .expect("valid");
        assert_eq!(c.node, "ci-1");
        assert_eq!(
            c.store,
            StoreConfig::Postgres {
                url_env: "AGENT_CFG_TEST_PG_URL".into(),
                pool: DEFAULT_STORE_POOL
            }
        );
        assert_eq!(c.limits.heartbeat, Duration::from_millis(500));
        assert_eq!(c.limits.lease, Duration::from_secs(3));
        assert!(!format!("{c:?}").contains("xyzzy"));
        let c = parse("store:\n  kind: postgres\n  url_env: AGENT_CFG_TEST_PG_URL\n  pool: 3\n")
            .expect("valid");
        assert!(matches!(c.store, StoreConfig::Postgres { pool: 3, .. }));
        assert_eq!(
            parse("store: {kind: sqlite}\n").expect("valid").store,
            StoreConfig::Sqlite
        );

        let err = |text: &str| parse(text).expect_err("invalid");
        let e = err("store: {kind: mysql}\n");
        assert!(
            e.contains("agent.yaml:1:15: error: unknown store kind `mysql`"),
            "{e}"
        );
        let e = err("store: {kind: postgres}\n");
        assert!(
            e.contains("agent.yaml:1:8: error: `kind: postgres` needs `url_env`"),
            "{e}"
        );
        let e = err("store:\n  kind: postgres\n  url_env: AGENT_CFG_TEST_UNSET_VAR\n");
        assert!(
            e.contains("agent.yaml:3:12: error: environment variable `AGENT_CFG_TEST_UNSET_VAR` (the database URL) is not set"),
            "{e}"
        );
        let e = err("store: {kind: postgres, url_env: AGENT_CFG_TEST_EMPTY}\n");
        assert!(
            e.contains("`AGENT_CFG_TEST_EMPTY` (the database URL) is empty"),
            "{e}"
        );
        let e = err("store: {kind: postgres, url_env: AGENT_CFG_TEST_PG_URL, pool: 0}\n");
        assert!(e.contains("expected a positive integer"), "{e}");
        let e = err("store: {kind: sqlite, url_env: X}\n");
        assert!(e.contains("`url_env` is only for `kind: postgres`"), "{e}");
        let e = err("store: {knd: sqlite}\n");
        assert!(e.contains("unknown key `knd`"), "{e}");
        let e = err("limits:\n  heartbeat: 5s\n  lease: 5s\n");
        assert!(
            e.contains("agent.yaml:3:10: error: `lease` (5s) must be longer than `heartbeat` (5s)"),
            "{e}"
        );
        let e = err("limits: {heartbeat: 20s}\n");
        assert!(
            e.contains("`lease` (15s) must be longer than `heartbeat` (20s)"),
            "{e}"
        );
        let e = err("node: 'a b'\n");
        assert!(
            e.contains("agent.yaml:1:7: error: `node` must be a name"),
            "{e}"
        );
        for text in [
            "store: {kind: postgres, url_env: AGENT_CFG_TEST_PG_URL}\nnode: x\n",
            "store: {kind: postgres, url_env: AGENT_CFG_TEST_UNSET_VAR}\n",
        ] {
            let shown = match parse(text) {
                Ok(c) => format!("{c:?}"),
                Err(e) => e,
            };
            assert!(!shown.contains("xyzzy"), "{shown}");
        }
    }

    /// `schemas/config.schema.json` names exactly the keys the parser knows.
    #[test]
    fn the_config_schema_matches_the_parser() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../schemas/config.schema.json"))
                .expect("schema is JSON");
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v["properties"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        let sorted = |k: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        let defs = &schema["$defs"];
        assert_eq!(keys(&schema), sorted(TOP_KEYS));
        assert_eq!(keys(&defs["Repo"]), sorted(REPO_KEYS));
        assert_eq!(keys(&defs["Credentials"]), sorted(CREDENTIAL_KEYS));
        assert_eq!(keys(&defs["Secret"]), sorted(SECRET_KEYS));
        assert_eq!(keys(&defs["Webhook"]), sorted(WEBHOOK_KEYS));
        assert_eq!(
            keys(&defs["Webhook"]["properties"]["retry"]),
            sorted(WEBHOOK_RETRY_KEYS)
        );
        assert_eq!(keys(&defs["Hooks"]), sorted(HOOKS_KEYS));
        assert_eq!(keys(&defs["Anomalies"]), sorted(ANOMALY_KEYS));
        assert_eq!(keys(&defs["Limits"]), sorted(LIMIT_KEYS));
        assert_eq!(keys(&defs["Retention"]), sorted(RETENTION_KEYS));
        assert_eq!(keys(&defs["Store"]), sorted(STORE_KEYS));
        let formats: Vec<&str> = defs["Webhook"]["properties"]["format"]["enum"]
            .as_array()
            .expect("format enum")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let known: Vec<&str> = WebhookFormat::ALL.iter().map(|(t, _)| *t).collect();
        assert_eq!(formats, known);
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent.yaml");
        let c = Config::load(&path)
            .map_err(|d| d.render())
            .expect("valid example");
        assert!(!c.repos.is_empty());
    }

    /// `ftp://` and `not a url` webhooks and `git@` remotes were accepted.
    #[test]
    fn webhook_and_remote_urls_are_checked() {
        let err = |text: &str| parse(text).expect_err("invalid");
        let e = err("webhooks:\n  - url: ftp://x/y\n");
        assert!(e.contains("agent.yaml:2:10: error: webhook `url` must be an `http://` or `https://` URL, found `ftp://`"), "{e}");
        let e = err("webhooks:\n  - url: not a url\n");
        assert!(e.contains("webhook `url` `not a url` is not a URL"), "{e}");
        let e = err("repos:\n  - name: a\n    url: git@github.com:o/r.git\n");
        assert!(
            e.contains("agent.yaml:3:10: error: `git@github.com:o/r.git` is an ssh remote"),
            "{e}"
        );
        let e = err("repos:\n  - name: a\n    url: ssh://git@h/r.git\n");
        assert!(e.contains("ssh remotes are not supported"), "{e}");
        let e = err("repos:\n  - name: a\n    url: svn://h/r\n");
        assert!(e.contains("unsupported URL scheme `svn://`"), "{e}");
        for ok in [
            "https://h/o/r.git",
            "git://127.0.0.1:9/r.git",
            "file:///srv/r",
            "/srv/r",
        ] {
            assert!(check_remote_url(ok).is_ok(), "{ok}");
        }
        assert!(check_webhook_url("http://127.0.0.1:9/x").is_ok());
    }

    /// A file that sets only `listen:` used to watch nothing: without a `repos` key the
    /// repository the daemon starts in is watched; `repos: []` still means none.
    #[test]
    fn a_file_without_repos_watches_the_repository_around() {
        let dir = tempfile::tempdir().expect("tempdir");
        git2::Repository::init(dir.path()).expect("init");
        let mut c = parse("listen: 9000\n").expect("valid");
        assert!(!c.repos_given);
        c.watch_cwd_if_unset(dir.path());
        assert_eq!(c.repos.len(), 1);
        let mut c = parse("repos: []\n").expect("valid");
        c.watch_cwd_if_unset(dir.path());
        assert!(c.repos.is_empty());
        assert_eq!(
            parse_listen("9001"),
            Ok("127.0.0.1:9001".parse().expect("addr"))
        );
        assert!(parse_listen("nowhere").is_err());
    }

    #[test]
    fn embedded_defaults_watch_the_repository_around() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Config::embedded(dir.path());
        assert!(c.repos.is_empty());
        assert_eq!(c.state_dir, dir.path().join(".agent"));
        git2::Repository::init(dir.path()).expect("init");
        let c = Config::embedded(dir.path());
        assert_eq!(c.repos.len(), 1);
        assert_eq!(c.repos[0].name, "default");
    }
}
