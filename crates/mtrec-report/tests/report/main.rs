//! End-to-end behaviour of `evaluate`, `compare` and the renderers on synthetic rows; the
//! verdict rule (`verdicts`) and its calibration by simulation (`calibration`).

mod calibration;
mod verdicts;

use mtrec_report::*;

/// Deterministic uniform numbers in [0, 1).
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sigmoid(x: f64) -> f32 {
    (1.0 / (1.0 + (-x).exp())) as f32
}

/// 200 users x 20 rows; tasks: `click` and `like` (binary pair), `spend` (regression pair),
/// `segment` (binary user scope, constant per user). B is much better on click and much
/// worse on like.
pub(crate) fn fixture() -> (EvalRows, Vec<ReportTask>, ModelScores, ModelScores) {
    let mut rng = Lcg(99);
    let tasks = vec![
        ReportTask { name: "click".into(), kind: TaskKind::Binary, scope: Scope::Pair },
        ReportTask { name: "like".into(), kind: TaskKind::Binary, scope: Scope::Pair },
        ReportTask { name: "spend".into(), kind: TaskKind::Regression { label_log1p: false }, scope: Scope::Pair },
        ReportTask { name: "segment".into(), kind: TaskKind::Binary, scope: Scope::User },
    ];
    let mut rows = EvalRows { labels: vec![Vec::new(); 4], masks: vec![Vec::new(); 4], ..Default::default() };
    let mut a = ModelScores { name: "A".into(), outputs: vec![Vec::new(); 4], ..Default::default() };
    let mut b = ModelScores { name: "B".into(), outputs: vec![Vec::new(); 4], ..Default::default() };
    for u in 0..200u64 {
        let segment = f32::from(u8::from(u % 3 == 0));
        for i in 0..20u64 {
            rows.user.push(u * 1_000_003);
            rows.item.push(i);
            for t in 0..2 {
                let logit = rng.next() * 6.0 - 3.0;
                rows.labels[t].push(f32::from(u8::from(rng.next() < f64::from(sigmoid(logit)))));
                rows.masks[t].push(u8::from(i % 10 != 9));
                let (good, bad) =
                    (sigmoid(logit + (rng.next() - 0.5)), sigmoid(logit * 0.2 + (rng.next() - 0.5) * 4.0));
                let (for_a, for_b) = if t == 0 { (bad, good) } else { (good, bad) };
                a.outputs[t].push(for_a);
                b.outputs[t].push(for_b);
            }
            let spend = (rng.next() * 10.0) as f32;
            rows.labels[2].push(spend);
            rows.masks[2].push(1);
            let noise = (rng.next() - 0.5) as f32;
            a.outputs[2].push(spend + noise);
            b.outputs[2].push(spend + noise);
            rows.labels[3].push(segment);
            rows.masks[3].push(1);
            let p = 0.3 + 0.4 * segment + 0.2 * rng.next() as f32;
            a.outputs[3].push(p);
            b.outputs[3].push(p);
        }
    }
    (rows, tasks, a, b)
}

pub(crate) fn options() -> ReportOptions {
    ReportOptions { bootstrap_replicates: 200, seed: 5, ..ReportOptions::default() }
}

#[test]
fn seesaw_and_verdicts_when_b_wins_one_task_and_loses_another() {
    let (rows, tasks, a, b) = fixture();
    let r = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    assert_eq!(r.tasks[0].verdict, Verdict::BBetter);
    assert_eq!(r.tasks[1].verdict, Verdict::BWorse);
    assert_eq!(r.tasks[0].verdict_test, VerdictTest::ClusteredDelong);
    assert!(r.tasks[0].verdict_p_value.unwrap() < 1e-6);
    assert!(r.tasks[0].verdict_q_value.unwrap() < 1e-6);
    assert!(r.seesaw);
    assert_eq!(
        (r.improved_tasks.as_slice(), r.degraded_tasks.as_slice()),
        (&["click".to_owned()][..], &["like".to_owned()][..])
    );
    // Identical spend predictions: no difference, zero delta.
    assert_eq!(r.tasks[2].verdict, Verdict::NoSignificantDifference);
    let auc = &r.tasks[0].metrics[0];
    assert_eq!(auc.metric, Metric::Auc);
    let (low, high) = (auc.ci_low.unwrap(), auc.ci_high.unwrap());
    assert!(0.0 < low && low < auc.delta.unwrap() && auc.delta.unwrap() < high);
}

#[test]
fn identical_models_show_no_difference() {
    let (rows, tasks, a, _) = fixture();
    let r = compare(&rows, &tasks, &a, &a, None, &options()).unwrap();
    assert!(!r.seesaw);
    for t in &r.tasks {
        assert_eq!(t.verdict, Verdict::NoSignificantDifference, "{}", t.task);
        for m in &t.metrics {
            assert_eq!(m.delta, m.a.map(|_| 0.0), "{}.{}", t.task, m.metric);
            assert_eq!(m.p_value, Some(1.0), "{}.{}", t.task, m.metric);
        }
    }
}

#[test]
fn constant_per_user_task_is_evaluated_per_user() {
    let (mut rows, tasks, a, _) = fixture();
    let r = evaluate(&rows, &tasks, &a, &options()).unwrap();
    assert_eq!(r.tasks[3].evaluated, Evaluated::PerUser);
    assert_eq!(r.tasks[3].units, 200);
    assert_eq!(r.tasks[0].evaluated, Evaluated::PerRow);
    // Unit prediction = mean over the user's rows: AUC equals that of per-user means.
    let means: Vec<f32> = (0..200).map(|u| a.outputs[3][u * 20..(u + 1) * 20].iter().sum::<f32>() / 20.0).collect();
    let labels: Vec<f32> = (0..200).map(|u| rows.labels[3][u * 20]).collect();
    let expected = mtrec_metrics::auc(&means, &labels, None).unwrap();
    assert!((r.tasks[3].metrics[&Metric::Auc].unwrap() - expected).abs() < 1e-6);
    // One user whose label varies makes the task per-row.
    rows.labels[3][1] = 1.0 - rows.labels[3][1];
    let r = evaluate(&rows, &tasks, &a, &options()).unwrap();
    assert_eq!(r.tasks[3].evaluated, Evaluated::PerRow);
    assert_eq!(r.tasks[3].units, 4000);
}

/// A regression learned as `ln(1 + y)` keeps its training-scale metrics (and verdict) and adds
/// the same metrics of `exp(output) − 1` against `exp(label) − 1`.
#[test]
fn a_log1p_regression_is_also_measured_in_the_labels_units() {
    let (rows, mut tasks, a, b) = fixture();
    let plain = evaluate(&rows, &tasks, &a, &options()).unwrap();
    assert!(!plain.tasks[2].metrics.contains_key(&Metric::LabelRmse), "no transform, no label-scale metrics");
    tasks[2].kind = TaskKind::Regression { label_log1p: true };
    let r = evaluate(&rows, &tasks, &a, &options()).unwrap();
    let (spend, before) = (&r.tasks[2].metrics, &plain.tasks[2].metrics);
    for metric in [Metric::Rmse, Metric::Mae, Metric::R2] {
        assert_eq!(spend[&metric], before[&metric], "{metric} stays on the training scale");
    }
    let n = rows.labels[2].len() as f64;
    let errors = || {
        let pairs = a.outputs[2].iter().zip(&rows.labels[2]);
        pairs.map(|(&p, &y)| f64::from(p).exp_m1() - f64::from(y).exp_m1())
    };
    let rmse = (errors().map(|e| e * e).sum::<f64>() / n).sqrt();
    let mae = errors().map(f64::abs).sum::<f64>() / n;
    for (metric, expected) in [(Metric::LabelRmse, rmse), (Metric::LabelMae, mae)] {
        let value = spend[&metric].unwrap();
        assert!((value - expected).abs() <= 1e-4 * expected, "{metric}: {value} vs {expected}");
    }
    assert!(spend[&Metric::LabelR2].is_some_and(f64::is_finite));
    let compared = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    assert_eq!(compared.tasks[2].primary_metric, Metric::Rmse);
    assert!(compared.tasks[2].metrics.iter().any(|m| m.metric == Metric::LabelRmse));
}

#[test]
fn masked_rows_change_nothing() {
    let (mut rows, tasks, mut a, b) = fixture();
    let before = serde_json::to_string(&compare(&rows, &tasks, &a, &b, None, &options()).unwrap()).unwrap();
    // Row 9 is masked for click and like: flip its label and score.
    assert_eq!(rows.masks[0][9], 0);
    rows.labels[0][9] = 1.0 - rows.labels[0][9];
    a.outputs[0][9] = 0.999;
    rows.labels[1][29] = 1.0 - rows.labels[1][29];
    let after = serde_json::to_string(&compare(&rows, &tasks, &a, &b, None, &options()).unwrap()).unwrap();
    assert_eq!(before, after);
    let r = evaluate(&rows, &tasks, &a, &options()).unwrap();
    assert_eq!((r.tasks[0].labeled_rows, r.tasks[0].masked_rows), (3600, 400));
}

#[test]
fn bootstrap_is_deterministic_for_a_seed() {
    let (rows, tasks, a, b) = fixture();
    let first = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    let second = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    assert_eq!(first, second);
    let other = compare(&rows, &tasks, &a, &b, None, &ReportOptions { seed: 6, ..options() }).unwrap();
    assert_ne!(first.tasks[0].metrics[0].ci_low, other.tasks[0].metrics[0].ci_low);
}

/// Equal JSON trees, numbers within 1e-12 relative (serde_json's default float parsing may
/// be one ulp off).
fn same_json(x: &serde_json::Value, y: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (x, y) {
        (Value::Number(p), Value::Number(q)) => {
            let (p, q) = (p.as_f64().unwrap(), q.as_f64().unwrap());
            assert!((p - q).abs() <= 1e-12 * p.abs().max(q.abs()), "{path}: {p} vs {q}");
        }
        (Value::Array(p), Value::Array(q)) => {
            assert_eq!(p.len(), q.len(), "{path}");
            p.iter().zip(q).enumerate().for_each(|(i, (p, q))| same_json(p, q, &format!("{path}[{i}]")));
        }
        (Value::Object(p), Value::Object(q)) => {
            assert_eq!(p.keys().collect::<Vec<_>>(), q.keys().collect::<Vec<_>>(), "{path}");
            p.iter().for_each(|(k, v)| same_json(v, &q[k], &format!("{path}.{k}")));
        }
        _ => assert_eq!(x, y, "{path}"),
    }
}

#[test]
fn json_round_trips_with_documented_keys_and_nulls() {
    let (rows, tasks, mut a, b) = fixture();
    a.history = Some(serde_json::from_str(
        r#"{"monitor":"click.auc","best_epoch":1,"epochs":[{"epoch":0,"train_loss":{"click":0.5},"valid":{"click.auc":0.7,"loss":null},"seconds":1.0,"samples_per_second":10.0}]}"#,
    ).unwrap());
    let mut baseline = a.clone();
    baseline.outputs[1].clear();
    let r = compare(&rows, &tasks, &a, &b, Some(&baseline), &options()).unwrap();
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "format_version",
        "report",
        "model_a",
        "model_b",
        "baseline",
        "options",
        "rows",
        "verdict_rule",
        "tasks",
        "seesaw",
        "improved_tasks",
        "degraded_tasks",
        "expert_usage",
        "training",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["format_version"], FORMAT_VERSION);
    let task = &json["tasks"][0];
    for key in [
        "task",
        "kind",
        "scope",
        "evaluated",
        "units",
        "clusters",
        "primary_metric",
        "verdict",
        "verdict_test",
        "verdict_reason",
        "verdict_p_value",
        "verdict_q_value",
        "verdict_ci_low",
        "verdict_ci_high",
        "verdict_std_error",
        "design_effect",
        "min_detectable_effect",
        "disagreement",
        "metrics",
        "delong",
        "clustered_delong",
        "multitask_gain",
        "a",
        "b",
    ] {
        assert!(task.get(key).is_some(), "missing tasks[].{key}");
    }
    assert_eq!((&task["verdict"], &task["verdict_test"]), (&"b_better".into(), &"clustered_delong".into()));
    assert!(task["metrics"][0]["std_error"].is_number());
    assert_eq!(json["options"]["power"], 0.8);
    assert!(task["a"]["roc"][0]["threshold"].is_null(), "the +inf threshold is null");
    assert!(json["tasks"][1]["multitask_gain"].is_null(), "no baseline for like");
    assert!(json["training"]["a"]["epochs"][0]["valid"]["loss"].is_null());
    // Baseline = A: A's gain is exactly zero.
    assert_eq!(json["tasks"][0]["multitask_gain"]["a_gain"], 0.0);
    let back: AbReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    same_json(&serde_json::to_value(&back).unwrap(), &json, "$");
    let eval = serde_json::to_value(evaluate(&rows, &tasks, &a, &options()).unwrap()).unwrap();
    let eval_back: EvalReport = serde_json::from_value(eval.clone()).unwrap();
    same_json(&serde_json::to_value(&eval_back).unwrap(), &eval, "$");
}

#[test]
fn html_has_every_chart_and_escapes_names() {
    let (rows, mut tasks, mut a, mut b) = fixture();
    tasks[0].name = "<script>alert(1)</script>".into();
    a.name = "A & <b>".into();
    let gates: Vec<f32> = (0..rows.len()).flat_map(|_| [0.7, 0.2, 0.1]).collect();
    let mut sums = GateSums::default();
    sums.add(&gates, &rows.masks[0]);
    a.gates = vec![Some(sums.clone()), Some(sums), None, None];
    b.gates = a.gates.clone();
    let history: History = serde_json::from_str(
        r#"{"monitor":"click.auc","best_epoch":1,"epochs":[{"epoch":0,"train_loss":{"c":0.5},"valid":{"click.auc":0.7},"seconds":1,"samples_per_second":1},{"epoch":1,"train_loss":{"c":0.4},"valid":{"click.auc":0.72},"seconds":1,"samples_per_second":1}]}"#,
    ).unwrap();
    a.history = Some(history.clone());
    b.history = Some(history);
    let r = compare(&rows, &tasks, &a, &b, None, &options()).unwrap();
    assert_eq!(r.expert_usage.a.len(), 2);
    assert!((r.expert_usage.a[0].mean_weight[0] - 0.7).abs() < 1e-6);
    let html = render_html(&r);
    for kind in ["roc", "reliability", "deltas", "gates", "training"] {
        assert!(html.contains(&format!("chart chart-{kind}")), "no {kind} chart");
    }
    assert!(!html.contains("<script"), "unescaped task name");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("A &amp; &lt;b&gt;"));
    // Self-contained: no scripts, stylesheets, images or links to fetch.
    for external in ["<script", "<link", "src=", "href=", "url("] {
        assert!(!html.contains(external), "external resource marker {external}");
    }
    let md = render_markdown(&r);
    assert!(md.contains("&lt;script&gt;") && !md.contains("<script"));
    assert!(md.contains("**Seesaw:**") && md.contains("| b_worse |"));

    let eval = evaluate(&rows, &tasks, &a, &options()).unwrap();
    let eval_html = render_html(&eval);
    for kind in ["roc", "reliability", "gates", "training"] {
        assert!(eval_html.contains(&format!("chart chart-{kind}")), "no {kind} chart in eval report");
    }
    assert!(!render_markdown(&eval).is_empty());
}

#[test]
fn inconsistent_inputs_are_errors() {
    let (rows, tasks, mut a, b) = fixture();
    a.outputs[2].pop();
    assert!(matches!(compare(&rows, &tasks, &a, &b, None, &options()), Err(ReportError::Length { .. })));
    let (mut rows, mut tasks, a, _) = fixture();
    tasks[2].kind = TaskKind::Multiclass { classes: vec!["x".into(), "y".into()] };
    // Spend values are not class indices.
    assert!(matches!(evaluate(&rows, &tasks, &a, &options()), Err(ReportError::BadClassLabel { .. })));
    tasks[2].kind = TaskKind::Regression { label_log1p: false };
    rows.item.pop();
    assert!(matches!(evaluate(&rows, &tasks, &a, &options()), Err(ReportError::Length { .. })));
    let (rows, tasks, mut a, _) = fixture();
    a.gates = vec![Some(GateSums { weights: Vec::new(), entropy: 0.0, rows: 7 }), None, None, None];
    assert!(matches!(evaluate(&rows, &tasks, &a, &options()), Err(ReportError::Gates { .. })));
    let (rows, tasks, a, _) = fixture();
    let bad = ReportOptions { alpha: 0.0, ..options() };
    assert!(matches!(evaluate(&rows, &tasks, &a, &bad), Err(ReportError::Options(_))));
    let bad = ReportOptions { power: 1.0, ..options() };
    assert!(matches!(compare(&rows, &tasks, &a, &a, None, &bad), Err(ReportError::Options(m)) if m.contains("power")));
}
