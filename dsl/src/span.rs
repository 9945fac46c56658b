//! Positions in a source text: a [`Pos`] (byte offset, line, column) and a [`Span`] between
//! two of them, and a value with its [`Span`]. Shared by the YAML tree, the model and the diagnostics.

/// A position in a source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Pos {
    /// Byte offset from the start of the text.
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

/// A range of a source text: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    /// First position of the range.
    pub start: Pos,
    /// Position just after the range.
    pub end: Pos,
}

impl Span {
    /// An empty span at `pos`.
    pub fn at(pos: Pos) -> Span {
        Span {
            start: pos,
            end: pos,
        }
    }

    /// The span of the first character of a text (line 1, column 1), for file-level problems.
    pub(crate) fn file_start() -> Span {
        Span::at(Pos {
            offset: 0,
            line: 1,
            column: 1,
        })
    }
}

/// The position of a byte offset in a text.
pub(crate) fn offset_to_pos(source: &str, offset: usize) -> Pos {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    Pos {
        offset,
        line: before.matches('\n').count() + 1,
        column: source[line_start..offset].chars().count() + 1,
    }
}

/// A value and the span of the YAML node it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Wraps a value with its span.
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}
