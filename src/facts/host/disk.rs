//! Free space on a filesystem, by `statvfs(2)`: what an unprivileged writer can still use
//! (`f_bavail`), as `df` shows it in its "Avail" column.

use std::ffi::CString;
use std::path::Path;

use serde::Serialize;

/// Space on the filesystem holding a path, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Space {
    pub avail_mib: u64,
    pub total_mib: u64,
}

/// `statvfs(path)`. Errors are the OS's (missing path: `NotFound`).
#[allow(unsafe_code)]
pub fn space(path: &Path) -> std::io::Result<Space> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has a NUL"))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and an out-parameter the call fills.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    } as u64;
    Ok(Space {
        avail_mib: (s.f_bavail as u64).saturating_mul(frsize) >> 20,
        total_mib: (s.f_blocks as u64).saturating_mul(frsize) >> 20,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_of_a_real_directory_and_a_missing_one() {
        let d = tempfile::tempdir().unwrap();
        let s = space(d.path()).unwrap();
        assert!(s.total_mib > 0 && s.avail_mib <= s.total_mib, "{s:?}");
        let e = space(&d.path().join("nope")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
