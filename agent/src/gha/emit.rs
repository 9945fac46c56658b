//! A small YAML writer for converted workflows: an ordered tree ([`Out`]) rendered as block
//! YAML, with every string written so that it reads back as the same string (plain when
//! that is unambiguous, a `|` block for multi-line text, quoted otherwise).

/// A value of the output document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Out>),
    Map(Vec<(String, Out)>),
}

impl Out {
    pub(crate) fn str(s: impl Into<String>) -> Out {
        Out::Str(s.into())
    }

    /// A mapping built from pairs.
    pub(crate) fn map(entries: Vec<(&str, Out)>) -> Out {
        Out::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
}

/// Renders a document (a mapping at the top) as YAML text ending with a newline.
pub(crate) fn render(doc: &Out) -> String {
    let mut out = String::new();
    match doc {
        Out::Map(entries) if !entries.is_empty() => map_body(&mut out, entries, 0),
        other => {
            out.push_str(&inline(other, 0));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Entries of a mapping, each starting on its own line at `indent` (the first one's
/// indentation is assumed written by the caller when `first_inline`).
fn map_body(out: &mut String, entries: &[(String, Out)], indent: usize) {
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            pad(out, indent);
        }
        entry(out, k, v, indent);
    }
}

fn entry(out: &mut String, key: &str, v: &Out, indent: usize) {
    let is_ident = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if is_ident {
        out.push_str(key);
    } else {
        out.push_str(&scalar_inline(key));
    }
    out.push(':');
    value_after_key(out, v, indent);
}

/// Writes a value after `key:` or `-` (the caller wrote that), ending with a newline.
fn value_after_key(out: &mut String, v: &Out, indent: usize) {
    match v {
        Out::Map(m) if !m.is_empty() => {
            out.push('\n');
            pad(out, indent + 2);
            map_body(out, m, indent + 2);
        }
        Out::Seq(s) if !s.is_empty() => {
            out.push('\n');
            seq_body(out, s, indent + 2);
        }
        Out::Str(s) if is_block(s) => {
            out.push(' ');
            block(out, s, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other, indent));
            out.push('\n');
        }
    }
}

fn seq_body(out: &mut String, items: &[Out], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item {
            Out::Map(m) if !m.is_empty() => {
                out.push(' ');
                map_body(out, m, indent + 2);
            }
            Out::Seq(s) if !s.is_empty() => {
                out.push('\n');
                seq_body(out, s, indent + 2);
            }
            Out::Str(s) if is_block(s) => {
                out.push(' ');
                block(out, s, indent + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&inline(other, indent));
                out.push('\n');
            }
        }
    }
}

fn inline(v: &Out, _indent: usize) -> String {
    match v {
        Out::Null => "null".into(),
        Out::Bool(b) => b.to_string(),
        Out::Int(i) => i.to_string(),
        Out::Float(f) if f.is_finite() => {
            let s = f.to_string();
            if s.contains(['.', 'e', 'E']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        Out::Float(_) => "null".into(),
        Out::Str(s) => scalar_inline(s),
        Out::Seq(_) => "[]".into(),
        Out::Map(_) => "{}".into(),
    }
    .to_string()
}

/// Whether a string is written as a `|` block: several lines of printable text.
fn is_block(s: &str) -> bool {
    s.contains('\n')
        && !s.contains('\r')
        && s.chars().all(|c| c == '\n' || c == '\t' || !c.is_control())
        && s.trim_end_matches('\n')
            .contains(|c: char| !c.is_whitespace())
        && !s.starts_with('\n')
        && !s.lines().any(|l| l.starts_with('\t'))
}

fn block(out: &mut String, s: &str, indent: usize) {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let first = s.lines().next().unwrap_or_default();
    let indicator = if first.starts_with(' ') { "2" } else { "" };
    out.push('|');
    out.push_str(indicator);
    out.push_str(chomp);
    out.push('\n');
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// A string on one line: plain when it reads back as this string, else quoted.
pub(crate) fn scalar_inline(s: &str) -> String {
    if plain_ok(s) {
        return s.to_string();
    }
    if !s.contains('\'') && !s.chars().any(char::is_control) {
        return format!("'{s}'");
    }
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.trim() != s || s.chars().any(char::is_control) {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first.is_ascii_digit() || "+.~".contains(first) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.contains(['\t']) {
        return false;
    }
    // Flow indicators are only special at the start and inside flow collections; keep
    // the conservative reading for `,` `[` `]` `{` `}` when they follow a space.
    let lower = s.to_ascii_lowercase();
    !matches!(
        lower.as_str(),
        "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads_back(v: &Out) {
        let doc = Out::map(vec![("k", v.clone())]);
        let text = render(&doc);
        let parsed = dsl::yaml::parse_str(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let json = parsed.root.to_json();
        let expected = to_json(v);
        assert_eq!(json["k"], expected, "{text}");
    }

    fn to_json(v: &Out) -> serde_json::Value {
        match v {
            Out::Null => serde_json::Value::Null,
            Out::Bool(b) => (*b).into(),
            Out::Int(i) => (*i).into(),
            Out::Float(f) => (*f).into(),
            Out::Str(s) => s.clone().into(),
            Out::Seq(s) => s.iter().map(to_json).collect(),
            Out::Map(m) => m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect(),
        }
    }

    /// Guards the writer: strings that look like other types, hold YAML indicators or span
    /// lines read back as the same strings.
    #[test]
    fn strings_read_back_unchanged() {
        for s in [
            "plain",
            "3.10",
            "true",
            "on",
            "null",
            "",
            " lead",
            "a: b",
            "x #y",
            "- item",
            "${{ matrix.os }}",
            "it's",
            "say \"hi\"",
            "line1\nline2\n",
            "line1\nline2",
            "line1\n\n",
            "  indented\nnext\n",
            "tab\tinside",
            "ctrl\u{1}",
            "*.md",
            "{0}",
            "a,b",
            "ünï ✨",
        ] {
            reads_back(&Out::str(s));
        }
        reads_back(&Out::Seq(vec![
            Out::str("a\nb\n"),
            Out::map(vec![("x", Out::Int(1)), ("y", Out::Seq(vec![Out::Null]))]),
            Out::Seq(vec![Out::Bool(true)]),
        ]));
        reads_back(&Out::Map(vec![]));
        reads_back(&Out::Float(1.5));
    }
}
