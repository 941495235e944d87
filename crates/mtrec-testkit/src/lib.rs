//! # mtrec-testkit
//!
//! Fixtures for integration tests (a dev-dependency only): the synthetic log of a config,
//! written as Parquet and ingested with `schemas/synthetic.json`, as a user would; and bundles
//! of untrained models, for tests of what reads bundles without training one.

use std::path::{Path, PathBuf};

use mtrec_ingest::encoded::{load_pipeline, load_split};
use mtrec_model::bundle::{self, ModelMeta};
use mtrec_model::{ModelConfig, MultiTaskModel};
use mtrec_schema::{EpochRecord, History, MetricKey, Split};
use polars::prelude::DataFrame;

/// A generated and ingested synthetic log.
#[derive(Debug)]
pub struct SyntheticIngest {
    /// The raw log, as generated.
    pub raw: DataFrame,
    /// `<dir>/log.parquet`.
    pub parquet: PathBuf,
    /// `<dir>/ingest`: the ingest directory.
    pub ingest: PathBuf,
}

/// The repository's `schemas/synthetic.json`.
pub fn synthetic_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic.json")
}

/// The repository's `schemas/synthetic-esmm.json`: the synthetic log with ESMM's product task.
pub fn synthetic_esmm_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic-esmm.json")
}

/// Generates the log of `config` into `dir` and ingests it into `dir/ingest`.
pub fn ingest_synthetic(dir: &Path, config: &mtrec_synth::SyntheticConfig) -> SyntheticIngest {
    ingest_synthetic_with(dir, config, &synthetic_schema())
}

/// [`ingest_synthetic`] with the dataset schema `schema`.
pub fn ingest_synthetic_with(dir: &Path, config: &mtrec_synth::SyntheticConfig, schema: &Path) -> SyntheticIngest {
    let mut raw = mtrec_synth::generate(config).expect("a valid synthetic config");
    let parquet = dir.join("log.parquet");
    mtrec_synth::write_parquet(&mut raw, &parquet).expect("writing the synthetic log");
    let ingest = dir.join("ingest");
    mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
        input: vec![parquet.to_string_lossy().into_owned()],
        ..mtrec_ingest::IngestOptions::new(schema, &ingest)
    })
    .expect("ingesting the synthetic log");
    SyntheticIngest { raw, parquet, ingest }
}

/// Writes to `out` the bundle of an untrained model of `config` on the ingest directory
/// `ingest`: weights initialized with `seed`, output biases at the train split's priors, and a
/// history of one epoch holding the model's validation metrics, as a trained bundle's has.
/// For tests of what reads bundles (serving, reports), which need no training.
pub fn untrained_bundle(ingest: &Path, out: &Path, config: &ModelConfig, seed: u64) -> PathBuf {
    let pipeline = load_pipeline(ingest).expect("an ingest directory");
    let train = load_split(ingest, Split::Train, &pipeline).expect("the train split");
    let valid = load_split(ingest, Split::Valid, &pipeline).expect("the valid split");
    let mut model = MultiTaskModel::new(&pipeline, config, seed).expect("a valid model config");
    model.init_output_biases(&train.labels, &train.masks);
    let mut history = History::new(MetricKey::Loss);
    let valid_metrics = mtrec_model::validation_metrics(&model, &valid, 8192).metrics;
    model.set_residual_variances(&valid_metrics);
    history.epochs.push(EpochRecord { valid: valid_metrics, ..Default::default() });
    history.best_epoch = Some(0);
    let meta = ModelMeta {
        format_version: bundle::BUNDLE_FORMAT_VERSION,
        architecture: config.architecture.name().to_owned(),
        model: config.clone(),
        tasks: bundle::task_meta(&model),
        dataset: pipeline.dataset.clone(),
        schema_hash: pipeline.schema_hash.clone(),
        weights_sha256: String::new(),
        seed,
        training: serde_json::json!({ "untrained": true }),
        provenance: bundle::provenance(ingest, train.rows, Some(0), 1, 1, 1),
    };
    bundle::save(out, &model, &pipeline, meta, &history).expect("writing the bundle");
    out.to_owned()
}
