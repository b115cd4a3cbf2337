//! The probe's cache: a probe result keyed by everything that decides it, so the second container
//! of an image on a host costs a lookup instead of ~300 ms of driver work, and 64 replicas
//! starting at once run one probe between them (a file lock per key; the others wait and read).
//!
//! The key is content, not identity: overlay and vfs give every container its own inode numbers
//! for the same library, so libraries are named by size, mtime and ELF build-id.
#![deny(unsafe_code)]

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::facts::probe::ProbeOutcome;

/// Content identity of a library: size, mtime and its GNU build-id (or, without one, a hash of
/// its first 64 KiB: the ELF and program headers, which change with any rebuild).
pub fn library_identity(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let id = build_id(&mut f).unwrap_or_else(|| {
        let mut head = vec![0u8; 64 << 10];
        let _ = f.seek(SeekFrom::Start(0));
        let n = f.read(&mut head).unwrap_or(0);
        hex(&Sha256::digest(&head[..n]))
    });
    Some(format!("{}:{}:{}", meta.len(), mtime, id))
}

/// The GNU build-id note, read through the section headers only.
fn build_id(f: &mut std::fs::File) -> Option<String> {
    use object::{Object, ObjectSection};
    let cache = object::ReadCache::new(&*f);
    let file = object::File::parse(&cache).ok()?;
    let section = file.section_by_name(".note.gnu.build-id")?;
    let data = section.data().ok()?;
    // Elf note: namesz, descsz, type, "GNU\0", desc.
    if data.len() < 16 {
        return None;
    }
    let namesz = u32::from_le_bytes(data[0..4].try_into().ok()?) as usize;
    let descsz = u32::from_le_bytes(data[4..8].try_into().ok()?) as usize;
    let start = 12 + namesz.div_ceil(4) * 4;
    data.get(start..start + descsz).map(hex)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The cache key of a canonical description of the probe's inputs.
pub fn key(inputs: &serde_json::Value) -> String {
    hex(&Sha256::digest(inputs.to_string().as_bytes()))[..32].to_string()
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// Seconds since the epoch when the probe ran.
    time: u64,
    outcome: ProbeOutcome,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A cached outcome no older than `ttl`. A corrupt or unreadable entry is a miss.
pub fn lookup(dir: &Path, key: &str, ttl: Duration) -> Option<ProbeOutcome> {
    let bytes = crate::input::read_capped(&dir.join(format!("{key}.json")), 1 << 20).ok()?;
    let e: Entry = serde_json::from_slice(&bytes).ok()?;
    (now().saturating_sub(e.time) <= ttl.as_secs()).then_some(e.outcome)
}

/// Store atomically (temp + rename): a reader sees the old entry or the new one, never a part.
pub fn store(dir: &Path, key: &str, outcome: &ProbeOutcome) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec(&Entry {
        time: now(),
        outcome: outcome.clone(),
    })?;
    crate::atomic::write_file(&dir.join(format!("{key}.json")), &bytes)
}

/// Hold the key's lock (exclusive `flock`) until `deadline`; `None` if it could not be had in
/// time. The lock goes with the returned file.
#[allow(unsafe_code)]
pub fn lock(dir: &Path, key: &str, deadline: Instant) -> Option<std::fs::File> {
    std::fs::create_dir_all(dir).ok()?;
    let path: PathBuf = dir.join(format!("{key}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ok()?;
    loop {
        // SAFETY: flock on a file we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Some(f);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lookup_ttl_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let o = ProbeOutcome {
            driver_version: Some(13000),
            ..ProbeOutcome::default()
        };
        assert!(lookup(d.path(), "k", Duration::from_secs(60)).is_none());
        store(d.path(), "k", &o).unwrap();
        assert_eq!(
            lookup(d.path(), "k", Duration::from_secs(60))
                .unwrap()
                .driver_version,
            Some(13000)
        );
        // Stale entries are misses.
        std::fs::write(d.path().join("old.json"), r#"{"time":1,"outcome":{"identity":{"uid":0,"gid":0,"groups":[]},"libcuda":"/x","calls":[]}}"#).unwrap();
        assert!(lookup(d.path(), "old", Duration::from_secs(60)).is_none());
        // A corrupt entry is a miss, not a crash.
        std::fs::write(d.path().join("bad.json"), "{\"time\": 9999999999, \"outc").unwrap();
        assert!(lookup(d.path(), "bad", Duration::from_secs(60)).is_none());
    }

    #[test]
    fn key_is_stable_and_sensitive() {
        let a = key(&serde_json::json!({"lib": "1:2:abc", "devs": ["/dev/nvidia0"]}));
        assert_eq!(
            a,
            key(&serde_json::json!({"lib": "1:2:abc", "devs": ["/dev/nvidia0"]}))
        );
        assert_ne!(
            a,
            key(&serde_json::json!({"lib": "1:2:abd", "devs": ["/dev/nvidia0"]}))
        );
    }

    #[test]
    fn lock_excludes_and_times_out() {
        let d = tempfile::tempdir().unwrap();
        let held = lock(d.path(), "k", Instant::now()).expect("free lock");
        assert!(lock(d.path(), "k", Instant::now() + Duration::from_millis(50)).is_none());
        drop(held);
        // Free again once dropped. Not at once: a child another test thread is spawning holds
        // a copy of every fd (this lock's too) until its execve closes it.
        assert!(lock(d.path(), "k", Instant::now() + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn identity_of_this_test_binary_uses_its_build_id_or_header() {
        let exe = std::env::current_exe().unwrap();
        let id = library_identity(&exe).unwrap();
        assert_eq!(id.split(':').count(), 3);
        assert!(library_identity(Path::new("/nonexistent")).is_none());
    }
}
