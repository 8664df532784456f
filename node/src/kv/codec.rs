//! Byte-level building blocks shared by the command and snapshot encodings: LEB128 varints, a
//! bounds-checked reader that turns every malformation into a [`DecodeError`], and FNV-1a for
//! request fingerprints.
//!
//! FNV-1a is written out here rather than taken from a crate: fingerprints are replicated and
//! persisted (they decide whether a retry is a duplicate), so the function must never change with a
//! dependency upgrade, and it is a dozen lines with published test vectors.

use std::ops::Range;

/// Why a command or a snapshot body could not be decoded. Decoding never panics: every
/// malformation of the input is one of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before a field does.
    #[error("input ends early: {what} at offset {offset}")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Where the field starts.
        offset: usize,
    },
    /// A varint is longer than ten bytes, overflows `u64`, or is not in its shortest form.
    #[error("malformed varint: {what} at offset {offset}")]
    BadVarint {
        /// The field being read.
        what: &'static str,
        /// Where the varint starts.
        offset: usize,
    },
    /// The format version byte names a version this build does not read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version byte in the input.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A tag byte (operation or response kind, or a boolean) has no meaning.
    #[error("invalid {what} {value} at offset {offset}")]
    BadTag {
        /// The field being read.
        what: &'static str,
        /// The byte found.
        value: u8,
        /// Where it is.
        offset: usize,
    },
    /// A string field is not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
        /// Where the string's bytes start.
        offset: usize,
    },
    /// Bytes follow the end of the encoded value.
    #[error("{count} unexpected bytes after the end, at offset {offset}")]
    TrailingBytes {
        /// Where the encoded value ended.
        offset: usize,
        /// How many bytes follow it.
        count: usize,
    },
}

/// The longest LEB128 encoding of a `u64`.
pub(super) const MAX_VARINT_LEN: usize = 10;

/// Appends `v` as an unsigned LEB128 varint (7 bits per byte, least significant first).
pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// The number of bytes [`put_varint`] writes for `v`.
pub(super) fn varint_len(v: u64) -> usize {
    // One byte per started group of 7 significant bits; zero still takes one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Encodes `v` into a stack buffer; returns the buffer and the used length.
pub(super) fn varint_bytes(v: u64) -> ([u8; MAX_VARINT_LEN], usize) {
    let mut out = [0u8; MAX_VARINT_LEN];
    let mut v = v;
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    (out, n + 1)
}

/// Appends a length-prefixed byte string.
pub(super) fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A cursor over untrusted input. Every method checks bounds and reports the field it was reading.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The current offset from the start of the input.
    pub(super) fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads one byte.
    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated {
            what,
            offset: self.pos,
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a byte that must be 0 or 1.
    pub(super) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        let offset = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::BadTag {
                what,
                value,
                offset,
            }),
        }
    }

    /// Reads a fixed-width little-endian `u64`.
    pub(super) fn u64_le(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let range = self.take(8, what)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(&self.buf[range]);
        Ok(u64::from_le_bytes(le))
    }

    /// Reads a varint in its shortest form. Over-long forms are rejected so that every accepted
    /// input re-encodes to the same bytes (the encodings are canonical).
    pub(super) fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.u8(what).map_err(|_| DecodeError::Truncated {
                what,
                offset: start,
            })?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may carry only the top bit of a u64.
            if i == MAX_VARINT_LEN - 1 && byte > 1 {
                return Err(DecodeError::BadVarint {
                    what,
                    offset: start,
                });
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                // A final zero byte after others means the value had a shorter encoding.
                if byte == 0 && i > 0 {
                    return Err(DecodeError::BadVarint {
                        what,
                        offset: start,
                    });
                }
                return Ok(value);
            }
        }
        Err(DecodeError::BadVarint {
            what,
            offset: start,
        })
    }

    /// Reads a varint that must fit in `usize` and not exceed the remaining input (it is a length
    /// or a count of items that take at least one byte each). Checking against the remaining input
    /// keeps a forged count from driving a huge allocation.
    pub(super) fn len(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.varint(what)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(DecodeError::Truncated { what, offset }),
        }
    }

    /// Skips `n` bytes and returns their range in the input.
    pub(super) fn take(
        &mut self,
        n: usize,
        what: &'static str,
    ) -> Result<Range<usize>, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                offset: self.pos,
            });
        }
        let range = self.pos..self.pos + n;
        self.pos += n;
        Ok(range)
    }

    /// Reads a length-prefixed byte string and returns its range in the input.
    pub(super) fn bytes_range(&mut self, what: &'static str) -> Result<Range<usize>, DecodeError> {
        let n = self.len(what)?;
        self.take(n, what)
    }

    /// Reads a length-prefixed byte string.
    pub(super) fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let range = self.bytes_range(what)?;
        Ok(&self.buf[range])
    }

    /// Reads a length-prefixed UTF-8 string.
    pub(super) fn string(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let offset = self.pos;
        let raw = self.bytes(what)?;
        std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8 { what, offset })
    }

    /// Fails unless the whole input has been read.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                offset: self.pos,
                count,
            }),
        }
    }
}

/// FNV-1a, 64-bit: a fixed, seedless hash. Used to fingerprint requests in the session table, where
/// the same input must give the same value on every replica and in every release (so no
/// `RandomState`, no `DefaultHasher`, whose algorithm std may change). Its job is to tell a client's
/// retry from a different request under the same seq, not to resist an adversary: a client can only
/// confuse its own session.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// A hash over no bytes yet.
    pub(super) fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    /// Feeds `bytes`.
    pub(super) fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(Self::PRIME);
        }
        self.0 = h;
    }

    /// Feeds a `u64` as 8 little-endian bytes.
    pub(super) fn update_u64(&mut self, v: u64) {
        self.update(&v.to_le_bytes());
    }

    /// Feeds a length-prefixed byte string, so that field boundaries are part of the hash.
    pub(super) fn update_field(&mut self, bytes: &[u8]) {
        self.update_u64(bytes.len() as u64);
        self.update(bytes);
    }

    /// The hash of everything fed so far.
    pub(super) fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the reference implementation's test suite (Fowler, Noll, Vo).
        let hash = |s: &[u8]| {
            let mut h = Fnv1a64::new();
            h.update(s);
            h.finish()
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn varints_round_trip_and_reject_overlong_forms() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "length of {v}");
            let (stack, n) = varint_bytes(v);
            assert_eq!(&stack[..n], &buf[..]);
            let mut r = Reader::new(&buf);
            assert_eq!(r.varint("v"), Ok(v));
            assert_eq!(r.finish(), Ok(()));
        }
        // 0 written in two bytes.
        assert!(matches!(
            Reader::new(&[0x80, 0x00]).varint("v"),
            Err(DecodeError::BadVarint { .. })
        ));
        // Eleven bytes, and a tenth byte carrying more than the top bit.
        assert!(matches!(
            Reader::new(&[0xff; 11]).varint("v"),
            Err(DecodeError::BadVarint { .. })
        ));
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(matches!(
            Reader::new(&too_big).varint("v"),
            Err(DecodeError::BadVarint { .. })
        ));
        assert!(matches!(
            Reader::new(&[0x80]).varint("v"),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn lengths_beyond_the_input_are_truncation() {
        let mut buf = Vec::new();
        put_varint(&mut buf, 5);
        buf.extend_from_slice(b"abc");
        assert!(matches!(
            Reader::new(&buf).bytes("key"),
            Err(DecodeError::Truncated { what: "key", .. })
        ));
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX);
        assert!(matches!(
            Reader::new(&huge).len("count"),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
