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

/// ESMM (`schemas/synthetic-esmm.json`): the conversion task has no loss of its own and learns
/// only through click-and-convert, on every impression. Its predictions are judged where they
/// are used, on every test impression, against the conversion each would have had if clicked
/// (`would_convert`), and must come close to the true probabilities' AUC there; the product
/// task's own AUC must too.
#[test]
fn esmm_learns_conversion_on_every_impression_through_the_product() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = mtrec_synth::SyntheticConfig { users: 20, items: 20, rows: 200_000, ..Default::default() };
    let ingest = mtrec_testkit::ingest_synthetic_with(dir.path(), &cfg, &mtrec_testkit::synthetic_esmm_schema()).ingest;
    let config: mtrec_train::TrainConfig = serde_json::from_value(serde_json::json!({
        "embedding_learning_rate": 0.01, "learning_rate": 0.002, "epochs": 8, "seed": 1,
        "early_stopping": {"metric": "click_convert.auc", "patience": 2}
    }))
    .unwrap();
    let trained =
        mtrec_train::train(&mtrec_train::TrainOptions::new(&ingest, config, &dir.path().join("bundle"))).unwrap();
    let pipeline = mtrec_ingest::encoded::load_pipeline(&ingest).unwrap();
    let test = mtrec_ingest::encoded::load_split(&ingest, mtrec_schema::Split::Test, &pipeline).unwrap();
    let task = |name: &str| pipeline.tasks.iter().position(|t| t.name == name).unwrap();
    let as_f32 = |v: &[f64]| -> Vec<f32> { v.iter().map(|&x| x as f32).collect() };
    let (p_click, p_convert) = (as_f32(&test.extras["p_click"]), as_f32(&test.extras["p_convert"]));
    let would_convert = as_f32(&test.extras["would_convert"]);

    let predictions = mtrec_model::predict_all(&trained.model, &test, 8192);
    let model = mtrec_metrics::auc(&predictions.outputs[task("convert")], &would_convert, None).unwrap();
    let bayes = mtrec_metrics::auc(&p_convert, &would_convert, None).unwrap();
    assert!(bayes - model < 0.03, "conversion AUC on every impression {model:.4} against the Bayes-optimal {bayes:.4}");

    let product = task("click_convert");
    let truth: Vec<f32> = p_click.iter().zip(&p_convert).map(|(c, v)| c * v).collect();
    let bayes = mtrec_metrics::auc(&truth, &test.labels[product], None).unwrap();
    let model = mtrec_metrics::auc(&predictions.outputs[product], &test.labels[product], None).unwrap();
    assert!(bayes - model < 0.02, "click-and-convert AUC {model:.4} against the Bayes-optimal {bayes:.4}");
}
