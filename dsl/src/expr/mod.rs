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
//! built-in functions ([`functions`]). What an expression reads is in `context`; what the
//! checker, the evaluator and the functions share (the error type, the language's tables,
//! value semantics, arity and format helpers) is in `shared`, which imports nothing else of
//! `expr`.

mod ast;
mod check;
mod context;
mod eval;
mod functions;
mod lexer;
mod parser;
mod shared;
mod template;

pub use check::{Scope, check};
pub use context::{EvalContext, JobStatus, MapContext};
pub use parser::{Expr, Reference, parse};
pub use shared::{ExprError, MAX_NESTING, MAX_TREE_DEPTH, ROOTS};
pub use template::{Template, TemplatePart};
