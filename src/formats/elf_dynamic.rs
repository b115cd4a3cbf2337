//! What the dynamic loader reads of an ELF file before it maps it: `DT_NEEDED`, `DT_SONAME`,
//! `DT_RPATH`/`DT_RUNPATH`, `DF_1_NODEFLIB`, and the symbol-version tables (`DT_VERNEED`, the
//! versions it requires of each library; `DT_VERDEF`, the versions it defines).
//!
//! Read the way `ld.so` reads them, through the program headers (`PT_DYNAMIC`, addresses mapped
//! to file offsets through `PT_LOAD`), not the section table a stripped file may lack. Only
//! 64-bit little-endian files: `ld.so` on x86-64 and aarch64 skips any other class. Every read
//! is a bounded `pread`, every count and offset is checked against the file, and chains
//! (`vn_next`, `vd_next`) are followed a bounded number of times, so a hostile file costs a few
//! reads and an error, never a loop or an allocation of its choosing.

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use crate::formats::bytes::{le_u16, le_u32, le_u64};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DT_VERDEF: u64 = 0x6fff_fffc;
const DT_VERDEFNUM: u64 = 0x6fff_fffd;
const DT_VERNEED: u64 = 0x6fff_fffe;
const DT_VERNEEDNUM: u64 = 0x6fff_ffff;
const DF_1_NODEFLIB: u64 = 0x800;
const VER_FLG_BASE: u16 = 0x1;
const VER_FLG_WEAK: u16 = 0x2;

/// Program headers of real files number a dozen; the loader itself refuses absurd counts.
const MAX_PHNUM: u64 = 1024;
/// `.dynamic` of libtorch_cuda.so is ~1 KB; 64 KiB is 4096 entries.
const MAX_DYNAMIC_BYTES: u64 = 64 << 10;
/// One string (a library name, a search path list, a version name).
const MAX_STRING: u64 = 4096;
const STRING_WINDOW: u64 = 4096;
/// Version tables: `.gnu.version_r` of libstdc++ is ~300 bytes, `.gnu.version_d` ~4 KB.
const MAX_VERSION_BYTES: u64 = 256 << 10;
const MAX_VERSION_ENTRIES: usize = 4096;
const MAX_NEEDED: usize = 4096;
/// What one file's strings may keep in memory (each string counted with [`STRING_OVERHEAD`]):
/// libtorch_cuda.so keeps ~2 KB. Reads were budgeted but kept strings were not: 301 libraries of
/// 4,000 `DT_NEEDED` naming one 4 KB string passed 2 GiB (issue 22).
pub const MAX_KEPT_PER_FILE: u64 = 64 << 10;
/// A `String` in a `Vec` costs its 24-byte header and allocator rounding beside its bytes.
const STRING_OVERHEAD: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum DynamicError {
    #[error("read failed: {0}")]
    Io(std::io::Error),
    #[error("malformed ELF: {0}")]
    Corrupt(&'static str),
    #[error("more than {MAX_KEPT_PER_FILE} bytes of names")]
    Budget,
}

// By hand, not `#[from]`: the text carries the cause (crate docs, "Errors").
impl From<std::io::Error> for DynamicError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Versions an object requires of one library (`Elf64_Verneed` and its `Elf64_Vernaux`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionNeed {
    /// The library, as `DT_NEEDED` names it (`libstdc++.so.6`).
    pub file: String,
    /// `(version, weak)`: a weak requirement missing is not an error to `ld.so`.
    pub versions: Vec<(String, bool)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dynamic {
    pub soname: Option<String>,
    pub needed: Vec<String>,
    /// `DT_RPATH`, split at `:`, tokens (`$ORIGIN`) not yet expanded.
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    /// `-z nodeflib`: the cache and default directories are not searched for its dependencies.
    pub nodeflib: bool,
    pub verneed: Vec<VersionNeed>,
    /// Version names defined (the file's own base entry left out).
    pub verdef: Vec<String>,
    /// Whether it has `DT_VERDEF` at all: glibc only warns ("no version information
    /// available") when an unversioned library is asked for versions.
    pub versioned: bool,
    /// What was not kept because the file's names passed [`MAX_KEPT_PER_FILE`]; the lists above
    /// are then a prefix of the file's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_out: Option<String>,
}

impl Dynamic {
    /// Bytes this keeps in memory, as the budgets count them.
    pub fn kept_bytes(&self) -> u64 {
        let one = |s: &String| s.len() as u64 + STRING_OVERHEAD;
        self.needed.iter().map(one).sum::<u64>()
            + self
                .rpath
                .iter()
                .chain(&self.runpath)
                .chain(&self.verdef)
                .map(one)
                .sum::<u64>()
            + self
                .verneed
                .iter()
                .map(|v| one(&v.file) + v.versions.iter().map(|(s, _)| one(s)).sum::<u64>())
                .sum::<u64>()
    }
}

/// Read `file`'s dynamic section. `Ok(None)`: not a 64-bit little-endian ELF object, or one
/// without a dynamic section (static, a linker script named `.so`): nothing the loader links.
/// `bytes` counts what was read (the scan's byte budget).
pub fn read(file: &File, size: u64, bytes: &Cell<u64>) -> Result<Option<Dynamic>, DynamicError> {
    read_parts(file, size, bytes, true)
}

/// Only `DT_NEEDED` (and `DF_1_NODEFLIB`): what the image walk needs to tell whether a library
/// uses CUDA, in four reads instead of up to seven. The few that do are read in full later.
pub fn read_needed(
    file: &File,
    size: u64,
    bytes: &Cell<u64>,
) -> Result<Option<Dynamic>, DynamicError> {
    read_parts(file, size, bytes, false)
}

fn read_parts(
    file: &File,
    size: u64,
    bytes: &Cell<u64>,
    full: bool,
) -> Result<Option<Dynamic>, DynamicError> {
    let r = Reader { file, size, bytes };
    if size < 64 {
        return Ok(None);
    }
    let eh = r.read(0, 64)?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return Ok(None);
    }
    let e_type = le_u16(&eh, 16);
    if e_type != 2 && e_type != 3 {
        return Ok(None);
    }
    let phoff = le_u64(&eh, 0x20);
    let phentsize = le_u16(&eh, 0x36) as u64;
    let phnum = le_u16(&eh, 0x38) as u64;
    if phnum == 0 {
        return Ok(None);
    }
    if phentsize != 56 || phnum > MAX_PHNUM {
        return Err(DynamicError::Corrupt("program header table"));
    }
    let ph = r.read(phoff, phnum * 56)?;
    let mut loads: Vec<(u64, u64, u64)> = Vec::new(); // (vaddr, offset, filesz)
    let mut dynamic: Option<(u64, u64)> = None;
    for p in ph.chunks_exact(56) {
        let kind = le_u32(p, 0);
        let (offset, vaddr, filesz) = (le_u64(p, 8), le_u64(p, 16), le_u64(p, 32));
        match kind {
            PT_LOAD => loads.push((vaddr, offset, filesz)),
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    let Some((dyn_off, dyn_size)) = dynamic else {
        return Ok(None);
    };
    if dyn_size > MAX_DYNAMIC_BYTES {
        return Err(DynamicError::Corrupt("dynamic section too large"));
    }
    let dynbuf = r.read(dyn_off, dyn_size - dyn_size % 16)?;
    let to_offset = |addr: u64| -> Option<u64> {
        loads.iter().find_map(|&(vaddr, offset, filesz)| {
            (addr >= vaddr && addr - vaddr < filesz)
                .then(|| offset.checked_add(addr - vaddr))
                .flatten()
        })
    };
    let mut out = Dynamic::default();
    let (mut strtab, mut strsz) = (None, None);
    let (mut needed, mut soname, mut rpath, mut runpath) = (Vec::new(), None, None, None);
    // The loader loads a name once; entries naming the same string are one (a hostile file
    // repeated one 4 KB name 4,000 times).
    let mut needed_seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let (mut verneed, mut verneednum, mut verdef, mut verdefnum) = (None, 0u64, None, 0u64);
    for e in dynbuf.chunks_exact(16) {
        let (tag, val) = (le_u64(e, 0), le_u64(e, 8));
        match tag {
            DT_NULL => break,
            DT_NEEDED if needed.len() < MAX_NEEDED && needed_seen.insert(val) => needed.push(val),
            DT_NEEDED => {}
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            DT_SONAME => soname = Some(val),
            DT_RPATH => rpath = Some(val),
            DT_RUNPATH => runpath = Some(val),
            DT_FLAGS_1 => out.nodeflib = val & DF_1_NODEFLIB != 0,
            DT_VERNEED => verneed = Some(val),
            DT_VERNEEDNUM => verneednum = val,
            DT_VERDEF => verdef = Some(val),
            DT_VERDEFNUM => verdefnum = val,
            _ => {}
        }
    }
    let strtab = match strtab {
        Some(a) => to_offset(a).ok_or(DynamicError::Corrupt("DT_STRTAB outside the file"))?,
        None if needed.is_empty() && soname.is_none() => return Ok(Some(out)),
        None => return Err(DynamicError::Corrupt("no DT_STRTAB")),
    };
    let strsz = strsz.unwrap_or(0).min(size.saturating_sub(strtab));
    let strings = Strings {
        r: &r,
        base: strtab,
        len: strsz,
        window: Default::default(),
        kept: Cell::new(0),
    };
    for (i, off) in needed.iter().enumerate() {
        match strings.get(*off) {
            Ok(n) => out.needed.push(n),
            Err(DynamicError::Budget) => {
                out.left_out = Some(format!(
                    "DT_NEEDED: {} of {} names not kept (over {} KiB of names)",
                    needed.len() - i,
                    needed.len(),
                    MAX_KEPT_PER_FILE >> 10
                ));
                return Ok(Some(out));
            }
            Err(e) => return Err(e),
        }
    }
    if !full {
        return Ok(Some(out));
    }
    out.soname = soname.map(|o| strings.get(o)).transpose()?;
    let split = |s: String| -> Vec<String> {
        s.split(':')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    };
    out.rpath = rpath
        .map(|o| strings.get(o))
        .transpose()?
        .map(split)
        .unwrap_or_default();
    out.runpath = runpath
        .map(|o| strings.get(o))
        .transpose()?
        .map(split)
        .unwrap_or_default();
    let over = |what: &str| {
        format!(
            "{what}: not kept (the file's names passed {} KiB)",
            MAX_KEPT_PER_FILE >> 10
        )
    };
    if let Some(a) = verneed {
        let off = to_offset(a).ok_or(DynamicError::Corrupt("DT_VERNEED outside the file"))?;
        match growing(&r, off, |buf| read_verneed(buf, &strings, verneednum)) {
            Ok(v) => out.verneed = v,
            Err(DynamicError::Budget) => out.left_out = Some(over("version requirements")),
            Err(e) => return Err(e),
        }
    }
    out.versioned = verdef.is_some();
    if let Some(a) = verdef {
        let off = to_offset(a).ok_or(DynamicError::Corrupt("DT_VERDEF outside the file"))?;
        match growing(&r, off, |buf| read_verdef(buf, &strings, verdefnum)) {
            Ok(v) => out.verdef = v,
            Err(DynamicError::Budget) => out.left_out = Some(over("version definitions")),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(out))
}

/// The version tables have no size in the dynamic section, only an entry count: read a small
/// window first (they are a few hundred bytes to a few KB) and a larger one only when a chain
/// runs past it, up to [`MAX_VERSION_BYTES`].
fn growing<T>(
    r: &Reader,
    off: u64,
    parse: impl Fn(&[u8]) -> Result<T, DynamicError>,
) -> Result<T, DynamicError> {
    let mut len = 4096u64;
    loop {
        let want = r.size.saturating_sub(off).min(len);
        let buf = r.read(off, want)?;
        match parse(&buf) {
            Err(DynamicError::Corrupt(_)) if want == len && len < MAX_VERSION_BYTES => len *= 8,
            other => return other,
        }
    }
}

fn read_verneed(
    buf: &[u8],
    strings: &Strings,
    count: u64,
) -> Result<Vec<VersionNeed>, DynamicError> {
    let bad = || DynamicError::Corrupt("version requirements run past their table");
    let mut out = Vec::new();
    let (mut at, mut entries) = (0usize, 0usize);
    for _ in 0..count.min(MAX_VERSION_ENTRIES as u64) {
        let vn = buf.get(at..at + 16).ok_or_else(bad)?;
        let (cnt, file, aux, next) = (le_u16(vn, 2), le_u32(vn, 4), le_u32(vn, 8), le_u32(vn, 12));
        let mut need = VersionNeed {
            file: strings.get(file as u64)?,
            versions: Vec::new(),
        };
        let mut a = at.checked_add(aux as usize).ok_or_else(bad)?;
        for _ in 0..cnt {
            entries += 1;
            if entries > MAX_VERSION_ENTRIES {
                return Err(DynamicError::Corrupt("too many version requirements"));
            }
            let vna = buf.get(a..a + 16).ok_or_else(bad)?;
            let (flags, name, next) = (le_u16(vna, 4), le_u32(vna, 8), le_u32(vna, 12));
            need.versions
                .push((strings.get(name as u64)?, flags & VER_FLG_WEAK != 0));
            if next == 0 {
                break;
            }
            a = a.checked_add(next as usize).ok_or_else(bad)?;
        }
        out.push(need);
        if next == 0 {
            break;
        }
        at = at.checked_add(next as usize).ok_or_else(bad)?;
    }
    Ok(out)
}

fn read_verdef(buf: &[u8], strings: &Strings, count: u64) -> Result<Vec<String>, DynamicError> {
    let bad = || DynamicError::Corrupt("version definitions run past their table");
    let mut out = Vec::new();
    let mut at = 0usize;
    for _ in 0..count.min(MAX_VERSION_ENTRIES as u64) {
        let vd = buf.get(at..at + 20).ok_or_else(bad)?;
        let (flags, cnt, aux, next) =
            (le_u16(vd, 2), le_u16(vd, 6), le_u32(vd, 12), le_u32(vd, 16));
        // The first Verdaux names the version; later ones name its parents.
        if cnt > 0 && flags & VER_FLG_BASE == 0 {
            let a = at.checked_add(aux as usize).ok_or_else(bad)?;
            let vda = buf.get(a..a + 8).ok_or_else(bad)?;
            out.push(strings.get(le_u32(vda, 0) as u64)?);
        }
        if next == 0 {
            break;
        }
        at = at.checked_add(next as usize).ok_or_else(bad)?;
    }
    Ok(out)
}

struct Reader<'a> {
    file: &'a File,
    size: u64,
    bytes: &'a Cell<u64>,
}

impl Reader<'_> {
    fn read(&self, off: u64, len: u64) -> Result<Vec<u8>, DynamicError> {
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.size)
            .ok_or(DynamicError::Corrupt(
                "a table runs past the end of the file",
            ))?;
        let mut buf = vec![0u8; (end - off) as usize];
        self.file.read_exact_at(&mut buf, off)?;
        self.bytes.set(self.bytes.get() + len);
        Ok(buf)
    }
}

/// The dynamic string table, read in windows: libtorch's is megabytes of C++ symbol names,
/// while the names the loader needs sit together near its start.
struct Strings<'a> {
    r: &'a Reader<'a>,
    base: u64,
    len: u64,
    window: std::cell::RefCell<(u64, Vec<u8>)>,
    /// Bytes of strings handed out, against [`MAX_KEPT_PER_FILE`].
    kept: Cell<u64>,
}

impl Strings<'_> {
    fn get(&self, off: u64) -> Result<String, DynamicError> {
        let s = self.get_unbudgeted(off)?;
        let kept = self.kept.get() + s.len() as u64 + STRING_OVERHEAD;
        if kept > MAX_KEPT_PER_FILE {
            return Err(DynamicError::Budget);
        }
        self.kept.set(kept);
        Ok(s)
    }

    fn get_unbudgeted(&self, off: u64) -> Result<String, DynamicError> {
        if off >= self.len {
            return Err(DynamicError::Corrupt("string offset outside DT_STRTAB"));
        }
        let from_window = |w: &(u64, Vec<u8>)| -> Option<String> {
            let rel = off.checked_sub(w.0)? as usize;
            let rest = w.1.get(rel..)?;
            let n = rest.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&rest[..n]).into_owned())
        };
        if let Some(s) = from_window(&self.window.borrow()) {
            return Ok(s);
        }
        let len = (self.len - off).min(STRING_WINDOW.max(MAX_STRING));
        let buf = self.r.read(self.base + off, len)?;
        let w = (off, buf);
        let s = from_window(&w).ok_or(DynamicError::Corrupt("unterminated string"))?;
        *self.window.borrow_mut() = w;
        Ok(s)
    }
}

/// Parse an in-memory file (fuzzing, tests).
pub fn read_bytes(data: &[u8]) -> Result<Option<Dynamic>, DynamicError> {
    let f = file_in_memory(data)?;
    read(&f, data.len() as u64, &Cell::new(0))
}

/// An anonymous memory-backed file holding `data` (memfd: no disk, no name to race on).
#[allow(unsafe_code)]
fn file_in_memory(data: &[u8]) -> std::io::Result<File> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: a NUL-terminated name and valid flags; the fd returned is owned below.
    let fd = unsafe { libc::memfd_create(c"elf-dynamic".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(data)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared object with only program headers and a dynamic section naming `needed` (offsets
    /// into `strtab`).
    fn with_needed(strtab: &[u8], needed: &[u32]) -> Vec<u8> {
        let dyn_off = 64 + 2 * 56;
        let dyn_len = (needed.len() + 3) * 16;
        let str_off = dyn_off + dyn_len;
        let total = (str_off + strtab.len()) as u64;
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        (f[4], f[5], f[6]) = (2, 1, 1);
        f[16] = 3;
        f[18] = 62;
        f[0x20] = 64;
        f[0x36] = 56;
        f[0x38] = 2;
        for (kind, off, len) in [
            (PT_LOAD, 0, total),
            (PT_DYNAMIC, dyn_off as u64, dyn_len as u64),
        ] {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            for at in [8, 16, 24] {
                p[at..at + 8].copy_from_slice(&off.to_le_bytes());
            }
            p[32..40].copy_from_slice(&len.to_le_bytes());
            p[40..48].copy_from_slice(&len.to_le_bytes());
            f.extend(p);
        }
        let entries = needed.iter().map(|n| (DT_NEEDED, *n as u64)).chain([
            (DT_STRTAB, str_off as u64),
            (DT_STRSZ, strtab.len() as u64),
            (DT_NULL, 0),
        ]);
        for (t, v) in entries {
            f.extend_from_slice(&t.to_le_bytes());
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(strtab);
        f
    }

    #[test]
    fn repeated_needed_names_are_kept_once_and_kept_bytes_are_bounded() {
        // One 4 KB name 4,000 times (issue 22): kept once.
        let mut strtab = b"\0libcudart.so.12\0".to_vec();
        let big = strtab.len() as u32;
        strtab.extend(vec![b'n'; 4000]);
        strtab.push(0);
        let mut needed = vec![1u32];
        needed.extend(std::iter::repeat_n(big, 3999));
        let d = read_bytes(&with_needed(&strtab, &needed)).unwrap().unwrap();
        assert_eq!(d.needed.len(), 2);
        assert!(d.left_out.is_none());
        // 4,000 distinct names of ~1 KB: kept up to the per-file bound, the rest said.
        let mut strtab = vec![0u8];
        let mut needed = Vec::new();
        for i in 0..4000 {
            needed.push(strtab.len() as u32);
            strtab.extend(format!("lib{i}{}", "x".repeat(1000)).bytes());
            strtab.push(0);
        }
        let d = read_bytes(&with_needed(&strtab, &needed)).unwrap().unwrap();
        assert!(d.kept_bytes() <= MAX_KEPT_PER_FILE, "{}", d.kept_bytes());
        assert!(
            d.needed.len() > 10 && d.needed.len() < 100,
            "{}",
            d.needed.len()
        );
        let why = d.left_out.expect("what was not kept is said");
        assert!(why.contains("names not kept"), "{why}");
    }

    fn own_exe() -> Dynamic {
        let exe = std::env::current_exe().unwrap();
        let f = File::open(&exe).unwrap();
        let size = f.metadata().unwrap().len();
        read(&f, size, &Cell::new(0))
            .unwrap()
            .expect("a dynamic test binary")
    }

    #[test]
    fn reads_this_test_binary_like_readelf() {
        let d = own_exe();
        assert!(d.needed.iter().any(|n| n == "libc.so.6"), "{:?}", d.needed);
        let libc = d.verneed.iter().find(|v| v.file == "libc.so.6").unwrap();
        // An executable defines no versions.
        assert!(!d.versioned && d.verdef.is_empty());
        assert!(libc.versions.iter().any(|(v, _)| v.starts_with("GLIBC_2.")));
    }

    #[test]
    fn reads_libc_version_definitions() {
        for p in ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6"] {
            let Ok(f) = File::open(p) else { continue };
            let size = f.metadata().unwrap().len();
            let d = read(&f, size, &Cell::new(0)).unwrap().unwrap();
            assert_eq!(d.soname.as_deref(), Some("libc.so.6"));
            assert!(
                d.verdef.iter().any(|v| v == "GLIBC_2.2.5"),
                "{:?}",
                d.verdef
            );
            assert!(
                !d.verdef.iter().any(|v| v == "libc.so.6"),
                "base entry left out"
            );
            return;
        }
        panic!("no libc.so.6 on this machine");
    }

    #[test]
    fn rejects_without_panicking() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[16] = 3;
        // No program headers: nothing to link.
        assert!(read_bytes(&elf).unwrap().is_none());
        // A program header table past the end of the file.
        elf[0x20] = 0xff;
        elf[0x36] = 56;
        elf[0x38] = 3;
        assert!(read_bytes(&elf).is_err());
        // Not ELF, 32-bit, big-endian: not for this loader.
        assert!(read_bytes(b"INPUT(libc.so.6)\n").unwrap().is_none());
        let mut e32 = elf.clone();
        e32[4] = 1;
        assert!(read_bytes(&e32).unwrap().is_none());
    }

    #[test]
    fn needed_only_reads_less_and_agrees_on_needed() {
        let exe = std::env::current_exe().unwrap();
        let f = File::open(&exe).unwrap();
        let size = f.metadata().unwrap().len();
        let (a, b) = (Cell::new(0), Cell::new(0));
        let full = read(&f, size, &a).unwrap().unwrap();
        let needed = read_needed(&f, size, &b).unwrap().unwrap();
        assert_eq!(full.needed, needed.needed);
        assert!(
            needed.verneed.is_empty() && b.get() < a.get(),
            "{} vs {}",
            b.get(),
            a.get()
        );
    }

    #[test]
    fn truncations_of_a_real_binary_never_panic() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let whole = read_bytes(&exe).unwrap().unwrap();
        assert!(!whole.needed.is_empty());
        for cut in [64usize, 100, 500, 1000, 4096, 20_000] {
            let _ = read_bytes(&exe[..cut.min(exe.len())]);
        }
    }
}
