//! Property tests: no JSON body, however wrong, makes the API panic or answer 5xx, and every
//! error uses the one error shape.

use proptest::prelude::*;
use serde_json::Value;

use crate::common::{send, state};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| serde_json::json!(i)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::json!(f)),
        "[a-z_]{0,8}".prop_map(Value::String),
        prop_oneof![Just("click"), Just("price"), Just("region"), Just("recent_items"), Just("id")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-z_]{1,8}".boxed(),
                    prop_oneof![
                        Just("user"),
                        Just("items"),
                        Just("item"),
                        Just("context"),
                        Just("rows"),
                        Just("tasks"),
                        Just("id"),
                        Just("price"),
                        Just("region"),
                        Just("recent_items"),
                        Just("hour")
                    ]
                    .prop_map(str::to_owned)
                    .boxed(),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid score request with one field replaced by an arbitrary value.
fn mutated_request() -> impl Strategy<Value = Value> {
    let fields = prop_oneof![
        Just(vec!["user"]),
        Just(vec!["user", "region"]),
        Just(vec!["user", "recent_items"]),
        Just(vec!["user", "account_age_days"]),
        Just(vec!["context", "hour"]),
        Just(vec!["items"]),
        Just(vec!["tasks"]),
        Just(vec!["item0", "price"]),
        Just(vec!["item0", "id"]),
        Just(vec!["item0", "category"]),
    ];
    (fields, json_value()).prop_map(|(path, value)| {
        let mut request = serde_json::json!({
            "user": {"id": "u1", "region": "r1", "recent_items": ["i1", "i2"], "account_age_days": 30},
            "context": {"hour": 3},
            "items": [{"id": "i1", "price": 9.5, "category": "c1"}],
        });
        match path.as_slice() {
            ["item0", field] => request["items"][0][*field] = value,
            [object, field] => request[*object][*field] = value,
            [field] => request[*field] = value,
            _ => unreachable!(),
        }
        request
    })
}

/// One server and one runtime for every case: loading a model per case would dominate.
fn shared() -> &'static (tokio::runtime::Runtime, std::sync::Arc<mtrec_serve::AppState>) {
    static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, std::sync::Arc<mtrec_serve::AppState>)> =
        std::sync::OnceLock::new();
    SHARED.get_or_init(|| (tokio::runtime::Runtime::new().unwrap(), state()))
}

fn check(uri: &str, body: &Value) -> Result<(), TestCaseError> {
    let (runtime, state) = shared();
    let answer =
        runtime.block_on(send(state, "POST", uri, Some("application/json"), serde_json::to_vec(body).unwrap()));
    prop_assert!(
        answer.status.as_u16() < 500,
        "{uri} {body}: {} {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    let json: Value = serde_json::from_slice(&answer.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    if !answer.status.is_success() {
        prop_assert!(json["error"]["code"].is_string() && json["error"]["message"].is_string(), "{json}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_breaks_the_scoring_routes(body in json_value()) {
        check("/v1/score", &body)?;
        check("/v1/score/batch", &body)?;
        check("/v1/admin/reload", &body)?;
    }

    #[test]
    fn mutated_valid_requests_never_break_scoring(body in mutated_request()) {
        check("/v1/score", &body)?;
        let rows = serde_json::json!({"rows": [{"user": body["user"], "item": body["items"][0], "context": body["context"]}]});
        check("/v1/score/batch", &rows)?;
    }
}
