//! # mtrec-testkit
//!
//! Fixtures for integration tests (a dev-dependency only): the synthetic log of a config,
//! written as Parquet and ingested with `schemas/synthetic.json`, as a user would.

use std::path::{Path, PathBuf};

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

/// Generates the log of `config` into `dir` and ingests it into `dir/ingest`.
pub fn ingest_synthetic(dir: &Path, config: &mtrec_synth::SyntheticConfig) -> SyntheticIngest {
    let mut raw = mtrec_synth::generate(config).expect("a valid synthetic config");
    let parquet = dir.join("log.parquet");
    mtrec_synth::write_parquet(&mut raw, &parquet).expect("writing the synthetic log");
    let ingest = dir.join("ingest");
    mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
        schema: synthetic_schema(),
        input: vec![parquet.to_string_lossy().into_owned()],
        out: ingest.clone(),
        force: false,
    })
    .expect("ingesting the synthetic log");
    SyntheticIngest { raw, parquet, ingest }
}
