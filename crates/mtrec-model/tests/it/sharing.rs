//! The soft-sharing penalty against hand computation, and gradients that must survive a task
//! without labels.

use dfdx::prelude::*;
use mtrec_model::{ArchitectureConfig as A, ModelConfig, MultiTaskModel};

use crate::common::{pipeline, Batch};

#[test]
fn soft_sharing_penalty_and_its_gradient_match_the_formula() {
    let alpha = 0.3;
    let cfg = ModelConfig {
        architecture: A::SoftSharing { layers: vec![4, 3], alpha },
        tower_layers: vec![3],
        ..Default::default()
    };
    let model = MultiTaskModel::new(&pipeline(), &cfg, 5).unwrap();
    // Only the pair group (click, dwell) has two tasks; user and item groups have one (Ω = 0).
    let mut want = 0.0f64;
    let mut want_grads = Vec::new();
    for layer in 0..2 {
        for part in ["weight", "bias"] {
            let ids: Vec<_> =
                (0..2).map(|t| model.params.find(&format!("pair.shared.task{t}.{layer}.{part}")).unwrap()).collect();
            let values: Vec<Vec<f64>> =
                ids.iter().map(|&id| model.params.values(id).iter().map(|&v| f64::from(v)).collect()).collect();
            for (t, &id) in ids.iter().enumerate() {
                let grad: Vec<f64> = (0..values[0].len())
                    .map(|k| {
                        let mean = (values[0][k] + values[1][k]) / 2.0;
                        want += alpha * (values[t][k] - mean).powi(2);
                        2.0 * alpha * (values[t][k] - mean)
                    })
                    .collect();
                want_grads.push((id, grad));
            }
        }
    }
    let omega = model.penalty().expect("soft sharing has a penalty");
    let got = f64::from(omega.array());
    assert!((got - want).abs() <= 1e-5 * want.max(1.0) && want > 0.0, "Ω {got} vs {want}");
    let mut grads = omega.backward();
    for (id, want) in want_grads {
        let got = model.params.grad(&mut grads, id);
        for (g, w) in got.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{}: {got:?} vs {want:?}", model.params.name(id));
        }
    }
    // No penalty for the architectures without soft sharing.
    let hard = ModelConfig { architecture: A::SharedBottom { layers: vec![4] }, ..cfg };
    assert!(MultiTaskModel::new(&pipeline(), &hard, 5).unwrap().penalty().is_none());
}

/// Regression test: the shared network's recorded ops travel with the first task's outputs;
/// when that task had no labeled row in a batch its outputs were dropped with them, and the
/// shared parameters silently received no gradient from the other tasks.
#[test]
fn shared_parameters_get_gradients_when_the_first_task_has_no_label() {
    let cfg =
        ModelConfig { architecture: A::SharedBottom { layers: vec![5] }, tower_layers: vec![3], ..Default::default() };
    let model = MultiTaskModel::new(&pipeline(), &cfg, 3).unwrap();
    let mut batch = Batch::new();
    batch.masks[0] = vec![0; 6];
    let x = model.assemble(&batch.data(), &batch.rows()).input;
    let (loss, per_task) =
        model.loss(model.forward(x.traced(Gradients::leaky())), &batch.labels, &batch.masks).unwrap();
    assert_eq!(per_task[0], None);
    let mut grads = loss.backward();
    let bottom = model.params.find("pair.shared.bottom.0.weight").unwrap();
    assert!(model.params.grad(&mut grads, bottom).iter().any(|g| *g != 0.0), "the shared bottom got no gradient");
    let click = model.params.find("head.click.weight").unwrap();
    assert!(model.params.grad(&mut grads, click).iter().all(|g| *g == 0.0));
}

#[test]
fn ple_gates_mix_own_then_shared_experts() {
    let cfg = ModelConfig {
        architecture: A::Ple { shared_experts: 3, task_experts: 2, expert_layers: vec![4], levels: 2 },
        tower_layers: vec![3],
        ..Default::default()
    };
    let model = MultiTaskModel::new(&pipeline(), &cfg, 5).unwrap();
    let b = Batch::new();
    let p = model.predict(&b.data(), &b.rows());
    for g in &p.gates {
        let g = g.as_ref().expect("every PLE task reports its gate");
        assert_eq!(g.len(), 6 * 5);
        for row in g.chunks(5) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5 && row.iter().all(|&w| w > 0.0));
        }
    }
    for name in ["pair.shared.level0.shared_gate.weight", "pair.shared.level1.gate1.weight"] {
        assert!(model.params.find(name).is_some(), "{name}");
    }
    assert!(model.params.find("pair.shared.level1.shared_gate.weight").is_none(), "no shared gate on the last level");
    // Task gates see (own 2 + shared 3); the shared gate all 2 * 2 + 3 experts of the level.
    let shape = |n: &str| model.params.shape(model.params.find(n).unwrap());
    assert_eq!(shape("pair.shared.level0.gate0.weight")[1], 5);
    assert_eq!(shape("pair.shared.level0.shared_gate.weight")[1], 7);
}
