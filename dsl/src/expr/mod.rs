//! `${{ }}` expressions: parsing, static checks and evaluation (DESIGN §3).
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

use serde_json::Value;

/// An error with a byte range inside the expression or template text it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub message: String,
    /// Byte offset of the start of the offending part, relative to the text that was parsed.
    pub offset: usize,
    /// Length in bytes (at least 1 where possible).
    pub len: usize,
}
