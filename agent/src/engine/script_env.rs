//! No script injection: a `run:` script's `${{ }}` expressions never become shell text.
//! Each value is passed as an environment variable (`AGENT_EXPR_0`, `AGENT_EXPR_1`, ...)
//! and the expression is replaced by a reference to it.
//!
//! For POSIX shells (the default bash/sh and any `shell:` that is not a known interpreter)
//! [`dsl::shell`] decides the reference from the shell's lexer state at that point, so the
//! value comes back as exactly the text GitHub Actions would have pasted, one word, never
//! split, globbed or re-parsed, in quotes, comments, `$( )`, backticks and heredocs alike;
//! a value used in shell arithmetic must be an integer (else the step fails with
//! `ExpressionError`). For other interpreters named by `shell:` the reference is that
//! language's way to read the environment (`python`: `__import__('os').environ[...]`,
//! `node`: `process.env.X`, `perl`: `$ENV{X}`, `ruby`: `ENV['X']`, `pwsh`: `$env:X`).

use dsl::expr::{EvalContext, ExprError, Template, TemplatePart};
use dsl::shell::{self, Piece, Slot};
use runners::expr_var_name;

use super::scope::env_text;

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

/// How an interpreter other than a POSIX shell reads the variable `var`.
fn reference(family: &str, var: &str) -> String {
    match family {
        "python" => format!("__import__('os').environ['{var}']"),
        "node" => format!("process.env.{var}"),
        "perl" => format!("$ENV{{{var}}}"),
        "ruby" => format!("ENV['{var}']"),
        _ => format!("$env:{var}"),
    }
}

/// A script ready to run: its text and the variables it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedScript {
    /// Script text with every expression replaced by a variable reference.
    pub(crate) text: String,
    /// `AGENT_EXPR_n` variables and their values.
    pub(crate) env: Vec<(String, String)>,
}

/// Whether `v` can stand in shell arithmetic as a number and nothing else (bash evaluates
/// any other text there as an expression, array subscripts with `$( )` included).
fn is_integer(v: &str) -> bool {
    let digits = v.trim().strip_prefix(['-', '+']).unwrap_or(v.trim());
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Evaluates the expressions of a `run:` template and rewrites it (see the module doc).
pub(crate) fn prepare(
    template: &Template,
    shell: Option<&str>,
    ctx: &dyn EvalContext,
) -> Result<PreparedScript, ExprError> {
    let fam = family(shell);
    let exprs: Vec<(&dsl::expr::Expr, usize)> = match template {
        Template::Literal(s) => {
            return Ok(PreparedScript {
                text: s.clone(),
                env: Vec::new(),
            });
        }
        Template::Whole { expr, offset } => vec![(expr, *offset)],
        Template::Interpolated(parts) => parts
            .iter()
            .filter_map(|p| match p {
                TemplatePart::Expr { expr, offset } => Some((expr, *offset)),
                TemplatePart::Text(_) => None,
            })
            .collect(),
    };
    let mut env = Vec::with_capacity(exprs.len());
    for (n, (expr, offset)) in exprs.iter().enumerate() {
        let v = expr.eval(ctx).map_err(|e| e.shifted(*offset))?;
        env.push((expr_var_name(n), env_text(&v)));
    }
    if fam != "sh" {
        let mut text = String::new();
        let mut n = 0;
        for piece in pieces(template) {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Expr => {
                    text.push_str(&reference(fam, &expr_var_name(n)));
                    n += 1;
                }
            }
        }
        return Ok(PreparedScript { text, env });
    }
    let script = shell::rewrite(&pieces(template), &expr_var_name).map_err(|problems| {
        let p = &problems[0];
        let offset = exprs.get(p.expr).map_or(0, |(_, o)| *o);
        ExprError::new(p.message.clone(), offset, 0)
    })?;
    for (n, slot) in script.slots.iter().enumerate() {
        if *slot == Slot::Arithmetic && !is_integer(&env[n].1) {
            let offset = exprs.get(n).map_or(0, |(_, o)| *o);
            return Err(ExprError::new(
                format!(
                    "the value of this `${{{{ }}}}` is used in shell arithmetic and must be an integer, got `{}`",
                    env[n].1
                ),
                offset,
                0,
            ));
        }
    }
    Ok(PreparedScript {
        text: script.text,
        env,
    })
}

/// The template as shell pieces: text and expression places.
pub(crate) fn pieces(template: &Template) -> Vec<Piece<'_>> {
    match template {
        Template::Literal(s) => vec![Piece::Text(s)],
        Template::Whole { .. } => vec![Piece::Expr],
        Template::Interpolated(parts) => parts
            .iter()
            .map(|p| match p {
                TemplatePart::Text(t) => Piece::Text(t),
                TemplatePart::Expr { .. } => Piece::Expr,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_by_family() {
        assert_eq!(family(Some("python3 -u")), "python");
        assert_eq!(family(Some("/usr/bin/bash")), "sh");
        assert_eq!(reference("python", "V"), "__import__('os').environ['V']");
        assert_eq!(reference("pwsh", "V"), "$env:V");
        assert!(is_integer(" -12 "));
        assert!(!is_integer("1+1"));
        assert!(!is_integer(""));
        assert!(!is_integer("a[$(id)]"));
    }

    use dsl::expr::MapContext;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// One form of using a value in a script: the text with `@` where the expression goes,
    /// and the line it must print for a value (what a perfectly quoted paste would print).
    struct Form {
        text: &'static str,
        expect: fn(&str) -> String,
    }

    const FORMS: &[Form] = &[
        Form {
            text: "printf '[%s]\\n' \"@\"",
            expect: |v| format!("[{v}]"),
        },
        Form {
            text: "printf '[%s]\\n' @",
            expect: |v| format!("[{v}]"),
        },
        Form {
            text: "printf '[%s]\\n' 'a@b'",
            expect: |v| format!("[a{v}b]"),
        },
        Form {
            text: "printf '[%s]\\n' \"$(printf '<%s>' \"@\")\"",
            expect: |v| format!("[<{v}>]"),
        },
        Form {
            text: "printf '[%s]\\n' \"$(printf '<%s>' @)\"",
            expect: |v| format!("[<{v}>]"),
        },
        Form {
            text: "printf '[%s]\\n' \"`printf '<%s>' \"@\"`\"",
            expect: |v| format!("[<{v}>]"),
        },
        Form {
            text: "x=`printf '<%s>' @`; printf '[%s]\\n' \"$x\"",
            expect: |v| format!("[<{v}>]"),
        },
        Form {
            text: "cat <<EOF\n[@]\nEOF",
            expect: |v| format!("[{v}]"),
        },
        Form {
            text: "cat <<'EOF'\n[@] $HOME `x` \\\nEOF",
            expect: |v| format!("[{v}] $HOME `x` \\"),
        },
        Form {
            text: "cat <<-\"EOF\"\n\t[@]\n\tEOF",
            expect: |v| format!("[{v}]"),
        },
        Form {
            text: "# don't\nprintf '[%s]\\n' \"@\"",
            expect: |v| format!("[{v}]"),
        },
        Form {
            text: "printf '[%s]\\n' x # it's @ \"",
            expect: |_| "[x]".to_string(),
        },
        Form {
            text: "printf '[%s]\\n' $'a\\tb@'",
            expect: |v| format!("[a\tb{v}]"),
        },
        Form {
            text: "printf '[%s]\\n' \"a'@'b\"",
            expect: |v| format!("[a'{v}'b]"),
        },
        Form {
            text: "printf '[%s]\\n' \"${UNSET_4711:-@}\"",
            expect: |v| format!("[{v}]"),
        },
        Form {
            text: "printf '[%s]\\n' ${UNSET_4711:-@}",
            expect: |v| format!("[{v}]"),
        },
        Form {
            text: "printf '[%s]\\n' \"$(cat <<EOF\n<@>\nEOF\n)\"",
            expect: |v| format!("[<{v}>]"),
        },
        Form {
            text: "printf '[%s]\\n' \"$(printf '%s' \"$(printf '%s' '@')\")\"",
            expect: |v| format!("[{v}]"),
        },
        Form {
            text: "printf '[%s]\\n' \"$(case a in a) printf '<%s>' @;; (b) :;; esac)\"",
            expect: |v| format!("[<{v}>]"),
        },
    ];

    /// Values full of what a shell would act on; never a trailing newline (`$( )` strips it).
    fn value() -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            'a', 'Z', ' ', '*', '?', '[', ']', '\'', '"', '$', '`', '\\', '(', ')', ';', '&', '|',
            '<', '>', '#', '{', '}', '~', '!', '\n', '\t', 'é', '-', '=',
        ]);
        prop_oneof![
            prop::collection::vec(chars, 0..12).prop_map(|c| c.into_iter().collect::<String>()),
            Just("EOF".to_string()),
            Just("a\nEOF\nb".to_string()),
            Just("$(touch pwned)".to_string()),
            Just("*".to_string()),
        ]
        .prop_filter("no trailing newline", |v| !v.ends_with('\n'))
    }

    /// Runs `text` with bash in `dir`, the values in the environment; returns stdout.
    fn bash(dir: &std::path::Path, prepared: &PreparedScript) -> String {
        let out = std::process::Command::new("bash")
            .args(["--noprofile", "--norc", "-e", "-c", &prepared.text])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", "/home/test")
            .envs(prepared.env.iter().cloned())
            .current_dir(dir)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{}\n---\n{}",
            prepared.text,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Guards the rewriting of `${{ }}` in shell scripts: whatever the form (quotes,
        /// comments, `$( )`, backticks, heredocs) and the value, real bash prints the value
        /// exactly where the expression was: no word splitting, no globbing (the directory
        /// holds files), no command substitution, no literal quotes.
        #[test]
        fn bash_sees_every_value_as_written(
            picks in prop::collection::vec((0..FORMS.len(), value()), 1..5)
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("file-one"), "").expect("write");
            std::fs::write(dir.path().join("file-two"), "").expect("write");
            let mut script = String::new();
            let mut expected = String::new();
            let mut params = Map::new();
            for (k, (form, v)) in picks.iter().enumerate() {
                let form = &FORMS[*form];
                script.push_str(&form.text.replace('@', &format!("${{{{ parameters.v{k} }}}}")));
                script.push('\n');
                expected.push_str(&(form.expect)(v));
                expected.push('\n');
                params.insert(format!("v{k}"), Value::String(v.clone()));
            }
            let template = Template::parse(&script).expect("template parses");
            let mut roots = Map::new();
            roots.insert("parameters".into(), Value::Object(params));
            let ctx = MapContext::new(roots);
            let prepared = prepare(&template, None, &ctx).expect("prepared");
            let out = bash(dir.path(), &prepared);
            prop_assert_eq!(&out, &expected, "script:\n{}", prepared.text);
            prop_assert!(!dir.path().join("pwned").exists());
        }
    }

    /// Guards arithmetic: an integer works, anything else fails before the shell runs.
    #[test]
    fn arithmetic_takes_integers_only() {
        let template = Template::parse("echo $(( ${{ parameters.n }} + 1 ))").expect("parses");
        let ctx = |v: Value| {
            let mut roots = Map::new();
            roots.insert("parameters".into(), serde_json::json!({ "n": v }));
            MapContext::new(roots)
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let p = prepare(&template, None, &ctx(Value::from(41))).expect("integer");
        assert_eq!(bash(dir.path(), &p), "42\n");
        let err = prepare(&template, None, &ctx(Value::from("a[$(touch x)]"))).expect_err("code");
        assert!(
            err.message.contains("must be an integer"),
            "{}",
            err.message
        );
    }
}
