//! Wrappers that keep secrets out of logs and memory dumps.
//!
//! [`SecretString`] (from `secrecy`) prints `[REDACTED]` in `Debug`, is zeroized on drop,
//! and hands out its value only through `expose_secret()`, so every read of a secret is
//! visible in review. [`SecretBytes`] does the same for key material.

pub use secrecy::{ExposeSecret, SecretString};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Secret bytes (keys, salts): no `Debug` body, no `Clone`, zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }

    /// `n` fresh random bytes.
    pub fn random(n: usize) -> SecretBytes {
        let mut v = vec![0u8; n];
        crate::random::fill(&mut v);
        SecretBytes(v)
    }

    /// The bytes; call sites are where secrets are used, so keep them few.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

/// `message` with every non-empty secret in `secrets` replaced by `[redacted]`: for
/// text from elsewhere (a database or API server's error) that may echo what it was sent.
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(message.to_owned(), |m, s| m.replace(s, "[redacted]"))
}

/// Serde for a [`SecretString`] field (`#[serde(with = "leash_types::secret::serde_str")]`):
/// a plain JSON string on the wire and in (sealed) storage, a secret in memory.
pub mod serde_str {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the secret as a string.
    pub fn serialize<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose_secret())
    }

    /// Reads a string as a secret.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(SecretString::from)
    }
}

/// Serde for an `Option<SecretString>` field, like [`serde_str`]; absent or `null` is
/// `None` (add `#[serde(default)]` for an absent key).
pub mod serde_opt_str {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the secret as a string, `None` as `null`.
    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v.expose_secret()),
            None => s.serialize_none(),
        }
    }

    /// Reads a string (or `null`) as a secret.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Option::<String>::deserialize(d).map(|o| o.map(SecretString::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_every_secret_and_ignores_empty_ones() {
        assert_eq!(
            scrub("login failed for pw1 (pw1) and tok", &["pw1", "", "tok"]),
            "login failed for [redacted] ([redacted]) and [redacted]"
        );
        assert_eq!(scrub("nothing here", &[]), "nothing here");
        assert_eq!(scrub("abc", &[""]), "abc");
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Stored {
        #[serde(with = "serde_str")]
        password: SecretString,
        #[serde(default, with = "serde_opt_str")]
        token: Option<SecretString>,
    }

    #[test]
    fn serde_adapters_store_plain_strings_and_hold_secrets() {
        let s: Stored = serde_json::from_str(r#"{"password":"hunter22"}"#).unwrap();
        assert_eq!(s.password.expose_secret(), "hunter22");
        assert!(s.token.is_none());
        let s: Stored = serde_json::from_str(r#"{"password":"a","token":"t0k"}"#).unwrap();
        assert_eq!(s.token.as_ref().unwrap().expose_secret(), "t0k");
        let back = serde_json::to_string(&s).unwrap();
        assert_eq!(back, r#"{"password":"a","token":"t0k"}"#);
        let none = Stored {
            password: SecretString::from("p".to_owned()),
            token: None,
        };
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"password":"p","token":null}"#
        );
    }

    #[test]
    fn debug_never_prints_secret_material() {
        let b = SecretBytes::new(b"hunter2hunter2".to_vec());
        let s = SecretString::from("hunter2hunter2".to_owned());
        assert!(!format!("{b:?}").contains("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose_secret(), "hunter2hunter2");
    }
}
