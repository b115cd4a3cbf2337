//! Host-state rules (issue 13): failures that come from the host around a GPU container rather
//! than from the image's CUDA — `/dev/char` links under the systemd cgroup driver, a kernel
//! module that does not match the driver libraries, driver libraries baked into the image, stale
//! CDI specs, Fabric Manager missing on an NVSwitch host. Each file is one pure rule over [`crate::facts::host::state::HostState`].

pub mod cdi;
pub mod compute_mode;
pub mod dev_char;
pub mod doctor;
pub mod driver_libs;
pub mod fabric_manager;
pub mod headroom;
pub mod image_libs;
pub mod userns;
pub mod visible;

use crate::facts::container::GpuRequest;
use crate::facts::host::HostProfile;
use crate::facts::host::state::HostState;
use crate::finding::Finding;

/// All host-state rules for one GPU container.
pub fn check(request: &GpuRequest, hs: &HostState, host: &HostProfile) -> Vec<Finding> {
    let mut out = dev_char::check(hs.cgroups_path.as_deref(), &hs.dev_char);
    out.extend(driver_libs::check(&hs.kernel_module, &hs.driver_libs));
    out.extend(image_libs::check(
        request,
        &hs.image_libs,
        &hs.kernel_module,
    ));
    if let Some(c) = &hs.cdi {
        out.extend(cdi::check(c, &hs.kernel_module));
    }
    out.extend(visible::check(request, host));
    out.extend(compute_mode::check(request, host));
    out.extend(userns::check(hs.userns.as_ref()));
    out.extend(fabric_manager::check(&hs.nvswitches, &hs.fabric_manager));
    out
}

#[cfg(test)]
pub(crate) mod fixture {
    //! Fixture hosts for the rule tests: a temp dir laid out like `/`.
    use std::path::{Path, PathBuf};

    pub struct Host {
        pub dir: tempfile::TempDir,
    }

    impl Host {
        pub fn new() -> Host {
            let h = Host {
                dir: tempfile::tempdir().unwrap(),
            };
            std::fs::create_dir_all(h.root().join("dev/char")).unwrap();
            h
        }
        pub fn root(&self) -> &Path {
            self.dir.path()
        }
        pub fn path(&self, p: &str) -> PathBuf {
            self.root().join(p.trim_start_matches('/'))
        }
        pub fn write(&self, p: &str, body: &str) -> &Host {
            let p = self.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
            self
        }
        pub fn link(&self, p: &str, target: &str) -> &Host {
            let p = self.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
            self
        }
        #[allow(unsafe_code)]
        pub fn mknod(&self, p: &str, major: u32, minor: u32) -> &Host {
            let p = self.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
            let dev = libc::makedev(major, minor);
            assert_eq!(
                // SAFETY: a NUL-terminated path that mknod only reads.
                unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, dev) },
                0,
                "mknod {}: the tests need CAP_MKNOD",
                p.display()
            );
            self
        }
        pub fn module(&self, version: &str) -> &Host {
            self.write(
                "/proc/driver/nvidia/version",
                &format!(
                    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {version}  Release Build  (dvs-builder@U16)  Thu Oct  9 2025\nGCC version:  gcc version 12.2.0\n"
                ),
            )
        }
    }
}
