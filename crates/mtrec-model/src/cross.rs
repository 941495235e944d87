//! The cross network of DCN-v2 (Wang et al., WWW 2021): explicit feature crosses of bounded
//! degree, which an MLP on concatenated features learns only slowly.
//!
//! Layer `l` maps `x_l` to `x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l`, `x_0` the group's input:
//! after L layers every product of up to L + 1 input features is available, and the residual
//! keeps the lower degrees. `W_l` is `d x d`, or with a `rank` r the low-rank `U_l V_lᵀ`
//! (`d x r` and `r x d`; the inner product `V_lᵀ x_l` has a bias of its own), which costs 2dr
//! instead of d² per layer.
//!
//! [`crate::config::CrossConfig`] places it stacked (the architecture reads the crossed input:
//! DCN-v2's stacked structure, the cross network shared by every expert) or in parallel (each
//! task's tower reads its hidden representation beside the cross network's output: DCN-v2's
//! parallel structure), or inside every expert of MMoE and PLE (each expert's own cross network
//! on its input, before its MLP: [`crate::arch::ExpertBank`]).

use rand::Rng;

use crate::arch::fan_out;
use crate::params::{Linear, Mat, ParamStore, TapeKind};

/// One layer's product: full rank, or low rank (`v` then `u`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Product {
    Full(Linear),
    LowRank { v: Linear, u: Linear },
}

/// A stack of cross layers over inputs of `width` columns; its output has `width` columns too.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossNetwork {
    pub(crate) layers: Vec<Product>,
}

impl CrossNetwork {
    /// Layer `l`'s parameters are `{prefix}.{l}.weight`/`.bias` (full rank) or
    /// `{prefix}.{l}.v.*` and `{prefix}.{l}.u.*` (low rank).
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        width: usize,
        layers: usize,
        rank: Option<usize>,
        rng: &mut impl Rng,
    ) -> Self {
        let layers = (0..layers)
            .map(|l| match rank {
                None => Product::Full(store.add_linear(&format!("{prefix}.{l}"), width, width, rng)),
                Some(r) => Product::LowRank {
                    v: store.add_linear(&format!("{prefix}.{l}.v"), width, r, rng),
                    u: store.add_linear(&format!("{prefix}.{l}.u"), r, width, rng),
                },
            })
            .collect();
        Self { layers }
    }

    pub fn forward<T: TapeKind>(&self, store: &ParamStore, x0: Mat<T>) -> Mat<T> {
        // x_0 is read by every layer and starts the residual stream (see `fan_out`).
        let mut x0s = fan_out(x0, self.layers.len() + 1);
        let mut x = x0s.remove(0);
        for (product, x0) in self.layers.iter().zip(x0s) {
            let mut uses = fan_out(x, 2);
            let (xl, residual) = (uses.remove(0), uses.remove(0));
            let z = match product {
                Product::Full(w) => w.forward(store, xl),
                Product::LowRank { v, u } => u.forward(store, v.forward(store, xl)),
            };
            x = z * x0 + residual;
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::*;
    use crate::params::Dev;
    use rand::SeedableRng;

    /// The cross network's gradients (with respect to its input and every parameter) match
    /// central finite differences of a weighted sum of its outputs, full and low rank.
    #[test]
    fn gradients_match_finite_differences() {
        for rank in [None, Some(2)] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            let mut store = ParamStore::new(Dev::default());
            let net = CrossNetwork::new(&mut store, "cross", 5, 2, rank, &mut rng);
            // Non-zero biases, so that every term is exercised.
            for id in store.ids().collect::<Vec<_>>() {
                let values: Vec<f32> = store.values(id).iter().map(|v| v + rng.gen_range(-0.3..0.3)).collect();
                store.set_values(id, &values);
            }
            let dev = store.device().clone();
            let input: Vec<f32> = (0..15).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let weights: Vec<f32> = (0..15).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let objective = |store: &ParamStore, input: &[f32]| -> f64 {
                let x: Mat = dev.tensor_from_vec(input.to_vec(), (3usize, 5usize));
                let out = net.forward(store, x).as_vec();
                out.iter().zip(&weights).map(|(o, w)| f64::from(*o) * f64::from(*w)).sum()
            };
            let leaf: Mat = dev.tensor_from_vec(input.clone(), (3usize, 5usize));
            let out = net.forward(&store, leaf.trace(Gradients::leaky()));
            let loss = (out * dev.tensor_from_vec(weights.clone(), (3usize, 5usize))).sum();
            let mut grads = loss.backward();
            let input_grad = crate::params::take_grad(&mut grads, &leaf).unwrap();
            crate::params::assert_gradients_match_central_differences(
                &store,
                &mut grads,
                &input,
                &input_grad,
                &|_| false,
                &objective,
                &format!("rank {rank:?}"),
            );
        }
    }
}
