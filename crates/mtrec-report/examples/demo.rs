//! Builds a synthetic A/B comparison (B better on `click`, worse on `like`, a per-user
//! `age_band` task, a regression and MMoE gates) and writes report.html, report.md and
//! report.json into the directory given as the first argument.

use std::collections::BTreeMap;

use mtrec_report::*;
use mtrec_schema::MetricKey;

/// A small deterministic generator (xorshift64*) so the demo needs no RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sigmoid(x: f64) -> f32 {
    (1.0 / (1.0 + (-x).exp())) as f32
}

fn history(monitor: &str, start: f64, gain: f64) -> History {
    let monitor: MetricKey = monitor.parse().expect("a metric key");
    let epochs = (0..6)
        .map(|e| {
            let progress = 1.0 - (-(e as f64) / 2.0).exp();
            EpochRecord {
                epoch: e,
                train_loss: BTreeMap::from([
                    ("click".to_owned(), 0.62 - 0.12 * progress),
                    ("like".to_owned(), 0.55 - 0.08 * progress),
                ]),
                valid: BTreeMap::from([
                    (monitor.clone(), start + gain * progress),
                    (MetricKey::Loss, 1.2 - 0.2 * progress),
                ]),
                seconds: 3.0,
                samples_per_second: 120_000.0,
                gradient_cosine: BTreeMap::from([("click|like".to_owned(), 0.4 - 0.3 * progress)]),
                ..Default::default()
            }
        })
        .collect();
    History {
        monitor,
        best_epoch: Some(5),
        epochs,
        label_correlation: BTreeMap::from([("click|like".to_owned(), 0.31)]),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: demo OUT_DIR")?);
    std::fs::create_dir_all(&out)?;
    let mut rng = Rng(0x5EED);
    let (users, per_user) = (400usize, 25usize);
    let tasks = vec![
        ReportTask { name: "click".into(), kind: TaskKind::Binary, scope: Scope::Pair },
        ReportTask { name: "like".into(), kind: TaskKind::Binary, scope: Scope::Pair },
        ReportTask { name: "watch_time".into(), kind: TaskKind::Regression { label_log1p: false }, scope: Scope::Pair },
        ReportTask {
            name: "age_band".into(),
            kind: TaskKind::Multiclass { classes: vec!["<25".into(), "25-45".into(), ">45".into()] },
            scope: Scope::User,
        },
    ];
    let mut rows = EvalRows { labels: vec![Vec::new(); 4], masks: vec![Vec::new(); 4], ..EvalRows::default() };
    let mut a =
        ModelScores { name: "mmoe-baseline".into(), description: "MMoE, 4 experts".into(), ..Default::default() };
    let mut b = ModelScores {
        name: "mmoe-new-features".into(),
        description: "MMoE + item text features".into(),
        ..Default::default()
    };
    let mut single = ModelScores {
        name: "single-task models".into(),
        description: "one model per task".into(),
        ..Default::default()
    };
    for m in [&mut a, &mut b, &mut single] {
        m.outputs = vec![Vec::new(); 4];
    }
    a.gates = vec![Some(GateSums::default()), Some(GateSums::default()), None, None];
    b.gates = a.gates.clone();
    for u in 0..users {
        let age = (u % 3) as f32;
        for i in 0..per_user {
            rows.user.push(u as u64 * 7919);
            rows.item.push((i * 13 + u) as u64 % 97);
            let click_logit = rng.next() * 4.0 - 2.0;
            let like_logit = rng.next() * 4.0 - 2.0;
            let click = f32::from(u8::from(rng.next() < f64::from(sigmoid(click_logit))));
            let like = f32::from(u8::from(rng.next() < f64::from(sigmoid(like_logit))));
            rows.labels[0].push(click);
            rows.labels[1].push(like);
            rows.masks[0].push(1);
            // Like is only labeled on clicked rows.
            rows.masks[1].push(u8::from(click != 0.0));
            let watch = (2.0 + 1.5 * click_logit + rng.next()) as f32;
            rows.labels[2].push(watch);
            rows.masks[2].push(1);
            rows.labels[3].push(age);
            rows.masks[3].push(1);
            let noise = |rng: &mut Rng, s: f64| (rng.next() - 0.5) * s;
            a.outputs[0].push(sigmoid(click_logit + noise(&mut rng, 4.0)));
            b.outputs[0].push(sigmoid(click_logit + noise(&mut rng, 2.0)));
            single.outputs[0].push(sigmoid(click_logit + noise(&mut rng, 5.0)));
            a.outputs[1].push(sigmoid(like_logit + noise(&mut rng, 2.0)));
            b.outputs[1].push(sigmoid(0.8 * like_logit + noise(&mut rng, 4.5) + 0.3));
            single.outputs[1].push(sigmoid(like_logit + noise(&mut rng, 3.0)));
            a.outputs[2].push(watch + noise(&mut rng, 2.0) as f32);
            b.outputs[2].push(watch + noise(&mut rng, 2.0) as f32);
            for m in [&mut a, &mut b] {
                let right = 0.5 + 0.3 * rng.next();
                let probs: Vec<f32> =
                    (0..3).map(|c| if c as f32 == age { right as f32 } else { (1.0 - right as f32) / 2.0 }).collect();
                m.outputs[3].extend(probs);
            }
            for (m, skew) in [(&mut a, 0.0), (&mut b, 0.6)] {
                for (t, gates) in m.gates.iter_mut().enumerate().take(2) {
                    let raw: Vec<f64> =
                        (0..4).map(|e| (rng.next() + if e == t * 2 { 1.0 + skew } else { 0.2 }).exp()).collect();
                    let total: f64 = raw.iter().sum();
                    let row: Vec<f32> = raw.iter().map(|w| (w / total) as f32).collect();
                    let mask = *rows.masks[t].last().expect("this row's mask");
                    gates.as_mut().expect("gated task").add(&row, &[mask]);
                }
            }
        }
    }
    a.history = Some(history("click.auc", 0.66, 0.05));
    b.history = Some(history("click.auc", 0.67, 0.07));
    a.provenance = serde_json::json!({"bundle": "runs/a", "epochs": 6});
    b.provenance = serde_json::json!({"bundle": "runs/b", "epochs": 6});
    let options = ReportOptions { bootstrap_replicates: 500, seed: 7, ..ReportOptions::default() };
    let report = compare(&rows, &tasks, &a, &b, Some(&single), &options)?;
    std::fs::write(out.join("report.html"), render_html(&report))?;
    std::fs::write(out.join("report.md"), render_markdown(&report))?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    let eval = evaluate(&rows, &tasks, &a, &options)?;
    std::fs::write(out.join("eval.html"), render_html(&eval))?;
    for t in &report.tasks {
        println!("{:<12} {:<26} p = {:?}", t.task, t.verdict.as_str(), t.verdict_p_value);
    }
    println!("seesaw: {}; wrote {}", report.seesaw, out.display());
    Ok(())
}
