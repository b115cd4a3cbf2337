//! Metrics for the dashboards operators already have: a Prometheus text-format file for node
//! exporter's textfile collector (`<metrics_dir>/cuda_preflight.prom`), rewritten atomically
//! after each GPU container start.
//!
//! Each hook is its own process, so the counters live in `<state_dir>/metrics.json`. An update
//! takes an exclusive `flock` on `<state_dir>/metrics.lock`, reads the state, adds this start,
//! writes the state and then the `.prom` file (each a temporary file renamed over the old one),
//! and lets go: concurrent starts are serialised and none loses an increment. Outputs never
//! decide anything; a failure here is reported in the log line, never changes a verdict.
//!
//! The lock is waited for at most [`LOCK_WAIT`]: a stuck writer or a stalled disk must not hold
//! the hook (whose verdict is already decided) until its deadline. A start that gave up adds one
//! byte to `<state_dir>/metrics.skipped` (append, never blocks on the lock, never truncated); the
//! next writer that gets the lock adds the new bytes to `cuda_preflight_metrics_skipped_total`,
//! so a lost start shows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::facts::probe::ProbeResult;
use crate::finding::{Finding, Severity};
use crate::knowledge;

pub const PROM_FILE: &str = "cuda_preflight.prom";
pub const STATE_FILE: &str = "metrics.json";
const LOCK_FILE: &str = "metrics.lock";
const SKIPPED_FILE: &str = "metrics.skipped";
const BAD_STATE_FILE: &str = "metrics.json.bad";
/// How long a start waits for the metrics lock before it gives up and counts itself as skipped.
/// 20 hooks at once on a loaded 2-core machine take well under this (tests/it/metrics.rs).
/// The label value of anything outside the closed sets (finding ids, CUDA error names).
pub const OTHER: &str = "other";

/// A finding id read back from the state file as a label: one of the catalog's, else [`OTHER`].
fn finding_label(id: &str) -> String {
    if crate::finding::FindingId::parse(id).is_some() {
        id.to_string()
    } else {
        OTHER.into()
    }
}

/// A probe outcome as a label: the fixed words, a known CUDA error name, else [`OTHER`].
fn outcome_label(o: &str) -> String {
    const FIXED: &[&str] = &[
        "setup-failed",
        "load-failed",
        "timeout",
        "crashed",
        "failed",
        "CUDA_SUCCESS",
        "CUDA_ERROR_NO_DEVICE",
    ];
    if FIXED.contains(&o) || knowledge::driver_errors().iter().any(|e| e.name == o) {
        o.to_string()
    } else {
        OTHER.into()
    }
}

pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);
const MAX_STATE_BYTES: u64 = 4 << 20;

/// Upper bounds (seconds) of the hook latency histogram: a start without a probe takes
/// milliseconds, one with a probe ~0.3 s (the cold context on an H100), the deadline 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The counters, as kept between hook processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub starts: u64,
    pub verdicts: BTreeMap<String, u64>,
    /// Finding id → starts where it was a block (after policy).
    pub blocks: BTreeMap<String, u64>,
    pub warnings: BTreeMap<String, u64>,
    /// Probe outcome (`CUDA_SUCCESS`, a `CUDA_ERROR_*` name, `timeout`, …) → count.
    pub probes: BTreeMap<String, u64>,
    pub context_attempts: u64,
    pub context_successes: u64,
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS`], then one for +Inf.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_seconds: f64,
    pub latency_count: u64,
    /// Starts that could not take the metrics lock in time and were not counted above.
    pub skipped: u64,
    /// Length of `metrics.skipped` when last read (each skip appends one byte).
    pub skipped_seen: u64,
    /// Times the state file could not be read back and the counters began again (the bad file
    /// is kept beside it): a reset shows instead of passing silently.
    pub state_resets: u64,
}

/// One GPU container start, as the hook saw it.
pub struct Sample<'a> {
    pub verdict: &'a str,
    /// After policy: a block here stopped (or, in warn mode, would have stopped) the start.
    pub findings: &'a [Finding],
    pub probe: Option<&'a ProbeResult>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("locking {path}: {error}")]
    Lock {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path}: lock held by another writer for {waited_ms} ms; this start counted as skipped"
    )]
    Busy { path: PathBuf, waited_ms: u128 },
}

type Result<T> = std::result::Result<T, MetricsError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError + '_ {
    move |source| MetricsError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

/// The probe's outcome as a label: what the driver answered, or why it did not.
pub fn probe_outcome(r: &ProbeResult) -> String {
    match r {
        ProbeResult::Finished { outcome, .. } => {
            if outcome.setup_error.is_some() {
                "setup-failed".into()
            } else if outcome.load_error.is_some() {
                "load-failed".into()
            } else if let Some(c) = outcome.first_failure() {
                // The code and name come from the container's libcuda, which the image may
                // supply: only a name of the knowledge table is a label value (issue 22: 700 KB
                // names grew the state past its cap). The report keeps what the probe said.
                knowledge::driver_error(c.code)
                    .map(|e| e.name.to_string())
                    .unwrap_or_else(|| OTHER.into())
            } else if outcome.device_count == Some(0) {
                "CUDA_ERROR_NO_DEVICE".into()
            } else {
                "CUDA_SUCCESS".into()
            }
        }
        ProbeResult::TimedOut { .. } => "timeout".into(),
        ProbeResult::Crashed { .. } => "crashed".into(),
        ProbeResult::Failed { .. } => "failed".into(),
    }
}

impl State {
    /// Labels outside the closed sets (a state written by an older version) folded into
    /// [`OTHER`], so what is kept stays bounded whatever was written before.
    fn normalise(&mut self) {
        for (m, label) in [
            (&mut self.blocks, finding_label as fn(&str) -> String),
            (&mut self.warnings, finding_label),
            (&mut self.probes, outcome_label),
        ] {
            if m.keys().all(|k| label(k) == *k) {
                continue;
            }
            let old = std::mem::take(m);
            for (k, n) in old {
                *m.entry(label(&k)).or_default() += n;
            }
        }
        let v = std::mem::take(&mut self.verdicts);
        for (k, n) in v {
            let k = if ["allow", "warn", "block"].contains(&k.as_str()) {
                k
            } else {
                OTHER.into()
            };
            *self.verdicts.entry(k).or_default() += n;
        }
    }

    pub fn add(&mut self, s: &Sample) {
        self.starts += 1;
        *self.verdicts.entry(s.verdict.to_string()).or_default() += 1;
        for f in s.findings {
            let m = match f.severity {
                Severity::Block => &mut self.blocks,
                Severity::Warn => &mut self.warnings,
                Severity::Info => continue,
            };
            *m.entry(f.id.as_str().to_string()).or_default() += 1;
        }
        if let Some(p) = s.probe {
            let o = outcome_label(&probe_outcome(p));
            // A context was attempted where the driver was asked (not where we failed to ask).
            if !matches!(o.as_str(), "setup-failed" | "failed") {
                self.context_attempts += 1;
                if o == "CUDA_SUCCESS" {
                    self.context_successes += 1;
                }
            }
            *self.probes.entry(o).or_default() += 1;
        }
        self.latency_buckets.resize(LATENCY_BUCKETS.len() + 1, 0);
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s.seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i] += 1;
        self.latency_sum_seconds += s.seconds;
        self.latency_count += 1;
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let counter = |s: &mut String, name: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut s,
            "cuda_preflight_starts_total",
            "GPU container starts judged by the hook.",
        );
        let _ = writeln!(s, "cuda_preflight_starts_total {}", self.starts);
        counter(
            &mut s,
            "cuda_preflight_verdicts_total",
            "GPU container starts by verdict.",
        );
        for v in ["allow", "warn", "block"] {
            let _ = writeln!(
                s,
                "cuda_preflight_verdicts_total{{verdict=\"{v}\"}} {}",
                self.verdicts.get(v).copied().unwrap_or(0)
            );
        }
        for (name, help, m) in [
            (
                "cuda_preflight_blocks_total",
                "Starts where a finding was a block, by finding id.",
                &self.blocks,
            ),
            (
                "cuda_preflight_warnings_total",
                "Starts where a finding was a warning, by finding id.",
                &self.warnings,
            ),
        ] {
            counter(&mut s, name, help);
            for (id, n) in m {
                let _ = writeln!(s, "{name}{{finding=\"{}\"}} {n}", escape(id));
            }
        }
        counter(
            &mut s,
            "cuda_preflight_probe_outcomes_total",
            "Probe runs by outcome: the CUDA driver's error name, or timeout/crashed/failed/setup-failed/load-failed.",
        );
        for (o, n) in &self.probes {
            let _ = writeln!(
                s,
                "cuda_preflight_probe_outcomes_total{{result=\"{}\"}} {n}",
                escape(o)
            );
        }
        counter(
            &mut s,
            "cuda_preflight_context_attempts_total",
            "Probes that asked the driver for a context.",
        );
        let _ = writeln!(
            s,
            "cuda_preflight_context_attempts_total {}",
            self.context_attempts
        );
        counter(
            &mut s,
            "cuda_preflight_context_successes_total",
            "Probes that created and destroyed a context.",
        );
        let _ = writeln!(
            s,
            "cuda_preflight_context_successes_total {}",
            self.context_successes
        );
        let _ = writeln!(
            s,
            "# HELP cuda_preflight_context_success_ratio Context creations that succeeded, of those attempted (1 when none was).\n# TYPE cuda_preflight_context_success_ratio gauge"
        );
        let ratio = if self.context_attempts == 0 {
            1.0
        } else {
            self.context_successes as f64 / self.context_attempts as f64
        };
        let _ = writeln!(s, "cuda_preflight_context_success_ratio {}", fmt_f64(ratio));
        counter(
            &mut s,
            "cuda_preflight_metrics_skipped_total",
            "Starts not counted in these metrics: the metrics lock was held longer than the hook waits.",
        );
        let _ = writeln!(s, "cuda_preflight_metrics_skipped_total {}", self.skipped);
        counter(
            &mut s,
            "cuda_preflight_metrics_state_resets_total",
            "Times the metrics state could not be read back and the counters began again.",
        );
        let _ = writeln!(
            s,
            "cuda_preflight_metrics_state_resets_total {}",
            self.state_resets
        );
        let h = "cuda_preflight_hook_duration_seconds";
        let _ = writeln!(
            s,
            "# HELP {h} Time the hook took for a GPU container start.\n# TYPE {h} histogram"
        );
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += self.latency_buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(s, "{h}_bucket{{le=\"{}\"}} {cum}", fmt_f64(*b));
        }
        cum += self
            .latency_buckets
            .get(LATENCY_BUCKETS.len())
            .copied()
            .unwrap_or(0);
        let _ = writeln!(s, "{h}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(s, "{h}_sum {}", fmt_f64(self.latency_sum_seconds));
        let _ = writeln!(s, "{h}_count {}", self.latency_count);
        s
    }
}

fn fmt_f64(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// A label value as the text format requires: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename: a
/// reader (the collector) sees the old file or the new one, never a part.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic::write_file(path, bytes).map_err(io(path))
}

/// Take the exclusive lock, polling a non-blocking `flock`, for at most `wait`.
#[allow(unsafe_code)]
fn lock_within(lock: &std::fs::File, path: &Path, wait: std::time::Duration) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
            _ => {
                return Err(MetricsError::Lock {
                    path: path.to_path_buf(),
                    error: e,
                });
            }
        }
        if start.elapsed() >= wait {
            return Err(MetricsError::Busy {
                path: path.to_path_buf(),
                waited_ms: start.elapsed().as_millis(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// One byte appended per start that gave up on the lock: `O_APPEND` needs no lock.
fn count_skipped(state_dir: &Path) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join(SKIPPED_FILE))
    {
        let _ = f.write_all(b"s");
    }
}

/// The file's length is the number of skipped starts ever appended; it is never truncated (a
/// truncation would race with a start appending without the lock), only read under the lock.
fn skipped_so_far(state_dir: &Path) -> u64 {
    std::fs::metadata(state_dir.join(SKIPPED_FILE)).map_or(0, |m| m.len())
}

/// Add one start to the counters kept in `state_dir` and rewrite `<metrics_dir>/cuda_preflight.prom`.
pub fn record(state_dir: &Path, metrics_dir: &Path, sample: &Sample) -> Result<State> {
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    std::fs::create_dir_all(metrics_dir).map_err(io(metrics_dir))?;
    let lock_path = state_dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    lock_within(&lock, &lock_path, LOCK_WAIT).inspect_err(|e| {
        if matches!(e, MetricsError::Busy { .. }) {
            count_skipped(state_dir);
        }
    })?;
    let state_path = state_dir.join(STATE_FILE);
    // A state file that is unreadable or not ours starts the counters again rather than stopping
    // metrics for good; the reset is counted and the bad file kept beside it for a look.
    let mut state: State = match crate::input::read_capped(&state_path, MAX_STATE_BYTES) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        read => match read
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<State>(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(_) => {
                let _ = std::fs::rename(&state_path, state_dir.join(BAD_STATE_FILE));
                State {
                    state_resets: 1,
                    ..State::default()
                }
            }
        },
    };
    state.normalise();
    state.add(sample);
    // New skips since the last writer: the file only grows (one byte per skip); a file removed
    // by hand starts again from zero.
    let seen = skipped_so_far(state_dir);
    state.skipped += if seen >= state.skipped_seen {
        seen - state.skipped_seen
    } else {
        seen
    };
    state.skipped_seen = seen;
    replace(
        &state_path,
        &serde_json::to_vec(&state).expect("metrics state serialises"),
    )?;
    replace(&metrics_dir.join(PROM_FILE), state.render().as_bytes())?;
    drop(lock);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::FindingId;

    #[test]
    fn buckets_and_labels() {
        let mut st = State::default();
        let f = [
            Finding::new(
                FindingId::DeviceNodeMissing,
                Severity::Block,
                None,
                "e",
                "f",
            ),
            Finding::new(FindingId::GpuMemoryLow, Severity::Warn, None, "e", "f"),
            Finding::new(FindingId::ProbeOk, Severity::Info, None, "e", ""),
        ];
        st.add(&Sample {
            verdict: "block",
            findings: &f,
            probe: None,
            seconds: 0.003,
        });
        st.add(&Sample {
            verdict: "allow",
            findings: &[],
            probe: Some(&ProbeResult::TimedOut { deadline_ms: 5 }),
            seconds: 20.0,
        });
        assert_eq!(st.latency_buckets[0], 1);
        assert_eq!(st.latency_buckets[LATENCY_BUCKETS.len()], 1);
        let text = st.render();
        assert!(
            text.contains("cuda_preflight_blocks_total{finding=\"device-node-missing\"} 1"),
            "{text}"
        );
        assert!(!text.contains("probe-ok"), "{text}");
        assert!(
            text.contains("cuda_preflight_hook_duration_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cuda_preflight_context_success_ratio 0.0"),
            "{text}"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    #[allow(unsafe_code)]
    fn a_held_lock_is_waited_for_a_bounded_time_and_the_skip_is_counted_once() {
        let d = tempfile::tempdir().unwrap();
        let (state_dir, prom) = (d.path().join("s"), d.path().join("m"));
        let sample = Sample {
            verdict: "allow",
            findings: &[],
            probe: None,
            seconds: 0.01,
        };
        record(&state_dir, &prom, &sample).unwrap();
        let held = std::fs::File::open(state_dir.join(LOCK_FILE)).unwrap();
        // SAFETY: flock on a descriptor the File owns for this whole call.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let t = std::time::Instant::now();
        let e = record(&state_dir, &prom, &sample).unwrap_err();
        assert!(matches!(e, MetricsError::Busy { .. }), "{e}");
        assert!(t.elapsed() < LOCK_WAIT + std::time::Duration::from_millis(500));
        drop(held);
        let st = record(&state_dir, &prom, &sample).unwrap();
        assert_eq!((st.starts, st.skipped), (2, 1));
        let st = record(&state_dir, &prom, &sample).unwrap();
        assert_eq!((st.starts, st.skipped), (3, 1), "a skip is counted once");
    }

    /// A probe whose libcuda (the image's) answered with `code` and `name`.
    fn probe_said(code: i64, name: &str) -> ProbeResult {
        let outcome: crate::facts::probe::ProbeOutcome = serde_json::from_value(serde_json::json!({
            "setup_error": null, "identity": {"uid": 0, "gid": 0, "groups": [], "cap_eff": null,
            "cap_bnd": null, "no_new_privs": null, "mnt_ns": null, "pid_ns": null, "cgroup": null},
            "libcuda": "/x", "load_error": null, "driver_version": 13000, "device_count": 1,
            "calls": [{"call": "cuInit", "code": code, "name": name, "ms": 1.0}]
        }))
        .unwrap();
        ProbeResult::Finished {
            outcome,
            ms: 1.0,
            cached: false,
        }
    }

    #[test]
    fn image_chosen_error_names_are_not_labels_and_the_state_survives_them() {
        // Issue 22: 700 KB error names from the image's libcuda became labels; after 7 starts
        // the state passed its 4 MB cap and every counter silently began again at 1.
        let d = tempfile::tempdir().unwrap();
        let (state_dir, prom) = (d.path().join("s"), d.path().join("m"));
        // Finding ids are the catalog's by type: only the probe's error names can be the image's.
        let hostile = Finding::new(
            FindingId::DeviceNodeMissing,
            Severity::Block,
            None,
            "e",
            "f",
        );
        for i in 0..12 {
            let name = format!("CUDA_ERROR_{}{}", i, "A".repeat(700_000));
            let p = probe_said(900_000 + i, &name);
            let st = record(
                &state_dir,
                &prom,
                &Sample {
                    verdict: "warn",
                    findings: std::slice::from_ref(&hostile),
                    probe: Some(&p),
                    seconds: 0.1,
                },
            )
            .unwrap();
            assert_eq!(st.starts, i as u64 + 1, "no counter began again");
        }
        let st = record(
            &state_dir,
            &prom,
            &Sample {
                verdict: "block",
                findings: &[],
                probe: Some(&probe_said(100, "forged-name")),
                seconds: 0.1,
            },
        )
        .unwrap();
        assert_eq!(st.probes.get(OTHER), Some(&12));
        assert_eq!(
            st.probes.get("CUDA_ERROR_NO_DEVICE"),
            Some(&1),
            "{:?}",
            st.probes
        );
        assert_eq!(st.blocks.get("device-node-missing"), Some(&12));
        assert_eq!(st.state_resets, 0);
        let size = std::fs::metadata(state_dir.join(STATE_FILE)).unwrap().len();
        assert!(size < 4096, "state is {size} bytes");
        // A state file that cannot be read back: counted, kept aside, not silent.
        std::fs::write(state_dir.join(STATE_FILE), b"{half").unwrap();
        let st = record(
            &state_dir,
            &prom,
            &Sample {
                verdict: "allow",
                findings: &[],
                probe: None,
                seconds: 0.1,
            },
        )
        .unwrap();
        assert_eq!((st.starts, st.state_resets), (1, 1));
        assert!(state_dir.join(BAD_STATE_FILE).exists());
        let text = std::fs::read_to_string(prom.join(PROM_FILE)).unwrap();
        assert!(
            text.contains("cuda_preflight_metrics_state_resets_total 1"),
            "{text}"
        );
        // An old state with labels outside the sets is folded, not kept.
        let mut old = State::default();
        old.probes.insert("Z".repeat(1000), 5);
        old.probes.insert("CUDA_SUCCESS".into(), 2);
        old.normalise();
        assert_eq!(old.probes.get(OTHER), Some(&5));
        assert_eq!(old.probes.get("CUDA_SUCCESS"), Some(&2));
    }
}
