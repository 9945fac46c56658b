//! The shape of the code, checked from its sources: which module of `agent/src` may import
//! which, and where circles between files are allowed.
//!
//! The checker reads every `.rs` file, drops comments, string and character literals, and
//! collects each path into the crate: `use` declarations (with `{…}` groups nested to any
//! depth, `self`, `super`, `crate`, and bare names of child modules) and `crate::…` /
//! `super::…` paths in the code. A path resolves to the file of its longest prefix that is a
//! module; that gives an edge from the importing file to that file. Two simplifications:
//! edges from a module to its own sub-modules are not counted (a `mod.rs` that re-exports its
//! parts is their facade, not a circle), and the crate root (`lib.rs`, `main.rs`) is no node.
//! Test modules inside a file count like the rest of it.
//!
//! The rules, one test each:
//! - the top-level modules of `agent/src` import each other without a circle;
//! - `agent/src/engine` imports from the crate only `engine` and `model`;
//! - `agent/src/api` reaches `crate::daemon` only through `crate::daemon::handle`;
//! - only `agent/src/cli` imports `crate::server` (the composition root; its own files,
//!   such as the API tests that boot it, aside);
//! - the files of `dsl/src` import each other without a circle;
//! - inside `agent/src/engine` the only circle is [`ENGINE_RECURSION`];
//! - every top-level module of `agent/src` opens with a module doc comment saying what it
//!   owns, and the module map of `lib.rs` names each of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::common::workspace_root;

/// The files of `agent/src/engine` that may import each other in a circle: a step can run a
/// whole workflow (`uses:` a sub-workflow), so running a workflow runs stages, a stage runs
/// steps (a matrix step's instances through `matrix.rs`), and a step runs a workflow again.
/// No other circle is allowed in the engine.
pub const ENGINE_RECURSION: &[&str] = &[
    "engine/matrix.rs",
    "engine/run.rs",
    "engine/stage.rs",
    "engine/step.rs",
];

/// One source tree: every module's file by its module path (`["daemon", "config"]`).
struct Tree {
    root: PathBuf,
    /// Module path → file, relative to `root`.
    files: BTreeMap<Vec<String>, String>,
}

/// An import of one file by another: `from` uses `path` (as written, resolved), found in `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    path: String,
}

impl Tree {
    fn read(root: &Path) -> Tree {
        let mut files = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    let rel = path
                        .strip_prefix(root)
                        .expect("under root")
                        .to_string_lossy()
                        .into_owned();
                    if rel == "main.rs" {
                        continue;
                    }
                    files.insert(module_of(&rel), rel);
                }
            }
        }
        Tree {
            root: root.to_path_buf(),
            files,
        }
    }

    /// Every edge between two different files of the tree.
    fn edges(&self) -> Vec<Edge> {
        let mut out = BTreeSet::new();
        for (module, file) in &self.files {
            let text = std::fs::read_to_string(self.root.join(file))
                .unwrap_or_else(|e| panic!("read {file}: {e}"));
            for path in crate_paths(&text, module) {
                let Some(target) = self.file_of(&path) else {
                    continue;
                };
                let target_module = module_of(target);
                let into_own_child = target_module.len() > module.len()
                    && target_module.starts_with(module)
                    && !module.is_empty();
                if target == file || target == "lib.rs" || file == "lib.rs" || into_own_child {
                    continue;
                }
                out.insert(Edge {
                    from: file.clone(),
                    to: target.clone(),
                    path: format!("crate::{}", path.join("::")),
                });
            }
        }
        out.into_iter().collect()
    }

    /// The file of the longest prefix of `path` that is a module.
    fn file_of(&self, path: &[String]) -> Option<&String> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.files.get(&path[..n]))
    }
}

/// The module path of a file relative to its crate's `src/`.
fn module_of(rel: &str) -> Vec<String> {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The top-level module of a file (`daemon` for `daemon/config.rs`).
fn top(file: &str) -> String {
    module_of(file).first().cloned().unwrap_or_default()
}

/// Removes comments, string literals (also raw and byte strings) and character literals,
/// keeping everything else (lifetimes included) in place.
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0
                || !is_ident(b[i - 1])
                || (b[i - 1] == 'b' && (i < 2 || !is_ident(b[i - 2]))))
        {
            // Raw string: r"…", r#"…"#, br"…".
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\'', '\u{1F600}') or a lifetime ('a).
            if next == Some('\\') {
                let mut j = i + 3;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Tokens: identifiers, `::`, and single punctuation characters.
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_ident(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".to_string());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

/// The paths into the crate that the source of module `module` uses, made absolute (without
/// the leading `crate`). Paths into other crates are left out.
fn crate_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let toks = tokens(&strip(text));
    // Child modules declared in this file (`mod x;`), which a bare `use x::…` may name.
    let mut children: BTreeSet<String> = BTreeSet::new();
    for w in toks.windows(3) {
        if w[0] == "mod" && (w[2] == ";" || w[2] == "{") {
            children.insert(w[1].clone());
        }
    }
    let mut out = Vec::new();
    // Inline modules (`mod tests { … }`): (name, brace depth at which it closes).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let here: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect();
        let t = toks[i].as_str();
        match t {
            "{" => {
                depth += 1;
                i += 1;
            }
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            "mod" if toks.get(i + 2).is_some_and(|x| x == "{") => {
                inline.push((toks[i + 1].clone(), depth + 1));
                i += 2;
            }
            "use" => {
                let mut j = i + 1;
                let mut found = Vec::new();
                use_tree(&toks, &mut j, Vec::new(), &mut found);
                for p in found {
                    if let Some(abs) = resolve(&p, &here, &children) {
                        out.push(abs);
                    }
                }
                i = j;
            }
            "crate" | "super"
                if toks.get(i + 1).is_some_and(|x| x == "::")
                    && !(i > 0 && toks[i - 1] == "::")
                    && !(i > 0 && toks[i - 1] == "in") =>
            {
                let mut p = vec![t.to_string()];
                let mut j = i + 1;
                while toks.get(j).is_some_and(|x| x == "::")
                    && toks.get(j + 1).is_some_and(|x| x.chars().all(is_ident))
                {
                    p.push(toks[j + 1].clone());
                    j += 2;
                }
                if let Some(abs) = resolve(&p, &here, &children) {
                    out.push(abs);
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

/// Parses one use tree at `toks[*j]`, appending each complete path (prefix included) to
/// `out`; stops after the tree (at `,`, `}` or `;`, which it does not consume, except `;`).
fn use_tree(toks: &[String], j: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        match toks.get(*j).map(String::as_str) {
            None => return,
            Some("::") => *j += 1,
            Some("{") => {
                *j += 1;
                loop {
                    match toks.get(*j).map(String::as_str) {
                        None => return,
                        Some("}") => {
                            *j += 1;
                            break;
                        }
                        Some(",") => *j += 1,
                        _ => use_tree(toks, j, path.clone(), out),
                    }
                }
                return;
            }
            Some("*") => {
                *j += 1;
                out.push(path);
                return;
            }
            Some("as") => {
                *j += 2;
                out.push(path);
                return;
            }
            Some(";") => {
                *j += 1;
                out.push(path);
                return;
            }
            Some("," | "}") => {
                out.push(path);
                return;
            }
            Some(seg) => {
                if seg == "self" && !path.is_empty() {
                    // `use a::{self, b}`: `self` is `a` itself.
                } else {
                    path.push(seg.to_string());
                }
                *j += 1;
            }
        }
    }
}

/// Makes a path written in module `here` absolute; `None` for paths into other crates.
fn resolve(path: &[String], here: &[String], children: &BTreeSet<String>) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut base: Vec<String>;
    let mut rest = path;
    match first.as_str() {
        "crate" => {
            base = Vec::new();
            rest = &path[1..];
        }
        "self" => {
            base = here.to_vec();
            rest = &path[1..];
        }
        "super" => {
            base = here.to_vec();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        name if children.contains(name) => base = here.to_vec(),
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The circles of a graph: its strongly connected components of more than one node.
fn circles(edges: &[(String, String)]) -> Vec<BTreeSet<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (a, b) in edges {
        graph.entry(a).or_default().insert(b);
        graph.entry(b).or_default();
    }
    // Reachability closure (the graphs are small): a and b share a circle when each reaches
    // the other.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for &m in &graph[n] {
                if seen.insert(m) {
                    todo.push(m);
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&str, BTreeSet<&str>> = graph.keys().map(|&n| (n, reach(n))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for &n in graph.keys() {
        if out.iter().any(|c| c.contains(n)) || !reached[n].contains(n) {
            continue;
        }
        let scc: BTreeSet<String> = reached[n]
            .iter()
            .filter(|m| reached[*m].contains(n))
            .map(|m| (*m).to_string())
            .collect();
        if scc.len() > 1 {
            out.push(scc);
        }
    }
    out
}

/// Describes circles with the file edges that make them (`key` maps a file to its node).
fn describe(circles: &[BTreeSet<String>], edges: &[Edge], key: impl Fn(&str) -> String) -> String {
    let mut text = String::new();
    for c in circles {
        text.push_str(&format!(
            "circle: {}\n",
            c.iter().cloned().collect::<Vec<_>>().join(" <-> ")
        ));
        for e in edges {
            let (a, b) = (key(&e.from), key(&e.to));
            if a != b && c.contains(&a) && c.contains(&b) {
                text.push_str(&format!("  {a} -> {b}: {} uses {}\n", e.from, e.path));
            }
        }
    }
    text
}

fn agent_tree() -> Tree {
    Tree::read(&workspace_root().join("agent/src"))
}

/// Top-level module circles of a tree, described; empty when there is none.
fn top_level_circles(tree: &Tree) -> String {
    let edges = tree.edges();
    let pairs: Vec<(String, String)> = edges
        .iter()
        .map(|e| (top(&e.from), top(&e.to)))
        .filter(|(a, b)| a != b)
        .collect();
    describe(&circles(&pairs), &edges, top)
}

/// File circles of a tree, restricted to files under `under` (all when empty), that are not
/// inside `allowed`; described, empty when there is none.
fn file_circles(tree: &Tree, under: &str, allowed: &[&str]) -> String {
    let edges: Vec<Edge> = tree
        .edges()
        .into_iter()
        .filter(|e| e.from.starts_with(under) && e.to.starts_with(under))
        .collect();
    let pairs: Vec<(String, String)> = edges
        .iter()
        .map(|e| (e.from.clone(), e.to.clone()))
        .collect();
    let bad: Vec<BTreeSet<String>> = circles(&pairs)
        .into_iter()
        .filter(|c| !c.iter().all(|f| allowed.contains(&f.as_str())))
        .collect();
    describe(&bad, &edges, str::to_string)
}

/// Edges out of files under `from_dir` that `ok` refuses, one line each.
fn forbidden(tree: &Tree, from_dir: &str, ok: impl Fn(&Edge) -> bool) -> String {
    tree.edges()
        .iter()
        .filter(|e| e.from.starts_with(from_dir) && !ok(e))
        .map(|e| format!("  {} uses {} (in {})\n", e.from, e.path, e.to))
        .collect()
}

#[test]
fn agent_top_level_modules_import_each_other_without_a_circle() {
    let text = top_level_circles(&agent_tree());
    assert!(
        text.is_empty(),
        "agent/src has circles between top-level modules:\n{text}"
    );
}

#[test]
fn engine_imports_from_the_crate_only_engine_and_model() {
    let text = forbidden(&agent_tree(), "engine/", |e| {
        matches!(top(&e.to).as_str(), "engine" | "model")
    });
    assert!(
        text.is_empty(),
        "agent/src/engine imports outside engine and model:\n{text}"
    );
}

#[test]
fn api_reaches_the_daemon_only_through_its_handle() {
    let text = forbidden(&agent_tree(), "api/", |e| {
        !e.path.starts_with("crate::daemon") || e.path.starts_with("crate::daemon::handle")
    });
    assert!(
        text.is_empty(),
        "agent/src/api reaches the daemon past daemon::handle:\n{text}"
    );
}

#[test]
fn only_cli_imports_the_server() {
    let text = forbidden(&agent_tree(), "", |e| {
        top(&e.to) != "server" || matches!(top(&e.from).as_str(), "cli" | "server")
    });
    assert!(
        text.is_empty(),
        "modules other than cli import server:\n{text}"
    );
}

#[test]
fn dsl_files_import_each_other_without_a_circle() {
    let tree = Tree::read(&workspace_root().join("dsl/src"));
    let text = file_circles(&tree, "", &[]);
    assert!(
        text.is_empty(),
        "dsl/src has circles between files:\n{text}"
    );
}

#[test]
fn engine_has_no_circle_but_the_sub_workflow_recursion() {
    let text = file_circles(&agent_tree(), "engine/", ENGINE_RECURSION);
    assert!(
        text.is_empty(),
        "agent/src/engine has circles beyond {ENGINE_RECURSION:?}:\n{text}"
    );
}

/// The checker itself, on a small tree written here: nested `use` groups, `self`, `super`,
/// bare child modules, paths in code, comments and strings that look like imports, and a
/// circle it must find (with the edges that make it) next to one it must not invent.
#[test]
fn the_checker_finds_circles_and_edges_in_a_synthetic_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path();
    let files: &[(&str, &str)] = &[
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub mod engine;\n",
        ),
        (
            "a/mod.rs",
            "mod inner;\npub use inner::Thing;\nuse crate::{b::{self, deep::{X, Y as Z}}, c};\n",
        ),
        (
            "a/inner.rs",
            "pub struct Thing;\nfn f() { super::super::c::go(); }\n",
        ),
        ("b/mod.rs", "pub mod deep;\n"),
        (
            "b/deep.rs",
            "// use crate::c; (a comment)\nconst S: &str = \"crate::c::go\";\nconst R: &str = r#\"use crate::c;\"#;\nfn f<'a>(x: &'a str) -> char { let _ = crate::a::Thing; '{' }\n",
        ),
        (
            "c.rs",
            "pub fn go() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\npub(in crate::c) fn h() {}\n",
        ),
        ("engine/mod.rs", "pub mod run;\npub mod step;\n"),
        ("engine/run.rs", "use super::step::Step;\n"),
        (
            "engine/step.rs",
            "use crate::engine::run::{self};\nuse crate::b::deep::X;\n",
        ),
    ];
    for (path, text) in files {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let tree = Tree::read(src);
    let edges: BTreeSet<(String, String)> =
        tree.edges().into_iter().map(|e| (e.from, e.to)).collect();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    let want: BTreeSet<(String, String)> = [
        pair("a/mod.rs", "b/mod.rs"),
        pair("a/mod.rs", "b/deep.rs"),
        pair("a/mod.rs", "c.rs"),
        pair("a/inner.rs", "c.rs"),
        pair("b/deep.rs", "a/mod.rs"),
        pair("engine/run.rs", "engine/step.rs"),
        pair("engine/step.rs", "engine/run.rs"),
        pair("engine/step.rs", "b/deep.rs"),
    ]
    .into_iter()
    .collect();
    assert_eq!(edges, want);

    // a <-> b is a circle between top-level modules, named with the file edges that make it.
    let text = top_level_circles(&tree);
    assert!(text.contains("circle: a <-> b"), "{text}");
    assert!(
        text.contains("b -> a: b/deep.rs uses crate::a::Thing"),
        "{text}"
    );
    assert!(!text.contains("c <->") && !text.contains("<-> c"), "{text}");
    // The engine's circle is found, and allowed when named.
    let text = file_circles(&tree, "engine/", &[]);
    assert!(text.contains("engine/run.rs <-> engine/step.rs"), "{text}");
    assert_eq!(
        file_circles(&tree, "engine/", &["engine/run.rs", "engine/step.rs"]),
        ""
    );
    // Rules that look at single edges.
    let text = forbidden(&tree, "engine/", |e| {
        matches!(top(&e.to).as_str(), "engine" | "model")
    });
    assert_eq!(
        text,
        "  engine/step.rs uses crate::b::deep::X (in b/deep.rs)\n"
    );
}

/// Every top-level module of `agent/src` (a `NAME.rs` or `NAME/mod.rs` beside `lib.rs`)
/// opens with a `//!` doc comment of at least one sentence, is declared in `lib.rs`, and is
/// named in `lib.rs`'s module map (as [`NAME`]): the map stays true as modules come and go.
#[test]
fn every_top_level_module_says_what_it_owns() {
    let src = workspace_root().join("agent/src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let mut problems = String::new();
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(&src).expect("read agent/src") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let file = if path.is_dir() {
            path.join("mod.rs")
        } else if path.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main" {
            path.clone()
        } else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&file) else {
            problems.push_str(&format!("  {name}: no {}\n", file.display()));
            continue;
        };
        let doc: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .map(|l| l.trim_start_matches("//!").trim())
            .collect::<Vec<_>>()
            .join(" ");
        if doc.split_whitespace().count() < 5 || !doc.contains('.') {
            problems.push_str(&format!(
                "  {name}: no module doc comment (`//!`, a sentence at least) at the top\n"
            ));
        }
        if !lib.lines().any(|l| {
            let l = l.trim();
            ["pub mod", "pub(crate) mod", "mod"]
                .iter()
                .any(|decl| l == format!("{decl} {name};"))
        }) {
            problems.push_str(&format!("  {name}: not declared in lib.rs\n"));
        }
        let map: String = lib
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        if !map.contains(&format!("[`{name}`]")) {
            problems.push_str(&format!("  {name}: not in lib.rs's module map\n"));
        }
        modules.push(name);
    }
    assert!(
        modules.len() > 5,
        "read the modules of agent/src: {modules:?}"
    );
    assert!(
        problems.is_empty(),
        "top-level modules of agent/src without their doc:\n{problems}"
    );
}
