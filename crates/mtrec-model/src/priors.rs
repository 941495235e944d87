//! Output biases started at each task's prior on the training labels, from label totals that
//! can be gathered shard by shard.

use mtrec_schema::TaskType;

use crate::model::MultiTaskModel;

/// Per task, what the priors need of the labeled training rows: their count and label sum, and
/// for multiclass tasks the rows of each class.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelTotals {
    labeled: Vec<u64>,
    sums: Vec<f64>,
    /// Per task, labeled rows per class (empty for other kinds).
    classes: Vec<Vec<u64>>,
}

impl LabelTotals {
    /// No rows yet, for the tasks of `model`.
    pub fn new(model: &MultiTaskModel) -> Self {
        let tasks = model.heads.len();
        let classes = model
            .heads
            .iter()
            .map(|h| if h.kind == TaskType::Multiclass { vec![0; h.outputs] } else { Vec::new() })
            .collect();
        LabelTotals { labeled: vec![0; tasks], sums: vec![0.0; tasks], classes }
    }

    /// Adds rows: per task, their labels and masks.
    pub fn add(&mut self, labels: &[Vec<f32>], masks: &[Vec<u8>]) {
        for (t, (labels, masks)) in labels.iter().zip(masks).enumerate() {
            for (&y, _) in labels.iter().zip(masks).filter(|(_, &m)| m != 0) {
                self.labeled[t] += 1;
                self.sums[t] += f64::from(y);
                // Ingestion encodes classes as 0..c; anything else is left out, not a panic.
                if let Some(k) = self.classes[t].get_mut(y as usize) {
                    *k += 1;
                }
            }
        }
    }
}

impl MultiTaskModel {
    /// Starts every task's output bias at the task's prior on the training labels: the log-odds
    /// of the positive rate for binary tasks, the mean for regression, the log class
    /// frequencies (add-one smoothed) for multiclass. The first steps then learn from the
    /// features instead of the base rate. Adam moves each parameter by about the learning rate
    /// per step, so from zero a rare label's bias needs thousands of steps to reach its prior
    /// (a 6% rate is a logit of -2.7) — a whole training run for a task whose tower's units are
    /// inactive early on. Tasks without a labeled row keep a zero bias.
    pub fn init_output_biases(&mut self, labels: &[Vec<f32>], masks: &[Vec<u8>]) {
        let mut totals = LabelTotals::new(self);
        totals.add(labels, masks);
        self.init_output_biases_from(&totals);
    }

    /// [`Self::init_output_biases`] from totals gathered over the train split.
    pub fn init_output_biases_from(&mut self, totals: &LabelTotals) {
        for (t, bias_id) in self.output_biases() {
            if totals.labeled[t] == 0 {
                continue;
            }
            let n = totals.labeled[t] as f64;
            let bias: Vec<f32> = match self.heads[t].kind {
                TaskType::Binary => {
                    let p = (totals.sums[t] / n).clamp(1e-4, 1.0 - 1e-4);
                    vec![(p / (1.0 - p)).ln() as f32]
                }
                TaskType::Regression => vec![(totals.sums[t] / n) as f32],
                TaskType::Multiclass => {
                    let counts: Vec<f64> = totals.classes[t].iter().map(|&c| c as f64 + 1.0).collect();
                    let total: f64 = counts.iter().sum();
                    counts.iter().map(|k| (k / total).ln() as f32).collect()
                }
            };
            self.params.set_values(bias_id, &bias);
        }
    }
}
