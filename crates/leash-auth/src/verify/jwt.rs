//! A JWT parsed but not trusted, and its verification against configured keys.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{Claims, JwtError, MAX_JWT_LEN, PublicKey, algorithm_name, parse_algorithm, printable};

pub(crate) fn decode_json_object(
    part: &str,
    what: &'static str,
) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        JwtError::Malformed(if what == "header" {
            "the header is not base64url"
        } else {
            "the payload is not base64url"
        })
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed(if what == "header" {
            "the header is not a JSON object"
        } else {
            "the payload is not a JSON object"
        })),
    }
}

/// A token parsed but not trusted: its claims may say anything.
pub struct UnverifiedJwt<'a> {
    signing_input: &'a str,
    signature: &'a str,
    alg: String,
    kid: Option<String>,
    claims: Map<String, Value>,
}

impl std::fmt::Debug for UnverifiedJwt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnverifiedJwt")
            .field("alg", &printable(&self.alg))
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl<'a> UnverifiedJwt<'a> {
    /// Parses a compact JWS (`header.payload.signature`, surrounding whitespace ignored).
    pub fn parse(token: &'a str) -> Result<UnverifiedJwt<'a>, JwtError> {
        let token = token.trim();
        if token.len() > MAX_JWT_LEN {
            return Err(JwtError::TooLarge);
        }
        if token.is_empty() {
            return Err(JwtError::Malformed("the token is empty"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed(
                "expected three base64url parts separated by dots",
            ));
        };
        if h.is_empty() || p.is_empty() {
            return Err(JwtError::Malformed("the header or payload is empty"));
        }
        let header = decode_json_object(h, "header")?;
        let claims = decode_json_object(p, "payload")?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => a.clone(),
            _ => return Err(JwtError::Malformed("the header has no \"alg\"")),
        };
        if header.contains_key("crit") || header.get("b64") == Some(&Value::Bool(false)) {
            return Err(JwtError::Unsupported);
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(JwtError::Malformed("the header's \"kid\" is not a string")),
        };
        Ok(UnverifiedJwt {
            signing_input: &token[..h.len() + 1 + p.len()],
            signature: s,
            alg,
            kid,
            claims,
        })
    }

    /// The claims, unverified: for choosing what to check, never for deciding.
    pub fn unverified_claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The key id the header names.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Checks the signature with one of `keys`, using the header's algorithm only if it
    /// is in `allowed` and only with keys of that algorithm's family.
    pub fn verify(&self, keys: &[PublicKey], allowed: &[Algorithm]) -> Result<Claims, JwtError> {
        let allowed_names = || {
            allowed
                .iter()
                .map(|a| algorithm_name(*a))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let refused =
            || JwtError::Algorithm(format!("{:?}", printable(&self.alg)), allowed_names());
        let alg = parse_algorithm(&self.alg).map_err(|_| refused())?;
        if !allowed.contains(&alg) {
            return Err(refused());
        }
        if self.signature.is_empty() {
            return Err(JwtError::Malformed("the token is not signed"));
        }
        let candidates: Vec<&PublicKey> = keys
            .iter()
            .filter(|k| match (&self.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(JwtError::UnknownKeyId);
        }
        let usable: Vec<&PublicKey> = candidates
            .into_iter()
            .filter(|k| k.usable_for(alg))
            .collect();
        if usable.is_empty() {
            return Err(JwtError::NoKeyForAlgorithm(algorithm_name(alg)));
        }
        for k in usable {
            match jsonwebtoken::crypto::verify(
                self.signature,
                self.signing_input.as_bytes(),
                &k.key,
                alg,
            ) {
                Ok(true) => return Ok(Claims(self.claims.clone())),
                Ok(false) => {}
                Err(_) => return Err(JwtError::Malformed("the signature is not base64url")),
            }
        }
        Err(JwtError::BadSignature)
    }
}
