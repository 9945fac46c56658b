//! Strings that may hold `${{ }}` anywhere.

use serde_json::Value;

use super::{EvalContext, Expr, ExprError, Reference};

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
        Ok(Template::Literal(s.to_string()))
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
        let _ = ctx;
        Ok(Value::Null)
    }
}
