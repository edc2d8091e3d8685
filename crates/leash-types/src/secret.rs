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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secret_material() {
        let b = SecretBytes::new(b"hunter2hunter2".to_vec());
        let s = SecretString::from("hunter2hunter2".to_owned());
        assert!(!format!("{b:?}").contains("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose_secret(), "hunter2hunter2");
    }
}
