//! The tokenizer: turns expression text into tokens with byte spans.
//!
//! Identifiers are `[A-Za-z_][A-Za-z0-9_]*`. Right after a `.` a member name may also start
//! with a digit and contain `-` when a letter or `_` follows it, so `steps.build-linux.output`
//! reads like in GitHub Actions while `x.n - 1` and `x.n-1` stay subtractions.
//! All scanning works on `char` boundaries, so non-ASCII input never panics.

use super::shared::ExprError;

/// A token kind. Keywords (`and`, `or`, `not`, `in`, `if`, `else`, `true`, `false`, `null`)
/// are [`Tok::Ident`]s; the parser tells them apart.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Dot,
    Comma,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
}

impl Tok {
    /// How the token reads in a message.
    pub(crate) fn describe(&self) -> String {
        let s = match self {
            Tok::Ident(name) => return format!("`{name}`"),
            Tok::Int(_) | Tok::UInt(_) | Tok::Float(_) => return "a number".to_string(),
            Tok::Str(_) => return "a string".to_string(),
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Dot => ".",
            Tok::Comma => ",",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Bang => "!",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
        };
        format!("`{s}`")
    }
}

/// A token and its byte span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub offset: usize,
    pub len: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits `src` into tokens, or returns the first lexical error.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = src.as_bytes();
    let mut tokens: Vec<Token> = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let Some(c) = src[i..].chars().next() else {
            break;
        };
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let start = i;
        let after_dot = matches!(tokens.last(), Some(Token { tok: Tok::Dot, .. }));
        if is_ident_start(c) || (after_dot && c.is_ascii_digit()) {
            i += 1;
            while i < bytes.len() {
                let b = bytes[i];
                if is_ident_char(b as char) {
                    i += 1;
                } else if after_dot
                    && b == b'-'
                    && bytes.get(i + 1).is_some_and(|&n| is_ident_start(n as char))
                {
                    i += 2;
                } else {
                    break;
                }
            }
            tokens.push(Token {
                tok: Tok::Ident(src[start..i].to_string()),
                offset: start,
                len: i - start,
            });
            continue;
        }
        if c.is_ascii_digit() {
            let (tok, end) = lex_number(src, start)?;
            tokens.push(Token {
                tok,
                offset: start,
                len: end - start,
            });
            i = end;
            continue;
        }
        if c == '\'' || c == '"' {
            let (text, end) = lex_string(src, start, c)?;
            tokens.push(Token {
                tok: Tok::Str(text),
                offset: start,
                len: end - start,
            });
            i = end;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let (tok, len) = match (c, next) {
            ('=', Some(b'=')) => (Tok::EqEq, 2),
            ('!', Some(b'=')) => (Tok::NotEq, 2),
            ('<', Some(b'=')) => (Tok::Le, 2),
            ('>', Some(b'=')) => (Tok::Ge, 2),
            ('&', Some(b'&')) => (Tok::AndAnd, 2),
            ('|', Some(b'|')) => (Tok::OrOr, 2),
            ('<', _) => (Tok::Lt, 1),
            ('>', _) => (Tok::Gt, 1),
            ('!', _) => (Tok::Bang, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            ('.', _) => (Tok::Dot, 1),
            (',', _) => (Tok::Comma, 1),
            ('+', _) => (Tok::Plus, 1),
            ('-', _) => (Tok::Minus, 1),
            ('*', _) => (Tok::Star, 1),
            ('/', _) => (Tok::Slash, 1),
            ('%', _) => (Tok::Percent, 1),
            ('=', _) => return Err(ExprError::new("unexpected `=`, did you mean `==`?", i, 1)),
            ('&', _) => return Err(ExprError::new("unexpected `&`, did you mean `&&`?", i, 1)),
            ('|', _) => return Err(ExprError::new("unexpected `|`, did you mean `||`?", i, 1)),
            _ => {
                let shown = if c.is_control() {
                    format!("{:?}", c)
                } else {
                    format!("`{c}`")
                };
                return Err(ExprError::new(
                    format!("unexpected character {shown}"),
                    i,
                    c.len_utf8(),
                ));
            }
        };
        tokens.push(Token {
            tok,
            offset: i,
            len,
        });
        i += len;
    }
    Ok(tokens)
}

/// Lexes `123`, `1.5`, `1e3`, `2.5E-3`. Returns the token and the end offset.
fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), ExprError> {
    let bytes = src.as_bytes();
    let mut i = start;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let mut is_float = false;
    if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
        is_float = true;
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            is_float = true;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    if i < bytes.len() && is_ident_start(bytes[i] as char) {
        let mut end = i;
        while end < bytes.len() && is_ident_char(bytes[end] as char) {
            end += 1;
        }
        return Err(ExprError::new(
            format!("invalid number `{}`", &src[start..end]),
            start,
            end - start,
        ));
    }
    let text = &src[start..i];
    let tok = if is_float {
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Tok::Float(f),
            _ => {
                return Err(ExprError::new(
                    format!("number `{text}` is out of range"),
                    start,
                    i - start,
                ));
            }
        }
    } else if let Ok(n) = text.parse::<i64>() {
        Tok::Int(n)
    } else if let Ok(n) = text.parse::<u64>() {
        Tok::UInt(n)
    } else {
        return Err(ExprError::new(
            format!("integer `{text}` is too large"),
            start,
            i - start,
        ));
    };
    Ok((tok, i))
}

/// Lexes a quoted string starting at `start` (the quote). Escapes: `\\ \' \" \n \r \t \0`,
/// `\uXXXX` and `\u{X...}`. Returns the decoded text and the end offset (after the quote).
fn lex_string(src: &str, start: usize, quote: char) -> Result<(String, usize), ExprError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((rel, c)) = chars.next() {
        let pos = start + 1 + rel;
        if c == quote {
            return Ok((out, pos + 1));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else {
            break;
        };
        match e {
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '0' => out.push('\0'),
            'u' => {
                let rest = &src[pos + 2..];
                let (hex, used) = if let Some(body) = rest.strip_prefix('{') {
                    match body.find('}') {
                        Some(close) => (&body[..close], close + 2),
                        None => ("", 0),
                    }
                } else {
                    let n = rest
                        .char_indices()
                        .take(4)
                        .take_while(|(_, h)| h.is_ascii_hexdigit())
                        .count();
                    if n == 4 { (&rest[..4], 4) } else { ("", 0) }
                };
                let decoded = if hex.is_empty() || hex.len() > 6 {
                    None
                } else {
                    u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
                };
                match decoded {
                    Some(ch) => {
                        out.push(ch);
                        for _ in 0..rest[..used].chars().count() {
                            chars.next();
                        }
                    }
                    None => {
                        return Err(ExprError::new(
                            "invalid unicode escape, expected `\\uXXXX` or `\\u{X...}`",
                            pos,
                            2,
                        ));
                    }
                }
            }
            other => {
                return Err(ExprError::new(
                    format!("unknown escape `\\{other}`"),
                    pos,
                    1 + other.len_utf8(),
                ));
            }
        }
    }
    Err(ExprError::new("unterminated string", start, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize(src)
            .expect("valid tokens")
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    fn err(src: &str) -> ExprError {
        tokenize(src).expect_err("should fail")
    }

    #[test]
    fn operators_and_punctuation() {
        assert_eq!(
            toks("== != < <= > >= && || ! + - * / % ( ) [ ] . ,"),
            vec![
                Tok::EqEq,
                Tok::NotEq,
                Tok::Lt,
                Tok::Le,
                Tok::Gt,
                Tok::Ge,
                Tok::AndAnd,
                Tok::OrOr,
                Tok::Bang,
                Tok::Plus,
                Tok::Minus,
                Tok::Star,
                Tok::Slash,
                Tok::Percent,
                Tok::LParen,
                Tok::RParen,
                Tok::LBracket,
                Tok::RBracket,
                Tok::Dot,
                Tok::Comma,
            ]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(toks("42"), vec![Tok::Int(42)]);
        assert_eq!(toks("1.5"), vec![Tok::Float(1.5)]);
        assert_eq!(toks("1e3"), vec![Tok::Float(1000.0)]);
        assert_eq!(toks("2.5E-1"), vec![Tok::Float(0.25)]);
        assert_eq!(toks("18446744073709551615"), vec![Tok::UInt(u64::MAX)]);
        let e = err("99999999999999999999999");
        assert_eq!(e.message, "integer `99999999999999999999999` is too large");
        assert_eq!((e.offset, e.len), (0, 23));
        let e = err("x + 12abc");
        assert_eq!(e.message, "invalid number `12abc`");
        assert_eq!((e.offset, e.len), (4, 5));
        assert_eq!(err("1e999").message, "number `1e999` is out of range");
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(toks(r#"'a"b'"#), vec![Tok::Str("a\"b".into())]);
        assert_eq!(toks(r#""a'b""#), vec![Tok::Str("a'b".into())]);
        assert_eq!(
            toks(r#"'\n\t\r\0\\\'\"'"#),
            vec![Tok::Str("\n\t\r\0\\'\"".into())]
        );
        assert_eq!(toks(r"'\u00e9\u{1F600}'"), vec![Tok::Str("é😀".into())]);
        assert_eq!(toks("'héllo'"), vec![Tok::Str("héllo".into())]);
        let e = err("x == 'abc");
        assert_eq!(
            (e.message.as_str(), e.offset, e.len),
            ("unterminated string", 5, 1)
        );
        let e = err(r"'a\qb'");
        assert_eq!(
            (e.message.as_str(), e.offset, e.len),
            ("unknown escape `\\q`", 2, 2)
        );
        let e = err(r"'\u{110000}'");
        assert_eq!(e.offset, 1);
        assert!(err(r"'\u12'").message.starts_with("invalid unicode escape"));
        assert_eq!(err("'\\").message, "unterminated string");
        assert_eq!(err("'\\é").message, "unknown escape `\\é`");
    }

    #[test]
    fn identifiers_and_member_names() {
        assert_eq!(
            toks("steps.build-linux.output"),
            vec![
                Tok::Ident("steps".into()),
                Tok::Dot,
                Tok::Ident("build-linux".into()),
                Tok::Dot,
                Tok::Ident("output".into()),
            ]
        );
        assert_eq!(
            toks("x.n-1"),
            vec![
                Tok::Ident("x".into()),
                Tok::Dot,
                Tok::Ident("n".into()),
                Tok::Minus,
                Tok::Int(1),
            ]
        );
        assert_eq!(
            toks("a-b"),
            vec![Tok::Ident("a".into()), Tok::Minus, Tok::Ident("b".into())]
        );
        assert_eq!(
            toks("x.0"),
            vec![Tok::Ident("x".into()), Tok::Dot, Tok::Ident("0".into())]
        );
    }

    #[test]
    fn bad_characters_point_at_themselves() {
        let e = err("a = b");
        assert_eq!(
            (e.message.as_str(), e.offset, e.len),
            ("unexpected `=`, did you mean `==`?", 2, 1)
        );
        assert_eq!(err("a & b").message, "unexpected `&`, did you mean `&&`?");
        assert_eq!(err("a | b").message, "unexpected `|`, did you mean `||`?");
        let e = err("é @");
        assert_eq!(
            (e.message.as_str(), e.offset, e.len),
            ("unexpected character `é`", 0, 2)
        );
        assert_eq!(err("\u{7}").message, "unexpected character '\\u{7}'");
    }
}
