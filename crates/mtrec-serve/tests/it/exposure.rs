//! The exposure log: its records are what was answered; a full queue drops and counts, and
//! scoring goes on.

use mtrec_serve::exposure::{ExposureConfig, ExposureLog};
use polars::prelude::*;

use crate::common::{off_runtime, post_json, send, state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_holds_what_was_answered() {
    let dir = tempfile::tempdir().unwrap();
    let state = state();
    state.start_exposure_log(ExposureConfig::new(dir.path())).unwrap();
    let mut answers = Vec::new();
    for (user, items) in [("u1", vec!["i1", "i2"]), ("u2", vec!["i3"]), ("u1", vec!["i2", "i4", "i5"])] {
        let items: Vec<serde_json::Value> = items.iter().map(|i| serde_json::json!({"id": i})).collect();
        let request = serde_json::json!({"user": {"id": user}, "items": items});
        let answer = post_json(&state, "/v1/score", &request).await;
        assert_eq!(answer.status, 200);
        answers.push((user, answer.json()));
    }
    let closing = state.clone();
    tokio::task::spawn_blocking(move || closing.close()).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one completed file, no partial one: {files:?}");
    assert_eq!(files[0].extension().unwrap(), "parquet");
    let log = off_runtime(|| {
        let file = std::fs::File::open(&files[0]).unwrap();
        ParquetReader::new(file).finish().unwrap()
    });

    assert_eq!(log.height(), answers.len(), "one row per request");
    for (request, (user, answer)) in answers.iter().enumerate() {
        let cell = |name: &str| log.column(name).unwrap().get(request).unwrap().str_value().into_owned();
        assert_eq!(cell("request"), request.to_string());
        assert_eq!(cell("user_id"), *user);
        assert_eq!(cell("arm"), "stable");
        assert_eq!(cell("version"), answer["model"]["version"].as_str().unwrap());
        let list = |name: &str| log.column(name).unwrap().list().unwrap().get_as_series(request).unwrap();
        let items = list("item_id");
        let results = answer["results"].as_array().unwrap();
        assert_eq!(items.len(), results.len());
        for (position, result) in results.iter().enumerate() {
            assert_eq!(items.str().unwrap().get(position), result["item_id"].as_str());
            let close = |name: &str, value: f64| {
                // JSON carries f32 outputs in their shortest form; the log keeps them exactly.
                let got = list(name).f64().unwrap().get(position).unwrap();
                assert!((got - value).abs() <= 1e-6 * value.abs().max(1.0), "{name}: {got} vs {value}");
            };
            for (task, output) in result["scores"].as_object().unwrap() {
                if let Some(p) = output.get("probability") {
                    close(&format!("binary.{task}"), p.as_f64().unwrap());
                } else if let Some(v) = output.get("value") {
                    close(&format!("regression.{task}"), v.as_f64().unwrap());
                } else {
                    for (class, p) in output["probabilities"].as_object().unwrap() {
                        close(&format!("multiclass.{task}.{class}"), p.as_f64().unwrap());
                    }
                }
            }
        }
    }
    let outputs: Vec<String> = log.get_column_names().iter().skip(7).map(|c| c.to_string()).collect();
    assert_eq!(
        outputs,
        [
            "binary.click",
            "binary.click_convert",
            "binary.convert",
            "regression.dwell",
            "binary.high_value",
            "multiclass.item_quality.high",
            "multiclass.item_quality.low",
            "multiclass.item_quality.mid"
        ]
    );
    let metrics = String::from_utf8(send(&state, "GET", "/metrics", None, vec![]).await.body).unwrap();
    assert!(metrics.contains("mtrec_exposure_records_written_total 3"), "{metrics}");
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_scoring_goes_on() {
    let state = state();
    // Nobody drains this queue of two: the third record onwards finds it full.
    let (log, _queue) = ExposureLog::stalled(2, state.metrics.exposure.clone());
    state.set_exposure_log(log);
    for u in 0..5 {
        let request = serde_json::json!({"user": {"id": format!("u{u}")}, "items": [{"id": "i1"}]});
        assert_eq!(post_json(&state, "/v1/score", &request).await.status, 200);
    }
    let metrics = String::from_utf8(send(&state, "GET", "/metrics", None, vec![]).await.body).unwrap();
    for needle in ["mtrec_exposure_records_queued_total 2", "mtrec_exposure_records_dropped_total 3"] {
        assert!(metrics.contains(needle), "{needle} not in\n{metrics}");
    }
}
