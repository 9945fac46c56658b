//! Secret values for a run: from environment variables named on the command line
//! (`--secret NAME`) and from `NAME=VALUE` files (`--secrets-file FILE`). They are visible
//! to expressions as `secrets.NAME` and masked everywhere output leaves the engine.

use indexmap::IndexMap;
use std::path::Path;

use crate::engine::errors::EngineError;

/// Parses a secrets file: `NAME=VALUE` lines; blank lines and lines starting with `#` are
/// ignored; `export ` before the name is allowed; a value wrapped in matching single or
/// double quotes loses them.
fn parse_secrets_file(text: &str) -> Result<IndexMap<String, String>, EngineError> {
    let mut out = IndexMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(EngineError::Secrets(format!(
                "line {}: expected `NAME=VALUE`",
                i + 1
            )));
        };
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(EngineError::Secrets(format!(
                "line {}: invalid secret name `{name}`",
                i + 1
            )));
        }
        let value = value.trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            &value[1..value.len() - 1]
        } else {
            value
        };
        out.insert(name.to_string(), value.to_string());
    }
    Ok(out)
}

/// Loads the secrets of `agent exec`: each name from the environment, then the file (file
/// entries win).
pub(crate) fn load(
    names: &[String],
    file: Option<&Path>,
) -> Result<IndexMap<String, String>, EngineError> {
    let mut out = IndexMap::new();
    for name in names {
        match std::env::var(name) {
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(_) => {
                return Err(EngineError::Secrets(format!(
                    "environment variable `{name}` is not set (named by `--secret {name}`)"
                )));
            }
        }
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::Secrets(format!("{}: {e}", path.display())))?;
        let parsed = parse_secrets_file(&text)
            .map_err(|e| EngineError::Secrets(format!("{}: {e}", path.display())))?;
        out.extend(parsed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_format() {
        let s =
            parse_secrets_file("# c\n\nA=1\nexport B = \"two words\"\nC='x=y'\n").expect("parse");
        assert_eq!(s["A"], "1");
        assert_eq!(s["B"], "two words");
        assert_eq!(s["C"], "x=y");
        assert!(parse_secrets_file("novalue\n").is_err());
        assert!(parse_secrets_file("bad name=1\n").is_err());
    }
}
