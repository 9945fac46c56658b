//! The environment a step process starts from: a short, documented list of the agent's own
//! variables, never the whole of it. The daemon's environment is where the sources of
//! `secrets:`, repository credentials and webhook tokens live; a workflow that anyone with
//! push access can change must not read them (`rev` or `base64` would get a secret past
//! masking). Secrets reach steps only through `${{ secrets.NAME }}`.
//!
//! What a step gets from the agent's environment (when set there): [`MINIMAL`], any
//! `LC_*` locale variable, and the names listed in `env_passthrough` (daemon config) or
//! `--env-passthrough` (`agent exec`). `PATH` falls back to [`DEFAULT_PATH`]. On top come
//! the `AGENT_*` protocol variables and the workflow's, stage's and step's `env:` values;
//! those win over everything here. This module does not decide those.

/// Variables of the agent's environment every step gets (when set).
/// `GIT_CEILING_DIRECTORIES` is the daemon's own fence that keeps a step's `git` from finding
/// a repository above the workspaces.
pub(crate) const MINIMAL: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "GIT_CEILING_DIRECTORIES",
];

/// `PATH` when the agent itself has none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The base environment of steps, read from this process's environment now: the minimal
/// variables, `LC_*`, then the passed-through names (each once, in that order).
pub(crate) fn base_env(passthrough: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, value: String| {
        if !out.iter().any(|(k, _)| k == name) {
            out.push((name.to_string(), value));
        }
    };
    for name in MINIMAL {
        if let Ok(v) = std::env::var(name) {
            add(name, v);
        } else if *name == "PATH" {
            add(name, DEFAULT_PATH.to_string());
        }
    }
    let mut locale: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("LC_"))
        .collect();
    locale.sort();
    for (k, v) in locale {
        add(&k, v);
    }
    for name in passthrough {
        if let Ok(v) = std::env::var(name) {
            add(name, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the minimal step environment: the process's PATH and HOME are there, other
    /// variables only when passed through by name.
    #[test]
    fn minimal_and_passthrough() {
        let env = base_env(&[]);
        let get = |env: &[(String, String)], k: &str| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert_eq!(get(&env, "PATH"), std::env::var("PATH").ok());
        assert!(
            env.iter()
                .all(|(k, _)| MINIMAL.contains(&k.as_str()) || k.starts_with("LC_"))
        );
        // CARGO is set for every test process by cargo, and is not minimal.
        assert!(std::env::var("CARGO").is_ok());
        assert_eq!(get(&env, "CARGO"), None);
        let env = base_env(&["CARGO".to_string(), "NOT_SET_4711".to_string()]);
        assert_eq!(get(&env, "CARGO"), std::env::var("CARGO").ok());
        assert_eq!(get(&env, "NOT_SET_4711"), None);
    }
}
