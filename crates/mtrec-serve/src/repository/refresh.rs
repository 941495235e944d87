//! One pass over a model repository: new versions are loaded, self-tested and warmed up before
//! they join the catalog; routing files are applied; versions past retention are removed from
//! disk. Synchronous CPU and disk work: the server runs it off the async threads, while the
//! previous catalog keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use super::catalog::{Catalog, ServedModel, VersionState};
use super::scan::{scan, signature, FoundModel, VersionKey};
use super::RepositoryConfig;
use crate::api::ModelRef;
use crate::scoring::{ServingModel, TablePaths};

/// What a pass did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// `name/version` loaded and now ready.
    pub loaded: Vec<String>,
    /// `name/version` and why it is not served.
    pub failed: Vec<(String, String)>,
    /// `name/version` removed from disk by retention.
    pub removed: Vec<String>,
    /// `name` and why its routing file was not applied.
    pub routing_errors: Vec<(String, String)>,
}

/// The catalog after one pass over the repository, given the one serving now. Fails only when
/// the repository itself cannot be read (the server then keeps the current catalog).
pub fn refresh(
    config: &RepositoryConfig,
    tables: &TablePaths,
    current: &Catalog,
) -> Result<(Catalog, Changes), String> {
    let found = scan(&config.dir).map_err(|e| format!("reading the model repository {}: {e}", config.dir.display()))?;
    let mut changes = Changes::default();
    let mut models = BTreeMap::new();
    for model in found {
        let served = refresh_model(config, tables, current.models.get(&model.name), model, &mut changes);
        models.insert(served.name.clone(), served);
    }
    let default_model = match &config.default_model {
        Some(name) => Some(name.clone()),
        None => current
            .default_model
            .clone()
            .filter(|name| models.contains_key(name))
            .or_else(|| models.keys().next().cloned()),
    };
    Ok((Catalog { models, default_model }, changes))
}

fn refresh_model(
    config: &RepositoryConfig,
    tables: &TablePaths,
    current: Option<&ServedModel>,
    found: FoundModel,
    changes: &mut Changes,
) -> ServedModel {
    let name = found.name.clone();
    let (routing, routing_error) = match found.routing {
        Ok(routing) => (routing.unwrap_or_default(), None),
        Err(error) => {
            changes.routing_errors.push((name.clone(), error.clone()));
            (current.map(|m| m.routing.clone()).unwrap_or_default(), Some(error))
        }
    };
    // Served and kept on disk: the newest versions, every labeled one, and the one serving now.
    let keep = config.keep_versions.max(1);
    let mut protected: BTreeSet<&str> = routing.labels.values().map(String::as_str).collect();
    if let Some(stable) = current.and_then(ServedModel::stable_version) {
        protected.insert(stable);
    }
    let newest = found.versions.len().saturating_sub(keep);
    let mut versions = BTreeMap::new();
    for (i, (key, dir)) in found.versions.iter().enumerate() {
        let qualified = format!("{name}/{key}");
        if i < newest && !protected.contains(key.0.as_str()) {
            // Only bundles are deleted: a directory without a model.json is no version mtrec
            // wrote, so it is left alone (and not served).
            if dir.join(mtrec_model::bundle::MODEL_FILE).is_file() {
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => changes.removed.push(qualified),
                    Err(e) => tracing::warn!(version = qualified, error = %e, "retention could not remove a version"),
                }
            }
            continue;
        }
        let state = match current.and_then(|m| m.versions.get(key)) {
            Some(ready @ VersionState::Ready(_)) => ready.clone(),
            Some(failed @ VersionState::Failed { signature: before, .. }) if *before == signature(dir) => {
                failed.clone()
            }
            _ => {
                let state = load_version(&name, key, dir, tables);
                match &state {
                    VersionState::Ready(_) => changes.loaded.push(qualified),
                    VersionState::Failed { reason, .. } => changes.failed.push((qualified, reason.clone())),
                }
                state
            }
        };
        versions.insert(key.clone(), state);
    }
    // A label on a version that is not ready is reported; requests fall back as `resolve` says.
    let routing_error = routing_error.or_else(|| {
        let dangling: Vec<String> = routing
            .labels
            .iter()
            .filter(|(_, v)| !matches!(versions.get(&VersionKey((*v).clone())), Some(VersionState::Ready(_))))
            .map(|(label, version)| format!("label {label:?} points at version {version:?}, which is not ready"))
            .collect();
        (!dangling.is_empty()).then(|| dangling.join("; "))
    });
    ServedModel { name, versions, routing, routing_error }
}

/// Loads, self-tests and warms up one version; its answers name it `name`/`version`.
fn load_version(name: &str, version: &VersionKey, dir: &Path, tables: &TablePaths) -> VersionState {
    // Taken first: files that change during the load make the next pass try again.
    let signature = signature(dir);
    let loaded = ServingModel::load(dir, tables).and_then(|model| model.warm_up().map(|()| model));
    match loaded {
        Ok(mut model) => {
            model.model_ref = ModelRef { name: name.to_owned(), version: version.0.clone() };
            VersionState::Ready(Arc::new(model))
        }
        Err(e) => VersionState::Failed { reason: mtrec_schema::error_chain(&e), signature },
    }
}
