//! The router ([`app`]), its state, hot reload and the server loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::api::{BatchRequest, ReloadRequest, ReloadResponse, ScoreRequest, ScoreResponse, Status, ARROW_STREAM};
use crate::error::ApiError;
use crate::metrics::{Metrics, RequestLabels};
use crate::scoring::{Limits, ServingModel, TablePaths};

/// Everything `mtrec serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub bundle: PathBuf,
    pub tables: TablePaths,
    pub addr: SocketAddr,
    pub limits: Limits,
    /// Largest request body, in bytes (413 beyond).
    pub body_limit: usize,
    /// Scoring requests running longer are answered 503 `timeout`.
    pub request_timeout: Duration,
    /// Bearer token of `POST /v1/admin/reload`; the endpoint is disabled without one.
    pub admin_token: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            bundle: PathBuf::new(),
            tables: TablePaths::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            limits: Limits::default(),
            body_limit: 32 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            admin_token: None,
        }
    }
}

/// Shared by every request: the model (swapped atomically on reload) and the metrics.
#[derive(Debug)]
pub struct AppState {
    pub config: ServeConfig,
    model: ArcSwapOption<ServingModel>,
    pub metrics: Metrics,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl AppState {
    /// A state with no model yet (`/readyz` answers 503 until [`AppState::reload`] succeeds).
    pub fn new(config: ServeConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            model: ArcSwapOption::empty(),
            metrics: Metrics::default(),
            reloading: Default::default(),
        })
    }

    /// A state serving `model`.
    pub fn with_model(config: ServeConfig, model: ServingModel) -> Arc<Self> {
        let state = Self::new(config);
        state.install(model);
        state
    }

    /// The model serving now, if any. A request holds its `Arc` to the end, so a reload never
    /// pulls a model from under a request in flight.
    pub fn model(&self) -> Option<Arc<ServingModel>> {
        self.model.load_full()
    }

    fn install(&self, model: ServingModel) {
        self.metrics.set_model(&model.model_ref.name, &model.model_ref.version);
        self.model.store(Some(Arc::new(model)));
    }

    /// Loads and self-tests a bundle (the given one, else the current one) off the async
    /// threads, then swaps it in. A bundle that fails is rejected and the old model keeps
    /// serving.
    pub async fn reload(&self, bundle: Option<PathBuf>) -> Result<ReloadResponse, ApiError> {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.model();
        let dir =
            bundle.or_else(|| previous.as_ref().map(|m| m.dir.clone())).unwrap_or_else(|| self.config.bundle.clone());
        let tables = self.config.tables.clone();
        let loaded =
            run_cpu(move || ServingModel::load(&dir, &tables).map_err(|e| mtrec_schema::error_chain(&e))).await;
        match loaded {
            Ok(Ok(model)) => {
                let current = model.model_ref.clone();
                self.install(model);
                self.metrics.reloaded(true);
                tracing::info!(name = current.name, version = current.version, "model loaded");
                let previous = previous.map(|m| m.model_ref.clone()).unwrap_or_else(|| current.clone());
                Ok(ReloadResponse { previous, current })
            }
            Ok(Err(message)) | Err(ApiError { message, .. }) => {
                self.metrics.reloaded(false);
                tracing::error!(error = message, "model rejected; the previous model keeps serving");
                Err(ApiError::unprocessable("reload_rejected", message))
            }
        }
    }
}

/// Runs CPU-bound work on the rayon pool and awaits it through a oneshot channel, so the async
/// workers stay free. A panic becomes a 500 instead of taking the process down.
pub async fn run_cpu<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let _ = tx.send(result);
    });
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(ApiError::internal("scoring failed unexpectedly (a bug: please report it)")),
        Err(_) => Err(ApiError::internal("the scoring worker went away")),
    }
}

/// The router, testable without a socket (`tower::ServiceExt::oneshot`).
pub fn app(state: Arc<AppState>) -> Router {
    let scoring = Router::new()
        .route("/v1/score", post(score))
        .route("/v1/score/batch", post(score_batch))
        .layer(middleware::from_fn_with_state(state.clone(), timeout));
    Router::new()
        .merge(scoring)
        .route("/v1/models", get(models))
        .route("/v1/admin/reload", post(reload))
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
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_body" };
        ApiError::new(status, code, rejection.body_text())
    })
}

/// Parses a JSON body, naming the field at fault.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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

fn ready_model(state: &AppState) -> Result<Arc<ServingModel>, ApiError> {
    state.model().ok_or_else(ApiError::not_ready)
}

/// JSON routes read any body as JSON (so a bare `curl -d` works), except an Arrow stream,
/// which only `/v1/score/batch` takes.
fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("")) {
        Some(t) if t.starts_with(ARROW_STREAM) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("this route takes JSON, not {ARROW_STREAM} (POST Arrow streams to /v1/score/batch)"),
        )),
        _ => Ok(()),
    }
}

async fn score(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_json(&headers)?;
    let body = body_bytes(body)?;
    let model = ready_model(&state)?;
    let limits = state.config.limits;
    let (pairs, json) = run_cpu(move || {
        let request: ScoreRequest = parse_json(&body)?;
        serialized(model.score(&request, &limits)?)
    })
    .await??;
    state.metrics.pairs_scored.inc_by(pairs);
    Ok(json)
}

/// The answer as a JSON response, serialized on the scoring thread: a large answer must not
/// hold an async worker. Returns the number of pairs too, for the metrics.
fn serialized(response: ScoreResponse) -> Result<(u64, Response), ApiError> {
    let pairs = response.results.len() as u64;
    let bytes =
        serde_json::to_vec(&response).map_err(|e| ApiError::internal(format!("serializing the answer: {e}")))?;
    Ok((pairs, ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()))
}

#[derive(Debug, serde::Deserialize)]
struct BatchQuery {
    /// Comma-separated task filter for Arrow requests.
    tasks: Option<String>,
}

async fn score_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<BatchQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_owned());
    let arrow = content_type.as_deref().is_some_and(|t| t.starts_with(ARROW_STREAM));
    let body = body_bytes(body)?;
    let model = ready_model(&state)?;
    let limits = state.config.limits;
    if !arrow {
        let (pairs, json) = run_cpu(move || {
            let request: BatchRequest = parse_json(&body)?;
            serialized(model.score_batch(&request, &limits)?)
        })
        .await??;
        state.metrics.pairs_scored.inc_by(pairs);
        return Ok(json);
    }
    let Query(query) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()).with_field("tasks"))?;
    let tasks = query.tasks.map(|t| t.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>());
    let version = model.model_ref.version.clone();
    let (bytes, warnings) = run_cpu(move || model.score_arrow(&body, &tasks, &limits)).await??;
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
    headers.insert(
        "x-mtrec-model-version",
        HeaderValue::from_str(&version).unwrap_or(HeaderValue::from_static("unknown")),
    );
    if let (false, Ok(value)) = (summary.is_empty(), HeaderValue::from_str(&summary.join(", "))) {
        headers.insert("x-mtrec-warnings", value);
    }
    Ok(response)
}

async fn models(State(state): State<Arc<AppState>>) -> Result<Json<crate::api::ModelInfo>, ApiError> {
    Ok(Json(ready_model(&state)?.info()))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.model() {
        Some(_) => Json(Status { status: "ready".to_owned() }).into_response(),
        None => ApiError::not_ready().into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(_) => ApiError::internal("the metrics could not be encoded").into_response(),
    }
}

async fn reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReloadResponse>, ApiError> {
    let Some(token) = state.config.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "reload_disabled",
            "reload is disabled: start the server with an admin token (--admin-token or MTREC_ADMIN_TOKEN)",
        ));
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required"));
    }
    let body = body_bytes(body)?;
    let request: ReloadRequest =
        if body.iter().all(u8::is_ascii_whitespace) { ReloadRequest::default() } else { parse_json(&body)? };
    Ok(Json(state.reload(request.bundle.map(PathBuf::from)).await?))
}

/// Compares secrets without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds and serves `model`, or, without one, loads the configured bundle in the background
/// (`/readyz` says when it is ready); reloads on SIGHUP, and shuts down gracefully on Ctrl-C or
/// SIGTERM (requests in flight finish).
pub async fn run(config: ServeConfig, model: Option<ServingModel>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let state = match model {
        Some(model) => AppState::with_model(config, model),
        None => {
            let state = AppState::new(config);
            let loading = state.clone();
            tokio::spawn(async move {
                if let Err(e) = loading.reload(None).await {
                    tracing::error!(
                        error = e.message,
                        "the bundle cannot be served; fix it and send SIGHUP or POST /v1/admin/reload"
                    );
                }
            });
            state
        }
    };
    tracing::info!(addr = %listener.local_addr()?, "listening");
    #[cfg(unix)]
    {
        let on_hup = state.clone();
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading");
                let _ = on_hup.reload(None).await;
            }
        });
    }
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
