//! The HTTP side of the client commands: one [`Client`] per command over reqwest, for
//! `http://` and `https://` daemons alike (a daemon behind a TLS-terminating proxy). An
//! `https://` server's certificate is verified against OpenSSL's default CA store;
//! `SSL_CERT_FILE` (or `SSL_CERT_DIR`) in the client's environment names another CA file.
//! Answers are read as JSON and decoded into the [`crate::model::api`] types.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::sse::SseParser;
use crate::cli::{EXIT_FAILED, EXIT_INVALID};
use crate::model::api::ErrorBody;

/// The daemon's address when `--server` is not given.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8420";

/// How long one request may take (log streams excepted).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request did not get a useful answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// `--server` is not an `http://` or `https://` URL.
    #[error("invalid server url `{0}` (expected `http://HOST:PORT` or `https://HOST:PORT`)")]
    BadUrl(String),
    /// No connection (refused, unreachable, or a TLS handshake that failed).
    #[error("cannot reach the daemon at {server}: {message}")]
    Connect {
        /// The server URL.
        server: String,
        /// What failed, with its causes.
        message: String,
    },
    /// HTTP failed mid-way.
    #[error("http error talking to {server}: {message}")]
    Http {
        /// The server URL.
        server: String,
        /// What failed.
        message: String,
    },
    /// The request took too long.
    #[error("no answer from {0} within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
    /// The daemon answered with an error status.
    #[error("{message}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The `error` text of the body (or the body).
        message: String,
        /// The error body, if it was one.
        body: Option<ErrorBody>,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the daemon: {0}")]
    BadAnswer(String),
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

impl ClientError {
    /// The exit code for this error.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            ClientError::BadUrl(_) => EXIT_INVALID,
            ClientError::Status { status, .. }
                if *status == StatusCode::UNPROCESSABLE_ENTITY
                    || *status == StatusCode::BAD_REQUEST =>
            {
                EXIT_INVALID
            }
            _ => EXIT_FAILED,
        }
    }
}

/// An error with its chain of causes, which is where reqwest keeps the useful part
/// (`connection refused`, `certificate verify failed`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A daemon to talk to.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    server: String,
    http: reqwest::Client,
    token: Option<String>,
}

/// The token: `AGENT_TOKEN`, else `STATE_DIR/api_token`.
fn find_token(state_dir: &std::path::Path) -> Option<String> {
    if let Ok(token) = std::env::var("AGENT_TOKEN")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_string());
    }
    let stored = crate::state_dir::token_file(state_dir);
    std::fs::read_to_string(stored)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// `HOST:PORT` as `http://HOST:PORT`; anything with a scheme as it is.
pub(super) fn with_scheme(server: &str) -> String {
    let server = server.trim();
    if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// Percent-encodes a path segment or query value.
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `server` (`http[s]://host[:port][/prefix]`) with an explicit token.
    pub(crate) fn new(server: &str, token: Option<String>) -> Result<Client, ClientError> {
        let bad = || ClientError::BadUrl(server.to_string());
        let url = reqwest::Url::parse(server.trim()).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none_or(str::is_empty)
            || url.query().is_some()
        {
            return Err(bad());
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Http {
                server: server.to_string(),
                message: chain(&e),
            })?;
        Ok(Client {
            server: url.as_str().trim_end_matches('/').to_string(),
            http,
            token,
        })
    }

    /// The base URL requests go to (no trailing `/`).
    #[cfg(test)]
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// A client for the daemon the arguments and the environment name (see the module
    /// docs of the client commands), with the token from the environment or the state
    /// directory.
    pub(crate) fn from_env(args: &super::ServerArgs) -> Result<Client, ClientError> {
        let from_env = std::env::var("AGENT_SERVER")
            .ok()
            .filter(|s| !s.trim().is_empty());
        let from_file = || {
            std::fs::read_to_string(crate::state_dir::addr_file(&args.state_dir))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let server = args
            .server
            .clone()
            .or(from_env)
            .or_else(from_file)
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        Client::new(&with_scheme(&server), find_token(&args.state_dir))
    }

    fn error(&self, e: &reqwest::Error) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout(self.server.clone())
        } else if e.is_connect() {
            ClientError::Connect {
                server: self.server.clone(),
                message: chain(e),
            }
        } else {
            ClientError::Http {
                server: self.server.clone(),
                message: chain(e),
            }
        }
    }

    /// Sends a request and returns the response (status checked, body not yet read).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        accept: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server))
            .header(reqwest::header::ACCEPT, accept);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|e| self.error(&e))?;
        self.check(response).await
    }

    /// Turns an error status into [`ClientError::Status`] with the body's `error` text.
    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.map_err(|e| self.error(&e))?;
        let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let mut message = body
            .as_ref()
            .map(|b| b.error.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        if message.is_empty() {
            message = status.to_string();
        }
        if status == StatusCode::UNAUTHORIZED {
            message.push_str(if self.token.is_some() {
                " (check AGENT_TOKEN)"
            } else {
                " (set AGENT_TOKEN to the daemon's api token)"
            });
        }
        Err(ClientError::Status {
            status,
            message,
            body,
        })
    }

    /// A JSON request with a deadline; the answer's JSON as it came.
    pub(crate) async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let body = body.map(Value::to_string);
        let exchange = async {
            let response = self.send(method, path, body, "application/json").await?;
            let bytes = response.bytes().await.map_err(|e| self.error(&e))?;
            serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.server.clone()))?
    }

    /// A request with a typed body (a [`crate::model::api`] request).
    pub(crate) async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Value, ClientError> {
        let body = serde_json::to_value(body).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        self.json(method, path, Some(&body)).await
    }

    /// `GET path` decoded into `T`, with the JSON as it came (for `--json`).
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(T, Value), ClientError> {
        let value = self.json(Method::GET, path, None).await?;
        Ok((decode(&value)?, value))
    }

    /// A text request with a deadline.
    pub(crate) async fn text(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let exchange = async {
            let response = self.send(Method::GET, path, None, "text/plain").await?;
            let bytes = response.bytes().await.map_err(|e| self.error(&e))?;
            Ok(bytes.to_vec())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.server.clone()))?
    }

    /// A binary download (an artifact's archive): the answer must start within the request
    /// deadline; the body may then take as long as it needs.
    pub(crate) async fn bytes(&self, path: &str, accept: &str) -> Result<Vec<u8>, ClientError> {
        let mut response =
            tokio::time::timeout(REQUEST_TIMEOUT, self.send(Method::GET, path, None, accept))
                .await
                .map_err(|_| ClientError::Timeout(self.server.clone()))??;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.error(&e))? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Follows a server-sent event stream, calling `on_event(name, data)` per event, until
    /// the stream ends or `on_event` returns false.
    pub(crate) async fn follow(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        let mut response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.send(Method::GET, path, None, "text/event-stream"),
        )
        .await
        .map_err(|_| ClientError::Timeout(self.server.clone()))??;
        let mut parser = SseParser::default();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.error(&e))? {
            for (name, data) in parser.push(&chunk) {
                if !on_event(&name, &data) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// An answer decoded into its [`crate::model::api`] type.
pub(super) fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, ClientError> {
    T::deserialize(value).map_err(|e| ClientError::BadAnswer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let c = Client::new("http://127.0.0.1:8420", None).expect("plain");
        assert_eq!(c.server(), "http://127.0.0.1:8420");
        let c = Client::new("http://localhost/agent/", None).expect("prefix");
        assert_eq!(c.server(), "http://localhost/agent");
        let c = Client::new("http://[::1]:9000", None).expect("ipv6");
        assert_eq!(c.server(), "http://[::1]:9000");
        let c = Client::new("https://127.0.0.1:8443", None).expect("https");
        assert_eq!(c.server(), "https://127.0.0.1:8443");
        for bad in ["127.0.0.1:8420", "ftp://x", "", "http://", "http://h/?q=1"] {
            assert!(Client::new(bad, None).is_err(), "{bad} accepted");
        }
    }

    /// `--server 127.0.0.1:8420` (no scheme) was refused; it means `http://127.0.0.1:8420`.
    #[test]
    fn a_server_without_scheme_is_http() {
        assert_eq!(with_scheme("127.0.0.1:8420"), "http://127.0.0.1:8420");
        assert_eq!(with_scheme(" localhost:1 "), "http://localhost:1");
        assert_eq!(with_scheme("http://h:2/p"), "http://h:2/p");
        let c = Client::new(&with_scheme("127.0.0.1:9"), None).expect("host:port");
        assert_eq!(c.server(), "http://127.0.0.1:9");
        assert!(Client::new(&with_scheme("ftp://x"), None).is_err());
    }
}
