//! The bundle: loading checks every part, and predict scores a split with it.

use crate::common::{small_config, Data};

/// Rewrites a JSON file through `edit`.
fn edit_json(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn load_err(dir: &std::path::Path) -> String {
    mtrec_model::bundle::load(dir).unwrap_err().to_string()
}

#[test]
fn a_bundle_reloads_to_the_same_predictions() {
    let data = Data::new();
    let trained = data.train("b", small_config(), false);
    let bundle = mtrec_model::bundle::load(&data.path("b")).unwrap();
    assert_eq!(bundle.meta.architecture, "mmoe");
    assert_eq!(bundle.meta.tasks.len(), 5);
    let pipeline = mtrec_ingest::encoded::load_pipeline(&data.ingest()).unwrap();
    let test = mtrec_ingest::encoded::load_split(&data.ingest(), "test", &pipeline).unwrap();
    let a = mtrec_train::eval::predict_all(&trained.model, &test, 512);
    let b = mtrec_train::eval::predict_all(&bundle.model, &test, 512);
    assert_eq!(a, b);
}

#[test]
fn the_loader_refuses_parts_that_disagree() {
    let data = Data::new();
    data.train("b", small_config(), false);
    let dir = data.path("b");
    let copy = |name: &str| {
        let to = data.path(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["model.json", "features.json", "weights.safetensors", "history.json"] {
            std::fs::copy(dir.join(f), to.join(f)).unwrap();
        }
        to
    };

    let corrupt = copy("corrupt");
    let mut w = std::fs::read(corrupt.join("weights.safetensors")).unwrap();
    let last = w.len() - 1;
    w[last] ^= 0xff;
    std::fs::write(corrupt.join("weights.safetensors"), w).unwrap();
    let err = load_err(&corrupt);
    assert!(err.contains("weights.safetensors: SHA-256") && err.contains("corrupt or replaced"), "{err}");

    let other_schema = copy("other_schema");
    edit_json(&other_schema.join("features.json"), |v| v["schema_hash"] = serde_json::json!("0000"));
    let err = load_err(&other_schema);
    assert!(err.contains("features.json: schema_hash 0000 differs from model.json's"), "{err}");

    let future = copy("future");
    edit_json(&future.join("model.json"), |v| v["format_version"] = serde_json::json!(99));
    let err = load_err(&future);
    assert!(err.contains("model.json: format_version 99 is not supported"), "{err}");

    let wider = copy("wider");
    edit_json(&wider.join("model.json"), |v| v["model"]["tower_layers"] = serde_json::json!([9]));
    let err = load_err(&wider);
    assert!(
        err.contains("weights.safetensors") && err.contains("has shape") && err.contains("the model expects"),
        "{err}"
    );

    let missing = copy("missing");
    std::fs::remove_file(missing.join("features.json")).unwrap();
    let err = load_err(&missing);
    assert!(err.contains("features.json"), "{err}");
}

#[test]
fn predict_writes_every_task_for_every_row() {
    let data = Data::new();
    data.train("b", small_config(), false);
    let bundle = mtrec_model::bundle::load(&data.path("b")).unwrap();
    let out = data.path("pred.parquet");
    let rows = mtrec_train::predict::predict(&bundle, &data.ingest(), "test", &out, 1000).unwrap();
    let df = polars::prelude::ParquetReader::new(std::fs::File::open(&out).unwrap()).finish().unwrap();
    use polars::prelude::SerReader;
    assert_eq!(df.height(), rows);
    for c in [
        "id.row",
        "id.user",
        "id.item",
        "pred.click",
        "label.click",
        "mask.click",
        "pred.dwell",
        "pred.item_quality",
        "prob.item_quality.low",
        "gate.click.0",
        "gate.click.2",
    ] {
        assert!(df.column(c).is_ok(), "{c} missing");
    }
    let p = df.column("pred.click").unwrap().f32().unwrap().clone();
    assert!(p.into_no_null_iter().all(|x| (0.0..=1.0).contains(&x)));
}

#[test]
fn predict_refuses_data_encoded_with_another_pipeline() {
    let data = Data::new();
    data.train("b", small_config(), false);
    let bundle = mtrec_model::bundle::load(&data.path("b")).unwrap();
    // The same rows, ingested with a schema that differs only in an embedding dimension.
    let mut schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic.json"))
            .unwrap(),
    )
    .unwrap();
    schema["defaults"]["embedding_dim"] = serde_json::json!(4);
    std::fs::write(data.path("other.json"), schema.to_string()).unwrap();
    mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
        schema: data.path("other.json"),
        input: vec![data.path("log.parquet").to_string_lossy().into_owned()],
        out: data.path("other"),
        force: false,
    })
    .unwrap();
    let out = data.path("pred.parquet");
    let err = mtrec_train::predict::predict(&bundle, &data.path("other"), "test", &out, 1000).unwrap_err().to_string();
    assert!(err.contains("was encoded with another feature pipeline than the bundle's"), "{err}");
    assert!(!out.exists());
}
