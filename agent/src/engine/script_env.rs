//! No script injection (DESIGN §3): a `run:` script's `${{ }}` expressions never become
//! shell text. Each one is replaced by a reference to an environment variable
//! (`AGENT_EXPR_0`, `AGENT_EXPR_1`, ...) that carries its value.
//!
//! For POSIX shells the reference depends on the quoting around it, so that the value is
//! always one word and never re-parsed: outside quotes `"${AGENT_EXPR_0}"`, inside double
//! quotes `${AGENT_EXPR_0}`, inside single quotes `'"${AGENT_EXPR_0}"'` (close, quoted
//! expansion, reopen). For other interpreters named by `shell:` the reference is that
//! language's way to read the environment (`python`: `__import__('os').environ[...]`,
//! `node`: `process.env.X`, `perl`: `$ENV{X}`, `ruby`: `ENV['X']`, `pwsh`: `$env:X`).
//! The one thing it cannot see is a heredoc body, where the quotes of the outside form show
//! up literally: use the variable form yourself there (`${AGENT_EXPR_0}`) or a parameter.

use dsl::expr::{EvalContext, ExprError, Template, TemplatePart};
use runners::expr_var_name;

use super::scope::env_text;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

fn scan(text: &str, mut q: Quote) -> Quote {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (q, c) {
            (Quote::None | Quote::Double, '\\') => {
                chars.next();
            }
            (Quote::None, '\'') => q = Quote::Single,
            (Quote::None, '"') => q = Quote::Double,
            (Quote::Single, '\'') => q = Quote::None,
            (Quote::Double, '"') => q = Quote::None,
            _ => {}
        }
    }
    q
}

/// The interpreter family of a `shell:` value.
fn family(shell: Option<&str>) -> &'static str {
    let Some(shell) = shell else { return "sh" };
    let prog = shell.split_whitespace().next().unwrap_or("");
    let base = prog.rsplit('/').next().unwrap_or(prog);
    if base.starts_with("python") {
        "python"
    } else if base == "node" || base == "nodejs" {
        "node"
    } else if base == "perl" {
        "perl"
    } else if base == "ruby" {
        "ruby"
    } else if base == "pwsh" || base == "powershell" {
        "pwsh"
    } else {
        "sh"
    }
}

fn reference(family: &str, var: &str, q: Quote) -> String {
    match family {
        "python" => format!("__import__('os').environ['{var}']"),
        "node" => format!("process.env.{var}"),
        "perl" => format!("$ENV{{{var}}}"),
        "ruby" => format!("ENV['{var}']"),
        "pwsh" => format!("$env:{var}"),
        _ => match q {
            Quote::None => format!("\"${{{var}}}\""),
            Quote::Double => format!("${{{var}}}"),
            Quote::Single => format!("'\"${{{var}}}\"'"),
        },
    }
}

/// A script ready to run: its text and the variables it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedScript {
    /// Script text with every expression replaced by a variable reference.
    pub text: String,
    /// `AGENT_EXPR_n` variables and their values.
    pub env: Vec<(String, String)>,
}

/// Evaluates the expressions of a `run:` template and rewrites it (see the module doc).
pub fn prepare(
    template: &Template,
    shell: Option<&str>,
    ctx: &dyn EvalContext,
) -> Result<PreparedScript, ExprError> {
    let fam = family(shell);
    match template {
        Template::Literal(s) => Ok(PreparedScript {
            text: s.clone(),
            env: Vec::new(),
        }),
        Template::Whole { expr, offset } => {
            let v = expr.eval(ctx).map_err(|e| e.shifted(*offset))?;
            let var = expr_var_name(0);
            Ok(PreparedScript {
                text: reference(fam, &var, Quote::None),
                env: vec![(var, env_text(&v))],
            })
        }
        Template::Interpolated(parts) => {
            let mut text = String::new();
            let mut env = Vec::new();
            let mut q = Quote::None;
            for part in parts {
                match part {
                    TemplatePart::Text(t) => {
                        text.push_str(t);
                        q = scan(t, q);
                    }
                    TemplatePart::Expr { expr, offset } => {
                        let v = expr.eval(ctx).map_err(|e| e.shifted(*offset))?;
                        let var = expr_var_name(env.len());
                        text.push_str(&reference(fam, &var, q));
                        env.push((var, env_text(&v)));
                    }
                }
            }
            Ok(PreparedScript { text, env })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_tracking() {
        assert_eq!(scan("echo '", Quote::None), Quote::Single);
        assert_eq!(scan("echo \"a", Quote::None), Quote::Double);
        assert_eq!(scan("echo \\\"a", Quote::None), Quote::None);
        assert_eq!(scan("it's'", Quote::None), Quote::None);
        assert_eq!(scan("\"x\\\"", Quote::None), Quote::Double);
    }

    #[test]
    fn references_by_quote_and_family() {
        assert_eq!(reference("sh", "V", Quote::None), "\"${V}\"");
        assert_eq!(reference("sh", "V", Quote::Double), "${V}");
        assert_eq!(reference("sh", "V", Quote::Single), "'\"${V}\"'");
        assert_eq!(family(Some("python3 -u")), "python");
        assert_eq!(family(Some("/usr/bin/bash")), "sh");
        assert_eq!(
            reference("python", "V", Quote::None),
            "__import__('os').environ['V']"
        );
    }
}
