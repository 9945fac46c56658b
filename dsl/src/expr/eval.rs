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
use std::path::{Path, PathBuf};

use serde_json::{Map, Number, Value};

use super::ast::{BinOp, Node, NodeKind, UnOp};
use super::functions::{self, FnError};
use super::{ExprError, FUNCTIONS, ROOTS, suggest};

/// What an expression can read while it is evaluated.
pub trait EvalContext {
    /// The value of a context root: `parameters`, `steps`, `context`, `env`, `secrets`,
    /// `run`, `repo` or `workflow`. `None` means the root is not available here.
    fn root(&self, name: &str) -> Option<&Value>;
    /// The state of the job so far, for `success()`, `failure()` and `cancelled()`.
    fn job_status(&self) -> JobStatus;
    /// The directory `file_exists()` and `hash_files()` resolve relative paths against.
    /// `None` makes them fail on relative paths.
    fn workdir(&self) -> Option<&Path>;
}

/// The state of the job so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Nothing failed so far.
    Success,
    /// An earlier step failed.
    Failure,
    /// The run was cancelled.
    Cancelled,
}

/// A simple [`EvalContext`] over a JSON object whose keys are the roots.
#[derive(Debug, Clone)]
pub struct MapContext {
    /// Root name to value.
    pub values: Map<String, Value>,
    /// What `success()` and friends see.
    pub status: JobStatus,
    /// Base directory for `file_exists()` and `hash_files()`.
    pub workdir: Option<PathBuf>,
}

impl MapContext {
    /// A context over `values`, status [`JobStatus::Success`] and no workdir.
    pub fn new(values: Map<String, Value>) -> Self {
        MapContext {
            values,
            status: JobStatus::Success,
            workdir: None,
        }
    }

    /// A context over a JSON value; anything but an object gives an empty context.
    pub fn from_value(value: Value) -> Self {
        match value {
            Value::Object(map) => Self::new(map),
            _ => Self::new(Map::new()),
        }
    }

    /// Sets the job status.
    #[must_use]
    pub fn with_status(mut self, status: JobStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the working directory.
    #[must_use]
    pub fn with_workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Sets one root.
    pub fn insert(&mut self, root: &str, value: Value) {
        self.values.insert(root.to_string(), value);
    }
}

impl EvalContext for MapContext {
    fn root(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn job_status(&self) -> JobStatus {
        self.status
    }

    fn workdir(&self) -> Option<&Path> {
        self.workdir.as_deref()
    }
}

/// Evaluates `node` (parsed from `src`) against `ctx`.
pub(crate) fn eval_root(node: &Node, src: &str, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
    let ev = Evaluator { src, ctx };
    Ok(ev.eval(node)?.into_owned())
}

struct Evaluator<'a> {
    src: &'a str,
    ctx: &'a dyn EvalContext,
}

/// `a string`, `an array`... for messages.
pub(crate) fn a_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Python/GitHub Actions truthiness: `null`, `false`, `0`, `""`, `[]` and `{}` are false.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// How a value reads when interpolated into text: `null` is empty, strings as they are,
/// everything else as compact JSON.
pub(crate) fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Numeric ordering across integer and float representations.
pub(crate) fn num_cmp(a: &Number, b: &Number) -> Ordering {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x.cmp(&y);
    }
    // One side is a u64 above i64::MAX and the other a negative i64, or a float is involved.
    if a.is_i64() && b.is_u64() {
        return Ordering::Less;
    }
    if a.is_u64() && b.is_i64() {
        return Ordering::Greater;
    }
    let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
}

/// Deep equality; numbers compare numerically (`1 == 1.0`), different types are unequal.
pub(crate) fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
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
                    let hint = suggest(name, ROOTS.iter().copied())
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
            let hint = suggest(name, FUNCTIONS.iter().map(|(f, _, _)| *f))
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(ExprError::new(
                format!("unknown function `{name}`{hint}"),
                n.offset,
                name_len,
            ));
        };
        if let Some(message) = super::check::arity_error(name, min, max, args.len()) {
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
