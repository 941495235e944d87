//! The `mtrec` binary: flags, exit codes and the end-to-end path on small synthetic data.

use std::path::Path;
use std::process::{Command, Output};

fn mtrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtrec")).args(args).output().expect("the mtrec binary runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[cfg(feature = "mpi")]
#[path = "cli/distributed.rs"]
mod distributed;

/// Built without the `mpi` feature, `--distributed` says how to get it.
#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_training_without_mpi_says_how_to_build_it() {
    let o = mtrec(&["train", "--distributed", "--data", "nowhere", "--out", "nowhere-bundle"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--features mpi"), "{}", text(&o));
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["gen", "--help"],
        &["gen", "synthetic", "--help"],
        &["ingest", "--help"],
        &["schema", "--help"],
        &["quickstart", "--help"],
        &["serve", "--help"],
        &["openapi", "--help"],
        &["eval", "--help"],
        &["ab", "--help"],
        &["replay", "--help"],
    ] {
        let o = mtrec(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("Usage: mtrec"), "{args:?}: {}", text(&o));
    }
    let o = mtrec(&["ingest", "--schema"]);
    assert_eq!(o.status.code(), Some(2), "bad usage exits 2: {}", text(&o));
}

#[test]
fn generate_then_ingest_the_synthetic_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("s.parquet");
    let o = mtrec(&[
        "gen",
        "synthetic",
        "--out",
        data.to_str().unwrap(),
        "--users",
        "50",
        "--items",
        "30",
        "--rows",
        "2000",
        "--seed",
        "3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic.json");
    let out = dir.path().join("ingest");
    let o = mtrec(&[
        "ingest",
        "--schema",
        schema.to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = &report["rows"];
    assert_eq!(
        rows["train"].as_u64().unwrap() + rows["valid"].as_u64().unwrap() + rows["test"].as_u64().unwrap(),
        2000
    );
    let names: Vec<&str> = report["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["click", "convert", "dwell", "high_value", "item_quality"]);
    // convert is masked to clicked rows: its labeled share equals the click rate.
    let click = report["tasks"][0]["label_mean"]["train"].as_f64().unwrap();
    let convert_labeled = report["tasks"][1]["labeled_rate"]["train"].as_f64().unwrap();
    assert!((click - convert_labeled).abs() < 1e-9, "{click} vs {convert_labeled}");
    for f in ["features.json", "manifest.json", "train/part-00000.arrow", "test/part-00000.arrow", "ingest_report.json"]
    {
        assert!(out.join(f).is_file(), "{f}");
    }
}

#[test]
fn ingest_errors_exit_1_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic.json");
    let out = dir.path().join("ingest");
    let missing = dir.path().join("missing.parquet");
    let o = mtrec(&[
        "ingest",
        "--schema",
        schema.to_str().unwrap(),
        "--input",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("missing.parquet: no such file"), "{}", text(&o));
    assert!(!out.exists());
}

#[test]
fn schema_command_prints_the_committed_json_schema() {
    let o = mtrec(&["schema"]);
    assert!(o.status.success());
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/dataset.schema.json"))
            .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), committed);
}

#[test]
fn openapi_command_prints_the_committed_spec() {
    let o = mtrec(&["openapi"]);
    assert!(o.status.success(), "{}", text(&o));
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json")).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), committed);
}

#[test]
fn quickstart_trains_two_models_and_writes_the_ab_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let o = mtrec(&["quickstart", "--out", out.to_str().unwrap(), "--rows", "4000", "--epochs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    for task in ["click", "convert", "dwell", "high_value", "item_quality"] {
        assert!(text(&o).contains(task), "the verdict table names {task}: {}", text(&o));
    }
    for file in ["report.html", "report.md", "report.json"] {
        let path = out.join("ab-report").join(file);
        assert!(std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000), "{} is missing or tiny", path.display());
    }
    assert!(!out.join("mmoe.checkpoint").exists(), "the quickstart leaves no checkpoint");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("ab-report/report.json")).unwrap()).unwrap();
    assert_eq!((report["report"].as_str(), report["model_a"]["name"].as_str()), (Some("ab"), Some("shared-bottom")));
}

#[test]
fn serve_refuses_a_broken_bundle_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let o = mtrec(&["serve", "--bundle", dir.path().to_str().unwrap(), "--addr", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("model.json"), "the error names the missing part: {}", text(&o));
}

/// A log whose user-side numeric columns are constant on the train split, end to end: the
/// bundle trained on an ingest predicts, evaluates and compares on that same ingest (its copy
/// of the fitted pipeline is the ingest's, to the last bit), and serves finite outputs, also
/// for values that differ from the constant.
#[test]
fn a_log_with_constant_columns_trains_predicts_evaluates_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtrec-ingest/tests/data");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("interactions.json")).unwrap()).unwrap();
    // `age` standardized (the fixture min-max scales it) and constant.
    schema["features"][1] =
        serde_json::json!({ "name": "age", "side": "user", "type": "numeric", "normalize": "standardize" });
    std::fs::write(dir.path().join("interactions.json"), schema.to_string()).unwrap();
    let csv = std::fs::read_to_string(fixture.join("interactions.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap().to_owned();
    let age = header.split(',').position(|c| c == "age").unwrap();
    let rows: Vec<String> = lines
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells[age] = "0.1";
            cells.join(",")
        })
        .collect();
    std::fs::write(
        dir.path().join("interactions.csv"),
        [header].into_iter().chain(rows).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let o = mtrec(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        text(&o)
    };
    let ingested = run(&["ingest", "--schema", &path("interactions.json"), "--out", &path("ing")]);
    assert!(ingested.contains("warning: feature \"age\": constant on the train split"), "{ingested}");
    run(&["train", "--data", &path("ing"), "--out", &path("b"), "--epochs", "2", "--quiet"]);
    run(&["predict", "--bundle", &path("b"), "--data", &path("ing"), "--out", &path("p.parquet")]);
    run(&["eval", "--bundle", &path("b"), "--data", &path("ing"), "--out", &path("eval")]);
    run(&["ab", "--a", &path("b"), "--b", &path("b"), "--data", &path("ing"), "--out", &path("ab")]);

    let model = mtrec_serve::ServingModel::load(&dir.path().join("b"), &Default::default()).unwrap();
    for age in [serde_json::json!(0.1), serde_json::json!(0.1001), serde_json::json!(37), serde_json::json!("1e300")] {
        let request: mtrec_serve::api::ScoreRequest =
            serde_json::from_value(serde_json::json!({"user": {"age": age}, "items": [{}]})).unwrap();
        let answer = model.score(&request, &mtrec_serve::Limits::default()).unwrap();
        let scores = serde_json::to_value(&answer.to_response().results[0].scores).unwrap();
        let click = scores["click"]["probability"].as_f64().unwrap();
        assert!(click > 0.0 && click < 1.0, "age {age}: {scores}");
    }
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer token\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The README's online experiment, small: two versions in a repository, 50% of users routed to
/// the candidate, traffic replayed from the log, the exposure log joined with the outcomes.
#[test]
fn an_online_experiment_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/synthetic.json");
    let steps: Vec<Vec<String>> = vec![
        vec![
            "gen",
            "synthetic",
            "--out",
            &path("log.parquet"),
            "--users",
            "300",
            "--items",
            "60",
            "--rows",
            "8000",
            "--quiet",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
        vec![
            "ingest",
            "--schema",
            schema.to_str().unwrap(),
            "--input",
            &path("log.parquet"),
            "--out",
            &path("data"),
            "--quiet",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
    ];
    for step in &steps {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        let o = mtrec(&args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    for architecture in ["shared_bottom", "mmoe"] {
        let models = path("models/synthetic");
        let args = [
            "train",
            "--data",
            &path("data"),
            "--architecture",
            architecture,
            "--epochs",
            "1",
            "--out",
            &models,
            "--next-version",
            "--quiet",
        ];
        let o = mtrec(&args);
        assert!(o.status.success(), "{}", text(&o));
    }
    assert!(
        dir.path().join("models/synthetic/1/model.json").exists()
            && dir.path().join("models/synthetic/2/model.json").exists()
    );
    assert!(!dir.path().join("models/synthetic/1.checkpoint").exists(), "a complete version keeps no checkpoint");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_mtrec"))
        .args(["serve", "--models", &path("models"), "--exposure-log", &path("exposures"), "--admin-token", "token"])
        .args(["--addr", &addr, "--poll-secs", "0.2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        http(port, "GET", "/readyz", "").0 == 200
    });
    let routing = r#"{"labels": {"stable": "1", "candidate": "2"}, "experiment": {"candidate_share": 0.5, "seed": 7}}"#;
    let routed = ready.then(|| http(port, "PUT", "/v1/admin/models/synthetic/routing", routing));
    let replay = ready.then(|| {
        mtrec(&[
            "replay",
            "--bundle",
            &path("models/synthetic/1"),
            "--log",
            &path("log.parquet"),
            "--url",
            &format!("http://{addr}"),
            "--rows",
            "2000",
            "--outcomes",
            &path("outcomes.parquet"),
        ])
    });
    // SIGTERM: the server finishes its requests and completes the exposure file.
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let _ = server.wait();
    assert!(ready, "the server never became ready");
    let (status, body) = routed.unwrap();
    assert_eq!(status, 200, "{body}");
    let replay = replay.unwrap();
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(text(&replay).contains("candidate") && text(&replay).contains("stable"), "{}", text(&replay));
    let files: Vec<String> = std::fs::read_dir(dir.path().join("exposures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.is_empty() && files.iter().all(|f| f.ends_with(".parquet")), "{files:?}");

    let o = mtrec(&[
        "ab",
        "--exposures",
        &path("exposures"),
        "--outcomes",
        &path("outcomes.parquet"),
        "--candidate-share",
        "0.5",
        "--out",
        &path("report"),
        "--bootstrap",
        "200",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let printed = text(&o);
    assert!(printed.contains("arm stable: versions 1") && printed.contains("arm candidate: versions 2"), "{printed}");
    assert!(printed.contains("sample ratio") && !printed.contains("MISMATCH"), "{printed}");
    assert!(dir.path().join("report/report.html").exists());

    let o = mtrec(&[
        "ab",
        "--exposures",
        &path("exposures"),
        "--outcomes",
        &path("outcomes.parquet"),
        "--out",
        &path("r2"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--candidate-share"), "{}", text(&o));
}
