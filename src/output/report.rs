//! The JSON report of one container start, in `<state_dir>/reports/<id>.json`, written
//! atomically (temporary file, rename: a reader sees the old report or the new one, never a part;
//! no fsync, [`crate::atomic::write_file_unsynced`]), with the oldest reports pruned beyond a count
//! (down to nine tenths of it, so most starts only count names).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::facts::container::GpuRequest;
use crate::finding::Finding;

#[derive(Debug, Clone, Serialize)]
pub struct Report<'a> {
    pub container_id: &'a str,
    /// Seconds since the epoch.
    pub time: u64,
    pub verdict: &'a str,
    pub mode: &'a str,
    pub request: &'a GpuRequest,
    pub bundle: &'a Path,
    pub findings: &'a [Finding],
    /// The hook's own error, where it failed and `on_error` decided.
    pub error: Option<&'a str>,
    /// What the probe child saw and the driver answered, where it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<&'a crate::facts::probe::ProbeResult>,
    /// The walk for the image's CUDA binaries: counts, cache hits, what it did not reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binaries: Option<&'a crate::facts::gpu_code::binaries::BinaryFacts>,
    /// How the image's CUDA-using libraries load: misses, runtimes in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<&'a crate::facts::library_loading::cuda_libraries::LoadFacts>,
    /// The image's JIT toolchains (ptxas, NVRTC) and their CUDA versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toolchains: Option<&'a crate::facts::toolchains::ToolchainFacts>,
    pub duration_ms: f64,
    /// Where the hook's time went, in order (`config`, `host`, `image`, `binaries`, `hoststate`,
    /// `rules`, …; ms each): what a slow start is read by. Not the process start and exit,
    /// which no clock of the hook sees.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "phases_map")]
    pub phases_ms: Option<&'a [(&'static str, f64)]>,
}

fn phases_map<S: serde::Serializer>(
    p: &Option<&[(&'static str, f64)]>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(
        p.unwrap_or_default()
            .iter()
            .map(|(k, v)| (k, (v * 1000.0).round() / 1000.0)),
    )
}

/// Time per phase since the last mark: [`Report::phases_ms`].
#[derive(Debug, Clone)]
pub struct Phases {
    last: std::time::Instant,
    pub spans: Vec<(&'static str, f64)>,
}

impl Phases {
    pub fn since(t: std::time::Instant) -> Phases {
        Phases {
            last: t,
            spans: Vec::new(),
        }
    }

    /// Spans measured elsewhere, up to now.
    pub fn add(&mut self, spans: &[(&'static str, f64)]) {
        self.spans.extend_from_slice(spans);
        self.last = std::time::Instant::now();
    }

    /// The time since the last mark (or the start) was spent on `name`.
    pub fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.spans
            .push((name, now.duration_since(self.last).as_secs_f64() * 1000.0));
        self.last = now;
    }
}

/// A container id as a file name: runtimes use `[A-Za-z0-9_.-]`; anything else is replaced, so
/// no id can name a path outside the reports directory.
pub fn file_name(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    let clean = if clean.is_empty() || clean.starts_with('.') {
        format!("_{clean}")
    } else {
        clean
    };
    format!("{clean}.json")
}

pub fn reports_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("reports")
}

pub fn write(state_dir: &Path, report: &Report, keep: usize) -> std::io::Result<PathBuf> {
    let dir = reports_dir(state_dir);
    std::fs::create_dir_all(&dir)?;
    let final_path = dir.join(file_name(report.container_id));
    let mut bytes = serde_json::to_vec_pretty(report)?;
    bytes.push(b'\n');
    // No fsync (crate::atomic::write_file_unsynced): a report records one start; a power cut
    // that loses it loses the start too, and readers never see a part of one.
    crate::atomic::write_file_unsynced(&final_path, &bytes)?;
    prune(&dir, keep);
    Ok(final_path)
}

const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(60);

/// Keep the newest `keep` reports. Best effort: pruning never fails a start.
fn prune(dir: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let entries: Vec<std::fs::DirEntry> = rd.filter_map(|e| e.ok()).collect();
    // Temporary files of hooks killed mid-write (SIGKILL at the runtime's timeout) would pile up;
    // a live writer's is younger than the hook's deadline, so a minute-old one is stale.
    let now = std::time::SystemTime::now();
    for e in &entries {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if n.starts_with('.')
            && n.ends_with(".tmp")
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TMP)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let names: Vec<std::fs::DirEntry> = entries
        .into_iter()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
        })
        .collect();
    // Counted by name first: every start writes a report, and a `stat` of each of `keep` (1000)
    // reports on every start cost more than the rest of a cached GPU start.
    if names.len() <= keep {
        return;
    }
    let mut reports: Vec<(std::time::SystemTime, PathBuf)> = names
        .into_iter()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if reports.len() <= keep {
        return;
    }
    reports.sort();
    // A tenth below the limit: the next `keep / 10` starts count names only.
    let excess = reports.len() - (keep - keep / 10);
    for (_, p) in reports.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_the_reports_dir() {
        assert_eq!(file_name("abc-123_x.y"), "abc-123_x.y.json");
        assert_eq!(file_name("../../etc/passwd"), "_.._.._etc_passwd.json");
        assert_eq!(file_name(""), "_.json");
        assert_eq!(file_name(".."), "_...json");
    }

    #[test]
    fn write_replaces_atomically_and_prunes_oldest() {
        let d = tempfile::tempdir().unwrap();
        let req = GpuRequest::SpecDevices;
        for i in 0..5 {
            let id = format!("c{i}");
            let r = Report {
                container_id: &id,
                time: 0,
                verdict: "allow",
                mode: "enforce",
                request: &req,
                bundle: Path::new("/b"),
                findings: &[],
                error: None,
                probe: None,
                binaries: None,
                load: None,
                toolchains: None,
                duration_ms: 0.0,
                phases_ms: None,
            };
            write(d.path(), &r, 3).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        let mut names: Vec<String> = std::fs::read_dir(reports_dir(d.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["c2.json", "c3.json", "c4.json"]);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(reports_dir(d.path()).join("c4.json")).unwrap())
                .unwrap();
        assert_eq!(v["request"]["kind"], "spec-devices");
    }
}
