//! The barrier: encryption at rest and keyed hashes.
//!
//! A 256-bit master key (from a key file or the environment; ephemeral in dev mode) is
//! expanded with HKDF-SHA256 into independent subkeys:
//! * an AES-256-GCM key that seals every stored value, with a fresh 96-bit random nonce
//!   per write and the record's location as associated data (so a ciphertext moved to
//!   another row fails to open);
//! * an HMAC-SHA256 key for token and accessor lookups, so storage holds only keyed
//!   hashes of tokens, never tokens.
//!
//! Sealed format: `version byte (1) || nonce (12) || ciphertext+tag`.
//! Nothing here logs; key material lives in zeroizing types without `Debug` bodies.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use leash_types::{SecretBytes, random};
use sha2::Sha256;
use std::path::Path;
use zeroize::Zeroizing;

use crate::StorageError;

const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
/// Length in bytes of the master key.
pub const KEY_LEN: usize = 32;

/// A keyed hash of a token or accessor: what storage indexes instead of the value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyedHash(pub [u8; 32]);

impl KeyedHash {
    /// Compares in constant time.
    pub fn ct_eq(&self, other: &KeyedHash) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix is enough to tell hashes apart in a debugger; the hash is not secret
        // on its own, but there is no reason to print all of it.
        write!(f, "KeyedHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// The master key and everything derived from it.
pub struct Keyring {
    aead: Aes256Gcm,
    token_mac: Hmac<Sha256>,
}

impl Keyring {
    /// Derives the subkeys from a 32-byte master key.
    pub fn from_master(master: &SecretBytes) -> Result<Keyring, StorageError> {
        if master.len() != KEY_LEN {
            return Err(StorageError::InvalidKey(format!(
                "the encryption key must be {KEY_LEN} bytes, got {}",
                master.len()
            )));
        }
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"leash-barrier-v1"), master.expose());
        let mut enc = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        hk.expand(b"aes-256-gcm storage", enc.as_mut())
            .map_err(|_| StorageError::InvalidKey("key derivation failed".into()))?;
        hk.expand(b"hmac-sha256 token index", mac.as_mut())
            .map_err(|_| StorageError::InvalidKey("key derivation failed".into()))?;
        let aead = Aes256Gcm::new_from_slice(enc.as_ref())
            .map_err(|_| StorageError::InvalidKey("bad AES key length".into()))?;
        let token_mac = <Hmac<Sha256> as Mac>::new_from_slice(mac.as_ref())
            .map_err(|_| StorageError::InvalidKey("bad HMAC key length".into()))?;
        Ok(Keyring { aead, token_mac })
    }

    /// A fresh random master key.
    pub fn generate_master() -> SecretBytes {
        SecretBytes::random(KEY_LEN)
    }

    /// Encrypts `plaintext`, binding it to `location` (e.g. `"kv/<mount>/<key>"`).
    pub fn seal(&self, location: &str, plaintext: &[u8]) -> Result<Vec<u8>, StorageError> {
        let nonce_bytes = random::bytes::<NONCE_LEN>();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let ct = self
            .aead
            .encrypt(
                nonce,
                Payload {
                    msg: plaintext,
                    aad: location.as_bytes(),
                },
            )
            .map_err(|_| StorageError::Crypto("encryption failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`Keyring::seal`] produced for the same `location`.
    pub fn open(&self, location: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StorageError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != SEAL_VERSION {
            return Err(StorageError::Corrupt(format!(
                "sealed value at {location} is malformed"
            )));
        }
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        self.aead
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: location.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| StorageError::Crypto(format!("cannot decrypt the value at {location}")))
    }

    /// The key under which a token (or accessor) with a time-ordered `locator` is
    /// stored: the locator (big-endian, 8 bytes) followed by the first 24 bytes of the
    /// keyed hash. Rows then sort by creation time, so new tokens append to the table
    /// instead of landing on random pages; the 192-bit keyed part still cannot be
    /// computed without the key. Values without a locator use 0.
    pub fn located_hash(&self, locator: u64, value: &str) -> KeyedHash {
        let h = self.token_hash(value);
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&locator.to_be_bytes());
        out[8..].copy_from_slice(&h.0[..24]);
        KeyedHash(out)
    }

    /// The keyed hash under which a token (or accessor) is indexed.
    pub fn token_hash(&self, value: &str) -> KeyedHash {
        let mut m = self.token_mac.clone();
        m.update(value.as_bytes());
        KeyedHash(m.finalize().into_bytes().into())
    }
}

/// Reads a master key file (base64 or hex of 32 bytes), or creates one with mode 0600
/// when it does not exist. Returns the key and whether it was created.
pub fn load_or_create_key_file(path: &Path) -> Result<(SecretBytes, bool), StorageError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((decode_key(text.trim(), &path.display().to_string())?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keyring::generate_master();
            let encoded =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()));
            write_private_file(path, format!("{}\n", encoded.as_str()).as_bytes()).map_err(
                |e| StorageError::file(format!("cannot create key file {}", path.display()), e),
            )?;
            Ok((key, true))
        }
        Err(e) => Err(StorageError::file(
            format!("cannot read key file {}", path.display()),
            e,
        )),
    }
}

/// Decodes a key given as base64 (standard) or 64 hex characters; `origin` names where
/// it came from in the error (never the key itself).
pub fn decode_key(text: &str, origin: &str) -> Result<SecretBytes, StorageError> {
    let bytes = if text.len() == KEY_LEN * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    };
    match bytes {
        Some(b) if b.len() == KEY_LEN => Ok(SecretBytes::new(b)),
        Some(mut b) => {
            zeroize::Zeroize::zeroize(&mut b);
            Err(StorageError::InvalidKey(format!(
                "{origin}: the key must decode to {KEY_LEN} bytes (base64 or hex)"
            )))
        }
        None => Err(StorageError::InvalidKey(format!(
            "{origin}: the key is neither base64 nor hex"
        ))),
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::from_master(&Keyring::generate_master()).unwrap()
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let k = ring();
        let a = k.seal("kv/x", b"secret value").unwrap();
        let b = k.seal("kv/x", b"secret value").unwrap();
        assert_ne!(a, b, "each write uses a fresh nonce");
        assert!(
            !a.windows(6).any(|w| w == b"secret"),
            "no plaintext in the sealed bytes"
        );
        assert_eq!(k.open("kv/x", &a).unwrap().as_slice(), b"secret value");
    }

    #[test]
    fn moved_or_tampered_ciphertext_fails() {
        let k = ring();
        let mut a = k.seal("kv/x", b"v").unwrap();
        assert!(k.open("kv/y", &a).is_err(), "bound to its location");
        let last = a.len() - 1;
        a[last] ^= 1;
        assert!(k.open("kv/x", &a).is_err());
        assert!(
            ring().open("kv/x", &k.seal("kv/x", b"v").unwrap()).is_err(),
            "other key"
        );
    }

    #[test]
    fn token_hash_is_keyed() {
        let (a, b) = (ring(), ring());
        assert_eq!(a.token_hash("t"), a.token_hash("t"));
        assert_ne!(a.token_hash("t"), b.token_hash("t"));
        assert!(a.token_hash("t").ct_eq(&a.token_hash("t")));
    }

    #[test]
    fn key_file_is_created_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/leash.key");
        let (k1, created) = load_or_create_key_file(&p).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, created) = load_or_create_key_file(&p).unwrap();
        assert!(!created);
        assert_eq!(k1.expose(), k2.expose());
        std::fs::write(&p, "not a key").unwrap();
        let e = load_or_create_key_file(&p).err().unwrap().to_string();
        assert!(e.contains("neither base64 nor hex"), "{e}");
    }
}
