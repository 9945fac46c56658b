//! Reading typed values out of a spanned YAML tree, collecting every problem instead of
//! stopping at the first.
//!
//! A [`Reader`] holds the diagnostics found so far. Its getters take a node and the name the
//! messages use for it (`what`), return the value with its [`Spanned`] position, or `None`
//! after recording a diagnostic at the node's `line:col`:
//!
//! - `expected a string for `name`, found a mapping` (wrong type);
//! - `unknown key `paralel` in a stage, did you mean `parallel`?` with the allowed keys as
//!   a hint (a mapping's keys are checked when it is opened with [`Reader::map`]);
//! - `missing required key `steps` in a stage` ([`Reader::require`]);
//! - range, duration and enumerated-value messages naming the key.
//!
//! The workflow lowering reads files with it; anything else that reads YAML with the same
//! wording (a daemon configuration) can too.

use std::sync::Arc;
use std::time::Duration;

use super::node::{Node, NodeKind, ScalarValue};
use crate::diagnostic::{Diagnostic, Diagnostics, SourceFile, list, suggest};
use crate::span::{Span, Spanned};

/// Longest duration accepted anywhere (one year).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Collects diagnostics while typed values are read out of a tree.
#[derive(Debug, Default)]
pub struct Reader {
    diags: Vec<Diagnostic>,
}

/// A mapping whose keys were checked by [`Reader::map`].
#[derive(Debug, Clone, Copy)]
pub struct Map<'n> {
    node: &'n Node,
    entries: &'n [(Node, Node)],
}

impl<'n> Map<'n> {
    /// The mapping's own node.
    pub fn node(&self) -> &'n Node {
        self.node
    }

    /// Every entry, in file order (keys included, also the unknown ones).
    pub fn entries(&self) -> &'n [(Node, Node)] {
        self.entries
    }

    /// The value under `key`; a null value counts as absent.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    /// The key node of `key` (for pointing at the key rather than its value).
    pub fn key(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k)
    }

    /// Whether `key` is present with a non-null value.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

impl Reader {
    /// A reader with no diagnostics yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Records an error at `span`.
    pub fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(span, msg));
    }

    /// Records "expected `expected` for `what`, found <the node's type>".
    pub fn type_error(&mut self, node: &Node, expected: &str, what: &str) {
        self.error(
            node.span,
            format!(
                "expected {expected} for `{what}`, found {}",
                node.type_name()
            ),
        );
    }

    /// The diagnostics recorded so far.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diags
    }

    /// The diagnostics recorded, in the order they were found.
    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diags
    }

    /// Whether an error (not only warnings) was recorded.
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics recorded, each placed in `file` (so they render as
    /// `FILE:LINE:COL: error: ...` with the source line), in source order.
    pub fn into_file_diagnostics(self, file: &Arc<SourceFile>) -> Diagnostics {
        let mut diags = self.diags;
        diags.sort_by_key(|d| (d.span.start.line, d.span.start.column));
        Diagnostics(diags.into_iter().map(|d| d.in_file(file)).collect())
    }

    /// Checks that `node` is a mapping and reports each key not in `keys` (with the closest
    /// allowed key, and the allowed keys as a hint). `what` names the mapping in messages
    /// ("a stage", "`workflow`").
    pub fn map<'n>(&mut self, node: &'n Node, keys: &[&str], what: &str) -> Option<Map<'n>> {
        let Some(entries) = node.as_map() else {
            self.type_error(node, "a mapping", what);
            return None;
        };
        for (k, _) in entries {
            let name = k.as_str().unwrap_or_default();
            if !keys.contains(&name) {
                let msg = match suggest(name, keys.iter().copied()) {
                    Some(s) => format!("unknown key `{name}` in {what}, did you mean `{s}`?"),
                    None => format!("unknown key `{name}` in {what}"),
                };
                let d = Diagnostic::error(k.span, msg)
                    .with_hint(format!("allowed keys: {}", list(keys)));
                self.diags.push(d);
            }
        }
        Some(Map { node, entries })
    }

    /// Checks that `node` is a mapping whose keys are free (names chosen by the user), and
    /// returns its entries.
    pub fn entries<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Node, Node)]> {
        let entries = node.as_map();
        if entries.is_none() {
            self.type_error(node, "a mapping", what);
        }
        entries
    }

    /// The value under `key`, or a "missing required key" error at the key (when it is
    /// there with a null value) or at the mapping.
    pub fn require<'n>(&mut self, m: &Map<'n>, key: &str, what: &str) -> Option<&'n Node> {
        let v = m.get(key);
        if v.is_none() {
            let span = m.key(key).map(|k| k.span).unwrap_or(m.node.span);
            self.error(span, format!("missing required key `{key}` in {what}"));
        }
        v
    }

    /// Reads `key` of `m` with `read` (given the key as `what`), if it is present.
    pub fn field<'n, T>(
        &mut self,
        m: &Map<'n>,
        key: &str,
        read: impl FnOnce(&mut Self, &'n Node, &str) -> Option<T>,
    ) -> Option<T> {
        let node = m.get(key)?;
        read(self, node, key)
    }

    /// A scalar's text (numbers and booleans as written); null is a type error.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        match node.as_scalar() {
            Some(s) if s.value != ScalarValue::Null => {
                Some(Spanned::new(s.text.clone(), node.span))
            }
            _ => {
                self.type_error(node, "a string", what);
                None
            }
        }
    }

    /// `true` or `false`.
    pub fn bool(&mut self, node: &Node, what: &str) -> Option<Spanned<bool>> {
        match node.as_scalar().map(|s| &s.value) {
            Some(ScalarValue::Bool(b)) => Some(Spanned::new(*b, node.span)),
            _ => {
                self.type_error(node, "`true` or `false`", what);
                None
            }
        }
    }

    /// An integer in `min..=max` (a `max` of 2^31 or more reads "at least `min`").
    pub fn int(&mut self, node: &Node, what: &str, min: i64, max: i64) -> Option<Spanned<i64>> {
        match node.as_scalar().map(|s| &s.value) {
            Some(ScalarValue::Int(i)) => {
                if *i < min || *i > max {
                    let range = if max >= 1 << 31 {
                        format!("at least {min}")
                    } else {
                        format!("between {min} and {max}")
                    };
                    self.error(node.span, format!("`{what}` must be {range}, found {i}"));
                    None
                } else {
                    Some(Spanned::new(*i, node.span))
                }
            }
            _ => {
                self.type_error(node, "an integer", what);
                None
            }
        }
    }

    /// A finite number (integer or float) in `min..=max`.
    pub fn number(&mut self, node: &Node, what: &str, min: f64, max: f64) -> Option<Spanned<f64>> {
        let v = match node.as_scalar().map(|s| &s.value) {
            Some(ScalarValue::Int(i)) => *i as f64,
            Some(ScalarValue::Float(f)) => *f,
            _ => {
                self.type_error(node, "a number", what);
                return None;
            }
        };
        if !v.is_finite() || v < min || v > max {
            self.error(
                node.span,
                format!(
                    "`{what}` must be between {min} and {max}, found {}",
                    node.as_str().unwrap_or_default()
                ),
            );
            return None;
        }
        Some(Spanned::new(v, node.span))
    }

    /// A duration of at most [`MAX_DURATION`]: seconds (`90`, `1.5`) or text such as `90s`,
    /// `5m`, `1h 30m`.
    pub fn duration(&mut self, node: &Node, what: &str) -> Option<Spanned<Duration>> {
        let Some(s) = node.as_scalar() else {
            self.type_error(node, "a duration", what);
            return None;
        };
        let d = match s.value {
            ScalarValue::Int(i) if i >= 0 => Some(Duration::from_secs(i as u64)),
            ScalarValue::Float(f)
                if f.is_finite() && f >= 0.0 && f <= MAX_DURATION.as_secs_f64() =>
            {
                Some(Duration::from_secs_f64(f))
            }
            ScalarValue::Int(_) | ScalarValue::Float(_) => {
                self.error(
                    node.span,
                    format!("`{what}` must not be negative, found {}", s.text),
                );
                return None;
            }
            ScalarValue::Str => match humantime::parse_duration(s.text.trim()) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.diags.push(
                        Diagnostic::error(
                            node.span,
                            format!("invalid duration `{}` for `{what}`: {e}", s.text),
                        )
                        .with_hint("write a number of seconds (`90`, `1.5`) or a duration like `90s`, `5m`, `1h 30m`"),
                    );
                    return None;
                }
            },
            _ => None,
        };
        match d {
            Some(d) if d > MAX_DURATION => {
                self.error(
                    node.span,
                    format!("`{what}` is out of range (at most one year)"),
                );
                None
            }
            Some(d) => Some(Spanned::new(d, node.span)),
            None => {
                self.type_error(node, "a duration", what);
                None
            }
        }
    }

    /// One of the strings of `all`, as its value; anything else is reported with the
    /// allowed strings and the closest one.
    pub fn keyword<T: Copy>(
        &mut self,
        node: &Node,
        what: &str,
        all: &[(&'static str, T)],
    ) -> Option<Spanned<T>> {
        let text = match node.as_scalar() {
            Some(s) if s.value != ScalarValue::Null => s.text.as_str(),
            _ => {
                self.type_error(node, "a string", what);
                return None;
            }
        };
        if let Some((_, v)) = all.iter().find(|(t, _)| *t == text) {
            return Some(Spanned::new(*v, node.span));
        }
        let names: Vec<&str> = all.iter().map(|(t, _)| *t).collect();
        let mut msg = format!(
            "invalid value `{text}` for `{what}`; expected one of {}",
            list(&names)
        );
        if let Some(s) = suggest(text, names.iter().copied()) {
            msg.push_str(&format!(" (did you mean `{s}`?)"));
        }
        self.error(node.span, msg);
        None
    }

    /// A sequence read item by item with `item` (items it rejects are left out); null is an
    /// empty list, anything else a type error.
    pub fn list<T>(
        &mut self,
        node: &Node,
        what: &str,
        mut item: impl FnMut(&mut Self, &Node) -> Option<T>,
    ) -> Vec<T> {
        match &node.kind {
            NodeKind::Seq(items) => items.iter().filter_map(|n| item(self, n)).collect(),
            _ if node.is_null() => Vec::new(),
            _ => {
                self.type_error(node, "a list", what);
                Vec::new()
            }
        }
    }

    /// A list of strings; a single scalar counts as a list of one.
    pub fn string_list(&mut self, node: &Node, what: &str) -> Vec<Spanned<String>> {
        match &node.kind {
            NodeKind::Seq(items) => items.iter().filter_map(|n| self.string(n, what)).collect(),
            NodeKind::Scalar(_) => self.string(node, what).into_iter().collect(),
            NodeKind::Map(_) => {
                self.type_error(node, "a list of strings", what);
                Vec::new()
            }
        }
    }

    /// A sequence's items; anything else is a type error and reads as no items.
    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> &'n [Node] {
        match &node.kind {
            NodeKind::Seq(items) => items,
            _ => {
                self.type_error(node, "a sequence", what);
                &[]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_str;

    fn read<T>(src: &str, f: impl FnOnce(&mut Reader, &Node) -> T) -> (T, Vec<String>) {
        let parsed = parse_str(src).expect("yaml");
        let mut r = Reader::new();
        let out = f(&mut r, &parsed.root);
        let msgs = r
            .into_diagnostics()
            .iter()
            .map(|d| {
                format!(
                    "{}:{}: {}",
                    d.span.start.line, d.span.start.column, d.message
                )
            })
            .collect();
        (out, msgs)
    }

    /// Typed getters return spanned values and report each problem at its node.
    #[test]
    fn getters_read_values_and_report_problems_at_their_node() {
        let src = "name: x\nretries: 0\ntimeout: 5m\nmode: fsat\nflags: [a, 1]\nparalel: 2\n";
        let ((name, retries, timeout, mode, flags), msgs) = read(src, |r, root| {
            let m = r
                .map(
                    root,
                    &["name", "retries", "timeout", "mode", "flags", "parallel"],
                    "the file",
                )
                .expect("map");
            let name = r.field(&m, "name", Reader::string);
            let retries = r.field(&m, "retries", |r, n, w| r.int(n, w, 1, 10));
            let timeout = r.field(&m, "timeout", Reader::duration);
            let mode = r.field(&m, "mode", |r, n, w| {
                r.keyword(n, w, &[("fast", 1), ("slow", 2)])
            });
            let flags = r.field(&m, "flags", |r, n, w| {
                Some(r.list(n, w, |r, n| r.string(n, "flags")))
            });
            (name, retries, timeout, mode, flags)
        });
        assert_eq!(name.expect("name").value, "x");
        assert!(retries.is_none() && mode.is_none());
        assert_eq!(timeout.expect("timeout").value, Duration::from_secs(300));
        assert_eq!(flags.expect("flags").len(), 2);
        assert_eq!(
            msgs,
            [
                "6:1: unknown key `paralel` in the file, did you mean `parallel`?",
                "2:10: `retries` must be between 1 and 10, found 0",
                "4:7: invalid value `fsat` for `mode`; expected one of `fast`, `slow` (did you mean `fast`?)",
            ]
        );
    }

    /// A required key that is absent is reported at the mapping, one with a null value at
    /// its key; a wrong type names what was expected and what was found.
    #[test]
    fn required_keys_and_wrong_types_are_reported() {
        let (_, msgs) = read("a:\n  b: {c: 1}\n  d:\n", |r, root| {
            let m = r.map(root, &["a"], "the file").expect("map");
            let a = r
                .map(m.get("a").expect("a"), &["b", "d"], "`a`")
                .expect("a map");
            r.require(&a, "d", "`a`");
            r.require(&a, "e", "`a`");
            r.field(&a, "b", Reader::bool);
        });
        assert_eq!(
            msgs,
            [
                "3:3: missing required key `d` in `a`",
                "2:3: missing required key `e` in `a`",
                "2:6: expected `true` or `false` for `b`, found a mapping",
            ]
        );
    }

    /// Diagnostics handed out for a file render with its name, line, column and source
    /// line, sorted by position.
    #[test]
    fn file_diagnostics_render_in_source_order() {
        let src = "a: 1\nb: x\n";
        let parsed = parse_str(src).expect("yaml");
        let mut r = Reader::new();
        let m = r.map(&parsed.root, &["a", "b"], "the file").expect("map");
        r.field(&m, "b", Reader::bool);
        r.field(&m, "a", Reader::bool);
        assert!(r.has_errors());
        let file = SourceFile::new("agent.yaml", Some(src.to_owned()));
        let rendered = r.into_file_diagnostics(&file).render();
        let lines: Vec<&str> = rendered
            .lines()
            .filter(|l| l.starts_with("agent.yaml"))
            .collect();
        assert_eq!(
            lines,
            [
                "agent.yaml:1:4: error: expected `true` or `false` for `a`, found an integer",
                "agent.yaml:2:4: error: expected `true` or `false` for `b`, found a string",
            ]
        );
    }
}
