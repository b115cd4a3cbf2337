//! `cuda-preflight-runtime`: an OCI runtime that Docker (`daemon.json` `runtimes`), containerd
//! (runtime `BinaryName`) or CRI-O can name instead of `runc` / `nvidia-container-runtime`.
//!
//! It looks at argv for one thing only, as NVIDIA's own shim does: the `create` command (or
//! `run`, create and start in one) and its bundle. There it adds `cuda-preflight hook` to the
//! bundle's `config.json` at `createRuntime`; then, for every command, it execs the real runtime
//! with the arguments it got, so exit codes, stdio and signals are the real runtime's own (same
//! process, same pid). It knows runc's and crun's global flags and commands; what it does not
//! know is said and left to `on_error` (issue 22).
//!
//! Its settings come from the config file (`/etc/cuda-preflight/config.toml`): a runtime gets a
//! fixed argv from its engine, and the environment differs per engine (`docs/facts.md`). One
//! flag of its own is accepted, before the command: `--cuda-preflight-config FILE`. Docker's
//! `runtimeArgs` puts arguments exactly there (dockerd writes a wrapper script `PATH ARGS $@`),
//! so a `daemon.json` entry can name another config file; the flag is removed before the real
//! runtime sees argv, and passed on to the hook as `--config FILE`.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::{Config, ConfigError, OnFailure};

/// Set in the environment the real runtime inherits: a shim that finds it was started by the
/// runtime it started (chained behind `nvidia-container-runtime`). Its value is the config file
/// the first shim was given (`--cuda-preflight-config`), empty for the default.
pub const CHAIN_ENV: &str = "CUDA_PREFLIGHT_RUNTIME_CHAINED";

/// The shim's own flag; only recognised before the runtime command.
pub const CONFIG_FLAG: &str = "--cuda-preflight-config";

/// Where the real runtime is looked for when the config names none, in this order. Fixed
/// absolute paths, never a `PATH` lookup: engines give runtimes different environments, and a
/// `PATH` entry must not decide which runtime manages a container.
pub const NVIDIA_RUNTIME_PATHS: &[&str] = &[
    "/usr/bin/nvidia-container-runtime",
    "/usr/local/bin/nvidia-container-runtime",
];
pub const RUNC_PATHS: &[&str] = &["/usr/bin/runc", "/usr/sbin/runc", "/usr/local/sbin/runc"];

/// A `config.json` larger than this is not a spec we should be rewriting.
const MAX_SPEC_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{CONFIG_FLAG} needs a file name")]
    MissingConfigValue,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("runtime {0}: not an absolute path (the shim does no PATH lookups)")]
    RelativeRuntime(PathBuf),
    #[error("runtime {0} does not exist")]
    RuntimeMissing(PathBuf),
    #[error("runtime {0} is this shim itself; set `runtime` in the config to the real runtime")]
    RuntimeIsShim(PathBuf),
    #[error(
        "no runtime found: none of {tried} exists; set `runtime` in the config",
        tried = NVIDIA_RUNTIME_PATHS.iter().chain(RUNC_PATHS).copied().collect::<Vec<_>>().join(", ")
    )]
    NoRuntime,
    #[error("hook binary {0} does not exist; set `hook_binary` in the config")]
    HookMissing(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a JSON spec: {source}")]
    BadJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("config.json: {0}")]
    BadSpec(&'static str),
    #[error(transparent)]
    Bundle(#[from] crate::input::bundle::BundleError),
    #[error(transparent)]
    Host(#[from] crate::facts::host::HostError),
    #[error("{0}: not read within {1} ms (a dead mount?); nothing was run")]
    ConfigTimeout(PathBuf, u128),
    #[error("blocked before the runtime ran")]
    Blocked,
    #[error("cannot exec {path}: {source}")]
    Exec {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, ShimError>;

/// What the shim read from its argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `--cuda-preflight-config FILE`, if given.
    pub config: Option<PathBuf>,
    /// Everything else, untouched and in order: what the real runtime gets.
    pub runtime_args: Vec<OsString>,
    /// The bundle, when the command is `create` (runc's default, the current directory, when no
    /// `--bundle` is given).
    pub create_bundle: Option<PathBuf>,
    /// `create`'s container id.
    pub container_id: Option<String>,
    /// runc's `--log FILE`, where containerd looks for the reason a command failed.
    pub log: Option<PathBuf>,
    /// `--log-format json`.
    pub log_json: bool,
    /// What the shim did not understand (a global flag or command neither runc nor crun has, a
    /// `create` option it cannot follow): said on stderr and in the runtime's log, and `on_error`
    /// decides whether the command still goes to the runtime.
    pub unhandled: Vec<String>,
}

/// Global flags that take a value, of runc (`main.go`: log, log-format, root, criu, rootless) and
/// crun (`crun.c` argp options: also cgroup-manager, log-level). Knowing them keeps a value such
/// as `--root create` from being taken for the command.
const GLOBAL_VALUE_FLAGS: &[&str] = &[
    "log",
    "log-format",
    "log-level",
    "root",
    "criu",
    "rootless",
    "cgroup-manager",
];
/// Global flags without a value (runc: debug, systemd-cgroup, help, version; crun: the same and
/// its `-V`/`-?` aliases).
const GLOBAL_BOOL_FLAGS: &[&str] = &[
    "debug",
    "systemd-cgroup",
    "help",
    "h",
    "version",
    "v",
    "V",
    "?",
];
/// Commands of runc 1.x and crun 1.x. `create` and `run` (create and start in one) get the hook;
/// the others do not start a container from a bundle, except `restore`, which is said.
const COMMANDS: &[&str] = &[
    "checkpoint",
    "create",
    "delete",
    "events",
    "exec",
    "features",
    "help",
    "h",
    "init",
    "kill",
    "list",
    "mounts",
    "pause",
    "ps",
    "restore",
    "resume",
    "run",
    "spec",
    "start",
    "state",
    "update",
];
/// `create`/`run` flags that take a value, other than the bundle (runc and crun).
const CREATE_VALUE_FLAGS: &[&str] = &["console-socket", "pid-file", "preserve-fds"];

/// A flag's name and its `=value`, for Go's flag syntax: one or two dashes, `-name=value` or
/// `-name value`. None for a positional argument (or a lone `-`).
fn flag(arg: &OsStr) -> Option<(&str, Option<&str>)> {
    let s = arg.to_str()?;
    let body = s.strip_prefix("--").or_else(|| s.strip_prefix('-'))?;
    if body.is_empty() || s == "--" {
        return None;
    }
    Some(match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    })
}

/// Find the shim's flag, the command and, for `create`, the bundle; keep the rest as it came.
pub fn parse_args(args: &[OsString]) -> Result<Invocation> {
    let mut config = None;
    let mut runtime_args = Vec::with_capacity(args.len());
    let mut command = None;
    let (mut log, mut log_json) = (None, false);
    let mut unhandled = Vec::new();
    let mut i = 0;
    // Global flags: up to the first positional argument, which is the command.
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            break;
        }
        match flag(a) {
            Some((name, value)) if format!("--{name}") == CONFIG_FLAG => {
                let v = match value {
                    Some(v) => OsString::from(v),
                    None => {
                        i += 1;
                        args.get(i).cloned().ok_or(ShimError::MissingConfigValue)?
                    }
                };
                if v.is_empty() {
                    return Err(ShimError::MissingConfigValue);
                }
                config = Some(PathBuf::from(v));
                i += 1;
            }
            Some((name, value)) => {
                runtime_args.push(a.clone());
                i += 1;
                let value = match value {
                    Some(v) => Some(OsString::from(v)),
                    None if GLOBAL_VALUE_FLAGS.contains(&name) && i < args.len() => {
                        runtime_args.push(args[i].clone());
                        i += 1;
                        Some(args[i - 1].clone())
                    }
                    None if !GLOBAL_BOOL_FLAGS.contains(&name) => {
                        // Unknown: a value follows where the next word is not a command and
                        // the one after it is.
                        unhandled.push(format!("global flag {}", a.to_string_lossy()));
                        let next_is_command = args
                            .get(i)
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| COMMANDS.contains(&n));
                        let then_command = args
                            .get(i + 1)
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| COMMANDS.contains(&n));
                        if !next_is_command && then_command {
                            runtime_args.push(args[i].clone());
                            i += 1;
                        }
                        None
                    }
                    None => None,
                };
                if value.is_some()
                    && !GLOBAL_VALUE_FLAGS.contains(&name)
                    && !GLOBAL_BOOL_FLAGS.contains(&name)
                {
                    unhandled.push(format!("global flag {}", a.to_string_lossy()));
                }
                match (name, value) {
                    ("log", Some(v)) => log = Some(PathBuf::from(v)),
                    ("log-format", Some(v)) => log_json = v == "json",
                    _ => {}
                }
            }
            None => {
                command = Some(runtime_args.len());
                break;
            }
        }
    }
    runtime_args.extend(args[i..].iter().cloned());
    let name = command.and_then(|c| runtime_args[c].to_str().map(String::from));
    let (create_bundle, container_id) = match name.as_deref() {
        // `run` is create and start in one: its spec gets the hook as `create`'s does.
        Some("create" | "run") => {
            let rest = &runtime_args[command.unwrap_or(0) + 1..];
            let (b, id) = create_args(rest);
            // crun's `--config/-f FILE` runs another file than the bundle's config.json, which
            // is the one that gets the hook.
            if rest
                .iter()
                .take_while(|a| *a != "--")
                .any(|a| matches!(flag(a), Some(("config" | "f", _))))
            {
                unhandled.push(format!(
                    "{} --config (a spec file other than config.json)",
                    name.as_deref().unwrap_or_default()
                ));
            }
            (Some(b), id)
        }
        Some("restore") => {
            unhandled.push("command restore (a container from a checkpoint: not checked)".into());
            (None, None)
        }
        Some(c) if !COMMANDS.contains(&c) => {
            unhandled.push(format!("command {c}"));
            (None, None)
        }
        Some(_) => (None, None),
        None => {
            if let Some(c) = command {
                unhandled.push(format!("command {}", runtime_args[c].to_string_lossy()));
            }
            (None, None)
        }
    };
    Ok(Invocation {
        config,
        runtime_args,
        create_bundle,
        container_id,
        log,
        log_json,
        unhandled,
    })
}

/// The bundle and the container id among `create`'s arguments. runc's CLI library moves flags
/// given after the container id in front of it, so the whole list is searched, up to `--`; the
/// last bundle wins, as with Go's flag package; the id is the first positional argument.
fn create_args(args: &[OsString]) -> (PathBuf, Option<String>) {
    let mut bundle = PathBuf::from(".");
    let mut id = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--" {
            break;
        }
        match flag(&args[i]) {
            Some(("b" | "bundle", Some(v))) => bundle = PathBuf::from(v),
            Some(("b" | "bundle", None)) => {
                if let Some(v) = args.get(i + 1) {
                    bundle = PathBuf::from(v);
                }
                i += 1;
            }
            Some((name, None)) if CREATE_VALUE_FLAGS.contains(&name) => i += 1,
            Some(_) => {}
            None => {
                if id.is_none() {
                    id = args[i].to_str().map(String::from);
                }
            }
        }
        i += 1;
    }
    (bundle, id)
}

/// Is this hook entry ours (`…/cuda-preflight hook …`)?
fn is_our_hook(h: &Value) -> bool {
    let named_ours = h["path"]
        .as_str()
        .and_then(|p| Path::new(p).file_name())
        .is_some_and(|n| n == "cuda-preflight");
    named_ours && h["args"].get(1).and_then(Value::as_str) == Some("hook")
}

/// Is this hook entry one of NVIDIA's CDI hooks (`nvidia-cdi-hook …`, older specs' `nvidia-ctk
/// hook …`)?
fn is_nvidia_cdi_hook(h: &Value) -> bool {
    let name = h["path"]
        .as_str()
        .and_then(|p| Path::new(p).file_name())
        .and_then(OsStr::to_str);
    match name {
        Some("nvidia-cdi-hook") => true,
        Some("nvidia-ctk") => h["args"].get(1).and_then(Value::as_str) == Some("hook"),
        _ => false,
    }
}

/// Add our hook to a spec, as a JSON value so that fields this crate does not model survive.
/// Only one stage list changes. Returns false when a hook of ours is already in any stage (a
/// second `create` of the same bundle, or a hooks-directory entry already put it there).
///
/// Where it goes (`docs/design.md`, "Which stage on which path"):
/// * the spec already carries NVIDIA's CDI hooks (an engine applied CDI, or this shim runs
///   behind `nvidia-container-runtime` in `cdi`/`jit-cdi` mode): last in `createContainer`, as
///   `hook --stage createContainer`, after `create-symlinks` and `update-ldcache`, where
///   `libcuda.so.1` and the loader cache entry exist;
/// * otherwise last in `createRuntime`: after every `prestart` hook (runc runs those first, and
///   `nvidia-container-runtime-hook` injects the devices there). If `nvidia-container-runtime`
///   follows in a CDI mode it appends its CDI hooks after ours; the hook sees them in
///   `config.json` and judges what they will make instead of probing before them.
pub fn add_hook(spec: &mut Value, hook_binary: &Path, config: Option<&Path>) -> Result<bool> {
    let obj = spec
        .as_object_mut()
        .ok_or(ShimError::BadSpec("not a JSON object"))?;
    let hooks = obj.entry("hooks").or_insert_with(|| json!({}));
    if hooks.is_null() {
        *hooks = json!({});
    }
    let hooks = hooks
        .as_object_mut()
        .ok_or(ShimError::BadSpec("`hooks` is not an object"))?;
    let ours_present = hooks
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .any(is_our_hook);
    if ours_present {
        return Ok(false);
    }
    let cdi = hooks
        .get("createContainer")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(is_nvidia_cdi_hook));
    let mut args = vec![json!("cuda-preflight"), json!("hook")];
    if cdi {
        args.push(json!("--stage"));
        args.push(json!("createContainer"));
    }
    if let Some(c) = config {
        args.push(json!("--config"));
        args.push(json!(c.to_string_lossy()));
    }
    let (name, bad) = if cdi {
        ("createContainer", "`hooks.createContainer` is not an array")
    } else {
        ("createRuntime", "`hooks.createRuntime` is not an array")
    };
    let stage = hooks.entry(name).or_insert_with(|| json!([]));
    if stage.is_null() {
        *stage = json!([]);
    }
    stage
        .as_array_mut()
        .ok_or(ShimError::BadSpec(bad))?
        .push(json!({"path": hook_binary.to_string_lossy(), "args": args}));
    Ok(true)
}

/// Read `<bundle>/config.json`, add our hook, write it back atomically. Returns whether it
/// changed.
pub fn edit_bundle(bundle: &Path, hook_binary: &Path, config: Option<&Path>) -> Result<bool> {
    let path = bundle.join("config.json");
    let bytes =
        crate::input::read_capped(&path, MAX_SPEC_BYTES).map_err(|source| ShimError::Io {
            path: path.clone(),
            source,
        })?;
    let mut spec: Value = serde_json::from_slice(&bytes).map_err(|source| ShimError::BadJson {
        path: path.clone(),
        source,
    })?;
    if !add_hook(&mut spec, hook_binary, config)? {
        return Ok(false);
    }
    let out = serde_json::to_vec(&spec).expect("a Value always serialises");
    write_atomic(&path, &out)?;
    Ok(true)
}

/// Replace `path` with `bytes` so that a reader sees the old file or the new one, never half of
/// one: a temporary file in the same directory with the old file's mode and owner (0644 and ours
/// for a new file), synced, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |source| ShimError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let name = path.file_name().unwrap_or(OsStr::new("config.json"));
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".cuda-preflight-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        let mode = meta.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(meta) = &meta {
            let tm = f.metadata()?;
            if (tm.uid(), tm.gid()) != (meta.uid(), meta.gid()) {
                std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
            }
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// The real runtime: the config's `runtime` (an absolute path), else the first of
/// [`NVIDIA_RUNTIME_PATHS`], then [`RUNC_PATHS`], that exists. `me` is this shim's own path,
/// which must never be chosen: it would exec itself forever.
pub fn find_runtime(
    configured: Option<&Path>,
    me: Option<&Path>,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf> {
    let chosen = match configured {
        Some(p) if !p.is_absolute() => return Err(ShimError::RelativeRuntime(p.to_path_buf())),
        Some(p) if !exists(p) => return Err(ShimError::RuntimeMissing(p.to_path_buf())),
        Some(p) => p.to_path_buf(),
        None => NVIDIA_RUNTIME_PATHS
            .iter()
            .chain(RUNC_PATHS)
            .map(PathBuf::from)
            .find(|p| exists(p))
            .ok_or(ShimError::NoRuntime)?,
    };
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if me.is_some_and(|me| canon(me) == canon(&chosen)) {
        return Err(ShimError::RuntimeIsShim(chosen));
    }
    Ok(chosen)
}

/// The `cuda-preflight` binary the hook entry names: the config's `hook_binary`, else the one
/// installed next to this shim (packages install both into the same directory).
pub fn hook_binary(config: &Config, me: Option<&Path>) -> Option<PathBuf> {
    config
        .hook_binary
        .clone()
        .or_else(|| me.and_then(Path::parent).map(|d| d.join("cuda-preflight")))
}

/// The shim's whole run. Returns only on failure, with the exit code; on success the process has
/// become the real runtime.
pub fn run(args: Vec<OsString>) -> u8 {
    match prepare(&args) {
        Ok((runtime, inv, env)) => {
            let err = std::process::Command::new(&runtime)
                .args(&inv.runtime_args)
                .envs(env)
                .exec();
            eprintln!(
                "cuda-preflight-runtime: {}",
                ShimError::Exec {
                    path: runtime,
                    source: err
                }
            );
            // A shell's "cannot execute"; nothing was started.
            126
        }
        Err(ShimError::Blocked) => 1,
        Err(e) => {
            eprintln!("cuda-preflight-runtime: {e}");
            1
        }
    }
}

/// The verdict that needs nothing the NVIDIA runtime or hook will inject: `NVIDIA_REQUIRE_*`
/// (and the legacy `CUDA_VERSION` rule) against the host. In legacy mode NVIDIA's prestart hook
/// checks the same requirements and fails first, with only `unsatisfied condition: …`; judged
/// here, the user gets our message with the host's value and the fix. The hook would reach the
/// same verdict later (same rule, same environment), so nothing is judged twice differently.
/// Returns the block message, or None to go on.
pub fn early_verdict(
    bundle_dir: &Path,
    id: &str,
    config: &Config,
    runtime: &Path,
) -> Result<Option<String>> {
    use crate::facts::container::{self, GpuRequest};
    let started = std::time::Instant::now();
    let bundle = crate::input::bundle::Bundle::load(bundle_dir)?;
    let request = container::detect(&bundle.spec, None);
    // nvidia-container-runtime turns the variable alone into a GPU request (legacy mode).
    let nvidia_runtime = runtime
        .file_name()
        .is_some_and(|n| n == "nvidia-container-runtime");
    let gpu =
        request.wants_gpu() || (matches!(request, GpuRequest::EnvOnly { .. }) && nvidia_runtime);
    if !gpu {
        return Ok(None);
    }
    let env = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    // Where nothing refuses an unmet requirement, there is nothing to refuse early: no host
    // facts are read (NVML costs ~20 ms).
    let path = shim_start_path(&bundle.spec, &request, nvidia_runtime, &config.host_root);
    if !path.enforces_requirements() && !config.enforce_requirements {
        return Ok(None);
    }
    let image = crate::facts::versions::image_cuda::gather_env(&env);
    let host = crate::commands::host_facts(config.host_profile.as_deref(), &config.host_root)?;
    let mut findings = crate::rules::versions::requirements::check(&image, &host);
    crate::rules::versions::requirements::on_path(
        &mut findings,
        &path,
        config.enforce_requirements,
    );
    let annotation = bundle
        .spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::verdict::MODE_ANNOTATION).cloned());
    let (mode, note) = crate::verdict::effective_mode(config, annotation.as_deref());
    findings.extend(note);
    let v = crate::verdict::decide(config, mode, findings);
    if v.verdict != crate::verdict::Decision::Block {
        return Ok(None);
    }
    let report = crate::output::report::Report {
        container_id: id,
        time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        verdict: v.verdict.as_str(),
        mode: "enforce",
        request: &request,
        bundle: &bundle.dir,
        findings: &v.findings,
        error: None,
        probe: None,
        binaries: None,
        load: None,
        toolchains: None,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    // The message matters more than the record: a report that cannot be written is noted in it.
    let mut msg = crate::output::message::render(id, &v, true);
    if let Err(e) = crate::output::report::write(&config.state_dir, &report, config.max_reports) {
        msg.push_str(&format!(
            "  (report not written to {}: {e})\n",
            config.state_dir.display()
        ));
    }
    Ok(Some(msg))
}

/// The start path as the shim sees it, before the real runtime ran. With
/// `nvidia-container-runtime` next and nothing NVIDIA's in the spec yet, its mode decides.
pub fn shim_start_path(
    spec: &oci_spec::runtime::Spec,
    request: &crate::facts::container::GpuRequest,
    nvidia_runtime: bool,
    host_root: &Path,
) -> crate::facts::start_path::StartPath {
    use crate::facts::start_path::StartPath;
    match StartPath::from_spec(spec, request) {
        StartPath::None | StartPath::ExplicitDevices if nvidia_runtime => {
            StartPath::NvidiaRuntime {
                mode: nvidia_runtime_mode(host_root),
            }
        }
        p => p,
    }
}

/// `nvidia-container-runtime`'s config file, as it finds it (it inherits our environment):
/// `NVIDIA_CTK_CONFIG_FILE_PATH`, else `$XDG_CONFIG_HOME/nvidia-container-runtime/config.toml`
/// where that exists, else `/etc/nvidia-container-runtime/config.toml` (under the host root).
pub fn nvidia_runtime_config_path(host_root: &Path) -> PathBuf {
    std::env::var_os("NVIDIA_CTK_CONFIG_FILE_PATH")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CONFIG_HOME")
                .map(|x| PathBuf::from(x).join("nvidia-container-runtime/config.toml"))
                .filter(|p| p.exists())
        })
        .unwrap_or_else(|| host_root.join("etc/nvidia-container-runtime/config.toml"))
}

/// That file as a table; missing or unreadable: empty (the runtime's defaults).
fn nvidia_runtime_config(path: &Path) -> toml::Table {
    crate::input::read_capped(path, 1 << 20)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.parse::<toml::Table>().ok())
        .unwrap_or_default()
}

/// The mode `nvidia-container-runtime` will run in: `mode` of `[nvidia-container-runtime]` in its
/// config file, default `auto`. `auto` resolves as `internal/info/auto.go` does: `csv` on Tegra
/// (the `/etc/nv_tegra_release` file or a Tegra `soc0` family), else `jit-cdi`.
pub fn nvidia_runtime_mode(host_root: &Path) -> String {
    mode_of(
        &nvidia_runtime_config(&nvidia_runtime_config_path(host_root)),
        host_root,
    )
}

fn mode_of(table: &toml::Table, host_root: &Path) -> String {
    let mode = table
        .get("nvidia-container-runtime")
        .and_then(|t| t.get("mode"))
        .and_then(|m| m.as_str())
        .unwrap_or("auto")
        .to_string();
    if mode != "auto" {
        return mode;
    }
    let tegra = host_root.join("etc/nv_tegra_release").exists()
        || std::fs::read_to_string(host_root.join("sys/devices/soc0/family"))
            .is_ok_and(|f| f.trim().eq_ignore_ascii_case("tegra"));
    if tegra {
        "csv".into()
    } else {
        "jit-cdi".into()
    }
}

/// In front of `nvidia-container-runtime` in a CDI mode, our hook would go in before the CDI
/// hooks that runtime appends. So the shim hands it a copy of its own config file whose
/// `runtimes` names this shim (through `NVIDIA_CTK_CONFIG_FILE_PATH`): the runtime edits the
/// spec and execs the shim again, which sees the final spec, places the hook after NVIDIA's
/// `createContainer` hooks and execs runc. Every other setting of the file is kept. The copy is
/// written once per content into the state directory. None where the mode is not `cdi` or
/// `jit-cdi` (legacy: NVIDIA's prestart hook runs before our createRuntime hook anyway; csv).
/// Only NVIDIA's own binary reads the config copy we hand it. A wrapper in front of it (the GPU
/// Operator installs a shell script named `nvidia-container-runtime` that sets
/// `NVIDIA_CTK_CONFIG_FILE_PATH` itself and execs `nvidia-container-runtime.real`) would drop our
/// copy, runc would come next, and the container would start with no hook at all. Not an ELF
/// file, or a `.real` beside it: no chaining; the hook stays in front of the CDI hooks, where the
/// static rules still judge the start.
fn chainable(runtime: &Path) -> bool {
    let mut head = [0u8; 4];
    let elf = std::fs::File::open(runtime)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && head == *b"\x7fELF";
    let mut real = runtime.as_os_str().to_owned();
    real.push(".real");
    elf && !Path::new(&real).exists()
}

pub fn nvidia_chain_config(config: &Config, me: &Path) -> Result<Option<PathBuf>> {
    use sha2::Digest;
    let base = nvidia_runtime_config_path(&config.host_root);
    let mut table = nvidia_runtime_config(&base);
    if !matches!(
        mode_of(&table, &config.host_root).as_str(),
        "cdi" | "jit-cdi"
    ) {
        return Ok(None);
    }
    let section = table
        .entry("nvidia-container-runtime")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(section) = section.as_table_mut() else {
        return Ok(None);
    };
    section.insert(
        "runtimes".into(),
        toml::Value::Array(vec![toml::Value::String(me.to_string_lossy().into_owned())]),
    );
    let text = toml::to_string(&table).map_err(|_| ShimError::BadSpec("NVIDIA runtime config"))?;
    let hash = sha2::Sha256::digest(text.as_bytes());
    let name: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let path = config
        .state_dir
        .join(format!("nvidia-container-runtime-{name}.toml"));
    if !path.exists() {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| ShimError::Io {
            path: config.state_dir.clone(),
            source,
        })?;
        write_atomic(&path, text.as_bytes())?;
    }
    Ok(Some(path))
}

enum EarlyError {
    Failed(ShimError),
    Deadline(u64),
}

/// Run `f` on a thread and wait for it at most `left`: `None` at the deadline. What the shim
/// does before exec may ask NVML (no host profile), read a profile or a spec on a dead mount,
/// and none of it may hold `create` (issue 22); at the deadline the shim goes on without it, and
/// the exec of the runtime (or the shim's exit) ends the thread with the process.
fn within<T: Send + 'static>(
    left: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<std::io::Result<T>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("before-exec".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        return Some(Err(e));
    }
    rx.recv_timeout(left).ok().map(Ok)
}

/// [`early_verdict`] within `left`.
fn early_verdict_within(
    bundle: &Path,
    id: &str,
    config: &Config,
    runtime: &Path,
    left: std::time::Duration,
) -> std::result::Result<Option<String>, EarlyError> {
    let (b, i, c, r) = (
        bundle.to_path_buf(),
        id.to_string(),
        config.clone(),
        runtime.to_path_buf(),
    );
    match within(left, move || early_verdict(&b, &i, &c, &r)) {
        Some(Ok(r)) => r.map_err(EarlyError::Failed),
        Some(Err(e)) => Err(EarlyError::Failed(ShimError::Io {
            path: bundle.to_path_buf(),
            source: e,
        })),
        None => Err(EarlyError::Deadline(config.deadline_ms)),
    }
}

/// Say why `create` failed where the engine looks: stderr, and runc's JSON log, from which
/// containerd takes the last `error` entry for "OCI runtime create failed: …".
fn tell_blocked(inv: &Invocation, msg: &str) {
    tell(inv, "error", msg);
}

/// Say `msg` on stderr and in the runtime's `--log` file at `level`: JSON lines where the
/// format is json (containerd reads them), logrus' text form otherwise.
fn tell(inv: &Invocation, level: &str, msg: &str) {
    eprint!("{msg}");
    if let Some(log) = &inv.log {
        use std::io::Write;
        let line = if inv.log_json {
            json!({"level": level, "msg": msg.trim_end()}).to_string() + "\n"
        } else {
            format!("level={level} msg={:?}\n", msg.trim_end())
        };
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// Everything before the exec: settings, the real runtime, the environment to add, and on
/// `create` the early verdict and the edit.
#[allow(clippy::type_complexity)]
fn prepare(args: &[OsString]) -> Result<(PathBuf, Invocation, Vec<(&'static str, OsString)>)> {
    let mut inv = parse_args(args)?;
    // Run again behind nvidia-container-runtime (our chain, or its `runtimes` list naming us):
    // the marker we leave in the environment, which it passes on, says so, and carries the
    // config file the first shim was given.
    let chained = std::env::var_os(CHAIN_ENV);
    if inv.config.is_none()
        && let Some(c) = chained.as_ref().filter(|c| !c.is_empty())
    {
        inv.config = Some(PathBuf::from(c));
    }
    // A config that cannot be read stops every command, not only `create`: running `state` or
    // `delete` through another runtime than `create` did would leave containers nobody manages.
    // Read under the default deadline (the file's own is not known yet): a config on a dead
    // mount must not hold every command of the engine.
    let path = inv.config.clone();
    let wait = std::time::Duration::from_millis(Config::default().deadline_ms);
    let config = match within(wait, move || Config::load(path.as_deref())) {
        Some(Ok(r)) => r?,
        Some(Err(source)) => {
            return Err(ShimError::Io {
                path: inv
                    .config
                    .clone()
                    .unwrap_or_else(|| crate::config::DEFAULT_PATH.into()),
                source,
            });
        }
        None => {
            return Err(ShimError::ConfigTimeout(
                inv.config
                    .clone()
                    .unwrap_or_else(|| crate::config::DEFAULT_PATH.into()),
                wait.as_millis(),
            ));
        }
    };
    let me = std::env::current_exe().ok();
    let mut runtime = find_runtime(config.runtime.as_deref(), me.as_deref(), Path::exists)?;
    let is_nvidia = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n == "nvidia-container-runtime")
    };
    // Behind the NVIDIA runtime, execing it again would loop: runc comes next.
    if chained.is_some() && is_nvidia(&runtime) {
        let runc = RUNC_PATHS
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .ok_or(ShimError::NoRuntime)?;
        runtime = find_runtime(Some(runc), me.as_deref(), Path::exists)?;
    }
    let mut env: Vec<(&'static str, OsString)> = vec![(
        CHAIN_ENV,
        inv.config
            .as_ref()
            .map(|c| c.clone().into_os_string())
            .unwrap_or_default(),
    )];
    // In front of the NVIDIA runtime in a CDI mode: chain ourselves behind it.
    let mut behind = false;
    if chained.is_none()
        && config.chain_nvidia_runtime
        && is_nvidia(&runtime)
        && chainable(&runtime)
        && let Some(me) = me.as_deref()
    {
        match nvidia_chain_config(&config, me) {
            Ok(Some(path)) => {
                env.push(("NVIDIA_CTK_CONFIG_FILE_PATH", path.into_os_string()));
                behind = true;
            }
            Ok(None) => {}
            Err(e) => eprintln!(
                "cuda-preflight-runtime: not chained behind nvidia-container-runtime ({e}); the hook stays in front of its CDI hooks"
            ),
        }
    }
    if !inv.unhandled.is_empty() {
        let what = inv.unhandled.join(", ");
        match config.on_error {
            OnFailure::Allow => tell(
                &inv,
                "warning",
                &format!(
                    "cuda-preflight-runtime: not understood: {what}; passed to the runtime as given, a container it starts is checked only where the hook is in its spec (on_error = allow)\n"
                ),
            ),
            OnFailure::Block => {
                tell_blocked(
                    &inv,
                    &format!(
                        "cuda-preflight-runtime: refused: {what} not understood, so the container could not be checked (on_error = block)\n"
                    ),
                );
                return Err(ShimError::Blocked);
            }
        }
    }
    if let Some(bundle) = &inv.create_bundle {
        let id = inv.container_id.as_deref().unwrap_or("?");
        // One deadline for everything before exec; the edit gets what the early check left, and
        // at least 100 ms.
        let started = std::time::Instant::now();
        let deadline = std::time::Duration::from_millis(config.deadline_ms);
        match early_verdict_within(bundle, id, &config, &runtime, deadline) {
            Ok(Some(msg)) => {
                tell_blocked(&inv, &msg);
                return Err(ShimError::Blocked);
            }
            Ok(None) => {}
            // The hook judges again at createRuntime and applies `on_error` to its own failures.
            Err(EarlyError::Failed(e)) => {
                eprintln!("cuda-preflight-runtime: early check skipped: {e}")
            }
            Err(EarlyError::Deadline(ms)) => match config.on_timeout {
                OnFailure::Allow => tell(
                    &inv,
                    "warning",
                    &format!(
                        "cuda-preflight-runtime: early check of container {id} did not finish within {ms} ms; skipped, the hook still judges the start (on_timeout = allow)\n"
                    ),
                ),
                OnFailure::Block => {
                    tell_blocked(
                        &inv,
                        &format!(
                            "cuda-preflight-runtime: blocked container {id}: the early check did not finish within {ms} ms (on_timeout = block)\n"
                        ),
                    );
                    return Err(ShimError::Blocked);
                }
            },
        }
        let hook = hook_binary(&config, me.as_deref());
        let (b, c) = (bundle.clone(), inv.config.clone());
        let left = deadline
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_millis(100));
        // Chained, the shim the NVIDIA runtime starts after its edit places the hook.
        let edited = if behind {
            Ok(false)
        } else {
            match within(left, move || {
                hook.clone()
                    .filter(|h| h.exists())
                    .ok_or_else(|| ShimError::HookMissing(hook.unwrap_or_default()))
                    .and_then(|h| edit_bundle(&b, &h, c.as_deref()))
            }) {
                Some(Ok(r)) => r,
                Some(Err(source)) => Err(ShimError::Io {
                    path: bundle.clone(),
                    source,
                }),
                None => match config.on_timeout {
                    OnFailure::Allow => {
                        tell(
                            &inv,
                            "warning",
                            &format!(
                                "cuda-preflight-runtime: config.json of container {id} not edited within deadline_ms = {} ms: container not checked (on_timeout = allow)\n",
                                config.deadline_ms
                            ),
                        );
                        Ok(false)
                    }
                    OnFailure::Block => {
                        tell_blocked(
                            &inv,
                            &format!(
                                "cuda-preflight-runtime: blocked container {id}: config.json not edited within deadline_ms = {} ms (on_timeout = block)\n",
                                config.deadline_ms
                            ),
                        );
                        return Err(ShimError::Blocked);
                    }
                },
            }
        };
        if let Err(e) = edited {
            // The shim's own failure is the hook's `on_error`: by default the container starts,
            // unchecked, and the reason is on the runtime's stderr (the engine's log).
            match config.on_error {
                OnFailure::Allow => eprintln!(
                    "cuda-preflight-runtime: error, container not checked (on_error = allow): {e}"
                ),
                OnFailure::Block => return Err(e),
            }
        }
    }
    Ok((runtime, inv, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapper_script_in_front_of_nvidias_runtime_is_not_chained_through() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("nvidia-container-runtime");
        std::fs::write(
            &script,
            "#!/bin/sh\nNVIDIA_CTK_CONFIG_FILE_PATH=/x exec \"$0.real\" \"$@\"\n",
        )
        .unwrap();
        assert!(!chainable(&script), "a shell wrapper");
        let elf = d.path().join("elf/nvidia-container-runtime");
        std::fs::create_dir_all(elf.parent().unwrap()).unwrap();
        std::fs::copy(std::env::current_exe().unwrap(), &elf).unwrap();
        assert!(chainable(&elf), "NVIDIA's own binary");
        std::fs::copy(&elf, d.path().join("elf/nvidia-container-runtime.real")).unwrap();
        assert!(
            !chainable(&elf),
            "a binary wrapper with the real one beside it"
        );
        assert!(!chainable(&d.path().join("missing")), "missing");
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn every_runc_and_crun_global_flag_is_known_and_the_rest_is_said() {
        // (argv, the create bundle found, what is not understood)
        let cases: &[(&[&str], Option<&str>, &[&str])] = &[
            (
                &[
                    "--cgroup-manager",
                    "systemd",
                    "--log-level",
                    "debug",
                    "create",
                    "-b",
                    "/b",
                    "x",
                ],
                Some("/b"),
                &[],
            ),
            (
                &[
                    "--debug",
                    "--systemd-cgroup",
                    "--rootless",
                    "auto",
                    "--criu",
                    "/c",
                    "create",
                    "x",
                ],
                Some("."),
                &[],
            ),
            (&["--debug=true", "state", "x"], None, &[]),
            (
                &["--frobnicate", "v", "create", "-b", "/b", "x"],
                Some("/b"),
                &["global flag --frobnicate"],
            ),
            (
                &["--frob=1", "run", "x"],
                Some("."),
                &["global flag --frob=1"],
            ),
            (&["launch", "x"], None, &["command launch"]),
            (&["restore", "x"], None, &["command restore"]),
            (
                &["create", "-f", "/other.json", "x"],
                Some("."),
                &["create --config"],
            ),
        ];
        for (argv, bundle, said) in cases {
            let inv = parse_args(&os(argv)).unwrap();
            assert_eq!(inv.runtime_args, os(argv), "{argv:?}: passed on untouched");
            assert_eq!(
                inv.create_bundle.as_deref(),
                bundle.map(Path::new),
                "{argv:?}"
            );
            assert_eq!(
                inv.unhandled.len(),
                said.len(),
                "{argv:?}: {:?}",
                inv.unhandled
            );
            for (got, want) in inv.unhandled.iter().zip(said.iter()) {
                assert!(got.starts_with(want), "{argv:?}: {got}");
            }
        }
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table's row type
    fn parse_args_table() {
        // (name, argv, config, runtime argv, create bundle)
        let cases: &[(&str, &[&str], Option<&str>, &[&str], Option<&str>)] = &[
            (
                "containerd shim create",
                &[
                    "--root",
                    "/run/r",
                    "--log",
                    "/l.json",
                    "--log-format",
                    "json",
                    "create",
                    "--bundle",
                    "/b",
                    "--pid-file",
                    "/p",
                    "id1",
                ],
                None,
                &[
                    "--root",
                    "/run/r",
                    "--log",
                    "/l.json",
                    "--log-format",
                    "json",
                    "create",
                    "--bundle",
                    "/b",
                    "--pid-file",
                    "/p",
                    "id1",
                ],
                Some("/b"),
            ),
            (
                "bundle with =",
                &["create", "--bundle=/b2", "x"],
                None,
                &["create", "--bundle=/b2", "x"],
                Some("/b2"),
            ),
            (
                "short -b",
                &["create", "-b", "/b3", "x"],
                None,
                &["create", "-b", "/b3", "x"],
                Some("/b3"),
            ),
            (
                "single-dash long",
                &["create", "-bundle=/b4", "x"],
                None,
                &["create", "-bundle=/b4", "x"],
                Some("/b4"),
            ),
            (
                "bundle after the id",
                &["create", "x", "--bundle", "/b5"],
                None,
                &["create", "x", "--bundle", "/b5"],
                Some("/b5"),
            ),
            (
                "no bundle: runc's cwd",
                &["create", "x"],
                None,
                &["create", "x"],
                Some("."),
            ),
            (
                "pid-file value named -b is a value",
                &["create", "--pid-file", "-b", "x"],
                None,
                &["create", "--pid-file", "-b", "x"],
                Some("."),
            ),
            (
                "start passes",
                &["--root", "/r", "start", "x"],
                None,
                &["--root", "/r", "start", "x"],
                None,
            ),
            (
                "a global flag's value is not the command",
                &["--root", "create", "state", "x"],
                None,
                &["--root", "create", "state", "x"],
                None,
            ),
            (
                "boolean global flags",
                &["--debug", "--systemd-cgroup", "create", "-b", "/b6", "x"],
                None,
                &["--debug", "--systemd-cgroup", "create", "-b", "/b6", "x"],
                Some("/b6"),
            ),
            (
                "our flag is removed",
                &[
                    "--cuda-preflight-config",
                    "/c.toml",
                    "--root",
                    "/r",
                    "create",
                    "--bundle",
                    "/b",
                    "x",
                ],
                Some("/c.toml"),
                &["--root", "/r", "create", "--bundle", "/b", "x"],
                Some("/b"),
            ),
            (
                "our flag with =",
                &["--cuda-preflight-config=/c.toml", "kill", "x", "9"],
                Some("/c.toml"),
                &["kill", "x", "9"],
                None,
            ),
            (
                "our flag after the command is the runtime's",
                &["exec", "--cuda-preflight-config", "/c"],
                None,
                &["exec", "--cuda-preflight-config", "/c"],
                None,
            ),
            (
                "create as an exec argument",
                &["exec", "x", "create"],
                None,
                &["exec", "x", "create"],
                None,
            ),
            (
                "run (create and start in one) gets the hook too",
                &["run", "-b", "/b", "x"],
                None,
                &["run", "-b", "/b", "x"],
                Some("/b"),
            ),
            ("no command", &["--version"], None, &["--version"], None),
            ("empty", &[], None, &[], None),
        ];
        for (name, argv, config, rt, bundle) in cases {
            let inv = parse_args(&os(argv)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(inv.config.as_deref(), config.map(Path::new), "{name}");
            assert_eq!(inv.runtime_args, os(rt), "{name}");
            assert_eq!(
                inv.create_bundle.as_deref(),
                bundle.map(Path::new),
                "{name}"
            );
        }
        for bad in [
            &["--cuda-preflight-config"][..],
            &["--cuda-preflight-config="],
        ] {
            assert!(
                matches!(parse_args(&os(bad)), Err(ShimError::MissingConfigValue)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn create_id_and_log_are_found() {
        let inv = parse_args(&os(&[
            "--root",
            "/r",
            "--log",
            "/l.json",
            "--log-format=json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "cid",
        ]))
        .unwrap();
        assert_eq!(inv.container_id.as_deref(), Some("cid"));
        assert_eq!(inv.log.as_deref(), Some(Path::new("/l.json")));
        assert!(inv.log_json);
        let inv = parse_args(&os(&["--log=/l", "create", "-b", "/b", "c2"])).unwrap();
        assert_eq!(
            (inv.container_id.as_deref(), inv.log_json),
            (Some("c2"), false)
        );
        assert_eq!(
            parse_args(&os(&["state", "c3"])).unwrap().container_id,
            None
        );
    }

    const NV: &str = r#"{"path":"/usr/bin/nvidia-container-runtime-hook","args":["nvidia-container-runtime-hook","prestart"]}"#;
    const CDI: &str =
        r#"{"path":"/usr/bin/nvidia-cdi-hook","args":["nvidia-cdi-hook","create-symlinks"]}"#;
    const OURS: &str = r#"{"path":"/usr/bin/cuda-preflight","args":["cuda-preflight","hook"]}"#;

    #[test]
    fn add_hook_table() {
        let hook = Path::new("/opt/cp/cuda-preflight");
        let added = json!({"path": "/opt/cp/cuda-preflight", "args": ["cuda-preflight", "hook"]});
        // (name, spec, changed, createRuntime after)
        let cases: Vec<(&str, String, bool, Value)> = vec![
            ("no hooks", "{}".into(), true, json!([added])),
            (
                "null hooks",
                r#"{"hooks":null}"#.into(),
                true,
                json!([added]),
            ),
            (
                "after NVIDIA's prestart hook",
                format!(r#"{{"hooks":{{"prestart":[{NV}]}}}}"#),
                true,
                json!([added]),
            ),
            (
                "after a CDI createRuntime hook",
                format!(r#"{{"hooks":{{"createRuntime":[{CDI}]}}}}"#),
                true,
                json!([serde_json::from_str::<Value>(CDI).unwrap(), added]),
            ),
            (
                "already there",
                format!(r#"{{"hooks":{{"createRuntime":[{OURS}]}}}}"#),
                false,
                json!([serde_json::from_str::<Value>(OURS).unwrap()]),
            ),
            (
                "already there from a hooks dir, in prestart",
                format!(r#"{{"hooks":{{"prestart":[{OURS}]}}}}"#),
                false,
                Value::Null,
            ),
        ];
        for (name, text, changed, want) in cases {
            let mut spec: Value = serde_json::from_str(&text).unwrap();
            let before = spec.clone();
            assert_eq!(add_hook(&mut spec, hook, None).unwrap(), changed, "{name}");
            assert_eq!(spec["hooks"]["createRuntime"], want, "{name}");
            // Every other stage is as it was.
            for stage in [
                "prestart",
                "createContainer",
                "startContainer",
                "poststart",
                "poststop",
            ] {
                assert_eq!(
                    spec["hooks"][stage], before["hooks"][stage],
                    "{name}: {stage}"
                );
            }
            // Idempotent: a second pass changes nothing.
            let once = spec.clone();
            assert!(!add_hook(&mut spec, hook, None).unwrap(), "{name}");
            assert_eq!(spec, once, "{name}");
        }
        for (text, want) in [
            ("[]", "not a JSON object"),
            (r#"{"hooks":[]}"#, "`hooks` is not an object"),
            (r#"{"hooks":{"createRuntime":{}}}"#, "not an array"),
        ] {
            let e = add_hook(&mut serde_json::from_str(text).unwrap(), hook, None).unwrap_err();
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn after_nvidias_cdi_hooks_at_create_container() {
        let hook = Path::new("/opt/cp/cuda-preflight");
        let ours = json!({"path": "/opt/cp/cuda-preflight",
                          "args": ["cuda-preflight", "hook", "--stage", "createContainer"]});
        let cdi: Value = serde_json::from_str(CDI).unwrap();
        let ctk = json!({"path": "/usr/bin/nvidia-ctk", "args": ["nvidia-ctk", "hook", "update-ldcache"]});
        let other = json!({"path": "/bin/true"});
        // (name, createContainer before, createContainer after, createRuntime after)
        let cases: Vec<(&str, Value, Value, Value)> = vec![
            (
                "NVIDIA's CDI hooks: ours last, after them",
                json!([cdi, other]),
                json!([cdi, other, ours]),
                Value::Null,
            ),
            (
                "an older spec's nvidia-ctk hook",
                json!([ctk]),
                json!([ctk, ours]),
                Value::Null,
            ),
            (
                "someone else's createContainer hook only: createRuntime as before",
                json!([other]),
                json!([other]),
                json!([{"path": "/opt/cp/cuda-preflight", "args": ["cuda-preflight", "hook"]}]),
            ),
        ];
        for (name, before, after, runtime) in cases {
            let mut spec = json!({"hooks": {"createContainer": before}});
            assert!(add_hook(&mut spec, hook, None).unwrap(), "{name}");
            assert_eq!(spec["hooks"]["createContainer"], after, "{name}");
            assert_eq!(spec["hooks"]["createRuntime"], runtime, "{name}");
            assert!(!add_hook(&mut spec, hook, None).unwrap(), "{name}: twice");
        }
    }

    #[test]
    fn nvidia_runtime_mode_from_its_config() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("etc/nvidia-container-runtime/config.toml");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        // No file: auto, which is jit-cdi off Tegra (internal/info/auto.go).
        assert_eq!(nvidia_runtime_mode(d.path()), "jit-cdi");
        std::fs::write(&cfg, "[nvidia-container-runtime]\nmode = \"legacy\"\n").unwrap();
        assert_eq!(nvidia_runtime_mode(d.path()), "legacy");
        std::fs::write(&cfg, "[nvidia-container-runtime]\nmode = \"auto\"\n").unwrap();
        std::fs::write(d.path().join("etc/nv_tegra_release"), "# R36").unwrap();
        assert_eq!(nvidia_runtime_mode(d.path()), "csv");
    }

    #[test]
    fn hook_gets_the_shims_config_file() {
        let mut spec = json!({});
        add_hook(
            &mut spec,
            Path::new("/x/cuda-preflight"),
            Some(Path::new("/t/c.toml")),
        )
        .unwrap();
        assert_eq!(
            spec["hooks"]["createRuntime"][0]["args"],
            json!(["cuda-preflight", "hook", "--config", "/t/c.toml"])
        );
    }

    #[test]
    fn edit_bundle_keeps_everything_else_and_the_file_mode() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("config.json");
        // Fields this crate does not model, odd numbers and nesting: all must survive.
        let text = r#"{"ociVersion":"1.2.0","x-vendor":{"deep":[1,2.5,-3,null,true,"é"]},
            "process":{"args":["sh"],"env":["A=1"],"future":{"k":18446744073709551615}},
            "annotations":{"a":"b"},"hooks":{"poststop":[{"path":"/bin/true"}]}}"#;
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(edit_bundle(d.path(), Path::new("/x/cuda-preflight"), None).unwrap());
        let after: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut want: Value = serde_json::from_str(text).unwrap();
        want["hooks"]["createRuntime"] =
            json!([{"path": "/x/cuda-preflight", "args": ["cuda-preflight", "hook"]}]);
        assert_eq!(after, want);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        // Second create of the same bundle: nothing written, no temporary file left.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(!edit_bundle(d.path(), Path::new("/x/cuda-preflight"), None).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("config.json")]);
    }

    #[test]
    fn edit_bundle_errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let e = edit_bundle(d.path(), Path::new("/x"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config.json") && e.contains("No such file"),
            "{e}"
        );
        std::fs::write(d.path().join("config.json"), "{not json").unwrap();
        let e = edit_bundle(d.path(), Path::new("/x"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a JSON spec"), "{e}");
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table's row type
    fn find_runtime_table() {
        let only =
            |have: &'static [&'static str]| move |p: &Path| have.iter().any(|h| Path::new(h) == p);
        let cases: &[(
            &str,
            Option<&str>,
            &'static [&'static str],
            std::result::Result<&str, &str>,
        )] = &[
            (
                "configured",
                Some("/opt/rt/crun"),
                &["/opt/rt/crun", "/usr/bin/runc"],
                Ok("/opt/rt/crun"),
            ),
            (
                "configured but missing",
                Some("/opt/rt/crun"),
                &["/usr/bin/runc"],
                Err("does not exist"),
            ),
            (
                "configured relative",
                Some("runc"),
                &["/usr/bin/runc"],
                Err("not an absolute path"),
            ),
            (
                "nvidia first",
                None,
                &["/usr/sbin/runc", "/usr/local/bin/nvidia-container-runtime"],
                Ok("/usr/local/bin/nvidia-container-runtime"),
            ),
            (
                "runc",
                None,
                &["/usr/local/sbin/runc", "/usr/sbin/runc"],
                Ok("/usr/sbin/runc"),
            ),
            ("nothing", None, &[], Err("no runtime found")),
        ];
        for (name, configured, have, want) in cases {
            let got = find_runtime(configured.map(Path::new), None, only(have));
            match (got, want) {
                (Ok(p), Ok(w)) => assert_eq!(p, Path::new(w), "{name}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
        let me = Path::new("/opt/rt/cuda-preflight-runtime");
        let e = find_runtime(Some(me), Some(me), |_| true).unwrap_err();
        assert!(matches!(e, ShimError::RuntimeIsShim(_)), "{e}");
    }
}
