//! Atomic replacement of an output directory, shared by every writer of artifacts (ingest
//! directories, bundles, checkpoints).

use std::path::Path;

/// Moves the finished directory `finished` (a sibling of `out`, on the same file system) to
/// `out`. An existing `out` is moved aside first and removed only once the new one is in
/// place, so a failure leaves either the old or the new content, never a mix.
pub fn replace_dir(finished: &Path, out: &Path) -> std::io::Result<()> {
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

    #[test]
    fn replaces_old_content_whole() {
        let root = std::env::temp_dir().join(format!("mtrec-fs-test-{}", std::process::id()));
        let (new, out) = (root.join("new"), root.join("out"));
        std::fs::create_dir_all(&new).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("old.txt"), "old").unwrap();
        std::fs::write(new.join("new.txt"), "new").unwrap();
        replace_dir(&new, &out).unwrap();
        assert!(out.join("new.txt").exists() && !out.join("old.txt").exists() && !new.exists());
        let leftovers: Vec<_> =
            std::fs::read_dir(&root).unwrap().filter_map(Result::ok).map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("out")]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
