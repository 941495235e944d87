//! The router, and what its routes share: request tracking, timeouts, body and JSON parsing,
//! the admin token.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use super::{admin, score, AppState};
use crate::api::{Status, ARROW_STREAM};
use crate::error::ApiError;
use crate::metrics::RequestLabels;

/// The router, testable without a socket (`tower::ServiceExt::oneshot`).
pub fn app(state: Arc<AppState>) -> Router {
    let scoring = Router::new()
        .route("/v1/score", post(score::score_route))
        .route("/v1/score/batch", post(score::batch_route))
        .route("/v1/models/{name}/score", post(score::score_route))
        .route("/v1/models/{name}/score/batch", post(score::batch_route))
        .layer(middleware::from_fn_with_state(state.clone(), timeout));
    Router::new()
        .merge(scoring)
        .route("/v1/models", get(admin::models))
        .route("/v1/models/{name}", get(admin::model))
        .route("/v1/models/{name}/versions/{version}", get(admin::version))
        .route("/v1/admin/reload", post(admin::reload))
        .route("/v1/admin/models/{name}/routing", put(admin::set_routing))
        .route("/healthz", get(|| async { Json(Status { status: "ok".to_owned() }) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(crate::openapi::spec()) }))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route (see GET /openapi.json)")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Records every request's route, status and latency.
async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let labels = RequestLabels { route, method, status: response.status().as_u16() };
    state.metrics.observe_request(labels, start.elapsed().as_secs_f64());
    response
}

async fn timeout(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limit = state.config.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// The body, or the error of reading it (413 over the limit).
pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_body" };
        ApiError::new(status, code, rejection.body_text())
    })
}

/// Parses a JSON body, naming the field at fault.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Tracking the path of every value slows the parsing of every request, and only an
    // error needs it, so a body that fails is parsed again to name the field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let malformed =
        |e: serde_json::Error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("malformed JSON: {e}"));
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", inner.to_string());
                if path == "." {
                    error
                } else {
                    error.with_field(path)
                }
            }
            _ => malformed(inner),
        }
    })?;
    deserializer.end().map_err(malformed)?;
    Ok(value)
}

/// JSON routes read any body as JSON (so a bare `curl -d` works), except an Arrow stream,
/// which only the batch routes take.
pub(super) fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("")) {
        Some(t) if t.starts_with(ARROW_STREAM) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("this route takes JSON, not {ARROW_STREAM} (POST Arrow streams to /v1/score/batch)"),
        )),
        _ => Ok(()),
    }
}

/// Checks the admin bearer token.
pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = state.config.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin routes are disabled: start the server with an admin token (--admin-token or MTREC_ADMIN_TOKEN)",
        ));
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required"))
    }
}

/// Compares secrets without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.catalog().readiness() {
        Ok(()) => Json(Status { status: "ready".to_owned() }).into_response(),
        Err(not_ready) => not_ready.into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(_) => ApiError::internal("the metrics could not be encoded").into_response(),
    }
}
