//! Bearer-token authentication for every route but `/health`.
//!
//! The token comes from the config's `api_token`; without one, the daemon creates a random
//! token once and keeps it in `state_dir/api_token` (mode 0600), where `agent` clients started
//! in the same directory find it. Tokens are compared in constant time: both sides are hashed
//! (SHA-256) and the digests folded with xor, so neither the length nor the position of the
//! first differing byte shows in the response time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Why no token could be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// The token file could not be read or written.
    #[error("cannot use the api token file `{path}`: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The configured or stored token is empty.
    #[error("the api token in `{0}` is empty")]
    Empty(String),
}

/// The expected token, kept as its digest only.
#[derive(Clone)]
pub(crate) struct ApiToken {
    digest: Arc<[u8; 32]>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl ApiToken {
    /// A token from its text.
    pub(crate) fn new(token: &str) -> Result<ApiToken, TokenError> {
        if token.trim().is_empty() {
            return Err(TokenError::Empty("the config".into()));
        }
        Ok(ApiToken {
            digest: Arc::new(digest(token.trim().as_bytes())),
        })
    }

    /// The configured token, or the one stored in `state_dir/api_token` (created, with a
    /// random value and mode 0600, when missing).
    pub(crate) fn configured_or_stored(
        configured: Option<&str>,
        state_dir: &Path,
    ) -> Result<ApiToken, TokenError> {
        match configured {
            Some(token) => ApiToken::new(token),
            None => {
                let path = crate::state_dir::token_file(state_dir);
                let text = read_or_create_token_file(&path)?;
                ApiToken::new(&text).map_err(|_| TokenError::Empty(path.display().to_string()))
            }
        }
    }

    /// True when `given` is the token. Constant time in the content of both.
    pub(crate) fn matches(&self, given: &str) -> bool {
        let given = digest(given.trim().as_bytes());
        let diff = given
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// Reads the token file, creating it with a fresh random token when it does not exist.
fn read_or_create_token_file(path: &Path) -> Result<String, TokenError> {
    let err = |source| TokenError::File {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(format!("{token}\n").as_bytes())
                .map_err(err)?;
            Ok(token)
        }
        // Another daemon on the same state dir won the race: use its token.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(err),
        Err(e) => Err(err(e)),
    }
}

/// The bearer token of a request's `Authorization` header, if it has one.
fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Middleware: lets the request through when it carries the token, else answers 401.
pub(crate) async fn require_token(
    State(token): State<ApiToken>,
    request: Request,
    next: Next,
) -> Response {
    let ok = bearer(&request).is_some_and(|given| token.matches(given));
    if ok {
        next.run(request).await
    } else {
        let mut response = ApiError::Unauthorized.into_response();
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_same_token() {
        let token = ApiToken::new("s3cret").expect("token");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret!"));
        assert!(!token.matches(""));
        assert!(ApiToken::new("  ").is_err());
        assert_eq!(format!("{token:?}"), "ApiToken(***)");
    }

    #[test]
    fn a_generated_token_is_stored_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let first = read_or_create_token_file(&dir.path().join(crate::state_dir::TOKEN_FILE_NAME))
            .expect("create");
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(dir.path().join(crate::state_dir::TOKEN_FILE_NAME))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = ApiToken::configured_or_stored(None, dir.path()).expect("reuse");
        assert!(token.matches(&first));
        let configured = ApiToken::configured_or_stored(Some("abc"), dir.path()).expect("cfg");
        assert!(configured.matches("abc"));
        assert!(!configured.matches(&first));
    }
}
