//! One log line per GPU container start: syslog where the host has one (`/dev/log`), stderr
//! otherwise.

use std::ffi::CString;
use std::path::Path;

pub fn line(host_root: &Path, msg: &str) {
    if host_root == Path::new("/") && Path::new("/dev/log").exists() {
        let ident = c"cuda-preflight";
        let fmt = c"%s";
        if let Ok(m) = CString::new(msg.replace('\0', " ")) {
            // SAFETY: static C strings and a NUL-terminated message; syslog copies what it needs.
            unsafe {
                libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
                libc::syslog(libc::LOG_INFO, fmt.as_ptr(), m.as_ptr());
                libc::closelog();
            }
            return;
        }
    }
    eprintln!("{msg}");
}
