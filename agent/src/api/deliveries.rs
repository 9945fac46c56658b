//! `GET /api/v1/deliveries`: the webhook outbox, newest first, each delivery with its
//! attempts (what `agent deliveries` prints).
//!
//! Query: `limit` (1 to 1000, default 50), and filters `webhook`, `event`, `status`
//! (`pending`, `delivered`, `failed`) and `run`.

use std::collections::HashMap;

use crate::model::api::{Delivery as DeliveryBody, DeliveryAttempt, DeliveryList};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use super::ApiState;
use super::error::ApiError;
use super::routes::{MAX_LIMIT, parse_limit};
use crate::model::report::rfc3339;
use crate::notify::Rendered;
use crate::store::{Delivery, DeliveryStatus};

/// One delivery as the API shows it: `id` (the `X-Agent-Delivery` header), `webhook`,
/// `event`, `run_id`, `status`, `attempts`, `next_attempt_at`, `last_error`, `created_at`,
/// `url`, `content_type`, `payload` (the body sent), and `history` (each attempt's
/// `attempt`, `at`, `status_code`, `error`).
pub(super) fn delivery_body(d: &Delivery) -> DeliveryBody {
    let rendered = Rendered::from_envelope(&d.body);
    DeliveryBody {
        id: d.id.clone(),
        webhook: d.webhook.clone(),
        event: d.event.clone(),
        run_id: d.run_id.map(|r| r.to_string()),
        status: d.status,
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at.map(rfc3339),
        last_error: d.last_error.clone(),
        created_at: rfc3339(d.created_at),
        url: rendered.as_ref().map(|r| r.url.clone()),
        content_type: rendered.as_ref().map(|r| r.content_type.to_string()),
        payload: rendered.map_or_else(|| d.body.clone(), |r| r.payload),
        history: d
            .history
            .iter()
            .map(|a| DeliveryAttempt {
                attempt: a.attempt,
                at: rfc3339(a.at),
                status_code: a.status_code,
                error: a.error.clone(),
            })
            .collect(),
    }
}

/// `GET /api/v1/deliveries`.
pub(super) async fn list(
    State(state): State<ApiState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
    let limit = parse_limit(q.get("limit").map(String::as_str))?;
    let non_empty = |key: &str| {
        q.get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let webhook = non_empty("webhook");
    let event = non_empty("event");
    let run = non_empty("run");
    let status = match non_empty("status") {
        None => None,
        Some(text) => Some(text.parse::<DeliveryStatus>().map_err(|_| {
            let known: Vec<_> = DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!(
                "unknown status `{text}` (expected one of: {})",
                known.join(", ")
            ))
        })?),
    };
    let filtered = webhook.is_some() || event.is_some() || run.is_some() || status.is_some();
    let fetch = if filtered { MAX_LIMIT } else { limit };
    let all = state
        .stores
        .read(move |store| Ok(store.list_deliveries(fetch)?))
        .await?;
    let deliveries = all
        .iter()
        .filter(|d| webhook.as_deref().is_none_or(|w| d.webhook == w))
        .filter(|d| event.as_deref().is_none_or(|e| d.event == e))
        .filter(|d| status.is_none_or(|s| d.status == s))
        .filter(|d| {
            run.as_deref()
                .is_none_or(|r| d.run_id.is_some_and(|id| id.to_string() == r))
        })
        .take(limit)
        .map(delivery_body)
        .collect();
    Ok(Json(DeliveryList { deliveries }))
}
