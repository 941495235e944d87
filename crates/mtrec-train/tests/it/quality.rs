//! Learning quality against ground truth: the synthetic data carries the true click
//! probabilities, so the Bayes-optimal AUC is known.

/// 200k events of 20 users and 20 items (about 400 training rows per user-item pair, so every
/// affinity is learnable from the data), the default MMoE, one seed. The measured gaps of the
/// click AUC to the Bayes-optimal AUC, over seeds and against a logistic regression with the
/// true functional form, are in benches/README.md ("Synthetic data against the Bayes-optimal
/// AUC"); all are several times smaller than the bound, 0.01, which leaves room for platform
/// differences in floating point, not for a regression.
#[test]
fn mmoe_click_auc_is_close_to_the_bayes_optimal_auc() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = mtrec_synth::SyntheticConfig { users: 20, items: 20, rows: 200_000, ..Default::default() };
    let ingest = mtrec_testkit::ingest_synthetic(dir.path(), &cfg).ingest;
    let config: mtrec_train::TrainConfig = serde_json::from_value(serde_json::json!({
        "embedding_learning_rate": 0.01, "learning_rate": 0.002, "epochs": 16, "seed": 1,
        "early_stopping": {"metric": "click.auc", "patience": 3}
    }))
    .unwrap();
    let trained =
        mtrec_train::train(&mtrec_train::TrainOptions::new(&ingest, config, &dir.path().join("bundle"))).unwrap();
    let pipeline = mtrec_ingest::encoded::load_pipeline(&ingest).unwrap();
    let test = mtrec_ingest::encoded::load_split(&ingest, mtrec_schema::Split::Test, &pipeline).unwrap();
    let evaluation = mtrec_model::validation_metrics(&trained.model, &test, 8192);
    let click = pipeline.tasks.iter().position(|t| t.name == "click").unwrap();
    let truth: Vec<f32> = test.extras["p_click"].iter().map(|&p| p as f32).collect();
    let bayes = mtrec_metrics::auc(&truth, &test.labels[click], None).unwrap();
    let model = evaluation.metrics[&crate::common::key("click.auc")];
    assert!(bayes - model < 0.01, "click AUC {model:.4} against the Bayes-optimal {bayes:.4}");
    assert!(model < bayes + 0.005, "no model beats the true probabilities by much: {model:.4} vs {bayes:.4}");
}
