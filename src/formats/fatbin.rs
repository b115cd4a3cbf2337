//! CUDA binary inventory: which GPU code a file carries, read from headers only.
//!
//! A host ELF (`.so`, executable, `.o`) carries its device code in fatbin containers in the
//! `.nv_fatbin` section (the "executable" fatbin the CUDA runtime registers), or, in relocatable
//! objects built with `-rdc=true`, in `__nv_relfatbin`. `.nvFatBinSegment` holds the runtime's
//! wrapper records that point at those containers. Standalone `.fatbin` files are one or more
//! containers back to back; `.cubin` files are CUDA ELF images; `.ptx` files are PTX text.
//!
//! The fatbin layout is NVIDIA's and undocumented. What this reader relies on was cross-checked
//! against these public descriptions and against `cuobjdump` 13.5 on files built by nvcc 13.5
//! (tests/it/fatbin_vs_cuobjdump.rs):
//! * GrigoryEvko/nvopen-tools `fatbin/FORMAT_SPECIFICATION.md` (container header, variable-size
//!   entry headers, entries tiling the container, zstd flag 0x8000);
//! * RWTH-ACS/cricket `cpu/cpu-elf2.c` (`fat_elf_header` / `fat_text_header` field order:
//!   kind, header size, padded payload size, compressed size, code version minor/major, arch,
//!   flags, uncompressed size; the 0x2000 compression flag of older toolkits);
//! * the `0xBA55ED50` magic and `__fatBinC_Wrapper_t` (`0x466243B1`) of the CUDA headers'
//!   `fatbinary_section.h`.
//!
//! Container header (16 bytes, little-endian): u32 magic 0xBA55ED50, u16 version 1,
//! u16 header size (16), u64 size of the entries that follow.
//! Entry header (>= 64 bytes): 0x00 u16 kind (1 PTX, 2 ELF), 0x04 u32 header size, 0x08 u64
//! payload size (padded, the distance to the next entry after the header), 0x10 u32 compressed
//! size, 0x18 u16 minor + 0x1a u16 major code version (for PTX: the PTX ISA version), 0x1c u32
//! arch (sm number), 0x28 u64 flags, 0x38 u64 uncompressed size. Flags seen: 0x2000 (LZ4-style,
//! CUDA <= 12) and 0x8000 (zstd) compression, 0x100000 arch-specific `a`, 0x200000 family `f`.
//!
//! Reads are header-sized `pread`s through `object::ReadCache`, so memory stays proportional to
//! the number of entries, not to the file size; payloads are never read except the first few KB
//! of an uncompressed PTX entry whose header lacks the ISA version.

use std::fmt;
use std::fs::File;
use std::path::Path;

use object::elf::{FileHeader32, FileHeader64};
use object::read::elf::{FileHeader, SectionHeader};
use object::{Endianness, ReadCache, ReadRef};

use crate::formats::bytes::{le_u16, le_u32, le_u64};

pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// `__fatBinC_Wrapper_t.magic`, the records in `.nvFatBinSegment`.
const WRAPPER_MAGIC: u32 = 0x4662_43B1;
const EM_CUDA: u16 = 190;

const CONTAINER_HEADER: u64 = 16;
const ENTRY_HEADER_MIN: u64 = 64;
/// Real entry headers are 64–120 bytes; anything far larger is corruption.
const ENTRY_HEADER_MAX: u64 = 4096;
/// The largest real library seen has ~5.7k entries (libcublasLt.so.13); a cap keeps a hostile
/// file from making us allocate per fake 64-byte entry.
const MAX_ENTRIES: usize = 200_000;
/// How much PTX text we read to find `.version` / `.target`.
const PTX_PREFIX: u64 = 64 * 1024;

const FLAG_COMPRESSED_LZ: u64 = 0x1000 | 0x2000;
const FLAG_COMPRESSED_ZSTD: u64 = 0x8000;
const FLAG_ARCH_SPECIFIC: u64 = 0x10_0000;
const FLAG_FAMILY: u64 = 0x20_0000;

#[derive(Debug, thiserror::Error)]
pub enum FatbinError {
    #[error("cannot read: {0}")]
    Io(std::io::Error),
    #[error("not a CUDA binary (no fatbin, cubin or PTX)")]
    NotCuda,
    #[error("malformed ELF: {0}")]
    Elf(String),
    #[error("truncated: {what} at offset {offset:#x} runs past the end")]
    Truncated { what: &'static str, offset: u64 },
    #[error("malformed fatbin at offset {offset:#x}: {what}")]
    Malformed { what: String, offset: u64 },
    #[error("more than {MAX_ENTRIES} fatbin entries")]
    TooManyEntries,
}

// By hand, not `#[from]`: the text carries the cause (crate docs, "Errors").
impl From<std::io::Error> for FatbinError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

type Result<T> = std::result::Result<T, FatbinError>;

/// What a fatbin entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A cubin (ELF with SASS) — what `cuobjdump --list-elf` lists.
    Sass,
    /// PTX text — what `cuobjdump --list-ptx` lists.
    Ptx,
    /// Any other kind number (e.g. LTO IR); cuobjdump lists neither.
    Other(u16),
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Sass => "sass",
            EntryKind::Ptx => "ptx",
            EntryKind::Other(_) => "other",
        }
    }
}

/// Architecture-specific (`sm_90a`: that exact GPU only) or family (`sm_100f`: the same family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    Plain,
    Specific,
    Family,
}

/// A target architecture: `sm_<major><minor>[a|f]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
    pub variant: Variant,
}

impl Arch {
    /// From the sm number of the headers (`90` → 9.0, `121` → 12.1).
    pub fn from_sm(sm: u32, variant: Variant) -> Arch {
        Arch {
            major: sm / 10,
            minor: sm % 10,
            variant,
        }
    }

    pub fn sm(&self) -> u32 {
        self.major * 10 + self.minor
    }

    /// `sm_90a`, `sm_100f`, `compute_80` style names are all accepted.
    pub fn parse(s: &str) -> Option<Arch> {
        let s = s.trim();
        let rest = s
            .strip_prefix("sm_")
            .or_else(|| s.strip_prefix("compute_"))
            .unwrap_or(s);
        let (digits, variant) = match rest.as_bytes().last()? {
            b'a' => (&rest[..rest.len() - 1], Variant::Specific),
            b'f' => (&rest[..rest.len() - 1], Variant::Family),
            _ => (rest, Variant::Plain),
        };
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let sm: u32 = digits.parse().ok()?;
        if sm < 10 {
            return None;
        }
        Some(Arch::from_sm(sm, variant))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = match self.variant {
            Variant::Plain => "",
            Variant::Specific => "a",
            Variant::Family => "f",
        };
        write!(f, "sm_{}{}", self.sm(), suffix)
    }
}

/// How the file carried its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Host ELF with an executable fatbin (`.nv_fatbin`).
    Elf,
    /// Host ELF with only a relocatable fatbin (`__nv_relfatbin`, `-rdc=true` objects): not
    /// loadable as is; it must be device-linked first.
    ElfRelocatable,
    /// Host ELF without any CUDA code.
    ElfNoCuda,
    Fatbin,
    Cubin,
    Ptx,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Elf => "elf",
            Format::ElfRelocatable => "elf-relocatable",
            Format::ElfNoCuda => "elf-no-cuda",
            Format::Fatbin => "fatbin",
            Format::Cubin => "cubin",
            Format::Ptx => "ptx",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub arch: Arch,
    /// PTX entries: the PTX ISA version `(major, minor)`.
    pub ptx_isa: Option<(u16, u16)>,
    pub compressed: bool,
    /// File offset of the entry header.
    pub offset: u64,
    pub header_size: u64,
    /// Bytes after the header up to the next entry (stored payload plus padding).
    pub payload_size: u64,
    /// Payload size once decompressed, where the header says.
    pub uncompressed_size: Option<u64>,
    /// Index into `Inventory::containers`; the CUDA runtime registers each container as one
    /// module, so loadability is decided per container.
    pub container: usize,
}

/// One fatbin container: a module as the runtime registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub offset: u64,
    /// Header plus entries.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub format: Format,
    pub containers: Vec<Container>,
    pub entries: Vec<Entry>,
}

/// One file's inventory, or why it could not be read (an error for that file only).
#[derive(Debug, Clone)]
pub struct ScannedFile {
    pub path: std::path::PathBuf,
    pub inventory: std::result::Result<Inventory, String>,
}

/// Read the inventory of one file. The file is read by header-sized pieces, never whole.
pub fn read_path(path: &Path) -> Result<Inventory> {
    let file = File::open(path)?;
    read_file(file)
}

pub fn read_file(file: File) -> Result<Inventory> {
    read_file_counted(file, &std::cell::Cell::new(0))
}

/// As [`read_file`], adding the bytes read to `read`: the image walk (`facts::gpu_code::binaries`) holds
/// a bytes budget over everything it reads from an image.
pub fn read_file_counted(file: File, read: &std::cell::Cell<u64>) -> Result<Inventory> {
    let len = file.metadata()?.len();
    let cache = ReadCache::new(Pread {
        file,
        pos: 0,
        len,
        read,
    });
    read_inventory(&cache)
}

/// `ReadCache` source that reads with `pread`: one syscall per header instead of seek + read,
/// which is most of the cost on a library with thousands of entries.
struct Pread<'c> {
    file: File,
    pos: u64,
    len: u64,
    read: &'c std::cell::Cell<u64>,
}

impl object::read::ReadCacheOps for Pread<'_> {
    fn len(&mut self) -> std::result::Result<u64, ()> {
        Ok(self.len)
    }

    fn seek(&mut self, pos: u64) -> std::result::Result<u64, ()> {
        self.pos = pos;
        Ok(pos)
    }

    fn read(&mut self, buf: &mut [u8]) -> std::result::Result<usize, ()> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos).map_err(|_| ())?;
        self.pos += n as u64;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::result::Result<(), ()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, self.pos).map_err(|_| ())?;
        self.pos += buf.len() as u64;
        self.read.set(self.read.get() + buf.len() as u64);
        Ok(())
    }
}

/// The same reader over bytes in memory (fuzzing, tests).
pub fn read_bytes(data: &[u8]) -> Result<Inventory> {
    read_inventory(data)
}

fn read_inventory<'a, R: ReadRef<'a>>(data: R) -> Result<Inventory> {
    let len = data.len().map_err(|_| FatbinError::Truncated {
        what: "file",
        offset: 0,
    })?;
    let head = data
        .read_bytes_at(0, len.min(64))
        .map_err(|_| FatbinError::Truncated {
            what: "file",
            offset: 0,
        })?;
    if head.starts_with(b"\x7fELF") {
        return read_elf(data, head);
    }
    if head.len() >= 4 && le_u32(head, 0) == FATBIN_MAGIC {
        let mut inv = Inventory {
            format: Format::Fatbin,
            containers: Vec::new(),
            entries: Vec::new(),
        };
        read_containers(data, 0, len, &mut inv)?;
        return Ok(inv);
    }
    let prefix =
        data.read_bytes_at(0, len.min(PTX_PREFIX))
            .map_err(|_| FatbinError::Truncated {
                what: "file",
                offset: 0,
            })?;
    if let Some(entry) = ptx_text_entry(prefix) {
        return Ok(Inventory {
            format: Format::Ptx,
            containers: vec![Container {
                offset: 0,
                size: len,
            }],
            entries: vec![Entry {
                payload_size: len,
                ..entry
            }],
        });
    }
    Err(FatbinError::NotCuda)
}

fn read_elf<'a, R: ReadRef<'a>>(data: R, head: &[u8]) -> Result<Inventory> {
    match head.get(4) {
        Some(1) => read_elf_as::<FileHeader32<Endianness>, R>(data),
        Some(2) => read_elf_as::<FileHeader64<Endianness>, R>(data),
        _ => Err(FatbinError::Elf("unknown ELF class".into())),
    }
}

fn read_elf_as<'a, Elf: FileHeader<Endian = Endianness>, R: ReadRef<'a>>(
    data: R,
) -> Result<Inventory> {
    let header = Elf::parse(data).map_err(|e| FatbinError::Elf(e.to_string()))?;
    let endian = header
        .endian()
        .map_err(|e| FatbinError::Elf(e.to_string()))?;
    let sections = header
        .sections(endian, data)
        .map_err(|e| FatbinError::Elf(e.to_string()))?;
    if header.e_machine(endian) == EM_CUDA {
        return read_cubin(data, header, endian, &sections);
    }
    let range = |name: &[u8]| -> Option<(u64, u64)> {
        let (_, s) = sections.section_by_name(endian, name)?;
        // SHT_NOBITS has no bytes in the file.
        if s.sh_type(endian) == object::elf::SHT_NOBITS {
            return None;
        }
        Some((s.sh_offset(endian).into(), s.sh_size(endian).into()))
    };
    let mut inv = Inventory {
        format: Format::ElfNoCuda,
        containers: Vec::new(),
        entries: Vec::new(),
    };
    // cuobjdump's default, which is also what the runtime registers: the executable fatbin
    // where there is one, else the relocatable one.
    if let Some((off, size)) = range(b".nv_fatbin") {
        inv.format = Format::Elf;
        read_containers(data, off, size, &mut inv)?;
    } else if let Some((off, size)) = range(b"__nv_relfatbin") {
        inv.format = Format::ElfRelocatable;
        read_containers(data, off, size, &mut inv)?;
    } else if let Some((off, size)) = range(b".nvFatBinSegment") {
        // Older or non-nvcc layouts keep the containers elsewhere (e.g. `.rodata`) and reach
        // them only through the wrapper records: follow their pointers.
        let wrappers =
            wrapper_targets(data, &sections, endian, off, size, Elf::is_type_64_sized())?;
        for target in wrappers {
            let before = inv.entries.len();
            let hdr = read_at(data, target, CONTAINER_HEADER, "fatbin header")?;
            let fat = CONTAINER_HEADER.saturating_add(le_u64(hdr, 8));
            read_one_container(data, target, fat, &mut inv)?;
            if inv.entries.len() > before {
                inv.format = Format::Elf;
            }
        }
    }
    Ok(inv)
}

/// File offsets of the containers `.nvFatBinSegment`'s records point at (virtual address →
/// file offset through the section table). Records whose pointer is unrelocated (objects) or
/// lands nowhere are ignored.
fn wrapper_targets<'a, Elf: FileHeader<Endian = Endianness>, R: ReadRef<'a>>(
    data: R,
    sections: &object::read::elf::SectionTable<'a, Elf, R>,
    endian: Endianness,
    off: u64,
    size: u64,
    is64: bool,
) -> Result<Vec<u64>> {
    let rec = if is64 { 24 } else { 16 };
    let bytes = read_at(data, off, size.min(rec * 4096), ".nvFatBinSegment")?;
    let mut out = Vec::new();
    for chunk in bytes.chunks_exact(rec as usize) {
        if le_u32(chunk, 0) != WRAPPER_MAGIC {
            continue;
        }
        let va = if is64 {
            le_u64(chunk, 8)
        } else {
            le_u32(chunk, 8) as u64
        };
        if va == 0 {
            continue;
        }
        for s in sections.iter() {
            let addr: u64 = s.sh_addr(endian).into();
            let sz: u64 = s.sh_size(endian).into();
            if s.sh_type(endian) != object::elf::SHT_NOBITS
                && addr != 0
                && va >= addr
                && va - addr < sz
            {
                let fo: u64 = s.sh_offset(endian).into();
                out.push(fo + (va - addr));
                break;
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Containers back to back in `[off, off+size)`, with zero padding allowed between them.
fn read_containers<'a, R: ReadRef<'a>>(
    data: R,
    off: u64,
    size: u64,
    inv: &mut Inventory,
) -> Result<()> {
    let end = off.checked_add(size).ok_or(FatbinError::Truncated {
        what: "section",
        offset: off,
    })?;
    let mut pos = off;
    while pos < end {
        if end - pos < CONTAINER_HEADER {
            // Trailing alignment padding must be zeros.
            let rest = read_at(data, pos, end - pos, "padding")?;
            if rest.iter().any(|&b| b != 0) {
                return Err(FatbinError::Malformed {
                    what: "trailing bytes after last container".into(),
                    offset: pos,
                });
            }
            break;
        }
        let hdr = read_at(data, pos, CONTAINER_HEADER, "fatbin header")?;
        if le_u32(hdr, 0) != FATBIN_MAGIC {
            if le_u64(hdr, 0) == 0 {
                // Containers are 8-aligned in the section; skip the padding between them.
                pos += 8;
                continue;
            }
            return Err(FatbinError::Malformed {
                what: format!("bad magic {:#010x}", le_u32(hdr, 0)),
                offset: pos,
            });
        }
        let total = container_size(hdr, pos)?;
        if total > end - pos {
            return Err(FatbinError::Truncated {
                what: "fatbin container",
                offset: pos,
            });
        }
        read_one_container(data, pos, total, inv)?;
        pos += total;
    }
    Ok(())
}

fn container_size(hdr: &[u8], pos: u64) -> Result<u64> {
    let version = le_u16(hdr, 4);
    let hsize = le_u16(hdr, 6) as u64;
    if version != 1 || hsize != CONTAINER_HEADER {
        return Err(FatbinError::Malformed {
            what: format!("unknown container version {version} / header size {hsize}"),
            offset: pos,
        });
    }
    hsize
        .checked_add(le_u64(hdr, 8))
        .ok_or(FatbinError::Truncated {
            what: "fatbin container",
            offset: pos,
        })
}

/// One container at `pos` of `total` bytes: its entries must tile it exactly.
fn read_one_container<'a, R: ReadRef<'a>>(
    data: R,
    pos: u64,
    total: u64,
    inv: &mut Inventory,
) -> Result<()> {
    let hdr = read_at(data, pos, CONTAINER_HEADER, "fatbin header")?;
    if le_u32(hdr, 0) != FATBIN_MAGIC {
        return Err(FatbinError::Malformed {
            what: "bad magic".into(),
            offset: pos,
        });
    }
    if container_size(hdr, pos)? != total {
        return Err(FatbinError::Malformed {
            what: "container size mismatch".into(),
            offset: pos,
        });
    }
    let index = inv.containers.len();
    inv.containers.push(Container {
        offset: pos,
        size: total,
    });
    let end = pos + total;
    let mut e = pos + CONTAINER_HEADER;
    while e < end {
        if end - e < ENTRY_HEADER_MIN {
            return Err(FatbinError::Truncated {
                what: "entry header",
                offset: e,
            });
        }
        let h = read_at(data, e, ENTRY_HEADER_MIN, "entry header")?;
        let header_size = le_u32(h, 4) as u64;
        let payload_size = le_u64(h, 8);
        if !(ENTRY_HEADER_MIN..=ENTRY_HEADER_MAX).contains(&header_size) {
            return Err(FatbinError::Malformed {
                what: format!("entry header size {header_size}"),
                offset: e,
            });
        }
        // Each step advances by at least 64 bytes, so the walk ends.
        let step = header_size
            .checked_add(payload_size)
            .filter(|s| *s <= end - e)
            .ok_or(FatbinError::Truncated {
                what: "entry payload",
                offset: e,
            })?;
        if inv.entries.len() >= MAX_ENTRIES {
            return Err(FatbinError::TooManyEntries);
        }
        let kind = match le_u16(h, 0) {
            1 => EntryKind::Ptx,
            2 => EntryKind::Sass,
            k => EntryKind::Other(k),
        };
        let flags = le_u64(h, 0x28);
        let variant = if flags & FLAG_ARCH_SPECIFIC != 0 {
            Variant::Specific
        } else if flags & FLAG_FAMILY != 0 {
            Variant::Family
        } else {
            Variant::Plain
        };
        let compressed = flags & (FLAG_COMPRESSED_LZ | FLAG_COMPRESSED_ZSTD) != 0;
        let arch = Arch::from_sm(le_u32(h, 0x1c), variant);
        let uncompressed = le_u64(h, 0x38);
        let mut ptx_isa = None;
        if kind == EntryKind::Ptx {
            let (minor, major) = (le_u16(h, 0x18), le_u16(h, 0x1a));
            if major != 0 {
                ptx_isa = Some((major, minor));
            } else if !compressed {
                // Header without the version: read it off the PTX text. A compressed one stays
                // unknown; we do not decompress.
                let n = payload_size.min(PTX_PREFIX);
                let text = read_at(data, e + header_size, n, "PTX text")?;
                ptx_isa = ptx_text_entry(text).and_then(|p| p.ptx_isa);
            }
        }
        inv.entries.push(Entry {
            kind,
            arch,
            ptx_isa,
            compressed,
            offset: e,
            header_size,
            payload_size,
            uncompressed_size: (compressed && uncompressed != 0).then_some(uncompressed),
            container: index,
        });
        e += step;
    }
    Ok(())
}

/// A standalone cubin: one SASS entry whose arch is in `e_flags`.
fn read_cubin<'a, Elf: FileHeader<Endian = Endianness>, R: ReadRef<'a>>(
    data: R,
    header: &Elf,
    endian: Endianness,
    sections: &object::read::elf::SectionTable<'a, Elf, R>,
) -> Result<Inventory> {
    let flags = header.e_flags(endian);
    let abi_version = header.e_ident().abi_version;
    // CUDA 13 cubins (ELF ABI version 8 and later) keep the sm number in bits 8..16 of e_flags;
    // older ones in bits 0..8.
    let sm = if abi_version >= 8 {
        (flags >> 8) & 0xff
    } else {
        flags & 0xff
    };
    if sm == 0 {
        return Err(FatbinError::Elf(
            "cubin without an architecture in e_flags".into(),
        ));
    }
    // Arch-specific cubins carry attribute 0x09 = 1 in `.nv.compat` (seen on nvcc 13.5: sm_90a
    // and sm_100a differ from sm_90 / sm_100 only there). Family `f` cubins are indistinguishable
    // from plain ones (cuobjdump names sm_100f cubins `sm_100` too) and load the same way.
    let mut variant = Variant::Plain;
    if let Some((_, s)) = sections.section_by_name(endian, b".nv.compat") {
        let off: u64 = s.sh_offset(endian).into();
        let size: u64 = s.sh_size(endian).into();
        let bytes = read_at(data, off, size.min(4096), ".nv.compat")?;
        if compat_arch_specific(bytes) {
            variant = Variant::Specific;
        }
    }
    let len = data.len().unwrap_or(0);
    Ok(Inventory {
        format: Format::Cubin,
        containers: vec![Container {
            offset: 0,
            size: len,
        }],
        entries: vec![Entry {
            kind: EntryKind::Sass,
            arch: Arch::from_sm(sm, variant),
            ptx_isa: None,
            compressed: false,
            offset: 0,
            header_size: 0,
            payload_size: len,
            uncompressed_size: None,
            container: 0,
        }],
    })
}

/// `.nv.compat` is a list of attributes: `02 kk vv vv` (2-byte value) and `03 kk vv vv`
/// (a 4-byte-aligned record whose length follows), as the dumps in our tests show. We only look
/// for the 2-byte attribute 0x09 with value 1.
fn compat_arch_specific(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i + 4 <= bytes.len() {
        match bytes[i] {
            0x02 => {
                if bytes[i + 1] == 0x09 && bytes[i + 2] == 1 {
                    return true;
                }
                i += 4;
            }
            0x03 => i += 4,
            0x04 => {
                let n = le_u16(bytes, i + 2) as usize;
                i += 4 + n;
            }
            _ => return false,
        }
    }
    false
}

/// `.version X.Y` and `.target sm_NN[a|f]` from PTX text (comments and blank lines skipped).
fn ptx_text_entry(text: &[u8]) -> Option<Entry> {
    let text = std::str::from_utf8(text).unwrap_or_else(|e| {
        // The prefix may cut a multibyte character; the valid part is enough.
        std::str::from_utf8(&text[..e.valid_up_to()]).unwrap_or("")
    });
    let mut version = None;
    let mut target = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix(".version") {
            let v = v.trim();
            let (maj, min) = v.split_once('.')?;
            version = Some((maj.trim().parse().ok()?, min.trim().parse().ok()?));
        } else if let Some(t) = line.strip_prefix(".target") {
            let first = t
                .split(|c: char| c == ',' || c.is_whitespace())
                .find(|s| !s.is_empty())?;
            target = Arch::parse(first);
        }
        if version.is_some() && target.is_some() {
            break;
        }
    }
    let arch = target?;
    version?;
    Some(Entry {
        kind: EntryKind::Ptx,
        arch,
        ptx_isa: version,
        compressed: false,
        offset: 0,
        header_size: 0,
        payload_size: text.len() as u64,
        uncompressed_size: None,
        container: 0,
    })
}

fn read_at<'a, R: ReadRef<'a>>(
    data: R,
    offset: u64,
    size: u64,
    what: &'static str,
) -> Result<&'a [u8]> {
    data.read_bytes_at(offset, size)
        .map_err(|_| FatbinError::Truncated { what, offset })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A container with the given entries `(kind, sm, flags, minor, major, payload)`.
    pub(crate) fn container(entries: &[(u16, u32, u64, u16, u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, sm, flags, minor, major, payload) in entries {
            let padded = payload.len().div_ceil(8) * 8;
            let mut h = vec![0u8; 64];
            h[0..2].copy_from_slice(&kind.to_le_bytes());
            h[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
            h[4..8].copy_from_slice(&64u32.to_le_bytes());
            h[8..16].copy_from_slice(&(padded as u64).to_le_bytes());
            h[0x18..0x1a].copy_from_slice(&minor.to_le_bytes());
            h[0x1a..0x1c].copy_from_slice(&major.to_le_bytes());
            h[0x1c..0x20].copy_from_slice(&sm.to_le_bytes());
            h[0x28..0x30].copy_from_slice(&flags.to_le_bytes());
            body.extend_from_slice(&h);
            body.extend_from_slice(payload);
            body.resize(body.len() + padded - payload.len(), 0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn arch_names_round_trip() {
        for (s, sm, v) in [
            ("sm_80", 80, Variant::Plain),
            ("sm_90a", 90, Variant::Specific),
            ("sm_100f", 100, Variant::Family),
            ("compute_121", 121, Variant::Plain),
        ] {
            let a = Arch::parse(s).unwrap();
            assert_eq!((a.sm(), a.variant), (sm, v), "{s}");
        }
        assert_eq!(Arch::parse("sm_100f").unwrap().to_string(), "sm_100f");
        assert_eq!(Arch::from_sm(121, Variant::Plain).major, 12);
        for bad in ["", "sm_", "sm_a", "sm_9", "sm_99999", "sm_8x0"] {
            assert!(Arch::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn standalone_fatbin_entries_and_flags() {
        let ptx = b".version 9.0\n.target sm_90\n";
        let mut bytes = container(&[
            (2, 80, 0x11, 8, 1, b"\x7fELFxxxx"),
            (2, 90, 0x10_0011, 8, 1, b"abc"),
            (2, 100, 0x20_8011, 8, 1, b"zz"),
            (1, 90, 0x11, 0, 9, ptx),
        ]);
        bytes.extend_from_slice(&[0u8; 8]); // padding between containers is tolerated
        bytes.extend(container(&[(
            1,
            75,
            0x11,
            0,
            0,
            b"// c\n.version 7.8\n.target sm_75\n",
        )]));
        let inv = read_bytes(&bytes).unwrap();
        assert_eq!(inv.format, Format::Fatbin);
        assert_eq!(inv.containers.len(), 2);
        let got: Vec<String> = inv
            .entries
            .iter()
            .map(|e| {
                format!(
                    "{} {} {:?} {}",
                    e.kind.as_str(),
                    e.arch,
                    e.ptx_isa,
                    e.compressed
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "sass sm_80 None false",
                "sass sm_90a None false",
                "sass sm_100f None true",
                "ptx sm_90 Some((9, 0)) false",
                // header without the version: read from the text
                "ptx sm_75 Some((7, 8)) false",
            ]
        );
        assert_eq!(inv.entries[4].container, 1);
    }

    #[test]
    fn corrupt_inputs_are_errors_not_panics() {
        let good = container(&[(2, 80, 0x11, 8, 1, b"payload!")]);
        // every truncation
        for n in 1..good.len() {
            assert!(read_bytes(&good[..n]).is_err(), "prefix {n}");
        }
        // header size 0 would loop forever if accepted
        let mut z = good.clone();
        z[16 + 4..16 + 8].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(read_bytes(&z), Err(FatbinError::Malformed { .. })));
        // payload size that overflows
        let mut o = good.clone();
        o[16 + 8..16 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_bytes(&o).is_err());
        // container size larger than the file
        let mut c = good.clone();
        c[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(read_bytes(&c), Err(FatbinError::Truncated { .. })));
        assert!(matches!(
            read_bytes(b"hello world"),
            Err(FatbinError::NotCuda)
        ));
        assert!(read_bytes(b"\x7fELF\x02\x01\x01").is_err());
    }

    #[test]
    fn raw_ptx_text() {
        let inv =
            read_bytes(b"//\n// Generated by NVIDIA NVVM Compiler\n.version 9.5\n.target sm_100f\n.address_size 64\n")
                .unwrap();
        assert_eq!(inv.format, Format::Ptx);
        assert_eq!(inv.entries[0].arch.to_string(), "sm_100f");
        assert_eq!(inv.entries[0].ptx_isa, Some((9, 5)));
    }

    #[test]
    fn compat_attribute_marks_arch_specific() {
        let plain = [
            0x02, 0x09, 0x00, 0x00, 0x02, 0x0c, 0, 0, 0x04, 0x0b, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0,
            0,
        ];
        let spec = [0x02, 0x09, 0x01, 0x00, 0x02, 0x0c, 0, 0];
        assert!(!compat_arch_specific(&plain));
        assert!(compat_arch_specific(&spec));
        assert!(!compat_arch_specific(&[0x04, 0x01, 0xff, 0xff]));
    }

    /// A minimal little-endian ELF64 with one extra section (enough for object's parser).
    pub(crate) fn elf_with_section(
        machine: u16,
        flags: u32,
        abi: u8,
        name: &str,
        data: &[u8],
    ) -> Vec<u8> {
        elf_with_sections(machine, flags, abi, &[(name, 0, data)])
    }

    /// The same with several `(name, address, bytes)` sections.
    pub(crate) fn elf_with_sections(
        machine: u16,
        flags: u32,
        abi: u8,
        sections: &[(&str, u64, &[u8])],
    ) -> Vec<u8> {
        let mut strtab = b"\0.shstrtab\0".to_vec();
        let mut names = Vec::new();
        for (name, _, _) in sections {
            names.push(strtab.len() as u32);
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
        }
        let mut out = vec![0u8; 64];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[8] = abi;
        out[16..18].copy_from_slice(&3u16.to_le_bytes());
        out[18..20].copy_from_slice(&machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[48..52].copy_from_slice(&flags.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&(2 + sections.len() as u16).to_le_bytes());
        out[62..64].copy_from_slice(&1u16.to_le_bytes());
        let str_off = out.len() as u64;
        out.extend_from_slice(&strtab);
        let mut offs = Vec::new();
        for (_, _, data) in sections {
            out.resize(out.len().div_ceil(8) * 8, 0);
            offs.push(out.len() as u64);
            out.extend_from_slice(data);
        }
        out.resize(out.len().div_ceil(8) * 8, 0);
        let sh_off = out.len() as u64;
        out[40..48].copy_from_slice(&sh_off.to_le_bytes());
        let sh = |name: u32, ty: u32, addr: u64, off: u64, size: u64| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&ty.to_le_bytes());
            h[16..24].copy_from_slice(&addr.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h
        };
        out.extend(sh(0, 0, 0, 0, 0));
        out.extend(sh(1, 3, 0, str_off, strtab.len() as u64));
        for (i, (_, addr, data)) in sections.iter().enumerate() {
            out.extend(sh(names[i], 1, *addr, offs[i], data.len() as u64));
        }
        out
    }

    /// Containers outside `.nv_fatbin`, reached only through `.nvFatBinSegment` wrapper records
    /// (`{magic, version, data pointer, filename}`) that point into another section.
    #[test]
    fn fatbins_reached_through_wrapper_records() {
        let a = container(&[(2, 75, 0x11, 8, 1, b"\x7fELF")]);
        let b = container(&[(1, 80, 0x11, 0, 8, b".version 8.0\n.target sm_80\n")]);
        let mut rodata = vec![0u8; 8]; // something before the first container
        let a_at = rodata.len() as u64;
        rodata.extend_from_slice(&a);
        let b_at = rodata.len() as u64;
        rodata.extend_from_slice(&b);
        let base = 0x40_0000u64;
        let mut seg = Vec::new();
        for (va, magic) in [
            (base + a_at, WRAPPER_MAGIC),
            (base + b_at, WRAPPER_MAGIC),
            (0, WRAPPER_MAGIC),
            (base, 0),
        ] {
            seg.extend_from_slice(&magic.to_le_bytes());
            seg.extend_from_slice(&1u32.to_le_bytes());
            seg.extend_from_slice(&va.to_le_bytes());
            seg.extend_from_slice(&0u64.to_le_bytes());
        }
        let elf = elf_with_sections(
            62,
            0,
            0,
            &[
                (".rodata", base, &rodata),
                (".nvFatBinSegment", 0x60_0000, &seg),
            ],
        );
        let inv = read_bytes(&elf).unwrap();
        assert_eq!(inv.format, Format::Elf);
        assert_eq!(
            inv.containers.len(),
            2,
            "unrelocated (0) and non-wrapper records are ignored"
        );
        let got: Vec<String> = inv
            .entries
            .iter()
            .map(|e| format!("{} {}", e.kind.as_str(), e.arch))
            .collect();
        assert_eq!(got, ["sass sm_75", "ptx sm_80"]);
    }

    #[test]
    fn elf_nv_fatbin_and_cubin() {
        let mut sec = container(&[(2, 80, 0x11, 8, 1, b"\x7fELF")]);
        sec.extend_from_slice(&[0u8; 8]);
        sec.extend(container(&[
            (2, 90, 0x10_0011, 8, 1, b"x"),
            (1, 90, 0x8011, 5, 9, b"zzzz"),
        ]));
        let inv = read_bytes(&elf_with_section(62, 0, 0, ".nv_fatbin", &sec)).unwrap();
        assert_eq!(inv.format, Format::Elf);
        assert_eq!(inv.containers.len(), 2);
        assert_eq!(inv.entries.len(), 3);
        let rel = read_bytes(&elf_with_section(62, 0, 0, "__nv_relfatbin", &sec)).unwrap();
        assert_eq!(rel.format, Format::ElfRelocatable);
        let none = read_bytes(&elf_with_section(62, 0, 0, ".text", b"\xc3")).unwrap();
        assert_eq!((none.format, none.entries.len()), (Format::ElfNoCuda, 0));
        // CUDA 13 cubin: sm in bits 8..16; arch-specific via .nv.compat attribute 0x09 = 1.
        let cubin = read_bytes(&elf_with_section(
            190,
            0x0600_5a04,
            8,
            ".nv.compat",
            &[2, 9, 1, 0],
        ))
        .unwrap();
        assert_eq!(
            (cubin.format, cubin.entries[0].arch.to_string()),
            (Format::Cubin, "sm_90a".to_string())
        );
        // Older cubins: sm in bits 0..8.
        let old = read_bytes(&elf_with_section(190, 0x0050_0550, 7, ".nv.info", &[])).unwrap();
        assert_eq!(old.entries[0].arch.to_string(), "sm_80");
    }

    /// The fuzz target's property on stable: mutated and truncated inputs give an inventory or
    /// an error, never a panic or a walk outside the input.
    #[test]
    fn mutated_inputs_never_panic() {
        let fat = {
            let mut v = container(&[
                (2, 80, 0x11, 8, 1, b"\x7fELFabc"),
                (1, 80, 0x11, 0, 0, b".version 8.0\n.target sm_80\n"),
            ]);
            v.extend(container(&[(2, 100, 0x20_8011, 8, 1, b"zstd")]));
            v
        };
        let seeds = [
            fat.clone(),
            elf_with_section(62, 0, 0, ".nv_fatbin", &fat),
            elf_with_section(
                190,
                0x0600_6402,
                8,
                ".nv.compat",
                &[2, 9, 1, 0, 4, 11, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            b".version 9.5\n.target sm_100f\n".to_vec(),
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ok = 0;
        for i in 0..40_000 {
            let mut d = seeds[i % seeds.len()].clone();
            for _ in 0..1 + rnd() % 6 {
                let at = (rnd() % d.len() as u64) as usize;
                match rnd() % 4 {
                    0 => d[at] = rnd() as u8,
                    1 => d[at] ^= 1 << (rnd() % 8),
                    2 => d.truncate(at.max(1)),
                    _ => {
                        let v = [0u8, 0xff, 0x40, 0x7f][(rnd() % 4) as usize];
                        d[at] = v;
                    }
                }
            }
            if let Ok(inv) = read_bytes(&d) {
                ok += 1;
                for e in &inv.entries {
                    let c = &inv.containers[e.container];
                    assert!(
                        e.offset >= c.offset
                            && e.offset + e.header_size + e.payload_size <= c.offset + c.size
                    );
                    assert!(
                        c.offset + c.size <= d.len() as u64,
                        "container past the input"
                    );
                }
            }
        }
        assert!(ok > 1000, "mutations should not all be rejected ({ok})");
    }
}
