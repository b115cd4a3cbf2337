//! Where an image's blobs are: a directory (an OCI layout) or a tar archive (`docker save`,
//! an OCI archive), read in place. An archive is indexed once (member name → offset and size,
//! seeking over the data) and its members are read straight from the file: a multi-GB archive
//! is never copied.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::facts::image::rootfs;

/// Links followed from one archive member to another (`docker save` links repeated layers).
const MAX_LINKS: usize = 16;

pub enum Store {
    Dir(PathBuf),
    Archive {
        path: PathBuf,
        /// Regular members: offset of the data, size.
        files: HashMap<String, (u64, u64)>,
        /// Symlink members: target as written.
        links: HashMap<String, String>,
    },
}

/// A member name as normal components joined by `/`; `None` for `..` or an empty name. Names
/// come from the image's own manifests, so they are checked like layer entries.
pub fn clean(name: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

/// A link target within the archive: `..` steps up, never above the archive's top.
fn resolve_link(t: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

impl Store {
    pub fn open_archive(path: &Path) -> io::Result<Store> {
        let f = File::open(path)?;
        let mut ar = tar::Archive::new(f);
        // The tar crate's own messages quote whole header blocks; one line says it.
        let not_tar = |_| io::Error::new(io::ErrorKind::InvalidData, "not a tar archive");
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        for e in ar.entries_with_seek().map_err(not_tar)? {
            let e = e.map_err(not_tar)?;
            let Some(name) = std::str::from_utf8(&e.path_bytes()).ok().and_then(clean) else {
                continue;
            };
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    files.insert(name, (e.raw_file_position(), e.size()));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(t) = e.link_name_bytes() {
                        let t = String::from_utf8_lossy(&t).into_owned();
                        // A hard link's target is an archive path; a symlink's is relative to
                        // its own directory. Store both as archive paths.
                        let t = if e.header().entry_type() == tar::EntryType::Link {
                            t
                        } else {
                            match name.rsplit_once('/') {
                                Some((dir, _)) => format!("{dir}/{t}"),
                                None => t,
                            }
                        };
                        links.insert(name, t);
                    }
                }
                _ => {}
            }
        }
        Ok(Store::Archive {
            path: path.to_path_buf(),
            files,
            links,
        })
    }

    /// Read a member: a reader over its bytes and its size.
    pub fn open(&self, name: &str) -> io::Result<(Box<dyn Read>, u64)> {
        let not_found =
            || io::Error::new(io::ErrorKind::NotFound, format!("no {name} in the image"));
        let name = clean(name).ok_or_else(not_found)?;
        match self {
            Store::Dir(dir) => {
                // Inside the layout directory, whatever links it holds; regular files only.
                let (f, m) = rootfs::open_regular(dir, Path::new(&name))?;
                Ok((Box::new(f), m.len()))
            }
            Store::Archive { path, files, links } => {
                let mut name = name;
                for _ in 0..MAX_LINKS {
                    if let Some(&(off, size)) = files.get(&name) {
                        let mut f = File::open(path)?;
                        f.seek(SeekFrom::Start(off))?;
                        return Ok((Box::new(f.take(size)), size));
                    }
                    match links.get(&name).and_then(|t| resolve_link(t)) {
                        Some(t) => name = t,
                        None => return Err(not_found()),
                    }
                }
                Err(io::Error::from_raw_os_error(libc::ELOOP))
            }
        }
    }

    /// A small member (a manifest, a config), whole.
    pub fn read(&self, name: &str, cap: u64) -> io::Result<Vec<u8>> {
        let (r, _) = self.open(name)?;
        crate::input::read_capped_from(r, cap)
    }

    pub fn has(&self, name: &str) -> bool {
        self.open(name).is_ok()
    }
}
