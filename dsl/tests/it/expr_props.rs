//! Property tests: the expression parser, checker, evaluator and template renderer never
//! panic, whatever they are fed, and every error they return points inside the input on
//! character boundaries.

use dsl::expr::{self, MapContext, Scope, Template};
use proptest::prelude::*;
use serde_json::json;

fn ctx() -> MapContext {
    MapContext::from_value(json!({
        "parameters": {"a": 1, "b": "two", "c": [1, 2, {"d": null}], "e": {"f": true}, "g": 2.5},
        "steps": {"build": {"status": "succeeded", "output": {"x": "y", "n": 0}}},
        "context": {}, "env": {"E": "v"}, "secrets": {"s": "hidden"},
        "run": {"id": "r", "attempt": 1}, "repo": {"branch": "main"},
        "workflow": {"name": "w"}
    }))
}

const PARAMS: &[&str] = &["a", "b", "c"];
const ROOTS: &[&str] = &["parameters", "steps", "env"];

/// Asserts that `offset..offset + len` is a valid slice of `src`.
fn assert_span(src: &str, e: &expr::ExprError, what: &str) {
    assert!(
        src.get(e.offset..e.offset + e.len).is_some(),
        "{what} error span {}..{} is not a slice of {src:?} ({})",
        e.offset,
        e.offset + e.len,
        e.message
    );
    assert!(!e.message.is_empty());
}

fn exercise_expr(src: &str) {
    let params: Vec<String> = PARAMS.iter().map(|s| s.to_string()).collect();
    let scope = Scope {
        parameters: &params,
        roots: ROOTS,
    };
    match expr::parse(src) {
        Err(e) => assert_span(src, &e, "parse"),
        Ok(parsed) => {
            assert_eq!(parsed.source(), src);
            for e in expr::check(&parsed, &scope) {
                assert_span(src, &e, "check");
            }
            for r in parsed.references() {
                assert!(
                    src.get(r.offset..r.offset + r.len).is_some(),
                    "reference {r:?}"
                );
            }
            if let Err(e) = parsed.eval(&ctx()) {
                assert_span(src, &e, "eval");
            }
        }
    }
}

fn exercise_template(s: &str) {
    let params: Vec<String> = PARAMS.iter().map(|s| s.to_string()).collect();
    let scope = Scope {
        parameters: &params,
        roots: ROOTS,
    };
    match Template::parse(s) {
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                assert_span(s, e, "template");
            }
        }
        Ok(t) => {
            for e in t.check(&scope) {
                assert_span(s, &e, "template check");
            }
            for (e, offset) in t.exprs() {
                assert_eq!(s.get(offset..offset + e.source().len()), Some(e.source()));
            }
            for r in t.references() {
                assert!(
                    s.get(r.offset..r.offset + r.len).is_some(),
                    "reference {r:?}"
                );
            }
            match t.render(&ctx()) {
                Err(e) => assert_span(s, &e, "render"),
                Ok(v) => {
                    if t.is_literal() {
                        assert_eq!(v, json!(s));
                    }
                }
            }
        }
    }
}

/// Pieces of the language (and of things that are not), to build token soups from.
const TOKENS: &[&str] = &[
    "parameters",
    "steps",
    "context",
    "env",
    "secrets",
    "run",
    "repo",
    "workflow",
    "nope",
    ".",
    ".a",
    ".b",
    ".c",
    ".build",
    ".output",
    ".x",
    "[",
    "]",
    "(",
    ")",
    ",",
    "0",
    "1",
    "-1",
    "2.5",
    "1e3",
    "99999999999999999999",
    "'s'",
    "\"d\"",
    "'",
    "\"",
    "\\",
    "'\\u{1F600}'",
    "'}}'",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    "and",
    "or",
    "not",
    "in",
    "if",
    "else",
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "&",
    "|",
    "true",
    "false",
    "null",
    "True",
    "len",
    "str",
    "int",
    "bool",
    "contains",
    "startswith",
    "endswith",
    "regex_match",
    "now",
    "env",
    "file_exists",
    "success",
    "failure",
    "always",
    "cancelled",
    "format",
    "join",
    "to_json",
    "from_json",
    "hash_files",
    "lenght",
    "'{0}'",
    "'{'",
    "'('",
    "'[]'",
    "'{\"a\":1}'",
    "${{",
    "}}",
    "$",
    "{",
    "}",
    "é",
    "日本",
    "\u{0}",
    "\n",
    " ",
    "-a",
    "'a'[0]",
];

fn soup() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(TOKENS), 0..24),
        prop::bool::ANY,
    )
        .prop_map(|(tokens, spaced)| tokens.join(if spaced { " " } else { "" }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,120}") {
        exercise_expr(&s);
        exercise_template(&s);
        exercise_template(&format!("x ${{{{{s}}}}} y"));
    }

    #[test]
    fn token_soup_never_panics(s in soup()) {
        exercise_expr(&s);
        exercise_template(&s);
        exercise_template(&format!("${{{{ {s} }}}}"));
        exercise_template(&format!("a ${{{{ {s} }}}} b ${{{{ parameters.a }}}}"));
    }
}

#[test]
fn hostile_inputs_fail_fast() {
    let started = std::time::Instant::now();
    let cases = [
        "(".repeat(100_000),
        "!".repeat(100_000),
        "-".repeat(100_000),
        "[".repeat(100_000),
        "a".to_string() + &"[0]".repeat(20_000),
        "a".to_string() + &".b".repeat(30_000),
        "1".to_string() + &" + 1".repeat(15_000),
        "len(".repeat(20_000),
        format!("'{}'", "\\".repeat(60_001)),
        "é".repeat(40_000),
    ];
    for src in &cases {
        exercise_expr(src);
        exercise_template(&format!("${{{{ {src} }}}}"));
    }
    // The deepest trees the parser accepts are checked and evaluated without trouble.
    let deepest = [
        "parameters.c".to_string() + &"[0]".repeat(expr::MAX_TREE_DEPTH - 3),
        "parameters.c".to_string() + &".x".repeat(expr::MAX_TREE_DEPTH - 3),
        "1".to_string() + &" + 1".repeat(expr::MAX_TREE_DEPTH - 1),
        "parameters.a".to_string() + &" and parameters.a".repeat(expr::MAX_TREE_DEPTH - 3),
        format!(
            "{}1{}",
            "(-".repeat(expr::MAX_NESTING / 2 - 1),
            ")".repeat(expr::MAX_NESTING / 2 - 1)
        ),
    ];
    for src in &deepest {
        let parsed = expr::parse(src).unwrap_or_else(|e| panic!("{}: {e}", &src[..20]));
        exercise_expr(src);
        drop(parsed);
    }
    assert_eq!(
        expr::parse(&deepest[2])
            .expect("parses")
            .eval(&ctx())
            .expect("evaluates"),
        json!(expr::MAX_TREE_DEPTH)
    );
    // How long this took is printed, not bounded (timing belongs in bench/).
    eprintln!(
        "deepest trees checked and evaluated in {:?}",
        started.elapsed()
    );
}
