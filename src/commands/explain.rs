//! `cuda-preflight explain CODE|NAME`: a CUDA error people meet in containers, by number or by
//! name — the driver's name and text, what it means there, its usual causes, and which finding
//! catches it first.

use std::io::Write;

use serde_json::json;

use crate::finding::Predicted;
use crate::knowledge::{self, Explanation};

#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// Error number (304) or name (CUDA_ERROR_OPERATING_SYSTEM, cudaErrorInsufficientDriver)
    pub error: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

fn lookup(q: &str) -> Option<(Predicted, Option<Explanation>)> {
    let q = q.trim();
    // NVML's words for the same cause as 803: a driver library that is not the kernel module's.
    let nvml = crate::rules::host::driver_libs::NVML_MISMATCH;
    if q.len() >= 8 && nvml.to_ascii_lowercase().contains(&q.to_ascii_lowercase()) {
        let e = knowledge::explanations().find(|e| e.code == 803 && e.api == "driver");
        return Some((Predicted::message(crate::finding::Api::Nvml, nvml), e));
    }
    let code: Option<i64> = q.parse().ok();
    let runtime = crate::rules::versions::driver_compat::insufficient_driver();
    // 35 and cudaErrorInsufficientDriver are the runtime's: the driver's enum has no 35.
    if code == Some(35)
        || runtime
            .name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(q))
    {
        let e = knowledge::explanations().find(|e| e.code == 35 && e.api == "runtime");
        return Some((runtime, e));
    }
    let d = match code {
        Some(c) => knowledge::driver_error(c)?,
        None => knowledge::driver_error_by_name(q)
            .or_else(|| knowledge::driver_error_by_name(&format!("CUDA_ERROR_{q}")))?,
    };
    let e = knowledge::explanations().find(|e| e.code == d.code && e.api == "driver");
    Some((Predicted::driver(d.code), e))
}

/// Exit 0 when the error is known, 2 when it is not (bad input).
pub fn run(args: &ExplainArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let Some((p, e)) = lookup(&args.error) else {
        anyhow::bail!(
            "{:?} is not a CUDA error this tool knows; try a number such as 304 or a name such as CUDA_ERROR_NO_DEVICE",
            args.error
        );
    };
    let caught: Vec<&str> = e
        .map(|e| e.caught_by.split(", ").filter(|s| *s != "-").collect())
        .unwrap_or_default();
    if args.json {
        let doc = json!({
            "api": p.api, "code": p.code, "name": p.name, "message": p.message,
            "meaning": e.map(|e| e.meaning), "causes": e.map(|e| e.causes), "caught_by": caught,
        });
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(0);
    }
    match (p.code, &p.name) {
        (Some(c), Some(n)) => writeln!(out, "{c} {n} — \"{}\"", p.message)?,
        _ => writeln!(
            out,
            "\"{}\" — {}, the same cause as 803 CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
            p.message,
            serde_json::to_value(p.api)?
                .as_str()
                .unwrap_or("?")
                .to_uppercase()
        )?,
    }
    match e {
        Some(e) => {
            use crate::output::message::wrap;
            let pad = " ".repeat(13);
            out.write_all(wrap("  meaning:   ", e.meaning, &pad, 100).as_bytes())?;
            out.write_all(wrap("  causes:    ", e.causes, &pad, 100).as_bytes())?;
            let by = if caught.is_empty() {
                "no check yet".to_string()
            } else {
                caught.join(", ")
            };
            out.write_all(wrap("  caught by: ", &by, &pad, 100).as_bytes())?;
        }
        None => writeln!(out, "  (no container-specific notes for this error)")?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_number_and_name() {
        let cases: &[(&str, Option<&str>)] = &[
            ("304", Some("CUDA_ERROR_OPERATING_SYSTEM")),
            (
                "CUDA_ERROR_OPERATING_SYSTEM",
                Some("CUDA_ERROR_OPERATING_SYSTEM"),
            ),
            ("no_device", Some("CUDA_ERROR_NO_DEVICE")),
            ("35", Some("cudaErrorInsufficientDriver")),
            (
                "cudaerrorinsufficientdriver",
                Some("cudaErrorInsufficientDriver"),
            ),
            ("803", Some("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH")),
            ("2", Some("CUDA_ERROR_OUT_OF_MEMORY")),
            ("46", Some("CUDA_ERROR_DEVICE_UNAVAILABLE")),
            ("802", Some("CUDA_ERROR_SYSTEM_NOT_READY")),
            ("12345", None),
            ("banana", None),
        ];
        for (q, want) in cases {
            assert_eq!(lookup(q).and_then(|(p, _)| p.name).as_deref(), *want, "{q}");
        }
        let (p, e) = lookup("Driver/library version mismatch").unwrap();
        assert_eq!(
            p.message,
            "Failed to initialize NVML: Driver/library version mismatch"
        );
        assert!(
            e.unwrap()
                .caught_by
                .contains("driver-library-version-mismatch")
        );
        let (_, e) = lookup("304").unwrap();
        assert!(e.unwrap().meaning.contains("not \"invalid context\""));
    }
}
