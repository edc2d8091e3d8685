//! `auth/token/*`: Vault's token store endpoints over [`crate::token::TokenStore`].
//!
//! Routes (relative to `auth/token/`): `create`, `create-orphan`, `create/:role`,
//! `lookup`, `lookup-self`, `lookup-accessor`, `renew`, `renew-self`, `renew-accessor`,
//! `revoke`, `revoke-self`, `revoke-accessor`, `revoke-orphan` (sudo), `roles/`,
//! `roles/:name`, `accessors/` (sudo).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use leash_backend::{
    Backend, BackendRequest, Caller, CoreError, Response, Route, Routes, TokenEntry, fields,
    match_route,
};
use leash_storage::KeyedHash;
use leash_types::{Capability, ExposeSecret, Operation, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Inner;
use crate::events::{self, Event, Kind, reason};
use crate::token::{Issuer, TokenSpec};

const ROLES_NS: &str = "auth/token/roles";

pub(crate) struct TokenBackend {
    inner: Weak<Inner>,
}

impl TokenBackend {
    pub(crate) fn new(inner: Weak<Inner>) -> TokenBackend {
        TokenBackend { inner }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct TokenRole {
    name: String,
    allowed_policies: Vec<String>,
    disallowed_policies: Vec<String>,
    orphan: bool,
    renewable: bool,
    token_period: u64,
    token_explicit_max_ttl: u64,
    token_ttl: u64,
    token_max_ttl: u64,
    token_bound_cidrs: Vec<String>,
    path_suffix: String,
    token_no_default_policy: bool,
    token_num_uses: i64,
    /// Most live tokens of this role one entity (else one parent token) may hold; 0:
    /// no cap.
    #[serde(default)]
    max_live_tokens_per_entity: u64,
}

impl TokenRole {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "allowed_policies": self.allowed_policies,
            "disallowed_policies": self.disallowed_policies,
            "orphan": self.orphan,
            "renewable": self.renewable,
            "token_period": self.token_period,
            "period": self.token_period,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "explicit_max_ttl": self.token_explicit_max_ttl,
            "token_ttl": self.token_ttl,
            "token_max_ttl": self.token_max_ttl,
            "token_bound_cidrs": self.token_bound_cidrs,
            "bound_cidrs": self.token_bound_cidrs,
            "path_suffix": self.path_suffix,
            "token_no_default_policy": self.token_no_default_policy,
            "token_num_uses": self.token_num_uses,
            "max_live_tokens_per_entity": self.max_live_tokens_per_entity,
            "token_type": "service",
        })
    }
}

fn has_sudo(c: &Caller, path: &str) -> bool {
    c.acl.is_root() || c.acl.capabilities(path).contains(Capability::Sudo)
}

fn caller<'a>(req: &'a BackendRequest<'_>) -> Result<&'a Caller, CoreError> {
    req.caller.ok_or(CoreError::PermissionDenied)
}

const CREATE_FIELDS: &[&str] = &[
    "id",
    "policies",
    "meta",
    "metadata",
    "no_parent",
    "no_default_policy",
    "renewable",
    "ttl",
    "lease",
    "explicit_max_ttl",
    "period",
    "display_name",
    "num_uses",
    "type",
    "entity_alias",
    "role_name",
    "scope",
];

#[async_trait]
impl Backend for TokenBackend {
    fn routes(&self) -> Routes<'_> {
        Routes::Table(ROUTES)
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        if let Some(caps) = match_route("roles/:name", req.path) {
            let inner = crate::upgrade(&self.inner)?;
            let name = caps[0].to_ascii_lowercase();
            return Ok(Some(inner.storage.get(ROLES_NS, &name).await?.is_some()));
        }
        Ok(None)
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let inner = crate::upgrade(&self.inner)?;
        let op = req.operation;
        let write = matches!(op, Operation::Update | Operation::Create);
        let p = req.path;
        match (p, op) {
            ("create", _) | ("create-orphan", _) if write => {
                create(&inner, req, None).await.map(Some)
            }
            ("lookup-self", Operation::Read) | ("lookup-self", Operation::Update) => {
                lookup_self(&inner, req).map(Some)
            }
            ("lookup", _) if write => lookup_token(&inner, req).await.map(Some),
            ("lookup-accessor", _) if write => lookup_accessor(&inner, req).await.map(Some),
            ("renew-self", _) if write => {
                let c = caller(req)?;
                renew(&inner, req, c.hash, c.entry.clone()).await.map(Some)
            }
            ("renew", _) if write => {
                let t = required(req, "token")?;
                let (h, e, _) = inner
                    .tokens
                    .lookup(&t)
                    .await?
                    .ok_or_else(|| CoreError::invalid("token not found"))?;
                renew(&inner, req, h, e).await.map(Some)
            }
            ("renew-accessor", _) if write => {
                let a = required(req, "accessor")?;
                let (h, e, _) = inner
                    .tokens
                    .lookup_accessor(&a)
                    .await?
                    .ok_or_else(|| CoreError::invalid("invalid accessor"))?;
                renew(&inner, req, h, e).await.map(Some)
            }
            ("revoke-self", _) if write => {
                let c = caller(req)?;
                let gone = inner.tokens.revoke(c.hash, false).await?;
                // The holder gave its token up: its task is done (`leash agent`
                // revokes on exit this way).
                revoked_event(&inner, &c.entry, &gone, reason::TASK_COMPLETED).await;
                Ok(None)
            }
            ("revoke", _) if write => {
                let t = required(req, "token")?;
                if let Some((h, e, _)) = inner.tokens.lookup(&t).await? {
                    let gone = inner.tokens.revoke(h, false).await?;
                    revoked_event(&inner, &e, &gone, reason::OPERATOR).await;
                }
                Ok(None)
            }
            ("revoke-orphan", _) if write => {
                let t = required(req, "token")?;
                if let Some((h, e, _)) = inner.tokens.lookup(&t).await? {
                    inner.tokens.revoke(h, true).await?;
                    revoked_event(&inner, &e, &[], reason::OPERATOR).await;
                }
                Ok(None)
            }
            ("revoke-accessor", _) if write => {
                let a = required(req, "accessor")?;
                match inner.tokens.lookup_accessor(&a).await? {
                    Some((h, e, _)) => {
                        let gone = inner.tokens.revoke(h, false).await?;
                        revoked_event(&inner, &e, &gone, reason::OPERATOR).await;
                        Ok(None)
                    }
                    None => Err(CoreError::invalid("invalid accessor")),
                }
            }
            ("accessors" | "accessors/", Operation::List) => list_accessors(&inner, req).await,
            ("roles" | "roles/", Operation::List) => {
                let keys = inner.storage.list(ROLES_NS, "").await?;
                Ok((!keys.is_empty()).then(|| Response::keys(keys)))
            }
            _ => {
                if let Some(caps) = match_route("create/:role", p) {
                    if write {
                        let role = load_role(&inner, caps[0]).await?.ok_or_else(|| {
                            CoreError::invalid(format!("unknown role {}", caps[0]))
                        })?;
                        return create(&inner, req, Some(role)).await.map(Some);
                    }
                    return Err(CoreError::UnsupportedOperation);
                }
                if let Some(caps) = match_route("roles/:name", p) {
                    return role_op(&inner, req, caps[0]).await;
                }
                if matches!(
                    p,
                    "create"
                        | "create-orphan"
                        | "lookup"
                        | "lookup-accessor"
                        | "lookup-self"
                        | "renew"
                        | "renew-self"
                        | "renew-accessor"
                        | "revoke"
                        | "revoke-self"
                        | "revoke-accessor"
                        | "revoke-orphan"
                        | "roles"
                        | "accessors"
                ) {
                    return Err(CoreError::UnsupportedOperation);
                }
                Err(CoreError::UnknownPath(format!("auth/token/{p}")))
            }
        }
    }
}

/// The source addresses a child token (orphan or not) may be used from: a token bound to
/// CIDR blocks cannot create one usable from elsewhere. With no blocks of its own the
/// child inherits its creator's; blocks of its own (from a token role) must each lie
/// within one of the creator's.
fn bound_child_cidrs(creator: &[String], child: Vec<String>) -> Result<Vec<String>, CoreError> {
    use leash_types::cidr::Cidr;
    if creator.is_empty() {
        return Ok(child);
    }
    if child.is_empty() {
        return Ok(creator.to_vec());
    }
    let parse = |v: &[String]| -> Result<Vec<Cidr>, CoreError> {
        v.iter()
            .map(|c| {
                Cidr::parse(c).map_err(|_| {
                    CoreError::invalid("token_bound_cidrs: an entry is not a CIDR block")
                })
            })
            .collect()
    };
    let (outer, inner) = (parse(creator)?, parse(&child)?);
    if inner.iter().all(|c| outer.iter().any(|o| c.within(o))) {
        Ok(child)
    } else {
        Err(CoreError::invalid(
            "token_bound_cidrs: the new token's CIDR blocks must lie within the creating token's",
        ))
    }
}

/// Largest inline scope accepted, in bytes.
const MAX_SCOPE: usize = 64 * 1024;

/// The `scope` field of a token creation or a login: a policy in HCL or JSON (a string,
/// or a JSON object), validated by compiling it. `None` when absent or empty.
pub(crate) fn scope_field(
    inner: &Inner,
    data: &serde_json::Map<String, Value>,
) -> Result<Option<String>, CoreError> {
    let text = match data.get("scope") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => {
            return Err(CoreError::invalid(
                "scope must be a policy in HCL or JSON (a string or an object)",
            ));
        }
    };
    if text.len() > MAX_SCOPE {
        return Err(CoreError::invalid(format!(
            "scope is larger than {MAX_SCOPE} bytes"
        )));
    }
    inner.policies.scope_acl(&text)?;
    Ok(Some(text))
}

/// Paths a scope's rules name that the creating token's effective ACL grants nothing
/// on: the scope is accepted (it is an intersection), but those rules add nothing.
fn scope_warnings(parent: &Caller, scope: &str) -> Vec<String> {
    let Ok(doc) = leash_policy::parse_policy("scope", scope) else {
        return Vec::new();
    };
    doc.rules
        .iter()
        .filter(|r| {
            let probe = r.path.trim_end_matches('*');
            parent.acl.capabilities(probe).is_deny() && !parent.acl.grants_anything_under(probe)
        })
        .map(|r| {
            format!(
                "scope path {:?} grants nothing: the creating token has no capability there",
                r.path
            )
        })
        .take(32)
        .collect()
}

/// Every path `auth/token/` serves. Role names are stored lower-cased.
const ROUTES: &[Route] = &[
    Route::path("create"),
    Route::path("create-orphan"),
    Route::path("create/:role").folded(),
    Route::path("lookup"),
    Route::path("lookup-self"),
    Route::path("lookup-accessor"),
    Route::path("renew"),
    Route::path("renew-self"),
    Route::path("renew-accessor"),
    Route::path("revoke"),
    Route::path("revoke-self"),
    Route::path("revoke-accessor"),
    Route::path("revoke-orphan").sudo(),
    Route::path("accessors").sudo(),
    Route::path("roles"),
    Route::path("roles/:name").folded(),
];

/// `LIST auth/token/accessors` (sudo, as in Vault): the accessors of the live tokens,
/// sorted. Optional `after` (exclusive) and `limit` page through them; without them
/// the whole list, as Vault answers.
async fn list_accessors(
    inner: &Inner,
    req: &BackendRequest<'_>,
) -> Result<Option<Response>, CoreError> {
    let all = inner.tokens.live_accessors().await?;
    let after = fields::string(req.data, "after")?.unwrap_or_default();
    let limit = match fields::integer(req.data, "limit")? {
        Some(n) if n <= 0 => return Err(CoreError::invalid("limit must be a positive number")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => usize::MAX,
    };
    let keys: Vec<String> = all
        .into_iter()
        .filter(|a| after.is_empty() || a.as_str() > after.as_str())
        .take(limit)
        .collect();
    Ok(Some(Response::keys(keys)))
}

fn required(req: &BackendRequest<'_>, field: &str) -> Result<String, CoreError> {
    fields::string(req.data, field)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CoreError::invalid(format!("missing required field {field:?}")))
}

async fn load_role(inner: &Inner, name: &str) -> Result<Option<TokenRole>, CoreError> {
    match inner
        .storage
        .get(ROLES_NS, &name.to_ascii_lowercase())
        .await?
    {
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| CoreError::internal(format!("token role {name} unreadable: {e}"))),
        None => Ok(None),
    }
}

async fn create(
    inner: &Arc<Inner>,
    req: &BackendRequest<'_>,
    role: Option<TokenRole>,
) -> Result<Response, CoreError> {
    let parent = caller(req)?;
    let d = req.data;
    if parent.entry.num_uses > 0 {
        return Err(CoreError::invalid(
            "use limit tokens cannot create child tokens",
        ));
    }
    if let Some(t) = fields::string(d, "type")?
        && !t.is_empty()
        && t != "service"
        && t != "default"
    {
        return Err(CoreError::invalid(format!(
            "unsupported token type {t:?}: leash issues service tokens only"
        )));
    }
    let sudo = has_sudo(parent, "auth/token/create");
    let requested: Option<Vec<String>> =
        fields::string_list(d, "policies")?.map(fields::normalize_policies);
    let no_parent = fields::boolean(d, "no_parent")?.unwrap_or(false);
    let id = fields::string(d, "id")?.filter(|s| !s.is_empty());
    if id.is_some() && !parent.acl.is_root() {
        return Err(CoreError::invalid(
            "root or sudo privileges required to specify token id",
        ));
    }
    if let Some(id) = &id
        && (id.len() < 8 || id.len() > 256 || id.contains(char::is_whitespace))
    {
        return Err(CoreError::invalid(
            "a custom token id must be 8 to 256 characters without white space",
        ));
    }
    if let Some(id) = &id {
        let presented = leash_types::TokenValue::from_presented(SecretString::from(id.clone()));
        if presented.is_malformed_leash_token() {
            return Err(CoreError::invalid(
                "a custom token id may not use leash's token prefix without a valid checksum (it could never be used)",
            ));
        }
    }
    let num_uses = fields::integer(d, "num_uses")?.unwrap_or(0);
    if num_uses < 0 {
        return Err(CoreError::invalid("number of uses cannot be negative"));
    }
    let period = fields::duration(d, "period")?;
    let ttl = match fields::duration(d, "ttl")? {
        Some(t) => Some(t),
        None => fields::duration(d, "lease")?,
    };
    let explicit_max_ttl = fields::duration(d, "explicit_max_ttl")?;
    let mut no_default_policy = fields::boolean(d, "no_default_policy")?.unwrap_or(false);
    let meta = match fields::string_map(d, "meta")? {
        Some(m) => m,
        None => fields::string_map(d, "metadata")?.unwrap_or_default(),
    };
    if meta.len() > 64 || meta.iter().any(|(k, v)| k.len() > 128 || v.len() > 512) {
        return Err(CoreError::invalid(
            "meta: at most 64 keys, keys up to 128 and values up to 512 characters",
        ));
    }
    let mut spec = TokenSpec {
        no_default_policy,
        meta,
        display_name: fields::string(d, "display_name")?.unwrap_or_default(),
        ttl,
        explicit_max_ttl,
        period,
        num_uses,
        renewable: fields::boolean(d, "renewable")?.unwrap_or(true),
        path: format!("auth/token/{}", req.path),
        id: id.map(SecretString::from),
        entity_id: parent.entry.entity_id.clone(),
        issuer: Issuer::Token {
            root: parent.acl.is_root(),
        },
        ..TokenSpec::default()
    };
    let mut orphan = req.path == "create-orphan" || no_parent;
    if no_parent && !sudo {
        return Err(CoreError::invalid(
            "root or sudo privileges required to create orphan token",
        ));
    }

    let mut policies: Vec<String> = match &requested {
        Some(p) if !p.is_empty() => p.clone(),
        _ => Vec::new(),
    };
    if let Some(role) = &role
        && role.max_live_tokens_per_entity > 0
    {
        // The identity: the entity the new token inherits, else the parent token.
        let live = inner
            .tokens
            .live_entries()
            .await?
            .iter()
            .filter(|(_, e)| {
                e.role.as_deref() == Some(role.name.as_str())
                    && if parent.entry.entity_id.is_empty() {
                        e.parent_accessor.as_deref() == Some(parent.entry.accessor.as_str())
                    } else {
                        e.entity_id == parent.entry.entity_id
                    }
            })
            .count() as u64;
        if live >= role.max_live_tokens_per_entity {
            inner
                .telemetry
                .issuance_refused("max_live_tokens_per_entity");
            return Err(CoreError::RateLimited(format!(
                "max_live_tokens_per_entity of token role {:?} is {}: this entity holds {live} live tokens of it; revoke one or wait for one to expire",
                role.name, role.max_live_tokens_per_entity
            )));
        }
    }
    if let Some(role) = &role {
        orphan |= role.orphan;
        no_default_policy |= role.token_no_default_policy;
        spec.no_default_policy = no_default_policy;
        spec.role = Some(role.name.clone());
        spec.renewable = spec.renewable && role.renewable;
        spec.bound_cidrs = role.token_bound_cidrs.clone();
        if role.token_period > 0 {
            spec.period = Some(std::time::Duration::from_secs(role.token_period));
        }
        let cap = [role.token_explicit_max_ttl, role.token_max_ttl]
            .into_iter()
            .filter(|v| *v > 0)
            .min();
        if let Some(c) = cap {
            let c = std::time::Duration::from_secs(c);
            spec.explicit_max_ttl = Some(spec.explicit_max_ttl.map_or(c, |e| e.min(c)));
        }
        if spec.ttl.is_none() && role.token_ttl > 0 {
            spec.ttl = Some(std::time::Duration::from_secs(role.token_ttl));
        }
        if role.token_num_uses > 0 && (spec.num_uses == 0 || spec.num_uses > role.token_num_uses) {
            spec.num_uses = role.token_num_uses;
        }
        if policies.is_empty() {
            policies = role.allowed_policies.clone();
        }
        let disallowed: BTreeSet<&str> = role
            .disallowed_policies
            .iter()
            .map(String::as_str)
            .collect();
        if let Some(p) = policies.iter().find(|p| disallowed.contains(p.as_str())) {
            return Err(CoreError::invalid(format!(
                "token policy {p:?} is disallowed by this role"
            )));
        }
        if !role.allowed_policies.is_empty() {
            let allowed: BTreeSet<&str> =
                role.allowed_policies.iter().map(String::as_str).collect();
            if let Some(p) = policies
                .iter()
                .find(|p| p.as_str() != "default" && !allowed.contains(p.as_str()))
            {
                return Err(CoreError::invalid(format!(
                    "token policies ({p}) must be subset of the role's allowed policies"
                )));
            }
        }
    }
    if policies.is_empty() {
        // Inherit the parent's policies (root stays root only for a root parent); a
        // role's allowed_policies, when it has them, were taken above.
        policies = parent.entry.policies.clone();
    }
    if policies.iter().any(|p| p == "root") && !parent.acl.is_root() {
        return Err(CoreError::invalid(
            "root tokens may only be created by a root token",
        ));
    }
    let role_grants = role
        .as_ref()
        .is_some_and(|r| !r.allowed_policies.is_empty());
    if !sudo && !role_grants {
        let parent_set: BTreeSet<&str> = parent.entry.policies.iter().map(String::as_str).collect();
        if let Some(p) = policies
            .iter()
            .find(|p| p.as_str() != "default" && !parent_set.contains(p.as_str()))
        {
            let _ = p;
            return Err(CoreError::invalid(
                "child policies must be subset of parent",
            ));
        }
    }
    if spec.period.is_some() && !sudo && role.as_ref().is_none_or(|r| r.token_period == 0) {
        return Err(CoreError::invalid(
            "root or sudo privileges required to create periodic token",
        ));
    }
    spec.policies = policies;
    spec.bound_cidrs = bound_child_cidrs(&parent.entry.bound_cidrs, spec.bound_cidrs)?;
    spec.scope = scope_field(inner, d)?;
    let scope_warns = spec
        .scope
        .as_deref()
        .map(|s| scope_warnings(parent, s))
        .unwrap_or_default();
    let warning = fields::ignored_warning(d, CREATE_FIELDS);
    let minted = inner
        .tokens
        .mint(spec, if orphan { None } else { Some(parent) })
        .await?;
    let mut resp = Response::data(Value::Null);
    resp.data = None;
    resp.auth = Some(inner.tokens.auth_info(&minted));
    resp.warnings = minted.warnings;
    resp.warnings.extend(scope_warns);
    if let Some(w) = warning {
        resp.warnings.push(w);
    }
    Ok(resp)
}

fn lookup_self(inner: &Inner, req: &BackendRequest<'_>) -> Result<Response, CoreError> {
    let c = caller(req)?;
    let id = req
        .token
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or_default();
    // The pipeline spent one use of the caller before this ran; report what is left
    // after this request, as Vault does.
    let uses_left = c.uses_left.map(|n| (n - 1).max(0));
    Ok(Response::data(
        inner.tokens.lookup_data(&c.entry, &id, uses_left),
    ))
}

async fn lookup_token(inner: &Inner, req: &BackendRequest<'_>) -> Result<Response, CoreError> {
    let t = required(req, "token")?;
    match inner.tokens.lookup(&t).await? {
        Some((_, e, uses)) => Ok(Response::data(inner.tokens.lookup_data(&e, &t, uses))),
        None => Err(CoreError::PermissionDenied),
    }
}

async fn lookup_accessor(inner: &Inner, req: &BackendRequest<'_>) -> Result<Response, CoreError> {
    let a = required(req, "accessor")?;
    match inner.tokens.lookup_accessor(&a).await? {
        Some((_, e, uses)) => Ok(Response::data(inner.tokens.lookup_data(&e, "", uses))),
        None => Err(CoreError::invalid("invalid accessor")),
    }
}

async fn renew(
    inner: &Inner,
    req: &BackendRequest<'_>,
    hash: KeyedHash,
    entry: leash_backend::TokenEntry,
) -> Result<Response, CoreError> {
    let increment = fields::duration(req.data, "increment")?;
    let (entry, warnings) = inner.tokens.renew(hash, entry, increment).await?;
    let now = inner.clock.unix();
    let mut resp = Response::data(Value::Null);
    resp.data = None;
    resp.auth = Some(leash_backend::AuthInfo {
        // Renewal does not hand the token out again: the caller already holds it.
        client_token: SecretString::from(if req.path == "renew-self" {
            req.token
                .map(|t| t.expose_secret().to_owned())
                .unwrap_or_default()
        } else {
            String::new()
        }),
        accessor: entry.accessor.clone(),
        policies: entry.policies.clone(),
        token_policies: entry.policies.clone(),
        metadata: entry.meta.clone(),
        display_name: entry.display_name.clone(),
        lease_duration: entry
            .expire_time
            .map(|e| (e - now).max(0) as u64)
            .unwrap_or(0),
        renewable: entry.renewable,
        entity_id: entry.entity_id.clone(),
        token_type: "service".to_owned(),
        orphan: entry.orphan,
        num_uses: entry.num_uses,
    });
    resp.warnings = warnings;
    Ok(resp)
}

const ROLE_FIELDS: &[&str] = &[
    "allowed_policies",
    "disallowed_policies",
    "orphan",
    "renewable",
    "token_period",
    "period",
    "token_explicit_max_ttl",
    "explicit_max_ttl",
    "token_bound_cidrs",
    "bound_cidrs",
    "path_suffix",
    "token_no_default_policy",
    "token_num_uses",
    "max_live_tokens_per_entity",
    "token_type",
    "token_ttl",
    "token_max_ttl",
    "allowed_entity_aliases",
];

async fn role_op(
    inner: &Inner,
    req: &BackendRequest<'_>,
    name: &str,
) -> Result<Option<Response>, CoreError> {
    let name = name.to_ascii_lowercase();
    if name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(CoreError::invalid(
            "role name may contain letters, digits, '-', '_' and '.'",
        ));
    }
    match req.operation {
        Operation::Read => Ok(load_role(inner, &name)
            .await?
            .map(|r| Response::data(r.to_json()))),
        Operation::Delete => {
            inner.storage.delete(ROLES_NS, &name).await?;
            Ok(None)
        }
        Operation::Create | Operation::Update => {
            let d = req.data;
            let mut role = load_role(inner, &name).await?.unwrap_or(TokenRole {
                name: name.clone(),
                renewable: true,
                ..TokenRole::default()
            });
            let lower = |v: Vec<String>| {
                v.into_iter()
                    .map(|p| p.to_ascii_lowercase())
                    .collect::<Vec<_>>()
            };
            if let Some(v) = fields::grantable_policies(d, "allowed_policies")? {
                role.allowed_policies = v;
            }
            if let Some(v) = fields::string_list(d, "disallowed_policies")? {
                role.disallowed_policies = lower(v);
            }
            if let Some(v) = fields::boolean(d, "orphan")? {
                role.orphan = v;
            }
            if let Some(v) = fields::boolean(d, "renewable")? {
                role.renewable = v;
            }
            if let Some(v) = fields::boolean(d, "token_no_default_policy")? {
                role.token_no_default_policy = v;
            }
            for (field, alias) in [
                ("token_period", "period"),
                ("token_explicit_max_ttl", "explicit_max_ttl"),
            ] {
                let v = match fields::duration(d, field)? {
                    Some(v) => Some(v),
                    None => fields::duration(d, alias)?,
                };
                if let Some(v) = v {
                    match field {
                        "token_period" => role.token_period = v.as_secs(),
                        _ => role.token_explicit_max_ttl = v.as_secs(),
                    }
                }
            }
            if let Some(v) = fields::duration(d, "token_ttl")? {
                role.token_ttl = v.as_secs();
            }
            if let Some(v) = fields::duration(d, "token_max_ttl")? {
                role.token_max_ttl = v.as_secs();
            }
            if role.token_ttl > 0 && role.token_max_ttl > 0 && role.token_ttl > role.token_max_ttl {
                return Err(CoreError::invalid(
                    "token_ttl cannot be greater than token_max_ttl",
                ));
            }
            let cidrs = match fields::string_list(d, "token_bound_cidrs")? {
                Some(v) => Some(v),
                None => fields::string_list(d, "bound_cidrs")?,
            };
            if let Some(v) = cidrs {
                for c in &v {
                    leash_types::cidr::Cidr::parse(c)
                        .map_err(|e| CoreError::invalid(e.to_string()))?;
                }
                role.token_bound_cidrs = v;
            }
            if let Some(v) = fields::string(d, "path_suffix")? {
                if v.contains("..") {
                    return Err(CoreError::invalid("path_suffix cannot contain '..'"));
                }
                role.path_suffix = v;
            }
            if let Some(v) = fields::integer(d, "max_live_tokens_per_entity")? {
                role.max_live_tokens_per_entity = u64::try_from(v).map_err(|_| {
                    CoreError::invalid("max_live_tokens_per_entity must be 0 (no cap) or more")
                })?;
            }
            if let Some(v) = fields::integer(d, "token_num_uses")? {
                if v < 0 {
                    return Err(CoreError::invalid("token_num_uses cannot be negative"));
                }
                role.token_num_uses = v;
            }
            if let Some(t) = fields::string(d, "token_type")?
                && !matches!(t.as_str(), "" | "service" | "default" | "default-service")
            {
                return Err(CoreError::invalid(format!(
                    "unsupported token_type {t:?}: leash issues service tokens only"
                )));
            }
            let bytes =
                serde_json::to_vec(&role).map_err(|e| CoreError::internal(e.to_string()))?;
            inner.storage.put(ROLES_NS, &name, bytes).await?;
            Ok(fields::ignored_warning(d, ROLE_FIELDS).map(|w| {
                let mut r = Response::data(Value::Null);
                r.data = None;
                r.with_warning(w)
            }))
        }
        _ => Err(CoreError::UnsupportedOperation),
    }
}
/// The `revoked` lifecycle event of the token `e` (written; the request's response
/// entry follows and makes it durable), then one per child token revoked with it
/// (`gone` is what the revocation removed, `e` first), reason `parent revoked`; the
/// leases of all of them get theirs from the lease worker.
async fn revoked_event(inner: &Inner, e: &TokenEntry, gone: &[TokenEntry], why: &'static str) {
    let now = inner.clock.unix();
    let mut evs = Vec::with_capacity(gone.len().max(1));
    let mut ev = Event::token(Kind::Revoked, e, now);
    ev.ttl_seconds = 0;
    ev.reason = Some(why);
    evs.push(ev);
    for child in gone.iter().filter(|c| c.accessor != e.accessor) {
        let mut ev = Event::token(Kind::Revoked, child, now);
        ev.ttl_seconds = 0;
        ev.reason = Some(reason::PARENT_REVOKED);
        evs.push(ev);
    }
    events::emit_logged(inner, &evs, false).await;
}
