//! The workflow context map: how a step's JSON context update merges
//! (`merge_strategy: deep|shallow|replace`), and where a preserved context lives between
//! runs (`preserve: true`: one JSON file per workflow under the state directory).
//!
//! This is the only file `agent exec` writes (and only with `preserve: true`): no per-step
//! files and no database. The daemon keeps contexts in its store instead and uses only
//! [`merge`].

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

use super::errors::EngineError;

pub use dsl::model::MergeStrategy;

/// Merges `update` into `target` by `strategy`. A non-object update under `deep` or
/// `shallow` is ignored (a context is always an object).
pub fn merge(target: &mut Map<String, Value>, update: Value, strategy: MergeStrategy) {
    let Value::Object(update) = update else {
        return;
    };
    match strategy {
        MergeStrategy::Replace => *target = update,
        MergeStrategy::Shallow => target.extend(update),
        MergeStrategy::Deep => deep_merge(target, update),
    }
}

fn deep_merge(target: &mut Map<String, Value>, update: Map<String, Value>) {
    for (k, v) in update {
        match (target.get_mut(&k), v) {
            (Some(Value::Object(t)), Value::Object(u)) => deep_merge(t, u),
            (_, v) => {
                target.insert(k, v);
            }
        }
    }
}

/// A preserved context's file: `<state_dir>/context/<workflow>.json`, with the workflow
/// name reduced to a safe file name.
pub fn context_path(state_dir: &Path, workflow: &str) -> PathBuf {
    let safe = runners::safe_file_name(workflow);
    let safe = safe.trim_start_matches('.');
    let safe = if safe.is_empty() { "workflow" } else { safe };
    state_dir.join("context").join(format!("{safe}.json"))
}

/// Loads a preserved context; a missing file is an empty context.
pub fn load(state_dir: &Path, workflow: &str) -> Result<Map<String, Value>, EngineError> {
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
pub fn save(
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
    fn strategies() {
        let base = obj(json!({"a": {"x": 1, "y": 2}, "b": 1}));
        let upd = json!({"a": {"y": 3, "z": 4}, "c": 5});

        let mut d = base.clone();
        merge(&mut d, upd.clone(), MergeStrategy::Deep);
        assert_eq!(
            Value::Object(d),
            json!({"a": {"x": 1, "y": 3, "z": 4}, "b": 1, "c": 5})
        );

        let mut s = base.clone();
        merge(&mut s, upd.clone(), MergeStrategy::Shallow);
        assert_eq!(
            Value::Object(s),
            json!({"a": {"y": 3, "z": 4}, "b": 1, "c": 5})
        );

        let mut r = base.clone();
        merge(&mut r, upd, MergeStrategy::Replace);
        assert_eq!(Value::Object(r), json!({"a": {"y": 3, "z": 4}, "c": 5}));

        let mut n = base.clone();
        merge(&mut n, json!([1]), MergeStrategy::Deep);
        assert_eq!(n, base);
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
