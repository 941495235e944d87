//! The verdict rule of an A/B report. Per task, on its primary metric:
//!
//! - AUC: DeLong's test with units clustered by user (Obuchowski; see
//!   [`mtrec_metrics::clustered`]) when some user holds more than one unit, DeLong's own test
//!   when each cluster holds one (they are then equal); the paired bootstrap when neither is
//!   defined.
//! - RMSE and log loss: the paired bootstrap resampling users (items for per-item units).
//!
//! [`super::compare`] adjusts the tasks' p-values by Benjamini–Hochberg and decides with
//! [`mtrec_metrics::verdict`]. The design effect compares the delta's variance with units
//! clustered against units independent: Obuchowski's against DeLong's for AUC, and for RMSE
//! and log loss the same ratio for their linearisation (a mean of per-unit contributions).

use mtrec_metrics::{self as metrics, ClusteredDelongTest, DelongTest};

use super::units::{Prepared, Units};
use crate::input::{ReportOptions, ReportTask, TaskKind};
use crate::render::fmt_p;
use crate::report::{finite, DelongReport, Evaluated, MetricComparison, VerdictTest};

/// What one task's verdict rests on, before the adjustment over tasks.
pub(super) struct TaskTest {
    pub test: VerdictTest,
    pub reason: String,
    pub p_value: Option<f64>,
    pub ci: (Option<f64>, Option<f64>),
    pub std_error: Option<f64>,
    pub design_effect: Option<f64>,
    pub delong: Option<DelongReport>,
    pub clustered_delong: Option<DelongReport>,
    pub disagreement: Option<String>,
}

/// The verdict rule in words, for the report's `verdict_rule`.
pub(super) fn verdict_rule(options: &ReportOptions) -> String {
    format!(
        "Each task is judged on its primary metric (AUC for binary tasks, RMSE for regression, log loss for \
         multiclass). AUC: DeLong's test with units clustered by user (Obuchowski), which is DeLong's own test \
         when every user holds one unit; RMSE and log loss: the paired bootstrap resampling users (items for \
         per-item units). The tasks' p-values are adjusted by Benjamini-Hochberg, controlling the false discovery \
         rate at alpha = {alpha}; a task is b_better or b_worse when its adjusted p (q) is below alpha. Seesaw: one \
         task b_better and another b_worse. MDE: the smallest true delta detected with power {power} even when no \
         other task differs, (z_(1-alpha/(2m)) + z_power) x the test's standard error for m tasks tested.",
        alpha = options.alpha,
        power = options.power
    )
}

/// What the units are clustered by, singular and plural: items for per-item units, else users.
fn cluster_nouns(units: &Units) -> (&'static str, &'static str) {
    match units.evaluated {
        Evaluated::PerItem => ("item", "items"),
        _ => ("user", "users"),
    }
}

fn delong_report(d: &DelongTest) -> DelongReport {
    DelongReport {
        auc_a: finite(d.auc_a),
        auc_b: finite(d.auc_b),
        delta: finite(d.delta),
        std_error: finite(d.std_error),
        z: finite(d.z),
        p_value: finite(d.p_value),
        ci_low: finite(d.ci_low),
        ci_high: finite(d.ci_high),
    }
}

/// The test behind one task's verdict. `primary` carries the bootstrap's figures for the
/// primary metric.
pub(super) fn task_test(
    task: &ReportTask,
    units: &Units,
    a: &Prepared,
    b: &Prepared,
    primary: &MetricComparison,
    options: &ReportOptions,
) -> TaskTest {
    let confidence = 1.0 - options.alpha;
    let clusters = units.clusters.len();
    let (one, noun) = cluster_nouns(units);
    let singletons = clusters == units.len();
    let bootstrap_reason = |why: &str| {
        format!(
            "{} by the paired bootstrap resampling {clusters} {noun} ({} replicates), {why}",
            primary.metric, options.bootstrap_replicates
        )
    };
    let bootstrap = |reason: String, design_effect: Option<f64>| TaskTest {
        test: VerdictTest::Bootstrap,
        reason,
        p_value: primary.p_value,
        ci: (primary.ci_low, primary.ci_high),
        std_error: primary.std_error,
        design_effect,
        delong: None,
        clustered_delong: None,
        disagreement: None,
    };
    match &task.kind {
        TaskKind::Binary => {
            let clustered =
                metrics::clustered_delong_test(&a.preds, &b.preds, &units.labels, &units.clusters, confidence);
            let Some(c) = clustered else {
                let mut fallback = bootstrap(
                    bootstrap_reason(&format!(
                        "as DeLong's clustered test needs two {noun} with positives and two with negatives"
                    )),
                    None,
                );
                fallback.delong =
                    metrics::delong_test(&a.preds, &b.preds, &units.labels, confidence).map(|d| delong_report(&d));
                return fallback;
            };
            let (test, reason) = if singletons {
                let why = match units.evaluated {
                    Evaluated::PerRow => "every user has one row, so rows are independent".to_owned(),
                    _ => format!("one unit per {one}, so units are independent"),
                };
                (VerdictTest::Delong, format!("auc by DeLong's test: {why}"))
            } else {
                let why =
                    format!("{} rows from {clusters} {noun}, and a {one}'s rows are not independent", units.len());
                (VerdictTest::ClusteredDelong, format!("auc by DeLong's test clustered by user (Obuchowski): {why}"))
            };
            TaskTest {
                test,
                reason,
                p_value: finite(c.clustered.p_value),
                ci: (finite(c.clustered.ci_low), finite(c.clustered.ci_high)),
                std_error: finite(c.clustered.std_error),
                design_effect: c.design_effect,
                delong: Some(delong_report(&c.row_independent)),
                clustered_delong: Some(delong_report(&c.clustered)),
                disagreement: disagreement(&c, singletons, primary.p_value, noun, options),
            }
        }
        _ => {
            let design_effect = linearised(task, units, a, b)
                .and_then(|contributions| metrics::mean_variance(&contributions, &units.clusters))
                .and_then(|v| v.design_effect());
            let why = if singletons {
                format!("one unit per {one}")
            } else {
                format!("which keeps each {one}'s rows together")
            };
            bootstrap(bootstrap_reason(&why), design_effect)
        }
    }
}

/// Per-unit contributions whose mean moves like the primary metric's delta: for RMSE,
/// `e_b² / (2 RMSE_b) - e_a² / (2 RMSE_a)`; for log loss, the per-unit loss of B minus A's.
fn linearised(task: &ReportTask, units: &Units, a: &Prepared, b: &Prepared) -> Option<Vec<f64>> {
    let labels = &units.labels;
    match &task.kind {
        TaskKind::Regression { .. } => {
            let squared = |p: &Prepared| -> Vec<f64> {
                p.preds.iter().zip(labels).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).collect()
            };
            let (sa, sb) = (squared(a), squared(b));
            let rmse = |s: &[f64]| (s.iter().sum::<f64>() / s.len().max(1) as f64).sqrt();
            let (ra, rb) = (rmse(&sa), rmse(&sb));
            (ra > 0.0 && rb > 0.0).then(|| sa.iter().zip(&sb).map(|(x, y)| y / (2.0 * rb) - x / (2.0 * ra)).collect())
        }
        TaskKind::Multiclass { classes } => {
            let width = classes.len();
            let loss = |p: &Prepared, unit: usize| {
                let y = labels[unit] as usize;
                -f64::from(p.preds[unit * width + y]).clamp(1e-7, 1.0).ln()
            };
            Some((0..units.len()).map(|u| loss(b, u) - loss(a, u)).collect())
        }
        TaskKind::Binary => None,
    }
}

/// The note when DeLong with units independent and the clustered tests (clustered DeLong, the
/// cluster bootstrap) fall on different sides of `alpha`.
fn disagreement(
    c: &ClusteredDelongTest,
    singletons: bool,
    bootstrap_p: Option<f64>,
    noun: &str,
    options: &ReportOptions,
) -> Option<String> {
    let mut tests = vec![("DeLong with units independent".to_owned(), finite(c.row_independent.p_value))];
    if !singletons {
        tests.push(("clustered DeLong".to_owned(), finite(c.clustered.p_value)));
    }
    tests.push((format!("the bootstrap resampling {noun}"), bootstrap_p));
    let listed = |significant: bool| {
        tests
            .iter()
            .filter_map(|(name, p)| p.filter(|&p| (p < options.alpha) == significant).map(|p| (name, p)))
            .map(|(name, p)| format!("{name} (p {})", fmt_p(Some(p))))
            .collect::<Vec<_>>()
    };
    let (yes, no) = (listed(true), listed(false));
    if yes.is_empty() || no.is_empty() {
        return None;
    }
    let design = c.design_effect.map_or_else(String::new, |d| format!(" Design effect {d:.2}."));
    Some(format!(
        "Tests disagree at alpha = {} before the adjustment: significant by {}; not by {}.{design}",
        options.alpha,
        yes.join(", "),
        no.join(", ")
    ))
}
