//! Rules: pure functions from facts to findings. No I/O here.

pub mod container;
pub mod gpu_code;
pub mod host;
pub mod library_loading;
pub mod probe;
pub mod start_path;
pub mod toolchains;
pub mod versions;

/// Every finding id the rules can produce, by rule file. Ids are a stable interface: people grep
/// logs and write alerts on them.
pub fn finding_ids() -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = Vec::new();
    ids.extend_from_slice(container::devices::FINDING_IDS);
    ids.extend_from_slice(container::cuda_env::FINDING_IDS);
    ids.extend_from_slice(probe::FINDING_IDS);
    ids.extend_from_slice(gpu_code::FINDING_IDS);
    ids.extend_from_slice(library_loading::cuda_libraries::FINDING_IDS);
    ids.extend_from_slice(versions::requirements::FINDING_IDS);
    ids.extend_from_slice(start_path::FINDING_IDS);
    ids.extend_from_slice(versions::driver_compat::FINDING_IDS);
    ids.extend_from_slice(host::FINDING_IDS);
    ids.extend_from_slice(host::headroom::FINDING_IDS);
    ids.extend_from_slice(toolchains::FINDING_IDS);
    ids.extend_from_slice(crate::verdict::FINDING_IDS);
    ids.extend_from_slice(crate::input::image::FINDING_IDS);
    ids
}

/// Test helper: the ids of `findings`, each asserted to be one the rule file registers.
#[cfg(test)]
pub(crate) fn registered_ids<'a>(
    findings: &'a [crate::finding::Finding],
    registered: &[&str],
) -> Vec<&'a str> {
    for f in findings {
        assert!(
            registered.contains(&f.id.as_str()),
            "{} not in FINDING_IDS",
            f.id
        );
    }
    findings.iter().map(|f| f.id.as_str()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finding_ids_are_unique_and_kebab_case() {
        let ids = super::finding_ids();
        for (i, a) in ids.iter().enumerate() {
            assert!(
                a.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{a}"
            );
            assert!(!ids[i + 1..].contains(a), "{a} twice");
        }
    }
}
