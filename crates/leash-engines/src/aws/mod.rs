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

    fn http(&self) -> Result<reqwest::Client, CoreError> {
        if let Ok(g) = self.client.lock()
            && let Some(c) = g.as_ref()
        {
            return Ok(c.clone());
        }
        let c = https::client(None, api::TIMEOUT).map_err(|e| upstream(&e))?;
        if let Ok(mut g) = self.client.lock() {
            *g = Some(c.clone());
        }
        Ok(c)
    }

    fn aws(&self, c: &RootConfig) -> Result<Aws, CoreError> {
        let region = if c.region.is_empty() {
            "us-east-1".to_owned()
        } else {
            c.region.clone()
        };
        Ok(Aws {
            access_key: c.access_key.clone(),
            secret_key: SecretString::from(c.secret_key.expose_secret().to_owned()),
            iam_endpoint: if c.iam_endpoint.is_empty() {
                "https://iam.amazonaws.com".to_owned()
            } else {
                c.iam_endpoint.clone()
            },
            sts_endpoint: if c.sts_endpoint.is_empty() {
                format!("https://sts.{region}.amazonaws.com")
            } else {
                c.sts_endpoint.clone()
            },
            region,
            max_retries: u32::try_from(c.max_retries).unwrap_or(3),
            client: self.http()?,
        })
    }

    async fn client_now(&self) -> Result<Aws, CoreError> {
        let c: RootConfig = self.load("config/root").await?.ok_or_else(|| {
            CoreError::Upstream("aws: the engine is not configured (config/root)".into())
        })?;
        self.aws(&c)
    }

    async fn write_root(&self, data: &Map<String, Value>) -> Result<Option<Response>, CoreError> {
        let _g = self.config_lock.lock().await;
        let existing: Option<RootConfig> = self.load("config/root").await?;
        let endpoint = |field: &str, old: Option<&String>| -> Result<String, CoreError> {
            match fields::string(data, field)? {
                Some(e) if e.trim().is_empty() => Ok(String::new()),
                Some(e) => {
                    let u = reqwest::Url::parse(e.trim())
                        .map_err(|_| CoreError::invalid(format!("{field} is not a URL")))?;
                    if !matches!(u.scheme(), "https" | "http")
                        || !u.username().is_empty()
                        || u.password().is_some()
                        || u.query().is_some()
                    {
                        return Err(CoreError::invalid(format!(
                            "{field} must be an http(s) URL without credentials or query"
                        )));
                    }
                    Ok(e.trim().trim_end_matches('/').to_owned())
                }
                None => Ok(old.cloned().unwrap_or_default()),
            }
        };
        let iam_endpoint = endpoint("iam_endpoint", existing.as_ref().map(|e| &e.iam_endpoint))?;
        let sts_endpoint = endpoint("sts_endpoint", existing.as_ref().map(|e| &e.sts_endpoint))?;
        let access_key = match (fields::string(data, "access_key")?, &existing) {
            (Some(a), _) if !a.trim().is_empty() => a.trim().to_owned(),
            (_, Some(e)) => e.access_key.clone(),
            _ => return Err(CoreError::invalid("missing required field \"access_key\"")),
        };
        let secret_key = match (fields::string(data, "secret_key")?, &existing) {
            (Some(s), _) if !s.trim().is_empty() => SecretString::from(s.trim().to_owned()),
            (_, Some(e)) => {
                // The stored secret only goes where it was sent with.
                if e.access_key != access_key
                    || e.iam_endpoint != iam_endpoint
                    || e.sts_endpoint != sts_endpoint
                {
                    return Err(CoreError::invalid(
                        "missing required field \"secret_key\": it must be given again when access_key, iam_endpoint or sts_endpoint changes",
                    ));
                }
                SecretString::from(e.secret_key.expose_secret().to_owned())
            }
            _ => return Err(CoreError::invalid("missing required field \"secret_key\"")),
        };
        let region = match fields::string(data, "region")? {
            Some(r) => r.trim().to_owned(),
            None => existing
                .as_ref()
                .map(|e| e.region.clone())
                .unwrap_or_default(),
        };
        if !region.is_empty()
            && !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(CoreError::invalid("region is not an AWS region name"));
        }
        let max_retries = match fields::integer(data, "max_retries")? {
            Some(n) if (-1..=100).contains(&n) => n,
            Some(_) => return Err(CoreError::invalid("max_retries must be between -1 and 100")),
            None => existing.as_ref().map_or(-1, |e| e.max_retries),
        };
        let cfg = RootConfig {
            access_key,
            secret_key,
            region,
            iam_endpoint,
            sts_endpoint,
            max_retries,
            retired_access_key: existing.and_then(|e| e.retired_access_key),
        };
        self.save("config/root", &cfg).await?;
        Ok(Response::warnings_only(
            fields::ignored_warning(data, ROOT_FIELDS)
                .into_iter()
                .collect(),
        ))
    }

    async fn rotate_root(&self) -> Result<Option<Response>, CoreError> {
        let _g = self.config_lock.lock().await;
        let mut cfg: RootConfig = self
            .load("config/root")
            .await?
            .ok_or_else(|| CoreError::invalid("no root credentials configured (config/root)"))?;
        let aws = self.aws(&cfg)?;
        let me = aws
            .call(Service::Iam, "GetUser", &[])
            .await
            .map_err(|e| upstream(&e))?;
        let user = xml::first(&me, "UserName")
            .map_err(|e| upstream(&ApiError::Decode(e)))?
            .ok_or_else(|| upstream(&ApiError::Decode("GetUser: no UserName".into())))?;
        let made = aws
            .call(
                Service::Iam,
                "CreateAccessKey",
                &[("UserName", user.clone())],
            )
            .await
            .map_err(|e| upstream(&e))?;
        let new_id = xml::first(&made, "AccessKeyId").ok().flatten();
        let new_secret = xml::first(&made, "SecretAccessKey").ok().flatten();
        let (Some(new_id), Some(new_secret)) = (new_id, new_secret) else {
            return Err(upstream(&ApiError::Decode(
                "CreateAccessKey: no access key in the answer".into(),
            )));
        };
        // The new pair is stored before the old one is deleted: a failure from here on
        // leaves a working configuration and the old key named for deletion.
        let old = std::mem::replace(&mut cfg.access_key, new_id.clone());
        cfg.secret_key = SecretString::from(new_secret);
        cfg.retired_access_key = Some(old.clone());
        self.save("config/root", &cfg).await?;
        let new_aws = self.aws(&cfg)?;
        // A new key takes a moment to be usable everywhere in IAM: retry a little.
        let mut last = None;
        for attempt in 0..5u64 {
            match new_aws
                .call(
                    Service::Iam,
                    "DeleteAccessKey",
                    &[("UserName", user.clone()), ("AccessKeyId", old.clone())],
                )
                .await
            {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) if is_no_such_entity(&e) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        }
        if let Some(e) = last {
            return Err(upstream(&e));
        }
        cfg.retired_access_key = None;
        self.save("config/root", &cfg).await?;
        Ok(Some(Response::data(json!({"access_key": new_id}))))
    }

    async fn write_role(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let key = format!("role/{name}");
        let existing: Option<AwsRole> = self.load(&key).await?;
        let list = |field: &str, old: Option<&Vec<String>>| -> Result<Vec<String>, CoreError> {
            Ok(match fields::string_list(data, field)? {
                Some(l) => l,
                None => old.cloned().unwrap_or_default(),
            })
        };
        let map = |field: &str,
                   old: Option<&BTreeMap<String, String>>|
         -> Result<BTreeMap<String, String>, CoreError> {
            Ok(match fields::string_map(data, field)? {
                Some(m) => m,
                None => old.cloned().unwrap_or_default(),
            })
        };
        let text = |field: &str, old: Option<&String>| -> Result<String, CoreError> {
            Ok(match fields::string(data, field)? {
                Some(s) => s.trim().to_owned(),
                None => old.cloned().unwrap_or_default(),
            })
        };
        let e = existing.as_ref();
        let credential_type = text("credential_type", e.map(|e| &e.credential_type))?;
        if !TYPES.contains(&credential_type.as_str()) {
            return Err(CoreError::invalid(
                "credential_type must be one of \"assumed_role\", \"federation_token\" or \"iam_user\"",
            ));
        }
        let role_arns = list("role_arns", e.map(|e| &e.role_arns))?;
        let policy_arns = list("policy_arns", e.map(|e| &e.policy_arns))?;
        let iam_groups = list("iam_groups", e.map(|e| &e.iam_groups))?;
        let session_tags = map("session_tags", e.map(|e| &e.session_tags))?;
        let iam_tags = map("iam_tags", e.map(|e| &e.iam_tags))?;
        let mut policy_document = text("policy_document", e.map(|e| &e.policy_document))?;
        if !policy_document.is_empty() {
            policy_document = policy_json("policy_document", &policy_document)?;
        }
        let permissions_boundary_arn = text(
            "permissions_boundary_arn",
            e.map(|e| &e.permissions_boundary_arn),
        )?;
        let user_path = text("user_path", e.map(|e| &e.user_path))?;
        let default_sts_ttl = match fields::duration(data, "default_sts_ttl")? {
            Some(d) => d.as_secs(),
            None => e.map_or(0, |e| e.default_sts_ttl),
        };
        let max_sts_ttl = match fields::duration(data, "max_sts_ttl")? {
            Some(d) => d.as_secs(),
            None => e.map_or(0, |e| e.max_sts_ttl),
        };
        for (i, a) in role_arns.iter().enumerate() {
            if role_name_of(a).is_none() {
                return Err(CoreError::invalid(format!(
                    "role_arns[{i}] is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
                )));
            }
        }
        for (i, a) in policy_arns.iter().enumerate() {
            if !a.starts_with("arn:") {
                return Err(CoreError::invalid(format!(
                    "policy_arns[{i}] is not an ARN"
                )));
            }
        }
        match credential_type.as_str() {
            "assumed_role" => {
                if role_arns.is_empty() {
                    return Err(CoreError::invalid(
                        "role_arns is required for credential_type \"assumed_role\"",
                    ));
                }
            }
            "iam_user" => {
                if !role_arns.is_empty() {
                    return Err(CoreError::invalid(
                        "role_arns is only for credential_type \"assumed_role\"",
                    ));
                }
                if data.contains_key("default_sts_ttl") || data.contains_key("max_sts_ttl") {
                    return Err(CoreError::invalid(
                        "default_sts_ttl and max_sts_ttl are for STS credential types; iam_user leases follow config/lease",
                    ));
                }
                if policy_arns.is_empty() && policy_document.is_empty() && iam_groups.is_empty() {
                    return Err(CoreError::invalid(
                        "credential_type \"iam_user\" needs policy_arns, policy_document or iam_groups",
                    ));
                }
                let path_ok = user_path.is_empty()
                    || (user_path.starts_with('/')
                        && user_path.ends_with('/')
                        && user_path.len() <= 512);
                if !path_ok {
                    return Err(CoreError::invalid("user_path must start and end with '/'"));
                }
                if !permissions_boundary_arn.is_empty()
                    && !permissions_boundary_arn.starts_with("arn:")
                {
                    return Err(CoreError::invalid("permissions_boundary_arn is not an ARN"));
                }
            }
            _ => {
                if !role_arns.is_empty() {
                    return Err(CoreError::invalid(
                        "role_arns is only for credential_type \"assumed_role\"",
                    ));
                }
            }
        }
        if credential_type != "iam_user"
            && (!iam_groups.is_empty()
                || !user_path.is_empty()
                || !permissions_boundary_arn.is_empty())
        {
            return Err(CoreError::invalid(
                "iam_groups, user_path and permissions_boundary_arn are only for credential_type \"iam_user\"",
            ));
        }
        if max_sts_ttl > 0 && default_sts_ttl > max_sts_ttl {
            return Err(CoreError::invalid(format!(
                "default_sts_ttl ({default_sts_ttl}s) cannot be greater than max_sts_ttl ({max_sts_ttl}s)"
            )));
        }
        let role = AwsRole {
            credential_type,
            role_arns,
            policy_document,
            policy_arns,
            session_tags,
            iam_groups,
            iam_tags,
            permissions_boundary_arn,
            user_path,
            default_sts_ttl,
            max_sts_ttl,
        };
        self.save(&key, &role).await?;
        Ok(Response::warnings_only(
            fields::ignored_warning(data, ROLE_FIELDS)
                .into_iter()
                .collect(),
        ))
    }

    fn role_json(r: &AwsRole) -> Value {
        json!({
            "credential_type": r.credential_type,
            "role_arns": r.role_arns,
            "policy_document": r.policy_document,
            "policy_arns": r.policy_arns,
            "session_tags": r.session_tags,
            "iam_groups": r.iam_groups,
            "iam_tags": r.iam_tags,
            "permissions_boundary_arn": r.permissions_boundary_arn,
            "user_path": r.user_path,
            "default_sts_ttl": r.default_sts_ttl,
            "max_sts_ttl": r.max_sts_ttl,
        })
    }

    async fn issue(
        &self,
        req: &BackendRequest<'_>,
        name: &str,
        sts_path: bool,
    ) -> Result<Option<Response>, CoreError> {
        let role: AwsRole = self
            .load(&format!("role/{name}"))
            .await?
            .ok_or_else(|| CoreError::invalid(format!("unknown role: {name}")))?;
        if role.credential_type == "iam_user" {
            if sts_path {
                return Err(CoreError::invalid(
                    "role has credential_type \"iam_user\": ask aws/creds, not aws/sts",
                ));
            }
            for f in ["role_arn", "ttl", "role_session_name"] {
                if req.data.get(f).is_some_and(|v| !v.is_null()) {
                    return Err(CoreError::invalid(format!(
                        "{f} applies to STS credential types, not \"iam_user\""
                    )));
                }
            }
            return self.issue_user(req, name, &role).await;
        }
        self.issue_sts(req, name, &role).await
    }

    async fn issue_user(
        &self,
        req: &BackendRequest<'_>,
        name: &str,
        role: &AwsRole,
    ) -> Result<Option<Response>, CoreError> {
        let aws = self.client_now().await?;
        let lease_cfg: LeaseConfig = self.load("config/lease").await?.unwrap_or_default();
        let display = req
            .caller
            .map(|c| c.entry.display_name.as_str())
            .unwrap_or("token");
        let cut = |s: &str| aws_chars(s).chars().take(8).collect::<String>();
        let mut username = format!(
            "leash-{}-{}-{}-{}",
            cut(display),
            cut(name),
            SystemClock.unix(),
            random::base62(20)
        );
        username.truncate(64);
        let internal = LeaseData {
            role: name.to_owned(),
            credential_type: "iam_user".into(),
            username: username.clone(),
            role_arn: String::new(),
            irrevocable: false,
        };
        let pending = self
            .leases
            .begin(
                req,
                LeaseRequest {
                    path: format!("creds/{name}"),
                    ttl: Duration::from_secs(lease_cfg.lease),
                    max_ttl: Duration::from_secs(lease_cfg.lease_max),
                    renewable: true,
                    internal: serde_json::to_value(&internal)
                        .map_err(|e| CoreError::internal(e.to_string()))?,
                    caps: Default::default(),
                },
            )
            .await?;
        let made = async {
            let mut p: Vec<(&str, String)> = vec![("UserName", username.clone())];
            if !role.user_path.is_empty() {
                p.push(("Path", role.user_path.clone()));
            }
            if !role.permissions_boundary_arn.is_empty() {
                p.push(("PermissionsBoundary", role.permissions_boundary_arn.clone()));
            }
            let tag_keys: Vec<String> = (1..=role.iam_tags.len())
                .flat_map(|i| {
                    [
                        format!("Tags.member.{i}.Key"),
                        format!("Tags.member.{i}.Value"),
                    ]
                })
                .collect();
            let mut tk = tag_keys.iter();
            for (k, v) in &role.iam_tags {
                if let (Some(kk), Some(vk)) = (tk.next(), tk.next()) {
                    p.push((kk.as_str(), k.clone()));
                    p.push((vk.as_str(), v.clone()));
                }
            }
            aws.call(Service::Iam, "CreateUser", &p).await?;
            if !role.policy_document.is_empty() {
                aws.call(
                    Service::Iam,
                    "PutUserPolicy",
                    &[
                        ("UserName", username.clone()),
                        ("PolicyName", format!("leash-{name}")),
                        ("PolicyDocument", role.policy_document.clone()),
                    ],
                )
                .await?;
            }
            for arn in &role.policy_arns {
                aws.call(
                    Service::Iam,
                    "AttachUserPolicy",
                    &[("UserName", username.clone()), ("PolicyArn", arn.clone())],
                )
                .await?;
            }
            for g in &role.iam_groups {
                aws.call(
                    Service::Iam,
                    "AddUserToGroup",
                    &[("UserName", username.clone()), ("GroupName", g.clone())],
                )
                .await?;
            }
            let k = aws
                .call(
                    Service::Iam,
                    "CreateAccessKey",
                    &[("UserName", username.clone())],
                )
                .await?;
            let id = xml::first(&k, "AccessKeyId").map_err(ApiError::Decode)?;
            let secret = xml::first(&k, "SecretAccessKey").map_err(ApiError::Decode)?;
            match (id, secret) {
                (Some(i), Some(s)) => Ok((i, SecretString::from(s))),
                _ => Err(ApiError::Decode(
                    "CreateAccessKey: no access key in the answer".into(),
                )),
            }
        }
        .await;
        let (id, secret) = match made {
            Ok(v) => v,
            Err(e) => {
                self.leases.abandon(&pending).await?;
                return Err(upstream(&e));
            }
        };
        if let Err(e) = self.leases.activate(&pending).await {
            self.leases.abandon(&pending).await?;
            return Err(e);
        }
        let mut r = Response::data(json!({
            "access_key": id,
            "secret_key": secret.expose_secret(),
            "security_token": null,
            "session_token": null,
        }));
        r.secret = Some(LeaseInfo {
            lease_id: pending.id,
            renewable: true,
            lease_duration: pending.ttl,
        });
        Ok(Some(r))
    }

    async fn issue_sts(
        &self,
        req: &BackendRequest<'_>,
        name: &str,
        role: &AwsRole,
    ) -> Result<Option<Response>, CoreError> {
        let assumed = role.credential_type == "assumed_role";
        let role_arn = match fields::string(req.data, "role_arn")?.filter(|s| !s.is_empty()) {
            Some(a) if !assumed => {
                let _ = a;
                return Err(CoreError::invalid(
                    "role_arn applies to credential_type \"assumed_role\" only",
                ));
            }
            Some(a) => {
                if !role.role_arns.contains(&a) {
                    return Err(CoreError::invalid(
                        "role_arn is not one of the role's role_arns",
                    ));
                }
                a
            }
            None if assumed => match role.role_arns.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(CoreError::invalid(
                        "missing required field \"role_arn\": the role allows several",
                    ));
                }
            },
            None => String::new(),
        };
        let ttl = match fields::duration(req.data, "ttl")? {
            Some(d) if d.as_secs() > 0 => d.as_secs(),
            _ if role.default_sts_ttl > 0 => role.default_sts_ttl,
            _ => DEFAULT_STS_SECONDS,
        };
        if role.max_sts_ttl > 0 && ttl > role.max_sts_ttl {
            return Err(CoreError::invalid(format!(
                "ttl ({ttl}s) is greater than the role's max_sts_ttl ({}s)",
                role.max_sts_ttl
            )));
        }
        let given_name = match fields::string(req.data, "role_session_name")? {
            Some(n) if !n.trim().is_empty() => {
                let n = n.trim().to_owned();
                if n.len() > MAX_SESSION_NAME || aws_chars(&n) != n {
                    return Err(CoreError::invalid(
                        "role_session_name must be at most 64 characters of A-Z, a-z, 0-9 and _+=,.@-",
                    ));
                }
                Some(n)
            }
            _ => None,
        };
        let aws = self.client_now().await?;
        let internal = LeaseData {
            role: name.to_owned(),
            credential_type: role.credential_type.clone(),
            username: String::new(),
            role_arn: role_arn.clone(),
            irrevocable: true,
        };
        let pending = self
            .leases
            .begin(
                req,
                LeaseRequest {
                    path: format!(
                        "{}/{name}",
                        if req.path.starts_with("sts/") {
                            "sts"
                        } else {
                            "creds"
                        }
                    ),
                    ttl: Duration::from_secs(ttl),
                    max_ttl: Duration::from_secs(ttl),
                    renewable: false,
                    internal: serde_json::to_value(&internal)
                        .map_err(|e| CoreError::internal(e.to_string()))?,
                    caps: Default::default(),
                },
            )
            .await?;
        let who = given_name.unwrap_or_else(|| agent_name(req));
        let duration = pending.ttl.max(MIN_STS_SECONDS).to_string();
        let mut p: Vec<(String, String)> = Vec::new();
        let action = if assumed {
            p.push(("RoleArn".into(), role_arn.clone()));
            p.push((
                "RoleSessionName".into(),
                session_name(&who, &pending.trace_id, MAX_SESSION_NAME),
            ));
            for (i, (k, v)) in role.session_tags.iter().enumerate() {
                p.push((format!("Tags.member.{}.Key", i + 1), k.clone()));
                p.push((format!("Tags.member.{}.Value", i + 1), v.clone()));
            }
            "AssumeRole"
        } else {
            p.push((
                "Name".into(),
                session_name(&who, &pending.trace_id, MAX_FEDERATION_NAME),
            ));
            "GetFederationToken"
        };
        p.push(("DurationSeconds".into(), duration));
        if !role.policy_document.is_empty() {
            p.push(("Policy".into(), role.policy_document.clone()));
        }
        for (i, a) in role.policy_arns.iter().enumerate() {
            p.push((format!("PolicyArns.member.{}.arn", i + 1), a.clone()));
        }
        let params: Vec<(&str, String)> = p.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let answer = match aws.call(Service::Sts, action, &params).await {
            Ok(a) => a,
            Err(e) => {
                self.leases.abandon(&pending).await?;
                return Err(upstream(&e));
            }
        };
        let get = |tag: &str| xml::first(&answer, tag).ok().flatten();
        let (Some(id), Some(secret), Some(token)) = (
            get("AccessKeyId"),
            get("SecretAccessKey"),
            get("SessionToken"),
        ) else {
            self.leases.abandon(&pending).await?;
            return Err(upstream(&ApiError::Decode(format!(
                "{action}: no credentials in the answer"
            ))));
        };
        let secret = SecretString::from(secret);
        let token = SecretString::from(token);
        let arn = get("Arn").unwrap_or_default();
        if let Err(e) = self.leases.activate(&pending).await {
            self.leases.abandon(&pending).await?;
            return Err(e);
        }
        let mut r = Response::data(json!({
            "access_key": id,
            "secret_key": secret.expose_secret(),
            "security_token": token.expose_secret(),
            "session_token": token.expose_secret(),
            "arn": arn,
        }));
        r.secret = Some(LeaseInfo {
            lease_id: pending.id,
            renewable: false,
            lease_duration: pending.ttl,
        });
        r = r.with_warning(
            "STS credentials cannot be revoked in AWS before they expire: revoking this lease ends leash's record only; locking the identity (sys/containment/lock) denies the assumed role's sessions issued before the lock",
        );
        if pending.ttl < MIN_STS_SECONDS {
            r = r.with_warning(format!(
                "STS issues credentials for at least {MIN_STS_SECONDS}s: these outlive their {}s lease",
                pending.ttl
            ));
        }
        Ok(Some(r))
    }

    /// Deletes an IAM user and everything that keeps it from being deleted.
    async fn delete_user(aws: &Aws, user: &str) -> Result<(), ApiError> {
        let u = || ("UserName", user.to_owned());
        let ok_if_gone = |r: Result<String, ApiError>| match r {
            Ok(_) => Ok(()),
            Err(e) if is_no_such_entity(&e) => Ok(()),
            Err(e) => Err(e),
        };
        let keys = match aws.call(Service::Iam, "ListAccessKeys", &[u()]).await {
            Ok(x) => xml::texts(&x, "AccessKeyId").map_err(ApiError::Decode)?,
            Err(e) if is_no_such_entity(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        for k in keys {
            ok_if_gone(
                aws.call(Service::Iam, "DeleteAccessKey", &[u(), ("AccessKeyId", k)])
                    .await,
            )?;
        }
        let inline = aws.call(Service::Iam, "ListUserPolicies", &[u()]).await?;
        for p in xml::texts(&inline, "member").map_err(ApiError::Decode)? {
            ok_if_gone(
                aws.call(Service::Iam, "DeleteUserPolicy", &[u(), ("PolicyName", p)])
                    .await,
            )?;
        }
        let attached = aws
            .call(Service::Iam, "ListAttachedUserPolicies", &[u()])
            .await?;
        for p in xml::texts(&attached, "PolicyArn").map_err(ApiError::Decode)? {
            ok_if_gone(
                aws.call(Service::Iam, "DetachUserPolicy", &[u(), ("PolicyArn", p)])
                    .await,
            )?;
        }
        let groups = aws.call(Service::Iam, "ListGroupsForUser", &[u()]).await?;
        for g in xml::texts(&groups, "GroupName").map_err(ApiError::Decode)? {
            ok_if_gone(
                aws.call(
                    Service::Iam,
                    "RemoveUserFromGroup",
                    &[u(), ("GroupName", g)],
                )
                .await,
            )?;
        }
        ok_if_gone(aws.call(Service::Iam, "DeleteUser", &[u()]).await)
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
