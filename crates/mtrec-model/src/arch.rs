//! Sharing architectures: how one scope group's tasks share dense parameters. Each turns the
//! group's input into one hidden representation per task; the towers and heads are common.
//! PLE or soft sharing are further variants of [`Sharing`], without changes elsewhere.

use dfdx::prelude::*;
use rand::Rng;

use crate::config::ArchitectureConfig;
use crate::params::{Dev, Linear, Mat, ParamStore, TapeKind};

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

    pub fn forward<T: TapeKind>(&self, store: &ParamStore, mut x: Mat<T>) -> Mat<T> {
        for l in &self.layers {
            x = l.forward(store, x).relu();
        }
        x
    }
}

/// Gives the first consumer `x` itself (with its tape) and the others `x` with an empty tape:
/// every recorded op then lives on exactly one branch, and the branches merge again in the
/// loss (`../shared/notes/DFDX.md` §2).
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

/// One group's sharing of dense parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Sharing {
    SharedBottom {
        bottom: Mlp,
    },
    /// All experts' first layers are one fused matrix (`input x experts*width`): one large
    /// product instead of many small ones. Deeper expert layers are per expert.
    Mmoe {
        experts: usize,
        first: Linear,
        first_width: usize,
        deeper: Vec<Mlp>,
        gates: Vec<Linear>,
    },
    SingleTask {
        nets: Vec<Mlp>,
    },
}

impl Sharing {
    /// Builds the parameters under `prefix`; returns the sharing and the width of each task's
    /// hidden representation.
    pub fn new(
        config: &ArchitectureConfig,
        store: &mut ParamStore,
        prefix: &str,
        input: usize,
        tasks: usize,
        rng: &mut impl Rng,
    ) -> (Self, usize) {
        match config {
            ArchitectureConfig::SharedBottom { layers } => {
                let bottom = Mlp::new(store, &format!("{prefix}.bottom"), input, layers, rng);
                (Sharing::SharedBottom { bottom }, layers.last().copied().unwrap_or(input))
            }
            ArchitectureConfig::SingleTask { layers } => {
                let nets =
                    (0..tasks).map(|t| Mlp::new(store, &format!("{prefix}.task{t}"), input, layers, rng)).collect();
                (Sharing::SingleTask { nets }, layers.last().copied().unwrap_or(input))
            }
            ArchitectureConfig::Mmoe { experts, expert_layers } => {
                let first_width = expert_layers[0];
                let first = store.add_linear(&format!("{prefix}.experts.0"), input, experts * first_width, rng);
                let deeper = (0..*experts)
                    .map(|e| Mlp::new(store, &format!("{prefix}.expert{e}"), first_width, &expert_layers[1..], rng))
                    .collect();
                let gates =
                    (0..tasks).map(|t| store.add_linear(&format!("{prefix}.gate{t}"), input, *experts, rng)).collect();
                let out = *expert_layers.last().expect("validated: experts have layers");
                (Sharing::Mmoe { experts: *experts, first, first_width, deeper, gates }, out)
            }
        }
    }

    /// One hidden representation per task, and for MMoE each task's gate weights (`B x E`).
    pub fn forward<T: TapeKind>(&self, store: &ParamStore, x: Mat<T>, tasks: usize) -> (Vec<Mat<T>>, Vec<Mat>) {
        match self {
            Sharing::SharedBottom { bottom } => (fan_out(bottom.forward(store, x), tasks), Vec::new()),
            Sharing::SingleTask { nets } => {
                let inputs = fan_out(x, tasks);
                (nets.iter().zip(inputs).map(|(net, x)| net.forward(store, x)).collect(), Vec::new())
            }
            Sharing::Mmoe { experts, first, first_width, deeper, gates } => {
                let n = x.shape().0;
                let mut inputs = fan_out(x, 1 + gates.len());
                let x = inputs.remove(0);
                let h = first.forward(store, x).relu();
                // Expert outputs side by side: (B, E * width).
                let (h, width) = if deeper[0].layers.is_empty() {
                    (h, *first_width)
                } else {
                    // Disjoint slices are `h`'s only consumers: plain slices are safe here (see
                    // `slice_columns`).
                    let parts = fan_out(h, *experts);
                    let outs: Vec<Mat<T>> = parts
                        .into_iter()
                        .enumerate()
                        .map(|(e, part)| {
                            let part = part.slice((.., e * first_width..(e + 1) * first_width));
                            deeper[e].forward(store, part)
                        })
                        .collect();
                    let width = outs[0].shape().1;
                    let mut it = outs.into_iter();
                    let mut acc = it.next().expect("at least one expert");
                    for o in it {
                        acc = (acc, o).concat_along(Axis::<1>);
                    }
                    (acc, width)
                };
                let stacked = h.reshape_like(&(n, *experts, width));
                let mut probs = Vec::with_capacity(gates.len());
                let outs = fan_out(stacked, gates.len())
                    .into_iter()
                    .zip(gates.iter().zip(inputs))
                    .map(|(experts_out, (gate, gx))| {
                        let g = gate.forward(store, gx).softmax::<Axis<1>>();
                        probs.push(g.retaped::<NoneTape>());
                        let g = g.broadcast_like::<_, Axis<2>>(&(n, *experts, width));
                        (experts_out * g).sum::<(usize, usize), Axis<1>>()
                    })
                    .collect();
                (outs, probs)
            }
        }
    }
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
