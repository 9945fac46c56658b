//! Diagnostics: one problem at one place, and their rendering as
//! `FILE:LINE:COL: error: TEXT` followed by the source line and a caret under the node.
//!
//! This module owns the message shape and the wording helpers every message shares (the
//! did-you-mean [`suggest`], backticked lists); the checks that produce diagnostics live in
//! `yaml`, `lower`, `validate` and `expr`.

use crate::span::Span;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// How serious a diagnostic is. Warnings never make a file invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The file is invalid.
    Error,
    /// Worth a look; the file is still valid.
    Warning,
}

/// One problem at one place in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where the problem is (in the file named by `file`).
    pub span: Span,
    /// What is wrong, lowercase, things named in backticks.
    pub message: String,
    /// An optional suggestion printed after the source excerpt.
    pub hint: Option<String>,
    /// The file and its text, attached when the diagnostic leaves the file's own check.
    pub file: Option<Arc<SourceFile>>,
}

/// A file's display name and text, shared by its diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as given by the user (used in `FILE:LINE:COL`).
    pub path: PathBuf,
    /// The text, when it could be read.
    pub text: Option<String>,
    /// Byte offsets of line starts, built on first use.
    line_starts: OnceLock<Vec<usize>>,
}

impl SourceFile {
    /// A shared source file.
    pub fn new(path: impl AsRef<Path>, text: Option<String>) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            path: path.as_ref().to_path_buf(),
            text,
            line_starts: OnceLock::new(),
        })
    }

    /// The text of a 1-based line (without its line break) and its byte offset.
    pub fn line(&self, line: usize) -> Option<(&str, usize)> {
        let text = self.text.as_deref()?;
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let idx = line.checked_sub(1)?;
        let start = *starts.get(idx)?;
        if start >= text.len() {
            return None;
        }
        let end = starts.get(idx + 1).map_or(text.len(), |next| next - 1);
        Some((&text[start..end], start))
    }
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            span,
            message: message.into(),
            hint: None,
            file: None,
        }
    }

    /// A warning at `span`.
    pub(crate) fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message)
        }
    }

    /// The same diagnostic with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// The same diagnostic attached to a file.
    pub fn in_file(mut self, file: &Arc<SourceFile>) -> Diagnostic {
        self.file = Some(Arc::clone(file));
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic with its attached file (or `<input>` when it has none).
    pub fn render(&self) -> String {
        match &self.file {
            Some(f) => render_line(
                &f.path.display().to_string(),
                f.line(self.span.start.line),
                self,
            ),
            None => render_line("<input>", None, self),
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

fn render_line(file: &str, line: Option<(&str, usize)>, d: &Diagnostic) -> String {
    let level = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let start = d.span.start;
    let mut out = format!(
        "{file}:{}:{}: {level}: {}\n",
        start.line, start.column, d.message
    );
    let Some((line_text, line_start)) = line else {
        if let Some(h) = &d.hint {
            let _ = writeln!(out, "  = help: {h}");
        }
        return out;
    };
    let line_text = line_text.strip_suffix('\r').unwrap_or(line_text);
    let orig_col = start.column.max(1);
    let width = if d.span.end.line == start.line && d.span.end.column > orig_col {
        d.span.end.column - orig_col
    } else if d.span.end.line > start.line {
        usize::MAX
    } else {
        1
    };
    // The caret's byte offset in the line, when the span's offset agrees with the line.
    let caret_byte = start.offset.checked_sub(line_start).filter(|b| {
        // A column of c characters spans c to 4c bytes in UTF-8.
        *b <= line_text.len()
            && line_text.is_char_boundary(*b)
            && *b >= orig_col - 1
            && *b <= 4 * (orig_col - 1)
    });
    // Very long lines are cut to a window around the caret.
    let (shown, col) = clip(line_text, orig_col, caret_byte);
    let number = start.line.to_string();
    let w = number.len();
    let line_chars = shown.chars().count();
    let carets = width.min(line_chars.saturating_sub(col - 1)).max(1);
    // Keep tabs as tabs under the caret so the caret lines up in any terminal.
    let mut pad: String = shown
        .chars()
        .take(col - 1)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let missing = (col - 1).saturating_sub(pad.chars().count());
    pad.push_str(&" ".repeat(missing));
    let _ = writeln!(out, "{:w$} |", "");
    let _ = writeln!(out, "{number} | {shown}");
    let _ = writeln!(out, "{:w$} | {pad}{}", "", "^".repeat(carets));
    if let Some(h) = &d.hint {
        let _ = writeln!(out, "{:w$} = help: {h}", "");
    }
    out
}

/// Longest source line printed whole; longer ones are cut around the caret.
const MAX_LINE_CHARS: usize = 160;

/// Cuts a long line to a window around the caret. Returns the text to show and the caret's
/// 1-based column in it. Works in bytes around `caret_byte` when it is known, so that many
/// diagnostics on one huge line stay cheap.
fn clip(line: &str, col: usize, caret_byte: Option<usize>) -> (String, usize) {
    if line.len() <= MAX_LINE_CHARS {
        return (line.to_owned(), col);
    }
    let half = MAX_LINE_CHARS / 2;
    let (from, to, caret) = match caret_byte {
        Some(b) => {
            let mut from = b.saturating_sub(half);
            while !line.is_char_boundary(from) {
                from -= 1;
            }
            let mut to = (b + half).min(line.len());
            while !line.is_char_boundary(to) {
                to += 1;
            }
            (from, to, b)
        }
        None => {
            // Fall back to characters.
            let idx: Vec<usize> = line.char_indices().map(|(i, _)| i).collect();
            let c = (col - 1).min(idx.len());
            let from = idx[c.saturating_sub(half).min(idx.len().saturating_sub(1))];
            let to = idx.get(c + half).copied().unwrap_or(line.len());
            let b = idx.get(c).copied().unwrap_or(line.len());
            (from, to.max(from), b.max(from))
        }
    };
    let mut out = String::new();
    let mut col = line[from..caret].chars().count() + 1;
    if from > 0 {
        out.push_str("...");
        col += 3;
    }
    out.push_str(&line[from..to]);
    if to < line.len() {
        out.push_str("...");
    }
    (out, col)
}

/// Every diagnostic of a load: possibly from several files (a workflow and the
/// sub-workflows it calls).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// The number of errors.
    pub fn error_count(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }

    /// Renders all diagnostics, one block per diagnostic, in order.
    pub fn render(&self) -> String {
        self.0.iter().map(Diagnostic::render).collect()
    }

    /// The diagnostics.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The closest candidate to `word`, if one is close enough to suggest.
pub fn suggest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        let close = score >= 0.85 || strsim::damerau_levenshtein(word, c) <= 1;
        if close && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// `a`, `b` and `c` -> "`a`, `b`, `c`".
pub(crate) fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The candidate closest to `word`, if it is close enough to be a likely typo. A candidate
/// equal to `word` but for case and underscores wins outright, so GitHub Actions' spellings
/// (`toJSON`, `startsWith`, `hashFiles`) point at ours (`to_json`, `startswith`, `hash_files`).
pub(crate) fn suggest_spelling<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let folded = fold(word);
    let candidates: Vec<&'a str> = candidates.collect();
    if let Some(same) = candidates.iter().find(|c| fold(c) == folded) {
        return Some(same);
    }
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Pos;

    #[test]
    fn long_lines_are_cut_around_the_caret() {
        let line = format!("{}BAD{}", "a".repeat(1000), "b".repeat(1000));
        let at = |column| Pos {
            offset: 0,
            line: 1,
            column,
        };
        let d = Diagnostic::error(
            Span {
                start: at(1001),
                end: at(1004),
            },
            "bad",
        );
        let out = d.in_file(&SourceFile::new("f.yaml", Some(line))).render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "f.yaml:1:1001: error: bad");
        assert!(lines[2].len() < 200, "{}", lines[2]);
        let caret_at = lines[3].find('^').expect("caret");
        assert_eq!(&lines[2][caret_at..caret_at + 3], "BAD");
        assert_eq!(lines[3].matches('^').count(), 3);
    }

    #[test]
    fn renders_caret_under_node() {
        let src = "a\n\n\n\n\n\n\n\n\n\n\n      paralel: true\n";
        let d = Diagnostic::error(
            Span {
                start: Pos {
                    offset: 0,
                    line: 12,
                    column: 7,
                },
                end: Pos {
                    offset: 0,
                    line: 12,
                    column: 14,
                },
            },
            "unknown key `paralel`, did you mean `parallel`?",
        );
        let out = d
            .in_file(&SourceFile::new("deploy.yaml", Some(src.to_owned())))
            .render();
        assert_eq!(
            out,
            "deploy.yaml:12:7: error: unknown key `paralel`, did you mean `parallel`?\n   |\n12 |       paralel: true\n   |       ^^^^^^^\n"
        );
    }
}
