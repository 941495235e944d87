//! `mtrec experiment`: a grid of configurations × seeds on one ingest, its summary, and the
//! checks of experiment files before anything runs.

use std::path::{Path, PathBuf};

use mtrec_schema::Metric;

use crate::common::{key, Data};

fn experiment_options(config_path: PathBuf, out: &Path) -> mtrec_train::experiment::ExperimentOptions {
    mtrec_train::experiment::ExperimentOptions {
        config_path,
        data: None,
        parallel: None,
        out: out.to_owned(),
        force: false,
        progress: false,
    }
}

fn write_experiment(data: &Data, name: &str, json: serde_json::Value) -> PathBuf {
    let path = data.path(name);
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn experiment_runs_the_grid_and_summarizes_over_seeds() {
    let data = Data::new();
    let config = write_experiment(
        &data,
        "experiment.json",
        serde_json::json!({
            "data": "ingest",
            "base": { "epochs": 1, "batch_size": 256, "model": { "tower_layers": [8] } },
            "architectures": {
                "single_task": { "model": { "architecture": { "type": "single_task", "layers": [8] } } },
                "shared_bottom": { "model": { "architecture": { "type": "shared_bottom", "layers": [16] } } }
            },
            "seeds": [1, 2],
            "baseline": "single_task",
            "parallel": 2
        }),
    );
    let out = data.path("experiment");
    let options = experiment_options(config, &out);
    let summary = mtrec_train::experiment::run(&options).unwrap();
    assert_eq!(summary.runs.len(), 4);
    let names: Vec<&str> = summary.configs.iter().map(|c| c.config.as_str()).collect();
    assert_eq!(names, ["single_task", "shared_bottom"]);
    for c in &summary.configs {
        let auc = c.metrics[&key("click.auc")];
        assert_eq!(auc.runs, 2);
        assert!(auc.ci95.is_some_and(|h| h >= 0.0), "{auc:?}");
        let runs: Vec<f64> =
            summary.runs.iter().filter(|r| r.config == c.config).map(|r| r.metrics[&key("click.auc")]).collect();
        assert!((auc.mean - (runs[0] + runs[1]) / 2.0).abs() < 1e-12);
    }
    assert_eq!(summary.configs[0].multitask_gain["click"], 0.0, "the baseline's gain over itself");
    // Each task is judged by its primary metric, the one the A/B verdicts use.
    let primary: Vec<(&str, Metric)> = summary.primary_metrics.iter().map(|(t, m)| (t.as_str(), *m)).collect();
    assert_eq!(
        primary,
        [
            ("click", Metric::Auc),
            ("convert", Metric::Auc),
            ("dwell", Metric::Rmse),
            ("high_value", Metric::Auc),
            ("item_quality", Metric::Logloss)
        ]
    );
    assert!(summary.configs[1].multitask_gain.contains_key("item_quality"));
    assert!(names.contains(&summary.best.as_str()));
    // Verdicts against the baseline by the A/B reports' rule, seeds paired: every task of the
    // shared-bottom configuration, none for the baseline itself.
    assert!(summary.configs[0].comparison.is_empty());
    let comparison = &summary.configs[1].comparison;
    let compared: Vec<&str> = comparison.keys().map(String::as_str).collect();
    assert_eq!(compared, ["click", "convert", "dwell", "high_value", "item_quality"]);
    for (task, c) in comparison {
        assert_eq!((c.reference.as_str(), c.seeds, c.metric), ("single_task", 2, summary.primary_metrics[task]));
        let (p, q) = (c.p_value.unwrap(), c.q_value.unwrap());
        assert!(q >= p && q <= 1.0, "{task}: {c:?}");
        let significant = c.verdict != mtrec_metrics::Verdict::NoSignificantDifference;
        assert_eq!(significant, q < mtrec_train::experiment::ALPHA, "{task}: {c:?}");
    }
    assert!(summary.verdict_rule.contains("Benjamini-Hochberg"));
    for dir in ["runs/single_task/seed-1", "runs/shared_bottom/seed-2"] {
        assert!(out.join(dir).join("weights.safetensors").exists(), "{dir}");
        assert!(!out.join(format!("{dir}.checkpoint")).exists(), "finished runs keep no checkpoint");
    }
    let markdown = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(markdown.contains("| shared_bottom") && markdown.contains("click auc"), "{markdown}");
    assert!(markdown.contains("vs single_task: ") && markdown.contains(&summary.verdict_rule), "{markdown}");
    // Seeds are deterministic: the same grid again gives the same numbers.
    let again =
        mtrec_train::experiment::run(&mtrec_train::experiment::ExperimentOptions { force: true, ..options }).unwrap();
    assert_eq!(serde_json::to_string(&again.configs).unwrap(), serde_json::to_string(&summary.configs).unwrap());
}

#[test]
fn a_bad_experiment_names_the_configuration_and_field_and_runs_nothing() {
    let data = Data::new();
    let config = write_experiment(
        &data,
        "bad-experiment.json",
        serde_json::json!({
            "data": "ingest",
            "architectures": { "mmoe": { "model": { "architecture": { "type": "mmoe", "experts": "eight", "expert_layers": [8] } } } },
            "seeds": [1]
        }),
    );
    let out = data.path("bad-experiment");
    let options = experiment_options(config, &out);
    let message = mtrec_train::experiment::run(&options).unwrap_err().to_string();
    assert!(
        message.contains("configuration \"mmoe\": model.architecture") && message.contains("\"eight\""),
        "{message}"
    );
    assert!(!out.exists());
}

#[test]
fn every_shipped_experiment_file_plans_its_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/experiments");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let options = mtrec_train::experiment::ExperimentOptions {
                data: Some(PathBuf::from("any-ingest")),
                ..experiment_options(path.clone(), Path::new("unused"))
            };
            let runs = mtrec_train::experiment::check(&options).unwrap_or_else(|e| panic!("{e}"));
            assert!(runs > 0, "{}", path.display());
            files += 1;
        }
    }
    assert!(files >= 4, "only {files} experiment files in {}", dir.display());
}
