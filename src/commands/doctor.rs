//! `cuda-preflight doctor [--json]`: the whole host checked in one run — the manual
//! GPU-in-container troubleshooting, automated. Exit 0 when nothing fails (warnings allowed),
//! 1 when a check fails, 2 on bad input.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::commands::SettingsArgs;
use crate::facts::host::HostProfile;
use crate::facts::host::doctor;
use crate::facts::host::nvml::{self, FactSource};
use crate::rules::host::doctor::{Check, Policy, Status, checks};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Host profile JSON instead of asking NVML (driver, GPUs) [config: host_profile]
    #[arg(long, value_name = "FILE")]
    pub host_profile: Option<PathBuf>,
    /// Print JSON: {"ok", "checks": [{"id", "status", "detail", "fix"}]}
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DoctorArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let config = args.settings.load()?;
    let root = &config.host_root;
    let profile = args
        .host_profile
        .as_deref()
        .or(config.host_profile.as_deref());
    let (host, source, notes) = match profile {
        Some(p) => {
            let mut h = HostProfile::load(p).context("--host-profile")?;
            if h.device_majors.is_empty() {
                h.device_majors = crate::facts::host::device_majors_from_proc(root);
            }
            (h, FactSource::None, Vec::new())
        }
        None => {
            let f = nvml::gather(root, root == std::path::Path::new("/"));
            (f.profile, f.source, f.notes)
        }
    };
    let facts = doctor::gather(
        root,
        host,
        source,
        notes,
        &config.disk_paths,
        std::time::Duration::from_millis(config.probe_deadline_ms),
        doctor::nri(
            root,
            config
                .nri_socket
                .as_deref()
                .unwrap_or(std::path::Path::new(crate::commands::nri::DEFAULT_SOCKET)),
            &config.state_dir,
        ),
    );
    let list = checks(
        &facts,
        Policy {
            min_free_disk_mib: config.min_free_disk_mib,
        },
    );
    let ok = !list.iter().any(|c| c.status == Status::Fail);
    if args.json {
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            ok: bool,
            checks: &'a [Check],
        }
        serde_json::to_writer_pretty(&mut *out, &Doc { ok, checks: &list })?;
        writeln!(out)?;
    } else {
        out.write_all(render(&list).as_bytes())?;
    }
    out.flush().context("writing output")?;
    Ok(if ok { 0 } else { 1 })
}

/// The table: one line per check, `mark id detail`, the fix under it, and a summary line.
pub fn render(list: &[Check]) -> String {
    let w = list.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut s = String::new();
    let indent = " ".repeat(w + 3);
    for c in list {
        s.push_str(&crate::output::message::wrap(
            &format!("{} {:<w$} ", c.status.mark(), c.id),
            &c.detail,
            &indent,
            100,
        ));
        if !c.fix.is_empty() {
            s.push_str(&crate::output::message::wrap(
                &format!("{indent}fix: "),
                &c.fix,
                &format!("{indent}     "),
                100,
            ));
        }
    }
    let count = |st: Status| list.iter().filter(|c| c.status == st).count();
    let (f, wn) = (count(Status::Fail), count(Status::Warn));
    s.push_str(&match (f, wn) {
        (0, 0) => "all checks passed\n".to_string(),
        (0, w) => format!("no failures, {w} warning(s)\n"),
        (f, w) => format!("{f} failed, {w} warning(s): GPU containers on this host will fail until the failures are fixed\n"),
    });
    s
}
