//! What the server serves: per model name, its versions (ready or failed, with the reason), its
//! labels and experiment, and the choice of a version for a request.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;

use super::routing::{Arm, Routing, CANDIDATE, STABLE};
use super::scan::{Signature, VersionKey};
use crate::api::{ModelEntry, ModelsResponse, VersionEntry, VersionStatus};
use crate::error::ApiError;
use crate::scoring::ServingModel;

/// One version of a model.
#[derive(Debug, Clone)]
pub enum VersionState {
    /// Loaded, self-tested and warmed up.
    Ready(Arc<ServingModel>),
    /// Never served; tried again when the directory's files change.
    Failed { reason: String, signature: Signature },
}

/// A model name with its versions and routing.
#[derive(Debug, Clone, Default)]
pub struct ServedModel {
    pub name: String,
    pub versions: BTreeMap<VersionKey, VersionState>,
    pub routing: Routing,
    /// Why the routing file was not applied (the previous routing stays in force), or which
    /// labels point at a version that is not ready.
    pub routing_error: Option<String>,
}

/// A request's choice of version: by name or by label, bypassing any experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    Version(String),
    Label(String),
}

impl ServedModel {
    /// The loaded model of `version`, if it is ready.
    pub fn ready(&self, version: &str) -> Option<&Arc<ServingModel>> {
        match self.versions.get(&VersionKey(version.to_owned())) {
            Some(VersionState::Ready(model)) => Some(model),
            _ => None,
        }
    }

    fn labeled(&self, label: &str) -> Option<&Arc<ServingModel>> {
        self.routing.labels.get(label).and_then(|v| self.ready(v))
    }

    fn newest_ready(&self) -> Option<(&VersionKey, &Arc<ServingModel>)> {
        self.versions.iter().rev().find_map(|(k, v)| match v {
            VersionState::Ready(model) => Some((k, model)),
            VersionState::Failed { .. } => None,
        })
    }

    /// The version most requests get: `stable`'s when it is ready, else the newest ready one.
    pub fn stable(&self) -> Option<&Arc<ServingModel>> {
        self.labeled(STABLE).or_else(|| self.newest_ready().map(|(_, m)| m))
    }

    /// The version `stable` resolves to now (see [`ServedModel::stable`]).
    pub fn stable_version(&self) -> Option<&str> {
        match self.routing.labels.get(STABLE) {
            Some(v) if self.ready(v).is_some() => Some(v),
            _ => self.newest_ready().map(|(k, _)| k.0.as_str()),
        }
    }

    /// The model that scores a request: the pinned version or label; else, in an experiment
    /// with a ready candidate, the user's arm; else stable. A request without a user id in an
    /// experiment gets stable.
    pub fn resolve(&self, pin: Option<&Pin>, user_key: Option<&str>) -> Result<(Arc<ServingModel>, Arm), ApiError> {
        let not_found = |code: &'static str, message: String| ApiError::new(StatusCode::NOT_FOUND, code, message);
        match pin {
            Some(Pin::Version(v)) => {
                return self.ready(v).map(|m| (m.clone(), Arm::Pinned)).ok_or_else(|| {
                    not_found("unknown_version", format!("model {:?} has no ready version {v:?}", self.name))
                        .with_field("version")
                })
            }
            Some(Pin::Label(l)) => {
                return self.labeled(l).map(|m| (m.clone(), Arm::Pinned)).ok_or_else(|| {
                    not_found("unknown_label", format!("model {:?} has no label {l:?} on a ready version", self.name))
                        .with_field("label")
                })
            }
            None => {}
        }
        if let (Some(experiment), Some(candidate), Some(user)) =
            (&self.routing.experiment, self.labeled(CANDIDATE), user_key)
        {
            if experiment.arm(user) == Arm::Candidate {
                return Ok((candidate.clone(), Arm::Candidate));
            }
        }
        self.stable().map(|m| (m.clone(), Arm::Stable)).ok_or_else(ApiError::not_ready)
    }

    /// What `/v1/models` says of this model.
    pub fn entry(&self, is_default: bool) -> ModelEntry {
        let labels_of = |version: &VersionKey| -> Vec<String> {
            self.routing.labels.iter().filter(|(_, v)| **v == version.0).map(|(l, _)| l.clone()).collect()
        };
        ModelEntry {
            name: self.name.clone(),
            default: is_default,
            stable_version: self.stable_version().map(str::to_owned),
            routing: self.routing.clone(),
            routing_error: self.routing_error.clone(),
            versions: self
                .versions
                .iter()
                .rev()
                .map(|(k, state)| match state {
                    VersionState::Ready(model) => VersionEntry {
                        version: k.0.clone(),
                        status: VersionStatus::Ready,
                        reason: None,
                        labels: labels_of(k),
                        info: Some(Box::new(model.info())),
                    },
                    VersionState::Failed { reason, .. } => VersionEntry {
                        version: k.0.clone(),
                        status: VersionStatus::Failed,
                        reason: Some(reason.clone()),
                        labels: labels_of(k),
                        info: None,
                    },
                })
                .collect(),
        }
    }
}

/// Every model being served; replaced as a whole (copy on write) when anything changes.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub models: BTreeMap<String, ServedModel>,
    /// The model of `/v1/score` and `/v1/score/batch`.
    pub default_model: Option<String>,
}

impl Catalog {
    /// One bundle served as the only version of the only model (`mtrec serve --bundle`).
    pub fn single(model: ServingModel) -> Self {
        let name = model.model_ref.name.clone();
        let version = VersionKey(model.model_ref.version.clone());
        let served = ServedModel {
            name: name.clone(),
            versions: BTreeMap::from([(version, VersionState::Ready(Arc::new(model)))]),
            ..Default::default()
        };
        Catalog { models: BTreeMap::from([(name.clone(), served)]), default_model: Some(name) }
    }

    /// The named model, or the default one.
    pub fn model(&self, name: Option<&str>) -> Result<&ServedModel, ApiError> {
        match name {
            Some(name) => self.models.get(name).ok_or_else(|| {
                let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_model",
                    format!("no model {name:?} (models: {})", known.join(", ")),
                )
            }),
            None => match self.default_model.as_deref() {
                Some(name) => self.models.get(name).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not_ready",
                        format!("the default model {name:?} is not in the repository (yet)"),
                    )
                }),
                None => Err(ApiError::not_ready()),
            },
        }
    }

    /// Ready to take traffic: the default model has a version to serve; else why not.
    pub fn readiness(&self) -> Result<(), ApiError> {
        let model = self.model(None)?;
        match model.stable() {
            Some(_) => Ok(()),
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("model {:?} has no ready version yet (GET /v1/models says why)", model.name),
            )),
        }
    }

    pub fn ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// `GET /v1/models`.
    pub fn describe(&self) -> ModelsResponse {
        ModelsResponse {
            default_model: self.default_model.clone(),
            models: self
                .models
                .values()
                .map(|m| m.entry(self.default_model.as_deref() == Some(m.name.as_str())))
                .collect(),
        }
    }
}
