//! `cuda-preflight check`: the hook's pipeline against a bundle, a rootfs or an image, without
//! starting anything, against this host or one or more host profiles ("would this start on our
//! A100s?"). A rootfs or an image becomes a synthetic bundle started with every GPU asked for
//! (`input::image`), so it goes through the same facts and rules as a bundle.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use crate::commands::{SettingsArgs, container_facts, host_facts, run_rules};
use crate::facts::container;
use crate::input::bundle::Bundle;
use crate::input::image::{self, ImageRef, engines::EngineOptions};
use crate::output;
use crate::verdict::{self, Decision, MODE_ANNOTATION, Verdict};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// OCI bundle directory (holds config.json)
    #[arg(long, value_name = "DIR", group = "what", required_unless_present_any = ["rootfs", "image"])]
    pub bundle: Option<PathBuf>,
    /// A plain rootfs directory, judged as an image started with every GPU (no environment)
    #[arg(long, value_name = "DIR", group = "what")]
    pub rootfs: Option<PathBuf>,
    /// An image, judged as started with every GPU: oci:DIR[:TAG], oci-archive:FILE[:TAG],
    /// docker-archive:FILE, containers-storage:NAME, docker-daemon:NAME, dir:ROOTFS, or a NAME
    /// looked up in Podman's store, then Docker's
    #[arg(long, value_name = "REF", group = "what")]
    pub image: Option<String>,
    /// Host profile JSON; repeat to judge several hosts [config: host_profile]
    #[arg(long, value_name = "FILE")]
    pub host_profile: Vec<PathBuf>,
    /// Every *.json host profile in DIR (collect them with `cuda-preflight facts --json`)
    #[arg(long, value_name = "DIR")]
    pub fleet: Option<PathBuf>,
    /// Podman's store root for containers-storage: images [config: storage_root]
    #[arg(long, value_name = "DIR")]
    pub storage_root: Option<PathBuf>,
    /// Podman's run root [config: storage_runroot]
    #[arg(long, value_name = "DIR")]
    pub storage_runroot: Option<PathBuf>,
    /// Podman's storage driver [config: storage_driver]
    #[arg(long, value_name = "NAME")]
    pub storage_driver: Option<String>,
    /// Read an image of Podman's store where the engine keeps it (`podman image mount`), not a
    /// saved copy: the check sees the layer directories the image's containers will, so it
    /// fills the scan cache their first start reads (needs root)
    #[arg(long, requires = "image")]
    pub warm: bool,
    /// Print JSON: {"verdict", "findings"}, or {"verdict", "hosts": [...]} for several hosts
    #[arg(long)]
    pub json: bool,
    /// Print the image's profile instead of a verdict: the GPUs and drivers it runs on, judged by
    /// the same rules on every GPU kind and driver release (docs/fleet.md)
    #[arg(long, conflicts_with_all = ["host_profile", "fleet"])]
    pub profile: bool,
    /// Write the image's profile to FILE
    #[arg(long, value_name = "FILE", conflicts_with_all = ["host_profile", "fleet"])]
    pub emit_profile: Option<PathBuf>,
    /// Attach the profile to this image in its registry as an OCI referrer (NFD's
    /// image-compatibility artifact): REGISTRY/REPO:TAG or @DIGEST, the same image as --image
    #[arg(long, value_name = "REF", conflicts_with_all = ["host_profile", "fleet"])]
    pub attach: Option<String>,
    /// A registry (host:port) reached over plain HTTP for --attach; repeat [config: plain_http]
    #[arg(long, value_name = "HOST")]
    pub plain_http: Vec<String>,
}

/// Bad input (exit 2) is an `Err`; otherwise the exit code: 0 allow or warn, 1 block.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let config = args.settings.load()?;
    // Hosts first: a bad profile is found before a multi-GB image is read.
    let mut profiles: Vec<Option<PathBuf>> = args.host_profile.iter().cloned().map(Some).collect();
    if let Some(dir) = &args.fleet {
        profiles.extend(fleet_profiles(dir)?.into_iter().map(Some));
    }
    if profiles.is_empty() {
        profiles.push(config.host_profile.clone());
    }
    let hosts = profiles
        .iter()
        .map(|p| host_facts(p.as_deref(), &config.host_root))
        .collect::<Result<Vec<_>, _>>()?;
    // The image (and its private directory, or the engine's mount) lives until the check is
    // done.
    let mut _mounted = None;
    let loaded = match (&args.image, &args.rootfs) {
        (Some(r), _) if args.warm => {
            let name = match ImageRef::parse(r)? {
                ImageRef::ContainersStorage(n) | ImageRef::Name(n) => n,
                _ => anyhow::bail!(
                    "{r}: --warm reads an image of Podman's store (containers-storage:NAME or NAME)"
                ),
            };
            let m = image::mounted::mount(&engine_options(args, &config), &name)
                .with_context(|| r.clone())?;
            let img = image::Image::in_place(
                m.rootfs.clone(),
                m.env.clone(),
                vec![format!(
                    "read through podman image mount at {}",
                    m.rootfs.display()
                )],
            );
            _mounted = Some(m);
            Some(img)
        }
        (Some(r), _) => Some(load_image(&ImageRef::parse(r)?, args, &config)?),
        (None, Some(dir)) => Some(load_image(&ImageRef::Rootfs(dir.clone()), args, &config)?),
        (None, None) => None,
    };
    let (bundle, name, what) = match (&loaded, &args.bundle) {
        (Some(img), _) => {
            let name = args
                .image
                .clone()
                .unwrap_or_else(|| format!("dir:{}", img.rootfs.display()));
            (img.gpu_bundle(), name, "image")
        }
        (None, Some(dir)) => {
            let b = Bundle::load(dir)?;
            let name = b.dir.display().to_string();
            (b, name, "bundle")
        }
        (None, None) => anyhow::bail!("one of --bundle, --rootfs or --image is needed"),
    };
    // Judging gets the hook's deadline: an image whose facts take longer would meet the hook's
    // `on_timeout` at every start, and `check` says so instead of running on (a 100,000-entry
    // ld.so.cache took 195 s before the loader's search became linear, issue 22). Loading the
    // image is not counted: pulling and unpacking layers is not something the hook does.
    crate::commands::hook::set_timer(
        config.deadline_ms,
        2,
        format!(
            "cuda-preflight: check of {} did not finish within deadline_ms = {} ms: the hook would stop at the same point and follow on_timeout; see RELIABILITY.md\n",
            args.bundle
                .as_deref()
                .map(|b| b.display().to_string())
                .or_else(|| args.image.clone())
                .or_else(|| args.rootfs.as_ref().map(|r| r.display().to_string()))
                .unwrap_or_default(),
            config.deadline_ms
        ),
    );
    let image_findings = loaded.as_ref().map(|i| i.findings()).unwrap_or_default();
    let request = container::detect(&bundle.spec, None);
    if request.wants_gpu() {
        bundle.require_rootfs()?;
    }
    // Offline nothing has run yet: every NVIDIA CDI hook of the spec is still to come.
    let pending = crate::facts::start_path::nvidia_cdi_hooks(&bundle.spec);
    let facts = container_facts(
        &bundle,
        request,
        pending,
        None,
        std::path::Path::new("/proc"),
        &config.host_root,
        None,
        crate::commands::headroom_policy(&config),
        &crate::facts::gpu_code::binaries::WalkSettings::from_config(&config),
    );
    if args.profile || args.emit_profile.is_some() || args.attach.is_some() {
        let env = loaded
            .as_ref()
            .filter(|_| args.image.is_some())
            .map(|i| i.env.as_slice());
        return emit_profile(args, &config, &facts, &image_findings, &name, env, out);
    }
    let annotation = bundle
        .spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(MODE_ANNOTATION))
        .map(String::as_str);
    let mut verdicts: Vec<(Option<PathBuf>, Verdict)> = Vec::new();
    for (p, host) in profiles.into_iter().zip(&hosts) {
        let mut findings = run_rules(&facts, host);
        crate::rules::versions::requirements::on_path(
            &mut findings,
            &facts.start_path,
            config.enforce_requirements,
        );
        findings.extend(image_findings.iter().cloned());
        let (mode, note) = verdict::effective_mode(&config, annotation);
        findings.extend(note);
        verdicts.push((p, verdict::decide(&config, mode, findings)));
    }
    let worst = verdicts
        .iter()
        .map(|(_, v)| v.verdict)
        .max()
        .unwrap_or(Decision::Allow);
    // Judged: the output is not cut by the deadline.
    crate::commands::hook::set_timer(0, 2, String::new());
    if args.json {
        let doc = if verdicts.len() == 1 {
            json!({"verdict": worst, "findings": verdicts[0].1.findings, "binaries": facts.binaries,
                   "toolchains": facts.toolchains, "load": facts.load})
        } else {
            json!({
                "verdict": worst,
                "hosts": verdicts.iter().map(|(p, v)| json!({
                    "profile": p.as_ref().map(|p| p.display().to_string()),
                    "verdict": v.verdict,
                    "findings": v.findings,
                })).collect::<Vec<_>>(),
                "binaries": facts.binaries,
                "load": facts.load,
                "toolchains": facts.toolchains,
            })
        };
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
    } else if verdicts.len() == 1 {
        write!(
            out,
            "{}",
            output::message::render(&name, &verdicts[0].1, false).replacen(
                "container ",
                &format!("{what} "),
                1
            )
        )?;
    } else {
        let rows: Vec<[String; 4]> = verdicts
            .iter()
            .map(|(p, v)| {
                let host = p
                    .as_ref()
                    .map_or("this host".to_string(), |p| p.display().to_string());
                let (pred, head) = row_cells(v);
                [host, v.verdict.as_str().to_string(), pred, head]
            })
            .collect();
        let w = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
        let (w0, w2) = (w(0), w(2));
        // An image's rows name it: the table is image × host.
        let lead = if what == "image" {
            format!("{name}  ")
        } else {
            String::new()
        };
        for [host, verdict, pred, head] in &rows {
            let (pred, head) = (output::printable(pred), output::printable(head));
            writeln!(out, "{lead}{host:<w0$}  {verdict:<5}  {pred:<w2$}  {head}")?;
        }
    }
    out.flush().context("writing output")?;
    Ok(if worst == Decision::Block { 1 } else { 0 })
}

/// The first judging finding (block, else warn) as two cells: the error it predicts, short
/// (`209 CUDA_ERROR_NO_BINARY_FOR_GPU`, a loader or NVML message cut at 48 characters, or `-`),
/// and the first clause of its evidence; the predicted error has its own column here, so the
/// headline's "would fail with …" is not repeated.
fn row_cells(v: &Verdict) -> (String, String) {
    use crate::finding::Severity;
    const MAX: usize = 48;
    let f = v
        .findings
        .iter()
        .find(|f| f.severity == Severity::Block)
        .or_else(|| v.findings.iter().find(|f| f.severity == Severity::Warn));
    let Some(f) = f else {
        return ("-".into(), "no problems found".into());
    };
    let pred = match &f.predicted {
        Some(p) => match (&p.code, &p.name) {
            (Some(c), Some(n)) => format!("{c} {n}"),
            (None, Some(n)) => n.clone(),
            _ if p.message.chars().count() > MAX => {
                format!("{}…", p.message.chars().take(MAX - 1).collect::<String>())
            }
            _ => p.message.clone(),
        },
        None => "-".into(),
    };
    let first = f.evidence.split(';').next().unwrap_or(&f.evidence).trim();
    (pred, format!("{}: {first}", f.id))
}

fn engine_options(args: &CheckArgs, config: &crate::config::Config) -> EngineOptions {
    EngineOptions {
        storage_root: args.storage_root.clone().or(config.storage_root.clone()),
        storage_runroot: args
            .storage_runroot
            .clone()
            .or(config.storage_runroot.clone()),
        storage_driver: args
            .storage_driver
            .clone()
            .or(config.storage_driver.clone()),
        ..EngineOptions::default()
    }
}

fn load_image(
    r: &ImageRef,
    args: &CheckArgs,
    config: &crate::config::Config,
) -> anyhow::Result<image::Image> {
    let engine = engine_options(args, config);
    // The message names the image as the user wrote it.
    let what = args
        .image
        .clone()
        .or_else(|| args.rootfs.as_ref().map(|d| d.display().to_string()))
        .unwrap_or_default();
    image::load(r, &engine, None).with_context(|| what)
}

/// `--profile`, `--emit-profile`, `--attach`: the image's profile (`fleet::profile`).
fn emit_profile(
    args: &CheckArgs,
    config: &crate::config::Config,
    facts: &crate::commands::ContainerFacts,
    image_findings: &[crate::finding::Finding],
    name: &str,
    env: Option<&[String]>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let profile = crate::fleet::profile::compute(facts, image_findings, config, name);
    let text = serde_json::to_string_pretty(&profile)?;
    if let Some(f) = &args.emit_profile {
        crate::atomic::write_file(f, format!("{text}\n").as_bytes())
            .with_context(|| format!("{}: cannot write the profile", f.display()))?;
    }
    if let Some(r) = &args.attach {
        let mut plain = config.plain_http.clone();
        plain.extend(args.plain_http.iter().cloned());
        let digest = crate::fleet::runtime()?.block_on(async {
            crate::fleet::registry::Registry::new(&plain, None)
                .attach(r, &profile, env)
                .await
        })?;
        writeln!(out, "attached profile {digest} to {r}")?;
    }
    if args.profile {
        writeln!(out, "{text}")?;
    }
    out.flush().context("writing output")?;
    Ok(0)
}

/// Every `*.json` file of a fleet directory, sorted by name; none is bad input.
fn fleet_profiles(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read the fleet directory", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    out.sort();
    if out.is_empty() {
        anyhow::bail!(
            "{}: no *.json host profile in the fleet directory",
            dir.display()
        );
    }
    Ok(out)
}
