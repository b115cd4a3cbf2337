//! The finding catalog: every finding id this program can emit, as a variant of [`FindingId`],
//! with its stable id string, the severities the rules give it, a one-line summary and the
//! longer explanation. People grep logs and write alerts on the ids, so they never change; a
//! new finding is a new entry here (and in `finding-ids.txt`, on purpose). The way cargo-deny
//! keeps its diagnostic codes: the code is an enum, the text lives with it, the book is
//! generated from it (`docs/reference/findings.md`, checked by a test below).
//!
//! This module depends on nothing but [`Severity`], so the config, the rules and the verdict
//! can all use it.

use std::fmt;

use super::Severity;
use Severity::{Block, Info, Warn};

/// The part of the pipeline that emits a finding: the reference's sections, and what a caller
/// may want to filter as a group (the NRI plugin drops the version rules' findings at creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// Device nodes, their majors and the device cgroup rules.
    Devices,
    /// `NVIDIA_REQUIRE_*` and `NVIDIA_DISABLE_REQUIRE`.
    Requirements,
    /// The image's CUDA against the driver: runtimes, forward compatibility, compute capability.
    CudaVersions,
    /// What the start path (CDI, hooks) does to the container.
    StartPath,
    /// The host's state: driver libraries, CDI specs, visible devices, compute mode, user
    /// namespaces, Fabric Manager.
    HostState,
    /// Free GPU memory and disk space.
    Headroom,
    /// The image's GPU code (fatbins) on the container's GPUs.
    Kernels,
    /// The container's `CUDA_*` variables.
    CudaEnv,
    /// Whether the image's CUDA libraries load.
    Loading,
    /// JIT toolchains in the image (ptxas, NVRTC).
    Toolchains,
    /// The probe: a real CUDA context inside the container.
    Probe,
    /// Reading an image's layers (`check --image`).
    ImageRead,
    /// The hook and its policy.
    Hook,
}

impl Area {
    /// Every area, in the reference's order.
    pub const ALL: &'static [Area] = &[
        Area::Devices,
        Area::Requirements,
        Area::CudaVersions,
        Area::StartPath,
        Area::HostState,
        Area::Headroom,
        Area::Kernels,
        Area::CudaEnv,
        Area::Loading,
        Area::Toolchains,
        Area::Probe,
        Area::ImageRead,
        Area::Hook,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Area::Devices => "Device nodes and cgroup rules",
            Area::Requirements => "Image requirements (NVIDIA_REQUIRE_*)",
            Area::CudaVersions => "The image's CUDA and the driver",
            Area::StartPath => "The start path",
            Area::HostState => "Host state",
            Area::Headroom => "Headroom: GPU memory and disk space",
            Area::Kernels => "The image's GPU code",
            Area::CudaEnv => "CUDA environment variables",
            Area::Loading => "Loading the image's CUDA libraries",
            Area::Toolchains => "JIT toolchains",
            Area::Probe => "The probe",
            Area::ImageRead => "Reading an image (check --image)",
            Area::Hook => "The hook and its policy",
        }
    }
}

/// One catalog entry.
#[derive(Debug)]
pub struct Entry {
    pub id: FindingId,
    /// The stable kebab-case id, as it appears in `--json`, logs and the config's `[severity]`.
    pub name: &'static str,
    pub area: Area,
    /// The severities the rules give it, before the config's `[severity]` overrides; two where
    /// the rule chooses by the evidence (say, block when every GPU is affected, warn when some).
    pub severities: &'static [Severity],
    /// One line: what the finding says.
    pub summary: &'static str,
    /// More, in Markdown: when exactly, what the workload meets, what is not covered. May be
    /// empty.
    pub details: &'static str,
}

macro_rules! catalog {
    ($(
        $(#[$attr:meta])*
        $variant:ident = $name:literal, $area:ident, [$($sev:ident),+],
            $summary:literal,
            $details:literal;
    )+) => {
        /// Every finding id. `Serialize`/`Deserialize` as its stable string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FindingId {
            $($(#[$attr])* $variant,)+
        }

        /// The catalog, one entry per [`FindingId`] in declaration order (a test holds it).
        pub const CATALOG: &[Entry] = &[
            $(Entry {
                id: FindingId::$variant,
                name: $name,
                area: Area::$area,
                severities: &[$($sev),+],
                summary: $summary,
                details: $details,
            },)+
        ];
    };
}

catalog! {
    // Devices (src/rules/devices.rs)
    DeviceNodeMissing = "device-node-missing", Devices, [Block],
        "a device node the container needs is absent or not a character device",
        r#"`/dev/nvidiactl`, `/dev/nvidia-uvm` or a `/dev/nvidiaN` the container needs is absent from `linux.devices` or not a character device; the driver error each missing node causes is data (`src/knowledge/device_errors.tsv`), measured on an H100."#;
    DeviceNodeWrongMajor = "device-node-wrong-major", Devices, [Block],
        "a device node's major differs from the host driver's",
        r#"A node's major differs from the host driver's (`/proc/devices`), or `nvidiactl` is not minor 255."#;
    DeviceCgroupDenied = "device-cgroup-denied", Devices, [Block],
        "the device cgroup does not allow read and write on a GPU node",
        r#"The device cgroup does not allow `rw` on a node (spec rules: last match wins, default deny, as runc)."#;
    DeviceNodesSkipped = "device-nodes-skipped", Devices, [Info],
        "the container's device nodes were not known, so they were not judged",
        r#"Offline, devices the NVIDIA hook injects at start are not in the spec."#;
    DeviceMajorsSkipped = "device-majors-skipped", Devices, [Info],
        "the host's NVIDIA majors were not known, so the nodes' majors were not judged",
        r#"The host's `/proc/devices` lists no `nvidia` or `nvidia-uvm` major (driver not loaded, or no host profile): device majors and cgroup rules were not checked."#;
    DeviceCgroupSkipped = "device-cgroup-skipped", Devices, [Info],
        "the device cgroup rules were not judged",
        r#"The container's device cgroup is cgroup v2 (an eBPF program) or unreadable."#;
    GpuEnvWithoutRuntime = "gpu-env-without-runtime", Devices, [Warn],
        "NVIDIA_VISIBLE_DEVICES is set, but no NVIDIA hook or devices are",
        r#"`NVIDIA_VISIBLE_DEVICES` set, but no NVIDIA hook or devices: the container was probably started without the NVIDIA runtime."#;

    // Requirements (src/rules/requirements.rs)
    RequireUnsatisfied = "require-unsatisfied", Requirements, [Block],
        "an NVIDIA_REQUIRE_* of the image does not hold on this host",
        r#"`NVIDIA_REQUIRE_*` evaluated as libnvidia-container does, with the failing condition and the host's value; blocks only where NVIDIA's toolkit enforces it (its legacy prestart hook, CSV mode) or the host sets `enforce_requirements = true`, else it becomes `require-not-enforced`."#;
    RequireInvalid = "require-invalid", Requirements, [Block, Warn],
        "an NVIDIA_REQUIRE_* of the image does not parse",
        r#"Block where the toolkit's evaluation reaches the malformed condition, warn where an earlier alternative holds; on paths that do not check requirements it becomes `require-not-enforced`."#;
    RequireUnknownKey = "require-unknown-key", Requirements, [Warn],
        "an NVIDIA_REQUIRE_* condition uses a key other than cuda, driver, arch, brand",
        r#"The CDI-mode evaluator skips it; libnvidia-container (legacy `--gpus` mode) fails the start."#;
    RequireDisabled = "require-disabled", Requirements, [Info],
        "NVIDIA_DISABLE_REQUIRE turns the toolkit's requirement checks off",
        r#"Says which requirements would not have held; the version rules still judge the real runtime and driver."#;
    RequireSkipped = "require-skipped", Requirements, [Info],
        "an NVIDIA_REQUIRE_* was not evaluated: the host facts it needs are missing",
        r#"The host profile lacks the driver or CUDA version, or the GPUs' architecture or brand."#;
    RequireNotEnforced = "require-not-enforced", Requirements, [Info],
        "an unmet or malformed NVIDIA_REQUIRE_* on a start path where nothing checks it",
        r#"An unmet, malformed or unknown-key `NVIDIA_REQUIRE_*` (or a legacy image's `CUDA_VERSION`) on a start path where nothing checks it (CDI, NVIDIA runtime in `cdi`/`jit-cdi` mode, explicit `--device`): names the path and what the legacy runtime would have said; the version rules judge whether CUDA works."#;

    // The image's CUDA and the driver (src/rules/versions.rs)
    CudaDriverInsufficient = "cuda-driver-insufficient", CudaVersions, [Block],
        "the image's CUDA runtime needs a newer driver",
        r#"The image's CUDA runtime needs a newer driver and no usable forward compatibility (runtime 35 `cudaErrorInsufficientDriver`)."#;
    CudaMinorVersionCompat = "cuda-minor-version-compat", CudaVersions, [Info],
        "the image's CUDA runtime is newer than the driver's CUDA but runs through minor-version compatibility",
        r#"Same major, driver at least the major's minimum: it runs, but PTX built by the newer CUDA cannot be JIT-compiled by this driver (the kernel rules judge that) and APIs newer than the driver's CUDA return errors."#;
    CudaVersionSkipped = "cuda-version-skipped", CudaVersions, [Info],
        "the image's CUDA was not judged against the driver",
        r#"The host's driver version or its CUDA version is unknown, the image names no CUDA (no runtime library, `/usr/local/cuda/version.json` or `CUDA_VERSION`), or (NRI, at creation) the image is not mounted yet."#;
    CudaVersionJsonUnreadable = "cuda-version-json-unreadable", CudaVersions, [Info],
        "the image's /usr/local/cuda/version.json could not be read",
        r#"The image's CUDA is judged from its runtime libraries and `CUDA_VERSION` instead."#;
    ImageReadPartial = "image-read-partial", CudaVersions, [Info],
        "parts of the image were not read",
        r#"What the image facts left out: a corrupt `ld.so.cache`, a FIFO where a file should be, a directory past its listing bound. The rules judge what could be read."#;
    ForwardCompatUnsupportedGpu = "forward-compat-unsupported-gpu", CudaVersions, [Block],
        "a forward-compat libcuda the loader picks, on a GPU without forward compatibility",
        r#"A compat `libcuda` the loader will pick on a non-datacenter GPU: 804 `CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE`."#;
    ForwardCompatDriverMismatch = "forward-compat-driver-mismatch", CudaVersions, [Block, Warn],
        "a forward-compat libcuda the loader picks does not pair with the kernel module",
        r#"Block when the compat `libcuda` is older than the kernel module (803 `CUDA_ERROR_SYSTEM_DRIVER_MISMATCH`, measured on the H100); warn when it is a newer build of the same branch (not a forward-compatibility pairing; not measured)."#;
    ForwardCompatActive = "forward-compat-active", CudaVersions, [Info],
        "CUDA works through the image's forward-compat libcuda",
        r#"The loader picks a newer-branch compat `libcuda` on datacenter GPUs; the driver's CUDA is lifted to the compat library's, provided the branch is in NVIDIA's forward-compatibility support matrix."#;
    ForwardCompatUnparsable = "forward-compat-unparsable", CudaVersions, [Warn],
        "the forward-compat libcuda the loader picks has no driver version in its name",
        r#"Name it `libcuda.so.<driver version>` as the cuda-compat package does, or remove it."#;
    ForwardCompatSkipped = "forward-compat-skipped", CudaVersions, [Info],
        "whether the GPUs support forward compatibility is unknown",
        r#"The loader picks a forward-compat `libcuda`, but the host facts list no GPUs or no brand for them."#;
    ComputeCapabilityNewerThanCuda = "compute-capability-newer-than-cuda", CudaVersions, [Warn],
        "the GPU is newer than the image's CUDA",
        r#"The GPU's compute capability is unknown to the image's CUDA (209 `CUDA_ERROR_NO_BINARY_FOR_GPU` unless PTX can be JIT-compiled)."#;
    ComputeCapabilityDroppedByCuda = "compute-capability-dropped-by-cuda", CudaVersions, [Warn],
        "the image's CUDA no longer builds for the GPU",
        r#"The GPU's compute capability was dropped by the image's CUDA (209 `CUDA_ERROR_NO_BINARY_FOR_GPU`)."#;
    ComputeCapabilitySkipped = "compute-capability-skipped", CudaVersions, [Info],
        "a GPU's compute capability is unknown or not in the knowledge table",
        "";

    // The start path (src/rules/start_path.rs)
    ForwardCompatCdi = "forward-compat-cdi", StartPath, [Info],
        "what NVIDIA's enable-cuda-compat CDI hook will decide for the image's compat libraries",
        r#"On a CDI start, what NVIDIA's `enable-cuda-compat` hook will decide for the image's `/usr/local/cuda/compat` (exactly one regular `libcuda.so.*.*` there; its `.note.cuda.fwd_compatibility` note's driver branches, else the majors), and why; where it will use it, the forward-compatibility rules judge that library."#;

    // Host state (src/rules/hoststate/)
    DevCharLinkMissing = "dev-char-link-missing", HostState, [Warn],
        "a /dev/char link of a GPU node is missing: the container loses the GPU at the next systemctl daemon-reload",
        r#"`linux.cgroupsPath` in systemd form (`slice:prefix:name`) and a `/dev/char/MAJ:MIN` link of one of the container's NVIDIA devices missing or wrong on the host: the container loses the GPU at the next `systemctl daemon-reload` (NVML `Failed to initialize NVML: Unknown Error`); runc 1.1.3–1.1.6, or any runc with systemd < v240, per runc issue 3567 (the runtime's version is not read)."#;
    DevCharLinksSkipped = "dev-char-links-skipped", HostState, [Info],
        "the /dev/char links were not checked",
        r#"No `/dev` under the host root."#;
    DriverLibraryVersionMismatch = "driver-library-version-mismatch", HostState, [Block],
        "a driver library the container will load differs from the loaded kernel module",
        r#"The loaded kernel module (`/proc/driver/nvidia/version`) differs from a `libcuda`/`libnvidia-ml` the container will load: the host's (found through its `ld.so.cache`, for hook-injected GPUs), one bind-mounted by `config.json` (CDI), or the one the container's loader picks (803 `CUDA_ERROR_SYSTEM_DRIVER_MISMATCH`, NVML `Driver/library version mismatch`)."#;
    DriverLibraryVersionSkipped = "driver-library-version-skipped", HostState, [Info],
        "the driver libraries were not compared with the kernel module",
        r#"No kernel module or an unknown version format, or no versioned driver library found."#;
    ImageDriverLibrary = "image-driver-library", HostState, [Warn],
        "the image has driver libraries of its own",
        r#"`libcuda.so*`, `libnvidia-*.so*` in its library directories, not `/usr/local/cuda*/compat`: 803 / NVML mismatch where their version differs from the module, else the NVIDIA hook's `mount error: file creation failed: …: file exists`."#;
    ImageDriverLibrariesSkipped = "image-driver-libraries-skipped", HostState, [Info],
        "the image's library directories were not checked for driver libraries",
        "";
    CdiDeviceUnresolvable = "cdi-device-unresolvable", HostState, [Block],
        "a requested CDI device is in no spec",
        r#"A requested CDI device is in no spec under `/etc/cdi` or `/var/run/cdi` (JSON or YAML): `unresolvable CDI devices nvidia.com/gpu=…`."#;
    CdiHostPathMissing = "cdi-host-path-missing", HostState, [Block],
        "the CDI spec of a requested device names a host path that does not exist",
        r#"The spec of a requested device names a `hostPath` (device node or mount) that does not exist: `failed to stat CDI host device "…"`."#;
    CdiSpecDriverMismatch = "cdi-spec-driver-mismatch", HostState, [Block],
        "the CDI spec mounts driver libraries of another version than the kernel module",
        r#"The spec mounts `libcuda`/`libnvidia-ml` of another version than the loaded kernel module (generated before a driver upgrade)."#;
    CdiSpecInvalid = "cdi-spec-invalid", HostState, [Warn],
        "a CDI spec file does not parse",
        r#"The CDI registry ignores it."#;
    CdiSpecsSkipped = "cdi-specs-skipped", HostState, [Info],
        "the CDI specs were not judged",
        r#"A requested CDI device possibly in a spec that did not parse."#;
    VisibleDeviceUnknown = "visible-device-unknown", HostState, [Block],
        "NVIDIA_VISIBLE_DEVICES names a GPU the host does not have",
        r#"`NVIDIA_VISIBLE_DEVICES` (hook-injected GPUs) names an index, `GPU:MIG` index or UUID the host does not have, or a pre-R470 `MIG-GPU-<uuid>/<gi>/<ci>` name on a newer driver: `nvidia-container-cli: device error: 1: unknown device`."#;
    MigDevicesSeveral = "mig-devices-several", HostState, [Warn],
        "more than one MIG device for one container",
        r#"A CUDA process enumerates only one."#;
    VisibleDevicesSkipped = "visible-devices-skipped", HostState, [Info],
        "NVIDIA_VISIBLE_DEVICES was not checked against the host's GPUs",
        r#"The host's GPUs are unknown."#;
    GpuComputeModeUnavailable = "gpu-compute-mode-unavailable", HostState, [Block, Warn],
        "a GPU the container gets is in a compute mode that refuses it",
        r#"Compute mode `prohibited`, or `exclusive_process` with a compute process already on it (46 `CUDA_ERROR_DEVICE_UNAVAILABLE`); block when every GPU of the container is, warn when some are. GPUs are matched by `all`, index or UUID, or as the only GPU of the host."#;
    GpuPersistenceModeOff = "gpu-persistence-mode-off", HostState, [Info],
        "persistence mode is off on a datacenter GPU the container gets",
        r#"The first `cuInit` is slow."#;
    GpuComputeModeSkipped = "gpu-compute-mode-skipped", HostState, [Info],
        "the GPUs' compute mode is unknown",
        r#"Not read through NVML, not in the host profile."#;
    UsernsDeviceDenied = "userns-device-denied", HostState, [Block],
        "in its user namespace the container's user cannot open a GPU node",
        r#"The spec creates a user namespace (rootless) and the container's user, through its uid/gid mappings, cannot open a host NVIDIA node (`nvidiactl`, `nvidia-uvm`, `nvidiaN`) for read and write by its host owner, group and mode (the code measured for a denied node; container root's CAP_DAC_OVERRIDE counts only on nodes whose owner and group are mapped)."#;
    UsernsDevicesSkipped = "userns-devices-skipped", HostState, [Info],
        "the GPU nodes were not checked against the user namespace",
        r#"The user namespace's facts could not be gathered (for example a user namespace joined by path)."#;
    FabricManagerNotRunning = "fabric-manager-not-running", HostState, [Block],
        "the host has NVSwitches and no Fabric Manager runs",
        r#"The host has NVSwitches (listed by the driver under `/proc/driver/nvidia-nvswitch/devices`, or NVIDIA PCI functions of class 0x068000 under `/sys/bus/pci/devices`; not the `nvidia-nvswitch` major of `/proc/devices`, which single-GPU hosts list too) and no `nv-fabricmanager` runs (`/run/nvidia-fabricmanager/nv-fabricmanager.pid` or a process named `nv-fabricmanage`): 802 `CUDA_ERROR_SYSTEM_NOT_READY` while `nvidia-smi` works. NVLink 5 hosts (HGX B200) are not recognised; the daemon's version is not compared."#;
    FabricManagerSkipped = "fabric-manager-skipped", HostState, [Info],
        "whether Fabric Manager is needed or running is unknown",
        r#"Whether the host has NVSwitches, or whether the daemon runs, could not be read."#;

    // Headroom (src/rules/headroom.rs)
    GpuMemoryLow = "gpu-memory-low", Headroom, [Warn],
        "a GPU has less free memory than the container asks for",
        r#"The container asks for more free GPU memory (annotation `cuda-preflight/min-free-memory` in MiB, else config `min_free_memory_mib`) than a host GPU has free (NVML or the profile's `memory_free_mib`): other processes hold the rest, and the first large allocation fails with `CUDA error: out of memory` (2 `CUDA_ERROR_OUT_OF_MEMORY`)."#;
    GpuMemorySkipped = "gpu-memory-skipped", Headroom, [Info],
        "free GPU memory was not checked",
        r#"No free-memory figure for the GPUs, or an annotation that is not a number."#;
    DiskSpaceLow = "disk-space-low", Headroom, [Warn],
        "the container's rootfs or a writable volume is nearly full",
        r#"The container's rootfs or a writable bind-mounted directory (not `/dev/shm`, `/etc/hosts`, `/run/…` or driver files the engines add) has less than `min_free_disk_mib` free (statvfs): `No space left on device`."#;
    DiskSpaceSkipped = "disk-space-skipped", Headroom, [Info],
        "a volume's free space could not be measured",
        "";

    // The image's GPU code (src/rules/kernels.rs)
    KernelImageMissing = "kernel-image-missing", Kernels, [Block],
        "a CUDA library of the image has no module that loads on a GPU the container gets",
        r#"209 `CUDA_ERROR_NO_BINARY_FOR_GPU` (SASS only for other architectures, no usable PTX) or 222 `CUDA_ERROR_UNSUPPORTED_PTX_VERSION` (the only usable PTX is newer than the driver's PTX ISA). Only where the workload launches from the library: a framework's core library (`libtorch_cuda.so`, vLLM's `_C`), an extension the framework uses on this GPU (vLLM's FlashAttention 2 on compute capability 8.x/10.x/12.x, FlashAttention 3 on 9.x), or any library `src/knowledge/framework_kernels.tsv` does not list. Core libraries are judged first, so the headline is the error the workload meets first; its fix is for that error (222: the driver branch that JITs the PTX ISA, or a framework build with the GPU's SASS)."#;
    KernelImageMissingConditional = "kernel-image-missing-conditional", Kernels, [Warn],
        "as kernel-image-missing, for a library the framework uses only on some paths",
        r#"The framework launches from the library only on other GPUs or for a feature the workload must ask for (`src/knowledge/framework_kernels.tsv`, each row citing the framework's own capability check: vLLM's FlashAttention 3 and FlashMLA, torch's cuSPARSELt for 2:4 sparsity, `libtorch_cuda_linalg.so`, vLLM's MoE ops, NCCL for multi-GPU collectives); says on which path it would fail and with which error."#;
    KernelImagePartial = "kernel-image-partial", Kernels, [Info],
        "some modules of a library have no image for the GPU",
        r#"Libraries ship per-architecture modules and dispatch at run time."#;
    KernelPtxJitOnly = "kernel-ptx-jit-only", Kernels, [Warn],
        "some of a library's modules run on the GPU only through PTX JIT",
        r#"A slow first start; the count of modules to compile is in the evidence."#;
    KernelBinaryUnreadable = "kernel-binary-unreadable", Kernels, [Warn],
        "a library has fatbin sections the reader refuses",
        r#"Truncated or malformed."#;
    KernelImageOutsideFatbin = "kernel-image-outside-fatbin", Kernels, [Info],
        "a library keeps its kernels outside its fatbin, so it is not judged by it",
        r#"cuFFT and NPP keep their kernels in a store of their own and load them at run time; their registered fatbin (a lone sm_75 module, measured) does not say which GPUs they run on (`src/knowledge/kernels_outside_fatbin.tsv`)."#;
    KernelsSkipped = "kernels-skipped", Kernels, [Info],
        "the image's GPU code was not judged",
        r#"No GPU known, or its compute capability unknown."#;
    KernelsPtxIsaSkipped = "kernels-ptx-isa-skipped", Kernels, [Info],
        "PTX ISA versions were not checked",
        r#"No driver CUDA version."#;
    KernelsScanIncomplete = "kernels-scan-incomplete", Kernels, [Info],
        "the walk for the image's CUDA binaries did not see everything",
        r#"A budget stopped it (which one, and what was not reached), a directory could not be listed, a library name is a FIFO/device/socket (never opened), a link loops or leads nowhere inside the rootfs, an ELF header could not be read."#;

    // CUDA environment variables (src/rules/cuda_env.rs)
    CudaVisibleDevicesNone = "cuda-visible-devices-none", CudaEnv, [Block],
        "CUDA_VISIBLE_DEVICES names none of the container's devices",
        r#"The container's `CUDA_VISIBLE_DEVICES` starts with an index, GPU UUID (or prefix) or MIG UUID that names none of the devices the container gets (indices count the container's devices): CUDA sees no device, `cuInit` gives 100 `CUDA_ERROR_NO_DEVICE`."#;
    CudaVisibleDevicesHidden = "cuda-visible-devices-hidden", CudaEnv, [Warn],
        "CUDA_VISIBLE_DEVICES hides every device on purpose",
        r#"Empty, negative (`-1`) or a word: 100 `CUDA_ERROR_NO_DEVICE` if the workload calls CUDA."#;
    CudaVisibleDevicesTruncated = "cuda-visible-devices-truncated", CudaEnv, [Warn],
        "an entry of CUDA_VISIBLE_DEVICES after the first names no device",
        r#"CUDA stops there and the workload sees fewer GPUs."#;
    CudaVisibleDevicesSkipped = "cuda-visible-devices-skipped", CudaEnv, [Info],
        "CUDA_VISIBLE_DEVICES was not judged",
        r#"The container's GPU count or UUIDs are unknown (offline hook-injected devices, MIG)."#;
    CudaForcePtxJitNoPtx = "cuda-force-ptx-jit-no-ptx", CudaEnv, [Block, Warn],
        "CUDA_FORCE_PTX_JIT=1 and a library whose modules load only by SASS",
        r#"209 `CUDA_ERROR_NO_BINARY_FOR_GPU`: block when no module of the file loads, warn when some do."#;
    CudaDisablePtxJitNeedsJit = "cuda-disable-ptx-jit-needs-jit", CudaEnv, [Block, Warn],
        "CUDA_DISABLE_PTX_JIT=1 and a library whose modules load only by JIT-compiling PTX",
        r#"223 `CUDA_ERROR_JIT_COMPILATION_DISABLED`: block when no module of the file loads, warn when some do."#;

    // Loading the image's CUDA libraries (src/rules/loading.rs)
    ImageLibraryMissing = "image-library-missing", Loading, [Block, Warn],
        "a CUDA library an ELF of the image needs resolves nowhere the loader looks",
        r#"A CUDA library (`libcudart`, `libcublas*`, `libcudnn*`, `libnccl`, `libnvrtc`, `libnvJitLink`, …; `src/knowledge/cuda_libraries.tsv`) that a CUDA-using ELF of the image needs resolves nowhere the container's loader looks (`RPATH`/`RUNPATH` with `$ORIGIN`, `LD_LIBRARY_PATH`, `ld.so.cache`, default directories): `libcudart.so.12: cannot open shared object file: No such file or directory`; names who needs it, where it was looked for and the wheel or package that provides it. Block when a framework's core library (`libtorch_cuda.so`) needs it and no copy exists anywhere in the image, else warn."#;
    ImageSymbolVersionMissing = "image-symbol-version-missing", Loading, [Block, Warn],
        "a CUDA-using library needs a glibc/libstdc++ symbol version the image's does not define",
        r#"A CUDA-using library requires a `GLIBC_*`, `GLIBCXX_*`, `CXXABI_*` or `GCC_*` version (`DT_VERNEED`) that the `libc.so.6`/`libstdc++.so.6` its loader picks does not define (`DT_VERDEF`): `…/libstdc++.so.6: version `GLIBCXX_3.4.30' not found (required by …)`; block only for a framework core with no defining copy in the image."#;
    ImageCudaRuntimes = "image-cuda-runtimes", Loading, [Info],
        "the image names several CUDA versions",
        r#"Runtimes its libraries load, runtimes on disk that nothing loads, `version.json`, `CUDA_VERSION`, side by side; the driver is judged against the runtimes loaded."#;
    ImageRuntimeMismatch = "image-runtime-mismatch", Loading, [Warn],
        "a framework loads another CUDA runtime than it was built with",
        r#"A framework loads an older CUDA runtime than it was built with (`torch/version.py`), or PyTorch's CUDA major differs from the toolkit's `nvcc` (`The detected CUDA version (11.8) mismatches the version that was used to compile PyTorch (12.8)…` when a CUDA extension is built)."#;

    // JIT toolchains (src/rules/toolchains.rs)
    ToolchainGpuUnsupported = "toolchain-gpu-unsupported", Toolchains, [Warn],
        "a JIT toolchain of the image predates the GPU (or dropped it)",
        r#"Triton's bundled `ptxas`, `/usr/local/cuda*/bin/ptxas`, a wheel's `ptxas`, NVRTC — of a CUDA that predates the GPU (or dropped it): Triton's kernel compilation fails with `ptxas fatal   : Value 'sm_120' is not defined for option 'gpu-name'`, NVRTC with `invalid value for --gpu-architecture`. The version is read from the file, never by running it (`docs/image-load.md`)."#;
    ToolchainPtxNewerThanDriver = "toolchain-ptx-newer-than-driver", Toolchains, [Warn],
        "a JIT toolchain of the image is newer than the driver's CUDA",
        r#"PTX it emits fails to JIT, 222 `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`; the evidence says when that bites (NVRTC to `compute_XX`; Triton only across a CUDA major)."#;
    ToolchainVersionSkipped = "toolchain-version-skipped", Toolchains, [Info],
        "a toolchain's CUDA version could not be read, or the host facts lack the GPU or driver",
        r#"No banner, a FIFO, unreadable; or no GPU / driver version in the host facts."#;

    // The probe (src/rules/probe.rs, src/commands/mod.rs)
    ProbeOk = "probe-ok", Probe, [Info],
        "a CUDA context worked inside the container",
        r#"With the timings and the identity of the `libcuda` loaded."#;
    ProbeJitFailed = "probe-jit-failed", Probe, [Warn],
        "a context works but the PTX canary does not",
        r#"221: `libnvidia-ptxjitcompiler` missing, for instance."#;
    ProbeInitFailed = "probe-init-failed", Probe, [Block],
        "cuInit failed inside the container",
        r#"The driver's own error (code and `CUDA_ERROR_*` name), with the cause from the other facts where known."#;
    ProbeContextFailed = "probe-context-failed", Probe, [Block],
        "cuCtxCreate failed inside the container",
        r#"The driver's own error (code and `CUDA_ERROR_*` name), with the cause from the other facts where known."#;
    ProbeNoDevice = "probe-no-device", Probe, [Block],
        "cuInit succeeded but the driver lists no device in the container",
        r#"100 `CUDA_ERROR_NO_DEVICE`."#;
    ProbeLibcudaMissing = "probe-libcuda-missing", Probe, [Block],
        "the container's loader finds no libcuda.so.1",
        r#"The NVIDIA runtime did not inject the driver library."#;
    ProbeLoadFailed = "probe-load-failed", Probe, [Block],
        "the container's libcuda.so.1 does not load",
        "";
    ProbeTimeout = "probe-timeout", Probe, [Warn],
        "the driver did not answer within the probe's deadline",
        r#"A hung `cuInit` or `cuCtxCreate`: usually a GPU that fell off the bus or a stuck driver. The `[severity]` table may raise it."#;
    ProbeCrashed = "probe-crashed", Probe, [Warn],
        "the probe died inside the container's libcuda",
        r#"The `[severity]` table may raise it."#;
    ProbeSetupFailed = "probe-setup-failed", Probe, [Warn],
        "the probe could not enter the container",
        r#"cuda-preflight's own failure; the container was judged by the static rules only."#;
    ProbeWithoutSeccomp = "probe-without-seccomp", Probe, [Info],
        "the probe ran without the container's seccomp filter",
        r#"No longer emitted: the probe applies the filter or does not run."#;
    ProbeSkipped = "probe-skipped", Probe, [Info],
        "the probe was not run, and why",
        r#"Among the reasons: NVIDIA's CDI hooks that make `libcuda.so.1` loadable run after this hook's stage; a seccomp filter the probe cannot reproduce (`SCMP_ACT_NOTIFY`)."#;
    ProbeInconclusive = "probe-inconclusive", Probe, [Warn],
        "the probe failed, but within the probe's own footprint",
        r#"A pids or memory limit of the container is within the probe's own footprint (pids ≤ 32, memory ≤ 1 GiB): the failure may be the probe's, not the workload's."#;

    // Reading an image (src/input/image/)
    ImageLayerEntryRefused = "image-layer-entry-refused", ImageRead, [Warn],
        "layer entries that reach outside the image or put a special file where a library belongs",
        r#"Up to 20 named, the rest counted. They were not extracted; engines refuse such entries (a pull fails) or confine them, so the container's files differ from what its layers say."#;
    ImageReadNotes = "image-read-notes", ImageRead, [Info],
        "what reading the image left out",
        r#"A hard link to a file not kept, several images in one archive, a plain rootfs without environment."#;

    // The hook and its policy (src/verdict.rs, src/commands/hook.rs)
    HookError = "hook-error", Hook, [Warn],
        "the hook failed on its own input",
        r#"The report carries the error; the start follows `on_error` (allow by default)."#;
    ContainerOverrideRefused = "container-override-refused", Hook, [Info],
        "a cuda-preflight/mode annotation was ignored",
        r#"Not allowed by the host's config, not a mode, or weaker than the host's: annotations may come from the image."#;
}

impl FindingId {
    /// Every id, in catalog order.
    pub fn all() -> impl Iterator<Item = FindingId> {
        CATALOG.iter().map(|e| e.id)
    }

    pub fn entry(self) -> &'static Entry {
        // The macro declares the variants and the entries in one order (`catalog_is_in_order`).
        &CATALOG[self as usize]
    }

    /// The stable id string.
    pub fn as_str(self) -> &'static str {
        self.entry().name
    }

    pub fn area(self) -> Area {
        self.entry().area
    }

    /// The severities the rules give it (before the config's overrides).
    pub fn severities(self) -> &'static [Severity] {
        self.entry().severities
    }

    pub fn parse(s: &str) -> Option<FindingId> {
        CATALOG.iter().find(|e| e.name == s).map(|e| e.id)
    }

    /// The id closest to `s` (edit distance), for "did you mean" in errors.
    pub fn nearest(s: &str) -> FindingId {
        let mut best = (usize::MAX, FindingId::HookError);
        for e in CATALOG {
            let d = edit_distance(s, e.name);
            if d < best.0 {
                best = (d, e.id);
            }
        }
        best.1
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ordered by the id string, as the strings were before the catalog (sorted output, the
/// config's `[severity]` table).
impl Ord for FindingId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for FindingId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq<&str> for FindingId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for FindingId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<FindingId> for &str {
    fn eq(&self, other: &FindingId) -> bool {
        *self == other.as_str()
    }
}

impl serde::Serialize for FindingId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for FindingId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FindingId, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FindingId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a finding id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<FindingId, E> {
                FindingId::parse(s).ok_or_else(|| E::custom(UnknownId(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The error for an id the catalog does not have: the id, and the nearest one.
pub struct UnknownId<'a>(pub &'a str);

impl fmt::Display for UnknownId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown finding id {:?}; did you mean {:?}? Every id is in docs/reference/findings.md",
            self.0,
            FindingId::nearest(self.0).as_str()
        )
    }
}

/// "block", "block / warn": how the reference shows an id's severities.
pub fn severities_text(s: &[Severity]) -> String {
    s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" / ")
}

/// `docs/reference/findings.md`, generated from the catalog.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    out.push_str(
        "<!-- Generated from src/finding/catalog.rs: do not edit. Regenerate with\n     CUDA_PREFLIGHT_BLESS=1 cargo test --lib finding::catalog -->\n\n",
    );
    out.push_str("# Findings reference\n\n");
    out.push_str(
        "Every finding has a stable id, a severity, the error it predicts, the evidence and the fix:\n\n\
         ```json\n\
         {\"id\": \"device-node-missing\", \"severity\": \"block\",\n \
         \"predicted\": {\"api\": \"driver\", \"code\": 999, \"name\": \"CUDA_ERROR_UNKNOWN\", \"message\": \"unknown error\"},\n \
         \"evidence\": \"/dev/nvidia-uvm is missing from linux.devices of config.json; cuInit fails without it\",\n \
         \"fix\": \"Add /dev/nvidia-uvm to the container's devices (CDI spec or --device /dev/nvidia-uvm); …\"}\n\
         ```\n\n\
         Ids never change: logs, alerts and the config's `[severity]` table name them. The severity below is \
         the one the rules give; where two are shown, the rule chooses by the evidence. The config's \
         `[severity]` table sets another per id (`gpu-env-without-runtime = \"info\"`); a key that is not \
         an id below is refused. `block` stops the start in `mode = \"enforce\"`, `warn` is shown, `info` \
         is recorded. An id ending in `-skipped` says what was not checked and why: never a \
         pass, never a block.\n\n",
    );
    for area in Area::ALL {
        let entries: Vec<&Entry> = CATALOG.iter().filter(|e| e.area == *area).collect();
        if entries.is_empty() {
            continue;
        }
        out.push_str(&format!("## {}\n\n", area.title()));
        out.push_str("| id | severity | what |\n| --- | --- | --- |\n");
        for e in &entries {
            out.push_str(&format!(
                "| [`{}`](#{}) | {} | {} |\n",
                e.name,
                e.name,
                severities_text(e.severities),
                e.summary
            ));
        }
        out.push('\n');
        for e in &entries {
            out.push_str(&format!("### {}\n\n", e.name));
            out.push_str(&format!(
                "**{}** — {}.",
                severities_text(e.severities),
                e.summary
            ));
            if !e.details.is_empty() {
                out.push_str("\n\n");
                out.push_str(e.details);
            }
            out.push_str("\n\n");
        }
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// With `CUDA_PREFLIGHT_BLESS=1`, write `want` to the committed file; else compare.
    fn committed(rel: &str, want: &str, what: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        if std::env::var_os("CUDA_PREFLIGHT_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(&path, want).unwrap();
            return;
        }
        let have =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            have == want,
            "{rel} differs from {what}; if the change is meant, regenerate it with \
             CUDA_PREFLIGHT_BLESS=1 cargo test --lib finding::catalog and commit it"
        );
    }

    #[test]
    fn catalog_is_in_order() {
        for (i, e) in CATALOG.iter().enumerate() {
            assert_eq!(e.id as usize, i, "{}", e.name);
            assert_eq!(FindingId::parse(e.name), Some(e.id));
        }
    }

    #[test]
    fn ids_are_unique_kebab_case_with_text() {
        for (i, e) in CATALOG.iter().enumerate() {
            let n = e.name;
            assert!(
                !n.is_empty()
                    && !n.starts_with('-')
                    && !n.ends_with('-')
                    && !n.contains("--")
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{n}"
            );
            assert!(CATALOG[i + 1..].iter().all(|o| o.name != n), "{n} twice");
            assert!(
                !e.summary.is_empty() && !e.summary.contains('\n') && !e.summary.ends_with('.'),
                "{n}: summary"
            );
            assert!(!e.severities.is_empty(), "{n}");
            // A rule whose facts are missing says so as info, never more (Finding::skipped).
            if n.ends_with("-skipped") {
                assert_eq!(e.severities, [Severity::Info], "{n}");
            }
        }
    }

    /// The full id list, sorted, against the committed snapshot: adding an id means updating
    /// the snapshot on purpose; removing or renaming one fails here.
    #[test]
    fn id_list_snapshot() {
        let mut ids: Vec<&str> = CATALOG.iter().map(|e| e.name).collect();
        ids.sort_unstable();
        let want: String = ids.iter().map(|i| format!("{i}\n")).collect();
        committed("src/finding/finding-ids.txt", &want, "the catalog's ids");
    }

    #[test]
    fn reference_is_generated_from_the_catalog() {
        committed(
            "docs/reference/findings.md",
            &reference_markdown(),
            "what the catalog generates",
        );
    }

    #[test]
    fn ids_round_trip_as_their_strings() {
        for id in FindingId::all() {
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{}\"", id.as_str()));
            assert_eq!(serde_json::from_str::<FindingId>(&json).unwrap(), id);
        }
        let e = serde_json::from_str::<FindingId>("\"device-node-mising\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"device-node-mising\"; did you mean \"device-node-missing\""),
            "{e}"
        );
    }

    #[test]
    fn nearest_table() {
        for (typo, want) in [
            ("device-node-mising", "device-node-missing"),
            ("gpu-env-without-runtim", "gpu-env-without-runtime"),
            ("probe-timout", "probe-timeout"),
            ("kernels-skiped", "kernels-skipped"),
        ] {
            assert_eq!(FindingId::nearest(typo).as_str(), want, "{typo}");
        }
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
