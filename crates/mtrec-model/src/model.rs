//! The multi-task model and its forward function on the tape.

use dfdx::prelude::*;
use mtrec_schema::{FeaturePipeline, Scope, TaskType};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::arch::{Mlp, Sharing};
use crate::attention::SequencePooling;
use crate::config::{ArchitectureConfig, CrossStructure, Interactions, LossWeighting, ModelConfig, RegressionLoss};
use crate::cross::CrossNetwork;
use crate::embedding::{BatchIds, EmbeddingTables, FeatureData};
use crate::error::ModelError;
use crate::fused::{InputCodes, CODED_MIN_WIDTH};
use crate::layout::{InputLayout, SlotSource};
use crate::loss::{task_loss, Loss};
use crate::params::{Dev, Linear, Mat, ParamId, ParamStore, TapeKind, Taped};

/// A slot is coded when at most this share of a batch's rows hold distinct ids.
const CODED_MAX_DISTINCT_SHARE: f64 = 0.25;

/// One task's head.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub name: String,
    pub kind: TaskType,
    pub scope: Scope,
    /// Outputs: 1 for binary and regression, the class count for multiclass.
    pub outputs: usize,
    /// λ in L = Σ λ_i L_i.
    pub weight: f32,
    pub classes: Vec<String>,
    /// A regression label learned as `ln(1 + y)` (the schema's `label.log1p`): the head's
    /// output is on that scale; [`Head::to_label_units`] maps it back.
    pub label_log1p: bool,
    /// For a `label_log1p` head, the variance of its residuals on the valid split (on the
    /// training scale), measured by the trainer: with it, [`Head::label_mean`] is known.
    pub residual_variance: Option<f64>,
    /// A product task's factors (earlier binary tasks, by index): its probability is the
    /// product of theirs and it has no tower (module `product`). Empty for other tasks.
    pub factors: Vec<usize>,
}

impl Head {
    /// A regression output in the label's units: the output itself, or for a `label_log1p`
    /// head `exp(output) − 1`, which is the label's median when its error is log-normal.
    pub fn to_label_units(&self, output: f32) -> f64 {
        let x = f64::from(output);
        if self.label_log1p {
            x.exp_m1()
        } else {
            x
        }
    }

    /// For a `label_log1p` head whose residual variance σ² is known, the label's mean in its
    /// units under a log-normal error: `exp(output + σ²/2) − 1`.
    pub fn label_mean(&self, output: f32) -> Option<f64> {
        let variance = self.residual_variance.filter(|_| self.label_log1p)?;
        Some((f64::from(output) + variance / 2.0).exp_m1())
    }
}

/// The tasks of one scope and the network that serves them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub(crate) scope: Scope,
    /// Dot-product interactions appended to the group's input (pair group only).
    pub(crate) dots: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// The behaviour sequences in the group's input, pooled by attention or the mean
    /// ([`crate::attention`]).
    pub(crate) sequences: Vec<SequencePooling>,
    /// Indices into `heads`, in task order.
    pub(crate) tasks: Vec<usize>,
    pub(crate) sharing: Sharing,
    /// The cross network and where it sits ([`crate::cross`]).
    pub(crate) cross: Option<(CrossNetwork, CrossStructure)>,
    pub(crate) towers: Vec<Mlp>,
    pub(crate) outputs: Vec<Linear>,
}

/// The model: embedding tables, dense parameters and the structure tying them together.
#[derive(Debug, Clone)]
pub struct MultiTaskModel {
    pub config: ModelConfig,
    pub layout: InputLayout,
    pub tables: EmbeddingTables,
    pub params: ParamStore,
    pub heads: Vec<Head>,
    pub(crate) groups: Vec<Group>,
    /// Uncertainty weighting: one log-variance per task.
    pub log_vars: Option<ParamId>,
}

/// Each task's unweighted loss on the tape, from [`MultiTaskModel::task_losses`].
#[derive(Debug)]
pub struct TaskLosses {
    /// Per task; a zero carrying the outputs' tape when no row is labeled.
    pub losses: Vec<Loss>,
    /// Per task, the loss's value (`None`: no labeled row).
    pub values: Vec<Option<f32>>,
}

/// A batch ready for the forward pass.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The input rows, an untaped leaf tensor `B x layout.width`.
    pub input: Mat,
    /// The batch's embedding ids, for scattering the input's gradient back to the tables.
    pub ids: BatchIds,
}

/// What one forward pass produces.
#[derive(Debug)]
pub struct Forward<T: TapeKind> {
    /// Raw outputs (logits for binary and multiclass) per task, `B x outputs`.
    pub logits: Vec<Mat<T>>,
    /// For MMoE, each task's gate weights over the experts, `B x E`; for PLE, each task's gate
    /// of the last level, `B x (task_experts + shared_experts)`: the task's own experts first,
    /// then the shared experts. `None` for the other architectures.
    pub gates: Vec<Option<Mat>>,
}

impl MultiTaskModel {
    /// Builds a freshly initialized model for `pipeline` (deterministic in `seed`).
    pub fn new(pipeline: &FeaturePipeline, config: &ModelConfig, seed: u64) -> Result<Self, ModelError> {
        Self::new_sharded(pipeline, config, seed, &|_| None)
    }

    /// As [`MultiTaskModel::new`], holding of each row-sharded table `t` (`shard_of(t) =
    /// Some((rank, ranks))`) only that rank's rows ([`EmbeddingTables::from_pipeline_sharded`]):
    /// a rank of distributed training.
    pub fn new_sharded(
        pipeline: &FeaturePipeline,
        config: &ModelConfig,
        seed: u64,
        shard_of: &dyn Fn(usize) -> Option<(usize, usize)>,
    ) -> Result<Self, ModelError> {
        validate(config)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let tables = EmbeddingTables::from_pipeline_sharded(pipeline, &mut rng, shard_of);
        let layout =
            InputLayout::new(pipeline, |f| pipeline.features[f].embedding_table().and_then(|name| tables.index(name)));
        let heads: Vec<Head> = pipeline
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| Head {
                name: t.name.clone(),
                kind: t.kind,
                scope: t.scope,
                outputs: if t.kind == TaskType::Multiclass { t.classes.len() } else { 1 },
                weight: config.task_weights.get(&t.name).copied().unwrap_or(t.weight) as f32,
                classes: t.classes.clone(),
                label_log1p: t.kind == TaskType::Regression && t.label.as_ref().is_some_and(|l| l.log1p),
                residual_variance: None,
                factors: pipeline.factors(i),
            })
            .collect();
        for name in config.task_weights.keys() {
            if !heads.iter().any(|h| &h.name == name) {
                return Err(ModelError::Config(format!("task_weights: no task named {name:?}")));
            }
        }
        let mut params = ParamStore::new(Dev::default());
        let mut groups = Vec::new();
        for scope in [Scope::Pair, Scope::User, Scope::Item] {
            let tasks: Vec<usize> =
                (0..heads.len()).filter(|&t| heads[t].scope == scope && heads[t].factors.is_empty()).collect();
            if tasks.is_empty() {
                continue;
            }
            layout.check_scope(scope, &heads[tasks[0]].name)?;
            let prefix = scope_name(scope);
            let dots = match (scope, config.interactions) {
                (Scope::Pair, Interactions::UserItemDot) => layout.user_item_pairs(),
                _ => Vec::new(),
            };
            let range = layout.scope_range(scope);
            let sequences: Vec<SequencePooling> = layout
                .slots
                .iter()
                .filter(|s| range.contains(&s.offset))
                .filter_map(|s| match s.source {
                    SlotSource::Sequence { table, length, target } => Some((s, table, length, target)),
                    _ => None,
                })
                .map(|(s, table, length, target)| {
                    let local =
                        |slot: &crate::layout::Slot| slot.offset - range.start..slot.offset - range.start + slot.width;
                    // Attention where the group sees the candidate, else the mean.
                    let target =
                        layout.slots.iter().find(|t| t.feature == target && range.contains(&t.offset)).map(local);
                    let name = &pipeline.features[s.feature].name;
                    let dim = tables.tables[table].dim;
                    // Dotted with the item-side embeddings of its dimension, as a mean-pooled
                    // history is by the user-item dot interactions.
                    let item_side = layout.scope_range(Scope::Item);
                    let dots = match (scope, config.interactions) {
                        (Scope::Pair, Interactions::UserItemDot) => layout
                            .slots
                            .iter()
                            .filter(|t| matches!(t.source, SlotSource::Embedding { .. }))
                            .filter(|t| item_side.contains(&t.offset) && t.width == dim)
                            .map(local)
                            .collect(),
                        _ => Vec::new(),
                    };
                    let pooling = SequencePooling::mean(local(s), length, dim).dotted_with(dots);
                    match target {
                        Some(t) => pooling.attending(
                            &mut params,
                            &format!("{prefix}.attention.{name}"),
                            t,
                            &config.attention_units,
                            &mut rng,
                        ),
                        None => pooling,
                    }
                })
                .collect();
            let pooled: usize = sequences.iter().map(|s| s.pooled_width()).sum();
            let removed: usize = sequences.iter().map(|s| s.columns.len()).sum();
            let input = range.len() + dots.len() + pooled - removed;
            let expert_cross = config.cross.as_ref().filter(|c| c.structure == CrossStructure::Experts);
            let (sharing, hidden) = Sharing::new(
                &config.architecture,
                &mut params,
                &format!("{prefix}.shared"),
                input,
                tasks.len(),
                expert_cross,
                &mut rng,
            );
            let cross = config.cross.as_ref().filter(|c| c.structure != CrossStructure::Experts).map(|c| {
                let net = CrossNetwork::new(&mut params, &format!("{prefix}.cross"), input, c.layers, c.rank, &mut rng);
                (net, c.structure)
            });
            // In parallel, a tower reads the task's hidden representation and the crossed input.
            let tower_input = match &cross {
                Some((_, CrossStructure::Parallel)) => hidden + input,
                _ => hidden,
            };
            let mut towers = Vec::new();
            let mut outputs = Vec::new();
            for &t in &tasks {
                let name = &heads[t].name;
                let tower =
                    Mlp::new(&mut params, &format!("tower.{name}"), tower_input, &config.tower_layers, &mut rng);
                towers.push(tower);
                let fan_in = config.tower_layers.last().copied().unwrap_or(tower_input);
                outputs.push(params.add_linear(&format!("head.{name}"), fan_in, heads[t].outputs, &mut rng));
            }
            groups.push(Group { scope, dots, sequences, tasks, sharing, cross, towers, outputs });
        }
        let log_vars = (config.loss_weighting == LossWeighting::Uncertainty)
            .then(|| params.add_vector("loss.log_vars", vec![0.0; heads.len()]));
        Ok(Self { config: config.clone(), layout, tables, params, heads, groups, log_vars })
    }

    /// The input rows of `rows`, as an untaped leaf tensor `B x layout.width`, and the batch's
    /// embedding ids (for [`EmbeddingTables::sparse_grads`] after a backward pass).
    pub fn assemble(&self, data: &[FeatureData<'_>], rows: &[usize]) -> Assembled {
        let ids = BatchIds::new(&self.layout, data, rows);
        let mut buf = vec![0.0f32; rows.len() * self.layout.width];
        self.tables.gather(&self.layout, data, rows, &ids, &mut buf);
        Assembled { input: self.params.device().tensor_from_vec(buf, (rows.len(), self.layout.width)), ids }
    }

    /// Which rows of the batch of `ids` share each single-id embedding slot's row, for
    /// [`Self::forward_coded`]: slots where at most a quarter of the rows hold distinct ids
    /// (small vocabularies), where computing per distinct id saves most of the first layer's
    /// products. None when no first layer is wide enough to run coded.
    pub fn input_codes(&self, ids: &BatchIds) -> InputCodes {
        // A stacked cross network or pooled sequences stand between the input and the
        // architecture's first layer.
        let reads_input = |g: &Group| !matches!(g.cross, Some((_, CrossStructure::Stacked))) && g.sequences.is_empty();
        let wide =
            self.groups.iter().any(|g| reads_input(g) && g.sharing.first_layer_width(&self.params) >= CODED_MIN_WIDTH);
        if !wide {
            return InputCodes { rows: ids.rows(), blocks: Vec::new() };
        }
        ids.codes(&self.layout, CODED_MAX_DISTINCT_SHARE)
    }

    /// How many experts task `t`'s gate weighs (MMoE; PLE's last level), if it has a gate.
    pub fn gate_experts(&self, t: usize) -> Option<usize> {
        let group = self.groups.iter().find(|g| g.tasks.contains(&t))?;
        let k = group.tasks.iter().position(|&task| task == t)?;
        group.sharing.task_gate(k).map(|gate| gate.fan_out(&self.params))
    }

    /// Each task's output bias, by task index.
    pub(crate) fn output_biases(&self) -> Vec<(usize, ParamId)> {
        self.groups.iter().flat_map(|g| g.tasks.iter().zip(&g.outputs).map(|(&t, o)| (t, o.b))).collect()
    }

    /// The forward function on the tape, which training runs; `x` is the assembled input.
    /// Scoring runs the same function packed for inference ([`crate::PackedModel`]).
    pub fn forward<T: TapeKind>(&self, x: Mat<T>) -> Forward<T> {
        self.forward_coded(x, None)
    }

    /// [`Self::forward`], with the layers that read `x` told which rows share an embedding row
    /// ([`Self::input_codes`]): the trainer's form. The outputs are the same up to rounding;
    /// `x`'s gradient is then only meaningful summed per embedding id (see `fused`), which is
    /// how the trainer uses it.
    pub fn forward_coded<T: TapeKind>(&self, x: Mat<T>, codes: Option<&InputCodes>) -> Forward<T> {
        let mut logits: Vec<Option<Mat<T>>> = (0..self.heads.len()).map(|_| None).collect();
        let mut gates: Vec<Option<Mat>> = vec![None; self.heads.len()];
        let mut inputs = crate::arch::fan_out(x, self.groups.len());
        for group in &self.groups {
            let x = inputs.remove(0);
            let range = self.layout.scope_range(group.scope);
            let group_codes = codes.map(|c| c.within(range.clone()));
            let x = if range.len() == self.layout.width { x } else { crate::arch::slice_columns(x, range) };
            // The dot products are appended after the slots: the codes' columns stay put.
            let x = with_dot_interactions(x, &group.dots);
            // Pooling moves the columns, which the codes no longer describe.
            let (x, group_codes) = match group.sequences.is_empty() {
                true => (x, group_codes),
                false => (crate::attention::pool_sequences(&self.params, x, &group.sequences), None),
            };
            let (x, group_codes, mut crossed) = match &group.cross {
                None => (x, group_codes, Vec::new()),
                // The architecture reads the crossed input, which the codes do not describe.
                Some((net, CrossStructure::Stacked)) => (net.forward(&self.params, x), None, Vec::new()),
                Some((_, CrossStructure::Experts)) => unreachable!("expert cross networks live in the experts"),
                Some((net, CrossStructure::Parallel)) => {
                    let mut uses = crate::arch::fan_out(x, 2);
                    let x = uses.remove(0);
                    let crossed = net.forward(&self.params, uses.remove(0));
                    (x, group_codes, crate::arch::fan_out(crossed, group.tasks.len()))
                }
            };
            let (hidden, group_gates) = group.sharing.forward(&self.params, x, group.tasks.len(), group_codes.as_ref());
            for (k, h) in hidden.into_iter().enumerate() {
                let t = group.tasks[k];
                let h = if crossed.is_empty() { h } else { (h, crossed.remove(0)).concat_along(Axis::<1>) };
                let h = group.towers[k].forward(&self.params, h, None);
                logits[t] = Some(group.outputs[k].forward(&self.params, h));
                gates[t] = group_gates.get(k).cloned();
            }
        }
        // Product tasks, after their factors (which come earlier in task order).
        for (t, head) in self.heads.iter().enumerate().filter(|(_, h)| !h.factors.is_empty()) {
            let mut product: Option<Mat<T>> = None;
            for &f in &head.factors {
                let mut uses = crate::arch::fan_out(logits[f].take().expect("a factor precedes its product"), 2);
                logits[f] = Some(uses.remove(0));
                let z = uses.remove(0);
                product = Some(match product {
                    None => z,
                    Some(p) => crate::product::product_logit(p, z),
                });
            }
            logits[t] = product;
        }
        Forward { logits: logits.into_iter().map(|l| l.expect("every task has an output")).collect(), gates }
    }

    /// Task outputs of `rows`: probabilities for binary tasks, values for regression, class
    /// probabilities (`B x classes`, row-major) for multiclass. This is the training forward's
    /// answer; prediction, evaluation and serving score with [`crate::PackedModel`], which
    /// computes the same (its tests compare the two).
    pub fn predict(&self, data: &[FeatureData<'_>], rows: &[usize]) -> Predictions {
        let out = self.forward(self.assemble(data, rows).input);
        let outputs = self
            .heads
            .iter()
            .zip(out.logits)
            .map(|(head, z)| match head.kind {
                TaskType::Binary => z.sigmoid().as_vec(),
                TaskType::Regression => z.as_vec(),
                TaskType::Multiclass => z.softmax::<Axis<1>>().as_vec(),
            })
            .collect();
        Predictions { rows: rows.len(), outputs, gates: out.gates.into_iter().map(|g| g.map(|g| g.as_vec())).collect() }
    }

    /// The training loss of a batch: L = Σ λ_i L_i + Ω (with uncertainty weighting when set,
    /// and Ω the soft-sharing penalty); each task's loss is the mean over its labeled rows, so
    /// masked rows give neither loss nor gradient. Returns the loss and each task's unweighted
    /// loss (`None`: no labeled row).
    pub fn loss(
        &self,
        forward: Forward<Taped>,
        labels: &[Vec<f32>],
        masks: &[Vec<u8>],
    ) -> Result<(Loss, Vec<Option<f32>>), ModelError> {
        let losses = self.task_losses(forward, labels, masks)?;
        let values = losses.values.clone();
        let weights: Vec<f32> = self.heads.iter().map(|h| h.weight).collect();
        Ok((self.combine(losses, &weights, true).0, values))
    }

    /// Each task's unweighted loss on the tape. A task without a labeled row gets a zero that
    /// still carries its outputs' tape: the shared network's recorded ops may travel with any
    /// task's outputs (see `arch::fan_out`), and dropping them would silently drop gradients.
    pub fn task_losses(
        &self,
        forward: Forward<Taped>,
        labels: &[Vec<f32>],
        masks: &[Vec<u8>],
    ) -> Result<TaskLosses, ModelError> {
        let dev = self.params.device().clone();
        let mut losses = Vec::with_capacity(self.heads.len());
        let mut values = Vec::with_capacity(self.heads.len());
        for (t, (head, z)) in self.heads.iter().zip(forward.logits).enumerate() {
            if masks[t].iter().all(|&m| m == 0) {
                values.push(None);
                losses.push(z.sum::<(), _>() * 0.0);
            } else {
                let l = task_loss(&dev, head.kind, z, &labels[t], &masks[t], self.config.regression_loss);
                values.push(Some(l.array()));
                losses.push(l);
            }
        }
        if values.iter().all(Option::is_none) {
            return Err(ModelError::NoLabels);
        }
        Ok(TaskLosses { losses, values })
    }

    /// Σ w_i L_i (with uncertainty weighting when set: w_i (c_i exp(-s_i) L_i + s_i / 2)),
    /// plus Ω when `penalty`; tasks without a labeled row contribute nothing. Returns the
    /// total and Ω's value.
    pub fn combine(&self, losses: TaskLosses, weights: &[f32], penalty: bool) -> (Loss, Option<f32>) {
        let dev = self.params.device().clone();
        let mut total: Option<Loss> = None;
        for (t, (l, value)) in losses.losses.into_iter().zip(&losses.values).enumerate() {
            let weighted = match (value, self.log_vars) {
                (None, _) => l * 0.0,
                (Some(_), None) => l * weights[t],
                (Some(_), Some(id)) => {
                    // c exp(-s) L + s / 2, with s on L's tape so its gradient is recorded.
                    let c = if self.heads[t].kind == TaskType::Regression { 0.5 } else { 1.0 };
                    let (l, tape) = l.split_tape();
                    let s = self.params.vector(id).clone().put_tape(tape).select(dev.tensor(t));
                    let s2 = s.with_empty_tape();
                    (s.negate().exp() * l * c + s2 * 0.5) * weights[t]
                }
            };
            total = Some(match total {
                None => weighted,
                Some(acc) => acc + weighted,
            });
        }
        let total = total.expect("a model has at least one task");
        match self.penalty().filter(|_| penalty) {
            Some(omega) => {
                let value = omega.array();
                (total + omega, Some(value))
            }
            None => (total, None),
        }
    }

    /// The soft-sharing penalty Ω summed over the groups, on its own tape (`None` without soft
    /// sharing).
    pub fn penalty(&self) -> Option<Loss> {
        self.groups.iter().filter_map(|g| g.sharing.penalty(&self.params)).reduce(|a, b| a + b)
    }

    /// The parameters GradNorm measures task `task`'s gradient norm on: its group's last shared
    /// layer (see [`Sharing::last_shared_layer`]), or its tower's first layer (else its head)
    /// when the sharing has no layer.
    pub fn gradnorm_params(&self, task: usize) -> Vec<ParamId> {
        // A product task reaches the network through its factors.
        if !self.heads[task].factors.is_empty() {
            let mut ids: Vec<ParamId> =
                self.heads[task].factors.iter().flat_map(|&f| self.gradnorm_params(f)).collect();
            ids.sort();
            ids.dedup();
            return ids;
        }
        let (group, k) = self
            .groups
            .iter()
            .find_map(|g| g.tasks.iter().position(|&t| t == task).map(|k| (g, k)))
            .expect("every task belongs to a group");
        let shared = group.sharing.last_shared_layer(k);
        if !shared.is_empty() {
            return shared;
        }
        vec![group.towers[k].layers.first().map_or(group.outputs[k].w, |l| l.w)]
    }

    /// Number of dense parameters plus embedding weights.
    pub fn parameter_count(&self) -> usize {
        self.params.ids().map(|id| self.params.numel(id)).sum::<usize>()
            + self.tables.tables.iter().map(|t| t.weights.len()).sum::<usize>()
    }
}

/// `[x | x[:, a_k] · x[:, b_k] for each pair k]`: the input with one dot product per pair of
/// column ranges appended.
fn with_dot_interactions<T: TapeKind>(x: Mat<T>, pairs: &[(std::ops::Range<usize>, std::ops::Range<usize>)]) -> Mat<T> {
    if pairs.is_empty() {
        return x;
    }
    let n = x.shape().0;
    let mut uses = crate::arch::fan_out(x, 1 + 2 * pairs.len());
    let mut out = uses.remove(0);
    for (a, b) in pairs {
        let left = crate::arch::slice_columns(uses.remove(0), a.clone());
        let right = crate::arch::slice_columns(uses.remove(0), b.clone());
        let dot = (left * right).sum::<(usize,), Axis<1>>().reshape_like(&(n, 1usize));
        out = (out, dot).concat_along(Axis::<1>);
    }
    out
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Pair => "pair",
        Scope::User => "user",
        Scope::Item => "item",
    }
}

fn validate(config: &ModelConfig) -> Result<(), ModelError> {
    let bad = |m: &str| Err(ModelError::Config(m.to_owned()));
    let widths_ok = |w: &[usize]| w.iter().all(|&x| x > 0);
    match &config.architecture {
        ArchitectureConfig::Mmoe { experts, expert_layers } => {
            if *experts == 0 || expert_layers.is_empty() || !widths_ok(expert_layers) {
                return bad("architecture (mmoe): needs experts >= 1 and non-empty expert_layers of widths >= 1");
            }
        }
        ArchitectureConfig::Ple { shared_experts, task_experts, expert_layers, levels } => {
            if *shared_experts == 0 || *task_experts == 0 || *levels == 0 {
                return bad("architecture (ple): needs shared_experts >= 1, task_experts >= 1 and levels >= 1");
            }
            if expert_layers.is_empty() || !widths_ok(expert_layers) {
                return bad("architecture (ple): needs non-empty expert_layers of widths >= 1");
            }
        }
        ArchitectureConfig::SoftSharing { layers, alpha } => {
            if layers.is_empty() || !widths_ok(layers) {
                return bad("architecture (soft_sharing): needs non-empty layers of widths >= 1");
            }
            if !(alpha.is_finite() && *alpha >= 0.0) {
                return bad("architecture (soft_sharing): alpha must be >= 0");
            }
        }
        ArchitectureConfig::SharedBottom { layers } | ArchitectureConfig::SingleTask { layers } => {
            if !widths_ok(layers) {
                return bad("architecture: layer widths must be >= 1");
            }
        }
    }
    if !widths_ok(&config.tower_layers) {
        return bad("tower_layers: widths must be >= 1");
    }
    if let Some(cross) = &config.cross {
        if cross.layers == 0 || cross.rank == Some(0) {
            return bad("cross: needs layers >= 1 and, when given, rank >= 1");
        }
        let has_experts =
            matches!(config.architecture, ArchitectureConfig::Mmoe { .. } | ArchitectureConfig::Ple { .. });
        if cross.structure == CrossStructure::Experts && !has_experts {
            return bad("cross: structure \"experts\" needs an architecture with experts (mmoe or ple)");
        }
    }
    if let RegressionLoss::Huber { delta } = config.regression_loss {
        if delta.is_nan() || delta <= 0.0 {
            return bad("regression_loss.delta must be > 0");
        }
    }
    Ok(())
}

/// Outputs of [`MultiTaskModel::predict`].
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub rows: usize,
    /// Per task: `rows x outputs`, row-major.
    pub outputs: Vec<Vec<f32>>,
    /// Per task: MMoE gate weights `rows x experts`, row-major.
    pub gates: Vec<Option<Vec<f32>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dwell(label_log1p: bool, residual_variance: Option<f64>) -> Head {
        Head {
            name: "dwell".into(),
            kind: TaskType::Regression,
            scope: Scope::Pair,
            outputs: 1,
            weight: 1.0,
            classes: Vec::new(),
            label_log1p,
            residual_variance,
            factors: Vec::new(),
        }
    }

    #[test]
    fn cross_networks_inside_experts_need_an_architecture_with_experts() {
        use crate::config::CrossConfig;
        let cross = |structure| Some(CrossConfig { layers: 1, rank: Some(4), structure });
        let config =
            |architecture, structure| ModelConfig { architecture, cross: cross(structure), ..Default::default() };
        let bottom = ArchitectureConfig::SharedBottom { layers: vec![8] };
        let message = validate(&config(bottom.clone(), CrossStructure::Experts)).unwrap_err().to_string();
        assert!(message.contains("structure \"experts\" needs an architecture with experts"), "{message}");
        assert!(validate(&config(bottom, CrossStructure::Stacked)).is_ok());
        assert!(validate(&config(ArchitectureConfig::default(), CrossStructure::Experts)).is_ok());
        let ple = ArchitectureConfig::Ple { shared_experts: 1, task_experts: 1, expert_layers: vec![4], levels: 1 };
        assert!(validate(&config(ple, CrossStructure::Experts)).is_ok());
    }

    #[test]
    fn log1p_outputs_map_back_to_the_labels_median_and_mean() {
        let head = dwell(true, Some(0.5));
        // ln(1 + 19) = ln 20: the median of a log-normal 1 + y is e^μ.
        let output = 20f32.ln();
        assert!((head.to_label_units(output) - 19.0).abs() < 1e-5);
        // Its mean is e^(μ + σ²/2): 20 · e^0.25 − 1.
        let mean = head.label_mean(output).unwrap();
        assert!((mean - (20.0 * 0.25f64.exp() - 1.0)).abs() < 1e-4, "{mean}");
        assert_eq!(dwell(true, None).label_mean(output), None, "unknown without a residual variance");
    }

    #[test]
    fn untransformed_outputs_are_already_in_the_labels_units() {
        let head = dwell(false, Some(0.5));
        assert_eq!(head.to_label_units(2.5), 2.5);
        assert_eq!(head.label_mean(2.5), None, "the output is the mean already");
    }
}
