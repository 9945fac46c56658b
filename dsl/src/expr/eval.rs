//! Evaluation of a syntax tree against an [`EvalContext`], and the value semantics shared
//! with the built-in functions: truthiness, equality, ordering and text conversion.
//!
//! Semantics (GitHub Actions flavoured): a missing object key reads as `null`, and so does a
//! member of `null` (a skipped step's outputs are `null`, not an error); reading a member
//! of a number, string or boolean is an error naming the path. `and`/`or` return the
//! deciding operand (`x || 'default'`). `==` compares numbers numerically and is `false`
//! between different types; `<` and friends need two numbers or two strings.
use std::borrow::Cow;
use std::cmp::Ordering;

use crate::diagnostic::suggest_spelling;
use serde_json::{Number, Value};

use super::ast::{BinOp, Node, NodeKind, UnOp};
use super::context::EvalContext;
use super::functions::{self, FnError};
use super::shared::{
    ExprError, FUNCTIONS, ROOTS, a_kind, arity_error, num_cmp, truthy, values_equal,
};

/// Evaluates `node` (parsed from `src`) against `ctx`.
pub(crate) fn eval_root(node: &Node, src: &str, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
    let ev = Evaluator { src, ctx };
    Ok(ev.eval(node)?.into_owned())
}

struct Evaluator<'a> {
    src: &'a str,
    ctx: &'a dyn EvalContext,
}

fn as_index(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

/// Resolves a possibly negative index against a length.
fn resolve_index(i: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let j = if i < 0 { len + i } else { i };
    usize::try_from(j).ok().filter(|_| (0..len).contains(&j))
}

fn float_value(f: f64, op: &str) -> Result<Value, String> {
    if f.is_finite() {
        Ok(Value::from(f))
    } else {
        Err(format!("the result of `{op}` is out of range"))
    }
}

/// Applies an arithmetic operator to two numbers. Integers stay integers while exact.
fn arith(op: BinOp, a: &Number, b: &Number) -> Result<Value, String> {
    let sym = op.symbol();
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        let exact = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::Div | BinOp::Rem if y == 0 => return Err("division by zero".to_string()),
            BinOp::Div => x
                .checked_rem(y)
                .filter(|r| *r == 0)
                .and_then(|_| x.checked_div(y)),
            BinOp::Rem => x.checked_rem(y),
            _ => None,
        };
        if let Some(n) = exact {
            return Ok(Value::from(n));
        }
    }
    let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    let f = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div | BinOp::Rem if y == 0.0 => return Err("division by zero".to_string()),
        BinOp::Div => x / y,
        BinOp::Rem => x % y,
        _ => return Err(format!("`{sym}` is not an arithmetic operator")),
    };
    float_value(f, sym)
}

impl<'a> Evaluator<'a> {
    fn err(&self, message: String, n: &Node) -> ExprError {
        ExprError::new(message, n.offset, n.len.max(1))
    }

    /// The source text of a node for messages, shortened when long.
    fn show(&self, n: &Node) -> String {
        let text = n.text(self.src);
        if text.chars().count() > 60 {
            let short: String = text.chars().take(57).collect();
            format!("{short}...")
        } else {
            text.to_string()
        }
    }

    fn eval(&self, n: &'a Node) -> Result<Cow<'a, Value>, ExprError> {
        match &n.kind {
            NodeKind::Literal(v) => Ok(Cow::Borrowed(v)),
            NodeKind::Root(name) => {
                if !ROOTS.contains(&name.as_str()) {
                    let hint = suggest_spelling(name, ROOTS.iter().copied())
                        .map(|s| format!(", did you mean `{s}`?"))
                        .unwrap_or_default();
                    return Err(self.err(format!("unknown context `{name}`{hint}"), n));
                }
                match self.ctx.root(name) {
                    Some(v) => Ok(Cow::Borrowed(v)),
                    None => Err(self.err(format!("context `{name}` is not available here"), n)),
                }
            }
            NodeKind::Member { object, name, .. } => {
                let obj = self.eval(object)?;
                self.member(obj, name, object, n)
            }
            NodeKind::Index { object, index } => {
                let obj = self.eval(object)?;
                let idx = self.eval(index)?;
                self.index(obj, &idx, object, index)
            }
            NodeKind::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.eval(item)?.into_owned());
                }
                Ok(Cow::Owned(Value::Array(out)))
            }
            NodeKind::Call {
                name,
                name_len,
                args,
            } => self.call(name, *name_len, args, n).map(Cow::Owned),
            NodeKind::Unary { op, operand } => {
                let v = self.eval(operand)?;
                match op {
                    UnOp::Not => Ok(Cow::Owned(Value::Bool(!truthy(&v)))),
                    UnOp::Neg => match v.as_ref() {
                        Value::Number(num) => {
                            let out = if let Some(i) = num.as_i64().and_then(i64::checked_neg) {
                                Value::from(i)
                            } else if num.as_u64() == Some(1u64 << 63) {
                                Value::from(i64::MIN)
                            } else {
                                float_value(-num.as_f64().unwrap_or(0.0), "-")
                                    .map_err(|m| self.err(m, n))?
                            };
                            Ok(Cow::Owned(out))
                        }
                        other => Err(self.err(
                            format!(
                                "cannot negate `{}`, which is {}",
                                self.show(operand),
                                a_kind(other)
                            ),
                            n,
                        )),
                    },
                }
            }
            NodeKind::And(left, right) => {
                let l = self.eval(left)?;
                if truthy(&l) { self.eval(right) } else { Ok(l) }
            }
            NodeKind::Or(left, right) => {
                let l = self.eval(left)?;
                if truthy(&l) { Ok(l) } else { self.eval(right) }
            }
            NodeKind::Conditional {
                then,
                cond,
                otherwise,
            } => {
                if truthy(self.eval(cond)?.as_ref()) {
                    self.eval(then)
                } else {
                    self.eval(otherwise)
                }
            }
            NodeKind::Binary { op, left, right } => {
                let l = self.eval(left)?;
                let r = self.eval(right)?;
                self.binary(*op, &l, &r, n).map(Cow::Owned)
            }
        }
    }

    fn member(
        &self,
        obj: Cow<'a, Value>,
        name: &str,
        object: &Node,
        n: &Node,
    ) -> Result<Cow<'a, Value>, ExprError> {
        match obj {
            Cow::Borrowed(Value::Object(map)) => {
                Ok(map.get(name).map_or(Cow::Owned(Value::Null), Cow::Borrowed))
            }
            Cow::Owned(Value::Object(mut map)) => {
                Ok(Cow::Owned(map.remove(name).unwrap_or(Value::Null)))
            }
            Cow::Borrowed(Value::Null) | Cow::Owned(Value::Null) => Ok(Cow::Owned(Value::Null)),
            other => {
                let hint = if matches!(other.as_ref(), Value::Array(_)) {
                    format!("; use `{}[0]` to read an element", self.show(object))
                } else {
                    String::new()
                };
                Err(self.err(
                    format!(
                        "cannot read `{name}` of `{}`, which is {}{hint}",
                        self.show(object),
                        a_kind(&other)
                    ),
                    n,
                ))
            }
        }
    }

    fn index(
        &self,
        obj: Cow<'a, Value>,
        idx: &Value,
        object: &Node,
        index: &Node,
    ) -> Result<Cow<'a, Value>, ExprError> {
        let wrong_key = |what: &str| {
            self.err(
                format!(
                    "cannot index `{}`, which is {what}, with {}",
                    self.show(object),
                    a_kind(idx)
                ),
                index,
            )
        };
        match obj {
            Cow::Borrowed(Value::Null) | Cow::Owned(Value::Null) => Ok(Cow::Owned(Value::Null)),
            Cow::Borrowed(Value::Object(map)) => match idx {
                Value::String(k) => Ok(map.get(k).map_or(Cow::Owned(Value::Null), Cow::Borrowed)),
                _ => Err(wrong_key("an object")),
            },
            Cow::Owned(Value::Object(mut map)) => match idx {
                Value::String(k) => Ok(Cow::Owned(map.remove(k).unwrap_or(Value::Null))),
                _ => Err(wrong_key("an object")),
            },
            Cow::Borrowed(Value::Array(items)) => match as_index(idx) {
                Some(i) => Ok(resolve_index(i, items.len())
                    .map_or(Cow::Owned(Value::Null), |j| Cow::Borrowed(&items[j]))),
                None => Err(wrong_key("an array")),
            },
            Cow::Owned(Value::Array(mut items)) => match as_index(idx) {
                Some(i) => Ok(Cow::Owned(
                    resolve_index(i, items.len()).map_or(Value::Null, |j| items.swap_remove(j)),
                )),
                None => Err(wrong_key("an array")),
            },
            other => match (other.as_ref(), as_index(idx)) {
                (Value::String(s), Some(i)) => {
                    let count = s.chars().count();
                    Ok(Cow::Owned(resolve_index(i, count).map_or(
                        Value::Null,
                        |j| {
                            s.chars()
                                .nth(j)
                                .map_or(Value::Null, |c| Value::String(c.to_string()))
                        },
                    )))
                }
                (Value::String(_), None) => Err(wrong_key("a string")),
                (v, _) => Err(self.err(
                    format!(
                        "cannot index `{}`, which is {}",
                        self.show(object),
                        a_kind(v)
                    ),
                    object,
                )),
            },
        }
    }

    fn binary(&self, op: BinOp, l: &Value, r: &Value, n: &Node) -> Result<Value, ExprError> {
        let sym = op.symbol();
        let mismatch = || {
            self.err(
                format!("cannot apply `{sym}` to {} and {}", a_kind(l), a_kind(r)),
                n,
            )
        };
        match op {
            BinOp::Eq => Ok(Value::Bool(values_equal(l, r))),
            BinOp::Ne => Ok(Value::Bool(!values_equal(l, r))),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let ord = match (l, r) {
                    (Value::Number(a), Value::Number(b)) => num_cmp(a, b),
                    (Value::String(a), Value::String(b)) => a.cmp(b),
                    _ => {
                        return Err(self.err(
                            format!(
                                "cannot compare {} and {} with `{sym}`",
                                a_kind(l),
                                a_kind(r)
                            ),
                            n,
                        ));
                    }
                };
                let result = match op {
                    BinOp::Lt => ord == Ordering::Less,
                    BinOp::Le => ord != Ordering::Greater,
                    BinOp::Gt => ord == Ordering::Greater,
                    _ => ord != Ordering::Less,
                };
                Ok(Value::Bool(result))
            }
            BinOp::In | BinOp::NotIn => {
                let found = match (l, r) {
                    (_, Value::Null) => false,
                    (_, Value::Array(items)) => items.iter().any(|x| values_equal(l, x)),
                    (Value::String(needle), Value::String(hay)) => hay.contains(needle.as_str()),
                    (Value::String(key), Value::Object(map)) => map.contains_key(key),
                    _ => {
                        return Err(self.err(
                            format!(
                                "cannot look for {} in {} with `{sym}`",
                                a_kind(l),
                                a_kind(r)
                            ),
                            n,
                        ));
                    }
                };
                Ok(Value::Bool(found == (op == BinOp::In)))
            }
            BinOp::Add => match (l, r) {
                (Value::Number(a), Value::Number(b)) => arith(op, a, b).map_err(|m| self.err(m, n)),
                (Value::String(a), Value::String(b)) => Ok(Value::String(format!("{a}{b}"))),
                (Value::Array(a), Value::Array(b)) => {
                    Ok(Value::Array(a.iter().chain(b).cloned().collect()))
                }
                _ => Err(mismatch()),
            },
            BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => match (l, r) {
                (Value::Number(a), Value::Number(b)) => arith(op, a, b).map_err(|m| self.err(m, n)),
                _ => Err(mismatch()),
            },
        }
    }

    fn call(
        &self,
        name: &str,
        name_len: usize,
        args: &'a [Node],
        n: &Node,
    ) -> Result<Value, ExprError> {
        let Some(&(_, min, max)) = FUNCTIONS.iter().find(|(f, _, _)| *f == name) else {
            let hint = suggest_spelling(name, FUNCTIONS.iter().map(|(f, _, _)| *f))
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(ExprError::new(
                format!("unknown function `{name}`{hint}"),
                n.offset,
                name_len,
            ));
        };
        if let Some(message) = arity_error(name, min, max, args.len()) {
            return Err(self.err(message, n));
        }
        let mut values = Vec::with_capacity(args.len());
        for arg in args {
            values.push(self.eval(arg)?);
        }
        functions::call(name, &values, self.ctx).map_err(|FnError { message, arg }| {
            match arg.and_then(|i| args.get(i)) {
                Some(a) => self.err(format!("`{name}`: {message}"), a),
                None => self.err(format!("`{name}`: {message}"), n),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::expr::MapContext;
    use crate::expr::parse;
    use crate::expr::shared::to_text;
    use serde_json::Map;

    fn ctx() -> MapContext {
        MapContext::from_value(json!({
            "parameters": {"version": "1.2.3", "count": 3, "ratio": 0.5, "enabled": true,
                           "list": ["a", "b", "c"], "empty": "", "none": null},
            "steps": {
                "build": {"status": "succeeded", "output": {"artifact": "app.tar", "size": 10}},
                "skipped": {"status": "skipped", "output": null}
            },
            "context": {"nested": {"k": [1, {"deep": "yes"}]}},
            "env": {"HOME_DIR": "/home/x"},
            "secrets": {},
            "run": {"id": "r1", "attempt": 1, "trigger": "manual"},
            "repo": {"branch": "main"},
            "workflow": {"name": "w", "version": "1"}
        }))
    }

    fn ev(src: &str) -> Value {
        parse(src)
            .unwrap_or_else(|e| panic!("parse {src}: {e}"))
            .eval(&ctx())
            .unwrap_or_else(|e| panic!("eval {src}: {e}"))
    }

    fn ev_err(src: &str) -> (String, String) {
        let expr = parse(src).unwrap_or_else(|e| panic!("parse {src}: {e}"));
        let e = expr.eval(&ctx()).expect_err("should fail");
        let at = src.get(e.offset..e.offset + e.len).unwrap_or("<bad span>");
        (e.message, at.to_string())
    }

    #[test]
    fn context_access() {
        assert_eq!(ev("parameters.version"), json!("1.2.3"));
        assert_eq!(ev("steps.build.output.artifact"), json!("app.tar"));
        assert_eq!(ev("parameters['count']"), json!(3));
        assert_eq!(ev("parameters.list[1]"), json!("b"));
        assert_eq!(ev("parameters.list[-1]"), json!("c"));
        assert_eq!(ev("parameters.list[3]"), json!(null));
        assert_eq!(ev("context.nested.k[1].deep"), json!("yes"));
        assert_eq!(ev("context['nested']['k'][0]"), json!(1));
        assert_eq!(ev("steps[parameters.list[0] + 'x']"), json!(null));
        assert_eq!(ev("workflow"), json!({"name": "w", "version": "1"}));
        assert_eq!(ev("'héllo'[1]"), json!("é"));
        assert_eq!(ev("'abc'[5]"), json!(null));
    }

    #[test]
    fn missing_keys_and_null_members_are_null() {
        assert_eq!(ev("parameters.nope"), json!(null));
        assert_eq!(ev("steps.skipped.output.x"), json!(null));
        assert_eq!(ev("steps.nothing.output.x.y"), json!(null));
        assert_eq!(ev("steps.nothing.output['x'][0]"), json!(null));
        assert_eq!(ev("from_json('{\"a\": {\"b\": 2}}').a.b"), json!(2));
        assert_eq!(ev("[10, 20][1]"), json!(20));
    }

    #[test]
    fn member_of_scalar_is_an_error_naming_the_path() {
        assert_eq!(
            ev_err("steps.build.status.x"),
            (
                "cannot read `x` of `steps.build.status`, which is a string".into(),
                "steps.build.status.x".into()
            )
        );
        assert_eq!(
            ev_err("1 + parameters.count.value"),
            (
                "cannot read `value` of `parameters.count`, which is a number".into(),
                "parameters.count.value".into()
            )
        );
        assert_eq!(
            ev_err("parameters.list.first").0,
            "cannot read `first` of `parameters.list`, which is an array; use `parameters.list[0]` to read an element"
        );
        assert_eq!(
            ev_err("parameters.enabled[0]"),
            (
                "cannot index `parameters.enabled`, which is a boolean".into(),
                "parameters.enabled".into()
            )
        );
        assert_eq!(
            ev_err("parameters.list['a']"),
            (
                "cannot index `parameters.list`, which is an array, with a string".into(),
                "'a'".into()
            )
        );
        assert_eq!(
            ev_err("context[1]").0,
            "cannot index `context`, which is an object, with a number"
        );
    }

    #[test]
    fn unknown_and_unavailable_roots() {
        assert_eq!(
            ev_err("paramters.x"),
            (
                "unknown context `paramters`, did you mean `parameters`?".into(),
                "paramters".into()
            )
        );
        let empty = MapContext::new(Map::new());
        let e = parse("secrets.token")
            .expect("parses")
            .eval(&empty)
            .expect_err("fails");
        assert_eq!(e.message, "context `secrets` is not available here");
        assert_eq!((e.offset, e.len), (0, 7));
    }

    #[test]
    fn truthiness_and_logic() {
        for falsy in ["null", "false", "0", "0.0", "''", "[]", "from_json('{}')"] {
            assert_eq!(ev(&format!("not {falsy}")), json!(true), "{falsy}");
            assert_eq!(ev(&format!("bool({falsy})")), json!(false), "{falsy}");
        }
        for truthy in [
            "true",
            "1",
            "-0.5",
            "'x'",
            "'false'",
            "[0]",
            "from_json('{\"a\":1}')",
        ] {
            assert_eq!(ev(&format!("!{truthy}")), json!(false), "{truthy}");
        }
        assert_eq!(ev("parameters.empty || 'default'"), json!("default"));
        assert_eq!(ev("parameters.version or 'default'"), json!("1.2.3"));
        assert_eq!(ev("parameters.count and 'yes'"), json!("yes"));
        assert_eq!(ev("parameters.none && 'yes'"), json!(null));
        assert_eq!(ev("true and false"), json!(false));
        assert_eq!(ev("false || true"), json!(true));
        // Short-circuit: the right side is not evaluated.
        assert_eq!(ev("false and nope.x"), json!(false));
        assert_eq!(ev("true or nope.x"), json!(true));
        assert_eq!(ev("'a' if parameters.enabled else nope.x"), json!("a"));
        assert_eq!(ev("nope.x if false else 'b'"), json!("b"));
        assert_eq!(ev("1 if 0 else 2 if 1 else 3"), json!(2));
    }

    #[test]
    fn equality() {
        assert_eq!(ev("1 == 1.0"), json!(true));
        assert_eq!(ev("parameters.ratio == 0.5"), json!(true));
        assert_eq!(ev("'1' == 1"), json!(false));
        assert_eq!(ev("null == false"), json!(false));
        assert_eq!(ev("null == parameters.nope"), json!(true));
        assert_eq!(ev("[1, 'a'] == [1.0, 'a']"), json!(true));
        assert_eq!(
            ev("from_json('{\"a\":1,\"b\":2}') == from_json('{\"b\":2,\"a\":1.0}')"),
            json!(true)
        );
        assert_eq!(
            ev("from_json('{\"a\":1}') == from_json('{\"a\":1,\"b\":2}')"),
            json!(false)
        );
        assert_eq!(ev("'a' != 'b'"), json!(true));
        assert_eq!(
            ev("18446744073709551615 == 18446744073709551615"),
            json!(true)
        );
        assert_eq!(ev("-1 == 18446744073709551615"), json!(false));
    }

    #[test]
    fn ordering() {
        assert_eq!(ev("1 < 2"), json!(true));
        assert_eq!(ev("2 <= 2.0"), json!(true));
        assert_eq!(ev("3 > 2.5"), json!(true));
        assert_eq!(ev("1 >= 2"), json!(false));
        assert_eq!(ev("'abc' < 'abd'"), json!(true));
        assert_eq!(ev("'b' > 'abc'"), json!(true));
        assert_eq!(ev("-1 < 18446744073709551615"), json!(true));
        assert_eq!(
            ev_err("parameters.count < 'x'"),
            (
                "cannot compare a number and a string with `<`".into(),
                "parameters.count < 'x'".into()
            )
        );
        assert_eq!(
            ev_err("null >= 1").0,
            "cannot compare null and a number with `>=`"
        );
        assert_eq!(
            ev_err("true > false").0,
            "cannot compare a boolean and a boolean with `>`"
        );
    }

    #[test]
    fn membership() {
        assert_eq!(ev("'b' in parameters.list"), json!(true));
        assert_eq!(ev("'z' not in parameters.list"), json!(true));
        assert_eq!(ev("1.0 in [1, 2]"), json!(true));
        assert_eq!(ev("'ell' in 'hello'"), json!(true));
        assert_eq!(ev("'build' in steps"), json!(true));
        assert_eq!(ev("'x' in null"), json!(false));
        assert_eq!(
            ev_err("1 in 'abc'").0,
            "cannot look for a number in a string with `in`"
        );
        assert_eq!(
            ev_err("1 in 5").0,
            "cannot look for a number in a number with `in`"
        );
    }

    #[test]
    fn arithmetic() {
        assert_eq!(ev("1 + 2 * 3"), json!(7));
        assert_eq!(ev("7 - 10"), json!(-3));
        assert_eq!(ev("6 / 3"), json!(2));
        assert_eq!(ev("7 / 2"), json!(3.5));
        assert_eq!(ev("7 % 3"), json!(1));
        assert_eq!(ev("-7 % 3"), json!(-1));
        assert_eq!(ev("7.5 % 2"), json!(1.5));
        assert_eq!(ev("0.1 + 0.2 > 0.3"), json!(true));
        assert_eq!(ev("-parameters.count"), json!(-3));
        assert_eq!(
            ev("-(-9223372036854775807 - 1)"),
            json!(9.223372036854776e18)
        );
        assert_eq!(ev("-9223372036854775808"), json!(i64::MIN));
        assert_eq!(ev("9223372036854775807 + 1"), json!(9.223372036854776e18));
        assert_eq!(ev("'a' + 'b'"), json!("ab"));
        assert_eq!(ev("[1] + [2, 3]"), json!([1, 2, 3]));
        assert_eq!(ev_err("1 / 0"), ("division by zero".into(), "1 / 0".into()));
        assert_eq!(ev_err("1 % 0").0, "division by zero");
        assert_eq!(ev_err("1.5 / 0.0").0, "division by zero");
        assert_eq!(ev_err("1e308 * 10").0, "the result of `*` is out of range");
        assert_eq!(
            ev_err("'a' + 1").0,
            "cannot apply `+` to a string and a number"
        );
        assert_eq!(
            ev_err("null - 1").0,
            "cannot apply `-` to null and a number"
        );
        assert_eq!(
            ev_err("-parameters.version"),
            (
                "cannot negate `parameters.version`, which is a string".into(),
                "-parameters.version".into()
            )
        );
    }

    #[test]
    fn text_conversion() {
        assert_eq!(to_text(&json!(null)), "");
        assert_eq!(to_text(&json!("s")), "s");
        assert_eq!(to_text(&json!(1.5)), "1.5");
        assert_eq!(to_text(&json!(true)), "true");
        assert_eq!(to_text(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn long_paths_are_shortened_in_messages() {
        let long = format!("parameters.count.{}", "x".repeat(100));
        let (message, _) = ev_err(&long);
        assert!(message.starts_with("cannot read `xxxx"), "{message}");
        assert!(message.contains("of `parameters.count`"), "{message}");
        let long_obj = format!("parameters.{}.count.x", "y".repeat(100));
        let e = parse(&long_obj).expect("parses").eval(&ctx());
        assert_eq!(e.expect("null"), json!(null));
    }
}
