//! The model's configuration: plain serializable data with defaults, saved in every bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How tasks share parameters (within one scope group; see the crate docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArchitectureConfig {
    /// Hard sharing: one MLP shared by every task, a tower per task on top.
    SharedBottom { layers: Vec<usize> },
    /// Multi-gate mixture of experts (Ma et al., KDD 2018): `experts` MLPs shared by all tasks,
    /// one softmax gate per task mixing their outputs.
    Mmoe { experts: usize, expert_layers: Vec<usize> },
    /// No sharing of dense parameters: an independent MLP per task (the baseline that measures
    /// multi-task gain). Embedding tables are still shared.
    SingleTask { layers: Vec<usize> },
    /// Progressive layered extraction (Tang et al., RecSys 2020); with `levels: 1` it is one
    /// customized gate control (CGC) layer. Each level has `task_experts` experts per task and
    /// `shared_experts` shared experts (all MLPs of `expert_layers`); task k's gate mixes its own
    /// and the shared experts. Below the last level a shared gate mixes every expert of the
    /// level into the input of the next level's shared experts, and task k's mixture feeds task
    /// k's experts of the next level.
    Ple { shared_experts: usize, task_experts: usize, expert_layers: Vec<usize>, levels: usize },
    /// Soft parameter sharing: an independent MLP of `layers` per task (like `single_task`),
    /// with corresponding parameters pulled together by the penalty
    /// Ω = α Σ_i ‖θ_i − θ̄‖² (θ̄ the mean over the group's tasks), added to the training loss.
    SoftSharing { layers: Vec<usize>, alpha: f64 },
}

impl Default for ArchitectureConfig {
    fn default() -> Self {
        ArchitectureConfig::Mmoe { experts: 4, expert_layers: vec![64] }
    }
}

impl ArchitectureConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ArchitectureConfig::SharedBottom { .. } => "shared_bottom",
            ArchitectureConfig::Mmoe { .. } => "mmoe",
            ArchitectureConfig::SingleTask { .. } => "single_task",
            ArchitectureConfig::Ple { .. } => "ple",
            ArchitectureConfig::SoftSharing { .. } => "soft_sharing",
        }
    }
}

/// Loss of regression heads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RegressionLoss {
    #[default]
    Mse,
    Huber {
        delta: f32,
    },
}

/// How the task losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossWeighting {
    /// L = Σ λ_i L_i with fixed λ.
    #[default]
    Static,
    /// Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018): a learned
    /// log-variance s_i per task, L = Σ λ_i (c_i exp(-s_i) L_i + s_i / 2) with c_i = 1 for
    /// classification and 1/2 for regression.
    Uncertainty,
}

/// Explicit feature interactions fed to the `pair` group besides the raw input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Interactions {
    /// The dot product of every user-side embedding with every item-side embedding of the
    /// same dimension (factorization-machine style, as in DeepFM and DLRM): user-item affinity
    /// is a product, which an MLP on concatenated embeddings learns only slowly.
    #[default]
    UserItemDot,
    /// The raw input only.
    None,
}

/// Where the heads' output biases start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputBias {
    /// At each task's prior on the training labels (set by the trainer): the log-odds of the
    /// positive rate, the mean, or the log class frequencies.
    #[default]
    Prior,
    /// At zero.
    Zero,
}

/// The model configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub architecture: ArchitectureConfig,
    /// Hidden layers of every task tower (then a linear output layer).
    pub tower_layers: Vec<usize>,
    pub interactions: Interactions,
    pub output_bias: OutputBias,
    pub regression_loss: RegressionLoss,
    pub loss_weighting: LossWeighting,
    /// λ per task, overriding the schema's `weight`.
    pub task_weights: BTreeMap<String, f64>,
    /// A DCN-v2 cross network on each scope group's input ([`crate::cross`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross: Option<CrossConfig>,
    /// Hidden layers of the activation unit that weighs each position of a sequence pooled by
    /// attention ([`crate::attention`]).
    pub attention_units: Vec<usize>,
}

/// A cross network (DCN-v2) of `layers` layers, full rank or of `rank`, placed by `structure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossConfig {
    pub layers: usize,
    /// The rank of each layer's `U Vᵀ` product; full rank (`d x d`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    #[serde(default)]
    pub structure: CrossStructure,
}

/// Where the cross network sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CrossStructure {
    /// Before the architecture, which reads the crossed input (every expert of MMoE and PLE
    /// sees the crosses; with `shared_bottom`, DCN-v2's stacked structure).
    #[default]
    Stacked,
    /// Beside the architecture: each task's tower reads its hidden representation and the
    /// cross network's output side by side (DCN-v2's parallel structure).
    Parallel,
    /// Inside every expert of `mmoe` and `ple`: each expert crosses its input with a cross
    /// network of its own before its MLP, so the experts can specialize in different crosses.
    Experts,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            architecture: ArchitectureConfig::default(),
            tower_layers: vec![32],
            interactions: Interactions::default(),
            output_bias: OutputBias::default(),
            regression_loss: RegressionLoss::default(),
            loss_weighting: LossWeighting::default(),
            task_weights: BTreeMap::new(),
            cross: None,
            attention_units: vec![32],
        }
    }
}
