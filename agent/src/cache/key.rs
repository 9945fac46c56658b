//! A cached step's key: its components (definition, parameters, environment, input files,
//! extra key values, `paths`, platform), their SHA-256, and what changed between two sets
//! of components (for `agent exec --explain-cache`).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::engine::step_cache::CacheRequest;

/// Hex text of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes, hex.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file's content, hex, and its length.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex(&hasher.finalize()), len))
}

/// What a key is computed from (kept in each entry, so a later miss can say what changed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyParts {
    /// The repository (entries are per repository).
    pub(crate) repo: String,
    /// The step's definition after expression evaluation.
    pub(crate) definition: Value,
    /// Its parameters.
    pub(crate) parameters: Map<String, Value>,
    /// Its environment, by name.
    pub(crate) env: BTreeMap<String, String>,
    /// Input files: workspace path to `MODE:SHA256`.
    pub(crate) inputs: BTreeMap<String, String>,
    /// Extra `key` values.
    pub(crate) key: Vec<Value>,
    /// `paths`.
    pub(crate) paths: Vec<String>,
    /// `OS-ARCH`.
    pub(crate) platform: String,
}

impl KeyParts {
    /// The key: SHA-256 of the components' canonical JSON.
    pub(crate) fn key(&self) -> String {
        let text = serde_json::to_vec(self).expect("key parts are plain JSON");
        sha256(&text)
    }
}

/// The platform part of every key.
fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Directories never searched for inputs.
const SKIPPED_DIRS: &[&str] = &[".git", ".agent"];

/// The components of `request`'s key, hashing its input files; warnings for `inputs` globs
/// that match no file.
pub(crate) fn parts(request: &CacheRequest) -> Result<(KeyParts, Vec<String>), String> {
    let mut warnings = Vec::new();
    let mut inputs = BTreeMap::new();
    if !request.inputs.is_empty() {
        let mut globs = Vec::new();
        for pattern in &request.inputs {
            let glob = globset::GlobBuilder::new(pattern.trim_start_matches("./"))
                .literal_separator(true)
                .build()
                .map_err(|e| format!("`inputs` glob `{pattern}`: {e}"))?;
            globs.push((pattern, glob.compile_matcher(), false));
        }
        let root = &request.workspace;
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in rd.flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                if meta.is_dir() {
                    if !(dir == *root && SKIPPED_DIRS.contains(&rel.as_str())) {
                        stack.push(path);
                    }
                    continue;
                }
                let mut matched = false;
                for (_, g, hit) in globs.iter_mut() {
                    if g.is_match(&rel) {
                        *hit = true;
                        matched = true;
                    }
                }
                if !matched {
                    continue;
                }
                let mode = meta.permissions().mode() & 0o7777;
                let hash = if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).unwrap_or_default();
                    format!("link:{}", sha256(target.to_string_lossy().as_bytes()))
                } else {
                    hash_file(&path)
                        .map_err(|e| format!("input `{rel}`: {e}"))?
                        .0
                };
                inputs.insert(rel, format!("{mode:o}:{hash}"));
            }
        }
        for (pattern, _, hit) in &globs {
            if !hit {
                warnings.push(format!("`inputs` glob `{pattern}` matches no file"));
            }
        }
    }
    let parts = KeyParts {
        repo: request.repo.clone(),
        definition: request.definition.clone(),
        parameters: request.parameters.clone(),
        env: request.env.iter().cloned().collect(),
        inputs,
        key: request.key.clone(),
        paths: request.paths.clone(),
        platform: platform(),
    };
    Ok((parts, warnings))
}

fn short(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// What changed from `old` to `new`, one phrase each (empty when nothing did).
pub(crate) fn diff(old: &KeyParts, new: &KeyParts) -> Vec<String> {
    let mut out = Vec::new();
    if old.definition != new.definition {
        let field = |p: &KeyParts, k: &str| p.definition.get(k).cloned();
        if field(old, "skill") != field(new, "skill") || field(old, "skill").is_some() {
            match (field(old, "skill"), field(new, "skill")) {
                (Some(a), Some(b)) if a == b => out.push(format!("skill `{}` changed", short(&a))),
                _ => out.push("the step's definition changed".into()),
            }
        } else if field(old, "run") != field(new, "run") {
            out.push("the script changed".into());
        } else if field(old, "shell") != field(new, "shell") {
            out.push("the shell changed".into());
        } else {
            out.push("an expression in the script changed".into());
        }
    }
    for (k, v) in &new.parameters {
        match old.parameters.get(k) {
            None => out.push(format!("parameter `{k}` added")),
            Some(o) if o != v => {
                out.push(format!("parameter `{k}` {} → {}", short(o), short(v)));
            }
            _ => {}
        }
    }
    for k in old.parameters.keys() {
        if !new.parameters.contains_key(k) {
            out.push(format!("parameter `{k}` removed"));
        }
    }
    for (k, v) in &new.env {
        match old.env.get(k) {
            None => out.push(format!("env `{k}` added")),
            Some(o) if o != v => out.push(format!(
                "env `{k}` {} → {}",
                short(&Value::String(o.clone())),
                short(&Value::String(v.clone()))
            )),
            _ => {}
        }
    }
    for k in old.env.keys() {
        if !new.env.contains_key(k) {
            out.push(format!("env `{k}` removed"));
        }
    }
    for (k, v) in &new.inputs {
        match old.inputs.get(k) {
            None => out.push(format!("`{k}` added")),
            Some(o) if o != v => {
                let mode = |s: &str| s.split(':').next().unwrap_or_default().to_string();
                if mode(o) != mode(v)
                    && o.split_once(':').map(|x| x.1) == v.split_once(':').map(|x| x.1)
                {
                    out.push(format!("`{k}` mode {} → {}", mode(o), mode(v)));
                } else {
                    out.push(format!("`{k}` changed"));
                }
            }
            _ => {}
        }
    }
    for k in old.inputs.keys() {
        if !new.inputs.contains_key(k) {
            out.push(format!("`{k}` removed"));
        }
    }
    if old.key != new.key {
        out.push(format!(
            "`cache.key` {} → {}",
            short(&Value::Array(old.key.clone())),
            short(&Value::Array(new.key.clone()))
        ));
    }
    if old.paths != new.paths {
        out.push("`cache.paths` changed".into());
    }
    if old.platform != new.platform {
        out.push(format!("platform {} → {}", old.platform, new.platform));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Guards `--explain-cache` phrases: a changed parameter shows both values, a changed
    /// input file is named, a changed script is said.
    #[test]
    fn diff_names_what_changed() {
        let mut a = KeyParts {
            definition: json!({"run": "make", "shell": null}),
            ..KeyParts::default()
        };
        a.parameters.insert("version".into(), json!("1.2.3"));
        a.inputs.insert("src/lib.rs".into(), "644:aa".into());
        a.inputs.insert("src/main.rs".into(), "644:bb".into());
        let mut b = a.clone();
        b.parameters.insert("version".into(), json!("1.2.4"));
        b.inputs.insert("src/lib.rs".into(), "644:cc".into());
        b.definition = json!({"run": "make all", "shell": null});
        let d = diff(&a, &b);
        assert_eq!(
            d,
            vec![
                "the script changed",
                "parameter `version` 1.2.3 → 1.2.4",
                "`src/lib.rs` changed"
            ]
        );
        assert!(diff(&a, &a).is_empty());
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), a.clone().key());
    }
}
