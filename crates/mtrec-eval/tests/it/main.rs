//! Integration tests of mtrec-eval: `eval` and `ab` on small trained bundles, end to end.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mtrec_eval::{ab, eval, EvalError, EvalOptions};
use mtrec_model::ArchitectureConfig;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ingest: PathBuf,
    shared_bottom: PathBuf,
    mmoe: PathBuf,
    single_task: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let cfg = mtrec_synth::SyntheticConfig { users: 150, items: 80, rows: 5_000, seed: 11, ..Default::default() };
        let ingest = mtrec_testkit::ingest_synthetic(&root, &cfg).ingest;
        let train = |name: &str, architecture: ArchitectureConfig| {
            let mut config = mtrec_train::TrainConfig { epochs: 1, batch_size: 256, ..Default::default() };
            config.model.architecture = architecture;
            config.model.tower_layers = vec![8];
            let out = root.join(name);
            let options = mtrec_train::TrainOptions {
                data: ingest.clone(),
                config,
                out: out.clone(),
                resume: false,
                progress: false,
            };
            mtrec_train::train(&options).unwrap();
            out
        };
        let shared_bottom = train("shared-bottom", ArchitectureConfig::SharedBottom { layers: vec![32] });
        let mmoe = train("mmoe", ArchitectureConfig::Mmoe { experts: 3, expert_layers: vec![16] });
        let single_task = train("single-task", ArchitectureConfig::SingleTask { layers: vec![16] });
        Fixture { _dir: dir, root, ingest, shared_bottom, mmoe, single_task }
    })
}

fn options() -> EvalOptions {
    EvalOptions {
        data: fixture().ingest.clone(),
        split: "test".to_owned(),
        batch_size: 512,
        report: mtrec_report::ReportOptions { bootstrap_replicates: 200, ..Default::default() },
        force: false,
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn ab_writes_three_reports_with_every_task_and_the_baseline() {
    let fx = fixture();
    let out = fx.root.join("ab");
    let report = ab(&fx.shared_bottom, &fx.mmoe, Some(&fx.single_task), &options(), &out).unwrap();
    let json = read_json(&out.join("report.json"));
    assert_eq!(json["rows"].as_u64(), Some(report.rows as u64), "report.json is the returned report");
    assert_eq!(json["seesaw"].as_bool(), Some(report.seesaw));
    let tasks: Vec<&str> = json["tasks"].as_array().unwrap().iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["click", "convert", "dwell", "high_value", "item_quality"]);
    for task in json["tasks"].as_array().unwrap() {
        assert!(task["verdict"].is_string(), "{task}");
        assert!(task["multitask_gain"].is_object(), "a single-task baseline gives every task a gain: {}", task["task"]);
    }
    // The MMoE (B) has gates; the shared-bottom (A) has none.
    assert_eq!(json["expert_usage"]["a"], serde_json::json!([]));
    assert_eq!(json["expert_usage"]["b"].as_array().unwrap().len(), 5);
    assert_eq!(json["expert_usage"]["b"][0]["mean_weight"].as_array().unwrap().len(), 3);
    // Masked conversions are excluded: its units are the clicked rows only.
    let test_rows = json["rows"].as_u64().unwrap();
    let convert = &json["tasks"][1];
    assert!(convert["units"].as_u64().unwrap() < test_rows / 2, "{convert}");
    // The synthetic user-level target is drawn per event (not constant per user): per row.
    assert_eq!(
        (json["tasks"][3]["scope"].as_str(), json["tasks"][3]["evaluated"].as_str()),
        (Some("user"), Some("per_row"))
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 10, "ROC, calibration, deltas, gates and curves are drawn");
    assert!(!html.contains("<script"), "readable without JavaScript");
    // Task relatedness from the bundles' histories: label correlation and gradient cosines.
    assert!(json["training"]["b"]["label_correlation"]["click|high_value"].is_number(), "{}", json["training"]["b"]);
    assert!(json["training"]["b"]["epochs"][0]["gradient_cosine"]["click|convert"].is_number());
    assert!(html.contains("Task relatedness"));
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("## Task relatedness: mmoe"), "{markdown}");
    assert!(markdown.contains("| click |") && markdown.contains(r"item\_quality"));
}

#[test]
fn eval_reports_one_model_and_a_second_run_is_identical() {
    let fx = fixture();
    let first = eval(&fx.mmoe, &options(), &fx.root.join("eval-1")).unwrap();
    let second = eval(&fx.mmoe, &options(), &fx.root.join("eval-2")).unwrap();
    assert_eq!(serde_json::to_string(&first).unwrap(), serde_json::to_string(&second).unwrap(), "seeded bootstrap");
    let json = read_json(&fx.root.join("eval-1/report.json"));
    assert_eq!(json["report"], "eval");
    let click = &json["tasks"][0]["metrics"];
    for metric in ["auc", "gauc", "logloss", "ece", "ndcg", "recall", "mrr"] {
        assert!(click[metric].is_number(), "click.{metric} in {click}");
    }
    let auc = click["auc"].as_f64().unwrap();
    let history = read_json(&fx.mmoe.join("history.json"));
    assert!(auc > 0.3 && auc < 1.0, "{auc}");
    assert!(history["epochs"].as_array().is_some_and(|e| !e.is_empty()));
}

#[test]
fn an_existing_output_is_kept_unless_forced() {
    let fx = fixture();
    let out = fx.root.join("existing");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = eval(&fx.mmoe, &options(), &out).unwrap_err();
    assert!(matches!(err, EvalError::OutputExists { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    eval(&fx.mmoe, &EvalOptions { force: true, ..options() }, &out).unwrap();
    assert!(out.join("report.json").exists() && !out.join("keep.txt").exists());
}

#[test]
fn bundles_of_another_pipeline_are_refused_and_nothing_is_written() {
    let fx = fixture();
    let other = fx.root.join("other-pipeline");
    std::fs::create_dir_all(&other).unwrap();
    for entry in std::fs::read_dir(&fx.mmoe).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
    }
    // Same schema, another vocabulary: the loader accepts the bundle, evaluation must not.
    let path = other.join("features.json");
    let mut pipeline = read_json(&path);
    pipeline["vocabularies"]["region"].as_array_mut().unwrap().reverse();
    std::fs::write(&path, pipeline.to_string()).unwrap();
    let out = fx.root.join("refused");
    let err = ab(&fx.mmoe, &other, None, &options(), &out).unwrap_err();
    assert!(err.to_string().contains("different feature pipelines"), "{err}");
    let err = eval(&other, &options(), &out).unwrap_err();
    assert!(err.to_string().contains("another feature pipeline"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&fx.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".mtrec-report-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary directory is left behind");
}

/// Renders the A/B report in headless Chromium when the machine has it (Debian package
/// `chromium`); machines without a browser skip this check and say so.
#[test]
fn the_html_report_renders_in_headless_chromium() {
    let has_browser = ["chromium", "chromium-browser", "google-chrome"].iter().any(|b| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !has_browser {
        eprintln!("skipped: no chromium on this machine");
        return;
    }
    let fx = fixture();
    let out = fx.root.join("ab-render");
    ab(&fx.shared_bottom, &fx.mmoe, None, &options(), &out).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/render_check.sh");
    let png = fx.root.join("report.png");
    let o = std::process::Command::new("bash").arg(&script).arg(out.join("report.html")).arg(&png).output().unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn experiment_options(config_path: PathBuf, out: &Path) -> mtrec_eval::experiment::ExperimentOptions {
    mtrec_eval::experiment::ExperimentOptions {
        config_path,
        data: None,
        parallel: None,
        out: out.to_owned(),
        force: false,
        progress: false,
    }
}

fn write_experiment(name: &str, json: serde_json::Value) -> PathBuf {
    let path = fixture().root.join(name);
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn experiment_runs_the_grid_and_summarizes_over_seeds() {
    let fx = fixture();
    let config = write_experiment(
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
    let out = fx.root.join("experiment");
    let options = experiment_options(config, &out);
    let summary = mtrec_eval::experiment::run(&options).unwrap();
    assert_eq!(summary.runs.len(), 4);
    let names: Vec<&str> = summary.configs.iter().map(|c| c.config.as_str()).collect();
    assert_eq!(names, ["single_task", "shared_bottom"]);
    for c in &summary.configs {
        let auc = c.metrics["click.auc"];
        assert_eq!(auc.runs, 2);
        assert!(auc.ci95.is_some_and(|h| h >= 0.0), "{auc:?}");
        let runs: Vec<f64> =
            summary.runs.iter().filter(|r| r.config == c.config).map(|r| r.metrics["click.auc"]).collect();
        assert!((auc.mean - (runs[0] + runs[1]) / 2.0).abs() < 1e-12);
    }
    assert_eq!(summary.configs[0].multitask_gain["click"], 0.0, "the baseline's gain over itself");
    assert!(summary.configs[1].multitask_gain.contains_key("item_quality"));
    assert!(names.contains(&summary.best.as_str()));
    for dir in ["runs/single_task/seed-1", "runs/shared_bottom/seed-2"] {
        assert!(out.join(dir).join("weights.safetensors").exists(), "{dir}");
        assert!(!out.join(format!("{dir}.checkpoint")).exists(), "finished runs keep no checkpoint");
    }
    let markdown = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(markdown.contains("| shared_bottom") && markdown.contains("click auc"), "{markdown}");
    // Seeds are deterministic: the same grid again gives the same numbers.
    let again =
        mtrec_eval::experiment::run(&mtrec_eval::experiment::ExperimentOptions { force: true, ..options }).unwrap();
    assert_eq!(serde_json::to_string(&again.configs).unwrap(), serde_json::to_string(&summary.configs).unwrap());
}

#[test]
fn a_bad_experiment_names_the_configuration_and_field_and_runs_nothing() {
    let fx = fixture();
    let config = write_experiment(
        "bad-experiment.json",
        serde_json::json!({
            "data": "ingest",
            "architectures": { "mmoe": { "model": { "architecture": { "type": "mmoe", "experts": "eight", "expert_layers": [8] } } } },
            "seeds": [1]
        }),
    );
    let out = fx.root.join("bad-experiment");
    let options = experiment_options(config, &out);
    let message = mtrec_eval::experiment::run(&options).unwrap_err().to_string();
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
            let options = mtrec_eval::experiment::ExperimentOptions {
                data: Some(PathBuf::from("any-ingest")),
                ..experiment_options(path.clone(), Path::new("unused"))
            };
            let runs = mtrec_eval::experiment::check(&options).unwrap_or_else(|e| panic!("{e}"));
            assert!(runs > 0, "{}", path.display());
            files += 1;
        }
    }
    assert!(files >= 4, "only {files} experiment files in {}", dir.display());
}
