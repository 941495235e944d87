//! Hot reload: swaps under load without a failed request; a corrupt or mismatched bundle is
//! rejected and the old model keeps answering.

use std::path::PathBuf;

use crate::common::{copy_dir, fixture, post_json, send, state};

async fn version(state: &std::sync::Arc<mtrec_serve::AppState>) -> String {
    let models = send(state, "GET", "/v1/models", None, vec![]).await.json();
    models["models"][0]["stable_version"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloading_under_load_fails_no_request() {
    let fx = fixture();
    let state = state();
    let first = version(&state).await;
    let request = serde_json::json!({"user": {"id": "u1"}, "items": [{"id": "i1"}, {"id": "i2"}, {"id": "i3"}]});
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (state, request) = (state.clone(), request.clone());
        clients.push(tokio::spawn(async move {
            let mut versions = std::collections::BTreeSet::new();
            for _ in 0..40 {
                let answer = post_json(&state, "/v1/score", &request).await;
                assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
                versions.insert(answer.json()["model"]["version"].as_str().unwrap().to_owned());
            }
            versions
        }));
    }
    for i in 0..6 {
        let bundle: &PathBuf = if i % 2 == 0 { &fx.bundle_b } else { &fx.bundle };
        let body = serde_json::json!({"bundle": bundle});
        let answer = post_json(&state, "/v1/admin/reload", &body).await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    }
    let mut seen = std::collections::BTreeSet::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    assert!(seen.contains(&first), "requests were answered by the first model");
    assert_eq!(version(&state).await, first, "six reloads end on the first bundle");
    let metrics = String::from_utf8(send(&state, "GET", "/metrics", None, vec![]).await.body).unwrap();
    assert!(metrics.contains(r#"mtrec_reloads_total{outcome="ok"} 6"#), "{metrics}");
}

#[tokio::test]
async fn a_corrupt_or_mismatched_bundle_is_rejected_and_the_old_model_keeps_serving() {
    let fx = fixture();
    let state = state();
    let before = version(&state).await;
    let request = serde_json::json!({"user": {}, "items": [{}]});
    let scores_before = post_json(&state, "/v1/score", &request).await.json()["results"].clone();

    let corrupt = fx.root.join("corrupt-bundle");
    copy_dir(&fx.bundle, &corrupt);
    let weights = corrupt.join("weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();

    let mismatched = fx.root.join("mismatched-bundle");
    copy_dir(&fx.bundle, &mismatched);
    let features = mismatched.join("features.json");
    let text = std::fs::read_to_string(&features).unwrap();
    let mut pipeline: serde_json::Value = serde_json::from_str(&text).unwrap();
    pipeline["schema_hash"] = serde_json::json!("0000");
    std::fs::write(&features, pipeline.to_string()).unwrap();

    for (bundle, part) in [(&corrupt, "weights.safetensors"), (&mismatched, "features.json")] {
        let answer = post_json(&state, "/v1/admin/reload", &serde_json::json!({"bundle": bundle})).await;
        assert_eq!((answer.status.as_u16(), answer.error_code()), (422, "reload_rejected".to_owned()));
        let message = answer.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(part), "{message} should name {part}");
        assert_eq!(version(&state).await, before);
        let answer = post_json(&state, "/v1/score", &request).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["results"], scores_before);
    }
}

#[tokio::test]
async fn reload_needs_the_token_and_is_disabled_without_one() {
    let fx = fixture();
    let state = state();
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/admin/reload")
        .header("authorization", "Bearer wrong")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(mtrec_serve::app(state), request).await.unwrap();
    assert_eq!(response.status(), 401);

    let config = mtrec_serve::ServeConfig { bundle: fx.bundle.clone(), admin_token: None, ..Default::default() };
    let no_token = crate::common::state_with(config, Default::default());
    let answer = send(&no_token, "POST", "/v1/admin/reload", None, vec![]).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (403, "admin_disabled".to_owned()));
}
