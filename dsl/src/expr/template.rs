//! Strings that may hold `${{ }}` anywhere.
//!
//! A `${{` opens an expression that the first `}}` outside a quoted string literal closes,
//! so `${{ format('}}{0}', x) }}` works. A string that is exactly one `${{ }}` (whitespace
//! around it allowed) is [`Template::Whole`] and renders to the value with its type;
//! otherwise each expression is rendered as text (`null` as `""`, strings as they are,
//! anything else as compact JSON). There is no escape for a literal `${{`.

use serde_json::Value;

use super::eval::to_text;
use super::{EvalContext, Expr, ExprError, Reference, Scope, check, parse};

/// A string value from a workflow file, split into text and expressions.
#[derive(Debug, Clone)]
pub enum Template {
    /// No `${{` at all.
    Literal(String),
    /// Exactly one `${{ }}` (whitespace around allowed): renders to the value with its type.
    /// `offset` is the byte offset of the expression text inside the template string.
    Whole { expr: Expr, offset: usize },
    /// Text and expressions mixed: renders to a string.
    Interpolated(Vec<TemplatePart>),
}

/// A piece of an interpolated template.
#[derive(Debug, Clone)]
pub enum TemplatePart {
    /// Literal text.
    Text(String),
    /// An expression; `offset` is the byte offset of its text inside the template string.
    Expr { expr: Expr, offset: usize },
}

impl Template {
    /// Parses a template, collecting all errors, with offsets relative to `s`.
    pub fn parse(s: &str) -> Result<Template, Vec<ExprError>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut pos = 0;
        while let Some(found) = s[pos..].find("${{") {
            let open = pos + found;
            if open > pos {
                parts.push(TemplatePart::Text(s[pos..open].to_string()));
            }
            let start = open + 3;
            let Some(close) = find_close(s, start) else {
                errors.push(ExprError::new(
                    "unclosed `${{`, expected `}}` to end the expression",
                    open,
                    3,
                ));
                pos = s.len();
                break;
            };
            let inner = &s[start..close];
            if inner.trim().is_empty() {
                errors.push(ExprError::new("empty expression", open, close + 2 - open));
            } else {
                match parse(inner) {
                    Ok(expr) => parts.push(TemplatePart::Expr {
                        expr,
                        offset: start,
                    }),
                    Err(e) => errors.push(e.shifted(start)),
                }
            }
            pos = close + 2;
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if pos < s.len() {
            parts.push(TemplatePart::Text(s[pos..].to_string()));
        }
        let exprs = parts
            .iter()
            .filter(|p| matches!(p, TemplatePart::Expr { .. }))
            .count();
        if exprs == 0 {
            return Ok(Template::Literal(s.to_string()));
        }
        let only_space = parts.iter().all(|p| match p {
            TemplatePart::Text(t) => t.trim().is_empty(),
            TemplatePart::Expr { .. } => true,
        });
        if exprs == 1 && only_space {
            let whole = parts.into_iter().find_map(|p| match p {
                TemplatePart::Expr { expr, offset } => Some(Template::Whole { expr, offset }),
                TemplatePart::Text(_) => None,
            });
            if let Some(whole) = whole {
                return Ok(whole);
            }
            return Ok(Template::Literal(s.to_string()));
        }
        Ok(Template::Interpolated(parts))
    }

    /// Static checks of every expression (see [`check`]), offsets relative to the template
    /// string.
    pub fn check(&self, scope: &Scope) -> Vec<ExprError> {
        self.exprs()
            .into_iter()
            .flat_map(|(e, off)| check(e, scope).into_iter().map(move |err| err.shifted(off)))
            .collect()
    }

    /// True when the string holds no expression.
    pub fn is_literal(&self) -> bool {
        matches!(self, Template::Literal(_))
    }

    /// Every expression with its offset inside the template string.
    pub fn exprs(&self) -> Vec<(&Expr, usize)> {
        match self {
            Template::Literal(_) => Vec::new(),
            Template::Whole { expr, offset } => vec![(expr, *offset)],
            Template::Interpolated(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    TemplatePart::Text(_) => None,
                    TemplatePart::Expr { expr, offset } => Some((expr, *offset)),
                })
                .collect(),
        }
    }

    /// Every context path read, offsets relative to the template string.
    pub fn references(&self) -> Vec<Reference> {
        self.exprs()
            .into_iter()
            .flat_map(|(e, off)| {
                e.references().into_iter().map(move |mut r| {
                    r.offset += off;
                    r
                })
            })
            .collect()
    }

    /// Renders the template; error offsets are relative to the template string.
    pub fn render(&self, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
        match self {
            Template::Literal(s) => Ok(Value::String(s.clone())),
            Template::Whole { expr, offset } => expr.eval(ctx).map_err(|e| e.shifted(*offset)),
            Template::Interpolated(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        TemplatePart::Text(t) => out.push_str(t),
                        TemplatePart::Expr { expr, offset } => {
                            let v = expr.eval(ctx).map_err(|e| e.shifted(*offset))?;
                            out.push_str(&to_text(&v));
                        }
                    }
                }
                Ok(Value::String(out))
            }
        }
    }
}

/// The offset of the `}}` that closes an expression starting at `start`, skipping quoted
/// string literals (with backslash escapes). Works on bytes: quotes, backslashes and braces
/// are ASCII and never part of a multi-byte character.
fn find_close(s: &str, start: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = start;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if c == b'\'' || c == b'"' {
                    quote = Some(c);
                } else if c == b'}' && b.get(i + 1) == Some(&b'}') {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}
