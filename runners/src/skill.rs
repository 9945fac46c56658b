//! Skill lookup and manifests (the README's "Skills and the step protocol").
//!
//! A skill named `NAME` is searched, in order, in `<workspace>/.workflows/skills/`, then the
//! configured skill directories, then the built-ins ([`BUILTINS`]). In each directory the first
//! match wins:
//!
//! 1. `NAME/skill.yaml` — a directory skill with a manifest;
//! 2. `NAME`, then `NAME.sh`, then `NAME.py` — a single executable file (it must have an
//!    execute bit; the extension only helps editors, the file's `#!` line picks the
//!    interpreter).
//!
//! A directory `NAME/` without `skill.yaml` is an error rather than skipped, and so is a
//! matching file without an execute bit: a half-installed skill should not silently fall
//! back to another one.
//!
//! Names are made of `A-Z a-z 0-9 . _ -` and do not start with `.` or `-`; so `../x`,
//! `a/b` and `.hidden` are rejected, and the path found must resolve (after symlinks) inside
//! its skill directory.
//!
//! The manifest (`skill.yaml`), every field but `command` optional:
//!
//! ```yaml
//! name: deploy            # informative
//! description: Deploys the artifact
//! version: "1.0"
//! command: ./deploy.sh --fast          # or an argv list: [python3, main.py]
//! inputs:                              # informative, checked by later tooling
//!   environment: {type: string, required: true, description: target}
//! outputs:
//!   url: {type: string}
//! resources: {cpu: 1, memory_mb: 512}  # admission request; io_bound: true means cpu 0
//! deterministic: false
//! side_effects: true
//! io_bound: false
//! error_codes: {3: NetworkError, 4: ValidationError}   # exit code -> error class
//! ```
//!
//! `command` runs with cwd = the workspace (as every step); relative paths in it that name a
//! file inside the skill directory (`./deploy.sh`, `main.py`) are made absolute, and the
//! process gets `AGENT_SKILL_DIR`. A string command with shell syntax runs through the shell
//! like a `run:` script.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::admission::Request;
use crate::errors::{ErrorClass, RunnerError};
use crate::script::plan_script;
use crate::spawn::StepCommand;

/// Where a skill was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkillSource {
    /// `<workspace>/.workflows/skills/`.
    Workspace,
    /// One of the configured skill directories.
    Configured(PathBuf),
    /// Built into the agent.
    Builtin,
}

/// A skill ready to run.
#[derive(Debug, Clone)]
pub struct Skill {
    /// The name it was looked up by.
    pub name: String,
    /// The executable file, or the skill's directory for a manifest skill (empty for a
    /// built-in).
    pub path: PathBuf,
    /// Where it was found.
    pub source: SkillSource,
    /// Program to execute.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The manifest of a directory skill.
    pub manifest: Option<Manifest>,
}

impl Skill {
    /// The command to run (cwd, stdin, protocol env and timeout are the engine's to add).
    pub fn command(&self) -> StepCommand {
        let mut cmd = StepCommand::new(self.program.clone()).args(self.args.iter().cloned());
        if self.manifest.is_some() {
            cmd = cmd.env("AGENT_SKILL_DIR", self.path.to_string_lossy());
        } else if let Some(dir) = self.path.parent() {
            cmd = cmd.env("AGENT_SKILL_DIR", dir.to_string_lossy());
        }
        cmd
    }

    /// The admission request from the manifest (default: 1 CPU, no memory; `io_bound`
    /// without an explicit `cpu` means 0 CPU).
    pub fn request(&self) -> Request {
        match &self.manifest {
            None => Request::default(),
            Some(m) => Request {
                cpu: m.resources.cpu.unwrap_or(if m.io_bound { 0 } else { 1 }),
                memory_mb: m.resources.memory_mb.unwrap_or(0),
            },
        }
    }

    /// The manifest's `error_codes` (empty for single-file skills).
    pub fn error_codes(&self) -> HashMap<i32, ErrorClass> {
        self.manifest
            .as_ref()
            .map(|m| m.error_codes.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }
}

/// A skill's `skill.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Informative name.
    #[serde(default)]
    pub name: Option<String>,
    /// Informative description.
    #[serde(default)]
    pub description: Option<String>,
    /// Informative version.
    #[serde(default)]
    pub version: Option<String>,
    /// The command: a string (split into words, or run by the shell when it has shell
    /// syntax) or an argv list.
    pub command: CommandSpec,
    /// Declared inputs.
    #[serde(default)]
    pub inputs: IndexMap<String, IoSpec>,
    /// Declared outputs.
    #[serde(default)]
    pub outputs: IndexMap<String, IoSpec>,
    /// Resource request for admission.
    #[serde(default)]
    pub resources: Resources,
    /// Same inputs give the same outputs (a hint for caching).
    #[serde(default)]
    pub deterministic: bool,
    /// Changes the world outside its outputs.
    #[serde(default)]
    pub side_effects: bool,
    /// Mostly waits on I/O: needs no CPU slot unless `resources.cpu` says otherwise.
    #[serde(default)]
    pub io_bound: bool,
    /// Exit code -> error class.
    #[serde(default)]
    pub error_codes: IndexMap<i32, ErrorClass>,
}

/// A declared input or output of a skill.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoSpec {
    /// `string`, `number`, `integer`, `boolean`, `array` or `object`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Must be given.
    #[serde(default)]
    pub required: bool,
    /// Value when not given.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// Allowed values.
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<serde_json::Value>>,
    /// What it is.
    #[serde(default)]
    pub description: Option<String>,
}

/// `resources:` of a manifest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU slots (0 = I/O-bound).
    #[serde(default)]
    pub cpu: Option<u32>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
}

/// A manifest's `command`: one string or an argv list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// `command: ./run.sh --flag`
    Line(String),
    /// `command: [python3, main.py]`
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command line string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandSpec, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("`command` is empty"));
                }
                Ok(CommandSpec::Line(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandSpec, A::Error> {
                let mut argv = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    argv.push(s);
                }
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(de::Error::custom(
                        "`command` list is empty or starts with an empty string",
                    ));
                }
                Ok(CommandSpec::Argv(argv))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Parses a manifest's text; `path` is only used in the error.
pub(crate) fn parse_manifest(text: &str, path: &Path) -> Result<Manifest, RunnerError> {
    yaml_serde::from_str::<Manifest>(text).map_err(|e| RunnerError::Manifest {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Checks that `name` cannot escape a skill directory.
pub(crate) fn validate_skill_name(name: &str) -> Result<(), RunnerError> {
    let bad = |reason| {
        Err(RunnerError::InvalidSkillName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.len() > 255 {
        return bad("the name is longer than 255 bytes");
    }
    if name.contains('/') || name.contains('\\') {
        return bad("a skill name cannot contain a path separator");
    }
    if name.starts_with('.') {
        return bad("a skill name cannot start with `.`");
    }
    if name.starts_with('-') {
        return bad("a skill name cannot start with `-`");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("only letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

/// The shared helpers prepended to every built-in skill's script.
const BUILTIN_LIB: &str = include_str!("../skills/_lib.sh");

/// The built-in skills: the toolchain selectors, bash scripts compiled into the binary (name,
/// script). A workspace or configured skill of the same name wins over them. Each runs as
/// `bash --noprofile --norc -c SCRIPT NAME` (nothing is written to disk to run it) and
/// changes the later steps' environment through `$AGENT_PATH` and `$AGENT_ENV`.
pub const BUILTINS: &[(&str, &str)] = &[
    ("setup-python", include_str!("../skills/setup-python.sh")),
    ("setup-node", include_str!("../skills/setup-node.sh")),
    ("setup-go", include_str!("../skills/setup-go.sh")),
    (
        "rust-toolchain",
        include_str!("../skills/rust-toolchain.sh"),
    ),
];

/// The built-in skill `name`, if there is one.
pub(crate) fn builtin_skill(name: &str) -> Option<Skill> {
    let (name, script) = BUILTINS.iter().find(|(n, _)| *n == name)?;
    Some(Skill {
        name: (*name).to_string(),
        path: PathBuf::new(),
        source: SkillSource::Builtin,
        program: "bash".to_string(),
        args: vec![
            "--noprofile".to_string(),
            "--norc".to_string(),
            "-c".to_string(),
            format!("{BUILTIN_LIB}\n{script}"),
            (*name).to_string(),
        ],
        manifest: None,
    })
}

/// Finds skill `name`: `<workspace>/.workflows/skills/`, then `dirs` in order, then the
/// built-ins. See the module docs for what matches.
pub fn find_skill(name: &str, workspace: &Path, dirs: &[PathBuf]) -> Result<Skill, RunnerError> {
    validate_skill_name(name)?;
    let mut searched = Vec::new();
    let workspace_dir = workspace.join(".workflows").join("skills");
    let candidates = std::iter::once((workspace_dir, SkillSource::Workspace)).chain(
        dirs.iter()
            .map(|d| (d.clone(), SkillSource::Configured(d.clone()))),
    );
    for (dir, source) in candidates {
        searched.push(dir.display().to_string());
        if let Some(skill) = find_in_dir(name, &dir, source)? {
            return Ok(skill);
        }
    }
    if let Some(skill) = builtin_skill(name) {
        return Ok(skill);
    }
    let all =
        std::iter::once(workspace.join(".workflows").join("skills")).chain(dirs.iter().cloned());
    Err(RunnerError::SkillNotFound {
        name: name.to_string(),
        searched: searched.join(", "),
        suggestion: closest_skill(name, all),
    })
}

/// The skill in `dirs` whose name is closest to `name`, if one is close enough.
fn closest_skill(name: &str, dirs: impl Iterator<Item = PathBuf>) -> Option<String> {
    let mut best: Option<(String, f64)> = None;
    let mut consider = |candidate: String| {
        let score = strsim::jaro_winkler(name, &candidate);
        let close = score >= 0.85 || strsim::damerau_levenshtein(name, &candidate) <= 1;
        if close && best.as_ref().is_none_or(|(_, s)| score > *s) {
            best = Some((candidate, score));
        }
    };
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten().take(10_000) {
            let file = entry.file_name().to_string_lossy().into_owned();
            let candidate = file
                .strip_suffix(".sh")
                .or_else(|| file.strip_suffix(".py"))
                .unwrap_or(&file)
                .to_string();
            if candidate.starts_with(['.', '_']) || validate_skill_name(&candidate).is_err() {
                continue;
            }
            consider(candidate);
        }
    }
    for (builtin, _) in BUILTINS {
        consider((*builtin).to_string());
    }
    best.map(|(c, _)| c)
}

fn find_in_dir(name: &str, dir: &Path, source: SkillSource) -> Result<Option<Skill>, RunnerError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let skill_dir = dir.join(name);
    if skill_dir.is_dir() {
        ensure_inside(name, dir, &skill_dir)?;
        let manifest_path = skill_dir.join("skill.yaml");
        let text = match std::fs::read_to_string(&manifest_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RunnerError::Manifest {
                    path: manifest_path,
                    message: "a skill directory needs a `skill.yaml`".to_string(),
                });
            }
            Err(e) => {
                return Err(RunnerError::Manifest {
                    path: manifest_path,
                    message: e.to_string(),
                });
            }
        };
        let manifest = parse_manifest(&text, &manifest_path)?;
        let skill_dir = skill_dir.canonicalize().unwrap_or(skill_dir);
        let (program, args) = manifest_argv(name, &skill_dir, &manifest.command)?;
        return Ok(Some(Skill {
            name: name.to_string(),
            path: skill_dir,
            source,
            program,
            args,
            manifest: Some(manifest),
        }));
    }
    for file_name in [name.to_string(), format!("{name}.sh"), format!("{name}.py")] {
        let file = dir.join(&file_name);
        if file.is_file() {
            ensure_inside(name, dir, &file)?;
            if !is_executable(&file) {
                return Err(RunnerError::SkillNotExecutable {
                    name: name.to_string(),
                    path: file,
                });
            }
            let file = file.canonicalize().unwrap_or(file);
            return Ok(Some(Skill {
                name: name.to_string(),
                program: file.to_string_lossy().into_owned(),
                path: file,
                source,
                args: Vec::new(),
                manifest: None,
            }));
        }
    }
    Ok(None)
}

fn ensure_inside(name: &str, dir: &Path, found: &Path) -> Result<(), RunnerError> {
    let (Ok(dir), Ok(found)) = (dir.canonicalize(), found.canonicalize()) else {
        return Ok(());
    };
    if found.starts_with(&dir) && found != dir {
        Ok(())
    } else {
        Err(RunnerError::InvalidSkillName {
            name: name.to_string(),
            reason: "it resolves outside its skill directory",
        })
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The argv of a manifest command, with paths into the skill directory made absolute.
fn manifest_argv(
    name: &str,
    skill_dir: &Path,
    spec: &CommandSpec,
) -> Result<(String, Vec<String>), RunnerError> {
    let words = match spec {
        CommandSpec::Argv(argv) => argv.clone(),
        CommandSpec::Line(line) => {
            let plan = plan_script(line, None);
            if !plan.direct {
                return Ok((plan.program, plan.args));
            }
            std::iter::once(plan.program).chain(plan.args).collect()
        }
    };
    let mut words = words.into_iter();
    let program = words.next().unwrap_or_default();
    let program_path = resolve_in(skill_dir, &program);
    let program = match program_path {
        Some(p) => {
            if !is_executable(&p) {
                return Err(RunnerError::SkillNotExecutable {
                    name: name.to_string(),
                    path: p,
                });
            }
            p.to_string_lossy().into_owned()
        }
        None if program.contains('/') && !Path::new(&program).is_absolute() => {
            return Err(RunnerError::Manifest {
                path: skill_dir.join("skill.yaml"),
                message: format!(
                    "`command` names `{program}`, which is not in the skill directory"
                ),
            });
        }
        None => program,
    };
    let args = words
        .map(|a| match resolve_in(skill_dir, &a) {
            Some(p) => p.to_string_lossy().into_owned(),
            None => a,
        })
        .collect();
    Ok((program, args))
}

/// `skill_dir/rel` when `rel` is a relative path naming a file inside the skill directory.
fn resolve_in(skill_dir: &Path, rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel.starts_with('-') || Path::new(rel).is_absolute() {
        return None;
    }
    let candidate = skill_dir.join(rel);
    if !candidate.is_file() {
        return None;
    }
    let resolved = candidate.canonicalize().ok()?;
    resolved.starts_with(skill_dir).then_some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["deploy", "health-check", "build_1", "a.b"] {
            assert!(validate_skill_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "../x", "a/b", "..", ".", ".hidden", "-x", "a b", "a\\b", "é",
        ] {
            assert!(validate_skill_name(bad).is_err(), "{bad:?}");
        }
    }

    /// Guards the built-in fallback: the toolchain skills resolve with no skill directory at
    /// all, run through bash with the shared helpers first, and a misspelt name suggests one.
    #[test]
    fn builtins_resolve_last_and_are_suggested() {
        let empty = tempfile::tempdir().expect("tempdir");
        for (name, _) in BUILTINS {
            let skill = find_skill(name, empty.path(), &[]).expect("built-in");
            assert_eq!(skill.source, SkillSource::Builtin);
            assert_eq!(skill.program, "bash");
            assert!(skill.args[3].starts_with(BUILTIN_LIB), "{name}");
            assert_eq!(skill.args.last().map(String::as_str), Some(*name));
        }
        let err = find_skill("setup-pyhton", empty.path(), &[]).expect_err("misspelt");
        assert!(err.to_string().contains("setup-python"), "{err}");
    }

    #[test]
    fn manifest_parses_both_command_forms() {
        let m = parse_manifest(
            "command: ./run.sh --x\nresources: {cpu: 2, memory_mb: 100}\nerror_codes: {3: NetworkError, 4: Timeout}\n",
            Path::new("skill.yaml"),
        )
        .expect("parse");
        assert_eq!(m.command, CommandSpec::Line("./run.sh --x".into()));
        assert_eq!(m.resources.cpu, Some(2));
        assert_eq!(m.error_codes[&3], ErrorClass::Other("NetworkError".into()));
        assert_eq!(m.error_codes[&4], ErrorClass::Timeout);
        let m = parse_manifest("command: [python3, main.py]\n", Path::new("s")).expect("parse");
        assert_eq!(
            m.command,
            CommandSpec::Argv(vec!["python3".into(), "main.py".into()])
        );
    }

    #[test]
    fn manifest_errors_are_clear() {
        let err = parse_manifest("command: x\ncomand: y\n", Path::new("s/skill.yaml"))
            .expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.contains("comand") && text.contains("s/skill.yaml"),
            "{text}"
        );
        let err = parse_manifest("inputs: {}\n", Path::new("s")).expect_err("no command");
        assert!(err.to_string().contains("command"), "{err}");
        let err = parse_manifest("command: []\n", Path::new("s")).expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
        let err = parse_manifest("command: x\nerror_codes: {abc: X}\n", Path::new("s"))
            .expect_err("bad code");
        assert!(err.to_string().contains("invalid"), "{err}");
    }
}
