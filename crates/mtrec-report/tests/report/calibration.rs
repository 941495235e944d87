//! The verdicts' false-positive rates under A/A and their power, by simulation on clustered
//! synthetic data (a few hundred experiments; `benches/ab_calibration.sh` runs thousands).

use mtrec_report::calibration::{binomial_interval, run, Scenario};
use mtrec_report::VerdictTest;

/// Strong per-user effects, where DeLong's row-independent test is far too liberal.
fn clustered(experiments: usize) -> Scenario {
    Scenario { users: 100, user_effect: 1.0, experiments, bootstrap_replicates: 100, seed: 21, ..Scenario::default() }
}

#[test]
fn aa_false_positive_rates_stay_within_binomial_bounds() {
    let n = 300;
    let c = run(&clustered(n)).unwrap();
    // A 99.9% interval for a Binomial(300, 0.05) count: a calibrated test falls outside it
    // once in a thousand runs; the seed is fixed, so the outcome is too.
    let (low, high) = binomial_interval(n, 0.05, 0.999);
    let within = |count: usize, what: &str| {
        assert!((low..=high).contains(&count), "{what}: {count} of {n} not in [{low}, {high}]")
    };
    // Every verdict test on its own: clustered DeLong (click, like), the user bootstrap
    // (spend), DeLong on one unit per user (segment); and the bootstrap of click's AUC.
    let tests: Vec<VerdictTest> = c.tasks.iter().map(|t| t.test).collect();
    assert_eq!(
        tests,
        [VerdictTest::ClusteredDelong, VerdictTest::ClusteredDelong, VerdictTest::Bootstrap, VerdictTest::Delong]
    );
    for t in &c.tasks {
        within(t.test_significant, &format!("{} by {}", t.task, t.test.as_str()));
        // Verdicts are adjusted over four tasks, so each may only be more conservative.
        assert!(t.significant() <= high, "{}: {} false verdicts of {n}", t.task, t.significant());
    }
    let click = &c.tasks[0];
    within(click.auc_bootstrap.unwrap(), "user bootstrap of click's AUC");
    // Under A/A every verdict is false: Benjamini-Hochberg bounds the family-wise rate by alpha,
    // and so the seesaw's, which needs two verdicts.
    assert!(c.any_verdict <= high, "some verdict in {} of {n}", c.any_verdict);
    assert!(c.seesaw <= c.any_verdict);
    // The same experiments show why: DeLong with rows independent is far outside the bounds.
    let delong = click.row_independent_delong.unwrap();
    assert!(delong > high, "DeLong with rows independent: {delong} of {n}");
    assert!(click.mean_design_effect > 1.5, "{}", click.mean_design_effect);
}

#[test]
fn a_planted_click_effect_is_detected_and_the_mde_predicts_it() {
    let n = 120;
    // Enough extra noise in A's click scores to lower its AUC by several minimum detectable
    // effects: almost every experiment must call B better on click.
    let strong = &run(&Scenario { click_extra_noise: 3.0, ..clustered(n) }).unwrap().tasks[0];
    assert!(strong.mean_delta > 2.0 * strong.mean_mde, "{strong:?}");
    assert!(strong.b_better as f64 >= 0.9 * n as f64, "detected {} of {n}", strong.b_better);
    assert_eq!(strong.b_worse, 0);
    // An effect well under the minimum detectable effect is found rarely.
    let weak = &run(&Scenario { click_extra_noise: 0.15, ..clustered(n) }).unwrap().tasks[0];
    assert!(weak.mean_delta < 0.5 * weak.mean_mde, "{weak:?}");
    assert!((weak.b_better as f64) < 0.4 * n as f64, "detected {} of {n}", weak.b_better);
}
