//! Computing reports: validation, evaluation units, metrics per model, and the A/B
//! comparison (paired cluster bootstrap, DeLong, verdicts, seesaw, multi-task gain).
//!
//! Units: a task is evaluated over its labeled rows (mask != 0). A `user`- (`item`-) scope
//! task whose label is constant over each user's (item's) labeled rows is evaluated once per
//! user (item): the unit's label is that constant and its prediction the mean of the model's
//! outputs over the same labeled rows (per output, so multiclass probabilities stay a
//! distribution). Otherwise each labeled row is a unit.
//!
//! Bootstrap clusters: per-row units are clustered by user; per-user and per-item units are
//! each their own cluster (an item is not nested in one user).

use std::collections::BTreeMap;

use mtrec_metrics::{self as metrics, BootstrapOptions, Groups, MetricPair, RankedScores, UserRanking, UNWEIGHTED};
use mtrec_schema::{Metric, Scope};

use crate::error::ReportError;
use crate::input::{EvalRows, ModelScores, ReportOptions, ReportTask, TaskKind};
use crate::report::*;

/// The evaluation units of one task.
struct Units {
    evaluated: Evaluated,
    labeled_rows: Vec<usize>,
    /// For per-user/per-item units: the positions in `labeled_rows` of each unit.
    members: Option<Groups>,
    labels: Vec<f32>,
    /// For a regression learned as `ln(1 + y)`: the labels in their own units.
    label_units: Option<Vec<f32>>,
    /// Bootstrap clusters over units; for per-row units these are the users.
    clusters: Groups,
}

impl Units {
    fn new(rows: &EvalRows, t: usize, task: &ReportTask) -> Units {
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

    fn len(&self) -> usize {
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
fn in_label_units(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| v.exp_m1()).collect()
}

/// One model's predictions on a task, with what repeated metric evaluation reuses.
struct Prepared {
    preds: Vec<f32>,
    /// For a regression learned as `ln(1 + y)`: the predictions in the label's units.
    label_units: Option<Vec<f32>>,
    ranked: Option<RankedScores>,
    user_auc: Option<Vec<Option<f64>>>,
    user_ranking: Option<Vec<Option<UserRanking>>>,
}

/// Whether GAUC and ranking metrics apply: binary pair tasks evaluated per row.
fn per_user_metrics(task: &ReportTask, units: &Units) -> bool {
    task.kind == TaskKind::Binary && task.scope == Scope::Pair && units.evaluated == Evaluated::PerRow
}

/// The metrics of a task, in report order.
fn metric_names(task: &ReportTask, units: &Units) -> Vec<Metric> {
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

fn prepare(task: &ReportTask, units: &Units, output: &[f32], options: &ReportOptions) -> Prepared {
    let preds = units.gather(output, task.kind.width());
    let binary = task.kind == TaskKind::Binary;
    let per_user = per_user_metrics(task, units);
    Prepared {
        ranked: binary.then(|| RankedScores::new(&preds)),
        user_auc: per_user.then(|| metrics::per_group_auc(&preds, &units.labels, &units.clusters)),
        user_ranking: per_user
            .then(|| metrics::per_user_ranking(&preds, &units.labels, &units.clusters, options.ranking_k)),
        label_units: units.label_units.is_some().then(|| in_label_units(&preds)),
        preds,
    }
}

/// Metric values in `metric_names` order, under unit and cluster multiplicities.
fn metric_values(
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
            values.push(metrics::logloss(&model.preds, labels, unit_weights));
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
fn task_eval(rows: &EvalRows, task: &ReportTask, units: &Units, model: &Prepared, options: &ReportOptions) -> TaskEval {
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

fn length_check(what: impl FnOnce() -> String, expected: usize, actual: usize) -> Result<(), ReportError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ReportError::Length { what: what(), expected, actual })
    }
}

fn validate_rows(rows: &EvalRows, tasks: &[ReportTask], options: &ReportOptions) -> Result<(), ReportError> {
    let n = rows.len();
    length_check(|| "rows.item".into(), n, rows.item.len())?;
    length_check(|| "rows.labels (tasks)".into(), tasks.len(), rows.labels.len())?;
    length_check(|| "rows.masks (tasks)".into(), tasks.len(), rows.masks.len())?;
    for (t, task) in tasks.iter().enumerate() {
        length_check(|| format!("rows.labels[{}]", task.name), n, rows.labels[t].len())?;
        length_check(|| format!("rows.masks[{}]", task.name), n, rows.masks[t].len())?;
        if let TaskKind::Multiclass { classes } = &task.kind {
            if classes.is_empty() {
                return Err(ReportError::NoClasses { task: task.name.clone() });
            }
            for r in (0..n).filter(|&r| rows.masks[t][r] != 0) {
                let label = rows.labels[t][r];
                if !(label >= 0.0 && label.fract() == 0.0 && (label as usize) < classes.len()) {
                    return Err(ReportError::BadClassLabel {
                        task: task.name.clone(),
                        row: r,
                        label,
                        classes: classes.len(),
                    });
                }
            }
        }
    }
    let bad = |what: &str| Err(ReportError::Options(what.to_owned()));
    if options.bootstrap_replicates == 0 {
        return bad("bootstrap_replicates must be positive");
    }
    if !(options.alpha > 0.0 && options.alpha < 1.0) {
        return bad("alpha must lie in (0, 1)");
    }
    if options.ece_bins == 0 || options.ranking_k == 0 {
        return bad("ece_bins and ranking_k must be positive");
    }
    if options.roc_points < 2 {
        return bad("roc_points must be at least 2");
    }
    Ok(())
}

/// Checks a model's shapes; a baseline (`allow_missing`) may leave tasks empty.
fn validate_model(
    rows: &EvalRows,
    tasks: &[ReportTask],
    model: &ModelScores,
    allow_missing: bool,
) -> Result<(), ReportError> {
    let n = rows.len();
    length_check(|| format!("model `{}` outputs (tasks)", model.name), tasks.len(), model.outputs.len())?;
    for (t, task) in tasks.iter().enumerate() {
        let len = model.outputs[t].len();
        if !(allow_missing && len == 0) {
            length_check(|| format!("model `{}` outputs[{}]", model.name, task.name), n * task.kind.width(), len)?;
        }
    }
    if !model.gates.is_empty() {
        length_check(|| format!("model `{}` gates (tasks)", model.name), tasks.len(), model.gates.len())?;
        for (t, gates) in model.gates.iter().enumerate() {
            if let Some(g) = gates {
                if n == 0 || g.is_empty() || g.len() % n != 0 {
                    return Err(ReportError::Gates {
                        model: model.name.clone(),
                        task: tasks[t].name.clone(),
                        len: g.len(),
                        rows: n,
                    });
                }
            }
        }
    }
    Ok(())
}

fn model_info(model: &ModelScores) -> ReportedModel {
    ReportedModel {
        name: model.name.clone(),
        description: model.description.clone(),
        provenance: model.provenance.clone(),
    }
}

fn entropy(weights: impl Iterator<Item = f64>) -> f64 {
    weights.filter(|&w| w > 0.0).map(|w| -w * w.ln()).sum()
}

/// Gate usage per task over the task's labeled rows.
fn expert_usage(rows: &EvalRows, tasks: &[ReportTask], model: &ModelScores) -> Vec<ExpertUsage> {
    let n = rows.len();
    model
        .gates
        .iter()
        .enumerate()
        .filter_map(|(t, gates)| {
            let g = gates.as_ref()?;
            let experts = g.len() / n;
            let labeled: Vec<usize> = (0..n).filter(|&r| rows.masks[t][r] != 0).collect();
            let mut mean_weight = vec![0.0; experts];
            let mut entropy_sum = 0.0;
            for &r in &labeled {
                let row = &g[r * experts..(r + 1) * experts];
                for (m, &w) in mean_weight.iter_mut().zip(row) {
                    *m += f64::from(w);
                }
                entropy_sum += entropy(row.iter().map(|&w| f64::from(w)));
            }
            let count = labeled.len() as f64;
            mean_weight.iter_mut().for_each(|m| *m /= count.max(1.0));
            Some(ExpertUsage {
                task: tasks[t].name.clone(),
                mean_entropy: finite(entropy_sum / count),
                entropy_of_mean: (!labeled.is_empty()).then(|| entropy(mean_weight.iter().copied())),
                max_entropy: (experts as f64).ln(),
                mean_weight,
            })
        })
        .collect()
}

/// Evaluates one model on every task.
pub fn evaluate(
    rows: &EvalRows,
    tasks: &[ReportTask],
    model: &ModelScores,
    options: &ReportOptions,
) -> Result<EvalReport, ReportError> {
    validate_rows(rows, tasks, options)?;
    validate_model(rows, tasks, model, false)?;
    let task_evals = tasks
        .iter()
        .enumerate()
        .map(|(t, task)| {
            let units = Units::new(rows, t, task);
            let prepared = prepare(task, &units, &model.outputs[t], options);
            task_eval(rows, task, &units, &prepared, options)
        })
        .collect();
    Ok(EvalReport {
        format_version: FORMAT_VERSION,
        report: "eval".to_owned(),
        model: model_info(model),
        options: *options,
        rows: rows.len(),
        tasks: task_evals,
        expert_usage: expert_usage(rows, tasks, model),
        history: model.history.clone(),
    })
}

fn is_improvement(delta: f64, higher_is_better: bool) -> bool {
    if higher_is_better {
        delta > 0.0
    } else {
        delta < 0.0
    }
}

/// Compares model B against model A on every task, optionally against a single-task
/// `baseline` (whose empty task outputs mean "no baseline for this task").
pub fn compare(
    rows: &EvalRows,
    tasks: &[ReportTask],
    a: &ModelScores,
    b: &ModelScores,
    baseline: Option<&ModelScores>,
    options: &ReportOptions,
) -> Result<AbReport, ReportError> {
    validate_rows(rows, tasks, options)?;
    validate_model(rows, tasks, a, false)?;
    validate_model(rows, tasks, b, false)?;
    if let Some(base) = baseline {
        validate_model(rows, tasks, base, true)?;
    }
    let bootstrap = BootstrapOptions {
        replicates: options.bootstrap_replicates,
        seed: options.seed,
        confidence: 1.0 - options.alpha,
    };
    let mut comparisons = Vec::with_capacity(tasks.len());
    for (t, task) in tasks.iter().enumerate() {
        let units = Units::new(rows, t, task);
        let (prep_a, prep_b) =
            (prepare(task, &units, &a.outputs[t], options), prepare(task, &units, &b.outputs[t], options));
        let names = metric_names(task, &units);
        let boot = if units.clusters.is_empty() {
            vec![None; names.len()]
        } else {
            metrics::paired_cluster_bootstrap_many(
                &units.clusters,
                &bootstrap,
                names.len(),
                |resample, out: &mut [MetricPair]| {
                    let weights = resample.row_weights();
                    let counts = Some(resample.cluster_counts());
                    let va = metric_values(task, &units, &prep_a, Some(&weights), counts, options);
                    let vb = metric_values(task, &units, &prep_b, Some(&weights), counts, options);
                    for (slot, (x, y)) in out.iter_mut().zip(va.into_iter().zip(vb)) {
                        *slot = (x, y);
                    }
                },
            )?
            .into_iter()
            .map(Some)
            .collect()
        };
        let eval_a = task_eval(rows, task, &units, &prep_a, options);
        let eval_b = task_eval(rows, task, &units, &prep_b, options);
        let metric_comparisons: Vec<MetricComparison> = names
            .iter()
            .zip(&boot)
            .map(|(&metric, result)| {
                let (va, vb) = (eval_a.metrics[&metric], eval_b.metrics[&metric]);
                MetricComparison {
                    metric,
                    higher_is_better: metric.higher_is_better(),
                    a: va,
                    b: vb,
                    delta: va.zip(vb).map(|(x, y)| y - x),
                    ci_low: result.and_then(|r| r.ci_low),
                    ci_high: result.and_then(|r| r.ci_high),
                    p_value: result.and_then(|r| r.p_value),
                    valid_replicates: result.map_or(0, |r| r.valid_replicates),
                }
            })
            .collect();

        let delong = (task.kind == TaskKind::Binary)
            .then(|| metrics::delong_test(&prep_a.preds, &prep_b.preds, &units.labels, 1.0 - options.alpha))
            .flatten()
            .map(|d| DelongReport {
                auc_a: finite(d.auc_a),
                auc_b: finite(d.auc_b),
                delta: finite(d.delta),
                std_error: finite(d.std_error),
                z: finite(d.z),
                p_value: finite(d.p_value),
                ci_low: finite(d.ci_low),
                ci_high: finite(d.ci_high),
            });
        let primary = Metric::primary(task.kind.task_type());
        let primary_row = metric_comparisons.iter().find(|m| m.metric == primary).expect("primary metric is listed");
        let higher_is_better = primary_row.higher_is_better.expect("primary metrics have a direction");
        let (verdict_p_value, verdict_test) = match &delong {
            Some(d) if d.p_value.is_some() => (d.p_value, VerdictTest::Delong),
            _ => (primary_row.p_value, VerdictTest::Bootstrap),
        };
        let verdict = match (primary_row.delta, verdict_p_value) {
            (Some(delta), Some(p)) if p < options.alpha && delta != 0.0 => {
                if is_improvement(delta, higher_is_better) {
                    Verdict::BBetter
                } else {
                    Verdict::BWorse
                }
            }
            _ => Verdict::NoSignificantDifference,
        };
        let multitask_gain = baseline.filter(|base| !base.outputs[t].is_empty()).map(|base| {
            let prep_base = prepare(task, &units, &base.outputs[t], options);
            let index = names.iter().position(|&n| n == primary).expect("primary metric is listed");
            let base_value = metric_values(task, &units, &prep_base, None, None, options)[index];
            let gain = |m: Option<f64>| {
                let (m, base) = (m?, base_value?);
                let raw = if higher_is_better { m - base } else { base - m };
                finite(raw / base.abs())
            };
            MultitaskGain {
                metric: primary,
                baseline: base_value,
                a_gain: gain(primary_row.a),
                b_gain: gain(primary_row.b),
            }
        });
        comparisons.push(TaskComparison {
            task: task.name.clone(),
            kind: task.kind.name().to_owned(),
            scope: task.scope,
            evaluated: units.evaluated,
            units: units.len(),
            primary_metric: primary,
            verdict,
            verdict_p_value,
            verdict_test,
            metrics: metric_comparisons,
            delong,
            multitask_gain,
            a: eval_a,
            b: eval_b,
        });
    }
    let tasks_with =
        |v: Verdict| comparisons.iter().filter(|c| c.verdict == v).map(|c| c.task.clone()).collect::<Vec<_>>();
    let (improved_tasks, degraded_tasks) = (tasks_with(Verdict::BBetter), tasks_with(Verdict::BWorse));
    Ok(AbReport {
        format_version: FORMAT_VERSION,
        report: "ab".to_owned(),
        model_a: model_info(a),
        model_b: model_info(b),
        baseline: baseline.map(model_info),
        options: *options,
        rows: rows.len(),
        seesaw: !improved_tasks.is_empty() && !degraded_tasks.is_empty(),
        improved_tasks,
        degraded_tasks,
        tasks: comparisons,
        expert_usage: ExpertUsagePair { a: expert_usage(rows, tasks, a), b: expert_usage(rows, tasks, b) },
        training: TrainingPair { a: a.history.clone(), b: b.history.clone() },
    })
}
