//! Snapshot of what users read: expression diagnostics (syntax, static checks, evaluation)
//! with a caret under the span each error carries.

use dsl::expr::{self, MapContext, Scope, Template};
use serde_json::json;

fn caret(src: &str, offset: usize, len: usize, message: &str) -> String {
    let prefix_width = src[..offset].chars().count();
    let width = src[offset..offset + len].chars().count().max(1);
    format!(
        "  {src}\n  {}{} {message}\n",
        " ".repeat(prefix_width),
        "^".repeat(width)
    )
}

#[test]
fn diagnostics() {
    let params = vec!["version".to_string(), "environment".to_string()];
    let scope = Scope {
        parameters: &params,
        roots: &["parameters", "steps", "env", "run"],
    };
    let ctx = MapContext::from_value(json!({
        "parameters": {"version": "1.0", "environment": "prod"},
        "steps": {"build": {"status": "succeeded", "output": {"n": 3}}},
        "env": {}, "run": {"attempt": 1}
    }));
    let templates = [
        "${{ parameters.version == }}",
        "${{ parameters.version = '1' }}",
        "deploy ${{ parameters.enviroment }} now",
        "${{ paramters.version }}",
        "${{ lenght(parameters.version) }}",
        "${{ len(parameters.version, 1) }}",
        "${{ repo.branch }}",
        "${{ True }}",
        "${{ regex_match(parameters.version, '[') }}",
        "${{ format('{0} {1}', parameters.version) }}",
        "${{ steps.build.status.code }}",
        "${{ steps.build.output.n < 'x' }}",
        "${{ steps.build.output.n / 0 }}",
        "${{ 'unterminated }}",
        "${{ parameters.version",
        "${{ ((((1 }}",
        "${{ a.b() }}",
        "${{ }}",
    ];
    let mut out = String::new();
    for t in templates {
        let errors: Vec<expr::ExprError> = match Template::parse(t) {
            Err(errors) => errors,
            Ok(parsed) => {
                let problems = parsed.check(&scope);
                if problems.is_empty() {
                    parsed.render(&ctx).err().into_iter().collect()
                } else {
                    problems
                }
            }
        };
        assert!(!errors.is_empty(), "{t} should fail");
        for e in errors {
            out.push_str(&caret(t, e.offset, e.len, &e.message));
        }
    }
    insta::assert_snapshot!(out);
}
