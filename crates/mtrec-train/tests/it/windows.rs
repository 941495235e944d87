//! Training by windows of shards: a split that fits in one window trains exactly as the whole
//! split in memory whatever its shards, a larger one trains deterministically window by window,
//! and a run stopped between two windows resumes to the very weights of an uninterrupted run.

use std::path::{Path, PathBuf};

use mtrec_train::{TrainConfig, TrainError, TrainOptions};

use crate::common::small_config;

/// The synthetic log ingested twice: in one shard per split, and in shards of 400 rows.
struct Sharded {
    dir: tempfile::TempDir,
}

impl Sharded {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = mtrec_synth::SyntheticConfig { users: 120, items: 60, rows: 4_000, seed: 9, ..Default::default() };
        let log = mtrec_testkit::ingest_synthetic(dir.path(), &cfg).parquet;
        mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
            input: vec![log.to_string_lossy().into_owned()],
            shard_rows: 400,
            ..mtrec_ingest::IngestOptions::new(&mtrec_testkit::synthetic_schema(), &dir.path().join("sharded"))
        })
        .unwrap();
        Sharded { dir }
    }

    fn whole(&self) -> PathBuf {
        self.dir.path().join("ingest")
    }

    fn sharded(&self) -> PathBuf {
        self.dir.path().join("sharded")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn config(window_rows: usize) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        window_rows,
        early_stopping: mtrec_train::config::EarlyStopping { patience: 0, ..Default::default() },
        ..small_config()
    }
}

fn train(data: &Path, config: TrainConfig, out: &Path, resume: bool) -> Result<mtrec_train::Trained, TrainError> {
    mtrec_train::train(&TrainOptions { resume, ..TrainOptions::new(data, config, out) })
}

fn weights(bundle: &Path) -> Vec<u8> {
    std::fs::read(bundle.join("weights.safetensors")).unwrap()
}

#[test]
fn a_split_that_fits_in_a_window_trains_exactly_as_in_memory_whatever_its_shards() {
    let data = Sharded::new();
    let manifest = mtrec_ingest::encoded::load_manifest(&data.sharded()).unwrap();
    assert!(manifest.train.shards.len() >= 8, "{} train shards", manifest.train.shards.len());
    train(&data.whole(), config(1 << 20), &data.out("whole"), false).unwrap();
    train(&data.sharded(), config(1 << 20), &data.out("sharded"), false).unwrap();
    assert!(weights(&data.out("whole")) == weights(&data.out("sharded")), "the same weights, bit for bit");
}

#[test]
fn windows_of_shards_train_deterministically_and_learn() {
    let data = Sharded::new();
    // Two shards (about 800 rows) per window.
    let longer = |window_rows| TrainConfig { epochs: 5, ..config(window_rows) };
    let a = train(&data.sharded(), longer(800), &data.out("a"), false).unwrap();
    train(&data.sharded(), longer(800), &data.out("b"), false).unwrap();
    assert!(weights(&data.out("a")) == weights(&data.out("b")), "deterministic for a seed");
    let in_memory = train(&data.sharded(), longer(1 << 20), &data.out("kept"), false).unwrap();
    assert!(weights(&data.out("a")) != weights(&data.out("kept")), "windows shuffle differently");
    let auc = |t: &mtrec_train::Trained| t.history.epochs[4].valid[&crate::common::key("click.auc")];
    assert!(auc(&a) > 0.55, "click AUC {}", auc(&a));
    assert!((auc(&a) - auc(&in_memory)).abs() < 0.03, "windowed {} vs in memory {}", auc(&a), auc(&in_memory));
    // Every shard trains once per epoch, in an order of the epoch; every row of a window once.
    let pipeline = mtrec_ingest::encoded::load_pipeline(&data.sharded()).unwrap();
    let split = mtrec_train::data::SplitData::open(
        &data.sharded(),
        mtrec_schema::Split::Train,
        &pipeline,
        800,
        mtrec_train::data::RankShare::ALONE,
    )
    .unwrap();
    assert!(!split.is_kept());
    let shards = mtrec_ingest::encoded::load_manifest(&data.sharded()).unwrap().train.shards.len();
    let orders: Vec<Vec<usize>> = (0..3).map(|epoch| split.windows(42, epoch).concat()).collect();
    for order in &orders {
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..shards).collect::<Vec<_>>());
    }
    assert!(orders[0] != orders[1] || orders[1] != orders[2], "epochs take the shards in different orders");
    let sizes: Vec<usize> = split.windows(42, 0).iter().map(Vec::len).collect();
    assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == 2), "800 rows of 400-row shards: {sizes:?}");
    let window = split.start_reading(&split.windows(42, 0)[0]).wait().unwrap();
    let mut order = mtrec_train::data::window_order(&window, 42, 0, 0);
    order.sort();
    assert_eq!(order, (0..window.rows).collect::<Vec<_>>());
}

#[test]
fn a_run_stopped_between_windows_resumes_to_the_same_weights() {
    let data = Sharded::new();
    let straight = train(&data.sharded(), config(800), &data.out("straight"), false).unwrap();
    let stopped = mtrec_train::train(&TrainOptions {
        stop_after_windows: Some(3),
        ..TrainOptions::new(&data.sharded(), config(800), &data.out("resumed"))
    });
    match stopped {
        Err(TrainError::Stopped { windows: 3, checkpoint }) => {
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(checkpoint.join("checkpoint.json")).unwrap()).unwrap();
            assert_eq!(state["progress"]["windows_done"], 3, "stopped within the first epoch");
            assert_eq!(state["progress"]["epoch"], 0);
        }
        other => panic!("expected a stop after 3 windows: {other:?}"),
    }
    assert!(!data.out("resumed").exists(), "no bundle before the run ends");
    let resumed = train(&data.sharded(), config(800), &data.out("resumed"), true).unwrap();
    assert!(weights(&data.out("straight")) == weights(&data.out("resumed")), "the same weights, bit for bit");
    for (a, b) in resumed.history.epochs.iter().zip(&straight.history.epochs) {
        assert_eq!(a.train_loss, b.train_loss, "epoch {}", a.epoch);
        assert_eq!(a.valid, b.valid, "epoch {}", a.epoch);
    }
}
