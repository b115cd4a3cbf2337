//! Which image of a module the driver loads on a GPU — SASS for the GPU, else PTX it can JIT —
//! and the error a module with neither gives; per file, how many of its modules load and how.

use crate::formats::fatbin::{Arch, Entry, EntryKind, Format, Inventory, Variant};
use crate::formats::version::ComputeCapability;
use crate::rules::gpu_code::ptx_jit::{driver_jits, ptx_targets};

pub const NO_BINARY_FOR_GPU: i64 = 209;
pub const INVALID_PTX: i64 = 218;
pub const UNSUPPORTED_PTX_VERSION: i64 = 222;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Sass,
    PtxJit,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Sass => "sass",
            Via::PtxJit => "ptx-jit",
        }
    }
}

/// Does a cubin for `arch` run on a GPU of compute capability `cc`?
pub fn sass_runs_on(arch: Arch, cc: ComputeCapability) -> bool {
    match arch.variant {
        Variant::Specific => ComputeCapability(arch.major, arch.minor) == cc,
        Variant::Plain | Variant::Family => arch.major == cc.0 && arch.minor <= cc.1,
    }
}

/// The verdict for one module (container) on one GPU.
/// `driver_isa`: the newest PTX ISA the driver knows; `None` = unknown driver, ISA not checked.
pub fn module_verdict(
    entries: &[&Entry],
    cc: ComputeCapability,
    driver_isa: Option<(u32, u32)>,
    raw_ptx: bool,
) -> Result<Via, i64> {
    if entries
        .iter()
        .any(|e| e.kind == EntryKind::Sass && sass_runs_on(e.arch, cc))
    {
        return Ok(Via::Sass);
    }
    let candidates: Vec<&&Entry> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Ptx && ptx_targets(e.arch, cc))
        .collect();
    let isa_ok = |e: &Entry| driver_jits(e.ptx_isa, driver_isa);
    if candidates.iter().any(|e| isa_ok(e)) {
        return Ok(Via::PtxJit);
    }
    if !candidates.is_empty() {
        return Err(UNSUPPORTED_PTX_VERSION);
    }
    // Raw PTX text is parsed before its target is compared: a too-new `.version` gives 222 even
    // for a newer architecture, an acceptable one 218 (measured on the H100, driver 13.0). In a
    // fatbin the driver picks by architecture first: no fitting entry is 209 whatever the ISA.
    if raw_ptx && entries.iter().any(|e| e.kind == EntryKind::Ptx) {
        if entries
            .iter()
            .any(|e| e.kind == EntryKind::Ptx && !isa_ok(e))
        {
            return Err(UNSUPPORTED_PTX_VERSION);
        }
        return Err(INVALID_PTX);
    }
    Err(NO_BINARY_FOR_GPU)
}

/// The verdict for one file on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVerdict {
    /// Modules with GPU code (containers holding SASS or PTX).
    pub modules: usize,
    pub by_sass: usize,
    pub by_ptx: usize,
    /// Modules with no loadable image, and the error each would give.
    pub failing: Vec<(usize, i64)>,
    pub loadable: bool,
    pub via: Option<Via>,
    pub predicted_error: Option<i64>,
}

pub fn file_verdict(
    inv: &Inventory,
    cc: ComputeCapability,
    driver_isa: Option<(u32, u32)>,
) -> FileVerdict {
    let raw = inv.format == Format::Ptx;
    let mut v = FileVerdict {
        modules: 0,
        by_sass: 0,
        by_ptx: 0,
        failing: Vec::new(),
        loadable: true,
        via: None,
        predicted_error: None,
    };
    // Entries grouped by module in one pass: filtering all entries once per module was
    // quadratic (libcublasLt: 2638 modules x 5666 entries). One flat array cut by module
    // (a counting sort, the file's order kept within a module) rather than a vector per
    // module: thousands of small allocations were a large part of a cached hook's time.
    let judged =
        |e: &&Entry| !matches!(e.kind, EntryKind::Other(_)) && e.container < inv.containers.len();
    let mut start = vec![0usize; inv.containers.len() + 1];
    for e in inv.entries.iter().filter(judged) {
        start[e.container + 1] += 1;
    }
    for c in 0..inv.containers.len() {
        start[c + 1] += start[c];
    }
    let mut next = start.clone();
    let mut flat: Vec<Option<&Entry>> = vec![None; start[inv.containers.len()]];
    for e in inv.entries.iter().filter(judged) {
        flat[next[e.container]] = Some(e);
        next[e.container] += 1;
    }
    let flat: Vec<&Entry> = flat.into_iter().flatten().collect();
    for c in 0..inv.containers.len() {
        let entries = &flat[start[c]..start[c + 1]];
        if entries.is_empty() {
            continue;
        }
        v.modules += 1;
        match module_verdict(entries, cc, driver_isa, raw) {
            Ok(Via::Sass) => v.by_sass += 1,
            Ok(Via::PtxJit) => v.by_ptx += 1,
            Err(code) => v.failing.push((c, code)),
        }
    }
    if v.modules > 0 && v.by_sass + v.by_ptx == 0 {
        v.loadable = false;
        let codes: Vec<i64> = v.failing.iter().map(|(_, c)| *c).collect();
        // 222 is the one with a driver-side fix; name it when any module would give it.
        v.predicted_error = [UNSUPPORTED_PTX_VERSION, INVALID_PTX, NO_BINARY_FOR_GPU]
            .into_iter()
            .find(|c| codes.contains(c));
    } else if v.by_ptx > 0 {
        v.via = Some(Via::PtxJit);
    } else if v.by_sass > 0 {
        v.via = Some(Via::Sass);
    }
    v
}
