//! A YAML tree that keeps positions.
//!
//! Built from `saphyr-parser`'s event stream (not serde), so that every node keeps its
//! [`Span`] and a document with several problems can be lowered in one pass. This module owns
//! YAML syntax only: scalar typing (plain `true`/`1.5`/`null` become typed, quoted ones stay
//! strings), alias resolution under an expansion budget, a nesting-depth limit, duplicate keys
//! and the file-size limit. It knows nothing of workflows. [`reader`] reads typed values out
//! of the tree with the crate's wording for wrong types, unknown and missing keys.

use crate::diagnostic::Diagnostic;
use crate::span::offset_to_pos;
pub use crate::span::{Pos, Span};

mod node;
pub mod reader;

pub use node::{Node, NodeKind, Scalar, ScalarValue, Style};
use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};
use std::collections::HashMap;
use std::path::Path;

/// Largest workflow file accepted, checked before reading (1 MiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Deepest nesting of sequences and mappings accepted.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most nodes a document may hold after aliases are expanded.
pub(crate) const MAX_NODES: usize = 100_000;

/// Resolves a plain scalar by the YAML 1.2 core schema.
pub(crate) fn resolve_plain(text: &str) -> ScalarValue {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarValue::Null,
        "true" | "True" | "TRUE" => return ScalarValue::Bool(true),
        "false" | "False" | "FALSE" => return ScalarValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return ScalarValue::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return ScalarValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return ScalarValue::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => ScalarValue::Int(i),
            Err(_) => text
                .parse::<f64>()
                .map(ScalarValue::Float)
                .unwrap_or(ScalarValue::Str),
        };
    }
    if let Some(hex) = text.strip_prefix("0x")
        && !hex.is_empty()
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return ScalarValue::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && !oct.is_empty()
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return ScalarValue::Int(i);
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let is_float = {
        let mut i = 0;
        if i < bytes.len() && (bytes[i] == b'-' || bytes[i] == b'+') {
            i += 1;
        }
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_digits = i - int_start;
        let mut frac_digits = 0;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let s = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_digits = i - s;
        }
        let mut ok = int_digits > 0 || frac_digits > 0;
        if ok && i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            i += 1;
            if i < bytes.len() && (bytes[i] == b'-' || bytes[i] == b'+') {
                i += 1;
            }
            let s = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            ok = i > s;
        }
        ok && i == bytes.len()
    };
    if is_float && let Ok(f) = text.parse::<f64>() {
        return ScalarValue::Float(f);
    }
    ScalarValue::Str
}

/// Maps saphyr's character-based markers to byte offsets.
///
/// Markers arrive almost in order, so the last answer is kept as a cursor and the next one
/// is found by walking forward from it: a 1 MiB single-line document stays linear.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
    /// (line, 0-based column, byte offset) of the last marker mapped.
    cursor: std::cell::Cell<(usize, usize, usize)>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex {
            text,
            starts,
            cursor: std::cell::Cell::new((1, 0, 0)),
        }
    }

    fn pos(&self, m: &saphyr_parser::Marker) -> Pos {
        let line = m.line().max(1);
        let Some(&start) = self.starts.get(line - 1) else {
            return Pos {
                offset: self.text.len(),
                line,
                column: m.col() + 1,
            };
        };
        let (cl, cc, co) = self.cursor.get();
        let (from_col, from) = if cl == line && cc <= m.col() {
            (cc, co)
        } else {
            (0, start)
        };
        let rest = &self.text[from..];
        let offset = rest
            .char_indices()
            .nth(m.col() - from_col)
            .map(|(i, _)| from + i)
            .unwrap_or_else(|| from + rest.len());
        self.cursor.set((line, m.col(), offset));
        Pos {
            offset,
            line,
            column: m.col() + 1,
        }
    }

    fn span(&self, s: &saphyr_parser::Span) -> Span {
        Span {
            start: self.pos(&s.start),
            end: self.pos(&s.end),
        }
    }
}

enum Frame {
    Seq {
        anchor: usize,
        start: Span,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        start: Span,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        /// Key text -> index in `entries` (duplicate checks stay linear in the file size).
        index: HashMap<String, usize>,
        /// Entries that came from a `<<` merge key; explicit keys override them.
        merged: Vec<bool>,
    },
}

/// Reads a file into a tree, refusing files over [`MAX_FILE_BYTES`] before reading them.
/// The second element is the source text, when it could be read.
pub fn parse_file(path: &Path) -> (Option<String>, Result<Parsed, Vec<Diagnostic>>) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return (
                None,
                Err(vec![Diagnostic::error(
                    Span::file_start(),
                    format!("cannot read file: {}", io_message(&e)),
                )]),
            );
        }
    };
    if !meta.is_file() {
        return (
            None,
            Err(vec![Diagnostic::error(
                Span::file_start(),
                "not a regular file",
            )]),
        );
    }
    if meta.len() > MAX_FILE_BYTES {
        return (
            None,
            Err(vec![Diagnostic::error(
                Span::file_start(),
                format!(
                    "file is too large ({} bytes); workflow files are limited to 1 MiB",
                    meta.len()
                ),
            )]),
        );
    }
    // Read at most the limit plus one byte, in case the file grew after the check.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    let read = std::fs::File::open(path).and_then(|f| {
        use std::io::Read;
        f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)
    });
    if let Err(e) = read {
        return (
            None,
            Err(vec![Diagnostic::error(
                Span::file_start(),
                format!("cannot read file: {}", io_message(&e)),
            )]),
        );
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return (
            None,
            Err(vec![Diagnostic::error(
                Span::file_start(),
                "file is too large; workflow files are limited to 1 MiB",
            )]),
        );
    }
    match String::from_utf8(bytes) {
        Ok(text) => {
            let tree = parse_str(&text);
            (Some(text), tree)
        }
        Err(e) => (
            None,
            Err(vec![Diagnostic::error(
                Span::file_start(),
                format!(
                    "file is not valid UTF-8 (at byte {})",
                    e.utf8_error().valid_up_to()
                ),
            )]),
        ),
    }
}

fn io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    // "No such file or directory (os error 2)" -> "no such file or directory (os error 2)"
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// A parsed document.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The tree.
    pub root: Node,
    /// Errors that still left a complete tree (a duplicate key keeps its first value, a bad
    /// merge key is skipped): reported together with what the tree's reader finds, so that
    /// one pass shows every problem of the file.
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses one YAML document into a tree. Text over [`MAX_FILE_BYTES`] is refused.
pub fn parse_str(text: &str) -> Result<Parsed, Vec<Diagnostic>> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(vec![Diagnostic::error(
            Span::file_start(),
            "file is too large; workflow files are limited to 1 MiB",
        )]);
    }
    Builder::new(text).run()
}

struct Builder<'a> {
    text: &'a str,
    index: LineIndex<'a>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    root: Option<Node>,
    documents: usize,
    diags: Vec<Diagnostic>,
    /// Whether an alias was expanded (for the size-limit message).
    aliases: bool,
}

enum Stop {
    Fatal(Diagnostic),
}

impl<'a> Builder<'a> {
    fn new(text: &'a str) -> Self {
        Builder {
            text,
            index: LineIndex::new(text),
            stack: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            root: None,
            documents: 0,
            diags: Vec::new(),
            aliases: false,
        }
    }

    fn run(mut self) -> Result<Parsed, Vec<Diagnostic>> {
        let mut parser = Parser::new_from_str(self.text);
        loop {
            let ev = match parser.next_event() {
                None => break,
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    self.diags.push(self.scan_error(&e));
                    return Err(self.diags);
                }
            };
            let (event, span) = ev;
            let span = self.index.span(&span);
            match self.on_event(event, span) {
                Ok(true) => break,
                Ok(false) => {}
                Err(Stop::Fatal(d)) => {
                    self.diags.push(d);
                    return Err(self.diags);
                }
            }
        }
        match self.root.take() {
            Some(root) => Ok(Parsed {
                root,
                diagnostics: self.diags,
            }),
            None => {
                self.diags.push(Diagnostic::error(
                    Span::file_start(),
                    "the file is empty; expected a mapping with a `workflow:` key",
                ));
                Err(self.diags)
            }
        }
    }

    fn scan_error(&self, e: &ScanError) -> Diagnostic {
        let pos = self.index.pos(e.marker());
        if e.info().contains("recursion limit") {
            return Diagnostic::error(
                Span::at(pos),
                format!("nesting is too deep (more than {MAX_DEPTH} levels)"),
            );
        }
        Diagnostic::error(Span::at(pos), format!("invalid YAML: {}", e.info()))
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<bool, Stop> {
        match event {
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => return Ok(true),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Stop::Fatal(Diagnostic::error(
                        span,
                        "a workflow file holds one YAML document; found a second one",
                    )));
                }
            }
            Event::Alias(id) => {
                let Some(count) = self.anchors.get(&id).map(Node::count) else {
                    return Err(Stop::Fatal(Diagnostic::error(span, "unknown YAML alias")));
                };
                self.aliases = true;
                self.add_nodes(count, span)?;
                let Some(mut node) = self.anchors.get(&id).cloned() else {
                    return Err(Stop::Fatal(Diagnostic::error(span, "unknown YAML alias")));
                };
                node.span = span;
                self.push_node(node)?;
            }
            Event::Scalar(value, style, anchor, tag) => {
                self.add_nodes(1, span)?;
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                };
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
                let resolved = if style == Style::Plain && !forced_str {
                    resolve_plain(&value)
                } else {
                    ScalarValue::Str
                };
                let node = Node {
                    kind: NodeKind::Scalar(Scalar {
                        text: value.into_owned(),
                        style,
                        value: resolved,
                    }),
                    span,
                };
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_node(node)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.enter(span)?;
                self.stack.push(Frame::Seq {
                    anchor,
                    start: span,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                self.enter(span)?;
                self.stack.push(Frame::Map {
                    anchor,
                    start: span,
                    entries: Vec::new(),
                    pending_key: None,
                    index: HashMap::new(),
                    merged: Vec::new(),
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    anchor,
                    start,
                    items,
                }) = self.stack.pop()
                {
                    let end = items.last().map(|n| n.span.end).unwrap_or(span.end);
                    let node = Node {
                        kind: NodeKind::Seq(items),
                        span: Span {
                            start: start.start,
                            end: end.max_by_offset(span.end),
                        },
                    };
                    self.finish(anchor, node)?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    anchor,
                    start,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    let end = entries.last().map(|(_, v)| v.span.end).unwrap_or(span.end);
                    let node = Node {
                        kind: NodeKind::Map(entries),
                        span: Span {
                            start: start.start,
                            end: end.max_by_offset(span.end),
                        },
                    };
                    self.finish(anchor, node)?;
                }
            }
        }
        Ok(false)
    }

    fn add_nodes(&mut self, n: usize, span: Span) -> Result<(), Stop> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Stop::Fatal(Diagnostic::error(
                span,
                if self.aliases {
                    format!(
                        "the document expands to more than {MAX_NODES} nodes (YAML aliases expanding too much)"
                    )
                } else {
                    format!("the document has more than {MAX_NODES} nodes")
                },
            )));
        }
        Ok(())
    }

    fn enter(&mut self, span: Span) -> Result<(), Stop> {
        self.add_nodes(1, span)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(Stop::Fatal(Diagnostic::error(
                span,
                format!("nesting is too deep (more than {MAX_DEPTH} levels)"),
            )));
        }
        Ok(())
    }

    fn finish(&mut self, anchor: usize, node: Node) -> Result<(), Stop> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.push_node(node)
    }

    fn push_node(&mut self, node: Node) -> Result<(), Stop> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                index,
                merged,
                ..
            }) => match pending_key.take() {
                None => {
                    if !matches!(node.kind, NodeKind::Scalar(_)) {
                        return Err(Stop::Fatal(Diagnostic::error(
                            node.span,
                            format!("a mapping key must be a scalar, found {}", node.type_name()),
                        )));
                    }
                    *pending_key = Some(node);
                }
                Some(key) => {
                    let is_merge = key
                        .as_scalar()
                        .is_some_and(|s| s.style == Style::Plain && s.text == "<<");
                    if is_merge {
                        // YAML merge key: `<<: *defaults` or `<<: [*a, *b]`; earlier
                        // sources win, explicit keys override merged ones.
                        let sources: Vec<Node> = match node.kind {
                            NodeKind::Map(_) => vec![node],
                            NodeKind::Seq(items)
                                if items.iter().all(|n| matches!(n.kind, NodeKind::Map(_))) =>
                            {
                                items
                            }
                            _ => {
                                self.diags.push(Diagnostic::error(
                                    node.span,
                                    "the merge key `<<` takes a mapping or a list of mappings",
                                ));
                                return Ok(());
                            }
                        };
                        for src in sources {
                            if let NodeKind::Map(src_entries) = src.kind {
                                for (k, v) in src_entries {
                                    let name = k.as_str().unwrap_or_default().to_owned();
                                    if let std::collections::hash_map::Entry::Vacant(slot) =
                                        index.entry(name)
                                    {
                                        slot.insert(entries.len());
                                        entries.push((k, v));
                                        merged.push(true);
                                    }
                                }
                            }
                        }
                        return Ok(());
                    }
                    let name = key.as_str().unwrap_or_default().to_owned();
                    match index.get(&name) {
                        Some(&i) if merged[i] => {
                            entries[i] = (key, node);
                            merged[i] = false;
                        }
                        Some(&i) => {
                            self.diags.push(Diagnostic::error(
                                key.span,
                                format!(
                                    "duplicate key `{name}` (first defined on line {})",
                                    entries[i].0.span.start.line
                                ),
                            ));
                        }
                        None => {
                            index.insert(name, entries.len());
                            entries.push((key, node));
                            merged.push(false);
                        }
                    }
                }
            },
        }
        Ok(())
    }
}

impl Pos {
    fn max_by_offset(self, other: Pos) -> Pos {
        if other.offset > self.offset {
            other
        } else {
            self
        }
    }
}

/// Maps a byte offset inside a scalar's value text back to a position in the file.
///
/// Exact for plain and single-line quoted scalars. For block scalars and quoted scalars with
/// escapes, the value is aligned with the source: the n-th `${{` of the value is the n-th
/// `${{` of the source, and the text after it is matched character by character (skipping
/// indentation and escape characters that the value does not have).
pub(crate) fn map_offset(
    source: &str,
    span: Span,
    style: Style,
    value: &str,
    value_offset: usize,
) -> Pos {
    let mut value_offset = value_offset.min(value.len());
    while !value.is_char_boundary(value_offset) {
        value_offset -= 1;
    }
    let raw_start = span.start.offset.min(source.len());
    let raw_end = span.end.offset.clamp(raw_start, source.len());
    let raw = &source[raw_start..raw_end];
    // Where the content starts in the raw text.
    let content_start = match style {
        Style::Plain => 0,
        Style::SingleQuoted | Style::DoubleQuoted => 1.min(raw.len()),
        // Block scalars' spans start at their first content character.
        Style::Literal | Style::Folded => 0,
    };
    let raw_content = &raw[content_start..];
    // Exact when the value is a verbatim copy of the source.
    let raw_offset = if style == Style::Plain && raw_content.starts_with(value) {
        value_offset
    } else {
        align(value, raw_content, value_offset)
    };
    let abs = raw_start + content_start + raw_offset.min(raw_content.len());
    // Count from the scalar's own start, not from the top of the file.
    advance(source, span.start, abs)
}

/// The position of byte offset `to`, counting forward from a known position `from`.
fn advance(source: &str, from: Pos, to: usize) -> Pos {
    if from.offset > to || from.offset > source.len() || !source.is_char_boundary(from.offset) {
        return offset_to_pos(source, to);
    }
    let mut to = to.min(source.len());
    while !source.is_char_boundary(to) {
        to -= 1;
    }
    let between = &source[from.offset..to];
    match between.rfind('\n') {
        None => Pos {
            offset: to,
            line: from.line,
            column: from.column + between.chars().count(),
        },
        Some(i) => Pos {
            offset: to,
            line: from.line + between.matches('\n').count(),
            column: between[i + 1..].chars().count() + 1,
        },
    }
}

/// Finds the raw offset for `value_offset` by anchoring on `${{` and aligning characters.
fn align(value: &str, raw: &str, value_offset: usize) -> usize {
    // Anchor: the last `${{` at or before the offset.
    let mut anchor_value = 0;
    let mut anchor_raw = first_content(raw);
    let value_anchors: Vec<usize> = value.match_indices("${{").map(|(i, _)| i).collect();
    let raw_anchors: Vec<usize> = raw.match_indices("${{").map(|(i, _)| i).collect();
    for (n, &va) in value_anchors.iter().enumerate() {
        if va > value_offset {
            break;
        }
        if let Some(&ra) = raw_anchors.get(n) {
            anchor_value = va;
            anchor_raw = ra;
        }
    }
    let mut r = anchor_raw;
    for ch in value[anchor_value..value_offset.max(anchor_value)].chars() {
        // Advance the raw cursor past the next occurrence of this character; spaces only
        // match nearby (a folded line break becomes a space in the value).
        match raw[r..].find(ch) {
            Some(i) if ch != ' ' || i <= 8 => r += i + ch.len_utf8(),
            _ => {
                r = (r + ch.len_utf8()).min(raw.len());
                while !raw.is_char_boundary(r) {
                    r += 1;
                }
            }
        }
    }
    r.min(raw.len())
}

fn first_content(raw: &str) -> usize {
    raw.len() - raw.trim_start_matches([' ', '\t']).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Node {
        match parse_str(s) {
            Ok(p) if p.diagnostics.is_empty() => p.root,
            Ok(p) => panic!("{:?}", p.diagnostics),
            Err(d) => panic!("{d:?}"),
        }
    }

    #[test]
    fn scalar_types_follow_style() {
        let n = parse("a: true\nb: 'true'\nc: 1.5\nd: 12\ne:\nf: \"x\"\n");
        let get = |k: &str| {
            n.get(k)
                .and_then(|v| v.as_scalar())
                .map(|s| s.value.clone())
        };
        assert_eq!(get("a"), Some(ScalarValue::Bool(true)));
        assert_eq!(get("b"), Some(ScalarValue::Str));
        assert_eq!(get("c"), Some(ScalarValue::Float(1.5)));
        assert_eq!(get("d"), Some(ScalarValue::Int(12)));
        assert_eq!(get("e"), Some(ScalarValue::Null));
        assert_eq!(get("f"), Some(ScalarValue::Str));
    }

    #[test]
    fn spans_point_at_nodes() {
        let src = "workflow:\n  name: héllo\n  stages:\n    - name: x\n";
        let n = parse(src);
        let wf = n.get("workflow").expect("workflow");
        let name = wf.get("name").expect("name");
        assert_eq!(name.span.start.line, 2);
        assert_eq!(name.span.start.column, 9);
        assert_eq!(&src[name.span.start.offset..name.span.end.offset], "héllo");
        let (k, _) = &wf.as_map().expect("map")[1];
        assert_eq!((k.span.start.line, k.span.start.column), (3, 3));
    }

    #[test]
    fn quoted_span_includes_quotes() {
        let src = "a: 'x''y'\nb: \"q\"\n";
        let n = parse(src);
        let a = n.get("a").expect("a");
        assert_eq!(&src[a.span.start.offset..a.span.end.offset], "'x''y'");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let p = parse_str("a: 1\nb: 2\na: 3\n").expect("a tree");
        let d = &p.diagnostics;
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("duplicate key `a`"));
        assert_eq!(d[0].span.start.line, 3);
        // The first value is kept, so the rest of the file can still be checked.
        assert_eq!(p.root.to_json(), serde_json::json!({"a": 1, "b": 2}));
    }

    #[test]
    fn merge_keys_merge_and_explicit_keys_win() {
        let n = parse("d: &d {a: 1, b: 2}\nx:\n  <<: *d\n  b: 3\n");
        let x = n.get("x").expect("x");
        assert_eq!(x.to_json(), serde_json::json!({"a": 1, "b": 3}));
    }

    #[test]
    fn many_keys_parse_in_linear_time() {
        let mut s = String::new();
        for i in 0..40_000 {
            s.push_str(&format!("k{i}: {i}\n"));
        }
        let start = std::time::Instant::now();
        let n = parse(&s);
        assert_eq!(n.as_map().map(<[_]>::len), Some(40_000));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            s.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        let d = parse_str(&s).expect_err("bomb");
        assert!(d[0].message.contains("expands to more than"), "{d:?}");
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let s = "[".repeat(10_000);
        let d = parse_str(&s).expect_err("deep");
        assert!(d[0].message.contains("too deep"), "{d:?}");
    }

    fn map_at(src: &str, n: &Node, off: usize) -> Pos {
        let s = n.as_scalar().expect("scalar");
        map_offset(src, n.span, s.style, &s.text, off)
    }

    #[test]
    fn maps_offsets_in_scalars() {
        let src = "a: x ${{ foo }}\nb: 'it''s ${{ bar }}'\nc: |\n  echo hi\n  echo ${{ baz }}\n";
        let n = parse(src);
        let a = n.get("a").expect("a");
        let p = map_at(src, a, 2);
        assert_eq!((p.line, p.column), (1, 6));
        let b = n.get("b").expect("b");
        let text = b.as_str().expect("str");
        let p = map_at(src, b, text.find("bar").expect("bar"));
        assert_eq!(&src[p.offset..p.offset + 3], "bar");
        let c = n.get("c").expect("c");
        let text = c.as_str().expect("str");
        let p = map_at(src, c, text.find("baz").expect("baz"));
        assert_eq!((p.line, &src[p.offset..p.offset + 3]), (5, "baz"));
        let p = map_at(src, c, text.find("hi").expect("hi"));
        assert_eq!((p.line, &src[p.offset..p.offset + 2]), (4, "hi"));
    }
}
