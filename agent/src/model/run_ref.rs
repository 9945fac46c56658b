//! How a run is named: its id, and the workflow it runs (repository, commit, file, name).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A run's id: a positive integer, assigned by the store in creation order. Shown to users
/// and in every JSON body as a string (`"7"`), as `agent exec --json` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for RunId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(RunId)
    }
}

/// The workflow a run runs: where it was read from and the `name:` it has.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct WorkflowRef {
    /// The configured repository's name; `None` for `agent exec` and repo-less runs.
    pub(crate) repo: Option<String>,
    /// The commit the file was read at, when known.
    pub(crate) commit: Option<String>,
    /// The file, relative to the repository (`.workflows/build.yaml`), when known.
    pub(crate) file: Option<String>,
    /// The workflow's `name:` (or, for a file that cannot be read, its stem).
    pub(crate) name: String,
}

#[cfg_attr(
    not(test),
    expect(dead_code, reason = "part of the run contract; no run records it yet")
)]
impl WorkflowRef {
    /// A reference by name only.
    pub(crate) fn named(name: impl Into<String>) -> Self {
        WorkflowRef {
            name: name.into(),
            ..WorkflowRef::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_read_and_print_as_integers() {
        assert_eq!(" 12 ".parse::<RunId>(), Ok(RunId(12)));
        assert!("x".parse::<RunId>().is_err());
        assert_eq!(RunId(7).to_string(), "7");
        assert_eq!(WorkflowRef::named("build").name, "build");
    }
}
