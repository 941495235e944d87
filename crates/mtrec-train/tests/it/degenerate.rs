//! Training on degenerate data: an empty valid split, and a monitored metric the valid split
//! cannot define.

use std::path::{Path, PathBuf};

use mtrec_train::{TrainConfig, TrainError, TrainOptions};

/// Ingests mtrec-ingest's small CSV fixture into `dir/ingest`, its schema and text edited.
fn fixture_ingest(dir: &Path, schema: impl FnOnce(&mut serde_json::Value), csv: impl Fn(&str) -> String) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtrec-ingest/tests/data");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("interactions.json")).unwrap()).unwrap();
    schema(&mut spec);
    std::fs::write(dir.join("interactions.json"), spec.to_string()).unwrap();
    std::fs::write(dir.join("interactions.csv"), csv(&std::fs::read_to_string(data.join("interactions.csv")).unwrap()))
        .unwrap();
    let out = dir.join("ingest");
    mtrec_ingest::ingest(&mtrec_ingest::IngestOptions::new(&dir.join("interactions.json"), &out)).unwrap();
    out
}

fn config(epochs: usize) -> TrainConfig {
    serde_json::from_value(serde_json::json!({
        "epochs": epochs, "batch_size": 16,
        "model": {"architecture": {"type": "shared_bottom", "layers": [8]}, "tower_layers": [4]}
    }))
    .unwrap()
}

/// `csv` with every row's `column` set to `value`.
fn with_column(csv: &str, column: &str, value: &str) -> String {
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    let k = header.split(',').position(|c| c == column).unwrap();
    let rows = lines.map(|l| {
        let mut cells: Vec<&str> = l.split(',').collect();
        cells[k] = value;
        cells.join(",")
    });
    std::iter::once(header.to_owned()).chain(rows).collect::<Vec<_>>().join("\n")
}

fn train(data: &Path, out: &Path, config: TrainConfig) -> Result<mtrec_train::Trained, TrainError> {
    mtrec_train::train(&TrainOptions::new(data, config, out))
}

#[test]
fn an_empty_valid_split_trains_every_epoch_and_keeps_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_ingest(
        dir.path(),
        |s| s["split"]["fractions"] = serde_json::json!({"train": 0.8, "valid": 0.0, "test": 0.2}),
        str::to_owned,
    );
    let trained = train(&data, &dir.path().join("b"), config(3)).unwrap();
    assert_eq!(trained.history.epochs.len(), 3, "no early stopping without a valid split");
    assert_eq!(trained.history.best_epoch, Some(2), "the last epoch is kept");
    assert!(trained.history.epochs.iter().all(|e| e.valid.is_empty()), "nothing is made up for the valid split");
}

#[test]
fn a_monitor_the_valid_split_cannot_define_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    // Every row clicked: the valid split's click labels are one class, so its AUC is undefined.
    let data = fixture_ingest(dir.path(), |_| {}, |csv| with_column(csv, "clicked", "1"));
    let mut cfg = config(2);
    cfg.early_stopping.metric = "click.auc".parse().unwrap();
    let out = dir.path().join("b");
    let err = train(&data, &out, cfg).unwrap_err().to_string();
    assert!(err.contains("\"click.auc\" is undefined on the valid split") && err.contains("one class"), "{err}");
    assert!(!out.exists());
    // The default monitor (`tasks`) leaves click's undefined AUC out: the same data trains.
    let trained = train(&data, &out, config(2)).unwrap();
    assert!(!trained.history.epochs[0].valid.contains_key(&"click.auc".parse().unwrap()), "undefined, so absent");
}

/// Labels that teach nothing: no row clicked, so `click` is one class everywhere and `buy`
/// (masked to clicked rows) has no label at all. Training runs on what there is.
#[test]
fn tasks_of_one_class_or_without_labels_train_without_undefined_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_ingest(dir.path(), |_| {}, |csv| with_column(csv, "clicked", "0"));
    let trained = train(&data, &dir.path().join("b"), config(2)).unwrap();
    for epoch in &trained.history.epochs {
        assert!(!epoch.train_loss.contains_key("buy"), "no label, no loss: {:?}", epoch.train_loss);
        assert!(epoch.train_loss.values().all(|l| l.is_finite()), "{:?}", epoch.train_loss);
        let keys: Vec<String> = epoch.valid.keys().map(ToString::to_string).collect();
        assert!(!keys.iter().any(|k| k.starts_with("buy.") || k == "click.auc"), "undefined, so absent: {keys:?}");
        assert!(epoch.valid.values().all(|v| v.is_finite()), "{:?}", epoch.valid);
    }
    // The one-class task learns its base rate: every click probability is small.
    let bundle = mtrec_model::bundle::load(&dir.path().join("b")).unwrap();
    let valid = mtrec_ingest::encoded::load_split(&data, mtrec_schema::Split::Valid, &bundle.pipeline).unwrap();
    let click = bundle.model.heads.iter().position(|h| h.name == "click").unwrap();
    let predictions = mtrec_model::predict_all(&bundle.model, &valid, 64);
    assert!(predictions.outputs[click].iter().all(|&p| p < 0.05), "{:?}", predictions.outputs[click]);
}
