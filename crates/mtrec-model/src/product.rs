//! Product tasks (ESMM, Ma et al., SIGIR 2018): a task whose probability is the product of
//! earlier binary tasks' probabilities, pCTCVR = pCTR × pCVR.
//!
//! The model keeps every task's output as a logit, so a product task's output is the logit of
//! the product, `ln p − ln(1 − p)`, computed without cancellation from the factors' logits:
//! `ln σ(a)σ(b) = ln σ(a) + ln σ(b)` (each `−BCE(z, 1)`, stable for any `z`), and
//! `1 − σ(a)σ(b) = σ(−a) + σ(a)σ(−b)`, a sum of positive terms. Everything downstream (the
//! sigmoid of predictions, binary cross-entropy on the tape, metrics) then treats it as any
//! binary task, and its loss trains the factors' towers through the product.

use dfdx::prelude::*;

use crate::arch::fan_out;
use crate::params::{Mat, TapeKind};

/// The logit of `σ(a) σ(b)`, element-wise, on `a`'s and `b`'s tapes.
pub(crate) fn product_logit<T: TapeKind>(a: Mat<T>, b: Mat<T>) -> Mat<T> {
    let ones: Mat = a.device().ones_like(a.shape());
    let mut a = fan_out(a, 3);
    let mut b = fan_out(b, 2);
    let ln_p = (a.remove(0).bce_with_logits(ones.clone()) + b.remove(0).bce_with_logits(ones)).negate();
    let one_minus_p = a.remove(0).negate().sigmoid() + a.remove(0).sigmoid() * b.remove(0).negate().sigmoid();
    // Both terms underflow only when both logits exceed ~88; the floor keeps the logarithm finite.
    ln_p - one_minus_p.clamp(f32::MIN_POSITIVE, f32::MAX).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Dev;

    fn sigmoid(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    /// The product's logit maps back to the product of the probabilities, also where the
    /// factors are near 0 or 1 and a naive `ln(p / (1 − p))` in f32 would lose it.
    #[test]
    fn the_product_logit_is_the_logit_of_the_product_of_probabilities() {
        let dev = Dev::default();
        let a = [-3.0f32, 0.0, 2.5, 12.0, -20.0, 30.0];
        let b = [1.0f32, 0.0, -4.0, 14.0, 5.0, -30.0];
        let x: Mat = dev.tensor_from_vec(a.to_vec(), (6, 1));
        let y: Mat = dev.tensor_from_vec(b.to_vec(), (6, 1));
        let z = product_logit(x, y).as_vec();
        for i in 0..a.len() {
            let p = sigmoid(f64::from(a[i])) * sigmoid(f64::from(b[i]));
            let want = p.ln() - (-p).ln_1p();
            assert!((f64::from(z[i]) - want).abs() <= 1e-4 * (1.0 + want.abs()), "row {i}: {} vs {want}", z[i]);
        }
    }

    /// Finite differences of a weighted sum of the product's logits, through both factors.
    #[test]
    fn the_product_logits_gradient_matches_finite_differences() {
        let dev = Dev::default();
        let a = vec![-1.5f32, 0.3, 2.0, -0.2];
        let b = vec![0.7f32, -2.2, 1.1, 0.0];
        let w = vec![0.5f32, -1.0, 2.0, 1.5];
        let objective = |a: &[f32], b: &[f32]| -> f64 {
            let x: Mat = dev.tensor_from_vec(a.to_vec(), (4, 1));
            let y: Mat = dev.tensor_from_vec(b.to_vec(), (4, 1));
            product_logit(x, y).as_vec().iter().zip(&w).map(|(z, w)| f64::from(*z) * f64::from(*w)).sum()
        };
        let x: Mat = dev.tensor_from_vec(a.clone(), (4, 1));
        let y: Mat = dev.tensor_from_vec(b.clone(), (4, 1));
        let out =
            product_logit(x.clone().leaky_traced(), y.clone().leaky_traced()) * dev.tensor_from_vec(w.clone(), (4, 1));
        let grads = out.sum().backward();
        let (ga, gb) = (grads.get(&x).as_vec(), grads.get(&y).as_vec());
        let h = 1e-2f32;
        for i in 0..4 {
            for (which, analytic) in [("a", ga[i]), ("b", gb[i])] {
                let (mut a_up, mut a_down, mut b_up, mut b_down) = (a.clone(), a.clone(), b.clone(), b.clone());
                if which == "a" {
                    a_up[i] += h;
                    a_down[i] -= h;
                } else {
                    b_up[i] += h;
                    b_down[i] -= h;
                }
                let numeric = (objective(&a_up, &b_up) - objective(&a_down, &b_down)) / (2.0 * f64::from(h));
                assert!(
                    (f64::from(analytic) - numeric).abs() <= 2e-3 * (1.0 + numeric.abs()),
                    "{which}[{i}]: analytic {analytic} vs numeric {numeric}"
                );
            }
        }
    }
}
