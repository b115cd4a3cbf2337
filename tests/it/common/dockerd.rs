//! A private Docker daemon (Debian's `docker.io`, 20.10) for the tests that need one
//! (tests/it/docker.rs, tests/it/image.rs): its own containerd, and everything either writes — data
//! root, exec root, pidfile, sockets, containerd's root and state, `daemon.json`, the logs — in a
//! temporary directory of its own, so two test processes can each run one at the same time.
//! Dropping it stops both daemons (SIGTERM, a grace period, SIGKILL, reaped), also when the test
//! fails or the start does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::require_tool;

/// How long containerd, dockerd or a reload may take to come up.
const READY: Duration = Duration::from_secs(30);

pub struct Dockerd {
    dir: tempfile::TempDir,
    docker: PathBuf,
    containerd: Option<Child>,
    dockerd: Option<Child>,
}

impl Drop for Dockerd {
    /// dockerd first, then its containerd: SIGTERM, a grace period, then SIGKILL and a wait.
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        for child in self.dockerd.iter_mut().chain(self.containerd.iter_mut()) {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Dockerd {
    /// The daemon's private directory, with a `daemon.json` that names no runtime; nothing is
    /// started yet. Write what the daemon should find there (`write_daemon_json`, hook scripts,
    /// runtime configs), then `start`.
    pub fn new() -> Self {
        let d = Dockerd {
            dir: tempfile::tempdir().unwrap(),
            docker: require_tool("docker"),
            containerd: None,
            dockerd: None,
        };
        d.write_daemon_json(&[], None);
        d
    }

    /// The private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The `DOCKER_HOST` value for this daemon.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    /// dockerd's log, for failure messages.
    pub fn log(&self) -> PathBuf {
        self.path("dockerd.log")
    }

    /// (Re)write `daemon.json`: `runtimes` as name and entry (`{"path": …, "runtimeArgs": […]}`),
    /// and the default runtime when given. Read at `start`, and again at `reload`.
    pub fn write_daemon_json(&self, runtimes: &[(&str, Value)], default_runtime: Option<&str>) {
        let mut config = json!({
            // Else dockerd 20.10 writes its identity key to /etc/docker/key.json.
            "deprecated-key-path": self.path("key.json"),
        });
        if !runtimes.is_empty() {
            config["runtimes"] = Value::Object(
                runtimes
                    .iter()
                    .map(|(name, rt)| (name.to_string(), rt.clone()))
                    .collect(),
            );
        }
        if let Some(name) = default_runtime {
            config["default-runtime"] = json!(name);
        }
        std::fs::write(
            self.path("daemon.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    /// Start containerd, then dockerd, and wait (bounded) until each answers. `path_first` goes
    /// in front of dockerd's `PATH` (dockerd looks for `nvidia-container-runtime-hook` there at
    /// start-up, and only then accepts `--gpus`).
    pub fn start(&mut self, path_first: Option<&Path>) {
        assert!(self.containerd.is_none(), "started twice");
        let dockerd = require_tool("dockerd");
        let containerd = require_tool("containerd");
        let d = self.dir.path().to_path_buf();
        // A containerd of its own; the CRI plugin is not needed and only slows the start.
        std::fs::write(
            d.join("containerd.toml"),
            format!(
                "version = 2\nroot = \"{0}/ctd-root\"\nstate = \"{0}/ctd-state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{0}/containerd.sock\"\n",
                d.display()
            ),
        )
        .unwrap();
        let log = |name: &str| Stdio::from(std::fs::File::create(d.join(name)).unwrap());
        self.containerd = Some(
            Command::new(containerd)
                .arg("--config")
                .arg(d.join("containerd.toml"))
                .stdout(log("containerd.out"))
                .stderr(log("containerd.log"))
                .spawn()
                .unwrap(),
        );
        self.wait_for(|_| d.join("containerd.sock").exists(), "containerd");

        let mut cmd = Command::new(dockerd);
        cmd.arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--containerd")
            .arg(d.join("containerd.sock"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(self.host())
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--bridge=none",
            ])
            .args(["--ip-forward=false", "--ip-masq=false"])
            .stdout(log("dockerd.out"))
            .stderr(log("dockerd.log"));
        if let Some(first) = path_first {
            cmd.env(
                "PATH",
                format!(
                    "{}:{}",
                    first.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        }
        self.dockerd = Some(cmd.spawn().unwrap());
        self.wait_for(|d| d.docker(&["version"], None).status.success(), "dockerd");
    }

    /// Have dockerd read `daemon.json` again (SIGHUP), and wait (bounded) until `ready` says the
    /// change is in effect.
    #[allow(unsafe_code)]
    pub fn reload(&mut self, ready: impl FnMut(&Self) -> bool, what: &str) {
        let pid = self.dockerd.as_ref().expect("dockerd is started").id() as i32;
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        self.wait_for(ready, what);
    }

    /// `docker ARGS` against this daemon, with `stdin` as its input (else none), killed after 60 s
    /// (`timeout -k`: the client forwards a plain TERM to the container, which may ignore it).
    pub fn docker(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = Command::new("timeout")
            .args(["-k", "5", "60"])
            .arg(&self.docker)
            .args(args)
            .env("DOCKER_HOST", self.host())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(data) = stdin {
            // Written from a thread of its own: the client may fill its stdout or stderr pipe
            // before it has read all of its input.
            let mut pipe = c.stdin.take().unwrap();
            let data = data.to_vec();
            let writer = std::thread::spawn(move || pipe.write_all(&data));
            let out = c.wait_with_output().unwrap();
            // A client that failed before reading all of it says why in its stderr, which the
            // caller's assertion on the status shows.
            if let Err(e) = writer.join().unwrap() {
                assert!(
                    !out.status.success(),
                    "docker {args:?} succeeded without reading all of its input: {e}"
                );
            }
            return out;
        }
        c.wait_with_output().unwrap()
    }

    /// Poll `ready` every 200 ms for up to 30 s; fail at once with the log of a daemon that
    /// exited, or with dockerd's (containerd's while dockerd is not started) when time is up.
    fn wait_for(&mut self, mut ready: impl FnMut(&Self) -> bool, what: &str) {
        let deadline = Instant::now() + READY;
        while !ready(self) {
            for (child, name) in [
                (&mut self.containerd, "containerd"),
                (&mut self.dockerd, "dockerd"),
            ] {
                let Some(child) = child else { continue };
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "{name} exited ({status}) while waiting for {what}; {name}.log:\n{}",
                        std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                            .unwrap_or_default()
                    );
                }
            }
            if Instant::now() > deadline {
                let name = if self.dockerd.is_some() {
                    "dockerd"
                } else {
                    "containerd"
                };
                panic!(
                    "{what} did not come up in {} s; {name}.log:\n{}",
                    READY.as_secs(),
                    std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
