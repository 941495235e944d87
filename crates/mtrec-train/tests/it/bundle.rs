//! The bundle: a trained model reloads to the same predictions, and loading checks every part.

use crate::common::{small_config, Data};

/// Rewrites a JSON file through `edit`.
fn edit_json(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn load_err(dir: &std::path::Path) -> String {
    mtrec_schema::error_chain(&mtrec_model::bundle::load(dir).unwrap_err())
}

#[test]
fn a_bundle_reloads_to_the_same_predictions() {
    let data = Data::new();
    let trained = data.train("b", small_config(), false);
    let bundle = mtrec_model::bundle::load(&data.path("b")).unwrap();
    assert_eq!(bundle.meta.architecture, "mmoe");
    assert_eq!(bundle.meta.tasks.len(), 5);
    let pipeline = mtrec_ingest::encoded::load_pipeline(&data.ingest()).unwrap();
    let test = mtrec_ingest::encoded::load_split(&data.ingest(), mtrec_schema::Split::Test, &pipeline).unwrap();
    let a = mtrec_model::predict_all(&trained.model, &test, 512);
    let b = mtrec_model::predict_all(&bundle.model, &test, 512);
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
