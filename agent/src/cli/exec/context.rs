//! Where `agent exec` keeps a preserved context between runs (`preserve: true`: one JSON
//! file per workflow under the state directory); how a step's update merges is
//! [`crate::engine::context::merge`].
//!
//! This is the only file `agent exec` writes (and only with `preserve: true`): no per-step
//! files and no database. The daemon keeps contexts in its store instead.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

use crate::engine::errors::EngineError;

/// A preserved context's file: `<state_dir>/context/<workflow>.json`, with the workflow
/// name reduced to a safe file name.
fn context_path(state_dir: &Path, workflow: &str) -> PathBuf {
    let safe = runners::safe_file_name(workflow);
    let safe = safe.trim_start_matches('.');
    let safe = if safe.is_empty() { "workflow" } else { safe };
    crate::state_dir::context_file(state_dir, safe)
}

/// Loads a preserved context; a missing file is an empty context.
pub(crate) fn load(state_dir: &Path, workflow: &str) -> Result<Map<String, Value>, EngineError> {
    let path = context_path(state_dir, workflow);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Ok(Map::new()),
            Err(e) => Err(EngineError::Context {
                path,
                message: e.to_string(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(EngineError::Context {
            path,
            message: e.to_string(),
        }),
    }
}

/// Saves a preserved context atomically (temporary file, then rename).
pub(crate) fn save(
    state_dir: &Path,
    workflow: &str,
    context: &Map<String, Value>,
) -> Result<(), EngineError> {
    let path = context_path(state_dir, workflow);
    let err = |e: std::io::Error| EngineError::Context {
        path: path.clone(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let text = serde_json::to_vec_pretty(context).map_err(|e| EngineError::Context {
        path: path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("object expected"),
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path(), "My Flow/x").expect("load").is_empty());
        let ctx = obj(json!({"n": 1, "deep": {"k": "v"}}));
        save(dir.path(), "My Flow/x", &ctx).expect("save");
        assert_eq!(load(dir.path(), "My Flow/x").expect("load"), ctx);
        let p = context_path(dir.path(), "../../etc");
        assert!(p.starts_with(dir.path().join("context")));
        std::fs::write(context_path(dir.path(), "bad"), "{not json").expect("write");
        assert!(load(dir.path(), "bad").is_err());
    }
}
