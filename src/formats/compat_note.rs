//! The `.note.cuda.fwd_compatibility` ELF note of a CUDA forward-compatibility `libcuda`
//! (`readelf -p .note.cuda.fwd_compatibility`): a note named "NVIDIA Corporation" whose
//! description is JSON — the CUDA version the library implements and the driver branches and
//! device generations it supports. NVIDIA's `nvidia-cdi-hook enable-cuda-compat` decides from it
//! whether a container's `/usr/local/cuda/compat` is used (`cmd/nvidia-cdi-hook/cudacompat`).
//!
//! The file is image content: read by pieces, with every size and offset checked; a note larger
//! than [`MAX_NOTE_BYTES`] or any inconsistency is "no note".

use std::io::{Read, Seek, SeekFrom};

use serde::Serialize;

use crate::formats::bytes::Bytes;
use crate::formats::elf;

/// Real notes are a few hundred bytes.
const MAX_NOTE_BYTES: u64 = 64 << 10;
/// Section headers read at most (real libraries have ~30).
const MAX_SECTIONS: u64 = 4096;
const SECTION: &str = ".note.cuda.fwd_compatibility";
const SHT_NOTE: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompatNote {
    /// "CUDA Version": the CUDA version the compat library implements.
    pub cuda_version: Option<String>,
    /// "Driver": the host driver branches (majors) it runs on.
    pub driver: Vec<i64>,
    /// "Device": the device generations it supports.
    pub device: Vec<i64>,
}

/// Why no note could be read (the hook then falls back to comparing versions).
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("not an ELF file we read: {0}")]
    Elf(&'static str),
    #[error("the note's description is not JSON: {0}")]
    Json(String),
}

// By hand, not `#[from]`: the text carries the cause (crate docs, "Errors").
impl From<std::io::Error> for NoteError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

struct Reader<R> {
    r: R,
}

impl<R: Read + Seek> Reader<R> {
    fn bytes(&mut self, off: u64, n: usize) -> Result<Vec<u8>, NoteError> {
        self.r.seek(SeekFrom::Start(off))?;
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }
}

/// The note of `file`, `Ok(None)` where the library has none (or one not named "NVIDIA
/// Corporation", or an empty one: what the toolkit treats as no note).
pub fn read<R: Read + Seek>(file: R) -> Result<Option<CompatNote>, NoteError> {
    let mut r = Reader { r: file };
    let (is64, _) = elf::ident(&r.bytes(0, 16)?).map_err(NoteError::Elf)?;
    let eh = r.bytes(0, if is64 { elf::EHDR64 } else { elf::EHDR32 })?;
    let h = elf::FileHeader::parse(&eh).map_err(NoteError::Elf)?;
    let entsize = usize::from(h.shentsize);
    if h.shoff == 0 || h.shnum == 0 {
        return Ok(None);
    }
    if u64::from(h.shnum) > MAX_SECTIONS || entsize < h.section_header_size() {
        return Err(NoteError::Elf("section header table out of bounds"));
    }
    let table = r.bytes(h.shoff, entsize * usize::from(h.shnum))?;
    let sections = elf::section_headers(&table, entsize, &h);
    let Some(strtab) = sections.get(usize::from(h.shstrndx)) else {
        return Err(NoteError::Elf("no section name table"));
    };
    if strtab.size > MAX_NOTE_BYTES * 16 {
        return Err(NoteError::Elf("section name table too large"));
    }
    let names = r.bytes(strtab.offset, strtab.size as usize)?;
    let Some(&elf::SectionHeader {
        offset: off,
        size,
        align,
        ..
    }) = sections
        .iter()
        .find(|s| s.kind == SHT_NOTE && elf::name_at(&names, s.name) == SECTION.as_bytes())
    else {
        return Ok(None);
    };
    if size > MAX_NOTE_BYTES {
        return Err(NoteError::Elf("note larger than any real one"));
    }
    let data = r.bytes(off, size as usize)?;
    if data.len() < 12 {
        return Err(NoteError::Elf("note shorter than its header"));
    }
    let note = Bytes::new(&data, h.endian);
    let (namesz, descsz) = (
        u64::from(note.u32(0).unwrap_or(0)),
        u64::from(note.u32(4).unwrap_or(0)),
    );
    if namesz == 0 || descsz == 0 {
        return Ok(None);
    }
    // The name is padded to the section's alignment, as the toolkit reads it.
    let align = align.max(1);
    let padded = namesz
        .checked_add(align - 1)
        .map(|v| v / align * align)
        .ok_or(NoteError::Elf("note name size overflows"))?;
    let field = |from: u64, n: u64| -> &[u8] {
        let from = from.min(data.len() as u64) as usize;
        let to = (from as u64).saturating_add(n).min(data.len() as u64) as usize;
        let s = &data[from..to];
        let start = s.iter().position(|b| *b != 0).unwrap_or(s.len());
        let end = s.iter().rposition(|b| *b != 0).map_or(start, |e| e + 1);
        &s[start..end.max(start)]
    };
    if field(12, padded) != b"NVIDIA Corporation" {
        return Ok(None);
    }
    let desc = field(12 + padded, descsz);
    let v: serde_json::Value =
        serde_json::from_slice(desc).map_err(|e| NoteError::Json(e.to_string()))?;
    // Go's encoding/json matches field names case-insensitively.
    let get = |k: &str| {
        v.as_object()
            .and_then(|o| o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)))
            .map(|(_, v)| v)
    };
    let ints = |k: &str| -> Vec<i64> {
        get(k)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(serde_json::Value::as_i64)
                    .take(256)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Some(CompatNote {
        cuda_version: get("CUDA Version")
            .and_then(|s| s.as_str())
            .map(|s| s.chars().take(32).collect()),
        driver: ints("Driver"),
        device: ints("Device"),
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal little-endian ELF64 with sections: null, `name` of type `ty` holding `data`,
    /// and the section name table.
    pub(crate) fn elf_with_section(name: &str, ty: u32, data: &[u8]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let name_off = strtab.len() as u32;
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
        let str_name = strtab.len() as u32;
        strtab.extend_from_slice(b".shstrtab\0");
        let data_off = 64u64;
        let str_off = data_off + data.len() as u64;
        let shoff = (str_off + strtab.len() as u64).div_ceil(8) * 8;
        let mut out = vec![0u8; shoff as usize];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        // ET_DYN, EM_X86_64, EV_CURRENT, header sizes: what Go's debug/elf (the toolkit's
        // reader) checks.
        out[16..18].copy_from_slice(&3u16.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&3u16.to_le_bytes());
        out[62..64].copy_from_slice(&2u16.to_le_bytes());
        out[64..64 + data.len()].copy_from_slice(data);
        out[str_off as usize..str_off as usize + strtab.len()].copy_from_slice(&strtab);
        let sh = |name: u32, ty: u32, off: u64, size: u64, align: u64| {
            let mut s = vec![0u8; 64];
            s[0..4].copy_from_slice(&name.to_le_bytes());
            s[4..8].copy_from_slice(&ty.to_le_bytes());
            s[24..32].copy_from_slice(&off.to_le_bytes());
            s[32..40].copy_from_slice(&size.to_le_bytes());
            s[48..56].copy_from_slice(&align.to_le_bytes());
            s
        };
        out.extend(vec![0u8; 64]);
        out.extend(sh(name_off, ty, data_off, data.len() as u64, 4));
        out.extend(sh(str_name, 3, str_off, strtab.len() as u64, 1));
        out
    }

    /// A note as NVIDIA writes it: name "NVIDIA Corporation" (padded to 4), JSON description.
    pub(crate) fn note(desc: &str) -> Vec<u8> {
        let name = b"NVIDIA Corporation\0";
        let mut d = Vec::new();
        d.extend_from_slice(&(name.len() as u32).to_le_bytes());
        d.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(name);
        while d.len() % 4 != 0 {
            d.push(0);
        }
        d.extend_from_slice(desc.as_bytes());
        d
    }

    #[test]
    fn reads_the_note_and_refuses_what_is_not_one() {
        let desc = r#"{"Format": 1, "CUDA Version": "13.1", "Driver": [535, 550, 570, 575, 580, 590], "Device": [1, 2, 7, 8, 9, 10, 11, 12, 13, 14]}"#;
        let elf = elf_with_section(SECTION, SHT_NOTE, &note(desc));
        let n = read(std::io::Cursor::new(elf)).unwrap().unwrap();
        assert_eq!(n.cuda_version.as_deref(), Some("13.1"));
        assert_eq!(n.driver, vec![535, 550, 570, 575, 580, 590]);
        assert_eq!(n.device.len(), 10);
        // Another section name, or not a note section: no note.
        let other = elf_with_section(".note.gnu.build-id", SHT_NOTE, &note(desc));
        assert!(read(std::io::Cursor::new(other)).unwrap().is_none());
        let progbits = elf_with_section(SECTION, 1, &note(desc));
        assert!(read(std::io::Cursor::new(progbits)).unwrap().is_none());
        // Another vendor's name: no note.
        let mut wrong = note(desc);
        wrong[12] = b'X';
        let elf = elf_with_section(SECTION, SHT_NOTE, &wrong);
        assert!(read(std::io::Cursor::new(elf)).unwrap().is_none());
        // Bad JSON is an error the caller treats as no note.
        let elf = elf_with_section(SECTION, SHT_NOTE, &note("{not json"));
        assert!(matches!(
            read(std::io::Cursor::new(elf)),
            Err(NoteError::Json(_))
        ));
        // Not ELF, truncated, hostile sizes: errors, never a panic.
        assert!(read(std::io::Cursor::new(b"version https://git-lfs".to_vec())).is_err());
        let good = elf_with_section(SECTION, SHT_NOTE, &note(desc));
        for cut in [10, 63, 70, good.len() - 1] {
            let _ = read(std::io::Cursor::new(good[..cut].to_vec()));
        }
        let mut huge = good.clone();
        huge[60..62].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(read(std::io::Cursor::new(huge)).is_err());
        let mut namesz = good.clone();
        namesz[64..68].copy_from_slice(&u32::MAX.to_le_bytes());
        let _ = read(std::io::Cursor::new(namesz));
    }
}
