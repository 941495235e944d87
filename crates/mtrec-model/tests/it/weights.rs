//! Weights round-trip through safetensors with stable names; mismatches are refused.

use mtrec_model::{io, MultiTaskModel};

use crate::common::{configs, pipeline, Batch};

#[test]
fn safetensors_round_trip_and_names() {
    let cfg = configs().remove(1).1;
    let a = MultiTaskModel::new(&pipeline(), &cfg, 1).unwrap();
    let bytes = io::to_safetensors(&io::named_tensors(&a), None).unwrap();
    let mut b = MultiTaskModel::new(&pipeline(), &cfg, 2).unwrap();
    let batch = Batch::new();
    assert_ne!(a.predict(&batch.data(), &batch.rows()), b.predict(&batch.data(), &batch.rows()));
    let tensors = io::from_safetensors(&bytes, "mem").unwrap();
    io::load_into(&mut b, &tensors, std::path::Path::new("mem")).unwrap();
    assert_eq!(a.predict(&batch.data(), &batch.rows()), b.predict(&batch.data(), &batch.rows()));
    let names: Vec<&String> = tensors.keys().collect();
    for expected in [
        "embedding.items",
        "embedding.user",
        "embedding.device",
        "pair.shared.experts.0.weight",
        "pair.shared.gate1.bias",
        "user.shared.gate0.weight",
        "tower.click.0.weight",
        "head.tier.bias",
    ] {
        assert!(names.iter().any(|n| *n == expected), "{expected} not in {names:?}");
    }
    assert_eq!(tensors["embedding.items"].0, vec![6, 2]);
    assert_eq!(tensors["head.tier.weight"].0, vec![3, 3]);

    let mut wrong = tensors.clone();
    wrong.get_mut("head.tier.bias").unwrap().0 = vec![4];
    let err = io::load_into(&mut b, &wrong, std::path::Path::new("w.safetensors")).unwrap_err().to_string();
    assert!(err.contains("\"head.tier.bias\" has shape [4], the model expects [3]"), "{err}");
    let mut missing = tensors.clone();
    missing.remove("tower.click.0.bias");
    let err = io::load_into(&mut b, &missing, std::path::Path::new("w.safetensors")).unwrap_err().to_string();
    assert!(err.contains("\"tower.click.0.bias\" is missing"), "{err}");
}
