//! Gather the host's facts: a host profile file, or NVML (cached for the hook) with `/proc` as
//! fallback.

use std::path::Path;

use crate::config::Config;
use crate::facts::host::{self, HostProfile};

/// The host as the rules see it: a profile file where one is given (device majors from
/// `<host_root>/proc/devices` where the profile has none), else NVML (only when the host root is
/// `/`, since NVML describes this machine) with `/proc` as fallback.
pub fn host_facts(
    profile: Option<&Path>,
    host_root: &Path,
) -> Result<HostProfile, host::HostError> {
    match profile {
        Some(path) => {
            let mut p = HostProfile::load(path)?;
            if p.device_majors.is_empty() {
                p.device_majors = host::device_majors_from_proc(host_root);
            }
            Ok(p)
        }
        None => {
            Ok(crate::facts::host::nvml::gather(host_root, host_root == Path::new("/")).profile)
        }
    }
}

/// The host's NVML facts for the hook, reused for `ttl` from `<state_dir>/host-facts.json` while
/// the boot and the loaded driver are the same: initialising NVML costs ~20 ms on an H100, more
/// than everything else a cached start does. Free memory in a reused profile is up to `ttl` old.
pub fn host_facts_cached(
    host_root: &Path,
    state_dir: &Path,
    ttl: std::time::Duration,
) -> HostProfile {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Cached {
        key: String,
        time: u64,
        profile: HostProfile,
    }
    let read = |p: &str| std::fs::read_to_string(host_root.join(p)).unwrap_or_default();
    let key = format!(
        "{}|{}",
        read("proc/sys/kernel/random/boot_id").trim(),
        read("proc/driver/nvidia/version")
            .lines()
            .next()
            .unwrap_or("")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = state_dir.join("host-facts.json");
    if let Ok(bytes) = crate::input::read_capped(&path, 4 << 20)
        && let Ok(c) = serde_json::from_slice::<Cached>(&bytes)
        && c.key == key
        && now.saturating_sub(c.time) <= ttl.as_secs()
    {
        let mut p = c.profile;
        p.device_majors = host::device_majors_from_proc(host_root);
        return p;
    }
    let facts = crate::facts::host::nvml::gather(host_root, host_root == Path::new("/"));
    if facts.source == crate::facts::host::nvml::FactSource::Nvml && !ttl.is_zero() {
        let c = Cached {
            key,
            time: now,
            profile: facts.profile.clone(),
        };
        // Best effort: a cache that cannot be written costs the next start an NVML call.
        if std::fs::create_dir_all(state_dir).is_ok()
            && let Ok(b) = serde_json::to_vec(&c)
        {
            let _ = crate::atomic::write_file(&path, &b);
        }
    }
    facts.profile
}

/// The host for a judge at a container start (the hook, the NRI plugin): the profile file where
/// one is given, else this host's NVML facts reused for `host_facts_ttl_s`.
pub fn at_start(profile: Option<&Path>, config: &Config) -> Result<HostProfile, host::HostError> {
    match profile {
        Some(_) => host_facts(profile, &config.host_root),
        None => Ok(host_facts_cached(
            &config.host_root,
            &config.state_dir,
            std::time::Duration::from_secs(config.host_facts_ttl_s),
        )),
    }
}
