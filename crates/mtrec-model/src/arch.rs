//! Sharing architectures: how one scope group's tasks share dense parameters. Each turns the
//! group's input into one hidden representation per task; the towers and heads are common.
//! Shared-bottom, MMoE, single-task, PLE and soft sharing are the variants of [`Sharing`]; a
//! new architecture is one more variant, without changes to the trainer.

use dfdx::prelude::*;
use rand::Rng;

use crate::config::{ArchitectureConfig, CrossConfig};
use crate::cross::CrossNetwork;
use crate::fused::{mix, mix_gates, InputCodes};
use crate::params::{Dev, Linear, Mat, ParamId, ParamStore, TapeKind, Taped, Vector};

/// A ReLU MLP: every layer is followed by a ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    pub layers: Vec<Linear>,
}

impl Mlp {
    pub fn new(store: &mut ParamStore, prefix: &str, input: usize, widths: &[usize], rng: &mut impl Rng) -> Self {
        let mut fan_in = input;
        let layers = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let l = store.add_linear(&format!("{prefix}.{i}"), fan_in, w, rng);
                fan_in = w;
                l
            })
            .collect();
        Self { layers }
    }

    /// One fused op for the whole MLP (`fused::mlp`); `codes` describe `x` (training only).
    pub fn forward<T: TapeKind>(&self, store: &ParamStore, x: Mat<T>, codes: Option<&InputCodes>) -> Mat<T> {
        let layers: Vec<Vec<(&Mat, &Vector)>> =
            self.layers.iter().map(|l| vec![(store.matrix(l.w), store.vector(l.b))]).collect();
        crate::fused::mlp(x, &layers, codes)
    }
}

/// Gives the first consumer `x` itself (with its tape) and the others `x` with an empty tape:
/// every recorded op then lives on exactly one branch, and the branches merge again in the
/// loss (see the crate docs, "Working with dfdx 0.13").
pub(crate) fn fan_out<S: Shape, T: TapeKind>(x: Tensor<S, f32, Dev, T>, n: usize) -> Vec<Tensor<S, f32, Dev, T>> {
    let mut out: Vec<Tensor<S, f32, Dev, T>> = (1..n).map(|_| x.with_empty_tape()).collect();
    out.insert(0, x);
    out
}

/// Columns `range` of `x`, safe when `x` has other consumers.
///
/// dfdx 0.13's slice backward *assigns* the slice's gradient into the input's gradient instead
/// of adding to it, so a slice of a tensor that other ops also read can overwrite their
/// gradient contributions (which happens depends on the order ops were recorded). Slicing a
/// fresh copy (`x * 1`, whose backward adds into `x`) keeps every contribution. Slices that are
/// a tensor's only, disjoint consumers (the experts' parts of the fused first layer) need no copy.
pub(crate) fn slice_columns<T: TapeKind>(x: Mat<T>, range: std::ops::Range<usize>) -> Mat<T> {
    (x * 1.0f32).slice((.., range))
}

/// `n` experts reading the same input. Their first layers are one fused matrix
/// (`input x n*width`): one large product instead of many small ones. Deeper layers are per
/// expert. The output holds the experts' outputs side by side, `B x n*out_width`.
///
/// With cross networks (`model.cross.structure: experts`), each expert first crosses the input
/// with a DCN-v2 cross network of its own, and its first layer reads that: the first layers
/// are then one grouped product over the experts' crossed inputs side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertBank {
    pub experts: usize,
    /// One fused layer over the shared input, or one per expert over its cross network's output.
    pub first: Vec<Linear>,
    pub first_width: usize,
    pub deeper: Vec<Mlp>,
    /// Per expert, its cross network; empty without them.
    pub crosses: Vec<CrossNetwork>,
}

impl ExpertBank {
    /// The fused first layer is named `{prefix}.experts.0`, expert e's deeper layers
    /// `{prefix}.expert{e}.{i}`; with `cross`, expert e's cross network is
    /// `{prefix}.expert{e}.cross` and its first layer `{prefix}.expert{e}.first`.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        input: usize,
        experts: usize,
        layers: &[usize],
        cross: Option<&CrossConfig>,
        rng: &mut impl Rng,
    ) -> Self {
        let first_width = layers[0];
        let (first, crosses) = match cross {
            None => {
                (vec![store.add_linear(&format!("{prefix}.experts.0"), input, experts * first_width, rng)], Vec::new())
            }
            Some(c) => (0..experts)
                .map(|e| {
                    let p = format!("{prefix}.expert{e}");
                    let net = CrossNetwork::new(store, &format!("{p}.cross"), input, c.layers, c.rank, rng);
                    (store.add_linear(&format!("{p}.first"), input, first_width, rng), net)
                })
                .unzip(),
        };
        let deeper = (0..experts)
            .map(|e| Mlp::new(store, &format!("{prefix}.expert{e}"), first_width, &layers[1..], rng))
            .collect();
        Self { experts, first, first_width, deeper, crosses }
    }

    /// The width of the fused first layer, which reads the bank's input as it is (0 when each
    /// expert reads its own crossed input instead).
    fn fused_first_width(&self, store: &ParamStore) -> usize {
        if self.crosses.is_empty() {
            self.first[0].fan_out(store)
        } else {
            0
        }
    }

    /// The width of one expert's output.
    pub fn out_width(&self, store: &ParamStore) -> usize {
        self.deeper[0].layers.last().map_or(self.first_width, |l| l.fan_out(store))
    }

    /// Every expert's output, side by side: `B x experts*out_width`. The bank is one fused op:
    /// the first layer one product, each deeper layer of all experts one grouped product over
    /// the experts' column blocks. `codes` describe `x` (training only).
    pub fn forward<T: TapeKind>(&self, store: &ParamStore, x: Mat<T>, codes: Option<&InputCodes>) -> Mat<T> {
        let mut layers = vec![self.first.iter().map(|l| (store.matrix(l.w), store.vector(l.b))).collect::<Vec<_>>()];
        let (x, codes) = if self.crosses.is_empty() {
            (x, codes)
        } else {
            // The codes describe the raw input, which no first layer reads here.
            let crossed = fan_out(x, self.experts).into_iter().zip(&self.crosses).map(|(x, c)| c.forward(store, x));
            (concat_columns(crossed.collect()), None)
        };
        for depth in 0..self.deeper[0].layers.len() {
            layers.push(
                self.deeper
                    .iter()
                    .map(|mlp| (store.matrix(mlp.layers[depth].w), store.vector(mlp.layers[depth].b)))
                    .collect(),
            );
        }
        crate::fused::mlp(x, &layers, codes)
    }

    /// The weight matrices of the experts' last layers.
    fn last_weights(&self) -> Vec<ParamId> {
        if self.deeper[0].layers.is_empty() {
            self.first.iter().map(|l| l.w).collect()
        } else {
            self.deeper.iter().filter_map(|m| m.layers.last().map(|l| l.w)).collect()
        }
    }
}

/// `[a | b | ...]`.
fn concat_columns<T: TapeKind>(parts: Vec<Mat<T>>) -> Mat<T> {
    let mut it = parts.into_iter();
    let mut acc = it.next().expect("at least one part");
    for p in it {
        acc = (acc, p).concat_along(Axis::<1>);
    }
    acc
}

/// One extraction level of PLE.
#[derive(Debug, Clone, PartialEq)]
pub struct PleLevel {
    /// Per task, its own experts.
    pub task_experts: Vec<ExpertBank>,
    pub shared_experts: ExpertBank,
    /// Per task, a gate over (its own experts, then the shared experts).
    pub gates: Vec<Linear>,
    /// Below the last level: a gate over every expert of the level (task 0's, task 1's, ...,
    /// then the shared ones), feeding the next level's shared experts.
    pub shared_gate: Option<Linear>,
}

/// One group's sharing of dense parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Sharing {
    SharedBottom {
        bottom: Mlp,
    },
    Mmoe {
        experts: ExpertBank,
        gates: Vec<Linear>,
    },
    SingleTask {
        nets: Vec<Mlp>,
    },
    /// Progressive layered extraction (CGC when there is one level).
    Ple {
        levels: Vec<PleLevel>,
    },
    /// Per-task networks pulled together by [`Sharing::penalty`].
    SoftSharing {
        nets: Vec<Mlp>,
        alpha: f32,
    },
}

impl Sharing {
    /// Builds the parameters under `prefix`; returns the sharing and the width of each task's
    /// hidden representation. `expert_cross` gives every MMoE or PLE expert a cross network
    /// of its own ([`ExpertBank`]).
    pub fn new(
        config: &ArchitectureConfig,
        store: &mut ParamStore,
        prefix: &str,
        input: usize,
        tasks: usize,
        expert_cross: Option<&CrossConfig>,
        rng: &mut impl Rng,
    ) -> (Self, usize) {
        let per_task = |store: &mut ParamStore, rng: &mut _, layers: &[usize]| -> Vec<Mlp> {
            (0..tasks).map(|t| Mlp::new(store, &format!("{prefix}.task{t}"), input, layers, rng)).collect()
        };
        match config {
            ArchitectureConfig::SharedBottom { layers } => {
                let bottom = Mlp::new(store, &format!("{prefix}.bottom"), input, layers, rng);
                (Sharing::SharedBottom { bottom }, layers.last().copied().unwrap_or(input))
            }
            ArchitectureConfig::SingleTask { layers } => {
                (Sharing::SingleTask { nets: per_task(store, rng, layers) }, layers.last().copied().unwrap_or(input))
            }
            ArchitectureConfig::SoftSharing { layers, alpha } => (
                Sharing::SoftSharing { nets: per_task(store, rng, layers), alpha: *alpha as f32 },
                layers.last().copied().unwrap_or(input),
            ),
            ArchitectureConfig::Mmoe { experts, expert_layers } => {
                let bank = ExpertBank::new(store, prefix, input, *experts, expert_layers, expert_cross, rng);
                let gates =
                    (0..tasks).map(|t| store.add_linear(&format!("{prefix}.gate{t}"), input, *experts, rng)).collect();
                let out = *expert_layers.last().expect("validated: experts have layers");
                (Sharing::Mmoe { experts: bank, gates }, out)
            }
            ArchitectureConfig::Ple { shared_experts, task_experts, expert_layers, levels } => {
                let out = *expert_layers.last().expect("validated: experts have layers");
                let mut fan_in = input;
                let levels = (0..*levels)
                    .map(|l| {
                        let p = format!("{prefix}.level{l}");
                        let task_banks = (0..tasks)
                            .map(|t| {
                                ExpertBank::new(
                                    store,
                                    &format!("{p}.task{t}"),
                                    fan_in,
                                    *task_experts,
                                    expert_layers,
                                    expert_cross,
                                    rng,
                                )
                            })
                            .collect();
                        let shared = ExpertBank::new(
                            store,
                            &format!("{p}.shared"),
                            fan_in,
                            *shared_experts,
                            expert_layers,
                            expert_cross,
                            rng,
                        );
                        let gates = (0..tasks)
                            .map(|t| {
                                store.add_linear(&format!("{p}.gate{t}"), fan_in, task_experts + shared_experts, rng)
                            })
                            .collect();
                        let shared_gate = (l + 1 < *levels).then(|| {
                            let all = tasks * task_experts + shared_experts;
                            store.add_linear(&format!("{p}.shared_gate"), fan_in, all, rng)
                        });
                        fan_in = out;
                        PleLevel { task_experts: task_banks, shared_experts: shared, gates, shared_gate }
                    })
                    .collect();
                (Sharing::Ple { levels }, out)
            }
        }
    }

    /// The widest output of a layer that reads the group's input directly (gates aside): what
    /// decides whether coding the input pays (`fused::CODED_MIN_WIDTH`).
    pub fn first_layer_width(&self, store: &ParamStore) -> usize {
        let mlp = |m: &Mlp| m.layers.first().map_or(0, |l| l.fan_out(store));
        match self {
            Sharing::SharedBottom { bottom } => mlp(bottom),
            Sharing::SingleTask { nets } | Sharing::SoftSharing { nets, .. } => nets.iter().map(mlp).max().unwrap_or(0),
            Sharing::Mmoe { experts, .. } => experts.fused_first_width(store),
            Sharing::Ple { levels } => levels.first().map_or(0, |l| {
                l.task_experts.iter().chain([&l.shared_experts]).map(|b| b.fused_first_width(store)).max().unwrap_or(0)
            }),
        }
    }

    /// One hidden representation per task, and for MMoE and PLE each task's gate weights
    /// (`B x E`; for PLE the last level's gate: its task's own experts, then the shared ones).
    /// `codes` describe `x` for the layers that read it (training only; the gates, small, read
    /// it plainly).
    pub fn forward<T: TapeKind>(
        &self,
        store: &ParamStore,
        x: Mat<T>,
        tasks: usize,
        codes: Option<&InputCodes>,
    ) -> (Vec<Mat<T>>, Vec<Mat>) {
        match self {
            Sharing::SharedBottom { bottom } => (fan_out(bottom.forward(store, x, codes), tasks), Vec::new()),
            Sharing::SingleTask { nets } | Sharing::SoftSharing { nets, .. } => {
                let inputs = fan_out(x, tasks);
                (nets.iter().zip(inputs).map(|(net, x)| net.forward(store, x, codes)).collect(), Vec::new())
            }
            Sharing::Mmoe { experts, gates } => {
                let mut inputs = fan_out(x, 1 + gates.len());
                let h = experts.forward(store, inputs.remove(0), codes);
                let logits = gates.iter().zip(inputs).map(|(gate, gx)| gate.forward(store, gx)).collect();
                mix_gates(h, logits, experts.experts, experts.out_width(store)).into_iter().unzip()
            }
            Sharing::Ple { levels } => {
                let mut inputs = fan_out(x, tasks + 1);
                let mut shared_in = inputs.pop().expect("tasks + 1 inputs");
                let mut task_in = inputs;
                let mut probs = Vec::new();
                // Only the first level reads `x`; the levels above read mixtures.
                let mut level_codes = codes;
                for level in levels {
                    let codes = level_codes.take();
                    let width = level.shared_experts.out_width(store);
                    let below = level.shared_gate.is_some();
                    let mut s_uses = fan_out(shared_in, 1 + usize::from(below));
                    let s_gate_in = below.then(|| s_uses.pop().expect("two uses"));
                    let shared_out = level.shared_experts.forward(store, s_uses.pop().expect("one use"), codes);
                    let mut shared_copies = fan_out(shared_out, tasks + usize::from(below));
                    let mut task_outs = Vec::with_capacity(tasks);
                    let mut for_shared_gate = Vec::with_capacity(tasks + 1);
                    probs.clear();
                    for (t, x_t) in task_in.into_iter().enumerate() {
                        let mut uses = fan_out(x_t, 2);
                        let gx = uses.pop().expect("two uses");
                        let own = level.task_experts[t].forward(store, uses.pop().expect("one use"), codes);
                        let mut own_copies = fan_out(own, 1 + usize::from(below));
                        if below {
                            for_shared_gate.push(own_copies.pop().expect("two copies"));
                        }
                        let experts =
                            concat_columns(vec![own_copies.pop().expect("one copy"), shared_copies.remove(0)]);
                        let count = level.task_experts[t].experts + level.shared_experts.experts;
                        let (mixed, p) = mix(experts, level.gates[t].forward(store, gx), count, width);
                        probs.push(p);
                        task_outs.push(mixed);
                    }
                    if let (Some(gate), Some(gx)) = (&level.shared_gate, s_gate_in) {
                        for_shared_gate.push(shared_copies.remove(0));
                        let count = tasks * level.task_experts[0].experts + level.shared_experts.experts;
                        let (mixed, _) = mix(concat_columns(for_shared_gate), gate.forward(store, gx), count, width);
                        shared_in = mixed;
                        task_in = task_outs;
                    } else {
                        return (task_outs, probs);
                    }
                }
                unreachable!("validated: PLE has at least one level")
            }
        }
    }

    /// Task `k`'s gate (of the group's tasks), whose weights [`Self::forward`] reports: MMoE's,
    /// or PLE's last level's; `None` for the architectures without gates.
    pub fn task_gate(&self, k: usize) -> Option<&Linear> {
        match self {
            Sharing::Mmoe { gates, .. } => gates.get(k),
            Sharing::Ple { levels } => levels.last()?.gates.get(k),
            _ => None,
        }
    }

    /// The soft-sharing penalty Ω = α Σ_i ‖θ_i − θ̄‖² over corresponding parameters of the
    /// tasks' networks (θ̄ their mean), on its own tape; `None` for the other architectures and
    /// for a group of one task (where Ω = 0).
    pub fn penalty(&self, store: &ParamStore) -> Option<Tensor<(), f32, Dev, Taped>> {
        let Sharing::SoftSharing { nets, alpha } = self else { return None };
        if nets.len() < 2 {
            return None;
        }
        let flat = |id: ParamId| -> Vector<Taped> {
            let n = store.numel(id);
            if store.shape(id).len() == 2 {
                store.matrix(id).clone().traced(Gradients::leaky()).reshape_like(&(n,))
            } else {
                store.vector(id).clone().traced(Gradients::leaky())
            }
        };
        let mut total: Option<Tensor<(), f32, Dev, Taped>> = None;
        for layer in 0..nets[0].layers.len() {
            for pick in [|l: &Linear| l.w, |l: &Linear| l.b] {
                let thetas = nets.iter().map(|net| flat(pick(&net.layers[layer]))).collect();
                let s = spread(thetas);
                total = Some(match total {
                    None => s,
                    Some(acc) => acc + s,
                });
            }
        }
        total.map(|t| t * *alpha)
    }

    /// Parameters for GradNorm's gradient norms of task `task`: the last shared layer (the
    /// bottom's last layer; the experts' last layers for MMoE; the last level's shared
    /// experts' last layers for PLE), or the task's own last layer where nothing is shared
    /// (single-task, soft sharing). Empty when the sharing has no layer.
    pub fn last_shared_layer(&self, task: usize) -> Vec<ParamId> {
        match self {
            Sharing::SharedBottom { bottom } => bottom.layers.last().map(|l| vec![l.w]).unwrap_or_default(),
            Sharing::SingleTask { nets } | Sharing::SoftSharing { nets, .. } => {
                nets[task].layers.last().map(|l| vec![l.w]).unwrap_or_default()
            }
            Sharing::Mmoe { experts, .. } => experts.last_weights(),
            Sharing::Ple { levels } => levels.last().map(|l| l.shared_experts.last_weights()).unwrap_or_default(),
        }
    }
}

/// Σ_i ‖θ_i − θ̄‖² for flattened parameters θ_i, each on its own tape.
fn spread(thetas: Vec<Vector<Taped>>) -> Tensor<(), f32, Dev, Taped> {
    let k = thetas.len();
    let (for_mean, for_diff): (Vec<_>, Vec<_>) = thetas
        .into_iter()
        .map(|t| {
            let mut c = fan_out(t, 2);
            let second = c.pop().expect("two copies");
            (c.pop().expect("two copies"), second)
        })
        .unzip();
    let mean = for_mean.into_iter().reduce(|a, b| a + b).expect("two or more tasks") * (1.0 / k as f32);
    fan_out(mean, k)
        .into_iter()
        .zip(for_diff)
        .map(|(m, t)| (t - m).square().sum::<(), _>())
        .reduce(|a, b| a + b)
        .expect("two or more tasks")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Dev;

    /// Regression test for dfdx 0.13's assigning slice backward: a tensor read whole and
    /// through slices must receive every contribution.
    #[test]
    fn slices_of_a_shared_tensor_accumulate_gradients() {
        let dev = Dev::default();
        let leaf: Mat = dev.tensor_from_vec((0..12).map(|i| i as f32 * 0.1).collect(), (3, 4));
        let mut uses = fan_out(leaf.trace(Gradients::leaky()), 3);
        let whole = uses.remove(0);
        let left = slice_columns(uses.remove(0), 0..2);
        let right = slice_columns(uses.remove(0), 2..4);
        let dot = (left * right).sum::<(usize,), Axis<1>>().reshape_like(&(3usize, 1usize));
        let mut grads = (whole, dot).concat_along(Axis::<1>).sum::<(), _>().backward();
        let g = grads.get_or_alloc_mut(&leaf).unwrap().to_vec();
        // d/dx of sum(x) + sum_rows(x0*x2 + x1*x3): 1 plus the partner column.
        let want = [1.2, 1.3, 1.0, 1.1, 1.6, 1.7, 1.4, 1.5, 2.0, 2.1, 1.8, 1.9];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{g:?}");
        }
    }
}
