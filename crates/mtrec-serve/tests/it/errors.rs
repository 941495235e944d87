//! The one error shape, with the right status and the field at fault, for every kind of bad
//! request; readiness, limits and timeouts.

use std::time::Duration;

use crate::common::{config, post_json, send, state, state_with};
use mtrec_serve::{AppState, Limits, ServeConfig, TablePaths};

/// (body, status, code, field)
fn cases() -> Vec<(&'static str, u16, &'static str, Option<&'static str>)> {
    vec![
        (r#"{"user": {}, "items": [{"id": 1}"#, 400, "invalid_json", None),
        ("", 400, "invalid_json", None),
        (r#"{"user": {}, "items": [{}]} trailing"#, 400, "invalid_json", None),
        (r#"{"user": [], "items": [{}]}"#, 400, "invalid_field", Some("user")),
        (r#"{"user": {}, "items": {}}"#, 400, "invalid_field", Some("items")),
        (r#"{"user": {}, "items": [{}, 3]}"#, 400, "invalid_field", Some("items[1]")),
        (r#"{"user": {}}"#, 400, "invalid_field", None),
        (r#"{"user": {}, "items": [{}], "extra": 1}"#, 400, "invalid_field", Some("extra")),
        (r#"{"user": {}, "items": [{}, {"price": "cheap"}]}"#, 400, "invalid_field", Some("items[1].price")),
        (r#"{"user": {"age_bucket": {"a": 1}}, "items": [{}]}"#, 400, "invalid_field", Some("user.age_bucket")),
        (r#"{"user": {"recent_items": [[1]]}, "items": [{}]}"#, 400, "invalid_field", Some("user.recent_items")),
        (r#"{"user": {}, "items": [{}], "tasks": [3]}"#, 400, "invalid_field", Some("tasks[0]")),
        (r#"{"user": {}, "items": []}"#, 422, "no_items", Some("items")),
        (r#"{"user": {}, "items": [{}], "tasks": ["click", "nope"]}"#, 422, "unknown_task", Some("tasks[1]")),
        (r#"{"user": {}, "items": [{}], "tasks": []}"#, 422, "no_tasks", Some("tasks")),
    ]
}

#[tokio::test]
async fn bad_score_requests_get_the_error_shape_with_status_code_and_field() {
    let state = state();
    for (body, status, code, field) in cases() {
        let answer = send(&state, "POST", "/v1/score", Some("application/json"), body.as_bytes().to_vec()).await;
        assert_eq!(answer.status.as_u16(), status, "{body}: {}", String::from_utf8_lossy(&answer.body));
        assert_eq!(answer.error_code(), code, "{body}");
        assert_eq!(answer.json()["error"]["field"].as_str(), field, "{body}");
    }
}

#[tokio::test]
async fn bad_batch_requests_name_the_row() {
    let state = state();
    let answer =
        post_json(&state, "/v1/score/batch", &serde_json::json!({"rows": [{}, {"item": {"price": "cheap"}}]})).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (400, "invalid_field".to_owned()));
    assert_eq!(answer.json()["error"]["field"], "rows[1].item.price");
    let answer = post_json(&state, "/v1/score/batch", &serde_json::json!({"rows": []})).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (422, "no_rows".to_owned()));
    let answer =
        send(&state, "POST", "/v1/score/batch", Some(mtrec_serve::api::ARROW_STREAM), b"not arrow".to_vec()).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (400, "invalid_arrow".to_owned()));
    let answer = send(&state, "POST", "/v1/score", Some(mtrec_serve::api::ARROW_STREAM), b"x".to_vec()).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (415, "unsupported_media_type".to_owned()));
}

#[tokio::test]
async fn limits_are_enforced() {
    let limits = Limits { max_items: 3, max_batch_rows: 2 };
    let state = state_with(ServeConfig { limits, body_limit: 4096, ..config() }, TablePaths::default());
    let items: Vec<serde_json::Value> = (0..4).map(|i| serde_json::json!({"id": i})).collect();
    let answer = post_json(&state, "/v1/score", &serde_json::json!({"user": {}, "items": items})).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (422, "too_many_items".to_owned()));
    let answer = post_json(&state, "/v1/score/batch", &serde_json::json!({"rows": [{}, {}, {}]})).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (422, "too_many_rows".to_owned()));
    let big = serde_json::json!({"user": {"region": "x".repeat(5000)}, "items": [{}]});
    let answer = post_json(&state, "/v1/score", &big).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (413, "payload_too_large".to_owned()));
}

#[tokio::test]
async fn requests_time_out_with_503() {
    // 20,000 rows take tens of milliseconds to score: far over a 1 ms limit.
    let state =
        state_with(ServeConfig { request_timeout: Duration::from_millis(1), ..config() }, TablePaths::default());
    let rows = vec![serde_json::json!({}); 20_000];
    let answer = post_json(&state, "/v1/score/batch", &serde_json::json!({ "rows": rows })).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (503, "timeout".to_owned()));
}

#[tokio::test]
async fn without_a_model_the_server_is_live_but_not_ready() {
    let state = AppState::new(config());
    assert_eq!(send(&state, "GET", "/healthz", None, vec![]).await.status, 200);
    let answer = send(&state, "GET", "/readyz", None, vec![]).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (503, "not_ready".to_owned()));
    let answer = post_json(&state, "/v1/score", &serde_json::json!({"user": {}, "items": [{}]})).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (503, "not_ready".to_owned()));
    let answer = send(&state, "GET", "/v1/models", None, vec![]).await;
    assert_eq!(answer.status, 503);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let state = state();
    let answer = send(&state, "GET", "/v2/score", None, vec![]).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (404, "not_found".to_owned()));
    let answer = send(&state, "GET", "/v1/score", None, vec![]).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (405, "method_not_allowed".to_owned()));
}

#[tokio::test]
async fn metrics_count_requests_pairs_and_the_model_version() {
    let state = state();
    let items: Vec<serde_json::Value> = (0..5).map(|i| serde_json::json!({"id": i})).collect();
    assert_eq!(post_json(&state, "/v1/score", &serde_json::json!({"user": {}, "items": items})).await.status, 200);
    assert_eq!(post_json(&state, "/v1/score", &serde_json::json!({"user": {}, "items": []})).await.status, 422);
    let text = String::from_utf8(send(&state, "GET", "/metrics", None, vec![]).await.body).unwrap();
    let version = state.model().unwrap().model_ref.version.clone();
    for needle in [
        r#"mtrec_http_requests_total{route="/v1/score",method="POST",status="200"} 1"#.to_owned(),
        r#"mtrec_http_requests_total{route="/v1/score",method="POST",status="422"} 1"#.to_owned(),
        r#"mtrec_http_request_duration_seconds_count{route="/v1/score",method="POST",status="200"} 1"#.to_owned(),
        "mtrec_pairs_scored_total 5".to_owned(),
        format!(r#"mtrec_model_info{{name="bundle",version="{version}"}} 1"#),
    ] {
        assert!(text.contains(&needle), "{needle} not in\n{text}");
    }
}

#[tokio::test]
async fn models_describes_tasks_features_and_training_metrics() {
    let state = state();
    let models = send(&state, "GET", "/v1/models", None, vec![]).await.json();
    assert_eq!(models["default_model"], "bundle");
    let version = &models["models"][0]["versions"][0];
    assert_eq!(
        (version["status"].as_str(), version["version"].as_str()),
        (Some("ready"), models["models"][0]["stable_version"].as_str())
    );
    let info = &version["info"];
    let by_path = send(
        &state,
        "GET",
        &format!("/v1/models/bundle/versions/{}", version["version"].as_str().unwrap()),
        None,
        vec![],
    )
    .await;
    assert_eq!(&by_path.json(), info);
    let tasks: Vec<&str> = info["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["click", "convert", "click_convert", "dwell", "high_value", "item_quality"]);
    assert_eq!(info["tasks"][2]["product_of"], serde_json::json!(["click", "convert"]));
    assert_eq!(info["tasks"][4]["scope"], "user");
    assert_eq!(info["tasks"][5]["classes"], serde_json::json!(["low", "mid", "high"]));
    assert!(info["training_metrics"]["click.auc"].as_f64().is_some_and(|a| a > 0.0 && a < 1.0));
    assert!(info["features"].as_array().unwrap().iter().any(|f| f["field"] == "price" && f["side"] == "item"));
}

#[test]
fn the_checked_in_openapi_spec_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == mtrec_serve::openapi::spec_string(),
        "schemas/openapi.json is stale: regenerate it with `mtrec openapi > schemas/openapi.json`"
    );
}

#[tokio::test]
async fn every_path_of_the_spec_is_routed() {
    let state = state();
    let spec = send(&state, "GET", "/openapi.json", None, vec![]).await.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let version = state.model().unwrap().model_ref.version.clone();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        let path = path.replace("{name}", "bundle").replace("{version}", &version);
        for method in methods.as_object().unwrap().keys() {
            let answer = send(&state, &method.to_uppercase(), &path, None, b"{}".to_vec()).await;
            assert!(![404, 405].contains(&answer.status.as_u16()), "{method} {path}: {}", answer.status);
        }
    }
}

/// An Arrow body whose column cannot be read as its feature says: the answer names the body
/// and the reason, not the body alone.
#[tokio::test]
async fn an_unreadable_arrow_column_is_answered_with_its_reason() {
    use polars::prelude::*;
    let state = state();
    let inner = Series::new("".into(), [Series::new("".into(), [1i64, 2])]);
    let nested = Series::new("recent_items".into(), [inner]);
    let mut df = DataFrame::new(1, vec![nested.into()]).unwrap();
    let mut body = Vec::new();
    IpcStreamWriter::new(&mut body).finish(&mut df).unwrap();
    let answer = send(&state, "POST", "/v1/score/batch", Some(mtrec_serve::api::ARROW_STREAM), body).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (400, "invalid_arrow".to_owned()));
    let message = answer.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("request body: ") && message.len() > "request body: ".len() + 10, "{message}");
}

/// Numbers a model cannot use (infinite, beyond f32, NaN) are scored as nulls, as ingestion
/// reads them, with a warning naming the items; huge but finite numbers are scored as given.
#[tokio::test]
async fn extreme_numbers_are_scored_as_nulls_with_a_warning() {
    let state = state();
    let items = serde_json::json!([
        {"price": "inf"}, {"price": 1e300}, {"price": "-Infinity"}, {"price": "NaN"}, {"price": 3.0e38}, {}
    ]);
    let answer = post_json(&state, "/v1/score", &serde_json::json!({"user": {}, "items": items})).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let body = answer.json();
    let probability = |i: usize| body["results"][i]["scores"]["click"]["probability"].as_f64().unwrap();
    for i in 0..6 {
        assert!(probability(i).is_finite(), "item {i}: {body}");
    }
    // Infinite and beyond f32: the same score as a missing price (the last item).
    for i in 0..3 {
        assert_eq!(probability(i), probability(5), "item {i}");
    }
    let warning = body["warnings"].as_array().unwrap().iter().find(|w| w["kind"] == "non_finite").unwrap();
    assert_eq!((warning["field"].as_str(), warning["count"].as_u64()), (Some("items[].price"), Some(3)));
    assert_eq!(warning["indices"], serde_json::json!([0, 1, 2]));
    // NaN is a null, as pandas writes it: scored and reported like the missing price.
    assert_eq!(probability(3), probability(5));
    let missing =
        body["warnings"].as_array().unwrap().iter().find(|w| w["field"] == "items[].price" && w["kind"] == "missing");
    assert_eq!(missing.unwrap()["indices"], serde_json::json!([3, 5]), "{body}");
}

/// In an Arrow batch too, a cell that reads as null (a typed NaN, a null) is scored as a null
/// and reported as missing; an infinite number is scored the same and reported as non-finite.
#[tokio::test]
async fn arrow_cells_that_read_as_null_are_missing() {
    use polars::prelude::*;
    let fx = crate::common::fixture();
    let state = state();
    let idx = IdxCa::from_vec("idx".into(), vec![0, 0, 0, 0]);
    let mut rows = fx.raw.take(&idx).unwrap();
    let price = Series::new("price".into(), [Some(f64::NAN), None, Some(f64::INFINITY), Some(12.5)]);
    rows.replace("price", price.into()).unwrap();
    let mut body = Vec::new();
    IpcStreamWriter::new(&mut body).finish(&mut rows).unwrap();
    let answer = send(&state, "POST", "/v1/score/batch?tasks=click", Some(mtrec_serve::api::ARROW_STREAM), body).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let warnings = answer.headers["x-mtrec-warnings"].to_str().unwrap().to_owned();
    let served = IpcStreamReader::new(std::io::Cursor::new(answer.body)).finish().unwrap();
    let click: Vec<f32> = served.column("pred.click").unwrap().f32().unwrap().into_no_null_iter().collect();
    assert_eq!((click[0], click[2]), (click[1], click[1]), "NaN and inf are scored as the null: {click:?}");
    assert_ne!(click[3], click[1], "a price counts");
    // The header holds `field=kind:count` entries.
    let entries: Vec<&str> = warnings.split(", ").collect();
    for entry in ["rows[].price=missing:2", "rows[].price=non_finite:1"] {
        assert!(entries.contains(&entry), "{entry} not in {warnings}");
    }
}
