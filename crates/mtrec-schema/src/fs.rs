//! Atomic output, shared by every writer of artifacts (ingest directories, bundles,
//! checkpoints, reports, predictions, summaries): a file or directory is written under a
//! temporary name beside its destination, on the same file system, and renamed into place
//! only once complete. A failure or a crash leaves either the old content or the new one,
//! never a mix, and no half-written output under the final name.

use std::fs::File;
use std::path::{Path, PathBuf};

/// The directory a path's temporary sibling goes in (`.` for a bare name), created if needed.
fn parent_of(out: &Path) -> std::io::Result<PathBuf> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    Ok(parent)
}

/// The prefix of `out`'s temporary sibling: `.mtrec-<name>-`, so that a temporary left by a
/// crash says what it was for.
fn temporary_prefix(out: &Path) -> String {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!(".mtrec-{name}-")
}

/// A directory being written: fill [`StagedDir::path`], then [`StagedDir::commit`] it to its
/// destination. Dropped without a commit, it is removed.
#[derive(Debug)]
pub struct StagedDir {
    tmp: tempfile::TempDir,
    out: PathBuf,
}

impl StagedDir {
    /// A fresh temporary directory beside `out`.
    pub fn new(out: &Path) -> std::io::Result<Self> {
        let tmp = tempfile::Builder::new().prefix(&temporary_prefix(out)).tempdir_in(parent_of(out)?)?;
        Ok(StagedDir { tmp, out: out.to_owned() })
    }

    /// Where to write the directory's content.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Replaces the destination with the finished directory.
    pub fn commit(self) -> std::io::Result<()> {
        replace_dir(&self.tmp.keep(), &self.out)
    }
}

/// A file being written: write to [`StagedFile::file`], then [`StagedFile::commit`] it to its
/// destination. Dropped without a commit, it is removed.
#[derive(Debug)]
pub struct StagedFile {
    tmp: tempfile::NamedTempFile,
    out: PathBuf,
}

impl StagedFile {
    /// A fresh temporary file beside `out`, with the permissions a plain `File::create` gives
    /// (read and write for all, less the umask) rather than a temporary file's owner-only ones.
    pub fn new(out: &Path) -> std::io::Result<Self> {
        let mut builder = tempfile::Builder::new();
        let prefix = temporary_prefix(out);
        builder.prefix(&prefix);
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let tmp = builder.tempfile_in(parent_of(out)?)?;
        Ok(StagedFile { tmp, out: out.to_owned() })
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Flushes the file and renames it over the destination.
    pub fn commit(self) -> std::io::Result<()> {
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(&self.out).map(drop).map_err(|e| e.error)
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut staged = StagedFile::new(path)?;
    std::io::Write::write_all(staged.file(), bytes)?;
    staged.commit()
}

/// Moves the finished directory `finished` (a sibling of `out`, on the same file system) to
/// `out`. An existing `out` is moved aside first and removed only once the new one is in
/// place, so a failure leaves either the old or the new content, never a mix.
fn replace_dir(finished: &Path, out: &Path) -> std::io::Result<()> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let backup = out.with_file_name(format!(".{name}.old-{}", std::process::id()));
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &backup)?;
    }
    if let Err(e) = std::fs::rename(finished, out) {
        let _ = std::fs::remove_dir_all(finished);
        if had_old {
            let _ = std::fs::rename(&backup, out);
        }
        return Err(e);
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&backup);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_committed_directory_replaces_the_old_content_whole() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("old.txt"), "old").unwrap();
        let staged = StagedDir::new(&out).unwrap();
        std::fs::write(staged.path().join("new.txt"), "new").unwrap();
        assert_eq!(names(&out), ["old.txt"], "nothing changes before the commit");
        staged.commit().unwrap();
        assert_eq!(names(&out), ["new.txt"]);
        assert_eq!(names(root.path()), ["out"], "no temporary or backup directory is left");
    }

    #[test]
    fn an_uncommitted_directory_or_file_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let staged = StagedDir::new(&root.path().join("a/out")).unwrap();
        std::fs::write(staged.path().join("x"), "x").unwrap();
        drop(staged);
        let mut file = StagedFile::new(&root.path().join("a/f.txt")).unwrap();
        std::io::Write::write_all(file.file(), b"half").unwrap();
        drop(file);
        assert!(names(&root.path().join("a")).is_empty());
    }

    #[test]
    fn a_file_is_written_whole_over_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("f.json");
        std::fs::write(&path, "old").unwrap();
        write_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(names(root.path()), ["f.json"]);
    }

    /// A staged file ends with the permissions of a file written directly, not a temporary
    /// file's owner-only ones.
    #[cfg(unix)]
    #[test]
    fn a_staged_file_has_the_permissions_of_a_plain_one() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let (plain, staged) = (root.path().join("plain"), root.path().join("staged"));
        std::fs::write(&plain, "x").unwrap();
        write_file(&staged, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&staged), mode(&plain));
    }
}
