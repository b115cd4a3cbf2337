//! `cuda-preflight nri`: a long-running NRI plugin (containerd ≥ 1.7 with NRI on, the default in
//! 2.x; CRI-O ≥ 1.26). At CreateContainer — after the runtime applied CDI, before anything runs —
//! a GPU container is judged by the same facts and rules as `check --bundle` on the spec NRI hands
//! over (no rootfs, no pid yet); a block fails the creation with the hook's message, anything else
//! gets `cuda-preflight hook --stage createContainer` appended as a createContainer hook (after
//! NVIDIA's CDI hooks, so the probe and the image rules run where their facts exist). A container
//! that asks for no GPU gets an empty answer at once.
//!
//! Its life: reconnects when the runtime restarts or drops it, takes the runtime's container list
//! at every registration (Synchronize), and serves `/healthz` and `/metrics` on a local port.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::commands::{SettingsArgs, container_facts, host_facts, run_rules};
use crate::config::{Config, OnFailure};
use crate::facts::container::{self, GpuRequest};
use crate::input::bundle::Bundle;
use crate::nri::{self, PluginState, api};
use crate::output;
use crate::verdict::{self, Decision, MODE_ANNOTATION};

pub const DEFAULT_SOCKET: &str = "/var/run/nri/nri.sock";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9466";
/// Plugins are called in ascending index order: late, so devices other plugins add are seen.
pub const PLUGIN_INDEX: &str = "90";
pub const PLUGIN_NAME: &str = "cuda-preflight";
/// NRI drops a plugin that takes longer than its request timeout (2 s by default) and creates
/// the container anyway; the judgement gets this much of it.
pub const JUDGE_BUDGET: Duration = Duration::from_millis(1200);
/// The spec's `root.path` as the plugin sees it: a name, not a directory (none exists before
/// the task starts), which the image facts' note quotes.
const NO_ROOTFS: &str = "(not mounted at NRI CreateContainer)";
/// Containers judged at one Synchronize, at most: the runtime waits for the answer.
const SYNC_JUDGE_MAX: usize = 256;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct NriArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// The runtime's NRI socket [config: nri_socket; default /var/run/nri/nri.sock]
    #[arg(long, value_name = "PATH")]
    pub nri_socket: Option<PathBuf>,
    /// Where /healthz and /metrics are served; "off" serves nothing [config: nri_listen;
    /// default 127.0.0.1:9466]
    #[arg(long, value_name = "ADDR")]
    pub nri_listen: Option<String>,
    /// The config file the added hook is given, as the host sees it [config: nri_hook_config;
    /// default: this command's --config]
    #[arg(long, value_name = "FILE")]
    pub nri_hook_config: Option<PathBuf>,
    /// Host profile JSON instead of asking the host [config: host_profile]
    #[arg(long, value_name = "FILE")]
    pub host_profile: Option<PathBuf>,
}

/// The plugin's counters, served as Prometheus metrics.
#[derive(Default)]
pub struct Stats {
    pub registered: AtomicBool,
    /// The runtime's container list of this registration has been taken (Synchronize): from
    /// then on every creation comes to the plugin.
    pub synchronized: AtomicBool,
    pub registrations: AtomicU64,
    pub connect_failures: AtomicU64,
    /// CreateContainer answers by outcome: `not-gpu`, `deferred` (left to the hook), `allow`,
    /// `warn`, `block`, `error`, `timeout`.
    pub creates: Mutex<BTreeMap<&'static str, u64>>,
    /// Time spent judging GPU containers (seconds, sum and count).
    pub judge_seconds: Mutex<(f64, u64)>,
    pub synced_containers: AtomicU64,
    pub synced_gpu_containers: AtomicU64,
    /// GPU containers found at Synchronize without our hook: created while the plugin was away.
    pub synced_unchecked: AtomicU64,
    pub runtime: Mutex<String>,
}

impl Stats {
    /// Registered and synchronized: what `/healthz` and the `registered` gauge say.
    pub fn ready(&self) -> bool {
        self.registered.load(Ordering::SeqCst) && self.synchronized.load(Ordering::SeqCst)
    }

    fn count(&self, outcome: &'static str) {
        let mut m = self.creates.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(outcome).or_insert(0) += 1;
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let b = |v: bool| u8::from(v);
        let _ = writeln!(
            s,
            "# HELP cuda_preflight_nri_registered 1 while the plugin is registered with the runtime and synchronized.\n\
             # TYPE cuda_preflight_nri_registered gauge\ncuda_preflight_nri_registered {}",
            b(self.ready())
        );
        let _ = writeln!(
            s,
            "# HELP cuda_preflight_nri_registrations_total Registrations with the runtime (1 + reconnections).\n\
             # TYPE cuda_preflight_nri_registrations_total counter\ncuda_preflight_nri_registrations_total {}",
            self.registrations.load(Ordering::SeqCst)
        );
        let _ = writeln!(
            s,
            "# HELP cuda_preflight_nri_connect_failures_total Failed attempts to connect or register.\n\
             # TYPE cuda_preflight_nri_connect_failures_total counter\ncuda_preflight_nri_connect_failures_total {}",
            self.connect_failures.load(Ordering::SeqCst)
        );
        let _ = writeln!(
            s,
            "# HELP cuda_preflight_nri_create_container_total CreateContainer requests by outcome.\n\
             # TYPE cuda_preflight_nri_create_container_total counter"
        );
        let creates = self.creates.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in creates.iter() {
            let _ = writeln!(
                s,
                "cuda_preflight_nri_create_container_total{{outcome=\"{k}\"}} {v}"
            );
        }
        drop(creates);
        let (sum, count) = *self.judge_seconds.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            s,
            "# HELP cuda_preflight_nri_judge_seconds Time spent judging GPU containers at CreateContainer.\n\
             # TYPE cuda_preflight_nri_judge_seconds summary\n\
             cuda_preflight_nri_judge_seconds_sum {sum}\ncuda_preflight_nri_judge_seconds_count {count}"
        );
        let _ = writeln!(
            s,
            "# HELP cuda_preflight_nri_synchronized_containers Containers the runtime listed at the last registration.\n\
             # TYPE cuda_preflight_nri_synchronized_containers gauge\n\
             cuda_preflight_nri_synchronized_containers{{gpu=\"false\"}} {}\n\
             cuda_preflight_nri_synchronized_containers{{gpu=\"true\"}} {}",
            self.synced_containers.load(Ordering::SeqCst)
                - self
                    .synced_gpu_containers
                    .load(Ordering::SeqCst)
                    .min(self.synced_containers.load(Ordering::SeqCst)),
            self.synced_gpu_containers.load(Ordering::SeqCst)
        );
        let _ = writeln!(
            s,
            "# HELP cuda_preflight_nri_unchecked_gpu_containers GPU containers at the last registration that were created without the hook (while the plugin was away).\n\
             # TYPE cuda_preflight_nri_unchecked_gpu_containers gauge\ncuda_preflight_nri_unchecked_gpu_containers {}",
            self.synced_unchecked.load(Ordering::SeqCst)
        );
        s
    }
}

/// The plugin's judgement of a container.
pub struct Judge {
    config: Config,
    host_profile: Option<PathBuf>,
    hook_binary: PathBuf,
    hook_config: PathBuf,
    stats: Arc<Stats>,
}

impl Judge {
    pub fn new(args: &NriArgs, config: Config, stats: Arc<Stats>) -> anyhow::Result<Judge> {
        let hook_binary = match &config.hook_binary {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let hook_config = args
            .nri_hook_config
            .clone()
            .or(config.nri_hook_config.clone())
            .or(args.settings.config.clone())
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
        Ok(Judge {
            host_profile: args.host_profile.clone().or(config.host_profile.clone()),
            config,
            hook_binary,
            hook_config,
            stats,
        })
    }

    /// The createContainer hook added to every container that may get a GPU.
    pub fn hook_adjustment(&self) -> api::ContainerAdjustment {
        let bin = self.hook_binary.display().to_string();
        let hook = api::Hook {
            path: bin.clone(),
            args: vec![
                bin,
                "hook".into(),
                "--stage".into(),
                "createContainer".into(),
                "--config".into(),
                self.hook_config.display().to_string(),
            ],
            ..Default::default()
        };
        api::ContainerAdjustment {
            hooks: protobuf::MessageField::some(api::Hooks {
                create_container: vec![hook],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Whether a container's spec already carries our hook (it was created through us).
    fn has_our_hook(&self, c: &api::Container) -> bool {
        c.hooks.as_ref().is_some_and(|h| {
            h.create_container.iter().any(|h| {
                h.args.iter().any(|a| a == "hook") && Path::new(&h.path) == self.hook_binary
            })
        })
    }

    /// Judge a GPU container from its spec: the verdict and the message the hook would print.
    /// The report is written for a block, or always with `record`.
    pub fn judge(
        &self,
        pod: &api::PodSandbox,
        c: &api::Container,
        spec: oci_spec::runtime::Spec,
        request: GpuRequest,
        annotations: &std::collections::HashMap<String, String>,
        record: bool,
    ) -> anyhow::Result<(verdict::Verdict, String)> {
        let started = Instant::now();
        let config = &self.config;
        let host = match &self.host_profile {
            Some(p) => host_facts(Some(p), &config.host_root)?,
            None => crate::commands::host_facts_cached(
                &config.host_root,
                &config.state_dir,
                Duration::from_secs(config.host_facts_ttl_s),
            ),
        };
        // No rootfs exists yet: the image rules get the environment only, the walk does not run
        // (the hook reads the image when the container starts).
        let name = PathBuf::from(format!("nri:{}/{}/{}", pod.namespace, pod.name, c.name));
        let bundle = Bundle {
            dir: name.clone(),
            config_path: name,
            spec,
            rootfs: PathBuf::from(NO_ROOTFS),
        };
        // At creation nothing has run yet: every NVIDIA CDI hook containerd put in is to come.
        let pending = crate::facts::start_path::nvidia_cdi_hooks(&bundle.spec);
        let facts = container_facts(
            &bundle,
            request,
            pending,
            None,
            Path::new("/proc"),
            &config.host_root,
            Some(annotations),
            crate::commands::headroom_policy(config),
            &crate::facts::gpu_code::binaries::WalkSettings::from_config(config),
        );
        let mut findings = run_rules(&facts, &host);
        // Without the rootfs the image's CUDA is only its CUDA_VERSION: its runtime libraries
        // and a forward-compat package may say otherwise, so nothing is judged from it here.
        findings.retain(|f| {
            !crate::rules::versions::driver_compat::FINDING_IDS.contains(&f.id.as_str())
        });
        findings.push(crate::finding::Finding::skipped(
            "cuda-version",
            "at creation the image is not mounted: its CUDA libraries and forward-compat package are judged by the hook when the container starts",
        ));
        let (mode, note) = verdict::effective_mode(
            config,
            c.annotations.get(MODE_ANNOTATION).map(String::as_str),
        );
        findings.extend(note);
        let v = verdict::decide(config, mode, findings);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let report = output::report::Report {
            container_id: &c.id,
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            verdict: v.verdict.as_str(),
            mode: mode_str(v.mode),
            request: &facts.request,
            bundle: &bundle.dir,
            findings: &v.findings,
            error: None,
            probe: None,
            binaries: None,
            load: None,
            toolchains: None,
            duration_ms: ms,
        };
        // A container that starts gets the hook's report, which replaces this one: only a
        // block (or a container the hook will never see) needs the plugin's own, and its fsync.
        let written = if record || v.verdict == Decision::Block {
            output::report::write(&config.state_dir, &report, config.max_reports).map(Some)
        } else {
            Ok(None)
        };
        let ids: Vec<&str> = v
            .findings
            .iter()
            .filter(|f| f.severity != crate::finding::Severity::Info)
            .map(|f| f.id.as_str())
            .collect();
        let mut line = format!(
            "cuda-preflight: nri container={} pod={}/{} verdict={} mode={} findings={} ms={ms:.1}",
            c.id,
            pod.namespace,
            pod.name,
            v.verdict.as_str(),
            mode_str(v.mode),
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(",")
            },
        );
        if let Err(e) = &written {
            line.push_str(&format!(
                " report-error=\"{}: {e}\"",
                config.state_dir.display()
            ));
        }
        output::log::line(&config.host_root, &config.log_socket, &line);
        let msg = output::message::render(&c.id, &v, matches!(written, Ok(Some(_))));
        Ok((v, msg))
    }

    fn create(
        self: &Arc<Self>,
        pod: &api::PodSandbox,
        c: &api::Container,
    ) -> Result<api::ContainerAdjustment, String> {
        let started = Instant::now();
        let spec: oci_spec::runtime::Spec =
            match serde_json::from_value(crate::input::nri::spec_json(c, "")) {
                Ok(s) => s,
                Err(e) => {
                    return self.own_error(
                        c,
                        &format!("the container NRI sent is not a valid spec: {e}"),
                    );
                }
            };
        let annotations = crate::input::nri::cdi_annotations(c);
        let request = container::detect(&spec, Some(&annotations));
        match request {
            GpuRequest::None => {
                self.stats.count("not-gpu");
                return Ok(api::ContainerAdjustment::new());
            }
            // The variable alone: under the NVIDIA runtime (device plugin envvar mode) the GPU is
            // injected after NRI, so only the hook sees what the container gets.
            GpuRequest::EnvOnly { .. } => {
                self.stats.count("deferred");
                return Ok(self.hook_adjustment());
            }
            _ => {}
        }
        // The judgement runs on its own thread so NRI's timeout is never reached: past the budget
        // `on_timeout` decides and the hook still judges the container when it starts.
        let (tx, rx) = std::sync::mpsc::channel();
        let me = self.clone();
        let (pod2, c2) = (pod.clone(), c.clone());
        let spawned = std::thread::Builder::new()
            .name("nri-judge".into())
            .spawn(move || {
                let _ = tx.send(me.judge(&pod2, &c2, spec, request, &annotations, false));
            });
        if let Err(e) = spawned {
            return self.own_error(c, &format!("cannot start the judgement: {e}"));
        }
        let result = rx.recv_timeout(JUDGE_BUDGET);
        {
            let mut j = self
                .stats
                .judge_seconds
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            j.0 += started.elapsed().as_secs_f64();
            j.1 += 1;
        }
        match result {
            Ok(Ok((v, msg))) => match v.verdict {
                Decision::Block => {
                    self.stats.count("block");
                    Err(msg)
                }
                Decision::Warn => {
                    self.stats.count("warn");
                    Ok(self.hook_adjustment())
                }
                Decision::Allow => {
                    self.stats.count("allow");
                    Ok(self.hook_adjustment())
                }
            },
            Ok(Err(e)) => self.own_error(c, &format!("{e:#}")),
            // The judgement panicked: the plugin's own error, not a passed budget.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.own_error(c, "the judgement failed (panic)")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.stats.count("timeout");
                let ms = JUDGE_BUDGET.as_millis();
                output::log::line(
                    &self.config.host_root,
                    &self.config.log_socket,
                    &format!(
                        "cuda-preflight: nri container={} judgement passed its {ms} ms budget",
                        c.id
                    ),
                );
                match self.config.on_timeout {
                    OnFailure::Allow => Ok(self.hook_adjustment()),
                    OnFailure::Block => Err(format!(
                        "cuda-preflight: blocked container {}: the judgement's budget of {ms} ms passed (on_timeout = block)",
                        c.id
                    )),
                }
            }
        }
    }

    /// The plugin itself failed on a container: `on_error` decides; allowed, the hook still runs.
    fn own_error(&self, c: &api::Container, err: &str) -> Result<api::ContainerAdjustment, String> {
        self.stats.count("error");
        output::log::line(
            &self.config.host_root,
            &self.config.log_socket,
            &format!("cuda-preflight: nri container={} error=\"{err}\"", c.id),
        );
        match self.config.on_error {
            OnFailure::Allow => Ok(self.hook_adjustment()),
            OnFailure::Block => Err(format!(
                "cuda-preflight: blocked container {}: the NRI plugin failed (on_error = block): {err}",
                c.id
            )),
        }
    }
}

/// The protocol side's view of the judge.
struct Plugin(Arc<Judge>);

impl nri::Handler for Plugin {
    fn configured(&self, runtime: &str, version: &str) {
        *self
            .0
            .stats
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = format!("{runtime} {version}");
    }

    fn synchronize(&self, pods: &[api::PodSandbox], containers: &[api::Container]) {
        let j = &self.0;
        let mut gpu = 0;
        let mut unchecked = 0;
        for c in containers {
            let Ok(spec) = serde_json::from_value::<oci_spec::runtime::Spec>(
                crate::input::nri::spec_json(c, ""),
            ) else {
                continue;
            };
            let request = container::detect(&spec, Some(&crate::input::nri::cdi_annotations(c)));
            if request == GpuRequest::None {
                continue;
            }
            gpu += 1;
            if !j.has_our_hook(c) {
                unchecked += 1;
                output::log::line(
                    &j.config.host_root,
                    &j.config.log_socket,
                    &format!(
                        "cuda-preflight: nri container={} name={} exists without the cuda-preflight hook: \
                         created while the plugin was not registered; judged now from its spec",
                        c.id, c.name
                    ),
                );
                // Too late to stop it, not too late to record it: its report and log line say
                // what it would have met.
                if unchecked <= SYNC_JUDGE_MAX && request.wants_gpu() {
                    let annotations = crate::input::nri::cdi_annotations(c);
                    let none = api::PodSandbox::new();
                    let pod = pods
                        .iter()
                        .find(|p| p.id == c.pod_sandbox_id)
                        .unwrap_or(&none);
                    let _ = j.judge(pod, c, spec, request, &annotations, true);
                }
            }
        }
        j.stats
            .synced_containers
            .store(containers.len() as u64, Ordering::SeqCst);
        j.stats.synced_gpu_containers.store(gpu, Ordering::SeqCst);
        j.stats
            .synced_unchecked
            .store(unchecked as u64, Ordering::SeqCst);
        j.stats.synchronized.store(true, Ordering::SeqCst);
    }

    fn create_container(
        &self,
        pod: &api::PodSandbox,
        c: &api::Container,
    ) -> Result<api::ContainerAdjustment, String> {
        self.0.create(pod, c)
    }
}

fn write_state(state_dir: &Path, s: &PluginState) {
    if std::fs::create_dir_all(state_dir).is_ok()
        && let Ok(b) = serde_json::to_vec_pretty(s)
    {
        let _ = crate::atomic::write_file(&state_dir.join(nri::STATE_FILE), &b);
    }
}

/// Runs until killed; returns only on bad input (exit 2).
pub fn run(args: &NriArgs) -> anyhow::Result<i32> {
    let config = args.settings.load()?;
    let socket = args
        .nri_socket
        .clone()
        .or(config.nri_socket.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let listen = args
        .nri_listen
        .clone()
        .or(config.nri_listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen = (listen != "off").then_some(listen);
    let stats = Arc::new(Stats::default());
    if let Some(addr) = &listen {
        let l = TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("{addr}: cannot serve /healthz and /metrics: {e}"))?;
        let st = stats.clone();
        std::thread::Builder::new()
            .name("nri-http".into())
            .spawn(move || serve_http(l, st))?;
    }
    let state_dir = config.state_dir.clone();
    let judge = Arc::new(Judge::new(args, config, stats.clone())?);
    let handler: Arc<dyn nri::Handler> = Arc::new(Plugin(judge));
    let reg = nri::Registration {
        name: PLUGIN_NAME.into(),
        index: PLUGIN_INDEX.into(),
        timeout: Duration::from_secs(5),
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let state = |registered: bool| PluginState {
        pid: std::process::id(),
        socket: socket.clone(),
        listen: listen.clone(),
        registered,
        since: now(),
        runtime: stats.runtime.lock().map(|r| r.clone()).unwrap_or_default(),
    };
    write_state(&state_dir, &state(false));
    eprintln!(
        "cuda-preflight: nri plugin connecting to {}",
        socket.display()
    );
    let mut backoff = Duration::from_millis(200);
    let mut last_error = String::new();
    loop {
        let on_registered = || {
            stats.registered.store(true, Ordering::SeqCst);
            stats.registrations.fetch_add(1, Ordering::SeqCst);
            write_state(&state_dir, &state(true));
            eprintln!(
                "cuda-preflight: nri plugin registered with {} as {PLUGIN_INDEX}-{PLUGIN_NAME}",
                socket.display()
            );
        };
        match nri::serve(&socket, &reg, handler.clone(), &on_registered) {
            Ok(()) => {
                eprintln!("cuda-preflight: nri runtime closed the connection; reconnecting");
                backoff = Duration::from_millis(200);
                last_error.clear();
            }
            Err(e) => {
                stats.connect_failures.fetch_add(1, Ordering::SeqCst);
                let text = e.to_string();
                // The same failure every retry is said once, not every 200 ms to 5 s.
                if text != last_error {
                    eprintln!("cuda-preflight: nri {text}; retrying");
                    last_error = text;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        stats.synchronized.store(false, Ordering::SeqCst);
        if stats.registered.swap(false, Ordering::SeqCst) {
            write_state(&state_dir, &state(false));
        }
        std::thread::sleep(backoff);
    }
}

/// `/healthz` (200 while registered and synchronized, 503 otherwise) and `/metrics`, one request per connection.
fn serve_http(l: TcpListener, stats: Arc<Stats>) {
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = answer_http(&mut c, &stats);
    }
}

fn answer_http(c: &mut TcpStream, stats: &Stats) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    // The request line is all we need; a few KiB bound what a client can make us hold.
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        let r = c.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || buf[..n].contains(&b'\n') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    let path = text.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = match path {
        "/healthz" | "/readyz" if stats.ready() => {
            ("200 OK", "text/plain", "registered\n".to_string())
        }
        "/healthz" | "/readyz" => (
            "503 Service Unavailable",
            "text/plain",
            "not registered\n".to_string(),
        ),
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", stats.render()),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: /healthz, /metrics\n".to_string(),
        ),
    };
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    c.flush()
}

fn mode_str(m: crate::config::Mode) -> &'static str {
    match m {
        crate::config::Mode::Enforce => "enforce",
        crate::config::Mode::Warn => "warn",
        crate::config::Mode::Audit => "audit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(path: &str, major: i64, minor: i64) -> api::LinuxDevice {
        api::LinuxDevice {
            path: path.into(),
            type_: "c".into(),
            major,
            minor,
            ..Default::default()
        }
    }

    /// A CDI-style GPU container: the nodes in `nodes`, cgroup rules allowing them, `env`.
    fn gpu_container(nodes: &[(&str, i64, i64)], env: &[&str]) -> api::Container {
        let mut linux = api::LinuxContainer::new();
        linux.devices = nodes.iter().map(|(p, a, b)| device(p, *a, *b)).collect();
        let mut res = api::LinuxResources::new();
        res.devices = nodes
            .iter()
            .map(|(_, a, b)| api::LinuxDeviceCgroup {
                allow: true,
                type_: "c".into(),
                major: protobuf::MessageField::some(api::OptionalInt64 {
                    value: *a,
                    ..Default::default()
                }),
                minor: protobuf::MessageField::some(api::OptionalInt64 {
                    value: *b,
                    ..Default::default()
                }),
                access: "rwm".into(),
                ..Default::default()
            })
            .collect();
        linux.resources = protobuf::MessageField::some(res);
        api::Container {
            id: "0123456789abcdef0123".into(),
            name: "c".into(),
            env: env.iter().map(|s| s.to_string()).collect(),
            linux: protobuf::MessageField::some(linux),
            ..Default::default()
        }
    }

    const ALL: &[(&str, i64, i64)] = &[
        ("/dev/nvidiactl", 195, 255),
        // The A100 profile's nvidia-uvm major.
        ("/dev/nvidia-uvm", 236, 0),
        ("/dev/nvidia0", 195, 0),
    ];

    /// What the plugin answers at CreateContainer: an error (block) only where the hook would
    /// block on the same spec; never from what only the image's files can tell.
    #[test]
    fn create_container_answers() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            host_profile: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hosts/a100-535.json"),
            ),
            state_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let stats = Arc::new(Stats::default());
        let judge = Arc::new(Judge::new(&NriArgs::default(), config, stats.clone()).unwrap());
        let no_uvm: Vec<_> = ALL
            .iter()
            .copied()
            .filter(|n| n.0 != "/dev/nvidia-uvm")
            .collect();
        // (name, container, Ok(hook added) / Err(message contains))
        let cases: Vec<(&str, api::Container, Result<bool, &str>)> = vec![
            ("no GPU", api::Container::default(), Ok(false)),
            ("healthy CDI container", gpu_container(ALL, &[]), Ok(true)),
            (
                "no /dev/nvidia-uvm",
                gpu_container(&no_uvm, &[]),
                Err("/dev/nvidia-uvm is missing"),
            ),
            // The host's driver is CUDA 12.2: a newer major in CUDA_VERSION alone is not a block
            // (a forward-compat package in the image may carry it); the hook judges it at start.
            // (Requirements off: the toolkit's legacy-image rule would block on the variable.)
            (
                "CUDA_VERSION newer than the driver",
                gpu_container(ALL, &["CUDA_VERSION=13.0.0", "NVIDIA_DISABLE_REQUIRE=true"]),
                Ok(true),
            ),
            // What the environment alone decides blocks as the hook would.
            (
                "NVIDIA_REQUIRE_CUDA unmet",
                gpu_container(ALL, &["NVIDIA_REQUIRE_CUDA=cuda>=13.9"]),
                Err("require-unsatisfied"),
            ),
            (
                "env only: left to the hook",
                gpu_container(&[], &["NVIDIA_VISIBLE_DEVICES=all"]),
                Ok(true),
            ),
        ];
        for (name, c, want) in cases {
            let got = judge.create(&api::PodSandbox::new(), &c);
            match (got, want) {
                (Ok(adj), Ok(hook)) => {
                    let added = adj.hooks.as_ref().is_some_and(|h| {
                        h.create_container.iter().any(|h| {
                            h.args
                                .windows(2)
                                .any(|w| w[0] == "--stage" && w[1] == "createContainer")
                        })
                    });
                    assert_eq!(added, hook, "{name}");
                }
                (Err(msg), Err(want)) => {
                    assert!(
                        msg.starts_with("cuda-preflight: blocked container 0123456789ab"),
                        "{name}: {msg}"
                    );
                    assert!(msg.contains(want), "{name}: {msg}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        let creates = stats.creates.lock().unwrap().clone();
        assert_eq!(creates.get("not-gpu"), Some(&1));
        assert_eq!(creates.get("deferred"), Some(&1));
        assert_eq!(creates.get("block"), Some(&2));
    }
}
