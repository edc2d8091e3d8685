//! The `approle` auth method: machines log in with a role ID (which names the role,
//! like a user name) and a secret ID (a short-lived, narrowly bound password minted
//! for one deployment). Vault's paths and fields:
//!
//! * `role/:name` — create, update, read, delete; `LIST role/`. `bind_secret_id`
//!   (default true), `secret_id_ttl`, `secret_id_num_uses`, `secret_id_bound_cidrs`
//!   (legacy `bound_cidr_list`), `local_secret_ids`, `role_id` (custom, on write) and
//!   the shared `token_*` fields ([`leash_backend::TokenParams`]). Deleting a role
//!   deletes its secret IDs.
//! * `role/:name/role-id` — read the role ID; write a custom one.
//! * `role/:name/secret-id` — generate (`metadata`, `cidr_list`, `token_bound_cidrs`,
//!   `ttl`, `num_uses`); `LIST` gives the accessors. `role/:name/custom-secret-id`
//!   registers a caller-chosen secret ID.
//! * `role/:name/secret-id/lookup|destroy` by `secret_id`;
//!   `role/:name/secret-id-accessor/lookup|destroy` by `secret_id_accessor`.
//! * `tidy/secret-id` — removes expired and long used-up secret IDs of every role
//!   (each role's are also swept as new ones are created, amortised O(1) per creation).
//! * `login` with `role_id` and `secret_id` — unauthenticated.
//!
//! Invariants:
//! * Secret IDs are 128 random bits from the OS CSPRNG, shown once, and stored only as
//!   keyed hashes (HMAC under the storage key, separated per mount and purpose): the
//!   record of a secret ID is found by the keyed hash of the value presented, and the
//!   stored hash is compared again in constant time. Role IDs are indexed the same way.
//! * A limited secret ID's uses are spent by one atomic read-modify-write in store,
//!   so concurrent logins can never spend the same last use twice. A used-up secret ID
//!   is kept as a tombstone for a day, so a replay is told so; an expired one is refused.
//! * CIDR bindings (`secret_id_bound_cidrs` of the role, `cidr_list` of the secret ID)
//!   are checked against the real peer address, after the secret ID is verified (so a
//!   caller without it learns nothing) and before a use is spent (so a caller from the
//!   wrong network cannot burn uses).
//! * Failed logins say which check failed without echoing what was presented; an
//!   unknown role ID and an unknown secret ID get the same answer, so neither can be
//!   enumerated.
//! * Role and user names are case-insensitive (stored lower-case), as in Vault.
//!
//! Not here: the failed-login rate limit per source, the per-role failure metric and
//! the token minting — the core does those for every auth method.

mod role;
mod secret_id;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use leash_backend::{
    Backend, BackendRequest, CoreError, MountEntry, MountStorage, Response, Route, Routes,
    match_route,
};

use leash_types::cidr::Cidr;
use leash_types::{Clock, Operation};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use self::secret_id::Dead;

/// The answer to an unknown role ID or secret ID (the two are not told apart).
pub const INVALID_CREDENTIALS: &str = "invalid role or secret ID";
/// The answer to a secret ID past its TTL.
pub const EXPIRED: &str = "secret ID has expired";
/// The answer to a secret ID whose uses are spent (a replay).
pub const USED_UP: &str = "secret ID has no uses left";

/// Longest role name, in characters.
const MAX_NAME: usize = 128;
/// Longest role ID or secret ID accepted, in bytes.
const MAX_CREDENTIAL: usize = 512;
/// Most CIDR blocks in one list.
const MAX_CIDRS: usize = 64;

/// The backend serving one `approle` mount.
pub struct AppRoleBackend {
    mount_uuid: String,
    store: MountStorage,
    clock: Arc<dyn Clock>,
    /// Role writes and deletes hold it exclusively; secret-ID creation shares it, so
    /// no secret ID is written for a role while it is being deleted, and the role-ID
    /// index moves in step with the roles.
    roles: tokio::sync::RwLock<()>,
    /// Per role uid: secret IDs created since its last sweep, and how many it kept
    /// then (see `secret_id::maybe_sweep`).
    sweeps: Mutex<HashMap<String, (u64, u64)>>,
}

/// The `approle` auth method for `mount`.
pub fn new_backend(
    mount: &MountEntry,
    store: MountStorage,
    clock: Arc<dyn Clock>,
) -> Arc<dyn Backend> {
    Arc::new(AppRoleBackend {
        mount_uuid: mount.uuid.clone(),
        store,
        clock,
        roles: tokio::sync::RwLock::new(()),
        sweeps: Mutex::new(HashMap::new()),
    })
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Whether two strings are equal, in time independent of where they differ.
fn ct_str_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A role name as stored (lower-case), or a 400 saying what is allowed.
fn role_name(raw: &str) -> Result<String, CoreError> {
    let name = raw.to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(name)
    } else {
        Err(CoreError::invalid(format!(
            "invalid role name {raw:?}: use 1-{MAX_NAME} characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit"
        )))
    }
}

/// A credential field (`role_id`, `secret_id`): a non-empty string of bounded length,
/// held so it is wiped when dropped. Never echoed in errors.
fn credential(
    data: &Map<String, Value>,
    field: &str,
) -> Result<Option<Zeroizing<String>>, CoreError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_CREDENTIAL => Err(CoreError::invalid(format!(
            "{field} is longer than {MAX_CREDENTIAL} bytes"
        ))),
        Some(Value::String(s)) => Ok(Some(Zeroizing::new(s.trim().to_owned()))),
        Some(_) => Err(CoreError::invalid(format!(
            "invalid value for field {field:?}: expected a string"
        ))),
    }
}

/// A validated CIDR list field (`None` when absent).
fn cidr_list(data: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, CoreError> {
    let Some(list) = leash_backend::fields::string_list(data, field)? else {
        return Ok(None);
    };
    if list.len() > MAX_CIDRS {
        return Err(CoreError::invalid(format!(
            "{field} has {} entries; at most {MAX_CIDRS} are allowed",
            list.len()
        )));
    }
    for c in &list {
        Cidr::parse(c).map_err(|e| CoreError::invalid(format!("{field}: {e}")))?;
    }
    Ok(Some(list))
}

/// Whether every block of `inner` lies inside some block of `outer` ([`Cidr::within`]).
/// A block that does not parse is inside nothing and contains nothing (fail closed).
fn cidrs_within(inner: &[String], outer: &[String]) -> bool {
    let outer: Vec<Cidr> = outer.iter().filter_map(|o| Cidr::parse(o).ok()).collect();
    inner
        .iter()
        .all(|i| Cidr::parse(i).is_ok_and(|block| outer.iter().any(|o| block.within(o))))
}

/// Whether `ip` may log in under `blocks` (empty = anywhere). An unparseable stored
/// block denies (fail closed).
fn source_allowed(blocks: &[String], ip: Option<IpAddr>) -> bool {
    let parsed: Result<Vec<Cidr>, _> = blocks.iter().map(|b| Cidr::parse(b)).collect();
    match parsed {
        Ok(p) => leash_types::cidr::allowed(&p, ip),
        Err(_) => false,
    }
}

fn show_ip(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "(unknown)".to_owned(), |ip| ip.to_string())
}

impl AppRoleBackend {
    /// The keyed hash (hex) of `value` for `purpose` on this mount: what storage keys
    /// hold instead of role IDs, secret IDs and accessors.
    fn keyed(&self, purpose: &str, value: &str) -> String {
        let input = Zeroizing::new(format!("approle\0{}\0{purpose}\0{value}", self.mount_uuid));
        hex(&self.store.keyring().token_hash(&input).0)
    }

    async fn load_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, CoreError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(raw.as_slice())
                .map(Some)
                .map_err(|e| {
                    CoreError::internal(format!("stored approle record is unreadable: {e}"))
                }),
        }
    }

    async fn save_json<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), CoreError> {
        let bytes = serde_json::to_vec(v).map_err(|e| CoreError::internal(e.to_string()))?;
        self.store.put(key, bytes).await?;
        Ok(())
    }

    /// `POST login {role_id, secret_id}`.
    async fn login(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let role_id = credential(req.data, "role_id")?
            .ok_or_else(|| CoreError::invalid("missing role_id"))?;
        let secret_id = credential(req.data, "secret_id")?;
        let found = self.role_by_role_id(&role_id).await?;
        let Some((name, role)) = found else {
            // Do the reads a known role with a wrong secret ID costs (role, secret ID),
            // so the answer's timing does not tell role IDs apart.
            if let Some(s) = &secret_id {
                self.secret_lookup_cost(s).await;
            } else {
                return Err(CoreError::invalid("missing secret_id"));
            }
            return Err(CoreError::invalid(INVALID_CREDENTIALS));
        };
        let ip = req.remote_addr.map(|a| a.ip());
        let now = self.clock.unix();
        let entry = if role.bind_secret_id {
            let secret_id = secret_id.ok_or_else(|| CoreError::invalid("missing secret_id"))?;
            let (key, entry) = match self.find_secret_id(&role, &secret_id).await? {
                Some(found) => found,
                None => return Err(CoreError::invalid(INVALID_CREDENTIALS)),
            };
            match entry.dead(now) {
                Some(Dead::UsedUp) => return Err(CoreError::invalid(USED_UP)),
                Some(Dead::Expired) => {
                    self.remove_secret_id(&role, &key, &entry).await?;
                    return Err(CoreError::invalid(EXPIRED));
                }
                Some(Dead::Gone) => {
                    self.remove_secret_id(&role, &key, &entry).await?;
                    return Err(CoreError::invalid(INVALID_CREDENTIALS));
                }
                None => {}
            }
            if !source_allowed(&entry.cidr_list, ip) {
                return Err(CoreError::invalid(format!(
                    "source address {} is not allowed by the secret ID's CIDR list",
                    show_ip(ip)
                )));
            }
            Some((key, entry))
        } else {
            None
        };
        if !source_allowed(&role.secret_id_bound_cidrs, ip) {
            return Err(CoreError::invalid(format!(
                "source address {} is not allowed by the role's secret_id_bound_cidrs",
                show_ip(ip)
            )));
        }
        // Every check passed: spend a use (atomically) as the last step.
        let entry = match entry {
            Some((key, entry)) if entry.num_uses > 0 => {
                Some(self.spend_use(&role, &key, now).await?)
            }
            other => other.map(|(_, e)| e),
        };
        let mut metadata: BTreeMap<String, String> = entry
            .as_ref()
            .map(|e| e.metadata.clone())
            .unwrap_or_default();
        metadata.insert("role_name".to_owned(), name.clone());
        let mut grant = role.token.grant("approle", role_id.as_str(), metadata);
        if let Some(e) = entry.filter(|e| !e.token_bound_cidrs.is_empty()) {
            grant.bound_cidrs = e.token_bound_cidrs;
        }
        grant.role = Some(name);
        Ok(Some(Response::login(grant)))
    }
}

#[async_trait]
impl Backend for AppRoleBackend {
    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        match match_route("role/:name", req.path).map(|c| role_name(c[0])) {
            Some(Ok(name)) => Ok(Some(self.load_role(&name).await?.is_some())),
            _ => Ok(None),
        }
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = req.dispatch_path();
        let data = req.data;
        if path == "login" {
            return match op {
                _ if write => self.login(req).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if path == "role" {
            return match op {
                Operation::List | Operation::Read => self.list_roles().await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if path == "tidy/secret-id" {
            return match op {
                _ if write => self.tidy().await.map(Some),
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("role/:name", path) {
            let name = role_name(c[0])?;
            return match op {
                Operation::Read => self.read_role(&name).await,
                Operation::Delete => self.delete_role(&name).await,
                _ if write => self.write_role(&name, data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        let Some((name, rest)) = match_route("role/:name/*", path).map(|c| (c[0], c[1])) else {
            return Err(CoreError::UnknownPath(format!(
                "{}{}",
                req.mount.route_prefix(),
                path
            )));
        };
        let name = role_name(name)?;
        match (rest, op) {
            ("role-id", Operation::Read) => self.read_role_id(&name).await,
            ("role-id", _) if write => self.write_role_id(&name, data).await,
            ("secret-id", Operation::List) => self.list_accessors(&name).await,
            ("secret-id", _) if write => self.generate(&name, data, None).await,
            ("custom-secret-id", _) if write => {
                let custom = credential(data, "secret_id")?
                    .ok_or_else(|| CoreError::invalid("missing required field \"secret_id\""))?;
                self.generate(&name, data, Some(custom)).await
            }
            ("secret-id/lookup", _) if write => self.lookup_by_secret_id(&name, data).await,
            ("secret-id/destroy", Operation::Delete) => {
                self.destroy_by_secret_id(&name, data).await
            }
            ("secret-id/destroy", _) if write => self.destroy_by_secret_id(&name, data).await,
            ("secret-id-accessor/lookup", _) if write => self.lookup_by_accessor(&name, data).await,
            ("secret-id-accessor/destroy", Operation::Delete) => {
                self.destroy_by_accessor(&name, data).await
            }
            ("secret-id-accessor/destroy", _) if write => {
                self.destroy_by_accessor(&name, data).await
            }
            (
                "role-id"
                | "secret-id"
                | "custom-secret-id"
                | "secret-id/lookup"
                | "secret-id/destroy"
                | "secret-id-accessor/lookup"
                | "secret-id-accessor/destroy",
                _,
            ) => Err(CoreError::UnsupportedOperation),
            _ => Err(CoreError::UnknownPath(format!(
                "{}{}",
                req.mount.route_prefix(),
                path
            ))),
        }
    }

    fn routes(&self) -> Routes<'_> {
        // Role names are stored lower-cased: `role/Web` is `role/web` to the ACL too.
        const ROUTES: &[Route] = &[
            Route::path("login").unauthenticated(),
            Route::path("role"),
            Route::path("role/:name").folded(),
            Route::path("role/:name/*").folded(),
            Route::path("tidy/secret-id"),
        ];
        Routes::Table(ROUTES)
    }
}
