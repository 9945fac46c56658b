//! `GET /api/v1/anomalies?workflow=&limit=`: the anomalies detection recorded
//! ([`crate::monitor::anomaly`]), newest first, as `{"anomalies": [{id, kind, workflow, repo,
//! run_id, step, message, details, created_at}]}` (run ids are strings, as everywhere in the
//! API). `limit` defaults to 50, up to 1000.

use std::collections::HashMap;

use crate::model::api::AnomalyList;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use super::ApiState;
use super::error::ApiError;
use super::routes::parse_limit;
use crate::monitor::anomaly::anomaly_body;

/// `GET /api/v1/anomalies`.
pub(crate) async fn list(
    State(state): State<ApiState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<AnomalyList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
    let limit = parse_limit(q.get("limit").map(String::as_str))?;
    let workflow = q.get("workflow").filter(|w| !w.is_empty()).cloned();
    let records = state
        .stores
        .read(move |store| Ok(store.list_anomalies(workflow.as_deref(), limit)?))
        .await?;
    let anomalies = records.iter().map(anomaly_body).collect();
    Ok(Json(AnomalyList { anomalies }))
}
