//! Strings that may hold `${{ }}` anywhere.
//!
//! A `${{` opens an expression that the first `}}` outside a quoted string literal closes,
//! so `${{ format('}}{0}', x) }}` works. A string that is exactly one `${{ }}` (whitespace
//! around it allowed) is [`Template::Whole`] and renders to the value with its type;
//! otherwise each expression is rendered as text (`null` as `""`, strings as they are,
//! anything else as compact JSON). There is no escape for a literal `${{`.

use serde_json::Value;

use super::check::{Scope, check};
use super::context::EvalContext;
use super::parser::{Expr, Reference, parse};
use super::shared::{ExprError, to_text};

/// A string value from a workflow file, split into text and expressions.
#[derive(Debug, Clone)]
pub enum Template {
    /// No `${{` at all.
    Literal(String),
    /// Exactly one `${{ }}` (whitespace around allowed): renders to the value with its type.
    /// `offset` is the byte offset of the expression text inside the template string.
    Whole {
        /// The expression.
        expr: Expr,
        /// Byte offset of the expression text (after `${{`) in the template string.
        offset: usize,
    },
    /// Text and expressions mixed: renders to a string.
    Interpolated(Vec<TemplatePart>),
}

/// A piece of an interpolated template.
#[derive(Debug, Clone)]
pub enum TemplatePart {
    /// Literal text.
    Text(String),
    /// An expression; `offset` is the byte offset of its text inside the template string.
    Expr {
        /// The expression.
        expr: Expr,
        /// Byte offset of the expression text (after `${{`) in the template string.
        offset: usize,
    },
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
            let close = match find_close(s, start) {
                Ok(close) => close,
                Err(unclosed) => {
                    // A quote left open is only to blame when it swallowed a `}}`; in
                    // `echo "${{ x"` the quote belongs to the text around an unclosed `${{`.
                    let swallowed = unclosed.filter(|&q| s[q..].contains("}}"));
                    errors.push(match swallowed {
                        Some(quote) => ExprError::new(
                            "unterminated string (the `}}` after it counts as part of the string)",
                            quote,
                            1,
                        ),
                        None => ExprError::new(
                            "unclosed `${{`, expected `}}` to end the expression",
                            open,
                            3,
                        ),
                    });
                    pos = s.len();
                    break;
                }
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
/// are ASCII and never part of a multi-byte character. When there is none, the error holds
/// the offset of the string literal left open, if the text ends inside one.
fn find_close(s: &str, start: usize) -> Result<usize, Option<usize>> {
    let b = s.as_bytes();
    let mut i = start;
    let mut quote: Option<(u8, usize)> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some((q, _)) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if c == b'\'' || c == b'"' {
                    quote = Some((c, i));
                } else if c == b'}' && b.get(i + 1) == Some(&b'}') {
                    return Ok(i);
                }
            }
        }
        i += 1;
    }
    Err(quote.map(|(_, at)| at))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::expr::MapContext;

    fn ctx() -> MapContext {
        MapContext::from_value(json!({
            "parameters": {"n": 3, "name": "world", "list": [1, 2], "none": null, "f": 1.5,
                           "obj": {"a": "b"}, "yes": true},
        }))
    }

    fn render(s: &str) -> serde_json::Value {
        Template::parse(s)
            .unwrap_or_else(|e| panic!("parse {s}: {e:?}"))
            .render(&ctx())
            .unwrap_or_else(|e| panic!("render {s}: {e}"))
    }

    fn errs(s: &str) -> Vec<(String, usize, usize)> {
        Template::parse(s)
            .expect_err("should fail")
            .into_iter()
            .map(|e| (e.message, e.offset, e.len))
            .collect()
    }

    #[test]
    fn kinds() {
        assert!(Template::parse("plain text").expect("parses").is_literal());
        assert!(Template::parse("").expect("parses").is_literal());
        assert!(
            Template::parse("$ {{ x }} and }} {{")
                .expect("parses")
                .is_literal()
        );
        match Template::parse("  ${{ parameters.n }} \n").expect("parses") {
            Template::Whole { expr, offset } => {
                assert_eq!(offset, 5);
                assert_eq!(expr.source(), " parameters.n ");
            }
            other => panic!("expected whole, got {other:?}"),
        }
        match Template::parse("a ${{ x }} b ${{y}}").expect("parses") {
            Template::Interpolated(parts) => assert_eq!(parts.len(), 4),
            other => panic!("expected interpolated, got {other:?}"),
        }
        assert!(matches!(
            Template::parse("${{ a }}${{ b }}").expect("parses"),
            Template::Interpolated(_)
        ));
    }

    #[test]
    fn whole_keeps_the_type() {
        assert_eq!(render("${{ parameters.n }}"), json!(3));
        assert_eq!(render(" ${{ parameters.list }} "), json!([1, 2]));
        assert_eq!(render("${{ parameters.none }}"), json!(null));
        assert_eq!(render("${{ parameters.yes }}"), json!(true));
        assert_eq!(render("plain"), json!("plain"));
    }

    #[test]
    fn interpolation_renders_text() {
        assert_eq!(
            render("hello ${{ parameters.name }}!"),
            json!("hello world!")
        );
        assert_eq!(
            render(
                "${{ parameters.n }}/${{ parameters.f }}/${{ parameters.none }}/${{ parameters.yes }}"
            ),
            json!("3/1.5//true")
        );
        assert_eq!(
            render("x=${{ parameters.list }} o=${{ parameters.obj }}"),
            json!(r#"x=[1,2] o={"a":"b"}"#)
        );
        assert_eq!(render("é ${{ 'ü' }} ñ"), json!("é ü ñ"));
    }

    #[test]
    fn braces_inside_string_literals_do_not_close() {
        assert_eq!(render("${{ '}}' }}"), json!("}}"));
        assert_eq!(
            render(r#"a ${{ format("{{}}{0}", 'x') }} b"#),
            json!("a {}x b")
        );
        assert_eq!(render(r"${{ 'it\'s }}' }}"), json!("it's }}"));
    }

    #[test]
    fn unclosed_expression_inside_quoted_text() {
        assert_eq!(
            errs("echo \"hello ${{ parameters.who\""),
            vec![(
                "unclosed `${{`, expected `}}` to end the expression".into(),
                12,
                3
            )]
        );
        assert_eq!(
            errs("${{ 'it }} x"),
            vec![(
                "unterminated string (the `}}` after it counts as part of the string)".into(),
                4,
                1
            )]
        );
    }

    #[test]
    fn errors_are_relative_to_the_template() {
        assert_eq!(
            errs("abc ${{ parameters.n"),
            vec![(
                "unclosed `${{`, expected `}}` to end the expression".into(),
                4,
                3
            )]
        );
        assert_eq!(errs("x ${{ }} y"), vec![("empty expression".into(), 2, 6)]);
        // Every broken expression is reported, each at its own place.
        assert_eq!(
            errs("${{ a + }} ok ${{ b c }} ${{ 'x }}"),
            vec![
                (
                    "unexpected end of expression, expected a value".into(),
                    8,
                    0
                ),
                (
                    "unexpected `c`, expected an operator or the end of the expression".into(),
                    20,
                    1
                ),
                (
                    "unterminated string (the `}}` after it counts as part of the string)".into(),
                    29,
                    1
                ),
            ]
        );
        assert_eq!(
            errs("é ${{ x = 1 }}"),
            vec![("unexpected `=`, did you mean `==`?".into(), 9, 1)]
        );
    }

    #[test]
    fn references_and_checks_are_relative_to_the_template() {
        let s = "run ${{ steps.build.output.x }} with ${{ parameters.nope }}";
        let t = Template::parse(s).expect("parses");
        let refs = t.references();
        assert_eq!(refs.len(), 2);
        assert_eq!(
            &s[refs[0].offset..refs[0].offset + refs[0].len],
            "steps.build.output.x"
        );
        assert_eq!(
            &s[refs[1].offset..refs[1].offset + refs[1].len],
            "parameters.nope"
        );
        let exprs = t.exprs();
        assert_eq!(exprs.len(), 2);
        assert_eq!(
            &s[exprs[1].1..exprs[1].1 + exprs[1].0.source().len()],
            " parameters.nope "
        );
        let params = vec!["name".to_string()];
        let scope = Scope {
            parameters: &params,
            roots: &["parameters", "steps"],
        };
        let problems = t.check(&scope);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            &s[problems[0].offset..problems[0].offset + problems[0].len],
            "nope"
        );
    }

    #[test]
    fn render_errors_are_relative_to_the_template() {
        let s = "a ${{ 1 / 0 }}";
        let e = Template::parse(s)
            .expect("parses")
            .render(&ctx())
            .expect_err("fails");
        assert_eq!(e.message, "division by zero");
        assert_eq!(&s[e.offset..e.offset + e.len], "1 / 0");
        let s = "  ${{ nope }}";
        let e = Template::parse(s)
            .expect("parses")
            .render(&ctx())
            .expect_err("fails");
        assert_eq!(&s[e.offset..e.offset + e.len], "nope");
    }
}
