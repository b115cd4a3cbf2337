//! `NVIDIA_REQUIRE_*` constraints, evaluated as libnvidia-container evaluates them
//! (`src/cli/dsl.c`, `src/cli/configure.c`), with a message that says which condition failed
//! on which host value.
//!
//! Semantics kept from libnvidia-container:
//! * a space separates alternatives (OR), a comma joins conditions (AND); empty pieces are skipped;
//! * keys `cuda`, `driver`, `arch`, `brand`, case-insensitive; operators `=`, `!=`, `<`, `<=`,
//!   `>`, `>=` (no `==`); `brand` takes only `=`/`!=`, compared case-insensitively;
//! * versions compare component by component, missing components as 0 (`driver>=535` holds on
//!   535.104.05, `driver=535` does not); a version value with other than digits and dots is an
//!   "invalid expression";
//! * each variable is checked once for the host and once per GPU, so `arch`/`brand` must hold
//!   on every GPU;
//! * the toolkit's message names only the first alternative: `unsatisfied condition: <first>`,
//!   with a driver-update hint when it starts with `cuda>=`;
//! * an image with `CUDA_VERSION` and no `NVIDIA_REQUIRE_CUDA` gets `cuda>=<major.minor>`
//!   (nvidia-container-toolkit's "legacy image" rule);
//! * `NVIDIA_DISABLE_REQUIRE` with a true value turns every check off.
//!
//! Decided here, on purpose:
//! * **a missing host fact** (no driver/CUDA version, no GPU list) makes a condition *unknown*,
//!   not satisfied (libnvidia-container's choice for a missing device) and not failed: a
//!   requirement that hinges on it gives `require-skipped` (info), never a pass or a block;
//! * **an unknown key** is treated as satisfied, as the Go evaluator (CDI mode) skips it, and
//!   reported as `require-unknown-key` (warn): libnvidia-container (legacy `--gpus` mode) stops
//!   the start with "invalid expression" instead, so it is never silently fine;
//! * **a malformed condition** (no key, no or unknown operator, empty or non-numeric value) is
//!   `require-invalid`: block when evaluation reaches it (the toolkit fails the start with
//!   "invalid expression"), warn when an earlier alternative already holds.

use crate::facts::host::HostProfile;
use crate::facts::start_path::StartPath;
use crate::facts::versions::image_cuda::ImageFacts;
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::knowledge::cuda::{Version, toolkit_min_driver};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => return None,
        })
    }

    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Cuda,
    Driver,
    Arch,
    Brand,
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("{0:?}: no key before the operator")]
    NoKey(String),
    #[error("{0:?}: no operator (one of = != < <= > >=)")]
    NoOperator(String),
    #[error("{0:?}: unknown operator {1:?}")]
    BadOperator(String, String),
    #[error("{0:?}: empty value")]
    EmptyValue(String),
    #[error("{0:?}: {1:?} is not a version")]
    BadVersion(String, String),
    #[error("{0:?}: brand takes only = or !=")]
    BadBrandOperator(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub text: String,
    pub key: Key,
    pub op: Op,
    pub value: String,
    /// `value` as a version, parsed with the condition: `Some` for `cuda`, `driver`, `arch`.
    pub version: Option<Version>,
}

/// One parsed condition, or why it does not parse. Kept per condition because the toolkit only
/// fails on a malformed condition that its evaluation reaches.
pub type ParsedCondition = Result<Condition, ConditionError>;

/// Alternatives (OR) of conjunctions (AND).
pub fn parse(s: &str) -> Vec<Vec<ParsedCondition>> {
    s.split(' ')
        .filter(|a| !a.is_empty())
        .map(|alt| {
            alt.split(',')
                .filter(|c| !c.is_empty())
                .map(parse_condition)
                .collect()
        })
        .collect()
}

pub fn parse_condition(text: &str) -> ParsedCondition {
    let err_text = || text.to_string();
    let is_op = |c: char| matches!(c, '<' | '>' | '=' | '!');
    let k_end = text
        .find(is_op)
        .ok_or_else(|| ConditionError::NoOperator(err_text()))?;
    if k_end == 0 {
        return Err(ConditionError::NoKey(err_text()));
    }
    let rest = &text[k_end..];
    let op_len = rest.find(|c: char| !is_op(c)).unwrap_or(rest.len());
    let op_s = &rest[..op_len];
    let op =
        Op::parse(op_s).ok_or_else(|| ConditionError::BadOperator(err_text(), op_s.to_string()))?;
    let value = &rest[op_len..];
    if value.is_empty() {
        return Err(ConditionError::EmptyValue(err_text()));
    }
    let key = match text[..k_end].to_ascii_lowercase().as_str() {
        "cuda" => Key::Cuda,
        "driver" => Key::Driver,
        "arch" => Key::Arch,
        "brand" => Key::Brand,
        _ => Key::Unknown(text[..k_end].to_string()),
    };
    let version = match key {
        Key::Cuda | Key::Driver | Key::Arch => match Version::parse(value) {
            Some(v) => Some(v),
            None => return Err(ConditionError::BadVersion(err_text(), value.to_string())),
        },
        Key::Brand if !matches!(op, Op::Eq | Op::Ne) => {
            return Err(ConditionError::BadBrandOperator(err_text()));
        }
        _ => None,
    };
    Ok(Condition {
        text: text.to_string(),
        key,
        op,
        value: value.to_string(),
        version,
    })
}

/// What one pass (the host, or one GPU) knows.
struct Ctx<'a> {
    cuda: Option<Fact<'a>>,
    driver: Option<Fact<'a>>,
    /// `None`: the host pass, where arch and brand hold (libnvidia-container's dev == NULL).
    gpu: Option<(u32, Option<Fact<'a>>, Option<&'a str>)>,
}

/// A host fact as the profile spells it, and as a version where it is one.
type Fact<'a> = (&'a str, Option<Version>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    True,
    /// The failing condition and the host value it was checked against.
    False(Vec<(String, String)>),
    /// The missing facts.
    Unknown(Vec<String>),
    Invalid(ConditionError),
}

fn eval_condition(c: &Condition, ctx: &Ctx) -> Outcome {
    let (fact_name, host_value) = match (&c.key, &ctx.gpu) {
        (Key::Unknown(_), _) => return Outcome::True,
        (Key::Cuda, _) => ("cuda".to_string(), ctx.cuda.clone()),
        (Key::Driver, _) => ("driver".to_string(), ctx.driver.clone()),
        (Key::Arch | Key::Brand, None) => return Outcome::True,
        (Key::Arch, Some((i, arch, _))) => (format!("arch of GPU {i}"), arch.clone()),
        (Key::Brand, Some((i, _, brand))) => {
            (format!("brand of GPU {i}"), brand.map(|b| (b, None)))
        }
    };
    let Some((host_value, host_version)) = host_value.filter(|(v, _)| !v.is_empty()) else {
        return Outcome::Unknown(vec![fact_name]);
    };
    let holds = if c.key == Key::Brand {
        let eq = host_value.eq_ignore_ascii_case(&c.value);
        if c.op == Op::Eq { eq } else { !eq }
    } else {
        let (Some(h), Some(w)) = (host_version, &c.version) else {
            return Outcome::Unknown(vec![format!(
                "{fact_name} ({host_value:?} is not a version)"
            )]);
        };
        c.op.holds(h.cmp(w))
    };
    if holds {
        Outcome::True
    } else {
        Outcome::False(vec![(
            c.text.clone(),
            format!("{fact_name} is {host_value}"),
        )])
    }
}

fn eval(alts: &[Vec<ParsedCondition>], ctx: &Ctx) -> Outcome {
    let mut failed = Vec::new();
    let mut unknown = Vec::new();
    for alt in alts {
        let mut alt_unknown = Vec::new();
        let mut alt_false = None;
        for c in alt {
            let c = match c {
                Ok(c) => c,
                Err(e) => return Outcome::Invalid(e.clone()),
            };
            match eval_condition(c, ctx) {
                Outcome::True => {}
                Outcome::False(f) => {
                    alt_false = Some(f);
                    break; // the toolkit stops this alternative at its first false condition
                }
                Outcome::Unknown(u) => alt_unknown.extend(u),
                Outcome::Invalid(e) => return Outcome::Invalid(e),
            }
        }
        match (alt_false, alt_unknown.is_empty()) {
            (Some(f), _) => failed.extend(f),
            (None, true) => return Outcome::True,
            (None, false) => unknown.extend(alt_unknown),
        }
    }
    if !unknown.is_empty() {
        unknown.dedup();
        Outcome::Unknown(unknown)
    } else if alts.is_empty() {
        Outcome::True
    } else {
        Outcome::False(failed)
    }
}

/// The toolkit's own message for an unsatisfied requirement (libnvidia-container dsl.c).
pub fn toolkit_message(value: &str) -> String {
    let first = value.split(' ').next().unwrap_or("");
    if first.starts_with("cuda>=") {
        format!(
            "unsatisfied condition: {first}, please update your driver to a newer version, or use an earlier cuda container"
        )
    } else {
        format!("unsatisfied condition: {first}")
    }
}

/// The requirements the toolkit checks: every `NVIDIA_REQUIRE_*`, plus `cuda>=X.Y` from
/// `CUDA_VERSION` for a legacy image (one without `NVIDIA_REQUIRE_CUDA`).
pub fn effective_requirements(image: &ImageFacts) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = image
        .requires
        .iter()
        .map(|r| (r.name.clone(), r.value.clone()))
        .collect();
    if !out.iter().any(|(n, _)| n == "NVIDIA_REQUIRE_CUDA")
        && let Some(v) = image.cuda_env_version()
    {
        out.push((
            "CUDA_VERSION (legacy image)".to_string(),
            format!("cuda>={}", v.major_minor()),
        ));
    }
    out
}

pub fn check(image: &ImageFacts, host: &HostProfile) -> Vec<Finding> {
    let reqs = effective_requirements(image);
    let mut out = Vec::new();
    if reqs.is_empty() {
        return out;
    }
    let disabled = image.require_disabled();
    let cuda = host
        .cuda_driver_version
        .as_deref()
        .map(|s| (s, host.cuda_driver()));
    let driver = host.driver_version.as_deref().map(|s| (s, host.driver()));
    let mut contexts = vec![Ctx {
        cuda: cuda.clone(),
        driver: driver.clone(),
        gpu: None,
    }];
    for g in &host.gpus {
        contexts.push(Ctx {
            cuda: cuda.clone(),
            driver: driver.clone(),
            gpu: Some((
                g.index,
                Some((g.compute_capability.as_str(), g.cc_version())),
                Some(g.nvml_brand.as_str()),
            )),
        });
    }
    let no_gpus = host.gpus.is_empty();
    let mut disabled_notes = Vec::new();
    for (name, value) in &reqs {
        let alts = parse(value);
        for c in alts.iter().flatten().flatten() {
            if let Key::Unknown(k) = &c.key {
                out.push(Finding::new(
                    FindingId::RequireUnknownKey,
                    Severity::Warn,
                    Some(Predicted::message(Api::Toolkit, "invalid expression")),
                    format!("{name}={value:?}: condition {:?} uses key {k:?}, which is none of cuda, driver, arch, brand; the CDI-mode evaluator skips it, libnvidia-container (legacy --gpus mode) fails the start", c.text),
                    format!("remove {:?} from {name} or use one of the keys cuda, driver, arch, brand", c.text),
                ));
            }
        }
        // Evaluate every pass; the first that is not true decides.
        let mut outcome = Outcome::True;
        for ctx in &contexts {
            match eval(&alts, ctx) {
                Outcome::True => {}
                o @ (Outcome::False(_) | Outcome::Invalid(_)) => {
                    outcome = o;
                    break;
                }
                o @ Outcome::Unknown(_) => {
                    if outcome == Outcome::True {
                        outcome = o;
                    }
                }
            }
        }
        // Arch and brand need a GPU list; the host pass alone cannot decide them.
        if no_gpus
            && outcome == Outcome::True
            && alts
                .iter()
                .flatten()
                .flatten()
                .any(|c| matches!(c.key, Key::Arch | Key::Brand))
        {
            outcome = Outcome::Unknown(vec!["the host's GPUs (arch, brand)".to_string()]);
        }
        if disabled {
            if let Outcome::False(_) | Outcome::Invalid(_) = outcome {
                disabled_notes.push(format!("{name}={value:?} would not hold"));
            }
            continue;
        }
        match outcome {
            Outcome::True => {}
            Outcome::Unknown(missing) => out.push(Finding::skipped(
                FindingId::RequireSkipped,
                format!("{name}={value:?} not evaluated: the host profile lacks {}", missing.join(", ")),
            )),
            Outcome::Invalid(e) => out.push(Finding::new(
                FindingId::RequireInvalid,
                Severity::Block,
                Some(Predicted::message(Api::Toolkit, "invalid expression")),
                format!("{name}={value:?}: {e}"),
                format!("fix {name} in the image (conditions look like cuda>=12.4, joined by ',' for AND and ' ' for OR)"),
            )),
            Outcome::False(failed) => {
                let why = failed.iter().map(|(c, h)| format!("{c} fails: {h}")).collect::<Vec<_>>().join("; ");
                out.push(Finding::new(
                    FindingId::RequireUnsatisfied,
                    Severity::Block,
                    Some(Predicted::message(Api::Toolkit, toolkit_message(value))),
                    format!("{name}={value:?}: no alternative holds on this host ({why})"),
                    fix_for(&failed, host),
                ));
            }
        }
    }
    // Malformed conditions the evaluation never reached still deserve a word.
    if !disabled {
        for (name, value) in &reqs {
            let reached = out.iter().any(|f| {
                f.id == FindingId::RequireInvalid && f.evidence.starts_with(&format!("{name}="))
            });
            if let Some(e) = parse(value).into_iter().flatten().find_map(|c| c.err())
                && !reached
            {
                out.push(Finding::new(
                    FindingId::RequireInvalid,
                    Severity::Warn,
                    Some(Predicted::message(Api::Toolkit, "invalid expression")),
                    format!("{name}={value:?}: {e}; not reached on this host because an earlier alternative holds"),
                    format!("fix {name} in the image"),
                ));
            }
        }
    }
    if disabled {
        let mut ev = format!(
            "NVIDIA_DISABLE_REQUIRE={:?}: the NVIDIA toolkit skips every NVIDIA_REQUIRE_* check",
            image.disable_require.as_deref().unwrap_or("")
        );
        if !disabled_notes.is_empty() {
            ev.push_str(&format!(" ({})", disabled_notes.join("; ")));
        }
        out.push(Finding::new(
            FindingId::RequireDisabled,
            Severity::Info,
            None,
            ev,
            "the version rules still judge the real runtime and driver; trust their findings",
        ));
    }
    out
}

/// The findings of [`check`] as they hold on this start path. Only NVIDIA's legacy prestart hook
/// (`nvidia-container-runtime-hook` passes each requirement to `nvidia-container-cli --require`,
/// `cmd/nvidia-container-runtime-hook/main.go`) and the NVIDIA runtime's CSV mode
/// (`internal/modifier/csv.go`, `checkRequirements`) refuse a start on them. On a CDI or an
/// explicit `--device` start nothing reads `NVIDIA_REQUIRE_*` (toolkit issue 1470), so an unmet,
/// malformed or unknown-key requirement is information that names the path, and whether CUDA
/// works is left to the version rules — unless the host's `enforce_requirements` says to block
/// anyway, which the message then calls this host's policy.
pub fn on_path(findings: &mut [Finding], path: &StartPath, host_enforces: bool) {
    if path.enforces_requirements() {
        return;
    }
    for f in findings.iter_mut() {
        if !matches!(
            f.id,
            FindingId::RequireUnsatisfied
                | FindingId::RequireInvalid
                | FindingId::RequireUnknownKey
        ) {
            continue;
        }
        let toolkit = f
            .predicted
            .as_ref()
            .map(|p| p.message.clone())
            .unwrap_or_default();
        if host_enforces {
            f.evidence = format!(
                "{}; enforced by this host's policy (enforce_requirements = true in the cuda-preflight config): on {} the NVIDIA toolkit itself does not check NVIDIA_REQUIRE_*",
                f.evidence,
                path.describe()
            );
            f.predicted = None;
            continue;
        }
        f.evidence = format!(
            "{}; the legacy NVIDIA runtime would refuse this start ({toolkit}); on {} nothing checks NVIDIA_REQUIRE_*, so whether CUDA works is judged by the version rules",
            f.evidence,
            path.describe()
        );
        f.id = FindingId::RequireNotEnforced;
        f.severity = Severity::Info;
        f.predicted = None;
        f.fix = "nothing stops this start for it; to refuse such starts on every path, set enforce_requirements = true in /etc/cuda-preflight/config.toml".into();
    }
}

fn fix_for(failed: &[(String, String)], host: &HostProfile) -> String {
    let drv = host.driver_version.as_deref().unwrap_or("unknown");
    for (c, _) in failed {
        if let Ok(Condition {
            key: Key::Cuda,
            version: Some(want),
            ..
        }) = parse_condition(c)
        {
            let need = toolkit_min_driver(&want)
                .map(|r| format!("driver {} or newer ({})", r.min_driver, r.label))
                .unwrap_or_else(|| format!("a driver that supports CUDA {want}"));
            return format!(
                "install {need} (host has {drv}), or use an image built for CUDA {} or older",
                host.cuda_driver_version.as_deref().unwrap_or("the host's")
            );
        }
    }
    format!(
        "run on a host that meets one alternative (driver here: {drv}), or use an image whose requirement this host meets"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::host::Gpu;
    use crate::facts::versions::image_cuda::Requirement;

    fn host(driver: &str, cuda: &str, gpus: &[(&str, &str)]) -> HostProfile {
        HostProfile {
            driver_version: Some(driver.into()),
            cuda_driver_version: Some(cuda.into()),
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(i, (cc, brand))| Gpu {
                    index: i as u32,
                    compute_capability: cc.to_string(),
                    nvml_brand: brand.to_string(),
                    ..Gpu::default()
                })
                .collect(),
            ..HostProfile::default()
        }
    }

    fn image(vars: &[(&str, &str)]) -> ImageFacts {
        let mut f = ImageFacts::default();
        for (k, v) in vars {
            match *k {
                "CUDA_VERSION" => f.cuda_version = Some(v.to_string()),
                "NVIDIA_DISABLE_REQUIRE" => f.disable_require = Some(v.to_string()),
                _ => f.requires.push(Requirement {
                    name: k.to_string(),
                    value: v.to_string(),
                }),
            }
        }
        f
    }

    /// Ids of the findings; every id a rule emits must be listed in FINDING_IDS.
    fn ids(f: &[Finding]) -> Vec<&str> {
        crate::rules::ids(f)
    }

    /// nvidia/cuda:13.0.x images carry NVIDIA_REQUIRE_CUDA=cuda>=13.0 plus brand/driver
    /// alternatives for older branches; on a 570 driver (CUDA 12.8) none holds.
    #[test]
    fn cuda_13_image_on_570_blocks_with_the_driver_needed() {
        let img = image(&[(
            "NVIDIA_REQUIRE_CUDA",
            "cuda>=13.0 brand=unknown,driver>=535,driver<536",
        )]);
        let f = check(&img, &host("570.133.20", "12.8", &[("12.0", "geforcertx")]));
        assert_eq!(ids(&f), ["require-unsatisfied"]);
        let p = f[0].predicted.as_ref().unwrap();
        assert_eq!(p.api, Api::Toolkit);
        assert_eq!(
            p.message,
            "unsatisfied condition: cuda>=13.0, please update your driver to a newer version, or use an earlier cuda container"
        );
        assert!(
            f[0].evidence.contains("cuda>=13.0 fails: cuda is 12.8"),
            "{}",
            f[0].evidence
        );
        // The host pass fails first; brand is judged per GPU, after it.
        assert!(
            f[0].evidence
                .contains("driver<536 fails: driver is 570.133.20"),
            "{}",
            f[0].evidence
        );
        assert!(f[0].fix.contains("580.65.06"), "{}", f[0].fix);
    }

    #[test]
    fn cuda_12_0_image_on_570_starts() {
        let img = image(&[(
            "NVIDIA_REQUIRE_CUDA",
            "cuda>=12.0 brand=tesla,driver>=470,driver<471",
        )]);
        assert!(check(&img, &host("570.133.20", "12.8", &[("8.0", "nvidia")])).is_empty());
    }

    /// Table of conditions against the H100 host of FACTS.md (580.159.04, CUDA 13.0, CC 9.0,
    /// brand "nvidia"): (requirement, satisfied?).
    #[test]
    fn semantics_table() {
        let h = host("580.159.04", "13.0", &[("9.0", "nvidia")]);
        let cases = [
            ("cuda>=13.0", true),
            ("cuda>13.0", false),
            ("cuda=13", true), // missing components are 0
            ("driver>=580", true),
            ("driver=580", false),       // 580.159.04 is not 580
            ("driver>=580.159.4", true), // 04 == 4
            ("driver<580.159.04", false),
            ("driver!=535", true),
            ("arch>=9.0", true),
            ("arch<9.0", false),
            ("brand=tesla", false), // the H100 reports "NVIDIA", not Tesla
            ("brand=NVIDIA", true), // case-insensitive
            ("brand!=geforce", true),
            ("cuda>=14.0 driver>=580", true),            // OR
            ("cuda>=12.0,driver<580", false),            // AND
            ("cuda>=14.0  arch=9.0,brand=nvidia", true), // double space: empty alternative skipped
            ("CUDA>=12", true),                          // keys are case-insensitive
        ];
        for (req, want) in cases {
            let f = check(&image(&[("NVIDIA_REQUIRE_X", req)]), &h);
            assert_eq!(f.is_empty(), want, "{req}: {f:?}");
            if !want {
                assert_eq!(ids(&f), ["require-unsatisfied"], "{req}");
            }
        }
    }

    #[test]
    fn arch_and_brand_must_hold_on_every_gpu() {
        let h = host(
            "580.159.04",
            "13.0",
            &[("9.0", "nvidia"), ("8.0", "nvidia")],
        );
        let f = check(&image(&[("NVIDIA_REQUIRE_ARCH", "arch>=9.0")]), &h);
        assert_eq!(ids(&f), ["require-unsatisfied"]);
        assert!(
            f[0].evidence.contains("arch of GPU 1 is 8.0"),
            "{}",
            f[0].evidence
        );
        assert_eq!(
            f[0].predicted.as_ref().unwrap().message,
            "unsatisfied condition: arch>=9.0"
        );
    }

    /// Decision: a missing host fact is unknown → require-skipped (info), never pass or block.
    #[test]
    fn missing_host_fact_is_skipped() {
        let img = image(&[("NVIDIA_REQUIRE_CUDA", "cuda>=12.4")]);
        let f = check(&img, &HostProfile::default());
        assert_eq!(ids(&f), ["require-skipped"]);
        assert_eq!(f[0].severity, Severity::Info);
        // No GPU list: arch cannot be judged.
        let f = check(
            &image(&[("NVIDIA_REQUIRE_ARCH", "arch>=8.0")]),
            &host("580.159.04", "13.0", &[]),
        );
        assert_eq!(ids(&f), ["require-skipped"]);
        // A false condition decides even when another fact is missing.
        let mut h = host("535.104.05", "12.2", &[]);
        h.driver_version = None;
        let f = check(
            &image(&[("NVIDIA_REQUIRE_CUDA", "cuda>=12.4,driver>=550")]),
            &h,
        );
        assert_eq!(ids(&f), ["require-unsatisfied"]);
    }

    /// Decision: unknown keys hold (Go evaluator) but are reported as a warning (C evaluator
    /// rejects them).
    #[test]
    fn unknown_key_holds_with_a_warning() {
        let f = check(
            &image(&[("NVIDIA_REQUIRE_OS", "os=linux")]),
            &host("580.159.04", "13.0", &[("9.0", "nvidia")]),
        );
        assert_eq!(ids(&f), ["require-unknown-key"]);
        assert_eq!(f[0].severity, Severity::Warn);
        assert_eq!(
            f[0].predicted.as_ref().unwrap().message,
            "invalid expression"
        );
    }

    #[test]
    fn malformed_constraints_never_panic() {
        let h = host("580.159.04", "13.0", &[("9.0", "nvidia")]);
        for bad in [
            "cuda",
            ">=12",
            "cuda==12.0",
            "cuda>=",
            "cuda>=12.x",
            "brand>=tesla",
            "cuda=>12",
            "driver>=5..8",
        ] {
            let f = check(&image(&[("NVIDIA_REQUIRE_CUDA", bad)]), &h);
            assert_eq!(ids(&f), ["require-invalid"], "{bad}");
            assert_eq!(f[0].severity, Severity::Block, "{bad}");
        }
        // Unreached: an earlier alternative holds, so the toolkit never sees it.
        let f = check(&image(&[("NVIDIA_REQUIRE_CUDA", "cuda>=12.0 cuda>=x")]), &h);
        assert_eq!(ids(&f), ["require-invalid"]);
        assert_eq!(f[0].severity, Severity::Warn);
        // Odd bytes and separators only.
        for odd in [" ", ",,,", "\u{0}", "é>=1", "cuda>=99999999999999999999999"] {
            let _ = check(&image(&[("NVIDIA_REQUIRE_CUDA", odd)]), &h);
        }
        assert!(check(&image(&[("NVIDIA_REQUIRE_CUDA", " , ")]), &h).is_empty());
    }

    #[test]
    fn disable_require_and_legacy_cuda_version() {
        let h = host("570.133.20", "12.8", &[("8.0", "nvidia")]);
        // Legacy image: CUDA_VERSION alone means cuda>=13.0.
        let f = check(&image(&[("CUDA_VERSION", "13.0.1")]), &h);
        assert_eq!(ids(&f), ["require-unsatisfied"]);
        assert!(
            f[0].predicted
                .as_ref()
                .unwrap()
                .message
                .starts_with("unsatisfied condition: cuda>=13.0,")
        );
        // NVIDIA_REQUIRE_CUDA present: CUDA_VERSION adds nothing.
        assert!(
            check(
                &image(&[
                    ("CUDA_VERSION", "13.0.1"),
                    ("NVIDIA_REQUIRE_CUDA", "cuda>=12.0")
                ]),
                &h
            )
            .is_empty()
        );
        // Disabled: info that says what would have failed.
        let f = check(
            &image(&[("CUDA_VERSION", "13.0.1"), ("NVIDIA_DISABLE_REQUIRE", "1")]),
            &h,
        );
        assert_eq!(ids(&f), ["require-disabled"]);
        assert!(f[0].evidence.contains("would not hold"));
        let f = check(
            &image(&[
                ("CUDA_VERSION", "13.0.1"),
                ("NVIDIA_DISABLE_REQUIRE", "yes"),
            ]),
            &h,
        );
        assert_eq!(ids(&f), ["require-unsatisfied"], "\"yes\" is not a Go bool");
    }

    /// A legacy CUDA 12.4 image (CUDA_VERSION only) given an A100 on driver 535 (CUDA 12.2):
    /// the legacy hook refuses it ("unsatisfied condition: cuda>=12.4"), a CDI or --device start
    /// runs it (minor-version compatibility) because nothing there reads the variables —
    /// cmd/nvidia-container-runtime-hook/main.go passes them to nvidia-container-cli --require,
    /// internal/modifier/csv.go checks them in CSV mode, the CDI modifiers never do (toolkit
    /// issue 1470).
    #[test]
    fn requirements_per_start_path() {
        use crate::facts::start_path::StartPath;
        let h = host("535.104.05", "12.2", &[("8.0", "Tesla")]);
        let img = image(&[("CUDA_VERSION", "12.4.1")]);
        // (path, host policy, id, severity, evidence contains)
        let cases: Vec<(StartPath, bool, &str, Severity, &str)> = vec![
            (
                StartPath::LegacyHook,
                false,
                "require-unsatisfied",
                Severity::Block,
                "cuda>=12.4",
            ),
            (
                StartPath::NvidiaRuntime {
                    mode: "legacy".into(),
                },
                false,
                "require-unsatisfied",
                Severity::Block,
                "cuda>=12.4",
            ),
            (
                StartPath::NvidiaRuntime { mode: "csv".into() },
                false,
                "require-unsatisfied",
                Severity::Block,
                "cuda>=12.4",
            ),
            (
                StartPath::Cdi,
                false,
                "require-not-enforced",
                Severity::Info,
                "the legacy NVIDIA runtime would refuse this start (unsatisfied condition: cuda>=12.4, please update your driver to a newer version, or use an earlier cuda container); on this CDI start nothing checks",
            ),
            (
                StartPath::NvidiaRuntime {
                    mode: "jit-cdi".into(),
                },
                false,
                "require-not-enforced",
                Severity::Info,
                "nvidia-container-runtime in jit-cdi mode nothing checks",
            ),
            (
                StartPath::ExplicitDevices,
                false,
                "require-not-enforced",
                Severity::Info,
                "explicitly (--device) nothing checks",
            ),
            (
                StartPath::Cdi,
                true,
                "require-unsatisfied",
                Severity::Block,
                "enforced by this host's policy (enforce_requirements = true",
            ),
        ];
        for (path, policy, id, sev, ev) in cases {
            let mut f = check(&img, &h);
            on_path(&mut f, &path, policy);
            let ids = crate::rules::ids(&f);
            assert_eq!(ids, vec![id], "{path:?}");
            assert_eq!(f[0].severity, sev, "{path:?}");
            assert!(f[0].evidence.contains(ev), "{path:?}: {}", f[0].evidence);
            // Only the toolkit's own refusal is its message; our policy's block is ours.
            assert_eq!(
                f[0].predicted.is_some(),
                path.enforces_requirements(),
                "{path:?}"
            );
        }
        // A malformed requirement also stops only the legacy path.
        let bad = image(&[("NVIDIA_REQUIRE_CUDA", "cuda>>12")]);
        let mut f = check(&bad, &h);
        on_path(&mut f, &StartPath::Cdi, false);
        assert_eq!(ids(&f), vec!["require-not-enforced"]);
    }
}
