//! Matrix expansion: axes, `exclude` and `include` to the ordered list of instances, with
//! GitHub Actions' rules.
//!
//! 1. The combinations are the cartesian product of the axes, the first axis varying
//!    slowest (`{os: [a, b], v: [1, 2]}` gives `a,1  a,2  b,1  b,2`).
//! 2. `exclude` removes every combination that matches one of its entries (an entry matches
//!    when each of its keys has the combination's value; an entry may name some axes only).
//! 3. `include` entries are then applied in order. An entry extends every remaining
//!    combination whose axis values it does not contradict with its other keys (values added
//!    by an earlier entry may be overwritten, axis values never). An entry that extends no
//!    combination becomes a new instance of its own (added at the end).
//!
//! Values are compared as JSON (`3.10` written as a number and `"3.10"` differ, as in
//! GitHub). Instances keep the axes in order, then the keys `include` added.

use serde_json::{Map, Value};

/// The most instances a matrix may have.
pub const MAX_INSTANCES: usize = 256;

/// One instance of a matrix: the value of every key, axes first.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixInstance {
    /// Key to value, in order.
    pub values: Map<String, Value>,
}

impl MatrixInstance {
    /// The instance's id: `BASE (k1=v1, k2=v2)` (strings unquoted, other values as compact
    /// JSON); `BASE` alone when the instance has no values.
    pub fn id(&self, base: &str) -> String {
        if self.values.is_empty() {
            return base.to_owned();
        }
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect();
        format!("{base} ({})", parts.join(", "))
    }

    /// The instance as the value of the `matrix` context.
    pub fn to_json(&self) -> Value {
        Value::Object(self.values.clone())
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Why a matrix cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    /// No instance at all (no axes and no `include`, an empty axis, or everything excluded).
    #[error("{0}")]
    Empty(String),
    /// More than [`MAX_INSTANCES`] instances.
    #[error(
        "the matrix has {0} instances, more than the {max} allowed; split it or add `exclude` entries",
        max = MAX_INSTANCES
    )]
    TooMany(usize),
    /// An `exclude` entry names a key that is not an axis (entry index, key).
    #[error("`exclude` entry {n} names `{1}`, which is not an axis of the matrix", n = .0 + 1)]
    ExcludeUnknownKey(usize, String),
    /// An `include` entry with no keys (entry index).
    #[error("`include` entry {n} is empty", n = .0 + 1)]
    EmptyInclude(usize),
    /// A value evaluated at run time has the wrong shape.
    #[error("{0}")]
    Invalid(String),
}

/// Expands a static matrix into its instances, in order (see the module doc). `axes` are
/// the axis names with their values, in file order.
pub fn expand(
    axes: &[(String, Vec<Value>)],
    include: &[Map<String, Value>],
    exclude: &[Map<String, Value>],
) -> Result<Vec<MatrixInstance>, MatrixError> {
    for (i, e) in exclude.iter().enumerate() {
        if let Some(k) = e.keys().find(|k| !axes.iter().any(|(a, _)| a == *k)) {
            return Err(MatrixError::ExcludeUnknownKey(i, k.clone()));
        }
    }
    if let Some(i) = include.iter().position(Map::is_empty) {
        return Err(MatrixError::EmptyInclude(i));
    }
    if let Some((name, _)) = axes.iter().find(|(_, v)| v.is_empty()) {
        return Err(MatrixError::Empty(format!(
            "matrix axis `{name}` has no values"
        )));
    }
    // The product's size, checked before it is built (a hostile file could ask for 10^30).
    let mut product: usize = if axes.is_empty() { 0 } else { 1 };
    for (_, v) in axes {
        product = product.saturating_mul(v.len());
    }
    if product > MAX_INSTANCES.saturating_mul(64) {
        return Err(MatrixError::TooMany(product));
    }
    let mut combos: Vec<Map<String, Value>> = Vec::with_capacity(product);
    if !axes.is_empty() {
        combos.push(Map::new());
        for (name, values) in axes {
            let mut next = Vec::with_capacity(combos.len() * values.len());
            for c in &combos {
                for v in values {
                    let mut c = c.clone();
                    c.insert(name.clone(), v.clone());
                    next.push(c);
                }
            }
            combos = next;
        }
    }
    combos.retain(|c| {
        !exclude
            .iter()
            .any(|e| e.iter().all(|(k, v)| c.get(k) == Some(v)))
    });
    let is_axis = |k: &str| axes.iter().any(|(a, _)| a == k);
    let mut extra: Vec<Map<String, Value>> = Vec::new();
    for entry in include {
        let mut applied = false;
        for c in combos.iter_mut() {
            let fits = entry
                .iter()
                .all(|(k, v)| !is_axis(k) || c.get(k) == Some(v));
            if fits {
                for (k, v) in entry {
                    c.insert(k.clone(), v.clone());
                }
                applied = true;
            }
        }
        if !applied {
            extra.push(entry.clone());
        }
    }
    combos.extend(extra);
    if combos.is_empty() {
        let msg = if axes.is_empty() {
            "the matrix is empty: give it at least one axis or `include` entry".to_owned()
        } else {
            "the matrix is empty: `exclude` removes every combination".to_owned()
        };
        return Err(MatrixError::Empty(msg));
    }
    if combos.len() > MAX_INSTANCES {
        return Err(MatrixError::TooMany(combos.len()));
    }
    Ok(combos
        .into_iter()
        .map(|values| MatrixInstance { values })
        .collect())
}

/// Reads a list evaluated at run time: a JSON array, or a string holding one (a step output
/// is often the text `["a","b"]`).
pub fn json_list(v: &Value, what: &str) -> Result<Vec<Value>, MatrixError> {
    match v {
        Value::Array(items) => Ok(items.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(items)) => Ok(items),
            _ => Err(MatrixError::Invalid(format!(
                "`{what}` must be a JSON list, found the text `{}`",
                short(s)
            ))),
        },
        other => Err(MatrixError::Invalid(format!(
            "`{what}` must be a JSON list, found {}",
            short(&other.to_string())
        ))),
    }
}

/// Reads `include` / `exclude` evaluated at run time: a list of objects.
pub fn json_entries(v: &Value, what: &str) -> Result<Vec<Map<String, Value>>, MatrixError> {
    json_list(v, what)?
        .into_iter()
        .map(|e| match e {
            Value::Object(m) => Ok(m),
            other => Err(MatrixError::Invalid(format!(
                "each `{what}` entry must be an object, found {}",
                short(&other.to_string())
            ))),
        })
        .collect()
}

/// Expands a whole matrix given as one JSON object (`matrix: ${{ expr }}`): axes are its
/// list-valued keys, plus `include` and `exclude`; `fail_fast` and `max_parallel` are
/// ignored here. A string holding such an object is read as JSON.
pub fn expand_value(v: &Value) -> Result<Vec<MatrixInstance>, MatrixError> {
    let parsed;
    let obj = match v {
        Value::Object(m) => m,
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).ok();
            match &parsed {
                Some(Value::Object(m)) => m,
                _ => {
                    return Err(MatrixError::Invalid(format!(
                        "`matrix` must be a JSON object, found the text `{}`",
                        short(s)
                    )));
                }
            }
        }
        other => {
            return Err(MatrixError::Invalid(format!(
                "`matrix` must be a JSON object, found {}",
                short(&other.to_string())
            )));
        }
    };
    let mut axes = Vec::new();
    let (mut include, mut exclude) = (Vec::new(), Vec::new());
    for (k, v) in obj {
        match k.as_str() {
            "include" => include = json_entries(v, "include")?,
            "exclude" => exclude = json_entries(v, "exclude")?,
            "fail_fast" | "max_parallel" => {}
            _ => axes.push((k.clone(), json_list(v, k)?)),
        }
    }
    expand(&axes, &include, &exclude)
}

fn short(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn ids(r: &[MatrixInstance]) -> Vec<String> {
        r.iter().map(|i| i.id("test")).collect()
    }

    /// 3 x 2 with one exclude gives 5 instances, first axis slowest, in order.
    #[test]
    fn three_by_two_with_one_exclude_gives_five_in_order() {
        let axes = vec![
            (
                "python".to_owned(),
                vec![json!("3.10"), json!("3.11"), json!("3.12")],
            ),
            ("os".to_owned(), vec![json!("linux"), json!("mac")]),
        ];
        let out =
            expand(&axes, &[], &[obj(json!({"python": "3.10", "os": "mac"}))]).expect("expands");
        assert_eq!(
            ids(&out),
            [
                "test (python=3.10, os=linux)",
                "test (python=3.11, os=linux)",
                "test (python=3.11, os=mac)",
                "test (python=3.12, os=linux)",
                "test (python=3.12, os=mac)",
            ]
        );
    }

    /// GitHub's documented include example: extends matching combinations, overwrites only
    /// added values, and adds unmatched entries as new instances.
    #[test]
    fn include_extends_or_adds_like_github() {
        let axes = vec![
            ("fruit".to_owned(), vec![json!("apple"), json!("pear")]),
            ("animal".to_owned(), vec![json!("cat"), json!("dog")]),
        ];
        let include = [
            obj(json!({"color": "green"})),
            obj(json!({"color": "pink", "animal": "cat"})),
            obj(json!({"fruit": "apple", "shape": "circle"})),
            obj(json!({"fruit": "banana"})),
            obj(json!({"fruit": "banana", "animal": "cat"})),
        ];
        let out = expand(&axes, &include, &[]).expect("expands");
        let got: Vec<Value> = out.iter().map(MatrixInstance::to_json).collect();
        assert_eq!(
            got,
            [
                json!({"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"}),
                json!({"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"}),
                json!({"fruit": "pear", "animal": "cat", "color": "pink"}),
                json!({"fruit": "pear", "animal": "dog", "color": "green"}),
                json!({"fruit": "banana"}),
                json!({"fruit": "banana", "animal": "cat"}),
            ]
        );
        assert_eq!(
            out[0].id("t"),
            "t (fruit=apple, animal=cat, color=pink, shape=circle)"
        );
    }

    /// A matrix of include entries only has one instance per entry; map values show as JSON.
    #[test]
    fn include_only_and_map_values() {
        let include = [
            obj(json!({"target": {"os": "linux", "arch": "x64"}})),
            obj(json!({"target": "wasm"})),
        ];
        let out = expand(&[], &include, &[]).expect("expands");
        assert_eq!(
            ids(&out),
            [
                r#"test (target={"os":"linux","arch":"x64"})"#,
                "test (target=wasm)"
            ]
        );
    }

    /// 257 instances are refused, 256 are fine; a huge product is refused before it is built.
    #[test]
    fn more_than_256_instances_is_an_error() {
        let n = |k: usize| (0..k).map(|i| json!(i)).collect::<Vec<_>>();
        let ok = expand(&[("a".into(), n(16)), ("b".into(), n(16))], &[], &[]).expect("256");
        assert_eq!(ok.len(), 256);
        let err = expand(&[("a".into(), n(257))], &[], &[]).expect_err("257");
        assert_eq!(err, MatrixError::TooMany(257));
        let big: Vec<(String, Vec<Value>)> = (0..30).map(|i| (format!("x{i}"), n(10))).collect();
        assert!(matches!(
            expand(&big, &[], &[]),
            Err(MatrixError::TooMany(_))
        ));
        let with_include = expand(&[("a".into(), n(256))], &[obj(json!({"a": "new"}))], &[]);
        assert_eq!(with_include, Err(MatrixError::TooMany(257)));
    }

    /// A dynamic matrix: a JSON object (or the text of one) from an expression.
    #[test]
    fn whole_matrix_from_json() {
        let v = json!(
            r#"{"os": ["linux", "mac"], "exclude": [{"os": "mac"}], "include": [{"os": "linux", "x": 1}], "fail_fast": false}"#
        );
        let out = expand_value(&v).expect("expands");
        assert_eq!(ids(&out), ["test (os=linux, x=1)"]);
        assert!(matches!(
            expand_value(&json!({"os": "linux"})),
            Err(MatrixError::Invalid(_))
        ));
        assert_eq!(
            json_list(&json!("[1,2]"), "a").expect("list"),
            [json!(1), json!(2)]
        );
    }

    /// Empty matrices and exclude keys naming no axis are errors.
    #[test]
    fn empty_and_unknown_exclude_keys_are_errors() {
        assert!(matches!(expand(&[], &[], &[]), Err(MatrixError::Empty(_))));
        assert!(matches!(
            expand(&[("a".into(), vec![])], &[], &[]),
            Err(MatrixError::Empty(_))
        ));
        assert!(matches!(
            expand(
                &[("a".into(), vec![json!(1)])],
                &[],
                &[obj(json!({"a": 1}))]
            ),
            Err(MatrixError::Empty(_))
        ));
        assert_eq!(
            expand(
                &[("a".into(), vec![json!(1)])],
                &[],
                &[obj(json!({"b": 1}))]
            ),
            Err(MatrixError::ExcludeUnknownKey(0, "b".into()))
        );
        assert_eq!(
            expand(&[("a".into(), vec![json!(1)])], &[Map::new()], &[]),
            Err(MatrixError::EmptyInclude(0))
        );
    }
}
