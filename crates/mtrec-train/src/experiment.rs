//! `mtrec experiment`: a grid of training configurations (architectures × loss strategies ×
//! seeds) over one ingested dataset, several runs at once, and a summary: the mean and 95% CI
//! of every test metric per configuration, the multi-task gain over a baseline configuration,
//! and the best configuration.
//!
//! The experiment file (JSON):
//!
//! ```json
//! {
//!   "data": "out/census",
//!   "base": { "epochs": 10, "batch_size": 1024, "learning_rate": 0.001 },
//!   "architectures": {
//!     "single_task": { "model": { "architecture": { "type": "single_task", "layers": [64] } } },
//!     "mmoe": { "model": { "architecture": { "type": "mmoe", "experts": 8, "expert_layers": [16] } } }
//!   },
//!   "loss_strategies": { "static": {}, "uncertainty": { "model": { "loss_weighting": "uncertainty" } } },
//!   "seeds": [1, 2, 3, 4, 5],
//!   "baseline": "single_task",
//!   "parallel": 2,
//!   "threads_per_run": 1,
//!   "split": "test"
//! }
//! ```
//!
//! Each configuration is `base`, then the architecture's patch, then the strategy's patch,
//! merged as JSON objects (RFC 7396 merge patch), with `seed` and `threads` set per run; it must
//! then be a valid training config. Configurations are named `<architecture>` or
//! `<architecture>+<strategy>` (with more than one strategy). `baseline` names an architecture:
//! each configuration is compared with the baseline architecture under the same strategy
//! (without a baseline, with the first configuration): multi-task gains, and verdicts by the
//! A/B reports' rule with seeds as the units ([`compare`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use mtrec_metrics::{mean_ci95, MeanCi};
use mtrec_schema::fs::write_file;
use mtrec_schema::{Metric, MetricKey, Split};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::TrainConfig;
use crate::data::{RankShare, SplitData};
use crate::error::TrainError;
use crate::train::{train, validate, TrainOptions};

mod compare;

pub use compare::{verdict_rule, SeedComparison, ALPHA};

/// The experiment file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Ingest directory, relative to the experiment file (or given with `--data`).
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// Training config fields shared by every run.
    #[serde(default)]
    pub base: serde_json::Map<String, Value>,
    /// Architecture name → patch over `base`, in order.
    pub architectures: serde_json::Map<String, Value>,
    /// Strategy name → patch over the architecture's config (none: one implicit strategy).
    #[serde(default)]
    pub loss_strategies: serde_json::Map<String, Value>,
    pub seeds: Vec<u64>,
    /// The architecture that multi-task gains are measured against (usually `single_task`).
    #[serde(default)]
    pub baseline: Option<String>,
    /// Runs at once.
    #[serde(default = "one")]
    pub parallel: usize,
    /// Threads inside each run (results are deterministic for a seed and this count).
    #[serde(default = "one")]
    pub threads_per_run: usize,
    /// The split the summary is computed on.
    #[serde(default = "test_split")]
    pub split: Split,
}

fn one() -> usize {
    1
}

fn test_split() -> Split {
    Split::Test
}

/// One finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub config: String,
    pub architecture: String,
    pub strategy: Option<String>,
    pub seed: u64,
    pub bundle: PathBuf,
    pub epochs_run: usize,
    pub best_epoch: Option<usize>,
    pub seconds: f64,
    /// Every task's validation metrics on the summary split.
    pub metrics: BTreeMap<MetricKey, f64>,
}

/// One configuration over its seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub config: String,
    pub architecture: String,
    pub strategy: Option<String>,
    /// Each metric's mean and 95% CI over seeds.
    pub metrics: BTreeMap<MetricKey, MeanCi>,
    /// Per task: the relative change of the primary metric's mean over the baseline's, signed
    /// so that positive is better (absent without a baseline).
    pub multitask_gain: BTreeMap<String, f64>,
    /// Mean over tasks of this configuration's rank on the task's primary metric (1 = best).
    pub mean_rank: f64,
    /// Per task: this configuration against its reference, by [`verdict_rule`] (empty for a
    /// reference itself).
    pub comparison: BTreeMap<String, SeedComparison>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentSummary {
    pub format_version: u32,
    pub data: PathBuf,
    pub split: Split,
    pub seeds: Vec<u64>,
    /// Task → its primary metric ([`Metric::primary`]: `auc`, `rmse` or `logloss`).
    pub primary_metrics: BTreeMap<String, Metric>,
    pub baseline: Option<String>,
    /// How `configs[].comparison` decides that a configuration is better or worse.
    pub verdict_rule: String,
    pub configs: Vec<ConfigSummary>,
    /// The configuration with the lowest mean rank: an ordering of means, not a test (the
    /// comparisons are).
    pub best: String,
    pub runs: Vec<RunResult>,
}

/// Where and how to run an experiment.
#[derive(Debug, Clone)]
pub struct ExperimentOptions {
    pub config_path: PathBuf,
    /// Overrides the file's `data`.
    pub data: Option<PathBuf>,
    /// Overrides the file's `parallel`.
    pub parallel: Option<usize>,
    pub out: PathBuf,
    /// Replace an existing output directory.
    pub force: bool,
    pub progress: bool,
}

struct Run {
    config: String,
    architecture: String,
    strategy: Option<String>,
    seed: u64,
    train: TrainConfig,
}

/// Reads the experiment file and resolves every run's training config (all are validated
/// before anything runs).
fn plan(opts: &ExperimentOptions) -> Result<(ExperimentConfig, PathBuf, Vec<Run>), TrainError> {
    let path = &opts.config_path;
    let bad = |message: String| TrainError::Experiment { path: path.clone(), message };
    let unreadable =
        |source: Box<dyn std::error::Error + Send + Sync>| TrainError::ReadExperiment { path: path.clone(), source };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.into()))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let config: ExperimentConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| unreadable(e.into()))?;
    let data = match (&opts.data, &config.data) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => path.parent().unwrap_or(Path::new(".")).join(d),
        (None, None) => return Err(bad("no data: set `data` or pass --data".to_owned())),
    };
    if config.architectures.is_empty() {
        return Err(bad("architectures: at least one is needed".to_owned()));
    }
    if config.seeds.is_empty() {
        return Err(bad("seeds: at least one is needed".to_owned()));
    }
    if let Some(b) = &config.baseline {
        if !config.architectures.contains_key(b) {
            return Err(bad(format!("baseline: {b:?} is not one of the architectures")));
        }
    }
    if config.parallel == 0 || config.threads_per_run == 0 {
        return Err(bad("parallel and threads_per_run must be at least 1".to_owned()));
    }
    let strategies: Vec<(Option<&String>, Option<&Value>)> = if config.loss_strategies.is_empty() {
        vec![(None, None)]
    } else {
        config.loss_strategies.iter().map(|(k, v)| (Some(k), Some(v))).collect()
    };
    let mut runs = Vec::new();
    for (arch, arch_patch) in &config.architectures {
        for (strategy, strategy_patch) in &strategies {
            let name = config_name(arch, strategy.map(String::as_str), config.loss_strategies.len());
            for &seed in &config.seeds {
                let mut merged = Value::Object(config.base.clone());
                merge_patch(&mut merged, arch_patch);
                if let Some(p) = strategy_patch {
                    merge_patch(&mut merged, p);
                }
                merge_patch(&mut merged, &serde_json::json!({ "seed": seed, "threads": config.threads_per_run }));
                let train: TrainConfig = serde_path_to_error::deserialize(merged)
                    .map_err(|e| bad(format!("configuration {name:?}: {e}")))?;
                train.validate().map_err(|e| bad(format!("configuration {name:?}: {e}")))?;
                runs.push(Run {
                    config: name.clone(),
                    architecture: arch.clone(),
                    strategy: strategy.cloned(),
                    seed,
                    train,
                });
            }
        }
    }
    Ok((config, data, runs))
}

fn config_name(architecture: &str, strategy: Option<&str>, strategies: usize) -> String {
    match strategy {
        Some(s) if strategies > 1 => format!("{architecture}+{s}"),
        _ => architecture.to_owned(),
    }
}

/// RFC 7396: objects merge key by key, `null` deletes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Reads and validates an experiment file, training nothing: the number of runs it plans
/// (configurations × seeds).
pub fn check(opts: &ExperimentOptions) -> Result<usize, TrainError> {
    plan(opts).map(|(_, _, runs)| runs.len())
}

/// Runs the grid and writes `runs/<config>/seed-<s>/` bundles, `summary.json` and `summary.md`.
pub fn run(opts: &ExperimentOptions) -> Result<ExperimentSummary, TrainError> {
    let (config, data, runs) = plan(opts)?;
    if opts.out.exists() && !opts.force {
        return Err(TrainError::OutputExists { path: opts.out.clone() });
    }
    if opts.out.exists() {
        std::fs::remove_dir_all(&opts.out).map_err(|source| TrainError::Write { path: opts.out.clone(), source })?;
    }
    let pipeline = mtrec_ingest::encoded::load_pipeline(&data)?;
    // Read whole once for every run when it fits in a run's window, else shard by shard.
    let window_rows = runs.first().map_or(TrainConfig::default().window_rows, |r| r.train.window_rows);
    let eval_split = SplitData::open(&data, config.split, &pipeline, window_rows, RankShare::ALONE)?;
    let parallel = opts.parallel.unwrap_or(config.parallel).max(1);
    let total = runs.len();
    let queue = Mutex::new(runs.into_iter().enumerate());
    let results: Mutex<Vec<(usize, RunResult)>> = Mutex::new(Vec::with_capacity(total));
    let failure: Mutex<Option<TrainError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| loop {
                if failure.lock().expect("no panics hold the lock").is_some() {
                    return;
                }
                let Some((i, run)) = queue.lock().expect("no panics hold the lock").next() else { return };
                match run_one(&run, &data, &opts.out, &eval_split) {
                    Ok(result) => {
                        if opts.progress {
                            eprintln!(
                                "[{}/{total}] {} seed {}: {:.0}s",
                                results.lock().expect("no panics hold the lock").len() + 1,
                                result.config,
                                result.seed,
                                result.seconds
                            );
                        }
                        results.lock().expect("no panics hold the lock").push((i, result));
                    }
                    Err(e) => {
                        failure.lock().expect("no panics hold the lock").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("no panics hold the lock") {
        return Err(e);
    }
    let mut results = results.into_inner().expect("no panics hold the lock");
    results.sort_by_key(|(i, _)| *i);
    let runs: Vec<RunResult> = results.into_iter().map(|(_, r)| r).collect();
    let primary = pipeline.tasks.iter().map(|t| (t.name.clone(), Metric::primary(t.kind))).collect();
    let summary = summarize(&config, data, primary, runs);
    write_summary(&opts.out, &summary)?;
    Ok(summary)
}

fn run_one(run: &Run, data: &Path, out: &Path, eval_split: &SplitData) -> Result<RunResult, TrainError> {
    let bundle = out.join("runs").join(&run.config).join(format!("seed-{}", run.seed));
    let started = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(run.train.threads).build()?;
    let options = TrainOptions { keep_checkpoint: false, ..TrainOptions::new(data, run.train.clone(), &bundle) };
    let trained = pool.install(|| train(&options))?;
    let validation = pool.install(|| validate(&trained.model, eval_split, run.train.eval_batch_size))?;
    Ok(RunResult {
        config: run.config.clone(),
        architecture: run.architecture.clone(),
        strategy: run.strategy.clone(),
        seed: run.seed,
        bundle,
        epochs_run: trained.history.epochs.len(),
        best_epoch: trained.history.best_epoch,
        seconds: started.elapsed().as_secs_f64(),
        metrics: validation.metrics.into_iter().filter(|(k, _)| *k != MetricKey::Loss).collect(),
    })
}

fn summarize(
    config: &ExperimentConfig,
    data: PathBuf,
    primary: BTreeMap<String, Metric>,
    runs: Vec<RunResult>,
) -> ExperimentSummary {
    let mut names: Vec<(String, String, Option<String>)> = Vec::new();
    for r in &runs {
        if !names.iter().any(|(n, _, _)| n == &r.config) {
            names.push((r.config.clone(), r.architecture.clone(), r.strategy.clone()));
        }
    }
    let mut configs: Vec<ConfigSummary> = names
        .into_iter()
        .map(|(name, architecture, strategy)| {
            let mut values: BTreeMap<MetricKey, Vec<f64>> = BTreeMap::new();
            for r in runs.iter().filter(|r| r.config == name) {
                for (k, v) in &r.metrics {
                    values.entry(k.clone()).or_default().push(*v);
                }
            }
            let metrics = values.iter().filter_map(|(k, v)| mean_ci95(v).map(|s| (k.clone(), s))).collect();
            ConfigSummary {
                config: name,
                architecture,
                strategy,
                metrics,
                multitask_gain: BTreeMap::new(),
                mean_rank: 0.0,
                comparison: BTreeMap::new(),
            }
        })
        .collect();
    // Verdicts against each configuration's reference, seeds paired.
    let listed: Vec<(String, String, Option<String>)> =
        configs.iter().map(|c| (c.config.clone(), c.architecture.clone(), c.strategy.clone())).collect();
    for c in &mut configs {
        if let Some(reference) =
            compare::reference_of(&c.config, c.strategy.as_ref(), &listed, config.baseline.as_ref())
        {
            c.comparison = compare::compare_with(&runs, &c.config, reference, &primary);
        }
    }
    // Multi-task gain against the baseline architecture under the same strategy.
    if let Some(baseline) = &config.baseline {
        let base: Vec<ConfigSummary> = configs.iter().filter(|c| &c.architecture == baseline).cloned().collect();
        for c in &mut configs {
            let Some(b) = base.iter().find(|b| b.strategy == c.strategy) else { continue };
            for (task, &metric) in &primary {
                let key = MetricKey::task(task, metric);
                if let (Some(x), Some(y)) = (c.metrics.get(&key), b.metrics.get(&key)) {
                    let sign = if key.higher_is_better() { 1.0 } else { -1.0 };
                    c.multitask_gain.insert(task.clone(), sign * (x.mean - y.mean) / y.mean.abs());
                }
            }
        }
    }
    // Mean rank over tasks on the primary metric (ties share the better rank).
    for (task, &metric) in &primary {
        let key = MetricKey::task(task, metric);
        let means: Vec<Option<f64>> = configs.iter().map(|c| c.metrics.get(&key).map(|m| m.mean)).collect();
        for (i, c) in configs.iter_mut().enumerate() {
            let Some(x) = means[i] else { continue };
            let better = means.iter().flatten().filter(|&&y| key.improves(y, x, 0.0)).count();
            c.mean_rank += (better + 1) as f64 / primary.len() as f64;
        }
    }
    let best =
        configs.iter().min_by(|a, b| a.mean_rank.total_cmp(&b.mean_rank)).map(|c| c.config.clone()).unwrap_or_default();
    ExperimentSummary {
        format_version: 1,
        data,
        split: config.split,
        seeds: config.seeds.clone(),
        primary_metrics: primary,
        baseline: config.baseline.clone(),
        verdict_rule: verdict_rule(),
        configs,
        best,
        runs,
    }
}

/// The summary as Markdown: one table of primary metrics (mean ± 95% CI), gains, ranks and
/// verdicts against each configuration's reference, then the verdict rule.
pub fn render_markdown(s: &ExperimentSummary) -> String {
    let mut md = format!(
        "# Experiment on {} ({} split, {} seeds)\n\nMean ± 95% CI (Student's t) over seeds {:?}.",
        s.data.display(),
        s.split,
        s.seeds.len(),
        s.seeds
    );
    if let Some(b) = &s.baseline {
        md += &format!(" Gain: relative change of the mean against `{b}`, positive = better.");
    }
    md += "\n\n| config |";
    for (task, metric) in &s.primary_metrics {
        md += &format!(" {task} {metric} |");
        if s.baseline.is_some() {
            md += &format!(" {task} gain |");
        }
    }
    md += " mean rank | against reference |\n|---|";
    let per_task = if s.baseline.is_some() { 2 } else { 1 };
    md += &"---|".repeat(s.primary_metrics.len() * per_task + 2);
    md += "\n";
    for c in &s.configs {
        let marker = if c.config == s.best { " (lowest mean rank)" } else { "" };
        md += &format!("| {}{marker} |", c.config);
        for (task, metric) in &s.primary_metrics {
            match c.metrics.get(&MetricKey::task(task, *metric)) {
                Some(m) => {
                    md += &format!(" {:.4} ± {} |", m.mean, m.ci95.map_or("n/a".to_owned(), |h| format!("{h:.4}")))
                }
                None => md += " - |",
            }
            if s.baseline.is_some() {
                md += &c.multitask_gain.get(task).map_or(" - |".to_owned(), |g| format!(" {:+.2}% |", 100.0 * g));
            }
        }
        md += &format!(" {:.2} |", c.mean_rank);
        md += &match c.comparison.values().next() {
            Some(first) => format!(" vs {}: {} |\n", first.reference, compare::describe(&c.comparison)),
            None => " reference |\n".to_owned(),
        };
    }
    md += &format!("\n{}\n", s.verdict_rule);
    md += "\nEvery metric of every configuration is in `summary.json`; each run's bundle is in `runs/<config>/seed-<s>/`.\n";
    md
}

fn write_summary(out: &Path, summary: &ExperimentSummary) -> Result<(), TrainError> {
    let write = |name: &str, text: String| {
        let path = out.join(name);
        write_file(&path, text.as_bytes()).map_err(|source| TrainError::Write { path, source })
    };
    write("summary.json", serde_json::to_string_pretty(summary).expect("summaries serialize") + "\n")?;
    write("summary.md", render_markdown(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_merges_objects_replaces_values_and_deletes_nulls() {
        let mut target = serde_json::json!({"model": {"architecture": {"type": "mmoe", "experts": 4}, "tower_layers": [8]}, "epochs": 3});
        merge_patch(
            &mut target,
            &serde_json::json!({"model": {"architecture": {"experts": 8}, "tower_layers": null}, "seed": 2}),
        );
        assert_eq!(
            target,
            serde_json::json!({"model": {"architecture": {"type": "mmoe", "experts": 8}}, "epochs": 3, "seed": 2})
        );
    }

    #[test]
    fn configurations_are_named_by_architecture_and_strategy() {
        assert_eq!(config_name("mmoe", None, 0), "mmoe");
        assert_eq!(config_name("mmoe", Some("static"), 1), "mmoe");
        assert_eq!(config_name("mmoe", Some("dwa"), 2), "mmoe+dwa");
    }
}
