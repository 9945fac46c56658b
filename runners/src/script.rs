//! How a `run:` script becomes a command line: direct exec when the script is one simple
//! command without any shell syntax (like GNU make), else the shell.
//!
//! Rules:
//! - no `shell:` and the script is a plain command (see [`simple_command_words`]) -> the words
//!   are executed directly through a `PATH` lookup, saving the shell's start-up (about 1 ms
//!   with bash, more than a whole fork/exec);
//! - otherwise `bash --noprofile --norc -e -c SCRIPT` when bash is on `PATH`, else
//!   `sh -e -c SCRIPT`;
//! - an explicit `shell:` always uses that shell (never direct exec). Known interpreters get
//!   their "run this text" flag: `bash` (same flags as the default), `sh`/`dash`/`zsh`/`ksh`
//!   (`-e -c`), `python`/`python3` (`-c`), `node` (`-e`), `perl`/`ruby` (`-e`), `pwsh`
//!   (`-command`). Any other value is split on whitespace: if one of its words is `{0}` it is
//!   replaced by the script text (GitHub Actions' placeholder; we pass the text itself, not a
//!   file name, because creating a file costs more than a spawn), else `-c SCRIPT` is
//!   appended. Example: `shell: "python3 -u -c {0}"`.
//!
//! Expression values never become shell text: the engine replaces each `${{ }}` by a
//! reference to an environment variable named by [`expr_var_name`] (`$AGENT_EXPR_0`, ...)
//! and passes the values in the environment; this module only decides how to run the text.

use std::path::Path;
use std::sync::OnceLock;

/// The command line a script runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptPlan {
    /// Program to execute (looked up on `PATH` when it has no `/`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// True when the script's words are executed directly, without a shell. A direct exec of
    /// a missing program then reports "command not found" and exit code 127 like a shell.
    pub direct: bool,
}

/// The environment variable name that carries the value of the `n`-th `${{ }}` of a script.
pub fn expr_var_name(n: usize) -> String {
    format!("AGENT_EXPR_{n}")
}

/// Characters that make a script need a shell (GNU make's `sh_chars` plus newline, quotes,
/// `=` and `%`-free extras; `~` and `#` anywhere, to be safe).
const SHELL_CHARS: &[char] = &[
    '#', ';', '"', '\'', '*', '?', '[', ']', '&', '|', '<', '>', '(', ')', '{', '}', '$', '`',
    '\\', '^', '~', '!', '\n', '\r',
];

/// First words that are shell keywords or builtins: they need a shell even without any
/// special character (GNU make's list for bash, plus a few).
const SHELL_WORDS: &[&str] = &[
    "!",
    ".",
    ":",
    "[[",
    "]]",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "case",
    "cd",
    "command",
    "compgen",
    "complete",
    "continue",
    "coproc",
    "declare",
    "dirs",
    "disown",
    "do",
    "done",
    "elif",
    "else",
    "enable",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "fc",
    "fg",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "help",
    "history",
    "if",
    "in",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "then",
    "time",
    "times",
    "trap",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "until",
    "wait",
    "while",
];

/// Splits `script` into words if it is one simple command with no shell syntax at all, or
/// returns `None` when it needs a shell: `echo hello  world` is the words `echo`, `hello`,
/// `world`; `echo $HOME`, `cd /tmp` (a builtin) and `FOO=1 env` need a shell.
pub(crate) fn simple_command_words(script: &str) -> Option<Vec<String>> {
    let trimmed = script.trim_matches(|c| c == ' ' || c == '\t' || c == '\n');
    if trimmed.is_empty() || trimmed.contains(SHELL_CHARS) {
        return None;
    }
    let words: Vec<String> = trimmed
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let first = words.first()?;
    if first.contains('=') || SHELL_WORDS.contains(&first.as_str()) {
        return None;
    }
    // Any other control character (form feed, vertical tab, NUL, ...): let the shell decide.
    if trimmed.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    Some(words)
}

/// Decides the command line for a `run:` script; `shell` is the step's `shell:` field.
pub fn plan_script(script: &str, shell: Option<&str>) -> ScriptPlan {
    match shell.map(str::trim).filter(|s| !s.is_empty()) {
        None => {
            if let Some(mut words) = simple_command_words(script) {
                let program = words.remove(0);
                return ScriptPlan {
                    program,
                    args: words,
                    direct: true,
                };
            }
            if default_is_bash() {
                shell_plan("bash", script)
            } else {
                shell_plan("sh", script)
            }
        }
        Some(shell) => {
            let mut words = shell.split_whitespace().map(str::to_string);
            let program = words.next().unwrap_or_default();
            let rest: Vec<String> = words.collect();
            if !rest.is_empty() || !is_known_shell(&program) {
                let mut args = Vec::with_capacity(rest.len() + 2);
                let mut placed = false;
                for word in rest {
                    if word == "{0}" {
                        args.push(script.to_string());
                        placed = true;
                    } else {
                        args.push(word);
                    }
                }
                if !placed {
                    args.push("-c".to_string());
                    args.push(script.to_string());
                }
                return ScriptPlan {
                    program,
                    args,
                    direct: false,
                };
            }
            shell_plan(&program, script)
        }
    }
}

fn is_known_shell(program: &str) -> bool {
    let base = Path::new(program)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or(program);
    matches!(
        base,
        "bash"
            | "sh"
            | "dash"
            | "zsh"
            | "ksh"
            | "python"
            | "python3"
            | "node"
            | "perl"
            | "ruby"
            | "pwsh"
    )
}

fn shell_plan(program: &str, script: &str) -> ScriptPlan {
    let base = Path::new(program)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or(program);
    let flags: &[&str] = match base {
        "bash" => &["--noprofile", "--norc", "-e", "-c"],
        "sh" | "dash" | "zsh" | "ksh" => &["-e", "-c"],
        "python" | "python3" => &["-c"],
        "node" | "perl" | "ruby" => &["-e"],
        "pwsh" => &["-command"],
        _ => &["-c"],
    };
    let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    args.push(script.to_string());
    ScriptPlan {
        program: program.to_string(),
        args,
        direct: false,
    }
}

/// Whether `bash` is on `PATH` (looked up once per process).
pub(crate) fn default_is_bash() -> bool {
    static BASH: OnceLock<bool> = OnceLock::new();
    *BASH.get_or_init(|| find_on_path("bash").is_some())
}

/// Finds an executable file named `name` in the directories of `PATH`.
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands_split_into_words() {
        assert_eq!(
            simple_command_words("echo hello  world"),
            Some(vec!["echo".to_string(), "hello".into(), "world".into()])
        );
        assert_eq!(simple_command_words("echo $HOME"), None);
        assert_eq!(simple_command_words("cd /tmp"), None);
        assert_eq!(simple_command_words("FOO=1 env"), None);
    }

    fn words(s: &str) -> Option<Vec<String>> {
        simple_command_words(s)
    }

    #[test]
    fn simple_commands_are_direct() {
        assert_eq!(words("true"), Some(vec!["true".to_string()]));
        assert_eq!(
            words("  cargo build --release\n"),
            Some(vec!["cargo".into(), "build".into(), "--release".into()])
        );
        assert_eq!(
            words("ls -la a=b"),
            Some(vec!["ls".into(), "-la".into(), "a=b".into()])
        );
        let plan = plan_script("echo hi", None);
        assert!(plan.direct);
        assert_eq!(plan.program, "echo");
        assert_eq!(plan.args, vec!["hi"]);
    }

    #[test]
    fn shell_syntax_needs_a_shell() {
        for script in [
            "echo $X",
            "echo 'a b'",
            "echo \"a\"",
            "ls *.rs",
            "ls a?",
            "ls [ab]",
            "a | b",
            "a && b",
            "a; b",
            "a > f",
            "a < f",
            "(a)",
            "echo \\n",
            "ls ~",
            "echo # comment",
            "X=1 env",
            "echo a\necho b",
            "if true",
            "for x",
            "! false",
            "cd /tmp",
            "export A",
            "echo {a,b}",
            "echo `date`",
            "exit 3",
            "sleep 1 &",
            "",
            "   ",
        ] {
            assert_eq!(words(script), None, "{script:?} must need a shell");
            assert!(!plan_script(script, None).direct, "{script:?}");
        }
    }

    #[test]
    fn shell_fallback_uses_bash_flags() {
        let plan = plan_script("echo $HOME", None);
        if default_is_bash() {
            assert_eq!(plan.program, "bash");
            assert_eq!(
                plan.args,
                vec!["--noprofile", "--norc", "-e", "-c", "echo $HOME"]
            );
        } else {
            assert_eq!(plan.program, "sh");
            assert_eq!(plan.args, vec!["-e", "-c", "echo $HOME"]);
        }
    }

    #[test]
    fn explicit_shells() {
        let p = plan_script("true", Some("sh"));
        assert!(!p.direct);
        assert_eq!(
            (p.program.as_str(), p.args.clone()),
            ("sh", vec!["-e".into(), "-c".into(), "true".into()])
        );
        let p = plan_script("print(1)", Some("python3"));
        assert_eq!(p.args, vec!["-c", "print(1)"]);
        let p = plan_script("console.log(1)", Some("node"));
        assert_eq!(p.args, vec!["-e", "console.log(1)"]);
        let p = plan_script("print(1)", Some("python3 -u -c {0}"));
        assert_eq!(p.program, "python3");
        assert_eq!(p.args, vec!["-u", "-c", "print(1)"]);
        let p = plan_script("x", Some("mysh --flag"));
        assert_eq!(p.args, vec!["--flag", "-c", "x"]);
        let p = plan_script("x", Some("/bin/bash"));
        assert_eq!(p.args, vec!["--noprofile", "--norc", "-e", "-c", "x"]);
    }

    #[test]
    fn expr_names() {
        assert_eq!(expr_var_name(3), "AGENT_EXPR_3");
    }
}
