//! A parsed policy: its name and its path rules, exactly as written (after Vault's
//! normalisations: a leading `/` stripped, legacy `policy = "…"` expanded, `deny`
//! alone when present). Nothing here is compiled or merged; see `acl` for that.
//!
//! Invariants: a `PathRule` whose capabilities contain `deny` holds only `deny`;
//! parameter names in `allowed_parameters`/`denied_parameters` are lowercase (Vault
//! compares them case-insensitively); durations of zero are stored as `None` (unset).

use std::collections::BTreeMap;
use std::time::Duration;

use leash_types::{Capabilities, Operation};

/// One named policy.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDoc {
    /// The policy's name (given by the caller, not read from the text).
    pub name: String,
    /// Its path rules in the order written. Several rules may share a path.
    pub rules: Vec<PathRule>,
}

impl PolicyDoc {
    /// The paths of the rules, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.path.as_str())
    }
}

/// One `path "…" { … }` block.
#[derive(Clone, Debug, PartialEq)]
pub struct PathRule {
    /// The path as written, `*` and `+` included, without a leading `/`.
    pub path: String,
    /// What the rule grants (or `deny` alone).
    pub capabilities: Capabilities,
    /// Lowercased parameter name → allowed values; an empty list allows any value; the
    /// key `*` allows any parameter. Empty map: no restriction.
    pub allowed_parameters: BTreeMap<String, Vec<serde_json::Value>>,
    /// Lowercased parameter name → denied values; an empty list denies every value; the
    /// key `*` denies every parameter.
    pub denied_parameters: BTreeMap<String, Vec<serde_json::Value>>,
    /// Parameters a request must carry (as written; compared lowercased).
    pub required_parameters: Vec<String>,
    /// A response-wrapping TTL of at least this is required.
    pub min_wrapping_ttl: Option<Duration>,
    /// A response-wrapping TTL of at most this is required.
    pub max_wrapping_ttl: Option<Duration>,
    /// Requests matching this rule need approval first.
    pub control_group: Option<ControlGroup>,
}

impl PathRule {
    /// A rule granting `capabilities` on `path` with no other conditions.
    pub fn new(path: impl Into<String>, capabilities: Capabilities) -> PathRule {
        PathRule {
            path: path.into(),
            capabilities,
            allowed_parameters: BTreeMap::new(),
            denied_parameters: BTreeMap::new(),
            required_parameters: Vec::new(),
            min_wrapping_ttl: None,
            max_wrapping_ttl: None,
            control_group: None,
        }
    }
}

/// A `control_group` stanza: requests need the approvals of every factor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlGroup {
    /// How long a request may wait for approval (`None`: the server's default).
    pub ttl: Option<Duration>,
    /// Groups of approvers; all must approve.
    pub factors: Vec<ControlGroupFactor>,
    /// Whether the requester may approve their own request (`self_auth_allowed`,
    /// default false).
    pub self_auth_allowed: bool,
}

/// One `factor "name" { identity { group_names = […] approvals = N } }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlGroupFactor {
    /// The factor's label.
    pub name: String,
    /// Approvers must belong to one of these groups.
    pub group_names: Vec<String>,
    /// How many distinct approvers are needed (at least 1).
    pub approvals: u32,
    /// The operations this factor gates (`controlled_capabilities`); empty: all.
    pub controlled_operations: Vec<Operation>,
}

impl ControlGroupFactor {
    /// Whether this factor gates `op`.
    pub fn controls(&self, op: Operation) -> bool {
        self.controlled_operations.is_empty() || self.controlled_operations.contains(&op)
    }
}
