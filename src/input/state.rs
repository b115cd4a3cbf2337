//! The OCI state a runtime writes to a hook's stdin.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::State;

/// runc's state is a few hundred bytes; annotations can add some. Anything near this is not a
/// state, and reading it must not cost unbounded memory.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("OCI state on stdin: {0}")]
    Read(std::io::Error),
    #[error("OCI state on stdin is not JSON: {0}")]
    Json(serde_json::Error),
    #[error("OCI state on stdin: {0}")]
    Invalid(String),
}

/// What the hook needs of the state.
#[derive(Debug, Clone, PartialEq)]
pub struct HookState {
    pub id: String,
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    pub annotations: HashMap<String, String>,
}

/// Parse a state as runc, crun and Podman send it, for any runtime-spec 1.x.
pub fn parse(bytes: &[u8]) -> Result<HookState, StateError> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(StateError::Json)?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| StateError::Invalid("expected a JSON object".into()))?;
    // runtime-spec before 1.0.0-rc5 (and some old runtimes) named the bundle `bundlePath`;
    // nvidia-container-toolkit's hook accepts it too.
    if !obj.contains_key("bundle")
        && let Some(b) = obj.remove("bundlePath")
    {
        obj.insert("bundle".into(), b);
    }
    // `status` is free-form for runtimes ("paused" in runc, "configured" in crun's past);
    // oci-spec's enum knows four. The hook does not decide anything on it, so drop it rather
    // than refuse a start over a word.
    if let Some(s) = obj.get("status")
        && !matches!(
            s.as_str(),
            Some("creating" | "created" | "running" | "stopped")
        )
    {
        obj.remove("status");
    }
    // crun adds `root` (its state directory); unknown keys are ignored by oci-spec.
    let state: State = serde_json::from_value(v).map_err(StateError::Json)?;
    if state.bundle().as_os_str().is_empty() {
        return Err(StateError::Invalid("no \"bundle\"".into()));
    }
    if !state.bundle().is_absolute() {
        return Err(StateError::Invalid(format!(
            "\"bundle\" is not an absolute path: {}",
            state.bundle().display()
        )));
    }
    Ok(HookState {
        id: state.id().clone(),
        pid: state.pid().filter(|p| *p > 0),
        bundle: state.bundle().clone(),
        annotations: state.annotations().clone().unwrap_or_default(),
    })
}

/// Read and parse the state from the hook's stdin, capped.
pub fn read_stdin(r: impl std::io::Read) -> Result<HookState, StateError> {
    let bytes = crate::input::read_capped_from(r, MAX_STATE_BYTES).map_err(StateError::Read)?;
    parse(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_as_runtimes_send_them() {
        let cases: &[(&str, &str, Option<i32>)] = &[
            // runc 1.1 at createRuntime
            (
                r#"{"ociVersion":"1.0.2-dev","id":"c1","status":"creating","pid":4242,"bundle":"/b","annotations":{"a":"b"}}"#,
                "c1",
                Some(4242),
            ),
            // crun adds "root"
            (
                r#"{"ociVersion":"1.0.0","id":"c2","status":"created","pid":7,"bundle":"/b","root":"/run/crun"}"#,
                "c2",
                Some(7),
            ),
            // legacy bundlePath
            (
                r#"{"ociVersion":"1.0.0-rc1","id":"c3","status":"created","pid":7,"bundlePath":"/b"}"#,
                "c3",
                Some(7),
            ),
            // runtime-spec 1.2 and a status word oci-spec does not know
            (
                r#"{"ociVersion":"1.2.0","id":"c4","status":"paused","bundle":"/b"}"#,
                "c4",
                None,
            ),
            // no annotations, pid 0 means none
            (
                r#"{"ociVersion":"1.0.2","id":"c5","status":"creating","pid":0,"bundle":"/b"}"#,
                "c5",
                None,
            ),
        ];
        for (json, id, pid) in cases {
            let s = parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(s.id, *id);
            assert_eq!(s.pid, *pid);
            assert_eq!(s.bundle, PathBuf::from("/b"));
        }
    }

    #[test]
    fn bad_states_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "not JSON"),
            ("[1]", "expected a JSON object"),
            (r#"{"id":"x"}"#, "no \"bundle\""),
            (r#"{"id":"x","bundle":"rel/dir"}"#, "not an absolute path"),
            (r#"{"id":5,"bundle":"/b"}"#, "not JSON"),
        ];
        for (json, want) in cases {
            let e = parse(json.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
