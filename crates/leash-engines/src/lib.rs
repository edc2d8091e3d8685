//! Secrets engines: each serves one mount through the [`leash_backend::Backend`] trait.
//! Engines never import each other; the core creates them by mount type.
#![forbid(unsafe_code)]

pub mod aws;
pub mod database;
pub(crate) mod https;
pub mod kubernetes;
pub mod kv;
