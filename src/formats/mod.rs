//! File formats: pure readers of bytes the facts stage finds (ELF dynamic sections, fatbin and
//! cubin headers, the forward-compatibility ELF note, …). Nothing here knows of containers or
//! hosts; every reader bounds what it keeps, and the fuzz targets (`fuzz/`) call them.

pub mod bytes;
pub mod compat_note;
pub mod cuda_banner;
pub mod elf;
pub mod elf_dynamic;
pub mod fatbin;
pub mod ld_so_cache;
pub mod version;
