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

use crate::commands::SettingsArgs;
use crate::config::{Config, OnFailure};
use crate::facts::container::{self, GpuRequest};
use crate::facts::start_path::Stage;
use crate::input::bundle::Bundle;
use crate::input::state::{self, HookState};
use crate::output;
use crate::pipeline::{self, Input, Judge, Scope, Where, report};
use crate::verdict::{self, Decision};

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
/// The verdict's exit code once it is decided (-1 before): a panic while recording it must not
/// turn it into `on_error`'s answer or overwrite its report.
static DECIDED: AtomicI32 = AtomicI32::new(-1);
static TIMEOUT_MSG: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

#[allow(unsafe_code)]
extern "C" fn on_alarm(_: libc::c_int) {
    // Only async-signal-safe calls: write(2) and _exit(2).
    let msg = TIMEOUT_MSG.load(Ordering::SeqCst);
    if !msg.is_null() {
        // SAFETY: the pointer comes from Box::leak and is never freed.
        let m = unsafe { &*msg };
        // SAFETY: a buffer that lives as long as the program, and its length.
        unsafe { libc::write(2, m.as_ptr().cast(), m.len()) };
    }
    // SAFETY: _exit(2) ends the process at once; nothing after it runs.
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
#[allow(unsafe_code)]
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

/// Run the hook with a panic treated as the hook's own error: like a missing bundle, it follows
/// `on_error`, is said on stderr in one line and is recorded (report, metrics, log line) as
/// `hook-error`, instead of taking down the start with a backtrace nobody reads.
pub fn run_guarded(args: &HookArgs, stdin: impl Read + std::panic::UnwindSafe) -> i32 {
    guarded(args, move || run(args, stdin))
}

thread_local! {
    /// The container the hook is judging, once known: a panic is recorded in its report.
    static IN_FLIGHT: std::cell::RefCell<(Option<HookState>, Option<GpuRequest>)> =
        const { std::cell::RefCell::new((None, None)) };
}

fn remember(state: Option<&HookState>, request: Option<&GpuRequest>) {
    IN_FLIGHT.with(|f| *f.borrow_mut() = (state.cloned(), request.cloned()));
}

/// The panic boundary of the hook: `body` runs the hook; a panic in it (on this thread) goes to
/// [`own_error`] with what panicked and where.
fn guarded(args: &HookArgs, body: impl FnOnce() -> i32 + std::panic::UnwindSafe) -> i32 {
    use std::sync::{Arc, Mutex};
    let started = Instant::now();
    remember(None, None);
    DECIDED.store(-1, Ordering::SeqCst);
    let this = std::thread::current().id();
    let caught: Arc<Mutex<Option<String>>> = Arc::default();
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    {
        let (caught, previous) = (caught.clone(), previous.clone());
        // The default hook's multi-line "thread 'main' panicked" would come before our one line,
        // and runc shows a failing hook's stderr as one line: say it once, ourselves. Other
        // threads' panics are theirs to handle and keep the default.
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() != this {
                return previous(info);
            }
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if let Ok(mut c) = caught.lock() {
                *c = Some(format!("the hook panicked{at}: {what}"));
            }
        }));
    }
    let result = std::panic::catch_unwind(body);
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    match result {
        Ok(code) => code,
        Err(_) => {
            let err = caught
                .lock()
                .ok()
                .and_then(|mut c| c.take())
                .unwrap_or_else(|| "the hook panicked".into());
            let err = crate::output::printable(&err);
            let decided = DECIDED.load(Ordering::SeqCst);
            if decided >= 0 {
                // The verdict was decided and said before recording panicked: it stands.
                let line = format!(
                    "cuda-preflight: recording failed after the verdict ({err}); the verdict stands\n"
                );
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                return decided;
            }
            let (state, request) = IN_FLIGHT.with(|f| f.take());
            own_error(args, state.as_ref(), request.as_ref(), &err, started)
        }
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
    remember(Some(&state), None);
    let bundle = match Bundle::load(&state.bundle) {
        Ok(b) => b,
        Err(e) => return own_error(args, Some(&state), None, &e.to_string(), started),
    };
    let request = container::detect(&bundle.spec, Some(&state.annotations));
    if request == GpuRequest::None {
        return 0;
    }
    remember(Some(&state), Some(&request));
    let mut phases = output::report::Phases::since(started);
    phases.mark("input");
    let config = match args.settings.load() {
        Ok(c) => c,
        Err(e) => return own_error(args, Some(&state), Some(&request), &e.to_string(), started),
    };
    phases.mark("config");
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
    let host = match pipeline::host::at_start(profile, &config) {
        Ok(h) => h,
        Err(e) => return own_error(args, Some(&state), Some(&request), &e.to_string(), started),
    };
    phases.mark("host");
    let parent = std::os::unix::process::parent_id() as i32;
    let stage = effective_stage(args.stage, state.pid, parent);
    let facts = pipeline::gather(Input {
        at: Where::Hook {
            stage,
            pid: state.pid,
            proc_root: &args.proc_root,
        },
        state_annotations: Some(&state.annotations),
        ..Input::new(&bundle, request, &config)
    });
    let judged = pipeline::judge(
        &bundle,
        &facts,
        Judge {
            config: &config,
            host: &host,
            scope: Scope::All,
            annotations: &[Some(&state.annotations), bundle.spec.annotations().as_ref()],
            probe: Some(pipeline::probe::Probe {
                stage,
                pid: probe_pid(args, stage, state.pid, parent),
                proc_root: &args.proc_root,
                started,
            }),
            input_findings: &[],
        },
    );
    phases.add(&facts.phases);
    phases.add(&judged.phases);
    let v = judged.verdict;
    let probe_result = judged.probe.result();
    // The verdict is decided: from here on it is the exit code whatever happens. The message
    // comes first (runc shows the hook's stderr as one line, its start must be the headline),
    // then recording runs under its own short budget, at whose end the process exits with the
    // verdict's code — a held metrics lock, a stalled log daemon or a slow disk can delay the start
    // by at most that budget and never turn a block into `on_timeout` (issue 22).
    // Written, not `eprint!`, which panics where stderr is a pipe nobody reads: the verdict stands.
    let say = |v: &verdict::Verdict| {
        let text = output::message::render(&state.id, v, true);
        let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    };
    let code = match v.verdict {
        Decision::Block => {
            say(&v);
            1
        }
        Decision::Warn if v.mode != crate::config::Mode::Audit => {
            say(&v);
            0
        }
        _ => 0,
    };
    arm_recording_budget(code, v.verdict.as_str(), &state.id, &config, started);
    let start = report::Start {
        id: &state.id,
        bundle: &bundle.dir,
        request: &facts.request,
        started,
    };
    let report = report::judged(&start, &v, Some(&facts), probe_result, Some(&phases.spans));
    let written = output::report::write(&config.state_dir, &report, config.max_reports);
    let mut line = format!(
        "cuda-preflight: container={} verdict={} mode={} findings={} ms={:.1}",
        state.id,
        v.verdict.as_str(),
        report::mode_str(v.mode),
        report::judging_ids(&v.findings),
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
            probe: probe_result,
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
    DECIDED.store(code, Ordering::SeqCst);
    let left = config
        .deadline_ms
        .saturating_sub(started.elapsed().as_millis() as u64);
    let ms = RECORDING_BUDGET_MS.min(left.max(100));
    let msg = format!(
        "cuda-preflight: recording for container {id} passed its {ms} ms budget (report, metrics or log not written); verdict {verdict} stands\n"
    );
    set_timer(ms, code, msg);
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
    let decision = verdict::on_own_error(&config);
    // Decided: the message first, then recording under its own budget (as for a verdict).
    // Written, not `eprintln!`: that panics where stderr is a pipe nobody reads, and this may run
    // after a panic, outside the boundary.
    let (code, line) = match decision {
        Decision::Block => (
            1,
            format!(
                "cuda-preflight: blocked container {id}: the hook failed (on_error = block): {err}\n"
            ),
        ),
        _ => (
            0,
            format!("cuda-preflight: error, start allowed (on_error = allow): {err}\n"),
        ),
    };
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    arm_recording_budget(code, decision.as_str(), id, &config, started);
    let none = GpuRequest::None;
    let finding = verdict::hook_error(err);
    let start = report::Start {
        id,
        bundle: state.map(|s| s.bundle.as_path()).unwrap_or(Path::new("")),
        request: request.unwrap_or(&none),
        started,
    };
    let report = report::own_error(&start, decision, config.mode, &finding, err);
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

    /// The panic boundary: a panic in the hook is its own error — exit per `on_error`, and the
    /// report of the container it was judging says what panicked and where.
    #[test]
    fn a_panic_is_recorded_as_the_hooks_own_error() {
        for (on_error, want, verdict) in [("allow", 0, "allow"), ("block", 1, "block")] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("c.toml");
            std::fs::write(&cfg, format!("on_error = \"{on_error}\"\n")).unwrap();
            let state_dir = dir.path().join("state");
            let args = HookArgs {
                settings: SettingsArgs {
                    config: Some(cfg),
                    state_dir: Some(state_dir.clone()),
                    host_root: None,
                },
                ..Default::default()
            };
            let state = state::parse(
                br#"{"ociVersion":"1.0.2","id":"c-panic","status":"creating","pid":1,"bundle":"/b"}"#,
            )
            .unwrap();
            let code = guarded(&args, || {
                remember(Some(&state), None);
                panic!("deliberate, {}", "for the test")
            });
            // own_error armed the recording budget's timer, whose end exits the process.
            set_timer(0, 0, String::new());
            assert_eq!(code, want, "{on_error}");
            let report: serde_json::Value = serde_json::from_slice(
                &std::fs::read(state_dir.join("reports/c-panic.json")).expect("a report"),
            )
            .unwrap();
            let err = report["error"].as_str().unwrap();
            assert!(
                err.starts_with("the hook panicked at src/commands/hook.rs:")
                    && err.ends_with(": deliberate, for the test"),
                "{err}"
            );
            assert_eq!(report["verdict"], verdict);
            assert_eq!(report["findings"][0]["id"], "hook-error");
        }
        // A panic after the verdict was decided (while recording it): the verdict stands, and
        // no hook-error report replaces the verdict's.
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let args = HookArgs {
            settings: SettingsArgs {
                config: None,
                state_dir: Some(state_dir.clone()),
                host_root: None,
            },
            ..Default::default()
        };
        let state = state::parse(
            br#"{"ociVersion":"1.0.2","id":"c-late","status":"creating","pid":1,"bundle":"/b"}"#,
        )
        .unwrap();
        let code = guarded(&args, || {
            remember(Some(&state), None);
            arm_recording_budget(1, "block", "c-late", &Config::default(), Instant::now());
            panic!("while recording")
        });
        set_timer(0, 0, String::new());
        assert_eq!(code, 1);
        assert!(!state_dir.join("reports/c-late.json").exists());
        // No panic: the body's code, nothing recorded.
        let dir = tempfile::tempdir().unwrap();
        let args = HookArgs {
            settings: SettingsArgs {
                config: None,
                state_dir: Some(dir.path().to_path_buf()),
                host_root: None,
            },
            ..Default::default()
        };
        assert_eq!(guarded(&args, || 1), 1);
        assert!(!dir.path().join("reports").exists());
    }

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
