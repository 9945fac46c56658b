//! The step cache on disk, under `<state_dir>/cache/`:
//!
//! ```text
//! cache/
//!   lock                 flock: shared while reading, exclusive while writing
//!   entries/<id>.json    one entry: key, scope, outputs, exit status, log, files, key parts
//!   blobs/<ab>/<sha256>  file contents, by content hash (shared between entries)
//!   tmp/                 files being written (renamed into place when complete)
//! ```
//!
//! Every file is written under a temporary name, fsynced and renamed, and an entry is
//! renamed into `entries/` only after all its blobs are in place: a crash or `kill -9` at any
//! point leaves no partial entry (at most unreferenced blobs and temporary files, removed by
//! the next write). After each write, expired entries are dropped and the least recently
//! used ones evicted until entries and blobs together take at most the cap.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::key::{KeyParts, hash_file, sha256};

pub(crate) use crate::config::DEFAULT_CACHE_MAX_BYTES;

/// One file, directory or symbolic link saved with an entry (a `paths` member).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileRecord {
    /// Path relative to the workspace.
    pub(crate) path: String,
    /// `file`, `dir` or `symlink`.
    pub(crate) kind: String,
    /// Permission bits.
    pub(crate) mode: u32,
    /// The content's SHA-256 (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) blob: Option<String>,
    /// Content length (files).
    #[serde(default)]
    pub(crate) size: u64,
    /// The link's target (symbolic links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<String>,
}

/// A cache entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Its id: the key, scoped (the file name under `entries/`).
    pub(crate) id: String,
    /// The key.
    pub(crate) key: String,
    /// The step (`workflow/step`).
    pub(crate) identity: String,
    /// The repository.
    pub(crate) repo: String,
    /// `repo` or `branch`.
    pub(crate) scope: String,
    /// The branch that wrote it (empty when none).
    pub(crate) branch: String,
    /// The run that wrote it.
    pub(crate) run_id: String,
    /// Written at (Unix milliseconds).
    pub(crate) created_at: i64,
    /// Last served or written at (Unix milliseconds): the eviction order.
    pub(crate) last_used: i64,
    /// Expires at (Unix milliseconds), with a `ttl`.
    pub(crate) expires_at: Option<i64>,
    /// The step's exit status.
    pub(crate) exit_code: Option<i32>,
    /// The step's outputs.
    pub(crate) outputs: Map<String, Value>,
    /// The step's log (masked).
    pub(crate) log: String,
    /// The `paths` saved.
    pub(crate) files: Vec<FileRecord>,
    /// Total content bytes of `files`.
    pub(crate) bytes: u64,
    /// What the key was computed from.
    pub(crate) parts: KeyParts,
}

/// The id of an entry of `key`: repository-wide, or of one branch.
pub(crate) fn entry_id(key: &str, branch: Option<&str>) -> String {
    match branch {
        None => key.to_string(),
        Some(b) => sha256(format!("{key}\nbranch:{b}").as_bytes()),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The cache directory of a state directory.
fn cache_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cache")
}

/// What `prune` removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pruned {
    /// Entries removed.
    pub(crate) entries: usize,
    /// Bytes freed.
    pub(crate) bytes: u64,
}

/// The step cache of one state directory.
#[derive(Debug, Clone)]
pub(crate) struct CacheStore {
    dir: PathBuf,
    max_bytes: u64,
}

/// A held `flock` (released when dropped, with the file).
struct Lock(#[expect(dead_code, reason = "held for its lock")] File);

impl CacheStore {
    /// The cache under `state_dir`, at most `max_bytes` large (nothing is created yet).
    pub(crate) fn new(state_dir: &Path, max_bytes: u64) -> CacheStore {
        CacheStore {
            dir: cache_dir(state_dir),
            max_bytes,
        }
    }

    /// The cache directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn entries_dir(&self) -> PathBuf {
        self.dir.join("entries")
    }

    fn entry_file(&self, id: &str) -> PathBuf {
        self.entries_dir().join(format!("{id}.json"))
    }

    fn blob_file(&self, sha: &str) -> PathBuf {
        self.dir
            .join("blobs")
            .join(&sha[..2.min(sha.len())])
            .join(sha)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn lock(&self, exclusive: bool) -> std::io::Result<Lock> {
        if let Some(state_dir) = self.dir.parent()
            && !state_dir.exists()
        {
            // A state directory made here (`agent exec`'s, in the user's checkout) ignores
            // itself in git.
            std::fs::create_dir_all(state_dir)?;
            std::fs::write(
                state_dir.join(".gitignore"),
                "# Written by agent: the state directory is never committed.\n*\n",
            )?;
        }
        std::fs::create_dir_all(&self.dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("lock"))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on a descriptor we own; it is released when the file is closed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Lock(file))
    }

    fn read_entry(&self, id: &str) -> Option<Entry> {
        let text = std::fs::read(self.entry_file(id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// A temporary file name nobody else uses.
    fn tmp_name(&self, what: &str) -> PathBuf {
        let r: u64 = rand::random();
        self.tmp_dir()
            .join(format!("{what}.{}.{r:016x}", std::process::id()))
    }

    /// Writes `bytes` to `path` crash-safely: a temporary file, fsync, rename, fsync the
    /// directory.
    /// Without `durable` the data is not synced (a lost `last_used` update is harmless);
    /// the rename still makes the file whole or absent.
    fn write_atomic(&self, path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
        std::fs::create_dir_all(self.tmp_dir())?;
        let tmp = self.tmp_name("entry");
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            if durable {
                f.sync_all()?;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&tmp, path)?;
            if durable {
                sync_dir(path.parent())?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// The entry `id` when it exists and has not expired; marks it used.
    pub(crate) fn get(&self, id: &str) -> Option<Entry> {
        if !self.dir.exists() {
            return None;
        }
        let _lock = self.lock(false).ok()?;
        let mut entry = self.read_entry(id)?;
        if entry.expires_at.is_some_and(|t| t <= now_ms()) {
            return None;
        }
        entry.last_used = now_ms();
        if let Ok(text) = serde_json::to_vec(&entry) {
            let _ = self.write_atomic(&self.entry_file(id), &text, false);
        }
        Some(entry)
    }

    /// The newest entry of a step (for explaining a miss).
    pub(crate) fn latest_for(&self, identity: &str, repo: &str) -> Option<Entry> {
        if !self.dir.exists() {
            return None;
        }
        let _lock = self.lock(false).ok()?;
        self.all_entries()
            .into_iter()
            .filter(|(e, _)| e.identity == identity && e.repo == repo)
            .max_by_key(|(e, _)| e.created_at)
            .map(|(e, _)| e)
    }

    /// Copies a file into the blobs (hashing it on the way); its record.
    fn store_blob(&self, src: &Path) -> std::io::Result<(String, u64)> {
        let tmp = self.tmp_name("blob");
        std::fs::create_dir_all(self.tmp_dir())?;
        let result = (|| {
            std::fs::copy(src, &tmp)?;
            let (sha, len) = hash_file(&tmp)?;
            let dest = self.blob_file(&sha);
            if dest.exists() {
                std::fs::remove_file(&tmp)?;
            } else {
                File::open(&tmp)?.sync_all()?;
                std::fs::create_dir_all(dest.parent().expect("a blob has a parent"))?;
                std::fs::rename(&tmp, &dest)?;
                sync_dir(dest.parent())?;
            }
            Ok((sha, len))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Captures `paths` of `workspace` into blobs: every file, directory and link under
    /// each, or an error when one is missing or unreadable.
    fn capture(&self, workspace: &Path, paths: &[String]) -> Result<Vec<FileRecord>, String> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for p in paths {
            let rel = p.trim_start_matches("./").trim_end_matches('/');
            let start = workspace.join(rel);
            if std::fs::symlink_metadata(&start).is_err() {
                return Err(format!("`paths` entry `{p}` does not exist after the step"));
            }
            let mut stack = vec![start];
            while let Some(path) = stack.pop() {
                let meta = std::fs::symlink_metadata(&path)
                    .map_err(|e| format!("`{}`: {e}", path.display()))?;
                let rel = path
                    .strip_prefix(workspace)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                if !seen.insert(rel.clone()) {
                    continue;
                }
                let mode = meta.permissions().mode() & 0o7777;
                let ft = meta.file_type();
                if ft.is_symlink() {
                    let target = std::fs::read_link(&path)
                        .map_err(|e| format!("`{rel}`: {e}"))?
                        .to_string_lossy()
                        .into_owned();
                    out.push(FileRecord {
                        path: rel,
                        kind: "symlink".into(),
                        mode,
                        blob: None,
                        size: 0,
                        target: Some(target),
                    });
                } else if ft.is_dir() {
                    out.push(FileRecord {
                        path: rel.clone(),
                        kind: "dir".into(),
                        mode,
                        blob: None,
                        size: 0,
                        target: None,
                    });
                    let rd = std::fs::read_dir(&path).map_err(|e| format!("`{rel}`: {e}"))?;
                    let mut children: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                    children.sort();
                    children.reverse();
                    stack.extend(children);
                } else if ft.is_file() {
                    let (sha, size) = self
                        .store_blob(&path)
                        .map_err(|e| format!("`{rel}`: {e}"))?;
                    out.push(FileRecord {
                        path: rel,
                        kind: "file".into(),
                        mode,
                        blob: Some(sha),
                        size,
                        target: None,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Saves an entry: captures `paths` from `workspace`, then writes the entry (fields
    /// `files`, `bytes`, `created_at`, `last_used` are filled here), then evicts down to
    /// the cap. Nothing is saved when capturing fails or the entry alone exceeds the cap.
    pub(crate) fn put(
        &self,
        mut entry: Entry,
        workspace: &Path,
        paths: &[String],
    ) -> Result<(), String> {
        let io = |e: std::io::Error| format!("cache `{}`: {e}", self.dir.display());
        let _lock = self.lock(true).map_err(io)?;
        // Under the exclusive lock nothing is being written: what `tmp/` holds was left by a
        // writer that died.
        let _ = std::fs::remove_dir_all(self.tmp_dir());
        let captured = self.capture(workspace, paths);
        let result = captured.and_then(|files| {
            entry.bytes = files.iter().map(|f| f.size).sum();
            entry.files = files;
            entry.created_at = now_ms();
            entry.last_used = entry.created_at;
            let text = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
            let size = entry.bytes + text.len() as u64;
            if size > self.max_bytes {
                return Err(format!(
                    "the entry ({size} bytes) is larger than the cache's cap ({} bytes)",
                    self.max_bytes
                ));
            }
            self.write_atomic(&self.entry_file(&entry.id), &text, true)
                .map_err(io)
        });
        // Blobs of a failed capture are unreferenced: the sweep removes them.
        self.sweep(false);
        result
    }

    /// Every readable entry with the size of its file.
    fn all_entries(&self) -> Vec<(Entry, u64)> {
        let Ok(rd) = std::fs::read_dir(self.entries_dir()) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let len = e.metadata().ok()?.len();
                let entry: Entry = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                Some((entry, len))
            })
            .collect()
    }

    /// Every blob file with its length.
    fn all_blobs(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.dir.join("blobs")) else {
            return out;
        };
        for sub in rd.flatten() {
            if let Ok(files) = std::fs::read_dir(sub.path()) {
                for f in files.flatten() {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push((f.file_name().to_string_lossy().into_owned(), len));
                }
            }
        }
        out
    }

    /// Under the exclusive lock: drops expired entries (all entries with `all`) and
    /// unreferenced blobs, then evicts the least recently used entries down to the cap.
    fn sweep(&self, all: bool) -> Pruned {
        let mut pruned = Pruned::default();
        let now = now_ms();
        let mut entries = Vec::new();
        for (e, len) in self.all_entries() {
            if all || e.expires_at.is_some_and(|t| t <= now) {
                if std::fs::remove_file(self.entry_file(&e.id)).is_ok() {
                    pruned.entries += 1;
                    pruned.bytes += len;
                }
            } else {
                entries.push((e, len));
            }
        }
        let mut refs: HashMap<String, usize> = HashMap::new();
        for (e, _) in &entries {
            for b in e.files.iter().filter_map(|f| f.blob.as_ref()) {
                *refs.entry(b.clone()).or_default() += 1;
            }
        }
        let mut blob_len = HashMap::new();
        for (sha, len) in self.all_blobs() {
            if refs.contains_key(&sha) {
                blob_len.insert(sha, len);
            } else if std::fs::remove_file(self.blob_file(&sha)).is_ok() {
                pruned.bytes += len;
            }
        }
        let mut total: u64 =
            entries.iter().map(|(_, l)| l).sum::<u64>() + blob_len.values().sum::<u64>();
        entries.sort_by_key(|(e, _)| (e.last_used, e.created_at));
        let mut victims = entries.into_iter();
        while total > self.max_bytes {
            let Some((e, len)) = victims.next() else {
                break;
            };
            if std::fs::remove_file(self.entry_file(&e.id)).is_err() {
                continue;
            }
            total = total.saturating_sub(len);
            pruned.entries += 1;
            pruned.bytes += len;
            for b in e.files.iter().filter_map(|f| f.blob.as_ref()) {
                let n = refs.entry(b.clone()).or_default();
                *n = n.saturating_sub(1);
                if *n == 0 {
                    let len = blob_len.remove(b).unwrap_or(0);
                    if std::fs::remove_file(self.blob_file(b)).is_ok() {
                        total = total.saturating_sub(len);
                        pruned.bytes += len;
                    }
                }
            }
        }
        pruned
    }

    /// Restores entry `id`'s files into `workspace` (each file written under a temporary
    /// name and renamed, so a reader never sees half a file).
    pub(crate) fn restore(&self, id: &str, workspace: &Path) -> Result<(), String> {
        let _lock = self
            .lock(false)
            .map_err(|e| format!("cache `{}`: {e}", self.dir.display()))?;
        let entry = self
            .read_entry(id)
            .ok_or_else(|| format!("entry {id} is gone"))?;
        for f in &entry.files {
            let dest = workspace.join(&f.path);
            let err = |e: std::io::Error| format!("restoring `{}`: {e}", f.path);
            match f.kind.as_str() {
                "dir" => {
                    std::fs::create_dir_all(&dest).map_err(err)?;
                    let _ =
                        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode));
                }
                "symlink" => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent).map_err(err)?;
                    }
                    let _ = std::fs::remove_file(&dest);
                    std::os::unix::fs::symlink(f.target.as_deref().unwrap_or_default(), &dest)
                        .map_err(err)?;
                }
                _ => {
                    let sha = f.blob.as_deref().unwrap_or_default();
                    let parent = dest.parent().unwrap_or(workspace);
                    std::fs::create_dir_all(parent).map_err(err)?;
                    let r: u32 = rand::random();
                    let tmp = parent.join(format!(".agent-restore.{r:08x}"));
                    let copied = std::fs::copy(self.blob_file(sha), &tmp)
                        .and_then(|_| {
                            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(f.mode))
                        })
                        .and_then(|()| std::fs::rename(&tmp, &dest));
                    if let Err(e) = copied {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(err(e));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every entry (not expired ones included), newest use first.
    pub(crate) fn list(&self) -> Result<Vec<Entry>, String> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let _lock = self
            .lock(false)
            .map_err(|e| format!("cache `{}`: {e}", self.dir.display()))?;
        let mut all: Vec<Entry> = self.all_entries().into_iter().map(|(e, _)| e).collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.last_used));
        Ok(all)
    }

    /// Removes the entries whose id or key starts with `prefix`; how many.
    pub(crate) fn remove(&self, prefix: &str) -> Result<usize, String> {
        if !self.dir.exists() || prefix.is_empty() {
            return Ok(0);
        }
        let _lock = self
            .lock(true)
            .map_err(|e| format!("cache `{}`: {e}", self.dir.display()))?;
        let mut n = 0;
        for (e, _) in self.all_entries() {
            if (e.id.starts_with(prefix) || e.key.starts_with(prefix))
                && std::fs::remove_file(self.entry_file(&e.id)).is_ok()
            {
                n += 1;
            }
        }
        self.sweep(false);
        Ok(n)
    }

    /// Drops expired entries (every entry with `all`), unreferenced blobs and temporary
    /// files, and evicts down to the cap.
    pub(crate) fn prune(&self, all: bool) -> Result<Pruned, String> {
        if !self.dir.exists() {
            return Ok(Pruned::default());
        }
        let _lock = self
            .lock(true)
            .map_err(|e| format!("cache `{}`: {e}", self.dir.display()))?;
        let _ = std::fs::remove_dir_all(self.tmp_dir());
        Ok(self.sweep(all))
    }

    /// Bytes the cache's entries and blobs take on disk.
    pub(crate) fn disk_bytes(&self) -> u64 {
        let entries: u64 = std::fs::read_dir(self.entries_dir())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        entries + self.all_blobs().iter().map(|(_, l)| l).sum::<u64>()
    }
}

/// fsyncs a directory (so a rename in it survives a crash).
fn sync_dir(dir: Option<&Path>) -> std::io::Result<()> {
    match dir {
        Some(d) => File::open(d)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.to_string(),
            key: id.to_string(),
            identity: "w/s".into(),
            repo: "r".into(),
            scope: "repo".into(),
            branch: String::new(),
            run_id: "run".into(),
            created_at: 0,
            last_used: 0,
            expires_at: None,
            exit_code: Some(0),
            outputs: Map::new(),
            log: String::new(),
            files: Vec::new(),
            bytes: 0,
            parts: KeyParts::default(),
        }
    }

    /// Guards the size cap: after each of 1,000 entries of random sizes (some sharing
    /// content), entries and blobs on disk take at most the cap, the newest entry is kept,
    /// and no blob is left that no entry uses.
    #[test]
    fn the_cache_never_exceeds_its_cap() {
        // On tmpfs where there is one: this is about sizes, and fsync there costs nothing.
        let fast = |_| {
            tempfile::tempdir_in("/dev/shm")
                .or_else(|_| tempfile::tempdir())
                .expect("tempdir")
        };
        let (state, ws) = (fast(0), fast(1));
        let cap = 256 * 1024;
        let store = CacheStore::new(state.path(), cap);
        for i in 0..1000u32 {
            let size = (rand::random::<u32>() % 40_000) as usize;
            let byte = (rand::random::<u8>() % 8) + b'a';
            std::fs::create_dir_all(ws.path().join("out")).expect("mkdir");
            std::fs::write(ws.path().join("out/f"), vec![byte; size]).expect("write");
            let id = format!("{i:064}");
            store
                .put(entry(&id), ws.path(), &["out".to_string()])
                .expect("put");
            assert!(
                store.disk_bytes() <= cap,
                "after entry {i}: {} > {cap}",
                store.disk_bytes()
            );
            assert!(
                store.entry_file(&id).exists(),
                "the newest entry {i} is kept"
            );
        }
        let live: HashSet<String> = store
            .all_entries()
            .iter()
            .flat_map(|(e, _)| e.files.iter().filter_map(|f| f.blob.clone()))
            .collect();
        for (sha, _) in store.all_blobs() {
            assert!(live.contains(&sha), "blob {sha} is used by no entry");
        }
    }

    /// Guards least-recently-used eviction and `ttl`: an entry read lately survives one
    /// written earlier and never read; an expired entry is not served.
    #[test]
    fn eviction_is_least_recently_used_and_expired_entries_are_not_served() {
        let state = tempfile::tempdir().expect("tempdir");
        let ws = tempfile::tempdir().expect("tempdir");
        std::fs::write(ws.path().join("f"), vec![b'x'; 1000]).expect("write");
        std::fs::write(ws.path().join("g"), vec![b'y'; 1000]).expect("write");
        std::fs::write(ws.path().join("h"), vec![b'z'; 1000]).expect("write");
        let store = CacheStore::new(state.path(), 4000);
        store
            .put(entry("a"), ws.path(), &["f".into()])
            .expect("put a");
        std::thread::sleep(std::time::Duration::from_millis(5));
        store
            .put(entry("b"), ws.path(), &["g".into()])
            .expect("put b");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(store.get("a").is_some());
        std::thread::sleep(std::time::Duration::from_millis(5));
        store
            .put(entry("c"), ws.path(), &["h".into()])
            .expect("put c");
        assert!(store.get("b").is_none(), "b was least recently used");
        assert!(store.get("a").is_some() && store.get("c").is_some());
        let mut old = entry("d");
        old.expires_at = Some(now_ms() - 1);
        // `put` fills the times but keeps `expires_at`.
        store.put(old, ws.path(), &[]).expect("put d");
        assert!(store.get("d").is_none(), "expired");
        assert!(
            store
                .put(entry("e"), ws.path(), &["missing".into()])
                .is_err()
        );
        assert!(store.get("e").is_none(), "a failed capture saves nothing");
    }
}
