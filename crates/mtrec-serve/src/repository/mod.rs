//! A versioned model repository and online A/B routing.
//!
//! `mtrec serve --models DIR` serves `DIR/<name>/<version>/` bundles: [`scan`] reads the
//! directory, [`refresh`] loads each new version (self-test and warm-up first: a version that
//! fails is never served and is reported with its reason) and applies retention, and the server
//! polls it. [`catalog`] holds what is served and picks the version of each request; [`routing`]
//! holds the labels (`stable`, `candidate`) and the sticky split of users between them.
//! `mtrec serve --bundle B` is the one-model, one-version case of the same catalog.

pub mod catalog;
pub mod refresh;
pub mod routing;
pub mod scan;

use std::path::PathBuf;
use std::time::Duration;

pub use catalog::{Catalog, Pin, ServedModel, VersionState};
pub use routing::{Arm, Experiment, Routing};

/// How a repository is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryConfig {
    pub dir: PathBuf,
    /// How often the directory is read for new versions and routing changes.
    pub poll_interval: Duration,
    /// Versions of each model kept (newest first) on disk and in memory, besides labeled ones
    /// and the one serving; at least 1.
    pub keep_versions: usize,
    /// The model of `/v1/score`; default: the first name in sort order.
    pub default_model: Option<String>,
}

impl RepositoryConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), poll_interval: Duration::from_secs(5), keep_versions: 3, default_model: None }
    }
}
