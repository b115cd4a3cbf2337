//! The one ELF header and section-table reader of the file-format readers (`readelf -h -S`):
//! the file header's class, byte order, type, machine and section-table position, and each
//! section header. Which sections a caller wants, and how much it reads of them, is the
//! caller's: the fatbin walk ([`crate::facts::gpu_code::binaries`]) and the
//! forward-compatibility note ([`crate::formats::compat_note`]) use this.

use crate::formats::bytes::{Bytes, Endian};

/// Bytes of the ELF64 and ELF32 file headers.
pub const EHDR64: usize = 64;
pub const EHDR32: usize = 52;

/// Class (`true`: ELF64) and byte order from `e_ident`, the file's first 16 bytes. The error
/// says what is wrong, in the order the checks run: magic, class, byte order.
pub fn ident(b: &[u8]) -> Result<(bool, Endian), &'static str> {
    if !b.starts_with(b"\x7fELF") {
        return Err("no ELF magic");
    }
    let is64 = match b.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("bad class"),
    };
    let endian = match b.get(5) {
        Some(1) => Endian::Little,
        Some(2) => Endian::Big,
        _ => return Err("bad data encoding"),
    };
    Ok((is64, endian))
}

/// What the file header says (`Elf{32,64}_Ehdr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub is64: bool,
    pub endian: Endian,
    pub e_type: u16,
    pub machine: u16,
    pub shoff: u64,
    pub shentsize: u16,
    pub shnum: u16,
    pub shstrndx: u16,
}

impl FileHeader {
    /// From the file's first bytes (at least [`EHDR64`] for ELF64, [`EHDR32`] for ELF32). The
    /// error is [`ident`]'s, or that the header is shorter than its class's.
    pub fn parse(b: &[u8]) -> Result<FileHeader, &'static str> {
        let (is64, endian) = ident(b)?;
        if b.len() < if is64 { EHDR64 } else { EHDR32 } {
            return Err("truncated header");
        }
        let r = Bytes::new(b, endian);
        let half = |at: usize| r.u16(at).unwrap_or(0);
        let (shoff, at) = if is64 {
            (r.u64(0x28).unwrap_or(0), 0x3a)
        } else {
            (r.u32(0x20).map(u64::from).unwrap_or(0), 0x2e)
        };
        Ok(FileHeader {
            is64,
            endian,
            e_type: half(16),
            machine: half(18),
            shoff,
            shentsize: half(at),
            shnum: half(at + 2),
            shstrndx: half(at + 4),
        })
    }

    /// Bytes of one section header of this class (`sizeof(Elf{32,64}_Shdr)`).
    pub fn section_header_size(&self) -> usize {
        if self.is64 { 64 } else { 40 }
    }
}

/// One section header (`Elf{32,64}_Shdr`), the fields the readers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionHeader {
    /// Offset of the name in the section-name table.
    pub name: u32,
    pub kind: u32,
    pub offset: u64,
    pub size: u64,
    pub link: u64,
    pub align: u64,
}

impl SectionHeader {
    /// From one entry of the table (zeros for fields past the end of `b`).
    pub fn parse(b: &[u8], is64: bool, endian: Endian) -> SectionHeader {
        let r = Bytes::new(b, endian);
        let word = |at: usize| r.word(at, is64).unwrap_or(0);
        let (offset, size, link, align) = if is64 {
            (word(0x18), word(0x20), r.u32(0x28).unwrap_or(0), word(0x30))
        } else {
            (word(0x10), word(0x14), r.u32(0x18).unwrap_or(0), word(0x20))
        };
        SectionHeader {
            name: r.u32(0).unwrap_or(0),
            kind: r.u32(4).unwrap_or(0),
            offset,
            size,
            link: u64::from(link),
            align,
        }
    }
}

/// Every header of a section table read whole (`shnum` entries of `entsize` bytes each).
pub fn section_headers(table: &[u8], entsize: usize, h: &FileHeader) -> Vec<SectionHeader> {
    if entsize == 0 {
        return Vec::new();
    }
    table
        .chunks_exact(entsize)
        .map(|c| SectionHeader::parse(c, h.is64, h.endian))
        .collect()
}

/// The name at `off` in a section-name table; empty where `off` is past its end.
pub fn name_at(names: &[u8], off: u32) -> &[u8] {
    let rest = names.get(off as usize..).unwrap_or(&[]);
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_errors_name_the_first_thing_wrong() {
        let mut h64 = vec![0u8; EHDR64];
        h64[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let cases: [(&[u8], Result<bool, &str>); 6] = [
            (b"MZ", Err("no ELF magic")),
            (b"\x7fELF\x03\x01", Err("bad class")),
            (b"\x7fELF\x02\x03", Err("bad data encoding")),
            (b"\x7fELF\x02\x01", Err("truncated header")),
            (&h64, Ok(true)),
            (&h64[..EHDR32], Err("truncated header")),
        ];
        for (bytes, want) in cases {
            assert_eq!(FileHeader::parse(bytes).map(|h| h.is64), want);
        }
    }

    #[test]
    fn reads_the_section_table() {
        let elf = crate::formats::fatbin::tests::elf_with_section(62, 0, 0, ".nv_fatbin", b"abcd");
        let h = FileHeader::parse(&elf).unwrap();
        assert_eq!(
            (h.is64, h.endian, h.e_type, h.machine),
            (true, Endian::Little, 3, 62)
        );
        let n = h.shentsize as usize * h.shnum as usize;
        let table = &elf[h.shoff as usize..h.shoff as usize + n];
        let s = section_headers(table, h.shentsize as usize, &h);
        let strtab = s[h.shstrndx as usize];
        let names = &elf[strtab.offset as usize..(strtab.offset + strtab.size) as usize];
        let fat = s
            .iter()
            .find(|x| name_at(names, x.name) == b".nv_fatbin")
            .unwrap();
        assert_eq!(
            &elf[fat.offset as usize..(fat.offset + fat.size) as usize],
            b"abcd"
        );
        assert_eq!(name_at(names, u32::MAX), b"");
    }
}
