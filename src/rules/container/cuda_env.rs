//! The container's CUDA environment as the driver reads it (CUDA C++ Programming Guide, appendix
//! "CUDA Environment Variables"):
//!
//! * `CUDA_VISIBLE_DEVICES` — a comma list of device indices, GPU UUIDs (`GPU-…`, a unique
//!   prefix is enough) or MIG UUIDs (`MIG-…`). Only the devices listed are visible, in that order;
//!   "if one of the indices is invalid, only the devices whose index precedes the invalid index
//!   are visible". Indices count the devices the *container* has. No visible device: `cuInit`
//!   returns 100 `CUDA_ERROR_NO_DEVICE` (measured on the H100: `=1` on a one-GPU container, `=`
//!   empty and an unknown `GPU-…` UUID).
//! * `CUDA_FORCE_PTX_JIT=1` — "forces the device driver to ignore any binary code embedded in an
//!   application and to just-in-time compile embedded PTX code instead. If a kernel does not have
//!   embedded PTX code, it will fail to load": a SASS-only module gives 209
//!   `CUDA_ERROR_NO_BINARY_FOR_GPU` (measured).
//! * `CUDA_DISABLE_PTX_JIT=1` — "disables the just-in-time compilation of embedded PTX code and
//!   use the compatible binary code embedded in an application. If a kernel does not have embedded
//!   binary code or the embedded binary was compiled for an incompatible architecture, then it will
//!   fail to load": a module that loads only by PTX JIT gives 223
//!   `CUDA_ERROR_JIT_COMPILATION_DISABLED` (measured).
//!
//! Only the value `1` is taken to set the two JIT variables (the documented one); any other value
//! predicts nothing. The kernel verdicts come from `rules::gpu_code` (`module_verdict`), with the
//! entries the variable leaves the driver.

use crate::facts::container::{DeviceView, GpuRequest, Node};
use crate::facts::host::{Gpu, HostProfile};
use crate::finding::{Finding, FindingId, Predicted, Severity};
use crate::formats::fatbin::{Entry, EntryKind, Format, Inventory, ScannedFile};
use crate::formats::version::{ComputeCapability, CudaVersion};
use crate::rules::gpu_code::{self as kernels, NO_BINARY_FOR_GPU};

pub const NO_DEVICE: i64 = 100;
pub const JIT_COMPILATION_DISABLED: i64 = 223;

/// The CUDA devices the container will have, as far as known.
#[derive(Debug, Clone, Default)]
pub struct ContainerGpus<'a> {
    /// How many (the `/dev/nvidiaN` nodes it gets); None where unknown or MIG-backed.
    pub count: Option<usize>,
    /// Which host GPUs they are (for UUIDs), where known.
    pub gpus: Option<Vec<&'a Gpu>>,
}

/// The container's devices from the device view and the host: the count from its `/dev/nvidiaN`
/// character nodes; the GPUs where the request names them (or the container has every GPU of
/// the host). On a host with MIG enabled the CUDA devices are MIG instances: unknown.
pub fn container_gpus<'a>(
    devices: Result<&DeviceView, &str>,
    request: &GpuRequest,
    host: &'a HostProfile,
) -> ContainerGpus<'a> {
    if host.gpus.iter().any(|g| g.mig) {
        return ContainerGpus::default();
    }
    let count = devices.ok().map(|v| {
        v.nodes
            .iter()
            .filter(|(p, n)| {
                matches!(n, Node::Char { .. })
                    && p.strip_prefix("/dev/nvidia")
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .count()
    });
    let named = crate::rules::host::compute_mode::container_gpus(request, host);
    let gpus = match (named, count) {
        (Some(g), Some(n)) if g.len() == n => Some(g),
        (_, Some(n)) if n == host.gpus.len() && n > 0 => Some(host.gpus.iter().collect()),
        _ => None,
    };
    ContainerGpus { count, gpus }
}

#[derive(Debug, PartialEq)]
enum Item {
    Valid,
    /// Names no device of the container (why).
    Invalid(String),
    /// A value that hides devices on purpose (`-1`, a word): why.
    Hide(String),
    Unknown(String),
}

fn judge_item(e: &str, cg: &ContainerGpus) -> Item {
    if let Ok(i) = e.parse::<u64>() {
        return match cg.count {
            Some(n) if (i as usize) < n => Item::Valid,
            Some(n) => Item::Invalid(format!(
                "index {i}, but the container has {n} GPU(s) (indices count the container's devices)"
            )),
            None => Item::Unknown(format!("index {i}: the container's GPU count is unknown")),
        };
    }
    if e.starts_with('-') || e.is_empty() {
        return Item::Hide(format!("{e:?} names no device"));
    }
    let lower = e.to_ascii_lowercase();
    if lower.starts_with("gpu-") && lower.len() > 4 {
        return match &cg.gpus {
            Some(gpus) => {
                if gpus
                    .iter()
                    .any(|g| g.uuid.to_ascii_lowercase().starts_with(&lower))
                {
                    Item::Valid
                } else {
                    Item::Invalid(format!(
                        "{e} is not the UUID of a GPU the container gets ({})",
                        gpus.iter()
                            .map(|g| g.uuid.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
            None => Item::Unknown(format!("{e}: the container's GPUs are unknown")),
        };
    }
    if lower.starts_with("mig-") {
        return match &cg.gpus {
            // MIG UUIDs exist only on MIG-enabled GPUs (container_gpus leaves those unknown).
            Some(_) => Item::Invalid(format!(
                "{e} is a MIG device, and no GPU the container gets is in MIG mode"
            )),
            None => Item::Unknown(format!("{e}: the container's MIG devices are unknown")),
        };
    }
    Item::Hide(format!("{e:?} is neither an index nor a UUID"))
}

/// `CUDA_VISIBLE_DEVICES` against the devices the container gets.
pub fn visible_devices(value: &str, cg: &ContainerGpus) -> Vec<Finding> {
    let predicted = || Some(Predicted::driver(NO_DEVICE));
    let evidence = |why: &str| format!("CUDA_VISIBLE_DEVICES={value:?}: {why}");
    if value.trim().is_empty() {
        return vec![Finding::new(
            FindingId::CudaVisibleDevicesHidden,
            Severity::Warn,
            predicted(),
            evidence("empty: CUDA sees no device, cuInit fails"),
            "unset CUDA_VISIBLE_DEVICES (or list the devices to use) if the workload needs the GPU",
        )];
    }
    let mut visible = 0;
    for e in value.split(',').map(str::trim) {
        match judge_item(e, cg) {
            Item::Valid => visible += 1,
            Item::Unknown(why) if visible == 0 => {
                return vec![Finding::skipped(
                    FindingId::CudaVisibleDevicesSkipped,
                    evidence(&why),
                )];
            }
            Item::Unknown(_) => return Vec::new(),
            Item::Invalid(why) | Item::Hide(why) if visible > 0 => {
                return vec![Finding::new(
                    FindingId::CudaVisibleDevicesTruncated,
                    Severity::Warn,
                    None,
                    evidence(&format!(
                        "{why}; CUDA stops at the first entry that names no device, so the workload sees only the {visible} before it"
                    )),
                    "list only devices the container gets (indices from 0, or their UUIDs)",
                )];
            }
            Item::Invalid(why) => {
                return vec![Finding::new(
                    FindingId::CudaVisibleDevicesNone,
                    Severity::Block,
                    predicted(),
                    evidence(&format!("{why}: CUDA sees no device, cuInit fails")),
                    "list devices the container gets (indices from 0, or their UUIDs), or unset CUDA_VISIBLE_DEVICES",
                )];
            }
            Item::Hide(why) => {
                return vec![Finding::new(
                    FindingId::CudaVisibleDevicesHidden,
                    Severity::Warn,
                    predicted(),
                    evidence(&format!("{why}: CUDA sees no device, cuInit fails")),
                    "unset CUDA_VISIBLE_DEVICES (or list the devices to use) if the workload needs the GPU",
                )];
            }
        }
    }
    Vec::new()
}

fn set_to_one(env: &[String], key: &str) -> bool {
    crate::input::bundle::env_var(env, key).is_some_and(|v| v.trim() == "1")
}

/// How many of the file's GPU modules load on `cc` with only `keep` entries offered, against how
/// many loaded with all: the modules that loaded and no longer do, with the error each gives.
fn lost_modules(
    inv: &Inventory,
    cc: ComputeCapability,
    driver_isa: Option<(u32, u32)>,
    keep: impl Fn(&Entry) -> bool,
) -> (usize, usize) {
    let raw = inv.format == Format::Ptx;
    let (mut modules, mut lost) = (0, 0);
    for c in 0..inv.containers.len() {
        let entries: Vec<&Entry> = inv
            .entries
            .iter()
            .filter(|e| e.container == c && !matches!(e.kind, EntryKind::Other(_)))
            .collect();
        if entries.is_empty() {
            continue;
        }
        modules += 1;
        if kernels::module_verdict(&entries, cc, driver_isa, raw).is_err() {
            continue;
        }
        let kept: Vec<&Entry> = entries.iter().copied().filter(|e| keep(e)).collect();
        if kernels::module_verdict(&kept, cc, driver_isa, raw).is_err() {
            lost += 1;
        }
    }
    (modules, lost)
}

/// `CUDA_FORCE_PTX_JIT` / `CUDA_DISABLE_PTX_JIT` against the image's GPU code on the
/// container's GPUs: only what the variable changes (a file that loads without it and not with
/// it); files that load on no GPU anyway are the kernel rules' findings.
pub fn ptx_jit(
    env: &[String],
    files: &[ScannedFile],
    gpus: &[Gpu],
    driver: Option<CudaVersion>,
) -> Vec<Finding> {
    let force = set_to_one(env, "CUDA_FORCE_PTX_JIT");
    let disable = set_to_one(env, "CUDA_DISABLE_PTX_JIT");
    if !force && !disable {
        return Vec::new();
    }
    let driver_isa = driver.and_then(|d| crate::knowledge::max_ptx_isa_for_cuda(d.into()));
    let mut ccs: Vec<ComputeCapability> = gpus.iter().filter_map(|g| g.cc()).collect();
    ccs.sort();
    ccs.dedup();
    let mut out = Vec::new();
    for f in files {
        let Ok(inv) = &f.inventory else { continue };
        for &cc in &ccs {
            // FORCE wins where both are set: binary code is ignored first.
            let (id, var, code, keep_kind) = if force {
                (
                    FindingId::CudaForcePtxJitNoPtx,
                    "CUDA_FORCE_PTX_JIT=1",
                    NO_BINARY_FOR_GPU,
                    EntryKind::Ptx,
                )
            } else {
                (
                    FindingId::CudaDisablePtxJitNeedsJit,
                    "CUDA_DISABLE_PTX_JIT=1",
                    JIT_COMPILATION_DISABLED,
                    EntryKind::Sass,
                )
            };
            let (modules, lost) = lost_modules(inv, cc, driver_isa, |e| e.kind == keep_kind);
            if lost == 0 {
                continue;
            }
            let all = lost == modules;
            let what = if force {
                "it has no PTX for them, and the variable makes the driver ignore its SASS"
            } else {
                "they load only by JIT-compiling PTX, which the variable turns off"
            };
            out.push(Finding::new(
                id,
                if all { Severity::Block } else { Severity::Warn },
                Some(Predicted::driver(code)),
                format!(
                    "{}: {var} in the container's environment: {lost} of its {modules} GPU module(s) stop loading on sm_{}{} — {what}; it carries {}",
                    f.path.display(),
                    cc.0,
                    cc.1,
                    kernels::carried(inv)
                ),
                if force {
                    format!("remove {var} from the container's environment, or use a build of this library that carries PTX")
                } else {
                    format!(
                        "remove {var} from the container's environment, or use a build of this library that carries SASS for sm_{}{}",
                        cc.0, cc.1
                    )
                },
            ));
        }
    }
    out
}

/// Every CUDA environment rule for one container.
pub fn check(
    env: &[String],
    devices: Result<&DeviceView, &str>,
    request: &GpuRequest,
    host: &HostProfile,
    files: Option<&[ScannedFile]>,
    gpus: &[Gpu],
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(v) = crate::input::bundle::env_var(env, "CUDA_VISIBLE_DEVICES") {
        out.extend(visible_devices(v, &container_gpus(devices, request, host)));
    }
    if let Some(files) = files {
        out.extend(ptx_jit(env, files, gpus, host.cuda_driver_release()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::container::ViewSource;
    use crate::formats::fatbin::{Arch, Container};

    fn gpu(index: u32, uuid: &str, cc: &str) -> Gpu {
        serde_json::from_value(serde_json::json!({
            "index": index, "uuid": uuid, "compute_capability": cc, "name": "NVIDIA H100"
        }))
        .unwrap()
    }

    fn host(gpus: Vec<Gpu>) -> HostProfile {
        HostProfile {
            driver_version: Some("580.159.04".into()),
            cuda_driver_version: Some("13.0".into()),
            gpus,
            ..HostProfile::default()
        }
    }

    fn view(n: u32) -> DeviceView {
        let mut nodes = vec![
            (
                "/dev/nvidiactl".to_string(),
                Node::Char {
                    major: 195,
                    minor: 255,
                },
            ),
            (
                "/dev/nvidia-uvm".to_string(),
                Node::Char {
                    major: 238,
                    minor: 0,
                },
            ),
        ];
        for i in 0..n {
            nodes.push((
                format!("/dev/nvidia{i}"),
                Node::Char {
                    major: 195,
                    minor: i,
                },
            ));
        }
        DeviceView {
            source: ViewSource::Spec,
            nodes,
            cgroup: None,
            cgroup_source: None,
        }
    }

    const H100: &str = "GPU-c3c836ff-5a48-7b1f-54ec-a4fd72c166a8";

    /// The Programming Guide's rule (listed devices only, in order; stop at the first invalid
    /// one) and the H100 measurements: `=1` on one GPU, `=` and an unknown UUID give 100.
    #[test]
    fn visible_devices_table() {
        let one = host(vec![gpu(0, H100, "9.0")]);
        let v1 = view(1);
        let cg1 = container_gpus(Ok(&v1), &GpuRequest::SpecDevices, &one);
        assert_eq!(cg1.count, Some(1));
        let two = host(vec![gpu(0, H100, "9.0"), gpu(1, "GPU-aaaa", "9.0")]);
        let v2 = view(2);
        let cg2 = container_gpus(Ok(&v2), &GpuRequest::SpecDevices, &two);
        let unknown = ContainerGpus::default();
        // (value, container, ids, predicted code)
        let cases: Vec<(&str, &ContainerGpus, Vec<&str>, Option<i64>)> = vec![
            ("0", &cg1, vec![], None),
            (
                "1",
                &cg1,
                vec![FindingId::CudaVisibleDevicesNone.as_str()],
                Some(100),
            ),
            (
                "",
                &cg1,
                vec![FindingId::CudaVisibleDevicesHidden.as_str()],
                Some(100),
            ),
            (
                "-1",
                &cg1,
                vec![FindingId::CudaVisibleDevicesHidden.as_str()],
                Some(100),
            ),
            (
                "none",
                &cg1,
                vec![FindingId::CudaVisibleDevicesHidden.as_str()],
                Some(100),
            ),
            (H100, &cg1, vec![], None),
            // A unique prefix names the GPU, any case.
            ("GPU-C3C836FF", &cg1, vec![], None),
            (
                "GPU-deadbeef-0000",
                &cg1,
                vec![FindingId::CudaVisibleDevicesNone.as_str()],
                Some(100),
            ),
            (
                "MIG-1e2f3a4b-0000",
                &cg1,
                vec![FindingId::CudaVisibleDevicesNone.as_str()],
                Some(100),
            ),
            // Stops at the first invalid entry: 0 stays visible.
            (
                "0,1",
                &cg1,
                vec![FindingId::CudaVisibleDevicesTruncated.as_str()],
                None,
            ),
            (
                "0,-1,1",
                &cg2,
                vec![FindingId::CudaVisibleDevicesTruncated.as_str()],
                None,
            ),
            ("1,0", &cg2, vec![], None),
            (" 1 , 0 ", &cg2, vec![], None),
            (
                "2",
                &cg2,
                vec![FindingId::CudaVisibleDevicesNone.as_str()],
                Some(100),
            ),
            // Not known: never a block.
            (
                "3",
                &unknown,
                vec![FindingId::CudaVisibleDevicesSkipped.as_str()],
                None,
            ),
            (
                "GPU-deadbeef",
                &unknown,
                vec![FindingId::CudaVisibleDevicesSkipped.as_str()],
                None,
            ),
            (
                "0,GPU-deadbeef",
                &cg1,
                vec![FindingId::CudaVisibleDevicesTruncated.as_str()],
                None,
            ),
        ];
        for (value, cg, want, code) in cases {
            let f = visible_devices(value, cg);
            assert_eq!(crate::rules::ids(&f), want, "{value:?}");
            assert_eq!(
                f.first()
                    .and_then(|f| f.predicted.as_ref())
                    .and_then(|p| p.code),
                code,
                "{value:?}"
            );
            if let Some(f) = f.first() {
                let block = f.id == FindingId::CudaVisibleDevicesNone;
                assert_eq!(f.severity == Severity::Block, block, "{value:?}");
            }
        }
        // A MIG host: the CUDA devices are MIG instances, not counted here.
        let mut mig = gpu(0, H100, "9.0");
        mig.mig = true;
        let m = host(vec![mig]);
        let cg = container_gpus(Ok(&v1), &GpuRequest::SpecDevices, &m);
        assert_eq!(cg.count, None);
    }

    fn entry(kind: EntryKind, sm: &str, isa: Option<(u16, u16)>, container: usize) -> Entry {
        Entry {
            kind,
            arch: Arch::parse(sm).unwrap(),
            ptx_isa: isa,
            compressed: false,
            offset: 0,
            header_size: 64,
            payload_size: 0,
            uncompressed_size: None,
            container,
        }
    }

    fn file(modules: &[&[Entry]]) -> ScannedFile {
        let mut entries = Vec::new();
        for (c, m) in modules.iter().enumerate() {
            for e in m.iter() {
                let mut e = e.clone();
                e.container = c;
                entries.push(e);
            }
        }
        ScannedFile {
            path: "/usr/lib/libk.so".into(),
            inventory: Ok(Inventory {
                format: Format::Fatbin,
                containers: modules
                    .iter()
                    .map(|_| Container { offset: 0, size: 0 })
                    .collect(),
                entries,
            }),
        }
    }

    /// The driver's documented behaviour of the two variables, on an H100 (sm_90), driver 13.0:
    /// FORCE ignores SASS (a SASS-only module gives 209), DISABLE refuses PTX JIT (a module
    /// that loads only by PTX gives 223).
    #[test]
    #[allow(clippy::type_complexity, clippy::cloned_ref_to_slice_refs)] // a table
    fn ptx_jit_table() {
        let h100 = vec![gpu(0, H100, "9.0")];
        let sass90 = entry(EntryKind::Sass, "sm_90", None, 0);
        let ptx80 = entry(EntryKind::Ptx, "sm_80", Some((8, 0)), 0);
        let sass80 = entry(EntryKind::Sass, "sm_80", None, 0);
        let env = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (env, modules, ids, code, severity)
        let cases: Vec<(Vec<String>, ScannedFile, Vec<&str>, Option<i64>)> = vec![
            (env(&[]), file(&[&[sass90.clone()]]), vec![], None),
            (
                env(&["CUDA_FORCE_PTX_JIT=1"]),
                file(&[&[sass90.clone()]]),
                vec![FindingId::CudaForcePtxJitNoPtx.as_str()],
                Some(209),
            ),
            (
                env(&["CUDA_FORCE_PTX_JIT=1"]),
                file(&[&[sass90.clone(), ptx80.clone()]]),
                vec![],
                None,
            ),
            (
                env(&["CUDA_FORCE_PTX_JIT=0"]),
                file(&[&[sass90.clone()]]),
                vec![],
                None,
            ),
            (
                env(&["CUDA_DISABLE_PTX_JIT=1"]),
                file(&[&[ptx80.clone()]]),
                vec![FindingId::CudaDisablePtxJitNeedsJit.as_str()],
                Some(223),
            ),
            // sm_80 SASS does not run on sm_90: the PTX was what loaded.
            (
                env(&["CUDA_DISABLE_PTX_JIT=1"]),
                file(&[&[sass80.clone(), ptx80.clone()]]),
                vec![FindingId::CudaDisablePtxJitNeedsJit.as_str()],
                Some(223),
            ),
            (
                env(&["CUDA_DISABLE_PTX_JIT=1"]),
                file(&[&[sass90.clone(), ptx80.clone()]]),
                vec![],
                None,
            ),
            // Loads on no GPU anyway: the kernel rules' finding, not this one.
            (
                env(&["CUDA_DISABLE_PTX_JIT=1"]),
                file(&[&[sass80.clone()]]),
                vec![],
                None,
            ),
            // One module of two: a warning.
            (
                env(&["CUDA_FORCE_PTX_JIT=1"]),
                file(&[&[sass90.clone()], &[ptx80.clone()]]),
                vec![FindingId::CudaForcePtxJitNoPtx.as_str()],
                Some(209),
            ),
        ];
        for (i, (env, f, want, code)) in cases.into_iter().enumerate() {
            let out = ptx_jit(
                &env,
                std::slice::from_ref(&f),
                &h100,
                Some(CudaVersion(13, 0)),
            );
            assert_eq!(crate::rules::ids(&out), want, "case {i}");
            if let Some(o) = out.first() {
                assert_eq!(o.predicted.as_ref().and_then(|p| p.code), code, "case {i}");
                let modules = f.inventory.as_ref().unwrap().containers.len();
                let sev = if modules == 1 {
                    Severity::Block
                } else {
                    Severity::Warn
                };
                assert_eq!(o.severity, sev, "case {i}");
            }
        }
    }
}
