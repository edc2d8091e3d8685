//! Token values: how they are minted, and how a scanner recognises one offline.
//!
//! Format: `<prefix><32 base62 chars of randomness><6 base62 chars of CRC32 checksum>`.
//! The random part carries ~190 bits from the OS CSPRNG. The prefix is frozen per kind
//! (`lsh.` service tokens) so that leak scanners can match it; the checksum lets them
//! drop look-alikes without asking the server. The checksum is *not* a security
//! property: a token is valid only if the server has its keyed hash.
//!
//! Tokens of other shapes (a dev root token id such as `root`, or an `id` an operator
//! chose) are still accepted by the server; they simply cannot be recognised offline.

use crate::random;
use secrecy::{ExposeSecret, SecretString};

/// Length of the random part.
const RANDOM_LEN: usize = 32;
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
        let body = random::base62(RANDOM_LEN);
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
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (body, sum) = rest.split_at(RANDOM_LEN);
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
