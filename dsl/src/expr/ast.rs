//! The syntax tree produced by the parser. Every node keeps its byte span in the expression
//! text, so static checks and evaluation errors can point at the exact part.

use serde_json::Value;

/// A binary operator. `and`/`or` short-circuit and are kept apart in [`NodeKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    /// The operator as users write it (for messages).
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::NotIn => "not in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

/// A prefix operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnOp {
    Not,
    Neg,
}

/// A node of the syntax tree with its span (`offset`, `len`: bytes in the expression text)
/// and the depth of the subtree below it (1 for a leaf).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub offset: usize,
    pub len: usize,
    pub depth: usize,
}

/// What a node is.
#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    /// `null`, `true`, `1`, `2.5`, `'text'`.
    Literal(Value),
    /// A bare identifier: a context root such as `parameters`.
    Root(String),
    /// `object.name`; `name_offset` is the byte offset of `name`.
    Member {
        object: Box<Node>,
        name: String,
        name_offset: usize,
    },
    /// `object[index]`.
    Index { object: Box<Node>, index: Box<Node> },
    /// `[a, b, c]`.
    Array(Vec<Node>),
    /// `name(args...)`; `name_len` is the length of the name.
    Call {
        name: String,
        name_len: usize,
        args: Vec<Node>,
    },
    /// `not x`, `!x`, `-x`.
    Unary { op: UnOp, operand: Box<Node> },
    /// `a op b` for every operator except `and`/`or`.
    Binary {
        op: BinOp,
        left: Box<Node>,
        right: Box<Node>,
    },
    /// `a and b`, `a && b`.
    And(Box<Node>, Box<Node>),
    /// `a or b`, `a || b`.
    Or(Box<Node>, Box<Node>),
    /// `then if cond else otherwise`.
    Conditional {
        then: Box<Node>,
        cond: Box<Node>,
        otherwise: Box<Node>,
    },
}

impl Node {
    /// The text of this node in `src` (empty if the span does not fit, which cannot happen
    /// for a node parsed from `src`).
    pub(crate) fn text<'s>(&self, src: &'s str) -> &'s str {
        src.get(self.offset..self.offset + self.len).unwrap_or("")
    }
}
