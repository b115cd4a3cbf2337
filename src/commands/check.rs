//! `cuda-preflight check`: the hook's pipeline against a bundle, without starting anything,
//! against this host or one or more host profiles ("would this start on our A100s?").

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::commands::{SettingsArgs, container_facts, host_facts, run_rules};
use crate::facts::container;
use crate::input::bundle::Bundle;
use crate::output;
use crate::verdict::{self, Decision, MODE_ANNOTATION, Verdict};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// OCI bundle directory (holds config.json)
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Host profile JSON; repeat to judge several hosts [config: host_profile]
    #[arg(long, value_name = "FILE")]
    pub host_profile: Vec<PathBuf>,
    /// Print JSON: {"verdict", "findings"}, or {"verdict", "hosts": [...]} for several hosts
    #[arg(long)]
    pub json: bool,
}

/// Bad input (exit 2) is an `Err`; otherwise the exit code: 0 allow or warn, 1 block.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let config = args.settings.load()?;
    let bundle = Bundle::load(&args.bundle)?;
    let request = container::detect(&bundle.spec, None);
    if request.wants_gpu() {
        bundle.require_rootfs()?;
    }
    let facts = container_facts(
        &bundle,
        request,
        None,
        std::path::Path::new("/proc"),
        &config.host_root,
        None,
        crate::commands::headroom_policy(&config),
        &crate::facts::binaries::WalkSettings::from_config(&config),
    );
    let mut profiles: Vec<Option<PathBuf>> = args.host_profile.iter().cloned().map(Some).collect();
    if profiles.is_empty() {
        profiles.push(config.host_profile.clone());
    }
    let annotation = bundle
        .spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(MODE_ANNOTATION))
        .map(String::as_str);
    let mut verdicts: Vec<(Option<PathBuf>, Verdict)> = Vec::new();
    for p in profiles {
        let host = host_facts(p.as_deref(), &config.host_root)?;
        let mut findings = run_rules(&facts, &host);
        let (mode, note) = verdict::effective_mode(&config, annotation);
        findings.extend(note);
        verdicts.push((p, verdict::decide(&config, mode, findings)));
    }
    let worst = verdicts
        .iter()
        .map(|(_, v)| v.verdict)
        .max()
        .unwrap_or(Decision::Allow);
    let name = bundle.dir.display().to_string();
    if args.json {
        let doc = if verdicts.len() == 1 {
            json!({"verdict": worst, "findings": verdicts[0].1.findings, "binaries": facts.binaries})
        } else {
            json!({
                "verdict": worst,
                "hosts": verdicts.iter().map(|(p, v)| json!({
                    "profile": p.as_ref().map(|p| p.display().to_string()),
                    "verdict": v.verdict,
                    "findings": v.findings,
                })).collect::<Vec<_>>(),
                "binaries": facts.binaries,
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
                "bundle ",
                1
            )
        )?;
    } else {
        let width = verdicts
            .iter()
            .map(|(p, _)| p.as_ref().map_or(4, |p| p.display().to_string().len()))
            .max()
            .unwrap_or(4);
        for (p, v) in &verdicts {
            let host = p
                .as_ref()
                .map_or("this host".to_string(), |p| p.display().to_string());
            let head = output::message::headline(&v.findings)
                .unwrap_or_else(|| "no problems found".into());
            writeln!(out, "{host:<width$}  {:<5}  {head}", v.verdict.as_str())?;
        }
    }
    out.flush().context("writing output")?;
    Ok(if worst == Decision::Block { 1 } else { 0 })
}
