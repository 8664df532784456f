//! Record framing for WAL segments: `len | crc | type | payload`, and the scan that tells a torn
//! tail from corruption on recovery (DESIGN.md §6b).
//!
//! A frame is an 8-byte header — `len: u32 LE` (bytes of type + payload) and `crc: u32 LE` — then the
//! one-byte record type and the payload. The CRC-32 covers the length field, the type and the
//! payload, and starts from a per-segment random *salt* (kept in the segment's file name). The salt
//! matters for recovery: to tell a torn tail from corruption we look for a valid frame after the bad
//! one, and without a salt a client could store a value that *is* a valid frame, so that a torn write
//! of it would look like corruption and keep the node from starting. Stale bytes from an earlier
//! file on the same disk blocks cannot pass either.

use super::error::BadRecord;

/// Bytes of a frame header (length + CRC).
pub(crate) const HEADER_LEN: usize = 8;

/// Record types are `1..=MAX_KIND`; the recovery search skips anything else without hashing it.
pub(crate) const MAX_KIND: u8 = 15;

/// How many bytes the search for valid frames after a bad one may hash before it gives up and
/// reports corruption (refusing to start is safe; guessing "torn" could drop acknowledged data).
/// A real torn tail costs a tiny fraction of this; only a payload crafted so that many offsets
/// look like plausible frame lengths could exhaust it.
const SEARCH_BUDGET: usize = 256 << 20;

/// The largest body (type + payload) a frame may have. Client values are at most 1 MiB (DESIGN.md
/// §5), so this leaves ample room while keeping a corrupt length from asking for gigabytes.
pub(crate) const MAX_BODY_LEN: usize = 64 << 20;

/// The CRC of a frame: over the little-endian length, then the body, seeded with the salt.
fn frame_crc(salt: u32, len_le: [u8; 4], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(salt);
    h.update(&len_le);
    h.update(body);
    h.finalize()
}

/// Appends one frame to `buf`; `payload` writes the payload after the type byte. Returns the
/// frame's length, or the body length if it exceeds [`MAX_BODY_LEN`] (nothing is appended then).
pub(crate) fn put_frame(
    buf: &mut Vec<u8>,
    salt: u32,
    kind: u8,
    payload: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, usize> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    buf.push(kind);
    payload(buf);
    let body_len = buf.len() - start - HEADER_LEN;
    let Ok(len32) = u32::try_from(body_len) else {
        buf.truncate(start);
        return Err(body_len);
    };
    if body_len > MAX_BODY_LEN {
        buf.truncate(start);
        return Err(body_len);
    }
    let len_le = len32.to_le_bytes();
    let crc = frame_crc(salt, len_le, &buf[start + HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&len_le);
    buf[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(buf.len() - start)
}

/// A frame whose checksum verified.
pub(crate) struct Frame<'a> {
    /// Byte offset of the frame's header in the file.
    pub offset: usize,
    /// The record type.
    pub kind: u8,
    /// The payload (after the type byte).
    pub payload: &'a [u8],
}

/// Parses the frame at `pos`: the frame and the offset just past it, or why it is not valid.
pub(crate) fn parse_frame(
    buf: &[u8],
    pos: usize,
    salt: u32,
) -> Result<(Frame<'_>, usize), &'static str> {
    let Some(header) = buf.get(pos..pos + HEADER_LEN) else {
        return Err("incomplete record header");
    };
    let len_le = [header[0], header[1], header[2], header[3]];
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    // A u32 always fits in usize on the 32- and 64-bit targets we build for.
    let len = u32::from_le_bytes(len_le) as usize;
    if len == 0 {
        return Err("zero record length");
    }
    if len > MAX_BODY_LEN {
        return Err("record length over the limit");
    }
    let body_start = pos + HEADER_LEN;
    let Some(body) = buf.get(body_start..body_start + len) else {
        return Err("record extends past the end of the file");
    };
    if frame_crc(salt, len_le, body) != crc {
        return Err("checksum mismatch");
    }
    Ok((
        Frame {
            offset: pos,
            kind: body[0],
            payload: &body[1..],
        },
        body_start + len,
    ))
}

/// How a scan of a segment ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte belonged to a valid frame.
    Clean,
    /// A bad frame at `offset` with no valid frame anywhere after it: a write that a crash cut
    /// short (followed by nothing, zeros or its own partial bytes). It was never acknowledged.
    Torn {
        /// Where the torn frame starts; the file should be truncated here.
        offset: usize,
    },
    /// A bad frame at `offset` followed by valid data, or a valid frame whose content is wrong.
    Corrupt {
        /// Where the bad frame starts.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Visits the valid frames of `buf` from `start` on, stopping at the first bad one.
///
/// `visit` may reject a frame whose checksum verified but whose content makes no sense; that is
/// corruption, not a torn write (the bytes are exactly what was written).
pub(crate) fn scan(
    buf: &[u8],
    start: usize,
    salt: u32,
    mut visit: impl FnMut(Frame<'_>) -> Result<(), BadRecord>,
) -> ScanEnd {
    let mut pos = start;
    while pos < buf.len() {
        match parse_frame(buf, pos, salt) {
            Ok((frame, next)) => {
                if let Err(bad) = visit(frame) {
                    return ScanEnd::Corrupt {
                        offset: pos,
                        reason: bad.to_string(),
                    };
                }
                pos = next;
            }
            Err(why) => {
                return match valid_frame_after(buf, pos, salt, SEARCH_BUDGET) {
                    Some(true) => ScanEnd::Corrupt {
                        offset: pos,
                        reason: format!("{why}, and valid records follow"),
                    },
                    Some(false) => ScanEnd::Torn { offset: pos },
                    None => ScanEnd::Corrupt {
                        offset: pos,
                        reason: format!(
                            "{why}; the bytes after it are too costly to search for valid \
                             records, so it cannot be shown to be a torn write"
                        ),
                    },
                };
            }
        }
    }
    ScanEnd::Clean
}

/// Whether a valid frame starts anywhere after `pos`; `None` if finding out would hash more than
/// `budget` bytes.
///
/// This only runs on recovery when a bad frame was found. A genuinely torn tail is at most the last
/// unsynced batch, so the search is short; zeros fail the length check at once, and candidates
/// whose type byte is impossible are skipped before hashing. A corrupt frame in the middle of the
/// log is followed by a valid frame within one frame's length.
fn valid_frame_after(buf: &[u8], pos: usize, salt: u32, budget: usize) -> Option<bool> {
    let mut hashed = 0usize;
    for p in pos + 1..buf.len() {
        let Some(header) = buf.get(p..p + HEADER_LEN + 1) else {
            return Some(false);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = header[HEADER_LEN];
        if len == 0 || len > MAX_BODY_LEN || len > buf.len() - p - HEADER_LEN {
            continue;
        }
        if kind == 0 || kind > MAX_KIND {
            continue;
        }
        hashed += len;
        if hashed > budget {
            return None;
        }
        if parse_frame(buf, p, salt).is_ok() {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u32 = 0x5eed_1234;

    fn frames(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(buf.len());
            let r = put_frame(&mut buf, SALT, 2, |b| b.extend_from_slice(&[i as u8; 20]));
            assert!(r.is_ok());
        }
        (buf, starts)
    }

    fn count(buf: &[u8]) -> (usize, ScanEnd) {
        let mut n = 0;
        let end = scan(buf, 0, SALT, |_| {
            n += 1;
            Ok(())
        });
        (n, end)
    }

    #[test]
    fn clean_scan_sees_every_frame() {
        let (buf, _) = frames(5);
        assert_eq!(count(&buf), (5, ScanEnd::Clean));
    }

    #[test]
    fn a_cut_last_frame_is_torn_at_every_offset() {
        let (buf, starts) = frames(4);
        let last = starts[3];
        for cut in last + 1..buf.len() {
            assert_eq!(
                count(&buf[..cut]),
                (3, ScanEnd::Torn { offset: last }),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn zeros_after_a_cut_are_still_torn() {
        let (mut buf, starts) = frames(4);
        buf.truncate(starts[3] + 5);
        buf.extend_from_slice(&[0; 4096]);
        assert_eq!(count(&buf), (3, ScanEnd::Torn { offset: starts[3] }));
    }

    #[test]
    fn a_flip_followed_by_valid_frames_is_corruption() {
        let (mut buf, starts) = frames(6);
        buf[starts[2] + 12] ^= 0x40;
        let (n, end) = count(&buf);
        assert_eq!(n, 2);
        assert!(matches!(end, ScanEnd::Corrupt { offset, .. } if offset == starts[2]));
        // A flipped length field too.
        let (mut buf, starts) = frames(6);
        buf[starts[1] + 2] ^= 0x01;
        assert!(matches!(count(&buf).1, ScanEnd::Corrupt { offset, .. } if offset == starts[1]));
    }

    #[test]
    fn a_search_that_would_cost_too_much_gives_up() {
        // A torn record whose payload makes every ninth offset look like a 64-byte frame of type 2.
        let (mut buf, starts) = frames(3);
        buf.truncate(starts[2] + 3);
        for _ in 0..500 {
            buf.extend_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0, 0x02]);
        }
        assert_eq!(valid_frame_after(&buf, starts[2], SALT, 1000), None);
        assert_eq!(
            valid_frame_after(&buf, starts[2], SALT, usize::MAX),
            Some(false)
        );
        assert!(matches!(
            scan(&buf, 0, SALT, |_| Ok(())),
            ScanEnd::Torn { offset } if offset == starts[2]
        ));
    }

    #[test]
    fn a_different_salt_verifies_nothing() {
        let (buf, _) = frames(2);
        assert!(parse_frame(&buf, 0, SALT ^ 1).is_err());
    }

    #[test]
    fn oversized_bodies_are_refused() {
        let mut buf = vec![7];
        assert_eq!(
            put_frame(&mut buf, SALT, 2, |b| b.resize(b.len() + MAX_BODY_LEN, 0)),
            Err(MAX_BODY_LEN + 1)
        );
        assert_eq!(buf, vec![7]);
    }
}
