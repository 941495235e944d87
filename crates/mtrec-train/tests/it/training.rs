//! The training loop: determinism, resuming, early stopping, validation metrics.

use crate::common::{small_config, Data};
use mtrec_schema::MetricKey;

#[test]
fn same_seed_gives_identical_weights_and_another_seed_does_not() {
    let data = Data::new();
    data.train("a", small_config(), false);
    data.train("b", small_config(), false);
    let weights = |b: &str| std::fs::read(data.path(b).join("weights.safetensors")).unwrap();
    assert_eq!(weights("a"), weights("b"));
    data.train("c", mtrec_train::TrainConfig { seed: 7, ..small_config() }, false);
    assert_ne!(weights("a"), weights("c"));
}

/// On two threads, a batch of 512 rows runs as two parts in parallel (data-parallel steps):
/// still deterministic, and it learns as one pass over the batch (one thread) does.
#[test]
fn data_parallel_steps_are_deterministic() {
    let data = Data::new();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let config = || mtrec_train::TrainConfig { batch_size: 512, epochs: 6, ..small_config() };
    let a = pool.install(|| data.train("a", config(), false));
    pool.install(|| data.train("b", config(), false));
    let weights = |b: &str| std::fs::read(data.path(b).join("weights.safetensors")).unwrap();
    assert_eq!(weights("a"), weights("b"));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path("a").join("model.json")).unwrap()).unwrap();
    assert_eq!(meta["provenance"]["threads"], 2);
    let one =
        rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| data.train("one", config(), false));
    let auc = |t: &mtrec_train::Trained| t.history.epochs.last().unwrap().valid[&crate::common::key("click.auc")];
    // Rounding differs from one pass (the weights do), so the AUCs agree only to a tolerance.
    assert!(auc(&a) > 0.55 && (auc(&a) - auc(&one)).abs() < 0.01, "click AUC {} (one pass: {})", auc(&a), auc(&one));
}

/// A first layer of `CODED_MIN_WIDTH` outputs trains coded (the items, 60, and the small
/// context vocabularies hold at most a quarter of a 256-row batch's rows): still deterministic,
/// and it learns (valid click AUC above chance).
#[test]
fn a_coded_first_layer_trains_deterministically() {
    let data = Data::new();
    let wide = || {
        let mut cfg = small_config();
        cfg.model.architecture = mtrec_model::ArchitectureConfig::Mmoe {
            experts: 2,
            expert_layers: vec![mtrec_model::fused::CODED_MIN_WIDTH / 2],
        };
        cfg
    };
    let a = data.train("a", wide(), false);
    data.train("b", wide(), false);
    let weights = |b: &str| std::fs::read(data.path(b).join("weights.safetensors")).unwrap();
    assert_eq!(weights("a"), weights("b"));
    let auc = a.history.epochs.last().unwrap().valid[&crate::common::key("click.auc")];
    // 2 epochs of 4,000 rows: clearly above chance, as the uncoded models of this size are.
    assert!(auc > 0.55, "click AUC {auc}");
}

#[test]
fn resuming_continues_exactly_where_the_run_stopped() {
    let data = Data::new();
    let no_early_stop = |epochs| mtrec_train::TrainConfig {
        epochs,
        early_stopping: mtrec_train::config::EarlyStopping { patience: 0, ..Default::default() },
        ..small_config()
    };
    let straight = data.train("straight", no_early_stop(3), false);
    data.train("resumed", no_early_stop(1), false);
    let resumed = data.train("resumed", no_early_stop(3), true);
    assert_eq!(resumed.history.epochs.len(), 3);
    assert_eq!(resumed.history.best_epoch, straight.history.best_epoch);
    // The metrics of the epochs before the resume went through the checkpoint's JSON, which may
    // round a float's last bit; timings differ between runs.
    for (a, b) in resumed.history.epochs.iter().zip(&straight.history.epochs) {
        assert_eq!(a.valid.keys().collect::<Vec<_>>(), b.valid.keys().collect::<Vec<_>>());
        for (k, x) in &a.valid {
            assert!((x - b.valid[k]).abs() <= 1e-12 * x.abs().max(1.0), "epoch {} {k}: {x} vs {}", a.epoch, b.valid[k]);
        }
    }
    let weights = |b: &str| std::fs::read(data.path(b).join("weights.safetensors")).unwrap();
    assert_eq!(weights("straight"), weights("resumed"));

    // A checkpoint of another config is refused.
    let err = mtrec_train::train(&mtrec_train::TrainOptions {
        resume: true,
        ..mtrec_train::TrainOptions::new(
            &data.ingest(),
            mtrec_train::TrainConfig { learning_rate: 0.5, ..no_early_stop(4) },
            &data.path("resumed"),
        )
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("training config differs"), "{err}");
}

#[test]
fn rowwise_adagrad_learns_keeps_a_value_per_row_and_resumes_exactly() {
    let data = Data::new();
    let cfg = |epochs| mtrec_train::TrainConfig {
        epochs,
        embedding_optimizer: mtrec_train::config::EmbeddingOptimizer::RowwiseAdagrad,
        embedding_learning_rate: Some(0.05),
        early_stopping: mtrec_train::config::EarlyStopping { patience: 0, ..Default::default() },
        ..small_config()
    };
    let straight = data.train("straight", cfg(2), false);
    let auc = straight.history.epochs[1].valid[&crate::common::key("click.auc")];
    assert!(auc > 0.55, "click AUC {auc}");
    data.train("resumed", cfg(1), false);
    data.train("resumed", cfg(2), true);
    let weights = |b: &str| std::fs::read(data.path(b).join("weights.safetensors")).unwrap();
    assert_eq!(weights("straight"), weights("resumed"));
    // The checkpoint holds one accumulator per table row, and no second array.
    let checkpoint = mtrec_train::checkpoint::checkpoint_dir(&data.path("straight"));
    let bytes = std::fs::read(checkpoint.join("state.safetensors")).unwrap();
    let tensors = mtrec_model::io::from_safetensors(&bytes, "state.safetensors").unwrap();
    let sparse: Vec<_> = tensors.iter().filter(|(k, _)| k.starts_with("sparse.")).collect();
    assert!(!sparse.is_empty());
    for (name, (shape, values)) in sparse {
        assert!(name.starts_with("sparse.first/") && shape[1] == 1 && values.len() == shape[0], "{name}: {shape:?}");
    }
}

#[test]
fn history_has_every_task_metric_and_the_best_epoch() {
    let data = Data::new();
    let trained = data.train("m", mtrec_train::TrainConfig { epochs: 3, ..small_config() }, false);
    let h = &trained.history;
    let first = &h.epochs[0].valid;
    for key in [
        "click.auc",
        "click.logloss",
        "convert.auc",
        "dwell.rmse",
        "high_value.auc",
        "item_quality.accuracy",
        "item_quality.logloss",
        "loss",
    ] {
        assert!(first.contains_key(&crate::common::key(key)), "{key} missing from {first:?}");
    }
    let best = h.best_epoch.unwrap();
    let losses: Vec<f64> = h.epochs.iter().map(|e| e.valid[&crate::common::key("loss")]).collect();
    let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(losses[best], min, "the best epoch has the lowest validation loss: {losses:?}");
    // Training lowers the training loss of the pair task.
    assert!(h.epochs.last().unwrap().train_loss["click"] < h.epochs[0].train_loss["click"]);
}

#[test]
fn history_records_task_relatedness() {
    let data = Data::new();
    let trained = data.train("m", mtrec_train::TrainConfig { epochs: 2, ..small_config() }, false);
    let h = &trained.history;
    // Label correlation: binary and regression pairs; the multiclass task is left out.
    // (convert and dwell are labeled on clicked rows only, where click is constant: no r.)
    let r = h.label_correlation["click|high_value"];
    assert!(!h.label_correlation.contains_key("click|convert"));
    assert!((-1.0..=1.0).contains(&r), "{r}");
    assert!(!h.label_correlation.keys().any(|k| k.contains("item_quality")), "{:?}", h.label_correlation);
    // The pair tasks share the MMoE experts: their gradients meet there every epoch.
    for epoch in &h.epochs {
        let c = epoch.gradient_cosine["click|convert"];
        assert!((-1.0..=1.0).contains(&c), "{c}");
        // The user task has its own group: it shares no dense parameter with click.
        assert!(!epoch.gradient_cosine.contains_key("click|high_value"), "{:?}", epoch.gradient_cosine);
        let usage = &epoch.expert_usage["click"];
        assert_eq!(usage.mean_weight.len(), 3);
        assert!((usage.mean_weight.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{usage:?}");
        assert!(usage.mean_entropy > 0.0 && usage.mean_entropy <= 3f64.ln() + 1e-9, "{usage:?}");
    }
    // The default monitor: each task's primary metric relative to the first epoch, averaged.
    assert_eq!(h.monitor, MetricKey::Tasks);
    assert_eq!(h.epochs[0].valid[&MetricKey::Tasks], 1.0);
    let primary = |epoch: usize, key: &str| h.epochs[epoch].valid[&key.parse::<MetricKey>().unwrap()];
    let relative = [
        primary(1, "click.auc") / primary(0, "click.auc"),
        primary(1, "convert.auc") / primary(0, "convert.auc"),
        primary(0, "dwell.rmse") / primary(1, "dwell.rmse"),
        primary(1, "high_value.auc") / primary(0, "high_value.auc"),
        primary(0, "item_quality.logloss") / primary(1, "item_quality.logloss"),
    ];
    let expected = relative.iter().sum::<f64>() / relative.len() as f64;
    assert!((h.epochs[1].valid[&MetricKey::Tasks] - expected).abs() < 1e-12, "{:?}", h.epochs[1].valid);
}

#[test]
fn early_stopping_metric_must_exist() {
    let data = Data::new();
    let mut cfg = small_config();
    cfg.early_stopping.metric = "click.rmse".parse().unwrap();
    let err = mtrec_train::train(&mtrec_train::TrainOptions::new(&data.ingest(), cfg, &data.path("x")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("early_stopping.metric \"click.rmse\""), "{err}");
    assert!(!data.path("x").exists());
}

#[test]
fn every_shipped_training_config_loads_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let config = mtrec_train::TrainConfig::load(&path).and_then(|c| c.validate().map(|()| c));
            config.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files += 1;
        }
    }
    assert!(files >= 6, "only {files} training configs in {}", dir.display());
}
