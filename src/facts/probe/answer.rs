//! What the probe step found out about one container: the driver's answer where the probe ran,
//! else why it did not. A fact like any other; `rules::probe::answer_findings` turns it into
//! findings and `verdict` decides.

use crate::facts::probe::ProbeResult;
use crate::facts::start_path::{CdiHooks, Stage};

// One per hook run, moved once: the size of the driver's answer does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ProbeAnswer {
    /// Not asked: no GPU, `probe = "never"`, no pid to read the container through, a static
    /// block that already explains the verdict, or a caller that never probes (`check`, the NRI
    /// plugin, the shim).
    NotAsked,
    /// NVIDIA's CDI hooks that make `libcuda.so.1` loadable run after this hook, at `stage`: a
    /// probe now would miss the library the workload will load.
    Deferred { stage: Stage, pending: CdiHooks },
    /// The hook runs at createContainer but not as a child of the container's init (the runtime
    /// runs those hooks outside the container): image code is not run.
    OutsideContainer,
    /// The container's loader finds no `libcuda.so.1` for the probe to load.
    NoLibcuda,
    /// A confinement of the container the probe cannot reproduce (its seccomp filter): why.
    CannotConfine(String),
    /// The probe ran, or its cached answer was read. `footprint` says why a failure may be the
    /// probe's own (a pids or memory limit within what the probe itself takes).
    Ran {
        result: ProbeResult,
        footprint: Option<String>,
    },
}

impl ProbeAnswer {
    /// The driver's answer, where the probe ran: what the report and the metrics record.
    pub fn result(&self) -> Option<&ProbeResult> {
        match self {
            ProbeAnswer::Ran { result, .. } => Some(result),
            _ => None,
        }
    }
}
