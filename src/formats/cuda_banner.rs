//! The banner every CUDA compiler component embeds — "Cuda compilation tools, release 12.4,
//! V12.4.99", the line `ptxas --version` prints and the same string in `libnvrtc.so` — read from
//! bytes. Finding it in an image's files, within budgets, is
//! [`crate::facts::toolchains`]'s.

use crate::knowledge::cuda::Version;

/// The banner's fixed part; what follows is `<major>.<minor>, V<full version>`.
pub const BANNER: &[u8] = b"Cuda compilation tools, release ";
/// Bytes after the banner that can belong to the version (`12.4, V12.4.131` is 15).
pub const BANNER_TAIL: usize = 48;

/// The CUDA release of the first well-formed banner in `data`: the full `V12.4.99` where it
/// agrees with the `release 12.4` before it, else `12.4`. The format string `release %d.%d,`
/// that also sits in these files is skipped.
pub fn find_release(data: &[u8]) -> Option<Version> {
    let finder = memchr::memmem::Finder::new(BANNER);
    finder
        .find_iter(data)
        .find_map(|i| parse_banner_tail(&data[i + BANNER.len()..]))
}

/// `12.4, V12.4.99` (and what follows) → 12.4.99.
pub fn parse_banner_tail(tail: &[u8]) -> Option<Version> {
    let tail = &tail[..tail.len().min(BANNER_TAIL)];
    let (mm, rest) = tail.split_at(tail.iter().position(|&b| b == b',')?);
    let release = Version::parse(std::str::from_utf8(mm).ok()?)?;
    if release.major() == 0 || mm.iter().filter(|&&b| b == b'.').count() != 1 {
        return None;
    }
    let full = rest
        .strip_prefix(b", V")
        .map(|r| {
            let n = r
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b'.'))
                .unwrap_or(r.len());
            &r[..n]
        })
        .and_then(|r| Version::parse(std::str::from_utf8(r).ok()?))
        .filter(|v| v.major_minor() == release);
    Some(full.unwrap_or(release))
}
