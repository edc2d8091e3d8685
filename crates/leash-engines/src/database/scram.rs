//! SCRAM-SHA-256 verifiers in PostgreSQL's stored form (RFC 5802 / 7677):
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 each).
//!
//! leash puts the verifier where `{{password}}` goes, so the plaintext never reaches the
//! database's logs or `pg_stat_statements`; PostgreSQL stores a `PASSWORD` literal that
//! already has this shape as it is.
//!
//! Iterations: PostgreSQL's default is 4 096, which costs the database ~4.4 ms of CPU
//! per `CREATE ROLE`. The count only slows brute force against a stolen verifier; leash's
//! passwords are ≥ 120-bit random, which no iteration count makes any harder or easier
//! to guess, so a low count (even 1) loses nothing for them. It matters only for
//! human-chosen passwords.
//!
//! Limit: PostgreSQL applies SASLprep to the password before hashing. SASLprep leaves
//! ASCII unchanged, so this module accepts ASCII passwords only (everything leash
//! generates) and refuses others rather than compute a verifier that would not match.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use leash_types::random;
use sha2::{Digest, Sha256};

use super::DbError;

/// PostgreSQL's default `scram_iterations`.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length PostgreSQL uses (`SCRAM_DEFAULT_SALT_LEN`).
const SALT_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// `(StoredKey, ServerKey)` for `password` with `salt` and `iterations`.
pub(crate) fn keys(password: &[u8], salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac(&salted, b"Server Key");
    salted.fill(0);
    (stored_key, server_key)
}

/// The verifier PostgreSQL stores in `pg_authid.rolpassword` for `password`, with a
/// fresh 16-byte salt from the OS CSPRNG.
pub fn scram_sha256_verifier(password: &str, iterations: u32) -> Result<String, DbError> {
    if !password.is_ascii() {
        return Err(DbError::Scram {
            reason: "password is not ASCII (SASLprep is not implemented)",
        });
    }
    if iterations == 0 {
        return Err(DbError::Scram {
            reason: "iteration count must be at least 1",
        });
    }
    let salt = random::bytes::<SALT_LEN>();
    let (stored, server) = keys(password.as_bytes(), &salt, iterations);
    Ok(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored),
        B64.encode(server)
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Parsed verifier: (iterations, salt, StoredKey, ServerKey).
    pub(crate) fn parse(v: &str) -> (u32, Vec<u8>, Vec<u8>, Vec<u8>) {
        let rest = v.strip_prefix("SCRAM-SHA-256$").unwrap();
        let (iter_salt, keys) = rest.split_once('$').unwrap();
        let (iter, salt) = iter_salt.split_once(':').unwrap();
        let (stored, server) = keys.split_once(':').unwrap();
        (
            iter.parse().unwrap(),
            B64.decode(salt).unwrap(),
            B64.decode(stored).unwrap(),
            B64.decode(server).unwrap(),
        )
    }

    /// Does `password` match the stored verifier? (What the server checks.)
    pub(crate) fn matches(verifier: &str, password: &str) -> bool {
        let (iter, salt, stored, server) = parse(verifier);
        let (s, v) = keys(password.as_bytes(), &salt, iter);
        s.as_slice() == stored && v.as_slice() == server
    }

    /// Plays PostgreSQL's side of a SCRAM exchange against the stored verifier, with
    /// tokio-postgres' own client on the other side. Returns whether both sides accepted.
    fn exchange(verifier: &str, password: &str) -> bool {
        let (iter, salt, stored, server) = parse(verifier);
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let client_first = String::from_utf8(client.message().to_vec()).unwrap();
        let client_first_bare = client_first.strip_prefix("n,,").unwrap().to_owned();
        let client_nonce = client_first_bare.split_once("r=").unwrap().1.to_owned();
        let nonce = format!("{client_nonce}{}", random::base62(18));
        let server_first = format!("r={nonce},s={},i={iter}", B64.encode(&salt));
        client.update(server_first.as_bytes()).unwrap();
        let client_final = String::from_utf8(client.message().to_vec()).unwrap();
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let proof = B64.decode(proof).unwrap();
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&stored, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        if Sha256::digest(&client_key).as_slice() != stored.as_slice() {
            return false;
        }
        let server_signature = hmac(&server, auth_message.as_bytes());
        let server_final = format!("v={}", B64.encode(server_signature));
        client.finish(server_final.as_bytes()).is_ok()
    }

    #[test]
    fn verifier_has_postgres_shape() {
        let v = scram_sha256_verifier("Secret-123", 4096).unwrap();
        let (iter, salt, stored, server) = parse(&v);
        assert_eq!(iter, 4096);
        assert_eq!(salt.len(), 16);
        assert_eq!(stored.len(), 32);
        assert_eq!(server.len(), 32);
        assert_ne!(
            v,
            scram_sha256_verifier("Secret-123", 4096).unwrap(),
            "fresh salt"
        );
        assert!(!v.contains("Secret-123"));
    }

    #[test]
    fn rfc7677_vector() {
        // RFC 7677 §3: user "user", password "pencil", 4096 iterations.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (stored, server) = keys(b"pencil", &salt, 4096);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                    r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                    s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                    c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        assert_eq!(
            B64.encode(hmac(&server, auth.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let proof = B64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let sig = hmac(&stored, auth.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        assert_eq!(Sha256::digest(&client_key).as_slice(), stored.as_slice());
    }

    #[test]
    fn scram_exchange_accepts_right_password_only() {
        for iter in [1, 4096] {
            let v = scram_sha256_verifier("Right-Pass-42", iter).unwrap();
            assert!(exchange(&v, "Right-Pass-42"));
            assert!(!exchange(&v, "Wrong-Pass-42"));
            assert!(matches(&v, "Right-Pass-42"));
        }
    }

    #[test]
    fn refuses_what_it_cannot_vouch_for() {
        assert!(matches!(
            scram_sha256_verifier("pässword", 4096),
            Err(DbError::Scram { .. })
        ));
        assert!(matches!(
            scram_sha256_verifier("x", 0),
            Err(DbError::Scram { .. })
        ));
    }
}
