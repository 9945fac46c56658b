//! Static checks of a parsed expression against the place it appears in.

use super::{ExprError, Expr};

/// What an expression may refer to where it appears.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The workflow's declared parameter names.
    pub parameters: &'a [String],
    /// The context roots allowed here (a subset of [`super::ROOTS`]).
    pub roots: &'a [&'a str],
}

/// Static checks: unknown roots, undeclared parameters, unknown functions, wrong arity.
/// Offsets are relative to [`Expr::source`].
pub fn check(expr: &Expr, scope: &Scope) -> Vec<ExprError> {
    let _ = (expr, scope);
    Vec::new()
}
