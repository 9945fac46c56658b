//! The daemon's secrets: where each value comes from ([`SecretSource`], from the config's
//! `secrets:` section) and reading them at start ([`load`]). The values are given to every
//! run and masked in everything that leaves it.

use std::path::PathBuf;

use indexmap::IndexMap;

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the daemon.
    Env(String),
    /// A file (its content, one trailing newline removed).
    File(PathBuf),
}

/// Why secrets could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("secret `{name}`: environment variable `{var}` is not set")]
    MissingEnv {
        /// The secret.
        name: String,
        /// The variable.
        var: String,
    },
    /// The file cannot be read.
    #[error("secret `{name}`: cannot read `{path}`: {source}")]
    File {
        /// The secret.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads every configured secret's value (from the environment or files); a file loses one
/// trailing newline.
pub(super) fn load(
    secrets: &IndexMap<String, SecretSource>,
) -> Result<IndexMap<String, String>, SecretError> {
    let mut out = IndexMap::new();
    for (name, source) in secrets {
        let value = match source {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| SecretError::MissingEnv {
                name: name.clone(),
                var: var.clone(),
            })?,
            SecretSource::File(path) => {
                let mut text =
                    std::fs::read_to_string(path).map_err(|source| SecretError::File {
                        name: name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                text
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}
