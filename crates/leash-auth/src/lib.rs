//! leash's auth methods. Each is a [`leash_backend::Backend`] mounted in the auth table
//! (`sys/auth`), whose `login` path is unauthenticated and answers with a
//! [`leash_backend::LoginGrant`]; the core mints the token. No method sees token values.
//!
//! * [`userpass`] — humans (approvers): Argon2id password hashes.
//! * [`approle`] — machines with a role id and secret ids (stored as keyed hashes).
//! * [`jwt`] — workload identity tokens (CI jobs, any OIDC issuer with a JWKS).
//! * [`kubernetes`] — pods' service-account tokens (TokenReview or offline keys).
#![forbid(unsafe_code)]

use leash_backend::CoreError;

pub mod approle;
pub mod jwt;
pub mod kubernetes;
pub mod userpass;
pub mod verify;

/// Checks a role name of the JWT and Kubernetes methods: 1–128 characters of
/// `A-Z a-z 0-9 - _ . @`.
pub(crate) fn check_role_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(CoreError::invalid(format!(
            "invalid role name {name:?}: use 1-128 characters of A-Z, a-z, 0-9, '-', '_', '.', '@'"
        )));
    }
    Ok(())
}

/// Whether the `config` or `role/:name` record `path` names exists in namespace `ns` (the
/// create-vs-update existence check of the JWT and Kubernetes methods); `None` for other
/// paths.
pub(crate) async fn config_or_role_exists(
    store: &leash_backend::MountStorage,
    path: &str,
) -> Result<Option<bool>, CoreError> {
    let key = if path == "config" {
        "config".to_owned()
    } else if let Some(c) = leash_backend::match_route("role/:name", path) {
        format!("role/{}", c[0])
    } else {
        return Ok(None);
    };
    Ok(Some(store.get(&key).await?.is_some()))
}

/// `LIST role/`: the role names stored in the mount's namespace (`None` when there are none).
pub(crate) async fn list_roles(
    store: &leash_backend::MountStorage,
) -> Result<Option<leash_backend::Response>, CoreError> {
    let keys: Vec<String> = store
        .list("role/")
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix("role/").map(str::to_owned))
        .collect();
    Ok((!keys.is_empty()).then(|| leash_backend::Response::keys(keys)))
}
