//! GitHub Actions expressions (`${{ }}`) translated into ours: a small lexer and parser of
//! their grammar, then a writer that maps contexts (`github.*`, `inputs.*`, `needs.*`,
//! `steps.*`, `runner.*`, `job.*`, ...) and function names onto our expression language.
//! What has no equivalent becomes `null` with an [`Issue`], never a panic.

use std::collections::HashMap;

/// Something the translation could not carry over faithfully.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Issue {
    /// `true`: not converted (the value became `null`); `false`: converted with a note.
    pub(crate) error: bool,
    pub(crate) message: String,
}

/// What an expression may refer to where it stands.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scope {
    /// GitHub step id -> our step id, for the current job (steps converted so far).
    pub(crate) steps: HashMap<String, String>,
    /// GitHub step ids of the current job that have no step of ours (a checkout, a cache).
    pub(crate) dropped_steps: HashMap<String, String>,
    /// Job id -> (output name -> our expression), for jobs already converted.
    pub(crate) job_outputs: HashMap<String, HashMap<String, String>>,
    /// Input name -> parameter name.
    pub(crate) inputs: HashMap<String, String>,
    /// Service names of the current job.
    pub(crate) services: Vec<String>,
    /// The current job's id.
    pub(crate) job: String,
    /// The keys `matrix.X` may name (axes and `include` keys) when the job's matrix is
    /// written out; `None` when it has no matrix.
    pub(crate) matrix: Option<Vec<String>>,
    /// The job's matrix comes from an expression: any key may exist.
    pub(crate) dynamic_matrix: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(String),
    Str(String),
    Ident(String),
    P(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string".into()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
            continue;
        }
        if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
            || (c == '.'
                && chars.get(i + 1).is_some_and(char::is_ascii_digit)
                && !matches!(out.last(), Some(Tok::Ident(_)) | Some(Tok::P(")" | "]"))))
        {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '-')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let p = match two.as_str() {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "&&" => Some("&&"),
            "||" => Some("||"),
            _ => None,
        };
        if let Some(p) = p {
            out.push(Tok::P(p));
            i += 2;
            continue;
        }
        let p = match c {
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            '.' => ".",
            ',' => ",",
            '!' => "!",
            '<' => "<",
            '>' => ">",
            '*' => "*",
            other => return Err(format!("unexpected character `{other}`")),
        };
        out.push(Tok::P(p));
        i += 1;
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Seg {
    Name(String),
    Index(E),
    Star,
}

#[derive(Debug, Clone)]
enum E {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    /// A context path: root name and segments.
    Path(String, Vec<Seg>),
    Call(String, Vec<E>, Vec<Seg>),
    Group(Box<E>, Vec<Seg>),
    Not(Box<E>),
    Bin(&'static str, Box<E>, Box<E>),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::P(x)) if *x == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<E, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("expression nested too deeply".into());
        }
        let r = self.or();
        self.depth -= 1;
        r
    }

    fn binary(
        &mut self,
        ops: &[&'static str],
        next: fn(&mut Parser) -> Result<E, String>,
    ) -> Result<E, String> {
        let mut left = next(self)?;
        while let Some(Tok::P(p)) = self.peek() {
            let Some(op) = ops.iter().find(|o| *o == p).copied() else {
                break;
            };
            self.pos += 1;
            let right = next(self)?;
            left = E::Bin(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<E, String> {
        self.binary(&["||"], Parser::and)
    }
    fn and(&mut self) -> Result<E, String> {
        self.binary(&["&&"], Parser::eq)
    }
    fn eq(&mut self) -> Result<E, String> {
        self.binary(&["==", "!="], Parser::cmp)
    }
    fn cmp(&mut self) -> Result<E, String> {
        self.binary(&["<", "<=", ">", ">="], Parser::unary)
    }

    fn unary(&mut self) -> Result<E, String> {
        if self.eat("!") {
            self.depth += 1;
            if self.depth > 64 {
                return Err("expression nested too deeply".into());
            }
            let e = self.unary();
            self.depth -= 1;
            return Ok(E::Not(Box::new(e?)));
        }
        self.primary()
    }

    fn segs(&mut self) -> Result<Vec<Seg>, String> {
        let mut segs = Vec::new();
        loop {
            if self.eat(".") {
                match self.peek().cloned() {
                    Some(Tok::Ident(n)) => {
                        self.pos += 1;
                        segs.push(Seg::Name(n));
                    }
                    Some(Tok::Num(n)) if n.chars().all(|c| c.is_ascii_alphanumeric()) => {
                        self.pos += 1;
                        segs.push(Seg::Name(n));
                    }
                    Some(Tok::P("*")) => {
                        self.pos += 1;
                        segs.push(Seg::Star);
                    }
                    _ => return Err("expected a property name after `.`".into()),
                }
            } else if self.eat("[") {
                if self.eat("*") {
                    segs.push(Seg::Star);
                } else {
                    let e = self.expr()?;
                    segs.push(Seg::Index(e));
                }
                if !self.eat("]") {
                    return Err("expected `]`".into());
                }
            } else {
                return Ok(segs);
            }
        }
    }

    fn primary(&mut self) -> Result<E, String> {
        match self.peek().cloned() {
            None => Err("unexpected end of expression".into()),
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(E::Num(n))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(E::Str(s))
            }
            Some(Tok::P("(")) => {
                self.pos += 1;
                let e = self.expr()?;
                if !self.eat(")") {
                    return Err("expected `)`".into());
                }
                let segs = self.segs()?;
                Ok(E::Group(Box::new(e), segs))
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                if self.eat("(") {
                    let mut args = Vec::new();
                    if !self.eat(")") {
                        loop {
                            args.push(self.expr()?);
                            if self.eat(")") {
                                break;
                            }
                            if !self.eat(",") {
                                return Err("expected `,` or `)` in a call".into());
                            }
                        }
                    }
                    let segs = self.segs()?;
                    return Ok(E::Call(name, args, segs));
                }
                match name.as_str() {
                    "null" => return Ok(E::Null),
                    "true" => return Ok(E::Bool(true)),
                    "false" => return Ok(E::Bool(false)),
                    _ => {}
                }
                let segs = self.segs()?;
                Ok(E::Path(name, segs))
            }
            Some(Tok::P(p)) => Err(format!("unexpected `{p}`")),
        }
    }
}

fn parse(src: &str) -> Result<E, String> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if p.pos != p.toks.len() {
        return Err("unexpected text after the expression".into());
    }
    Ok(e)
}

/// Translates one expression (the text inside `${{ }}`, or an `if:` condition).
pub(crate) fn translate(src: &str, scope: &Scope, issues: &mut Vec<Issue>) -> String {
    match parse(src) {
        Ok(e) => {
            let mut w = Writer { scope, issues };
            w.expr(&e, 0)
        }
        Err(msg) => {
            issues.push(Issue {
                error: true,
                message: format!("cannot read the expression `{}`: {msg}", src.trim()),
            });
            "null".into()
        }
    }
}

/// Translates a string that may hold `${{ }}` anywhere; text around them is kept.
pub(crate) fn translate_template(src: &str, scope: &Scope, issues: &mut Vec<Issue>) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = find_close(after) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        out.push_str("${{ ");
        out.push_str(&translate(inner, scope, issues));
        out.push_str(" }}");
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Splits a template into literal text and expressions (for `format()`).
pub(crate) fn template_parts(src: &str) -> Vec<(bool, String)> {
    let mut parts = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        let Some(end) = find_close(after) else {
            break;
        };
        if start > 0 {
            parts.push((false, rest[..start].to_string()));
        }
        parts.push((true, after[..end].to_string()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push((false, rest.to_string()));
    }
    parts
}

/// A whole template as one expression of ours (`format('v{0}', x)` for `v${{ x }}`).
pub(crate) fn template_as_expr(src: &str, scope: &Scope, issues: &mut Vec<Issue>) -> String {
    let parts = template_parts(src);
    match parts.as_slice() {
        [(true, e)] => translate(e, scope, issues),
        _ => {
            let mut fmt = String::new();
            let mut args = Vec::new();
            for (is_expr, text) in &parts {
                if *is_expr {
                    fmt.push_str(&format!("{{{}}}", args.len()));
                    args.push(translate(text, scope, issues));
                } else {
                    fmt.push_str(&text.replace('{', "{{").replace('}', "}}"));
                }
            }
            if args.is_empty() {
                return string_lit(&fmt.replace("{{", "{").replace("}}", "}"));
            }
            format!("format({}, {})", string_lit(&fmt), args.join(", "))
        }
    }
}

/// The offset of the `}}` closing an expression, skipping string literals.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        match b[i] {
            b'\'' => in_str = !in_str,
            b'}' if !in_str && b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Our string literal for a text.
pub(crate) fn string_lit(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A parameter name of ours for a GitHub input name.
pub(crate) fn param_name(input: &str) -> String {
    let mut s: String = input
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn prec(op: &str) -> u8 {
    match op {
        "||" => 1,
        "&&" => 2,
        "==" | "!=" => 3,
        _ => 4,
    }
}

struct Writer<'a> {
    scope: &'a Scope,
    issues: &'a mut Vec<Issue>,
}

impl Writer<'_> {
    fn err(&mut self, msg: String) -> String {
        self.issues.push(Issue {
            error: true,
            message: msg,
        });
        "null".into()
    }

    fn note(&mut self, msg: String) {
        if !self.issues.iter().any(|i| i.message == msg) {
            self.issues.push(Issue {
                error: false,
                message: msg,
            });
        }
    }

    /// Writes `e`; `parent` is the precedence of the enclosing operator (0: none).
    fn expr(&mut self, e: &E, parent: u8) -> String {
        match e {
            E::Null => "null".into(),
            E::Bool(b) => b.to_string(),
            E::Num(n) => {
                if n.parse::<f64>().is_ok() {
                    n.clone()
                } else if let Some(hex) = n.strip_prefix("0x") {
                    i64::from_str_radix(hex, 16)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|_| self.err(format!("number `{n}` is not supported")))
                } else {
                    self.err(format!("number `{n}` is not supported"))
                }
            }
            E::Str(s) => string_lit(s),
            E::Not(inner) => {
                let s = self.expr(inner, 5);
                format!("!{s}")
            }
            E::Bin(op, l, r) => {
                let p = prec(op);
                let mut ls = self.expr(l, p);
                let mut rs = self.expr(r, p + 1);
                // GitHub compares loosely: null, '' (and false, 0) are equal. A comparison
                // with '' reads a missing value as ''.
                if matches!(*op, "==" | "!=") {
                    let empty = |e: &E| matches!(e, E::Str(s) if s.is_empty());
                    if empty(r) && !empty(l) {
                        ls = format!("({ls} || '')");
                    } else if empty(l) && !empty(r) {
                        rs = format!("({rs} || '')");
                    }
                }
                let s = format!("{ls} {op} {rs}");
                if p < parent || (parent == 5) {
                    format!("({s})")
                } else {
                    s
                }
            }
            E::Group(inner, segs) => {
                let s = self.expr(inner, 0);
                let tail = self.segs(segs);
                if tail.is_empty() && parent == 0 {
                    s
                } else {
                    format!("({s}){tail}")
                }
            }
            E::Call(name, args, segs) => {
                let ours = match name.to_ascii_lowercase().as_str() {
                    "contains" => "contains",
                    "startswith" => "startswith",
                    "endswith" => "endswith",
                    "format" => "format",
                    "join" => "join",
                    "tojson" => "to_json",
                    "fromjson" => "from_json",
                    "hashfiles" => "hash_files",
                    "success" => "success",
                    "failure" => "failure",
                    "always" => "always",
                    "cancelled" => "cancelled",
                    _ => return self.err(format!("function `{name}` has no equivalent here")),
                };
                let args: Vec<String> = args.iter().map(|a| self.expr(a, 0)).collect();
                let tail = self.segs(segs);
                format!("{ours}({}){tail}", args.join(", "))
            }
            E::Path(root, segs) => self.path(root, segs),
        }
    }

    fn segs(&mut self, segs: &[Seg]) -> String {
        let mut out = String::new();
        for s in segs {
            match s {
                Seg::Name(n) => out.push_str(&name_seg(n)),
                Seg::Index(e) => {
                    let v = self.expr(e, 0);
                    out.push_str(&format!("[{v}]"));
                }
                Seg::Star => {
                    self.err("object filters (`.*`) have no equivalent here".to_string());
                    return "[null]".into();
                }
            }
        }
        out
    }

    fn path(&mut self, root: &str, segs: &[Seg]) -> String {
        // `x['name']` reads like `x.name`.
        let segs: Vec<Seg> = segs
            .iter()
            .map(|s| match s {
                Seg::Index(E::Str(n)) => Seg::Name(n.clone()),
                other => other.clone(),
            })
            .collect();
        let name = |i: usize| match segs.get(i) {
            Some(Seg::Name(n)) => Some(n.as_str()),
            _ => None,
        };
        let rest = |w: &mut Writer, from: usize| w.segs(segs.get(from..).unwrap_or_default());
        match root {
            "matrix" if !self.scope.dynamic_matrix => {
                let known = match (&self.scope.matrix, name(0)) {
                    (Some(keys), Some(n)) => keys.iter().any(|k| k == n),
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if known {
                    let tail = rest(self, 0);
                    format!("matrix{tail}")
                } else {
                    self.note(format!(
                        "`matrix{}` is null here, as on GitHub: the job's matrix has no such key",
                        name(0).map(|n| format!(".{n}")).unwrap_or_default()
                    ));
                    "null".into()
                }
            }
            "matrix" | "secrets" | "env" => {
                let tail = rest(self, 0);
                format!("{root}{tail}")
            }
            "inputs" => match name(0) {
                Some(n) => {
                    let p = self
                        .scope
                        .inputs
                        .get(n)
                        .cloned()
                        .unwrap_or_else(|| param_name(n));
                    let tail = rest(self, 1);
                    format!("parameters.{p}{tail}")
                }
                None => "parameters".into(),
            },
            "vars" => match name(0) {
                Some(n) => {
                    self.note(format!(
                        "configuration variable `vars.{n}` is read from the environment (`env('{n}')`)"
                    ));
                    format!("env({})", string_lit(n))
                }
                None => self.err("the `vars` context has no equivalent here".into()),
            },
            "github" => self.github(&segs),
            "runner" => match name(0) {
                Some("os") => "'Linux'".into(),
                Some("arch") => "'X64'".into(),
                Some("temp") => "env('AGENT_TEMP')".into(),
                Some("name") => "'agent'".into(),
                Some(other) => self.err(format!("`runner.{other}` has no equivalent here")),
                None => self.err("the `runner` context has no equivalent here".into()),
            },
            "job" => match (name(0), name(1), name(2)) {
                (Some("status"), ..) => {
                    "('success' if success() else ('cancelled' if cancelled() else 'failure'))"
                        .into()
                }
                (Some("services"), Some(svc), Some(field))
                    if self.scope.services.iter().any(|s| s == svc) =>
                {
                    match field {
                        "ports" => format!("services.{svc}.port"),
                        _ => format!("services.{svc}.host"),
                    }
                }
                _ => self.err(format!(
                    "`job.{}` has no equivalent here",
                    name(0).unwrap_or("*")
                )),
            },
            "steps" => {
                let Some(id) = name(0) else {
                    return self.err("the whole `steps` context has no equivalent here".into());
                };
                if let Some(what) = self.scope.dropped_steps.get(id).cloned() {
                    return self.err(format!(
                        "step `{id}` ({what}) has no step here, so `steps.{id}` has no value"
                    ));
                }
                let Some(ours) = self.scope.steps.get(id).cloned() else {
                    return self.err(format!("no earlier step with id `{id}` in this job"));
                };
                match name(1) {
                    Some("outputs") => {
                        let tail = rest(self, 2);
                        format!("steps.{ours}.outputs{tail}")
                    }
                    Some("outcome" | "conclusion") => format!(
                        "('success' if steps.{ours}.status == 'succeeded' else ('skipped' if steps.{ours}.status == 'skipped' else 'failure'))"
                    ),
                    _ => {
                        let tail = rest(self, 1);
                        format!("steps.{ours}{tail}")
                    }
                }
            }
            "needs" | "jobs" => {
                let Some(job) = name(0) else {
                    return self.err(format!("the whole `{root}` context has no equivalent here"));
                };
                match name(1) {
                    Some("outputs") => {
                        let Some(out) = name(2) else {
                            return self.err(format!(
                                "`{root}.{job}.outputs` as a whole has no equivalent here"
                            ));
                        };
                        match self.scope.job_outputs.get(job).and_then(|o| o.get(out)) {
                            Some(e) => {
                                let e = e.clone();
                                let tail = rest(self, 3);
                                if tail.is_empty() {
                                    format!("({e})")
                                } else {
                                    format!("({e}){tail}")
                                }
                            }
                            None => self.err(format!(
                                "job `{job}` has no output `{out}` (or does not run before this one)"
                            )),
                        }
                    }
                    Some("result") => {
                        self.note(format!(
                            "`{root}.{job}.result` reads the run's state so far: a failed job stops the later ones unless they use `always()`"
                        ));
                        "('success' if success() else ('cancelled' if cancelled() else 'failure'))"
                            .into()
                    }
                    _ => self.err(format!("`{root}.{job}` has no equivalent here")),
                }
            }
            "strategy" => self.err("the `strategy` context has no equivalent here".into()),
            other => self.err(format!("unknown context `{other}`")),
        }
    }

    fn github(&mut self, segs: &[Seg]) -> String {
        let name = |i: usize| match segs.get(i) {
            Some(Seg::Name(n)) => Some(n.as_str()),
            _ => None,
        };
        let Some(first) = name(0) else {
            return self.err("the whole `github` context has no equivalent here".into());
        };
        match first {
            "sha" => "repo.commit".into(),
            "ref" => "env('AGENT_REF')".into(),
            "ref_name" => "repo.branch".into(),
            "head_ref" => {
                self.note("`github.head_ref` is the branch that was pushed (`repo.branch`)".into());
                "repo.branch".into()
            }
            "base_ref" => {
                self.note("`github.base_ref` is empty: there are no pull requests here".into());
                "''".into()
            }
            "repository" => "env('AGENT_REPO_FULL_NAME')".into(),
            "workspace" => "run.workspace".into(),
            "run_id" => "run.id".into(),
            "run_number" => {
                self.note("`github.run_number` is the run id here".into());
                "run.id".into()
            }
            "run_attempt" => "run.attempt".into(),
            "actor" | "triggering_actor" => "repo.author".into(),
            "workflow" => "workflow.name".into(),
            "job" => string_lit(&self.scope.job),
            "event_name" => {
                self.note(
                    "`github.event_name` is our trigger: `push`, `schedule`, `manual`, `webhook` or `retry` (never `pull_request` or `workflow_dispatch`)".into(),
                );
                "run.trigger".into()
            }
            "server_url" => "'https://github.com'".into(),
            "token" => {
                self.note("`github.token` is read from the secret `GITHUB_TOKEN`".into());
                "secrets.GITHUB_TOKEN".into()
            }
            "event" => match (name(1), name(2)) {
                (Some("inputs"), Some(n)) => {
                    let p = self
                        .scope
                        .inputs
                        .get(n)
                        .cloned()
                        .unwrap_or_else(|| param_name(n));
                    format!("parameters.{p}")
                }
                (Some("head_commit"), Some("message")) => "repo.message".into(),
                (Some("head_commit"), Some("id")) | (Some("after"), _) => "repo.commit".into(),
                (Some("pull_request"), _) => {
                    self.note(
                        "`github.event.pull_request` is null: there are no pull requests here"
                            .into(),
                    );
                    "null".into()
                }
                _ => {
                    let mut tail = String::new();
                    for s in &segs[1..] {
                        if let Seg::Name(n) = s {
                            tail.push('.');
                            tail.push_str(n);
                        }
                    }
                    self.err(format!("`github.event{tail}` has no equivalent here"))
                }
            },
            other => self.err(format!("`github.{other}` has no equivalent here")),
        }
    }
}

fn name_seg(n: &str) -> String {
    let ok = n
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !n.ends_with('-');
    if ok {
        format!(".{n}")
    } else {
        format!("[{}]", string_lit(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(src: &str) -> (String, Vec<Issue>) {
        let mut scope = Scope {
            job: "build".into(),
            ..Scope::default()
        };
        scope.steps.insert("hash".into(), "build-hash".into());
        scope
            .dropped_steps
            .insert("cache".into(), "actions/cache".into());
        scope
            .inputs
            .insert("baseline-args".into(), "baseline_args".into());
        scope.job_outputs.insert(
            "build".into(),
            [(
                "hash".to_string(),
                "steps.build-hash.outputs.hash".to_string(),
            )]
            .into(),
        );
        scope.services.push("postgres".into());
        scope.matrix = Some(vec![
            "python-version".into(),
            "os".into(),
            "v".into(),
            "list".into(),
        ]);
        let mut issues = Vec::new();
        let out = translate(src, &scope, &mut issues);
        (out, issues)
    }

    /// Guards the mapping of contexts and functions: each GitHub form becomes ours.
    #[test]
    fn contexts_and_functions_map_onto_ours() {
        for (gha, ours) in [
            ("github.sha", "repo.commit"),
            ("github.ref", "env('AGENT_REF')"),
            ("github.ref_name", "repo.branch"),
            ("github.repository", "env('AGENT_REPO_FULL_NAME')"),
            ("github.workspace", "run.workspace"),
            ("github.run_id", "run.id"),
            (
                "github.event.inputs.baseline-args",
                "parameters.baseline_args",
            ),
            ("inputs.baseline-args", "parameters.baseline_args"),
            ("matrix.python-version", "matrix.python-version"),
            ("matrix['python-version']", "matrix.python-version"),
            ("env.CARGO", "env.CARGO"),
            ("secrets.PYPI_TOKEN", "secrets.PYPI_TOKEN"),
            ("steps.hash.outputs.hash", "steps.build-hash.outputs.hash"),
            (
                "needs.build.outputs.hash",
                "(steps.build-hash.outputs.hash)",
            ),
            ("runner.os", "'Linux'"),
            ("matrix.os != ''", "(matrix.os || '') != ''"),
            (
                "job.services.postgres.ports[5432]",
                "services.postgres.port",
            ),
            (
                "startsWith(matrix.v, 'pypy')",
                "startswith(matrix.v, 'pypy')",
            ),
            (
                "!startsWith(matrix.v, 'pypy')",
                "!startswith(matrix.v, 'pypy')",
            ),
            (
                "endsWith(github.ref, '/main')",
                "endswith(env('AGENT_REF'), '/main')",
            ),
            (
                "contains(matrix.os, 'ubuntu')",
                "contains(matrix.os, 'ubuntu')",
            ),
            ("format('{0}-x', matrix.os)", "format('{0}-x', matrix.os)"),
            ("join(matrix.list, ',')", "join(matrix.list, ',')"),
            ("toJSON(matrix)", "to_json(matrix)"),
            ("fromJSON('[1,2]')[0]", "from_json('[1,2]')[0]"),
            ("hashFiles('**/go.sum')", "hash_files('**/go.sum')"),
            ("success() && always()", "success() && always()"),
            ("failure() || cancelled()", "failure() || cancelled()"),
            ("'it''s'", "'it\\'s'"),
            (
                "(a.b == 1 || c.d) && !(e.f)",
                "(null == 1 || null) && !(null)",
            ),
            (
                "matrix.os == 'windows' && '(windows)' || ''",
                "matrix.os == 'windows' && '(windows)' || ''",
            ),
        ] {
            let (out, _) = tr(gha);
            assert_eq!(out, ours, "{gha}");
        }
    }

    /// Guards the diagnostics: what has no equivalent becomes `null` with an error, never
    /// a panic, and malformed text is reported.
    #[test]
    fn missing_things_are_errors() {
        for src in [
            "github.event.release.tag_name",
            "steps.cache.outputs.cache-hit",
            "steps.nope.outputs.x",
            "needs.other.outputs.x",
            "fancy(1)",
            "steps.*.outputs",
            "a ==",
            "'open",
            "(((",
            "strategy.job-index",
        ] {
            let (out, issues) = tr(src);
            assert!(issues.iter().any(|i| i.error), "{src}: {out} {issues:?}");
        }
    }

    #[test]
    fn templates_become_one_expression() {
        let scope = Scope {
            matrix: Some(vec!["x".into()]),
            ..Scope::default()
        };
        let mut issues = Vec::new();
        assert_eq!(
            template_as_expr("v${{ matrix.x }}-{z}", &scope, &mut issues),
            "format('v{0}-{{z}}', matrix.x)"
        );
        assert_eq!(
            translate_template(
                "a ${{ runner.os }} b ${{ github.sha }}",
                &scope,
                &mut issues
            ),
            "a ${{ 'Linux' }} b ${{ repo.commit }}"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = "(".repeat(10_000);
        let (_, issues) = tr(&src);
        assert!(issues.iter().any(|i| i.error));
        let src = "!".repeat(10_000) + "a";
        let (_, issues) = tr(&src);
        assert!(issues.iter().any(|i| i.error));
    }
}
