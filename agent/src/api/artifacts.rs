//! A run's artifacts: `GET /api/v1/runs/{id}/artifacts` lists them (name, step, size, file
//! count, digest, times, origin), `GET /api/v1/runs/{id}/artifacts/{name}` streams one's
//! `.tar.gz` archive as stored (`Content-Type: application/gzip`). A name kept by two steps
//! of the run (or by the instances of a matrix step) is ambiguous: `?step=ID` picks one.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncReadExt;

use super::{ApiError, ApiState, view};
use crate::model::api::{ArtifactInfo, ArtifactList};
use crate::model::rfc3339;
use crate::store::{ArtifactRecord, RunId};

/// The run's artifacts, or 404 when there is no such run.
async fn kept(state: &ApiState, text: &str) -> Result<(RunId, Vec<ArtifactRecord>), ApiError> {
    let id = view::parse_run_id(text)
        .ok_or_else(|| ApiError::NotFound(format!("run `{text}` not found")))?;
    let found = state
        .stores
        .read(move |db| {
            Ok(match db.get_run(id)? {
                Some(_) => Some(db.list_artifacts(id)?),
                None => None,
            })
        })
        .await?;
    found
        .map(|a| (id, a))
        .ok_or_else(|| ApiError::NotFound(format!("run {id} not found")))
}

/// `GET /api/v1/runs/{id}/artifacts`.
pub(super) async fn list(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ArtifactList>, ApiError> {
    let (id, kept) = kept(&state, &id).await?;
    let artifacts = kept
        .into_iter()
        .map(|a| {
            let report = a.report();
            ArtifactInfo {
                name: a.name,
                step: a.step_id,
                size: a.size,
                files: a.files,
                digest: a.digest,
                created_at: rfc3339(a.created_at),
                expires_at: report.expires_at,
                from: report.from,
            }
        })
        .collect();
    Ok(Json(ArtifactList {
        run_id: id.to_string(),
        artifacts,
    }))
}

/// `GET /api/v1/runs/{id}/artifacts/{name}[?step=ID]`.
pub(super) async fn download(
    State(state): State<ApiState>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (id, kept) = kept(&state, &id).await?;
    let step = q.get("step").filter(|s| !s.is_empty());
    let matching: Vec<&ArtifactRecord> = kept
        .iter()
        .filter(|a| a.name == name && step.is_none_or(|s| *s == a.step_id))
        .collect();
    let artifact = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(ApiError::NotFound(match step {
                Some(s) => format!("run {id} has no artifact `{name}` of step `{s}`"),
                None => format!("run {id} has no artifact `{name}`"),
            }));
        }
        many => {
            let steps: Vec<&str> = many.iter().map(|a| a.step_id.as_str()).collect();
            return Err(ApiError::Conflict(format!(
                "several steps of run {id} kept an artifact `{name}` ({}); choose one with `?step=ID`",
                steps.join(", ")
            )));
        }
    };
    let dir = crate::state_dir::artifacts_dir(&state.handle.shared.state_dir);
    let path = crate::engine::archive::blob_path(&dir, &artifact.digest)
        .ok_or_else(|| ApiError::Internal(format!("artifact `{name}` has a bad digest")))?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::Internal(format!(
            "the archive of artifact `{name}` cannot be read: {e}"
        ))
    })?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let disposition = format!(
        "attachment; filename=\"{}.tar.gz\"",
        name.replace(['"', '\\'], "_")
    );
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::ETAG, format!("\"{}\"", artifact.digest)),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    if let Some(len) = len {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    }
    Ok(response)
}
