//! # mtrec-model
//!
//! The multi-task model on dfdx 0.13.
//!
//! - [`params`]: the named parameter store (name -> runtime-shaped tensor) and dense Adam.
//! - [`embedding`]: embedding tables outside the tape and their row-wise sparse optimizers
//!   (lazy Adam, Adagrad, row-wise Adagrad).
//! - [`layout`]: where every feature sits in the input row.
//! - [`arch`]: sharing architectures (shared-bottom, MMoE, single-task, PLE, soft sharing).
//! - [`cross`]: DCN-v2's cross network, stacked under or beside any architecture, or inside
//!   every MMoE/PLE expert.
//! - [`attention`]: DIN's target attention over behaviour sequences (mean pooling where a
//!   group does not see the candidate).
//! - `product`: product tasks (ESMM's click-and-convert), whose probability is the product of
//!   their factors'.
//! - [`fused`]: the hot path as fused ops with hand-written backward passes on dfdx's tape:
//!   linear layers and whole MLPs / expert banks over faer's GEMM (product, bias and ReLU in
//!   one op), and the gate's softmax with the experts' mixture; dfdx's own element-wise kernels
//!   and its gemm 0.15 were the bottleneck (benches/README.md, "Training speed against PyTorch:
//!   history"). In training, a wide first layer computes its embedding slots once per distinct
//!   id of the batch ([`fused::InputCodes`], [`MultiTaskModel::forward_coded`]).
//! - [`model`]: heads and the model's forward function on the tape, which training runs.
//! - [`packed`]: the same function with the weights packed once, over plain buffers: what
//!   prediction, evaluation, validation and serving score with.
//! - [`loss`]: each task's loss, on the tape for training and as a number for validation.
//! - [`infer`]: inference over encoded data: the model's view of encoded columns, a whole
//!   split scored in batches, its validation metrics, the names of prediction columns.
//! - [`io`]: weights as safetensors with stable names.
//! - [`bundle`]: the self-contained directory training writes and everything else loads.
//!
//! ## Working with dfdx 0.13
//!
//! dfdx 0.13 is the last release on crates.io. What this crate's design relies on, checked
//! against its sources:
//!
//! - **Parameters have runtime shapes** (vocabularies, feature counts and widths come from the
//!   schema and the config), and dfdx's module system cannot hold them: its `TensorOptions`
//!   constructors require compile-time shapes, so such a tensor cannot be registered in a
//!   `TensorCollection`, which drives dfdx's `Adam` and its safetensors helpers. The dense
//!   parameters therefore live in this crate's named store ([`ParamStore`], like candle's
//!   `VarMap`), walked by the dense Adam, the checkpoints and [`io`] alike.
//! - **Every forward pass starts from `x.trace(Gradients::leaky())`.** Starting from a
//!   module's `alloc_grads()` would mark only that module's tensors as leaves, and the
//!   gradients of everything else (the store's tensors, the embedding batch) would be dropped
//!   without an error.
//! - **A taped tensor read by several ops gives its tape to one of them** and an empty tape to
//!   the others (`arch::fan_out`): the ops recorded before it travel with the tape, so if
//!   every reader took an empty one their gradients would be lost; the branches merge again in
//!   the loss. dfdx's slice backward assigns instead of adding, so a tensor with other readers
//!   is sliced through a copy (`arch::slice_columns`).
//! - **Embedding tables stay off the tape** ([`embedding`]): dfdx's `gather` allocates a
//!   gradient the size of the whole table, and a dense optimizer would then update every row
//!   every step. Ids out of a table's range would panic inside a gather, so they are checked
//!   once, where encoded data is read.
//! - **dfdx runs element-wise ops one at a time, each into a fresh buffer**, and a model
//!   written op by op spends most of its time there, not in the matrix products; the hot path
//!   is therefore a few fused ops ([`fused`]).
//! - **dfdx's CPU kernels run on rayon's global pool**, which training's parallel parts and
//!   serving's scoring share.
//!
//! ## How experts, gates and towers are fed for each scope
//!
//! A task's scope (from the schema) decides which features its head may see. The input row is
//! laid out user features first, then item features, then context features, so that:
//!
//! - `pair` tasks (e.g. click-through) see the whole row, plus (with `interactions:
//!   user_item_dot`, the default) the dot product of every user-side embedding with every
//!   item-side embedding of the same dimension;
//! - `user` tasks see only the user block;
//! - `item` tasks see only the item block.
//!
//! The tasks of one scope form a group with its own sharing network, built from the configured
//! architecture: for `shared_bottom` one MLP over the group's input feeds every task's tower;
//! for `mmoe` the group's experts and each task's softmax gate all read the group's input, and
//! each tower reads its gate's mixture of the experts; for `single_task` each task has its own
//! MLP over the group's input; `soft_sharing` is `single_task` plus the penalty
//! Ω = α Σ_i ‖θ_i − θ̄‖² on the training loss, over corresponding parameters of the tasks'
//! networks (θ̄ their mean across the group's tasks); for `ple` (Tang et al., RecSys 2020) each
//! extraction level has experts per task and shared experts, task k's gate mixes its own and
//! the shared experts, and below the last level a shared gate mixes all the level's experts
//! into the next level's shared input (task k's mixture is task k's next input). Towers then
//! end in a linear head (1 output for binary and regression, one per class for multiclass).
//! Weights start Glorot-uniform with zero biases, except the heads' output biases, which the
//! trainer sets to each task's prior on the training labels
//! ([`MultiTaskModel::init_output_biases`]) unless `output_bias` is `zero`.
//!
//! ## Gate weights
//!
//! [`Forward::gates`] (and [`Predictions::gates`], which the expert-usage reports read) hold,
//! per task, `B x E` softmax weights: for MMoE over the group's `E = experts` experts in order;
//! for PLE the task's gate of the **last** level over `E = task_experts + shared_experts`
//! experts, the task's own experts first (columns `0..task_experts`) and the shared experts
//! after them. Intermediate levels' gates and the shared gates are not reported.
//!
//! Groups never exchange activations, so a `user` task's output cannot change when only item
//! or context features change (a test checks it). What the groups share are the **embedding
//! tables**: the user-modeling head trains the user-side tables, the item-modeling head the
//! item-side ones, and the CTR head reads and trains them all.

pub mod arch;
pub mod attention;
pub mod bundle;
pub mod config;
mod cpu;
pub mod cross;
pub mod embedding;
pub mod error;
pub mod fused;
pub mod infer;
pub mod io;
pub mod layout;
pub mod loss;
pub mod model;
pub mod packed;
pub mod params;
pub mod priors;
mod product;

pub use config::{
    ArchitectureConfig, CrossConfig, CrossStructure, Interactions, LossWeighting, ModelConfig, OutputBias,
    RegressionLoss,
};
pub use embedding::{BatchIds, EmbeddingTables, FeatureData, SparseOptimizer, SparseOptimizerConfig};
pub use error::ModelError;
pub use fused::InputCodes;
pub use infer::{feature_views, predict_all, validation_metrics, Validation, ValidationSet};
pub use loss::Loss;
pub use model::{Assembled, Forward, Head, MultiTaskModel, Predictions, TaskLosses};
pub use packed::PackedModel;
pub use params::{AdamConfig, AdamState, Dev, Mat, ParamStore};
pub use priors::LabelTotals;
