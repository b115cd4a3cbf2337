//! Input: the OCI state on stdin and the bundle it names. Nothing here looks at the host.

pub mod bundle;
pub mod image;
pub mod nri;
pub mod state;

use std::io::Read;
use std::path::Path;

/// Read at most `cap` bytes of a file; a larger file is an error, not a truncated read.
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    read_capped_from(f, cap)
}

pub fn read_capped_from(r: impl Read, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(buf)
}
