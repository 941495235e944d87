//! The task losses, in the two forms the model needs them: on dfdx's tape for training
//! (`task_loss`, through dfdx's own loss ops) and as plain numbers over predictions for
//! validation ([`mean_task_loss`]). Both compute the same function of the same outputs; a test
//! checks that they agree.

use dfdx::prelude::*;
use mtrec_schema::TaskType;

use crate::config::RegressionLoss;
use crate::params::{Dev, Mat, Taped};

/// A scalar loss on the training tape.
pub type Loss = Tensor<(), f32, Dev, Taped>;

/// The masked mean loss of one task of `kind` on the tape, over its outputs `z` (`B x 1`, or
/// `B x classes` for multiclass); at least one row of the batch is labeled.
pub(crate) fn task_loss(
    dev: &Dev,
    kind: TaskType,
    z: Mat<Taped>,
    labels: &[f32],
    mask: &[u8],
    regression: RegressionLoss,
) -> Loss {
    let n = labels.len();
    let count = mask.iter().filter(|&&m| m != 0).count();
    let inv = 1.0 / count as f32;
    let m: Mat = dev.tensor_from_vec(mask.iter().map(|&m| f32::from(m)).collect(), (n, 1));
    match kind {
        TaskType::Binary => {
            let y: Mat = dev.tensor_from_vec(labels.to_vec(), (n, 1));
            (z.bce_with_logits(y) * m).sum::<(), _>() * inv
        }
        TaskType::Regression => {
            let y: Mat = dev.tensor_from_vec(labels.to_vec(), (n, 1));
            let e = match regression {
                RegressionLoss::Mse => (z - y).square(),
                RegressionLoss::Huber { delta } => z.huber_error(y, delta),
            };
            (e * m).sum::<(), _>() * inv
        }
        TaskType::Multiclass => {
            let c = z.shape().1;
            let mut target = vec![0.0f32; n * c];
            for (r, (&y, &keep)) in labels.iter().zip(mask).enumerate() {
                if keep != 0 {
                    target[r * c + y as usize] = 1.0;
                }
            }
            let target: Mat = dev.tensor_from_vec(target, (n, c));
            (z.log_softmax::<Axis<1>>() * target).sum::<(), _>() * (-inv)
        }
    }
}

/// The mean loss of a task of `kind` over its predictions, as a number: probabilities for
/// binary tasks (binary cross-entropy), values for regression (`regression`), class
/// probabilities (`labels.len() x classes`) for multiclass (cross-entropy of the true class).
/// `None` without labels.
pub fn mean_task_loss(
    kind: TaskType,
    classes: usize,
    regression: RegressionLoss,
    outputs: &[f32],
    labels: &[f32],
) -> Option<f64> {
    match kind {
        TaskType::Binary => mtrec_metrics::logloss(outputs, labels, mtrec_metrics::UNWEIGHTED),
        TaskType::Regression => regression.mean(outputs, labels),
        TaskType::Multiclass => {
            mtrec_metrics::multiclass_metrics(outputs, classes, labels, mtrec_metrics::UNWEIGHTED).map(|m| m.logloss)
        }
    }
}

impl RegressionLoss {
    /// The mean loss of predicted values against targets, `None` without targets: the mean
    /// squared error, or Huber's loss (quadratic within `delta` of the target, linear beyond).
    pub fn mean(self, pred: &[f32], target: &[f32]) -> Option<f64> {
        assert_eq!(pred.len(), target.len(), "RegressionLoss::mean: lengths differ");
        if pred.is_empty() {
            return None;
        }
        let errors = pred.iter().zip(target).map(|(&p, &y)| f64::from(p) - f64::from(y));
        let sum: f64 = match self {
            RegressionLoss::Mse => errors.map(|e| e * e).sum(),
            RegressionLoss::Huber { delta } => {
                let d = f64::from(delta);
                errors.map(|e| if e.abs() <= d { 0.5 * e * e } else { d * (e.abs() - 0.5 * d) }).sum()
            }
        };
        Some(sum / pred.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tape's loss and the plain one agree on every task kind and both regression losses.
    #[test]
    fn the_tape_loss_and_the_validation_loss_agree() {
        let dev = Dev::default();
        let logits = [0.3f32, -1.2, 2.5, 0.0];
        let mask = [1u8, 1, 0, 1];
        let kept = |v: &[f32]| -> Vec<f32> { v.iter().zip(&mask).filter(|(_, &m)| m != 0).map(|(x, _)| *x).collect() };
        let taped = |kind: TaskType, outputs: usize, z: Vec<f32>, labels: &[f32], regression: RegressionLoss| {
            let z: Mat = dev.tensor_from_vec(z, (labels.len(), outputs));
            f64::from(task_loss(&dev, kind, z.leaky_traced(), labels, &mask, regression).array())
        };
        let close =
            |a: f64, b: f64, what: &str| assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{what}: {a} vs {b}");

        let labels = [1.0f32, 0.0, 1.0, 1.0];
        let probs: Vec<f32> = logits.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect();
        let plain = mean_task_loss(TaskType::Binary, 1, RegressionLoss::Mse, &kept(&probs), &kept(&labels)).unwrap();
        close(taped(TaskType::Binary, 1, logits.to_vec(), &labels, RegressionLoss::Mse), plain, "binary");

        let targets = [0.5f32, -0.7, 9.0, 3.0];
        for loss in [RegressionLoss::Mse, RegressionLoss::Huber { delta: 1.0 }] {
            let plain = mean_task_loss(TaskType::Regression, 1, loss, &kept(&logits), &kept(&targets)).unwrap();
            close(taped(TaskType::Regression, 1, logits.to_vec(), &targets, loss), plain, &format!("{loss:?}"));
        }
        // Hand-computed Huber (δ = 1) over the kept rows: errors -0.2, -0.5, -3.0.
        let huber = RegressionLoss::Huber { delta: 1.0 }.mean(&kept(&logits), &kept(&targets)).unwrap();
        close(huber, (0.5 * 0.04 + 0.5 * 0.25 + 2.5) / 3.0, "Huber by hand");

        let z: Vec<f32> = logits.iter().flat_map(|&z| [z, -z]).collect();
        let classes = [0.0f32, 1.0, 1.0, 0.0];
        let probs: Vec<f32> = logits
            .iter()
            .flat_map(|&z| {
                let (a, b) = (z.exp(), (-z).exp());
                [a / (a + b), b / (a + b)]
            })
            .collect();
        let kept_probs: Vec<f32> =
            probs.chunks(2).zip(&mask).filter(|(_, &m)| m != 0).flat_map(|(p, _)| p.to_vec()).collect();
        let plain = mean_task_loss(TaskType::Multiclass, 2, RegressionLoss::Mse, &kept_probs, &kept(&classes)).unwrap();
        close(taped(TaskType::Multiclass, 2, z, &classes, RegressionLoss::Mse), plain, "multiclass");
    }
}
