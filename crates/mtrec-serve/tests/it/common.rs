//! One small bundle shared by every test of the binary, and request helpers. Serving reads
//! bundles and never trains, so the bundles are untrained models (their weights from a seed,
//! their output biases at the train split's priors): what the API computes does not depend on
//! how good the weights are.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use mtrec_serve::replay::json_cell;
use mtrec_serve::{app, AppState, ServeConfig, ServingModel, TablePaths};
use polars::prelude::*;
use tower::ServiceExt;

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    /// The raw synthetic log the ingest was made from.
    pub raw: DataFrame,
    pub ingest: PathBuf,
    pub bundle: PathBuf,
    /// A second bundle of the same data (another seed): a different version.
    pub bundle_b: PathBuf,
}

/// Runs `f` on a plain thread: Polars' readers block on their own async runtime, which they
/// may not do from a thread of the tests' tokio runtime (the server runs them on rayon).
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// Generated and ingested once per test binary.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| off_runtime(build))
}

fn build() -> Fixture {
    {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let cfg = mtrec_synth::SyntheticConfig { users: 120, items: 60, rows: 3_000, seed: 5, ..Default::default() };
        // With ESMM's product task and the recent items pooled by attention against the
        // candidate (DIN), so that every test also serves both.
        let mut schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(mtrec_testkit::synthetic_esmm_schema()).unwrap()).unwrap();
        let recent =
            schema["features"].as_array_mut().unwrap().iter_mut().find(|f| f["name"] == "recent_items").unwrap();
        recent["pooling"] = serde_json::json!("attention");
        recent["attention"] = serde_json::json!({"target": "item_id", "max_length": 5});
        let schema_path = root.join("schema.json");
        std::fs::write(&schema_path, schema.to_string()).unwrap();
        let mtrec_testkit::SyntheticIngest { raw, ingest, .. } =
            mtrec_testkit::ingest_synthetic_with(&root, &cfg, &schema_path);
        // With a cross network beside the experts, so that parity covers it too.
        let cross =
            mtrec_model::CrossConfig { layers: 2, rank: Some(4), structure: mtrec_model::CrossStructure::Parallel };
        let config = mtrec_model::ModelConfig {
            architecture: mtrec_model::ArchitectureConfig::Mmoe { experts: 3, expert_layers: vec![16] },
            tower_layers: vec![8],
            cross: Some(cross),
            ..Default::default()
        };
        let bundle = mtrec_testkit::untrained_bundle(&ingest, &root.join("bundle"), &config, 1);
        let bundle_b = mtrec_testkit::untrained_bundle(&ingest, &root.join("bundle-b"), &config, 2);
        Fixture { _dir: dir, root, raw, ingest, bundle, bundle_b }
    }
}

/// Copies a bundle directory (flat) to `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

pub fn config() -> ServeConfig {
    ServeConfig { bundle: fixture().bundle.clone(), admin_token: Some("token".to_owned()), ..Default::default() }
}

pub fn state_with(config: ServeConfig, tables: TablePaths) -> Arc<AppState> {
    let model = off_runtime(|| ServingModel::load(&config.bundle, &tables).unwrap());
    AppState::with_model(ServeConfig { tables, ..config }, model)
}

pub fn state() -> Arc<AppState> {
    state_with(config(), TablePaths::default())
}

/// An answer: status, content type and body.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code of an error answer, checking the error shape on the way.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let error = v.get("error").unwrap_or_else(|| panic!("no `error` in {v}"));
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {v}");
        error["code"].as_str().unwrap().to_owned()
    }
}

pub async fn send(state: &Arc<AppState>, method: &str, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = content_type {
        request = request.header(header::CONTENT_TYPE, t);
    }
    if uri.starts_with("/v1/admin") {
        request = request.header(header::AUTHORIZATION, "Bearer token");
    }
    let response = app(state.clone()).oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, content_type, headers, body }
}

pub async fn post_json(state: &Arc<AppState>, uri: &str, body: &serde_json::Value) -> Answer {
    send(state, "POST", uri, Some("application/json"), serde_json::to_vec(body).unwrap()).await
}

/// Raw row `row` of the log as a batch row: each feature's column in the object of its side.
pub fn pair_record(model: &ServingModel, raw: &DataFrame, row: usize) -> serde_json::Value {
    let mut objects = [serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new()];
    for f in &model.encoder.pipeline().features {
        let side = match f.side {
            mtrec_schema::Side::User => 0,
            mtrec_schema::Side::Item => 1,
            mtrec_schema::Side::Context => 2,
        };
        let cell = raw.column(&f.column).unwrap().get(row).unwrap();
        objects[side].insert(f.column.clone(), json_cell(cell));
    }
    let [user, item, context] = objects;
    serde_json::json!({ "user": user, "item": item, "context": context })
}
