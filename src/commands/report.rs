//! `cuda-preflight report [ID] [--json]`: the reports the hook left in the state directory —
//! one container's, or a list of the latest.

use std::io::Write;

use anyhow::Context;

use crate::commands::SettingsArgs;
use crate::output::message::wrap;
use crate::output::printable;
use crate::output::report::{file_name, reports_dir};

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Container id; without it, the latest reports are listed
    pub id: Option<String>,
    /// Print JSON (the report as recorded, or a list of them)
    #[arg(long)]
    pub json: bool,
}

fn load(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let bytes =
        crate::input::read_capped(path, 16 << 20).with_context(|| format!("{}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a cuda-preflight report", path.display()))
}

/// The report of `id`, or of the one container whose id starts with it (the short id the block
/// message shows); the exact path when there is none or several.
fn find(dir: &std::path::Path, id: &str) -> std::path::PathBuf {
    let exact = dir.join(file_name(id));
    if exact.exists() || id.len() < 4 {
        return exact;
    }
    let prefix = file_name(id).trim_end_matches(".json").to_string();
    let matches: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
                })
                .map(|e| e.path())
                .take(2)
                .collect()
        })
        .unwrap_or_default();
    match matches.as_slice() {
        [one] => one.clone(),
        _ => exact,
    }
}

/// Exit 0 when shown, 2 when there is no such report.
pub fn run(args: &ReportArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let config = args.settings.load()?;
    let dir = reports_dir(&config.state_dir);
    let Some(id) = &args.id else {
        let mut reports: Vec<serde_json::Value> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
                })
                .filter_map(|e| load(&e.path()).ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("{}", dir.display())),
        };
        reports.sort_by_key(|r| std::cmp::Reverse(r["time"].as_u64().unwrap_or(0)));
        reports.truncate(50);
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &serde_json::json!({"reports": reports}))?;
            writeln!(out)?;
        } else if reports.is_empty() {
            writeln!(out, "no reports in {}", dir.display())?;
        } else {
            for r in &reports {
                let ids: Vec<&str> = r["findings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| f["severity"] != "info")
                    .filter_map(|f| f["id"].as_str())
                    .collect();
                writeln!(
                    out,
                    "{:<20} {:<5} {}",
                    printable(r["container_id"].as_str().unwrap_or("?"))
                        .chars()
                        .take(20)
                        .collect::<String>(),
                    r["verdict"].as_str().unwrap_or("?"),
                    if ids.is_empty() {
                        "-".to_string()
                    } else {
                        printable(&ids.join(", ")).into_owned()
                    }
                )?;
            }
        }
        return Ok(0);
    };
    let path = find(&dir, id);
    if !path.exists() {
        anyhow::bail!(
            "no report for container {id} in {} (reports are kept for GPU containers only)",
            dir.display()
        );
    }
    let r = load(&path)?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &r)?;
        writeln!(out)?;
        return Ok(0);
    }
    writeln!(
        out,
        "container {}: {} (mode {}, {:.1} ms)",
        printable(id),
        printable(r["verdict"].as_str().unwrap_or("?")),
        printable(r["mode"].as_str().unwrap_or("?")),
        r["duration_ms"].as_f64().unwrap_or(0.0)
    )?;
    if let Some(e) = r["error"].as_str() {
        writeln!(out, "  hook error: {}", printable(e))?;
    }
    for f in r["findings"].as_array().into_iter().flatten() {
        let pad = " ".repeat(10);
        out.write_all(
            wrap(
                &format!(
                    "  {:<5} {}: ",
                    printable(f["severity"].as_str().unwrap_or("?")),
                    printable(f["id"].as_str().unwrap_or("?"))
                ),
                &printable(f["evidence"].as_str().unwrap_or("")),
                &pad,
                100,
            )
            .as_bytes(),
        )?;
        if let Some(p) = f["predicted"].as_object() {
            let code = p
                .get("code")
                .and_then(|c| c.as_i64())
                .map(|c| format!("{c} "))
                .unwrap_or_default();
            let name = printable(p.get("name").and_then(|n| n.as_str()).unwrap_or(""));
            writeln!(
                out,
                "        predicted: {code}{name} \"{}\"",
                printable(p.get("message").and_then(|m| m.as_str()).unwrap_or(""))
            )?;
        }
        if let Some(fix) = f["fix"].as_str().filter(|s| !s.is_empty()) {
            out.write_all(wrap("        fix: ", &printable(fix), &pad, 100).as_bytes())?;
        }
    }
    Ok(0)
}
