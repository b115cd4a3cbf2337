//! Will the GPU code in a binary load on this GPU with this driver? Decided as the driver
//! decides it (CUDA Programming Guide, "Binary Compatibility" / "Application Compatibility";
//! cases measured on an H100 in docs/facts.md):
//!
//! 1. SASS (a cubin) for `sm_XY` runs on compute capability X.Z with Z >= Y. An arch-specific
//!    `sm_XYa` cubin runs only on X.Y exactly; a family `sm_XYf` cubin on X.Z, Z >= Y.
//! 2. Otherwise PTX for an architecture at or below the GPU's is JIT-compiled — if the driver
//!    knows its PTX ISA version. `compute_XYa` PTX only for X.Y; `compute_XYf` within major X.
//! 3. Otherwise the load fails: 222 `CUDA_ERROR_UNSUPPORTED_PTX_VERSION` when usable-arch PTX
//!    exists but is too new for the driver; 209 `CUDA_ERROR_NO_BINARY_FOR_GPU` when nothing
//!    fits. Raw PTX text (not in a fatbin) for a newer architecture gives 218
//!    `CUDA_ERROR_INVALID_PTX` instead, or 222 when its `.version` is too new as well (measured:
//!    the same compute_100 PTX gave 209 inside a fatbin, 218 as text; see
//!    scripts/gpu-verdicts.sh for the whole predicted-vs-actual table).
//!
//! The runtime registers each fatbin container as one module, so the verdict is per container.
//! Libraries such as cuBLAS ship modules only for some architectures (e.g. sm_90a-only kernels)
//! and dispatch at run time, so a library is judged unloadable only when *no* module loads; a
//! library where some modules have no image is reported separately.
//!
//! An unloadable library fails only when the workload launches a kernel from it (importing it
//! succeeds). Frameworks carry libraries they launch only on some GPUs (vLLM's FlashAttention 3)
//! or for opt-in features (torch's cuSPARSELt): `knowledge/framework_kernels.tsv` says which, with
//! the framework's own check cited, and those are warnings naming the path. A library no row
//! knows blocks as before. Core libraries are judged first so the first block is the error the
//! workload meets first (the headline), and its fix addresses that error (docs/fatbin-scan.md).

use crate::facts::gpu_code::binaries::BinaryFacts;
use crate::facts::host::{Gpu, HostProfile};
use crate::finding::{Finding, FindingId, Predicted, Severity};
use crate::formats::fatbin::{EntryKind, Inventory, ScannedFile};
use crate::formats::version::{ComputeCapability, CudaVersion};
use crate::knowledge::{self, FrameworkLibrary};

pub mod module_load;
pub mod ptx_jit;

pub use module_load::{
    FileVerdict, INVALID_PTX, NO_BINARY_FOR_GPU, UNSUPPORTED_PTX_VERSION, Via, file_verdict,
    module_verdict, sass_runs_on,
};
pub use ptx_jit::{needed_ptx_isa, ptx_targets};

/// What a file carries, in one short phrase: `sass sm_80 x2, ptx sm_90 (ISA 9.5)`.
pub fn carried(inv: &Inventory) -> String {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for e in &inv.entries {
        let label = match (e.kind, e.ptx_isa) {
            (EntryKind::Ptx, Some((a, b))) => format!("ptx {} (ISA {a}.{b})", e.arch),
            (k, _) => format!("{} {}", k.as_str(), e.arch),
        };
        match seen.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => seen.push((label, 1)),
        }
    }
    if seen.is_empty() {
        return "no GPU code".into();
    }
    seen.iter()
        .map(|(l, n)| {
            if *n > 1 {
                format!("{l} x{n}")
            } else {
                l.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parse a compute capability: `9.0`, `90`, `sm_90`.
pub fn parse_cc(s: &str) -> Option<ComputeCapability> {
    s.parse().ok()
}

fn gpu_label(cc: ComputeCapability, gpus: &[&Gpu]) -> String {
    let arch = match knowledge::gpu_arch(cc.into()) {
        Some(g) => format!("{} {}", g.arch, g.generation),
        None => format!("sm_{}{}", cc.0, cc.1),
    };
    let names: Vec<String> = gpus
        .iter()
        .map(|g| {
            if g.name.is_empty() {
                format!("GPU {}", g.index)
            } else {
                format!("GPU {} {}", g.index, g.name)
            }
        })
        .collect();
    format!(
        "{} (compute capability {}.{}, {arch})",
        names.join(", "),
        cc.0,
        cc.1
    )
}

/// The driver's CUDA version as the facts spell it (quoted in findings) and as a release.
#[derive(Debug, Clone, Copy)]
pub struct DriverCuda<'a> {
    pub text: &'a str,
    pub release: Option<CudaVersion>,
}

impl<'a> DriverCuda<'a> {
    /// The host's `cuda_driver_version` ("" where unknown), read once with the host.
    pub fn of_host(host: &'a HostProfile) -> DriverCuda<'a> {
        DriverCuda {
            text: host.cuda_driver_version.as_deref().unwrap_or(""),
            release: host.cuda_driver_release(),
        }
    }

    /// A version given as text (a command-line argument, a test).
    pub fn parse(text: &'a str) -> DriverCuda<'a> {
        DriverCuda {
            text,
            release: text.parse::<CudaVersion>().ok(),
        }
    }
}

/// Findings for every scanned file on every GPU (GPUs of one compute capability judged once).
pub fn kernel_findings<'a>(
    files: impl IntoIterator<Item = &'a ScannedFile>,
    gpus: &[Gpu],
    driver_cuda: DriverCuda<'_>,
) -> Vec<Finding> {
    let DriverCuda {
        text: driver_cuda,
        release: driver,
    } = driver_cuda;
    let mut out = Vec::new();
    let mut groups: Vec<(ComputeCapability, Vec<&Gpu>)> = Vec::new();
    for g in gpus {
        match g.cc() {
            Some(cc) => match groups.iter_mut().find(|(c, _)| *c == cc) {
                Some((_, v)) => v.push(g),
                None => groups.push((cc, vec![g])),
            },
            None => out.push(Finding::skipped(
                FindingId::KernelsSkipped,
                format!(
                    "GPU {}: compute capability {:?} unknown; its kernels were not judged",
                    g.index, g.compute_capability
                ),
            )),
        }
    }
    if groups.is_empty() {
        if gpus.is_empty() {
            out.push(Finding::skipped(
                FindingId::KernelsSkipped,
                "no GPU known: binaries were not judged against one",
            ));
        }
        return out;
    }
    let driver_isa = driver.and_then(|d| knowledge::max_ptx_isa_for_cuda(d.into()));
    if driver.is_none() {
        out.push(Finding::skipped(
            FindingId::KernelsPtxIsaSkipped,
            if driver_cuda.trim().is_empty() {
                "driver CUDA version not known: PTX ISA versions were not checked".to_string()
            } else {
                format!("driver CUDA version {driver_cuda:?} not understood: PTX ISA versions were not checked")
            },
        ));
    }
    // The workload meets a framework's core library before its extensions, and those before
    // libraries no table row knows: files are judged in that order, so the first block is the
    // error met first (the headline). Stable: the walk's order within each rank.
    let mut ordered: Vec<(&ScannedFile, Option<&'static FrameworkLibrary>)> = files
        .into_iter()
        .map(|f| (f, knowledge::framework_library(&f.path)))
        .collect();
    ordered.sort_by_key(|(_, row)| row.map_or(usize::MAX, |r| r.order));
    for (f, row) in ordered {
        let inv = match &f.inventory {
            Ok(inv) => inv,
            Err(e) => {
                out.push(Finding::new(
                    FindingId::KernelBinaryUnreadable,
                    Severity::Warn,
                    None,
                    format!("{}: cannot read its GPU code: {e}", f.path.display()),
                    "check the file is intact (re-install the package that ships it); its kernels were not judged",
                ));
                continue;
            }
        };
        for (cc, group) in &groups {
            let v = file_verdict(inv, *cc, driver_isa);
            let label = gpu_label(*cc, group);
            let path = f.path.display();
            if !v.loadable {
                out.push(missing_finding(
                    &f.path,
                    inv,
                    &v,
                    row,
                    *cc,
                    &label,
                    driver_cuda,
                    driver_isa,
                ));
                continue;
            }
            if !v.failing.is_empty() {
                let code = v.failing[0].1;
                out.push(Finding::new(
                    FindingId::KernelImagePartial,
                    Severity::Info,
                    Some(Predicted::driver(code)),
                    format!(
                        "{path}: {} of its {} GPU modules have no image for {label} (kernels in them fail if launched; \
                         libraries often ship such per-architecture modules and never launch them there)",
                        v.failing.len(),
                        v.modules
                    ),
                    "nothing to do unless the workload fails with this error; then use a build that includes this GPU's architecture",
                ));
            }
            if v.by_ptx > 0 {
                out.push(Finding::new(
                    FindingId::KernelPtxJitOnly,
                    Severity::Warn,
                    None,
                    format!(
                        "{path}: {} of its {} GPU modules have no SASS for {label} and will be JIT-compiled from PTX at first use \
                         (slow first start; each container start repeats it unless the JIT cache persists)",
                        v.by_ptx, v.modules
                    ),
                    format!(
                        "use a build with SASS for sm_{0}{1} (nvcc -gencode arch=compute_{0}{1},code=sm_{0}{1}), or keep \
                         ~/.nv/ComputeCache on a volume (CUDA_CACHE_PATH) so the JIT runs once",
                        cc.0, cc.1
                    ),
                ));
            }
        }
    }
    out
}

/// A library none of whose modules loads on the GPU: a block where the workload launches from
/// it (a framework's core library, an extension the framework uses on this GPU, or any library
/// no table row knows), a warning naming the path where only some workloads do.
#[allow(clippy::too_many_arguments)]
fn missing_finding(
    file: &std::path::Path,
    inv: &Inventory,
    v: &FileVerdict,
    row: Option<&FrameworkLibrary>,
    cc: ComputeCapability,
    label: &str,
    driver_cuda: &str,
    driver_isa: Option<(u32, u32)>,
) -> Finding {
    let code = v.predicted_error.unwrap_or(NO_BINARY_FOR_GPU);
    let path = file.display();
    let sm = format!("sm_{}{}", cc.0, cc.1);
    // Whose build to change: the framework's where the table knows it.
    let build = row.map_or("a build of this library", |r| r.build);
    let fix = match code {
        UNSUPPORTED_PTX_VERSION => {
            // Raw PTX for another architecture can give 222 too (its `.version` is read first):
            // then the newest ISA the file carries is what the driver must know.
            let needs = needed_ptx_isa(inv, cc, v)
                .or_else(|| {
                    inv.entries
                        .iter()
                        .filter_map(|e| e.ptx_isa)
                        .max()
                        .map(|(a, b)| (a as u32, b as u32))
                })
                .unwrap_or((0, 0));
            let this = match driver_isa {
                Some((a, b)) => format!("this one: CUDA {driver_cuda}, PTX ISA {a}.{b}"),
                None => format!("this one: CUDA {driver_cuda}"),
            };
            let driver = match knowledge::cuda_for_ptx_isa(needs) {
                Some((a, b)) => {
                    let v = knowledge::cuda::Version::from_parts(&[a as u64, b as u64]);
                    match knowledge::cuda::toolkit_min_driver(&v) {
                        Some(r) => {
                            format!("{} or newer (CUDA {a}.{b}; {this})", r.min_driver.major())
                        }
                        None => format!("one for CUDA {a}.{b} or newer ({this})"),
                    }
                }
                None => format!("a newer one ({this})"),
            };
            // A library we know nothing of may also be rebuilt with an older toolkit (older PTX).
            let older = if row.is_none() {
                " or built with an older CUDA toolkit"
            } else {
                ""
            };
            format!(
                "install a driver that JITs PTX ISA {}.{}, i.e. {driver}, or use {build} with {sm} SASS{older}",
                needs.0, needs.1
            )
        }
        _ => format!(
            "use {build} that includes {sm} (nvcc -gencode arch=compute_{0}{1},code=sm_{0}{1}) \
             or PTX for compute_{0}{1} or lower, or run it on a GPU it was built for",
            cc.0, cc.1
        ),
    };
    let base = format!(
        "{path}: none of its GPU modules ({}) loads on {label}",
        v.modules
    );
    let carries = format!("it carries {}", carried(inv));
    match row {
        Some(r) if !r.launched_on(cc.into()) => {
            let when = match r.launch {
                knowledge::Launch::OnGpus => format!(
                    "{} launches it only on compute capability {} ({}), not on this GPU",
                    r.framework, r.gpus, r.path
                ),
                _ => format!("{} launches it only for {}", r.framework, r.path),
            };
            Finding::new(
                FindingId::KernelImageMissingConditional,
                Severity::Warn,
                Some(Predicted::driver(code)),
                format!(
                    "{base}, and {when}: it does not stop this start, that path would fail; {carries} \
                     (knowledge/framework_kernels.tsv)"
                ),
                format!(
                    "nothing to do unless the workload uses {}; then {}",
                    r.path,
                    lowercase_first(&fix)
                ),
            )
        }
        Some(r) => {
            let when = match r.launch {
                knowledge::Launch::Always => "on every start",
                _ => "on this GPU",
            };
            Finding::new(
                FindingId::KernelImageMissing,
                Severity::Block,
                Some(Predicted::driver(code)),
                format!(
                    "{base}; {} launches it {when}: {}; {carries}",
                    r.framework, r.path
                ),
                fix,
            )
        }
        None => Finding::new(
            FindingId::KernelImageMissing,
            Severity::Block,
            Some(Predicted::driver(code)),
            format!("{base}; {carries}"),
            fix,
        ),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// An image facts cache entry whose packed inventories were damaged after it was stored (its
/// length is checked when read, its inventories when judged). Said, never judged as an image
/// without GPU code; the entry is removed, so the next start walks.
pub fn not_unpacked() -> Finding {
    Finding::skipped(
        FindingId::KernelsSkipped,
        "the image facts cache entry's inventories did not unpack: kernels were not judged (the entry was removed; the next start walks the image)",
    )
}

/// The image's binaries (`facts::gpu_code::binaries`) judged on the container's GPUs, and what the walk
/// did not reach: never a pass by omission.
pub fn image_findings(b: &BinaryFacts, gpus: &[Gpu], driver_cuda: DriverCuda<'_>) -> Vec<Finding> {
    // Libraries that load their kernels from a store of their own are not judged by their
    // fatbin (which can be a lone sm_75 helper module in a library that runs on every GPU).
    let (outside, judged): (Vec<&ScannedFile>, Vec<&ScannedFile>) = b.files.iter().partition(|f| {
        f.path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(crate::knowledge::kernels_outside_fatbin)
            .is_some()
    });
    // By reference: a copy of every inventory (21,000 entries in a torch image) cost a cached
    // hook more than judging them.
    let mut out = kernel_findings(judged, gpus, driver_cuda);
    if !outside.is_empty() {
        let names: Vec<String> = outside
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        out.push(Finding::new(
            FindingId::KernelImageOutsideFatbin,
            Severity::Info,
            None,
            format!(
                "not judged by their fatbin: {} — these libraries load their kernels from a store of their own \
                 at run time (knowledge/kernels_outside_fatbin.tsv)",
                names.join(", ")
            ),
            "",
        ));
    }
    if b.incomplete() {
        let mut parts: Vec<String> = Vec::new();
        if let Some(why) = &b.stopped {
            parts.push(format!("the walk stopped at its {why}"));
        }
        for (what, s) in [
            ("not reached", &b.not_walked),
            ("directories not listable", &b.unreadable_dirs),
            (
                "library names that are not regular files (never opened)",
                &b.not_regular,
            ),
            (
                "links that loop or lead nowhere inside the rootfs",
                &b.unresolved_links,
            ),
            (
                "files whose ELF headers could not be read",
                &b.unreadable_files,
            ),
        ] {
            if s.count > 0 {
                parts.push(format!("{what}: {} ({})", s.count, s.examples.join(", ")));
            }
        }
        let fix = if b.stopped.is_some() {
            "raise scan_budget_ms / scan_max_files / scan_max_bytes in /etc/cuda-preflight/config.toml, or run \
             `cuda-preflight scan` on the image's libraries"
        } else {
            "nothing to do unless these are libraries the workload loads; then check them with `cuda-preflight scan`"
        };
        out.push(Finding::new(
            FindingId::KernelsScanIncomplete,
            Severity::Info,
            None,
            format!(
                "the image's CUDA binaries were not all judged ({} with GPU code were): {}",
                b.files.len(),
                parts.join("; ")
            ),
            fix,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::fatbin::Container;
    use crate::formats::fatbin::{Arch, Entry, Format};

    fn entry(spec: &str, container: usize) -> Entry {
        // "sass sm_90a" / "ptx sm_80 8.5"
        let mut it = spec.split_whitespace();
        let kind = match it.next().unwrap() {
            "sass" => EntryKind::Sass,
            "ptx" => EntryKind::Ptx,
            _ => EntryKind::Other(64),
        };
        let arch = Arch::parse(it.next().unwrap()).unwrap();
        let ptx_isa = it.next().map(|v| {
            let (a, b) = knowledge::parse_version(v).unwrap();
            (a as u16, b as u16)
        });
        Entry {
            kind,
            arch,
            ptx_isa,
            compressed: false,
            offset: 0,
            header_size: 64,
            payload_size: 0,
            uncompressed_size: None,
            container,
        }
    }

    fn inv(format: Format, modules: &[&[&str]]) -> Inventory {
        let mut entries = Vec::new();
        for (c, m) in modules.iter().enumerate() {
            entries.extend(m.iter().map(|s| entry(s, c)));
        }
        Inventory {
            format,
            containers: modules
                .iter()
                .map(|_| Container { offset: 0, size: 0 })
                .collect(),
            entries,
        }
    }

    #[test]
    fn module_verdicts_table() {
        // (entries, gpu cc, driver CUDA, raw PTX?, expected)
        type Case<'a> = (&'a [&'a str], &'a str, &'a str, bool, Result<Via, i64>);
        let cases: &[Case] = &[
            (&["sass sm_80"], "8.0", "13.0", false, Ok(Via::Sass)),
            (&["sass sm_80"], "8.6", "13.0", false, Ok(Via::Sass)),
            // FACTS.md: an sm_80-only cubin fails on sm_90 with 209
            (&["sass sm_80"], "9.0", "13.0", false, Err(209)),
            (&["sass sm_86"], "8.0", "13.0", false, Err(209)),
            (&["sass sm_90a"], "9.0", "13.0", false, Ok(Via::Sass)),
            (&["sass sm_100a"], "10.3", "13.0", false, Err(209)),
            (&["sass sm_100f"], "10.3", "13.0", false, Ok(Via::Sass)),
            (&["sass sm_103f"], "10.0", "13.0", false, Err(209)),
            (&["sass sm_100f"], "12.0", "13.0", false, Err(209)),
            (
                &["sass sm_80", "ptx sm_80 8.0"],
                "9.0",
                "13.0",
                false,
                Ok(Via::PtxJit),
            ),
            // FACTS.md: PTX newer than the driver's ISA fails with 222; 9.0 loads on 13.0
            (&["ptx sm_80 9.5"], "9.0", "13.0", false, Err(222)),
            (&["ptx sm_80 9.0"], "9.0", "13.0", false, Ok(Via::PtxJit)),
            (&["ptx sm_80 9.5"], "9.0", "13.5", false, Ok(Via::PtxJit)),
            // FACTS.md: compute_100 PTX on sm_90 — 209 in a fatbin, 218 as raw text
            (&["ptx sm_100 9.0"], "9.0", "13.0", false, Err(209)),
            (&["ptx sm_100 9.0"], "9.0", "13.0", true, Err(218)),
            // measured: raw compute_100 PTX at .version 9.1 on driver 13.0 gives 222, not 218,
            // while compute_120 PTX at 9.5 inside a fatbin gives 209
            (&["ptx sm_100 9.1"], "9.0", "13.0", true, Err(222)),
            (&["ptx sm_120 9.5"], "9.0", "13.0", false, Err(209)),
            (&["ptx sm_90a 9.0"], "9.0", "13.0", false, Ok(Via::PtxJit)),
            (&["ptx sm_90a 9.0"], "10.0", "13.0", false, Err(209)),
            (&["ptx sm_100f 9.0"], "10.3", "13.0", false, Ok(Via::PtxJit)),
            (&["ptx sm_100f 9.0"], "12.0", "13.0", false, Err(209)),
            (&["ptx sm_100 9.0"], "12.0", "13.0", false, Ok(Via::PtxJit)),
            // SASS wins over PTX when both fit
            (
                &["ptx sm_75 7.8", "sass sm_90"],
                "9.0",
                "12.0",
                false,
                Ok(Via::Sass),
            ),
            // usable-arch PTX too new and newer-arch PTX: 222
            (
                &["ptx sm_75 9.5", "ptx sm_120 9.5"],
                "9.0",
                "13.0",
                false,
                Err(222),
            ),
            // unknown driver: ISA not held against the PTX
            (&["ptx sm_80 9.5"], "9.0", "", false, Ok(Via::PtxJit)),
            (&["other sm_90"], "9.0", "13.0", false, Err(209)),
        ];
        for (entries, cc, drv, raw, want) in cases {
            let es: Vec<Entry> = entries.iter().map(|s| entry(s, 0)).collect();
            let refs: Vec<&Entry> = es.iter().collect();
            let isa = knowledge::parse_version(drv).and_then(knowledge::max_ptx_isa_for_cuda);
            let got = module_verdict(&refs, parse_cc(cc).unwrap(), isa, *raw);
            assert_eq!(
                got, *want,
                "{entries:?} on {cc} with driver {drv:?} raw={raw}"
            );
        }
    }

    #[test]
    fn file_verdict_is_per_module() {
        let lib = inv(
            Format::Elf,
            &[
                &["sass sm_80", "sass sm_90"],
                &["sass sm_90a"],
                &["ptx sm_75 8.0"],
            ],
        );
        let v = file_verdict(&lib, ComputeCapability(8, 0), Some((9, 0)));
        assert!(v.loadable);
        assert_eq!(
            (v.modules, v.by_sass, v.by_ptx, v.failing.len()),
            (3, 1, 1, 1)
        );
        assert_eq!(v.via, Some(Via::PtxJit));
        let v = file_verdict(&lib, ComputeCapability(7, 0), Some((9, 0)));
        assert!(!v.loadable);
        assert_eq!(v.predicted_error, Some(209));
        let empty = inv(Format::ElfNoCuda, &[]);
        let v = file_verdict(&empty, ComputeCapability(9, 0), None);
        assert!(v.loadable && v.via.is_none() && v.modules == 0);
    }

    #[test]
    fn findings_carry_ids_predictions_evidence_and_fix() {
        let files = vec![
            ScannedFile {
                path: "/a/libold.so".into(),
                inventory: Ok(inv(Format::Elf, &[&["sass sm_70", "ptx sm_70 9.5"]])),
            },
            ScannedFile {
                path: "/a/libjit.so".into(),
                inventory: Ok(inv(Format::Elf, &[&["sass sm_80", "ptx sm_80 8.0"]])),
            },
            ScannedFile {
                path: "/a/libok.so".into(),
                inventory: Ok(inv(Format::Elf, &[&["sass sm_90"]])),
            },
            ScannedFile {
                path: "/a/bad.so".into(),
                inventory: Err("truncated".into()),
            },
        ];
        let gpu = Gpu {
            index: 0,
            name: "NVIDIA H100".into(),
            compute_capability: "9.0".into(),
            ..Default::default()
        };
        let f = kernel_findings(
            &files,
            &[
                gpu.clone(),
                Gpu {
                    index: 1,
                    ..gpu.clone()
                },
            ],
            DriverCuda::parse("13.0"),
        );
        let ids: Vec<&str> = f.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                FindingId::KernelImageMissing,
                FindingId::KernelPtxJitOnly,
                FindingId::KernelBinaryUnreadable
            ]
        );
        assert_eq!(
            f[0].predicted.as_ref().unwrap().name.as_deref(),
            Some("CUDA_ERROR_UNSUPPORTED_PTX_VERSION")
        );
        assert!(
            f[0].evidence
                .contains("GPU 0 NVIDIA H100, GPU 1 NVIDIA H100"),
            "{}",
            f[0].evidence
        );
        assert!(f[0].fix.contains("CUDA 13.5"), "{}", f[0].fix);
        assert!(
            f[1].evidence.contains("1 of its 1 GPU modules"),
            "{}",
            f[1].evidence
        );
        for x in &f {
            assert!(!x.evidence.is_empty() && !x.fix.is_empty(), "{x:?}");
        }
        assert_eq!(
            kernel_findings(&files, &[], DriverCuda::parse("13.0"))[0].id,
            "kernels-skipped"
        );
        // Unknown driver: said so, and PTX is not held against it.
        let f = kernel_findings(&files[..2], &[gpu], DriverCuda::parse(""));
        let ids: Vec<&str> = f.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                FindingId::KernelsPtxIsaSkipped,
                FindingId::KernelPtxJitOnly,
                FindingId::KernelPtxJitOnly
            ]
        );
    }

    #[test]
    fn image_findings_say_what_the_walk_left_out() {
        use crate::facts::gpu_code::binaries::{BinaryFacts, Skipped};
        let gpu = Gpu {
            index: 0,
            compute_capability: "9.0".into(),
            ..Default::default()
        };
        let mut b = BinaryFacts {
            files: vec![ScannedFile {
                path: "/usr/lib/libk.so".into(),
                inventory: Ok(inv(Format::Elf, &[&["sass sm_80"]])),
            }],
            ..Default::default()
        };
        let ids = |f: &[Finding]| f.iter().map(|f| f.id).collect::<Vec<_>>();
        assert_eq!(
            ids(&image_findings(
                &b,
                std::slice::from_ref(&gpu),
                DriverCuda::parse("13.0")
            )),
            vec![FindingId::KernelImageMissing]
        );
        b.stopped = Some("file budget of 2 (scan_max_files)".into());
        b.not_walked = Skipped {
            count: 7,
            examples: vec!["/opt/conda/lib".into()],
        };
        b.not_regular = Skipped {
            count: 1,
            examples: vec!["/usr/lib/libx.so (FIFO)".into()],
        };
        let f = image_findings(&b, &[gpu], DriverCuda::parse("13.0"));
        assert_eq!(
            ids(&f),
            vec![
                FindingId::KernelImageMissing,
                FindingId::KernelsScanIncomplete
            ]
        );
        let inc = &f[1];
        assert_eq!(inc.severity, Severity::Info);
        for want in [
            "1 with GPU code were",
            "stopped at its file budget of 2 (scan_max_files)",
            "not reached: 7 (/opt/conda/lib)",
            "never opened): 1 (/usr/lib/libx.so (FIFO))",
        ] {
            assert!(inc.evidence.contains(want), "{want}: {}", inc.evidence);
        }
        assert!(inc.fix.contains("scan_budget_ms"), "{}", inc.fix);
    }

    #[test]
    fn libraries_with_kernels_outside_their_fatbin_are_not_blocked() {
        // libcufft.so.12 on the H100 machine: 286 MB, one sm_75 cubin in .nv_fatbin, runs on sm_90.
        let b = BinaryFacts {
            files: vec![
                ScannedFile {
                    path: "/usr/local/cuda/lib64/libcufft.so.12.0.0.61".into(),
                    inventory: Ok(inv(Format::Elf, &[&["sass sm_75"]])),
                },
                ScannedFile {
                    path: "/usr/lib/libold.so".into(),
                    inventory: Ok(inv(Format::Elf, &[&["sass sm_75"]])),
                },
            ],
            ..Default::default()
        };
        let gpu = Gpu {
            compute_capability: "9.0".into(),
            ..Default::default()
        };
        let f = image_findings(&b, &[gpu], DriverCuda::parse("13.0"));
        let ids: Vec<&str> = f.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                FindingId::KernelImageMissing,
                FindingId::KernelImageOutsideFatbin
            ]
        );
        assert!(f[0].evidence.contains("libold.so"));
        assert!(f[1].evidence.contains("libcufft.so.12.0.0.61"));
    }

    /// The classification and the headline ordering on inventories as the real libraries carry
    /// them (scripts/framework-fixtures.sh lists each; tests/it/frameworks.rs runs the real files).
    /// Each row: GPU, driver CUDA, the first block expected (file, code) or none, and the
    /// conditional warnings. Where each library's use is decided: knowledge/framework_kernels.tsv
    /// S1-S8 (vLLM's fa_utils.py / flash_attn_interface.py / flashmla.py, torch's
    /// LinearAlgebraStubs.cpp and cuSPARSELtOps.cpp).
    #[test]
    fn headline_is_the_error_met_first() {
        let sp = "/usr/local/lib/python3.12/site-packages";
        let lib = |rel: &str, modules: &[&[&str]]| ScannedFile {
            path: format!("{sp}/{rel}").into(),
            inventory: Ok(inv(Format::Elf, modules)),
        };
        // Walk order puts extensions before the core (site-packages order is the directory's).
        let files = vec![
            lib(
                "vllm/_flashmla_C.abi3.so",
                &[&["sass sm_90a", "sass sm_100a"]],
            ),
            lib(
                "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so",
                &[&["sass sm_90a"]],
            ),
            lib(
                "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
                &[&["sass sm_80", "ptx sm_80 8.8"]],
            ),
            lib(
                "cusparselt/lib/libcusparseLt.so.0",
                &[&["sass sm_80", "sass sm_90", "ptx sm_52 8.5"]],
            ),
            lib(
                "torch/lib/libtorch_cuda_linalg.so",
                &[&["sass sm_50", "sass sm_70", "sass sm_90"]],
            ),
            lib(
                "torch/lib/libtorch_cuda.so",
                &[&["sass sm_50", "sass sm_75", "sass sm_90a"]],
            ),
        ];
        let vllm_only = &files[..3];
        let torch_only = &files[3..];
        type Case<'a> = (
            &'a [ScannedFile],
            &'a str,
            &'a str,
            Option<(&'a str, i64)>,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // The seed: RTX 5090 on 570 (CUDA 12.8, ISA 8.7): FA2's PTX 8.8 is refused (222);
            // FA3 and FlashMLA are never launched there (fa_utils: FA3 only on major 9).
            (
                vllm_only,
                "12.0",
                "12.8",
                Some(("_vllm_fa2_C", 222)),
                &["_vllm_fa3_C", "_flashmla_C"],
            ),
            // 580 (CUDA 13.0) JITs 8.8: no block.
            (
                vllm_only,
                "12.0",
                "13.0",
                None,
                &["_vllm_fa3_C", "_flashmla_C"],
            ),
            // A100 on 535: FA2 has sm_80 SASS; FA3/FlashMLA sm_90a only, not launched on 8.0.
            (
                vllm_only,
                "8.0",
                "12.2",
                None,
                &["_vllm_fa3_C", "_flashmla_C"],
            ),
            // H100: FA3 and FlashMLA load; FA2 by JIT (it is not the Hopper default anyway).
            (vllm_only, "9.0", "13.0", None, &[]),
            // H100 on a CUDA 12.2 driver: FA2 would need 8.8 but is launched on Hopper only for
            // ALiBi models: a warning, not a block.
            (vllm_only, "9.0", "12.2", None, &["_vllm_fa2_C"]),
            // B300 (10.3): sm_100a does not run; FlashMLA is opt-in (MLA models), FA2 JITs.
            (
                vllm_only,
                "10.3",
                "13.0",
                None,
                &["_vllm_fa3_C", "_flashmla_C"],
            ),
            // torch 2.6 (cu124) on Blackwell: the core has nothing for sm_120 (209), met on the
            // first CUDA op; linalg (lazy) is only a warning; cuSPARSELt JITs its compute_52.
            (
                torch_only,
                "12.0",
                "12.8",
                Some(("libtorch_cuda.so", 209)),
                &["libtorch_cuda_linalg.so"],
            ),
            (
                torch_only,
                "12.0",
                "13.0",
                Some(("libtorch_cuda.so", 209)),
                &["libtorch_cuda_linalg.so"],
            ),
            // T4 on 550/535: cuSPARSELt's only usable image is PTX 8.5 (222), but torch calls it
            // only for 2:4 sparsity: a warning. The core has sm_75.
            (torch_only, "7.5", "12.4", None, &["libcusparseLt.so.0"]),
            (torch_only, "7.5", "12.2", None, &["libcusparseLt.so.0"]),
            // Both stacks on the 5090/570: torch's core is met before vLLM's attention.
            (
                &files,
                "12.0",
                "12.8",
                Some(("libtorch_cuda.so", 209)),
                &["_vllm_fa3_C", "_flashmla_C", "libtorch_cuda_linalg.so"],
            ),
        ];
        for (files, cc, drv, first, conditional) in cases {
            let gpu = Gpu {
                compute_capability: cc.to_string(),
                ..Default::default()
            };
            let f = kernel_findings(*files, &[gpu], DriverCuda::parse(drv));
            let blocks: Vec<&Finding> =
                f.iter().filter(|f| f.severity == Severity::Block).collect();
            match first {
                Some((name, code)) => {
                    let b = blocks
                        .first()
                        .unwrap_or_else(|| panic!("{cc}/{drv}: no block: {f:#?}"));
                    assert!(b.evidence.contains(name), "{cc}/{drv}: {}", b.evidence);
                    assert_eq!(
                        b.predicted.as_ref().unwrap().code,
                        Some(*code),
                        "{cc}/{drv}"
                    );
                }
                None => assert!(blocks.is_empty(), "{cc}/{drv}: {blocks:#?}"),
            }
            let mut warned: Vec<&str> = f
                .iter()
                .filter(|f| f.id == FindingId::KernelImageMissingConditional)
                .map(|f| {
                    assert_eq!(f.severity, Severity::Warn);
                    assert!(f.evidence.contains("launches it only"), "{}", f.evidence);
                    assert!(
                        f.fix.starts_with("nothing to do unless the workload uses"),
                        "{}",
                        f.fix
                    );
                    conditional
                        .iter()
                        .copied()
                        .find(|n| f.evidence.contains(&format!("/{n}")))
                        .unwrap_or_else(|| panic!("{cc}/{drv}: unexpected {}", f.evidence))
                })
                .collect();
            warned.dedup();
            let mut want = conditional.to_vec();
            want.sort();
            warned.sort();
            assert_eq!(warned, want, "{cc}/{drv}");
        }
    }

    #[test]
    fn fix_addresses_the_error_met_first() {
        let fa2 = ScannedFile {
            path: "/sp/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so".into(),
            inventory: Ok(inv(Format::Elf, &[&["sass sm_80", "ptx sm_80 8.8"]])),
        };
        let gpu = Gpu {
            compute_capability: "12.0".into(),
            ..Default::default()
        };
        let f = kernel_findings(
            std::slice::from_ref(&fa2),
            std::slice::from_ref(&gpu),
            DriverCuda::parse("12.8"),
        );
        assert_eq!(f[0].id, FindingId::KernelImageMissing);
        // 8.8 is CUDA 12.9's ISA; 12.9's driver is 575.51.03 (cuda_driver_min.tsv).
        assert_eq!(
            f[0].fix,
            "install a driver that JITs PTX ISA 8.8, i.e. 575 or newer (CUDA 12.9; this one: CUDA 12.8, \
             PTX ISA 8.7), or use a vLLM build with sm_120 SASS"
        );
        // The same inventory under a name no row knows: today's block, a generic fix.
        let other = ScannedFile {
            path: "/opt/app/libattn.so".into(),
            ..fa2.clone()
        };
        let f = kernel_findings(&[other], &[gpu], DriverCuda::parse("12.8"));
        assert_eq!(f[0].id, FindingId::KernelImageMissing);
        assert!(
            f[0].fix
                .ends_with("or use a build of this library with sm_120 SASS or built with an older CUDA toolkit"),
            "{}",
            f[0].fix
        );
        // The needed ISA is that of the PTX the GPU can use, not the newest the file carries:
        // compute_90 PTX (9.0) cannot serve a 7.5 GPU, compute_52 PTX (8.5) can.
        // Raw PTX for a newer architecture at a too-new ISA (measured 222): that ISA is named.
        let raw = ScannedFile {
            path: "/opt/app/k.ptx".into(),
            inventory: Ok(inv(Format::Ptx, &[&["ptx sm_100 9.1"]])),
        };
        let h100 = Gpu {
            compute_capability: "9.0".into(),
            ..Default::default()
        };
        let f = kernel_findings(&[raw], &[h100], DriverCuda::parse("13.0"));
        assert_eq!(f[0].predicted.as_ref().unwrap().code, Some(222));
        assert!(
            f[0].fix.starts_with(
                "install a driver that JITs PTX ISA 9.1, i.e. 590 or newer (CUDA 13.1;"
            ),
            "{}",
            f[0].fix
        );
        let lib = inv(Format::Elf, &[&["ptx sm_52 8.5", "ptx sm_90 9.0"]]);
        let v = file_verdict(&lib, ComputeCapability(7, 5), Some((8, 4)));
        assert_eq!(
            needed_ptx_isa(&lib, ComputeCapability(7, 5), &v),
            Some((8, 5))
        );
    }
}
