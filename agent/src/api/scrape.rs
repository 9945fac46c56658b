//! `GET /metrics`: reads the scrape-time figures (queue, deliveries, admission), hands them
//! to the registry of [`crate::monitor::metrics`] and renders it in the format the scraper
//! asked for.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use crate::monitor::metrics::{SERIES_RETENTION, Snapshot, to_classic_text};

/// `GET /metrics`.
pub(crate) async fn metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let shared = state.handle.shared.clone();
    let (queued, running, deliveries, delivery_attempts) = state
        .stores
        .read(|store| {
            let (q, r) = store.count_active()?;
            Ok((
                q,
                r,
                store.count_deliveries_by_status()?,
                store.count_delivery_attempts()?,
            ))
        })
        .await?;
    let admission_shared = shared.clone();
    let snapshot = tokio::task::spawn_blocking(move || {
        let admission = admission_shared.engine.admission();
        let (cpu, mem) = admission.in_use();
        Snapshot {
            queued: queued as u64,
            running: running as u64,
            cpu_capacity: u64::from(admission.cpu_capacity()),
            cpu_in_use: u64::from(cpu),
            memory_capacity_mb: admission.memory_capacity_mb(),
            memory_in_use_mb: mem,
            waiting_steps: admission.waiting() as u64,
            deliveries,
            delivery_attempts,
        }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    state.metrics.update(&snapshot);
    state.metrics.expire_stale(Instant::now(), SERIES_RETENTION);
    let body = state.metrics.render();
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            to_classic_text(&body),
        )
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
