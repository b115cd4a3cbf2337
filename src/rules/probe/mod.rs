//! The probe's answer as findings: what the driver said, inside the container, and — from the
//! other facts — why.

use crate::facts::container::{DeviceView, Node};
use crate::facts::probe::answer::ProbeAnswer;
use crate::facts::probe::{ProbeOutcome, ProbeResult};
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::knowledge;

/// The driver's own words for `code`: our table where it knows the code, else what the driver's
/// `cuGetErrorName` said.
fn predicted(code: i64, name: Option<&str>) -> Predicted {
    if knowledge::driver_error(code).is_some() {
        Predicted::driver(code)
    } else {
        Predicted {
            api: Api::Driver,
            code: Some(code),
            name: name.map(String::from),
            message: String::new(),
        }
    }
}

/// Why a call may have failed, from what else we know of the container.
fn cause(code: i64, devices: Option<&DeviceView>) -> String {
    let missing = |p: &str| {
        devices.is_some_and(|v| {
            !v.nodes
                .iter()
                .any(|(n, node)| n == p && matches!(node, Node::Char { .. }))
        })
    };
    match code {
        999 if missing("/dev/nvidia-uvm") => ": /dev/nvidia-uvm is not in the container (add it, or let the NVIDIA runtime inject it)".into(),
        100 if missing("/dev/nvidiactl") => ": /dev/nvidiactl is not in the container".into(),
        999 => ": with /dev/nvidia-uvm present this is usually the nvidia_uvm module not loaded on the host, or a GPU that fell off the bus (check `dmesg` for Xid)".into(),
        100 => ": the driver sees no GPU it may open (device nodes or device cgroup rules)".into(),
        803 => ": the libcuda the container loads does not match the host's kernel module (a forward-compat or baked-in libcuda)".into(),
        804 => ": a forward-compat libcuda on a GPU that does not support forward compatibility".into(),
        304 => ": an OS call the driver made was refused (seccomp, a denied ioctl, /dev/nvidia-caps for MIG)".into(),
        _ => String::new(),
    }
}

/// Findings from one probe run. `seccomp` says whether the container has a seccomp filter the
/// probe did not apply. `footprint` says why a failure may be the probe's own (a pids or
/// memory limit within what the probe itself takes): a block then becomes `probe-inconclusive`.
pub fn probe_findings(
    result: &ProbeResult,
    devices: Option<&DeviceView>,
    seccomp: bool,
    footprint: Option<&str>,
) -> Vec<Finding> {
    let out = findings_of(result, devices, seccomp);
    let Some(why) = footprint else {
        return out;
    };
    out.into_iter()
        .map(|f| {
            // A setup step can hit the limit too (a fork refused with EAGAIN by pids.limit).
            if f.severity != Severity::Block
                && !["probe-timeout", "probe-crashed", "probe-setup-failed"]
                    .contains(&f.id.as_str())
            {
                return f;
            }
            Finding::new(
                FindingId::ProbeInconclusive,
                Severity::Warn,
                f.predicted.clone(),
                format!(
                    "{}; but {why}, so this may be the probe's own footprint, not the workload's",
                    f.evidence
                ),
                "Run the workload to see; raise the container's limit if it fails the same way.",
            )
        })
        .collect()
}

fn findings_of(result: &ProbeResult, devices: Option<&DeviceView>, seccomp: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    if seccomp {
        out.push(Finding::new(
            FindingId::ProbeWithoutSeccomp,
            Severity::Info,
            None,
            "the container has a seccomp filter; the probe ran without it, so a syscall the filter denies to the workload was allowed to the probe",
            "",
        ));
    }
    match result {
        ProbeResult::TimedOut { deadline_ms } => out.push(Finding::new(
            FindingId::ProbeTimeout,
            Severity::Warn,
            None,
            format!("the driver did not answer within {deadline_ms} ms (cuInit or cuCtxCreate hung); the probe was killed"),
            "A hung cuInit is usually a GPU that fell off the bus or a stuck driver: check `nvidia-smi` and `dmesg` for Xid errors. \
             Raise probe_deadline_ms if the host is merely slow (persistence mode off makes the first cuInit slow).",
        )),
        ProbeResult::Crashed { signal, exit_code } => out.push(Finding::new(
            FindingId::ProbeCrashed,
            Severity::Warn,
            None,
            match signal {
                Some(s) => format!("the probe died of signal {s} inside the container's libcuda"),
                None => format!("the probe exited with {exit_code:?} and no answer"),
            },
            "The container's libcuda.so.1 crashes when loaded: check that it is the driver's (not a stub or a copy baked into the image).",
        )),
        ProbeResult::Failed { error } => out.push(Finding::new(
            FindingId::ProbeSetupFailed,
            Severity::Warn,
            None,
            format!("the probe could not run: {error}"),
            "This is cuda-preflight's own failure; the container was judged by the static rules only.",
        )),
        ProbeResult::Finished { outcome, ms, cached } => out.extend(outcome_findings(outcome, *ms, *cached, devices)),
    }
    out
}

fn outcome_findings(
    o: &ProbeOutcome,
    ms: f64,
    cached: bool,
    devices: Option<&DeviceView>,
) -> Vec<Finding> {
    if let Some(e) = &o.setup_error {
        return vec![Finding::new(
            FindingId::ProbeSetupFailed,
            Severity::Warn,
            None,
            format!("the probe could not enter the container: {e}"),
            "This is cuda-preflight's own failure; the container was judged by the static rules only.",
        )];
    }
    if let Some(e) = &o.load_error {
        return vec![Finding::new(
            FindingId::ProbeLoadFailed,
            Severity::Block,
            Some(Predicted::message(Api::Loader, e.clone())),
            format!(
                "the container's {} could not be loaded: {e}",
                o.libcuda.display()
            ),
            "The libcuda.so.1 the container's loader finds is not a usable driver library: let the NVIDIA runtime inject the host's, \
             and remove copies from the image.",
        )];
    }
    if let Some(c) = o.first_failure() {
        let id = if c.call == "cuInit" {
            FindingId::ProbeInitFailed
        } else if c.call.starts_with("cuCtxCreate") {
            FindingId::ProbeContextFailed
        } else {
            FindingId::ProbeInitFailed
        };
        let p = predicted(c.code, c.name.as_deref());
        return vec![Finding::new(
            id,
            Severity::Block,
            Some(p.clone()),
            format!(
                "{} failed with {} {} inside the container (libcuda {}){}",
                c.call,
                c.code,
                p.name.as_deref().unwrap_or("?"),
                o.libcuda.display(),
                cause(c.code, devices)
            ),
            "Fix the cause named in the evidence; `cuda-preflight explain` gives more on the error.",
        )];
    }
    if o.device_count == Some(0) {
        return vec![Finding::new(
            FindingId::ProbeNoDevice,
            Severity::Block,
            Some(Predicted::driver(100)),
            "cuInit succeeded but the driver lists no device in the container",
            "Give the container a GPU (NVIDIA_VISIBLE_DEVICES, --gpus, CDI), and check its device nodes.",
        )];
    }
    let mut out = Vec::new();
    if let Some(c) = o.canary().filter(|c| c.code != 0) {
        let p = predicted(c.code, c.name.as_deref());
        out.push(Finding::new(
            FindingId::ProbeJitFailed,
            Severity::Warn,
            Some(p.clone()),
            format!(
                "a context works, but loading a minimal PTX module failed with {} {}: kernels shipped only as PTX \
                 (and NVRTC/Triton JIT) will fail in this container",
                c.code,
                p.name.as_deref().unwrap_or("?")
            ),
            "221 means libnvidia-ptxjitcompiler.so.1 is not in the container: let the NVIDIA runtime inject the \
             compute libraries (NVIDIA_DRIVER_CAPABILITIES must include compute; regenerate an old CDI spec).",
        ));
    }
    let calls: Vec<String> = o
        .calls
        .iter()
        .map(|c| format!("{} {:.1} ms", c.call, c.ms))
        .collect();
    let how = if cached {
        format!("cached; looked up in {ms:.1} ms")
    } else {
        format!("{ms:.0} ms in all")
    };
    out.push(Finding::new(
        FindingId::ProbeOk,
        Severity::Info,
        None,
        format!(
            "a CUDA context was created and destroyed on {} GPU(s) inside the container as uid {} with CapEff {} (driver {}): {}; {how}",
            o.device_count.unwrap_or(0),
            o.identity.uid,
            o.identity.cap_eff.as_deref().unwrap_or("?"),
            o.driver_version.map_or("?".into(), |v| format!("{}.{}", v / 1000, (v % 1000) / 10)),
            calls.join(", "),
        ),
        "",
    ));
    out
}

/// Findings from the probe step's answer ([`ProbeAnswer`]): the driver's answer where the probe
/// ran (see [`probe_findings`]; the probe applies the container's seccomp filter itself or does not
/// run), else why it did not run. `NotAsked` says nothing.
pub fn answer_findings(answer: &ProbeAnswer, devices: Option<&DeviceView>) -> Vec<Finding> {
    match answer {
        ProbeAnswer::NotAsked => Vec::new(),
        ProbeAnswer::Deferred { stage, pending } => {
            vec![crate::rules::start_path::probe_deferred(*stage, pending)]
        }
        ProbeAnswer::OutsideContainer => vec![Finding::skipped(
            FindingId::ProbeSkipped,
            "the hook runs at createContainer but not as a child of the container's init (the runtime runs createContainer hooks outside the container): image code is not run here",
        )],
        ProbeAnswer::NoLibcuda => vec![Finding::new(
            FindingId::ProbeLibcudaMissing,
            Severity::Block,
            Some(Predicted::message(
                Api::Loader,
                "libcuda.so.1: cannot open shared object file: No such file or directory",
            )),
            "the container's loader finds no libcuda.so.1 (LD_LIBRARY_PATH, ld.so.cache, default directories): \
             the NVIDIA runtime did not inject the driver library",
            "Start the container through the NVIDIA runtime or CDI so the host's driver libraries are mounted into it.",
        )],
        ProbeAnswer::CannotConfine(why) => vec![Finding::new(
            FindingId::ProbeSkipped,
            Severity::Info,
            None,
            format!(
                "the probe did not run: {why}; the container was judged by the static rules only"
            ),
            "",
        )],
        ProbeAnswer::Ran { result, footprint } => {
            probe_findings(result, devices, false, footprint.as_deref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::container::ViewSource;
    use crate::facts::probe::Call;

    fn done(calls: &[(&str, i64)], count: Option<i64>) -> ProbeResult {
        ProbeResult::Finished {
            outcome: ProbeOutcome {
                calls: calls
                    .iter()
                    .map(|(c, code)| Call {
                        call: c.to_string(),
                        code: *code,
                        name: None,
                        ms: 1.0,
                    })
                    .collect(),
                device_count: count,
                driver_version: Some(13000),
                ..ProbeOutcome::default()
            },
            ms: 300.0,
            cached: false,
        }
    }

    #[test]
    fn probe_result_table() {
        let no_uvm = DeviceView {
            source: ViewSource::Namespace,
            nodes: vec![(
                "/dev/nvidiactl".into(),
                Node::Char {
                    major: 195,
                    minor: 255,
                },
            )],
            cgroup: None,
            cgroup_source: None,
        };
        let cases: Vec<(
            &str,
            ProbeResult,
            Option<&DeviceView>,
            &str,
            Severity,
            Option<i64>,
            &str,
        )> = vec![
            (
                "healthy",
                done(&[("cuInit", 0), ("cuCtxCreate(0)", 0)], Some(1)),
                None,
                "probe-ok",
                Severity::Info,
                None,
                "created and destroyed",
            ),
            (
                "uvm missing",
                done(&[("cuInit", 999)], None),
                Some(&no_uvm),
                "probe-init-failed",
                Severity::Block,
                Some(999),
                "/dev/nvidia-uvm is not in the container",
            ),
            (
                "803",
                done(&[("cuInit", 803)], None),
                None,
                "probe-init-failed",
                Severity::Block,
                Some(803),
                "does not match the host's kernel module",
            ),
            (
                "ctx",
                done(&[("cuInit", 0), ("cuCtxCreate(0)", 2)], Some(1)),
                None,
                "probe-context-failed",
                Severity::Block,
                Some(2),
                "cuCtxCreate(0) failed",
            ),
            (
                "unknown code",
                done(&[("cuInit", 4242)], None),
                None,
                "probe-init-failed",
                Severity::Block,
                Some(4242),
                "4242",
            ),
            (
                "no device",
                done(&[("cuInit", 0)], Some(0)),
                None,
                "probe-no-device",
                Severity::Block,
                Some(100),
                "no device",
            ),
            (
                "hang",
                ProbeResult::TimedOut { deadline_ms: 500 },
                None,
                "probe-timeout",
                Severity::Warn,
                None,
                "500 ms",
            ),
            (
                "crash",
                ProbeResult::Crashed {
                    signal: Some(11),
                    exit_code: None,
                },
                None,
                "probe-crashed",
                Severity::Warn,
                None,
                "signal 11",
            ),
        ];
        for (name, r, dev, id, sev, code, text) in cases {
            let f = probe_findings(&r, dev, false, None);
            assert_eq!(f.len(), 1, "{name}");
            assert_eq!(f[0].id, id, "{name}");
            assert_eq!(f[0].severity, sev, "{name}");
            assert_eq!(f[0].predicted.as_ref().and_then(|p| p.code), code, "{name}");
            assert!(f[0].evidence.contains(text), "{name}: {}", f[0].evidence);
            assert_eq!(f[0].id.area(), crate::finding::catalog::Area::Probe);
        }
        assert_eq!(
            probe_findings(&ProbeResult::TimedOut { deadline_ms: 1 }, None, true, None)[0].id,
            "probe-without-seccomp"
        );
    }

    #[test]
    fn a_failure_within_the_probes_footprint_is_inconclusive() {
        let why = Some("the container's pids limit of 8 leaves the probe too little room");
        let cases: &[(&str, ProbeResult, &str, Severity)] = &[
            (
                "304 under pids 8",
                done(&[("cuInit", 304)], None),
                "probe-inconclusive",
                Severity::Warn,
            ),
            (
                "context under pids 8",
                done(&[("cuInit", 0), ("cuCtxCreate(0)", 2)], Some(1)),
                "probe-inconclusive",
                Severity::Warn,
            ),
            (
                "crash",
                ProbeResult::Crashed {
                    signal: Some(9),
                    exit_code: None,
                },
                "probe-inconclusive",
                Severity::Warn,
            ),
            (
                "a fork refused in the setup",
                ProbeResult::Finished {
                    outcome: ProbeOutcome {
                        setup_error: Some(
                            "fork into the nested pid namespace: EAGAIN: Try again".into(),
                        ),
                        ..ProbeOutcome::default()
                    },
                    ms: 1.0,
                    cached: false,
                },
                "probe-inconclusive",
                Severity::Warn,
            ),
            (
                "healthy stays ok",
                done(&[("cuInit", 0), ("cuCtxCreate(0)", 0)], Some(1)),
                "probe-ok",
                Severity::Info,
            ),
        ];
        for (name, r, id, sev) in cases {
            let f = probe_findings(r, None, false, why);
            assert_eq!(f.len(), 1, "{name}");
            assert_eq!((f[0].id.as_str(), f[0].severity), (*id, *sev), "{name}");
            if *id == "probe-inconclusive" {
                assert!(
                    f[0].evidence.contains("pids limit of 8"),
                    "{name}: {}",
                    f[0].evidence
                );
            }
        }
        // The driver's code is kept for the report.
        let f = probe_findings(&done(&[("cuInit", 304)], None), None, false, why);
        assert_eq!(f[0].predicted.as_ref().and_then(|p| p.code), Some(304));
    }

    #[test]
    fn every_answer_of_the_probe_step_is_said_once_or_not_at_all() {
        let pending = crate::facts::start_path::CdiHooks::default();
        // (answer, ids, severity of the first, words its evidence must hold)
        let cases: Vec<(ProbeAnswer, &[&str], Option<Severity>, &str)> = vec![
            (ProbeAnswer::NotAsked, &[], None, ""),
            (
                ProbeAnswer::Deferred {
                    stage: crate::facts::start_path::Stage::CreateRuntime,
                    pending,
                },
                &["probe-skipped"],
                Some(Severity::Info),
                "not run at createRuntime",
            ),
            (
                ProbeAnswer::OutsideContainer,
                &["probe-skipped"],
                Some(Severity::Info),
                "not as a child of the container's init",
            ),
            (
                ProbeAnswer::NoLibcuda,
                &["probe-libcuda-missing"],
                Some(Severity::Block),
                "finds no libcuda.so.1",
            ),
            (
                ProbeAnswer::CannotConfine("seccomp: no".into()),
                &["probe-skipped"],
                Some(Severity::Info),
                "the probe did not run: seccomp: no; the container was judged by the static rules only",
            ),
            (
                ProbeAnswer::Ran {
                    result: done(&[("cuInit", 999)], None),
                    footprint: Some("the container's pids limit of 8".into()),
                },
                &["probe-inconclusive"],
                Some(Severity::Warn),
                "pids limit of 8",
            ),
        ];
        for (answer, ids, severity, words) in cases {
            let f = answer_findings(&answer, None);
            assert_eq!(
                f.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
                ids,
                "{answer:?}"
            );
            assert_eq!(f.first().map(|f| f.severity), severity, "{answer:?}");
            assert!(
                f.first().is_none_or(|f| f.evidence.contains(words)),
                "{answer:?}: {f:?}"
            );
        }
    }
}
