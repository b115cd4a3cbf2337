//! NRI's connection multiplexer: the one socket to the runtime carries two ttrpc connections,
//! the Plugin service (conn 1, the runtime calls us) and the Runtime service (conn 2, we call
//! it). Each frame on the trunk is a big-endian conn id (u32), a big-endian payload length (u32)
//! and the payload: a slice of that connection's byte stream (containerd/nri
//! `pkg/net/multiplex`, v0.12.0).
//!
//! Each logical connection is handed to the ttrpc crate as a plain Unix stream; two threads per
//! connection copy between it and the trunk. When the trunk closes, both streams are shut down, so
//! ttrpc's server and client see the runtime go away.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub const PLUGIN_SERVICE_CONN: u32 = 1;
pub const RUNTIME_SERVICE_CONN: u32 = 2;

/// A ttrpc message is at most a 10-byte header and 4 MiB of data; NRI frames no more per trunk
/// frame, and a longer length is a broken peer, not something to allocate for.
pub const MAX_FRAME: usize = 10 + (4 << 20);

/// Read frames from the trunk and hand each payload to its connection. Returns when the trunk
/// ends or breaks, or a frame is malformed.
pub fn demux(
    trunk: &mut impl Read,
    route: &mut dyn FnMut(u32, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut header = [0u8; 8];
    let mut buf = Vec::new();
    loop {
        match trunk.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let id = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "NRI frame of {len} bytes on connection {id}: more than a ttrpc message can be"
                ),
            ));
        }
        buf.resize(len, 0);
        trunk.read_exact(&mut buf)?;
        route(id, &buf)?;
    }
}

/// Write `data` to the trunk as frames of connection `id`, each whole under the lock so frames of
/// the two connections never interleave.
pub fn write_frames(trunk: &Mutex<UnixStream>, id: u32, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(MAX_FRAME) {
        let mut frame = Vec::with_capacity(8 + chunk.len());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        frame.extend_from_slice(chunk);
        let mut t = trunk
            .lock()
            .map_err(|_| io::Error::other("trunk lock poisoned"))?;
        t.write_all(&frame)?;
    }
    Ok(())
}

/// The running multiplexer: its copy threads end when the trunk or the ttrpc side closes.
pub struct Mux {
    trunk: UnixStream,
    threads: Vec<JoinHandle<()>>,
    ended: std::sync::mpsc::Receiver<()>,
}

impl Mux {
    /// Join `trunk` to the two local streams: bytes the runtime sends on conn 1 go to `plugin`,
    /// on conn 2 to `runtime`; what ttrpc writes to them goes back framed.
    pub fn start(trunk: UnixStream, plugin: UnixStream, runtime: UnixStream) -> io::Result<Mux> {
        let writer = Arc::new(Mutex::new(trunk.try_clone()?));
        let mut threads = Vec::new();
        for (id, local) in [
            (PLUGIN_SERVICE_CONN, &plugin),
            (RUNTIME_SERVICE_CONN, &runtime),
        ] {
            let mut from = local.try_clone()?;
            let to = writer.clone();
            let trunk_end = trunk.try_clone()?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nri-mux-out-{id}"))
                    .spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if write_frames(&to, id, &buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        // ttrpc closed its side: the session is over.
                        let _ = trunk_end.shutdown(std::net::Shutdown::Both);
                    })?,
            );
        }
        let mut reader = trunk.try_clone()?;
        let (mut p, mut r) = (plugin.try_clone()?, runtime.try_clone()?);
        let (end_tx, ended) = std::sync::mpsc::channel();
        threads.push(
            std::thread::Builder::new()
                .name("nri-mux-in".into())
                .spawn(move || {
                    let _ = demux(&mut reader, &mut |id, data| match id {
                        PLUGIN_SERVICE_CONN => p.write_all(data),
                        RUNTIME_SERVICE_CONN => r.write_all(data),
                        // Connections NRI may add later are not ours to answer.
                        _ => Ok(()),
                    });
                    // The runtime went away (or broke the framing): both ttrpc ends see EOF.
                    let _ = p.shutdown(std::net::Shutdown::Both);
                    let _ = r.shutdown(std::net::Shutdown::Both);
                    let _ = end_tx.send(());
                })?,
        );
        Ok(Mux {
            trunk,
            threads,
            ended,
        })
    }

    /// Block until the runtime closes the trunk (or breaks the framing).
    pub fn wait(&self) {
        let _ = self.ended.recv();
    }

    /// Close the trunk and wait for the copy threads.
    pub fn close(self) {
        let _ = self.trunk.shutdown(std::net::Shutdown::Both);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u32, data: &[u8]) -> Vec<u8> {
        let mut v = id.to_be_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn demux_routes_frames_by_connection_and_ends_at_eof() {
        type Case = (&'static str, Vec<u8>, Vec<(u32, Vec<u8>)>, bool);
        let cases: Vec<Case> = vec![
            ("empty trunk", vec![], vec![], true),
            (
                "two connections interleaved",
                [frame(1, b"ab"), frame(2, b"xyz"), frame(1, b"c")].concat(),
                vec![
                    (1, b"ab".to_vec()),
                    (2, b"xyz".to_vec()),
                    (1, b"c".to_vec()),
                ],
                true,
            ),
            ("empty payload", frame(2, b""), vec![(2, vec![])], true),
            (
                "cut inside a payload",
                frame(1, b"abcdef")[..10].to_vec(),
                vec![],
                false,
            ),
            (
                "length beyond a ttrpc message",
                [7u32.to_be_bytes(), (MAX_FRAME as u32 + 1).to_be_bytes()].concat(),
                vec![],
                false,
            ),
        ];
        for (name, bytes, want, ok) in cases {
            let mut got = Vec::new();
            let r = demux(&mut bytes.as_slice(), &mut |id, d| {
                got.push((id, d.to_vec()));
                Ok(())
            });
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn write_frames_round_trips_through_demux() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let a = Mutex::new(a);
        write_frames(&a, 2, b"hello").unwrap();
        write_frames(&a, 1, b"w").unwrap();
        drop(a);
        let mut got = Vec::new();
        demux(&mut b, &mut |id, d| {
            got.push((id, d.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![(2, b"hello".to_vec()), (1, b"w".to_vec())]);
    }
}
