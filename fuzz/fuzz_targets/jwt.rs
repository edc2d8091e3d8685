//! JWT parsing (JWT and Kubernetes auth): never panics on any token text, and a token is
//! never accepted without a key.
#![no_main]

use jsonwebtoken::Algorithm;
use leash_auth::verify::UnverifiedJwt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    let Ok(jwt) = UnverifiedJwt::parse(token) else {
        return;
    };
    let _ = jwt.kid();
    let _ = jwt.unverified_claims().len();
    let _ = format!("{jwt:?}");
    let all = [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ];
    assert!(jwt.verify(&[], &all).is_err(), "accepted without a key");
});
