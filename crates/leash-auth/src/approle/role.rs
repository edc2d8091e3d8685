//! AppRole roles: the stored record, Vault-shaped reads and writes, and the role-ID
//! index (keyed hash of the role ID → role name), kept in step under the mount's role
//! lock. What a role's secret IDs are and how they are spent is in `secret_id`.

use leash_backend::{CoreError, Response, TOKEN_FIELDS, TokenParams, fields};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use leash_backend::store::refused_or_storage as from_storage;

use super::{AppRoleBackend, cidr_list, credential, ct_str_eq};

/// Storage key prefix of role records.
const ROLE_PREFIX: &str = "role/";
/// Storage key prefix of the role-ID index.
const ROLE_ID_PREFIX: &str = "role_id/";

/// Fields a role write reads besides [`TOKEN_FIELDS`].
const ROLE_FIELDS: &[&str] = &[
    "role_name",
    "bind_secret_id",
    "secret_id_ttl",
    "secret_id_num_uses",
    "secret_id_bound_cidrs",
    "bound_cidr_list",
    "local_secret_ids",
    "role_id",
];

/// A stored role. No `Debug`: the role ID is half of a credential.
#[derive(Serialize, Deserialize, Clone)]
pub(super) struct RoleEntry {
    /// Random and never shown: the role's secret IDs are stored under it, so a role
    /// deleted and created again never sees its predecessor's secret IDs.
    pub(super) uid: String,
    /// The role ID (a random UUID unless set by the operator).
    pub(super) role_id: String,
    /// Whether a login needs a secret ID.
    pub(super) bind_secret_id: bool,
    /// Default TTL of new secret IDs, seconds (0 = they do not expire).
    pub(super) secret_id_ttl: u64,
    /// Default uses of new secret IDs (0 = unlimited).
    pub(super) secret_id_num_uses: i64,
    /// Where logins may come from (empty = anywhere).
    pub(super) secret_id_bound_cidrs: Vec<String>,
    /// Vault's replication flag; kept for compatibility, no effect here.
    #[serde(default)]
    pub(super) local_secret_ids: bool,
    /// The token fields.
    #[serde(default)]
    pub(super) token: TokenParams,
}

impl RoleEntry {
    fn new() -> RoleEntry {
        RoleEntry {
            uid: leash_types::random::uuid_v4(),
            role_id: leash_types::random::uuid_v4(),
            bind_secret_id: true,
            secret_id_ttl: 0,
            secret_id_num_uses: 0,
            secret_id_bound_cidrs: Vec::new(),
            local_secret_ids: false,
            // `TokenParams::default()` leaves `token_type` empty; a new role reads as
            // Vault's "default".
            token: TokenParams {
                token_type: "default".to_owned(),
                ..TokenParams::default()
            },
        }
    }

    /// The role as `GET role/:name` shows it (Vault's fields; no role ID, no uid).
    fn to_json(&self) -> Value {
        let mut m = self.token.to_json();
        m.insert("bind_secret_id".into(), json!(self.bind_secret_id));
        m.insert("secret_id_ttl".into(), json!(self.secret_id_ttl));
        m.insert("secret_id_num_uses".into(), json!(self.secret_id_num_uses));
        m.insert(
            "secret_id_bound_cidrs".into(),
            json!(self.secret_id_bound_cidrs),
        );
        m.insert("local_secret_ids".into(), json!(self.local_secret_ids));
        Value::Object(m)
    }
}

/// What the role-ID index holds.
#[derive(Serialize, Deserialize)]
struct RoleIdIndex {
    name: String,
}

/// A custom role ID: printable, no whitespace inside.
fn check_role_id(role_id: &str) -> Result<(), CoreError> {
    if role_id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(CoreError::invalid(
            "role_id must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

impl AppRoleBackend {
    fn role_key(name: &str) -> String {
        format!("{ROLE_PREFIX}{name}")
    }

    fn role_id_key(&self, role_id: &str) -> String {
        format!("{ROLE_ID_PREFIX}{}", self.keyed("role-id", role_id))
    }

    pub(super) async fn load_role(&self, name: &str) -> Result<Option<RoleEntry>, CoreError> {
        self.load_json(&Self::role_key(name)).await
    }

    /// The role a role ID names, if any (the stored role ID is compared again in
    /// constant time, so a stale index entry never matches).
    pub(super) async fn role_by_role_id(
        &self,
        role_id: &str,
    ) -> Result<Option<(String, RoleEntry)>, CoreError> {
        let Some(idx) = self
            .load_json::<RoleIdIndex>(&self.role_id_key(role_id))
            .await?
        else {
            return Ok(None);
        };
        let Some(role) = self.load_role(&idx.name).await? else {
            return Ok(None);
        };
        if !ct_str_eq(&role.role_id, role_id) {
            return Ok(None);
        }
        Ok(Some((idx.name, role)))
    }

    /// Points the index entry of `role_id` at `name`, unless another role holds it.
    async fn claim_role_id(&self, name: &str, role_id: &str) -> Result<(), CoreError> {
        let owner = name.to_owned();
        let mine = serde_json::to_vec(&RoleIdIndex {
            name: name.to_owned(),
        })
        .map_err(|e| CoreError::internal(e.to_string()))?;
        self.store
            .modify(
                &self.role_id_key(role_id),
                Box::new(move |old| {
                    if let Some(b) = old
                        && let Ok(idx) = serde_json::from_slice::<RoleIdIndex>(b)
                        && idx.name != owner
                    {
                        return Err("role_id is already in use by another role".into());
                    }
                    Ok(Some(mine))
                }),
            )
            .await
            .map_err(from_storage)?;
        Ok(())
    }

    /// Removes the index entry of `role_id` if it still points at `name`.
    async fn release_role_id(&self, name: &str, role_id: &str) -> Result<(), CoreError> {
        let owner = name.to_owned();
        self.store
            .modify(
                &self.role_id_key(role_id),
                Box::new(move |old| match old {
                    Some(b) => match serde_json::from_slice::<RoleIdIndex>(b) {
                        Ok(idx) if idx.name != owner => Ok(Some(b.to_vec())),
                        _ => Ok(None),
                    },
                    None => Ok(None),
                }),
            )
            .await
            .map_err(from_storage)?;
        Ok(())
    }

    /// Saves `role` and moves the index from `old_role_id` to its role ID.
    async fn store_role(
        &self,
        name: &str,
        role: &RoleEntry,
        old_role_id: Option<&str>,
    ) -> Result<(), CoreError> {
        if old_role_id != Some(role.role_id.as_str()) {
            self.claim_role_id(name, &role.role_id).await?;
        }
        self.save_json(&Self::role_key(name), role).await?;
        if let Some(old) = old_role_id.filter(|o| *o != role.role_id) {
            self.release_role_id(name, old).await?;
        }
        Ok(())
    }

    pub(super) async fn write_role(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let _roles = self.roles.write().await;
        let existing = self.load_role(name).await?;
        let creating = existing.is_none();
        let mut role = existing.clone().unwrap_or_else(RoleEntry::new);
        if let Some(b) = fields::boolean(data, "bind_secret_id")? {
            role.bind_secret_id = b;
        }
        if let Some(d) = fields::duration(data, "secret_id_ttl")? {
            role.secret_id_ttl = d.as_secs();
        }
        if let Some(n) = fields::integer(data, "secret_id_num_uses")? {
            if n < 0 {
                return Err(CoreError::invalid("secret_id_num_uses cannot be negative"));
            }
            role.secret_id_num_uses = n;
        }
        match cidr_list(data, "secret_id_bound_cidrs")? {
            Some(l) => role.secret_id_bound_cidrs = l,
            None => {
                if let Some(l) = cidr_list(data, "bound_cidr_list")? {
                    role.secret_id_bound_cidrs = l;
                }
            }
        }
        if let Some(b) = fields::boolean(data, "local_secret_ids")? {
            if !creating && b != role.local_secret_ids {
                return Err(CoreError::invalid(
                    "local_secret_ids can only be set when the role is created",
                ));
            }
            role.local_secret_ids = b;
        }
        role.token.update(data)?;
        if let Some(r) = credential(data, "role_id")? {
            check_role_id(&r)?;
            role.role_id = r.to_string();
        }
        if !role.bind_secret_id
            && role.secret_id_bound_cidrs.is_empty()
            && role.token.token_bound_cidrs.is_empty()
        {
            return Err(CoreError::invalid(
                "at least one constraint must be enabled on the role: bind_secret_id, secret_id_bound_cidrs or token_bound_cidrs",
            ));
        }
        self.store_role(name, &role, existing.as_ref().map(|e| e.role_id.as_str()))
            .await?;
        let mut known: Vec<&str> = ROLE_FIELDS.to_vec();
        known.extend_from_slice(TOKEN_FIELDS);
        Ok(Response::warnings_only(
            fields::ignored_warning(data, &known).into_iter().collect(),
        ))
    }

    pub(super) async fn read_role(&self, name: &str) -> Result<Option<Response>, CoreError> {
        Ok(self
            .load_role(name)
            .await?
            .map(|r| Response::data(r.to_json())))
    }

    pub(super) async fn list_roles(&self) -> Result<Option<Response>, CoreError> {
        let keys: Vec<String> = self
            .store
            .list(ROLE_PREFIX)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(ROLE_PREFIX).map(str::to_owned))
            .collect();
        Ok((!keys.is_empty()).then(|| Response::keys(keys)))
    }

    /// Deletes the role, its role-ID index entry and all its secret IDs.
    pub(super) async fn delete_role(&self, name: &str) -> Result<Option<Response>, CoreError> {
        let _roles = self.roles.write().await;
        let Some(role) = self.load_role(name).await? else {
            return Ok(None);
        };
        // The role first: from here on no login through it can succeed.
        self.store.delete(&Self::role_key(name)).await?;
        self.release_role_id(name, &role.role_id).await?;
        self.delete_secret_ids_of(&role).await?;
        if let Ok(mut m) = self.sweeps.lock() {
            m.remove(&role.uid);
        }
        Ok(None)
    }

    pub(super) async fn read_role_id(&self, name: &str) -> Result<Option<Response>, CoreError> {
        Ok(self
            .load_role(name)
            .await?
            .map(|r| Response::data(json!({ "role_id": r.role_id }))))
    }

    pub(super) async fn write_role_id(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let role_id = credential(data, "role_id")?
            .ok_or_else(|| CoreError::invalid("missing required field \"role_id\""))?;
        check_role_id(&role_id)?;
        let _roles = self.roles.write().await;
        let Some(mut role) = self.load_role(name).await? else {
            return Err(CoreError::invalid(format!("role {name:?} does not exist")));
        };
        let old = role.role_id.clone();
        role.role_id = role_id.to_string();
        self.store_role(name, &role, Some(&old)).await?;
        Ok(None)
    }
}
