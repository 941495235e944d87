//! Reading a model repository: `<root>/<name>/<version>/` bundles and `<root>/<name>/routing.json`.
//!
//! A version is a directory whose name is a number or any other name that sorts (numbers sort
//! numerically and before other names, which sort as text). Hidden entries (a bundle being
//! written is staged in a hidden sibling and renamed when complete) and training checkpoints
//! (`<version>.checkpoint`) are not versions.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::routing::{Routing, ROUTING_FILE};

/// A version's name, ordered as versions are: numbers numerically, before other names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionKey(pub String);

impl VersionKey {
    fn number(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

impl Ord for VersionKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.number(), other.number()) {
            (Some(a), Some(b)) => a.cmp(&b).then_with(|| self.0.cmp(&other.0)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => self.0.cmp(&other.0),
        }
    }
}

impl PartialOrd for VersionKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for VersionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The files of a version directory (name, size, modification time): a version that failed is
/// tried again once this changes (e.g. a copy that was incomplete has finished).
pub type Signature = Vec<(String, u64, Option<SystemTime>)>;

pub fn signature(dir: &Path) -> Signature {
    let mut files: Signature = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            Some((entry.file_name().to_string_lossy().into_owned(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// One model name found in the repository.
#[derive(Debug)]
pub struct FoundModel {
    pub name: String,
    pub dir: PathBuf,
    /// Ascending.
    pub versions: Vec<(VersionKey, PathBuf)>,
    /// `routing.json`: absent (`Ok(None)`), or read, or why it could not be.
    pub routing: Result<Option<Routing>, String>,
}

fn is_version_name(name: &str) -> bool {
    !name.starts_with('.') && !name.ends_with(".checkpoint")
}

/// Every model directory of `root`, with its versions and routing file.
pub fn scan(root: &Path) -> std::io::Result<Vec<FoundModel>> {
    let mut models = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_version_name(&name) || !entry.file_type()?.is_dir() {
            continue;
        }
        let dir = entry.path();
        let mut versions = Vec::new();
        for version in std::fs::read_dir(&dir)? {
            let version = version?;
            let version_name = version.file_name().to_string_lossy().into_owned();
            if is_version_name(&version_name) && version.file_type()?.is_dir() {
                versions.push((VersionKey(version_name), version.path()));
            }
        }
        versions.sort();
        let routing = read_routing(&dir.join(ROUTING_FILE));
        models.push(FoundModel { name, dir, versions, routing });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// Reads a routing file, naming the file and the JSON field at fault.
pub fn read_routing(path: &Path) -> Result<Option<Routing>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let routing: Routing = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| format!("{}: field {}: {}", path.display(), e.path(), e.inner()))?;
    routing.validate().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(routing))
}

/// The next numeric version of a model directory: one more than the largest number there (1 for
/// none). A checkpoint is no version: a run stopped before its bundle resumes into the same
/// number. For `mtrec train --next-version`.
pub fn next_version(model_dir: &Path) -> std::io::Result<String> {
    let largest = match std::fs::read_dir(model_dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok((largest + 1).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numbers_numerically_then_names() {
        let mut keys: Vec<VersionKey> =
            ["10", "9", "b", "2026-12-01", "1"].iter().map(|s| VersionKey((*s).to_owned())).collect();
        keys.sort();
        let names: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        assert_eq!(names, ["1", "9", "10", "2026-12-01", "b"]);
    }

    #[test]
    fn scan_skips_hidden_entries_checkpoints_and_files() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("ctr");
        for dir in ["1", "2", ".mtrec-3-tmp", "2.checkpoint"] {
            std::fs::create_dir_all(model.join(dir)).unwrap();
        }
        std::fs::write(model.join("notes.txt"), "x").unwrap();
        std::fs::write(model.join(ROUTING_FILE), r#"{"labels": {"stable": "1"}}"#).unwrap();
        let found = scan(root.path()).unwrap();
        assert_eq!(found.len(), 1);
        let versions: Vec<&str> = found[0].versions.iter().map(|(k, _)| k.0.as_str()).collect();
        assert_eq!(versions, ["1", "2"]);
        assert_eq!(found[0].routing.as_ref().unwrap().as_ref().unwrap().labels["stable"], "1");
        assert_eq!(next_version(&model).unwrap(), "3");
        assert_eq!(next_version(&root.path().join("new")).unwrap(), "1");
    }

    #[test]
    fn a_bad_routing_file_is_named_with_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ROUTING_FILE);
        std::fs::write(&path, r#"{"experiment": {"candidate_share": "high"}}"#).unwrap();
        let error = read_routing(&path).unwrap_err();
        assert!(error.contains("routing.json") && error.contains("experiment.candidate_share"), "{error}");
    }
}
