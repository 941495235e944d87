//! The model repository: versions picked up while requests run, broken versions never served,
//! readiness, labels, pinning, the sticky split of users, and retention.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mtrec_serve::repository::Experiment;
use mtrec_serve::{AppState, RepositoryConfig, ServeConfig};

use crate::common::{copy_dir, fixture, post_json, send};

/// A repository directory with model `ctr`.
struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        std::fs::create_dir_all(root.join("ctr")).unwrap();
        Repo { _dir: dir, root }
    }

    fn version(&self, version: &str) -> PathBuf {
        self.root.join("ctr").join(version)
    }

    /// Adds a version as a deployment would: written beside, then renamed into place.
    fn add(&self, version: &str, bundle: &Path) {
        let staging = self.root.join("ctr").join(format!(".staging-{version}"));
        copy_dir(bundle, &staging);
        std::fs::rename(staging, self.version(version)).unwrap();
    }

    fn state(&self, keep_versions: usize) -> Arc<AppState> {
        let repository = RepositoryConfig { keep_versions, ..RepositoryConfig::new(&self.root) };
        AppState::new(ServeConfig {
            repository: Some(repository),
            admin_token: Some("token".to_owned()),
            ..Default::default()
        })
    }
}

fn score_request(user: &str) -> serde_json::Value {
    serde_json::json!({"user": {"id": user}, "items": [{"id": "i1"}, {"id": "i2"}]})
}

async fn models(state: &Arc<AppState>) -> serde_json::Value {
    send(state, "GET", "/v1/models", None, vec![]).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_is_picked_up_while_requests_run() {
    let fx = fixture();
    let repo = Repo::new();
    repo.add("1", &fx.bundle);
    let state = repo.state(3);
    state.refresh_repository().await.unwrap();
    assert_eq!(send(&state, "GET", "/readyz", None, vec![]).await.status, 200);
    let mut clients = Vec::new();
    for c in 0..4 {
        let state = state.clone();
        clients.push(tokio::spawn(async move {
            let mut versions = std::collections::BTreeSet::new();
            for r in 0..40 {
                let answer = post_json(&state, "/v1/score", &score_request(&format!("u{c}-{r}"))).await;
                assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
                versions.insert(answer.json()["model"]["version"].as_str().unwrap().to_owned());
                tokio::task::yield_now().await;
            }
            versions
        }));
    }
    repo.add("2", &fx.bundle_b);
    state.refresh_repository().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    assert!(seen.iter().all(|v| v == "1" || v == "2"), "{seen:?}");
    let answer = post_json(&state, "/v1/score", &score_request("u")).await.json();
    assert_eq!((answer["model"]["name"].as_str(), answer["model"]["version"].as_str()), (Some("ctr"), Some("2")));
    assert_eq!(answer["arm"], "stable");
}

#[tokio::test]
async fn a_broken_version_is_never_served_and_says_why_until_it_is_fixed() {
    let fx = fixture();
    let repo = Repo::new();
    let state = repo.state(3);
    state.refresh_repository().await.unwrap();
    let answer = send(&state, "GET", "/readyz", None, vec![]).await;
    assert_eq!(answer.status, 503, "an empty repository is not ready");
    let message = answer.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains(r#"model "ctr" has no ready version"#), "{message}");

    repo.add("1", &fx.bundle);
    copy_dir(&fx.bundle, &repo.version("2"));
    let weights = repo.version("2").join("weights.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    state.refresh_repository().await.unwrap();
    assert_eq!(send(&state, "GET", "/readyz", None, vec![]).await.status, 200);
    let listed = models(&state).await;
    let model = &listed["models"][0];
    assert_eq!(model["stable_version"], "1");
    assert_eq!(
        (model["versions"][0]["version"].as_str(), model["versions"][0]["status"].as_str()),
        (Some("2"), Some("failed"))
    );
    let reason = model["versions"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("weights.safetensors"), "{reason}");
    let answer = post_json(&state, "/v1/score", &score_request("u")).await.json();
    assert_eq!(answer["model"]["version"], "1");
    let pinned = post_json(&state, "/v1/score?version=2", &score_request("u")).await;
    assert_eq!((pinned.status.as_u16(), pinned.error_code()), (404, "unknown_version".to_owned()));
    let metrics = String::from_utf8(send(&state, "GET", "/metrics", None, vec![]).await.body).unwrap();
    assert!(metrics.contains(r#"mtrec_model_version_failed{name="ctr",version="2",reason="#), "{metrics}");
    assert!(metrics.contains(r#"mtrec_model_info{name="ctr",version="1"} 1"#), "{metrics}");

    // Fixed in place: its files changed, so the next pass tries it again.
    std::fs::write(&weights, &bytes).unwrap();
    state.refresh_repository().await.unwrap();
    assert_eq!(models(&state).await["models"][0]["stable_version"], "2");
    let metrics = String::from_utf8(send(&state, "GET", "/metrics", None, vec![]).await.body).unwrap();
    assert!(!metrics.contains("mtrec_model_version_failed{"), "{metrics}");
}

#[tokio::test]
async fn labels_pin_versions_and_an_experiment_splits_users_stickily() {
    let fx = fixture();
    let repo = Repo::new();
    repo.add("1", &fx.bundle);
    repo.add("2", &fx.bundle_b);
    let state = repo.state(3);
    state.refresh_repository().await.unwrap();

    let routing = serde_json::json!({
        "labels": {"stable": "1", "candidate": "2"},
        "experiment": {"candidate_share": 0.3, "seed": 9},
    });
    let answer = send(&state, "PUT", "/v1/admin/models/ctr/routing", None, serde_json::to_vec(&routing).unwrap()).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["stable_version"], "1");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.root.join("ctr/routing.json")).unwrap()).unwrap();
    assert_eq!(written, routing);

    let experiment = Experiment { candidate_share: 0.3, seed: 9 };
    let mut candidates = 0;
    for u in 0..200 {
        let user = format!("user-{u}");
        let first = post_json(&state, "/v1/models/ctr/score", &score_request(&user)).await.json();
        let again = post_json(&state, "/v1/score", &score_request(&user)).await.json();
        let arm = first["arm"].as_str().unwrap();
        assert_eq!((again["arm"].as_str(), &again["model"]), (Some(arm), &first["model"]), "not sticky for {user}");
        assert_eq!(arm, experiment.arm(&user).as_str());
        let expected_version = if arm == "candidate" { "2" } else { "1" };
        assert_eq!(first["model"]["version"], expected_version);
        candidates += usize::from(arm == "candidate");
    }
    // Binomial(200, 0.3): mean 60, sd 6.5.
    assert!((35..=85).contains(&candidates), "{candidates} of 200 users in the candidate arm");
    // A request without a user id has no arm to keep: stable.
    let anonymous = post_json(&state, "/v1/score", &serde_json::json!({"user": {}, "items": [{}]})).await.json();
    assert_eq!((anonymous["arm"].as_str(), anonymous["model"]["version"].as_str()), (Some("stable"), Some("1")));

    let pinned = post_json(&state, "/v1/score?version=2", &score_request("user-0")).await.json();
    assert_eq!((pinned["arm"].as_str(), pinned["model"]["version"].as_str()), (Some("pinned"), Some("2")));
    let by_label = post_json(&state, "/v1/score?label=candidate", &score_request("user-0")).await.json();
    assert_eq!(by_label["model"]["version"], "2");
    let answer = post_json(&state, "/v1/score?label=nope", &score_request("u")).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (404, "unknown_label".to_owned()));
    let answer = post_json(&state, "/v1/score?label=stable&version=1", &score_request("u")).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (400, "invalid_query".to_owned()));
    let answer = post_json(&state, "/v1/models/nope/score", &score_request("u")).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (404, "unknown_model".to_owned()));
    let batch = serde_json::json!({"rows": [{"user": {"id": "user-0"}, "item": {"id": "i1"}}]});
    let answer = post_json(&state, "/v1/score/batch", &batch).await.json();
    assert_eq!((answer["arm"].as_str(), answer["model"]["version"].as_str()), (Some("stable"), Some("1")));

    let metrics = String::from_utf8(send(&state, "GET", "/metrics", None, vec![]).await.body).unwrap();
    let needle =
        format!(r#"mtrec_scored_requests_total{{model="ctr",version="2",arm="candidate"}} {}"#, 2 * candidates);
    assert!(metrics.contains(&needle), "{needle} not in\n{metrics}");
    assert!(metrics.contains(r#"mtrec_scored_pairs_total{model="ctr",version="2",arm="pinned"} 4"#), "{metrics}");

    // A label on a version that is not ready is refused, naming the label.
    let bad = serde_json::json!({"labels": {"stable": "9"}});
    let answer = send(&state, "PUT", "/v1/admin/models/ctr/routing", None, serde_json::to_vec(&bad).unwrap()).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (422, "unknown_version".to_owned()));
    assert_eq!(answer.json()["error"]["field"], "labels.stable");
    let bad = serde_json::json!({"experiment": {"candidate_share": 2.0}});
    let answer = send(&state, "PUT", "/v1/admin/models/ctr/routing", None, serde_json::to_vec(&bad).unwrap()).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (422, "invalid_routing".to_owned()));

    // The file, edited by hand, is applied by the next pass; a broken one is reported and the
    // routing in force stays.
    std::fs::write(repo.root.join("ctr/routing.json"), r#"{"labels": {"stable": "2"}}"#).unwrap();
    state.refresh_repository().await.unwrap();
    let answer = post_json(&state, "/v1/score", &score_request("user-0")).await.json();
    assert_eq!((answer["arm"].as_str(), answer["model"]["version"].as_str()), (Some("stable"), Some("2")));
    std::fs::write(repo.root.join("ctr/routing.json"), r#"{"labels": {"stable": 1}}"#).unwrap();
    state.refresh_repository().await.unwrap();
    let model = &models(&state).await["models"][0];
    assert!(model["routing_error"].as_str().unwrap().contains("labels.stable"), "{model}");
    assert_eq!(model["stable_version"], "2");
}

#[tokio::test]
async fn retention_keeps_the_newest_labeled_and_served_versions() {
    let fx = fixture();
    let repo = Repo::new();
    for version in ["1", "2", "3", "4"] {
        repo.add(version, &fx.bundle);
    }
    // Not a bundle: never deleted, whatever its place.
    std::fs::create_dir_all(repo.version("0")).unwrap();
    std::fs::write(repo.root.join("ctr/routing.json"), r#"{"labels": {"stable": "2"}}"#).unwrap();
    let state = repo.state(1);
    state.refresh_repository().await.unwrap();
    let on_disk: Vec<bool> = ["0", "1", "2", "3", "4"].iter().map(|v| repo.version(v).exists()).collect();
    assert_eq!(on_disk, [true, false, true, false, true]);
    assert_eq!(models(&state).await["models"][0]["stable_version"], "2");

    // A label on a version that is not there is reported, and stable falls back to the newest.
    std::fs::write(repo.root.join("ctr/routing.json"), r#"{"labels": {"stable": "9"}}"#).unwrap();
    state.refresh_repository().await.unwrap();
    let model = &models(&state).await["models"][0];
    assert!(model["routing_error"].as_str().unwrap().contains(r#"label "stable" points at version "9""#), "{model}");
    assert_eq!(model["stable_version"], "4");

    // Unlabeled, the served version stays while a newer one that fails is added.
    std::fs::write(repo.root.join("ctr/routing.json"), "{}").unwrap();
    state.refresh_repository().await.unwrap();
    assert_eq!(models(&state).await["models"][0]["stable_version"], "4");
    std::fs::create_dir_all(repo.version("5")).unwrap();
    state.refresh_repository().await.unwrap();
    assert!(repo.version("4").exists(), "the served version was removed");
    assert!(!repo.version("2").exists());
    assert_eq!(models(&state).await["models"][0]["stable_version"], "4");
}

#[tokio::test]
async fn routing_needs_a_repository_and_the_token() {
    let state = crate::common::state();
    let body = br#"{"labels": {}}"#.to_vec();
    let answer = send(&state, "PUT", "/v1/admin/models/bundle/routing", None, body.clone()).await;
    assert_eq!((answer.status.as_u16(), answer.error_code()), (409, "no_repository".to_owned()));
    let repo = Repo::new();
    repo.add("1", &fixture().bundle);
    let state = repo.state(3);
    state.refresh_repository().await.unwrap();
    let request = axum::http::Request::builder()
        .method("PUT")
        .uri("/v1/admin/models/ctr/routing")
        .body(axum::body::Body::from(body))
        .unwrap();
    let response = tower::ServiceExt::oneshot(mtrec_serve::app(state), request).await.unwrap();
    assert_eq!(response.status(), 401);
}
