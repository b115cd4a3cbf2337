//! `cuda-preflight hook`: OCI state on stdin → verdict → exit code. The one command whose
//! non-zero exit stops a container start: it exits 1 only to block; on its own errors it follows
//! `on_error`.
//!
//! Order matters for cost: the state and `config.json` are parsed and the GPU request detected
//! before anything else is read, so a container that asks for no GPU costs a process start and a
//! JSON parse.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
use std::time::Instant;

use crate::commands::{SettingsArgs, container_facts, host_facts, run_rules};
use crate::config::{Config, OnFailure, ProbePolicy};
use crate::facts::container::{self, GpuRequest};
use crate::facts::start_path::{self, Stage};
use crate::finding::Severity;
use crate::input::bundle::Bundle;
use crate::input::state::{self, HookState};
use crate::output;
use crate::verdict::{self, Decision, MODE_ANNOTATION};
use std::time::Duration;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct HookArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Host profile JSON instead of asking the host [config: host_profile]
    #[arg(long, value_name = "FILE")]
    pub host_profile: Option<PathBuf>,
    /// Where /proc/<pid>/root is looked up (tests use a fixture) [default: /proc]
    #[arg(long, value_name = "DIR", hide = true, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// The OCI hook stage this entry runs at: prestart and createRuntime run in the runtime's
    /// namespaces before NVIDIA's CDI hooks; createContainer inside the container's, placed
    /// after them
    #[arg(long, value_enum, default_value = "createRuntime")]
    pub stage: Stage,
}

/// The pid the probe reads the container through. At createContainer the state's pid is the one
/// runc init has in the container's pid namespace (runc: `s.Pid = unix.Getpid()` before the
/// hooks), meaningless in the host's /proc; the hook itself is then in the container's namespaces
/// and mount namespace, so its own /proc entry shows the container — but only where the hook's
/// parent is the container's init (runc, crun). A runtime that runs createContainer hooks
/// elsewhere (Kata's runtime-rs in the VMM's namespaces, gVisor in its gofer) would otherwise have
/// the probe run image code in host namespaces: there it is `None`, and the probe is skipped.
fn probe_pid(args: &HookArgs, stage: Stage, state_pid: Option<i32>, parent: i32) -> Option<i32> {
    match stage {
        Stage::CreateContainer if state_pid == Some(parent) => {
            std::fs::read_link(args.proc_root.join("self"))
                .ok()
                .and_then(|p| p.to_str()?.parse().ok())
        }
        Stage::CreateContainer => None,
        Stage::Prestart | Stage::CreateRuntime => state_pid,
    }
}

/// The stage the hook really runs at. The state's pid is the hook's own parent only where runc
/// init runs it, at createContainer (`s.Pid = unix.Getpid()` in runc init: 1 in a pid namespace of
/// the container's own, the host pid where the container shares one); at prestart and
/// createRuntime the hook's parent is `runc create` and the pid is the container's init. An entry
/// registered at createContainer without `--stage createContainer` would otherwise read the pid as
/// a host pid and the probe would join whatever process it names.
fn effective_stage(declared: Stage, state_pid: Option<i32>, parent: i32) -> Stage {
    if state_pid == Some(1) || state_pid == Some(parent) {
        Stage::CreateContainer
    } else {
        declared
    }
}

/// Exit code on a passed deadline and the message printed then; set before the timer is armed,
/// read only by the signal handler.
static TIMEOUT_EXIT: AtomicI32 = AtomicI32::new(0);
static TIMEOUT_MSG: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_alarm(_: libc::c_int) {
    // Only async-signal-safe calls: write(2) and _exit(2).
    let msg = TIMEOUT_MSG.load(Ordering::SeqCst);
    if !msg.is_null() {
        // SAFETY: the pointer comes from Box::leak and is never freed.
        let m = unsafe { &*msg };
        unsafe { libc::write(2, m.as_ptr().cast(), m.len()) };
    }
    unsafe { libc::_exit(TIMEOUT_EXIT.load(Ordering::SeqCst)) };
}

/// Arm (or re-arm) the whole-hook deadline. A start never waits on us longer than this: at the
/// deadline the process prints why and exits as `on_timeout` says.
fn arm_deadline(ms: u64, on_timeout: OnFailure, container: &str) {
    let (code, msg) = match on_timeout {
        OnFailure::Allow => (
            0,
            format!(
                "cuda-preflight: deadline of {ms} ms passed for container {container}; allowed (on_timeout = allow)\n"
            ),
        ),
        OnFailure::Block => (
            1,
            format!(
                "cuda-preflight: blocked container {container}: the hook's deadline of {ms} ms passed (on_timeout = block)\n"
            ),
        ),
    };
    set_timer(ms, code, msg);
}

/// Arm the one real-time timer: at `ms` the handler prints `msg` and exits with `code`; `ms` 0
/// disarms it.
pub(crate) fn set_timer(ms: u64, code: i32, msg: String) {
    TIMEOUT_EXIT.store(code, Ordering::SeqCst);
    let old = TIMEOUT_MSG.swap(Box::leak(Box::new(msg.into_bytes())), Ordering::SeqCst);
    let _ = old; // leaked on purpose: the handler may still hold it
    let tv = libc::timeval {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: tv,
    };
    // SAFETY: installing a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGALRM, on_alarm as *const () as libc::sighandler_t);
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}

/// Run the hook with a panic treated as the hook's own error: it follows `on_error` instead of
/// taking down the start with it.
pub fn run_guarded(args: &HookArgs, stdin: impl Read + std::panic::UnwindSafe) -> i32 {
    match std::panic::catch_unwind(|| run(args, stdin)) {
        Ok(code) => code,
        Err(_) => match args
            .settings
            .load()
            .map(|c| c.on_error)
            .unwrap_or(OnFailure::Allow)
        {
            OnFailure::Allow => 0,
            OnFailure::Block => 1,
        },
    }
}

/// Run the hook; returns the process exit code.
pub fn run(args: &HookArgs, stdin: impl Read) -> i32 {
    let started = Instant::now();
    let defaults = Config::default();
    arm_deadline(defaults.deadline_ms, defaults.on_timeout, "?");
    let state = match state::read_stdin(stdin) {
        Ok(s) => s,
        Err(e) => return own_error(args, None, None, &e.to_string(), started),
    };
    let bundle = match Bundle::load(&state.bundle) {
        Ok(b) => b,
        Err(e) => return own_error(args, Some(&state), None, &e.to_string(), started),
    };
    let request = container::detect(&bundle.spec, Some(&state.annotations));
    if request == GpuRequest::None {
        return 0;
    }
    let config = match args.settings.load() {
        Ok(c) => c,
        Err(e) => return own_error(args, Some(&state), Some(&request), &e.to_string(), started),
    };
    arm_deadline(config.deadline_ms, config.on_timeout, &state.id);
    if request.wants_gpu()
        && let Err(e) = bundle.require_rootfs()
    {
        return own_error(args, Some(&state), Some(&request), &e.to_string(), started);
    }
    let profile = args
        .host_profile
        .as_deref()
        .or(config.host_profile.as_deref());
    let host = match profile {
        Some(_) => match host_facts(profile, &config.host_root) {
            Ok(h) => h,
            Err(e) => {
                return own_error(args, Some(&state), Some(&request), &e.to_string(), started);
            }
        },
        None => crate::commands::host_facts_cached(
            &config.host_root,
            &config.state_dir,
            Duration::from_secs(config.host_facts_ttl_s),
        ),
    };
    // What NVIDIA's CDI hooks will still do after this hook: on a CDI path, before them,
    // libcuda.so.1 and the loader cache entry do not exist yet.
    let parent = std::os::unix::process::parent_id() as i32;
    let stage = effective_stage(args.stage, state.pid, parent);
    let pending = start_path::nvidia_cdi_hooks(&bundle.spec)
        .pending_after(stage, start_path::our_index(&bundle.spec, stage));
    // At createContainer runc runs us inside the container's mount namespace before pivot_root:
    // the rootfs path shows what the container will see, and the state's pid is not a host pid
    // (runc libcontainer/rootfs_linux.go sets it to getpid() there), so no /proc/<pid> is read.
    let pid = match stage {
        Stage::CreateContainer => None,
        Stage::Prestart | Stage::CreateRuntime => state.pid,
    };
    let mut facts = container_facts(
        &bundle,
        request,
        pending,
        pid,
        &args.proc_root,
        &config.host_root,
        Some(&state.annotations),
        crate::commands::headroom_policy(&config),
        &crate::facts::gpu_code::binaries::WalkSettings::from_config(&config),
    );
    if stage == Stage::CreateContainer && matches!(facts.request, GpuRequest::InjectedByHook { .. })
    {
        // The legacy hook's nodes are in the rootfs we see from inside the mount namespace, and
        // our own cgroup is the container's.
        facts.devices = container::view_from_root(&bundle.rootfs)
            .map(|mut v| {
                if let Some((rules, src)) =
                    container::cgroup_v1_devices_list_of(&args.proc_root.join("self/cgroup"))
                {
                    v.cgroup = Some(rules);
                    v.cgroup_source = Some(src);
                }
                v
            })
            .map_err(|e| {
                format!(
                    "could not read the container's /dev under {}: {e}",
                    bundle.rootfs.display()
                )
            });
    }
    let mut findings = run_rules(&facts, &host);
    crate::rules::versions::requirements::on_path(
        &mut findings,
        &facts.start_path,
        config.enforce_requirements,
    );
    let mut probe_result = None;
    let deferred = facts.request.wants_gpu()
        && config.probe != ProbePolicy::Never
        && facts.pending_hooks.makes_libcuda_loadable();
    if deferred {
        findings.push(crate::rules::start_path::probe_deferred(
            stage,
            &facts.pending_hooks,
        ));
    }
    let probe_pid = probe_pid(args, stage, state.pid, parent);
    if stage == Stage::CreateContainer
        && probe_pid.is_none()
        && facts.request.wants_gpu()
        && config.probe != ProbePolicy::Never
        && !deferred
    {
        findings.push(crate::finding::Finding::skipped(
            "probe",
            "the hook runs at createContainer but not as a child of the container's init (the runtime runs createContainer hooks outside the container): image code is not run here",
        ));
    }
    if let Some(pid) = probe_pid
        && !deferred
        && facts.request.wants_gpu()
        && config.probe != ProbePolicy::Never
        && !findings
            .iter()
            .any(|f| verdict::effective_severity(&config, f) == Severity::Block)
    {
        // The static rules already explain a block; the probe is for what only the driver knows.
        // Judged after the severity table: a static block the host downgraded still gets the
        // probe, and a warning raised to a block does not need it.
        // It must end well inside the hook's own deadline.
        let left = Duration::from_millis(config.deadline_ms).saturating_sub(
            started.elapsed() + Duration::from_millis(200) + crate::facts::probe::REAP_GRACE,
        );
        let deadline = Duration::from_millis(config.probe_deadline_ms).min(left);
        let ctx = crate::commands::ProbeContext {
            host: &host,
            host_root: &config.host_root,
            proc_root: &args.proc_root,
            cache_dir: (config.probe == ProbePolicy::Auto)
                .then(|| config.state_dir.join("probe-cache")),
            cache_ttl: Duration::from_secs(config.probe_cache_ttl_s),
            in_container: stage == Stage::CreateContainer,
        };
        match crate::commands::probe_container(&bundle, &facts, pid, &ctx, deadline) {
            Ok((r, footprint)) => {
                let devices = facts.devices.as_ref().ok();
                // The probe applies the container's seccomp filter itself (or does not run).
                findings.extend(crate::rules::probe::probe_findings(
                    &r,
                    devices,
                    false,
                    footprint.as_deref(),
                ));
                probe_result = Some(r);
            }
            Err(f) => findings.push(f),
        }
    }
    let annotation = state.annotations.get(MODE_ANNOTATION).or_else(|| {
        bundle
            .spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(MODE_ANNOTATION))
    });
    let (mode, note) = verdict::effective_mode(&config, annotation.map(String::as_str));
    findings.extend(note);
    let v = verdict::decide(&config, mode, findings);
    // The verdict is decided: from here on it is the exit code whatever happens. The message
    // comes first (runc shows the hook's stderr as one line, its start must be the headline),
    // then recording runs under its own short budget, at whose end the process exits with the
    // verdict's code — a held metrics lock, a stalled log daemon or a slow disk can delay the start
    // by at most that budget and never turn a block into `on_timeout` (issue 22).
    let code = match v.verdict {
        Decision::Block => {
            eprint!("{}", output::message::render(&state.id, &v, true));
            1
        }
        Decision::Warn if v.mode != crate::config::Mode::Audit => {
            eprint!("{}", output::message::render(&state.id, &v, true));
            0
        }
        _ => 0,
    };
    arm_recording_budget(code, v.verdict.as_str(), &state.id, &config, started);
    let report = output::report::Report {
        container_id: &state.id,
        time: now_secs(),
        verdict: v.verdict.as_str(),
        mode: mode_str(v.mode),
        request: &facts.request,
        bundle: &bundle.dir,
        findings: &v.findings,
        error: None,
        probe: probe_result.as_ref(),
        binaries: facts.binaries.as_ref(),
        load: facts.load.as_ref(),
        toolchains: facts.toolchains.as_ref(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    let written = output::report::write(&config.state_dir, &report, config.max_reports);
    let ids: Vec<&str> = v
        .findings
        .iter()
        .filter(|f| f.severity != crate::finding::Severity::Info)
        .map(|f| f.id.as_str())
        .collect();
    let mut line = format!(
        "cuda-preflight: container={} verdict={} mode={} findings={} ms={:.1}",
        state.id,
        v.verdict.as_str(),
        mode_str(v.mode),
        if ids.is_empty() {
            "-".to_string()
        } else {
            ids.join(",")
        },
        report.duration_ms
    );
    if let Err(e) = &written {
        line.push_str(&format!(
            " report-error=\"{}: {e}\"",
            config.state_dir.display()
        ));
    }
    if let Some(dir) = &config.metrics_dir {
        let sample = output::metrics::Sample {
            verdict: v.verdict.as_str(),
            findings: &v.findings,
            probe: probe_result.as_ref(),
            seconds: report.duration_ms / 1000.0,
        };
        if let Err(e) = output::metrics::record(&config.state_dir, dir, &sample) {
            line.push_str(&format!(" metrics-error=\"{e}\""));
        }
    }
    output::log::line(&config.host_root, &config.log_socket, &line);
    // The process exits next: freeing the image's inventories (megabytes in a framework image,
    // each a mapping of its own) only delays the start.
    std::mem::forget(facts);
    code
}

/// What recording (report, metrics, log line) may add to a start once the verdict is decided.
pub const RECORDING_BUDGET_MS: u64 = 2000;

/// Re-arm the timer for recording: at its end the process exits with `code`, the verdict's, and
/// says on stderr that recording was cut. Never longer than [`RECORDING_BUDGET_MS`], never past
/// the hook's deadline by more than that.
fn arm_recording_budget(code: i32, verdict: &str, id: &str, config: &Config, started: Instant) {
    let left = config
        .deadline_ms
        .saturating_sub(started.elapsed().as_millis() as u64);
    let ms = RECORDING_BUDGET_MS.min(left.max(100));
    let msg = format!(
        "cuda-preflight: recording for container {id} passed its {ms} ms budget (report, metrics or log not written); verdict {verdict} stands\n"
    );
    set_timer(ms, code, msg);
}

fn mode_str(m: crate::config::Mode) -> &'static str {
    match m {
        crate::config::Mode::Enforce => "enforce",
        crate::config::Mode::Warn => "warn",
        crate::config::Mode::Audit => "audit",
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The hook itself failed (bad state, unreadable bundle, bad config). Record it where we can and
/// follow `on_error`: by default the start goes on.
fn own_error(
    args: &HookArgs,
    state: Option<&HookState>,
    request: Option<&GpuRequest>,
    err: &str,
    started: Instant,
) -> i32 {
    // A broken config file cannot tell us its own on_error: then the documented default holds.
    let config = args.settings.load_or_defaults();
    let id = state.map(|s| s.id.as_str()).unwrap_or("?");
    let decision = match config.on_error {
        OnFailure::Allow => Decision::Allow,
        OnFailure::Block => Decision::Block,
    };
    // Decided: the message first, then recording under its own budget (as for a verdict).
    let code = match config.on_error {
        OnFailure::Allow => {
            eprintln!("cuda-preflight: error, start allowed (on_error = allow): {err}");
            0
        }
        OnFailure::Block => {
            eprintln!(
                "cuda-preflight: blocked container {id}: the hook failed (on_error = block): {err}"
            );
            1
        }
    };
    arm_recording_budget(code, decision.as_str(), id, &config, started);
    let none = GpuRequest::None;
    let finding = crate::finding::Finding::new(
        "hook-error",
        crate::finding::Severity::Warn,
        None,
        err,
        "Fix the input named in the evidence; until then this container was not checked.",
    );
    let report = output::report::Report {
        container_id: id,
        time: now_secs(),
        verdict: decision.as_str(),
        mode: mode_str(config.mode),
        request: request.unwrap_or(&none),
        bundle: state.map(|s| s.bundle.as_path()).unwrap_or(Path::new("")),
        findings: std::slice::from_ref(&finding),
        error: Some(err),
        probe: None,
        binaries: None,
        load: None,
        toolchains: None,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    if state.is_some() {
        let _ = output::report::write(&config.state_dir, &report, config.max_reports);
        // Counted as a start with the warning `hook-error`: alerts on it find broken hooks.
        if let Some(dir) = &config.metrics_dir {
            let _ = output::metrics::record(
                &config.state_dir,
                dir,
                &output::metrics::Sample {
                    verdict: decision.as_str(),
                    findings: std::slice::from_ref(&finding),
                    probe: None,
                    seconds: report.duration_ms / 1000.0,
                },
            );
        }
    }
    output::log::line(
        &config.host_root,
        &config.log_socket,
        &format!(
            "cuda-preflight: container={id} verdict={} hook-error=\"{err}\"",
            decision.as_str()
        ),
    );
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_pid_of_1_is_read_as_the_create_container_stage() {
        // (declared, state pid, effective)
        let cases = [
            (Stage::CreateRuntime, Some(4242), Stage::CreateRuntime),
            (Stage::Prestart, Some(4242), Stage::Prestart),
            (Stage::CreateContainer, Some(1), Stage::CreateContainer),
            // A createContainer entry whose args lack --stage: runc's pid 1 gives it away.
            (Stage::CreateRuntime, Some(1), Stage::CreateContainer),
            (Stage::Prestart, Some(1), Stage::CreateContainer),
            (Stage::CreateRuntime, None, Stage::CreateRuntime),
        ];
        for (declared, pid, want) in cases {
            assert_eq!(
                effective_stage(declared, pid, 777),
                want,
                "{declared:?} {pid:?}"
            );
        }
        // Sharing the host's pid namespace, runc init's host pid is the hook's parent.
        assert_eq!(
            effective_stage(Stage::CreateRuntime, Some(777), 777),
            Stage::CreateContainer
        );
    }

    #[test]
    fn at_create_container_the_probe_runs_only_as_a_child_of_the_containers_init() {
        let args = HookArgs {
            stage: Stage::CreateContainer,
            proc_root: "/proc".into(),
            ..HookArgs::default()
        };
        let me = std::process::id() as i32;
        // runc: the state's pid is the hook's parent.
        assert_eq!(
            probe_pid(&args, Stage::CreateContainer, Some(1), 1),
            Some(me)
        );
        // Run from somewhere else (a VMM's namespaces, a gofer): no probe.
        assert_eq!(
            probe_pid(&args, Stage::CreateContainer, Some(4242), 1),
            None
        );
        assert_eq!(
            probe_pid(&args, Stage::CreateRuntime, Some(4242), 1),
            Some(4242)
        );
    }
}
