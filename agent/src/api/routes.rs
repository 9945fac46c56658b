//! The JSON routes: health, runs (list, get, cancel, retry), workflows (list, trigger), and
//! nothing else (deliveries, anomalies and metrics have their own modules).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Map, Value};

use super::ApiState;
use super::error::ApiError;
use super::view;
use crate::daemon::handle::{DaemonError, NewRunRequest};
use crate::model::api::{
    CancelResponse, Health, RetryResponse, RunDetail, RunList, TriggerRequest, TriggerResponse,
    WorkflowInfo, WorkflowList,
};
use crate::model::rfc3339;
use crate::store::{RunFilter, RunId, RunStatus, TriggerKind};

/// `limit` when none is given.
pub(super) const DEFAULT_LIMIT: usize = 50;
/// The largest `limit` accepted.
pub(super) const MAX_LIMIT: usize = 1000;

/// `GET /health`: no token needed. `{"status":"ok"}`, or 503 with
/// `{"status":"degraded","error":...}` while the daemon's database writes fail (they are
/// being retried).
pub(super) async fn health(State(state): State<ApiState>) -> Response {
    match state.handle.shared.store_health.degraded() {
        None => Json(Health {
            status: "ok".into(),
            error: None,
        })
        .into_response(),
        Some(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "degraded".into(),
                error: Some(error.to_string()),
            }),
        )
            .into_response(),
    }
}

/// Any other path (behind the token, so unknown paths do not reveal anything).
pub(super) async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for `{}`", uri.path()))
}

/// The query parameters of a request, or 400.
fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(map)| map)
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
}

/// `limit` from the query: 1..=1000, default 50.
pub(super) fn parse_limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "`limit` must be an integer from 1 to {MAX_LIMIT}, not `{text}`"
        ))),
    }
}

/// A run id from the path, or 404.
fn run_id(text: &str) -> Result<RunId, ApiError> {
    view::parse_run_id(text).ok_or_else(|| ApiError::NotFound(format!("run `{text}` not found")))
}

/// `GET /api/v1/runs?workflow=&status=&repo=&branch=&trigger=&q=&limit=&before=`: summaries,
/// newest created first; `q` matches workflow names and commit messages. `before=RUN_ID` lists only older runs; `next_before` is the value that lists the
/// next page, or null when there is none.
pub(super) async fn list_runs(
    State(state): State<ApiState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<RunList>, ApiError> {
    let q = query(q)?;
    let limit = parse_limit(q.get("limit").map(String::as_str))?;
    let status = match q.get("status").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(view::parse_status(text).ok_or_else(|| {
            let known: Vec<_> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!(
                "unknown status `{text}` (expected one of: {})",
                known.join(", ")
            ))
        })?),
    };
    let before = parse_before(q.get("before").map(String::as_str))?;
    let non_empty = |key: &str| q.get(key).filter(|v| !v.is_empty()).cloned();
    let trigger = match non_empty("trigger") {
        None => None,
        Some(text) => Some(text.trim().parse::<TriggerKind>().map_err(|_| {
            let known: Vec<_> = TriggerKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::BadRequest(format!(
                "unknown trigger `{text}` (expected one of: {})",
                known.join(", ")
            ))
        })?),
    };
    let filter = RunFilter {
        workflow: non_empty("workflow"),
        status,
        repo: non_empty("repo"),
        branch: non_empty("branch"),
        trigger,
        text: non_empty("q").filter(|t| !t.trim().is_empty()),
    };
    // One more than asked tells whether another page follows.
    let mut runs = state
        .stores
        .read(move |store| Ok(store.list_run_summaries(&filter, before, limit + 1)?))
        .await?;
    let more = runs.len() > limit;
    runs.truncate(limit);
    let next_before = match runs.last() {
        Some(last) if more => Some(last.id.to_string()),
        _ => None,
    };
    let now = Utc::now();
    let runs = runs.iter().map(|r| view::summary(r, now)).collect();
    Ok(Json(RunList { runs, next_before }))
}

/// `before` from the query: a run id (a positive integer), or none when absent or empty.
pub(super) fn parse_before(text: Option<&str>) -> Result<Option<RunId>, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(text) => view::parse_run_id(text).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!("`before` must be a run id, not `{text}`"))
        }),
    }
}

/// `GET /api/v1/runs/{id}`: the run report plus `trigger` and `repo`.
pub(super) async fn get_run(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let id = run_id(&id)?;
    let found = state
        .stores
        .read(move |store| Ok(store.get_run_for_report(id)?))
        .await?;
    match found {
        Some((run, steps)) => Ok(Json(view::report(&run, &steps, Utc::now()))),
        None => Err(ApiError::NotFound(format!("run {id} not found"))),
    }
}

/// A scheduler refusal as an HTTP answer.
fn daemon_error(e: DaemonError) -> ApiError {
    match e {
        DaemonError::UnknownRepo(_) | DaemonError::UnknownWorkflow { .. } => {
            ApiError::NotFound(e.to_string())
        }
        DaemonError::RunNotFound(id) => ApiError::NotFound(format!("run {id} not found")),
        DaemonError::InvalidParameters(diagnostics) => ApiError::InvalidParameters {
            workflow: String::new(),
            diagnostics,
        },
        DaemonError::InvalidWorkflow {
            workflow,
            diagnostics,
        } => ApiError::InvalidWorkflow {
            workflow,
            diagnostics: diagnostics.lines().map(str::to_string).collect(),
        },
        DaemonError::WrongState { .. } | DaemonError::Skipped(_) => {
            ApiError::Conflict(e.to_string())
        }
        DaemonError::ManualDisabled(_) => ApiError::Forbidden(e.to_string()),
        DaemonError::ShuttingDown => ApiError::Unavailable,
        DaemonError::Store(e) => ApiError::Store(e),
        DaemonError::Git(_) => ApiError::Internal(e.to_string()),
    }
}

/// `POST /api/v1/runs/{id}/cancel`: 202 once the scheduler accepted it.
pub(super) async fn cancel_run(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?;
    state.handle.cancel(id).await.map_err(daemon_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelResponse {
            run_id: id.to_string(),
            status: "cancelling".into(),
        }),
    )
        .into_response())
}

/// `POST /api/v1/runs/{id}/retry`: 202 with the id of the run that carries on.
pub(super) async fn retry_run(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?;
    let new = state.handle.retry(id).await.map_err(daemon_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RetryResponse {
            run_id: new.to_string(),
            retry_of: id.to_string(),
        }),
    )
        .into_response())
}

/// `POST /api/v1/workflows/{name}/runs`: queues a manual run.
pub(super) async fn trigger(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: TriggerRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?
    };
    let parameters = match body.parameters {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`parameters` must be a JSON object".into(),
            ));
        }
    };
    let request = NewRunRequest {
        workflow: name.clone(),
        repo: body.repo.filter(|r| !r.is_empty()),
        parameters,
        trigger: TriggerKind::Manual,
        commit: body.commit.filter(|c| !c.is_empty()),
        branch: body.branch.filter(|b| !b.is_empty()),
    };
    let id = state
        .handle
        .enqueue(request)
        .await
        .map_err(|e| match daemon_error(e) {
            ApiError::InvalidParameters { diagnostics, .. } => ApiError::InvalidParameters {
                workflow: name.clone(),
                diagnostics,
            },
            other => other,
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggerResponse {
            run_id: id.to_string(),
        }),
    )
        .into_response())
}

/// `GET /api/v1/workflows`: every workflow of every repository, with its triggers and next
/// cron fire time.
pub(super) async fn list_workflows(State(state): State<ApiState>) -> Json<WorkflowList> {
    let repos = state.handle.shared.repos.snapshot();
    let mut workflows = Vec::new();
    for (repo, info) in &repos {
        for wf in &info.workflows {
            workflows.push(WorkflowInfo {
                name: wf.name.clone(),
                repo: repo.clone(),
                file: wf.file.clone(),
                triggers: wf.triggers.clone(),
                next_fire: wf.next_fire.map(rfc3339),
                error: wf.error.clone(),
            });
        }
    }
    Json(WorkflowList { workflows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_bounds() {
        assert_eq!(parse_limit(None).expect("default"), 50);
        assert_eq!(parse_limit(Some("1")).expect("min"), 1);
        assert_eq!(parse_limit(Some("1000")).expect("max"), 1000);
        for bad in ["0", "1001", "-1", "x", "", "1e3"] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn before_is_a_run_id() {
        assert_eq!(parse_before(None).expect("none"), None);
        assert_eq!(parse_before(Some("")).expect("empty"), None);
        assert_eq!(parse_before(Some("12")).expect("id"), Some(RunId(12)));
        for bad in ["0", "-1", "x", "1.5"] {
            assert!(parse_before(Some(bad)).is_err(), "{bad} accepted");
        }
    }
}
