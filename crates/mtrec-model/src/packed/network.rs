//! The sharing architectures, expert banks and cross networks over plain buffers: the same
//! functions as their taped forms in [`crate::arch`] and [`crate::cross`], in the same order
//! of operations.

use super::dense::{give, grouped, mixture, side_by_side, softmax_rows, take, Chain, Dense, Rows};
use super::reuse::FirstInput;
use crate::arch::{ExpertBank, Sharing};
use crate::cross::{CrossNetwork, Product};
use crate::params::ParamStore;

/// A DCN-v2 cross network: `x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cross {
    Full(Dense),
    LowRank { v: Dense, u: Dense },
}

pub(crate) fn cross_layers(store: &ParamStore, net: &CrossNetwork) -> Vec<Cross> {
    net.layers
        .iter()
        .map(|p| match p {
            Product::Full(w) => Cross::Full(Dense::new(store, w)),
            Product::LowRank { v, u } => Cross::LowRank { v: Dense::new(store, v), u: Dense::new(store, u) },
        })
        .collect()
}

/// The crossed input of the `n` rows of `x0` (`n x width`).
pub(crate) fn cross(layers: &[Cross], x0: &[f32], n: usize) -> Vec<f32> {
    let mut x = take(x0.len());
    x.copy_from_slice(x0);
    for layer in layers {
        let z = match layer {
            Cross::Full(w) => w.apply(&x, n, false),
            Cross::LowRank { v, u } => {
                let inner = v.apply(&x, n, false);
                let z = u.apply(&inner, n, false);
                give(inner);
                z
            }
        };
        for ((x, z), x0) in x.iter_mut().zip(&z).zip(x0) {
            *x += z * x0;
        }
        give(z);
    }
    x
}

/// Experts reading the same input ([`ExpertBank`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bank {
    pub(crate) experts: usize,
    /// The experts' first layers as one layer over the shared input, or per expert (after
    /// its cross network).
    first: First,
    /// Per depth, every expert's layer.
    deeper: Vec<Vec<Dense>>,
    pub(crate) out_width: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum First {
    Fused(Dense),
    Crossed(Vec<(Vec<Cross>, Dense)>),
}

impl Bank {
    pub(crate) fn new(store: &ParamStore, bank: &ExpertBank) -> Self {
        let first = if bank.crosses.is_empty() {
            First::Fused(Dense::new(store, &bank.first[0]))
        } else {
            First::Crossed(
                bank.crosses
                    .iter()
                    .zip(&bank.first)
                    .map(|(c, l)| (cross_layers(store, c), Dense::new(store, l)))
                    .collect(),
            )
        };
        let depth = bank.deeper[0].layers.len();
        let deeper: Vec<Vec<Dense>> =
            (0..depth).map(|d| bank.deeper.iter().map(|mlp| Dense::new(store, &mlp.layers[d])).collect()).collect();
        let out_width = deeper.last().map_or(bank.first_width, |layer| layer[0].m);
        Self { experts: bank.experts, first, deeper, out_width }
    }

    /// The layer that reads the bank's input as it is, if any (none with cross networks).
    fn fused_first_mut(&mut self) -> Option<&mut Dense> {
        match &mut self.first {
            First::Fused(d) => Some(d),
            First::Crossed(_) => None,
        }
    }

    /// Every expert's output side by side (`n x experts*out_width`).
    pub(crate) fn forward(&self, input: &FirstInput<'_>) -> Vec<f32> {
        let (x, n) = (input.x, input.n);
        let mut h = match &self.first {
            First::Fused(layer) => input.apply(layer, true),
            First::Crossed(experts) => {
                let m = experts[0].1.m;
                let width = self.experts * m;
                let mut out = take(n * width);
                for (e, (layers, layer)) in experts.iter().enumerate() {
                    let crossed = cross(layers, x, n);
                    layer.apply_into(Rows::whole(&crossed, n, layer.k), &mut out, width, e * m, true);
                    give(crossed);
                }
                out
            }
        };
        for layers in &self.deeper {
            let next = grouped(layers, &h, n);
            give(std::mem::replace(&mut h, next));
        }
        h
    }
}

/// A softmax gate's mixture of experts `h` and its weights.
fn gate(gate: &Dense, input: &FirstInput<'_>, h: &[f32], count: usize, width: usize) -> (Vec<f32>, Vec<f32>) {
    let mut p = input.apply(gate, false);
    softmax_rows(&mut p, count);
    (mixture(h, &p, input.n, count, width), p)
}

/// One PLE extraction level.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Level {
    pub(crate) task_banks: Vec<Bank>,
    pub(crate) shared: Bank,
    pub(crate) gates: Vec<Dense>,
    pub(crate) shared_gate: Option<Dense>,
}

/// A group's sharing of dense parameters ([`Sharing`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shared {
    Bottom(Chain),
    /// Single-task and soft sharing: one network per task.
    PerTask(Vec<Chain>),
    Mmoe {
        bank: Bank,
        gates: Vec<Dense>,
    },
    Ple(Vec<Level>),
}

/// Per task, its hidden representation, and its gate weights where it has a gate.
pub(crate) type Hidden = (Vec<Vec<f32>>, Vec<Option<Vec<f32>>>);

impl Shared {
    pub(crate) fn new(store: &ParamStore, sharing: &Sharing) -> Self {
        match sharing {
            Sharing::SharedBottom { bottom } => Shared::Bottom(Chain::new(store, &bottom.layers)),
            Sharing::SingleTask { nets } | Sharing::SoftSharing { nets, .. } => {
                Shared::PerTask(nets.iter().map(|m| Chain::new(store, &m.layers)).collect())
            }
            Sharing::Mmoe { experts, gates } => Shared::Mmoe {
                bank: Bank::new(store, experts),
                gates: gates.iter().map(|g| Dense::new(store, g)).collect(),
            },
            Sharing::Ple { levels } => Shared::Ple(
                levels
                    .iter()
                    .map(|l| Level {
                        task_banks: l.task_experts.iter().map(|b| Bank::new(store, b)).collect(),
                        shared: Bank::new(store, &l.shared_experts),
                        gates: l.gates.iter().map(|g| Dense::new(store, g)).collect(),
                        shared_gate: l.shared_gate.as_ref().map(|g| Dense::new(store, g)),
                    })
                    .collect(),
            ),
        }
    }

    /// The layers that read the group's input itself (which a request's shared part can
    /// skip: [`super::reuse`]).
    pub(crate) fn first_layers_mut(&mut self) -> Vec<&mut Dense> {
        match self {
            Shared::Bottom(chain) => chain.layers.first_mut().into_iter().collect(),
            Shared::PerTask(nets) => nets.iter_mut().filter_map(|c| c.layers.first_mut()).collect(),
            Shared::Mmoe { bank, gates } => bank.fused_first_mut().into_iter().chain(gates.iter_mut()).collect(),
            Shared::Ple(levels) => {
                let level = &mut levels[0];
                let banks = level.task_banks.iter_mut().chain([&mut level.shared]).filter_map(Bank::fused_first_mut);
                banks.chain(level.gates.iter_mut()).chain(level.shared_gate.as_mut()).collect()
            }
        }
    }

    /// The hidden representation of each of `tasks` tasks for the group's input.
    pub(crate) fn forward(&self, input: &FirstInput<'_>, tasks: usize) -> Hidden {
        let n = input.n;
        match self {
            Shared::Bottom(chain) => {
                let h = chain.apply_first(input);
                let mut hidden: Vec<Vec<f32>> = (1..tasks).map(|_| copy(&h)).collect();
                hidden.push(h);
                (hidden, vec![None; tasks])
            }
            Shared::PerTask(nets) => (nets.iter().map(|net| net.apply_first(input)).collect(), vec![None; tasks]),
            Shared::Mmoe { bank, gates } => {
                let h = bank.forward(input);
                let (hidden, probs) = gates
                    .iter()
                    .map(|g| gate(g, input, &h, bank.experts, bank.out_width))
                    .unzip::<_, _, Vec<_>, Vec<_>>();
                give(h);
                (hidden, probs.into_iter().map(Some).collect())
            }
            Shared::Ple(levels) => {
                // The first level reads the group's input; the levels above read mixtures.
                let mut task_in: Vec<Vec<f32>> = Vec::new();
                let mut shared_in: Vec<f32> = Vec::new();
                for (l, level) in levels.iter().enumerate() {
                    let upper: Vec<FirstInput<'_>> = match l {
                        0 => Vec::new(),
                        _ => task_in.iter().chain([&shared_in]).map(|x| FirstInput::whole(x, n)).collect(),
                    };
                    let (task_inputs, shared_input): (Vec<&FirstInput<'_>>, &FirstInput<'_>) = match l {
                        0 => (vec![input; tasks], input),
                        _ => (upper[..tasks].iter().collect(), &upper[tasks]),
                    };
                    let width = level.shared.out_width;
                    let shared_out = level.shared.forward(shared_input);
                    let owns: Vec<Vec<f32>> =
                        level.task_banks.iter().zip(&task_inputs).map(|(b, x)| b.forward(x)).collect();
                    let mut outs = Vec::with_capacity(tasks);
                    let mut probs = Vec::with_capacity(tasks);
                    for (t, own) in owns.iter().enumerate() {
                        let own_width = level.task_banks[t].experts * width;
                        let experts = side_by_side(own, own_width, &shared_out, level.shared.experts * width, n);
                        let count = level.task_banks[t].experts + level.shared.experts;
                        let (mixed, p) = gate(&level.gates[t], task_inputs[t], &experts, count, width);
                        give(experts);
                        outs.push(mixed);
                        probs.push(Some(p));
                    }
                    let Some(shared_gate) = &level.shared_gate else {
                        return (outs, probs);
                    };
                    // Every task's experts, then the shared ones.
                    let mut all = copy(&owns[0]);
                    let mut all_width = level.task_banks[0].experts * width;
                    for (t, own) in owns.iter().enumerate().skip(1).chain([(usize::MAX, &shared_out)]) {
                        let w =
                            if t == usize::MAX { level.shared.experts } else { level.task_banks[t].experts } * width;
                        let next = side_by_side(&all, all_width, own, w, n);
                        give(std::mem::replace(&mut all, next));
                        all_width += w;
                    }
                    let (mixed, _) = gate(shared_gate, shared_input, &all, all_width / width, width);
                    give(all);
                    owns.into_iter().chain([shared_out]).for_each(give);
                    drop(upper);
                    std::mem::replace(&mut task_in, outs).into_iter().for_each(give);
                    give(std::mem::replace(&mut shared_in, mixed));
                }
                unreachable!("validated: PLE has at least one level")
            }
        }
    }
}

/// A scratch copy of `x`.
pub(crate) fn copy(x: &[f32]) -> Vec<f32> {
    let mut out = take(x.len());
    out.copy_from_slice(x);
    out
}
