//! `/etc/ld.so.cache` in glibc's format ("glibc-ld.so.cache1.1", alone or after the old
//! "ld.so-1.7.0" part, `elf/cache.c`, `sysdeps/generic/dl-cache.h`): the name → path entries the
//! container's loader looks up after `LD_LIBRARY_PATH`. A pure reader of bytes: the file is read
//! by [`crate::facts::library_loading::loader`].

use serde::{Deserialize, Serialize};

use crate::formats::bytes::Bytes;

/// What the parsed cache may keep: glibc's own caches of big images hold a few thousand entries
/// of a few dozen bytes. A hostile 16 MiB cache whose 700,000 entries all point at one 9 MB string
/// was copied whole per entry (past 2 GiB, issue 22); now each string is looked at through a
/// window of [`MAX_CACHE_STRING`] bytes and the entries kept stop at these bounds, with a note.
pub const MAX_CACHE_ENTRIES: usize = 65_536;
pub const MAX_CACHE_KEPT_BYTES: usize = 8 << 20;
/// Bytes looked at for string ends, over the whole cache: a real cache looks at its string table
/// once (hundreds of KB); entries pointing into one long string cost [`MAX_CACHE_STRING`] each.
pub const MAX_CACHE_SCAN_BYTES: usize = 32 << 20;
/// `PATH_MAX`: the loader cannot open a longer path, so an entry naming one is skipped.
pub const MAX_CACHE_STRING: usize = 4096;

pub(crate) const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
pub(crate) const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
pub(crate) const NEW_HEADER_LEN: usize = 48;
pub(crate) const NEW_ENTRY_LEN: usize = 24;
pub(crate) const OLD_ENTRY_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("ld.so.cache: {0}")]
    Corrupt(&'static str),
    #[error("ld.so.cache: big-endian cache, not this machine's")]
    ForeignEndian,
}

/// One entry of the glibc new-format cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub flags: i32,
    pub name: String,
    pub path: String,
    pub hwcap: u64,
}

/// A parsed cache and what was left out of it.
#[derive(Debug, Clone, Default)]
pub struct ParsedCache {
    pub entries: Vec<CacheEntry>,
    /// Entries not kept: past [`MAX_CACHE_ENTRIES`], [`MAX_CACHE_KEPT_BYTES`] or
    /// [`MAX_CACHE_SCAN_BYTES`].
    pub left_out: usize,
    /// Entries skipped because a string was longer than `PATH_MAX` (the loader cannot use them).
    pub too_long: usize,
}

/// Parse `/etc/ld.so.cache` in glibc's "glibc-ld.so.cache1.1" format, alone or after the old
/// "ld.so-1.7.0" part. Every offset is bounds-checked: a corrupt cache is an error, never a panic.
pub fn parse_ld_so_cache(data: &[u8]) -> Result<Vec<CacheEntry>, LoaderError> {
    parse_ld_so_cache_bounded(data).map(|c| c.entries)
}

/// [`parse_ld_so_cache`] with what it kept and left out: memory is bounded by what is kept (entry
/// count and string bytes), and no string is scanned past `PATH_MAX`.
pub fn parse_ld_so_cache_bounded(data: &[u8]) -> Result<ParsedCache, LoaderError> {
    let start = if data.starts_with(NEW_MAGIC) {
        0
    } else if data.starts_with(OLD_MAGIC) {
        // Old part: magic[11] padded to 12, u32 nlibs, 12-byte entries; the new part follows,
        // aligned to 8 (glibc's ALIGN_CACHE).
        let n = Bytes::le(data)
            .u32(12)
            .ok_or(LoaderError::Corrupt("truncated old header"))? as usize;
        let end = n
            .checked_mul(OLD_ENTRY_LEN)
            .and_then(|x| x.checked_add(16))
            .ok_or(LoaderError::Corrupt("old entry count overflows"))?;
        let aligned = end
            .checked_add(7)
            .ok_or(LoaderError::Corrupt("old part too long"))?
            & !7;
        [aligned, end]
            .into_iter()
            .find(|&o| data.get(o..).is_some_and(|d| d.starts_with(NEW_MAGIC)))
            .ok_or(LoaderError::Corrupt(
                "old-format cache without a new-format part",
            ))?
    } else {
        return Err(LoaderError::Corrupt("not a glibc ld.so.cache"));
    };
    let d = &data[start..];
    if d.len() < NEW_HEADER_LEN {
        return Err(LoaderError::Corrupt("truncated header"));
    }
    let nlibs = Bytes::le(d)
        .u32(20)
        .ok_or(LoaderError::Corrupt("truncated header"))? as usize;
    match d[28] {
        3 => return Err(LoaderError::ForeignEndian),
        0 | 2 => {}
        _ => return Err(LoaderError::Corrupt("invalid endianness flag")),
    }
    let entries_end = nlibs
        .checked_mul(NEW_ENTRY_LEN)
        .and_then(|x| x.checked_add(NEW_HEADER_LEN))
        .filter(|&e| e <= d.len())
        .ok_or(LoaderError::Corrupt("entry table runs past the end"))?;
    let mut out = ParsedCache {
        entries: Vec::with_capacity(nlibs.min(MAX_CACHE_ENTRIES)),
        ..ParsedCache::default()
    };
    let (mut kept, mut scanned) = (0usize, 0usize);
    for off in (NEW_HEADER_LEN..entries_end).step_by(NEW_ENTRY_LEN) {
        let flags = Bytes::le(d)
            .u32(off)
            .ok_or(LoaderError::Corrupt("truncated entry"))? as i32;
        let key = Bytes::le(d)
            .u32(off + 4)
            .ok_or(LoaderError::Corrupt("truncated entry"))? as usize;
        let value = Bytes::le(d)
            .u32(off + 8)
            .ok_or(LoaderError::Corrupt("truncated entry"))? as usize;
        let hwcap = Bytes::le(d)
            .u64(off + 16)
            .ok_or(LoaderError::Corrupt("truncated entry"))?;
        if out.entries.len() >= MAX_CACHE_ENTRIES
            || kept >= MAX_CACHE_KEPT_BYTES
            || scanned >= MAX_CACHE_SCAN_BYTES
        {
            out.left_out += 1;
            continue;
        }
        let name = cstr_at(d, key, &mut scanned)?;
        let path = cstr_at(d, value, &mut scanned)?;
        let (Some(name), Some(path)) = (name, path) else {
            out.too_long += 1;
            continue;
        };
        kept += name.len() + path.len();
        out.entries.push(CacheEntry {
            flags,
            name,
            path,
            hwcap,
        });
    }
    Ok(out)
}

/// The string at `off`, looked for within `PATH_MAX` bytes; `None` where it is longer (the
/// loader could not open it either). Unterminated at the end of the file is corrupt.
fn cstr_at(d: &[u8], off: usize, scanned: &mut usize) -> Result<Option<String>, LoaderError> {
    let rest = d
        .get(off..)
        .ok_or(LoaderError::Corrupt("string offset past the end"))?;
    let window = &rest[..rest.len().min(MAX_CACHE_STRING + 1)];
    let found = memchr::memchr(0, window);
    *scanned += found.map_or(window.len(), |n| n + 1);
    let Some(len) = found else {
        return if window.len() > MAX_CACHE_STRING {
            Ok(None)
        } else {
            Err(LoaderError::Corrupt("unterminated string"))
        };
    };
    String::from_utf8(rest[..len].to_vec())
        .map(Some)
        .map_err(|_| LoaderError::Corrupt("string is not UTF-8"))
}
