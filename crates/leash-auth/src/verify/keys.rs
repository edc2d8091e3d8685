//! Public keys from PEM bundles and JWKS documents, and the algorithm families a key may verify.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::{KeyError, MAX_KEYS};

/// Which kind of public key (and so which algorithms it may verify).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// RSA: `RS*`, `PS*`.
    Rsa,
    /// ECDSA: `ES256` (P-256), `ES384` (P-384).
    Ec,
    /// Ed25519: `EdDSA`.
    Ed,
}

/// The family of keys that verify `alg`; `None` for HMAC (never with public keys).
pub fn family_of(alg: Algorithm) -> Option<KeyFamily> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(KeyFamily::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(KeyFamily::Ec),
        Algorithm::EdDSA => Some(KeyFamily::Ed),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
    }
}

/// The JOSE name of `alg`.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// An asymmetric signing algorithm by its JOSE name. `none` and `HS*` are refused: they
/// cannot be verified with a public key.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    let alg = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        n if n.eq_ignore_ascii_case("none") => {
            return Err(KeyError::AlgorithmNone);
        }
        n if n.to_ascii_uppercase().starts_with("HS") => {
            return Err(KeyError::AlgorithmHmac(printable(n)));
        }
        n => {
            return Err(KeyError::AlgorithmUnsupported(printable(n)));
        }
    };
    Ok(alg)
}

/// A short, printable rendering of attacker-supplied text for error messages.
pub(crate) fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(24)
        .collect();
    if s.len() > out.len() {
        out.push('…');
    }
    out
}

/// A public key a token may be verified with.
#[derive(Clone)]
pub struct PublicKey {
    pub(super) kid: Option<String>,
    pub(super) family: KeyFamily,
    pub(super) alg: Option<Algorithm>,
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg.map(algorithm_name))
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Its key id (`kid`), if it came from a JWKS that names one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Its family.
    pub fn family(&self) -> KeyFamily {
        self.family
    }

    pub(super) fn usable_for(&self, alg: Algorithm) -> bool {
        family_of(alg) == Some(self.family) && self.alg.is_none_or(|a| a == alg)
    }
}

/// The PEM blocks of `pem`, as (label, whole block text).
pub(crate) fn pem_blocks(pem: &str) -> Result<Vec<(String, String)>, KeyError> {
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            return Err(KeyError::PemUnclosed);
        };
        let label = after[..label_end].trim().to_owned();
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            return Err(KeyError::PemNoEnd(label));
        };
        let stop = start + end + end_marker.len();
        out.push((label, format!("{}\n", &rest[start..stop])));
        rest = &rest[stop..];
    }
    if !rest.trim().is_empty() && out.is_empty() {
        return Err(KeyError::NoPem);
    }
    Ok(out)
}

/// The public keys in a PEM text: `PUBLIC KEY` (RSA, EC or Ed25519), `RSA PUBLIC KEY`
/// or `CERTIFICATE` blocks, any number. A private key is refused (it does not belong in
/// configuration). The error says which block failed.
pub fn public_keys_from_pem(pem: &str) -> Result<Vec<PublicKey>, KeyError> {
    let blocks = pem_blocks(pem)?;
    if blocks.is_empty() {
        return Err(KeyError::NoPem);
    }
    if blocks.len() > MAX_KEYS {
        return Err(KeyError::TooMany);
    }
    let mut keys = Vec::new();
    for (i, (label, block)) in blocks.iter().enumerate() {
        if label.contains("PRIVATE") {
            return Err(KeyError::PrivateKey(i + 1));
        }
        if !matches!(
            label.as_str(),
            "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE"
        ) {
            return Err(KeyError::NotPublic(i + 1, label.clone()));
        }
        let b = block.as_bytes();
        let (family, key) = if let Ok(k) = DecodingKey::from_rsa_pem(b) {
            (KeyFamily::Rsa, k)
        } else if let Ok(k) = DecodingKey::from_ec_pem(b) {
            (KeyFamily::Ec, k)
        } else if let Ok(k) = DecodingKey::from_ed_pem(b) {
            (KeyFamily::Ed, k)
        } else {
            return Err(KeyError::UnreadableKey(i + 1));
        };
        keys.push(PublicKey {
            kid: None,
            family,
            alg: None,
            key,
        });
    }
    Ok(keys)
}

pub(crate) fn b64url_len(s: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(s).ok().map(|v| v.len())
}

/// One JWK as a verification key; `None` for keys that are not usable for signatures
/// (symmetric `oct` keys, `use: enc`, HMAC or unknown `alg`, bad parameters).
pub(crate) fn jwk_key(jwk: &Map<String, Value>) -> Option<PublicKey> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let alg = match s("alg") {
        Some(a) => Some(parse_algorithm(a).ok()?),
        None => None,
    };
    let kid = s("kid").map(str::to_owned);
    let (family, alg, key) = match s("kty")? {
        "RSA" => {
            let (n, e) = (s("n")?, s("e")?);
            // At least 2048-bit moduli (ring refuses smaller ones anyway).
            if b64url_len(n)? < 256 || b64url_len(e)? == 0 {
                return None;
            }
            (
                KeyFamily::Rsa,
                alg,
                DecodingKey::from_rsa_components(n, e).ok()?,
            )
        }
        "EC" => {
            let (want, size) = match s("crv")? {
                "P-256" => (Algorithm::ES256, 32),
                "P-384" => (Algorithm::ES384, 48),
                _ => return None,
            };
            if alg.is_some_and(|a| a != want) {
                return None;
            }
            let (x, y) = (s("x")?, s("y")?);
            if b64url_len(x)? != size || b64url_len(y)? != size {
                return None;
            }
            (
                KeyFamily::Ec,
                Some(want),
                DecodingKey::from_ec_components(x, y).ok()?,
            )
        }
        "OKP" => {
            if s("crv")? != "Ed25519" {
                return None;
            }
            let x = s("x")?;
            if b64url_len(x)? != 32 {
                return None;
            }
            (
                KeyFamily::Ed,
                Some(Algorithm::EdDSA),
                DecodingKey::from_ed_components(x).ok()?,
            )
        }
        _ => return None,
    };
    let key = PublicKey {
        kid,
        family,
        alg,
        key,
    };
    key.alg.is_none_or(|a| key.usable_for(a)).then_some(key)
}

/// The signature keys of a JWKS document (`{"keys": [...]}`). Keys leash cannot or must
/// not use (symmetric, encryption-only, unknown types) are skipped; none left is an
/// error.
pub fn public_keys_from_jwks(body: &[u8]) -> Result<Vec<PublicKey>, KeyError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| KeyError::JwksNotJson)?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err(KeyError::JwksNoList);
    };
    let keys: Vec<PublicKey> = list
        .iter()
        .take(MAX_KEYS)
        .filter_map(Value::as_object)
        .filter_map(jwk_key)
        .collect();
    if keys.is_empty() {
        return Err(KeyError::JwksNoKeys);
    }
    Ok(keys)
}
