//! # mtrec-serve
//!
//! The scoring API: product backends send a user and candidate items (or bulk rows, as JSON or
//! Arrow) and get every task's output for every pair.
//!
//! - [`scoring`]: a bundle made ready to serve (model, encoder, feature tables, self-test) and
//!   the synchronous scoring of requests by the model packed for inference (as `mtrec predict`
//!   scores), with the encoder ingestion used, so serving and `mtrec predict` agree.
//! - [`repository`]: the catalog of served models: one bundle (`--bundle`), or a versioned
//!   model repository (`--models DIR`) polled for new versions, with labels and the sticky
//!   routing of a share of users to a candidate.
//! - [`server`]: the axum router built by [`app`] (testable without a socket), hot reload with
//!   an atomic swap, request timeouts, and the server loop with graceful shutdown.
//! - [`exposure`]: the exposure log of what `/v1/score` answered, written off the request path.
//! - [`replay`]: `mtrec replay`, live traffic simulated from a raw log, with the outcomes the
//!   log recorded.
//! - [`api`]: request and response bodies; [`openapi`] generates `schemas/openapi.json` from
//!   them.
//! - [`error`]: the one error shape, `{"error": {"code", "message", "field"}}`.
//! - [`metrics`]: Prometheus metrics.
//!
//! Scoring is CPU-bound: handlers hand it to the rayon pool and await the answer on a oneshot
//! channel, so the async workers only move bytes.

pub mod api;
pub mod error;
pub mod exposure;
pub mod metrics;
pub mod openapi;
pub mod replay;
pub mod repository;
pub mod scoring;
pub mod server;

pub use error::{ApiError, ModelLoadError};
pub use exposure::{ExposureConfig, ExposureLog};
pub use repository::RepositoryConfig;
pub use scoring::{Answer, Limits, ServingModel, TablePaths};
pub use server::{app, run, AppState, ServeConfig};
