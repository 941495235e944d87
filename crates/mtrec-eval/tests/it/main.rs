//! Integration tests of mtrec-eval: `eval`, `ab` and `predict` on small trained bundles, end to
//! end. The bundles are trained (the reports show training histories and task relatedness), so
//! the trainer is a dev-dependency only.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mtrec_eval::predict::{predict, Compression};
use mtrec_eval::{ab, eval, EvalError, EvalOptions};
use mtrec_model::ArchitectureConfig;
use mtrec_schema::Split;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    raw: polars::prelude::DataFrame,
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
        let mtrec_testkit::SyntheticIngest { raw, ingest, .. } = mtrec_testkit::ingest_synthetic(&root, &cfg);
        let train = |name: &str, architecture: ArchitectureConfig| {
            let mut config = mtrec_train::TrainConfig { epochs: 1, batch_size: 256, ..Default::default() };
            config.model.architecture = architecture;
            config.model.tower_layers = vec![8];
            let out = root.join(name);
            let options = mtrec_train::TrainOptions::new(&ingest, config, &out);
            mtrec_train::train(&options).unwrap();
            out
        };
        let shared_bottom = train("shared-bottom", ArchitectureConfig::SharedBottom { layers: vec![32] });
        let mmoe = train("mmoe", ArchitectureConfig::Mmoe { experts: 3, expert_layers: vec![16] });
        let single_task = train("single-task", ArchitectureConfig::SingleTask { layers: vec![16] });
        Fixture { _dir: dir, root, raw, ingest, shared_bottom, mmoe, single_task }
    })
}

fn options() -> EvalOptions {
    EvalOptions {
        data: fixture().ingest.clone(),
        split: mtrec_schema::Split::Test,
        batch_size: 512,
        report: mtrec_report::ReportOptions { bootstrap_replicates: 200, ..Default::default() },
        force: false,
        progress: false,
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
    // The verdict table shows the same rows in both renderings, with the test's interval.
    let verdicts = markdown.split("## Verdicts").nth(1).unwrap().split("\n\n").nth(1).unwrap();
    for task in &report.tasks {
        let row = verdicts.lines().find(|l| l.starts_with(&format!("| {} |", task.task.replace('_', r"\_"))));
        let row = row.unwrap_or_else(|| panic!("no verdict row for {} in {verdicts}", task.task));
        assert!(row.contains(" | [") && row.ends_with(&format!("| {} |", task.verdict.as_str())), "{row}");
        assert!(html.contains(&format!("<td>{}</td><td>{}</td>", task.task, task.primary_metric)), "{}", task.task);
    }
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
    assert!(err.to_string().contains("different feature pipelines (vocabularies.region[0]: "), "{err}");
    let err = eval(&other, &options(), &out).unwrap_err();
    assert!(err.to_string().contains("another feature pipeline than the bundle's (vocabularies.region[0]: "), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&fx.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".mtrec-refused-"))
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

#[test]
fn predict_writes_every_task_for_every_row() {
    let fx = fixture();
    let bundle = mtrec_model::bundle::load(&fx.mmoe).unwrap();
    let out = fx.root.join("pred.parquet");
    let rows = predict(&bundle, &fx.ingest, Split::Test, &out, Compression::default(), 1000, false).unwrap();
    let df = polars::prelude::ParquetReader::new(std::fs::File::open(&out).unwrap()).finish().unwrap();
    use polars::prelude::SerReader;
    assert_eq!(df.height(), rows);
    for c in [
        "id.row",
        "id.user",
        "id.item",
        "pred.click",
        "label.click",
        "mask.click",
        "pred.dwell",
        "pred.item_quality",
        "prob.item_quality.low",
        "gate.click.0",
        "gate.click.2",
    ] {
        assert!(df.column(c).is_ok(), "{c} missing");
    }
    let p = df.column("pred.click").unwrap().f32().unwrap().clone();
    assert!(p.into_no_null_iter().all(|x| (0.0..=1.0).contains(&x)));
}

fn f64_column(df: &polars::prelude::DataFrame, name: &str) -> Vec<Option<f64>> {
    use polars::prelude::DataType;
    let column = df.column(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    column.cast(&DataType::Float64).unwrap().f64().unwrap().iter().collect()
}

/// The synthetic `dwell` task learns `ln(1 + dwell_time)`: `predict` writes its predictions and
/// labels in seconds (the raw column's units), the log-scale values beside them, and the mean
/// from the residual variance training measured; the reports add metrics in seconds.
#[test]
fn regression_outputs_and_labels_are_in_the_labels_units() {
    use polars::prelude::SerReader;
    let fx = fixture();
    let bundle = mtrec_model::bundle::load(&fx.mmoe).unwrap();
    let dwell = bundle.model.heads.iter().find(|h| h.name == "dwell").unwrap();
    let history = read_json(&fx.mmoe.join("history.json"));
    let valid_rmse = history["epochs"][0]["valid"]["dwell.rmse"].as_f64().unwrap();
    let variance = dwell.residual_variance.expect("training measured the residual variance");
    assert!((variance - valid_rmse * valid_rmse).abs() <= 1e-12 * variance, "{variance} vs {valid_rmse}²");

    let out = fx.root.join("pred-units.parquet");
    predict(&bundle, &fx.ingest, Split::Test, &out, Compression::default(), 1000, false).unwrap();
    let df = polars::prelude::ParquetReader::new(std::fs::File::open(&out).unwrap()).finish().unwrap();
    let rows: Vec<usize> = f64_column(&df, "id.row").into_iter().map(|r| r.unwrap() as usize).collect();
    let (pred, log1p, mean) =
        (f64_column(&df, "pred.dwell"), f64_column(&df, "pred.dwell.log1p"), f64_column(&df, "pred.dwell.mean"));
    let (label, label_log1p) = (f64_column(&df, "label.dwell"), f64_column(&df, "label.dwell.log1p"));
    let mask = f64_column(&df, "mask.dwell");
    let raw = f64_column(&fx.raw, "dwell_time");
    let close = |a: f64, b: f64, tolerance: f64| (a - b).abs() <= tolerance * b.abs().max(1.0);
    let (mut labeled, mut squared_error) = (0, 0.0);
    for r in 0..df.height() {
        let (pred, log1p, mean) = (pred[r].unwrap(), log1p[r].unwrap(), mean[r].unwrap());
        assert!(close(pred, log1p.exp_m1(), 1e-12), "row {r}: {pred} is not exp({log1p}) - 1");
        assert!(close(mean, (log1p + variance / 2.0).exp_m1(), 1e-12), "row {r}: mean {mean}");
        assert!(mean > pred, "row {r}: under a log-normal error the mean exceeds the median");
        if mask[r] == Some(1.0) {
            let seconds = raw[rows[r]].expect("a labeled row has a dwell time");
            assert!(close(label[r].unwrap(), seconds, 1e-5), "row {r}: label {:?} vs raw {seconds}", label[r]);
            assert!(close(label_log1p[r].unwrap(), seconds.ln_1p(), 1e-6), "row {r}");
            labeled += 1;
            squared_error += (pred - label[r].unwrap()).powi(2);
        }
    }
    assert!(labeled > 30, "{labeled} labeled dwell rows");
    let rmse_in_seconds = (squared_error / labeled as f64).sqrt();

    let report = eval(&fx.mmoe, &options(), &fx.root.join("eval-units")).unwrap();
    let task = report.tasks.iter().find(|t| t.task == "dwell").unwrap();
    let metric = |name: &str| task.metrics[&name.parse().unwrap()].unwrap_or_else(|| panic!("dwell.{name} undefined"));
    assert!(close(metric("label_rmse"), rmse_in_seconds, 1e-4), "{} vs {rmse_in_seconds}", metric("label_rmse"));
    assert!(metric("label_rmse") > 2.0 * metric("rmse"), "seconds, not log-seconds: {}", metric("label_rmse"));
    for name in ["rmse", "mae", "r2", "label_mae", "label_r2"] {
        assert!(metric(name).is_finite(), "{name}");
    }
    let click = report.tasks.iter().find(|t| t.task == "click").unwrap();
    assert!(click.metrics.keys().all(|m| !m.name().starts_with("label_")), "only for a label transform");
}

/// The test split in shards of 150 rows: `predict` writes one row group per shard and `eval`
/// gathers them, with the same rows and the same report as from one shard (whatever the
/// compression); a shard that cannot be read fails the command and leaves no output.
#[test]
fn predict_and_eval_read_the_split_shard_by_shard() {
    use polars::prelude::SerReader;
    let fx = fixture();
    let sharded = fx.root.join("sharded");
    let log = fx.root.join("log.parquet");
    mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
        input: vec![log.to_string_lossy().into_owned()],
        shard_rows: 150,
        ..mtrec_ingest::IngestOptions::new(&mtrec_testkit::synthetic_schema(), &sharded)
    })
    .unwrap();
    assert!(mtrec_ingest::encoded::load_manifest(&sharded).unwrap().test.shards.len() > 2);
    let bundle = mtrec_model::bundle::load(&fx.mmoe).unwrap();
    let read = |path: &Path| polars::prelude::ParquetReader::new(std::fs::File::open(path).unwrap()).finish().unwrap();
    let (one, many) = (fx.root.join("pred-one.parquet"), fx.root.join("pred-many.parquet"));
    predict(&bundle, &fx.ingest, Split::Test, &one, Compression::default(), 1000, false).unwrap();
    predict(&bundle, &sharded, Split::Test, &many, Compression::Zstd, 1000, false).unwrap();
    let (one, many) = (read(&one), read(&many));
    assert!(one.equals_missing(&many), "the same rows and predictions");

    let metrics = |data: &Path, out: &str| {
        let report = eval(&fx.mmoe, &EvalOptions { data: data.to_owned(), ..options() }, &fx.root.join(out)).unwrap();
        serde_json::to_value(&report.tasks).unwrap()
    };
    assert_eq!(metrics(&fx.ingest, "eval-one"), metrics(&sharded, "eval-many"));

    // A shard that cannot be read stops the command with its path, and leaves no output.
    let manifest = mtrec_ingest::encoded::load_manifest(&sharded).unwrap();
    let second = sharded.join(&manifest.test.shards[1].file);
    std::fs::write(&second, b"not an Arrow file").unwrap();
    let failed = fx.root.join("pred-failed.parquet");
    let error = predict(&bundle, &sharded, Split::Test, &failed, Compression::Lz4, 1000, false).unwrap_err();
    assert!(error.to_string().contains(&second.display().to_string()), "{error}");
    assert!(!failed.exists(), "no half-written output");
}

#[test]
fn predict_refuses_data_encoded_with_another_pipeline_or_format() {
    let fx = fixture();
    let bundle = mtrec_model::bundle::load(&fx.mmoe).unwrap();
    // The same rows, ingested with a schema that differs only in an embedding dimension.
    let mut schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic.json"))
            .unwrap(),
    )
    .unwrap();
    schema["defaults"]["embedding_dim"] = serde_json::json!(4);
    std::fs::write(fx.root.join("other.json"), schema.to_string()).unwrap();
    mtrec_ingest::ingest(&mtrec_ingest::IngestOptions {
        input: vec![fx.root.join("log.parquet").to_string_lossy().into_owned()],
        ..mtrec_ingest::IngestOptions::new(&fx.root.join("other.json"), &fx.root.join("other"))
    })
    .unwrap();
    let out = fx.root.join("refused-pred.parquet");
    let err = predict(&bundle, &fx.root.join("other"), Split::Test, &out, Compression::default(), 1000, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("was encoded with another feature pipeline than the bundle's"), "{err}");
    assert!(!out.exists());
    let csv = fx.root.join("pred.csv");
    let err =
        predict(&bundle, &fx.ingest, Split::Test, &csv, Compression::default(), 1000, false).unwrap_err().to_string();
    assert!(err.contains("pred.csv: unknown output format"), "{err}");
    assert!(!csv.exists());
}

/// An empty split has nothing to evaluate: the report is refused, naming the split and the data.
#[test]
fn an_empty_split_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtrec-ingest/tests/data");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("interactions.json")).unwrap()).unwrap();
    schema["split"]["fractions"] = serde_json::json!({"train": 0.7, "valid": 0.3, "test": 0.0});
    std::fs::write(dir.path().join("interactions.json"), schema.to_string()).unwrap();
    std::fs::copy(fixture.join("interactions.csv"), dir.path().join("interactions.csv")).unwrap();
    let ingest = dir.path().join("ingest");
    mtrec_ingest::ingest(&mtrec_ingest::IngestOptions::new(&dir.path().join("interactions.json"), &ingest)).unwrap();
    let config = mtrec_model::ModelConfig::default();
    let bundle = mtrec_testkit::untrained_bundle(&ingest, &dir.path().join("b"), &config, 1);
    let options = EvalOptions { data: ingest.clone(), ..options() };
    let err = eval(&bundle, &options, &dir.path().join("report")).unwrap_err().to_string();
    assert_eq!(err, format!("the test split of {} is empty: there is nothing to evaluate", ingest.display()));
    assert!(!dir.path().join("report").exists());
}

mod online;
