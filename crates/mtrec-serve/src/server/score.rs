//! The scoring routes. `/v1/score` (one user, many items) is routed: a pinned version or label,
//! else the user's arm of the model's experiment, else stable; its answer goes to the exposure
//! log. Batches (independent rows of many users) are scored by the pinned or the stable version.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::routes::{body_bytes, check_json, parse_json};
use super::{run_cpu, AppState};
use crate::api::{BatchRequest, ScoreQuery, ScoreRequest, ARROW_STREAM};
use crate::error::ApiError;
use crate::exposure::{now_ms, Exposure};
use crate::metrics::ScoreLabels;
use crate::repository::{Arm, Pin};
use crate::scoring::Answer;

type Body = Result<Bytes, BytesRejection>;
type ScoreQueryResult = Result<Query<ScoreQuery>, QueryRejection>;

/// `/v1/score` (the default model) and `/v1/models/{name}/score`.
pub(super) async fn score_route(
    State(state): State<Arc<AppState>>,
    name: Option<Path<String>>,
    query: ScoreQueryResult,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    score(state, name.map(|Path(n)| n), query, headers, body).await
}

/// `/v1/score/batch` (the default model) and `/v1/models/{name}/score/batch`.
pub(super) async fn batch_route(
    State(state): State<Arc<AppState>>,
    name: Option<Path<String>>,
    query: ScoreQueryResult,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    batch(state, name.map(|Path(n)| n), query, headers, body).await
}

/// The query's pin, and its task filter (Arrow batches).
fn read_query(query: ScoreQueryResult) -> Result<(Option<Pin>, Option<String>), ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let pin = match (query.version, query.label) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "give `version` or `label`, not both")
                .with_field("version"))
        }
        (Some(version), None) => Some(Pin::Version(version)),
        (None, Some(label)) => Some(Pin::Label(label)),
        (None, None) => None,
    };
    Ok((pin, query.tasks))
}

/// What a scoring call hands back to the async side.
struct Scored {
    labels: ScoreLabels,
    pairs: u64,
    exposure: Option<Exposure>,
    response: Response,
}

/// The answer as a JSON response, serialized on the scoring thread: a large answer must not
/// hold an async worker.
fn serialized(answer: &Answer<'_>) -> Result<Response, ApiError> {
    let bytes = answer.to_json().map_err(|e| ApiError::internal(format!("serializing the answer: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

fn labels(answer: &Answer<'_>, arm: Arm) -> ScoreLabels {
    ScoreLabels {
        model: answer.model.name.clone(),
        version: answer.model.version.clone(),
        arm: arm.as_str().to_owned(),
    }
}

fn finish(state: &AppState, scored: Scored, start: Instant) -> Response {
    state.metrics.scored(&scored.labels, scored.pairs, start.elapsed().as_secs_f64());
    if let (Some(log), Some(exposure)) = (state.exposure_log(), scored.exposure) {
        log.record(exposure);
    }
    scored.response
}

async fn score(
    state: Arc<AppState>,
    name: Option<String>,
    query: ScoreQueryResult,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    check_json(&headers)?;
    let (pin, _) = read_query(query)?;
    let body = body_bytes(body)?;
    let catalog = state.catalog();
    catalog.model(name.as_deref())?;
    let (limits, logging) = (state.config.limits, state.exposure_log().is_some());
    let scored = run_cpu(move || -> Result<Scored, ApiError> {
        let served = catalog.model(name.as_deref())?;
        let request: ScoreRequest = parse_json(&body)?;
        // Every version of a model name reads users the same way; the stable one says how.
        let user_key = served.stable().and_then(|m| m.user_key(&request.user));
        let (model, arm) = served.resolve(pin.as_ref(), user_key.as_deref())?;
        let mut answer = model.score(&request, &limits)?;
        answer.arm = Some(arm);
        let exposure = logging.then(|| answer.exposure(now_ms(), arm, user_key));
        Ok(Scored {
            labels: labels(&answer, arm),
            pairs: answer.len() as u64,
            exposure,
            response: serialized(&answer)?,
        })
    })
    .await??;
    Ok(finish(&state, scored, start))
}

async fn batch(
    state: Arc<AppState>,
    name: Option<String>,
    query: ScoreQueryResult,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_owned());
    let arrow = content_type.as_deref().is_some_and(|t| t.starts_with(ARROW_STREAM));
    let (pin, tasks) = read_query(query)?;
    let body = body_bytes(body)?;
    let (model, arm) = state.catalog().model(name.as_deref())?.resolve(pin.as_ref(), None)?;
    let limits = state.config.limits;
    if !arrow {
        let scored = run_cpu(move || -> Result<Scored, ApiError> {
            let request: BatchRequest = parse_json(&body)?;
            let mut answer = model.score_batch(&request, &limits)?;
            answer.arm = Some(arm);
            Ok(Scored {
                labels: labels(&answer, arm),
                pairs: answer.len() as u64,
                exposure: None,
                response: serialized(&answer)?,
            })
        })
        .await??;
        return Ok(finish(&state, scored, start));
    }
    let tasks = tasks.map(|t| t.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>());
    let model_ref = model.model_ref.clone();
    let (bytes, rows, warnings) = run_cpu(move || model.score_arrow(&body, &tasks, &limits)).await??;
    // Arrow answers carry their warnings in a header: `field=kind:count, ...`.
    let summary: Vec<String> = warnings
        .iter()
        .map(|w| {
            format!(
                "{}={}:{}",
                w.field,
                serde_json::to_value(w.kind).unwrap_or_default().as_str().unwrap_or(""),
                w.count
            )
        })
        .collect();
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, ARROW_STREAM)], bytes).into_response();
    let headers = response.headers_mut();
    let unknown = HeaderValue::from_static("unknown");
    headers.insert("x-mtrec-model", HeaderValue::from_str(&model_ref.name).unwrap_or(unknown.clone()));
    headers.insert("x-mtrec-model-version", HeaderValue::from_str(&model_ref.version).unwrap_or(unknown));
    headers.insert("x-mtrec-arm", HeaderValue::from_static(arm.as_str()));
    if let (false, Ok(value)) = (summary.is_empty(), HeaderValue::from_str(&summary.join(", "))) {
        headers.insert("x-mtrec-warnings", value);
    }
    let labels = ScoreLabels { model: model_ref.name, version: model_ref.version, arm: arm.as_str().to_owned() };
    Ok(finish(&state, Scored { labels, pairs: rows as u64, exposure: None, response }, start))
}
