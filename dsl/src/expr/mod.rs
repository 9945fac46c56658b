//! `${{ }}` expressions: parsing, static checks and evaluation (docs/language.md).
//!
//! This module owns the expression language only. It knows nothing of YAML: positions are
//! byte offsets into the string it was given, and the caller (the YAML layer) maps them to
//! file lines and columns. Values are `serde_json::Value`.
//!
//! API used by the rest of the workspace (keep these names and shapes stable):
//! - [`parse`] one expression (the text between `${{` and `}}`).
//! - [`Template::parse`] a YAML string that may hold `${{ }}` anywhere.
//! - [`Template::references`] / [`Expr::references`]: every context path read, for
//!   dependency inference (`steps.X`) and validation.
//! - [`check`]: static checks against a [`Scope`] (unknown roots, undeclared parameters,
//!   unknown functions, wrong arity).
//! - [`Expr::eval`] / [`Template::render`] against an [`EvalContext`].
//!
//! The implementation is a hand-written lexer ([`lexer`]), a Pratt parser ([`parser`]), a
//! static checker ([`check`](mod@check)), a tree-walking evaluator ([`eval`]) and the
//! built-in functions ([`functions`]).

mod ast;
mod check;
mod eval;
mod functions;
mod lexer;
mod parser;
mod template;

pub use check::{Scope, check};
pub use eval::{EvalContext, JobStatus, MapContext};
pub use parser::{Expr, Reference, parse};
pub use template::{Template, TemplatePart};

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
];

/// The keys of the `run` context: the run id, the try (1 first), what started the run, and
/// the workspace (every step's working directory).
pub const RUN_KEYS: &[&str] = &["id", "attempt", "trigger", "workspace"];

/// The built-in functions: name, minimum arity, maximum arity (`None` = variadic).
pub const FUNCTIONS: &[(&str, usize, Option<usize>)] = &[
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
pub const MAX_EXPR_LEN: usize = 64 * 1024;

/// Deepest nesting of parentheses, unary operators, indexing and call arguments.
pub const MAX_NESTING: usize = 64;

/// Deepest syntax tree (this also bounds long operator chains such as `a + a + a ...`).
pub const MAX_TREE_DEPTH: usize = 256;

/// The candidate closest to `word`, if it is close enough to be a likely typo. A candidate
/// equal to `word` but for case and underscores wins outright, so GitHub Actions' spellings
/// (`toJSON`, `startsWith`, `hashFiles`) point at ours (`to_json`, `startswith`, `hash_files`).
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let folded = fold(word);
    let candidates: Vec<&'a str> = candidates.collect();
    if let Some(same) = candidates.iter().find(|c| fold(c) == folded) {
        return Some(same);
    }
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
