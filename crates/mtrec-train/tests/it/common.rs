//! A small synthetic dataset, ingested once per test into a temporary directory.

use std::path::PathBuf;

use mtrec_train::TrainConfig;

pub struct Data {
    pub dir: tempfile::TempDir,
}

impl Data {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = mtrec_synth::SyntheticConfig { users: 120, items: 60, rows: 4_000, seed: 9, ..Default::default() };
        mtrec_testkit::ingest_synthetic(dir.path(), &cfg);
        Self { dir }
    }

    pub fn ingest(&self) -> PathBuf {
        self.dir.path().join("ingest")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn train(&self, out: &str, config: TrainConfig, resume: bool) -> mtrec_train::Trained {
        mtrec_train::train(&mtrec_train::TrainOptions {
            resume,
            ..mtrec_train::TrainOptions::new(&self.ingest(), config, &self.path(out))
        })
        .unwrap()
    }
}

pub fn small_config() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 256,
        model: mtrec_model::ModelConfig {
            architecture: mtrec_model::ArchitectureConfig::Mmoe { experts: 3, expert_layers: vec![16] },
            tower_layers: vec![8],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A validation metric's key, e.g. `click.auc`.
pub fn key(text: &str) -> mtrec_schema::MetricKey {
    text.parse().unwrap()
}
