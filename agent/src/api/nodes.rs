//! `GET /api/v1/nodes`: the agents sharing this daemon's store, by name, as
//! `{"nodes": [{name, last_heartbeat, runs, capacity, lost}]}` (`last_heartbeat` RFC 3339;
//! `lost`: no heartbeat for longer than the node's lease). A daemon stopped cleanly removes
//! its row; a killed one stays, shown lost once its lease has lapsed.

use axum::Json;
use axum::extract::State;

use super::ApiState;
use super::error::ApiError;
use crate::model::api::{NodeInfo, NodeList};
use crate::model::report::rfc3339;

/// `GET /api/v1/nodes`.
pub(crate) async fn list(State(state): State<ApiState>) -> Result<Json<NodeList>, ApiError> {
    let records = state.stores.read(|store| Ok(store.list_nodes()?)).await?;
    let now = chrono::Utc::now();
    let nodes = records
        .iter()
        .map(|n| NodeInfo {
            name: n.name.clone(),
            last_heartbeat: rfc3339(n.heartbeat_at),
            runs: n.runs,
            capacity: n.capacity,
            lost: n.lost(now),
        })
        .collect();
    Ok(Json(NodeList { nodes }))
}
