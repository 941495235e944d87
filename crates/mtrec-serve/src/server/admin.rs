//! What the server serves (`/v1/models`), reload, and a model's routing.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::routes::{authorize, body_bytes, parse_json};
use super::AppState;
use crate::api::{ModelEntry, ModelInfo, ModelsResponse, ReloadRequest, ReloadResponse};
use crate::error::ApiError;
use crate::repository::Routing;

/// Every model and version, the failed ones with their reason. 503 until the first catalog.
pub(super) async fn models(State(state): State<Arc<AppState>>) -> Result<Json<ModelsResponse>, ApiError> {
    let catalog = state.catalog();
    if catalog.models.is_empty() {
        return Err(ApiError::not_ready());
    }
    Ok(Json(catalog.describe()))
}

pub(super) async fn model(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<ModelEntry>, ApiError> {
    let catalog = state.catalog();
    let served = catalog.model(Some(&name))?;
    Ok(Json(served.entry(catalog.default_model.as_deref() == Some(name.as_str()))))
}

pub(super) async fn version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelInfo>, ApiError> {
    let catalog = state.catalog();
    let model = catalog.model(Some(&name))?.ready(&version).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_version",
            format!("model {name:?} has no ready version {version:?}"),
        )
    })?;
    Ok(Json(model.info()))
}

pub(super) async fn reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReloadResponse>, ApiError> {
    authorize(&state, &headers)?;
    let body = body_bytes(body)?;
    let request: ReloadRequest =
        if body.iter().all(u8::is_ascii_whitespace) { ReloadRequest::default() } else { parse_json(&body)? };
    Ok(Json(state.reload(request.bundle.map(PathBuf::from)).await?))
}

/// Replaces a model's labels and experiment (written to its `routing.json`).
pub(super) async fn set_routing(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ModelEntry>, ApiError> {
    authorize(&state, &headers)?;
    let routing: Routing = parse_json(&body_bytes(body)?)?;
    Ok(Json(state.set_routing(name, routing).await?))
}
