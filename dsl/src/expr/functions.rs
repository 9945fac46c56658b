//! The built-in functions. Arity is checked by the caller (statically by
//! [`check`](super::check) and again at evaluation); these bodies check argument types.
//!
//! Notes on semantics:
//! - `regex_match(s, pattern)` matches at the start of `s`, like Python's `re.match`; add `$`
//!   to match the whole string. Compiled patterns are cached per thread, and pattern size is
//!   limited so a hostile pattern is an error, not a memory blow-up.
//! - String-like arguments (`startswith`, `contains` on a string, ...) accept strings,
//!   numbers and booleans (as their text) and `null` (as `""`).
//! - `hash_files(globs...)` follows GitHub Actions' `hashFiles`: files under the workdir
//!   matching any glob (`*` stays within a directory, `**` crosses them, a leading `!`
//!   excludes), `.git` skipped, in sorted path order; the result is the SHA-256 over each
//!   file's SHA-256, in hex, or `""` when nothing matches.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::context::{EvalContext, JobStatus};
use super::shared::{a_kind, compile_regex, format_with, to_text, truthy, values_equal};

/// A function failure; `arg` is the index of the argument to point at, if one is to blame.
pub(crate) struct FnError {
    pub message: String,
    pub arg: Option<usize>,
}

fn arg_err(arg: usize, message: impl Into<String>) -> FnError {
    FnError {
        message: message.into(),
        arg: Some(arg),
    }
}

fn call_err(message: impl Into<String>) -> FnError {
    FnError {
        message: message.into(),
        arg: None,
    }
}

/// Most files `hash_files` walks before giving up.
const MAX_WALK_ENTRIES: usize = 200_000;

/// Calls built-in `name` with evaluated `args` (the arity is already checked).
pub(crate) fn call(
    name: &str,
    args: &[Cow<'_, Value>],
    ctx: &dyn EvalContext,
) -> Result<Value, FnError> {
    let arg = |i: usize| args.get(i).map_or(&Value::Null, |v| v.as_ref());
    match name {
        "len" => len(arg(0)),
        "str" => Ok(Value::String(to_text(arg(0)))),
        "int" => int(arg(0)),
        "bool" => Ok(Value::Bool(to_bool(arg(0)))),
        "contains" => contains(arg(0), arg(1)),
        "startswith" => {
            let (s, p) = (text_arg(arg(0), 0)?, text_arg(arg(1), 1)?);
            Ok(Value::Bool(s.starts_with(p.as_ref())))
        }
        "endswith" => {
            let (s, p) = (text_arg(arg(0), 0)?, text_arg(arg(1), 1)?);
            Ok(Value::Bool(s.ends_with(p.as_ref())))
        }
        "regex_match" => regex_match(arg(0), arg(1)),
        "now" => Ok(Value::String(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )),
        "env" => env(arg(0), ctx),
        "file_exists" => {
            let path = resolve_path(arg(0), ctx)?;
            Ok(Value::Bool(path.exists()))
        }
        "success" => Ok(Value::Bool(ctx.job_status() == JobStatus::Success)),
        "failure" => Ok(Value::Bool(ctx.job_status() == JobStatus::Failure)),
        "cancelled" => Ok(Value::Bool(ctx.job_status() == JobStatus::Cancelled)),
        "always" => Ok(Value::Bool(true)),
        "format" => format(arg(0), &args[1.min(args.len())..]),
        "join" => join(arg(0), args.get(1).map(|v| v.as_ref())),
        "to_json" => serde_json::to_string(arg(0))
            .map(Value::String)
            .map_err(|e| call_err(e.to_string())),
        "from_json" => match arg(0) {
            Value::String(s) => {
                serde_json::from_str(s).map_err(|e| arg_err(0, format!("invalid json: {e}")))
            }
            other => Err(arg_err(
                0,
                format!("expected a string, got {}", a_kind(other)),
            )),
        },
        "hash_files" => hash_files(args, ctx),
        other => Err(call_err(format!("unknown function `{other}`"))),
    }
}

/// A string-like argument: strings, numbers and booleans as text, `null` as `""`.
fn text_arg(v: &Value, i: usize) -> Result<Cow<'_, str>, FnError> {
    match v {
        Value::String(s) => Ok(Cow::Borrowed(s)),
        Value::Array(_) | Value::Object(_) => {
            Err(arg_err(i, format!("expected a string, got {}", a_kind(v))))
        }
        other => Ok(Cow::Owned(to_text(other))),
    }
}

fn len(v: &Value) -> Result<Value, FnError> {
    let n = match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        other => {
            return Err(arg_err(
                0,
                format!("expected a string, array or object, got {}", a_kind(other)),
            ));
        }
    };
    Ok(Value::from(n))
}

fn float_to_int(f: f64) -> Option<i64> {
    let t = f.trunc();
    // i64::MAX is not exactly representable; stay strictly inside the range.
    (-9.223_372_036_854_775e18..9.223_372_036_854_775e18)
        .contains(&t)
        .then_some(t as i64)
}

fn int(v: &Value) -> Result<Value, FnError> {
    let bad = || arg_err(0, format!("cannot convert {} to an integer", describe(v)));
    match v {
        Value::Bool(b) => Ok(Value::from(i64::from(*b))),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                Ok(Value::Number(n.clone()))
            } else {
                n.as_f64()
                    .and_then(float_to_int)
                    .map(Value::from)
                    .ok_or_else(bad)
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Ok(Value::from(i))
            } else if let Ok(u) = t.parse::<u64>() {
                Ok(Value::from(u))
            } else {
                t.parse::<f64>()
                    .ok()
                    .and_then(float_to_int)
                    .map(Value::from)
                    .ok_or_else(bad)
            }
        }
        _ => Err(bad()),
    }
}

/// `bool(x)`: truthiness, except that the strings `false`, `0`, `no` and `off` (any case,
/// surrounding spaces ignored) are false, so `bool(env('DEPLOY'))` does what it says.
fn to_bool(v: &Value) -> bool {
    match v {
        Value::String(s) => {
            let t = s.trim();
            !(t.is_empty()
                || ["false", "0", "no", "off"]
                    .iter()
                    .any(|f| t.eq_ignore_ascii_case(f)))
        }
        other => truthy(other),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() <= 40 => format!("`{s}`"),
        other => a_kind(other).to_string(),
    }
}

fn contains(hay: &Value, needle: &Value) -> Result<Value, FnError> {
    let found = match hay {
        Value::Null => false,
        Value::Array(items) => items.iter().any(|x| values_equal(x, needle)),
        Value::Object(map) => match needle {
            Value::String(k) => map.contains_key(k),
            _ => false,
        },
        other => {
            let h = text_arg(other, 0)?;
            let n = text_arg(needle, 1)?;
            h.contains(n.as_ref())
        }
    };
    Ok(Value::Bool(found))
}

fn regex_match(s: &Value, pattern: &Value) -> Result<Value, FnError> {
    let s = text_arg(s, 0)?;
    let Value::String(p) = pattern else {
        return Err(arg_err(
            1,
            format!("the pattern must be a string, got {}", a_kind(pattern)),
        ));
    };
    let re = compile_regex(p).map_err(|m| arg_err(1, m))?;
    // Leftmost-first: if any match starts at 0, the first match found starts at 0.
    Ok(Value::Bool(re.find(&s).is_some_and(|m| m.start() == 0)))
}

fn env(name: &Value, ctx: &dyn EvalContext) -> Result<Value, FnError> {
    let Value::String(name) = name else {
        return Err(arg_err(
            0,
            format!("expected a variable name, got {}", a_kind(name)),
        ));
    };
    if let Some(v) = ctx.root("env").and_then(|e| e.get(name.as_str())) {
        return Ok(v.clone());
    }
    if name.is_empty() || name.contains(['=', '\0']) {
        return Ok(Value::Null);
    }
    Ok(ctx.base_env(name).map_or(Value::Null, Value::String))
}

fn resolve_path(v: &Value, ctx: &dyn EvalContext) -> Result<PathBuf, FnError> {
    let Value::String(p) = v else {
        return Err(arg_err(0, format!("expected a path, got {}", a_kind(v))));
    };
    if p.contains('\0') {
        return Err(arg_err(0, "the path contains a NUL byte"));
    }
    let path = Path::new(p);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    match ctx.workdir() {
        Some(dir) => Ok(dir.join(path)),
        None => Err(arg_err(
            0,
            format!("relative path `{p}` needs a working directory, and there is none"),
        )),
    }
}

fn format(fmt: &Value, args: &[Cow<'_, Value>]) -> Result<Value, FnError> {
    let Value::String(fmt) = fmt else {
        return Err(arg_err(
            0,
            format!("the format must be a string, got {}", a_kind(fmt)),
        ));
    };
    let texts: Vec<String> = args.iter().map(|a| to_text(a)).collect();
    format_with(fmt, args.len(), |i, out| out.push_str(&texts[i]))
        .map(Value::String)
        .map_err(|m| arg_err(0, m))
}

fn join(items: &Value, sep: Option<&Value>) -> Result<Value, FnError> {
    let sep = match sep {
        None => Cow::Borrowed(","),
        Some(v) => text_arg(v, 1)?,
    };
    match items {
        Value::Null => Ok(Value::String(String::new())),
        Value::Array(a) => Ok(Value::String(
            a.iter().map(to_text).collect::<Vec<_>>().join(&sep),
        )),
        Value::Object(_) => Err(arg_err(
            0,
            format!("expected an array, got {}", a_kind(items)),
        )),
        scalar => Ok(Value::String(to_text(scalar))),
    }
}

fn hash_files(args: &[Cow<'_, Value>], ctx: &dyn EvalContext) -> Result<Value, FnError> {
    let mut include = globset::GlobSetBuilder::new();
    let mut exclude = globset::GlobSetBuilder::new();
    for (i, arg) in args.iter().enumerate() {
        let Value::String(pattern) = arg.as_ref() else {
            return Err(arg_err(
                i,
                format!("expected a glob pattern, got {}", a_kind(arg)),
            ));
        };
        let (set, pat) = match pattern.strip_prefix('!') {
            Some(p) => (&mut exclude, p),
            None => (&mut include, pattern.as_str()),
        };
        let pat = pat.strip_prefix("./").unwrap_or(pat);
        let glob = globset::GlobBuilder::new(pat)
            .literal_separator(true)
            .build()
            .map_err(|e| arg_err(i, format!("invalid glob `{pattern}`: {}", e.kind())))?;
        set.add(glob);
    }
    let build = |b: globset::GlobSetBuilder| b.build().map_err(|e| call_err(e.to_string()));
    let (include, exclude) = (build(include)?, build(exclude)?);
    let Some(root) = ctx.workdir() else {
        return Err(call_err("needs a working directory, and there is none"));
    };
    let mut files = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| call_err(format!("cannot read `{}`: {e}", dir.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| call_err(format!("cannot read `{}`: {e}", dir.display())))?;
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return Err(call_err(format!(
                    "the working directory has more than {MAX_WALK_ENTRIES} entries"
                )));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let path_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                if name != ".git" {
                    stack.push((entry.path(), path_rel));
                }
            } else if (file_type.is_file() || entry.path().is_file())
                && include.is_match(&path_rel)
                && !exclude.is_match(&path_rel)
            {
                files.push((path_rel, entry.path()));
            }
        }
    }
    if files.is_empty() {
        return Ok(Value::String(String::new()));
    }
    files.sort();
    let mut outer = Sha256::new();
    for (rel, path) in &files {
        let mut inner = Sha256::new();
        let mut f =
            std::fs::File::open(path).map_err(|e| call_err(format!("cannot read `{rel}`: {e}")))?;
        std::io::copy(&mut f, &mut inner)
            .map_err(|e| call_err(format!("cannot read `{rel}`: {e}")))?;
        outer.update(inner.finalize());
    }
    let digest = outer.finalize();
    Ok(Value::String(
        digest.iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use crate::expr::{ExprError, JobStatus, MapContext, parse};

    fn ctx() -> MapContext {
        MapContext::from_value(json!({
            "parameters": {"items": ["a", "b"], "n": 3, "s": "Hello", "obj": {"k": 1}},
            "env": {"FROM_ROOT": "root-value", "BOTH": "from-root"}
        }))
        .with_base_env(vec![
            ("BASE_ONLY".into(), "base-value".into()),
            ("BOTH".into(), "from-base".into()),
        ])
    }

    fn ev_in(src: &str, ctx: &MapContext) -> Result<serde_json::Value, ExprError> {
        parse(src)
            .unwrap_or_else(|e| panic!("parse {src}: {e}"))
            .eval(ctx)
    }

    fn ev(src: &str) -> serde_json::Value {
        ev_in(src, &ctx()).unwrap_or_else(|e| panic!("eval {src}: {e}"))
    }

    fn ev_err(src: &str) -> (String, String) {
        let e = ev_in(src, &ctx()).expect_err("should fail");
        (e.message, src[e.offset..e.offset + e.len].to_string())
    }

    #[test]
    fn len_str_int_bool() {
        assert_eq!(ev("len('héllo')"), json!(5));
        assert_eq!(ev("len(parameters.items)"), json!(2));
        assert_eq!(ev("len(parameters.obj)"), json!(1));
        assert_eq!(
            ev_err("len(parameters.n)"),
            (
                "`len`: expected a string, array or object, got a number".into(),
                "parameters.n".into()
            )
        );
        assert_eq!(
            ev_err("len(null)").0,
            "`len`: expected a string, array or object, got null"
        );
        assert_eq!(ev("str(null)"), json!(""));
        assert_eq!(ev("str(1.5)"), json!("1.5"));
        assert_eq!(ev("str(parameters.items)"), json!(r#"["a","b"]"#));
        assert_eq!(ev("int('42')"), json!(42));
        assert_eq!(ev("int(' -7 ')"), json!(-7));
        assert_eq!(ev("int('3.9')"), json!(3));
        assert_eq!(ev("int(-3.9)"), json!(-3));
        assert_eq!(ev("int(true)"), json!(1));
        assert_eq!(ev("int('18446744073709551615')"), json!(u64::MAX));
        assert_eq!(
            ev_err("int('abc')").0,
            "`int`: cannot convert `abc` to an integer"
        );
        assert_eq!(
            ev_err("int(null)").0,
            "`int`: cannot convert null to an integer"
        );
        assert_eq!(
            ev_err("int(1e300)").0,
            "`int`: cannot convert a number to an integer"
        );
        assert_eq!(
            ev_err("int('nan')").0,
            "`int`: cannot convert `nan` to an integer"
        );
        assert_eq!(ev("bool('false')"), json!(false));
        assert_eq!(ev("bool(' OFF ')"), json!(false));
        assert_eq!(ev("bool('0')"), json!(false));
        assert_eq!(ev("bool('yes')"), json!(true));
        assert_eq!(ev("bool(2)"), json!(true));
        assert_eq!(ev("bool([])"), json!(false));
    }

    #[test]
    fn string_functions() {
        assert_eq!(ev("contains(parameters.s, 'ell')"), json!(true));
        assert_eq!(ev("contains(parameters.items, 'b')"), json!(true));
        assert_eq!(ev("contains(parameters.items, 'z')"), json!(false));
        assert_eq!(ev("contains(parameters.obj, 'k')"), json!(true));
        assert_eq!(ev("contains(null, 'k')"), json!(false));
        assert_eq!(ev("contains(12345, 34)"), json!(true));
        assert_eq!(
            ev_err("contains('abc', parameters.items)"),
            (
                "`contains`: expected a string, got an array".into(),
                "parameters.items".into()
            )
        );
        assert_eq!(ev("startswith(parameters.s, 'He')"), json!(true));
        assert_eq!(ev("startswith(null, '')"), json!(true));
        assert_eq!(ev("endswith(parameters.s, 'lo')"), json!(true));
        assert_eq!(ev("endswith(parameters.s, 'He')"), json!(false));
        assert_eq!(
            ev_err("startswith(parameters.obj, 'x')").0,
            "`startswith`: expected a string, got an object"
        );
    }

    #[test]
    fn regex_match_is_anchored_at_the_start() {
        assert_eq!(ev(r"regex_match('v1.2.3', 'v\\d+')"), json!(true));
        assert_eq!(ev(r"regex_match('release/v1', 'v\\d')"), json!(false));
        assert_eq!(ev(r"regex_match('release/v1', '.*v\\d$')"), json!(true));
        assert_eq!(ev("regex_match('ab', 'a|ab')"), json!(true));
        assert_eq!(ev("regex_match('xab', 'a|xa')"), json!(true));
        assert_eq!(ev("regex_match('ABC', '(?i)abc')"), json!(true));
        assert_eq!(ev("regex_match(123, '12')"), json!(true));
        let (message, at) = ev_err("regex_match('a', '(')");
        assert!(
            message.starts_with("`regex_match`: invalid regular expression"),
            "{message}"
        );
        assert_eq!(at, "'('");
        let (message, _) = ev_err("regex_match('a', 'a{1000}{1000}')");
        assert!(
            message.contains("too large") || message.contains("invalid"),
            "{message}"
        );
        assert_eq!(
            ev_err("regex_match('a', 1)").0,
            "`regex_match`: the pattern must be a string, got a number"
        );
        // Cached patterns give the same answers.
        for _ in 0..100 {
            assert_eq!(ev("regex_match('abc', 'a.c')"), json!(true));
        }
    }

    #[test]
    fn now_is_rfc3339_utc() {
        let v = ev("now()");
        let s = v.as_str().expect("a string");
        assert!(chrono::DateTime::parse_from_rfc3339(s).is_ok(), "{s}");
        assert!(s.ends_with('Z'), "{s}");
    }

    /// Guards the order `env('NAME')` reads in: the `env` root, then the context's base
    /// environment; never this process's own environment.
    #[test]
    fn env_prefers_the_env_root_then_the_base_environment() {
        assert_eq!(ev("env('FROM_ROOT')"), json!("root-value"));
        assert_eq!(ev("env('BOTH')"), json!("from-root"));
        assert_eq!(ev("env('BASE_ONLY')"), json!("base-value"));
        // PATH is set in every test process, but not in this context's base environment.
        assert!(std::env::var("PATH").is_ok());
        assert_eq!(ev("env('PATH')"), json!(null));
        assert_eq!(ev("env('AGENT_EXPR_TEST_SURELY_UNSET_VAR')"), json!(null));
        assert_eq!(ev("env('')"), json!(null));
        assert_eq!(ev("env('A=B')"), json!(null));
        assert_eq!(
            ev_err("env(1)").0,
            "`env`: expected a variable name, got a number"
        );
    }

    #[test]
    fn job_status_functions() {
        let cases = [
            (JobStatus::Success, [true, false, false]),
            (JobStatus::Failure, [false, true, false]),
            (JobStatus::Cancelled, [false, false, true]),
        ];
        for (status, expected) in cases {
            let mut c = ctx();
            c.status = status;
            let got: Vec<serde_json::Value> = ["success()", "failure()", "cancelled()"]
                .iter()
                .map(|f| ev_in(f, &c).expect("evaluates"))
                .collect();
            assert_eq!(
                got,
                expected.map(serde_json::Value::Bool).to_vec(),
                "{status:?}"
            );
            assert_eq!(ev_in("always()", &c).expect("evaluates"), json!(true));
        }
    }

    #[test]
    fn format_and_join() {
        assert_eq!(ev("format('{0}-{1}-{0}', 'a', 2)"), json!("a-2-a"));
        assert_eq!(ev("format('{{literal}} {0}', null)"), json!("{literal} "));
        assert_eq!(ev("format('{0}', parameters.items)"), json!(r#"["a","b"]"#));
        assert_eq!(ev("format('héllo {0}', 'wörld')"), json!("héllo wörld"));
        assert_eq!(ev("format('}}')"), json!("}"));
        assert_eq!(
            ev_err("format('{1}', 'a')").0,
            "`format`: the format string uses `{1}` but only 1 value is given"
        );
        assert_eq!(
            ev_err("format('{x}')").0,
            "`format`: invalid placeholder `{x}` in the format string, expected `{0}`, `{1}`..."
        );
        assert!(
            ev_err("format('{0')")
                .0
                .starts_with("`format`: unclosed `{`")
        );
        assert!(
            ev_err("format('a}b')")
                .0
                .starts_with("`format`: unmatched `}`")
        );
        assert_eq!(
            ev_err("format(1)").0,
            "`format`: the format must be a string, got a number"
        );
        assert_eq!(ev("join(parameters.items)"), json!("a,b"));
        assert_eq!(ev("join(parameters.items, ' | ')"), json!("a | b"));
        assert_eq!(ev("join([1, null, true], '')"), json!("1true"));
        assert_eq!(ev("join('solo')"), json!("solo"));
        assert_eq!(ev("join(null)"), json!(""));
        assert_eq!(
            ev_err("join(parameters.obj)").0,
            "`join`: expected an array, got an object"
        );
    }

    #[test]
    fn json_round_trip() {
        assert_eq!(ev("to_json(parameters.obj)"), json!(r#"{"k":1}"#));
        assert_eq!(ev("to_json('x')"), json!(r#""x""#));
        assert_eq!(ev("from_json('[1, 2]')[1]"), json!(2));
        assert_eq!(
            ev("from_json(to_json(parameters.items)) == parameters.items"),
            json!(true)
        );
        let (message, at) = ev_err("from_json('{oops')");
        assert!(
            message.starts_with("`from_json`: invalid json: "),
            "{message}"
        );
        assert_eq!(at, "'{oops'");
        assert_eq!(
            ev_err("from_json(1)").0,
            "`from_json`: expected a string, got a number"
        );
        let deep = format!("from_json('{}')", "[".repeat(1000));
        assert!(ev_err(&deep).0.starts_with("`from_json`: invalid json"));
    }

    #[test]
    fn unknown_function_and_arity_at_eval_time() {
        assert_eq!(
            ev_err("lenght(x)"),
            (
                "unknown function `lenght`, did you mean `len`?".into(),
                "lenght".into()
            )
        );
        assert_eq!(
            ev_err("len(1, 2)"),
            ("`len` takes 1 argument, got 2".into(), "len(1, 2)".into())
        );
        assert_eq!(ev_err("now(1)").0, "`now` takes no arguments, got 1");
    }

    #[test]
    fn files_relative_to_the_workdir() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.txt"), "alpha").expect("write");
        std::fs::create_dir_all(dir.path().join("sub/deeper")).expect("mkdir");
        std::fs::write(dir.path().join("sub/b.txt"), "beta").expect("write");
        std::fs::write(dir.path().join("sub/deeper/c.lock"), "gamma").expect("write");
        std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
        std::fs::write(dir.path().join(".git/x.txt"), "ignored").expect("write");
        let mut c = ctx();
        c.workdir = Some(dir.path().to_path_buf());

        let ev_c = |src: &str| ev_in(src, &c).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(ev_c("file_exists('a.txt')"), json!(true));
        assert_eq!(ev_c("file_exists('sub/b.txt')"), json!(true));
        assert_eq!(ev_c("file_exists('nope.txt')"), json!(false));
        let abs = dir.path().join("a.txt").display().to_string();
        assert_eq!(ev_c(&format!("file_exists('{abs}')")), json!(true));

        let all = ev_c("hash_files('**/*.txt')");
        let h = |parts: &[&[u8]]| {
            use sha2::{Digest, Sha256};
            let mut outer = Sha256::new();
            for p in parts {
                outer.update(Sha256::digest(p));
            }
            outer
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        // Sorted path order: a.txt, sub/b.txt; `.git` is skipped.
        assert_eq!(all, json!(h(&[b"alpha", b"beta"])));
        assert_eq!(ev_c("hash_files('*.txt')"), json!(h(&[b"alpha"])));
        assert_eq!(ev_c("hash_files('./*.txt')"), json!(h(&[b"alpha"])));
        assert_eq!(
            ev_c("hash_files('**/*.lock', '*.txt')"),
            json!(h(&[b"alpha", b"gamma"]))
        );
        assert_eq!(ev_c("hash_files('**', '!sub/**')"), json!(h(&[b"alpha"])));
        assert_eq!(ev_c("hash_files('*.none')"), json!(""));
        assert!(
            ev_in("hash_files('[')", &c)
                .expect_err("bad glob")
                .message
                .starts_with("`hash_files`: invalid glob `[`")
        );
        assert_eq!(
            ev_in("hash_files(1)", &c)
                .expect_err("not a string")
                .message,
            "`hash_files`: expected a glob pattern, got a number"
        );

        // Without a workdir, relative paths fail cleanly.
        let none = MapContext::new(Map::new());
        let e = ev_in("file_exists('a.txt')", &none).expect_err("no workdir");
        assert_eq!(
            e.message,
            "`file_exists`: relative path `a.txt` needs a working directory, and there is none"
        );
        let e = ev_in("hash_files('*')", &none).expect_err("no workdir");
        assert_eq!(
            e.message,
            "`hash_files`: needs a working directory, and there is none"
        );
    }
}
