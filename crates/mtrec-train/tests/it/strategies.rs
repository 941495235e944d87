//! Every architecture and loss strategy trains: the training loss falls, and what each
//! strategy records lands in the history.

use mtrec_model::ArchitectureConfig as A;
use mtrec_train::{LossStrategy, TrainConfig};

use crate::common::{small_config, Data};

fn run(data: &Data, name: &str, architecture: A, strategy: LossStrategy) -> mtrec_schema::History {
    let mut cfg = TrainConfig {
        epochs: 3,
        loss_strategy: strategy,
        early_stopping: mtrec_train::config::EarlyStopping { patience: 0, ..Default::default() },
        ..small_config()
    };
    cfg.model.architecture = architecture;
    let h = data.train(name, cfg, false).history;
    let first = &h.epochs[0].train_loss;
    let last = &h.epochs.last().unwrap().train_loss;
    let total = |m: &std::collections::BTreeMap<String, f64>| m.values().sum::<f64>();
    assert!(total(last) < total(first), "{name}: training loss did not fall: {first:?} -> {last:?}");
    h
}

#[test]
fn new_architectures_train_and_soft_sharing_reports_its_penalty() {
    let data = Data::new();
    let ple = A::Ple { shared_experts: 2, task_experts: 1, expert_layers: vec![16], levels: 2 };
    let h = run(&data, "ple", ple, LossStrategy::Static);
    assert!(h.epochs.iter().all(|e| e.penalty.is_none() && e.loss_weights.is_empty()));
    let h = run(&data, "soft", A::SoftSharing { layers: vec![16], alpha: 0.01 }, LossStrategy::Static);
    let omega: Vec<f64> = h.epochs.iter().map(|e| e.penalty.expect("soft sharing reports Ω")).collect();
    assert!(omega.iter().all(|&o| o > 0.0 && o.is_finite()), "{omega:?}");
}

#[test]
fn every_loss_strategy_trains() {
    let data = Data::new();
    let mmoe = small_config().model.architecture;
    let bottom = A::SharedBottom { layers: vec![16] };
    run(&data, "uncertainty", bottom.clone(), LossStrategy::Uncertainty);
    let h = run(&data, "dwa", mmoe.clone(), LossStrategy::Dwa { temperature: 2.0 });
    // The first two epochs weigh every task 1; the third follows the loss ratios.
    assert!(h.epochs[0].loss_weights.values().all(|&w| w == 1.0), "{:?}", h.epochs[0].loss_weights);
    let w = &h.epochs[2].loss_weights;
    assert!((w.values().sum::<f64>() - w.len() as f64).abs() < 1e-9 && w.values().any(|&x| x != 1.0), "{w:?}");
    let h = run(&data, "gradnorm", bottom.clone(), LossStrategy::GradNorm { alpha: 1.5, lr: 0.01 });
    let w = &h.epochs[2].loss_weights;
    assert!((w.values().sum::<f64>() - w.len() as f64).abs() < 1e-9 && w.values().any(|&x| x != 1.0), "{w:?}");
    run(&data, "pcgrad", mmoe, LossStrategy::Pcgrad);
    run(&data, "pcgrad_soft", A::SoftSharing { layers: vec![16], alpha: 0.01 }, LossStrategy::Pcgrad);
}

#[test]
fn strategies_are_deterministic_and_resume_exactly() {
    let data = Data::new();
    let cfg = |epochs| TrainConfig {
        epochs,
        loss_strategy: LossStrategy::GradNorm { alpha: 1.5, lr: 0.01 },
        early_stopping: mtrec_train::config::EarlyStopping { patience: 0, ..Default::default() },
        ..small_config()
    };
    data.train("straight", cfg(2), false);
    data.train("resumed", cfg(1), false);
    data.train("resumed", cfg(2), true);
    let weights = |b: &str| std::fs::read(data.path(b).join("weights.safetensors")).unwrap();
    assert_eq!(weights("straight"), weights("resumed"));
    let pc = TrainConfig { loss_strategy: LossStrategy::Pcgrad, ..cfg(1) };
    data.train("pc_a", pc.clone(), false);
    data.train("pc_b", pc, false);
    assert_eq!(weights("pc_a"), weights("pc_b"));
}

#[test]
fn old_uncertainty_config_still_works_and_conflicts_are_refused() {
    let cfg: TrainConfig = serde_json::from_str(r#"{"model": {"loss_weighting": "uncertainty"}}"#).unwrap();
    assert_eq!(cfg.loss_strategy, LossStrategy::Static);
    assert!(cfg.validate().is_ok());
    let cfg: TrainConfig =
        serde_json::from_str(r#"{"model": {"loss_weighting": "uncertainty"}, "loss_strategy": {"type": "pcgrad"}}"#)
            .unwrap();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("cannot be combined with loss_strategy \"pcgrad\""), "{err}");
    let cfg: TrainConfig =
        serde_json::from_str(r#"{"loss_strategy": {"type": "gradnorm", "alpha": 1.5, "lr": 0.025}}"#).unwrap();
    assert_eq!(cfg.loss_strategy, LossStrategy::GradNorm { alpha: 1.5, lr: 0.025 });
    let cfg: TrainConfig = serde_json::from_str(r#"{"loss_strategy": {"type": "dwa", "temperature": 0}}"#).unwrap();
    assert!(cfg.validate().is_err());
    assert!(serde_json::from_str::<TrainConfig>(r#"{"loss_strategy": {"type": "mgda"}}"#).is_err());
}
