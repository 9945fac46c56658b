//! The daemon's HTTP API (the README's route table): runs, step logs (plain text, or a live
//! server-sent event stream), manual triggers, cancel and retry, the workflow list, and `/health`.
//!
//! What it owns: routing, authentication ([`auth`]: `Authorization: Bearer TOKEN` on every
//! route but `/health`, compared in constant time), the JSON shapes ([`view`]) and the
//! mapping of errors to status codes ([`error`]: JSON bodies `{"error": "..."}`). What it does
//! not own: run state. Handlers read the store through its read connections
//! ([`crate::store::Readers`]) and ask the scheduler for every change through the [`DaemonHandle`] (the scheduler is the one
//! owner of run state); step logs are files the scheduler writes under `state_dir/logs/`,
//! which [`logs`] reads and tails.
//!
//! Also: a run's artifacts ([`artifacts`]: listed, and downloaded as `.tar.gz`), the
//! inbound push hooks `/hooks/github` and `/hooks/gitea` ([`hooks`]: no token,
//! an HMAC signature instead), `/metrics` ([`scrape`]) and `/api/v1/anomalies`.

mod anomalies;
mod artifacts;
pub(crate) mod auth;
mod deliveries;
pub(crate) mod error;
pub(crate) mod hooks;
mod logs;
mod nodes;
mod routes;
mod scrape;
pub(crate) mod view;
mod web;

use axum::Router;
use axum::routing::{get, post};

pub(crate) use auth::{ApiToken, TokenError};
pub(crate) use error::ApiError;

use crate::daemon::handle::DaemonHandle;
use crate::monitor::metrics::Metrics;
use std::sync::Arc;

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct ApiState {
    /// The way to the scheduler, and the shared read-only state.
    pub(crate) handle: DaemonHandle,
    /// Read connections to the store.
    pub(crate) stores: Reads,
    /// The metrics registry `/metrics` renders (and inbound hooks count in).
    pub(crate) metrics: Arc<Metrics>,
}

/// The store's read connections, answering with the API's error.
#[derive(Clone)]
pub(crate) struct Reads(crate::store::Store);

impl Reads {
    /// Runs `f` with a read connection, off the async runtime.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&crate::store::Db) -> Result<T, ApiError> + Send + 'static,
    {
        self.0.read(f).await
    }
}

/// The API's routes, with the token check applied to all but `/health`.
pub(crate) fn router(handle: DaemonHandle, metrics: Arc<Metrics>) -> Result<Router, TokenError> {
    let token = ApiToken::configured_or_stored(
        handle.shared.config.api_token.as_deref(),
        &handle.shared.state_dir,
    )?;
    let state = ApiState {
        stores: Reads(handle.shared.store.clone()),
        handle,
        metrics,
    };
    // Signature-checked instead of token-checked.
    let hooks = Router::new()
        .route("/hooks/github", post(hooks::github))
        .route("/hooks/gitea", post(hooks::gitea))
        .with_state(state.clone());
    let health = Router::new()
        .route("/health", get(routes::health))
        .with_state(state.clone());
    // The dashboard, under `/`: its own session check (or the same Bearer token).
    let dashboard = web::router(state.clone(), token.clone());
    let protected = Router::new()
        .route("/api/v1/runs", get(routes::list_runs))
        .route("/api/v1/runs/{id}", get(routes::get_run))
        .route("/api/v1/runs/{id}/cancel", post(routes::cancel_run))
        .route("/api/v1/runs/{id}/retry", post(routes::retry_run))
        .route("/api/v1/runs/{id}/steps/{step}/log", get(logs::step_log))
        .route("/api/v1/runs/{id}/artifacts", get(artifacts::list))
        .route(
            "/api/v1/runs/{id}/artifacts/{name}",
            get(artifacts::download),
        )
        .route("/api/v1/workflows", get(routes::list_workflows))
        .route("/api/v1/workflows/{name}/runs", post(routes::trigger))
        .route("/api/v1/deliveries", get(deliveries::list))
        .route("/api/v1/anomalies", get(anomalies::list))
        .route("/api/v1/nodes", get(nodes::list))
        .route("/metrics", get(scrape::metrics))
        .fallback(routes::not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ));
    Ok(Router::new()
        .merge(health)
        .merge(hooks)
        .merge(dashboard)
        .merge(protected))
}

/// How long requests in flight may take to finish once shutdown has begun.
pub(crate) const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the API on a bound listener until shutdown begins
/// ([`DaemonHandle::shutdown_requested`]); open log streams end then too, and requests
/// still in flight after [`SHUTDOWN_DRAIN`] (a client that stopped sending half-way) are
/// dropped rather than holding the daemon up.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    handle: DaemonHandle,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    serve_with_drain(listener, handle, metrics, SHUTDOWN_DRAIN).await
}

/// [`serve`] with a given drain time.
pub(crate) async fn serve_with_drain(
    listener: tokio::net::TcpListener,
    handle: DaemonHandle,
    metrics: Arc<Metrics>,
    drain: std::time::Duration,
) -> std::io::Result<()> {
    use std::future::IntoFuture;
    let app = router(handle.clone(), metrics).map_err(std::io::Error::other)?;
    let graceful = handle.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { graceful.shutdown_requested().await })
        .into_future();
    tokio::select! {
        result = server => result,
        () = async {
            handle.shutdown_requested().await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!("api: requests still open after the shutdown drain were dropped");
            Ok(())
        }
    }
}

// The API's in-process tests boot the whole daemon, so they live beside the composition
// root: `server/api_tests.rs`.
