//! The workflow context map: how a step's JSON context update merges
//! (`merge_strategy: deep|shallow|replace`).

use serde_json::{Map, Value};

pub(crate) use dsl::model::MergeStrategy;

/// Merges `update` into `target` by `strategy`. A non-object update under `deep` or
/// `shallow` is ignored (a context is always an object).
pub(crate) fn merge(target: &mut Map<String, Value>, update: Value, strategy: MergeStrategy) {
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
}
