//! Computing reports: validation, evaluation units, metrics per model, the A/B comparison
//! (paired cluster bootstrap, clustered DeLong, verdicts, seesaw, multi-task gain), and its
//! online form for two arms of an experiment ([`compare_online`]).
//!
//! Units: a task is evaluated over its labeled rows (mask != 0). A `user`- (`item`-) scope
//! task whose label is constant over each user's (item's) labeled rows is evaluated once per
//! user (item): the unit's label is that constant and its prediction the mean of the model's
//! outputs over the same labeled rows (per output, so multiclass probabilities stay a
//! distribution). Otherwise each labeled row is a unit.
//!
//! Clusters: per-row units are clustered by user; per-user and per-item units are each their
//! own cluster (an item is not nested in one user). The bootstrap resamples clusters, and
//! the clustered DeLong test and design effects take them as the independent units.

mod online;
mod units;
mod verdict;

pub use online::{compare_online, OnlineArm, OnlineInput};

use mtrec_metrics::{self as metrics, MetricPair};
use mtrec_schema::Metric;

use crate::error::ReportError;
use crate::input::{entropy, EvalRows, ModelScores, ReportOptions, ReportTask, TaskKind};
use crate::report::*;
use units::{metric_names, metric_values, prepare, task_eval, Units};
use verdict::{task_test, verdict_rule};

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
    if !(options.power > 0.0 && options.power < 1.0) {
        return bad("power must lie in (0, 1)");
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
            if let Some(g) = gates.as_ref().filter(|g| g.rows > 0 && g.weights.is_empty()) {
                return Err(ReportError::Gates {
                    model: model.name.clone(),
                    task: tasks[t].name.clone(),
                    rows: g.rows,
                });
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

/// Gate usage per task over the task's labeled rows.
fn expert_usage(tasks: &[ReportTask], model: &ModelScores) -> Vec<ExpertUsage> {
    model
        .gates
        .iter()
        .enumerate()
        .filter_map(|(t, gates)| {
            let g = gates.as_ref()?;
            let count = g.rows as f64;
            let mean_weight: Vec<f64> = g.weights.iter().map(|w| w / count.max(1.0)).collect();
            Some(ExpertUsage {
                task: tasks[t].name.clone(),
                mean_entropy: finite(g.entropy / count),
                entropy_of_mean: (g.rows > 0).then(|| entropy(mean_weight.iter().copied())),
                max_entropy: (g.weights.len() as f64).ln(),
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
        expert_usage: expert_usage(tasks, model),
        history: model.history.clone(),
    })
}

/// Compares model B against model A on every task, optionally against a single-task
/// `baseline` (whose empty task outputs mean "no baseline for this task"). Verdicts follow
/// [`verdict`]'s rule.
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
    let bootstrap = options.bootstrap();
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
        let metric_comparisons = metric_comparisons(&names, &boot, &eval_a, &eval_b);

        let primary = Metric::primary(task.kind.task_type());
        let primary_row = metric_comparisons.iter().find(|m| m.metric == primary).expect("primary metric is listed");
        let higher_is_better = primary_row.higher_is_better.expect("primary metrics have a direction");
        let test = task_test(task, &units, &prep_a, &prep_b, primary_row, options);
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
            clusters: units.clusters.len(),
            primary_metric: primary,
            // Decided below, once every task's p-value is known.
            verdict: Verdict::NoSignificantDifference,
            verdict_test: test.test,
            verdict_reason: test.reason,
            verdict_p_value: test.p_value,
            verdict_q_value: None,
            verdict_ci_low: test.ci.0,
            verdict_ci_high: test.ci.1,
            verdict_std_error: test.std_error,
            design_effect: test.design_effect.and_then(finite),
            // Set below, once the number of tested tasks is known.
            min_detectable_effect: None,
            disagreement: test.disagreement,
            metrics: metric_comparisons,
            delong: test.delong,
            clustered_delong: test.clustered_delong,
            multitask_gain,
            a: eval_a,
            b: eval_b,
        });
    }
    decide_verdicts(&mut comparisons, options);
    let (improved_tasks, degraded_tasks) = improved_and_degraded(&comparisons);
    Ok(AbReport {
        format_version: FORMAT_VERSION,
        report: "ab".to_owned(),
        model_a: model_info(a),
        model_b: model_info(b),
        baseline: baseline.map(model_info),
        options: *options,
        rows: rows.len(),
        verdict_rule: verdict_rule(options),
        seesaw: !improved_tasks.is_empty() && !degraded_tasks.is_empty(),
        improved_tasks,
        degraded_tasks,
        tasks: comparisons,
        expert_usage: ExpertUsagePair { a: expert_usage(tasks, a), b: expert_usage(tasks, b) },
        training: TrainingPair { a: a.history.clone(), b: b.history.clone() },
        online: None,
    })
}

/// Each metric of A against B: the point values of the two evaluations, the bootstrap's interval.
fn metric_comparisons(
    names: &[Metric],
    boot: &[Option<metrics::BootstrapResult>],
    eval_a: &TaskEval,
    eval_b: &TaskEval,
) -> Vec<MetricComparison> {
    names
        .iter()
        .zip(boot)
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
                std_error: result.and_then(|r| r.std_error).and_then(finite),
                valid_replicates: result.map_or(0, |r| r.valid_replicates),
            }
        })
        .collect()
}

/// The tasks whose verdict is `b_better`, and those whose verdict is `b_worse`.
fn improved_and_degraded(comparisons: &[TaskComparison]) -> (Vec<String>, Vec<String>) {
    let tasks_with =
        |v: Verdict| comparisons.iter().filter(|c| c.verdict == v).map(|c| c.task.clone()).collect::<Vec<_>>();
    (tasks_with(Verdict::BBetter), tasks_with(Verdict::BWorse))
}

/// Adjusts the tasks' verdict p-values by Benjamini–Hochberg (the family: every task's primary
/// metric), decides each verdict from its adjusted p-value, and states the minimum detectable
/// effect at the level Benjamini–Hochberg applies to an effect on one task alone among the `m`
/// tested, `alpha / m`: the effect is then detected with at least `power` however many other
/// tasks differ.
fn decide_verdicts(comparisons: &mut [TaskComparison], options: &ReportOptions) {
    let p_values: Vec<Option<f64>> = comparisons.iter().map(|c| c.verdict_p_value).collect();
    let tested = p_values.iter().flatten().count().max(1);
    for (c, q) in comparisons.iter_mut().zip(metrics::benjamini_hochberg(&p_values)) {
        let primary = c.metrics.iter().find(|m| m.metric == c.primary_metric).expect("primary metric is listed");
        let higher_is_better = primary.higher_is_better.expect("primary metrics have a direction");
        c.verdict_q_value = q;
        c.verdict = metrics::verdict(primary.delta, q, options.alpha, higher_is_better);
        c.min_detectable_effect = c
            .verdict_std_error
            .map(|se| metrics::min_detectable_effect(se, options.alpha / tested as f64, options.power))
            .and_then(finite);
    }
}
