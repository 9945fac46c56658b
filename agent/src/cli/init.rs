//! `agent init [TEMPLATE] [--dir DIR] [--force]`: write a starter workflow and the skills it
//! uses into `DIR/.workflows/`.
//!
//! Templates: `deployment`, `testing`, `data_processing`, and CI for `rust`, `python` and
//! `node`. Without a TEMPLATE the project is detected from `Cargo.toml`, `pyproject.toml` or
//! `setup.py`, `package.json` (in that order); a directory with none of them gets `testing`.
//! The files are embedded in the binary (`agent/templates/`). Nothing is overwritten without
//! `--force`: an existing file is named and nothing is written. The written workflow is
//! checked with the validator before the command reports success.
//!
//! Exit codes: 0 written, 1 a file could not be written, 2 unknown template, existing files
//! without `--force`, or an unusable `--dir`.

use std::path::{Path, PathBuf};

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// Arguments of `agent init`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct InitArgs {
    /// The template: deployment, testing, data_processing, rust, python or node (default:
    /// detected from the project's files).
    pub(crate) template: Option<String>,
    /// The project directory (default: the current directory; created if missing).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Replace files that already exist.
    #[arg(long)]
    pub(crate) force: bool,
}

/// One file a template writes, relative to the project directory.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
    executable: bool,
    /// Written only when the file does not exist yet, even with `--force` (sample data).
    sample: bool,
}

struct Template {
    name: &'static str,
    about: &'static str,
    files: &'static [TemplateFile],
}

macro_rules! file {
    ($path:literal, $src:literal) => {
        TemplateFile {
            path: $path,
            text: include_str!(concat!("../../templates/", $src)),
            executable: false,
            sample: false,
        }
    };
    ($path:literal, $src:literal, exec) => {
        TemplateFile {
            path: $path,
            text: include_str!(concat!("../../templates/", $src)),
            executable: true,
            sample: false,
        }
    };
    ($path:literal, $src:literal, sample) => {
        TemplateFile {
            path: $path,
            text: include_str!(concat!("../../templates/", $src)),
            executable: false,
            sample: true,
        }
    };
}

const TEMPLATES: &[Template] = &[
    Template {
        name: "deployment",
        about: "back up, validate, deploy, verify, with rollback",
        files: &[
            file!(".workflows/deployment.yaml", "deployment/workflow.yaml"),
            file!(
                ".workflows/skills/backup_manager",
                "deployment/backup_manager",
                exec
            ),
            file!(".workflows/skills/validator", "deployment/validator", exec),
            file!(".workflows/skills/deployer", "deployment/deployer", exec),
            file!(
                ".workflows/skills/health_checker",
                "deployment/health_checker",
                exec
            ),
        ],
    },
    Template {
        name: "testing",
        about: "unit suites in parallel, then integration suites",
        files: &[
            file!(".workflows/testing.yaml", "testing/workflow.yaml"),
            file!(".workflows/skills/test_runner", "testing/test_runner", exec),
        ],
    },
    Template {
        name: "data_processing",
        about: "extract a CSV file, clean/transform/enrich it, load it",
        files: &[
            file!(
                ".workflows/data_processing.yaml",
                "data_processing/workflow.yaml"
            ),
            file!(".workflows/skills/_data.py", "data_processing/_data.py"),
            file!(
                ".workflows/skills/data_reader",
                "data_processing/data_reader",
                exec
            ),
            file!(
                ".workflows/skills/schema_validator",
                "data_processing/schema_validator",
                exec
            ),
            file!(
                ".workflows/skills/data_cleaner",
                "data_processing/data_cleaner",
                exec
            ),
            file!(
                ".workflows/skills/data_transformer",
                "data_processing/data_transformer",
                exec
            ),
            file!(
                ".workflows/skills/data_enricher",
                "data_processing/data_enricher",
                exec
            ),
            file!(
                ".workflows/skills/data_writer",
                "data_processing/data_writer",
                exec
            ),
            file!(
                ".workflows/skills/output_verifier",
                "data_processing/output_verifier",
                exec
            ),
            file!("data/input.csv", "data_processing/input.csv", sample),
        ],
    },
    Template {
        name: "rust",
        about: "Rust CI: fmt, clippy, build, test",
        files: &[file!(".workflows/rust.yaml", "rust/workflow.yaml")],
    },
    Template {
        name: "python",
        about: "Python CI: compile, test (pytest or unittest)",
        files: &[file!(".workflows/python.yaml", "python/workflow.yaml")],
    },
    Template {
        name: "node",
        about: "Node CI: install, lint, build, test",
        files: &[file!(".workflows/node.yaml", "node/workflow.yaml")],
    },
];

/// The template used for a directory with no project file that names one.
const DEFAULT_TEMPLATE: &str = "testing";

/// Which template a project's files suggest, and the file that said so.
fn detect(dir: &Path) -> Option<(&'static str, &'static str)> {
    const MARKERS: &[(&str, &str)] = &[
        ("Cargo.toml", "rust"),
        ("pyproject.toml", "python"),
        ("setup.py", "python"),
        ("package.json", "node"),
    ];
    MARKERS
        .iter()
        .find(|(file, _)| dir.join(file).is_file())
        .map(|(file, t)| (*t, *file))
}

fn names() -> String {
    TEMPLATES
        .iter()
        .map(|t| format!("`{}`", t.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: InitArgs) -> i32 {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let here = dir == Path::new(".") || dir.as_os_str().is_empty();
    // Paths are shown as the user would type them: relative to the current directory.
    let shown = |rel: &str| -> String {
        if here {
            rel.to_string()
        } else {
            dir.join(rel).display().to_string()
        }
    };
    if dir.exists() && !dir.is_dir() {
        eprintln!("error: `{}` is not a directory", dir.display());
        return EXIT_INVALID;
    }
    let template = match &args.template {
        Some(name) => match TEMPLATES.iter().find(|t| t.name == name.as_str()) {
            Some(t) => t,
            None => {
                let fixed = name.replace('-', "_");
                let hint = TEMPLATES
                    .iter()
                    .find(|t| t.name == fixed || t.name.starts_with(name.as_str()))
                    .map(|t| format!(", did you mean `{}`?", t.name))
                    .unwrap_or_default();
                eprintln!(
                    "error: unknown template `{name}`{hint} (templates: {})",
                    names()
                );
                return EXIT_INVALID;
            }
        },
        None => {
            let (name, why) = match detect(&dir) {
                Some((t, file)) => (t, format!("found `{file}`")),
                None => (
                    DEFAULT_TEMPLATE,
                    "no Cargo.toml, pyproject.toml, setup.py or package.json here".to_string(),
                ),
            };
            println!(
                "{why}: using the `{name}` template (templates: {}; `agent init TEMPLATE` picks one)",
                names()
            );
            match TEMPLATES.iter().find(|t| t.name == name) {
                Some(t) => t,
                None => return EXIT_FAILED,
            }
        }
    };

    if !args.force {
        let existing: Vec<String> = template
            .files
            .iter()
            .filter(|f| !f.sample)
            .filter(|f| dir.join(f.path).exists())
            .map(|f| format!("`{}`", shown(f.path)))
            .collect();
        if !existing.is_empty() {
            eprintln!(
                "error: {} already exist{}: nothing written (use --force to replace {})",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" },
                if existing.len() == 1 { "it" } else { "them" }
            );
            return EXIT_INVALID;
        }
    }

    let mut written = Vec::new();
    for f in template.files {
        let path = dir.join(f.path);
        if f.sample && path.exists() {
            continue;
        }
        if let Err(e) = write_file(&path, f.text, f.executable) {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return EXIT_FAILED;
        }
        written.push((shown(f.path), f.sample));
    }

    let workflow_rel = format!(".workflows/{}.yaml", template.name);
    if let Err(diags) = dsl::load_workflow(&dir.join(&workflow_rel)) {
        // The embedded templates are checked by tests; this guards a broken build.
        eprint!("{}", diags.render());
        return EXIT_FAILED;
    }
    println!(
        "wrote the `{}` template ({}):",
        template.name, template.about
    );
    for (path, sample) in &written {
        println!("  {path}{}", if *sample { " (sample input)" } else { "" });
    }
    if here {
        println!("next: agent exec {workflow_rel}");
    } else {
        println!(
            "next: cd {} && agent exec {workflow_rel}",
            shell_word(&dir.display().to_string())
        );
    }
    EXIT_OK
}

fn write_file(path: &Path, text: &str, executable: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// A path quoted for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every embedded template parses and validates (a broken template is caught at
    /// `cargo test`, not by a user).
    #[test]
    fn every_template_validates() {
        for t in TEMPLATES {
            let wf = t.files[0].text;
            if let Err(d) = dsl::parse_str("workflow.yaml", wf) {
                panic!("template `{}`:\n{}", t.name, d.render());
            }
        }
    }
}
