//! `cuda-preflight scan [--gpu CC]... [--driver-cuda X.Y] [--json] PATH...`: the GPU code in
//! CUDA binaries (what `cuobjdump --list-elf --list-ptx` lists) and, for a named GPU, whether
//! it loads. Exit 0: everything loadable (or no GPU named); 1: something is not; 2: unreadable
//! input.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::facts::host::Gpu;
use crate::formats::fatbin::{self, EntryKind, FatbinError, Format, Inventory, ScannedFile};
use crate::formats::version::ComputeCapability;
use crate::knowledge;
use crate::rules::gpu_code::{self as kernels, FileVerdict};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ScanArgs {
    /// Judge loadability on a GPU of this compute capability (`9.0`, `sm_90`); repeatable.
    #[arg(long = "gpu", value_name = "CC")]
    pub gpu: Vec<String>,
    /// CUDA version of the driver (`cuDriverGetVersion`, e.g. `13.0`); without it PTX ISA
    /// versions are not held against a driver.
    #[arg(long = "driver-cuda", value_name = "X.Y")]
    pub driver_cuda: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Files (ELF, .cubin, .fatbin, .ptx) or directories to scan.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Directory walks stop this deep; a real library tree is far shallower.
const MAX_DEPTH: usize = 32;

pub fn run(args: &ScanArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut ccs = Vec::new();
    for g in &args.gpu {
        match kernels::parse_cc(g) {
            Some(cc) => ccs.push(cc),
            None => bail!("--gpu {g:?}: expected a compute capability such as 9.0 or sm_90"),
        }
    }
    let driver_isa = match &args.driver_cuda {
        Some(d) => {
            let v = knowledge::parse_version(d)
                .with_context(|| format!("--driver-cuda {d:?}: expected X.Y such as 13.0"))?;
            Some(knowledge::max_ptx_isa_for_cuda(v).with_context(|| {
                format!("--driver-cuda {d}: older than CUDA 9.0 is not supported")
            })?)
        }
        None => None,
    };

    let mut files = Vec::new();
    for p in &args.paths {
        collect(p, &mut files);
    }

    let mut unreadable = false;
    let mut not_loadable = false;
    let mut reports = Vec::new();
    for f in &files {
        let verdicts: Vec<(ComputeCapability, FileVerdict)> = match &f.inventory {
            Ok(inv) => ccs
                .iter()
                .map(|cc| (*cc, kernels::file_verdict(inv, *cc, driver_isa)))
                .collect(),
            Err(_) => {
                unreadable = true;
                Vec::new()
            }
        };
        not_loadable |= verdicts.iter().any(|(_, v)| !v.loadable);
        reports.push((f, verdicts));
    }

    let gpus: Vec<Gpu> = ccs
        .iter()
        .enumerate()
        .map(|(i, cc)| Gpu {
            index: i as u32,
            compute_capability: format!("{}.{}", cc.0, cc.1),
            ..Default::default()
        })
        .collect();
    let findings = if gpus.is_empty() {
        Vec::new()
    } else {
        kernels::kernel_findings(
            &files,
            &gpus,
            kernels::DriverCuda::parse(args.driver_cuda.as_deref().unwrap_or("")),
        )
    };

    if args.json {
        #[derive(serde::Serialize)]
        struct Doc {
            files: Vec<FileJson>,
            // Through a `Value`, as before: its keys print sorted (a few findings, no cost).
            findings: Value,
        }
        let doc = Doc {
            files: reports.iter().map(|(f, v)| file_json(f, v)).collect(),
            findings: serde_json::to_value(&findings)?,
        };
        // Buffered: stdout is line-buffered, and pretty JSON of libcublasLt is 45,000 lines —
        // one write(2) each was most of `scan --json`'s time.
        let mut buf = std::io::BufWriter::with_capacity(1 << 16, &mut *out);
        serde_json::to_writer_pretty(&mut buf, &doc)?;
        writeln!(buf)?;
        buf.flush()?;
    } else {
        write_table(out, &reports, &ccs)?;
        for f in &findings {
            let pred = f
                .predicted
                .as_ref()
                .map(|p| format!(" → {}", p.headline()))
                .unwrap_or_default();
            writeln!(
                out,
                "{} {}{}\n  {}",
                f.severity.as_str(),
                f.id,
                crate::output::printable(&pred),
                crate::output::printable(&f.evidence)
            )?;
            if !f.fix.is_empty() {
                writeln!(out, "  fix: {}", crate::output::printable(&f.fix))?;
            }
        }
    }
    Ok(if unreadable {
        2
    } else if not_loadable {
        1
    } else {
        0
    })
}

/// Files given by name are always reported (an error is a row); below a directory only CUDA
/// binaries are, and symlinks are not followed.
fn collect(path: &Path, out: &mut Vec<ScannedFile>) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => walk(path, 0, out),
        Ok(m) if !m.is_file() => out.push(ScannedFile {
            path: path.to_path_buf(),
            inventory: Err("not a regular file".into()),
        }),
        Ok(_) => out.push(ScannedFile {
            path: path.to_path_buf(),
            inventory: fatbin::read_path(path).map_err(|e| e.to_string()),
        }),
        Err(e) => out.push(ScannedFile {
            path: path.to_path_buf(),
            inventory: Err(e.to_string()),
        }),
    }
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<ScannedFile>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        out.push(ScannedFile {
            path: dir.to_path_buf(),
            inventory: Err("cannot list directory".into()),
        });
        return;
    };
    let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for p in names {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if depth < MAX_DEPTH {
                walk(&p, depth + 1, out);
            }
        } else if m.is_file() {
            // Only regular files: a FIFO or device below the tree is never opened.
            match fatbin::read_path(&p) {
                Ok(inv) if inv.format == Format::ElfNoCuda => {}
                Err(FatbinError::NotCuda) => {}
                // A non-CUDA ELF that object cannot parse is not ours to report either.
                Err(FatbinError::Elf(_)) if !looks_cuda_named(&p) => {}
                r => out.push(ScannedFile {
                    path: p,
                    inventory: r.map_err(|e| e.to_string()),
                }),
            }
        }
    }
}

fn looks_cuda_named(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("cubin" | "fatbin" | "ptx")
    )
}

fn verdict_json(v: &FileVerdict) -> Value {
    json!({
        "loadable": v.loadable,
        "via": v.via.map(|x| x.as_str()),
        "predicted_error": v.predicted_error.and_then(knowledge::driver_error).map(|e| e.name),
        "modules": v.modules,
        "modules_sass": v.by_sass,
        "modules_ptx_jit": v.by_ptx,
        "modules_without_image": v.failing.len(),
    })
}

/// One fatbin entry in `--json`. Typed, not a `serde_json::Value` per entry (libcublasLt has
/// 5666): fields in the order a `Value` map prints them, so the output is unchanged.
#[derive(serde::Serialize)]
struct EntryJson {
    arch: String,
    compressed: bool,
    kind: &'static str,
    ptx_isa: Option<String>,
    size: u64,
    uncompressed_size: Option<u64>,
}

/// One file in `--json`, keys in the order a `Value` map prints them.
#[derive(serde::Serialize)]
struct FileJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    containers: Option<usize>,
    entries: Vec<EntryJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_gpu: Option<Vec<Value>>,
    verdict: Value,
}

fn file_json(f: &ScannedFile, verdicts: &[(ComputeCapability, FileVerdict)]) -> FileJson {
    let path = f.path.display().to_string();
    match &f.inventory {
        Ok(inv) => FileJson {
            containers: Some(inv.containers.len()),
            entries: inv
                .entries
                .iter()
                .map(|e| EntryJson {
                    arch: e.arch.to_string(),
                    compressed: e.compressed,
                    kind: e.kind.as_str(),
                    ptx_isa: e.ptx_isa.map(|(a, b)| format!("{a}.{b}")),
                    size: e.payload_size,
                    uncompressed_size: e.uncompressed_size,
                })
                .collect(),
            error: None,
            format: Some(inv.format.as_str()),
            path,
            per_gpu: (verdicts.len() > 1).then(|| {
                verdicts
                    .iter()
                    .map(|(ComputeCapability(a, b), v)| {
                        let mut j = verdict_json(v);
                        j["gpu"] = json!(format!("{a}.{b}"));
                        j
                    })
                    .collect()
            }),
            verdict: verdicts
                .first()
                .map(|(_, v)| verdict_json(v))
                .unwrap_or(Value::Null),
        },
        Err(e) => FileJson {
            containers: None,
            entries: Vec::new(),
            error: Some(e.clone()),
            format: None,
            path,
            per_gpu: None,
            verdict: Value::Null,
        },
    }
}

/// Distinct targets per kind, for a table cell: `sass 75,80,90a; ptx 90@9.5`.
fn compact_carried(inv: &Inventory) -> String {
    let mut parts = Vec::new();
    for kind in [EntryKind::Sass, EntryKind::Ptx] {
        let mut archs: Vec<(u32, String)> = Vec::new();
        for e in inv.entries.iter().filter(|e| e.kind == kind) {
            let mut name = e.arch.to_string().trim_start_matches("sm_").to_string();
            if let Some((a, b)) = e.ptx_isa {
                name = format!("{name}@{a}.{b}");
            }
            if !archs.iter().any(|(_, n)| *n == name) {
                archs.push((e.arch.sm(), name));
            }
        }
        archs.sort();
        if !archs.is_empty() {
            parts.push(format!(
                "{} {}",
                kind.as_str(),
                archs
                    .into_iter()
                    .map(|(_, n)| n)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

fn summary(inv: &Inventory) -> (usize, usize, usize) {
    let n = |k: fn(&EntryKind) -> bool| inv.entries.iter().filter(|e| k(&e.kind)).count();
    (
        n(|k| *k == EntryKind::Sass),
        n(|k| *k == EntryKind::Ptx),
        n(|k| matches!(k, EntryKind::Other(_))),
    )
}

/// A file and its verdict per GPU compute capability.
type Report<'a> = (&'a ScannedFile, Vec<(ComputeCapability, FileVerdict)>);

fn write_table(
    out: &mut dyn Write,
    reports: &[Report<'_>],
    ccs: &[ComputeCapability],
) -> anyhow::Result<()> {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let gpu_head = if ccs.is_empty() {
        "VERDICT".to_string()
    } else {
        format!(
            "VERDICT ({})",
            ccs.iter()
                .map(|ComputeCapability(a, b)| format!("{a}.{b}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    rows.push([
        "PATH".into(),
        "FORMAT".into(),
        "SASS/PTX/OTHER".into(),
        "CARRIES".into(),
        gpu_head,
    ]);
    for (f, verdicts) in reports {
        let path = f.path.display().to_string();
        match &f.inventory {
            Ok(inv) => {
                let (s, p, o) = summary(inv);
                let verdict = if verdicts.is_empty() {
                    "-".to_string()
                } else {
                    verdicts
                        .iter()
                        .map(|(_, v)| match (v.loadable, v.via, v.predicted_error) {
                            (true, Some(via), _) => format!("ok via {}", via.as_str()),
                            (true, None, _) => "no GPU code".into(),
                            (false, _, Some(code)) => knowledge::driver_error(code)
                                .map(|e| format!("FAILS {code} {}", e.name))
                                .unwrap_or_else(|| format!("FAILS {code}")),
                            (false, _, None) => "FAILS".into(),
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                rows.push([
                    path,
                    inv.format.as_str().into(),
                    format!("{s}/{p}/{o}"),
                    compact_carried(inv),
                    verdict,
                ]);
            }
            Err(e) => rows.push([
                path,
                "?".into(),
                "-".into(),
                format!("unreadable: {e}"),
                "-".into(),
            ]),
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            crate::output::printable(&r[0]),
            r[1],
            r[2],
            r[3],
            crate::output::printable(&r[4]),
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fatbin(entries: &[(u16, u32, u64, u16, u16)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, sm, flags, minor, major) in entries {
            let mut h = vec![0u8; 64];
            h[0..2].copy_from_slice(&kind.to_le_bytes());
            h[4..8].copy_from_slice(&64u32.to_le_bytes());
            h[8..16].copy_from_slice(&8u64.to_le_bytes());
            h[0x18..0x1a].copy_from_slice(&minor.to_le_bytes());
            h[0x1a..0x1c].copy_from_slice(&major.to_le_bytes());
            h[0x1c..0x20].copy_from_slice(&sm.to_le_bytes());
            h[0x28..0x30].copy_from_slice(&flags.to_le_bytes());
            body.extend_from_slice(&h);
            body.extend_from_slice(&[0u8; 8]);
        }
        let mut out = fatbin::FATBIN_MAGIC.to_le_bytes().to_vec();
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend(body);
        out
    }

    fn scan(args: ScanArgs) -> (i32, String) {
        let mut buf = Vec::new();
        let code = run(&args, &mut buf).unwrap();
        (code, String::from_utf8(buf).unwrap())
    }

    #[test]
    fn json_shape_and_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.fatbin");
        std::fs::write(&a, fatbin(&[(2, 80, 0x11, 8, 1), (1, 80, 0x8011, 5, 9)])).unwrap();
        let args = |gpu: &[&str], drv: Option<&str>| ScanArgs {
            gpu: gpu.iter().map(|s| s.to_string()).collect(),
            driver_cuda: drv.map(String::from),
            json: true,
            paths: vec![a.clone()],
        };
        let (code, out) = scan(args(&[], None));
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        let f = &v["files"][0];
        assert_eq!(
            f["entries"][0],
            json!({"kind": "sass", "arch": "sm_80", "ptx_isa": null, "compressed": false, "size": 8, "uncompressed_size": null})
        );
        assert_eq!(f["entries"][1]["ptx_isa"], "9.5");
        assert_eq!(f["entries"][1]["compressed"], true);
        assert!(f["verdict"].is_null());

        let (code, out) = scan(args(&["8.6"], Some("13.0")));
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["files"][0]["verdict"]["via"], "sass");

        let (code, out) = scan(args(&["9.0", "8.0"], Some("13.0")));
        assert_eq!(code, 1);
        let v: Value = serde_json::from_str(&out).unwrap();
        let f = &v["files"][0];
        assert_eq!(f["verdict"]["loadable"], false);
        assert_eq!(
            f["verdict"]["predicted_error"],
            "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"
        );
        assert_eq!(f["per_gpu"][1]["gpu"], "8.0");
        assert_eq!(f["per_gpu"][1]["via"], "sass");
        assert_eq!(v["findings"][0]["id"], "kernel-image-missing");

        let (code, _) = scan(ScanArgs {
            paths: vec![dir.path().join("missing")],
            ..args(&[], None)
        });
        assert_eq!(code, 2);
    }

    #[test]
    fn directory_walk_keeps_cuda_files_and_skips_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(
            dir.path().join("lib/k.fatbin"),
            fatbin(&[(2, 90, 0x10_0011, 8, 1)]),
        )
        .unwrap();
        std::fs::write(dir.path().join("lib/readme.txt"), "not cuda").unwrap();
        std::fs::write(
            dir.path().join("lib/k.ptx"),
            ".version 9.0\n.target sm_100\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/lib", dir.path().join("lib/escape")).unwrap();
        let (code, out) = scan(ScanArgs {
            gpu: vec!["9.0".into()],
            driver_cuda: Some("13.0".into()),
            json: false,
            paths: vec![dir.path().into()],
        });
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("k.fatbin") && out.contains("ok via sass"),
            "{out}"
        );
        assert!(out.contains("FAILS 218 CUDA_ERROR_INVALID_PTX"), "{out}");
        assert!(!out.contains("readme") && !out.contains("escape"), "{out}");
    }
}
