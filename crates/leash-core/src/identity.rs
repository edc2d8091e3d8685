//! `identity/`: identity groups (Vault's `identity/group` API) and entity lookup.
//!
//! leash has no entity store: an entity id is derived at every login from the auth
//! mount's accessor and the identity's alias (see [`crate::identity::entity_id`]), so the
//! same person or agent gets the same id every time. Groups name entity ids
//! (`member_entity_ids`); just-in-time approval factors name groups. To find the entity id
//! of a user before they ever log in, `identity/lookup/entity` computes it from
//! `alias_name` and `alias_mount_accessor`, as Vault's lookup does.
//!
//! Groups do not grant policies in leash (policies come from auth roles); a group
//! written with `policies` is stored and answered with a warning saying so.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use leash_backend::store::{load_json, save_json};
use leash_backend::{
    Backend, BackendRequest, CoreError, Response, Route, Routes, fields, match_route,
};
use leash_types::Operation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Inner;

/// Storage namespace of identity groups.
const NS: &str = "sys/identity";
/// Most members of one group.
const MAX_MEMBERS: usize = 10_000;

/// An identity group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) member_entity_ids: Vec<String>,
    #[serde(default)]
    pub(crate) policies: Vec<String>,
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) creation_time: i64,
    pub(crate) last_update_time: i64,
}

impl Group {
    fn view(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "type": "internal",
            "member_entity_ids": self.member_entity_ids,
            "member_group_ids": [],
            "parent_group_ids": [],
            "policies": self.policies,
            "metadata": self.metadata,
            "creation_time": leash_types::rfc3339(self.creation_time),
            "last_update_time": leash_types::rfc3339(self.last_update_time),
        })
    }
}

async fn by_id(inner: &Inner, id: &str) -> Result<Option<Group>, CoreError> {
    load_json(inner.storage.as_ref(), NS, &format!("group/{id}")).await
}

async fn id_of(inner: &Inner, name: &str) -> Result<Option<String>, CoreError> {
    Ok(inner
        .storage
        .get(NS, &format!("name/{}", name.to_lowercase()))
        .await?
        .map(|v| String::from_utf8_lossy(v.as_slice()).into_owned()))
}

async fn by_name(inner: &Inner, name: &str) -> Result<Option<Group>, CoreError> {
    match id_of(inner, name).await? {
        Some(id) => by_id(inner, &id).await,
        None => Ok(None),
    }
}

/// Every group.
async fn all(inner: &Inner) -> Result<Vec<Group>, CoreError> {
    let mut out = Vec::new();
    for k in inner.storage.list(NS, "group/").await? {
        if let Some(g) = load_json::<Group>(inner.storage.as_ref(), NS, &k).await? {
            out.push(g);
        }
    }
    Ok(out)
}

/// Names of the groups `entity_id` is a member of.
pub(crate) async fn groups_of(inner: &Inner, entity_id: &str) -> Result<Vec<String>, CoreError> {
    if entity_id.is_empty() {
        return Ok(Vec::new());
    }
    Ok(all(inner)
        .await?
        .into_iter()
        .filter(|g| g.member_entity_ids.iter().any(|m| m == entity_id))
        .map(|g| g.name)
        .collect())
}

fn check_group_name(name: &str) -> Result<(), CoreError> {
    leash_approval::rules::check_name("group", name).map_err(|e| CoreError::invalid(e.to_string()))
}

/// Creates or updates a group from API input; `existing` is the group being updated.
async fn write_group(
    inner: &Inner,
    existing: Option<Group>,
    name: Option<String>,
    data: &Map<String, Value>,
) -> Result<Response, CoreError> {
    const KNOWN: &[&str] = &[
        "name",
        "id",
        "member_entity_ids",
        "policies",
        "metadata",
        "type",
        "member_group_ids",
    ];
    let mut warnings = Vec::new();
    if let Some(w) = fields::ignored_warning(data, KNOWN) {
        warnings.push(w);
    }
    if let Some(t) = fields::string(data, "type")?
        && !t.is_empty()
        && t != "internal"
    {
        return Err(CoreError::invalid(
            "group type is not supported: leash has internal groups only",
        ));
    }
    if fields::string_list(data, "member_group_ids")?.is_some_and(|l| !l.is_empty()) {
        return Err(CoreError::invalid(
            "member_group_ids is not supported: list the member entities in member_entity_ids",
        ));
    }
    let now = inner.clock.unix();
    let mut g = existing.clone().unwrap_or_else(|| Group {
        id: leash_types::random::uuid_v4(),
        name: String::new(),
        member_entity_ids: Vec::new(),
        policies: Vec::new(),
        metadata: BTreeMap::new(),
        creation_time: now,
        last_update_time: now,
    });
    if let Some(n) = name {
        check_group_name(&n)?;
        g.name = n;
    }
    if g.name.is_empty() {
        return Err(CoreError::invalid("missing required field \"name\""));
    }
    if let Some(members) = fields::string_list(data, "member_entity_ids")? {
        let mut m: Vec<String> = Vec::new();
        for id in members {
            let id = id.trim().to_owned();
            if id.is_empty() {
                continue;
            }
            if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(CoreError::invalid(
                    "member_entity_ids: an element is not an entity id (see identity/lookup/entity)",
                ));
            }
            if !m.contains(&id) {
                m.push(id);
            }
        }
        if m.len() > MAX_MEMBERS {
            return Err(CoreError::invalid(format!(
                "a group has at most {MAX_MEMBERS} members"
            )));
        }
        g.member_entity_ids = m;
    }
    if let Some(p) = fields::grantable_policies(data, "policies")? {
        g.policies = p;
    }
    if !g.policies.is_empty() {
        warnings.push(
            "group policies are stored but not granted: in leash, policies come from auth roles and tokens; groups name approvers".to_owned(),
        );
    }
    if let Some(m) = fields::string_map(data, "metadata")? {
        g.metadata = m;
    }
    // A name belongs to one group.
    if let Some(other) = id_of(inner, &g.name).await?
        && other != g.id
    {
        return Err(CoreError::invalid(format!(
            "a group named {:?} already exists",
            g.name
        )));
    }
    g.last_update_time = now;
    if let Some(old) = &existing
        && old.name.to_lowercase() != g.name.to_lowercase()
    {
        inner
            .storage
            .delete(NS, &format!("name/{}", old.name.to_lowercase()))
            .await?;
    }
    save_json(inner.storage.as_ref(), NS, &format!("group/{}", g.id), &g).await?;
    inner
        .storage
        .put(
            NS,
            &format!("name/{}", g.name.to_lowercase()),
            g.id.clone().into_bytes(),
        )
        .await?;
    let mut r = Response::data(json!({"id": g.id, "name": g.name}));
    r.warnings = warnings;
    Ok(r)
}

async fn delete_group(inner: &Inner, g: Option<Group>) -> Result<Option<Response>, CoreError> {
    if let Some(g) = g {
        inner.storage.delete(NS, &format!("group/{}", g.id)).await?;
        inner
            .storage
            .delete(NS, &format!("name/{}", g.name.to_lowercase()))
            .await?;
    }
    Ok(None)
}

/// The `identity/` backend.
pub(crate) struct IdentityBackend {
    inner: Weak<Inner>,
}

/// Every path `identity/` serves. Group names are case-insensitive (stored and compared
/// lower-cased in the path form).
const ROUTES: &[Route] = &[
    Route::path("group"),
    Route::path("group/id"),
    Route::path("group/name"),
    Route::path("group/id/:id"),
    Route::path("group/name/:name").folded(),
    Route::path("lookup/entity"),
];

impl IdentityBackend {
    pub(crate) fn new(inner: Weak<Inner>) -> IdentityBackend {
        IdentityBackend { inner }
    }
}

#[async_trait]
impl Backend for IdentityBackend {
    fn routes(&self) -> Routes<'_> {
        Routes::Table(ROUTES)
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        let inner = crate::upgrade(&self.inner)?;
        let p = req.path;
        if let Some(c) = match_route("group/id/:id", p) {
            return Ok(Some(by_id(&inner, c[0]).await?.is_some()));
        }
        if let Some(c) = match_route("group/name/:name", p) {
            return Ok(Some(by_name(&inner, c[0]).await?.is_some()));
        }
        Ok(None)
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let inner = crate::upgrade(&self.inner)?;
        let op = req.operation;
        let write = matches!(op, Operation::Update | Operation::Create);
        let p = req.dispatch_path();
        match (p, op) {
            ("group", _) if write => {
                let name = fields::string(req.data, "name")?;
                let id = fields::string(req.data, "id")?.filter(|s| !s.is_empty());
                let existing =
                    match (&id, &name) {
                        (Some(id), _) => Some(by_id(&inner, id).await?.ok_or_else(|| {
                            CoreError::invalid(format!("no group with id {id:?}"))
                        })?),
                        (None, Some(n)) => by_name(&inner, n).await?,
                        (None, None) => None,
                    };
                return write_group(&inner, existing, name, req.data)
                    .await
                    .map(Some);
            }
            ("group/id" | "group/name", Operation::List) => {
                let groups = all(&inner).await?;
                if groups.is_empty() {
                    return Ok(None);
                }
                let by_id_list = p == "group/id";
                let mut keys = Vec::new();
                let mut info = Map::new();
                for g in groups {
                    let key = if by_id_list {
                        g.id.clone()
                    } else {
                        g.name.clone()
                    };
                    info.insert(
                        key.clone(),
                        json!({"id": g.id, "name": g.name, "num_member_entities": g.member_entity_ids.len()}),
                    );
                    keys.push(key);
                }
                keys.sort();
                return Ok(Some(Response::data(
                    json!({"keys": keys, "key_info": info}),
                )));
            }
            ("lookup/entity", _) if write => return lookup_entity(&inner, req).await,
            _ => {}
        }
        if let Some(c) = match_route("group/id/:id", p) {
            let g = by_id(&inner, c[0]).await?;
            return match op {
                Operation::Read => Ok(g.map(|g| Response::data(g.view()))),
                Operation::Delete => delete_group(&inner, g).await,
                _ if write => {
                    let g = g.ok_or_else(|| {
                        CoreError::invalid(format!("no group with id {:?}", c[0]))
                    })?;
                    let name = fields::string(req.data, "name")?;
                    write_group(&inner, Some(g), name, req.data).await.map(Some)
                }
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("group/name/:name", p) {
            let g = by_name(&inner, c[0]).await?;
            return match op {
                Operation::Read => Ok(g.map(|g| Response::data(g.view()))),
                Operation::Delete => delete_group(&inner, g).await,
                _ if write => write_group(&inner, g, Some(c[0].to_owned()), req.data)
                    .await
                    .map(Some),
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        Err(CoreError::UnknownPath(format!("identity/{}", req.path)))
    }
}

/// `identity/lookup/entity {alias_name, alias_mount_accessor}` (or `{id}`): the entity id
/// a login through that mount with that alias carries.
async fn lookup_entity(
    inner: &Arc<Inner>,
    req: &BackendRequest<'_>,
) -> Result<Option<Response>, CoreError> {
    if let Some(id) = fields::string(req.data, "id")?.filter(|s| !s.is_empty()) {
        return Ok(Some(Response::data(json!({"id": id, "name": id}))));
    }
    let alias = fields::string(req.data, "alias_name")?.unwrap_or_default();
    let accessor = fields::string(req.data, "alias_mount_accessor")?.unwrap_or_default();
    if alias.is_empty() || accessor.is_empty() {
        return Err(CoreError::invalid(
            "give alias_name and alias_mount_accessor (the auth mount's accessor from sys/auth), or id",
        ));
    }
    let router = inner.router();
    let Some(mount) = router
        .all()
        .find(|m| m.entry.accessor == accessor && m.entry.table == leash_backend::MountTable::Auth)
    else {
        return Err(CoreError::invalid(format!(
            "no auth mount has accessor {accessor:?} (see sys/auth)"
        )));
    };
    let id = crate::identity::entity_id(inner, &mount.entry, &alias);
    Ok(Some(Response::data(json!({
        "id": id,
        "name": format!("{}{}", mount.entry.path, alias),
        "aliases": [{"name": alias, "mount_accessor": accessor, "mount_path": format!("auth/{}", mount.entry.path), "mount_type": mount.entry.kind}],
    }))))
}

/// The entity id of identity `alias` on `mount`.
pub(crate) fn entity_id(inner: &Inner, mount: &leash_backend::MountEntry, alias: &str) -> String {
    let h = inner
        .storage
        .keyring()
        .token_hash(&format!("entity:{}:{alias}", mount.accessor));
    let b = &h.0;
    // Shaped as a version-4-style UUID so Vault clients that parse it are happy.
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    )
}
