//! The model packed for inference against the training forward: the same outputs and gate
//! weights for every architecture and head kind, with product tasks and attention pooling, in
//! batches of one block and of several, with and without the reuse of what rows share; and
//! with layers wide enough for the packed layers' SIMD kernels, where the CPU has one.

use mtrec_model::{ArchitectureConfig as A, ModelConfig};
use mtrec_model::{MultiTaskModel, PackedModel, Predictions};

use crate::common::{configs, pipeline, pipeline_with_attention, pipeline_with_product, Batch};

/// Every parameter moved off its initial value (biases start at zero), deterministically.
fn perturbed(mut model: MultiTaskModel) -> MultiTaskModel {
    for id in model.params.ids().collect::<Vec<_>>() {
        let values: Vec<f32> = model
            .params
            .values(id)
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.3 * ((i as f32) * 1.7 + id.0 as f32).sin())
            .collect();
        model.params.set_values(id, &values);
    }
    model
}

/// Every architecture's small configuration, and some with layers of more than 16 outputs
/// (narrower ones keep faer's products on CPUs with AVX-512), of widths that are not whole
/// panels.
fn all_configs() -> Vec<(&'static str, ModelConfig)> {
    let base = ModelConfig { tower_layers: vec![18], ..Default::default() };
    let wide = [
        (
            "wide_mmoe",
            ModelConfig { architecture: A::Mmoe { experts: 3, expert_layers: vec![40, 20] }, ..base.clone() },
        ),
        (
            "wide_ple",
            ModelConfig {
                architecture: A::Ple { shared_experts: 2, task_experts: 1, expert_layers: vec![33], levels: 2 },
                ..base.clone()
            },
        ),
        ("wide_shared_bottom", ModelConfig { architecture: A::SharedBottom { layers: vec![70, 17] }, ..base.clone() }),
    ];
    configs().into_iter().chain(wide).collect()
}

fn assert_same(name: &str, packed: &Predictions, reference: &Predictions) {
    assert_eq!(packed.rows, reference.rows, "{name}");
    for (t, (p, r)) in packed.outputs.iter().zip(&reference.outputs).enumerate() {
        assert_eq!(p.len(), r.len(), "{name}: task {t}");
        for (i, (a, b)) in p.iter().zip(r).enumerate() {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{name}: task {t}, value {i}: {a} against {b}");
        }
    }
    for (t, (p, r)) in packed.gates.iter().zip(&reference.gates).enumerate() {
        match (p, r) {
            (Some(p), Some(r)) => {
                assert_eq!(p.len(), r.len(), "{name}: gate {t}");
                assert!(p.iter().zip(r).all(|(a, b)| (a - b).abs() <= 1e-6), "{name}: gate {t}");
            }
            (None, None) => {}
            _ => panic!("{name}: gate {t} present in only one of them"),
        }
    }
}

#[test]
fn packed_models_compute_the_training_forward() {
    let batch = Batch::with_product();
    let data = batch.data();
    // One block, and several blocks (rows repeat the batch's six).
    let small = batch.rows();
    let large: Vec<usize> = (0..150).map(|i| (i * 5) % 6).collect();
    let pipelines = [
        ("", pipeline()),
        (" with a product task", pipeline_with_product()),
        (" with attention", pipeline_with_attention()),
    ];
    for (name, config) in all_configs() {
        for (variant, pipeline) in &pipelines {
            let model = perturbed(MultiTaskModel::new(pipeline, &config, 5).unwrap());
            for reuse in [true, false] {
                let packed = PackedModel::new(&model).with_reuse(reuse);
                for rows in [&small, &large] {
                    let name = format!("{name}{variant}, {} rows, reuse {reuse}", rows.len());
                    assert_same(&name, &packed.predict(&model, &data, rows), &model.predict(&data, rows));
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "scores with the model it was built from")]
fn a_packed_model_refuses_another_model() {
    let batch = Batch::new();
    let model = MultiTaskModel::new(&pipeline(), &configs()[0].1, 1).unwrap();
    let other = MultiTaskModel::new(&pipeline(), &configs()[1].1, 1).unwrap();
    PackedModel::new(&model).predict(&other, &batch.data(), &batch.rows());
}

/// A request: one user and context, candidates that differ. The user task's output is the same
/// on every row, and every row equals its own training forward.
#[test]
fn one_user_with_many_candidates_matches_row_by_row() {
    let mut batch = Batch::new();
    let n = 70;
    batch.user = vec![3; n];
    batch.age = vec![0.4; n];
    batch.hist_offsets = (0..=n).map(|r| 3 * r).collect();
    batch.hist = [2, 5, 3].repeat(n);
    batch.item = (0..n).map(|r| 2 + (r % 4) as u32).collect();
    batch.price = (0..n).map(|r| r as f32 * 0.1 - 2.0).collect();
    batch.device = vec![3; n];
    let data = batch.data();
    let rows: Vec<usize> = (0..n).collect();
    for (variant, pipeline) in [("", pipeline()), (" with attention", pipeline_with_attention())] {
        for (name, config) in all_configs() {
            let model = perturbed(MultiTaskModel::new(&pipeline, &config, 11).unwrap());
            let got = PackedModel::new(&model).predict(&model, &data, &rows);
            assert_same(&format!("{name}{variant}"), &got, &model.predict(&data, &rows));
            let tier = &got.outputs[2];
            assert!(tier.chunks(3).all(|row| row == &tier[..3]), "{name}{variant}: the user task varies with the item");
        }
    }
}

/// A row's outputs do not depend on the other rows scored with it (nor on how a call is split
/// into blocks), bit for bit: validation during training and batch prediction stay
/// deterministic whatever runs beside them.
#[test]
fn a_rows_outputs_do_not_depend_on_the_rest_of_its_call() {
    let batch = Batch::new();
    let data = batch.data();
    let rows: Vec<usize> = (0..150).map(|i| (i * 5) % 6).collect();
    for (variant, pipeline) in [("", pipeline()), (" with attention", pipeline_with_attention())] {
        for (name, config) in all_configs() {
            let model = perturbed(MultiTaskModel::new(&pipeline, &config, 13).unwrap());
            for reuse in [false, true] {
                let packed = PackedModel::new(&model).with_reuse(reuse);
                let all = packed.predict(&model, &data, &rows);
                for size in [1, 2, 3, 7, 40, 64, 65, 100] {
                    let mut at = 0;
                    for part in rows.chunks(size) {
                        let got = packed.predict(&model, &data, part);
                        for (t, (a, o)) in all.outputs.iter().zip(&got.outputs).enumerate() {
                            let w = o.len() / part.len();
                            assert_eq!(
                                &a[at * w..(at + part.len()) * w],
                                &o[..],
                                "{name}{variant}, reuse {reuse}: task {t}, rows {at}.. by {size}"
                            );
                        }
                        at += part.len();
                    }
                }
            }
        }
    }
}
