//! The OpenAPI 3.1 description of API v1 (`GET /openapi.json`, `schemas/openapi.json`). Paths
//! are written here; every body schema is generated from the types in [`crate::api`].

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use crate::api::ARROW_STREAM;
use crate::api::{
    BatchRequest, ErrorBody, ModelEntry, ModelInfo, ModelsResponse, ReloadRequest, ReloadResponse, ScoreRequest,
    ScoreResponse, Status,
};
use crate::repository::Routing;

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
    let models_response = schema(&|g| g.subschema_for::<ModelsResponse>());
    let model_entry = schema(&|g| g.subschema_for::<ModelEntry>());
    let routing = schema(&|g| g.subschema_for::<Routing>());
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
            "404": error_response("No such model, version or label"),
            "503": error_response("No model loaded yet, or the request timed out"),
        })
    };
    let name_parameter = json!({ "name": "name", "in": "path", "required": true, "description": "A model name of the repository", "schema": { "type": "string" } });
    let pin_parameters = vec![
        json!({ "name": "version", "in": "query", "required": false, "description": "Score with this ready version (outside any experiment)", "schema": { "type": "string" } }),
        json!({ "name": "label", "in": "query", "required": false, "description": "Score with the version this label points at (outside any experiment)", "schema": { "type": "string" } }),
    ];
    let mut batch_parameters = pin_parameters.clone();
    batch_parameters.push(
        json!({ "name": "tasks", "in": "query", "required": false, "description": "Arrow requests: comma-separated task filter", "schema": { "type": "string" } }),
    );
    let with_name = |parameters: &[Value]| {
        let mut all = vec![name_parameter.clone()];
        all.extend_from_slice(parameters);
        Value::Array(all)
    };
    let score = |operation_id: &str, parameters: Value| {
        json!({ "post": {
            "summary": "Score many candidate items for one user",
            "description": "Routed: a pinned `version` or `label`, else the user's arm of the model's experiment (a sticky share of user ids goes to `candidate`), else `stable`. The answer names the model, version and arm; with an exposure log, what was answered is logged.",
            "operationId": operation_id,
            "parameters": parameters,
            "requestBody": { "required": true, "content": json_body(&score_request) },
            "responses": client_errors(json!({ "description": "One entry per item, in request order", "content": json_body(&score_response) })),
        }})
    };
    let batch = |operation_id: &str, parameters: Value| {
        json!({ "post": {
            "summary": "Score independent (user, item, context) rows, as JSON or as an Arrow IPC stream",
            "description": format!("Scored by the pinned or the stable version (batches are not split between arms nor logged). With `Content-Type: {ARROW_STREAM}` the body is an Arrow IPC stream with one row per pair and columns named like the training data's source columns; the answer is an Arrow IPC stream with `id.user`, `id.item` (when the request has the id columns) and the prediction columns of `mtrec predict` (`pred.<task>`, `pred.<task>.log1p` and `pred.<task>.mean` for a regression learned as ln(1 + y), `prob.<task>.<class>`), its warnings in the `x-mtrec-warnings` header, and the model, version and arm in `x-mtrec-model`, `x-mtrec-model-version` and `x-mtrec-arm`."),
            "operationId": operation_id,
            "parameters": parameters,
            "requestBody": { "required": true, "content": {
                "application/json": { "schema": batch_request },
                ARROW_STREAM: { "schema": { "type": "string", "contentMediaType": ARROW_STREAM } },
            }},
            "responses": client_errors(json!({ "description": "One entry (row) per request row, in order", "content": {
                "application/json": { "schema": score_response },
                ARROW_STREAM: { "schema": { "type": "string", "contentMediaType": ARROW_STREAM } },
            }})),
        }})
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mtrec scoring API",
            "version": "1",
            "description": "Every task's output for every user-item pair of a multi-task recommender. Features absent from a request are looked up by id in the user and item feature tables the server loaded; absent from both, they are encoded as null and a `missing` warning says so.",
        },
        "paths": {
            "/v1/score": score("score", Value::Array(pin_parameters.clone())),
            "/v1/score/batch": batch("scoreBatch", Value::Array(batch_parameters.clone())),
            "/v1/models/{name}/score": score("scoreModel", with_name(&pin_parameters)),
            "/v1/models/{name}/score/batch": batch("scoreBatchModel", with_name(&batch_parameters)),
            "/v1/models": { "get": {
                "summary": "Every model and version served, with labels, routing, and the reason of each version not served",
                "operationId": "models",
                "responses": {
                    "200": { "description": "The models", "content": json_body(&models_response) },
                    "503": error_response("No model found yet"),
                },
            }},
            "/v1/models/{name}": { "get": {
                "summary": "One model: its versions, labels and routing",
                "operationId": "model",
                "parameters": [name_parameter.clone()],
                "responses": {
                    "200": { "description": "The model", "content": json_body(&model_entry) },
                    "404": error_response("No such model"),
                },
            }},
            "/v1/models/{name}/versions/{version}": { "get": {
                "summary": "One ready version: tasks, features, training metrics",
                "operationId": "modelVersion",
                "parameters": [name_parameter.clone(), { "name": "version", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": {
                    "200": { "description": "The version", "content": json_body(&model_info) },
                    "404": error_response("No such model or ready version"),
                },
            }},
            "/v1/admin/models/{name}/routing": { "put": {
                "summary": "Set a model's labels and experiment (written to its routing.json)",
                "description": "Requires `Authorization: Bearer <token>` and a model repository. Every label must point at a ready version.",
                "operationId": "setRouting",
                "parameters": [name_parameter.clone()],
                "requestBody": { "required": true, "content": json_body(&routing) },
                "responses": {
                    "200": { "description": "The model with its new routing", "content": json_body(&model_entry) },
                    "400": error_response("Malformed JSON or a field of the wrong type"),
                    "401": error_response("Missing or wrong bearer token"),
                    "403": error_response("Admin routes are disabled (no admin token)"),
                    "404": error_response("No such model"),
                    "409": error_response("The server serves one bundle, not a repository"),
                    "422": error_response("A share outside [0, 1], or a label on a version that is not ready"),
                },
            }},
            "/v1/admin/reload": { "post": {
                "summary": "Load and self-test a bundle in the background, then swap it in atomically; with a repository, read it now",
                "description": "Requires `Authorization: Bearer <token>`; disabled when the server has no admin token. A bundle that fails to load or to score is rejected and the previous model keeps serving. With a model repository the body names no bundle: the repository is read at once, as the poll does.",
                "operationId": "reload",
                "requestBody": { "required": false, "content": json_body(&reload_request) },
                "responses": {
                    "200": { "description": "The new model serves", "content": json_body(&reload_response) },
                    "401": error_response("Missing or wrong bearer token"),
                    "403": error_response("Admin routes are disabled (no admin token)"),
                    "422": error_response("The bundle was rejected; the previous model keeps serving"),
                },
            }},
            "/healthz": { "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": { "200": { "description": "The process is up", "content": json_body(&status) } },
            }},
            "/readyz": { "get": {
                "summary": "Readiness: the default model has a version loaded, self-tested and warmed up",
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
