//! Error types of the `dsl` crate that are not diagnostics in a file.

/// A problem with the parameters given to a run (`-p NAME=VALUE` or the API's JSON body).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// `-p` text without `=`.
    #[error("invalid parameter `{0}`: expected NAME=VALUE")]
    Syntax(String),
    /// A name the workflow does not declare.
    #[error("unknown parameter `{name}`{}", did_you_mean(.suggestion))]
    Unknown {
        /// The name given.
        name: String,
        /// A declared name close to it.
        suggestion: Option<String>,
    },
    /// A required parameter without a value or default.
    #[error("missing required parameter `{0}`")]
    Missing(String),
    /// A value that does not convert to the declared type.
    #[error("parameter `{name}` expects {expected}, got `{value}`")]
    Type {
        /// The parameter.
        name: String,
        /// What the type wants, e.g. "an integer".
        expected: String,
        /// The value given.
        value: String,
    },
    /// A value outside the declared `enum`.
    #[error("parameter `{name}` must be one of {allowed}, got `{value}`")]
    NotAllowed {
        /// The parameter.
        name: String,
        /// The allowed values, rendered.
        allowed: String,
        /// The value given.
        value: String,
    },
    /// The same name given twice.
    #[error("parameter `{0}` is given more than once")]
    Duplicate(String),
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(", did you mean `{s}`?"),
        None => String::new(),
    }
}
