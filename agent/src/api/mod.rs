//! The daemon's HTTP API (DESIGN §6): runs, step logs (plain text, or a live server-sent
//! event stream), manual triggers, cancel and retry, the workflow list, and `/health`.
//!
//! What it owns: routing, authentication ([`auth`]: `Authorization: Bearer TOKEN` on every
//! route but `/health`, compared in constant time), the JSON shapes ([`view`]) and the
//! mapping of errors to status codes ([`error`]: JSON bodies `{"error": "..."}`). What it does
//! not own: run state. Handlers read the store through their own connections ([`pool`]) and
//! ask the scheduler for every change through the [`DaemonHandle`] (CONVENTIONS 6); step logs
//! are files the scheduler writes under `state_dir/logs/`, which [`logs`] reads and tails.
//!
//! Not here yet (issue 5): the inbound `/hooks/*`, and the content of `/metrics`,
//! `/api/v1/deliveries` and `/api/v1/anomalies`, which are registered (behind the token)
//! with minimal answers of the documented shapes.

pub mod auth;
pub mod error;
mod logs;
pub mod pool;
mod routes;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use auth::{ApiToken, TOKEN_FILE_NAME, TokenError};
pub use error::ApiError;

use crate::daemon::handle::DaemonHandle;
use pool::StorePool;

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct ApiState {
    /// The way to the scheduler, and the shared read-only state.
    pub handle: DaemonHandle,
    /// Read connections to the store.
    pub stores: Arc<StorePool>,
}

/// The API's routes, with the token check applied to all but `/health`.
pub fn router(handle: DaemonHandle) -> Result<Router, TokenError> {
    let token = ApiToken::configured_or_stored(
        handle.shared.config.api_token.as_deref(),
        &handle.shared.state_dir,
    )?;
    let state = ApiState {
        stores: StorePool::new(handle.shared.store_path.clone()),
        handle,
    };
    let protected = Router::new()
        .route("/api/v1/runs", get(routes::list_runs))
        .route("/api/v1/runs/{id}", get(routes::get_run))
        .route("/api/v1/runs/{id}/cancel", post(routes::cancel_run))
        .route("/api/v1/runs/{id}/retry", post(routes::retry_run))
        .route("/api/v1/runs/{id}/steps/{step}/log", get(logs::step_log))
        .route("/api/v1/workflows", get(routes::list_workflows))
        .route("/api/v1/workflows/{name}/runs", post(routes::trigger))
        .route("/api/v1/deliveries", get(routes::deliveries))
        .route("/api/v1/anomalies", get(routes::anomalies))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ));
    Ok(Router::new()
        .route("/health", get(routes::health))
        .merge(protected))
}

/// Serves the API on a bound listener until shutdown begins
/// ([`DaemonHandle::shutdown_requested`]); open log streams end then too.
pub async fn serve(listener: tokio::net::TcpListener, handle: DaemonHandle) -> std::io::Result<()> {
    let app = router(handle.clone()).map_err(std::io::Error::other)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { handle.shutdown_requested().await })
        .await
}

#[cfg(test)]
mod tests;
