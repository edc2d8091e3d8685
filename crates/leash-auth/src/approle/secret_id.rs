//! AppRole secret IDs: generation, lookup and destruction (by value or by accessor),
//! listing, spending a use at login, and tidying.
//!
//! Storage layout in the mount's namespace (`<uid>` is the role's random id; every
//! `<…hash>` is a keyed hash from [`AppRoleBackend::keyed`]):
//!
//! * `secret_id/<uid>/<secret id hash>` → [`SecretIdEntry`] (no secret in it);
//! * `accessor/<uid>/<accessor hash>` → [`AccessorEntry`], pointing at the former.
//!
//! A secret ID is never stored, logged or returned after its creation response.

use std::collections::{BTreeMap, BTreeSet};

use leash_backend::{CoreError, Response, fields};
use leash_types::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::role::RoleEntry;
use super::{
    AppRoleBackend, EXPIRED, INVALID_CREDENTIALS, USED_UP, cidr_list, cidrs_within, credential,
    ct_str_eq,
};
use leash_backend::store::refused_or_storage as from_storage;

/// How long a used-up secret ID is remembered, so a replay is told so (seconds).
const TOMBSTONE_SECS: i64 = 86_400;
/// Shortest custom secret ID accepted (generated ones have 128 random bits).
const MIN_CUSTOM_SECRET_ID: usize = 16;
/// Metadata limits: entries, key length, value length.
const MAX_META_ENTRIES: usize = 64;
const MAX_META_KEY: usize = 128;
const MAX_META_VALUE: usize = 512;
/// Metadata keys leash sets on the token itself (a secret ID may not forge them).
const RESERVED_META: &[&str] = &["role_name", "role"];
/// A role's secret IDs are swept for dead ones after at least this many creations
/// (and at least as many as it held at the last sweep, so sweeping costs O(1) reads
/// per creation, amortised).
const SWEEP_EVERY: u64 = 64;
/// Longest accessor accepted in a request.
const MAX_ACCESSOR: usize = 128;

/// Fields a secret-ID creation reads.
const GENERATE_FIELDS: &[&str] = &[
    "metadata",
    "cidr_list",
    "token_bound_cidrs",
    "ttl",
    "num_uses",
    "secret_id",
    "role_name",
];

/// What is stored about one secret ID: never the secret ID itself.
#[derive(Serialize, Deserialize, Clone)]
pub(super) struct SecretIdEntry {
    /// The keyed hash it is stored under (hex), compared again in constant time.
    pub(super) hash: String,
    /// Its accessor (a handle for lookup and destruction; cannot log in).
    pub(super) accessor: String,
    /// Unix seconds.
    pub(super) creation_time: i64,
    /// Unix seconds of the last use or change.
    pub(super) last_updated_time: i64,
    /// Unix seconds after which it is refused; `None` = never.
    pub(super) expire_at: Option<i64>,
    /// TTL at creation, seconds (0 = none).
    pub(super) ttl: u64,
    /// Uses at creation (0 = unlimited).
    pub(super) num_uses: i64,
    /// Uses left when `num_uses > 0`.
    pub(super) uses_left: i64,
    /// When the last use was spent: the entry is then a tombstone.
    #[serde(default)]
    pub(super) exhausted_at: Option<i64>,
    /// Where logins with it may come from (empty = anywhere).
    pub(super) cidr_list: Vec<String>,
    /// CIDRs for the token (empty = the role's `token_bound_cidrs`).
    pub(super) token_bound_cidrs: Vec<String>,
    /// Operator metadata, copied into the token's metadata.
    pub(super) metadata: BTreeMap<String, String>,
}

/// Why a stored secret ID can no longer log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dead {
    /// Its uses are spent (recently: a replay).
    UsedUp,
    /// Its TTL has passed.
    Expired,
    /// Used up long ago: treated as unknown, and removed.
    Gone,
}

impl SecretIdEntry {
    /// Whether (and why) it can no longer log in at `now`.
    pub(super) fn dead(&self, now: i64) -> Option<Dead> {
        if let Some(t) = self.exhausted_at {
            return Some(if now < t.saturating_add(TOMBSTONE_SECS) {
                Dead::UsedUp
            } else {
                Dead::Gone
            });
        }
        // Whole seconds: refused once a full second past the expiry has begun, so a
        // secret ID always lives at least its TTL.
        match self.expire_at {
            Some(e) if now > e => Some(Dead::Expired),
            _ => None,
        }
    }

    /// Vault's lookup fields.
    fn to_json(&self) -> Value {
        json!({
            "cidr_list": self.cidr_list,
            "creation_time": rfc3339(self.creation_time),
            "expiration_time": self
                .expire_at
                .map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339),
            "last_updated_time": rfc3339(self.last_updated_time),
            "metadata": self.metadata,
            "secret_id_accessor": self.accessor,
            "secret_id_num_uses": if self.num_uses > 0 { self.uses_left } else { 0 },
            "secret_id_ttl": self.ttl,
            "token_bound_cidrs": self.token_bound_cidrs,
        })
    }
}

/// The accessor index: accessor → the secret ID's stored hash.
#[derive(Serialize, Deserialize)]
struct AccessorEntry {
    accessor: String,
    secret_id_hash: String,
}

/// A fresh secret ID: 128 bits from the OS CSPRNG, shaped like a UUID (the shape Vault
/// clients expect) but with every bit random.
fn new_secret_id() -> Zeroizing<String> {
    let b = Zeroizing::new(leash_types::random::bytes::<16>());
    let h = Zeroizing::new(super::hex(b.as_ref()));
    Zeroizing::new(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// The `metadata` field: a JSON object of strings, or a string holding one (what Vault
/// and hvac send).
fn metadata(data: &Map<String, Value>) -> Result<BTreeMap<String, String>, CoreError> {
    let bad =
        |why: &str| CoreError::invalid(format!("invalid value for field \"metadata\": {why}"));
    let parsed;
    let obj = match data.get("metadata") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(BTreeMap::new()),
        Some(Value::String(s)) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|_| {
                bad("expected a JSON object of strings, e.g. {\"agent\": \"summariser\"}")
            })?;
            match &parsed {
                Value::Object(m) => m,
                _ => return Err(bad("expected a JSON object of strings")),
            }
        }
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("expected a JSON object of strings")),
    };
    if obj.len() > MAX_META_ENTRIES {
        return Err(bad(&format!(
            "at most {MAX_META_ENTRIES} entries are allowed"
        )));
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let Value::String(v) = v else {
            return Err(bad(&format!("the value of {k:?} must be a string")));
        };
        if RESERVED_META.contains(&k.as_str()) {
            return Err(bad(&format!(
                "the key {k:?} is reserved: leash sets it on the token"
            )));
        }
        if k.is_empty() || k.chars().count() > MAX_META_KEY {
            return Err(bad(&format!("keys must be 1-{MAX_META_KEY} characters")));
        }
        if v.chars().count() > MAX_META_VALUE {
            return Err(bad(&format!(
                "the value of {k:?} is longer than {MAX_META_VALUE} characters"
            )));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// The `secret_id_accessor` field.
fn accessor_field(data: &Map<String, Value>) -> Result<String, CoreError> {
    match fields::string(data, "secret_id_accessor")? {
        Some(a) if !a.trim().is_empty() && a.len() <= MAX_ACCESSOR => Ok(a.trim().to_owned()),
        Some(a) if a.len() > MAX_ACCESSOR => Err(CoreError::invalid(format!(
            "secret_id_accessor is longer than {MAX_ACCESSOR} characters"
        ))),
        _ => Err(CoreError::invalid(
            "missing required field \"secret_id_accessor\"",
        )),
    }
}

impl AppRoleBackend {
    fn secret_key(&self, role: &RoleEntry, hash: &str) -> String {
        format!("secret_id/{}/{hash}", role.uid)
    }

    fn accessor_key(&self, role: &RoleEntry, accessor: &str) -> String {
        format!("accessor/{}/{}", role.uid, self.keyed("accessor", accessor))
    }

    async fn role_or_400(&self, name: &str) -> Result<RoleEntry, CoreError> {
        self.load_role(name)
            .await?
            .ok_or_else(|| CoreError::invalid(format!("role {name:?} does not exist")))
    }

    /// The stored entry of `secret_id` on `role`, with its key.
    pub(super) async fn find_secret_id(
        &self,
        role: &RoleEntry,
        secret_id: &str,
    ) -> Result<Option<(String, SecretIdEntry)>, CoreError> {
        let hash = self.keyed("secret-id", secret_id);
        let key = self.secret_key(role, &hash);
        let Some(entry) = self.load_json::<SecretIdEntry>(&key).await? else {
            return Ok(None);
        };
        if !ct_str_eq(&entry.hash, &hash) {
            return Ok(None);
        }
        Ok(Some((key, entry)))
    }

    /// The work of looking a secret ID up, for logins whose role ID is unknown (so
    /// their answer takes as long as one with a known role and a wrong secret ID).
    pub(super) async fn secret_lookup_cost(&self, secret_id: &str) {
        let hash = self.keyed("secret-id", secret_id);
        let _ = self.store.get("role/-").await;
        let _ = self.store.get(&format!("secret_id/-/{hash}")).await;
    }

    /// Deletes the dead (expired, long used-up) secret IDs of `role` once enough were
    /// created since the last sweep; see [`SWEEP_EVERY`].
    async fn maybe_sweep(&self, role: &RoleEntry) -> Result<(), CoreError> {
        let due = match self.sweeps.lock() {
            Ok(mut m) => {
                let (since, size) = m.entry(role.uid.clone()).or_insert((0, 0));
                *since += 1;
                *since >= SWEEP_EVERY.max(*size)
            }
            Err(_) => false,
        };
        if !due {
            return Ok(());
        }
        let now = self.clock.unix();
        let mut kept = 0u64;
        for key in self.store.list(&format!("secret_id/{}/", role.uid)).await? {
            match self.load_json::<SecretIdEntry>(&key).await {
                Ok(Some(e)) if matches!(e.dead(now), Some(Dead::Expired | Dead::Gone)) => {
                    self.remove_secret_id(role, &key, &e).await?;
                }
                Ok(Some(_)) => kept += 1,
                Ok(None) | Err(_) => {}
            }
        }
        if let Ok(mut m) = self.sweeps.lock() {
            m.insert(role.uid.clone(), (0, kept));
        }
        Ok(())
    }

    /// Deletes a secret ID and its accessor record.
    pub(super) async fn remove_secret_id(
        &self,
        role: &RoleEntry,
        key: &str,
        entry: &SecretIdEntry,
    ) -> Result<(), CoreError> {
        self.store.delete(key).await?;
        self.store
            .delete(&self.accessor_key(role, &entry.accessor))
            .await?;
        Ok(())
    }

    /// Deletes every secret ID of `role` (the role is being deleted).
    pub(super) async fn delete_secret_ids_of(&self, role: &RoleEntry) -> Result<(), CoreError> {
        self.store
            .delete_prefix(&format!("secret_id/{}/", role.uid))
            .await?;
        self.store
            .delete_prefix(&format!("accessor/{}/", role.uid))
            .await?;
        Ok(())
    }

    /// Spends one use of the secret ID at `key`, in one atomic read-modify-write: of
    /// concurrent logins, only as many succeed as there were uses left. Returns the
    /// entry after the use.
    pub(super) async fn spend_use(
        &self,
        role: &RoleEntry,
        key: &str,
        now: i64,
    ) -> Result<SecretIdEntry, CoreError> {
        let written = self
            .store
            .modify(
                key,
                Box::new(move |old| {
                    let Some(b) = old else {
                        return Err(INVALID_CREDENTIALS.into());
                    };
                    let mut e: SecretIdEntry =
                        serde_json::from_slice(b).map_err(|_| INVALID_CREDENTIALS)?;
                    match e.dead(now) {
                        Some(Dead::UsedUp) => return Err(USED_UP.into()),
                        Some(Dead::Expired) => return Err(EXPIRED.into()),
                        Some(Dead::Gone) => return Err(INVALID_CREDENTIALS.into()),
                        None => {}
                    }
                    if e.num_uses > 0 {
                        e.uses_left -= 1;
                        if e.uses_left <= 0 {
                            e.uses_left = 0;
                            e.exhausted_at = Some(now);
                        }
                    }
                    e.last_updated_time = now;
                    serde_json::to_vec(&e)
                        .map(Some)
                        .map_err(|_| INVALID_CREDENTIALS.into())
                }),
            )
            .await
            .map_err(from_storage)?;
        let entry: SecretIdEntry = written
            .as_ref()
            .and_then(|b| serde_json::from_slice(b.as_slice()).ok())
            .ok_or_else(|| CoreError::internal("a spent secret ID could not be read back"))?;
        if entry.exhausted_at.is_some() {
            // Used up: it no longer lists; the tombstone answers replays.
            self.store
                .delete(&self.accessor_key(role, &entry.accessor))
                .await?;
        }
        Ok(entry)
    }

    /// `POST role/:name/secret-id` (or `custom-secret-id` with `custom`).
    pub(super) async fn generate(
        &self,
        name: &str,
        data: &Map<String, Value>,
        custom: Option<Zeroizing<String>>,
    ) -> Result<Option<Response>, CoreError> {
        let _roles = self.roles.read().await;
        let role = self.role_or_400(name).await?;
        if !role.bind_secret_id {
            return Err(CoreError::invalid(format!(
                "bind_secret_id is not set on role {name:?}: it takes no secret IDs"
            )));
        }
        let metadata = metadata(data)?;
        let cidrs = match cidr_list(data, "cidr_list")? {
            Some(l) if !l.is_empty() => {
                if !role.secret_id_bound_cidrs.is_empty()
                    && !cidrs_within(&l, &role.secret_id_bound_cidrs)
                {
                    return Err(CoreError::invalid(
                        "cidr_list must be a subset of the role's secret_id_bound_cidrs",
                    ));
                }
                l
            }
            _ => role.secret_id_bound_cidrs.clone(),
        };
        let token_cidrs = cidr_list(data, "token_bound_cidrs")?.unwrap_or_default();
        if !token_cidrs.is_empty()
            && !role.token.token_bound_cidrs.is_empty()
            && !cidrs_within(&token_cidrs, &role.token.token_bound_cidrs)
        {
            return Err(CoreError::invalid(
                "token_bound_cidrs must be a subset of the role's token_bound_cidrs",
            ));
        }
        let ttl = match fields::duration(data, "ttl")?.map(|d| d.as_secs()) {
            Some(t) if t > 0 => {
                if role.secret_id_ttl > 0 && t > role.secret_id_ttl {
                    return Err(CoreError::invalid(format!(
                        "ttl ({t}s) cannot be longer than the role's secret_id_ttl ({}s)",
                        role.secret_id_ttl
                    )));
                }
                t
            }
            _ => role.secret_id_ttl,
        };
        let num_uses = match fields::integer(data, "num_uses")? {
            Some(n) if n < 0 => return Err(CoreError::invalid("num_uses cannot be negative")),
            Some(n) if n > 0 => {
                if role.secret_id_num_uses > 0 && n > role.secret_id_num_uses {
                    return Err(CoreError::invalid(format!(
                        "num_uses ({n}) cannot be more than the role's secret_id_num_uses ({})",
                        role.secret_id_num_uses
                    )));
                }
                n
            }
            _ => role.secret_id_num_uses,
        };
        let secret_id = match custom {
            Some(c) if c.chars().count() < MIN_CUSTOM_SECRET_ID => {
                return Err(CoreError::invalid(format!(
                    "a custom secret_id must be at least {MIN_CUSTOM_SECRET_ID} characters"
                )));
            }
            Some(c) => c,
            None => new_secret_id(),
        };
        let now = self.clock.unix();
        let hash = self.keyed("secret-id", &secret_id);
        let key = self.secret_key(&role, &hash);
        let accessor = leash_types::random::uuid_v4();
        let entry = SecretIdEntry {
            hash: hash.clone(),
            accessor: accessor.clone(),
            creation_time: now,
            last_updated_time: now,
            expire_at: (ttl > 0)
                .then(|| now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))),
            ttl,
            num_uses,
            uses_left: num_uses,
            exhausted_at: None,
            cidr_list: cidrs,
            token_bound_cidrs: token_cidrs,
            metadata,
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| CoreError::internal(e.to_string()))?;
        self.store
            .modify(
                &key,
                Box::new(move |old| {
                    // A live secret ID with this value exists (only possible for custom
                    // ones); a dead one may be replaced.
                    if let Some(b) = old
                        && serde_json::from_slice::<SecretIdEntry>(b)
                            .map_or(true, |e| e.dead(now).is_none())
                    {
                        return Err(
                            "a secret ID with that value already exists on this role".into()
                        );
                    }
                    Ok(Some(bytes))
                }),
            )
            .await
            .map_err(from_storage)?;
        self.save_json(
            &self.accessor_key(&role, &accessor),
            &AccessorEntry {
                accessor: accessor.clone(),
                secret_id_hash: hash,
            },
        )
        .await?;
        self.maybe_sweep(&role).await?;
        let mut r = Response::data(json!({
            "secret_id": secret_id.as_str(),
            "secret_id_accessor": accessor,
            "secret_id_ttl": ttl,
            "secret_id_num_uses": num_uses,
        }));
        r.warnings = fields::ignored_warning(data, GENERATE_FIELDS)
            .into_iter()
            .collect();
        Ok(Some(r))
    }

    /// `LIST role/:name/secret-id`: the accessors of its live secret IDs.
    pub(super) async fn list_accessors(&self, name: &str) -> Result<Option<Response>, CoreError> {
        let Some(role) = self.load_role(name).await? else {
            return Ok(None);
        };
        let prefix = format!("accessor/{}/", role.uid);
        let mut keys = Vec::new();
        for k in self.store.list(&prefix).await? {
            if let Some(a) = self.load_json::<AccessorEntry>(&k).await? {
                keys.push(a.accessor);
            }
        }
        keys.sort();
        Ok((!keys.is_empty()).then(|| Response::keys(keys)))
    }

    /// `POST role/:name/secret-id/lookup {secret_id}`: its properties, or 204 when
    /// there is no live secret ID with that value.
    pub(super) async fn lookup_by_secret_id(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let role = self.role_or_400(name).await?;
        let secret_id = credential(data, "secret_id")?
            .ok_or_else(|| CoreError::invalid("missing required field \"secret_id\""))?;
        let now = self.clock.unix();
        Ok(self
            .find_secret_id(&role, &secret_id)
            .await?
            .filter(|(_, e)| e.dead(now).is_none())
            .map(|(_, e)| Response::data(e.to_json())))
    }

    /// `POST role/:name/secret-id/destroy {secret_id}` (idempotent: 204 either way).
    pub(super) async fn destroy_by_secret_id(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let role = self.role_or_400(name).await?;
        let secret_id = credential(data, "secret_id")?
            .ok_or_else(|| CoreError::invalid("missing required field \"secret_id\""))?;
        if let Some((key, entry)) = self.find_secret_id(&role, &secret_id).await? {
            self.remove_secret_id(&role, &key, &entry).await?;
        }
        Ok(None)
    }

    /// The live secret ID an accessor names, or a 400 naming the accessor.
    async fn by_accessor(
        &self,
        name: &str,
        role: &RoleEntry,
        accessor: &str,
    ) -> Result<(String, SecretIdEntry), CoreError> {
        let missing = || {
            CoreError::invalid(format!(
                "no secret ID with accessor {accessor:?} on role {name:?}"
            ))
        };
        let acc_key = self.accessor_key(role, accessor);
        let Some(acc) = self.load_json::<AccessorEntry>(&acc_key).await? else {
            return Err(missing());
        };
        let key = self.secret_key(role, &acc.secret_id_hash);
        match self.load_json::<SecretIdEntry>(&key).await? {
            Some(e) if ct_str_eq(&e.accessor, accessor) => Ok((key, e)),
            _ => {
                // A stale accessor record (its secret ID is gone): clean it up.
                self.store.delete(&acc_key).await?;
                Err(missing())
            }
        }
    }

    /// `POST role/:name/secret-id-accessor/lookup {secret_id_accessor}`.
    pub(super) async fn lookup_by_accessor(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let role = self.role_or_400(name).await?;
        let accessor = accessor_field(data)?;
        let (_, entry) = self.by_accessor(name, &role, &accessor).await?;
        Ok(Some(Response::data(entry.to_json())))
    }

    /// `POST role/:name/secret-id-accessor/destroy {secret_id_accessor}`.
    pub(super) async fn destroy_by_accessor(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let role = self.role_or_400(name).await?;
        let accessor = accessor_field(data)?;
        let (key, entry) = self.by_accessor(name, &role, &accessor).await?;
        self.remove_secret_id(&role, &key, &entry).await?;
        Ok(None)
    }

    /// `POST tidy/secret-id`: removes expired secret IDs, tombstones past their
    /// retention, accessor records whose secret ID is gone, and anything left of
    /// deleted roles. Returns counts.
    pub(super) async fn tidy(&self) -> Result<Response, CoreError> {
        let _roles = self.roles.read().await;
        let now = self.clock.unix();
        let mut uids = BTreeSet::new();
        for k in self.store.list("role/").await? {
            if let Some(r) = self.load_json::<RoleEntry>(&k).await? {
                uids.insert(r.uid);
            }
        }
        let uid_of = |key: &str, prefix: &str| -> Option<String> {
            key.strip_prefix(prefix)
                .and_then(|rest| rest.split_once('/'))
                .map(|(uid, _)| uid.to_owned())
        };
        let mut secret_ids_deleted = 0u64;
        for key in self.store.list("secret_id/").await? {
            let live_role = uid_of(&key, "secret_id/").is_some_and(|u| uids.contains(&u));
            let dead = match self.load_json::<SecretIdEntry>(&key).await {
                Ok(Some(e)) => matches!(e.dead(now), Some(Dead::Expired | Dead::Gone)),
                Ok(None) => false,
                Err(_) => true,
            };
            if (!live_role || dead) && self.store.delete(&key).await? {
                secret_ids_deleted += 1;
            }
        }
        let mut accessors_deleted = 0u64;
        for key in self.store.list("accessor/").await? {
            let uid = uid_of(&key, "accessor/");
            let live = match (&uid, self.load_json::<AccessorEntry>(&key).await) {
                (Some(u), Ok(Some(a))) if uids.contains(u) => {
                    let secret = format!("secret_id/{u}/{}", a.secret_id_hash);
                    matches!(
                        self.load_json::<SecretIdEntry>(&secret).await,
                        Ok(Some(e)) if e.dead(now).is_none()
                    )
                }
                _ => false,
            };
            if !live && self.store.delete(&key).await? {
                accessors_deleted += 1;
            }
        }
        Ok(Response::data(json!({
            "secret_ids_deleted": secret_ids_deleted,
            "accessors_deleted": accessors_deleted,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_ids_are_uuid_shaped_and_fully_random() {
        let a = new_secret_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(*a, *new_secret_id());
    }

    #[test]
    fn metadata_takes_a_json_string_or_object_of_strings() {
        let m = |v: Value| {
            let mut d = Map::new();
            d.insert("metadata".into(), v);
            metadata(&d)
        };
        assert_eq!(
            m(json!("{\"agent\": \"a1\"}"))
                .unwrap()
                .get("agent")
                .map(String::as_str),
            Some("a1")
        );
        assert_eq!(m(json!({"k": "v"})).unwrap().len(), 1);
        assert!(m(json!("")).unwrap().is_empty());
        for bad in [json!("not json"), json!("[1]"), json!({"k": 1}), json!(5)] {
            let e = m(bad.clone()).unwrap_err().to_string();
            assert!(e.contains("metadata"), "{bad}: {e}");
        }
        let many: Map<String, Value> = (0..=MAX_META_ENTRIES)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        assert!(m(Value::Object(many)).is_err());
    }

    #[test]
    fn dead_secret_ids() {
        let mut e = SecretIdEntry {
            hash: String::new(),
            accessor: String::new(),
            creation_time: 100,
            last_updated_time: 100,
            expire_at: Some(101),
            ttl: 1,
            num_uses: 1,
            uses_left: 1,
            exhausted_at: None,
            cidr_list: Vec::new(),
            token_bound_cidrs: Vec::new(),
            metadata: BTreeMap::new(),
        };
        assert_eq!(e.dead(100), None);
        assert_eq!(e.dead(101), None, "lives at least its TTL");
        assert_eq!(e.dead(102), Some(Dead::Expired));
        e.exhausted_at = Some(100);
        assert_eq!(e.dead(100), Some(Dead::UsedUp));
        assert_eq!(e.dead(100 + TOMBSTONE_SECS), Some(Dead::Gone));
    }
}
