//! `auth/jwt/role/:name`: what a token must say to log in through a role, and what the
//! resulting leash token gets.
//!
//! A role must bind something (`bound_audiences`, `bound_subject`, `bound_claims` or
//! `token_bound_cidrs`, Vault's rule): without a binding, every token the issuer signs —
//! for any workload — would log in. `role_type` is `jwt`; Vault's `oidc` browser flow is
//! refused with a message saying so.

use std::collections::BTreeMap;

use leash_backend::{CoreError, TOKEN_FIELDS, TokenParams, fields};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::verify::{self, Claims, TimeRules};

/// Default clock-skew leeway (seconds), Vault's.
pub(crate) const DEFAULT_SKEW: i64 = 60;
/// Default `exp` and `nbf` leeway (seconds), Vault's.
pub(crate) const DEFAULT_LEEWAY: i64 = 150;

/// A stored role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct JwtRole {
    #[serde(default)]
    pub(crate) bound_audiences: Vec<String>,
    #[serde(default)]
    pub(crate) bound_subject: String,
    /// Claim (name or JSON pointer) → accepted values.
    #[serde(default)]
    pub(crate) bound_claims: BTreeMap<String, Vec<String>>,
    /// `string` (exact) or `glob`.
    #[serde(default = "string_type")]
    pub(crate) bound_claims_type: String,
    pub(crate) user_claim: String,
    #[serde(default)]
    pub(crate) user_claim_json_pointer: bool,
    /// Claim → metadata key.
    #[serde(default)]
    pub(crate) claim_mappings: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) groups_claim: String,
    /// Seconds; 0 = the default, -1 = none.
    #[serde(default)]
    pub(crate) clock_skew_leeway: i64,
    /// Seconds; 0 = the default, -1 = none.
    #[serde(default)]
    pub(crate) expiration_leeway: i64,
    /// Seconds; 0 = the default, -1 = none.
    #[serde(default)]
    pub(crate) not_before_leeway: i64,
    #[serde(default)]
    pub(crate) token: TokenParams,
}

fn string_type() -> String {
    "string".to_owned()
}

impl Default for JwtRole {
    fn default() -> Self {
        JwtRole {
            bound_audiences: Vec::new(),
            bound_subject: String::new(),
            bound_claims: BTreeMap::new(),
            bound_claims_type: string_type(),
            user_claim: "sub".to_owned(),
            user_claim_json_pointer: false,
            claim_mappings: BTreeMap::new(),
            groups_claim: String::new(),
            clock_skew_leeway: 0,
            expiration_leeway: 0,
            not_before_leeway: 0,
            token: TokenParams::default(),
        }
    }
}

/// Fields a role write reads (Vault's; the OIDC-flow ones are accepted and ignored).
const ROLE_FIELDS: &[&str] = &[
    "name",
    "role_type",
    "bound_audiences",
    "bound_subject",
    "bound_claims",
    "bound_claims_type",
    "user_claim",
    "user_claim_json_pointer",
    "claim_mappings",
    "groups_claim",
    "clock_skew_leeway",
    "expiration_leeway",
    "not_before_leeway",
    // OIDC browser flow (hvac's create_role always sends some of them).
    "allowed_redirect_uris",
    "oidc_scopes",
    "verbose_oidc_logging",
    "max_age",
];

/// A leeway field: seconds or a duration string, or -1 for none.
fn leeway(data: &Map<String, Value>, field: &str) -> Result<Option<i64>, CoreError> {
    let bad = || {
        CoreError::invalid(format!(
            "invalid value for field {field:?}: expected seconds, a duration such as \"2m\", or -1 for none"
        ))
    };
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= -1 => Ok(Some(v)),
            _ => Err(bad()),
        },
        Some(Value::String(s)) if s.trim() == "-1" => Ok(Some(-1)),
        Some(Value::String(_)) => fields::duration(data, field)?
            .map(|d| i64::try_from(d.as_secs()).map_err(|_| bad()))
            .transpose(),
        Some(_) => Err(bad()),
    }
}

/// `bound_claims`: an object whose values are a string (or number/bool) or a list of
/// them.
fn bound_claims(
    data: &Map<String, Value>,
) -> Result<Option<BTreeMap<String, Vec<String>>>, CoreError> {
    let bad = || {
        CoreError::invalid(
            "invalid value for field \"bound_claims\": expected an object of claim → string or list of strings",
        )
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let obj = match data.get("bound_claims") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Some(BTreeMap::new())),
        // A JSON object sent as a string (some clients do that).
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => return Err(bad()),
        },
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(bad()),
    };
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        if k.is_empty() {
            return Err(bad());
        }
        let values = match &v {
            Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?,
            other => vec![scalar(other).ok_or_else(bad)?],
        };
        if values.is_empty() {
            return Err(CoreError::invalid(format!(
                "bound_claims: claim {k:?} has an empty list of values"
            )));
        }
        out.insert(k, values);
    }
    Ok(Some(out))
}

impl JwtRole {
    /// Applies a write to `self` (absent fields keep their value), checks the result,
    /// and returns warnings.
    pub(crate) fn update(&mut self, data: &Map<String, Value>) -> Result<Vec<String>, CoreError> {
        if self.token.token_type.is_empty() {
            // `TokenParams::default()` leaves it empty; serde's default is "default".
            self.token.token_type = "default".to_owned();
        }
        if let Some(t) = fields::string(data, "role_type")? {
            match t.trim() {
                "" | "jwt" => {}
                "oidc" => {
                    return Err(CoreError::invalid(
                        "role_type \"oidc\" (the browser login flow) is not supported by leash; use role_type \"jwt\" and log in with the token at auth/<mount>/login",
                    ));
                }
                _ => {
                    return Err(CoreError::invalid("invalid role_type: expected \"jwt\""));
                }
            }
        }
        if let Some(v) = fields::string_list(data, "bound_audiences")? {
            self.bound_audiences = v;
        }
        if let Some(v) = fields::string(data, "bound_subject")? {
            self.bound_subject = v.trim().to_owned();
        }
        if let Some(v) = bound_claims(data)? {
            self.bound_claims = v;
        }
        if let Some(v) = fields::string(data, "bound_claims_type")? {
            self.bound_claims_type = match v.trim() {
                "" | "string" => "string".to_owned(),
                "glob" => "glob".to_owned(),
                _ => {
                    return Err(CoreError::invalid(
                        "invalid bound_claims_type: expected \"string\" or \"glob\"",
                    ));
                }
            };
        }
        if let Some(v) = fields::string(data, "user_claim")? {
            self.user_claim = v.trim().to_owned();
        }
        if self.user_claim.is_empty() {
            return Err(CoreError::invalid(
                "a user_claim must be defined on the role",
            ));
        }
        if let Some(b) = fields::boolean(data, "user_claim_json_pointer")? {
            self.user_claim_json_pointer = b;
        }
        if let Some(m) = fields::string_map(data, "claim_mappings")? {
            let mut targets = std::collections::BTreeSet::new();
            for (claim, key) in &m {
                if claim.is_empty() || key.is_empty() {
                    return Err(CoreError::invalid(
                        "claim_mappings: claims and metadata keys must not be empty",
                    ));
                }
                if key == "role" {
                    return Err(CoreError::invalid(
                        "claim_mappings: metadata key \"role\" is reserved",
                    ));
                }
                if !targets.insert(key.clone()) {
                    return Err(CoreError::invalid(format!(
                        "claim_mappings: metadata key {key:?} is the target of more than one claim"
                    )));
                }
            }
            self.claim_mappings = m;
        }
        if let Some(v) = fields::string(data, "groups_claim")? {
            self.groups_claim = v.trim().to_owned();
        }
        if let Some(v) = leeway(data, "clock_skew_leeway")? {
            self.clock_skew_leeway = v;
        }
        if let Some(v) = leeway(data, "expiration_leeway")? {
            self.expiration_leeway = v;
        }
        if let Some(v) = leeway(data, "not_before_leeway")? {
            self.not_before_leeway = v;
        }
        self.token.update(data)?;
        if self.bound_audiences.is_empty()
            && self.bound_subject.is_empty()
            && self.bound_claims.is_empty()
            && self.token.token_bound_cidrs.is_empty()
        {
            return Err(CoreError::invalid(
                "must have at least one bound constraint when creating/updating a role (bound_audiences, bound_subject, bound_claims or token_bound_cidrs): otherwise any token the issuer signs, for any workload, could log in",
            ));
        }
        let mut known: Vec<&str> = ROLE_FIELDS.to_vec();
        known.extend_from_slice(TOKEN_FIELDS);
        Ok(fields::ignored_warning(data, &known).into_iter().collect())
    }

    /// The role as a read returns it.
    pub(crate) fn to_json(&self) -> Value {
        let mut m = self.token.to_json();
        let bound_claims: Map<String, Value> = self
            .bound_claims
            .iter()
            .map(|(k, v)| {
                let v = if v.len() == 1 { json!(v[0]) } else { json!(v) };
                (k.clone(), v)
            })
            .collect();
        for (k, v) in [
            ("role_type", json!("jwt")),
            ("bound_audiences", json!(self.bound_audiences)),
            ("bound_subject", json!(self.bound_subject)),
            ("bound_claims", Value::Object(bound_claims)),
            ("bound_claims_type", json!(self.bound_claims_type)),
            ("user_claim", json!(self.user_claim)),
            (
                "user_claim_json_pointer",
                json!(self.user_claim_json_pointer),
            ),
            ("claim_mappings", json!(self.claim_mappings)),
            ("groups_claim", json!(self.groups_claim)),
            ("clock_skew_leeway", json!(self.clock_skew_leeway)),
            ("expiration_leeway", json!(self.expiration_leeway)),
            ("not_before_leeway", json!(self.not_before_leeway)),
            ("allowed_redirect_uris", json!([])),
            ("oidc_scopes", json!([])),
            ("verbose_oidc_logging", json!(false)),
            ("max_age", json!(0)),
        ] {
            m.insert(k.to_owned(), v);
        }
        Value::Object(m)
    }

    /// The time rules of this role at `now`.
    pub(crate) fn time_rules(&self, now: i64) -> TimeRules {
        let pick = |v: i64, default: i64| match v {
            0 => default,
            v if v < 0 => 0,
            v => v,
        };
        TimeRules {
            now,
            exp_leeway: pick(self.expiration_leeway, DEFAULT_LEEWAY),
            nbf_leeway: pick(self.not_before_leeway, DEFAULT_LEEWAY),
            skew: pick(self.clock_skew_leeway, DEFAULT_SKEW),
            require_exp: true,
        }
    }

    /// Checks `bound_subject` and `bound_claims` against verified claims.
    pub(crate) fn check_bindings(&self, claims: &Claims) -> Result<(), CoreError> {
        if !self.bound_subject.is_empty()
            && claims.get("sub").and_then(Value::as_str) != Some(self.bound_subject.as_str())
        {
            return Err(CoreError::Forbidden(
                "sub claim does not match the role's bound_subject".to_owned(),
            ));
        }
        let glob = self.bound_claims_type == "glob";
        for (name, wanted) in &self.bound_claims {
            let Some(v) = claims.get(name) else {
                return Err(CoreError::Forbidden(format!("claim {name:?} is missing")));
            };
            let have: Vec<String> = match v {
                Value::Array(items) => items.iter().filter_map(scalar_string).collect(),
                other => scalar_string(other).into_iter().collect(),
            };
            let ok = have.iter().any(|h| {
                wanted.iter().any(|w| {
                    if glob {
                        verify::glob_match(w, h)
                    } else {
                        w == h
                    }
                })
            });
            if !ok {
                return Err(CoreError::Forbidden(format!(
                    "claim {name:?} does not match any associated bound claim values"
                )));
            }
        }
        Ok(())
    }

    /// The identity (the `user_claim` value) of verified claims.
    pub(crate) fn user(&self, claims: &Claims) -> Result<String, CoreError> {
        let v = if self.user_claim_json_pointer {
            claims.get(&self.user_claim)
        } else {
            claims.as_map().get(&self.user_claim)
        };
        let Some(v) = v else {
            return Err(CoreError::Forbidden(format!(
                "claim {:?} (user_claim) not found in token",
                self.user_claim
            )));
        };
        match scalar_string(v) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(CoreError::Forbidden(format!(
                "claim {:?} (user_claim) is not a non-empty string",
                self.user_claim
            ))),
        }
    }

    /// Token metadata from `claim_mappings` (claims that are absent are skipped).
    pub(crate) fn mapped_metadata(
        &self,
        claims: &Claims,
    ) -> Result<BTreeMap<String, String>, CoreError> {
        let mut out = BTreeMap::new();
        for (claim, key) in &self.claim_mappings {
            let Some(v) = claims.get(claim) else { continue };
            let s = scalar_string(v).ok_or_else(|| {
                CoreError::Forbidden(format!(
                    "claim_mappings: claim {claim:?} is not a string, number or boolean"
                ))
            })?;
            out.insert(key.clone(), s);
        }
        Ok(out)
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
