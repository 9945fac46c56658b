//! Run parameters: convert `-p NAME=VALUE` text or JSON values to the types a workflow
//! declares, apply defaults, and check `required` and `enum`. The CLI (`agent exec`), the
//! daemon API and schedules all go through here.

use crate::diagnostic::suggest;
use crate::errors::ParamError;
use crate::model::{ParamType, Parameter, Workflow};
use serde_json::{Map, Value};

/// Splits `NAME=VALUE` arguments into pairs (the value may contain `=`).
pub fn parse_assignments<S: AsRef<str>>(args: &[S]) -> Result<Vec<(String, String)>, ParamError> {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            match a.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
                _ => Err(ParamError::Syntax(a.to_owned())),
            }
        })
        .collect()
}

/// Converts command-line text to the declared type: numbers, integers and booleans are
/// parsed, arrays and objects are JSON, strings are taken as they are.
pub(crate) fn convert_text(name: &str, ty: ParamType, text: &str) -> Result<Value, ParamError> {
    let bad = |expected: &str| ParamError::Type {
        name: name.to_owned(),
        expected: expected.to_owned(),
        value: text.to_owned(),
    };
    let t = text.trim();
    match ty {
        ParamType::String => Ok(Value::String(text.to_owned())),
        ParamType::Integer => t
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("an integer")),
        ParamType::Number => {
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Value::from(i));
            }
            t.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))
        }
        ParamType::Boolean => match t {
            "true" | "True" | "TRUE" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "False" | "FALSE" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(bad("`true` or `false`")),
        },
        ParamType::Array => match serde_json::from_str::<Value>(t) {
            Ok(v @ Value::Array(_)) => Ok(v),
            _ => Err(bad("a JSON array")),
        },
        ParamType::Object => match serde_json::from_str::<Value>(t) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(bad("a JSON object")),
        },
    }
}

/// Resolves `-p NAME=VALUE` text against a workflow's declarations.
pub fn resolve_text<S: AsRef<str>>(
    wf: &Workflow,
    args: &[S],
) -> Result<Map<String, Value>, Vec<ParamError>> {
    let pairs = parse_assignments(args).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut given = Map::new();
    // Names given with a value that does not convert: already reported, not "missing".
    let mut bad = Vec::new();
    for (k, v) in pairs {
        if given.contains_key(&k) {
            errors.push(ParamError::Duplicate(k));
            continue;
        }
        match wf.parameter(&k) {
            Some(p) => match convert_text(&k, p.ty.value, &v) {
                Ok(val) => {
                    given.insert(k, val);
                }
                Err(e) => {
                    errors.push(e);
                    bad.push(k);
                }
            },
            None => errors.push(unknown(wf, &k)),
        }
    }
    match resolve_json(wf, &given) {
        Ok(m) if errors.is_empty() => Ok(m),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more.into_iter().filter(|e| match e {
                ParamError::Unknown { .. } => false,
                ParamError::Missing(name) => !bad.contains(name),
                _ => true,
            }));
            Err(errors)
        }
    }
}

/// Resolves JSON values (the API's body, schedule parameters) against a workflow's
/// declarations: types checked (an integer-valued number is accepted for `integer`; text is
/// converted like `-p` text), defaults applied, `required` and `enum` checked. The result
/// holds every declared parameter that has a value, in declaration order.
pub fn resolve_json(
    wf: &Workflow,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<ParamError>> {
    let mut errors = Vec::new();
    for k in given.keys() {
        if wf.parameter(k).is_none() {
            errors.push(unknown(wf, k));
        }
    }
    match resolve_params(&wf.parameters, given) {
        Ok(m) if errors.is_empty() => Ok(m),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Types, defaults, `required` and `enum` for a list of declarations (unknown names in
/// `given` are ignored here).
fn resolve_params(
    params: &[Parameter],
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<ParamError>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    for p in params {
        let name = &p.name.value;
        let value = match given.get(name) {
            Some(Value::String(s)) if p.ty.value != ParamType::String => {
                match convert_text(name, p.ty.value, s) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
            }
            Some(v) => {
                if !type_matches(p.ty.value, v) {
                    errors.push(ParamError::Type {
                        name: name.clone(),
                        expected: expected(p.ty.value).to_owned(),
                        value: v.to_string(),
                    });
                    continue;
                }
                Some(v.clone())
            }
            None => p.default.as_ref().map(|d| d.value.clone()),
        };
        let Some(value) = value else {
            if p.required.value {
                errors.push(ParamError::Missing(name.clone()));
            }
            continue;
        };
        if let Some(allowed) = &p.allowed
            && !allowed.value.iter().any(|a| json_eq(a, &value))
        {
            errors.push(ParamError::NotAllowed {
                name: name.clone(),
                allowed: allowed
                    .value
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => format!("`{s}`"),
                        other => format!("`{other}`"),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                value: match &value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            });
            continue;
        }
        out.insert(name.clone(), value);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Checks one JSON value against a declared parameter: its type (text is converted like
/// `-p` text) and its `enum`. Returns the converted value.
pub(crate) fn check_value(p: &Parameter, value: &Value) -> Result<Value, Vec<ParamError>> {
    let mut decl = p.clone();
    decl.required = crate::model::Spanned::new(true, p.span);
    decl.default = None;
    let wf_params = [decl];
    let mut given = Map::new();
    given.insert(p.name.value.clone(), value.clone());
    resolve_params(&wf_params, &given).map(|mut m| m.remove(&p.name.value).unwrap_or(Value::Null))
}

fn unknown(wf: &Workflow, name: &str) -> ParamError {
    ParamError::Unknown {
        name: name.to_owned(),
        suggestion: suggest(name, wf.parameters.iter().map(|p| p.name.value.as_str()))
            .map(str::to_owned),
    }
}

fn expected(ty: ParamType) -> &'static str {
    match ty {
        ParamType::String => "a string",
        ParamType::Number => "a number",
        ParamType::Integer => "an integer",
        ParamType::Boolean => "`true` or `false`",
        ParamType::Array => "an array",
        ParamType::Object => "an object",
    }
}

/// Whether a JSON value has a parameter type.
pub(crate) fn type_matches(ty: ParamType, v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match ty {
        ParamType::String => v.is_string(),
        ParamType::Number => v.is_number(),
        ParamType::Integer => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        ParamType::Boolean => v.is_boolean(),
        ParamType::Array => v.is_array(),
        ParamType::Object => v.is_object(),
    }
}

/// JSON equality where `1` equals `1.0`.
pub(crate) fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf() -> Workflow {
        let src = r#"
workflow:
  name: t
  parameters:
    - name: version
      type: string
      required: true
    - name: env
      enum: [staging, production]
      default: staging
    - name: count
      type: integer
      default: 2
    - name: flag
      type: boolean
    - name: list
      type: array
  stages:
    - name: s
      steps:
        - id: a
          run: "true"
"#;
        match crate::parse_str("t.yaml", src) {
            Ok((w, _)) => w,
            Err(d) => panic!("{d}"),
        }
    }

    #[test]
    fn converts_and_defaults() {
        let w = wf();
        let m =
            resolve_text(&w, &["version=1.2", "count=7", "flag=true", "list=[1,2]"]).expect("ok");
        assert_eq!(m["version"], "1.2");
        assert_eq!(m["env"], "staging");
        assert_eq!(m["count"], 7);
        assert_eq!(m["flag"], true);
        assert_eq!(m["list"], serde_json::json!([1, 2]));
    }

    /// `-p version=` of a required parameter that fails to convert is one error, not a
    /// second, wrong "missing required parameter".
    #[test]
    fn a_value_that_does_not_convert_is_not_also_missing() {
        let src = "workflow:\n  name: t\n  parameters:\n    - name: n\n      type: integer\n      required: true\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n";
        let w = crate::parse_str("t.yaml", src).expect("valid").0;
        let e = resolve_text(&w, &["n=abc"]).expect_err("bad");
        let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert_eq!(text, ["parameter `n` expects an integer, got `abc`"]);
    }

    #[test]
    fn reports_every_problem() {
        let w = wf();
        let e = resolve_text(&w, &["count=x", "env=prod", "nope=1"]).expect_err("bad");
        let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert!(
            text.contains(&"parameter `count` expects an integer, got `x`".to_owned()),
            "{text:?}"
        );
        assert!(
            text.contains(&"unknown parameter `nope`".to_owned()),
            "{text:?}"
        );
        assert!(
            text.contains(&"missing required parameter `version`".to_owned()),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("parameter `env` must be one of")),
            "{text:?}"
        );
    }
}
