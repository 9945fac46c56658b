//! The step cache: content-addressed entries under the state directory, shared by
//! `agent exec` and the daemon (the engine's [`CacheBackend`]), and `agent cache
//! ls|rm|prune`. It owns the key (see [`key`]), the files on disk and their eviction
//! ([`store`]); it does not decide which steps are cached or what a hit does to a run (the
//! engine's `step_cache`).
//!
//! Scopes: every entry belongs to one repository (the key includes it). A `scope: branch`
//! entry is read by its own branch and, read-only, by other branches when it was written
//! on the default branch (`main` or `master`): a branch reads its own and its base's
//! entries, never a sibling's.

pub(crate) mod key;
pub(crate) mod store;

use std::path::Path;

use crate::engine::step_cache::{CacheBackend, CacheHit, CacheLookup, CacheRequest, CacheResult};

pub(crate) use store::{CacheStore, DEFAULT_CACHE_MAX_BYTES, Entry, entry_id};

/// Branches whose `scope: branch` entries every branch of the repository may read.
const DEFAULT_BRANCHES: &[&str] = &["main", "master"];

/// The engine's cache backed by a [`CacheStore`].
#[derive(Debug, Clone)]
pub(crate) struct DiskCache {
    store: CacheStore,
}

impl DiskCache {
    /// The cache of `state_dir`, capped at `max_bytes`.
    pub(crate) fn new(state_dir: &Path, max_bytes: u64) -> DiskCache {
        DiskCache {
            store: CacheStore::new(state_dir, max_bytes),
        }
    }

    /// The entry ids `request` may read under `key`, in order of preference.
    fn readable_ids(request: &CacheRequest, key: &str) -> Vec<String> {
        if !request.branch_scope {
            return vec![entry_id(key, None)];
        }
        let mut ids = vec![entry_id(key, Some(&request.branch))];
        for base in DEFAULT_BRANCHES {
            if *base != request.branch {
                ids.push(entry_id(key, Some(base)));
            }
        }
        ids
    }
}

impl CacheBackend for DiskCache {
    fn lookup(&self, request: &CacheRequest, explain: bool) -> CacheLookup {
        let (parts, warnings) = match key::parts(request) {
            Ok(p) => p,
            Err(e) => {
                return CacheLookup {
                    warnings: vec![format!("not cached: {e}")],
                    ..CacheLookup::default()
                };
            }
        };
        let key = parts.key();
        let hit = Self::readable_ids(request, &key)
            .into_iter()
            .find_map(|id| self.store.get(&id))
            .map(|e| CacheHit {
                entry: e.id,
                run_id: e.run_id,
                outputs: e.outputs,
                exit_code: e.exit_code,
                log: e.log,
            });
        let explanation = match (&hit, explain) {
            (None, true) => Some(
                match self.store.latest_for(&request.identity, &request.repo) {
                    None => "no earlier entry".to_string(),
                    Some(last) => {
                        let changes = key::diff(&last.parts, &parts);
                        if changes.is_empty() {
                            "the last entry expired or was evicted".to_string()
                        } else {
                            changes.join(", ")
                        }
                    }
                },
            ),
            _ => None,
        };
        CacheLookup {
            key,
            parts: serde_json::to_value(&parts).unwrap_or_default(),
            hit,
            explanation,
            warnings,
        }
    }

    fn restore(&self, hit: &CacheHit, workspace: &Path) -> Result<(), String> {
        self.store.restore(&hit.entry, workspace)
    }

    fn save(
        &self,
        request: &CacheRequest,
        lookup: &CacheLookup,
        result: CacheResult,
    ) -> Result<(), String> {
        let parts: key::KeyParts =
            serde_json::from_value(lookup.parts.clone()).map_err(|e| e.to_string())?;
        let branch = request.branch_scope.then_some(request.branch.as_str());
        let expires_at = request.ttl.map(|t| {
            chrono::Utc::now().timestamp_millis()
                + i64::try_from(t.as_millis()).unwrap_or(i64::MAX / 2)
        });
        let entry = Entry {
            id: entry_id(&lookup.key, branch),
            key: lookup.key.clone(),
            identity: request.identity.clone(),
            repo: request.repo.clone(),
            scope: if request.branch_scope {
                "branch"
            } else {
                "repo"
            }
            .into(),
            branch: request.branch.clone(),
            run_id: result.run_id,
            created_at: 0,
            last_used: 0,
            expires_at,
            exit_code: result.exit_code,
            outputs: result.outputs,
            log: result.log,
            files: Vec::new(),
            bytes: 0,
            parts,
        };
        self.store.put(entry, &request.workspace, &request.paths)
    }
}
