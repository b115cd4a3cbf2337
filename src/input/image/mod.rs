//! Images read without running them (`check --image REF`): the reference forms skopeo uses, the
//! image config's environment, and its layers applied to a private temporary directory (only the
//! files the rules read, [`layers::wanted`]). The result is a rootfs the same facts and rules
//! read as a bundle's.
//!
//! | REF | read from |
//! | --- | --- |
//! | `oci:DIR[:TAG]` | an OCI image layout directory |
//! | `oci-archive:FILE[:TAG]` | a tar of an OCI layout (`podman save --format oci-archive`) |
//! | `docker-archive:FILE[:NAME]` | `docker save` / `podman save` output (`manifest.json`) |
//! | `containers-storage:NAME` | Podman's store, through `podman image save` (docker-archive) to a private file |
//! | `docker-daemon:NAME` | the Docker daemon at `DOCKER_HOST`, through `docker save` |
//! | `dir:ROOTFS` | a plain rootfs directory, read in place (no environment) |
//! | `NAME` | Podman's store, then Docker's |

pub mod engines;
pub mod layers;
pub mod mounted;
pub mod store;

use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use store::Store;

/// Manifests, indexes and configs are a few KB; 16 MiB is beyond any real one.
const MAX_JSON_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    OciLayout {
        dir: PathBuf,
        tag: Option<String>,
    },
    OciArchive {
        file: PathBuf,
        tag: Option<String>,
    },
    DockerArchive {
        file: PathBuf,
        name: Option<String>,
    },
    ContainersStorage(String),
    DockerDaemon(String),
    Rootfs(PathBuf),
    /// A bare name: the local stores are tried in turn.
    Name(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "{0:?}: unknown image reference (use oci:, oci-archive:, docker-archive:, containers-storage:, docker-daemon:, dir: or a name)"
    )]
    UnknownRef(String),
    #[error("{what}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: not valid JSON for an image {kind}")]
    Json {
        what: String,
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Layer(#[from] layers::LayerError),
    #[error(transparent)]
    Engine(#[from] engines::EngineError),
}

type Result<T> = std::result::Result<T, ImageError>;

/// `PATH[:TAG]`: the tag is what follows the last `:` when the whole string is not an existing
/// path (a path may hold colons).
fn path_and_tag(rest: &str) -> (PathBuf, Option<String>) {
    if Path::new(rest).exists() {
        return (PathBuf::from(rest), None);
    }
    match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !t.is_empty() => (PathBuf::from(p), Some(t.into())),
        _ => (PathBuf::from(rest), None),
    }
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef> {
        let Some((scheme, rest)) = s.split_once(':') else {
            return if s.is_empty() {
                Err(ImageError::UnknownRef(s.into()))
            } else {
                Ok(ImageRef::Name(s.into()))
            };
        };
        let nonempty = |r: &str| {
            if r.is_empty() {
                Err(ImageError::UnknownRef(s.into()))
            } else {
                Ok(r.to_string())
            }
        };
        Ok(match scheme {
            "oci" => {
                let (dir, tag) = path_and_tag(&nonempty(rest)?);
                ImageRef::OciLayout { dir, tag }
            }
            "oci-archive" => {
                let (file, tag) = path_and_tag(&nonempty(rest)?);
                ImageRef::OciArchive { file, tag }
            }
            "docker-archive" => {
                let (file, name) = path_and_tag(&nonempty(rest)?);
                ImageRef::DockerArchive { file, name }
            }
            "containers-storage" => ImageRef::ContainersStorage(nonempty(rest)?),
            "docker-daemon" => ImageRef::DockerDaemon(nonempty(rest)?),
            "dir" => ImageRef::Rootfs(PathBuf::from(nonempty(rest)?)),
            // `busybox:1.36`, `registry:5000/x:y`: a name with a tag or a registry port; a
            // `scheme://` URL is none of these.
            _ if !rest.is_empty() && !rest.starts_with('/') => ImageRef::Name(s.into()),
            _ => return Err(ImageError::UnknownRef(s.into())),
        })
    }
}

/// An image read into a private directory.
pub struct Image {
    /// `Env` of the image config, as `KEY=VALUE`.
    pub env: Vec<String>,
    /// The rootfs with the kept files (inside `_tmp`, or the `dir:` directory itself).
    pub rootfs: PathBuf,
    pub applied: layers::Applied,
    pub notes: Vec<String>,
    /// Removed on drop: nothing of the image outlives the check.
    _tmp: Option<tempfile::TempDir>,
}

impl Image {
    /// An image whose rootfs another part keeps (`dir:`, an engine's mount): read in place.
    pub fn in_place(rootfs: PathBuf, env: Vec<String>, notes: Vec<String>) -> Image {
        Image {
            env,
            rootfs,
            applied: layers::Applied::default(),
            notes,
            _tmp: None,
        }
    }
}

/// Read `r`: its config and its layers, into a private temporary directory under `tmp_parent`
/// (the system's temporary directory when `None`).
pub fn load(
    r: &ImageRef,
    engine: &engines::EngineOptions,
    tmp_parent: Option<&Path>,
) -> Result<Image> {
    if let ImageRef::Rootfs(dir) = r {
        if !dir.is_dir() {
            return Err(ImageError::Invalid("not a directory".into()));
        }
        return Ok(Image {
            env: Vec::new(),
            rootfs: dir.clone(),
            applied: layers::Applied::default(),
            notes: vec!["a plain rootfs has no image config: no environment".into()],
            _tmp: None,
        });
    }
    let tmp = match tmp_parent {
        Some(p) => tempfile::Builder::new()
            .prefix("cuda-preflight-image.")
            .tempdir_in(p),
        None => tempfile::Builder::new()
            .prefix("cuda-preflight-image.")
            .tempdir(),
    }
    .map_err(|source| ImageError::Io {
        what: "creating a temporary directory".into(),
        source,
    })?;
    let io = |what: &Path| {
        let what = format!("reading {}", what.display());
        move |source| ImageError::Io { what, source }
    };
    let (store, pick, prefer_docker) = match r {
        ImageRef::OciLayout { dir, tag } => (Store::Dir(dir.clone()), tag.clone(), false),
        ImageRef::OciArchive { file, tag } => (
            Store::open_archive(file).map_err(io(file))?,
            tag.clone(),
            false,
        ),
        ImageRef::DockerArchive { file, name } => (
            Store::open_archive(file).map_err(io(file))?,
            name.clone(),
            true,
        ),
        ImageRef::ContainersStorage(name) => {
            let file = engines::podman_save(engine, name, tmp.path())?;
            (Store::open_archive(&file).map_err(io(&file))?, None, true)
        }
        ImageRef::DockerDaemon(name) => {
            let file = engines::docker_save(engine, name, tmp.path())?;
            (Store::open_archive(&file).map_err(io(&file))?, None, true)
        }
        ImageRef::Name(name) => {
            let (file, docker) = engines::save_from_any(engine, name, tmp.path())?;
            (Store::open_archive(&file).map_err(io(&file))?, None, docker)
        }
        ImageRef::Rootfs(_) => unreachable!("handled above"),
    };
    let mut notes = Vec::new();
    let (config, layer_names) = resolve(&store, pick.as_deref(), prefer_docker, &mut notes)?;
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).map_err(io(&rootfs))?;
    let mut applied = layers::Applied::default();
    for (i, name) in layer_names.iter().enumerate() {
        let (blob, _) = store.open(name).map_err(|source| ImageError::Io {
            what: format!("layer {} ({name})", i + 1),
            source,
        })?;
        let reader = layers::decompress(blob).map_err(|source| ImageError::Io {
            what: format!("layer {} ({name})", i + 1),
            source,
        })?;
        layers::apply(&rootfs, i + 1, reader, &mut applied)?;
    }
    // The saved archive of an engine is no longer needed; only the kept files stay until drop.
    let _ = std::fs::remove_file(tmp.path().join(engines::ARCHIVE));
    let env = config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    Ok(Image {
        env,
        rootfs,
        applied,
        notes,
        _tmp: Some(tmp),
    })
}

/// The NVIDIA hook's name in the synthetic spec: what `docker run --gpus` and Podman's NVIDIA
/// hook put there.
const NVIDIA_HOOK: &str = "/usr/bin/nvidia-container-runtime-hook";

impl Image {
    /// The bundle the image would start as with every GPU asked for (`docker run --gpus all`:
    /// the NVIDIA prestart hook and `NVIDIA_VISIBLE_DEVICES=all` after the image's own
    /// environment), so every GPU rule applies. The devices themselves are injected at start,
    /// so offline they are not judged (an info finding says so).
    pub fn gpu_bundle(&self) -> crate::input::bundle::Bundle {
        let mut env = self.env.clone();
        env.push("NVIDIA_VISIBLE_DEVICES=all".into());
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": self.rootfs, "readonly": true},
            "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}, "env": env},
            "hooks": {"prestart": [{"path": NVIDIA_HOOK, "args": ["nvidia-container-runtime-hook", "prestart"]}]},
        });
        crate::input::bundle::Bundle {
            dir: self.rootfs.clone(),
            config_path: self.rootfs.join("config.json"),
            spec: serde_json::from_value(spec).expect("a fixed, valid spec"),
            rootfs: self.rootfs.clone(),
        }
    }

    /// What reading the image found about the image itself: refused layer entries (warn: an
    /// engine refuses or confines them, so what starts differs from what the layers say), and
    /// what was left out (info).
    pub fn findings(&self) -> Vec<crate::finding::Finding> {
        use crate::finding::{Finding, FindingId, Severity};
        let mut out = Vec::new();
        let a = &self.applied;
        if a.refused_total > 0 {
            let more = a.refused_total - a.refused.len();
            out.push(Finding::new(
                FindingId::ImageLayerEntryRefused,
                Severity::Warn,
                None,
                format!(
                    "{} layer entr{} would reach outside the image or put a special file where a library belongs, and were not extracted: {}{}",
                    a.refused_total,
                    if a.refused_total == 1 { "y" } else { "ies" },
                    a.refused.join("; "),
                    if more > 0 { format!("; and {more} more") } else { String::new() }
                ),
                "Rebuild the image from trusted layers: engines refuse such entries (a pull fails) or confine them, so the container's files differ from what its layers say.",
            ));
        }
        let notes: Vec<&String> = self.notes.iter().chain(a.notes.iter()).collect();
        if !notes.is_empty() {
            let shown: Vec<&str> = notes.iter().take(10).map(|s| s.as_str()).collect();
            out.push(Finding::new(
                FindingId::ImageReadNotes,
                Severity::Info,
                None,
                format!(
                    "{}{}",
                    shown.join("; "),
                    if notes.len() > 10 {
                        format!("; and {} more", notes.len() - 10)
                    } else {
                        String::new()
                    }
                ),
                "",
            ));
        }
        out
    }
}

/// `docker save`'s `manifest.json`: one entry per image.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(
    store: &Store,
    name: &str,
    kind: &'static str,
) -> Result<T> {
    let bytes = store
        .read(name, MAX_JSON_BYTES)
        .map_err(|source| ImageError::Io {
            what: name.to_string(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
        what: name.to_string(),
        kind,
        source,
    })
}

/// The config and the layer members, in order, of the image `pick` names (or the only one).
fn resolve(
    store: &Store,
    pick: Option<&str>,
    prefer_docker: bool,
    notes: &mut Vec<String>,
) -> Result<(ImageConfiguration, Vec<String>)> {
    let docker = store.has("manifest.json");
    let oci = store.has("index.json");
    if docker && (prefer_docker || !oci) {
        let entries: Vec<DockerManifestEntry> = parse(store, "manifest.json", "manifest list")?;
        let entry = match pick {
            Some(p) => entries.iter().find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| t == p || t.ends_with(&format!("/{p}")))
            }),
            None => {
                if entries.len() > 1 {
                    notes.push(format!(
                        "the archive holds {} images; the first was checked",
                        entries.len()
                    ));
                }
                entries.first()
            }
        }
        .ok_or_else(|| {
            ImageError::Invalid(format!(
                "manifest.json: no image{}",
                pick.map(|p| format!(" named {p}")).unwrap_or_default()
            ))
        })?;
        let config: ImageConfiguration = parse(store, &entry.config, "config")?;
        return Ok((config, entry.layers.clone()));
    }
    if !oci {
        return Err(ImageError::Invalid(
            "neither an OCI layout (index.json) nor a docker archive (manifest.json)".into(),
        ));
    }
    let index: ImageIndex = parse(store, "index.json", "index")?;
    let mut desc = pick_manifest(&index, pick, "index.json")?;
    // A multi-platform image: its index names one manifest per platform.
    for _ in 0..4 {
        if !is_index(desc.media_type()) {
            break;
        }
        let name = blob_name(&desc)?;
        let inner: ImageIndex = parse(store, &name, "index")?;
        desc = pick_platform(&inner, &name)?;
    }
    let name = blob_name(&desc)?;
    let manifest: ImageManifest = parse(store, &name, "manifest")?;
    let config: ImageConfiguration = parse(store, &blob_name(manifest.config())?, "config")?;
    let layers = manifest
        .layers()
        .iter()
        .map(blob_name)
        .collect::<Result<Vec<_>>>()?;
    Ok((config, layers))
}

fn is_index(m: &MediaType) -> bool {
    match m {
        MediaType::ImageIndex => true,
        MediaType::Other(s) => s.contains("manifest.list"),
        _ => false,
    }
}

/// `blobs/<algorithm>/<encoded>`; the digest's parts are checked by oci-spec when parsed, and
/// again here to be plain names.
fn blob_name(d: &Descriptor) -> Result<String> {
    let alg = d.digest().algorithm().to_string();
    let enc = d.digest().digest();
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !plain(&alg) || !plain(enc) {
        return Err(ImageError::Invalid(format!(
            "digest {} is not a blob name",
            d.digest()
        )));
    }
    Ok(format!("blobs/{alg}/{enc}"))
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn pick_manifest(index: &ImageIndex, tag: Option<&str>, what: &str) -> Result<Descriptor> {
    let ms = index.manifests();
    let found = match tag {
        Some(t) => ms.iter().find(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_some_and(|n| n == t || n.ends_with(&format!(":{t}")))
        }),
        None if ms.len() == 1 => ms.first(),
        None => {
            let names: Vec<String> = ms
                .iter()
                .filter_map(|d| d.annotations().as_ref()?.get(REF_NAME).cloned())
                .collect();
            return Err(ImageError::Invalid(format!(
                "{what}: {} images; name one with :TAG ({})",
                ms.len(),
                names.join(", ")
            )));
        }
    };
    found.cloned().ok_or_else(|| {
        ImageError::Invalid(format!(
            "{what}: no image{}",
            tag.map(|t| format!(" tagged {t}")).unwrap_or_default()
        ))
    })
}

/// linux on this machine's architecture, else the first linux entry.
fn pick_platform(index: &ImageIndex, what: &str) -> Result<Descriptor> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let ms = index.manifests();
    let linux = |d: &&Descriptor| {
        d.platform()
            .as_ref()
            .is_none_or(|p| p.os().to_string() == "linux")
    };
    ms.iter()
        .filter(linux)
        .find(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| p.architecture().to_string() == arch)
        })
        .or_else(|| ms.iter().find(linux))
        .cloned()
        .ok_or_else(|| ImageError::Invalid(format!("{what}: no linux image")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse_as_skopeo_writes_them() {
        let cases: &[(&str, Option<ImageRef>)] = &[
            (
                "oci:/x/layout:v1",
                Some(ImageRef::OciLayout {
                    dir: "/x/layout".into(),
                    tag: Some("v1".into()),
                }),
            ),
            (
                "oci:/x/layout",
                Some(ImageRef::OciLayout {
                    dir: "/x/layout".into(),
                    tag: None,
                }),
            ),
            (
                "oci-archive:/x/a.tar",
                Some(ImageRef::OciArchive {
                    file: "/x/a.tar".into(),
                    tag: None,
                }),
            ),
            (
                "docker-archive:/x/a.tar",
                Some(ImageRef::DockerArchive {
                    file: "/x/a.tar".into(),
                    name: None,
                }),
            ),
            (
                "containers-storage:localhost/cuda:12",
                Some(ImageRef::ContainersStorage("localhost/cuda:12".into())),
            ),
            (
                "docker-daemon:nvidia/cuda:12.4.1-base",
                Some(ImageRef::DockerDaemon("nvidia/cuda:12.4.1-base".into())),
            ),
            (
                "dir:/srv/rootfs",
                Some(ImageRef::Rootfs("/srv/rootfs".into())),
            ),
            (
                "nvidia/cuda:12.4.1-base",
                Some(ImageRef::Name("nvidia/cuda:12.4.1-base".into())),
            ),
            ("busybox", Some(ImageRef::Name("busybox".into()))),
            (
                "registry.local:5000/team/img:1",
                Some(ImageRef::Name("registry.local:5000/team/img:1".into())),
            ),
            ("oci:", None),
            ("docker-daemon:", None),
            ("", None),
            ("http://example.com/x", None),
        ];
        for (s, want) in cases {
            match (ImageRef::parse(s), want) {
                (Ok(got), Some(w)) => assert_eq!(&got, w, "{s}"),
                (Err(_), None) => {}
                (got, _) => panic!("{s}: {:?}", got.map_err(|e| e.to_string())),
            }
        }
    }
}
