//! Knowledge tables: data with their sources, in one place. Each table is a file in this
//! directory whose header cites where its rows come from; code only looks rows up.

pub mod cuda;

use std::sync::OnceLock;

/// One row of the CUDA driver error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverError {
    pub code: i64,
    pub name: &'static str,
    pub text: &'static str,
}

const CUDA_ERRORS_TSV: &str = include_str!("cuda_errors.tsv");

/// Rows of a tab-separated table: `#` lines are the header comment, the first other line names
/// the columns and is skipped.
pub(crate) fn tsv_rows(table: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .skip(1)
        .map(|l| l.split('\t').collect())
}

pub fn driver_errors() -> &'static [DriverError] {
    static TABLE: OnceLock<Vec<DriverError>> = OnceLock::new();
    TABLE.get_or_init(|| {
        tsv_rows(CUDA_ERRORS_TSV)
            .map(|c| DriverError {
                code: c[0]
                    .parse()
                    .expect("cuda_errors.tsv: code column is numeric"),
                name: c[1],
                text: c[2],
            })
            .collect()
    })
}

pub fn driver_error(code: i64) -> Option<&'static DriverError> {
    driver_errors().iter().find(|e| e.code == code)
}

pub fn driver_error_by_name(name: &str) -> Option<&'static DriverError> {
    driver_errors()
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(name))
}

/// A `major.minor` version (CUDA release, PTX ISA, compute capability).
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

const PTX_ISA_TSV: &str = include_str!("ptx_isa.tsv");

/// `(ptx_isa, first CUDA release that knows it)`, both `(major, minor)`.
pub type PtxIsaRow = ((u32, u32), (u32, u32));

/// The PTX ISA table, oldest first.
pub fn ptx_isa_table() -> &'static [PtxIsaRow] {
    static TABLE: OnceLock<Vec<PtxIsaRow>> = OnceLock::new();
    TABLE.get_or_init(|| {
        tsv_rows(PTX_ISA_TSV)
            .map(|c| {
                (
                    parse_version(c[0]).expect("ptx_isa.tsv: ptx_isa is major.minor"),
                    parse_version(c[1]).expect("ptx_isa.tsv: cuda is major.minor"),
                )
            })
            .collect()
    })
}

/// The newest PTX ISA a driver of CUDA `cuda` JIT-compiles. `None` below the table (CUDA < 9.0).
/// A driver newer than the table knows at least the newest ISA we know.
pub fn max_ptx_isa_for_cuda(cuda: (u32, u32)) -> Option<(u32, u32)> {
    ptx_isa_table()
        .iter()
        .rev()
        .find(|(_, c)| *c <= cuda)
        .map(|(isa, _)| *isa)
}

/// The first CUDA release that knows PTX ISA `isa` (for the fix text). `None` when newer than
/// the table.
pub fn cuda_for_ptx_isa(isa: (u32, u32)) -> Option<(u32, u32)> {
    ptx_isa_table()
        .iter()
        .find(|(i, _)| *i >= isa)
        .map(|(_, c)| *c)
}

/// One row of the compute capability table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuArch {
    pub cc: (u32, u32),
    pub arch: &'static str,
    pub generation: &'static str,
    pub specific: bool,
    pub family: bool,
}

const GPU_ARCH_TSV: &str = include_str!("gpu_arch.tsv");

pub fn gpu_archs() -> &'static [GpuArch] {
    static TABLE: OnceLock<Vec<GpuArch>> = OnceLock::new();
    TABLE.get_or_init(|| {
        tsv_rows(GPU_ARCH_TSV)
            .map(|c| GpuArch {
                cc: parse_version(c[0]).expect("gpu_arch.tsv: cc is major.minor"),
                arch: c[1],
                generation: c[2],
                specific: c[3].contains('a'),
                family: c[3].contains('f'),
            })
            .collect()
    })
}

pub fn gpu_arch(cc: (u32, u32)) -> Option<&'static GpuArch> {
    gpu_archs().iter().find(|g| g.cc == cc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_table_is_well_formed_and_unique() {
        let t = driver_errors();
        assert!(t.len() >= 14);
        for (i, a) in t.iter().enumerate() {
            assert!(a.name.starts_with("CUDA_"), "{}", a.name);
            assert!(!a.text.is_empty());
            for b in &t[i + 1..] {
                assert_ne!(a.code, b.code);
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn error_304_is_operating_system_not_invalid_context() {
        assert_eq!(
            driver_error(304).unwrap().name,
            "CUDA_ERROR_OPERATING_SYSTEM"
        );
        assert_eq!(
            driver_error(201).unwrap().name,
            "CUDA_ERROR_INVALID_CONTEXT"
        );
        assert_eq!(
            driver_error_by_name("cuda_error_no_device").unwrap().code,
            100
        );
    }
}

const DEVICE_ERRORS_TSV: &str = include_str!("device_errors.tsv");

/// Which NVIDIA node a container lacks, as the device-error table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeClass {
    Ctl,
    Uvm,
    Gpu,
}

impl NodeClass {
    fn key(self) -> &'static str {
        match self {
            NodeClass::Ctl => "nvidiactl",
            NodeClass::Uvm => "nvidia-uvm",
            NodeClass::Gpu => "gpu",
        }
    }
}

/// The driver call that fails and its error code when `node` is missing (`denied == false`) or
/// denied by the device cgroup (`denied == true`), as measured on a real GPU.
pub fn device_error(node: NodeClass, denied: bool) -> (&'static str, i64) {
    let condition = if denied { "denied" } else { "missing" };
    tsv_rows(DEVICE_ERRORS_TSV)
        .find(|c| c[0] == node.key() && c[1] == condition)
        .map(|c| {
            (
                c[2],
                c[3].parse()
                    .expect("device_errors.tsv: code column is numeric"),
            )
        })
        .unwrap_or_else(|| {
            panic!(
                "device_errors.tsv has no row for {} {condition}",
                node.key()
            )
        })
}

#[cfg(test)]
mod device_table_tests {
    use super::*;

    #[test]
    fn every_node_and_condition_has_a_known_driver_error() {
        for node in [NodeClass::Ctl, NodeClass::Uvm, NodeClass::Gpu] {
            for denied in [false, true] {
                let (call, code) = device_error(node, denied);
                assert!(call.starts_with("cu"), "{call}");
                assert!(
                    driver_error(code).is_some(),
                    "{code} not in cuda_errors.tsv"
                );
            }
        }
    }
}

const ERROR_EXPLANATIONS_TSV: &str = include_str!("error_explanations.tsv");

/// What an error means in a container, its usual causes and the findings that catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explanation {
    pub code: i64,
    pub api: &'static str,
    pub meaning: &'static str,
    pub causes: &'static str,
    pub caught_by: &'static str,
}

pub fn explanations() -> impl Iterator<Item = Explanation> {
    tsv_rows(ERROR_EXPLANATIONS_TSV).map(|c| Explanation {
        code: c[0]
            .parse()
            .expect("error_explanations.tsv: code column is numeric"),
        api: c[1],
        meaning: c[2],
        causes: c[3],
        caught_by: c[4],
    })
}

#[cfg(test)]
mod explanation_tests {
    use super::*;

    #[test]
    fn every_explained_driver_error_is_named_and_every_catcher_is_a_finding_id() {
        let mut n = 0;
        for e in explanations() {
            n += 1;
            if e.api == "driver" {
                assert!(
                    driver_error(e.code).is_some(),
                    "{} not in cuda_errors.tsv",
                    e.code
                );
            }
            for id in e.caught_by.split(", ").filter(|s| *s != "-") {
                assert!(
                    crate::finding::FindingId::parse(id).is_some() || id.starts_with("kernel-"),
                    "{}: {id} is not a finding id",
                    e.code
                );
            }
        }
        assert!(n >= 14);
    }

    #[test]
    fn ptx_isa_table_is_ordered_and_matches_measurements() {
        let t = ptx_isa_table();
        for w in t.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1, "{w:?}");
        }
        // Measured: driver CUDA 13.0 JITs 9.0 and refuses 9.5 (docs/facts.md).
        assert_eq!(max_ptx_isa_for_cuda((13, 0)), Some((9, 0)));
        assert_eq!(cuda_for_ptx_isa((9, 5)), Some((13, 5)));
        for (cuda, isa) in [
            ((11, 8), (7, 8)),
            ((12, 6), (8, 5)),
            ((12, 7), (8, 6)),
            ((12, 9), (8, 8)),
            ((99, 0), (9, 5)),
        ] {
            assert_eq!(max_ptx_isa_for_cuda(cuda), Some(isa), "{cuda:?}");
        }
        assert_eq!(max_ptx_isa_for_cuda((8, 0)), None);
    }

    /// Every knowledge table that was checked against published sources ends in a `verified`
    /// column: `yes|partial|corrected|measured:<keys>` naming header sources (`S1`, `M1`, joined
    /// by `+`) that the header defines, or `no` for an unconfirmed row.
    #[test]
    fn verified_tables_cite_their_sources_on_every_row() {
        let tables: [(&str, &str); 7] = [
            ("cuda_libraries.tsv", include_str!("cuda_libraries.tsv")),
            (
                "framework_kernels.tsv",
                include_str!("framework_kernels.tsv"),
            ),
            ("cuda_driver_min.tsv", include_str!("cuda_driver_min.tsv")),
            ("cuda_major_min.tsv", include_str!("cuda_major_min.tsv")),
            (
                "compute_capability.tsv",
                include_str!("compute_capability.tsv"),
            ),
            ("ptx_isa.tsv", include_str!("ptx_isa.tsv")),
            ("gpu_arch.tsv", include_str!("gpu_arch.tsv")),
        ];
        for (name, text) in tables {
            let header: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
            let columns: Vec<&str> = text
                .lines()
                .find(|l| !l.starts_with('#') && !l.trim().is_empty())
                .unwrap()
                .split('\t')
                .collect();
            assert_eq!(columns.last(), Some(&"verified"), "{name}");
            let mut rows = 0;
            for c in tsv_rows(text) {
                rows += 1;
                assert_eq!(c.len(), columns.len(), "{name}: {c:?}");
                let v = *c.last().unwrap();
                if v == "no" {
                    continue;
                }
                let (kind, keys) = v.split_once(':').unwrap_or_else(|| panic!("{name}: {v}"));
                assert!(
                    ["yes", "partial", "corrected", "measured"].contains(&kind),
                    "{name}: {v}"
                );
                for key in keys.split('+') {
                    assert!(
                        key.len() >= 2
                            && (key.starts_with('S') || key.starts_with('M'))
                            && key[1..].bytes().all(|b| b.is_ascii_digit()),
                        "{name}: {v}"
                    );
                    let defined = format!("# {key}: ");
                    assert!(
                        header.iter().any(|l| l.starts_with(&defined)),
                        "{name}: {key} is cited but not defined in the header"
                    );
                }
            }
            assert!(rows > 0, "{name}");
        }
    }

    #[test]
    fn gpu_arch_table_names_match_cc() {
        for g in gpu_archs() {
            assert_eq!(g.arch, format!("sm_{}{}", g.cc.0, g.cc.1));
            assert!(!g.generation.is_empty());
        }
        assert_eq!(gpu_arch((9, 0)).unwrap().generation, "Hopper");
        assert!(gpu_arch((9, 0)).unwrap().specific && !gpu_arch((9, 0)).unwrap().family);
        assert!(gpu_arch((10, 0)).unwrap().family);
        assert!(!gpu_arch((8, 0)).unwrap().specific);
        // NVIDIA cutlass v4.8.0dev: "Rubin kernels (SM107)" (gpu_arch.tsv S2).
        assert_eq!(gpu_arch((10, 7)).unwrap().generation, "Rubin");
    }
}

const KERNELS_OUTSIDE_FATBIN_TSV: &str = include_str!("kernels_outside_fatbin.tsv");

/// The library (by file name) keeps its kernels outside its registered fatbin: its fatbin
/// inventory does not tell which GPUs it runs on. Returns the library's name.
pub fn kernels_outside_fatbin(file_name: &str) -> Option<&'static str> {
    tsv_rows(KERNELS_OUTSIDE_FATBIN_TSV)
        .find(|c| file_name.starts_with(c[0]))
        .map(|c| c[1])
}

#[cfg(test)]
mod outside_fatbin_tests {
    #[test]
    fn cufft_and_npp_are_listed_and_cublas_is_not() {
        assert_eq!(
            super::kernels_outside_fatbin("libcufft.so.12.0.0.61"),
            Some("cuFFT")
        );
        assert_eq!(
            super::kernels_outside_fatbin("libnppisu.so.13"),
            Some("NPP (all libnpp*.so)")
        );
        assert_eq!(super::kernels_outside_fatbin("libcublasLt.so.13"), None);
    }
}

const CUDA_LIBRARIES_TSV: &str = include_str!("cuda_libraries.tsv");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryKind {
    /// `libcudart`: the runtime, whose version must fit the driver.
    Runtime,
    Library,
    /// Mounted from the host at start, never expected in an image.
    Driver,
}

#[derive(Debug)]
pub struct CudaLibrary {
    pub stem: &'static str,
    prefix: bool,
    pub kind: LibraryKind,
    /// Wheels for CUDA 11, 12, 13.
    wheels: [Option<&'static str>; 3],
    apt: Option<&'static str>,
}

impl CudaLibrary {
    /// What provides the library: the wheel for `cuda_major` where that is known, else the
    /// wheel of every major, and the apt package.
    pub fn providers(&self, cuda_major: Option<u64>) -> String {
        let wheel = |m: u64| {
            self.wheels
                .get(m.checked_sub(11)? as usize)
                .copied()
                .flatten()
        };
        let wheels: Vec<&str> = match cuda_major.and_then(wheel) {
            Some(w) => vec![w],
            None => self.wheels.iter().flatten().copied().collect(),
        };
        let mut out = String::new();
        if !wheels.is_empty() {
            out.push_str(&format!("the Python wheel {}", wheels.join(" / ")));
        }
        if let Some(apt) = self.apt {
            let apt = match cuda_major {
                Some(m) => apt
                    .replace("{M}", &m.to_string())
                    .replace("-{m}", "-<minor>"),
                None => apt
                    .replace("{M}-{m}", "<major>-<minor>")
                    .replace("{M}", "<major>"),
            };
            if !out.is_empty() {
                out.push_str(", or ");
            }
            out.push_str(&format!("the {apt} package of NVIDIA's CUDA repository"));
        }
        out
    }
}

pub fn cuda_libraries() -> &'static [CudaLibrary] {
    static TABLE: OnceLock<Vec<CudaLibrary>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let opt = |s: &'static str| (s != "-").then_some(s);
        let mut rows: Vec<CudaLibrary> = tsv_rows(CUDA_LIBRARIES_TSV)
            .map(|c| CudaLibrary {
                stem: c[0].trim_end_matches('*'),
                prefix: c[0].ends_with('*'),
                kind: match c[1] {
                    "runtime" => LibraryKind::Runtime,
                    "driver" => LibraryKind::Driver,
                    _ => LibraryKind::Library,
                },
                wheels: [opt(c[2]), opt(c[3]), opt(c[4])],
                apt: opt(c[5]),
            })
            .collect();
        // Longest stem first: libcublasLt before libcublas.
        rows.sort_by_key(|r| std::cmp::Reverse(r.stem.len()));
        rows
    })
}

/// The CUDA library a file or `DT_NEEDED` name is (`libcudart.so.12`, torch's
/// `libcudart-9335f6a2.so.12`), if it is one.
pub fn cuda_library(name: &str) -> Option<&'static CudaLibrary> {
    let stem = name.split(".so").next()?;
    cuda_libraries().iter().find(|r| {
        if r.prefix {
            stem.starts_with(r.stem)
        } else {
            stem == r.stem
                || stem
                    .strip_prefix(r.stem)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|hash| {
                        hash.bytes().all(|b| b.is_ascii_hexdigit()) && !hash.is_empty()
                    })
        }
    })
}

#[cfg(test)]
mod cuda_library_tests {
    use super::{LibraryKind, cuda_library};

    #[test]
    fn names_match_their_rows() {
        for (name, stem, kind) in [
            (
                "libcudart.so.12",
                Some("libcudart"),
                Some(LibraryKind::Runtime),
            ),
            (
                "libcudart-9335f6a2.so.12",
                Some("libcudart"),
                Some(LibraryKind::Runtime),
            ),
            (
                "libcublasLt.so.13",
                Some("libcublasLt"),
                Some(LibraryKind::Library),
            ),
            (
                "libcublas.so.12",
                Some("libcublas"),
                Some(LibraryKind::Library),
            ),
            (
                "libcudnn_ops.so.9",
                Some("libcudnn"),
                Some(LibraryKind::Library),
            ),
            (
                "libnvrtc-builtins.so.12.4",
                Some("libnvrtc-builtins"),
                Some(LibraryKind::Library),
            ),
            (
                "libnvJitLink.so.12",
                Some("libnvJitLink"),
                Some(LibraryKind::Library),
            ),
            ("libcuda.so.1", Some("libcuda"), Some(LibraryKind::Driver)),
            (
                "libnvidia-ptxjitcompiler.so.1",
                Some("libnvidia-"),
                Some(LibraryKind::Driver),
            ),
            ("libcudadebugger.so.1", None, None),
            ("libc.so.6", None, None),
            ("libstdc++.so.6", None, None),
            ("libcudart_static.a", None, None),
        ] {
            let row = cuda_library(name);
            assert_eq!(row.map(|r| r.stem), stem, "{name}");
            assert_eq!(row.map(|r| r.kind), kind, "{name}");
        }
    }

    #[test]
    fn providers_pick_the_wheel_of_the_cuda_major() {
        let cudart = cuda_library("libcudart.so.12").unwrap();
        assert_eq!(
            cudart.providers(Some(12)),
            "the Python wheel nvidia-cuda-runtime-cu12, or the cuda-cudart-12-<minor> package of NVIDIA's CUDA repository"
        );
        assert!(
            cudart
                .providers(Some(13))
                .contains("wheel nvidia-cuda-runtime,")
        );
        let all = cudart.providers(None);
        assert!(
            all.contains(
                "nvidia-cuda-runtime-cu11 / nvidia-cuda-runtime-cu12 / nvidia-cuda-runtime"
            ),
            "{all}"
        );
        assert!(
            cuda_library("libnvJitLink.so.12")
                .unwrap()
                .providers(Some(11))
                .starts_with("the Python wheel nvidia-nvjitlink-cu12 /")
        );
    }
}

const FRAMEWORK_KERNELS_TSV: &str = include_str!("framework_kernels.tsv");

/// When a framework launches the kernels of a library (framework_kernels.tsv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// Every start on a GPU launches from it.
    Always,
    /// Launched exactly on the GPUs of the row's `gpus`.
    OnGpus,
    /// Launched only by a feature the workload asks for.
    OptIn,
}

/// One row of framework_kernels.tsv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameworkLibrary {
    /// Row index: the order a start meets the libraries.
    pub order: usize,
    pub pattern: &'static str,
    pub framework: &'static str,
    pub launch: Launch,
    /// `all` or `9.x,10.0`.
    pub gpus: &'static str,
    pub path: &'static str,
    /// What a fix replaces, with its article: `a vLLM build`.
    pub build: &'static str,
}

impl FrameworkLibrary {
    /// Is a GPU of compute capability `cc` among the row's `gpus`?
    pub fn gpus_include(&self, cc: (u32, u32)) -> bool {
        self.gpus.split(',').any(|g| {
            let g = g.trim();
            if g == "all" {
                return true;
            }
            match g.split_once('.') {
                Some((ma, "x")) => ma.parse() == Ok(cc.0),
                _ => parse_version(g) == Some(cc),
            }
        })
    }

    /// Does the framework launch from this library on a GPU of `cc`, whatever the workload?
    pub fn launched_on(&self, cc: (u32, u32)) -> bool {
        match self.launch {
            Launch::Always => true,
            Launch::OnGpus => self.gpus_include(cc),
            Launch::OptIn => false,
        }
    }

    fn matches(&self, path: &std::path::Path) -> bool {
        let mut parts = self.pattern.rsplit('/');
        let Some(name) = parts.next() else {
            return false;
        };
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.is_empty() || !file.starts_with(name) {
            return false;
        }
        let mut dirs = path.parent().into_iter().flat_map(|p| p.iter().rev());
        parts.all(|want| match dirs.next().and_then(|d| d.to_str()) {
            Some(d) => want == "*" || want == d,
            None => false,
        })
    }
}

pub fn framework_libraries() -> &'static [FrameworkLibrary] {
    static TABLE: OnceLock<Vec<FrameworkLibrary>> = OnceLock::new();
    TABLE.get_or_init(|| {
        tsv_rows(FRAMEWORK_KERNELS_TSV)
            .enumerate()
            .map(|(order, c)| FrameworkLibrary {
                order,
                pattern: c[0],
                framework: c[1],
                launch: match c[2] {
                    "always" => Launch::Always,
                    "gpus" => Launch::OnGpus,
                    "opt-in" => Launch::OptIn,
                    other => panic!("framework_kernels.tsv: launch {other:?}"),
                },
                gpus: c[3],
                path: c[4],
                build: c[5],
            })
            .collect()
    })
}

/// The row that classifies the library at `path` (inside the image), if any: the first match.
pub fn framework_library(path: &std::path::Path) -> Option<&'static FrameworkLibrary> {
    framework_libraries().iter().find(|r| r.matches(path))
}

#[cfg(test)]
mod framework_kernels_tests {
    use super::*;
    use std::path::Path;

    /// Each row: (path as pip lays it out, framework, launched on (cc, bool)…). The source that
    /// decides each library's use is cited in the table's header (S1-S7).
    #[test]
    fn classification_table() {
        let sp = "/usr/local/lib/python3.12/site-packages";
        type Row<'a> = (&'a str, Option<(&'a str, Launch)>, &'a [((u32, u32), bool)]);
        let rows: &[Row] = &[
            // S7: ATen's kernels, every CUDA op.
            (
                "torch/lib/libtorch_cuda.so",
                Some(("PyTorch", Launch::Always)),
                &[((7, 5), true), ((12, 0), true)],
            ),
            // S5: loaded on the first linear-algebra call only.
            (
                "torch/lib/libtorch_cuda_linalg.so",
                Some(("PyTorch", Launch::OptIn)),
                &[((12, 0), false)],
            ),
            // S6: 2:4 sparsity only.
            (
                "nvidia/cusparselt/lib/libcusparseLt.so.0",
                Some(("PyTorch", Launch::OptIn)),
                &[((7, 5), false), ((9, 0), false)],
            ),
            // S1: imported by vllm/platforms/cuda.py, ops on every model run.
            (
                "vllm/_C.abi3.so",
                Some(("vLLM", Launch::Always)),
                &[((8, 0), true)],
            ),
            // S2: FA2 unless major 9; FA3 only major 9.
            (
                "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
                Some(("vLLM", Launch::OnGpus)),
                &[
                    ((7, 5), false),
                    ((8, 0), true),
                    ((8, 9), true),
                    ((9, 0), false),
                    ((10, 0), true),
                    ((12, 0), true),
                ],
            ),
            (
                "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so",
                Some(("vLLM", Launch::OnGpus)),
                &[
                    ((8, 0), false),
                    ((9, 0), true),
                    ((10, 0), false),
                    ((12, 0), false),
                ],
            ),
            // S3: MLA models only, and only on 9.x/10.x.
            (
                "vllm/_flashmla_C.abi3.so",
                Some(("vLLM", Launch::OptIn)),
                &[((9, 0), false), ((12, 0), false)],
            ),
            (
                "vllm/_flashmla_extension_C.abi3.so",
                Some(("vLLM", Launch::OptIn)),
                &[((10, 0), false)],
            ),
            // S4: MoE models only.
            (
                "vllm/_moe_C.abi3.so",
                Some(("vLLM", Launch::OptIn)),
                &[((9, 0), false)],
            ),
            // S8: NCCL kernels only in multi-GPU collectives.
            (
                "nvidia/nccl/lib/libnccl.so.2",
                Some(("PyTorch and vLLM", Launch::OptIn)),
                &[((12, 0), false)],
            ),
            // Not in the table: the default (blocks) applies.
            ("nvidia/cublas/lib/libcublasLt.so.12", None, &[]),
            ("other/_C.abi3.so", None, &[]),
            ("vllm_flash_attn/_vllm_fa2_C.abi3.so.bak/x.so", None, &[]),
            ("torch/lib/libtorch_cuda_linalg_extra.so", None, &[]),
        ];
        for (rel, want, launched) in rows {
            let p = Path::new(sp).join(rel);
            let got = framework_library(&p);
            assert_eq!(
                got.map(|r| (r.framework, r.launch)),
                *want,
                "{rel}: {got:?}"
            );
            for (cc, yes) in *launched {
                assert_eq!(got.unwrap().launched_on(*cc), *yes, "{rel} on {cc:?}");
            }
        }
        // A pattern's directories must all match, nearest first.
        assert!(framework_library(Path::new("_vllm_fa3_C.abi3.so")).is_none());
        assert!(framework_library(Path::new("/x/vllm_flash_attn/_vllm_fa3_C.so")).is_some());
    }

    #[test]
    fn flashmla_gpus_are_hopper_and_blackwell_datacenter() {
        let r = framework_library(Path::new("/sp/vllm/_flashmla_C.abi3.so")).unwrap();
        assert!(r.gpus_include((9, 0)) && r.gpus_include((10, 3)));
        assert!(!r.gpus_include((12, 0)) && !r.gpus_include((8, 0)));
    }

    #[test]
    fn core_rows_come_first() {
        let t = framework_libraries();
        let torch = t.iter().position(|r| r.pattern == "lib/libtorch_cuda.so");
        let fa2 = t.iter().position(|r| r.pattern.contains("_vllm_fa2_C"));
        assert!(torch < fa2);
        for r in t {
            assert!(
                !r.path.is_empty() && !r.gpus.is_empty() && r.build.starts_with('a'),
                "{r:?}"
            );
        }
    }
}
