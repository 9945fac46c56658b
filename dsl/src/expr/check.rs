//! Static checks of a parsed expression against the place it appears in: unknown context
//! roots, undeclared parameters, unknown functions, wrong arity, and literal arguments that
//! can never work (an invalid `regex_match` pattern, a bad `format` string).
//!
//! These run at validate time; evaluation repeats the function checks, so an unchecked
//! expression still fails cleanly.

use crate::diagnostic::suggest_spelling;
use serde_json::Value;

use super::ast::{Node, NodeKind};
use super::parser::Expr;
use super::shared::{
    ExprError, FUNCTIONS, ROOTS, RUN_KEYS, arity_error, compile_regex, format_with,
};

/// What an expression may refer to where it appears.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The workflow's declared parameter names.
    pub parameters: &'a [String],
    /// The context roots allowed here (a subset of [`ROOTS`]).
    pub roots: &'a [&'a str],
}

/// Static checks: unknown roots, undeclared parameters, unknown functions, wrong arity.
/// Returns every problem found; offsets are relative to [`Expr::source`].
pub fn check(expr: &Expr, scope: &Scope) -> Vec<ExprError> {
    let mut out = Vec::new();
    walk(expr.tree(), scope, &mut out);
    out
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn root_error(name: &str, scope: &Scope) -> String {
    let allowed = format!("available here: {}", list(scope.roots));
    if ROOTS.contains(&name) {
        return format!("context `{name}` cannot be used here; {allowed}");
    }
    let literal = match name {
        "True" | "TRUE" => Some("true"),
        "False" | "FALSE" => Some("false"),
        "None" | "Null" | "NULL" | "nil" | "undefined" => Some("null"),
        _ => None,
    };
    if let Some(lit) = literal {
        return format!("unknown context `{name}`; literals are lowercase: `{lit}`");
    }
    match suggest_spelling(name, scope.roots.iter().copied()) {
        Some(s) => format!("unknown context `{name}`, did you mean `{s}`? {allowed}"),
        None => format!("unknown context `{name}`; {allowed}"),
    }
}

fn parameter_error(name: &str, scope: &Scope) -> Option<String> {
    if scope.parameters.iter().any(|p| p == name) {
        return None;
    }
    if scope.parameters.is_empty() {
        return Some(format!(
            "undeclared parameter `{name}` (the workflow declares no parameters)"
        ));
    }
    Some(
        match suggest_spelling(name, scope.parameters.iter().map(String::as_str)) {
            Some(s) => format!("undeclared parameter `{name}`, did you mean `{s}`?"),
            None => {
                let declared: Vec<&str> = scope.parameters.iter().map(String::as_str).collect();
                format!(
                    "undeclared parameter `{name}`; declared: {}",
                    list(&declared)
                )
            }
        },
    )
}

fn is_parameters_root(n: &Node, scope: &Scope) -> bool {
    matches!(&n.kind, NodeKind::Root(r) if r == "parameters" && scope.roots.contains(&"parameters"))
}

fn walk(n: &Node, scope: &Scope, out: &mut Vec<ExprError>) {
    match &n.kind {
        NodeKind::Literal(_) => {}
        NodeKind::Root(name) => {
            if !scope.roots.contains(&name.as_str()) {
                out.push(ExprError::new(root_error(name, scope), n.offset, n.len));
            }
        }
        NodeKind::Member {
            object,
            name,
            name_offset,
        } => {
            if is_parameters_root(object, scope) {
                if let Some(m) = parameter_error(name, scope) {
                    out.push(ExprError::new(m, *name_offset, name.len()));
                }
            } else if matches!(&object.kind, NodeKind::Root(r) if r == "run" && scope.roots.contains(&"run"))
                && !RUN_KEYS.contains(&name.as_str())
            {
                let message = match suggest_spelling(name, RUN_KEYS.iter().copied()) {
                    Some(s) => format!("`run` has no key `{name}`, did you mean `{s}`?"),
                    None => format!("`run` has no key `{name}`; it has {}", list(RUN_KEYS)),
                };
                out.push(ExprError::new(message, *name_offset, name.len()));
            } else {
                walk(object, scope, out);
            }
        }
        NodeKind::Index { object, index } => {
            if is_parameters_root(object, scope)
                && let NodeKind::Literal(Value::String(name)) = &index.kind
            {
                if let Some(m) = parameter_error(name, scope) {
                    out.push(ExprError::new(m, index.offset, index.len));
                }
            } else {
                walk(object, scope, out);
                walk(index, scope, out);
            }
        }
        NodeKind::Array(items) => items.iter().for_each(|i| walk(i, scope, out)),
        NodeKind::Call {
            name,
            name_len,
            args,
        } => {
            match FUNCTIONS.iter().find(|(f, _, _)| f == name) {
                None => {
                    let message = match suggest_spelling(name, FUNCTIONS.iter().map(|(f, _, _)| *f))
                    {
                        Some(s) => format!("unknown function `{name}`, did you mean `{s}`?"),
                        None => format!("unknown function `{name}`"),
                    };
                    out.push(ExprError::new(message, n.offset, *name_len));
                }
                Some(&(_, min, max)) => {
                    if let Some(m) = arity_error(name, min, max, args.len()) {
                        out.push(ExprError::new(m, n.offset, n.len));
                    } else {
                        check_literal_args(name, args, out);
                    }
                }
            }
            args.iter().for_each(|a| walk(a, scope, out));
        }
        NodeKind::Unary { operand, .. } => walk(operand, scope, out),
        NodeKind::Binary { left, right, .. }
        | NodeKind::And(left, right)
        | NodeKind::Or(left, right) => {
            walk(left, scope, out);
            walk(right, scope, out);
        }
        NodeKind::Conditional {
            then,
            cond,
            otherwise,
        } => {
            walk(then, scope, out);
            walk(cond, scope, out);
            walk(otherwise, scope, out);
        }
    }
}

/// Catches literal arguments that can only fail at run time.
fn check_literal_args(name: &str, args: &[Node], out: &mut Vec<ExprError>) {
    let literal = |i: usize| match args.get(i).map(|a| &a.kind) {
        Some(NodeKind::Literal(Value::String(s))) => Some(s.as_str()),
        _ => None,
    };
    let problem = match name {
        "regex_match" => literal(1).and_then(|p| compile_regex(p).err().map(|m| (1, m))),
        "format" => literal(0).and_then(|f| {
            format_with(f, args.len() - 1, |_, _| {})
                .err()
                .map(|m| (0, m))
        }),
        _ => None,
    };
    if let Some((i, message)) = problem
        && let Some(arg) = args.get(i)
    {
        out.push(ExprError::new(
            format!("`{name}`: {message}"),
            arg.offset,
            arg.len,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse;

    const STEP_ROOTS: &[&str] = &["parameters", "steps", "context", "env", "secrets", "run"];

    fn errors_with(src: &str, params: &[&str], roots: &[&str]) -> Vec<(String, String)> {
        let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
        let scope = Scope {
            parameters: &params,
            roots,
        };
        let expr = parse(src).unwrap_or_else(|e| panic!("parse {src}: {e}"));
        check(&expr, &scope)
            .into_iter()
            .map(|e| (e.message, src[e.offset..e.offset + e.len].to_string()))
            .collect()
    }

    fn errors(src: &str) -> Vec<(String, String)> {
        errors_with(src, &["version", "environment", "run_tests"], STEP_ROOTS)
    }

    fn one(src: &str) -> (String, String) {
        let mut all = errors(src);
        assert_eq!(all.len(), 1, "{src}: {all:?}");
        all.remove(0)
    }

    #[test]
    fn valid_expressions_pass() {
        for src in [
            "parameters.version",
            "parameters['environment'] == 'prod' and parameters.run_tests",
            "steps.build.output.artifact",
            "len(parameters.version) > 0 if success() else failure()",
            "format('{0}/{1}', env.HOME, secrets.token)",
            "join(['a'], '-') + str(run.attempt)",
            "regex_match(parameters.version, '^v?\\\\d+')",
            "parameters[env.NAME]",
            "context.x[0].y",
        ] {
            assert_eq!(errors(src), vec![], "{src}");
        }
    }

    /// Guards the `run` context's keys: `run.workspace` is known, a misspelt key is an error
    /// with a suggestion.
    #[test]
    fn run_keys() {
        assert_eq!(errors("run.workspace + run.id + run.trigger"), vec![]);
        assert_eq!(
            one("run.workspce"),
            (
                "`run` has no key `workspce`, did you mean `workspace`?".into(),
                "workspce".into()
            )
        );
    }

    #[test]
    fn unknown_roots() {
        assert_eq!(
            one("paramters.version"),
            (
                "unknown context `paramters`, did you mean `parameters`? available here: \
                 `parameters`, `steps`, `context`, `env`, `secrets`, `run`"
                    .into(),
                "paramters".into()
            )
        );
        assert_eq!(
            one("1 + foo"),
            (
                "unknown context `foo`; available here: `parameters`, `steps`, `context`, \
                 `env`, `secrets`, `run`"
                    .into(),
                "foo".into()
            )
        );
        assert_eq!(
            errors_with("steps.build.output.x", &[], &["parameters", "env"]),
            vec![(
                "context `steps` cannot be used here; available here: `parameters`, `env`".into(),
                "steps".into()
            )]
        );
        assert_eq!(
            errors_with("parameters.x", &["x"], &[]),
            vec![(
                "context `parameters` cannot be used here; available here: none".into(),
                "parameters".into()
            )]
        );
        assert_eq!(
            one("True"),
            (
                "unknown context `True`; literals are lowercase: `true`".into(),
                "True".into()
            )
        );
        assert_eq!(
            one("env.x == None").0,
            "unknown context `None`; literals are lowercase: `null`"
        );
    }

    #[test]
    fn undeclared_parameters() {
        assert_eq!(
            one("parameters.verison"),
            (
                "undeclared parameter `verison`, did you mean `version`?".into(),
                "verison".into()
            )
        );
        assert_eq!(
            one("parameters['enviroment']"),
            (
                "undeclared parameter `enviroment`, did you mean `environment`?".into(),
                "'enviroment'".into()
            )
        );
        assert_eq!(
            one("parameters.zzz"),
            (
                "undeclared parameter `zzz`; declared: `version`, `environment`, `run_tests`"
                    .into(),
                "zzz".into()
            )
        );
        assert_eq!(
            errors_with("parameters.x", &[], &["parameters"]),
            vec![(
                "undeclared parameter `x` (the workflow declares no parameters)".into(),
                "x".into()
            )]
        );
        // The dynamic index is checked, the bare root is fine.
        assert_eq!(one("parameters[parameters.nope]").1, "nope");
        assert_eq!(errors("parameters"), vec![]);
    }

    #[test]
    fn functions_and_arity() {
        assert_eq!(
            one("lenght(parameters.version)"),
            (
                "unknown function `lenght`, did you mean `len`?".into(),
                "lenght".into()
            )
        );
        assert_eq!(one("frobnicate()").0, "unknown function `frobnicate`");
        // GitHub Actions' spellings point at ours.
        assert_eq!(
            one("toJSON(1)").0,
            "unknown function `toJSON`, did you mean `to_json`?"
        );
        assert_eq!(
            one("startsWith('ab', 'a')").0,
            "unknown function `startsWith`, did you mean `startswith`?"
        );
        assert_eq!(
            one("hashFiles('x')").0,
            "unknown function `hashFiles`, did you mean `hash_files`?"
        );
        assert_eq!(
            one("len(parameters.version, 2)"),
            (
                "`len` takes 1 argument, got 2".into(),
                "len(parameters.version, 2)".into()
            )
        );
        assert_eq!(
            one("contains('a')").0,
            "`contains` takes 2 arguments, got 1"
        );
        assert_eq!(one("now(1)").0, "`now` takes no arguments, got 1");
        assert_eq!(one("join()").0, "`join` takes 1 or 2 arguments, got 0");
        assert_eq!(
            one("format()").0,
            "`format` takes at least 1 argument, got 0"
        );
        assert_eq!(
            one("hash_files()").0,
            "`hash_files` takes at least 1 argument, got 0"
        );
        assert_eq!(
            arity_error("f", 1, Some(3), 4).as_deref(),
            Some("`f` takes 1 to 3 arguments, got 4")
        );
        assert_eq!(
            arity_error("f", 2, None, 1).as_deref(),
            Some("`f` takes at least 2 arguments, got 1")
        );
        assert_eq!(arity_error("f", 2, None, 9), None);
    }

    #[test]
    fn literal_arguments() {
        let (message, at) = one("regex_match(parameters.version, '(')");
        assert!(
            message.starts_with("`regex_match`: invalid regular expression"),
            "{message}"
        );
        assert_eq!(at, "'('");
        assert_eq!(
            one("format('{0} {1}', 'a')"),
            (
                "`format`: the format string uses `{1}` but only 1 value is given".into(),
                "'{0} {1}'".into()
            )
        );
        assert_eq!(errors("format('{0} {1}', 'a', 'b')"), vec![]);
    }

    #[test]
    fn every_problem_is_reported() {
        let all = errors("foo.x and parameters.nope and lenght(1) and len() and bar");
        let at: Vec<&str> = all.iter().map(|(_, at)| at.as_str()).collect();
        assert_eq!(at, vec!["foo", "nope", "lenght", "len()", "bar"]);
        // Problems inside arguments of a bad call are still found.
        let all = errors("len(foo, parameters.nope)");
        assert_eq!(all.len(), 3, "{all:?}");
    }
}
