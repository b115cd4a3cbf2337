//! Forward compatibility on the CDI paths: what NVIDIA's `nvidia-cdi-hook enable-cuda-compat`
//! will decide for this container — whether the image's `/usr/local/cuda/compat` libcuda is the
//! one its loader will find — predicted from the spec's hook arguments, the compat library's
//! version and its `.note.cuda.fwd_compatibility` ([`crate::formats::compat_note`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::facts::start_path::CdiHook;

/// What `nvidia-cdi-hook enable-cuda-compat` will decide for this container
/// (`cmd/nvidia-cdi-hook/cudacompat/cudacompat.go`): whether it adds the image's compat
/// directory to `ld.so.conf.d` as `00-compat-*.conf`, ahead of every other entry, so the compat
/// `libcuda` is what the loader cache gives for `libcuda.so.1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompatDecision {
    pub use_compat: bool,
    /// The compat library the hook judged (`<compat dir>/libcuda.so.<version>`), as the
    /// container sees it.
    pub library: Option<PathBuf>,
    pub version: Option<String>,
    pub note: Option<crate::formats::compat_note::CompatNote>,
    /// Why, in words, for the finding.
    pub why: String,
}

/// Masterminds/semver's `NewVersion` as the hook uses it (leading zeros coerced: `580.159.04` is
/// 580.159.4; one to three numeric parts, an optional `v`). A pre-release or build suffix is not
/// read here (None), which no driver version has.
pub fn semver(s: &str) -> Option<(u64, u64, u64)> {
    let s = s.trim().strip_prefix('v').unwrap_or(s.trim());
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut v = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v[i] = p.parse().ok()?;
    }
    Some((v[0], v[1], v[2]))
}

/// The hook's decision from the compat library's version, its note and the host versions the
/// spec gives the hook (`useCompatLibraries` and `compatElfHeader.UseCompat`):
/// * with a note: the host driver's branch must be one the note lists and the compat driver
///   newer than the host's; without both versions, the note's CUDA version must be newer than
///   the host CUDA version given;
/// * without a note (or an unreadable one): no if a host CUDA version was given; else only if
///   the compat driver's major is above the host driver's.
pub fn use_compat(
    note: Option<&crate::formats::compat_note::CompatNote>,
    compat_version: &str,
    host_driver: Option<&str>,
    host_cuda: Option<&str>,
) -> (bool, String) {
    let compat = semver(compat_version);
    let host = host_driver.and_then(semver);
    let host_cuda_v = host_cuda.and_then(semver);
    if let Some(n) = note {
        let (Some(c), Some(h)) = (compat, host) else {
            return match (host_cuda_v, n.cuda_version.as_deref().and_then(semver)) {
                (Some(hc), Some(nc)) => (
                    nc > hc,
                    format!(
                        "its note says CUDA {}, the host CUDA is {}",
                        n.cuda_version.as_deref().unwrap_or(""),
                        host_cuda.unwrap_or("")
                    ),
                ),
                _ => (
                    false,
                    "no host driver version and no comparable CUDA versions".into(),
                ),
            };
        };
        if !n.driver.iter().any(|d| u64::try_from(*d).ok() == Some(h.0)) {
            return (
                false,
                format!(
                    "the host driver's branch {} is not among those its note supports ({:?})",
                    h.0, n.driver
                ),
            );
        }
        return if c > h {
            (
                true,
                format!(
                    "the host driver's branch {} is supported by its note and {compat_version} is newer than the host's {}",
                    h.0,
                    host_driver.unwrap_or("")
                ),
            )
        } else {
            (
                false,
                format!(
                    "{compat_version} is not newer than the host driver {}",
                    host_driver.unwrap_or("")
                ),
            )
        };
    }
    if host_cuda.is_some_and(|v| !v.is_empty()) {
        return (
            false,
            "no readable note, and a host CUDA version is given: the hook needs the note".into(),
        );
    }
    match (compat, host) {
        (Some(c), Some(h)) if h.0 < c.0 => (
            true,
            format!(
                "no note; its major {} is above the host driver's {}",
                c.0, h.0
            ),
        ),
        (Some(c), Some(h)) => (
            false,
            format!(
                "no note; its major {} is not above the host driver's {}",
                c.0, h.0
            ),
        ),
        _ => (false, "no note and a version that does not parse".into()),
    }
}

/// Predict `enable-cuda-compat` for the container rooted at `root`: the compat directory (links
/// followed inside the rootfs), exactly one regular file `libcuda.so.*.*` in it, its note.
pub fn predict_cuda_compat(root: &Path, hook: &CdiHook) -> Option<CompatDecision> {
    let CdiHook::EnableCudaCompat {
        host_driver_version,
        host_cuda_version,
        compat_root,
    } = hook
    else {
        return None;
    };
    let nonempty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(String::from);
    let (hd, hc) = (nonempty(host_driver_version), nonempty(host_cuda_version));
    let no = |why: String| CompatDecision {
        use_compat: false,
        library: None,
        version: None,
        note: None,
        why,
    };
    if hd.is_none() && hc.is_none() {
        return Some(no(
            "the hook was given no host version: it does nothing".into()
        ));
    }
    let Ok(dir) = crate::facts::image::rootfs::resolve(root, compat_root) else {
        return Some(no(format!("the image has no {}", compat_root.display())));
    };
    let mut libs: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .take(4096)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n.strip_prefix("libcuda.so.")
                        .is_some_and(|r| r.contains('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    libs.sort();
    if libs.len() != 1 {
        return Some(no(format!(
            "{} holds {} files named libcuda.so.*.* (the hook uses the directory only with exactly one)",
            compat_root.display(),
            libs.len()
        )));
    }
    let name = &libs[0];
    let version = name["libcuda.so.".len()..].to_string();
    let in_image = dir
        .strip_prefix(root)
        .map(|p| Path::new("/").join(p))
        .unwrap_or_else(|_| compat_root.clone());
    let library = in_image.join(name);
    let note = crate::facts::image::rootfs::open_regular(root, &library)
        .ok()
        .and_then(|(f, _)| crate::formats::compat_note::read(f).ok().flatten());
    let (use_it, why) = use_compat(note.as_ref(), &version, hd.as_deref(), hc.as_deref());
    Some(CompatDecision {
        use_compat: use_it,
        library: Some(library),
        version: Some(version),
        note,
        why,
    })
}
