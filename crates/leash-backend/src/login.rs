//! Logins, as auth methods see them.
//!
//! An auth method checks a credential (a service-account JWT, an AppRole secret ID, a
//! password) and answers with a [`LoginGrant`] in [`crate::Response::login`]: the
//! policies, lifetimes and identity the new token gets. The core mints the token (an
//! orphan: a login starts a new tree), derives the stable `entity_id` from the mount and
//! the grant's [`LoginGrant::alias`], and fills the response's `auth` block — so no auth
//! method handles token values.
//!
//! [`TokenParams`] is the set of `token_*` role fields every method shares (Vault's
//! `tokenutil`), with the legacy names (`policies`, `ttl`, `max_ttl`, `period`,
//! `bound_cidrs`) accepted on write.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::CoreError;
use crate::fields;

/// What a successful login grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginGrant {
    /// Policies of the token (`default` is added unless `no_default_policy`).
    pub policies: Vec<String>,
    /// Leave out `default`.
    pub no_default_policy: bool,
    /// TTL; `None` means the mount's default.
    pub ttl: Option<Duration>,
    /// Maximum lifetime, renewals included; `None` means the mount's maximum.
    pub max_ttl: Option<Duration>,
    /// Period for periodic tokens.
    pub period: Option<Duration>,
    /// Uses (0 = unlimited).
    pub num_uses: i64,
    /// CIDRs the token may be used from.
    pub bound_cidrs: Vec<String>,
    /// Display name, e.g. `kubernetes-agents-summariser`.
    pub display_name: String,
    /// Token metadata naming the agent (role, service account, namespace…).
    pub metadata: BTreeMap<String, String>,
    /// The identity's stable name within the mount (AppRole role id, `ns/sa` uid,
    /// JWT `user_claim` value, user name); the core derives the `entity_id` from it.
    pub alias: String,
    /// The role the login went through, for logs and metrics (not added to the token's
    /// metadata: each method puts there what Vault's does).
    pub role: Option<String>,
    /// The role's per-identity caps on logins (live tokens, logins per minute).
    pub caps: crate::IssuanceCaps,
}

/// The `token_*` fields of a role (Vault's token parameters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenParams {
    /// `token_policies` (legacy `policies`).
    #[serde(default)]
    pub token_policies: Vec<String>,
    /// `token_ttl` in seconds (legacy `ttl`); 0 = the mount's default.
    #[serde(default)]
    pub token_ttl: u64,
    /// `token_max_ttl` in seconds (legacy `max_ttl`); 0 = the mount's maximum.
    #[serde(default)]
    pub token_max_ttl: u64,
    /// `token_explicit_max_ttl` in seconds; 0 = none.
    #[serde(default)]
    pub token_explicit_max_ttl: u64,
    /// `token_period` in seconds (legacy `period`); 0 = not periodic.
    #[serde(default)]
    pub token_period: u64,
    /// `token_num_uses`; 0 = unlimited.
    #[serde(default)]
    pub token_num_uses: i64,
    /// `token_bound_cidrs` (legacy `bound_cidrs`).
    #[serde(default)]
    pub token_bound_cidrs: Vec<String>,
    /// `token_no_default_policy`.
    #[serde(default)]
    pub token_no_default_policy: bool,
    /// `token_type`: `service` or `default` (leash issues service tokens only).
    #[serde(default = "default_token_type")]
    pub token_type: String,
    /// A leash extension: most live tokens one identity may hold through this role
    /// (0: no cap).
    #[serde(default)]
    pub max_live_leases_per_entity: u64,
    /// A leash extension: most logins of one identity through this role per minute
    /// (0: no cap).
    #[serde(default)]
    pub max_issuance_per_minute_per_entity: u64,
}

fn default_token_type() -> String {
    "default".to_owned()
}

impl Default for TokenParams {
    fn default() -> Self {
        TokenParams {
            token_policies: Vec::new(),
            token_ttl: 0,
            token_max_ttl: 0,
            token_explicit_max_ttl: 0,
            token_period: 0,
            token_num_uses: 0,
            token_bound_cidrs: Vec::new(),
            token_no_default_policy: false,
            token_type: default_token_type(),
            max_live_leases_per_entity: 0,
            max_issuance_per_minute_per_entity: 0,
        }
    }
}

/// Field names [`TokenParams::update`] reads (for "ignored parameters" warnings).
pub const TOKEN_FIELDS: &[&str] = &[
    "token_policies",
    "policies",
    "token_ttl",
    "ttl",
    "token_max_ttl",
    "max_ttl",
    "token_explicit_max_ttl",
    "token_period",
    "period",
    "token_num_uses",
    "token_bound_cidrs",
    "bound_cidrs",
    "token_no_default_policy",
    "token_type",
    "max_live_leases_per_entity",
    "max_issuance_per_minute_per_entity",
];

fn secs(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_secs())
}

impl TokenParams {
    /// Applies the fields present in `data` (a role write: absent fields keep their
    /// value). Validates CIDRs, the token type and `ttl ≤ max_ttl`.
    pub fn update(&mut self, data: &Map<String, Value>) -> Result<(), CoreError> {
        let pick_list = |new: &str, old: &str| -> Result<Option<Vec<String>>, CoreError> {
            match fields::grantable_policies(data, new)? {
                Some(v) => Ok(Some(v)),
                None => fields::grantable_policies(data, old),
            }
        };
        let pick_dur = |new: &str, old: &str| -> Result<Option<u64>, CoreError> {
            match secs(fields::duration(data, new)?) {
                Some(v) => Ok(Some(v)),
                None => Ok(secs(fields::duration(data, old)?)),
            }
        };
        if let Some(p) = pick_list("token_policies", "policies")? {
            self.token_policies = p;
        }
        if let Some(v) = pick_dur("token_ttl", "ttl")? {
            self.token_ttl = v;
        }
        if let Some(v) = pick_dur("token_max_ttl", "max_ttl")? {
            self.token_max_ttl = v;
        }
        if let Some(v) = secs(fields::duration(data, "token_explicit_max_ttl")?) {
            self.token_explicit_max_ttl = v;
        }
        if let Some(v) = pick_dur("token_period", "period")? {
            self.token_period = v;
        }
        if let Some(n) = fields::integer(data, "token_num_uses")? {
            if n < 0 {
                return Err(CoreError::invalid("token_num_uses cannot be negative"));
            }
            self.token_num_uses = n;
        }
        if let Some(c) = pick_list("token_bound_cidrs", "bound_cidrs")? {
            for cidr in &c {
                leash_types::cidr::Cidr::parse(cidr).map_err(|e| {
                    CoreError::invalid(format!("invalid CIDR in token_bound_cidrs: {e}"))
                })?;
            }
            self.token_bound_cidrs = c;
        }
        if let Some(b) = fields::boolean(data, "token_no_default_policy")? {
            self.token_no_default_policy = b;
        }
        if let Some(t) = fields::string(data, "token_type")? {
            match t.as_str() {
                "" | "default" | "service" | "default-service" => {
                    self.token_type = if t.is_empty() {
                        default_token_type()
                    } else {
                        t
                    };
                }
                other => {
                    return Err(CoreError::invalid(format!(
                        "unsupported token_type {other:?}: leash issues service tokens only"
                    )));
                }
            }
        }
        for (field, slot) in [
            (
                "max_live_leases_per_entity",
                &mut self.max_live_leases_per_entity,
            ),
            (
                "max_issuance_per_minute_per_entity",
                &mut self.max_issuance_per_minute_per_entity,
            ),
        ] {
            if let Some(n) = fields::integer(data, field)? {
                *slot = u64::try_from(n).map_err(|_| {
                    CoreError::invalid(format!("{field} must be 0 (no cap) or more"))
                })?;
            }
        }
        if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
            return Err(CoreError::invalid(
                "token_ttl cannot be greater than token_max_ttl",
            ));
        }
        Ok(())
    }

    /// The fields as a role read returns them (Vault's names and legacy aliases).
    pub fn to_json(&self) -> Map<String, Value> {
        let v = json!({
            "token_policies": self.token_policies,
            "policies": self.token_policies,
            "token_ttl": self.token_ttl,
            "ttl": self.token_ttl,
            "token_max_ttl": self.token_max_ttl,
            "max_ttl": self.token_max_ttl,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_period": self.token_period,
            "period": self.token_period,
            "token_num_uses": self.token_num_uses,
            "token_bound_cidrs": self.token_bound_cidrs,
            "bound_cidrs": self.token_bound_cidrs,
            "token_no_default_policy": self.token_no_default_policy,
            "token_type": self.token_type,
        });
        match v {
            Value::Object(mut m) => {
                // Shown when set (Vault has no such fields).
                if self.max_live_leases_per_entity > 0 {
                    m.insert(
                        "max_live_leases_per_entity".into(),
                        json!(self.max_live_leases_per_entity),
                    );
                }
                if self.max_issuance_per_minute_per_entity > 0 {
                    m.insert(
                        "max_issuance_per_minute_per_entity".into(),
                        json!(self.max_issuance_per_minute_per_entity),
                    );
                }
                m
            }
            _ => Map::new(),
        }
    }

    /// A grant with these parameters for identity `alias`.
    pub fn grant(
        &self,
        display_name: impl Into<String>,
        alias: impl Into<String>,
        metadata: BTreeMap<String, String>,
    ) -> LoginGrant {
        let d = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let max = match (self.token_max_ttl, self.token_explicit_max_ttl) {
            (0, 0) => None,
            (0, e) | (e, 0) => Some(e),
            (m, e) => Some(m.min(e)),
        };
        LoginGrant {
            policies: self.token_policies.clone(),
            no_default_policy: self.token_no_default_policy,
            ttl: d(self.token_ttl),
            max_ttl: max.and_then(d),
            period: d(self.token_period),
            num_uses: self.token_num_uses,
            bound_cidrs: self.token_bound_cidrs.clone(),
            display_name: display_name.into(),
            metadata,
            alias: alias.into(),
            role: None,
            caps: crate::IssuanceCaps {
                max_live_per_entity: self.max_live_leases_per_entity,
                max_per_minute_per_entity: self.max_issuance_per_minute_per_entity,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn token_fields_take_new_and_legacy_names() {
        let mut p = TokenParams::default();
        assert_eq!(p.token_type, "default");
        p.update(&data(json!({
            "policies": "a, B",
            "ttl": "15m",
            "token_max_ttl": 3600,
            "token_num_uses": 5,
            "bound_cidrs": ["10.0.0.0/8"],
            "token_type": "service",
        })))
        .unwrap();
        assert_eq!(p.token_policies, vec!["a", "b"]);
        assert_eq!(
            (p.token_ttl, p.token_max_ttl, p.token_num_uses),
            (900, 3600, 5)
        );
        assert_eq!(p.token_bound_cidrs, vec!["10.0.0.0/8"]);
        let g = p.grant("approle", "role-id-1", BTreeMap::new());
        assert_eq!(g.ttl, Some(Duration::from_secs(900)));
        assert_eq!(g.max_ttl, Some(Duration::from_secs(3600)));
        // Absent fields keep their value.
        p.update(&data(json!({"token_ttl": "10m"}))).unwrap();
        assert_eq!((p.token_ttl, p.token_policies.len()), (600, 2));
    }

    #[test]
    fn token_fields_are_validated() {
        let mut p = TokenParams::default();
        for bad in [
            json!({"token_type": "batch"}),
            json!({"token_bound_cidrs": ["10.0.0.0/33"]}),
            json!({"token_ttl": "2h", "token_max_ttl": "1h"}),
            json!({"token_num_uses": -1}),
            json!({"token_ttl": "soon"}),
        ] {
            assert!(p.clone().update(&data(bad.clone())).is_err(), "{bad}");
        }
        p.update(&data(json!({}))).unwrap();
    }
}
