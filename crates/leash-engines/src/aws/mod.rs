//! The `aws` secrets engine: Vault's `aws/` paths, handing out IAM and STS credentials.
//!
//! * `config/root` — `access_key`, `secret_key` (never returned), `region`,
//!   `iam_endpoint`, `sts_endpoint`, `max_retries`; `rotate-root` replaces the key pair
//!   (`config/rotate-root` as Vault spells it, or `rotate-root`; the new key stored
//!   before the old one is deleted); `config/lease` — `lease`,
//!   `lease_max` for `iam_user` credentials.
//! * `roles/:name` — `credential_type` `assumed_role` (`role_arns`, `policy_document` as
//!   a session policy, `policy_arns`, `session_tags`), `federation_token` or `iam_user`
//!   (`policy_arns`, `policy_document`, `iam_groups`, `permissions_boundary_arn`,
//!   `user_path`, `iam_tags`); `default_sts_ttl`, `max_sts_ttl`.
//! * `creds/:name`, `sts/:name` (GET or POST; `role_arn`, `ttl`, `role_session_name`):
//!   the lease is persisted first (intent), then AWS is called. An `iam_user` lease's
//!   revocation deletes the user's access keys, inline and attached policies, group
//!   memberships and the user ("if it exists"), retried like every lease.
//! * STS credentials cannot be revoked in AWS: revoking their lease ends only leash's
//!   record, and the answer says so. Containment still reaches them: locking an
//!   identity that holds live `assumed_role` credentials attaches to the role an inline
//!   deny-all policy conditioned on `aws:TokenIssueTime` earlier than the lock (AWS's
//!   "revoke active sessions"), recorded so unlocking removes it
//!   ([`Backend::contain_leases`], [`Backend::release_lock`]).
//! * The role session name is `<agent name>@<trace id>` (AWS's charset, 64 characters,
//!   the trace id always kept), so CloudTrail joins leash's audit by trace.

mod api;
mod config;
mod issue;
mod roles;
mod xml;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use leash_backend::{
    Backend, BackendRequest, CoreError, LeaseInfo, LeaseRecord, LeaseRegistry, LeaseRequest,
    MountStorage, Response, Route, Routes, fields, match_route,
};
use leash_types::{Clock as _, ExposeSecret, Operation, SecretString, SystemClock, random};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::https::{self, ApiError};
use api::{Aws, Service, is_no_such_entity};

/// STS's shortest credential lifetime (`DurationSeconds`).
pub const MIN_STS_SECONDS: u64 = 900;
/// The STS TTL when neither the request nor the role names one (Vault's).
const DEFAULT_STS_SECONDS: u64 = 3600;
/// Longest role session name.
const MAX_SESSION_NAME: usize = 64;
/// Longest federated user name.
const MAX_FEDERATION_NAME: usize = 32;

/// The stored root configuration. No `Debug`: it holds the secret key.
#[derive(Clone, Serialize, Deserialize)]
struct RootConfig {
    access_key: String,
    #[serde(with = "leash_types::secret::serde_str")]
    secret_key: SecretString,
    region: String,
    #[serde(default)]
    iam_endpoint: String,
    #[serde(default)]
    sts_endpoint: String,
    /// -1: the default (3).
    max_retries: i64,
    /// An access key replaced by `rotate-root` whose deletion has not succeeded yet.
    #[serde(default)]
    retired_access_key: Option<String>,
}

const ROOT_FIELDS: &[&str] = &[
    "access_key",
    "secret_key",
    "region",
    "iam_endpoint",
    "sts_endpoint",
    "max_retries",
];

#[derive(Clone, Default, Serialize, Deserialize)]
struct LeaseConfig {
    lease: u64,
    lease_max: u64,
}

/// A stored role.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AwsRole {
    credential_type: String,
    #[serde(default)]
    role_arns: Vec<String>,
    #[serde(default)]
    policy_document: String,
    #[serde(default)]
    policy_arns: Vec<String>,
    #[serde(default)]
    session_tags: BTreeMap<String, String>,
    #[serde(default)]
    iam_groups: Vec<String>,
    #[serde(default)]
    iam_tags: BTreeMap<String, String>,
    #[serde(default)]
    permissions_boundary_arn: String,
    #[serde(default)]
    user_path: String,
    #[serde(default)]
    default_sts_ttl: u64,
    #[serde(default)]
    max_sts_ttl: u64,
}

const ROLE_FIELDS: &[&str] = &[
    "credential_type",
    "role_arns",
    "policy_document",
    "policy_arns",
    "session_tags",
    "iam_groups",
    "iam_tags",
    "permissions_boundary_arn",
    "user_path",
    "default_sts_ttl",
    "max_sts_ttl",
];

const TYPES: [&str; 3] = ["assumed_role", "federation_token", "iam_user"];

/// What a lease remembers (no secret).
#[derive(Serialize, Deserialize)]
struct LeaseData {
    role: String,
    credential_type: String,
    /// `iam_user`: the user to delete.
    #[serde(default)]
    username: String,
    /// `assumed_role`: the role the session belongs to (containment denies it).
    #[serde(default)]
    role_arn: String,
    /// STS credentials: AWS cannot revoke them before they expire.
    #[serde(default)]
    irrevocable: bool,
}

/// What containment attached for one lock, so unlocking removes it.
#[derive(Serialize, Deserialize)]
struct Contained {
    lock: String,
    policy_name: String,
    roles: Vec<String>,
}

/// The engine serving one `aws` mount.
pub struct AwsSecrets {
    store: MountStorage,
    leases: Arc<dyn LeaseRegistry>,
    client: Mutex<Option<reqwest::Client>>,
    config_lock: tokio::sync::Mutex<()>,
}

/// An `aws` secrets engine for `mount`.
pub fn new_backend(store: MountStorage, leases: Arc<dyn LeaseRegistry>) -> Arc<dyn Backend> {
    Arc::new(AwsSecrets {
        store,
        leases,
        client: Mutex::new(None),
        config_lock: tokio::sync::Mutex::new(()),
    })
}

fn upstream(e: &ApiError) -> CoreError {
    tracing::warn!(error = %e, "AWS API call failed");
    CoreError::Upstream(format!("aws: {e}"))
}

fn check_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(CoreError::invalid(
            "invalid role name: use 1-128 characters of A-Z, a-z, 0-9, '-', '_', '.'",
        ));
    }
    Ok(())
}

/// `s` in AWS's name charset (`[\w+=,.@-]`), other characters as `-`.
fn aws_chars(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The role session name: `<who>@<trace id>` in AWS's charset, at most `max`
/// characters, `who` cut first so the trace id survives.
fn session_name(who: &str, trace_id: &str, max: usize) -> String {
    let trace = aws_chars(trace_id);
    let trace: String = trace.chars().take(max.saturating_sub(3)).collect();
    let room = max.saturating_sub(trace.len() + 1).max(1);
    let mut who: String = aws_chars(who).chars().take(room).collect();
    if who.is_empty() {
        who.push_str("leash");
        who.truncate(room);
    }
    format!("{who}@{trace}")
}

/// The agent's readable name (as the lifecycle events name it): the login role or user
/// name from the token's metadata, else its display name.
fn agent_name(req: &BackendRequest<'_>) -> String {
    let Some(c) = req.caller else {
        return "leash".to_owned();
    };
    ["role_name", "role", "username"]
        .iter()
        .find_map(|k| c.entry.meta.get(*k).filter(|v| !v.is_empty()))
        .map_or_else(|| c.entry.display_name.clone(), Clone::clone)
}

/// The role's name from its ARN (`arn:aws:iam::1:role/path/name` → `name`).
fn role_name_of(arn: &str) -> Option<&str> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let rest = resource.strip_prefix("role/")?;
    rest.rsplit('/').next().filter(|n| !n.is_empty())
}

/// A compact JSON policy document, or `Err` naming the field.
fn policy_json(field: &str, text: &str) -> Result<String, CoreError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|_| CoreError::invalid(format!("{field} is not a JSON policy document")))?;
    if !v.is_object() {
        return Err(CoreError::invalid(format!(
            "{field} must be a JSON object (an IAM policy document)"
        )));
    }
    Ok(v.to_string())
}

fn duration_text(secs: u64) -> String {
    format!("{}h{}m{}s", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The deny-all policy that ends every session of a role issued before `unix`.
fn revoke_older_sessions(unix: i64) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Action": ["*"],
            "Resource": ["*"],
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": leash_types::rfc3339(unix)}},
        }],
    })
    .to_string()
}

/// A short stable id of a lock key (for policy names and storage keys).
fn lock_id(lock: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(lock.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl AwsSecrets {
    async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CoreError> {
        self.store.load_json(key).await
    }

    async fn save<T: Serialize>(&self, key: &str, v: &T) -> Result<(), CoreError> {
        self.store.save_json(key, v).await
    }
}

#[async_trait]
impl Backend for AwsSecrets {
    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        let key = if let Some(c) = match_route("roles/:name", req.path) {
            format!("role/{}", c[0])
        } else if req.path == "config/root" || req.path == "config/lease" {
            req.path.to_owned()
        } else {
            return Ok(None);
        };
        Ok(Some(self.store.get(&key).await?.is_some()))
    }

    fn routes(&self) -> Routes<'_> {
        const ROUTES: &[Route] = &[
            Route::path("config/root"),
            Route::path("config/lease"),
            Route::path("rotate-root"),
            Route::path("config/rotate-root"),
            Route::path("roles"),
            Route::path("roles/:name"),
            Route::path("creds/:name"),
            Route::path("sts/:name"),
        ];
        Routes::Table(ROUTES)
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = req.dispatch_path();
        match path {
            "config/root" => {
                return match op {
                    Operation::Read => Ok(self.load::<RootConfig>("config/root").await?.map(|c| {
                        Response::data(json!({
                            "access_key": c.access_key,
                            "region": c.region,
                            "iam_endpoint": c.iam_endpoint,
                            "sts_endpoint": c.sts_endpoint,
                            "max_retries": c.max_retries,
                        }))
                    })),
                    _ if write => self.write_root(req.data).await,
                    _ => Err(CoreError::UnsupportedOperation),
                };
            }
            "config/lease" => {
                return match op {
                    Operation::Read => {
                        Ok(self.load::<LeaseConfig>("config/lease").await?.map(|c| {
                            Response::data(json!({
                                "lease": duration_text(c.lease),
                                "lease_max": duration_text(c.lease_max),
                            }))
                        }))
                    }
                    _ if write => {
                        let lease = fields::duration(req.data, "lease")?
                            .ok_or_else(|| CoreError::invalid("missing required field \"lease\""))?
                            .as_secs();
                        let lease_max = fields::duration(req.data, "lease_max")?
                            .ok_or_else(|| {
                                CoreError::invalid("missing required field \"lease_max\"")
                            })?
                            .as_secs();
                        if lease_max > 0 && lease > lease_max {
                            return Err(CoreError::invalid(
                                "lease cannot be greater than lease_max",
                            ));
                        }
                        self.save("config/lease", &LeaseConfig { lease, lease_max })
                            .await?;
                        Ok(None)
                    }
                    _ => Err(CoreError::UnsupportedOperation),
                };
            }
            // Vault's path is config/rotate-root (hvac calls it); rotate-root too.
            "rotate-root" | "config/rotate-root" => {
                return if write {
                    self.rotate_root().await
                } else {
                    Err(CoreError::UnsupportedOperation)
                };
            }
            "roles" => {
                return match op {
                    Operation::List | Operation::Read => {
                        let keys: Vec<String> = self
                            .store
                            .list("role/")
                            .await?
                            .into_iter()
                            .map(|k| k["role/".len()..].to_owned())
                            .collect();
                        Ok((!keys.is_empty()).then(|| Response::keys(keys)))
                    }
                    _ => Err(CoreError::UnsupportedOperation),
                };
            }
            _ => {}
        }
        if let Some(c) = match_route("roles/:name", path) {
            let name = c[0];
            check_name(name)?;
            return match op {
                Operation::Read => Ok(self
                    .load::<AwsRole>(&format!("role/{name}"))
                    .await?
                    .map(|r| Response::data(Self::role_json(&r)))),
                Operation::Delete => {
                    self.store.delete(&format!("role/{name}")).await?;
                    Ok(None)
                }
                _ if write => self.write_role(name, req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        for (pattern, sts) in [("creds/:name", false), ("sts/:name", true)] {
            if let Some(c) = match_route(pattern, path) {
                check_name(c[0])?;
                return match op {
                    Operation::Read | Operation::Update | Operation::Create => {
                        self.issue(req, c[0], sts).await
                    }
                    _ => Err(CoreError::UnsupportedOperation),
                };
            }
        }
        Err(CoreError::UnknownPath(format!(
            "{}{}",
            req.mount.route_prefix(),
            path
        )))
    }

    fn lease_role<'p>(&self, path: &'p str) -> &'p str {
        path.strip_prefix("creds/")
            .or_else(|| path.strip_prefix("sts/"))
            .and_then(|r| r.split('/').next())
            .unwrap_or("")
    }

    /// An `iam_user` lease's IAM user name (what leaked text and CloudTrail show).
    fn credential_identity<'a>(&self, internal: &'a Value) -> Option<&'a str> {
        internal
            .get("username")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
    }

    /// Words of `text` that look like IAM users leash made (`leash-…`, long enough to
    /// carry the random part).
    fn leak_candidates(&self, text: &str) -> std::collections::BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)))
            .filter(|w| w.starts_with("leash-") && w.len() >= 30)
            .map(str::to_owned)
            .collect()
    }

    async fn renew_lease(&self, lease: &LeaseRecord) -> Result<(), CoreError> {
        // IAM users live until revoked: renewal only moves the lease's expiry. STS
        // leases are not renewable (the core refuses before asking).
        let _ = lease;
        Ok(())
    }

    async fn revoke_leases(&self, leases: &[LeaseRecord]) -> Vec<Result<(), CoreError>> {
        let datas: Vec<Result<LeaseData, CoreError>> = leases
            .iter()
            .map(|l| {
                serde_json::from_value::<LeaseData>(l.internal.clone())
                    .map_err(|e| CoreError::internal(format!("lease data is unreadable: {e}")))
            })
            .collect();
        let need = datas
            .iter()
            .any(|d| d.as_ref().is_ok_and(|d| !d.username.is_empty()));
        let aws = if need {
            Some(self.client_now().await)
        } else {
            None
        };
        let mut out = Vec::with_capacity(leases.len());
        for d in datas {
            out.push(match d {
                Err(e) => Err(e),
                // STS credentials: nothing AWS can revoke (see the module docs).
                Ok(d) if d.username.is_empty() => Ok(()),
                Ok(d) => match &aws {
                    Some(Ok(a)) => Self::delete_user(a, &d.username)
                        .await
                        .map_err(|e| upstream(&e)),
                    Some(Err(e)) => Err(CoreError::Upstream(e.to_string())),
                    None => Err(CoreError::internal("no AWS client")),
                },
            });
        }
        out
    }

    async fn contain_leases(&self, leases: &[LeaseRecord], lock: &str) -> Result<(), CoreError> {
        let mut roles: Vec<String> = Vec::new();
        for l in leases {
            let Ok(d) = serde_json::from_value::<LeaseData>(l.internal.clone()) else {
                continue;
            };
            match d.credential_type.as_str() {
                "assumed_role" => {
                    if let Some(r) = role_name_of(&d.role_arn)
                        && !roles.iter().any(|x| x == r)
                    {
                        roles.push(r.to_owned());
                    }
                }
                "federation_token" => {
                    tracing::warn!(lease_id = %l.id, "contained federation token: AWS cannot revoke it and it has no role to deny; it ends at its expiry");
                }
                _ => {}
            }
        }
        if roles.is_empty() {
            return Ok(());
        }
        let id = lock_id(lock);
        let key = format!("contained/{id}");
        // Recorded before AWS changes, so an unlock removes whatever was attached.
        let mut rec: Contained = self.load(&key).await?.unwrap_or(Contained {
            lock: lock.to_owned(),
            policy_name: format!("leash-contained-{id}"),
            roles: Vec::new(),
        });
        for r in &roles {
            if !rec.roles.contains(r) {
                rec.roles.push(r.clone());
            }
        }
        self.save(&key, &rec).await?;
        let aws = self.client_now().await?;
        let document = revoke_older_sessions(SystemClock.unix());
        let mut failed = None;
        for r in &roles {
            match aws
                .call(
                    Service::Iam,
                    "PutRolePolicy",
                    &[
                        ("RoleName", r.clone()),
                        ("PolicyName", rec.policy_name.clone()),
                        ("PolicyDocument", document.clone()),
                    ],
                )
                .await
            {
                Ok(_) => {
                    tracing::warn!(role = %r, policy = %rec.policy_name, "containment: the role's sessions issued before now are denied");
                }
                Err(e) => failed = Some(upstream(&e)),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn release_lock(&self, lock: &str) -> Result<(), CoreError> {
        let key = format!("contained/{}", lock_id(lock));
        let Some(rec) = self.load::<Contained>(&key).await? else {
            return Ok(());
        };
        let aws = self.client_now().await?;
        for r in &rec.roles {
            match aws
                .call(
                    Service::Iam,
                    "DeleteRolePolicy",
                    &[
                        ("RoleName", r.clone()),
                        ("PolicyName", rec.policy_name.clone()),
                    ],
                )
                .await
            {
                Ok(_) => {}
                Err(e) if is_no_such_entity(&e) => {}
                Err(e) => return Err(upstream(&e)),
            }
        }
        self.store.delete(&key).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_keep_the_trace_and_aws_charset() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let n = session_name("summariser agent/α", trace, 64);
        assert_eq!(n, format!("summariser-agent--@{trace}"));
        let long = session_name(&"x".repeat(100), trace, 64);
        assert_eq!(long.len(), 64);
        assert!(long.ends_with(&format!("@{trace}")));
        let fed = session_name("agent", trace, 32);
        assert!(fed.len() <= 32 && fed.starts_with("ag@4bf92f"), "{fed}");
        assert!(session_name("", "t", 64).starts_with("leash@"));
    }

    #[test]
    fn role_names_come_from_role_arns() {
        assert_eq!(
            role_name_of("arn:aws:iam::123456789012:role/agents"),
            Some("agents")
        );
        assert_eq!(
            role_name_of("arn:aws:iam::123456789012:role/team/x/agents"),
            Some("agents")
        );
        assert_eq!(role_name_of("arn:aws:iam::123456789012:user/agents"), None);
        assert_eq!(role_name_of("agents"), None);
    }

    #[test]
    fn the_revoke_policy_denies_older_sessions() {
        let p: Value = serde_json::from_str(&revoke_older_sessions(1_800_000_000)).unwrap();
        assert_eq!(p["Statement"][0]["Effect"], "Deny");
        assert_eq!(
            p["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
            "2027-01-15T08:00:00Z"
        );
    }
}
