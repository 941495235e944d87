//! The early-stopping monitor over a run's [`History`] (`history.json`): which metric may be
//! monitored, the epochs since the best one, and the line printed per epoch.

use std::collections::BTreeMap;

use mtrec_model::MultiTaskModel;
use mtrec_schema::{EncodedDataset, EpochRecord, History, Metric, MetricKey, TaskType};

use crate::error::TrainError;

/// Checks that `monitor` is computed on the valid split of `model`: the loss, the tasks'
/// relative primary metrics, or one of a task's [`Metric::validation`] metrics.
pub(crate) fn check_monitor(monitor: &MetricKey, model: &MultiTaskModel) -> Result<(), TrainError> {
    let MetricKey::Task { task, metric } = monitor else { return Ok(()) };
    let Some(head) = model.heads.iter().find(|h| &h.name == task) else {
        let tasks: Vec<&str> = model.heads.iter().map(|h| h.name.as_str()).collect();
        return Err(TrainError::Config(format!(
            "early_stopping.metric \"{monitor}\": no task {task:?} (tasks: {})",
            tasks.join(", ")
        )));
    };
    let valid = Metric::validation(head.kind);
    if valid.contains(metric) {
        return Ok(());
    }
    let names: Vec<String> = valid.iter().map(|m| format!("{task}.{m}")).collect();
    Err(TrainError::Config(format!(
        "early_stopping.metric \"{monitor}\" is not computed on the valid split: use \"tasks\", \"loss\" or one of {}",
        names.join(", ")
    )))
}

/// Per task, the labeled rows of a split and how many of them have a nonzero label: what
/// [`undefined_on`] needs, gathered part by part.
#[derive(Debug, Clone)]
pub(crate) struct LabelCounts {
    labeled: Vec<u64>,
    nonzero: Vec<u64>,
}

impl LabelCounts {
    pub(crate) fn new(tasks: usize) -> Self {
        LabelCounts { labeled: vec![0; tasks], nonzero: vec![0; tasks] }
    }

    pub(crate) fn add(&mut self, data: &EncodedDataset) {
        for (t, (labels, masks)) in data.labels.iter().zip(&data.masks).enumerate() {
            for (&y, _) in labels.iter().zip(masks).filter(|(_, &m)| m != 0) {
                self.labeled[t] += 1;
                self.nonzero[t] += u64::from(y != 0.0);
            }
        }
    }
}

/// Why `monitor` cannot be computed on the valid split whose labels are counted in `valid`,
/// when it cannot: no task (or not its task) has a labeled row there, or its task's labeled
/// rows are all one class and it is an AUC. Early stopping must not follow a metric that is
/// undefined.
pub(crate) fn undefined_on(monitor: &MetricKey, model: &MultiTaskModel, valid: &LabelCounts) -> Option<String> {
    match monitor {
        MetricKey::Loss => {
            valid.labeled.iter().all(|&n| n == 0).then(|| "no task has a labeled row in the valid split".to_owned())
        }
        MetricKey::Tasks => {
            let defined = model.heads.iter().any(|h| {
                let key = MetricKey::task(&h.name, Metric::primary(h.kind));
                undefined_task_metric(&key, model, valid).is_none()
            });
            (!defined).then(|| {
                "no task's primary metric is defined on the valid split (no labeled row, or one class for an AUC)"
                    .to_owned()
            })
        }
        MetricKey::Task { .. } => undefined_task_metric(monitor, model, valid),
    }
}

/// Why a task's metric `key` cannot be computed on the valid split, when it cannot.
fn undefined_task_metric(key: &MetricKey, model: &MultiTaskModel, valid: &LabelCounts) -> Option<String> {
    let MetricKey::Task { task, metric } = key else { return None };
    let t = model.heads.iter().position(|h| &h.name == task)?;
    let (labeled, nonzero) = (valid.labeled[t], valid.nonzero[t]);
    if labeled == 0 {
        return Some(format!("task {task:?} has no labeled row in the valid split"));
    }
    let one_class = nonzero == 0 || nonzero == labeled;
    (model.heads[t].kind == TaskType::Binary && *metric == Metric::Auc && one_class)
        .then(|| format!("every labeled row of task {task:?} in the valid split is of one class"))
}

/// Each task's [`Metric::primary`] key, in head order: what [`tasks_value`] averages.
pub(crate) fn primary_keys(model: &MultiTaskModel) -> Vec<MetricKey> {
    model.heads.iter().map(|h| MetricKey::task(&h.name, Metric::primary(h.kind))).collect()
}

/// The [`MetricKey::Tasks`] value of an epoch's validation `metrics`, against the first epoch's
/// (`first`; `None` when this is the first epoch, whose value is 1), over the tasks' `primary`
/// keys. Tasks whose primary metric is undefined on either epoch, or zero on the first, are
/// left out; `None` when none is left.
pub(crate) fn tasks_value(
    primary: &[MetricKey],
    metrics: &BTreeMap<MetricKey, f64>,
    first: Option<&BTreeMap<MetricKey, f64>>,
) -> Option<f64> {
    let first = first.unwrap_or(metrics);
    let ratios: Vec<f64> = primary
        .iter()
        .filter_map(|key| {
            let (m, m0) = (*metrics.get(key)?, *first.get(key)?);
            let ratio = if key.higher_is_better() { m / m0 } else { m0 / m };
            ratio.is_finite().then_some(ratio)
        })
        .collect();
    (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64)
}

/// Epochs since the best one (all of them before a best exists).
pub(crate) fn epochs_since_best(history: &History) -> usize {
    let run = history.epochs.len();
    history.best_epoch.map_or(run, |b| run.saturating_sub(b + 1))
}

/// The progress line of an epoch.
pub(crate) fn epoch_line(record: &EpochRecord, monitor: &MetricKey) -> String {
    let valid: Vec<String> = record.valid.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
    format!(
        "epoch {} ({:.1}s, {:.0} samples/s; monitor {monitor}): {}",
        record.epoch + 1,
        record.seconds,
        record.samples_per_second,
        valid.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_value_averages_each_primary_metric_relative_to_the_first_epoch() {
        let primary = [MetricKey::task("click", Metric::Auc), MetricKey::task("dwell", Metric::Rmse)];
        let first: BTreeMap<MetricKey, f64> =
            [(primary[0].clone(), 0.6), (primary[1].clone(), 0.5), (MetricKey::Loss, 3.0)].into_iter().collect();
        assert_eq!(tasks_value(&primary, &first, None), Some(1.0));
        // click 0.6 -> 0.66 (x 1.1), dwell's RMSE 0.5 -> 0.4 (better: 0.5 / 0.4 = 1.25); the loss
        // is not a task's primary metric.
        let later: BTreeMap<MetricKey, f64> =
            [(primary[0].clone(), 0.66), (primary[1].clone(), 0.4), (MetricKey::Loss, 9.0)].into_iter().collect();
        let value = tasks_value(&primary, &later, Some(&first)).unwrap();
        assert!((value - (1.1 + 1.25) / 2.0).abs() < 1e-12, "{value}");
        // A metric undefined in either epoch leaves its task out.
        let click_only: BTreeMap<MetricKey, f64> = [(primary[0].clone(), 0.54)].into_iter().collect();
        assert!((tasks_value(&primary, &click_only, Some(&first)).unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(tasks_value(&primary, &BTreeMap::new(), Some(&first)), None);
    }

    #[test]
    fn epochs_since_best_counts_from_the_kept_epoch() {
        let mut h = History::new(MetricKey::Loss);
        h.epochs = (0..4).map(|epoch| EpochRecord { epoch, ..Default::default() }).collect();
        assert_eq!(epochs_since_best(&h), 4);
        h.best_epoch = Some(1);
        assert_eq!(epochs_since_best(&h), 2);
        h.best_epoch = Some(3);
        assert_eq!(epochs_since_best(&h), 0);
    }
}
