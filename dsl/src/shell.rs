//! Where each `${{ }}` of a POSIX shell script (`run:` with bash or sh) sits in the shell's
//! grammar, and the rewritten script that reads every value from an environment variable.
//!
//! Values never become shell text: the engine hands the `n`-th value to the shell as a
//! variable and this module replaces the expression by the reference that gives back
//! exactly the value, one word, never split, globbed or re-parsed, as if GitHub Actions had
//! pasted it with perfect quoting:
//!
//! | where the `${{ }}` is | reference |
//! |---|---|
//! | unquoted (also inside `$( )`, backticks, `${X:-...}`) | `"${V}"` |
//! | inside double quotes, an unquoted-delimiter heredoc body, a comment | `${V}` |
//! | inside single quotes | `'"${V}"'` (close, quoted expansion, reopen) |
//! | inside `$'...'` | `'"${V}"$'` |
//! | inside arithmetic, `$(( ))` or `(( ))` | `${V}`; the value must be an integer |
//! | in the body of a heredoc with a quoted delimiter (`<<'EOF'`) | `${V}`, and that heredoc is rewritten to an unquoted delimiter with every `\`, `$` and `` ` `` of its text escaped: the body stays literal text with the value in it |
//!
//! The lexer follows the shell's states: unquoted words, `'...'`, `$'...'`, `"..."`,
//! comments (`#` at the start of a word, up to the end of the line, so an apostrophe in a
//! comment changes nothing), `$( )` and `(( ))` nesting, `${ }`, backticks (their text is
//! read again after `\\`, `` \` `` and `\$` lose their backslash, as the shell does) and
//! heredoc bodies (from the line after `<<WORD` to the line `WORD`, leading tabs stripped
//! for `<<-`).
//!
//! Forms that cannot be honoured are problems reported at validation with the position of
//! the expression: right after a backslash or a `$`, inside a heredoc delimiter, a
//! quoted-delimiter heredoc with values inside backticks or with a delimiter that is not a
//! plain word. `case ... esac` is followed so that a pattern's `)` does not end a `$( )`.
//! Not modelled: a heredoc's delimiter line inside a `$( )` that spans lines of that
//! heredoc's body (the body is taken to go on).

/// How the shell sees one expression's position, which decides its reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Outside quotes: `"${V}"`.
    Unquoted,
    /// Inside double quotes (or `${X:-...}` inside them): `${V}`.
    DoubleQuoted,
    /// Inside single quotes: `'"${V}"'`.
    SingleQuoted,
    /// Inside `$'...'`: `'"${V}"$'`.
    AnsiC,
    /// In a comment: `${V}` (never expanded).
    Comment,
    /// In a heredoc body (unquoted delimiter, or one this module rewrote): `${V}`.
    Heredoc,
    /// In shell arithmetic: `${V}`; the value must be an integer.
    Arithmetic,
}

impl Slot {
    /// The text that replaces the expression when its value is in the variable `var`.
    pub fn reference(self, var: &str) -> String {
        match self {
            Slot::Unquoted => format!("\"${{{var}}}\""),
            Slot::SingleQuoted => format!("'\"${{{var}}}\"'"),
            Slot::AnsiC => format!("'\"${{{var}}}\"$'"),
            Slot::DoubleQuoted | Slot::Comment | Slot::Heredoc | Slot::Arithmetic => {
                format!("${{{var}}}")
            }
        }
    }
}

/// A piece of a script: literal text or the place of the next expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Script text.
    Text(&'a str),
    /// An expression (numbered 0, 1, ... in order).
    Expr,
}

/// An expression whose position cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellProblem {
    /// Which expression (0 for the first).
    pub expr: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// A rewritten script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellScript {
    /// The text, every expression replaced by its reference.
    pub text: String,
    /// The slot of each expression, in order.
    pub slots: Vec<Slot>,
}

/// Whether a `shell:` value names a POSIX-style shell (the default bash/sh, or any program
/// that is not one of the known non-shell interpreters).
pub(crate) fn is_posix_shell(shell: Option<&str>) -> bool {
    let Some(shell) = shell else { return true };
    let prog = shell.split_whitespace().next().unwrap_or("");
    let base = prog.rsplit('/').next().unwrap_or(prog);
    !(base.starts_with("python")
        || matches!(
            base,
            "node" | "nodejs" | "perl" | "ruby" | "pwsh" | "powershell"
        ))
}

/// Rewrites a script whose expressions are read from the variables `var(0)`, `var(1)`, ...
/// Returns every problem found when some expression cannot be honoured.
pub fn rewrite(
    pieces: &[Piece<'_>],
    var: &dyn Fn(usize) -> String,
) -> Result<ShellScript, Vec<ShellProblem>> {
    let mut items = Vec::new();
    let mut n = 0;
    for piece in pieces {
        match piece {
            Piece::Text(t) => items.extend(t.chars().map(Item::Ch)),
            Piece::Expr => {
                items.push(Item::Ex(n));
                n += 1;
            }
        }
    }
    let mut slots = vec![None; n];
    let mut problems = Vec::new();
    let edits = {
        let mut lexer = Lexer::new(&items, &mut slots, &mut problems, false, 0);
        lexer.run();
        lexer.edits
    };
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.expr);
        problems.dedup();
        return Err(problems);
    }
    let slots: Vec<Slot> = slots
        .into_iter()
        .map(|s| s.unwrap_or(Slot::Unquoted))
        .collect();
    let mut text = String::new();
    let mut i = 0;
    while i < items.len() {
        if let Some(edit) = edits.iter().find(|e| e.word.0 == i) {
            text.push_str(&edit.delim);
            i = edit.word.1;
            continue;
        }
        let in_literal_body = edits.iter().any(|e| e.body.0 <= i && i < e.body.1);
        match items[i] {
            Item::Ex(k) => text.push_str(&slots[k].reference(&var(k))),
            Item::Ch(c) => {
                if in_literal_body && matches!(c, '\\' | '$' | '`') {
                    text.push('\\');
                }
                text.push(c);
            }
        }
        i += 1;
    }
    Ok(ShellScript { text, slots })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Ch(char),
    Ex(usize),
}

/// What ends an unquoted command context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The end of the text (the script, or a backtick's inside).
    Eof,
    /// `)` of `$(`.
    Paren,
    /// `))` of `$((` or `((`.
    Arith,
    /// `}` of `${`; `dq` when the `${` is inside double quotes.
    Brace { dq: bool },
}

#[derive(Debug, Clone)]
struct Doc {
    delim: String,
    strip_tabs: bool,
    literal: bool,
    /// Item range of the delimiter word after `<<`/`<<-`.
    word: (usize, usize),
    body_start: usize,
    line_start: usize,
    exprs: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Frame {
    Cmd {
        end: End,
        depth: usize,
        word_start: bool,
        /// Open `case ... esac` commands: their patterns' `)` closes nothing.
        cases: usize,
    },
    Single,
    AnsiC,
    Double,
    Comment,
    Heredoc(Doc),
}

/// A quoted-delimiter heredoc to rewrite: the delimiter word becomes `delim`, the body's
/// `\`, `$` and `` ` `` get a backslash.
#[derive(Debug, Clone)]
struct DocEdit {
    word: (usize, usize),
    delim: String,
    body: (usize, usize),
}

struct Lexer<'a> {
    items: &'a [Item],
    i: usize,
    stack: Vec<Frame>,
    pending: Vec<Doc>,
    slots: &'a mut Vec<Option<Slot>>,
    problems: &'a mut Vec<ShellProblem>,
    edits: Vec<DocEdit>,
    in_backtick: bool,
    depth: usize,
}

const MAX_BACKTICK_DEPTH: usize = 16;

impl<'a> Lexer<'a> {
    fn new(
        items: &'a [Item],
        slots: &'a mut Vec<Option<Slot>>,
        problems: &'a mut Vec<ShellProblem>,
        in_backtick: bool,
        depth: usize,
    ) -> Self {
        Lexer {
            items,
            i: 0,
            stack: vec![Frame::Cmd {
                end: End::Eof,
                depth: 0,
                word_start: true,
                cases: 0,
            }],
            pending: Vec::new(),
            slots,
            problems,
            edits: Vec::new(),
            in_backtick,
            depth,
        }
    }

    fn ch(&self, k: usize) -> Option<char> {
        match self.items.get(self.i + k) {
            Some(Item::Ch(c)) => Some(*c),
            _ => None,
        }
    }

    fn ex(&self, k: usize) -> Option<usize> {
        match self.items.get(self.i + k) {
            Some(Item::Ex(n)) => Some(*n),
            _ => None,
        }
    }

    fn problem(&mut self, expr: usize, message: impl Into<String>) {
        self.problems.push(ShellProblem {
            expr,
            message: message.into(),
        });
    }

    fn set(&mut self, n: usize, slot: Slot) {
        if let Some(s) = self.slots.get_mut(n) {
            *s = Some(slot);
        }
    }

    fn set_word_start(&mut self, value: bool) {
        if let Some(Frame::Cmd { word_start, .. }) = self.stack.last_mut() {
            *word_start = value;
        }
    }

    fn run(&mut self) {
        while self.i < self.items.len() {
            match self.stack.last().cloned() {
                None => {
                    // Only an unmatched closing of the outermost frame gets here: read on.
                    self.stack.push(Frame::Cmd {
                        end: End::Eof,
                        depth: 0,
                        word_start: true,
                        cases: 0,
                    });
                }
                Some(Frame::Cmd {
                    end,
                    depth,
                    word_start,
                    cases,
                }) => self.cmd(end, depth, word_start, cases),
                Some(Frame::Single) => self.single(),
                Some(Frame::AnsiC) => self.ansi_c(),
                Some(Frame::Double) => self.double(),
                Some(Frame::Comment) => self.comment(),
                Some(Frame::Heredoc(doc)) => self.heredoc(doc),
            }
        }
        // A heredoc open at the end runs to the end of the text.
        if let Some(Frame::Heredoc(doc)) = self.stack.last().cloned() {
            self.finish_doc(&doc, self.items.len());
        }
    }

    /// A backslash: escapes the next item; an expression there cannot be honoured.
    fn escape(&mut self) {
        if let Some(n) = self.ex(1) {
            self.problem(
                n,
                "a `${{ }}` right after a backslash cannot be escaped (its value is one literal word already); remove the backslash",
            );
            self.i += 1;
        } else {
            self.i += 2;
        }
    }

    /// `$` followed by `(`, `((`, `{`, `'` or `"`; returns false when it is a plain `$`.
    fn dollar(&mut self, dq: bool) -> bool {
        if let Some(n) = self.ex(1) {
            self.problem(
                n,
                "a `${{ }}` right after `$` would make its value a variable name; write `${{ }}` alone and read the variable it names with `env()`",
            );
            self.i += 1;
            return true;
        }
        match (self.ch(1), self.ch(2)) {
            (Some('('), Some('(')) => {
                self.push_cmd(End::Arith);
                self.i += 3;
            }
            (Some('('), _) => {
                self.push_cmd(End::Paren);
                self.i += 2;
            }
            (Some('{'), _) => {
                self.push_cmd(End::Brace { dq });
                self.i += 2;
            }
            (Some('\''), _) if !dq => {
                self.stack.push(Frame::AnsiC);
                self.i += 2;
            }
            (Some('"'), _) if !dq => {
                self.stack.push(Frame::Double);
                self.i += 2;
            }
            _ => return false,
        }
        true
    }

    fn push_cmd(&mut self, end: End) {
        self.stack.push(Frame::Cmd {
            end,
            depth: 0,
            word_start: !matches!(end, End::Brace { .. }),
            cases: 0,
        });
    }

    /// Whether the word `word` starts here and ends at a separator.
    fn keyword(&self, word: &str) -> bool {
        let n = word.chars().count();
        word.chars().enumerate().all(|(k, c)| self.ch(k) == Some(c))
            && match self.items.get(self.i + n) {
                None => true,
                Some(Item::Ch(c)) => c.is_whitespace() || matches!(c, ';' | '&' | '|' | ')'),
                Some(Item::Ex(_)) => false,
            }
    }

    fn cmd(&mut self, end: End, depth: usize, word_start: bool, cases: usize) {
        let item = self.items[self.i];
        let c = match item {
            Item::Ex(n) => {
                let slot = match end {
                    End::Arith => Slot::Arithmetic,
                    End::Brace { dq: true } => Slot::DoubleQuoted,
                    _ => Slot::Unquoted,
                };
                self.set(n, slot);
                self.set_word_start(false);
                self.i += 1;
                return;
            }
            Item::Ch(c) => c,
        };
        let dq = matches!(end, End::Brace { dq: true });
        let set_depth = |s: &mut Self, d: usize| {
            if let Some(Frame::Cmd { depth, .. }) = s.stack.last_mut() {
                *depth = d;
            }
        };
        // Whether the next character starts a word (for `#` comments and `((`); set on this
        // frame before any new frame is pushed.
        self.set_word_start(matches!(
            c,
            ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')'
        ));
        let set_cases = |s: &mut Self, n: usize| {
            if let Some(Frame::Cmd { cases, .. }) = s.stack.last_mut() {
                *cases = n;
            }
        };
        if word_start && end != End::Arith {
            if self.keyword("case") {
                set_cases(self, cases + 1);
                self.i += 4;
                return;
            }
            if self.keyword("esac") {
                set_cases(self, cases.saturating_sub(1));
                self.i += 4;
                return;
            }
        }
        match c {
            '\\' => self.escape(),
            '\'' if !dq => {
                self.stack.push(Frame::Single);
                self.i += 1;
            }
            '"' => {
                self.stack.push(Frame::Double);
                self.i += 1;
            }
            '$' => {
                if !self.dollar(dq) {
                    self.i += 1;
                }
            }
            '`' => self.backtick(false),
            '#' if word_start && !matches!(end, End::Arith | End::Brace { .. }) => {
                self.stack.push(Frame::Comment);
                self.i += 1;
            }
            '(' if word_start && self.ch(1) == Some('(') && end != End::Arith => {
                self.push_cmd(End::Arith);
                self.i += 2;
            }
            '(' => {
                if matches!(end, End::Paren | End::Arith) {
                    set_depth(self, depth + 1);
                }
                self.i += 1;
            }
            ')' => {
                self.i += 1;
                match end {
                    // A `case` pattern's `)`.
                    End::Paren if depth == 0 && cases > 0 => {}
                    End::Paren if depth == 0 => {
                        self.stack.pop();
                    }
                    End::Arith if depth == 0 && self.ch(0) == Some(')') => {
                        self.i += 1;
                        self.stack.pop();
                    }
                    End::Paren | End::Arith if depth > 0 => set_depth(self, depth - 1),
                    _ => {}
                }
            }
            '{' if matches!(end, End::Brace { .. }) => {
                set_depth(self, depth + 1);
                self.i += 1;
            }
            '}' if matches!(end, End::Brace { .. }) => {
                self.i += 1;
                if depth == 0 {
                    self.stack.pop();
                } else {
                    set_depth(self, depth - 1);
                }
            }
            '<' if self.ch(1) == Some('<') && !matches!(end, End::Arith | End::Brace { .. }) => {
                if self.ch(2) == Some('<') {
                    self.i += 3;
                } else {
                    self.heredoc_operator();
                }
            }
            '\n' => {
                self.i += 1;
                self.start_pending_doc();
            }
            _ => self.i += 1,
        }
    }

    fn single(&mut self) {
        match self.items[self.i] {
            Item::Ex(n) => self.set(n, Slot::SingleQuoted),
            Item::Ch('\'') => {
                self.stack.pop();
            }
            Item::Ch(_) => {}
        }
        self.i += 1;
    }

    fn ansi_c(&mut self) {
        match self.items[self.i] {
            Item::Ex(n) => {
                self.set(n, Slot::AnsiC);
                self.i += 1;
            }
            Item::Ch('\\') => self.escape(),
            Item::Ch('\'') => {
                self.stack.pop();
                self.i += 1;
            }
            Item::Ch(_) => self.i += 1,
        }
    }

    fn double(&mut self) {
        match self.items[self.i] {
            Item::Ex(n) => {
                self.set(n, Slot::DoubleQuoted);
                self.i += 1;
            }
            Item::Ch('\\') => self.escape(),
            Item::Ch('"') => {
                self.stack.pop();
                self.i += 1;
            }
            Item::Ch('$') => {
                if !self.dollar(true) {
                    self.i += 1;
                }
            }
            Item::Ch('`') => self.backtick(true),
            Item::Ch(_) => self.i += 1,
        }
    }

    fn comment(&mut self) {
        match self.items[self.i] {
            Item::Ex(n) => {
                self.set(n, Slot::Comment);
                self.i += 1;
            }
            // The newline ends the comment and is the command's (pending heredocs start).
            Item::Ch('\n') => {
                self.stack.pop();
            }
            Item::Ch(_) => self.i += 1,
        }
    }

    /// Reads the backtick substitution starting at `self.i`: its inside, with `\\`, `` \` ``
    /// and `\$` (and `\"` inside double quotes) reduced, is a script of its own.
    fn backtick(&mut self, dq: bool) {
        let start = self.i + 1;
        let mut j = start;
        let mut inner = Vec::new();
        while j < self.items.len() {
            match self.items[j] {
                Item::Ch('`') => break,
                Item::Ch('\\') => match self.items.get(j + 1) {
                    Some(Item::Ch(c)) if matches!(c, '\\' | '`' | '$') || (dq && *c == '"') => {
                        inner.push(Item::Ch(*c));
                        j += 2;
                    }
                    _ => {
                        inner.push(Item::Ch('\\'));
                        j += 1;
                    }
                },
                it => {
                    inner.push(it);
                    j += 1;
                }
            }
        }
        if self.depth >= MAX_BACKTICK_DEPTH {
            for it in &inner {
                if let Item::Ex(n) = it {
                    self.problem(*n, "backticks nested too deeply; use `$( )`");
                }
            }
        } else {
            let mut lexer = Lexer::new(&inner, self.slots, self.problems, true, self.depth + 1);
            lexer.run();
        }
        self.i = j + 1;
    }

    /// `<<WORD` or `<<-WORD` at `self.i`: queues a heredoc whose body starts at the next
    /// newline of the command.
    fn heredoc_operator(&mut self) {
        let mut j = self.i + 2;
        let strip_tabs = matches!(self.items.get(j), Some(Item::Ch('-')));
        if strip_tabs {
            j += 1;
        }
        while matches!(self.items.get(j), Some(Item::Ch(' ' | '\t'))) {
            j += 1;
        }
        let word_start = j;
        let mut delim = String::new();
        let mut literal = false;
        let mut bad = false;
        while let Some(&item) = self.items.get(j) {
            match item {
                Item::Ex(n) => {
                    self.problem(n, "a `${{ }}` cannot be part of a heredoc delimiter");
                    self.set(n, Slot::Unquoted);
                    bad = true;
                    j += 1;
                }
                Item::Ch(q @ ('\'' | '"')) => {
                    literal = true;
                    j += 1;
                    while let Some(&it) = self.items.get(j) {
                        j += 1;
                        match it {
                            Item::Ch(c) if c == q => break,
                            Item::Ch('\\') if q == '"' => {
                                if let Some(Item::Ch(c)) = self.items.get(j) {
                                    delim.push(*c);
                                    j += 1;
                                }
                            }
                            Item::Ch(c) => delim.push(c),
                            Item::Ex(n) => {
                                self.problem(n, "a `${{ }}` cannot be part of a heredoc delimiter");
                                self.set(n, Slot::Unquoted);
                                bad = true;
                            }
                        }
                    }
                }
                Item::Ch('\\') => {
                    literal = true;
                    j += 1;
                    if let Some(Item::Ch(c)) = self.items.get(j) {
                        delim.push(*c);
                        j += 1;
                    }
                }
                Item::Ch(c)
                    if c.is_whitespace()
                        || matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')') =>
                {
                    break;
                }
                Item::Ch(c) => {
                    delim.push(c);
                    j += 1;
                }
            }
        }
        self.i = j;
        if bad || delim.is_empty() {
            return;
        }
        self.pending.push(Doc {
            delim,
            strip_tabs,
            literal,
            word: (word_start, j),
            body_start: 0,
            line_start: 0,
            exprs: Vec::new(),
        });
    }

    /// After a command's newline: the first queued heredoc's body starts here.
    fn start_pending_doc(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut doc = self.pending.remove(0);
        doc.body_start = self.i;
        doc.line_start = self.i;
        self.stack.push(Frame::Heredoc(doc));
    }

    fn heredoc(&mut self, doc: Doc) {
        let item = self.items[self.i];
        match item {
            Item::Ex(n) => {
                self.set(n, Slot::Heredoc);
                if let Some(Frame::Heredoc(d)) = self.stack.last_mut() {
                    d.exprs.push(n);
                }
                self.i += 1;
            }
            Item::Ch('\n') => {
                if self.is_delimiter_line(&doc, self.i) {
                    self.finish_doc(&doc, doc.line_start);
                    self.stack.pop();
                    self.i += 1;
                    self.start_pending_doc();
                } else {
                    if let Some(Frame::Heredoc(d)) = self.stack.last_mut() {
                        d.line_start = self.i + 1;
                    }
                    self.i += 1;
                }
            }
            Item::Ch(_) if doc.literal => self.i += 1,
            Item::Ch('\\') => self.escape(),
            Item::Ch('$') => {
                if !self.dollar(true) {
                    self.i += 1;
                }
            }
            Item::Ch('`') => self.backtick(false),
            Item::Ch(_) => self.i += 1,
        }
    }

    fn is_delimiter_line(&self, doc: &Doc, end: usize) -> bool {
        let mut line = String::new();
        for item in &self.items[doc.line_start.min(end)..end] {
            match item {
                Item::Ch(c) => line.push(*c),
                Item::Ex(_) => return false,
            }
        }
        let line = if doc.strip_tabs {
            line.trim_start_matches('\t')
        } else {
            &line
        };
        line == doc.delim
    }

    /// A heredoc ended with its body at `body_start..body_end`: a quoted-delimiter one with
    /// expressions in it is rewritten.
    fn finish_doc(&mut self, doc: &Doc, body_end: usize) {
        if !doc.literal || doc.exprs.is_empty() {
            return;
        }
        let plain = doc
            .delim
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,:+@%=/".contains(c));
        if self.in_backtick || !plain {
            let why = if self.in_backtick {
                "inside backticks; use `$( )`".to_string()
            } else {
                format!(
                    "whose delimiter `{}` is not a plain word (letters, digits, `_-.,:+@%=/`)",
                    doc.delim
                )
            };
            for &n in &doc.exprs {
                self.problem(
                    n,
                    format!("a `${{{{ }}}}` in a heredoc with a quoted delimiter {why}"),
                );
            }
            return;
        }
        self.edits.push(DocEdit {
            word: doc.word,
            delim: doc.delim.clone(),
            body: (doc.body_start, body_end),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> Vec<Piece<'_>> {
        let mut out = Vec::new();
        for (k, part) in s.split('@').enumerate() {
            if k > 0 {
                out.push(Piece::Expr);
            }
            out.push(Piece::Text(part));
        }
        out
    }

    /// `@` marks an expression; its variable is `V0`, `V1`, ...
    fn rw(s: &str) -> String {
        match rewrite(&pieces(s), &|n| format!("V{n}")) {
            Ok(script) => script.text,
            Err(p) => format!("ERR {p:?}"),
        }
    }

    fn problems(s: &str) -> Vec<String> {
        rewrite(&pieces(s), &|n| format!("V{n}"))
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    #[test]
    fn quoting_states() {
        assert_eq!(rw("echo @"), "echo \"${V0}\"");
        assert_eq!(rw("echo \"a @\""), "echo \"a ${V0}\"");
        assert_eq!(rw("echo 'a @'"), "echo 'a '\"${V0}\"''");
        assert_eq!(rw("echo $'a @'"), "echo $'a '\"${V0}\"$''");
        assert_eq!(rw("echo \"it's @\""), "echo \"it's ${V0}\"");
    }

    /// Guards the comment state: an apostrophe in a comment opens no quote.
    #[test]
    fn comments_do_not_quote() {
        assert_eq!(
            rw("# don't\necho \"hello @\""),
            "# don't\necho \"hello ${V0}\""
        );
        assert_eq!(rw("echo a#b '@'"), "echo a#b ''\"${V0}\"''");
        assert_eq!(
            rw("echo x # it's @\necho @"),
            "echo x # it's ${V0}\necho \"${V1}\""
        );
    }

    /// Guards `$( )` inside double quotes: its inside is a fresh unquoted context.
    #[test]
    fn command_substitution() {
        assert_eq!(
            rw("echo \"$(printf '<%s>' \"@\")\""),
            "echo \"$(printf '<%s>' \"${V0}\")\""
        );
        assert_eq!(rw("x=$(echo @)"), "x=$(echo \"${V0}\")");
        assert_eq!(rw("x=\"$(echo '@')\""), "x=\"$(echo ''\"${V0}\"'')\"");
        assert_eq!(rw("echo \"`echo @`\""), "echo \"`echo \"${V0}\"`\"");
        assert_eq!(rw("echo `echo \\\\'@'`"), "echo `echo \\\\'\"${V0}\"'`");
    }

    /// Guards heredocs: an unquoted delimiter expands `${V}`; a quoted one is rewritten
    /// to an unquoted one with its text escaped.
    #[test]
    fn heredocs() {
        assert_eq!(
            rw("cat <<EOF\n'@'\nEOF\necho @"),
            "cat <<EOF\n'${V0}'\nEOF\necho \"${V1}\""
        );
        assert_eq!(
            rw("cat <<'EOF'\n$HOME `x` \\ '@'\nEOF\necho '@'"),
            "cat <<EOF\n\\$HOME \\`x\\` \\\\ '${V0}'\nEOF\necho ''\"${V1}\"''"
        );
        assert_eq!(
            rw("cat <<-\"END\" ; echo @\n\t@\n\tEND\n"),
            "cat <<-END ; echo \"${V0}\"\n\t${V1}\n\tEND\n"
        );
        // No expression in a quoted heredoc: left alone.
        assert_eq!(
            rw("cat <<'EOF'\n$HOME\nEOF\n@"),
            "cat <<'EOF'\n$HOME\nEOF\n\"${V0}\""
        );
        assert_eq!(rw("cat <<< @"), "cat <<< \"${V0}\"");
    }

    /// Guards `case` inside `$( )`: a pattern's `)` does not end the substitution.
    #[test]
    fn case_patterns_inside_command_substitution() {
        assert_eq!(
            rw("x=\"$(case a in a) echo @;; esac)\" '@'"),
            "x=\"$(case a in a) echo \"${V0}\";; esac)\" ''\"${V1}\"''"
        );
    }

    #[test]
    fn arithmetic_and_braces() {
        assert_eq!(rw("echo $(( @ + 1 ))"), "echo $(( ${V0} + 1 ))");
        assert_eq!(
            rw("(( @ > 1 )) && echo @"),
            "(( ${V0} > 1 )) && echo \"${V1}\""
        );
        assert_eq!(rw("echo ${X:-@}"), "echo ${X:-\"${V0}\"}");
        assert_eq!(rw("echo \"${X:-@}\""), "echo \"${X:-${V0}}\"");
        let script = rewrite(&pieces("echo $((@))"), &|n| format!("V{n}")).expect("ok");
        assert_eq!(script.slots, vec![Slot::Arithmetic]);
    }

    #[test]
    fn forms_that_cannot_be_honoured() {
        assert_eq!(problems("echo \\@").len(), 1);
        assert_eq!(problems("echo $@").len(), 1);
        assert_eq!(problems("cat <<@\nx\n").len(), 1);
        assert_eq!(problems("echo `cat <<'E'\n@\nE\n`").len(), 1);
        assert_eq!(problems("cat <<'a b'\n@\na b\n").len(), 1);
        assert!(problems("echo '\\@'").is_empty());
    }

    proptest::proptest! {
        /// Guards against panics and endless loops on any text: every expression gets a
        /// slot or a problem.
        #[test]
        fn any_text_is_analysed(text in "[a@ '\"`$\\\\(){}#<>\n\t;|&-]{0,60}") {
            let n = text.matches('@').count();
            match rewrite(&pieces(&text), &|n| format!("V{n}")) {
                Ok(script) => proptest::prop_assert_eq!(script.slots.len(), n),
                Err(problems) => proptest::prop_assert!(problems.iter().all(|p| p.expr < n)),
            }
        }
    }

    #[test]
    fn posix_shells() {
        assert!(is_posix_shell(None));
        assert!(is_posix_shell(Some("bash")));
        assert!(is_posix_shell(Some("/bin/sh -x")));
        assert!(!is_posix_shell(Some("python3 -u")));
        assert!(!is_posix_shell(Some("pwsh")));
    }
}
