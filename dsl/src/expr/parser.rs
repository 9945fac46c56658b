//! The Pratt parser: tokens to a syntax tree, plus [`Expr`] and reference extraction.
//!
//! Precedence, lowest first: `a if cond else b`; `or`/`||`; `and`/`&&`; `not`/`!`;
//! comparisons `== != < <= > >= in not in` (left-associative); `+ -`; `* / %`; unary `-`;
//! postfix `.name`, `[index]` and calls. Nesting (parentheses, prefix operators, indexes,
//! call arguments) is capped at [`MAX_NESTING`] and the tree depth at [`MAX_TREE_DEPTH`], so
//! hostile input gets an error instead of a stack overflow.

use serde_json::Value;

use super::ast::{BinOp, Node, NodeKind, UnOp};
use super::context::EvalContext;
use super::eval::eval_root;
use super::lexer::{Tok, Token, tokenize};
use super::shared::{ExprError, MAX_EXPR_LEN, MAX_NESTING, MAX_TREE_DEPTH};

/// A parsed expression: its source text and syntax tree.
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: Node,
}

/// One context path read by an expression, e.g. `steps.build.output.artifact` is root
/// `steps`, path `["build", "output", "artifact"]`. `parameters['x']` has path `["x"]`; the
/// path stops at the first dynamic index (`x[0]` is static and gives `"0"`).
/// `offset`/`len` span the static part in the text.
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

/// Parses one expression (the text between `${{` and `}}`). Error offsets are bytes into
/// `src`.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.len() > MAX_EXPR_LEN {
        return Err(ExprError::new(
            format!(
                "expression is too long ({} bytes, the limit is {MAX_EXPR_LEN})",
                src.len()
            ),
            0,
            src.len(),
        ));
    }
    let tokens = tokenize(src)?;
    if tokens.is_empty() {
        return Err(ExprError::new("empty expression", 0, src.len()));
    }
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        nesting: 0,
        end: src.len(),
    };
    let root = parser.parse_expr()?;
    if let Some(t) = parser.peek() {
        return Err(ExprError::new(
            format!(
                "unexpected {}, expected an operator or the end of the expression",
                t.tok.describe()
            ),
            t.offset,
            t.len,
        ));
    }
    Ok(Expr {
        source: src.to_string(),
        root,
    })
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "if", "else", "true", "false", "null",
];

/// Right binding powers of the prefix operators (`or` 1, `and` 2, comparisons 4, `+ -` 5,
/// `* / %` 6): `not x == y` is `not (x == y)`, `-x * y` is `(-x) * y`.
const BP_NOT: u8 = 3;
const BP_UNARY_MINUS: u8 = 6;

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    nesting: usize,
    end: usize,
}

fn is_kw(t: &Token, kw: &str) -> bool {
    matches!(&t.tok, Tok::Ident(name) if name == kw)
}

fn leaf(kind: NodeKind, offset: usize, end: usize) -> Result<Node, ExprError> {
    node_with_depth(kind, offset, end, 0)
}

fn end_of(n: &Node) -> usize {
    n.offset + n.len
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.pos + ahead)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn error_here(&self, expected: &str) -> ExprError {
        match self.peek() {
            Some(t) => ExprError::new(
                format!("unexpected {}, expected {expected}", t.tok.describe()),
                t.offset,
                t.len,
            ),
            None => ExprError::new(
                format!("unexpected end of expression, expected {expected}"),
                self.end,
                0,
            ),
        }
    }

    fn expect(&mut self, tok: Tok) -> Result<Token, ExprError> {
        match self.peek() {
            Some(t) if t.tok == tok => Ok(self.next().expect("peeked")),
            _ => Err(self.error_here(&tok.describe())),
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            let (offset, len) = self.peek().map_or((self.end, 0), |t| (t.offset, t.len));
            return Err(ExprError::new(
                format!("expression is nested too deeply (more than {MAX_NESTING} levels)"),
                offset,
                len,
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// expr := binary [`if` binary `else` expr]
    fn parse_expr(&mut self) -> Result<Node, ExprError> {
        self.enter()?;
        let result = self.parse_conditional();
        self.leave();
        result
    }

    fn parse_conditional(&mut self) -> Result<Node, ExprError> {
        let then = self.parse_binary(0)?;
        if !self.peek().is_some_and(|t| is_kw(t, "if")) {
            return Ok(then);
        }
        self.next();
        let cond = self.parse_binary(0)?;
        if !self.peek().is_some_and(|t| is_kw(t, "else")) {
            return Err(self.error_here("`else`"));
        }
        self.next();
        let otherwise = self.parse_expr()?;
        let (offset, end) = (then.offset, end_of(&otherwise));
        let depth = then.depth.max(cond.depth).max(otherwise.depth);
        let kind = NodeKind::Conditional {
            then: Box::new(then),
            cond: Box::new(cond),
            otherwise: Box::new(otherwise),
        };
        node_with_depth(kind, offset, end, depth)
    }

    /// The infix operator at the cursor: (operator, left binding power, tokens it takes).
    fn infix(&self) -> Option<(Infix, u8, usize)> {
        let t = self.peek()?;
        let op = match &t.tok {
            Tok::OrOr => (Infix::Or, 1, 1),
            Tok::AndAnd => (Infix::And, 2, 1),
            Tok::Ident(k) if k == "or" => (Infix::Or, 1, 1),
            Tok::Ident(k) if k == "and" => (Infix::And, 2, 1),
            Tok::Ident(k) if k == "in" => (Infix::Bin(BinOp::In), 4, 1),
            Tok::Ident(k) if k == "not" && self.peek_at(1).is_some_and(|n| is_kw(n, "in")) => {
                (Infix::Bin(BinOp::NotIn), 4, 2)
            }
            Tok::EqEq => (Infix::Bin(BinOp::Eq), 4, 1),
            Tok::NotEq => (Infix::Bin(BinOp::Ne), 4, 1),
            Tok::Lt => (Infix::Bin(BinOp::Lt), 4, 1),
            Tok::Le => (Infix::Bin(BinOp::Le), 4, 1),
            Tok::Gt => (Infix::Bin(BinOp::Gt), 4, 1),
            Tok::Ge => (Infix::Bin(BinOp::Ge), 4, 1),
            Tok::Plus => (Infix::Bin(BinOp::Add), 5, 1),
            Tok::Minus => (Infix::Bin(BinOp::Sub), 5, 1),
            Tok::Star => (Infix::Bin(BinOp::Mul), 6, 1),
            Tok::Slash => (Infix::Bin(BinOp::Div), 6, 1),
            Tok::Percent => (Infix::Bin(BinOp::Rem), 6, 1),
            _ => return None,
        };
        Some(op)
    }

    fn parse_binary(&mut self, min_bp: u8) -> Result<Node, ExprError> {
        let mut left = self.parse_prefix()?;
        while let Some((op, bp, ntok)) = self.infix() {
            if bp <= min_bp {
                break;
            }
            self.pos += ntok;
            let right = self.parse_binary(bp)?;
            let (offset, end) = (left.offset, end_of(&right));
            let depth = left.depth.max(right.depth);
            let (l, r) = (Box::new(left), Box::new(right));
            let kind = match op {
                Infix::Or => NodeKind::Or(l, r),
                Infix::And => NodeKind::And(l, r),
                Infix::Bin(op) => NodeKind::Binary {
                    op,
                    left: l,
                    right: r,
                },
            };
            left = node_with_depth(kind, offset, end, depth)?;
        }
        Ok(left)
    }

    fn parse_prefix(&mut self) -> Result<Node, ExprError> {
        let Some(t) = self.peek() else {
            return Err(self.error_here("a value"));
        };
        let (op, bp) = match &t.tok {
            Tok::Bang => (UnOp::Not, BP_NOT),
            Tok::Ident(k) if k == "not" => (UnOp::Not, BP_NOT),
            Tok::Minus => (UnOp::Neg, BP_UNARY_MINUS),
            _ => return self.parse_postfix(),
        };
        let offset = t.offset;
        self.next();
        self.enter()?;
        let operand = self.parse_binary(bp);
        self.leave();
        let operand = operand?;
        let end = end_of(&operand);
        let depth = operand.depth;
        let kind = NodeKind::Unary {
            op,
            operand: Box::new(operand),
        };
        node_with_depth(kind, offset, end, depth)
    }

    fn parse_postfix(&mut self) -> Result<Node, ExprError> {
        let mut left = self.parse_primary()?;
        while let Some(t) = self.peek() {
            match t.tok {
                Tok::Dot => {
                    self.next();
                    let name_tok = match self.peek() {
                        Some(Token {
                            tok: Tok::Ident(_), ..
                        }) => self.next().expect("peeked"),
                        _ => return Err(self.error_here("a name after `.`")),
                    };
                    let Tok::Ident(name) = name_tok.tok else {
                        unreachable!("matched an identifier above")
                    };
                    let offset = left.offset;
                    let end = name_tok.offset + name_tok.len;
                    let depth = left.depth;
                    let kind = NodeKind::Member {
                        object: Box::new(left),
                        name,
                        name_offset: name_tok.offset,
                    };
                    left = node_with_depth(kind, offset, end, depth)?;
                }
                Tok::LBracket => {
                    self.next();
                    let index = self.parse_expr()?;
                    let close = self.expect(Tok::RBracket)?;
                    let offset = left.offset;
                    let depth = left.depth.max(index.depth);
                    let kind = NodeKind::Index {
                        object: Box::new(left),
                        index: Box::new(index),
                    };
                    left = node_with_depth(kind, offset, close.offset + 1, depth)?;
                }
                Tok::LParen => {
                    return Err(ExprError::new(
                        format!(
                            "only built-in functions can be called, and `{}` is not one",
                            left.text(self.src)
                        ),
                        t.offset,
                        t.len,
                    ));
                }
                _ => break,
            }
        }
        Ok(left)
    }

    fn parse_primary(&mut self) -> Result<Node, ExprError> {
        let Some(t) = self.next() else {
            return Err(self.error_here("a value"));
        };
        let end = t.offset + t.len;
        let lit = |v: Value| leaf(NodeKind::Literal(v), t.offset, end);
        match t.tok {
            Tok::Int(n) => lit(Value::from(n)),
            Tok::UInt(n) => lit(Value::from(n)),
            Tok::Float(f) => lit(Value::from(f)),
            Tok::Str(ref s) => lit(Value::String(s.clone())),
            Tok::Ident(ref name) => match name.as_str() {
                "true" => lit(Value::Bool(true)),
                "false" => lit(Value::Bool(false)),
                "null" => lit(Value::Null),
                k if KEYWORDS.contains(&k) => {
                    self.pos -= 1;
                    Err(self.error_here("a value"))
                }
                _ => {
                    if self.peek().is_some_and(|n| n.tok == Tok::LParen) {
                        self.next();
                        self.parse_call(name.clone(), t.offset, t.len)
                    } else {
                        leaf(NodeKind::Root(name.clone()), t.offset, end)
                    }
                }
            },
            Tok::LParen => {
                let inner = self.parse_expr()?;
                self.expect(Tok::RParen)?;
                Ok(inner)
            }
            Tok::LBracket => {
                self.enter()?;
                let items = self.parse_list(Tok::RBracket);
                self.leave();
                let (items, close) = items?;
                let depth = items.iter().map(|n| n.depth).max().unwrap_or(0);
                node_with_depth(NodeKind::Array(items), t.offset, close, depth)
            }
            _ => {
                self.pos -= 1;
                Err(self.error_here("a value"))
            }
        }
    }

    /// Comma-separated expressions up to `close` (a trailing comma is allowed). Returns them
    /// and the end offset after the closing token.
    fn parse_list(&mut self, close: Tok) -> Result<(Vec<Node>, usize), ExprError> {
        let mut items = Vec::new();
        loop {
            if let Some(t) = self.peek()
                && t.tok == close
            {
                let end = t.offset + t.len;
                self.next();
                return Ok((items, end));
            }
            items.push(self.parse_expr()?);
            match self.peek() {
                Some(t) if t.tok == Tok::Comma => {
                    self.next();
                }
                Some(t) if t.tok == close => {}
                _ => {
                    return Err(self.error_here(&format!("`,` or {}", close.describe())));
                }
            }
        }
    }

    fn parse_call(
        &mut self,
        name: String,
        offset: usize,
        name_len: usize,
    ) -> Result<Node, ExprError> {
        self.enter()?;
        let args = self.parse_list(Tok::RParen);
        self.leave();
        let (args, end) = args?;
        let depth = args.iter().map(|n| n.depth).max().unwrap_or(0);
        node_with_depth(
            NodeKind::Call {
                name,
                name_len,
                args,
            },
            offset,
            end,
            depth,
        )
    }
}

enum Infix {
    Or,
    And,
    Bin(BinOp),
}

/// A node whose children's maximum depth is `child_depth`.
fn node_with_depth(
    kind: NodeKind,
    offset: usize,
    end: usize,
    child_depth: usize,
) -> Result<Node, ExprError> {
    check_depth(Node {
        kind,
        offset,
        len: end.saturating_sub(offset),
        depth: child_depth + 1,
    })
}

fn check_depth(n: Node) -> Result<Node, ExprError> {
    if n.depth > MAX_TREE_DEPTH {
        return Err(ExprError::new(
            format!("expression is too deeply nested (more than {MAX_TREE_DEPTH} levels)"),
            n.offset,
            n.len,
        ));
    }
    Ok(n)
}

impl Expr {
    /// The text this expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn tree(&self) -> &Node {
        &self.root
    }

    /// Every context path this expression reads, in source order. Each use of a root gives
    /// one reference: its longest static path.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        collect_refs(&self.root, &mut out);
        out
    }

    /// Evaluates the expression. Error offsets are relative to [`Expr::source`].
    pub fn eval(&self, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
        eval_root(&self.root, &self.source, ctx)
    }
}

/// If `n` is a static path (`root.a['b'][0]`), returns it.
pub(crate) fn static_path(n: &Node) -> Option<Reference> {
    match &n.kind {
        NodeKind::Root(name) => Some(Reference {
            root: name.clone(),
            path: Vec::new(),
            offset: n.offset,
            len: n.len,
        }),
        NodeKind::Member { object, name, .. } => {
            let mut r = static_path(object)?;
            r.path.push(name.clone());
            r.len = end_of(n) - r.offset;
            Some(r)
        }
        NodeKind::Index { object, index } => {
            let key = match &index.kind {
                NodeKind::Literal(Value::String(s)) => s.clone(),
                NodeKind::Literal(Value::Number(num)) if num.is_i64() || num.is_u64() => {
                    num.to_string()
                }
                _ => return None,
            };
            let mut r = static_path(object)?;
            r.path.push(key);
            r.len = end_of(n) - r.offset;
            Some(r)
        }
        _ => None,
    }
}

fn collect_refs(n: &Node, out: &mut Vec<Reference>) {
    if let Some(r) = static_path(n) {
        out.push(r);
        return;
    }
    match &n.kind {
        NodeKind::Literal(_) | NodeKind::Root(_) => {}
        NodeKind::Member { object, .. } => collect_refs(object, out),
        NodeKind::Index { object, index } => {
            collect_refs(object, out);
            collect_refs(index, out);
        }
        NodeKind::Array(items) | NodeKind::Call { args: items, .. } => {
            for item in items {
                collect_refs(item, out);
            }
        }
        NodeKind::Unary { operand, .. } => collect_refs(operand, out),
        NodeKind::Binary { left, right, .. }
        | NodeKind::And(left, right)
        | NodeKind::Or(left, right) => {
            collect_refs(left, out);
            collect_refs(right, out);
        }
        NodeKind::Conditional {
            then,
            cond,
            otherwise,
        } => {
            collect_refs(then, out);
            collect_refs(cond, out);
            collect_refs(otherwise, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree as an S-expression, to test precedence and associativity.
    fn sexpr(n: &Node) -> String {
        match &n.kind {
            NodeKind::Literal(v) => v.to_string(),
            NodeKind::Root(name) => name.clone(),
            NodeKind::Member { object, name, .. } => format!("{}.{name}", sexpr(object)),
            NodeKind::Index { object, index } => format!("{}[{}]", sexpr(object), sexpr(index)),
            NodeKind::Array(items) => {
                format!(
                    "[{}]",
                    items.iter().map(sexpr).collect::<Vec<_>>().join(" ")
                )
            }
            NodeKind::Call { name, args, .. } => {
                format!(
                    "({name} {})",
                    args.iter().map(sexpr).collect::<Vec<_>>().join(" ")
                )
            }
            NodeKind::Unary { op, operand } => {
                let sym = match op {
                    UnOp::Not => "not",
                    UnOp::Neg => "neg",
                };
                format!("({sym} {})", sexpr(operand))
            }
            NodeKind::Binary { op, left, right } => {
                format!("({} {} {})", op.symbol(), sexpr(left), sexpr(right))
            }
            NodeKind::And(l, r) => format!("(and {} {})", sexpr(l), sexpr(r)),
            NodeKind::Or(l, r) => format!("(or {} {})", sexpr(l), sexpr(r)),
            NodeKind::Conditional {
                then,
                cond,
                otherwise,
            } => format!("(if {} {} {})", sexpr(cond), sexpr(then), sexpr(otherwise)),
        }
    }

    fn p(src: &str) -> String {
        sexpr(parse(src).expect("parses").tree())
    }

    fn err(src: &str) -> (String, usize, usize) {
        let e = parse(src).expect_err("should fail");
        (e.message, e.offset, e.len)
    }

    #[test]
    fn literals() {
        assert_eq!(p("null"), "null");
        assert_eq!(p("true"), "true");
        assert_eq!(p("false"), "false");
        assert_eq!(p("42"), "42");
        assert_eq!(p("2.5"), "2.5");
        assert_eq!(p("'a'"), "\"a\"");
        assert_eq!(p("[1, 'b', [true]]"), "[1 \"b\" [true]]");
        assert_eq!(p("[]"), "[]");
        assert_eq!(p("[1,]"), "[1]");
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(p("a or b and c"), "(or a (and b c))");
        assert_eq!(p("a || b && c"), "(or a (and b c))");
        assert_eq!(p("a and b or c"), "(or (and a b) c)");
        assert_eq!(p("not a == b"), "(not (== a b))");
        assert_eq!(p("!a && b"), "(and (not a) b)");
        assert_eq!(p("not a and not b"), "(and (not a) (not b))");
        assert_eq!(p("a == b and c != d"), "(and (== a b) (!= c d))");
        assert_eq!(p("a < b == c"), "(== (< a b) c)");
        assert_eq!(p("1 + 2 * 3"), "(+ 1 (* 2 3))");
        assert_eq!(p("1 - 2 - 3"), "(- (- 1 2) 3)");
        assert_eq!(p("8 / 4 % 3"), "(% (/ 8 4) 3)");
        assert_eq!(p("(1 + 2) * 3"), "(* (+ 1 2) 3)");
        assert_eq!(p("-a * b"), "(* (neg a) b)");
        assert_eq!(p("--a"), "(neg (neg a))");
        assert_eq!(p("-a.b[0]"), "(neg a.b[0])");
        assert_eq!(p("a + b < c * d"), "(< (+ a b) (* c d))");
        assert_eq!(p("x in [1, 2]"), "(in x [1 2])");
        assert_eq!(p("x not in y and z"), "(and (not in x y) z)");
        assert_eq!(p("not x in y"), "(not (in x y))");
        assert_eq!(p("a == !b"), "(== a (not b))");
    }

    #[test]
    fn conditional_is_lowest_and_right_associative() {
        assert_eq!(p("a if b else c"), "(if b a c)");
        assert_eq!(p("a or b if c or d else e"), "(if (or c d) (or a b) e)");
        assert_eq!(p("a if b else c if d else e"), "(if b a (if d c e))");
        assert_eq!(p("(a if b else c) + 1"), "(+ (if b a c) 1)");
    }

    #[test]
    fn postfix_and_calls() {
        assert_eq!(
            p("steps.build.output.artifact"),
            "steps.build.output.artifact"
        );
        assert_eq!(p("x['k'][0][y.z]"), "x[\"k\"][0][y.z]");
        assert_eq!(p("len(x)"), "(len x)");
        assert_eq!(p("now()"), "(now )");
        assert_eq!(p("format('{0}', a, b,)"), "(format \"{0}\" a b)");
        assert_eq!(p("from_json(x).a[0]"), "(from_json x).a[0]");
        assert_eq!(p("steps.if.output.else"), "steps.if.output.else");
        assert_eq!(p("steps.build-linux.status"), "steps.build-linux.status");
    }

    #[test]
    fn spans() {
        let e = parse("  a.b + len(c) ").expect("parses");
        let root = e.tree();
        assert_eq!((root.offset, root.len), (2, 12));
        let NodeKind::Binary { left, right, .. } = &root.kind else {
            panic!("binary expected")
        };
        assert_eq!(left.text(e.source()), "a.b");
        assert_eq!(right.text(e.source()), "len(c)");
    }

    #[test]
    fn syntax_errors_have_positions() {
        assert_eq!(err(""), ("empty expression".into(), 0, 0));
        assert_eq!(err("   "), ("empty expression".into(), 0, 3));
        assert_eq!(
            err("a +"),
            (
                "unexpected end of expression, expected a value".into(),
                3,
                0
            )
        );
        assert_eq!(
            err("a b"),
            (
                "unexpected `b`, expected an operator or the end of the expression".into(),
                2,
                1
            )
        );
        assert_eq!(
            err("(a"),
            ("unexpected end of expression, expected `)`".into(), 2, 0)
        );
        assert_eq!(
            err("x[1"),
            ("unexpected end of expression, expected `]`".into(), 3, 0)
        );
        assert_eq!(
            err("f(a b)"),
            ("unexpected `b`, expected `,` or `)`".into(), 4, 1)
        );
        assert_eq!(
            err("a."),
            (
                "unexpected end of expression, expected a name after `.`".into(),
                2,
                0
            )
        );
        assert_eq!(
            err("a.(b)"),
            ("unexpected `(`, expected a name after `.`".into(), 2, 1)
        );
        assert_eq!(
            err("a if b"),
            ("unexpected end of expression, expected `else`".into(), 6, 0)
        );
        assert_eq!(
            err("and"),
            ("unexpected `and`, expected a value".into(), 0, 3)
        );
        assert_eq!(
            err("a == == b"),
            ("unexpected `==`, expected a value".into(), 5, 2)
        );
        assert_eq!(
            err("a.b(1)"),
            (
                "only built-in functions can be called, and `a.b` is not one".into(),
                3,
                1
            )
        );
        assert_eq!(err(")"), ("unexpected `)`, expected a value".into(), 0, 1));
        assert_eq!(
            err("a not b"),
            (
                "unexpected `not`, expected an operator or the end of the expression".into(),
                2,
                3
            )
        );
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(err(&deep).0.starts_with("expression is nested too deeply"));
        let nots = format!("{}a", "!".repeat(10_000));
        assert!(err(&nots).0.starts_with("expression is nested too deeply"));
        let idx = format!("a{}", "[0]".repeat(10_000));
        assert!(err(&idx).0.starts_with("expression is too deeply nested"));
        let chain = format!("a{}", " + a".repeat(5_000));
        assert!(err(&chain).0.starts_with("expression is too deeply nested"));
        let arrays = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
        assert!(
            err(&arrays)
                .0
                .starts_with("expression is nested too deeply")
        );
        let calls = format!("{}x{}", "len(".repeat(5_000), ")".repeat(5_000));
        assert!(err(&calls).0.starts_with("expression is nested too deeply"));
        // Within the limits, nesting works.
        let ok = format!("{}1{}", "(".repeat(60), ")".repeat(60));
        assert_eq!(p(&ok), "1");
        let long = "a".repeat(MAX_EXPR_LEN + 1);
        assert!(err(&long).0.starts_with("expression is too long"));
    }

    #[test]
    fn references_follow_static_paths() {
        let e = parse(
            "steps.build.output.artifact == parameters['x'] and steps[parameters.name].status \
             or x[0].y",
        )
        .expect("parses");
        let refs: Vec<(String, Vec<String>, &str)> = e
            .references()
            .into_iter()
            .map(|r| (r.root, r.path, &e.source()[r.offset..r.offset + r.len]))
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            refs,
            vec![
                (
                    "steps".into(),
                    s(&["build", "output", "artifact"]),
                    "steps.build.output.artifact"
                ),
                ("parameters".into(), s(&["x"]), "parameters['x']"),
                ("steps".into(), s(&[]), "steps"),
                ("parameters".into(), s(&["name"]), "parameters.name"),
                ("x".into(), s(&["0", "y"]), "x[0].y"),
            ]
        );
        let e =
            parse("format('{0}', len(context.items)) if success() else env.HOME").expect("parses");
        let roots: Vec<String> = e.references().into_iter().map(|r| r.root).collect();
        assert_eq!(roots, vec!["context", "env"]);
        assert!(parse("1 + 2").expect("parses").references().is_empty());
    }

    #[test]
    fn non_ascii_never_panics() {
        for src in ["é", "a.é", "'é", "x[é]", "ü == 'ü'", "a.b-é", "\u{200b}a"] {
            let _ = parse(src);
        }
        assert_eq!(p("'日本' == x"), "(== \"日本\" x)");
    }
}
