//! The OpenAPI 3.1 description of API v1 (`GET /openapi.json`, `schemas/openapi.json`). Paths
//! are written here; every body schema is generated from the types in [`crate::api`].

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use crate::api::ARROW_STREAM;
use crate::api::{
    BatchRequest, ErrorBody, ModelInfo, ReloadRequest, ReloadResponse, ScoreRequest, ScoreResponse, Status,
};

/// The spec as JSON.
pub fn spec() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let mut schema = |f: &dyn Fn(&mut schemars::SchemaGenerator) -> schemars::Schema| f(&mut generator).to_value();
    let score_request = schema(&|g| g.subschema_for::<ScoreRequest>());
    let batch_request = schema(&|g| g.subschema_for::<BatchRequest>());
    let score_response = schema(&|g| g.subschema_for::<ScoreResponse>());
    let model_info = schema(&|g| g.subschema_for::<ModelInfo>());
    let reload_request = schema(&|g| g.subschema_for::<ReloadRequest>());
    let reload_response = schema(&|g| g.subschema_for::<ReloadResponse>());
    let status = schema(&|g| g.subschema_for::<Status>());
    let error = schema(&|g| g.subschema_for::<ErrorBody>());
    let schemas = generator.take_definitions(true);

    let error_response = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": error } } });
    let json_body = |schema: &Value| json!({ "application/json": { "schema": schema } });
    let client_errors = |ok: Value| {
        json!({
            "200": ok,
            "400": error_response("Malformed JSON, or a field of the wrong type (`field` names it)"),
            "413": error_response("Body over the size limit"),
            "415": error_response("Unsupported content type"),
            "422": error_response("Well-formed but unacceptable: no items, too many items, an unknown task"),
            "503": error_response("No model loaded yet, or the request timed out"),
        })
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mtrec scoring API",
            "version": "1",
            "description": "Every task's output for every user-item pair of a multi-task recommender. Features absent from a request are looked up by id in the user and item feature tables the server loaded; absent from both, they are encoded as null and a `missing` warning says so.",
        },
        "paths": {
            "/v1/score": { "post": {
                "summary": "Score many candidate items for one user",
                "operationId": "score",
                "requestBody": { "required": true, "content": json_body(&score_request) },
                "responses": client_errors(json!({ "description": "One entry per item, in request order", "content": json_body(&score_response) })),
            }},
            "/v1/score/batch": { "post": {
                "summary": "Score independent (user, item, context) rows, as JSON or as an Arrow IPC stream",
                "description": format!("With `Content-Type: {ARROW_STREAM}` the body is an Arrow IPC stream with one row per pair and columns named like the training data's source columns; the answer is an Arrow IPC stream with `id.user`, `id.item` (when the request has the id columns) and the prediction columns of `mtrec predict` (`pred.<task>`, `pred.<task>.log1p` and `pred.<task>.mean` for a regression learned as ln(1 + y), `prob.<task>.<class>`), and its warnings in the `x-mtrec-warnings` header."),
                "operationId": "scoreBatch",
                "parameters": [{ "name": "tasks", "in": "query", "required": false, "description": "Arrow requests: comma-separated task filter", "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": {
                    "application/json": { "schema": batch_request },
                    ARROW_STREAM: { "schema": { "type": "string", "contentMediaType": ARROW_STREAM } },
                }},
                "responses": client_errors(json!({ "description": "One entry (row) per request row, in order", "content": {
                    "application/json": { "schema": score_response },
                    ARROW_STREAM: { "schema": { "type": "string", "contentMediaType": ARROW_STREAM } },
                }})),
            }},
            "/v1/models": { "get": {
                "summary": "The model being served: tasks, features, training metrics, version",
                "operationId": "models",
                "responses": {
                    "200": { "description": "The model", "content": json_body(&model_info) },
                    "503": error_response("No model loaded yet"),
                },
            }},
            "/v1/admin/reload": { "post": {
                "summary": "Load and self-test a bundle in the background, then swap it in atomically",
                "description": "Requires `Authorization: Bearer <token>`; disabled when the server has no admin token. A bundle that fails to load or to score is rejected and the previous model keeps serving.",
                "operationId": "reload",
                "requestBody": { "required": false, "content": json_body(&reload_request) },
                "responses": {
                    "200": { "description": "The new model serves", "content": json_body(&reload_response) },
                    "401": error_response("Missing or wrong bearer token"),
                    "403": error_response("Reload is disabled (no admin token)"),
                    "422": error_response("The bundle was rejected; the previous model keeps serving"),
                },
            }},
            "/healthz": { "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": { "200": { "description": "The process is up", "content": json_body(&status) } },
            }},
            "/readyz": { "get": {
                "summary": "Readiness: a model is loaded",
                "operationId": "readyz",
                "responses": {
                    "200": { "description": "Ready", "content": json_body(&status) },
                    "503": error_response("No model loaded yet"),
                },
            }},
            "/metrics": { "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": { "200": { "description": "OpenMetrics text", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } },
            }},
            "/openapi.json": { "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } } },
            }},
        },
        "components": { "schemas": schemas },
    })
}

/// The spec pretty-printed (the content of `schemas/openapi.json`).
pub fn spec_string() -> String {
    format!("{:#}\n", spec())
}
