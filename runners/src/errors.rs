//! Errors of the runners crate and the error classes a failed step is sorted into.
//!
//! [`RunnerError`] is what the runner API returns when it cannot do its job (spawn failed,
//! malformed protocol file, bad skill manifest, ...). [`ErrorClass`] is the user-visible class
//! of a *failed step*, which error handlers and `retry_on` match on; the engine
//! re-exports it so that everything speaks the same names.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Everything that can go wrong inside the runners crate.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The step's program could not be started.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program that was to be executed.
        program: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Waiting for, reading from or signalling the step's process failed.
    #[error("lost track of process {pid} (`{program}`): {source}")]
    Wait {
        /// The program that was running.
        program: String,
        /// Its process id.
        pid: u32,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A protocol file (`AGENT_OUTPUT`, `AGENT_CONTEXT`) could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The step wrote an `AGENT_OUTPUT` file that is neither `key=value`/heredoc lines nor
    /// one JSON object.
    #[error("invalid step output `{}` line {line}: {message}", path.display())]
    OutputFormat {
        /// The output file (empty when parsing a string).
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The step wrote an `AGENT_CONTEXT` file that is not one JSON object.
    #[error("invalid context update `{}`: {message}", path.display())]
    ContextFormat {
        /// The context file (empty when parsing a string).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A skill name that is empty, contains `/`, `..` or other characters that could escape
    /// the skill directory.
    #[error("invalid skill name `{name}`: {reason}")]
    InvalidSkillName {
        /// The offending name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// No skill of this name in any skill directory.
    #[error("skill `{name}` not found (searched: {searched}){}", did_you_mean(.suggestion))]
    SkillNotFound {
        /// The skill name.
        name: String,
        /// The directories searched, comma separated.
        searched: String,
        /// A skill in those directories with a close name.
        suggestion: Option<String>,
    },
    /// A skill file exists but cannot be executed.
    #[error("skill `{name}` at `{}` is not executable (try `chmod +x`)", path.display())]
    SkillNotExecutable {
        /// The skill name.
        name: String,
        /// The file found.
        path: PathBuf,
    },
    /// A skill's `skill.yaml` could not be read or is invalid.
    #[error("invalid skill manifest `{}`: {message}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong (with line and column when the YAML parser knows them).
        message: String,
    },
    /// A resource request that can never be satisfied on this machine.
    #[error("resource request cannot be satisfied: {0}")]
    ResourceUnavailable(String),
    /// Creating the per-run protocol directory failed.
    #[error("cannot create run directory `{}`: {source}", path.display())]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

impl RunnerError {
    /// The error class a step failing with this error gets.
    pub fn class(&self) -> ErrorClass {
        match self {
            RunnerError::InvalidSkillName { .. } | RunnerError::SkillNotFound { .. } => {
                ErrorClass::SkillNotFound
            }
            RunnerError::ResourceUnavailable(_) => ErrorClass::ResourceUnavailable,
            RunnerError::Manifest { .. } => ErrorClass::ValidationError,
            _ => ErrorClass::ExitCode,
        }
    }
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(", did you mean `{s}`?"),
        None => String::new(),
    }
}

/// The class of a step failure. Error handlers (`error: CLASS`) and `retry_on`
/// match on it. Any user string is allowed (a step may write `error_class=Flaky` to
/// `AGENT_OUTPUT`); the built-in ones have variants. Serialized as its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Non-zero exit status (or death by a signal) without a more specific class.
    ExitCode,
    /// The step ran longer than its timeout.
    Timeout,
    /// The step (or its run) was cancelled.
    Cancelled,
    /// The skill named by the step does not exist (or its name is invalid).
    SkillNotFound,
    /// The step asked for more CPU or memory than the machine has.
    ResourceUnavailable,
    /// A `${{ }}` expression failed to evaluate.
    ExpressionError,
    /// Parameters or a manifest did not validate.
    ValidationError,
    /// A class named by the step itself (`error_class` output) or a skill manifest.
    Other(String),
}

impl ErrorClass {
    /// The class's name as users write it.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorClass::ExitCode => "ExitCode",
            ErrorClass::Timeout => "Timeout",
            ErrorClass::Cancelled => "Cancelled",
            ErrorClass::SkillNotFound => "SkillNotFound",
            ErrorClass::ResourceUnavailable => "ResourceUnavailable",
            ErrorClass::ExpressionError => "ExpressionError",
            ErrorClass::ValidationError => "ValidationError",
            ErrorClass::Other(s) => s,
        }
    }

    /// Parses a class name; built-in names map to their variants, anything else is `Other`.
    pub fn from_name(name: &str) -> ErrorClass {
        match name {
            "ExitCode" => ErrorClass::ExitCode,
            "Timeout" => ErrorClass::Timeout,
            "Cancelled" => ErrorClass::Cancelled,
            "SkillNotFound" => ErrorClass::SkillNotFound,
            "ResourceUnavailable" => ErrorClass::ResourceUnavailable,
            "ExpressionError" => ErrorClass::ExpressionError,
            "ValidationError" => ErrorClass::ValidationError,
            other => ErrorClass::Other(other.to_string()),
        }
    }

    /// Whether `retry_on` includes this class when it is not given (every class
    /// except `ValidationError`, `ExpressionError`, `SkillNotFound` and `Cancelled`).
    pub fn retried_by_default(&self) -> bool {
        !matches!(
            self,
            ErrorClass::ValidationError
                | ErrorClass::ExpressionError
                | ErrorClass::SkillNotFound
                | ErrorClass::Cancelled
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorClass {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ErrorClass::from_name(s))
    }
}

impl Serialize for ErrorClass {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorClass {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(ErrorClass::from_name(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "ExitCode",
            "Timeout",
            "Cancelled",
            "SkillNotFound",
            "ResourceUnavailable",
            "ExpressionError",
            "ValidationError",
            "NetworkError",
        ] {
            assert_eq!(ErrorClass::from_name(name).as_str(), name);
        }
        assert_eq!(
            ErrorClass::from_name("NetworkError"),
            ErrorClass::Other("NetworkError".into())
        );
        let json = serde_json::to_string(&ErrorClass::Timeout).expect("serialize");
        assert_eq!(json, "\"Timeout\"");
    }

    #[test]
    fn default_retry_classes() {
        assert!(ErrorClass::Timeout.retried_by_default());
        assert!(ErrorClass::Other("X".into()).retried_by_default());
        assert!(!ErrorClass::Cancelled.retried_by_default());
        assert!(!ErrorClass::SkillNotFound.retried_by_default());
    }
}
