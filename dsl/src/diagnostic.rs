//! Diagnostics: one problem at one place, and their rendering as
//! `FILE:LINE:COL: error: TEXT` followed by the source line and a caret under the node.
//!
//! This module owns the message shape only; the checks that produce diagnostics live in
//! `yaml`, `lower` and `validate`.

use crate::yaml::Span;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

impl SourceFile {
    /// A shared source file.
    pub fn new(path: impl AsRef<Path>, text: Option<String>) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            path: path.as_ref().to_path_buf(),
            text,
        })
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
    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
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
            Some(f) => render(&f.path.display().to_string(), f.text.as_deref(), self),
            None => render("<input>", None, self),
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// Renders one diagnostic against a file name and its text:
///
/// ```text
/// deploy.yaml:12:7: error: unknown key `paralel`, did you mean `parallel`?
///    |
/// 12 |       paralel: true
///    |       ^^^^^^^
/// ```
pub fn render(file: &str, source: Option<&str>, d: &Diagnostic) -> String {
    let level = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let start = d.span.start;
    let mut out = format!(
        "{file}:{}:{}: {level}: {}\n",
        start.line, start.column, d.message
    );
    if let Some(src) = source
        && let Some(line_text) = src.lines().nth(start.line.saturating_sub(1))
    {
        let line_text = line_text.strip_suffix('\r').unwrap_or(line_text);
        let number = start.line.to_string();
        let w = number.len();
        let col = start.column.max(1);
        let line_chars = line_text.chars().count();
        let carets = if d.span.end.line == start.line && d.span.end.column > col {
            d.span.end.column - col
        } else if d.span.end.line > start.line {
            line_chars.saturating_sub(col - 1)
        } else {
            1
        }
        .max(1);
        // Keep tabs as tabs under the caret so the caret lines up in any terminal.
        let pad: String = line_text
            .chars()
            .take(col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let pad = if pad.chars().count() < col - 1 {
            format!("{pad}{}", " ".repeat(col - 1 - pad.chars().count()))
        } else {
            pad
        };
        let _ = writeln!(out, "{:w$} |", "");
        let _ = writeln!(out, "{number} | {line_text}");
        let _ = writeln!(out, "{:w$} | {pad}{}", "", "^".repeat(carets));
        if let Some(h) = &d.hint {
            let _ = writeln!(out, "{:w$} = help: {h}", "");
        }
    } else if let Some(h) = &d.hint {
        let _ = writeln!(out, "  = help: {h}");
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::Pos;

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
        let out = render("deploy.yaml", Some(src), &d);
        assert_eq!(
            out,
            "deploy.yaml:12:7: error: unknown key `paralel`, did you mean `parallel`?\n   |\n12 |       paralel: true\n   |       ^^^^^^^\n"
        );
    }
}
