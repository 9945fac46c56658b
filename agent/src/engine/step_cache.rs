//! Step caching, the engine's side: which steps are cached, what their key is made of, and
//! serving a hit (outputs, exit status and log restored, the step not run) or saving a
//! succeeded step. The store itself (key hashing, input files, entries on disk, eviction)
//! is a [`CacheBackend`] the caller gives in [`super::EngineConfig::cache`]; the engine does
//! no cache I/O of its own.
//!
//! A step is cached when it has `cache:` or runs a skill whose manifest says
//! `deterministic: true`, and only as a stage (or decision-branch or matrix) step: never a
//! rollback, compensation or error-handler step. Only a step that succeeded is saved, so a
//! failure that `on_failure: continue` absorbed is not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dsl::model::{CacheScope, Step};
use serde_json::{Map, Value, json};

use super::events::{EngineEvent, LogCredit, LogStream};
use super::run_ctx::RunCtx;
use crate::model::report::{StepCache as ReportCache, StepReport, StepStatus, rfc3339};

/// Where step cache entries live; implemented by `crate::cache`.
pub(crate) trait CacheBackend: Send + Sync + std::fmt::Debug {
    /// Computes the key of `request` (hashing its input files) and looks it up. With
    /// `explain`, a miss says what changed against the step's last entry.
    fn lookup(&self, request: &CacheRequest, explain: bool) -> CacheLookup;
    /// Restores a hit's `paths` into `workspace`.
    fn restore(&self, hit: &CacheHit, workspace: &Path) -> Result<(), String>;
    /// Saves a succeeded step under the key `lookup` computed before it ran (its `paths`
    /// captured from the workspace). Nothing is saved unless everything is.
    fn save(
        &self,
        request: &CacheRequest,
        lookup: &CacheLookup,
        result: CacheResult,
    ) -> Result<(), String>;
}

/// What a cached step's key is made of, and where its entry may be read and written.
#[derive(Debug, Clone)]
pub(crate) struct CacheRequest {
    /// The step's identity for `--explain-cache` (workflow name and step id).
    pub(crate) identity: String,
    /// The repository the entry belongs to.
    pub(crate) repo: String,
    /// The run's branch (empty when none).
    pub(crate) branch: String,
    /// `scope: branch`.
    pub(crate) branch_scope: bool,
    /// The step's definition after expression evaluation: script text and shell, or the
    /// skill's name and the content hash of its files.
    pub(crate) definition: Value,
    /// The rendered parameters (values holding a secret by hash only).
    pub(crate) parameters: Map<String, Value>,
    /// The environment the step is given by the workflow (names and values; values holding
    /// a secret by hash only).
    pub(crate) env: Vec<(String, String)>,
    /// `inputs`: globs of workspace files.
    pub(crate) inputs: Vec<String>,
    /// The rendered `key` values.
    pub(crate) key: Vec<Value>,
    /// `paths`: workspace paths saved with the entry.
    pub(crate) paths: Vec<String>,
    /// `ttl`.
    pub(crate) ttl: Option<Duration>,
    /// The workspace.
    pub(crate) workspace: PathBuf,
}

/// The answer of [`CacheBackend::lookup`].
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheLookup {
    /// The key (hex SHA-256); empty when it could not be computed (then nothing is saved).
    pub(crate) key: String,
    /// The key's components, for the entry (opaque to the engine).
    pub(crate) parts: Value,
    /// The entry found.
    pub(crate) hit: Option<CacheHit>,
    /// On a miss with `explain`: what changed against the last entry.
    pub(crate) explanation: Option<String>,
    /// Problems worth a line in the step's log (an `inputs` glob that matched nothing).
    pub(crate) warnings: Vec<String>,
}

/// A cache entry found for a step.
#[derive(Debug, Clone)]
pub(crate) struct CacheHit {
    /// The entry's id (its file name in the store).
    pub(crate) entry: String,
    /// The run that saved it.
    pub(crate) run_id: String,
    /// The outputs it recorded.
    pub(crate) outputs: Map<String, Value>,
    /// The exit status it recorded.
    pub(crate) exit_code: Option<i32>,
    /// Its log (masked when it was written).
    pub(crate) log: String,
}

/// What a succeeded step leaves in the cache.
#[derive(Debug, Clone)]
pub(crate) struct CacheResult {
    /// The run that ran it.
    pub(crate) run_id: String,
    /// Its outputs (unmasked: later steps of a hit need the real values).
    pub(crate) outputs: Map<String, Value>,
    /// Its exit status.
    pub(crate) exit_code: Option<i32>,
    /// Its log, masked.
    pub(crate) log: String,
}

/// Most log bytes kept with an entry (the tail beyond is dropped).
pub(crate) const MAX_CACHED_LOG: usize = 1024 * 1024;

/// What `prepare` hands over for a process step's key.
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheSource {
    /// See [`CacheRequest::definition`] (skill files not hashed yet: `skill_path`).
    pub(crate) definition: Map<String, Value>,
    /// A skill's executable or directory, hashed into the definition.
    pub(crate) skill_path: Option<PathBuf>,
    /// The skill's manifest says `deterministic: true`.
    pub(crate) deterministic: bool,
    /// The rendered parameters.
    pub(crate) parameters: Map<String, Value>,
    /// The workflow-given environment.
    pub(crate) env: Vec<(String, String)>,
}

/// A cached step's request and the lookup made before it ran.
pub(crate) struct StepCache {
    backend: Arc<dyn CacheBackend>,
    request: Arc<CacheRequest>,
    lookup: Arc<CacheLookup>,
}

/// Secret values of the run (non-empty), to hash what holds them.
fn secret_values(ctx: &RunCtx<'_>) -> Vec<String> {
    match ctx.data().roots.get("secrets") {
        Some(Value::Object(m)) => m
            .values()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// `text`, or its hash when it holds a secret.
fn hide(text: &str, secrets: &[String]) -> String {
    if secrets.iter().any(|s| text.contains(s.as_str())) {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(text.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    } else {
        text.to_string()
    }
}

fn hide_value(v: &mut Value, secrets: &[String]) {
    match v {
        Value::String(s) => *s = hide(s, secrets),
        Value::Array(items) => items.iter_mut().for_each(|i| hide_value(i, secrets)),
        Value::Object(m) => m.values_mut().for_each(|i| hide_value(i, secrets)),
        _ => {}
    }
}

/// A file's or a directory's content hash (files sorted by path), for a skill's definition.
fn hash_tree(path: &Path) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut stack = vec![path.to_path_buf()];
    let mut files = Vec::new();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else {
            files.push(p);
        }
    }
    files.sort();
    for f in files {
        hasher.update(
            f.strip_prefix(path)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        hasher.update([0]);
        hasher.update(std::fs::read(&f).unwrap_or_default());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Looks the step up when it is cached (and the engine has a cache); `None` otherwise.
/// Blocking work (hashing inputs, reading the entry) runs off the async threads.
pub(crate) async fn consult(
    ctx: &RunCtx<'_>,
    step: &Step,
    eid: &str,
    source: &CacheSource,
) -> Option<StepCache> {
    let backend = ctx.engine.config().cache.clone()?;
    if step.cache.is_none() && !source.deterministic {
        return None;
    }
    let secrets = secret_values(ctx);
    let (repo, branch, key) = {
        let data = ctx.data();
        let repo = data.roots.get("repo");
        let field = |k: &str| {
            repo.and_then(|r| r.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        // `name` before `url`: `agent exec` knows the URL only when the file mentions `repo`.
        let repo_id = ["full_name", "name", "url"]
            .iter()
            .map(|k| field(k))
            .find(|v| !v.is_empty())
            .unwrap_or_else(|| ctx.workdir.to_string_lossy().into_owned());
        let key = match step.cache.as_ref().and_then(|c| c.key.as_ref()) {
            None => Ok(Vec::new()),
            Some(k) => k
                .render(&data.step_view(&ctx.workdir, &step.id.value))
                .map(|v| match v {
                    Value::Array(items) => items,
                    other => vec![other],
                }),
        };
        (repo_id, field("branch"), key)
    };
    let mut key = match key {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(step = %eid, error = %e, "`cache.key` did not render: the step is not cached");
            return None;
        }
    };
    key.iter_mut().for_each(|v| hide_value(v, &secrets));
    let mut definition = source.definition.clone();
    for v in definition.values_mut() {
        hide_value(v, &secrets);
    }
    if let Some(p) = &source.skill_path {
        definition.insert("skill_files".into(), Value::String(hash_tree(p)));
    }
    let mut parameters = Value::Object(source.parameters.clone());
    hide_value(&mut parameters, &secrets);
    let parameters = match parameters {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let cache = step.cache.as_ref();
    let request = Arc::new(CacheRequest {
        identity: format!("{}/{}{eid}", ctx.wf.name.value, ctx.prefix),
        repo,
        branch,
        branch_scope: cache
            .and_then(|c| c.scope.as_ref())
            .is_some_and(|s| s.value == CacheScope::Branch),
        definition: Value::Object(definition),
        parameters,
        env: source
            .env
            .iter()
            .map(|(k, v)| (k.clone(), hide(v, &secrets)))
            .collect(),
        inputs: cache
            .map(|c| c.inputs.iter().map(|i| i.value.clone()).collect())
            .unwrap_or_default(),
        key,
        paths: cache
            .map(|c| c.paths.iter().map(|p| p.value.clone()).collect())
            .unwrap_or_default(),
        ttl: cache.and_then(|c| c.ttl.as_ref()).map(|t| t.value),
        workspace: ctx.workdir.clone(),
    });
    let explain = ctx.engine.config().explain_cache;
    let lookup = {
        let (b, r) = (backend.clone(), request.clone());
        tokio::task::spawn_blocking(move || b.lookup(&r, explain))
            .await
            .unwrap_or_default()
    };
    Some(StepCache {
        backend,
        request,
        lookup: Arc::new(lookup),
    })
}

/// Sends lines to the step's log (as its own output, so they are in the daemon's log file).
fn log_lines(ctx: &RunCtx<'_>, eid: &Arc<str>, stream: LogStream, text: String) {
    if text.is_empty() {
        return;
    }
    ctx.events.emit(|| EngineEvent::StepOutput {
        run_id: ctx.run_id.clone(),
        step: eid.clone(),
        stream,
        text,
        credit: LogCredit::default(),
    });
}

/// Says what the lookup warned about in the step's log.
pub(crate) fn warn(ctx: &RunCtx<'_>, eid: &Arc<str>, cache: &StepCache) {
    let text: String = cache
        .lookup
        .warnings
        .iter()
        .map(|w| format!("[agent: cache: warning: {w}]\n"))
        .collect();
    log_lines(ctx, eid, LogStream::Stderr, text);
}

/// On a hit: restores the entry (files, outputs, exit status, log) and fills `report`;
/// `None` on a miss, or when the entry could not be restored (then the step runs).
pub(crate) async fn serve_hit(
    ctx: &RunCtx<'_>,
    eid: &Arc<str>,
    cache: &StepCache,
    report: &mut StepReport,
) -> Option<Map<String, Value>> {
    let hit = cache.lookup.hit.clone()?;
    let started = Utc::now();
    let restored = {
        let (b, h, w) = (cache.backend.clone(), hit.clone(), ctx.workdir.clone());
        tokio::task::spawn_blocking(move || b.restore(&h, &w))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    };
    if let Err(e) = restored {
        log_lines(
            ctx,
            eid,
            LogStream::Stderr,
            format!("[agent: cache: entry not restored, running the step: {e}]\n"),
        );
        return None;
    }
    log_lines(ctx, eid, LogStream::Stdout, hit.log.clone());
    report.status = StepStatus::Succeeded;
    report.cached = true;
    report.cache = Some(Box::new(ReportCache {
        key: cache.lookup.key.clone(),
        from_run: Some(hit.run_id.clone()),
        note: Some(format!("hit (from run {})", hit.run_id)),
    }));
    report.exit_code = hit.exit_code;
    report.queued_ms = Some(0);
    report.started_at = Some(rfc3339(started));
    let now = Utc::now();
    report.finished_at = Some(rfc3339(now));
    report.duration_ms =
        Some(u64::try_from((now - started).num_milliseconds()).unwrap_or_default());
    let mut shown = Value::Object(hit.outputs.clone());
    ctx.masker.mask_value(&mut shown);
    if let Value::Object(m) = shown {
        report.outputs = m;
    }
    Some(hit.outputs)
}

/// A miss in the report: the key, and for `--explain-cache` what changed.
pub(crate) fn miss_report(cache: &StepCache) -> Option<Box<ReportCache>> {
    if cache.lookup.key.is_empty() {
        return None;
    }
    let note = match &cache.lookup.explanation {
        Some(e) => format!("miss: {e}"),
        None => "miss".to_string(),
    };
    Some(Box::new(ReportCache {
        key: cache.lookup.key.clone(),
        from_run: None,
        note: Some(note),
    }))
}

/// Saves a succeeded step (errors go to the step's log: the run is not failed by them).
pub(crate) async fn save(
    ctx: &RunCtx<'_>,
    eid: &Arc<str>,
    cache: &StepCache,
    outputs: &Map<String, Value>,
    exit_code: Option<i32>,
    log: String,
) {
    if cache.lookup.key.is_empty() {
        return;
    }
    let result = CacheResult {
        run_id: ctx.run_id.to_string(),
        outputs: outputs.clone(),
        exit_code,
        log,
    };
    let (b, r, l) = (
        cache.backend.clone(),
        cache.request.clone(),
        cache.lookup.clone(),
    );
    let saved = tokio::task::spawn_blocking(move || b.save(&r, &l, result))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = saved {
        log_lines(
            ctx,
            eid,
            LogStream::Stderr,
            format!("[agent: cache: not saved: {e}]\n"),
        );
    }
}

/// The definition of a `run:` step for its key.
pub(crate) fn script_definition(
    text: &str,
    shell: Option<&str>,
    env: &[(String, String)],
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("run".into(), json!(text));
    m.insert("shell".into(), json!(shell));
    if !env.is_empty() {
        let e: Map<String, Value> = env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        m.insert("expressions".into(), Value::Object(e));
    }
    m
}

/// Keeps the tail of a log within [`MAX_CACHED_LOG`] (cut at a line start).
pub(crate) fn cap_log(log: &mut String) {
    if log.len() <= MAX_CACHED_LOG {
        return;
    }
    let mut cut = log.len() - MAX_CACHED_LOG;
    while !log.is_char_boundary(cut) {
        cut += 1;
    }
    let cut = log[cut..].find('\n').map_or(cut, |i| cut + i + 1);
    log.drain(..cut);
}

/// An output sink that also keeps what passes through it (a cached step's log).
pub(crate) struct Tee<'a, S> {
    /// Where output goes on.
    pub(crate) inner: &'a mut S,
    /// The kept copy (unmasked until the step ends).
    pub(crate) log: &'a mut String,
}

impl<S: runners::OutputSink> Tee<'_, S> {
    fn keep(&mut self, text: &str, newline: bool) {
        self.log.push_str(text);
        if newline {
            self.log.push('\n');
        }
        if self.log.len() > 2 * MAX_CACHED_LOG {
            cap_log(self.log);
        }
    }
}

impl<S: runners::OutputSink> runners::OutputSink for Tee<'_, S> {
    fn line(&mut self, stream: runners::Stream, line: &str) {
        self.keep(line, true);
        self.inner.line(stream, line);
    }

    fn lines(&mut self, stream: runners::Stream, lines: &str) {
        self.keep(lines, false);
        self.inner.lines(stream, lines);
    }

    fn end_of_read(&mut self) -> bool {
        self.inner.end_of_read()
    }

    fn ready(&mut self) -> impl std::future::Future<Output = ()> + Send {
        self.inner.ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards secrets in keys: a value holding a secret enters the key (and the entry's
    /// manifest on disk) by hash only, in strings nested in parameters too.
    #[test]
    fn values_holding_a_secret_are_hashed() {
        let secrets = vec!["hunter22".to_string()];
        let hidden = hide("token=hunter22", &secrets);
        assert!(hidden.starts_with("sha256:") && !hidden.contains("hunter22"));
        assert_eq!(hide("plain", &secrets), "plain");
        let mut v = json!({"a": ["x", "hunter22"], "b": 1});
        hide_value(&mut v, &secrets);
        assert!(!v.to_string().contains("hunter22"));
        assert_eq!(v["a"][0], "x");
    }

    /// Guards the cached log's cap: the tail is kept, cut at a line start.
    #[test]
    fn the_cached_log_keeps_its_tail() {
        let mut log = "x\n".repeat(MAX_CACHED_LOG);
        log.push_str("last\n");
        cap_log(&mut log);
        assert!(log.len() <= MAX_CACHED_LOG && log.ends_with("last\n"));
        assert!(log.starts_with("x\n"));
    }
}
