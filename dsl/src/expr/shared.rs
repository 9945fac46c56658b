//! What the checker, the evaluator and the built-in functions share: the error type, the
//! language's tables and limits, value semantics (truthiness, equality, ordering, text),
//! arity messages, format strings and regular expressions. Depends on nothing else in
//! `expr`.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Number, Value};

/// An error with a byte range inside the expression or template text it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What went wrong, lowercase, names in backticks.
    pub message: String,
    /// Byte offset of the start of the offending part, relative to the text that was parsed.
    pub offset: usize,
    /// Length in bytes (at least 1 where possible).
    pub len: usize,
}

impl ExprError {
    /// An error covering `len` bytes from `offset`.
    pub fn new(message: impl Into<String>, offset: usize, len: usize) -> Self {
        ExprError {
            message: message.into(),
            offset,
            len,
        }
    }

    /// The same error with its offset moved by `by` bytes (to make an offset relative to an
    /// enclosing text, e.g. from an expression to the template that holds it).
    #[must_use]
    pub fn shifted(mut self, by: usize) -> Self {
        self.offset += by;
        self
    }
}

/// Every context root the language knows. Which ones are allowed in a given place is the
/// caller's business ([`Scope::roots`]).
pub const ROOTS: &[&str] = &[
    "parameters",
    "steps",
    "context",
    "env",
    "secrets",
    "run",
    "repo",
    "workflow",
    "matrix",
    "services",
];

/// The keys of the `run` context: the run id, the try (1 first), what started the run, the
/// workspace (every step's working directory), and in the daemon the event (`push`,
/// `pull_request`, ...), the ref and, for pull requests, the pull request (`number`, `base`,
/// `head`, `head_sha`, `fork`) and its flat `pr_number`, `pr_base`, `pr_head`.
pub(crate) const RUN_KEYS: &[&str] = &[
    "id",
    "attempt",
    "trigger",
    "workspace",
    "event",
    "ref",
    "pull_request",
    "pr_number",
    "pr_base",
    "pr_head",
];

/// The built-in functions: name, minimum arity, maximum arity (`None` = variadic).
pub(crate) const FUNCTIONS: &[(&str, usize, Option<usize>)] = &[
    ("len", 1, Some(1)),
    ("str", 1, Some(1)),
    ("int", 1, Some(1)),
    ("bool", 1, Some(1)),
    ("contains", 2, Some(2)),
    ("startswith", 2, Some(2)),
    ("endswith", 2, Some(2)),
    ("regex_match", 2, Some(2)),
    ("now", 0, Some(0)),
    ("env", 1, Some(1)),
    ("file_exists", 1, Some(1)),
    ("success", 0, Some(0)),
    ("failure", 0, Some(0)),
    ("always", 0, Some(0)),
    ("cancelled", 0, Some(0)),
    ("format", 1, None),
    ("join", 1, Some(2)),
    ("to_json", 1, Some(1)),
    ("from_json", 1, Some(1)),
    ("hash_files", 1, None),
];

/// Longest expression text [`parse`] accepts, in bytes.
pub(crate) const MAX_EXPR_LEN: usize = 64 * 1024;

/// Deepest nesting of parentheses, unary operators, indexing and call arguments.
pub const MAX_NESTING: usize = 64;

/// Deepest syntax tree (this also bounds long operator chains such as `a + a + a ...`).
pub const MAX_TREE_DEPTH: usize = 256;

/// Compiled-regex cache size (per thread).
const REGEX_CACHE_SIZE: usize = 64;
/// Size limit of one compiled regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

thread_local! {
    static REGEX_CACHE: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
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

/// "`len` takes 1 argument, got 2", or `None` when `got` fits.
pub(crate) fn arity_error(
    name: &str,
    min: usize,
    max: Option<usize>,
    got: usize,
) -> Option<String> {
    if got >= min && max.is_none_or(|m| got <= m) {
        return None;
    }
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    let wanted = match max {
        Some(0) => "no arguments".to_string(),
        Some(m) if m == min => format!("{m} {}", plural(m)),
        Some(m) if m == min + 1 => format!("{min} or {m} arguments"),
        Some(m) => format!("{min} to {m} arguments"),
        None => format!("at least {min} {}", plural(min)),
    };
    Some(format!("`{name}` takes {wanted}, got {got}"))
}

/// Expands a GitHub Actions style format string (`{0}`, `{{`, `}}`), calling `put` for each
/// placeholder. Also used statically (with a no-op `put`) to check literal formats.
pub(crate) fn format_with(
    fmt: &str,
    nargs: usize,
    mut put: impl FnMut(usize, &mut String),
) -> Result<String, String> {
    let mut out = String::with_capacity(fmt.len());
    let mut chars = fmt.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let rest = &fmt[pos + 1..];
                let close = rest.find('}').ok_or_else(|| {
                    format!("unclosed `{{` at byte {pos} of the format string (write `{{{{` for a literal brace)")
                })?;
                let digits = &rest[..close];
                let index: usize = digits
                    .parse()
                    .ok()
                    .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        format!("invalid placeholder `{{{digits}}}` in the format string, expected `{{0}}`, `{{1}}`...")
                    })?;
                if index >= nargs {
                    return Err(format!(
                        "the format string uses `{{{index}}}` but only {nargs} value{} given",
                        if nargs == 1 { " is" } else { "s are" }
                    ));
                }
                put(index, &mut out);
                for _ in 0..digits.chars().count() + 1 {
                    chars.next();
                }
            }
            '}' => {
                return Err(format!(
                    "unmatched `}}` at byte {pos} of the format string (write `}}}}` for a literal brace)"
                ));
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Compiles `pattern` (cached per thread) or explains why it is invalid.
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    if let Some(re) = REGEX_CACHE.with(|c| c.borrow().get(pattern).cloned()) {
        return Ok(re);
    }
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "regular expression is too large".to_string(),
            other => {
                let text = other.to_string();
                let last = text.lines().last().unwrap_or("").trim();
                format!(
                    "invalid regular expression: {}",
                    last.strip_prefix("error: ").unwrap_or(last)
                )
            }
        })?;
    REGEX_CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= REGEX_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(pattern.to_string(), re.clone());
    });
    Ok(re)
}
