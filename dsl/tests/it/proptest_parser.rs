//! Property tests: arbitrary text and arbitrary YAML-ish trees (made of the format's own
//! keys, so that they reach deep into lowering and validation) never panic the parser.

use proptest::prelude::*;
use serde_json::{Map, Value};

const KEYS: &[&str] = &[
    "workflow",
    "name",
    "stages",
    "steps",
    "id",
    "run",
    "skill",
    "workflow",
    "decision",
    "branches",
    "when",
    "default",
    "needs",
    "parallel",
    "max_parallel",
    "parameters",
    "type",
    "enum",
    "required",
    "on",
    "schedule",
    "cron",
    "timezone",
    "timeout",
    "retry",
    "max_attempts",
    "delay",
    "on_failure",
    "error_handlers",
    "action",
    "rollback",
    "compensate",
    "env",
    "outputs",
    "cache",
    "key",
    "resources",
    "cpu",
    "memory_mb",
    "matrix",
    "include",
    "exclude",
    "services",
    "ready",
    "tcp",
    "artifacts",
    "paths",
    "from",
    "checkout",
    "depth",
    "working_directory",
    "shell",
    "x",
];

const SCALARS: &[&str] = &[
    "${{ parameters.x }}",
    "${{ steps.a.output.b }}",
    "${{ matrix.x }}",
    "${{ services.x.port }}",
    "../x",
    "${{",
    "}}",
    "${{ len( }}",
    "auto",
    "true",
    "0 3 * * *",
    "5m",
    "-1",
    "a",
    "b",
    "abort",
    "rollback",
    "skill",
    "run",
    "",
    "${{ steps.a.status == 'ok' && !false }}",
    "Europe/Berlin",
    "\u{e9}\u{301}",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(SCALARS).prop_map(|s| Value::String(s.to_owned())),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        "[ -~]{0,20}".prop_map(Value::String),
        "[ -~]{0,8}\\$\\{\\{[ -~]{0,24}(\\}\\})?[ -~]{0,8}".prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.to_owned(), v);
                }
                Value::Object(m)
            }),
        ]
    })
}

/// A block-style YAML rendering (JSON is flow-style YAML already).
fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                out.push_str(&format!("{pad}{k}:"));
                if matches!(v, Value::Object(m) if !m.is_empty())
                    || matches!(v, Value::Array(a) if !a.is_empty())
                {
                    out.push('\n');
                    block(v, indent + 2, out);
                } else {
                    out.push(' ');
                    out.push_str(&serde_json::to_string(v).unwrap_or_default());
                    out.push('\n');
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for v in a {
                out.push_str(&format!("{pad}-\n"));
                block(v, indent + 2, out);
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&serde_json::to_string(other).unwrap_or_default());
            out.push('\n');
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = dsl::parse_str("t.yaml", &text);
    }

    #[test]
    fn yamlish_text_never_panics(text in "[a-z:\\-\\[\\]{}&*!|>'\" \n#$]{0,200}") {
        let _ = dsl::parse_str("t.yaml", &text);
    }

    #[test]
    fn arbitrary_trees_never_panic(v in tree()) {
        let wrapped = serde_json::json!({"workflow": v});
        let flow = serde_json::to_string(&wrapped).unwrap_or_default();
        let _ = dsl::parse_str("t.yaml", &flow);
        let mut text = String::new();
        block(&wrapped, 0, &mut text);
        let _ = dsl::parse_str("t.yaml", &text);
    }

    #[test]
    fn rendering_diagnostics_never_panics(text in "\\PC{0,200}") {
        if let Err(d) = dsl::parse_str("t.yaml", &text) {
            let _ = d.render();
        }
    }
}
