//! Image load rules: the image's CUDA libraries resolve, with the symbol versions they need,
//! and which CUDA runtime each framework really loads. Facts: [`crate::facts::library_loading::cuda_libraries`].
//!
//! A miss blocks only where a framework's own core library (`libtorch_cuda.so`) needs it and no
//! copy exists anywhere in the image: then `import torch` fails for certain. Anywhere else it
//! warns, because a library on disk is not proof the workload loads it (optional plugins for
//! another CUDA are common), and Python packages may preload a copy from another directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::facts::library_loading::cuda_libraries::LoadFacts;
use crate::facts::versions::image_cuda::ImageFacts;
use crate::finding::{Api, Finding, FindingId, Predicted, Severity};
use crate::knowledge::cuda::Version;
use crate::knowledge::cuda_library;

/// Searched places shown in a message; the rest are counted.
const SHOWN_PLACES: usize = 8;

fn list_paths(paths: &[PathBuf], total: usize) -> String {
    let mut s = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if total > paths.len() {
        s.push_str(&format!(" and {} more", total - paths.len()));
    }
    s
}

pub fn check(load: &LoadFacts, image: &ImageFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    missing_libraries(load, &mut out);
    missing_versions(load, &mut out);
    runtimes(load, image, &mut out);
    mismatches(load, image, &mut out);
    out
}

fn missing_libraries(load: &LoadFacts, out: &mut Vec<Finding>) {
    for m in &load.missing {
        let lib = &m.library;
        let mut searched = m.searched[..m.searched.len().min(SHOWN_PLACES)].join(", ");
        if m.searched.len() > SHOWN_PLACES {
            searched.push_str(&format!(" and {} more", m.searched.len() - SHOWN_PLACES));
        }
        let mut evidence = format!(
            "{lib}, needed by {}, is found nowhere the container's loader looks for it ({searched})",
            list_paths(&m.needed_by, m.needed_by_count)
        );
        // "No copy anywhere" is known only when the walk saw everything.
        let certain = m.framework.is_some() && m.elsewhere.is_empty() && !load.walk_incomplete;
        if let Some(fw) = &m.framework {
            evidence.push_str(&format!(
                "; {fw}'s own library needs it, so importing {fw} fails"
            ));
        }
        if !m.elsewhere.is_empty() {
            evidence.push_str(&format!(
                "; the image has {} off that path (a Python package may still preload it from there)",
                list_paths(&m.elsewhere, m.elsewhere.len())
            ));
        }
        if let Some((path, why)) = &m.unloadable {
            out.push(Finding::new(
                FindingId::ImageLibraryMissing,
                if certain { Severity::Block } else { Severity::Warn },
                Some(Predicted::message(Api::Loader, format!("{}: {why}", path.display()))),
                format!(
                    "{lib}, needed by {}, resolves to {}, which the loader cannot load ({why}: not a shared object, e.g. a Git LFS pointer or a truncated download); the loader stops there and looks no further",
                    list_paths(&m.needed_by, m.needed_by_count),
                    path.display()
                ),
                format!("replace {} with the real library (git lfs pull, reinstall the package that ships it)", path.display()),
            ));
            continue;
        }
        let provider = cuda_library(lib)
            .map(|l| l.providers(m.cuda_major))
            .unwrap_or_else(|| "the package that ships it".to_string());
        out.push(Finding::new(
            FindingId::ImageLibraryMissing,
            if certain { Severity::Block } else { Severity::Warn },
            Some(Predicted::message(
                Api::Loader,
                format!("{lib}: cannot open shared object file: No such file or directory"),
            )),
            evidence,
            format!("install {provider} in the image, or put the directory that holds {lib} on the needing library's RUNPATH or in LD_LIBRARY_PATH"),
        ));
    }
}

fn missing_versions(load: &LoadFacts, out: &mut Vec<Finding>) {
    // One finding per library file the loader picks: every version it lacks and every object
    // that needs one named in it. The loader stops at the first it checks, which it names.
    let mut groups: BTreeMap<
        PathBuf,
        Vec<&crate::facts::library_loading::cuda_libraries::MissingVersion>,
    > = BTreeMap::new();
    for mv in &load.missing_versions {
        groups.entry(mv.provider.clone()).or_default().push(mv);
    }
    for (provider, mvs) in groups {
        let first = mvs[0];
        let mut versions: Vec<&str> = mvs.iter().map(|m| m.version.as_str()).collect();
        versions.sort_by_key(|v| version_order(v));
        versions.dedup();
        let mut who: Vec<PathBuf> = mvs.iter().map(|m| m.required_by.clone()).collect();
        who.dedup();
        let total = who.len();
        who.truncate(5);
        let framework = mvs.iter().find_map(|m| m.framework.clone());
        let mut elsewhere: Vec<PathBuf> = mvs
            .iter()
            .flat_map(|m| m.defined_elsewhere.iter().cloned())
            .collect();
        elsewhere.sort();
        elsewhere.dedup();
        let certain = framework.is_some() && elsewhere.is_empty() && !load.walk_incomplete;
        let newest = versions.last().copied().unwrap_or_default();
        let mut evidence = format!(
            "{} requires {} of {}, and the loader resolves {} to {}, which does not define {}",
            list_paths(&who, total),
            versions.join(", "),
            first.library,
            first.library,
            provider.display(),
            if versions.len() > 1 { "them" } else { "it" }
        );
        if let Some(fw) = &framework {
            evidence.push_str(&format!(
                "; {fw}'s own library needs it, so importing {fw} fails"
            ));
        }
        if !elsewhere.is_empty() {
            evidence.push_str(&format!(
                "; {} defines them but is not what the loader picks for these objects (it works only if the process loaded that copy first)",
                list_paths(&elsewhere[..elsewhere.len().min(3)], elsewhere.len())
            ));
        }
        let mut unusable: Vec<&str> = mvs
            .iter()
            .flat_map(|m| m.unusable_elsewhere.iter().map(String::as_str))
            .collect();
        unusable.sort();
        unusable.dedup();
        if !unusable.is_empty() {
            evidence.push_str(&format!(
                "; {} defines them too but would not load either: {}",
                if unusable.len() > 1 {
                    "other copies"
                } else {
                    "another copy"
                },
                unusable[..unusable.len().min(3)].join("; ")
            ));
        }
        let fix = if newest.starts_with("GLIBC_") {
            format!(
                "build the image on a base whose glibc defines {newest} (a newer distribution release), or install a build of the library made for an older glibc (an older manylinux wheel)"
            )
        } else {
            format!(
                "install a newer libstdc++ (GCC runtime: the libstdc++6 package of a newer distribution release, or conda's libstdcxx-ng) that defines {newest}, or install a build of the library made for the image's compiler runtime"
            )
        };
        out.push(Finding::new(
            FindingId::ImageSymbolVersionMissing,
            if certain {
                Severity::Block
            } else {
                Severity::Warn
            },
            Some(Predicted::message(
                Api::Loader,
                format!(
                    "{}: version `{}' not found (required by {})",
                    provider.display(),
                    first.version,
                    first.required_by.display()
                ),
            )),
            evidence,
            fix,
        ));
    }
}

/// `GLIBCXX_3.4.30` sorts after `GLIBCXX_3.4.9`: by prefix, then numerically.
fn version_order(v: &str) -> (String, Vec<u64>) {
    let (prefix, num) = v.rsplit_once('_').unwrap_or((v, ""));
    (
        prefix.to_string(),
        num.split('.').filter_map(|p| p.parse().ok()).collect(),
    )
}

/// Every CUDA version the image names, with where: the runtimes loaded, those only on disk,
/// `version.json`, `CUDA_VERSION`.
fn runtimes(load: &LoadFacts, image: &ImageFacts, out: &mut Vec<Finding>) {
    if load.runtimes_in_use.is_empty() {
        return;
    }
    let mm = |v: &Version| v.major_minor();
    let loaded: Vec<Version> = load
        .runtimes_in_use
        .iter()
        .filter_map(|r| r.version.as_ref().map(mm))
        .collect();
    let mut others: Vec<(Version, String)> = Vec::new();
    for r in &image.runtimes {
        let m = mm(&r.version);
        if !loaded.contains(&m) {
            others.push((
                m,
                format!(
                    "{} on disk, loaded by no CUDA-using library",
                    r.path.display()
                ),
            ));
        }
    }
    if let Some(v) = &image.toolkit_version
        && !loaded.contains(&mm(v))
    {
        others.push((mm(v), "/usr/local/cuda/version.json".to_string()));
    }
    if let Some(s) = &image.cuda_version
        && let Some(v) = image.cuda_env_version()
        && !loaded.contains(&mm(&v))
    {
        others.push((mm(&v), format!("CUDA_VERSION={s}")));
    }
    let mut distinct = loaded.clone();
    distinct.sort();
    distinct.dedup();
    if others.is_empty() && distinct.len() < 2 {
        return;
    }
    let side_by_side: Vec<String> = load
        .runtimes_in_use
        .iter()
        .map(|r| {
            let by = if r.packages.is_empty() {
                list_paths(&r.loaded_by, r.loaded_by_count)
            } else {
                r.packages.join(", ")
            };
            format!(
                "loaded: CUDA runtime {} ({}, by {by})",
                r.version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "?".into()),
                r.path.display()
            )
        })
        .chain(others.iter().map(|(v, src)| format!("{v} ({src})")))
        .collect();
    out.push(Finding::new(
        FindingId::ImageCudaRuntimes,
        Severity::Info,
        None,
        format!(
            "the image has several CUDA versions: {}. The runtime a library loads is the one that talks to the driver, so the driver is judged against {}",
            side_by_side.join("; "),
            distinct.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" and ")
        ),
        "nothing to do; remove the unused CUDA versions to make the image smaller and its CUDA version unambiguous",
    ));
}

fn mismatches(load: &LoadFacts, image: &ImageFacts, out: &mut Vec<Finding>) {
    for fw in &load.frameworks {
        let Some(built) = &fw.built_for_cuda else {
            continue;
        };
        let name = match &fw.version {
            Some(v) => format!("{} {v}", fw.name),
            None => fw.name.clone(),
        };
        if let (Some(rt), Some(path)) = (&fw.runtime_version, &fw.runtime)
            && (rt.major() != built.major() || rt.major_minor() < built.major_minor())
        {
            out.push(Finding::new(
                FindingId::ImageRuntimeMismatch,
                Severity::Warn,
                None,
                format!(
                    "{name} was built with CUDA {built} but its libraries load the CUDA {rt} runtime {}: runtime functions newer than {rt} that it calls are missing (an undefined-symbol error at import or at first use)",
                    path.display()
                ),
                format!("load the runtime {} was built with: install the matching nvidia-cuda-runtime wheel, and do not put an older libcudart first in LD_LIBRARY_PATH", fw.name),
            ));
        }
        // torch.utils.cpp_extension compares the toolkit's nvcc with torch.version.cuda when a
        // CUDA extension is built (pip installs, JIT-built ops): a major mismatch is an error.
        if let (Some(nvcc), Some(tk)) = (&load.nvcc, &image.toolkit_version)
            && fw.name == "torch"
            && tk.major() != built.major()
        {
            let (tk, built) = (tk.major_minor(), built.major_minor());
            out.push(Finding::new(
                FindingId::ImageRuntimeMismatch,
                Severity::Warn,
                Some(Predicted::message(
                    Api::Toolkit,
                    format!("The detected CUDA version ({tk}) mismatches the version that was used to compile PyTorch ({built}). Please make sure to use the same CUDA versions."),
                )),
                format!(
                    "{name} was built with CUDA {built}, and the image's toolkit ({}, CUDA {tk}) is another major: building a CUDA extension (pip install of a package with CUDA code, ops compiled at first use) fails; running {} itself is not affected",
                    nvcc.display(),
                    fw.name
                ),
                format!("install the CUDA {}.x toolkit as /usr/local/cuda (or point CUDA_HOME at one), or a {} build for CUDA {tk}", built.major(), fw.name),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::library_loading::cuda_libraries::{
        Framework, MissingLibrary, MissingVersion, RuntimeInUse,
    };
    use crate::facts::library_loading::loader::Source;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn missing(lib: &str, by: &str, framework: Option<&str>, elsewhere: &[&str]) -> MissingLibrary {
        MissingLibrary {
            library: lib.into(),
            needed_by: vec![by.into()],
            needed_by_count: 1,
            searched: vec!["RUNPATH /x".into(), "/etc/ld.so.cache".into()],
            elsewhere: elsewhere.iter().map(PathBuf::from).collect(),
            cuda_major: Some(12),
            framework: framework.map(String::from),
            unloadable: None,
        }
    }

    fn runtime(path: &str, ver: &str, pkg: &str) -> RuntimeInUse {
        RuntimeInUse {
            path: path.into(),
            version: Some(v(ver)),
            exact: true,
            via: Source::Runpath,
            loaded_by: vec!["/x.so".into()],
            loaded_by_count: 1,
            packages: vec![pkg.into()],
        }
    }

    fn torch(built: &str, rt: Option<&str>) -> Framework {
        Framework {
            name: "torch".into(),
            version: Some("2.7.0+cu128".into()),
            built_for_cuda: Some(v(built)),
            path: "/sp/torch".into(),
            runtime: rt.map(|_| PathBuf::from("/usr/local/cuda/lib64/libcudart.so.12.4.127")),
            runtime_version: rt.map(v),
        }
    }

    fn ids(load: &LoadFacts, image: &ImageFacts) -> Vec<(String, Severity)> {
        let f = check(load, image);
        f.into_iter()
            .map(|f| (f.id.to_string(), f.severity))
            .collect()
    }

    #[test]
    fn misses_block_only_for_a_framework_core_with_no_copy_anywhere() {
        let core = "/sp/torch/lib/libtorch_cuda.so";
        let plugin = "/sp/foo/libplugin.so";
        for (m, want) in [
            (
                missing("libcudnn.so.9", core, Some("torch"), &[]),
                Severity::Block,
            ),
            (
                missing(
                    "libcudnn.so.9",
                    core,
                    Some("torch"),
                    &["/other/libcudnn.so.9"],
                ),
                Severity::Warn,
            ),
            (missing("libcudnn.so.8", plugin, None, &[]), Severity::Warn),
        ] {
            let load = LoadFacts {
                missing: vec![m],
                ..Default::default()
            };
            let f = check(&load, &ImageFacts::default());
            assert_eq!(f.len(), 1);
            assert_eq!(
                (f[0].id.as_str(), f[0].severity),
                ("image-library-missing", want)
            );
            let p = f[0].predicted.as_ref().unwrap();
            assert!(
                p.message
                    .ends_with(": cannot open shared object file: No such file or directory")
            );
            assert!(f[0].fix.contains("nvidia-cudnn-cu12"), "{}", f[0].fix);
        }
    }

    #[test]
    fn a_file_the_loader_cannot_load_predicts_its_error() {
        let mut m = missing("libcudart.so.12", "/opt/app/libapp.so", None, &[]);
        m.unloadable = Some(("/opt/app/libcudart.so.12".into(), "file too short".into()));
        let load = LoadFacts {
            missing: vec![m],
            ..Default::default()
        };
        let f = check(&load, &ImageFacts::default());
        assert_eq!(
            f[0].predicted.as_ref().unwrap().message,
            "/opt/app/libcudart.so.12: file too short"
        );
        assert_eq!(f[0].severity, Severity::Warn);
    }

    #[test]
    fn an_incomplete_walk_never_makes_a_miss_certain() {
        // The copy torch would preload may sit where the walk did not reach.
        let load = LoadFacts {
            missing: vec![missing(
                "libcudnn.so.9",
                "/sp/torch/lib/libtorch_cuda.so",
                Some("torch"),
                &[],
            )],
            walk_incomplete: true,
            ..Default::default()
        };
        assert_eq!(
            check(&load, &ImageFacts::default())[0].severity,
            Severity::Warn
        );
    }

    #[test]
    fn a_missing_version_predicts_the_loaders_message() {
        let load = LoadFacts {
            missing_versions: vec![MissingVersion {
                version: "GLIBCXX_3.4.30".into(),
                library: "libstdc++.so.6".into(),
                provider: "/usr/lib/x86_64-linux-gnu/libstdc++.so.6".into(),
                required_by: "/sp/foo/libfoo.so".into(),
                defined_elsewhere: vec![],
                unusable_elsewhere: vec![],
                framework: None,
            }],
            ..Default::default()
        };
        let f = check(&load, &ImageFacts::default());
        assert_eq!(f[0].id, "image-symbol-version-missing");
        assert_eq!(f[0].severity, Severity::Warn);
        assert_eq!(
            f[0].predicted.as_ref().unwrap().message,
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.30' not found (required by /sp/foo/libfoo.so)"
        );
        assert!(f[0].fix.contains("libstdc++"));
        assert!(
            f[0].evidence
                .contains("requires GLIBCXX_3.4.30 of libstdc++.so.6"),
            "{}",
            f[0].evidence
        );
    }

    #[test]
    fn versions_missing_from_one_library_make_one_finding() {
        let mv = |v: &str, by: &str| MissingVersion {
            version: v.into(),
            library: "libstdc++.so.6".into(),
            provider: "/usr/lib/libstdc++.so.6".into(),
            required_by: by.into(),
            defined_elsewhere: vec![],
            unusable_elsewhere: vec![],
            framework: None,
        };
        let load = LoadFacts {
            missing_versions: vec![
                mv("GLIBCXX_3.4.9", "/a.so"),
                mv("GLIBCXX_3.4.30", "/a.so"),
                mv("CXXABI_1.3.13", "/b.so"),
            ],
            ..Default::default()
        };
        let f = check(&load, &ImageFacts::default());
        assert_eq!(f.len(), 1);
        assert!(
            f[0].evidence
                .contains("/a.so, /b.so requires CXXABI_1.3.13, GLIBCXX_3.4.9, GLIBCXX_3.4.30"),
            "{}",
            f[0].evidence
        );
        assert!(f[0].fix.contains("GLIBCXX_3.4.30"));
        assert!(
            f[0].predicted
                .as_ref()
                .unwrap()
                .message
                .contains("`GLIBCXX_3.4.9' not found (required by /a.so)")
        );
    }

    #[test]
    fn runtimes_side_by_side_only_when_they_differ() {
        let one = LoadFacts {
            runtimes_in_use: vec![runtime(
                "/sp/nvidia/cuda_runtime/lib/libcudart.so.12",
                "12.4.127",
                "torch",
            )],
            ..Default::default()
        };
        let same = ImageFacts {
            cuda_version: Some("12.4.1".into()),
            ..Default::default()
        };
        assert!(ids(&one, &same).is_empty());
        let other = ImageFacts {
            cuda_version: Some("11.8.0".into()),
            ..Default::default()
        };
        let f = check(&one, &other);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "image-cuda-runtimes");
        assert!(
            f[0].evidence.contains("CUDA_VERSION=11.8.0")
                && f[0].evidence.contains("judged against 12.4"),
            "{}",
            f[0].evidence
        );
        // Nothing loaded: the versions rule judges CUDA_VERSION alone; no side-by-side.
        assert!(ids(&LoadFacts::default(), &other).is_empty());
    }

    #[test]
    fn framework_mismatches() {
        let image = ImageFacts::default();
        for (fw, want) in [
            (torch("12.8", Some("12.8.90")), 0),
            (torch("12.8", Some("12.9.79")), 0),
            (torch("12.8", Some("12.4.127")), 1),
            (torch("12.8", Some("13.0.48")), 1),
            (torch("12.8", None), 0),
        ] {
            let load = LoadFacts {
                frameworks: vec![fw],
                ..Default::default()
            };
            assert_eq!(ids(&load, &image).len(), want);
        }
        // The toolkit's nvcc of another major breaks extension builds.
        let tk = |ver: &str| ImageFacts {
            toolkit_version: Some(v(ver)),
            ..Default::default()
        };
        let load = LoadFacts {
            frameworks: vec![torch("12.8", None)],
            nvcc: Some("/usr/local/cuda/bin/nvcc".into()),
            ..Default::default()
        };
        assert!(
            ids(&load, &tk("12.4.1")).is_empty(),
            "minor differences only warn in torch itself"
        );
        let f = check(&load, &tk("11.8.0"));
        assert_eq!(f.len(), 1);
        assert!(f[0].predicted.as_ref().unwrap().message.starts_with("The detected CUDA version (11.8) mismatches the version that was used to compile PyTorch (12.8)."));
        let no_nvcc = LoadFacts { nvcc: None, ..load };
        assert!(ids(&no_nvcc, &tk("11.8.0")).is_empty());
    }
}
