//! Multi-seed quality benchmark: trains each config with seeds 1..=N (or from `--first-seed`) on
//! one ingest directory, scores the test split, and reports the mean and 95% confidence interval (Student's t) of
//! every test metric, plus the Bayes-optimal AUC where the data carries true probabilities
//! (`extra.p_<task>`). Where it also carries a task's outcome on every row
//! (`extra.would_<task>`, the synthetic data's conversion had the impression been clicked),
//! `<task>.auc_all_impressions` is the AUC of the task's predictions against it over the whole
//! test split, the population a conversion model scores when serving. Figures and commands:
//! benches/README.md.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Ingest directory.
    #[arg(long)]
    data: PathBuf,
    /// Training configs to compare (JSON).
    #[arg(long, num_args = 1.., required = true)]
    config: Vec<PathBuf>,
    /// How many seeds per config: 1..=N, or N from `--first-seed` on.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// The first seed: a run can continue another's seeds (`--first-seed 4 --seeds 2`).
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Write every run's metrics and the summary as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Mean and 95% CI half-width (NaN with one run).
fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let s = mtrec_metrics::mean_ci95(xs).expect("at least one run");
    (s.mean, s.ci95.unwrap_or(f64::NAN))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.threads > 0 {
        rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global()?;
    }
    let pipeline = mtrec_ingest::encoded::load_pipeline(&args.data)?;
    let test = mtrec_ingest::encoded::load_split(&args.data, mtrec_schema::Split::Test, &pipeline)?;
    // Bayes-optimal AUC of binary tasks whose true probability is a passthrough column.
    let mut bayes = BTreeMap::new();
    for (t, task) in pipeline.tasks.iter().enumerate() {
        if let Some(p) = test.extras.get(&format!("p_{}", task.name)) {
            let keep: Vec<usize> = (0..test.rows).filter(|&r| test.masks[t][r] != 0).collect();
            let scores: Vec<f32> = keep.iter().map(|&r| p[r] as f32).collect();
            let labels: Vec<f32> = keep.iter().map(|&r| test.labels[t][r]).collect();
            if let Some(auc) = mtrec_metrics::auc(&scores, &labels, None) {
                bayes.insert(format!("{}.auc", task.name), auc);
            }
        }
    }
    // Tasks whose outcome is known on every row, and their Bayes-optimal AUC there.
    let all_rows: Vec<(usize, Vec<f32>)> = pipeline
        .tasks
        .iter()
        .enumerate()
        .filter_map(|(t, task)| Some((t, test.extras.get(&format!("would_{}", task.name))?)))
        .map(|(t, y)| (t, y.iter().map(|&v| v as f32).collect()))
        .collect();
    for (t, outcome) in &all_rows {
        let name = &pipeline.tasks[*t].name;
        if let Some(p) = test.extras.get(&format!("p_{name}")) {
            let scores: Vec<f32> = p.iter().map(|&v| v as f32).collect();
            if let Some(auc) = mtrec_metrics::auc(&scores, outcome, None) {
                bayes.insert(format!("{name}.auc_all_impressions"), auc);
            }
        }
    }
    let work = tempfile::tempdir()?;
    let mut runs = Vec::new();
    let mut summary = BTreeMap::new();
    for path in &args.config {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut per_metric: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for seed in args.first_seed..args.first_seed + args.seeds {
            let mut cfg = mtrec_train::TrainConfig::load(path)?;
            cfg.seed = seed;
            cfg.threads = args.threads;
            let started = std::time::Instant::now();
            let trained = mtrec_train::train(&mtrec_train::TrainOptions::new(
                &args.data,
                cfg,
                &work.path().join(format!("{name}-{seed}")),
            ))?;
            let mut metrics: BTreeMap<String, f64> = mtrec_model::validation_metrics(&trained.model, &test, 8192)
                .metrics
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            if !all_rows.is_empty() {
                let predictions = mtrec_model::predict_all(&trained.model, &test, 8192);
                for (t, outcome) in &all_rows {
                    if let Some(auc) = mtrec_metrics::auc(&predictions.outputs[*t], outcome, None) {
                        metrics.insert(format!("{}.auc_all_impressions", pipeline.tasks[*t].name), auc);
                    }
                }
            }
            eprintln!(
                "{name} seed {seed}: {} epochs, best {:?}, {:.0}s: {}",
                trained.history.epochs.len(),
                trained.history.best_epoch.map(|e| e + 1),
                started.elapsed().as_secs_f64(),
                metrics
                    .iter()
                    .filter(|(k, _)| k.ends_with(".auc") || k.ends_with(".auc_all_impressions"))
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (k, v) in &metrics {
                per_metric.entry(k.clone()).or_default().push(*v);
            }
            runs.push(serde_json::json!({"config": name, "seed": seed, "epochs": trained.history.epochs.len(), "test": metrics}));
        }
        let stats: BTreeMap<String, serde_json::Value> = per_metric
            .iter()
            .map(|(k, xs)| {
                let (m, ci) = mean_ci(xs);
                (k.clone(), serde_json::json!({"mean": m, "ci95": ci, "n": xs.len()}))
            })
            .collect();
        summary.insert(name, stats);
    }
    println!("{:<28} {:<24} {:>8} {:>9} {:>4}", "config", "test metric", "mean", "±95% CI", "n");
    for (name, stats) in &summary {
        for (k, s) in stats {
            println!(
                "{name:<28} {k:<24} {:>8.4} {:>9.4} {:>4}",
                s["mean"].as_f64().unwrap_or(f64::NAN),
                s["ci95"].as_f64().unwrap_or(f64::NAN),
                s["n"]
            );
        }
    }
    for (k, v) in &bayes {
        println!("{:<28} {k:<24} {v:>8.4}", "bayes-optimal (true p)");
    }
    if let Some(out) = args.out {
        std::fs::write(
            out,
            serde_json::to_string_pretty(&serde_json::json!({"runs": runs, "summary": summary, "bayes": bayes}))?,
        )?;
    }
    Ok(())
}
