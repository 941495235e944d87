//! The A/B report of an online experiment: the arms scored different users, so the paired
//! comparison becomes a two-sample one. Per task and metric, the two-sample bootstrap resamples
//! each arm's users independently; verdicts follow the offline rule (the primary metric's
//! p-values adjusted by Benjamini–Hochberg over the tasks). The report adds the arms' sizes and
//! the sample-ratio-mismatch check of their user counts.

use mtrec_metrics::{self as metrics, MetricPair};
use mtrec_schema::Metric;

use super::units::{metric_names, metric_values, prepare, task_eval, Units};
use super::{
    decide_verdicts, expert_usage, improved_and_degraded, metric_comparisons, model_info, validate_model, validate_rows,
};
use crate::error::ReportError;
use crate::input::{EvalRows, ModelScores, ReportOptions, ReportTask};
use crate::report::*;

/// One arm: its rows (each an exposed pair with its outcome), the outputs it was served, and
/// its sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineArm {
    pub rows: EvalRows,
    pub scores: ModelScores,
    pub summary: ArmSummary,
}

/// An experiment's two arms (A stable, B candidate) and what was left out of them.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineInput {
    pub tasks: Vec<ReportTask>,
    pub a: OnlineArm,
    pub b: OnlineArm,
    /// The configured share of users routed to B.
    pub expected_share_b: f64,
    /// The sample-ratio check fails below this p-value.
    pub srm_alpha: f64,
    pub unmatched_exposures: usize,
    pub unmatched_outcomes: usize,
    pub excluded_exposures: usize,
}

/// The verdict rule of an online report, in words.
fn online_verdict_rule(options: &ReportOptions) -> String {
    format!(
        "The arms scored different users, so each task is judged on its primary metric (AUC for binary tasks, RMSE \
         for regression, log loss for multiclass) by the two-sample bootstrap resampling users within each arm. The \
         tasks' p-values are adjusted by Benjamini-Hochberg, controlling the false discovery rate at alpha = {alpha}; \
         a task is b_better or b_worse when its adjusted p (q) is below alpha. Seesaw: one task b_better and another \
         b_worse. MDE: the smallest true delta detected with power {power} even when no other task differs, \
         (z_(1-alpha/(2m)) + z_power) x the bootstrap's standard error for m tasks tested.",
        alpha = options.alpha,
        power = options.power
    )
}

/// Compares the candidate arm (B) against the stable arm (A).
pub fn compare_online(input: &OnlineInput, options: &ReportOptions) -> Result<AbReport, ReportError> {
    let (tasks, a, b) = (&input.tasks, &input.a, &input.b);
    validate_rows(&a.rows, tasks, options)?;
    validate_rows(&b.rows, tasks, options)?;
    validate_model(&a.rows, tasks, &a.scores, false)?;
    validate_model(&b.rows, tasks, &b.scores, false)?;
    let bootstrap = options.bootstrap();
    let mut comparisons = Vec::with_capacity(tasks.len());
    for (t, task) in tasks.iter().enumerate() {
        let (units_a, units_b) = (Units::new(&a.rows, t, task), Units::new(&b.rows, t, task));
        let prep_a = prepare(task, &units_a, &a.scores.outputs[t], options);
        let prep_b = prepare(task, &units_b, &b.scores.outputs[t], options);
        // Both arms' units are per row (or both per user or item), so the metrics are the same.
        let names = metric_names(task, &units_a);
        let boot = if units_a.clusters.is_empty() || units_b.clusters.is_empty() {
            vec![None; names.len()]
        } else {
            metrics::two_sample_cluster_bootstrap_many(
                &units_a.clusters,
                &units_b.clusters,
                &bootstrap,
                names.len(),
                |resample_a, resample_b, out: &mut [MetricPair]| {
                    let (weights_a, weights_b) = (resample_a.row_weights(), resample_b.row_weights());
                    let counts_a = Some(resample_a.cluster_counts());
                    let counts_b = Some(resample_b.cluster_counts());
                    let va = metric_values(task, &units_a, &prep_a, Some(&weights_a), counts_a, options);
                    let vb = metric_values(task, &units_b, &prep_b, Some(&weights_b), counts_b, options);
                    for (slot, pair) in out.iter_mut().zip(va.into_iter().zip(vb)) {
                        *slot = pair;
                    }
                },
            )?
            .into_iter()
            .map(Some)
            .collect()
        };
        let eval_a = task_eval(&a.rows, task, &units_a, &prep_a, options);
        let eval_b = task_eval(&b.rows, task, &units_b, &prep_b, options);
        let metric_comparisons = metric_comparisons(&names, &boot, &eval_a, &eval_b);
        let primary = Metric::primary(task.kind.task_type());
        let row = metric_comparisons.iter().find(|m| m.metric == primary).expect("primary metric is listed");
        let reason = format!(
            "{primary} by the two-sample bootstrap resampling users within each arm ({} and {} users, {} replicates), \
             as the arms scored different users",
            units_a.clusters.len(),
            units_b.clusters.len(),
            options.bootstrap_replicates
        );
        comparisons.push(TaskComparison {
            task: task.name.clone(),
            kind: task.kind.name().to_owned(),
            scope: task.scope,
            evaluated: units_a.evaluated,
            units: units_a.len() + units_b.len(),
            clusters: units_a.clusters.len() + units_b.clusters.len(),
            primary_metric: primary,
            verdict: Verdict::NoSignificantDifference,
            verdict_test: VerdictTest::TwoSampleBootstrap,
            verdict_reason: reason,
            verdict_p_value: row.p_value,
            verdict_q_value: None,
            verdict_ci_low: row.ci_low,
            verdict_ci_high: row.ci_high,
            verdict_std_error: row.std_error,
            design_effect: None,
            min_detectable_effect: None,
            disagreement: None,
            metrics: metric_comparisons,
            delong: None,
            clustered_delong: None,
            multitask_gain: None,
            a: eval_a,
            b: eval_b,
        });
    }
    decide_verdicts(&mut comparisons, options);
    let (improved_tasks, degraded_tasks) = improved_and_degraded(&comparisons);
    let counts = [a.summary.users as u64, b.summary.users as u64];
    let sample_ratio = metrics::sample_ratio_mismatch(counts, input.expected_share_b);
    Ok(AbReport {
        format_version: FORMAT_VERSION,
        report: "ab".to_owned(),
        model_a: model_info(&a.scores),
        model_b: model_info(&b.scores),
        baseline: None,
        options: *options,
        rows: a.rows.len() + b.rows.len(),
        verdict_rule: online_verdict_rule(options),
        seesaw: !improved_tasks.is_empty() && !degraded_tasks.is_empty(),
        improved_tasks,
        degraded_tasks,
        tasks: comparisons,
        expert_usage: ExpertUsagePair { a: expert_usage(tasks, &a.scores), b: expert_usage(tasks, &b.scores) },
        training: TrainingPair::default(),
        online: Some(OnlineExperiment {
            arms: vec![a.summary.clone(), b.summary.clone()],
            sample_ratio_mismatch: sample_ratio.is_some_and(|s| s.p_value < input.srm_alpha),
            sample_ratio,
            srm_alpha: input.srm_alpha,
            unmatched_exposures: input.unmatched_exposures,
            unmatched_outcomes: input.unmatched_outcomes,
            excluded_exposures: input.excluded_exposures,
        }),
    })
}
