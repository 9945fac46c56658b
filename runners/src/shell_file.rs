//! How a `run:` script with an explicit `shell:` runs: GitHub Actions' semantics, where the
//! script is written to a file and the shell's command line names that file as `{0}`.
//!
//! | `shell:`        | command line                                   | file suffix |
//! |-----------------|------------------------------------------------|-------------|
//! | `bash`          | `bash --noprofile --norc -eo pipefail {0}`     | `.sh`       |
//! | `sh`            | `sh -e {0}`                                    | `.sh`       |
//! | `dash`/`zsh`/`ksh` | `NAME -e {0}`                               | `.sh`       |
//! | `python`        | `python {0}` (`python3` when `python` is missing) | `.py`    |
//! | `python3`       | `python3 {0}`                                  | `.py`       |
//! | `pwsh`/`powershell` | `pwsh -command ". '{0}'"`                  | `.ps1`      |
//! | `node`/`nodejs`/`perl`/`ruby` | `NAME {0}`                       | `.js`/`.pl`/`.rb` |
//! | `CMD ... {0} ...` | the words, `{0}` replaced by the file        | none        |
//!
//! A named interpreter that is not on `PATH` is an error naming it, before anything runs.
//! An absolute path (`/usr/bin/bash`) keeps its flags and is used as it is.

use std::path::Path;

use crate::script::{ScriptPlan, find_on_path};

/// The file name suffix for a script run by `shell` (`.sh`, `.py`, ... or empty).
pub fn script_file_suffix(shell: &str) -> &'static str {
    let shell = shell.trim();
    if shell.contains(char::is_whitespace) || shell.contains("{0}") {
        return "";
    }
    match base_name(shell) {
        "bash" | "sh" | "dash" | "zsh" | "ksh" => ".sh",
        "python" | "python3" => ".py",
        "pwsh" | "powershell" => ".ps1",
        "node" | "nodejs" => ".js",
        "perl" => ".pl",
        "ruby" => ".rb",
        _ => "",
    }
}

fn base_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Whether `program` can be executed: an absolute path that exists, or a name on `PATH`.
fn available(program: &str) -> bool {
    if program.contains('/') {
        Path::new(program).is_file()
    } else {
        find_on_path(program).is_some()
    }
}

/// The command line that runs the script `file` with `shell` (a `shell:` value). The error
/// is a message for the step's failure (an interpreter that is not installed).
pub fn plan_shell_file(shell: &str, file: &Path) -> Result<ScriptPlan, String> {
    let shell = shell.trim();
    let file_text = file.to_string_lossy().into_owned();
    if shell.contains(char::is_whitespace) || shell.contains("{0}") {
        let mut words = shell
            .split_whitespace()
            .map(|w| w.replace("{0}", &file_text));
        let program = words.next().unwrap_or_default();
        let args: Vec<String> = words.collect();
        if !available(&program) {
            return Err(format!(
                "shell `{shell}`: `{program}` is not installed (not found on PATH)"
            ));
        }
        return Ok(ScriptPlan {
            program,
            args,
            direct: false,
        });
    }
    let (program, flags): (String, Vec<String>) = match base_name(shell) {
        "bash" => (
            shell.to_string(),
            vec![
                "--noprofile".into(),
                "--norc".into(),
                "-eo".into(),
                "pipefail".into(),
            ],
        ),
        "sh" | "dash" | "zsh" | "ksh" => (shell.to_string(), vec!["-e".into()]),
        "python" if !shell.contains('/') && !available("python") && available("python3") => {
            ("python3".to_string(), Vec::new())
        }
        "pwsh" | "powershell" => {
            let program = if shell.contains('/') {
                shell.to_string()
            } else {
                "pwsh".to_string()
            };
            if !available(&program) {
                return Err(format!(
                    "shell `{shell}`: PowerShell (`pwsh`) is not installed (not found on PATH)"
                ));
            }
            return Ok(ScriptPlan {
                program,
                args: vec![
                    "-command".into(),
                    format!(". '{}'", file_text.replace('\'', "''")),
                ],
                direct: false,
            });
        }
        _ => (shell.to_string(), Vec::new()),
    };
    if !available(&program) {
        return Err(format!(
            "shell `{shell}`: `{program}` is not installed (not found on PATH)"
        ));
    }
    let mut args = flags;
    args.push(file_text);
    Ok(ScriptPlan {
        program,
        args,
        direct: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards GitHub Actions' command line for an explicitly named `bash`.
    #[test]
    fn bash_named_explicitly_gets_pipefail() {
        let p = plan_shell_file("bash", Path::new("/t/s.sh")).unwrap();
        assert_eq!(p.program, "bash");
        assert_eq!(
            p.args,
            ["--noprofile", "--norc", "-eo", "pipefail", "/t/s.sh"]
        );
        let p = plan_shell_file("sh", Path::new("/t/s.sh")).unwrap();
        assert_eq!(p.args, ["-e", "/t/s.sh"]);
        assert_eq!(script_file_suffix("python"), ".py");
        assert_eq!(script_file_suffix("bash -x {0}"), "");
    }

    /// Guards custom templates: `{0}` becomes the file, a missing program is named.
    #[test]
    fn custom_template_and_missing_program() {
        let p = plan_shell_file("bash -x {0}", Path::new("/t/s")).unwrap();
        assert_eq!(p.args, ["-x", "/t/s"]);
        let e = plan_shell_file("no-such-shell-xyz {0}", Path::new("/t/s")).unwrap_err();
        assert!(e.contains("not installed"), "{e}");
    }
}
