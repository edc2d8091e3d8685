//! leash's auth methods. Each is a [`leash_backend::Backend`] mounted in the auth table
//! (`sys/auth`), whose `login` path is unauthenticated and answers with a
//! [`leash_backend::LoginGrant`]; the core mints the token. No method sees token values.
//!
//! * [`userpass`] — humans (approvers): Argon2id password hashes.
//! * [`approle`] — machines with a role id and secret ids (stored as keyed hashes).
//! * [`jwt`] — workload identity tokens (CI jobs, any OIDC issuer with a JWKS).
//! * [`kubernetes`] — pods' service-account tokens (TokenReview or offline keys).
#![forbid(unsafe_code)]

pub mod approle;
pub mod jwt;
pub mod kubernetes;
pub mod userpass;
pub mod verify;
