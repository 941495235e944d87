//! The server: its configuration and state, the router ([`app`]), hot reload of a bundle or a
//! model repository, and the server loop.
//!
//! - `routes`: the router and what every route shares (tracking, timeouts, body and JSON
//!   parsing).
//! - `score`: the scoring routes, routed to a version and logged to the exposure log.
//! - `admin`: `/v1/models`, reload and the routing of a model.

mod admin;
mod routes;
mod score;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use routes::app;

use crate::api::ReloadResponse;
use crate::error::ApiError;
use crate::exposure::{ExposureConfig, ExposureLog};
use crate::metrics::Metrics;
use crate::repository::refresh::refresh;
use crate::repository::{Catalog, RepositoryConfig, ServedModel};
use crate::scoring::{Limits, ServingModel, TablePaths};

/// Everything `mtrec serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The one bundle served (`--bundle`), unless `repository` is set.
    pub bundle: PathBuf,
    /// A model repository (`--models`): every model name and version in it.
    pub repository: Option<RepositoryConfig>,
    pub tables: TablePaths,
    pub addr: SocketAddr,
    pub limits: Limits,
    /// Largest request body, in bytes (413 beyond).
    pub body_limit: usize,
    /// Scoring requests running longer are answered 503 `timeout`.
    pub request_timeout: Duration,
    /// Bearer token of the admin routes (`/v1/admin/...`); they are disabled without one.
    pub admin_token: Option<String>,
    /// The exposure log of `/v1/score` answers, if any.
    pub exposure: Option<ExposureConfig>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            bundle: PathBuf::new(),
            repository: None,
            tables: TablePaths::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            limits: Limits::default(),
            body_limit: 32 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            admin_token: None,
            exposure: None,
        }
    }
}

/// Shared by every request: the catalog of models (swapped atomically on every change), the
/// metrics and the exposure log.
#[derive(Debug)]
pub struct AppState {
    pub config: ServeConfig,
    catalog: ArcSwap<Catalog>,
    pub metrics: Metrics,
    exposure: OnceLock<ExposureLog>,
    /// One catalog update (reload, repository pass, routing change) at a time.
    updating: tokio::sync::Mutex<()>,
}

impl AppState {
    /// A state serving nothing yet (`/readyz` answers 503 until a model is ready).
    pub fn new(config: ServeConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            catalog: ArcSwap::from_pointee(Catalog::default()),
            metrics: Metrics::default(),
            exposure: OnceLock::new(),
            updating: Default::default(),
        })
    }

    /// A state serving one bundle.
    pub fn with_model(config: ServeConfig, model: ServingModel) -> Arc<Self> {
        let state = Self::new(config);
        state.install(Catalog::single(model));
        state
    }

    /// Starts the exposure log; its writer runs until [`AppState::close`].
    pub fn start_exposure_log(&self, config: ExposureConfig) -> std::io::Result<()> {
        let log = ExposureLog::start(config, self.metrics.exposure.clone())?;
        self.set_exposure_log(log);
        Ok(())
    }

    /// Uses `log` as the exposure log (once).
    pub fn set_exposure_log(&self, log: ExposureLog) {
        if let Err(unused) = self.exposure.set(log) {
            unused.close();
        }
    }

    pub fn exposure_log(&self) -> Option<&ExposureLog> {
        self.exposure.get()
    }

    /// Completes the exposure log's file; call once requests have stopped.
    pub fn close(&self) {
        if let Some(log) = self.exposure.get() {
            log.close();
        }
    }

    /// What is served now. A request holds this `Arc` to its end, so a change never pulls a
    /// model from under a request in flight.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// The default model's stable version, if any.
    pub fn model(&self) -> Option<Arc<ServingModel>> {
        self.catalog().model(None).ok().and_then(|m| m.stable().cloned())
    }

    fn install(&self, catalog: Catalog) {
        self.metrics.set_catalog(&catalog);
        self.catalog.store(Arc::new(catalog));
    }

    /// With a repository: reads it now (as the poll does). Otherwise loads and self-tests a
    /// bundle (the given one, else the current one) off the async threads, then swaps it in; a
    /// bundle that fails is rejected and the old model keeps serving.
    pub async fn reload(&self, bundle: Option<PathBuf>) -> Result<ReloadResponse, ApiError> {
        let previous = self.model().map(|m| m.model_ref.clone());
        if self.config.repository.is_some() {
            if bundle.is_some() {
                return Err(ApiError::unprocessable(
                    "reload_rejected",
                    "this server serves a model repository: add a version to it instead of naming a bundle",
                )
                .with_field("bundle"));
            }
            self.refresh_repository().await?;
            let current = self.model().map(|m| m.model_ref.clone()).ok_or_else(ApiError::not_ready)?;
            return Ok(ReloadResponse { previous: previous.unwrap_or_else(|| current.clone()), current });
        }
        let _one_at_a_time = self.updating.lock().await;
        let dir = bundle.or_else(|| self.model().map(|m| m.dir.clone())).unwrap_or_else(|| self.config.bundle.clone());
        let tables = self.config.tables.clone();
        let loaded =
            run_cpu(move || ServingModel::load(&dir, &tables).map_err(|e| mtrec_schema::error_chain(&e))).await;
        match loaded {
            Ok(Ok(model)) => {
                let current = model.model_ref.clone();
                self.install(Catalog::single(model));
                self.metrics.reloaded(true);
                tracing::info!(name = current.name, version = current.version, "model loaded");
                Ok(ReloadResponse { previous: previous.unwrap_or_else(|| current.clone()), current })
            }
            Ok(Err(message)) | Err(ApiError { message, .. }) => {
                self.metrics.reloaded(false);
                tracing::error!(error = message, "model rejected; the previous model keeps serving");
                Err(ApiError::unprocessable("reload_rejected", message))
            }
        }
    }

    /// One pass over the model repository (new versions, routing files, retention); the
    /// current catalog keeps serving while it runs and when it fails.
    pub async fn refresh_repository(&self) -> Result<(), ApiError> {
        let Some(config) = self.config.repository.clone() else { return Ok(()) };
        let _one_at_a_time = self.updating.lock().await;
        let (tables, current) = (self.config.tables.clone(), self.catalog());
        let (catalog, changes) = run_cpu(move || refresh(&config, &tables, &current)).await?.map_err(|message| {
            tracing::error!(error = message, "the model repository could not be read");
            ApiError::internal(message)
        })?;
        for version in &changes.loaded {
            tracing::info!(version, "model version ready");
        }
        for (version, reason) in &changes.failed {
            tracing::error!(version, reason, "model version not served");
        }
        for version in &changes.removed {
            tracing::info!(version, "model version removed by retention");
        }
        for (name, error) in &changes.routing_errors {
            tracing::error!(model = name, error, "routing file not applied");
        }
        if !changes.loaded.is_empty() || !changes.failed.is_empty() {
            self.metrics.reloaded(changes.failed.is_empty());
        }
        self.install(catalog);
        Ok(())
    }

    /// Sets a model's routing: written to its `routing.json`, then applied.
    async fn set_routing(
        &self,
        name: String,
        routing: crate::repository::Routing,
    ) -> Result<crate::api::ModelEntry, ApiError> {
        let Some(repository) = self.config.repository.clone() else {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "no_repository",
                "routing needs a model repository (mtrec serve --models DIR)",
            ));
        };
        let _one_at_a_time = self.updating.lock().await;
        let current = self.catalog();
        let served = current.model(Some(&name))?;
        routing.validate().map_err(|m| ApiError::unprocessable("invalid_routing", m))?;
        for (label, version) in &routing.labels {
            if served.ready(version).is_none() {
                return Err(ApiError::unprocessable(
                    "unknown_version",
                    format!("label {label:?} points at {version:?}, which is not a ready version of {name:?}"),
                )
                .with_field(format!("labels.{label}")));
            }
        }
        let path = repository.dir.join(&name).join(crate::repository::routing::ROUTING_FILE);
        let text = serde_json::to_vec_pretty(&routing).map_err(|e| ApiError::internal(e.to_string()))?;
        run_cpu(move || mtrec_schema::fs::write_file(&path, &text))
            .await?
            .map_err(|e| ApiError::internal(format!("writing the routing file: {e}")))?;
        let model = ServedModel { routing, routing_error: None, ..served.clone() };
        let entry = model.entry(current.default_model.as_deref() == Some(name.as_str()));
        tracing::info!(model = name, routing = ?entry.routing, "routing changed");
        let mut catalog = (*current).clone();
        catalog.models.insert(name, model);
        self.install(catalog);
        Ok(entry)
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

/// Binds and serves: `model` if given, else the configured repository (polled for new versions
/// and routing changes) or bundle, loaded in the background (`/readyz` says when it is ready).
/// Reloads on SIGHUP, and shuts down gracefully on Ctrl-C or SIGTERM (requests in flight
/// finish, then the exposure log completes its file).
pub async fn run(config: ServeConfig, model: Option<ServingModel>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let exposure = config.exposure.clone();
    let state = match model {
        Some(model) => AppState::with_model(config, model),
        None => AppState::new(config),
    };
    if let Some(exposure) = exposure {
        state.start_exposure_log(exposure)?;
    }
    if let Some(repository) = state.config.repository.clone() {
        let polling = state.clone();
        tokio::spawn(async move {
            loop {
                let _ = polling.refresh_repository().await;
                tokio::time::sleep(repository.poll_interval).await;
            }
        });
    } else if state.model().is_none() {
        let loading = state.clone();
        tokio::spawn(async move {
            if let Err(e) = loading.reload(None).await {
                tracing::error!(
                    error = e.message,
                    "the bundle cannot be served; fix it and send SIGHUP or POST /v1/admin/reload"
                );
            }
        });
    }
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
    let served = axum::serve(listener, app(state.clone())).with_graceful_shutdown(shutdown_signal()).await;
    let closing = state.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    served
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
