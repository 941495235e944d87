//! Autodiff against central finite differences, for every architecture and head kind, on the
//! dense parameters and on the embedding rows (through the sparse gradient path).

use dfdx::prelude::*;
use mtrec_model::MultiTaskModel;

use crate::common::{configs, pipeline, pipeline_with_attention, pipeline_with_product, Batch};

fn loss_of(model: &MultiTaskModel, batch: &Batch) -> f64 {
    let x = model.assemble(&batch.data(), &batch.rows()).input;
    let (loss, _) = model.loss(model.forward(x.traced(Gradients::leaky())), &batch.labels, &batch.masks).unwrap();
    f64::from(loss.array())
}

/// Analytic gradients: per dense parameter, and per (table, id) row.
fn analytic(model: &MultiTaskModel, batch: &Batch) -> (Vec<Vec<f32>>, Vec<mtrec_model::embedding::SparseGrad>) {
    let data = batch.data();
    let assembled = model.assemble(&data, &batch.rows());
    let leaf = assembled.input;
    let (loss, _) = model.loss(model.forward(leaf.trace(Gradients::leaky())), &batch.labels, &batch.masks).unwrap();
    let mut grads = loss.backward();
    let input = grads.get_or_alloc_mut(&leaf).unwrap().to_vec();
    let dense = model.params.ids().map(|id| model.params.grad(&mut grads, id)).collect();
    (dense, model.tables.sparse_grads(&model.layout, &assembled.ids, &input))
}

fn close(analytic: f64, numeric: f64) -> bool {
    (analytic - numeric).abs() <= 2e-3 + 2e-2 * analytic.abs().max(numeric.abs())
}

/// Central differences of the loss in one coordinate, at two step sizes: a ReLU kink within
/// the larger step spoils it, the smaller one then still agrees (float noise grows as the step
/// shrinks, so both are tried).
fn finite_differences(eval: &mut dyn FnMut(f32) -> f64, value: f32) -> [f64; 2] {
    [1e-3f32, 1e-4].map(|eps| (eval(value + eps) - eval(value - eps)) / (2.0 * f64::from(eps)))
}

#[test]
fn autodiff_matches_finite_differences() {
    let batch = Batch::new();
    for (name, cfg) in configs() {
        let mut model = MultiTaskModel::new(&pipeline(), &cfg, 7).unwrap();
        check_against_finite_differences(name, &mut model, &batch);
    }
}

/// DIN's attention pooling: the activation unit's parameters, and the embeddings of the history
/// (one gradient per position) and of the candidate (also read by the unit); the user task
/// pools the same history by its mean. (Seed 3: at seeds 7 and 9 a ReLU unit of one of the
/// models sits within 1e-4 of its kink, where the differences see half a slope; the pooling
/// op alone is checked in `attention`'s unit test.)
#[test]
fn attention_pooling_matches_finite_differences() {
    let batch = Batch::new();
    for (name, cfg) in configs().into_iter().filter(|(name, _)| ["shared_bottom", "mmoe", "ple"].contains(name)) {
        let mut model = MultiTaskModel::new(&pipeline_with_attention(), &cfg, 3).unwrap();
        assert!(model.params.ids().any(|id| model.params.name(id).starts_with("pair.attention.hist.")));
        check_against_finite_differences(&format!("{name} with attention"), &mut model, &batch);
    }
}

/// ESMM's product task: with no loss of its own, the conversion tower and head learn only
/// through the product, and their gradients must still be right. (Seed 9: with seed 7 a PLE
/// unit of this larger model sits within the finite-difference step of its ReLU kink on one of
/// the six rows, where the differences measure half a slope.)
#[test]
fn product_tasks_match_finite_differences() {
    let batch = Batch::with_product();
    for (name, cfg) in configs().into_iter().filter(|(name, _)| ["shared_bottom", "mmoe", "ple"].contains(name)) {
        let mut model = MultiTaskModel::new(&pipeline_with_product(), &cfg, 9).unwrap();
        check_against_finite_differences(&format!("{name} with a product task"), &mut model, &batch);
    }
}

fn check_against_finite_differences(name: &str, model: &mut MultiTaskModel, batch: &Batch) {
    {
        // Biases start at zero, and a row whose inputs to a layer are all zero (dead ReLUs)
        // then sits exactly on a ReLU kink, where finite differences see half a slope. Check
        // at a generic point instead.
        for (i, id) in model.params.ids().collect::<Vec<_>>().into_iter().enumerate() {
            if model.params.name(id).ends_with(".bias") {
                let v: Vec<f32> = (0..model.params.numel(id))
                    .map(|k| 0.05 * (((i * 7 + k * 13) % 11) as f32 - 5.0) / 5.0 + 0.013)
                    .collect();
                model.params.set_values(id, &v);
            }
        }
        let (dense, sparse) = analytic(model, batch);
        let mut checked = 0;
        for id in model.params.ids().collect::<Vec<_>>() {
            let values = model.params.values(id);
            assert!(dense[id.0].iter().any(|g| *g != 0.0), "{name}: {} receives no gradient", model.params.name(id));
            // A few coordinates per parameter, spread over it.
            for k in [0, values.len() / 2, values.len() - 1] {
                let numeric = finite_differences(
                    &mut |x| {
                        let mut v = values.clone();
                        v[k] = x;
                        model.params.set_values(id, &v);
                        loss_of(model, batch)
                    },
                    values[k],
                );
                model.params.set_values(id, &values);
                let a = f64::from(dense[id.0][k]);
                assert!(
                    numeric.iter().any(|&n| close(a, n)),
                    "{name}: {}[{k}]: autodiff {a} vs finite differences {numeric:?}",
                    model.params.name(id)
                );
                checked += 1;
            }
        }
        for (t, g) in sparse.iter().enumerate() {
            assert!(!g.ids.is_empty(), "{name}: table {} gets no gradient", model.tables.tables[t].name);
            let dim = model.tables.tables[t].dim;
            for (j, &id) in g.ids.iter().enumerate() {
                let at = id as usize * dim;
                let original = model.tables.tables[t].weights[at];
                let numeric = finite_differences(
                    &mut |x| {
                        model.tables.tables[t].weights[at] = x;
                        loss_of(model, batch)
                    },
                    original,
                );
                model.tables.tables[t].weights[at] = original;
                let a = f64::from(g.values[j * dim]);
                assert!(
                    numeric.iter().any(|&n| close(a, n)),
                    "{name}: embedding {}[{id}]: autodiff {a} vs finite differences {numeric:?}",
                    model.tables.tables[t].name
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "{name}: only {checked} coordinates checked");
    }
}

#[test]
fn masked_labels_contribute_neither_loss_nor_gradient() {
    let batch = Batch::new();
    let cfg = configs().remove(0).1;
    let model = MultiTaskModel::new(&pipeline(), &cfg, 3).unwrap();
    // Changing a masked label (dwell of row 1, tier of row 3) changes nothing.
    let mut changed = Batch::new();
    changed.labels[1][1] = 1000.0;
    changed.labels[2][3] = 2.0;
    assert_eq!(loss_of(&model, &batch), loss_of(&model, &changed));
    let (a, _) = analytic(&model, &batch);
    let (b, _) = analytic(&model, &changed);
    assert_eq!(a, b);
    // Changing an unmasked one does.
    changed.labels[1][0] = 1000.0;
    assert_ne!(loss_of(&model, &batch), loss_of(&model, &changed));
}

/// The trainer's coded forward ([`MultiTaskModel::forward_coded`]) against the plain one, for
/// every architecture with first layers wide enough to run coded: the same loss, the same
/// gradient on every dense parameter and, summed per id, on every embedding row.
#[test]
fn coded_forward_gives_the_same_loss_and_gradients() {
    use mtrec_model::fused::CODED_MIN_WIDTH;
    use mtrec_model::ArchitectureConfig as A;
    let batch = Batch::new();
    let wide = |layers: &[usize]| -> Vec<usize> {
        let mut l = layers.to_vec();
        l[0] = CODED_MIN_WIDTH;
        l
    };
    for (name, mut cfg) in configs() {
        cfg.architecture = match cfg.architecture {
            A::SharedBottom { layers } => A::SharedBottom { layers: wide(&layers) },
            A::SingleTask { layers } => A::SingleTask { layers: wide(&layers) },
            A::SoftSharing { layers, alpha } => A::SoftSharing { layers: wide(&layers), alpha },
            A::Mmoe { experts, expert_layers } => A::Mmoe { experts, expert_layers: wide(&expert_layers) },
            A::Ple { shared_experts, task_experts, expert_layers, levels } => {
                A::Ple { shared_experts, task_experts, expert_layers: wide(&expert_layers), levels }
            }
        };
        let model = MultiTaskModel::new(&pipeline(), &cfg, 11).unwrap();
        let data = batch.data();
        let assembled = model.assemble(&data, &batch.rows());
        // Every single-id slot coded, whatever its share of distinct ids in 6 rows.
        let codes = assembled.ids.codes(&model.layout, 1.0);
        assert_eq!(codes.blocks.len(), 3, "{name}: user, item and device are coded");
        let run = |codes: Option<&mtrec_model::InputCodes>| {
            let leaf = assembled.input.clone();
            let forward = model.forward_coded(leaf.trace(Gradients::leaky()), codes);
            let (loss, _) = model.loss(forward, &batch.labels, &batch.masks).unwrap();
            let value = loss.array();
            let mut grads = loss.backward();
            let input = grads.get_or_alloc_mut(&leaf).unwrap().to_vec();
            let dense: Vec<Vec<f32>> = model.params.ids().map(|id| model.params.grad(&mut grads, id)).collect();
            let sparse = model.tables.sparse_grads(&model.layout, &assembled.ids, &input);
            (value, dense, input, sparse)
        };
        let (loss_c, dense_c, input_c, sparse_c) = run(Some(&codes));
        let (loss_p, dense_p, input_p, sparse_p) = run(None);
        let near = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
        assert!(near(loss_c, loss_p), "{name}: loss {loss_c} vs {loss_p}");
        for (id, (c, p)) in model.params.ids().zip(dense_c.iter().zip(&dense_p)) {
            assert!(c.iter().zip(p).all(|(a, b)| near(*a, *b)), "{name}: {} differs", model.params.name(id));
        }
        for (c, p) in sparse_c.iter().zip(&sparse_p) {
            assert_eq!(c.ids, p.ids, "{name}: touched rows");
            assert!(c.values.iter().zip(&p.values).all(|(a, b)| near(*a, *b)), "{name}: embedding gradients differ");
        }
        // The coded path ran: per row, the input's gradient is no longer the plain one; except
        // under stacked or per-expert cross networks, which read the input instead of the first
        // layer.
        use mtrec_model::CrossStructure::{Experts, Stacked};
        let crossed_first = cfg.cross.as_ref().is_some_and(|c| matches!(c.structure, Stacked | Experts));
        if crossed_first {
            assert_eq!(input_c, input_p, "{name}: codes used under a cross network that reads the input");
            assert!(model.input_codes(&assembled.ids).blocks.is_empty(), "{name}: codes computed for nothing");
        } else {
            assert_ne!(input_c, input_p, "{name}: the codes were not used");
        }
    }
}
