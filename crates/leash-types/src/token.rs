//! Token values: how they are minted, and how a scanner recognises one offline.
//!
//! Format: `<prefix><11-char locator><24 base62 chars of randomness><6-char CRC32
//! checksum>`, all base62. The random part carries ~143 bits from the OS CSPRNG. The
//! locator is not secret: it is a time-ordered 64-bit id (creation time in milliseconds
//! and 16 random bits) that lets storage keep tokens in creation order, so minting one
//! appends to the token table instead of writing a random page. It reveals when the
//! token was made, nothing else. The prefix is frozen per kind
//! (`lsh.` service tokens) so that leak scanners can match it; the checksum lets them
//! drop look-alikes without asking the server. The checksum is *not* a security
//! property: a token is valid only if the server has its keyed hash.
//!
//! Tokens of other shapes (a dev root token id such as `root`, or an `id` an operator
//! chose) are still accepted by the server; they simply cannot be recognised offline.

use crate::clock::{Clock as _, SystemClock};
use crate::random;
use secrecy::{ExposeSecret, SecretString};

/// Length of the locator.
pub const LOCATOR_LEN: usize = 11;
/// Length of the random part.
const RANDOM_LEN: usize = 24;
/// Length of the checksum part.
const CHECKSUM_LEN: usize = 6;

/// What a token is for; each kind has its own frozen prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A service token (Vault `hvs.`).
    Service,
}

impl TokenKind {
    /// The frozen prefix of this kind.
    pub const fn prefix(self) -> &'static str {
        match self {
            TokenKind::Service => "lsh.",
        }
    }

    /// Every kind.
    pub const ALL: [TokenKind; 1] = [TokenKind::Service];
}

/// A freshly minted or presented token value. Never printed by `Debug`.
pub struct TokenValue(SecretString);

impl TokenValue {
    /// Mints a new random token of `kind`.
    pub fn generate(kind: TokenKind) -> TokenValue {
        let body = format!(
            "{}{}",
            random::base62_u64(new_locator(), LOCATOR_LEN),
            random::base62(RANDOM_LEN)
        );
        let sum = checksum(kind.prefix(), &body);
        TokenValue(SecretString::from(format!("{}{body}{sum}", kind.prefix())))
    }

    /// Wraps a presented value.
    pub fn from_presented(s: SecretString) -> TokenValue {
        TokenValue(s)
    }

    /// The value; use only to return it to its owner or to hash it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// If the value claims a leash prefix but its checksum or length is wrong, it can
    /// never be valid: callers may reject it without a storage lookup.
    pub fn is_malformed_leash_token(&self) -> bool {
        let v = self.expose();
        TokenKind::ALL.iter().any(|k| v.starts_with(k.prefix())) && recognise(v).is_none()
    }
}

impl std::fmt::Debug for TokenValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenValue([REDACTED])")
    }
}

/// A fresh time-ordered locator: Unix milliseconds in the high 48 bits, 16 random bits
/// below (so ids minted in the same millisecond still differ).
pub fn new_locator() -> u64 {
    let ms = SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX >> 16))
        .unwrap_or(0);
    let r = random::bytes::<2>();
    (ms << 16) | u64::from(u16::from_be_bytes(r))
}

/// The locator of a well-formed leash token, if it is one.
pub fn locator(candidate: &str) -> Option<u64> {
    let kind = recognise(candidate)?;
    let body = &candidate[kind.prefix().len()..];
    random::decode_base62_u64(&body[..LOCATOR_LEN])
}

/// Length of an accessor.
pub const ACCESSOR_LEN: usize = 24;

/// A fresh accessor: a locator followed by random characters (~77 bits).
pub fn new_accessor() -> String {
    format!(
        "{}{}",
        random::base62_u64(new_locator(), LOCATOR_LEN),
        random::base62(ACCESSOR_LEN - LOCATOR_LEN)
    )
}

/// The locator of an accessor written by [`new_accessor`], if it looks like one.
pub fn accessor_locator(candidate: &str) -> Option<u64> {
    if candidate.len() != ACCESSOR_LEN || !candidate.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    random::decode_base62_u64(&candidate[..LOCATOR_LEN])
}

fn checksum(prefix: &str, body: &str) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix.as_bytes());
    h.update(body.as_bytes());
    random::base62_u32(h.finalize(), CHECKSUM_LEN)
}

/// Recognises a leash token offline: prefix, length, alphabet and checksum. Used by
/// leak scanners; says nothing about whether the token is live.
pub fn recognise(candidate: &str) -> Option<TokenKind> {
    let kind = TokenKind::ALL
        .into_iter()
        .find(|k| candidate.starts_with(k.prefix()))?;
    let rest = &candidate[kind.prefix().len()..];
    if rest.len() != LOCATOR_LEN + RANDOM_LEN + CHECKSUM_LEN
        || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (body, sum) = rest.split_at(LOCATOR_LEN + RANDOM_LEN);
    if checksum(kind.prefix(), body) == sum {
        Some(kind)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_recognised_and_distinct() {
        let a = TokenValue::generate(TokenKind::Service);
        let b = TokenValue::generate(TokenKind::Service);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(recognise(a.expose()), Some(TokenKind::Service));
        assert!(a.expose().starts_with("lsh."));
        let (la, lb) = (locator(a.expose()).unwrap(), locator(b.expose()).unwrap());
        assert!(la >> 16 <= lb >> 16, "locators are time-ordered");
        assert!(accessor_locator(&new_accessor()).is_some());
        assert_eq!(accessor_locator("short"), None);
        assert!(!a.is_malformed_leash_token());
        assert_eq!(format!("{a:?}"), "TokenValue([REDACTED])");
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let a = TokenValue::generate(TokenKind::Service);
        let mut s = a.expose().to_owned();
        let i = 10;
        let c = s.as_bytes()[i];
        let repl = if c == b'a' { "b" } else { "a" };
        s.replace_range(i..=i, repl);
        assert_eq!(recognise(&s), None);
        let t = TokenValue::from_presented(SecretString::from(s));
        assert!(t.is_malformed_leash_token());
        let other = TokenValue::from_presented(SecretString::from("root".to_owned()));
        assert!(!other.is_malformed_leash_token());
    }
}
