//! The image profile in the image's registry, as an OCI referrer: an artifact manifest whose
//! `subject` is the image's manifest, `artifactType` NFD's image-compatibility type, with two
//! layers: NFD's spec (YAML) and our profile (JSON). `oci-client` talks to the registry; it reads
//! referrers through the referrers API and falls back to the referrers tag schema
//! (`<alg>-<hex>`), which registries without the API (distribution 2.8) need, so `attach` keeps
//! that tag's index current too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use serde_json::{Value, json};

use crate::fleet::profile::{
    ImageProfile, MEDIA_TYPE, NFD_ARTIFACT_TYPE, NFD_SPEC_MEDIA_TYPE, SCHEMA,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// A profile is a few hundred KiB at most; a larger layer is not one of ours.
const MAX_PROFILE_BYTES: i64 = 4 << 20;
/// Referrers looked at per image: an image with more is someone else's business.
const MAX_REFERRERS: usize = 16;

pub struct Registry {
    client: oci_client::Client,
    auth: RegistryAuth,
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

pub fn parse_ref(image: &str) -> anyhow::Result<Reference> {
    image
        .parse::<Reference>()
        .with_context(|| format!("{image}: not an image reference"))
}

impl Registry {
    /// `plain_http`: registries (`host:port`) reached over HTTP instead of HTTPS.
    pub fn new(plain_http: &[String], timeout: Option<Duration>) -> Registry {
        crate::fleet::install_crypto();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http.to_vec()),
            read_timeout: timeout,
            connect_timeout: timeout,
            ..ClientConfig::default()
        };
        Registry {
            client: oci_client::Client::new(config),
            auth: RegistryAuth::Anonymous,
        }
    }

    /// The manifest the reference names: its bytes, digest and media type.
    async fn manifest(&self, r: &Reference) -> anyhow::Result<(bytes::Bytes, String, String)> {
        let (body, digest) = self
            .client
            .pull_manifest_raw(
                r,
                &self.auth,
                &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST],
            )
            .await
            .with_context(|| format!("{r}: reading the manifest"))?;
        let v: Value = serde_json::from_slice(&body).context("manifest is not JSON")?;
        let media = v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
        Ok((body, digest, media))
    }

    /// The image's digest: one HEAD request (a GET where the registry gives no digest header).
    pub async fn resolve(&self, r: &Reference) -> anyhow::Result<String> {
        if let Some(d) = r.digest() {
            return Ok(d.to_string());
        }
        self.client
            .fetch_manifest_digest(r, &self.auth)
            .await
            .with_context(|| format!("{r}: resolving the digest"))
    }

    /// Attach the profile to the image `image` names; returns the artifact's digest. `env`: the
    /// environment of the image the profile was computed from; a single-platform image in the
    /// registry whose config says otherwise is another image, and nothing is pushed.
    pub async fn attach(
        &self,
        image: &str,
        profile: &ImageProfile,
        env: Option<&[String]>,
    ) -> anyhow::Result<String> {
        let r = parse_ref(image)?;
        let (subject_body, subject_digest, subject_media) = self.manifest(&r).await?;
        if let Some(env) = env {
            self.check_env(&r, &subject_body, env).await?;
        }
        let nfd = serde_yaml_ng::to_string(&profile.nfd_spec())?.into_bytes();
        let ours = serde_json::to_vec(profile)?;
        let empty = b"{}".to_vec();
        for blob in [&empty, &nfd, &ours] {
            self.client
                .push_blob(&r, blob.clone(), &sha256(blob))
                .await
                .context("pushing the profile's blobs")?;
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": NFD_ARTIFACT_TYPE,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": sha256(&empty), "size": empty.len()},
            "layers": [
                {"mediaType": NFD_SPEC_MEDIA_TYPE, "digest": sha256(&nfd), "size": nfd.len()},
                {"mediaType": MEDIA_TYPE, "digest": sha256(&ours), "size": ours.len()},
            ],
            "subject": {"mediaType": subject_media, "digest": subject_digest, "size": subject_body.len()},
            "annotations": {"org.opencontainers.image.description": format!("cuda-preflight profile ({SCHEMA})")},
        });
        let body = serde_json::to_vec(&manifest)?;
        let digest = sha256(&body);
        let at = Reference::with_digest(
            r.registry().to_string(),
            r.repository().to_string(),
            digest.clone(),
        );
        self.client
            .push_manifest_raw(
                &at,
                body.clone(),
                http::HeaderValue::from_static(OCI_MANIFEST),
            )
            .await
            .context("pushing the profile's manifest")?;
        self.add_to_tag_index(&r, &subject_digest, &digest, body.len())
            .await?;
        Ok(digest)
    }

    /// The registry image's config `Env` must be the judged image's (an index is not checked:
    /// its platforms' configs differ by design).
    async fn check_env(
        &self,
        r: &Reference,
        manifest: &[u8],
        env: &[String],
    ) -> anyhow::Result<()> {
        const MAX_CONFIG: i64 = 4 << 20;
        let m: Value = serde_json::from_slice(manifest).context("manifest is not JSON")?;
        let (Some(digest), Some(size)) =
            (m["config"]["digest"].as_str(), m["config"]["size"].as_i64())
        else {
            return Ok(()); // an index
        };
        if !(0..=MAX_CONFIG).contains(&size) {
            bail!("{r}: image config of {size} bytes");
        }
        let desc = oci_client::manifest::OciDescriptor {
            media_type: m["config"]["mediaType"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            digest: digest.to_string(),
            size,
            ..Default::default()
        };
        let mut out = Vec::new();
        self.client
            .pull_blob(r, &desc, &mut out)
            .await
            .context("reading the image config")?;
        let config: Value = serde_json::from_slice(&out).context("image config")?;
        let theirs: Vec<&str> = config["config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let ours: Vec<&str> = env.iter().map(String::as_str).collect();
        if theirs != ours {
            bail!(
                "{r} is not the image judged: its config's environment differs ({} entries there, {} here); attach the profile of the image the reference names",
                theirs.len(),
                ours.len()
            );
        }
        Ok(())
    }

    /// The referrers tag schema: `<alg>-<hex>` names an index of the subject's referrers.
    async fn add_to_tag_index(
        &self,
        r: &Reference,
        subject: &str,
        digest: &str,
        size: usize,
    ) -> anyhow::Result<()> {
        let tag = Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            subject.replacen(':', "-", 1),
        );
        let mut manifests: Vec<Value> = match self
            .client
            .pull_manifest_raw(&tag, &self.auth, &[OCI_INDEX])
            .await
        {
            Ok((b, _)) => serde_json::from_slice::<Value>(&b)
                .ok()
                .and_then(|v| v["manifests"].as_array().cloned())
                .unwrap_or_default(),
            Err(_) => Vec::new(), // no tag yet
        };
        manifests.retain(|m| m["digest"] != digest);
        manifests.push(
            json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                              "artifactType": NFD_ARTIFACT_TYPE}),
        );
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.client
            .push_manifest_raw(
                &tag,
                serde_json::to_vec(&index)?,
                http::HeaderValue::from_static(OCI_INDEX),
            )
            .await
            .context("updating the referrers tag")?;
        Ok(())
    }

    /// The profile attached to the image with digest `digest` in `r`'s repository, if any.
    pub async fn fetch_profile(
        &self,
        r: &Reference,
        digest: &str,
    ) -> anyhow::Result<Option<ImageProfile>> {
        let subject = Reference::with_digest(
            r.registry().to_string(),
            r.repository().to_string(),
            digest.to_string(),
        );
        let index = self
            .client
            .pull_referrers(&subject, Some(NFD_ARTIFACT_TYPE))
            .await
            .context("listing referrers")?;
        // The newest attachment is pushed last into the tag index; the API lists no order.
        for entry in index.manifests.iter().rev().take(MAX_REFERRERS) {
            let at = Reference::with_digest(
                r.registry().to_string(),
                r.repository().to_string(),
                entry.digest.clone(),
            );
            let (body, _, _) = self.manifest(&at).await?;
            let m: oci_client::manifest::OciImageManifest =
                serde_json::from_slice(&body).context("referrer manifest")?;
            let Some(layer) = m.layers.iter().find(|l| l.media_type == MEDIA_TYPE) else {
                continue;
            };
            if layer.size > MAX_PROFILE_BYTES || layer.size < 0 {
                bail!("{}: profile layer of {} bytes", entry.digest, layer.size);
            }
            let mut out = Vec::new();
            self.client
                .pull_blob(&at, layer, &mut out)
                .await
                .context("reading the profile")?;
            if out.len() as i64 != layer.size || sha256(&out) != layer.digest {
                bail!("{}: profile layer does not match its digest", entry.digest);
            }
            let p: ImageProfile = serde_json::from_slice(&out).context("profile layer")?;
            if p.schema != SCHEMA {
                continue;
            }
            return Ok(Some(p));
        }
        Ok(None)
    }
}

/// Profiles by image digest: an image's profile is fixed by its content, so one lookup per digest
/// per `ttl` (a profile attached later is found after `ttl`).
pub struct ProfileCache {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, Option<ImageProfile>)>>,
}

/// Entries kept at most; the oldest go first.
const MAX_CACHED: usize = 4096;

impl ProfileCache {
    pub fn new(ttl: Duration) -> ProfileCache {
        ProfileCache {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, digest: &str) -> Option<Option<ImageProfile>> {
        let map = self.map.lock().ok()?;
        map.get(digest)
            .filter(|(t, _)| t.elapsed() < self.ttl)
            .map(|(_, p)| p.clone())
    }

    pub fn put(&self, digest: &str, p: Option<ImageProfile>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_CACHED
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
            map.insert(digest.to_string(), (Instant::now(), p));
        }
    }
}
