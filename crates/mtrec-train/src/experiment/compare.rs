//! Which configurations are better than their reference, by the A/B reports' verdict rule
//! ([`mtrec_metrics::verdict`]) with seeds as the units: per task, a paired t-test over seeds of
//! the primary metric (a configuration's run against the reference's run with the same seed),
//! the tasks' p-values adjusted by Benjamini–Hochberg, a verdict where the adjusted p is below
//! [`ALPHA`].
//!
//! Seeds, not rows or users, are the units here because a seed's run is one draw of everything
//! that varies between trainings (initialisation, batch order), which a report on one run's
//! test rows cannot see.

use std::collections::BTreeMap;

use mtrec_metrics::{benjamini_hochberg, paired_t_test, verdict, Verdict};
use mtrec_schema::{Metric, MetricKey};
use serde::{Deserialize, Serialize};

use super::RunResult;

/// The significance level of the verdicts: the false discovery rate over a comparison's tasks,
/// as in `mtrec ab`.
pub const ALPHA: f64 = 0.05;

/// The verdict rule in words, for `summary.json` and `summary.md`.
pub fn verdict_rule() -> String {
    format!(
        "Each configuration is compared with its reference (the baseline architecture under the same loss \
         strategy, else the first configuration) on each task's primary metric (AUC, RMSE, log loss) by a paired \
         t-test over seeds (the runs with the same seed paired); the tasks' p-values are adjusted by \
         Benjamini-Hochberg, controlling the false discovery rate at alpha = {ALPHA}, and a task is better or worse \
         when its adjusted p (q) is below alpha, as in mtrec ab."
    )
}

/// One configuration against its reference on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedComparison {
    /// The reference configuration.
    pub reference: String,
    pub metric: Metric,
    /// Seeds run by both.
    pub seeds: usize,
    /// Mean over those seeds of this configuration's metric minus the reference's.
    pub mean_delta: f64,
    /// The paired t-test's p-value; `None` with fewer than two seeds.
    pub p_value: Option<f64>,
    /// `p_value` adjusted by Benjamini–Hochberg over the tasks of this comparison.
    pub q_value: Option<f64>,
    /// `b_better`: this configuration is better than the reference.
    pub verdict: Verdict,
}

/// The reference of each configuration: the baseline architecture's configuration under the
/// same strategy when there is a baseline, else the first configuration.
pub(super) fn reference_of<'a>(
    config: &str,
    strategy: Option<&String>,
    configs: &'a [(String, String, Option<String>)],
    baseline: Option<&String>,
) -> Option<&'a str> {
    let reference = match baseline {
        Some(b) => configs.iter().find(|(_, arch, s)| arch == b && s.as_ref() == strategy)?,
        None => configs.first()?,
    };
    (reference.0 != config).then_some(reference.0.as_str())
}

/// Per task, `config` against `reference` on the task's primary metric.
pub(super) fn compare_with(
    runs: &[RunResult],
    config: &str,
    reference: &str,
    primary: &BTreeMap<String, Metric>,
) -> BTreeMap<String, SeedComparison> {
    let mut tests = Vec::new();
    for (task, &metric) in primary {
        let key = MetricKey::task(task, metric);
        // Pairs by seed: (reference's value, this configuration's value).
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for run in runs.iter().filter(|r| r.config == config) {
            let Some(&value) = run.metrics.get(&key) else { continue };
            let other = runs.iter().find(|r| r.config == reference && r.seed == run.seed);
            if let Some(&base) = other.and_then(|r| r.metrics.get(&key)) {
                a.push(base);
                b.push(value);
            }
        }
        if a.is_empty() {
            continue;
        }
        let mean_delta = b.iter().zip(&a).map(|(y, x)| y - x).sum::<f64>() / a.len() as f64;
        let p_value = paired_t_test(&a, &b).map(|t| t.p_value).filter(|p| p.is_finite());
        tests.push((task.clone(), metric, a.len(), mean_delta, p_value, key.higher_is_better()));
    }
    let q_values = benjamini_hochberg(&tests.iter().map(|t| t.4).collect::<Vec<_>>());
    tests
        .into_iter()
        .zip(q_values)
        .map(|((task, metric, seeds, mean_delta, p_value, higher_is_better), q_value)| {
            let comparison = SeedComparison {
                reference: reference.to_owned(),
                metric,
                seeds,
                mean_delta,
                p_value,
                q_value,
                verdict: verdict(Some(mean_delta), q_value, ALPHA, higher_is_better),
            };
            (task, comparison)
        })
        .collect()
}

/// A configuration's verdicts in a few words: "better: a (q 0.01); worse: b (q 0.03)", or
/// "no significant difference".
pub(super) fn describe(comparisons: &BTreeMap<String, SeedComparison>) -> String {
    let listed = |v: Verdict| {
        comparisons
            .iter()
            .filter(|(_, c)| c.verdict == v)
            .map(|(task, c)| format!("{task} (q {:.3})", c.q_value.unwrap_or(f64::NAN)))
            .collect::<Vec<_>>()
    };
    let (better, worse) = (listed(Verdict::BBetter), listed(Verdict::BWorse));
    let mut parts = Vec::new();
    if !better.is_empty() {
        parts.push(format!("better: {}", better.join(", ")));
    }
    if !worse.is_empty() {
        parts.push(format!("worse: {}", worse.join(", ")));
    }
    if parts.is_empty() {
        "no significant difference".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &str, seed: u64, click_auc: f64, dwell_rmse: f64) -> RunResult {
        RunResult {
            config: config.to_owned(),
            architecture: config.to_owned(),
            strategy: None,
            seed,
            bundle: Default::default(),
            epochs_run: 1,
            best_epoch: None,
            seconds: 0.0,
            metrics: [
                (MetricKey::task("click", Metric::Auc), click_auc),
                (MetricKey::task("dwell", Metric::Rmse), dwell_rmse),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn primary() -> BTreeMap<String, Metric> {
        [("click".to_owned(), Metric::Auc), ("dwell".to_owned(), Metric::Rmse)].into_iter().collect()
    }

    #[test]
    fn a_consistent_gain_over_seeds_is_a_verdict_after_the_adjustment() {
        // click: +0.010, +0.011, +0.012 over seeds: mean 0.011, SE 0.001/√3, t = 11√3 on 2 df,
        // p = 1 - t / sqrt(2 + t²) = 0.0030...; dwell: +0.01, -0.02, +0.005, far from significant.
        // With two tasks, q(click) = 2 p.
        let runs = vec![
            run("single", 1, 0.700, 0.50),
            run("single", 2, 0.710, 0.52),
            run("single", 3, 0.690, 0.51),
            run("mmoe", 3, 0.702, 0.515),
            run("mmoe", 1, 0.710, 0.51),
            run("mmoe", 2, 0.721, 0.50),
        ];
        let c = compare_with(&runs, "mmoe", "single", &primary());
        let t = 11.0 * 3f64.sqrt();
        let p = 1.0 - t / (2.0 + t * t).sqrt();
        let click = &c["click"];
        assert!((click.p_value.unwrap() - p).abs() < 1e-9, "{click:?}");
        assert!((click.q_value.unwrap() - 2.0 * p).abs() < 1e-9);
        assert!((click.mean_delta - 0.011).abs() < 1e-12);
        assert_eq!((click.verdict, click.seeds, click.reference.as_str()), (Verdict::BBetter, 3, "single"));
        assert_eq!(c["dwell"].verdict, Verdict::NoSignificantDifference);
        assert_eq!(describe(&c), format!("better: click (q {:.3})", 2.0 * p));
    }

    #[test]
    fn lower_rmse_is_better_and_one_seed_gives_no_verdict() {
        let runs = vec![
            run("single", 1, 0.7, 0.50),
            run("single", 2, 0.7, 0.52),
            run("single", 3, 0.7, 0.51),
            run("mmoe", 1, 0.7, 0.45),
            run("mmoe", 2, 0.7, 0.469),
            run("mmoe", 3, 0.7, 0.461),
        ];
        let c = compare_with(&runs, "mmoe", "single", &primary());
        assert_eq!(c["dwell"].verdict, Verdict::BBetter, "{:?}", c["dwell"]);
        assert_eq!((c["click"].p_value, c["click"].verdict), (Some(1.0), Verdict::NoSignificantDifference));
        let one_seed = compare_with(&runs[..4], "mmoe", "single", &primary());
        assert_eq!((one_seed["dwell"].seeds, one_seed["dwell"].p_value), (1, None));
        assert_eq!(describe(&one_seed), "no significant difference");
    }

    #[test]
    fn references_follow_the_baseline_and_strategy() {
        let configs: Vec<(String, String, Option<String>)> = [
            ("single+static", "single", "static"),
            ("single+dwa", "single", "dwa"),
            ("mmoe+static", "mmoe", "static"),
            ("mmoe+dwa", "mmoe", "dwa"),
        ]
        .iter()
        .map(|(c, a, s)| (c.to_string(), a.to_string(), Some(s.to_string())))
        .collect();
        let baseline = Some("single".to_owned());
        let dwa = Some("dwa".to_owned());
        assert_eq!(reference_of("mmoe+dwa", dwa.as_ref(), &configs, baseline.as_ref()), Some("single+dwa"));
        assert_eq!(reference_of("single+dwa", dwa.as_ref(), &configs, baseline.as_ref()), None);
        assert_eq!(reference_of("mmoe+dwa", dwa.as_ref(), &configs, None), Some("single+static"));
    }
}
