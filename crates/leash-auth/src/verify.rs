//! Verifying JSON Web Tokens, shared by the `jwt` and `kubernetes` auth methods.
//!
//! A token goes through two types: [`UnverifiedJwt`] (parsed, nothing trusted) and,
//! after [`UnverifiedJwt::verify`] found a configured key whose signature checks out,
//! [`Claims`] (whose time, issuer and audience checks the caller then runs). The rules:
//!
//! * **Algorithms are the verifier's choice, never the token's.** The header's `alg` must
//!   be in the caller's list; `none` and every HMAC algorithm (`HS256`…) are refused
//!   outright — a public key is never used as an HMAC secret (algorithm confusion), and
//!   a key is only ever used with an algorithm of its own family (RSA, EC, Ed25519) and,
//!   when its JWK names one, with that algorithm only.
//! * Keys come from configuration only: the `jku`, `x5u`, `jwk` and `x5c` header fields
//!   are ignored, `crit` extensions and unencoded payloads (`b64: false`) are refused.
//! * Errors ([`JwtError`]) name the failed check and never contain the token.
//!
//! Also here, because both methods need them: PEM and JWKS key loading, `*` globs, claim
//! look-up by name or JSON pointer, and an HTTPS client that trusts only a pinned CA.
//!
//! Not here: fetching or caching keys, roles and bindings (the methods do that).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// The largest token accepted, in bytes (real ones are a few KiB).
pub const MAX_JWT_LEN: usize = 64 * 1024;

/// Most keys taken from one JWKS or PEM bundle.
pub const MAX_KEYS: usize = 100;

/// Why a token was refused. Messages name the check; they never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a compact JWS (three base64url parts of JSON).
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// Larger than [`MAX_JWT_LEN`].
    #[error("malformed JWT: larger than {MAX_JWT_LEN} bytes")]
    TooLarge,
    /// The header's algorithm is not one the verifier allows (`none`, `HS256`…).
    #[error("JWT algorithm {0} is not allowed (allowed: {1})")]
    Algorithm(String, String),
    /// The header has `crit` extensions or an unencoded payload.
    #[error("JWT header uses extensions leash does not support (crit or b64)")]
    Unsupported,
    /// The token names a key id (`kid`) no configured key has.
    #[error("no configured key matches the JWT's key id (kid)")]
    UnknownKeyId,
    /// No configured key can check a signature of this algorithm.
    #[error("no configured key can verify a {0} signature")]
    NoKeyForAlgorithm(&'static str),
    /// No configured key verifies the signature.
    #[error("invalid JWT signature")]
    BadSignature,
    /// The token has no `exp` and one is required.
    #[error("token has no expiry (exp claim)")]
    MissingExpiry,
    /// `exp` has passed (beyond the leeway).
    #[error("token has expired (exp)")]
    Expired,
    /// `nbf` has not come yet (beyond the leeway).
    #[error("token is not yet valid (nbf)")]
    NotYetValid,
    /// `iat` lies in the future (beyond the clock-skew leeway).
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
    /// A time claim is not a number.
    #[error("malformed JWT: the {0} claim is not a number")]
    BadTimeClaim(&'static str),
    /// `iss` is missing or not the expected issuer.
    #[error("issuer mismatch (iss)")]
    Issuer,
    /// `aud` does not name a bound audience (or is missing while one is required).
    #[error("invalid audience (aud)")]
    Audience,
    /// The token has an `aud` but the role binds none (Vault's rule for JWT roles).
    #[error(
        "invalid audience (aud): the token has an audience claim but the role binds no audiences"
    )]
    UnboundAudience,
}

/// A refused token: 403 naming the check that failed (never the token).
pub(crate) fn refused(e: &JwtError) -> leash_backend::CoreError {
    leash_backend::CoreError::Forbidden(e.to_string())
}

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
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
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
            return Err("algorithm \"none\" (unsigned tokens) is never accepted".to_owned());
        }
        n if n.to_ascii_uppercase().starts_with("HS") => {
            return Err(format!(
                "algorithm {:?} (HMAC, a shared secret) cannot be verified with public keys",
                printable(n)
            ));
        }
        n => {
            return Err(format!(
                "unsupported algorithm {:?}; supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
                printable(n)
            ));
        }
    };
    Ok(alg)
}

/// A short, printable rendering of attacker-supplied text for error messages.
fn printable(s: &str) -> String {
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
    kid: Option<String>,
    family: KeyFamily,
    alg: Option<Algorithm>,
    key: DecodingKey,
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

    fn usable_for(&self, alg: Algorithm) -> bool {
        family_of(alg) == Some(self.family) && self.alg.is_none_or(|a| a == alg)
    }
}

/// The PEM blocks of `pem`, as (label, whole block text).
fn pem_blocks(pem: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            return Err("a PEM BEGIN line is not closed".to_owned());
        };
        let label = after[..label_end].trim().to_owned();
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            return Err(format!("PEM block {label:?} has no END line"));
        };
        let stop = start + end + end_marker.len();
        out.push((label, format!("{}\n", &rest[start..stop])));
        rest = &rest[stop..];
    }
    if !rest.trim().is_empty() && out.is_empty() {
        return Err("no PEM block found (expected a PUBLIC KEY or CERTIFICATE block)".to_owned());
    }
    Ok(out)
}

/// The public keys in a PEM text: `PUBLIC KEY` (RSA, EC or Ed25519), `RSA PUBLIC KEY`
/// or `CERTIFICATE` blocks, any number. A private key is refused (it does not belong in
/// configuration). The error says which block failed.
pub fn public_keys_from_pem(pem: &str) -> Result<Vec<PublicKey>, String> {
    let blocks = pem_blocks(pem)?;
    if blocks.is_empty() {
        return Err("no PEM block found (expected a PUBLIC KEY or CERTIFICATE block)".to_owned());
    }
    if blocks.len() > MAX_KEYS {
        return Err(format!("too many keys (at most {MAX_KEYS})"));
    }
    let mut keys = Vec::new();
    for (i, (label, block)) in blocks.iter().enumerate() {
        if label.contains("PRIVATE") {
            return Err(format!(
                "PEM block {} is a private key: configure the public key instead",
                i + 1
            ));
        }
        if !matches!(
            label.as_str(),
            "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE"
        ) {
            return Err(format!(
                "PEM block {} ({label:?}) is not a public key or certificate",
                i + 1
            ));
        }
        let b = block.as_bytes();
        let (family, key) = if let Ok(k) = DecodingKey::from_rsa_pem(b) {
            (KeyFamily::Rsa, k)
        } else if let Ok(k) = DecodingKey::from_ec_pem(b) {
            (KeyFamily::Ec, k)
        } else if let Ok(k) = DecodingKey::from_ed_pem(b) {
            (KeyFamily::Ed, k)
        } else {
            return Err(format!(
                "PEM block {} is not an RSA, EC or Ed25519 public key",
                i + 1
            ));
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

fn b64url_len(s: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(s).ok().map(|v| v.len())
}

/// One JWK as a verification key; `None` for keys that are not usable for signatures
/// (symmetric `oct` keys, `use: enc`, HMAC or unknown `alg`, bad parameters).
fn jwk_key(jwk: &Map<String, Value>) -> Option<PublicKey> {
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
pub fn public_keys_from_jwks(body: &[u8]) -> Result<Vec<PublicKey>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| "the JWKS is not JSON".to_owned())?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err("the JWKS has no \"keys\" list".to_owned());
    };
    let keys: Vec<PublicKey> = list
        .iter()
        .take(MAX_KEYS)
        .filter_map(Value::as_object)
        .filter_map(jwk_key)
        .collect();
    if keys.is_empty() {
        return Err(
            "the JWKS has no usable signature keys (RSA, EC P-256/P-384, Ed25519)".to_owned(),
        );
    }
    Ok(keys)
}

fn decode_json_object(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtError> {
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

/// Leeways for the time claims, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    /// Now, in Unix seconds (from the server's clock).
    pub now: i64,
    /// Extra seconds after `exp` during which the token still counts.
    pub exp_leeway: i64,
    /// Seconds before `nbf` from which the token already counts.
    pub nbf_leeway: i64,
    /// Clock skew allowed on every time claim (`exp`, `nbf`, `iat`).
    pub skew: i64,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
}

/// Verified claims.
#[derive(Clone)]
pub struct Claims(Map<String, Value>);

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Claims{{{}}}",
            self.0.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

fn numeric_date(v: Option<&Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                // Whole seconds; saturating at the i64 range.
                Ok(Some(f.floor() as i64))
            } else {
                Err(JwtError::BadTimeClaim(name))
            }
        }
        Some(_) => Err(JwtError::BadTimeClaim(name)),
    }
}

impl Claims {
    /// All claims.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// A claim by name, or by JSON pointer when `path` starts with `/`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        claim(&self.0, path)
    }

    /// A string claim (numbers and booleans are turned into strings).
    pub fn string(&self, path: &str) -> Option<String> {
        match self.get(path)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Checks `exp`, `nbf` and `iat` against `rules`.
    pub fn check_times(&self, rules: &TimeRules) -> Result<(), JwtError> {
        let now = rules.now;
        let skew = rules.skew.max(0);
        match numeric_date(self.0.get("exp"), "exp")? {
            None if rules.require_exp => return Err(JwtError::MissingExpiry),
            Some(exp)
                if now
                    >= exp
                        .saturating_add(rules.exp_leeway.max(0))
                        .saturating_add(skew) =>
            {
                return Err(JwtError::Expired);
            }
            _ => {}
        }
        if let Some(nbf) = numeric_date(self.0.get("nbf"), "nbf")?
            && now
                .saturating_add(rules.nbf_leeway.max(0))
                .saturating_add(skew)
                < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        if let Some(iat) = numeric_date(self.0.get("iat"), "iat")?
            && now.saturating_add(skew) < iat
        {
            return Err(JwtError::IssuedInFuture);
        }
        Ok(())
    }

    /// Checks that `iss` is exactly `expected`.
    pub fn check_issuer(&self, expected: &str) -> Result<(), JwtError> {
        match self.0.get("iss") {
            Some(Value::String(iss)) if iss == expected => Ok(()),
            _ => Err(JwtError::Issuer),
        }
    }

    /// The `aud` claim as a list (a single string is a list of one).
    pub fn audiences(&self) -> Result<Vec<&str>, JwtError> {
        match self.0.get("aud") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(a)) => Ok(vec![a.as_str()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or(JwtError::Audience))
                .collect(),
            Some(_) => Err(JwtError::Audience),
        }
    }

    /// Checks `aud` against `bound`: some audience must be bound when any are. With no
    /// bound audiences, a token that has an `aud` is refused when `strict` (Vault's JWT
    /// rule) and accepted otherwise.
    pub fn check_audience(&self, bound: &[String], strict: bool) -> Result<(), JwtError> {
        let auds = self.audiences()?;
        if bound.is_empty() {
            if strict && !auds.is_empty() {
                return Err(JwtError::UnboundAudience);
            }
            return Ok(());
        }
        if auds.iter().any(|a| bound.iter().any(|b| b == a)) {
            Ok(())
        } else {
            Err(JwtError::Audience)
        }
    }
}

/// A claim of `claims` by name, or by JSON pointer (RFC 6901) when `path` starts with
/// `/` (e.g. `/groups/0`, `/kubernetes.io/namespace`).
pub fn claim<'c>(claims: &'c Map<String, Value>, path: &str) -> Option<&'c Value> {
    let Some(pointer) = path.strip_prefix('/') else {
        return claims.get(path);
    };
    let mut segments = pointer
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"));
    let first = segments.next()?;
    let mut cur = claims.get(&first)?;
    for seg in segments {
        cur = match cur {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Whether `value` matches `pattern`, where `*` stands for any run of characters
/// (including none) and everything else is literal: `*`, `agents-*`, `*-prod`, `a*b*c`.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let p = pattern.as_bytes();
    let v = value.as_bytes();
    let (mut pi, mut vi) = (0usize, 0usize);
    // Where the last `*` was, and the value position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The certificates of a PEM text (a CA bundle), at least one.
pub fn certificates_from_pem(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read the PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found (expected a CERTIFICATE block)".to_owned());
    }
    Ok(certs)
}

/// An HTTP client for fetching keys and calling the Kubernetes API: the whole request
/// bounded by `timeout`, no redirects (a bearer token must not follow one), and, when
/// `ca_pem` is given, TLS that trusts **only** those certificates (the system's roots are
/// not consulted), so a server certificate from any other CA is refused.
pub fn http_client(ca_pem: Option<&str>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("leash/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem.filter(|p| !p.trim().is_empty()) {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates_from_pem(pem)? {
            roots
                .add(cert)
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder = builder.use_preconfigured_tls(tls);
    }
    builder
        .build()
        .map_err(|e| format!("HTTP client setup failed: {}", describe_http_error(&e)))
}

/// Why an HTTP exchange failed, from the innermost cause (e.g. `invalid peer
/// certificate: UnknownIssuer`), without the URL.
pub fn describe_http_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut deepest: &dyn std::error::Error = e;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    let inner = deepest.to_string();
    if e.is_connect() {
        format!("cannot connect: {inner}")
    } else {
        inner
    }
}

/// Reads a response body of at most `limit` bytes.
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(format!("the answer is larger than {limit} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(describe_http_error(&e)),
        }
    }
}

/// Keys made at test time with the `openssl` command (no key is ever committed).
#[cfg(test)]
pub(crate) mod testkeys {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// A generated key pair.
    pub(crate) struct KeyPair {
        /// PKCS#8 private key PEM.
        pub(crate) private_pem: String,
        /// SPKI public key PEM.
        pub(crate) public_pem: String,
        /// A self-signed certificate for the key.
        pub(crate) cert_pem: String,
        /// The public key as a JWK (without `kid`).
        pub(crate) jwk: serde_json::Value,
    }

    fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command is needed to make test keys");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn make(kind: &str) -> KeyPair {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let gen_args: &[&str] = match kind {
            "rsa" => &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "k.pem",
            ],
            "ec" => &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "k.pem",
            ],
            _ => &["genpkey", "-algorithm", "ED25519", "-out", "k.pem"],
        };
        openssl(d, gen_args);
        openssl(d, &["pkey", "-in", "k.pem", "-pubout", "-out", "pub.pem"]);
        openssl(
            d,
            &[
                "req", "-x509", "-new", "-key", "k.pem", "-subj", "/CN=test", "-days", "2", "-out",
                "cert.pem",
            ],
        );
        let der = openssl(d, &["pkey", "-pubin", "-in", "pub.pem", "-outform", "DER"]);
        let jwk = match kind {
            "rsa" => {
                let m = String::from_utf8(openssl(
                    d,
                    &["rsa", "-pubin", "-in", "pub.pem", "-modulus", "-noout"],
                ))
                .unwrap();
                let hex = m.trim().trim_start_matches("Modulus=");
                let n: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"})
            }
            "ec" => {
                let point = &der[der.len() - 64..];
                serde_json::json!({
                    "kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[..32]),
                    "y": URL_SAFE_NO_PAD.encode(&point[32..]),
                })
            }
            _ => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]),
            }),
        };
        let read = |f: &str| std::fs::read_to_string(PathBuf::from(d).join(f)).unwrap();
        KeyPair {
            private_pem: read("k.pem"),
            public_pem: read("pub.pem"),
            cert_pem: read("cert.pem"),
            jwk,
        }
    }

    /// An RSA 2048 key pair (made once per test binary).
    pub(crate) fn rsa() -> &'static KeyPair {
        static K: OnceLock<KeyPair> = OnceLock::new();
        K.get_or_init(|| make("rsa"))
    }

    /// A second, unrelated RSA key pair.
    pub(crate) fn rsa2() -> &'static KeyPair {
        static K: OnceLock<KeyPair> = OnceLock::new();
        K.get_or_init(|| make("rsa"))
    }

    /// An EC P-256 key pair.
    pub(crate) fn ec() -> &'static KeyPair {
        static K: OnceLock<KeyPair> = OnceLock::new();
        K.get_or_init(|| make("ec"))
    }

    /// An Ed25519 key pair.
    pub(crate) fn ed() -> &'static KeyPair {
        static K: OnceLock<KeyPair> = OnceLock::new();
        K.get_or_init(|| make("ed"))
    }

    /// A token signed with `alg` by `key` (PEM), with optional `kid`.
    pub(crate) fn sign(
        alg: jsonwebtoken::Algorithm,
        key_pem: &str,
        kid: Option<&str>,
        claims: &serde_json::Value,
    ) -> String {
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = kid.map(str::to_owned);
        let key = match alg {
            jsonwebtoken::Algorithm::ES256 | jsonwebtoken::Algorithm::ES384 => {
                jsonwebtoken::EncodingKey::from_ec_pem(key_pem.as_bytes()).unwrap()
            }
            jsonwebtoken::Algorithm::EdDSA => {
                jsonwebtoken::EncodingKey::from_ed_pem(key_pem.as_bytes()).unwrap()
            }
            jsonwebtoken::Algorithm::HS256
            | jsonwebtoken::Algorithm::HS384
            | jsonwebtoken::Algorithm::HS512 => {
                jsonwebtoken::EncodingKey::from_secret(key_pem.as_bytes())
            }
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
        };
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }

    /// A token with a hand-made header (e.g. `alg: none`) and signature.
    pub(crate) fn raw_token(
        header: &serde_json::Value,
        claims: &serde_json::Value,
        sig: &str,
    ) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            sig
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testkeys::{self, raw_token, sign};
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_900_000_000;

    fn claims_ok() -> Value {
        json!({"sub": "agent-1", "iss": "https://issuer.test", "aud": ["leash"],
               "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 300})
    }

    fn rules() -> TimeRules {
        TimeRules {
            now: NOW,
            exp_leeway: 0,
            nbf_leeway: 0,
            skew: 0,
            require_exp: true,
        }
    }

    fn rsa_keys() -> Vec<PublicKey> {
        public_keys_from_pem(&testkeys::rsa().public_pem).unwrap()
    }

    const RS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];

    #[test]
    fn a_good_rs256_token_verifies_and_its_claims_are_read() {
        let t = sign(
            Algorithm::RS256,
            &testkeys::rsa().private_pem,
            None,
            &claims_ok(),
        );
        let c = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&rsa_keys(), RS)
            .unwrap();
        c.check_times(&rules()).unwrap();
        c.check_issuer("https://issuer.test").unwrap();
        c.check_audience(&["leash".into()], true).unwrap();
        assert_eq!(c.string("sub").as_deref(), Some("agent-1"));
        // Surrounding whitespace (a token file's newline) is ignored.
        UnverifiedJwt::parse(&format!(" {t}\n"))
            .unwrap()
            .verify(&rsa_keys(), RS)
            .unwrap();
    }

    #[test]
    fn ec_ed25519_and_certificate_keys_verify() {
        let ec = testkeys::ec();
        let t = sign(Algorithm::ES256, &ec.private_pem, None, &claims_ok());
        let keys = public_keys_from_pem(&ec.public_pem).unwrap();
        assert_eq!(keys[0].family(), KeyFamily::Ec);
        UnverifiedJwt::parse(&t).unwrap().verify(&keys, RS).unwrap();
        let from_cert = public_keys_from_pem(&ec.cert_pem).unwrap();
        UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&from_cert, RS)
            .unwrap();

        let ed = testkeys::ed();
        let t = sign(Algorithm::EdDSA, &ed.private_pem, None, &claims_ok());
        let keys = public_keys_from_pem(&ed.public_pem).unwrap();
        UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&keys, &[Algorithm::EdDSA])
            .unwrap();

        let rsa = testkeys::rsa();
        let t = sign(Algorithm::RS256, &rsa.private_pem, None, &claims_ok());
        let from_cert = public_keys_from_pem(&rsa.cert_pem).unwrap();
        UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&from_cert, RS)
            .unwrap();
        // A bundle of several keys: any may sign.
        let bundle = format!("{}{}", testkeys::rsa2().public_pem, rsa.public_pem);
        let keys = public_keys_from_pem(&bundle).unwrap();
        assert_eq!(keys.len(), 2);
        UnverifiedJwt::parse(&t).unwrap().verify(&keys, RS).unwrap();
    }

    #[test]
    fn malformed_tokens_are_named_and_never_echoed() {
        let good = sign(
            Algorithm::RS256,
            &testkeys::rsa().private_pem,
            None,
            &claims_ok(),
        );
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            "not-a-jwt".to_owned(),
            "a.b".to_owned(),
            format!("{good}.extra"),
            format!("!!!.{}.{}", parts[1], parts[2]),
            format!("{}.!!!.{}", parts[0], parts[2]),
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("[1]"),
                parts[1],
                parts[2]
            ),
            format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("{}"), parts[1], parts[2]),
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode("\"x\""),
                parts[2]
            ),
            "x".repeat(MAX_JWT_LEN + 1),
        ];
        for bad in cases {
            let e = UnverifiedJwt::parse(&bad).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("malformed JWT"), "{msg}");
            assert!(bad.len() < 8 || !msg.contains(&bad[..8]), "{msg}");
        }
        // A signature that is not base64url.
        let t = format!("{}.{}.***", parts[0], parts[1]);
        let e = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&rsa_keys(), RS)
            .unwrap_err();
        assert!(matches!(e, JwtError::Malformed(_)), "{e}");
    }

    #[test]
    fn alg_none_and_unsigned_tokens_are_refused() {
        for alg in ["none", "None", "NONE"] {
            let t = raw_token(&json!({"alg": alg, "typ": "JWT"}), &claims_ok(), "");
            let e = UnverifiedJwt::parse(&t)
                .unwrap()
                .verify(&rsa_keys(), RS)
                .unwrap_err();
            assert!(matches!(e, JwtError::Algorithm(..)), "{e}");
            assert!(e.to_string().contains("not allowed"), "{e}");
        }
        let t = raw_token(&json!({"alg": "RS256"}), &claims_ok(), "");
        let e = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&rsa_keys(), RS)
            .unwrap_err();
        assert_eq!(e, JwtError::Malformed("the token is not signed"));
        assert!(parse_algorithm("none").is_err());
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let rsa = testkeys::rsa();
        // The classic confusion: HMAC over the token with the RSA public key as secret.
        let t = sign(Algorithm::HS256, &rsa.public_pem, None, &claims_ok());
        let e = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&rsa_keys(), RS)
            .unwrap_err();
        assert!(matches!(e, JwtError::Algorithm(..)), "{e}");
        // Even a caller that (wrongly) lists HS256 gets no HMAC check with a public key.
        let e = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&rsa_keys(), &[Algorithm::HS256, Algorithm::RS256])
            .unwrap_err();
        assert!(matches!(e, JwtError::Algorithm(..)), "{e}");
        assert!(parse_algorithm("HS256").is_err());
    }

    #[test]
    fn keys_are_used_only_with_their_own_family_and_kid() {
        let rsa = testkeys::rsa();
        let ec = testkeys::ec();
        // An RS256 token against EC keys only.
        let t = sign(Algorithm::RS256, &rsa.private_pem, None, &claims_ok());
        let ec_keys = public_keys_from_pem(&ec.public_pem).unwrap();
        let e = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&ec_keys, RS)
            .unwrap_err();
        assert_eq!(e, JwtError::NoKeyForAlgorithm("RS256"));
        // An algorithm the verifier does not allow.
        let t = sign(Algorithm::RS384, &rsa.private_pem, None, &claims_ok());
        let e = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&rsa_keys(), RS)
            .unwrap_err();
        assert!(matches!(e, JwtError::Algorithm(..)), "{e}");
        // Another key's signature.
        let t = sign(
            Algorithm::RS256,
            &testkeys::rsa2().private_pem,
            None,
            &claims_ok(),
        );
        let e = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&rsa_keys(), RS)
            .unwrap_err();
        assert_eq!(e, JwtError::BadSignature);
        // A payload changed after signing.
        let t = sign(Algorithm::RS256, &rsa.private_pem, None, &claims_ok());
        let p: Vec<&str> = t.split('.').collect();
        let forged = json!({"sub": "admin", "exp": NOW + 300});
        let t2 = format!(
            "{}.{}.{}",
            p[0],
            URL_SAFE_NO_PAD.encode(forged.to_string()),
            p[2]
        );
        let e = UnverifiedJwt::parse(&t2)
            .unwrap()
            .verify(&rsa_keys(), RS)
            .unwrap_err();
        assert_eq!(e, JwtError::BadSignature);

        // JWKS keys are chosen by kid.
        let mut k1 = rsa.jwk.clone();
        k1["kid"] = json!("k1");
        let mut k2 = testkeys::rsa2().jwk.clone();
        k2["kid"] = json!("k2");
        let jwks = json!({"keys": [k1, k2]}).to_string();
        let keys = public_keys_from_jwks(jwks.as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        let t = sign(Algorithm::RS256, &rsa.private_pem, Some("k1"), &claims_ok());
        UnverifiedJwt::parse(&t).unwrap().verify(&keys, RS).unwrap();
        let t = sign(Algorithm::RS256, &rsa.private_pem, Some("k2"), &claims_ok());
        let e = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&keys, RS)
            .unwrap_err();
        assert_eq!(e, JwtError::BadSignature);
        let t = sign(Algorithm::RS256, &rsa.private_pem, Some("k9"), &claims_ok());
        let e = UnverifiedJwt::parse(&t)
            .unwrap()
            .verify(&keys, RS)
            .unwrap_err();
        assert_eq!(e, JwtError::UnknownKeyId);
        // No kid in the token: every key is tried.
        let t = sign(Algorithm::RS256, &rsa.private_pem, None, &claims_ok());
        UnverifiedJwt::parse(&t).unwrap().verify(&keys, RS).unwrap();
    }

    #[test]
    fn jwks_keys_that_must_not_sign_are_skipped() {
        let rsa = testkeys::rsa();
        let ec = testkeys::ec();
        let mut enc = rsa.jwk.clone();
        enc["use"] = json!("enc");
        let mut hs = rsa.jwk.clone();
        hs["alg"] = json!("HS256");
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        let doc = json!({"keys": [enc, hs, oct, {"kty": "RSA", "n": "AQAB", "e": "AQAB"}]});
        assert!(public_keys_from_jwks(doc.to_string().as_bytes()).is_err());
        let mut ec_jwk = ec.jwk.clone();
        ec_jwk["alg"] = json!("ES256");
        let doc = json!({"keys": [oct_key(), ec_jwk, testkeys::ed().jwk.clone()]});
        let keys = public_keys_from_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        let t = sign(Algorithm::ES256, &ec.private_pem, None, &claims_ok());
        UnverifiedJwt::parse(&t).unwrap().verify(&keys, RS).unwrap();
        assert!(public_keys_from_jwks(b"not json").is_err());
        assert!(public_keys_from_jwks(b"{\"no\": 1}").is_err());
    }

    fn oct_key() -> Value {
        json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"})
    }

    #[test]
    fn pem_configuration_errors_say_what_is_wrong() {
        let rsa = testkeys::rsa();
        let e = public_keys_from_pem(&rsa.private_pem).unwrap_err();
        assert!(e.contains("private key"), "{e}");
        assert!(!e.contains("BEGIN"), "{e}");
        assert!(public_keys_from_pem("hello").is_err());
        assert!(public_keys_from_pem("").is_err());
        let broken = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(
            public_keys_from_pem(broken)
                .unwrap_err()
                .contains("block 1")
        );
        let unclosed = "-----BEGIN PUBLIC KEY-----\nAAAA\n";
        assert!(public_keys_from_pem(unclosed).is_err());
    }

    #[test]
    fn time_claims_are_checked_with_leeways() {
        let c = |v: Value| Claims(v.as_object().unwrap().clone());
        let r = rules();
        assert_eq!(
            c(json!({"exp": NOW - 1})).check_times(&r),
            Err(JwtError::Expired)
        );
        assert_eq!(
            c(json!({"exp": NOW})).check_times(&r),
            Err(JwtError::Expired)
        );
        c(json!({"exp": NOW + 1})).check_times(&r).unwrap();
        c(json!({"exp": (NOW + 1) as f64 + 0.5}))
            .check_times(&r)
            .unwrap();
        assert_eq!(c(json!({})).check_times(&r), Err(JwtError::MissingExpiry));
        c(json!({}))
            .check_times(&TimeRules {
                require_exp: false,
                ..r
            })
            .unwrap();
        assert_eq!(
            c(json!({"exp": "soon"})).check_times(&r),
            Err(JwtError::BadTimeClaim("exp"))
        );
        assert_eq!(
            c(json!({"exp": NOW + 100, "nbf": NOW + 10})).check_times(&r),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            c(json!({"exp": NOW + 100, "iat": NOW + 10})).check_times(&r),
            Err(JwtError::IssuedInFuture)
        );
        // Leeways.
        let lenient = TimeRules {
            exp_leeway: 30,
            nbf_leeway: 30,
            skew: 5,
            ..r
        };
        c(json!({"exp": NOW - 20, "nbf": NOW + 20}))
            .check_times(&lenient)
            .unwrap();
        assert_eq!(
            c(json!({"exp": NOW - 40})).check_times(&lenient),
            Err(JwtError::Expired)
        );
        c(json!({"exp": NOW + 10, "iat": NOW + 4}))
            .check_times(&lenient)
            .unwrap();
        // Extreme values do not overflow.
        c(json!({"exp": i64::MAX})).check_times(&r).unwrap();
        assert_eq!(
            c(json!({"exp": i64::MIN})).check_times(&r),
            Err(JwtError::Expired)
        );
    }

    #[test]
    fn issuer_and_audience_rules() {
        let c = |v: Value| Claims(v.as_object().unwrap().clone());
        c(json!({"iss": "a"})).check_issuer("a").unwrap();
        assert_eq!(
            c(json!({"iss": "b"})).check_issuer("a"),
            Err(JwtError::Issuer)
        );
        assert_eq!(c(json!({})).check_issuer("a"), Err(JwtError::Issuer));
        let bound = vec!["x".to_owned(), "y".to_owned()];
        c(json!({"aud": "y"})).check_audience(&bound, true).unwrap();
        c(json!({"aud": ["z", "x"]}))
            .check_audience(&bound, true)
            .unwrap();
        assert_eq!(
            c(json!({"aud": ["z"]})).check_audience(&bound, true),
            Err(JwtError::Audience)
        );
        assert_eq!(
            c(json!({})).check_audience(&bound, true),
            Err(JwtError::Audience)
        );
        assert_eq!(
            c(json!({"aud": 5})).check_audience(&bound, true),
            Err(JwtError::Audience)
        );
        assert_eq!(
            c(json!({"aud": "x"})).check_audience(&[], true),
            Err(JwtError::UnboundAudience)
        );
        c(json!({"aud": "x"})).check_audience(&[], false).unwrap();
        c(json!({})).check_audience(&[], true).unwrap();
    }

    #[test]
    fn globs() {
        for (p, v, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("agents-*", "agents-prod", true),
            ("agents-*", "agents-", true),
            ("agents-*", "agent", false),
            ("agents-*", "xagents-prod", false),
            ("*-prod", "api-prod", true),
            ("*-prod", "api-prod2", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*a", "aaa", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "x", false),
            ("**", "x", true),
        ] {
            assert_eq!(glob_match(p, v), want, "{p:?} ~ {v:?}");
        }
    }

    #[test]
    fn claims_by_name_and_json_pointer() {
        let m = json!({"a": {"b/c": [1, "two"]}, "kubernetes.io": {"namespace": "ns"}});
        let m = m.as_object().unwrap();
        assert_eq!(claim(m, "/kubernetes.io/namespace"), Some(&json!("ns")));
        assert_eq!(claim(m, "/a/b~1c/1"), Some(&json!("two")));
        assert_eq!(claim(m, "/a/missing"), None);
        assert_eq!(claim(m, "/a/b~1c/9"), None);
        assert_eq!(claim(m, "kubernetes.io"), m.get("kubernetes.io"));
    }

    #[test]
    fn debug_output_shows_no_claim_values() {
        let t = sign(
            Algorithm::RS256,
            &testkeys::rsa().private_pem,
            Some("kid-1"),
            &claims_ok(),
        );
        let u = UnverifiedJwt::parse(&t).unwrap();
        let d = format!("{u:?}");
        assert!(!d.contains("agent-1") && d.contains("kid-1"), "{d}");
        let c = u.verify(&rsa_keys(), RS).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("agent-1") && d.contains("sub"), "{d}");
        let d = format!("{:?}", rsa_keys()[0]);
        assert!(d.contains("Rsa"), "{d}");
    }

    #[test]
    fn the_pinned_client_needs_a_real_ca() {
        assert!(http_client(Some("not a pem"), Duration::from_secs(1)).is_err());
        http_client(Some(&testkeys::rsa().cert_pem), Duration::from_secs(1)).unwrap();
        http_client(None, Duration::from_secs(1)).unwrap();
    }
}
