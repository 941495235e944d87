//! Calibration of the A/B verdicts by simulation: many experiments on clustered synthetic data
//! ([`data::experiment`]: users with random effects, 10-100 rows each by default), each run
//! through [`crate::compare`] exactly as `mtrec ab` runs it, and the share of experiments in
//! which each verdict, each test and the seesaw flag fired.
//!
//! With the two models drawn from one distribution (A/A) every significant verdict is a false
//! positive, so the shares estimate false-positive rates, to be compared with `alpha` within
//! binomial bounds ([`binomial_interval`]). With extra noise in model A's `click` scores, B is
//! truly better on `click` and the share of `b_better` verdicts there is the power.

mod data;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::ReportError;
use crate::input::ReportOptions;
use crate::report::{Verdict, VerdictTest};

/// One simulated setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub users: usize,
    /// Rows per user are uniform on `min_rows_per_user..=max_rows_per_user`.
    pub min_rows_per_user: usize,
    pub max_rows_per_user: usize,
    /// Standard deviation (logit scale) of the per-user effects: each user's label intercept
    /// and each model's offset on the user. 0: rows of one user are independent.
    pub user_effect: f64,
    /// Extra noise (logit SD) in model A's `click` scores: 0 for A/A; above 0, B is better.
    pub click_extra_noise: f64,
    pub experiments: usize,
    /// Bootstrap replicates inside each simulated report.
    pub bootstrap_replicates: usize,
    pub alpha: f64,
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            users: 200,
            min_rows_per_user: 10,
            max_rows_per_user: 100,
            user_effect: 0.5,
            click_extra_noise: 0.0,
            experiments: 1000,
            bootstrap_replicates: 200,
            alpha: 0.05,
            seed: 0,
        }
    }
}

/// One task's outcomes over the experiments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCalibration {
    pub task: String,
    /// The test behind the verdict in the first experiment (every experiment uses the same).
    pub test: VerdictTest,
    /// Experiments where the verdict test's own p-value is below alpha (before the adjustment).
    pub test_significant: usize,
    /// Verdicts, after the adjustment over tasks.
    pub b_better: usize,
    pub b_worse: usize,
    /// Binary tasks: experiments where DeLong's test with rows independent, and the user
    /// bootstrap of the AUC, have p below alpha.
    pub row_independent_delong: Option<usize>,
    pub auc_bootstrap: Option<usize>,
    /// Means over experiments of the primary metric's delta (B - A), the design effect and the
    /// minimum detectable effect.
    pub mean_delta: f64,
    pub mean_design_effect: f64,
    pub mean_mde: f64,
}

impl TaskCalibration {
    /// Experiments with a significant verdict, either way.
    pub fn significant(&self) -> usize {
        self.b_better + self.b_worse
    }
}

/// What a scenario's experiments gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub scenario: Scenario,
    pub tasks: Vec<TaskCalibration>,
    /// Experiments where some task had a significant verdict (the family-wise error under A/A).
    pub any_verdict: usize,
    pub seesaw: usize,
}

/// One task's outcome in one experiment.
struct TaskOutcome {
    test: VerdictTest,
    verdict: Verdict,
    /// The verdict test, DeLong with rows independent, the AUC bootstrap: p below alpha.
    significant: [Option<bool>; 3],
    delta: Option<f64>,
    design_effect: Option<f64>,
    mde: Option<f64>,
}

/// One experiment's outcome.
struct Outcome {
    tasks: Vec<TaskOutcome>,
    seesaw: bool,
}

fn validate(s: &Scenario) -> Result<(), ReportError> {
    let bad = |what: &str| Err(ReportError::Options(format!("calibration scenario: {what}")));
    if s.users < 2 {
        return bad("users must be at least 2");
    }
    if s.min_rows_per_user == 0 || s.min_rows_per_user > s.max_rows_per_user {
        return bad("rows per user must satisfy 1 <= min <= max");
    }
    if !(s.user_effect >= 0.0 && s.user_effect.is_finite() && s.click_extra_noise >= 0.0) {
        return bad("user_effect and click_extra_noise must be finite and non-negative");
    }
    if s.experiments == 0 {
        return bad("experiments must be positive");
    }
    Ok(())
}

/// Runs a scenario's experiments (in parallel; the result does not depend on thread count:
/// experiment `i` draws from ChaCha8 seeded with `seed` on stream `i`, and bootstraps with
/// seed `i`).
pub fn run(scenario: &Scenario) -> Result<Calibration, ReportError> {
    validate(scenario)?;
    let tasks = data::tasks();
    let options = ReportOptions {
        bootstrap_replicates: scenario.bootstrap_replicates,
        alpha: scenario.alpha,
        ..ReportOptions::default()
    };
    let outcomes: Vec<Outcome> = (0..scenario.experiments)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
            rng.set_stream(i as u64);
            let (rows, a, b) = data::experiment(scenario, &mut rng);
            let report = crate::compare(&rows, &tasks, &a, &b, None, &ReportOptions { seed: i as u64, ..options })?;
            let below = |p: Option<f64>| p.map(|p| p < scenario.alpha);
            let outcomes = report
                .tasks
                .iter()
                .map(|t| {
                    let primary = t.metrics.iter().find(|m| m.metric == t.primary_metric);
                    let binary = t.delong.is_some();
                    TaskOutcome {
                        test: t.verdict_test,
                        verdict: t.verdict,
                        significant: [
                            below(t.verdict_p_value),
                            below(t.delong.and_then(|d| d.p_value)),
                            below(primary.and_then(|m| m.p_value)).filter(|_| binary),
                        ],
                        delta: primary.and_then(|m| m.delta),
                        design_effect: t.design_effect,
                        mde: t.min_detectable_effect,
                    }
                })
                .collect();
            Ok(Outcome { tasks: outcomes, seesaw: report.seesaw })
        })
        .collect::<Result<_, ReportError>>()?;
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let task = |t: usize, name: &str| {
        let count_task = |f: &dyn Fn(&TaskOutcome) -> bool| count(&|o| f(&o.tasks[t]));
        let count_test = |i: usize| {
            let defined = outcomes.iter().any(|o| o.tasks[t].significant[i].is_some());
            defined.then(|| count_task(&|o| o.significant[i] == Some(true)))
        };
        let mean = |f: &dyn Fn(&TaskOutcome) -> Option<f64>| {
            let values: Vec<f64> = outcomes.iter().filter_map(|o| f(&o.tasks[t])).filter(|v| v.is_finite()).collect();
            values.iter().sum::<f64>() / values.len().max(1) as f64
        };
        TaskCalibration {
            task: name.to_owned(),
            test: outcomes[0].tasks[t].test,
            test_significant: count_test(0).unwrap_or(0),
            b_better: count_task(&|o| o.verdict == Verdict::BBetter),
            b_worse: count_task(&|o| o.verdict == Verdict::BWorse),
            row_independent_delong: count_test(1),
            auc_bootstrap: count_test(2),
            mean_delta: mean(&|o| o.delta),
            mean_design_effect: mean(&|o| o.design_effect),
            mean_mde: mean(&|o| o.mde),
        }
    };
    Ok(Calibration {
        scenario: *scenario,
        tasks: tasks.iter().enumerate().map(|(t, spec)| task(t, &spec.name)).collect(),
        any_verdict: count(&|o| o.tasks.iter().any(|t| t.verdict != Verdict::NoSignificantDifference)),
        seesaw: count(&|o| o.seesaw),
    })
}

/// The central `coverage` interval of a Binomial(`n`, `p`) count: the smallest `low` and largest
/// `high` with `P(X < low) <= (1 - coverage) / 2` and `P(X > high) <= (1 - coverage) / 2`.
pub fn binomial_interval(n: usize, p: f64, coverage: f64) -> (usize, usize) {
    let tail = (1.0 - coverage) / 2.0;
    // Probabilities from log space, so that large n does not underflow (1 - p)^n.
    let (ln_p, ln_q) = (p.ln(), (1.0 - p).ln());
    let mut ln_pmf = n as f64 * ln_q;
    let mut pmf = Vec::with_capacity(n + 1);
    for k in 0..=n {
        pmf.push(ln_pmf.exp());
        ln_pmf += ((n - k) as f64 / (k + 1) as f64).ln() + ln_p - ln_q;
    }
    let (mut low, mut below) = (0, 0.0);
    while low < n && below + pmf[low] <= tail {
        below += pmf[low];
        low += 1;
    }
    let (mut high, mut above) = (n, 0.0);
    while high > 0 && above + pmf[high] <= tail {
        above += pmf[high];
        high -= 1;
    }
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_interval_by_hand() {
        // Binomial(4, 0.5): P(0) = P(4) = 1/16, P(1) = P(3) = 4/16, P(2) = 6/16. An 80%
        // interval leaves at most 10% per tail: only 0 and 4 fit, so [1, 3].
        assert_eq!(binomial_interval(4, 0.5, 0.8), (1, 3));
        // 90%: 5% per tail, and 1/16 > 5%: nothing is cut.
        assert_eq!(binomial_interval(4, 0.5, 0.9), (0, 4));
        // Exact sums of math.comb(n, k) p^k (1 - p)^(n - k) in Python, outside mtrec.
        assert_eq!(binomial_interval(1000, 0.05, 0.999), (29, 74));
        assert_eq!(binomial_interval(1000, 0.05, 0.95), (37, 64));
        assert_eq!(binomial_interval(300, 0.05, 0.999), (4, 29));
    }

    #[test]
    fn bad_scenarios_are_errors() {
        for bad in [
            Scenario { users: 1, ..Scenario::default() },
            Scenario { min_rows_per_user: 5, max_rows_per_user: 4, ..Scenario::default() },
            Scenario { user_effect: f64::NAN, ..Scenario::default() },
            Scenario { experiments: 0, ..Scenario::default() },
        ] {
            assert!(matches!(run(&bad), Err(ReportError::Options(_))), "{bad:?}");
        }
        let no_bootstrap = Scenario { experiments: 1, bootstrap_replicates: 0, ..Scenario::default() };
        assert!(matches!(run(&no_bootstrap), Err(ReportError::Options(_))));
    }

    #[test]
    fn the_models_are_identical_in_distribution_but_not_in_scores() {
        let scenario = Scenario { users: 30, experiments: 1, ..Scenario::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (rows, a, b) = data::experiment(&scenario, &mut rng);
        assert!(rows.len() >= 300 && rows.len() <= 3000);
        assert_ne!(a.outputs[0], b.outputs[0]);
        let segment = &rows.labels[3];
        assert!(rows.user.windows(2).zip(segment.windows(2)).all(|(u, y)| u[0] != u[1] || y[0] == y[1]));
    }
}
