//! The API's error type and how each kind becomes an HTTP answer: a status code and a JSON
//! body `{"error": "..."}` (plus `diagnostics` for rejected parameters).

use crate::model::api::ErrorBody;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No token, or the wrong one.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The request itself is malformed (query, body, path).
    #[error("{0}")]
    BadRequest(String),
    /// No such route, run, step, workflow or log.
    #[error("{0}")]
    NotFound(String),
    /// The request is understood but not allowed (a manual run of an `on.manual: false`
    /// workflow).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the state of the run (cancel a finished run...).
    #[error("{0}")]
    Conflict(String),
    /// The parameters do not fit the workflow's declarations.
    #[error("invalid parameters for workflow `{workflow}`")]
    InvalidParameters {
        /// The workflow.
        workflow: String,
        /// One line per problem.
        diagnostics: Vec<String>,
    },
    /// The workflow file does not load, so it cannot run.
    #[error("workflow `{workflow}` is invalid")]
    InvalidWorkflow {
        /// The workflow.
        workflow: String,
        /// Its diagnostics, one line each.
        diagnostics: Vec<String>,
    },
    /// The daemon is shutting down and accepts no more work.
    #[error("the daemon is shutting down")]
    Unavailable,
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// Something inside the daemon failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::InvalidParameters { .. } | ApiError::InvalidWorkflow { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(StoreError::RunNotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Store(StoreError::InvalidTransition { .. }) => StatusCode::CONFLICT,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "api request failed");
        }
        let body = match &self {
            ApiError::InvalidParameters { diagnostics, .. }
            | ApiError::InvalidWorkflow { diagnostics, .. } => ErrorBody {
                error: self.to_string(),
                diagnostics: Some(diagnostics.clone()),
            },
            _ => ErrorBody {
                error: self.to_string(),
                diagnostics: None,
            },
        };
        (status, Json(body)).into_response()
    }
}
