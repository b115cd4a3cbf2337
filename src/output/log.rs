//! One log line per GPU container start: syslog where the host has one (`/dev/log`, or the
//! config's `log_socket`), stderr otherwise.
//!
//! Not `syslog(3)`: it blocks in `send` when the log daemon stops reading (a stalled journald), and
//! a hook waiting there until its deadline would exit as `on_timeout` says instead of with its
//! verdict (issue 22). The line is sent on a non-blocking socket; a full or absent daemon gets
//! it on stderr instead.

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;

/// `LOG_DAEMON | LOG_INFO`, as `openlog(…, LOG_DAEMON)` + `syslog(LOG_INFO, …)` sent it.
const PRIORITY: u8 = (3 << 3) | 6;

pub fn line(host_root: &Path, socket: &Path, msg: &str) {
    if host_root == Path::new("/") && socket.exists() && send(socket, msg).is_ok() {
        return;
    }
    // Written, not `eprintln!`: that panics where stderr is a pipe nobody reads.
    let _ = writeln!(std::io::stderr(), "{}", super::printable(msg));
}

/// Send one RFC 3164 line without a timestamp (journald and rsyslog stamp it on receipt), never
/// waiting: a datagram socket first, a stream socket where that is what the daemon listens on.
fn send(socket: &Path, msg: &str) -> std::io::Result<()> {
    let clean: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let packet = format!(
        "<{PRIORITY}>cuda-preflight[{}]: {clean}",
        std::process::id()
    );
    let d = UnixDatagram::unbound()?;
    d.set_nonblocking(true)?;
    match d.connect(socket) {
        Ok(()) => d.send(packet.as_bytes()).map(|_| ()),
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            // A stream socket: connect on a Unix socket does not wait for accept, and the write
            // must not wait for a reader either.
            let mut s = UnixStream::connect(socket)?;
            s.set_nonblocking(true)?;
            let mut framed = packet.into_bytes();
            framed.push(b'\n');
            let n = s.write(&framed)?;
            if n == framed.len() {
                Ok(())
            } else {
                Err(std::io::ErrorKind::WouldBlock.into())
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_that_stopped_reading_does_not_block_the_send() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("log.sock");
        let _daemon = UnixDatagram::bind(&path).unwrap();
        // Fill the daemon's queue as a stalled journald would leave it.
        let filler = UnixDatagram::unbound().unwrap();
        filler.set_nonblocking(true).unwrap();
        filler.connect(&path).unwrap();
        while filler.send(&[0u8; 1024]).is_ok() {}
        let t = std::time::Instant::now();
        assert!(send(&path, "cuda-preflight: container=x verdict=block").is_err());
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn a_reading_daemon_gets_the_line_without_control_characters() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("log.sock");
        let daemon = UnixDatagram::bind(&path).unwrap();
        send(&path, "container=a\nforged=1\x1b[31m").unwrap();
        let mut buf = [0u8; 256];
        let n = daemon.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(got.starts_with("<30>cuda-preflight["), "{got}");
        assert!(got.ends_with("container=a forged=1 [31m"), "{got}");
    }
}
