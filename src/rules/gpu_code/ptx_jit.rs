//! PTX JIT: can the driver compile a PTX entry for this GPU. Two questions, both the driver's
//! (CUDA Programming Guide, "Binary Compatibility"; measured on an H100 in docs/facts.md): does
//! the PTX target an architecture the GPU can run (`compute_XY` at or below it, `compute_XYa`
//! only on X.Y, `compute_XYf` within major X), and does the driver know the PTX's ISA version
//! (`.version 9.1` needs a driver of CUDA 13.1: `knowledge/ptx_isa.tsv`). A PTX ISA newer than
//! the driver's is 222 `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`.

use crate::formats::fatbin::{Arch, EntryKind, Inventory, Variant};
use crate::formats::version::ComputeCapability;
use crate::rules::gpu_code::{FileVerdict, UNSUPPORTED_PTX_VERSION};

/// Can PTX for `arch` be compiled for `cc` (architecture only; the ISA version is separate)?
pub fn ptx_targets(arch: Arch, cc: ComputeCapability) -> bool {
    match arch.variant {
        Variant::Specific => ComputeCapability(arch.major, arch.minor) == cc,
        Variant::Family => arch.major == cc.0 && arch.minor <= cc.1,
        Variant::Plain => ComputeCapability(arch.major, arch.minor) <= cc,
    }
}

/// Does a driver whose newest PTX ISA is `driver_isa` JIT PTX of ISA `ptx_isa`? Unknown on either
/// side (`None`): we cannot say it fails, so yes.
pub fn driver_jits(ptx_isa: Option<(u16, u16)>, driver_isa: Option<(u32, u32)>) -> bool {
    match (ptx_isa, driver_isa) {
        (Some((ma, mi)), Some(max)) => (ma as u32, mi as u32) <= max,
        _ => true,
    }
}

/// The PTX ISA the driver must know for every module that fails with 222 to load: in each such
/// module the oldest PTX that targets the GPU, the newest of those over the modules.
pub fn needed_ptx_isa(
    inv: &Inventory,
    cc: ComputeCapability,
    v: &FileVerdict,
) -> Option<(u32, u32)> {
    v.failing
        .iter()
        .filter(|(_, code)| *code == UNSUPPORTED_PTX_VERSION)
        .filter_map(|(c, _)| {
            inv.entries
                .iter()
                .filter(|e| {
                    e.container == *c && e.kind == EntryKind::Ptx && ptx_targets(e.arch, cc)
                })
                .filter_map(|e| e.ptx_isa)
                .map(|(a, b)| (a as u32, b as u32))
                .min()
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::version::{ComputeCapability, CudaVersion};
    use crate::knowledge::max_ptx_isa_for_cuda;

    /// PTX ISA against the driver's CUDA, through the knowledge table (knowledge/ptx_isa.tsv).
    #[test]
    fn ptx_isa_against_the_driver() {
        let cases: [(&str, (u16, u16), &str, bool); 5] = [
            ("9.1 needs CUDA 13.1", (9, 1), "13.0", false),
            ("9.0 on 13.0", (9, 0), "13.0", true),
            ("9.1 on 13.1", (9, 1), "13.1", true),
            ("8.8 on 12.9", (8, 8), "12.9", true),
            ("9.0 on 12.9", (9, 0), "12.9", false),
        ];
        for (name, isa, cuda, want) in cases {
            let cuda: CudaVersion = cuda.parse().unwrap();
            let driver = max_ptx_isa_for_cuda(cuda.into());
            assert_eq!(driver_jits(Some(isa), driver), want, "{name}");
        }
        // Unknown on either side is not a failure.
        assert!(driver_jits(None, Some((7, 0))));
        assert!(driver_jits(Some((9, 9)), None));
    }

    #[test]
    fn ptx_targets_by_variant() {
        let cc = ComputeCapability(9, 0);
        let cases = [
            ("compute_80", true),
            ("compute_90", true),
            ("compute_100", false),
            ("compute_90a", true),
            ("compute_86a", false),
        ];
        for (arch, want) in cases {
            assert_eq!(ptx_targets(Arch::parse(arch).unwrap(), cc), want, "{arch}");
        }
    }
}
