//! Randomness from the operating system's CSPRNG (`getrandom`).
//!
//! Small requests (tokens, accessors, nonces, request ids: at most [`POOL_TAKE`] bytes)
//! are served from a per-thread buffer of OS randomness, refilled with one `getrandom`
//! call every [`POOL_LEN`] bytes: a request used to make several system calls for a few
//! bytes each (measured: ~3 % of a KV read's CPU). Every byte comes from the OS and is
//! handed out once; the buffer wipes what it hands out, so no past value stays in memory.
//! leash never forks without an immediate `exec` (children are started with
//! `std::process::Command`), so no two processes share a buffer.
//!
//! If the OS cannot give randomness the process cannot safely mint anything; these
//! functions then abort the process rather than return weak values.

use std::cell::RefCell;

use zeroize::Zeroize;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Bytes of OS randomness kept per thread.
const POOL_LEN: usize = 1024;
/// Requests larger than this go to the OS directly.
const POOL_TAKE: usize = 64;

/// A thread's unused OS randomness: `buf[used..]` has not been handed out; `buf[..used]`
/// is zeroed.
struct Pool {
    buf: [u8; POOL_LEN],
    used: usize,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { buf: [0; POOL_LEN], used: POOL_LEN })
    };
}

fn os_fill(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // No safe way to continue: every token and key depends on this.
        eprintln!("fatal: the operating system's random number generator failed: {e}");
        std::process::abort();
    }
}

/// Fills `buf` from the OS CSPRNG (small requests through the thread's buffer).
pub fn fill(buf: &mut [u8]) {
    if buf.len() > POOL_TAKE {
        return os_fill(buf);
    }
    let served = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if POOL_LEN - pool.used < buf.len() {
            os_fill(&mut pool.buf);
            pool.used = 0;
        }
        let from = pool.used;
        let taken = &mut pool.buf[from..from + buf.len()];
        buf.copy_from_slice(taken);
        taken.zeroize();
        pool.used += buf.len();
    });
    if served.is_err() {
        // The thread is ending and its buffer is gone: ask the OS.
        os_fill(buf);
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
        let d = BASE62_VALUE[usize::from(b)];
        if d == NOT_BASE62 {
            return None;
        }
        v = v.checked_mul(62)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

const NOT_BASE62: u8 = u8::MAX;

/// Each byte's value in [`BASE62`], or [`NOT_BASE62`] (read on every token lookup).
const BASE62_VALUE: [u8; 256] = {
    let mut t = [NOT_BASE62; 256];
    let mut i = 0;
    while i < BASE62.len() {
        t[BASE62[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// A random UUID (version 4) in its usual text form, used for request ids and entity ids.
pub fn uuid_v4() -> String {
    let mut b = bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(x >> 4)]));
        out.push(char::from(HEX[usize::from(x & 0x0f)]));
    }
    out
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
    fn small_requests_from_the_buffer_never_repeat_and_large_ones_work() {
        // Many small draws cross several refills; no 16-byte value may come twice.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(4 * POOL_LEN / 16) {
            assert!(seen.insert(bytes::<16>()), "a 16-byte draw repeated");
        }
        // Odd sizes that do not divide the buffer, the largest buffered size, and a
        // request served by the OS directly.
        for n in [1usize, 7, 33, POOL_TAKE, POOL_TAKE + 1, 4096] {
            let mut a = vec![0u8; n];
            let mut b = vec![0u8; n];
            fill(&mut a);
            fill(&mut b);
            if n >= 7 {
                assert_ne!(a, b, "two draws of {n} bytes were equal");
            }
        }
        // What was handed out is wiped from the buffer.
        POOL.with(|p| {
            let p = p.borrow();
            assert!(p.buf[..p.used].iter().all(|b| *b == 0));
        });
    }

    #[test]
    fn threads_draw_different_values() {
        let here = bytes::<32>();
        let there = std::thread::spawn(bytes::<32>).join().unwrap();
        assert_ne!(here, there);
    }

    #[test]
    fn uuid_has_version_and_variant() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert!(
            u.bytes()
                .enumerate()
                .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) {
                    c == b'-'
                } else {
                    c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
                })
        );
        assert_ne!(uuid_v4(), uuid_v4());
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
