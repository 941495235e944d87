//! Evaluation units of a task and the metrics of one model over them (see the module doc of
//! [`crate::compute`]).

use std::collections::BTreeMap;

use mtrec_metrics::{self as metrics, Groups, RankedScores, UserRanking, Weight, UNWEIGHTED};
use mtrec_schema::{Metric, Scope};

use crate::input::{EvalRows, ReportOptions, ReportTask, TaskKind};
use crate::report::{finite, CalibrationReport, Evaluated, ReportRocPoint, TaskEval, UserCoverage};

/// The evaluation units of one task.
pub(super) struct Units {
    pub(super) evaluated: Evaluated,
    pub(super) labeled_rows: Vec<usize>,
    /// For per-user/per-item units: the positions in `labeled_rows` of each unit.
    pub(super) members: Option<Groups>,
    pub(super) labels: Vec<f32>,
    /// For a regression learned as `ln(1 + y)`: the labels in their own units.
    pub(super) label_units: Option<Vec<f32>>,
    /// Bootstrap clusters over units; for per-row units these are the users.
    pub(super) clusters: Groups,
}

impl Units {
    pub(super) fn new(rows: &EvalRows, t: usize, task: &ReportTask) -> Units {
        let mut units = Units::of_scope(rows, t, task);
        if task.kind.label_log1p() {
            units.label_units = Some(in_label_units(&units.labels));
        }
        units
    }

    fn of_scope(rows: &EvalRows, t: usize, task: &ReportTask) -> Units {
        let labeled_rows: Vec<usize> = (0..rows.len()).filter(|&r| rows.masks[t][r] != 0).collect();
        let all_labels = &rows.labels[t];
        let entity = match task.scope {
            Scope::Pair => None,
            Scope::User => Some((&rows.user, Evaluated::PerUser)),
            Scope::Item => Some((&rows.item, Evaluated::PerItem)),
        };
        if let Some((ids, evaluated)) = entity {
            let members = Groups::from_ids(&labeled_rows.iter().map(|&r| ids[r]).collect::<Vec<_>>());
            let constant = (0..members.len()).all(|g| {
                let rows_of = members.rows(g);
                let first = all_labels[labeled_rows[rows_of[0] as usize]];
                rows_of.iter().all(|&i| all_labels[labeled_rows[i as usize]].to_bits() == first.to_bits())
            });
            if constant {
                let labels =
                    (0..members.len()).map(|g| all_labels[labeled_rows[members.rows(g)[0] as usize]]).collect();
                let dense: Vec<u32> = (0..members.len() as u32).collect();
                let clusters = Groups::from_dense(&dense, dense.len());
                return Units { evaluated, labeled_rows, members: Some(members), labels, label_units: None, clusters };
            }
        }
        let labels = labeled_rows.iter().map(|&r| all_labels[r]).collect();
        let clusters = Groups::from_ids(&labeled_rows.iter().map(|&r| rows.user[r]).collect::<Vec<_>>());
        Units { evaluated: Evaluated::PerRow, labeled_rows, members: None, labels, label_units: None, clusters }
    }

    pub(super) fn len(&self) -> usize {
        self.labels.len()
    }

    /// The model's predictions per unit (`units x width`).
    fn gather(&self, output: &[f32], width: usize) -> Vec<f32> {
        match &self.members {
            None => {
                self.labeled_rows.iter().flat_map(|&r| output[r * width..(r + 1) * width].iter().copied()).collect()
            }
            Some(members) => {
                let mut out = Vec::with_capacity(members.len() * width);
                for g in 0..members.len() {
                    let rows_of = members.rows(g);
                    for c in 0..width {
                        let sum: f64 =
                            rows_of.iter().map(|&i| f64::from(output[self.labeled_rows[i as usize] * width + c])).sum();
                        out.push((sum / rows_of.len() as f64) as f32);
                    }
                }
                out
            }
        }
    }
}

/// `exp(v) − 1` of values learned as `ln(1 + y)`: back in the label's units.
pub(super) fn in_label_units(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| v.exp_m1()).collect()
}

/// One model's predictions on a task, with what repeated metric evaluation reuses.
pub(super) struct Prepared {
    pub(super) preds: Vec<f32>,
    /// For a regression learned as `ln(1 + y)`: the predictions in the label's units.
    pub(super) label_units: Option<Vec<f32>>,
    pub(super) ranked: Option<RankedScores>,
    /// Binary tasks: each unit's cross-entropy, so that bootstrap replicates reweight them
    /// instead of taking a logarithm per unit and replicate.
    pub(super) unit_logloss: Option<Vec<f64>>,
    pub(super) user_auc: Option<Vec<Option<f64>>>,
    pub(super) user_ranking: Option<Vec<Option<UserRanking>>>,
}

/// Whether GAUC and ranking metrics apply: binary pair tasks evaluated per row.
fn per_user_metrics(task: &ReportTask, units: &Units) -> bool {
    task.kind == TaskKind::Binary && task.scope == Scope::Pair && units.evaluated == Evaluated::PerRow
}

/// The metrics of a task, in report order.
pub(super) fn metric_names(task: &ReportTask, units: &Units) -> Vec<Metric> {
    match task.kind {
        TaskKind::Binary => {
            let mut names = vec![Metric::Auc];
            if per_user_metrics(task, units) {
                names.push(Metric::Gauc);
            }
            names.extend([Metric::Logloss, Metric::Ece, Metric::MeanPredicted]);
            if per_user_metrics(task, units) {
                names.extend([Metric::Ndcg, Metric::Recall, Metric::Mrr]);
            }
            names
        }
        TaskKind::Regression { label_log1p } => {
            let mut names = vec![Metric::Rmse, Metric::Mae, Metric::R2];
            if label_log1p {
                names.extend([Metric::LabelRmse, Metric::LabelMae, Metric::LabelR2]);
            }
            names
        }
        TaskKind::Multiclass { .. } => vec![Metric::Accuracy, Metric::MacroF1, Metric::Logloss],
    }
}

pub(super) fn prepare(task: &ReportTask, units: &Units, output: &[f32], options: &ReportOptions) -> Prepared {
    let preds = units.gather(output, task.kind.width());
    let binary = task.kind == TaskKind::Binary;
    let per_user = per_user_metrics(task, units);
    Prepared {
        ranked: binary.then(|| RankedScores::new(&preds)),
        unit_logloss: binary
            .then(|| preds.iter().zip(&units.labels).map(|(&p, &y)| metrics::binary_cross_entropy(p, y)).collect()),
        user_auc: per_user.then(|| metrics::per_group_auc(&preds, &units.labels, &units.clusters)),
        user_ranking: per_user
            .then(|| metrics::per_user_ranking(&preds, &units.labels, &units.clusters, options.ranking_k)),
        label_units: units.label_units.is_some().then(|| in_label_units(&preds)),
        preds,
    }
}

/// The weighted mean of per-unit values, summed in unit order as [`metrics::logloss`] sums, so
/// that it gives the same value from precomputed losses.
fn weighted_mean<W: Weight>(values: &[f64], weights: Option<&[W]>) -> Option<f64> {
    let (mut sum, mut total) = (0.0, 0.0);
    for (i, &v) in values.iter().enumerate() {
        let w = weights.map_or(1.0, |w| w[i].value());
        sum += w * v;
        total += w;
    }
    (total > 0.0).then(|| sum / total)
}

/// Metric values in `metric_names` order, under unit and cluster multiplicities.
pub(super) fn metric_values(
    task: &ReportTask,
    units: &Units,
    model: &Prepared,
    unit_weights: Option<&[u32]>,
    cluster_weights: Option<&[u32]>,
    options: &ReportOptions,
) -> Vec<Option<f64>> {
    let labels = &units.labels;
    match &task.kind {
        TaskKind::Binary => {
            let ranked = model.ranked.as_ref().expect("binary tasks are ranked");
            let mut values = vec![ranked.auc(labels, unit_weights)];
            if let Some(user_auc) = &model.user_auc {
                values.push(metrics::gauc_from_parts(user_auc, &units.clusters, cluster_weights).gauc);
            }
            let calibration = metrics::calibration(&model.preds, labels, unit_weights, options.ece_bins);
            let losses = model.unit_logloss.as_ref().expect("binary tasks keep unit losses");
            values.push(weighted_mean(losses, unit_weights));
            values.push(calibration.as_ref().map(|c| c.ece));
            values.push(calibration.as_ref().map(|c| c.mean_predicted));
            if let Some(user_ranking) = &model.user_ranking {
                let r = metrics::ranking_from_parts(user_ranking, options.ranking_k, cluster_weights);
                values.extend([r.ndcg, r.recall, r.mrr]);
            }
            values
        }
        TaskKind::Regression { .. } => {
            let regression =
                |preds: &[f32], labels: &[f32]| match metrics::regression_metrics(preds, labels, unit_weights) {
                    Some(m) => vec![Some(m.rmse), Some(m.mae), m.r2],
                    None => vec![None; 3],
                };
            let mut values = regression(&model.preds, labels);
            if let (Some(preds), Some(labels)) = (&model.label_units, &units.label_units) {
                values.extend(regression(preds, labels));
            }
            values
        }
        TaskKind::Multiclass { classes } => {
            match metrics::multiclass_metrics(&model.preds, classes.len(), labels, unit_weights) {
                Some(m) => vec![Some(m.accuracy), Some(m.macro_f1), Some(m.logloss)],
                None => vec![None; 3],
            }
        }
    }
    .into_iter()
    .map(|v| v.and_then(finite))
    .collect()
}

/// The single-model evaluation of one task.
pub(super) fn task_eval(
    rows: &EvalRows,
    task: &ReportTask,
    units: &Units,
    model: &Prepared,
    options: &ReportOptions,
) -> TaskEval {
    let names = metric_names(task, units);
    let values = metric_values(task, units, model, None, None, options);
    let mut eval = TaskEval {
        task: task.name.clone(),
        kind: task.kind.name().to_owned(),
        scope: task.scope,
        evaluated: units.evaluated,
        labeled_rows: units.labeled_rows.len(),
        masked_rows: rows.len() - units.labeled_rows.len(),
        units: units.len(),
        metrics: names.into_iter().zip(values).collect::<BTreeMap<_, _>>(),
        calibration: None,
        roc: Vec::new(),
        gauc_users: None,
        ranking_users: None,
    };
    if task.kind == TaskKind::Binary {
        eval.calibration = metrics::calibration(&model.preds, &units.labels, UNWEIGHTED, options.ece_bins).map(|c| {
            CalibrationReport {
                mean_predicted: c.mean_predicted,
                observed_rate: c.observed_rate,
                ece: c.ece,
                bins: c.bins,
            }
        });
        if let Some(ranked) = &model.ranked {
            eval.roc = ranked
                .roc_curve(&units.labels, options.roc_points)
                .into_iter()
                .map(|p| ReportRocPoint { threshold: finite(p.threshold), fpr: p.fpr, tpr: p.tpr })
                .collect();
        }
    }
    if let Some(user_auc) = &model.user_auc {
        let g = metrics::gauc_from_parts(user_auc, &units.clusters, UNWEIGHTED);
        eval.gauc_users = Some(UserCoverage { evaluated: g.groups_evaluated, skipped: g.groups_skipped });
    }
    if let Some(user_ranking) = &model.user_ranking {
        let r = metrics::ranking_from_parts(user_ranking, options.ranking_k, UNWEIGHTED);
        eval.ranking_users = Some(UserCoverage { evaluated: r.users_evaluated, skipped: r.users_skipped });
    }
    eval
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precomputed_losses_reweight_to_the_same_log_loss() {
        let preds = [0.1f32, 0.8, 0.35, 1.0, 0.0, 0.6];
        let labels = [0.0f32, 1.0, 1.0, 0.0, 0.0, 1.0];
        let losses: Vec<f64> = preds.iter().zip(&labels).map(|(&p, &y)| metrics::binary_cross_entropy(p, y)).collect();
        let weights = [2u32, 0, 1, 3, 1, 1];
        assert_eq!(weighted_mean(&losses, Some(&weights[..])), metrics::logloss(&preds, &labels, Some(&weights[..])));
        assert_eq!(weighted_mean(&losses, UNWEIGHTED), metrics::logloss(&preds, &labels, UNWEIGHTED));
        assert_eq!(weighted_mean(&losses, Some(&[0u32; 6][..])), None);
    }
}
