//! Replacing a file so that a reader sees the old content or the new, never a part: a temporary
//! file beside it, fsync, rename. Reports, metrics and the caches all write this way.

use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` atomically. The temporary file is `.<name>.<pid>.tmp` in the same
/// directory; one left by a killed process that had our pid is removed first (a later writer
/// must not fail on it, tests/it/faults.rs), and ours is removed if anything fails.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, true)
}

/// [`write_file`] without the fsync: a reader still sees the old file or the whole new one
/// (the rename), and a writer killed midway leaves only its temporary file; only a power loss
/// can leave the new file short or empty. For records whose loss in a power cut costs nothing
/// the next write does not redo (a start's report, on `/run` by default, where nothing survives
/// one anyway): the fsync was a quarter of a cached GPU start's own work on a disk.
pub fn write_file_unsynced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_whole_and_survives_a_stale_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        std::fs::write(
            d.path().join(format!(".r.json.{}.tmp", std::process::id())),
            b"{half",
        )
        .unwrap();
        super::write_file(&p, b"one").unwrap();
        super::write_file(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("r.json")]);
        assert!(super::write_file(&d.path().join("missing/r.json"), b"x").is_err());
    }
}
