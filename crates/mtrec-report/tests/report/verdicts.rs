//! The verdict rule: which test judges each task, the adjustment over tasks, design effects,
//! minimum detectable effects, and the note when DeLong and the clustered tests disagree.

use mtrec_report::*;

use crate::{fixture, options, Lcg};

/// One binary pair task on `users` x `rows_each` rows. Each model shifts all of a user's scores
/// by its own offset (uniform in ±`offset`/2), so that, as with user embeddings, a model's
/// errors on one user move together.
fn clustered_binary(
    seed: u64,
    users: u64,
    rows_each: usize,
    offset: f64,
) -> (EvalRows, Vec<ReportTask>, ModelScores, ModelScores) {
    let mut rng = Lcg(seed);
    let mut rows = EvalRows { labels: vec![Vec::new()], masks: vec![Vec::new()], ..Default::default() };
    let mut a = ModelScores { name: "A".into(), outputs: vec![Vec::new()], ..Default::default() };
    let mut b = ModelScores { name: "B".into(), outputs: vec![Vec::new()], ..Default::default() };
    for user in 0..users {
        let rate = 0.1 + 0.8 * rng.next();
        let (shift_a, shift_b) = (offset * (rng.next() - 0.5), offset * (rng.next() - 0.5));
        for _ in 0..rows_each {
            let label = f32::from(u8::from(rng.next() < rate));
            let x = f64::from(label) * 0.8 + rng.next();
            rows.user.push(user);
            rows.item.push(rows.item.len() as u64);
            rows.labels[0].push(label);
            rows.masks[0].push(1);
            a.outputs[0].push((x + shift_a) as f32);
            b.outputs[0].push((x + shift_b) as f32);
        }
    }
    let tasks = vec![ReportTask { name: "click".into(), kind: TaskKind::Binary, scope: Scope::Pair }];
    (rows, tasks, a, b)
}

#[test]
fn each_task_names_its_test_and_why() {
    let (rows, tasks, a, mut b) = fixture();
    // The fixture's models agree on spend and segment (which they separate perfectly); let B
    // differ so that every task has a variance to compare (on segment, per user: 20 rows each).
    let mut rng = Lcg(5);
    b.outputs[2].iter_mut().for_each(|s| *s += 0.1 * (rng.next() as f32 - 0.5));
    for user in b.outputs[3].chunks_mut(20) {
        let shift = 0.6 * (rng.next() as f32 - 0.5);
        user.iter_mut().for_each(|s| *s += shift);
    }
    let r = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    let tests: Vec<VerdictTest> = r.tasks.iter().map(|t| t.verdict_test).collect();
    // click and like: rows of 200 users; spend: RMSE; segment: one unit per user.
    assert_eq!(
        tests,
        [VerdictTest::ClusteredDelong, VerdictTest::ClusteredDelong, VerdictTest::Bootstrap, VerdictTest::Delong]
    );
    assert_eq!(r.tasks.iter().map(|t| t.clusters).collect::<Vec<_>>(), [200; 4]);
    assert!(r.tasks[0].verdict_reason.contains("clustered by user") && r.tasks[0].verdict_reason.contains("200 users"));
    assert!(r.tasks[2].verdict_reason.starts_with("rmse by the paired bootstrap"), "{}", r.tasks[2].verdict_reason);
    assert!(r.tasks[3].verdict_reason.contains("one unit per user"), "{}", r.tasks[3].verdict_reason);
    // The verdict's interval and p-value are the clustered test's; DeLong's is kept beside it.
    let click = &r.tasks[0];
    let clustered = click.clustered_delong.unwrap();
    assert_eq!((click.verdict_p_value, click.verdict_ci_low), (clustered.p_value, clustered.ci_low));
    assert_eq!(click.delong.unwrap().delta, clustered.delta);
    assert!(click.design_effect.is_some_and(|d| d > 0.0));
    // Per-user units are their own clusters: the clustered variance is DeLong's.
    let segment = &r.tasks[3];
    assert!((segment.design_effect.unwrap() - 1.0).abs() < 1e-9, "{:?}", segment.design_effect);
    let (clustered, delong) = (segment.clustered_delong.unwrap(), segment.delong.unwrap());
    assert!((clustered.p_value.unwrap() - delong.p_value.unwrap()).abs() < 1e-9);
    // A regression's design effect comes from the linearised RMSE.
    assert!(r.tasks[2].design_effect.is_some_and(|d| d.is_finite() && d > 0.0));
    assert!(r.tasks[2].clustered_delong.is_none() && r.tasks[2].delong.is_none());
}

#[test]
fn one_row_per_user_is_judged_by_delong() {
    let (rows, tasks, a, b) = clustered_binary(3, 600, 1, 0.0);
    let r = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    let click = &r.tasks[0];
    assert_eq!((click.verdict_test, click.clusters, click.units), (VerdictTest::Delong, 600, 600));
    let (clustered, delong) = (click.clustered_delong.unwrap(), click.delong.unwrap());
    assert!((clustered.std_error.unwrap() - delong.std_error.unwrap()).abs() < 1e-12);
    assert!(click.verdict_reason.contains("every user has one row"), "{}", click.verdict_reason);
}

#[test]
fn minimum_detectable_effect_is_the_tests_standard_error_scaled() {
    let (rows, tasks, a, b) = fixture();
    let r = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    // Four tasks tested: a lone effect faces alpha / 4, so z_(1 - 0.05/8) + z_0.8 = 2.497705 +
    // 0.841621 (Python's statistics.NormalDist).
    for t in &r.tasks {
        let se = t.verdict_std_error.unwrap();
        assert!((t.min_detectable_effect.unwrap() - 3.339327 * se).abs() <= 1e-6 * se, "{}", t.task);
        let primary = t.metrics.iter().find(|m| m.metric == t.primary_metric).unwrap();
        if t.verdict_test == VerdictTest::Bootstrap {
            assert_eq!(Some(se), primary.std_error, "{}: the bootstrap's standard error", t.task);
        }
    }
    // One task at power 0.9: z_0.975 + z_0.9 = 1.959964 + 1.281552.
    let one = |x: &[Vec<f32>]| vec![x[0].clone()];
    let rows = EvalRows { labels: one(&rows.labels), masks: vec![rows.masks[0].clone()], ..rows };
    let (a, b) = (ModelScores { outputs: one(&a.outputs), ..a }, ModelScores { outputs: one(&b.outputs), ..b });
    let r = compare(&rows, &tasks[..1], &a, &b, None, &ReportOptions { power: 0.9, ..options() }).unwrap();
    let se = r.tasks[0].verdict_std_error.unwrap();
    assert!((r.tasks[0].min_detectable_effect.unwrap() - (1.959964 + 1.281552) * se).abs() < 1e-6 * se);
}

/// A task significant on its own is not once its p-value is adjusted over four tasks.
#[test]
fn the_adjustment_over_tasks_can_withdraw_a_verdict() {
    let (rows, tasks, a, _) = fixture();
    // B = A except on click, where B adds noise to A's scores and a nudge towards the label
    // that grows with `step`. The noise costs AUC and the nudge wins it back, so the clustered
    // p-value sweeps from significant through 1 to significant again; the first step whose
    // p-value lies in [alpha / 4, alpha) is significant alone but not among four tasks whose
    // other p-values are 1 (q = 4 p).
    let mut rng = Lcg(17);
    let noise: Vec<f32> = a.outputs[0].iter().map(|_| rng.next() as f32 - 0.5).collect();
    let mut found = false;
    for step in 0..100 {
        let mut b = a.clone();
        for ((s, &e), &y) in b.outputs[0].iter_mut().zip(&noise).zip(&rows.labels[0]) {
            *s += 0.05 * e + 0.0005 * step as f32 * (y - 0.5);
        }
        let r = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
        let click = &r.tasks[0];
        let p = click.verdict_p_value.unwrap();
        if !(0.0125..0.05).contains(&p) {
            continue;
        }
        assert!(r.tasks[1..].iter().all(|t| t.verdict_p_value == Some(1.0)), "identical tasks have p 1");
        assert!((click.verdict_q_value.unwrap() - 4.0 * p).abs() < 1e-12, "{p} {:?}", click.verdict_q_value);
        assert_eq!(click.verdict, Verdict::NoSignificantDifference, "p {p}, q {:?}", click.verdict_q_value);
        found = true;
        break;
    }
    assert!(found, "no step gave a p-value between alpha / 4 and alpha");
}

/// The situation DeLong's test gets wrong: two models equally good on average, each with its own
/// per-user offsets. DeLong's row-independent test calls the difference significant; the
/// clustered tests do not, the verdict follows them, and the report says that they disagree.
#[test]
fn a_delong_false_positive_is_reported_as_a_disagreement() {
    let (rows, tasks, a, b) = clustered_binary(1, 30, 40, 0.3);
    let r = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    let click = &r.tasks[0];
    let (delong, clustered) = (click.delong.unwrap(), click.clustered_delong.unwrap());
    assert!(delong.p_value.unwrap() < 0.05 && clustered.p_value.unwrap() > 0.05, "{delong:?} {clustered:?}");
    assert!(click.design_effect.unwrap() > 2.0, "{:?}", click.design_effect);
    assert_eq!(click.verdict, Verdict::NoSignificantDifference);
    let note = click.disagreement.as_deref().expect("a disagreement note");
    assert!(
        note.contains("significant by DeLong with units independent") && note.contains("not by clustered DeLong"),
        "{note}"
    );
    for rendered in [render_markdown(&r), render_html(&r)] {
        assert!(rendered.contains("Tests disagree"), "the note is rendered");
    }
    // Without clustering (no per-user offsets) the tests agree and there is no note.
    let (rows, tasks, a, b) = clustered_binary(1, 30, 40, 0.0);
    assert!(compare(&rows, &tasks, &a, &b, None, &options()).unwrap().tasks[0].disagreement.is_none());
}

#[test]
fn every_rendering_shows_the_same_verdict_rows_and_the_rule() {
    let (rows, tasks, a, b) = fixture();
    let r = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    let (md, html) = (render_markdown(&r), render_html(&r));
    assert!(r.verdict_rule.contains("Benjamini-Hochberg") && r.verdict_rule.contains("alpha = 0.05"));
    assert!(html.contains(&r.verdict_rule.replace('\'', "&#39;")), "the rule is stated in the HTML");
    assert!(md.contains(&r.verdict_rule.replace('_', r"\_")), "the rule is stated in the Markdown");
    let table = md.split("## Verdicts").nth(1).unwrap();
    for row in verdict_rows(&r) {
        let md_row = table.lines().find(|l| l.starts_with(&format!("| {} |", row.task))).unwrap();
        let cells: Vec<&str> = md_row.split(" | ").collect();
        // p, q, test, design effect, MDE, verdict.
        let q = row.q.map(|q| if q < 1e-3 { format!("{q:.1e}") } else { format!("{q:.3}") }).unwrap();
        assert_eq!(cells[7], q, "{md_row}");
        assert_eq!((cells[8], cells[11]), (row.test.as_str(), &*format!("{} |", row.verdict.as_str())));
        assert!(md.contains(&format!("- {}: {}.", row.task, row.reason.replace('_', r"\_"))));
        let html_row = format!("<td>{}</td><td>{}</td><td>{}</td>", q, row.test.as_str(), design(row.design_effect));
        assert!(html.contains(&html_row), "{html_row}");
    }
}

fn design(d: Option<f64>) -> String {
    d.map_or("—".into(), |d| format!("{d:.2}"))
}
