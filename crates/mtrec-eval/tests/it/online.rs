//! The online A/B report on a simulated experiment: the synthetic data's true click
//! probabilities give the outcomes, users are routed as the server routes them, the arms'
//! answers go through the server's exposure log writer, and the candidate's model is the better
//! one. The report must find it, and must flag a planted sample-ratio mismatch.

use std::collections::HashSet;
use std::path::Path;

use mtrec_eval::{ab_online, EvalError, OnlineOptions};
use mtrec_report::{ReportOptions, Verdict};
use mtrec_serve::exposure::{output_column, Exposure, ExposureConfig, ExposureCounters, ExposureLog};
use mtrec_serve::repository::{Arm, Experiment};
use polars::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

const SHARE: f64 = 0.3;

struct Simulation {
    users: Vec<String>,
    items: Vec<String>,
    clicks: Vec<f64>,
    /// Per row, the stable model's and the candidate model's click probability.
    scores: Vec<[f32; 2]>,
}

/// Synthetic events; each arm's model is the true click logit plus noise, less for the candidate.
fn simulate() -> Simulation {
    let cfg = mtrec_synth::SyntheticConfig { users: 3_000, items: 400, rows: 40_000, seed: 21, ..Default::default() };
    let df = mtrec_synth::generate(&cfg).unwrap();
    let text = |name: &str| -> Vec<String> {
        let column = df.column(name).unwrap().cast(&DataType::String).unwrap();
        let values = column.str().unwrap();
        (0..values.len()).map(|r| values.get(r).unwrap().to_owned()).collect()
    };
    let number = |name: &str| -> Vec<f64> {
        let column = df.column(name).unwrap().cast(&DataType::Float64).unwrap();
        let values = column.f64().unwrap();
        (0..values.len()).map(|r| values.get(r).unwrap()).collect()
    };
    let (p_click, clicks) = (number("p_click"), number("click"));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (noisy, sharp) = (Normal::new(0.0, 1.2).unwrap(), Normal::new(0.0, 0.2).unwrap());
    let sigmoid = |x: f64| (1.0 / (1.0 + (-x).exp())) as f32;
    let scores = p_click
        .iter()
        .map(|&p| {
            let logit = (p / (1.0 - p)).ln();
            [sigmoid(logit + noisy.sample(&mut rng)), sigmoid(logit + sharp.sample(&mut rng))]
        })
        .collect();
    Simulation { users: text("user_id"), items: text("item_id"), clicks, scores }
}

/// Logs every row whose user `keep` accepts, as the server would, and writes the outcomes of
/// every row's first (user, item) occurrence.
fn write_experiment(
    sim: &Simulation,
    dir: &Path,
    keep: impl Fn(&str, Arm) -> bool,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let experiment = Experiment { candidate_share: SHARE, seed: 3 };
    let exposures = dir.join("exposures");
    let log = ExposureLog::start(
        ExposureConfig { queue: 100_000, ..ExposureConfig::new(&exposures) },
        ExposureCounters::default(),
    )
    .unwrap();
    for r in 0..sim.users.len() {
        let arm = experiment.arm(&sim.users[r]);
        if !keep(&sim.users[r], arm) {
            continue;
        }
        let probability = sim.scores[r][usize::from(arm == Arm::Candidate)];
        log.record(Exposure {
            time_ms: r as i64,
            model: "ctr".to_owned(),
            version: if arm == Arm::Candidate { "2" } else { "1" }.to_owned(),
            arm,
            user_id: Some(sim.users[r].clone()),
            item_ids: vec![Some(sim.items[r].clone())],
            outputs: vec![(output_column("binary", "click", None), vec![f64::from(probability)])],
        });
    }
    log.close();
    let mut seen = HashSet::new();
    let (mut users, mut items, mut clicks) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..sim.users.len() {
        if seen.insert((&sim.users[r], &sim.items[r])) {
            users.push(sim.users[r].clone());
            items.push(sim.items[r].clone());
            clicks.push(sim.clicks[r]);
        }
    }
    let n = users.len();
    let mut df = DataFrame::new(
        n,
        vec![
            Series::new("user_id".into(), users).into(),
            Series::new("item_id".into(), items).into(),
            Series::new("click".into(), clicks).into(),
        ],
    )
    .unwrap();
    let outcomes = dir.join("outcomes.parquet");
    ParquetWriter::new(std::fs::File::create(&outcomes).unwrap()).finish(&mut df).unwrap();
    (exposures, outcomes)
}

fn options(exposures: std::path::PathBuf, outcomes: std::path::PathBuf) -> OnlineOptions {
    OnlineOptions {
        exposures,
        outcomes,
        candidate_share: SHARE,
        srm_alpha: 0.001,
        report: ReportOptions { bootstrap_replicates: 300, ..Default::default() },
        force: false,
    }
}

#[test]
fn the_better_arm_wins_and_a_planted_sample_ratio_mismatch_is_flagged() {
    let sim = simulate();
    let dir = tempfile::tempdir().unwrap();

    let (exposures, outcomes) = write_experiment(&sim, &dir.path().join("fair"), |_, _| true);
    let out = dir.path().join("report");
    let report = ab_online(&options(exposures, outcomes), &out).unwrap();
    let online = report.online.as_ref().unwrap();
    assert!(!online.sample_ratio_mismatch, "{:?}", online.sample_ratio);
    assert_eq!((online.arms[0].arm.as_str(), online.arms[1].arm.as_str()), ("stable", "candidate"));
    assert_eq!(
        (online.arms[0].versions.clone(), online.arms[1].versions.clone()),
        (vec!["1".to_owned()], vec!["2".to_owned()])
    );
    let share = online.arms[1].users as f64 / (online.arms[0].users + online.arms[1].users) as f64;
    assert!((share - SHARE).abs() < 0.05, "candidate share {share}");
    assert_eq!((online.unmatched_exposures, online.unmatched_outcomes), (0, 0));
    let click = &report.tasks[0];
    assert_eq!(click.task, "click");
    assert_eq!(click.verdict, Verdict::BBetter, "{click:#?}");
    assert!(click.metrics[0].delta.unwrap() > 0.05);
    for file in ["report.html", "report.md", "report.json"] {
        assert!(out.join(file).exists());
    }
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("No sample ratio mismatch") && markdown.contains("two_sample_bootstrap"), "{markdown}");

    // Planted: the log loses the records of a third of the candidate's users.
    let lost = |user: &str| xxhash_third(user);
    let (exposures, outcomes) =
        write_experiment(&sim, &dir.path().join("lossy"), |user, arm| arm != Arm::Candidate || !lost(user));
    let report = ab_online(&options(exposures, outcomes), &dir.path().join("lossy-report")).unwrap();
    let online = report.online.unwrap();
    assert!(online.sample_ratio_mismatch, "{:?}", online.sample_ratio);
    assert!(online.unmatched_outcomes > 0, "the lost users' outcomes have no exposure");
    assert!(std::fs::read_to_string(dir.path().join("lossy-report/report.md"))
        .unwrap()
        .contains("Sample ratio mismatch"));

    // The output is never overwritten unless forced.
    let again = ab_online(&options(dir.path().join("fair/exposures"), dir.path().join("fair/outcomes.parquet")), &out);
    assert!(matches!(again, Err(EvalError::OutputExists { .. })));
}

/// A third of users, chosen independently of the routing hash.
fn xxhash_third(user: &str) -> bool {
    user.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 3 == 0
}

#[test]
fn bad_outcomes_are_named_by_file_row_and_column() {
    let sim = simulate();
    let dir = tempfile::tempdir().unwrap();
    let (exposures, _) = write_experiment(&sim, dir.path(), |_, _| true);
    let outcomes = dir.path().join("bad.csv");
    std::fs::write(
        &outcomes,
        format!("user_id,item_id,click\n{},{},1\n{},{},0\n", sim.users[0], sim.items[0], sim.users[0], sim.items[0]),
    )
    .unwrap();
    let error = ab_online(&options(exposures.clone(), outcomes), &dir.path().join("r")).unwrap_err().to_string();
    assert!(error.contains("bad.csv") && error.contains("row 1") && error.contains("second outcome"), "{error}");
    let outcomes = dir.path().join("none.csv");
    std::fs::write(&outcomes, "user_id,item_id,clicked\nu1,i1,1\n").unwrap();
    let error = ab_online(&options(exposures, outcomes), &dir.path().join("r")).unwrap_err().to_string();
    assert!(error.contains("no column named after a logged task") && error.contains("click"), "{error}");
    let error = ab_online(&options(dir.path().join("nowhere"), dir.path().join("none.csv")), &dir.path().join("r"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("nowhere"), "{error}");
    assert!(!dir.path().join("r").exists(), "no report is left behind");
}
