//! Usernames and passwords leash generates for dynamic credentials.
//!
//! Usernames follow Vault's shape, `v-<display>-<role>-<random>-<unix time>`, so an
//! operator looking at `pg_roles` sees where a role came from. Passwords come straight
//! from the OS CSPRNG ([`leash_types::random`]).

use leash_types::{Clock as _, SecretString, SystemClock, random};

const LOWER_ALNUM: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const PASSWORD_ALPHABET: &[u8; 63] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-";

/// Length of generated passwords: 32 characters of a 63-symbol alphabet, ~191 bits
/// (at most ~2 bits fewer after rejecting passwords that miss a character class).
pub const PASSWORD_LEN: usize = 32;

/// Random characters in a username: 20 of `[0-9a-z]`, ~103 bits.
const USERNAME_RANDOM_LEN: usize = 20;

/// `len` characters drawn uniformly from `alphabet` (rejection sampling).
fn random_from(alphabet: &[u8], len: usize) -> String {
    // Largest multiple of the alphabet size that fits in a byte: values at or above it
    // would bias the result.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut pool = [0u8; 64];
    while out.len() < len {
        random::fill(&mut pool);
        for &b in &pool {
            if usize::from(b) < limit {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
                if out.len() == len {
                    break;
                }
            }
        }
    }
    out
}

/// `s` lowercased, with every character outside `[a-z0-9_-]` replaced by `_`, cut to
/// `max` characters.
fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// A unique username `v-<display>-<role>-<random>-<unix>` cut to `max_len` characters
/// (63 for PostgreSQL, 32 for MySQL), using only `[a-z0-9_-]`.
///
/// Display name and role name are cut to 8 characters each (4 when `max_len` is below
/// 51, as Vault's MySQL plugin does), so the 20 random characters (~103 bits) always
/// survive truncation for `max_len` ≥ 32: uniqueness never rests on the clock. The
/// time is for people reading `pg_roles`, so it is the system clock's (the engine has no
/// injected clock; lease times are the core's).
pub fn generate_username(display_name: &str, role: &str, max_len: usize) -> String {
    let part = if max_len >= 51 { 8 } else { 4 };
    let unix = SystemClock.unix();
    let mut name = format!(
        "v-{}-{}-{}-{unix}",
        sanitize(display_name, part),
        sanitize(role, part),
        random_from(LOWER_ALNUM, USERNAME_RANDOM_LEN),
    );
    name.truncate(max_len);
    name
}

/// A 32-character password from `[A-Za-z0-9-]` with at least one upper-case letter,
/// one lower-case letter, one digit and one `-`, so common password rules accept it.
pub fn generate_password() -> SecretString {
    loop {
        let p = random_from(PASSWORD_ALPHABET, PASSWORD_LEN);
        let has = |f: fn(&u8) -> bool| p.as_bytes().iter().any(f);
        if has(u8::is_ascii_uppercase)
            && has(u8::is_ascii_lowercase)
            && has(u8::is_ascii_digit)
            && has(|b| *b == b'-')
        {
            return SecretString::from(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leash_types::ExposeSecret;
    use std::collections::HashSet;

    #[test]
    fn usernames_are_unique_short_and_plain() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let u = generate_username("Agent.Token@x", "read-only role", 63);
            assert!(u.len() <= 63, "{u}");
            assert!(
                u.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'_'),
                "{u}"
            );
            assert!(u.starts_with("v-agent_to-read-onl-"), "{u}");
            assert!(seen.insert(u));
        }
    }

    #[test]
    fn usernames_fit_mysql_and_keep_randomness() {
        let mut seen = HashSet::new();
        for _ in 0..1_000 {
            let u = generate_username("token", "readonly", 32);
            assert_eq!(u.len(), 32, "{u}");
            assert!(u.starts_with("v-toke-read-"), "{u}");
            assert!(seen.insert(u));
        }
        let long = generate_username(&"d".repeat(100), &"r".repeat(100), 63);
        assert!(long.len() <= 63);
    }

    #[test]
    fn passwords_meet_rules_and_differ() {
        let mut seen = HashSet::new();
        let mut counts = [0usize; 128];
        for _ in 0..2_000 {
            let p = generate_password();
            let p = p.expose_secret();
            assert_eq!(p.len(), PASSWORD_LEN);
            assert!(p.bytes().all(|b| PASSWORD_ALPHABET.contains(&b)));
            assert!(p.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(p.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(p.bytes().any(|b| b.is_ascii_digit()));
            assert!(p.contains('-'));
            for b in p.bytes() {
                counts[usize::from(b)] += 1;
            }
            assert!(seen.insert(p.to_owned()));
        }
        // Entropy bound: 32 symbols of 63 is ~191 bits, far above 120.
        assert!(PASSWORD_LEN as f64 * (PASSWORD_ALPHABET.len() as f64).log2() >= 120.0);
        // Every symbol appears, none dominates (64 000 draws, ~1 016 expected each).
        // `-` is drawn more often: passwords without one are rejected (costing ~1.3 bits).
        for &b in PASSWORD_ALPHABET {
            let c = counts[usize::from(b)];
            let expected = if b == b'-' { 1_500..4_000 } else { 600..1_500 };
            assert!(expected.contains(&c), "{} drawn {c} times", char::from(b));
        }
    }
}
