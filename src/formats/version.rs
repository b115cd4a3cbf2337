//! `major.minor` versions read once where a fact is gathered or a rule starts, and compared as
//! numbers from then on: a CUDA release (`13.0`, the driver's `cuda_driver_version`) and a GPU's
//! compute capability (`9.0`, or as nvcc spells it, `sm_90`). Longer versions (driver `580.95.05`,
//! a toolkit's `12.4.99`) are [`crate::knowledge::cuda::Version`].
//!
//! Tuple structs `(major, minor)`: ordered as the tuple is, and `.0`/`.1` read as before.

use std::fmt;
use std::str::FromStr;

/// Why a version did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a major.minor version")]
pub struct VersionError(pub String);

fn major_minor(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A CUDA release `major.minor` (`12.4`; a third part is not read: `12.4.1` is an error, as the
/// rules have always treated it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CudaVersion(pub u32, pub u32);

impl FromStr for CudaVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        major_minor(s)
            .map(|(a, b)| CudaVersion(a, b))
            .ok_or_else(|| VersionError(s.to_string()))
    }
}

impl fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl From<CudaVersion> for (u32, u32) {
    fn from(v: CudaVersion) -> (u32, u32) {
        (v.0, v.1)
    }
}

/// A GPU's compute capability `major.minor`: `9.0`, or `sm_90`/`90` as nvcc names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComputeCapability(pub u32, pub u32);

impl FromStr for ComputeCapability {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        major_minor(s)
            .or_else(|| crate::formats::fatbin::Arch::parse(s).map(|a| (a.major, a.minor)))
            .map(|(a, b)| ComputeCapability(a, b))
            .ok_or_else(|| VersionError(s.to_string()))
    }
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl From<ComputeCapability> for (u32, u32) {
    fn from(v: ComputeCapability) -> (u32, u32) {
        (v.0, v.1)
    }
}

/// A value parsed from a fact's string the first time a rule asks for it, then kept: the JSON
/// keeps its strings (a malformed one stays a string, and each rule says what it says of it
/// today), while rules read the typed value. Keyed by the text it was parsed from, so a fact
/// changed after the first read is parsed afresh, never answered stale. Not part of the fact's
/// identity: equal whatever it holds, empty when cloned, and skipped by serde.
pub struct ParsedOnce<T>(std::sync::OnceLock<(String, T)>);

impl<T> Default for ParsedOnce<T> {
    fn default() -> Self {
        ParsedOnce(std::sync::OnceLock::new())
    }
}

impl<T> Clone for ParsedOnce<T> {
    fn clone(&self) -> Self {
        ParsedOnce::default()
    }
}

impl<T> PartialEq for ParsedOnce<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> fmt::Debug for ParsedOnce<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ParsedOnce")
    }
}

impl<T: Clone> ParsedOnce<T> {
    /// The value of `text` as `parse` reads it: parsed on the first call, kept after.
    pub fn get(&self, text: &str, parse: impl FnOnce(&str) -> T) -> T {
        match self.0.get() {
            Some((t, v)) if t == text => v.clone(),
            Some(_) => parse(text),
            None => {
                let v = parse(text);
                let _ = self.0.set((text.to_string(), v.clone()));
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_the_rules_always_did() {
        let cuda: [(&str, Option<CudaVersion>); 6] = [
            ("13.0", Some(CudaVersion(13, 0))),
            (" 12.4 ", Some(CudaVersion(12, 4))),
            ("12.4.1", None),
            ("12", None),
            ("", None),
            ("x.1", None),
        ];
        for (s, want) in cuda {
            assert_eq!(s.parse::<CudaVersion>().ok(), want, "{s:?}");
        }
        let cc: [(&str, Option<ComputeCapability>); 5] = [
            ("9.0", Some(ComputeCapability(9, 0))),
            ("sm_90", Some(ComputeCapability(9, 0))),
            ("120", Some(ComputeCapability(12, 0))),
            ("8.6", Some(ComputeCapability(8, 6))),
            ("GPU", None),
        ];
        for (s, want) in cc {
            assert_eq!(s.parse::<ComputeCapability>().ok(), want, "{s:?}");
        }
        assert!(CudaVersion(12, 10) > CudaVersion(12, 9));
        assert_eq!(ComputeCapability(10, 0).to_string(), "10.0");
        assert_eq!(CudaVersion(13, 1).to_string(), "13.1");
    }
}
