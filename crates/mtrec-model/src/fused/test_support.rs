//! Helpers of the fused ops' tests: deterministic tensors, a tolerance, and the same layers in
//! plain dfdx ops.

use dfdx::prelude::*;

use crate::params::{Dev, Mat, Vector};

pub(super) type TapedMat = Mat<OwnedTape<f32, Dev>>;

pub(super) fn filled(dev: &Dev, rows: usize, cols: usize, seed: usize) -> Mat {
    dev.tensor_from_vec((0..rows * cols).map(|i| (((i + seed) * 7919) % 23) as f32 * 0.1 - 1.1).collect(), (rows, cols))
}

pub(super) fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

/// The same layers in plain dfdx ops: slices, products, broadcast bias, ReLU, concatenation.
pub(super) fn plain_grouped(x: TapedMat, layers: &[(Mat, Vector)], relu: bool) -> TapedMat {
    let n = x.shape().0;
    let (k, m) = *layers[0].0.shape();
    let outs: Vec<TapedMat> = crate::arch::fan_out(x, layers.len())
        .into_iter()
        .zip(layers)
        .enumerate()
        .map(|(g, (x, (w, b)))| {
            let y = crate::arch::slice_columns(x, g * k..(g + 1) * k).matmul(w.clone())
                + b.clone().broadcast_like::<_, Axis<0>>(&(n, m));
            if relu {
                y.relu()
            } else {
                y
            }
        })
        .collect();
    let mut it = outs.into_iter();
    let mut acc = it.next().expect("one layer");
    for p in it {
        acc = (acc, p).concat_along(Axis::<1>);
    }
    acc
}

pub(super) fn refs(layer: &[(Mat, Vector)]) -> Vec<(&Mat, &Vector)> {
    layer.iter().map(|(w, b)| (w, b)).collect()
}
