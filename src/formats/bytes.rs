//! The one reader of fixed-width integers in a byte slice, for every file format here (ELF
//! headers and sections, fatbin and cubin headers, `ld.so.cache`, notes).
//!
//! A read past the end is `None` ([`Bytes`]), never a panic: every byte comes from an image.
//! The `le_*` functions are for fixed-size headers whose length the caller has already checked;
//! there a short slice reads as zeros rather than panicking.

/// Byte order of a file (ELF's `EI_DATA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

/// A byte slice read as integers of one byte order.
#[derive(Debug, Clone, Copy)]
pub struct Bytes<'a> {
    data: &'a [u8],
    endian: Endian,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8], endian: Endian) -> Bytes<'a> {
        Bytes { data, endian }
    }

    pub fn le(data: &'a [u8]) -> Bytes<'a> {
        Bytes::new(data, Endian::Little)
    }

    /// `N` bytes at `at`, `None` past the end.
    pub fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.data.get(at..at.checked_add(N)?)?.try_into().ok()
    }

    pub fn u16(&self, at: usize) -> Option<u16> {
        let a = self.array(at)?;
        Some(match self.endian {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        })
    }

    pub fn u32(&self, at: usize) -> Option<u32> {
        let a = self.array(at)?;
        Some(match self.endian {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        })
    }

    pub fn u64(&self, at: usize) -> Option<u64> {
        let a = self.array(at)?;
        Some(match self.endian {
            Endian::Little => u64::from_le_bytes(a),
            Endian::Big => u64::from_be_bytes(a),
        })
    }

    /// An ELF word of the file's class: 8 bytes in ELF64, 4 in ELF32.
    pub fn word(&self, at: usize, is64: bool) -> Option<u64> {
        if is64 {
            self.u64(at)
        } else {
            self.u32(at).map(u64::from)
        }
    }
}

/// Little-endian `u16` at `at` of a header the caller has length-checked (zero past the end).
pub fn le_u16(b: &[u8], at: usize) -> u16 {
    Bytes::le(b).u16(at).unwrap_or(0)
}

/// Little-endian `u32` at `at` of a header the caller has length-checked (zero past the end).
pub fn le_u32(b: &[u8], at: usize) -> u32 {
    Bytes::le(b).u32(at).unwrap_or(0)
}

/// Little-endian `u64` at `at` of a header the caller has length-checked (zero past the end).
pub fn le_u64(b: &[u8], at: usize) -> u64 {
    Bytes::le(b).u64(at).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_orders_and_never_past_the_end() {
        let d = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let le = Bytes::le(&d);
        let be = Bytes::new(&d, Endian::Big);
        let cases: [(Option<u64>, Option<u64>); 6] = [
            (le.u16(0).map(u64::from), Some(0x0201)),
            (be.u16(0).map(u64::from), Some(0x0102)),
            (le.u32(1).map(u64::from), Some(0x0504_0302)),
            (le.u64(1), Some(0x0908_0706_0504_0302)),
            (le.u64(2), None),
            (be.word(5, false), Some(0x0607_0809)),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert_eq!(le.u16(usize::MAX), None);
        assert_eq!(le_u32(&d, 7), 0);
        assert_eq!(le_u16(&d, 7), 0x0908);
    }
}
