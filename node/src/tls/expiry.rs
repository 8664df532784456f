//! When a certificate expires: its `notAfter`, read from the DER with a few lines of parsing
//! rather than a whole X.509 crate, because that one field is all the node needs (for the
//! `raftkv_tls_certificate_expiry_timestamp_seconds` metric and the rotation log line).
//!
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
//! signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... } (RFC 5280 §4.1).
//! Times are UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).

/// One DER element: its tag and contents, and the bytes after it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The certificate's `notAfter` as Unix seconds; `None` if the DER is not a certificate.
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    let (tag, cert, _) = element(cert_der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _, mut rest) = element(tbs)?;
    if tag == VERSION {
        (_, _, rest) = element(rest)?; // the serial number
    }
    (_, _, rest) = element(rest)?; // signature algorithm
    (_, _, rest) = element(rest)?; // issuer
    let (tag, validity, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, after) = element(validity)?; // notBefore
    let (tag, time, _) = element(after)?;
    parse_time(tag, time)
}

fn digits(s: &[u8]) -> Option<i64> {
    s.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn parse_time(tag: u8, t: &[u8]) -> Option<i64> {
    let (year, rest) = match tag {
        UTC_TIME if t.len() == 13 => {
            let yy = digits(&t[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &t[2..])
        }
        GENERALIZED_TIME if t.len() == 15 => (digits(&t[..4])?, &t[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let minute = digits(&rest[6..8])?;
    let second = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if body.len() < 0x80 {
            out.push(body.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(body);
        out
    }

    fn cert(not_after: Vec<u8>, with_version: bool) -> Vec<u8> {
        let mut tbs = Vec::new();
        if with_version {
            tbs.extend(tlv(VERSION, &tlv(0x02, &[2])));
        }
        tbs.extend(tlv(0x02, &[1, 2, 3])); // serial
        tbs.extend(tlv(SEQUENCE, &tlv(0x06, &[1, 2]))); // algorithm
        tbs.extend(tlv(SEQUENCE, &[0u8; 200])); // a long issuer (long-form length)
        let mut validity = tlv(UTC_TIME, b"250101000000Z");
        validity.extend(not_after);
        tbs.extend(tlv(SEQUENCE, &validity));
        tlv(SEQUENCE, &tlv(SEQUENCE, &tbs))
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // 2027-03-01T12:30:05Z = 1803904205 (date -u -d 2027-03-01T12:30:05Z +%s).
        let utc = cert(tlv(UTC_TIME, b"270301123005Z"), true);
        assert_eq!(not_after(&utc), Some(1_803_904_205));
        let gen_time = cert(tlv(GENERALIZED_TIME, b"20270301123005Z"), false);
        assert_eq!(not_after(&gen_time), Some(1_803_904_205));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(not_after(&cert(tlv(UTC_TIME, b"27030112300Z"), true)), None);
        let truncated = cert(tlv(UTC_TIME, b"270301123005Z"), true);
        assert_eq!(not_after(&truncated[..truncated.len() - 3]), None);
    }
}
