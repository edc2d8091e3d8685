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
//!
//! Layout: `keys` (PEM and JWKS public keys, algorithm families), `jwt` (the unverified
//! token and its verification), `claims` (time, issuer and audience rules, claim look-up,
//! globs), `https` (the pinned-CA HTTP client). Everything is re-exported here, so callers
//! name `verify::X`.

mod claims;
mod https;
mod jwt;
mod keys;

pub use claims::*;
pub use https::*;
pub use jwt::*;
pub use keys::*;

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

/// Why key material, a CA bundle, an algorithm name or the HTTP client could not be
/// used (a configuration problem: the messages go back to the operator). They never
/// contain key material or a token.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A `-----BEGIN` line without its closing dashes.
    #[error("a PEM BEGIN line is not closed")]
    PemUnclosed,
    /// A PEM block without its END line.
    #[error("PEM block {0:?} has no END line")]
    PemNoEnd(String),
    /// Text with no PEM block at all.
    #[error("no PEM block found (expected a PUBLIC KEY or CERTIFICATE block)")]
    NoPem,
    /// More than [`MAX_KEYS`] keys.
    #[error("too many keys (at most {MAX_KEYS})")]
    TooMany,
    /// A private key where a public key belongs (1-based block number).
    #[error("PEM block {0} is a private key: configure the public key instead")]
    PrivateKey(usize),
    /// A PEM block of another kind (number, label).
    #[error("PEM block {0} ({1:?}) is not a public key or certificate")]
    NotPublic(usize, String),
    /// A public-key block leash cannot read (number).
    #[error("PEM block {0} is not an RSA, EC or Ed25519 public key")]
    UnreadableKey(usize),
    /// A JWKS that is not JSON.
    #[error("the JWKS is not JSON")]
    JwksNotJson,
    /// A JWKS without its `keys` list.
    #[error("the JWKS has no \"keys\" list")]
    JwksNoList,
    /// A JWKS none of whose keys can verify a signature.
    #[error("the JWKS has no usable signature keys (RSA, EC P-256/P-384, Ed25519)")]
    JwksNoKeys,
    /// `none`: unsigned tokens.
    #[error("algorithm \"none\" (unsigned tokens) is never accepted")]
    AlgorithmNone,
    /// An HMAC algorithm (a shared secret, not a public key).
    #[error("algorithm {0:?} (HMAC, a shared secret) cannot be verified with public keys")]
    AlgorithmHmac(String),
    /// An algorithm leash does not know.
    #[error(
        "unsupported algorithm {0:?}; supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
    )]
    AlgorithmUnsupported(String),
    /// A CA bundle that cannot be read.
    #[error("cannot read the PEM certificates: {0}")]
    Certificates(#[source] std::io::Error),
    /// A CA bundle with no certificate.
    #[error("no PEM certificate found (expected a CERTIFICATE block)")]
    NoCertificate,
    /// A CA certificate rustls refuses.
    #[error("unusable CA certificate: {0}")]
    CaCertificate(#[source] rustls::Error),
    /// The TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(#[source] rustls::Error),
    /// The HTTP client could not be built.
    #[error("HTTP client setup failed: {}", describe_http_error(.0))]
    Client(#[source] reqwest::Error),
}

/// Why an HTTP exchange (fetching keys, a discovery document, a TokenReview answer)
/// failed. Messages never contain the URL's credentials or a token.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The client could not be set up, or the answer held no usable keys.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The exchange failed (connect, TLS, timeout, reading).
    #[error("{}", describe_http_error(.0))]
    Http(#[source] reqwest::Error),
    /// The server answered with a non-success status.
    #[error("HTTP {0}")]
    Status(u16),
    /// The answer exceeded the limit (bytes).
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// The OpenID discovery document is unusable (what is wrong with it).
    #[error("{0}")]
    Discovery(&'static str),
}

/// A refused token: 403 naming the check that failed (never the token).
pub(crate) fn refused(e: &JwtError) -> leash_backend::CoreError {
    leash_backend::CoreError::Forbidden(e.to_string())
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
    use std::time::Duration;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::Algorithm;
    use serde_json::Value;

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
        assert!(matches!(e, KeyError::PrivateKey(1)), "{e}");
        let e = e.to_string();
        assert!(e.contains("private key"), "{e}");
        assert!(!e.contains("BEGIN"), "{e}");
        assert!(public_keys_from_pem("hello").is_err());
        assert!(public_keys_from_pem("").is_err());
        let broken = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(
            public_keys_from_pem(broken)
                .unwrap_err()
                .to_string()
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
