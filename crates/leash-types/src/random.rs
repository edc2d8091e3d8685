//! Randomness straight from the operating system's CSPRNG (`getrandom`).
//!
//! If the OS cannot give randomness the process cannot safely mint anything; these
//! functions then abort the process rather than return weak values.

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Fills `buf` from the OS CSPRNG.
pub fn fill(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // No safe way to continue: every token and key depends on this.
        eprintln!("fatal: the operating system's random number generator failed: {e}");
        std::process::abort();
    }
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill(&mut b);
    b
}

/// A random string of `len` characters from `[0-9A-Za-z]`, uniformly distributed
/// (rejection sampling; ~5.95 bits per character).
pub fn base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut pool = [0u8; 64];
    while out.len() < len {
        fill(&mut pool);
        for &b in &pool {
            // 248 = 4 * 62: values at or above it would bias the result.
            if b < 248 {
                out.push(char::from(BASE62[usize::from(b % 62)]));
                if out.len() == len {
                    break;
                }
            }
        }
    }
    out
}

/// Encodes `v` in base62, left-padded with `0` to `width` characters.
pub fn base62_u32(v: u32, width: usize) -> String {
    base62_u64(u64::from(v), width)
}

/// Encodes `v` in base62, left-padded with `0` to `width` characters. The alphabet is in
/// ASCII order, so for one width the text sorts like the number.
pub fn base62_u64(mut v: u64, width: usize) -> String {
    let mut digits = Vec::with_capacity(width);
    while v > 0 {
        digits.push(BASE62[(v % 62) as usize]);
        v /= 62;
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Decodes base62 text (as written by [`base62_u64`]); `None` if it is not base62 or
/// does not fit in 64 bits.
pub fn decode_base62_u64(s: &str) -> Option<u64> {
    let mut v: u64 = 0;
    for b in s.bytes() {
        let d = BASE62.iter().position(|c| *c == b)? as u64;
        v = v.checked_mul(62)?.checked_add(d)?;
    }
    Some(v)
}

/// A random UUID (version 4) in its usual text form, used for request ids and entity ids.
pub fn uuid_v4() -> String {
    let mut b = bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_has_requested_length_and_alphabet() {
        let s = base62(100);
        assert_eq!(s.len(), 100);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(base62(32), base62(32));
    }

    #[test]
    fn uuid_has_version_and_variant() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn base62_u64_round_trips_and_sorts() {
        for v in [0u64, 1, 61, 62, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(decode_base62_u64(&base62_u64(v, 11)), Some(v));
        }
        assert!(base62_u64(1000, 11) < base62_u64(1001, 11));
        assert!(base62_u64(61, 11) < base62_u64(62, 11));
        assert_eq!(decode_base62_u64("zzzzzzzzzzzz"), None, "overflow");
        assert_eq!(decode_base62_u64("ab-c"), None);
    }

    #[test]
    fn base62_u32_pads() {
        assert_eq!(base62_u32(0, 6), "000000");
        assert_eq!(base62_u32(61, 2), "0z");
        assert_eq!(base62_u32(u32::MAX, 6).len(), 6);
    }
}
