//! The compiled ACL: merged rules of a token's policies, and the decision for a request.
//!
//! Merging (Vault's `NewACL`): rules merge only when their path strings are identical —
//! capabilities union (a `deny` in any of them leaves only `deny` and drops parameter
//! conditions), parameter maps merge (an empty value list, "any value", absorbs a
//! non-empty one; otherwise lists concatenate), required parameters union, wrapping TTL
//! bounds take the smaller value, control-group factors concatenate. Rules with different
//! paths never merge: the single most specific matching rule decides, so a specific rule
//! can grant less than a broader one.
//!
//! Selection of the rule for a path (Vault's `AllowOperation`):
//! 1. an exact rule (no `*`, no `+`) for the path wins outright; for LIST, so does an
//!    exact rule for the path without one trailing `/`;
//! 2. otherwise among the longest matching glob prefix and all matching `+` rules the most
//!    specific wins: the first `+`/`*` occurs later; then no trailing `*`; then fewer
//!    `+` segments; then the longer path; then the lexicographically greater path;
//! 3. for LIST of a path ending in `/`, candidates for the path without that `/` are
//!    ranked together with those for the full path (so `kv/+` grants `LIST kv/x/`, while a
//!    more specific `deny` on `kv/x/*` still wins). OpenBao consults the trimmed path only
//!    when the full path has no candidate at all; recent Vault pools both forms but prefers
//!    any list-granting candidate over a more specific non-denying one. Pooling and ranking
//!    once is the reading consistent with "the most specific rule wins".
//!
//! Cost of [`Acl::check`]: one hash lookup (two for LIST), a walk of the path's bytes in
//! the prefix trie, a walk of the path's segments in the `+` trie (see `index`), and a
//! comparison of the few candidates found. Never proportional to the number of rules.
//!
//! Invariants: an `Acl` is immutable after `compile`; `compile` never yields a root ACL
//! (a policy *named* `root` has no special power here — use [`Acl::root`]); with no
//! matching rule the answer is deny.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use leash_types::{Capabilities, Capability, Operation};
use serde_json::{Map, Value};

use crate::doc::{ControlGroup, PathRule, PolicyDoc};
use crate::index::{PrefixTrie, RuleId, SegmentTrie};
use crate::params::ParamRules;

/// A request to authorise. Its `Debug` shows parameter names only, never values.
#[derive(Clone, Copy)]
pub struct AclRequest<'a> {
    /// The request path, without `/v1/` (a leading `/` is ignored).
    pub path: &'a str,
    /// What the request does.
    pub operation: Operation,
    /// Request parameters (body, or query for reads), checked against the rule's
    /// parameter conditions for read, create, update and patch.
    pub data: Option<&'a Map<String, Value>>,
    /// The path is root-protected: the winning rule must also grant `sudo`.
    pub needs_sudo: bool,
}

impl fmt::Debug for AclRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclRequest")
            .field("path", &self.path)
            .field("operation", &self.operation)
            .field(
                "data_keys",
                &self.data.map(|d| d.keys().collect::<Vec<_>>()),
            )
            .field("needs_sudo", &self.needs_sudo)
            .finish()
    }
}

/// The answer for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct AclDecision {
    /// Whether the request may proceed (subject to `control_group`).
    pub allowed: bool,
    /// The capabilities of the winning rule (empty when no rule matched).
    pub capabilities: Capabilities,
    /// Names of the policies whose rules grant the requested capability on the winning
    /// rule (for audit `policy_results`); set once the capability check passed, as Vault
    /// does, so it may be non-empty on a denial by parameters or sudo.
    pub granting_policies: Vec<String>,
    /// When allowed and the winning rule has a control group whose factors gate this
    /// operation: the request needs those approvals before it runs.
    pub control_group: Option<ControlGroup>,
    /// Why the request was denied (`None` when allowed).
    pub denial: Option<Denial>,
    /// The path of the winning rule as written, for logs (`None`: no rule matched).
    pub matched_rule: Option<String>,
}

/// Why a request was denied. `Display` is for logs; it never includes parameter values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No rule of any policy matches the path.
    NoMatchingRule,
    /// The winning rule is `deny`.
    ExplicitDeny,
    /// The winning rule does not grant this capability.
    MissingCapability(Capability),
    /// The path is root-protected and the winning rule lacks `sudo`.
    SudoRequired,
    /// A parameter (named) is denied by `denied_parameters`.
    ParameterDenied(String),
    /// A parameter (named) or its value is not in `allowed_parameters`.
    ParameterNotAllowed(String),
    /// A parameter (named) of `required_parameters` is missing.
    RequiredParameterMissing(String),
    /// The rule has `min_wrapping_ttl`/`max_wrapping_ttl` and the request is not
    /// response-wrapped with a TTL in that range.
    WrappingTtlOutOfRange {
        /// The rule's lower bound.
        min: Option<Duration>,
        /// The rule's upper bound.
        max: Option<Duration>,
    },
}

impl Denial {
    /// A stable snake_case code for the reason (for metrics, audit and test vectors).
    pub fn code(&self) -> &'static str {
        match self {
            Denial::NoMatchingRule => "no_matching_rule",
            Denial::ExplicitDeny => "explicit_deny",
            Denial::MissingCapability(_) => "missing_capability",
            Denial::SudoRequired => "sudo_required",
            Denial::ParameterDenied(_) => "parameter_denied",
            Denial::ParameterNotAllowed(_) => "parameter_not_allowed",
            Denial::RequiredParameterMissing(_) => "required_parameter_missing",
            Denial::WrappingTtlOutOfRange { .. } => "wrapping_ttl_out_of_range",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::NoMatchingRule => f.write_str("no policy grants access to this path"),
            Denial::ExplicitDeny => f.write_str("a policy explicitly denies this path"),
            Denial::MissingCapability(c) => {
                write!(
                    f,
                    "no \"{c}\" capability on this path in the matching policy rule"
                )
            }
            Denial::SudoRequired => {
                f.write_str("this path is root-protected and the matching rule lacks \"sudo\"")
            }
            Denial::ParameterDenied(p) => write!(f, "parameter {p:?} is denied by policy"),
            Denial::ParameterNotAllowed(p) => {
                write!(f, "parameter {p:?} or its value is not allowed by policy")
            }
            Denial::RequiredParameterMissing(p) => {
                write!(f, "required parameter {p:?} is missing")
            }
            Denial::WrappingTtlOutOfRange { min, max } => {
                let secs = |d: &Option<Duration>| {
                    d.map_or("-".to_owned(), |d| format!("{}s", d.as_secs()))
                };
                write!(
                    f,
                    "the response must be wrapped with a TTL between {} and {}",
                    secs(min),
                    secs(max)
                )
            }
        }
    }
}

/// How a rule path matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Exact,
    /// Ends in `*`, no `+` segment.
    Prefix,
    /// Has a `+` segment (possibly also a trailing `*`).
    Segment,
}

/// One merged rule.
#[derive(Clone, Debug)]
struct Compiled {
    path: String,
    kind: Kind,
    /// For ranking: the path without its trailing `*`.
    wc_path: String,
    /// Whether the path ends in `*`.
    is_glob: bool,
    /// Byte index of the first `+` (segment rules) or the prefix length (prefix rules).
    first_wildcard: usize,
    /// Number of `+` segments.
    wildcards: usize,
    capabilities: Capabilities,
    /// Per capability (index in `Capability::ALL`), the policies granting it.
    granting: [Vec<String>; 9],
    params: ParamRules,
    min_wrapping_ttl: Option<Duration>,
    max_wrapping_ttl: Option<Duration>,
    control_group: Option<ControlGroup>,
}

impl Compiled {
    /// Larger is more specific.
    fn rank(&self) -> (usize, bool, Reverse<usize>, usize, &str) {
        (
            self.first_wildcard,
            !self.is_glob,
            Reverse(self.wildcards),
            self.wc_path.len(),
            self.wc_path.as_str(),
        )
    }
}

fn cap_index(c: Capability) -> usize {
    Capability::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

fn classify(path: &str) -> Kind {
    let segment = path == "+" || path.contains("/+") || path.starts_with("+/");
    if segment {
        Kind::Segment
    } else if path.ends_with('*') {
        Kind::Prefix
    } else {
        Kind::Exact
    }
}

/// A compiled, immutable set of policies. Cheap to share (`Send + Sync`).
#[derive(Clone, Debug, Default)]
pub struct Acl {
    root: bool,
    rules: Vec<Compiled>,
    exact: HashMap<String, RuleId>,
    prefix: PrefixTrie,
    segment: SegmentTrie,
    has_segment_rules: bool,
    /// Non-empty for an intersection ([`Acl::intersection`]): the ACLs that must all
    /// allow a request (this ACL's own rules are then empty).
    levels: Vec<Arc<Acl>>,
}

impl Acl {
    /// Merges the policies' rules and builds the lookup structures.
    pub fn compile(policies: &[&PolicyDoc]) -> Acl {
        let mut acl = Acl::default();
        let mut by_key: HashMap<(Kind, String), RuleId> = HashMap::new();
        for doc in policies {
            for rule in &doc.rules {
                let kind = classify(&rule.path);
                match by_key.get(&(kind, rule.path.clone())) {
                    Some(&id) => merge(&mut acl.rules[id], rule, &doc.name),
                    None => {
                        let id = acl.rules.len();
                        acl.rules.push(new_compiled(rule, kind, &doc.name));
                        by_key.insert((kind, rule.path.clone()), id);
                    }
                }
            }
        }
        for (id, r) in acl.rules.iter().enumerate() {
            match r.kind {
                Kind::Exact => {
                    acl.exact.insert(r.path.clone(), id);
                }
                Kind::Prefix => acl.prefix.insert(&r.wc_path, id),
                Kind::Segment => {
                    // Vault skips an empty segment path; it cannot be one anyway.
                    acl.segment.insert(&r.wc_path, r.is_glob, id);
                    acl.has_segment_rules = true;
                }
            }
        }
        acl
    }

    /// The `root` policy: every capability, including `sudo`, on every path.
    pub fn root() -> Acl {
        Acl {
            root: true,
            ..Acl::default()
        }
    }

    /// The intersection of `levels`: a request passes only if every one of them allows it
    /// (parameter constraints of each apply), a path's capabilities are those every level
    /// grants, and a `control_group` of any level gates the request. This is how a scoped
    /// child token is bounded by its own policies, its scope and each ancestor's effective
    /// ACL; it can never allow more than any one level. One level is returned as is.
    pub fn intersection(mut levels: Vec<Arc<Acl>>) -> Arc<Acl> {
        if levels.len() == 1 {
            return levels.remove(0);
        }
        // Nested intersections are flattened, so checks stay one level deep.
        let flat: Vec<Arc<Acl>> = levels
            .into_iter()
            .flat_map(|a| {
                if a.levels.is_empty() {
                    vec![a]
                } else {
                    a.levels.clone()
                }
            })
            .collect();
        Arc::new(Acl {
            root: !flat.is_empty() && flat.iter().all(|a| a.root),
            levels: flat,
            ..Acl::default()
        })
    }

    /// Whether this is the root ACL (for an intersection: every level is root).
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// Decides a request that is not response-wrapped. Rules with
    /// `min_wrapping_ttl`/`max_wrapping_ttl` deny it, as Vault does.
    pub fn check(&self, req: &AclRequest<'_>) -> AclDecision {
        self.check_wrapped(req, None)
    }

    /// Decides a request whose response will be wrapped with `wrap_ttl` (from
    /// `X-Vault-Wrap-TTL`), or not wrapped (`None`).
    pub fn check_wrapped(&self, req: &AclRequest<'_>, wrap_ttl: Option<Duration>) -> AclDecision {
        if !self.levels.is_empty() {
            return self.check_levels(req, wrap_ttl);
        }
        let mut d = AclDecision {
            allowed: false,
            capabilities: Capabilities::NONE,
            granting_policies: Vec::new(),
            control_group: None,
            denial: None,
            matched_rule: None,
        };
        if self.root {
            d.allowed = true;
            d.capabilities = Capabilities::root();
            d.granting_policies = vec!["root".to_owned()];
            return d;
        }
        let op = req.operation;
        let Some(rule) = self.select(req.path, op == Operation::List) else {
            d.denial = Some(Denial::NoMatchingRule);
            return d;
        };
        d.capabilities = rule.capabilities;
        d.matched_rule = Some(rule.path.clone());
        if rule.capabilities.is_deny() {
            d.denial = Some(Denial::ExplicitDeny);
            return d;
        }
        let cap = op.capability();
        if !rule.capabilities.contains(cap) {
            d.denial = Some(Denial::MissingCapability(cap));
            return d;
        }
        d.granting_policies = rule.granting[cap_index(cap)].clone();
        if req.needs_sudo && !rule.capabilities.contains(Capability::Sudo) {
            d.denial = Some(Denial::SudoRequired);
            return d;
        }
        if rule.min_wrapping_ttl.is_some() || rule.max_wrapping_ttl.is_some() {
            let in_range = wrap_ttl.is_some_and(|t| {
                rule.min_wrapping_ttl.is_none_or(|min| t >= min)
                    && rule.max_wrapping_ttl.is_none_or(|max| t <= max)
            });
            // Merging can leave min > max; then nothing satisfies the rule.
            if !in_range {
                d.denial = Some(Denial::WrappingTtlOutOfRange {
                    min: rule.min_wrapping_ttl,
                    max: rule.max_wrapping_ttl,
                });
                return d;
            }
        }
        if matches!(
            op,
            Operation::Read | Operation::Create | Operation::Update | Operation::Patch
        ) && let Err(denial) = rule.params.check(req.data)
        {
            d.denial = Some(denial);
            return d;
        }
        d.allowed = true;
        d.control_group = rule.control_group.as_ref().and_then(|cg| {
            let factors: Vec<_> = cg
                .factors
                .iter()
                .filter(|f| f.controls(op))
                .cloned()
                .collect();
            (!factors.is_empty()).then(|| ControlGroup {
                factors,
                ..cg.clone()
            })
        });
        d
    }

    /// The capabilities of the rule that governs `path`, chosen the way Vault answers
    /// `sys/capabilities-self` (as for a LIST, so `path/` falls back to `path`). No
    /// matching rule, or one granting nothing, gives `{deny}`. The root ACL gives
    /// [`Capabilities::root`] (render it as `["root"]`; see [`Acl::capability_names`]).
    pub fn capabilities(&self, path: &str) -> Capabilities {
        if self.root {
            return Capabilities::root();
        }
        if !self.levels.is_empty() {
            let mut caps: Option<Capabilities> = None;
            for l in &self.levels {
                let c = l.capabilities(path);
                if c.is_deny() {
                    return Capabilities::of(Capability::Deny);
                }
                caps = Some(caps.map_or(c, |a| a.intersect(c)));
            }
            return match caps {
                Some(c) if !c.is_empty() => c,
                _ => Capabilities::of(Capability::Deny),
            };
        }
        match self.select(path, true) {
            Some(r) if !r.capabilities.is_empty() => r.capabilities,
            _ => Capabilities::of(Capability::Deny),
        }
    }

    /// The capability names for `path` exactly as Vault's `sys/capabilities-self` lists
    /// them: sorted, `["root"]` for root, `["deny"]` when nothing is granted.
    pub fn capability_names(&self, path: &str) -> Vec<&'static str> {
        if self.root {
            return vec!["root"];
        }
        let mut names = self.capabilities(path).names();
        names.sort_unstable();
        names
    }

    /// Whether some rule grants a capability (anything but `deny`) on some path under
    /// `prefix` (a mount's route prefix such as `secret/`): the test Vault applies
    /// before `sys/internal/ui/mounts/<path>` tells a token about a mount. A rule
    /// counts when a path it matches can start with `prefix` — `secret/data/agent/*`
    /// and `secret*` both count for `secret/`, `+/data/*` too; `kv/*` does not.
    pub fn grants_anything_under(&self, prefix: &str) -> bool {
        if self.root {
            return true;
        }
        if !self.levels.is_empty() {
            return self.levels.iter().all(|l| l.grants_anything_under(prefix));
        }
        self.rules.iter().any(|r| {
            !r.capabilities.is_deny() && !r.capabilities.is_empty() && rule_reaches_under(r, prefix)
        })
    }

    /// [`Acl::check_wrapped`] of an intersection: the first level that refuses decides
    /// the denial; otherwise the first level's decision (its granting policies), gated by
    /// the control group of any level.
    fn check_levels(&self, req: &AclRequest<'_>, wrap_ttl: Option<Duration>) -> AclDecision {
        let mut first: Option<AclDecision> = None;
        let mut control_group = None;
        let mut caps: Option<Capabilities> = None;
        for l in &self.levels {
            let d = l.check_wrapped(req, wrap_ttl);
            if !d.allowed {
                return d;
            }
            caps = Some(caps.map_or(d.capabilities, |c| c.intersect(d.capabilities)));
            if control_group.is_none() {
                control_group.clone_from(&d.control_group);
            }
            if first.is_none() {
                first = Some(d);
            }
        }
        let mut d = first.unwrap_or_else(|| AclDecision {
            allowed: false,
            capabilities: Capabilities::NONE,
            granting_policies: Vec::new(),
            control_group: None,
            denial: Some(Denial::NoMatchingRule),
            matched_rule: None,
        });
        d.control_group = control_group;
        if let Some(c) = caps {
            d.capabilities = c;
        }
        d
    }

    fn select(&self, path: &str, is_list: bool) -> Option<&Compiled> {
        let path = path.trim_start_matches('/');
        if let Some(&id) = self.exact.get(path) {
            return self.rules.get(id);
        }
        let trimmed = path.strip_suffix('/');
        if is_list && let Some(&id) = trimmed.and_then(|t| self.exact.get(t)) {
            return self.rules.get(id);
        }
        let mut best: Option<&Compiled> = None;
        let mut consider = |id: RuleId| {
            if let Some(r) = self.rules.get(id)
                && best.is_none_or(|b| r.rank() > b.rank())
            {
                best = Some(r);
            }
        };
        self.non_exact_candidates(path, &mut consider);
        if is_list && let Some(t) = trimmed {
            self.non_exact_candidates(t, &mut consider);
        }
        best
    }

    fn non_exact_candidates(&self, path: &str, consider: &mut impl FnMut(RuleId)) {
        if let Some((_, id)) = self.prefix.longest_prefix_of(path) {
            consider(id);
        }
        if self.has_segment_rules {
            let parts: Vec<&str> = path.split('/').collect();
            self.segment.for_each_match(&parts, consider);
        }
    }
}

/// Whether some path the rule matches starts with `prefix`.
fn rule_reaches_under(r: &Compiled, prefix: &str) -> bool {
    match r.kind {
        Kind::Exact => r.path.starts_with(prefix),
        // `wc_path` then anything: either it already lies under the prefix, or the
        // prefix continues it.
        Kind::Prefix => r.wc_path.starts_with(prefix) || prefix.starts_with(&r.wc_path),
        Kind::Segment => {
            // Segment by segment, `+` matching any one; the last prefix segment is
            // empty (`secret/`) or a partial segment.
            let rule: Vec<&str> = r.wc_path.split('/').collect();
            let want: Vec<&str> = prefix.split('/').collect();
            for (i, w) in want.iter().enumerate() {
                let last = i + 1 == want.len();
                let Some(seg) = rule.get(i) else {
                    return false;
                };
                let is_rule_last = i + 1 == rule.len();
                let ok = if *seg == "+" {
                    true
                } else if last {
                    // The prefix's last piece must start this segment; a trailing
                    // `*` on the rule's last segment also reaches a longer piece.
                    seg.starts_with(w) || (is_rule_last && r.is_glob && w.starts_with(seg))
                } else if is_rule_last && r.is_glob {
                    return w.starts_with(seg);
                } else {
                    seg == w
                };
                if !ok {
                    return false;
                }
            }
            true
        }
    }
}

fn new_compiled(rule: &PathRule, kind: Kind, policy: &str) -> Compiled {
    let is_glob = rule.path.ends_with('*');
    let wc_path = match kind {
        Kind::Exact => rule.path.clone(),
        Kind::Prefix | Kind::Segment => {
            rule.path.strip_suffix('*').unwrap_or(&rule.path).to_owned()
        }
    };
    let first_wildcard = match kind {
        Kind::Exact => 0,
        Kind::Prefix => wc_path.len(),
        Kind::Segment => rule.path.find('+').unwrap_or(0),
    };
    let wildcards = match kind {
        Kind::Segment => wc_path.split('/').filter(|s| *s == "+").count(),
        _ => 0,
    };
    let deny = rule.capabilities.is_deny();
    let mut granting: [Vec<String>; 9] = Default::default();
    for c in rule.capabilities.iter() {
        granting[cap_index(c)].push(policy.to_owned());
    }
    let params = if deny {
        ParamRules::default()
    } else {
        ParamRules {
            allowed: rule.allowed_parameters.clone().into_iter().collect(),
            denied: rule.denied_parameters.clone().into_iter().collect(),
            required: dedup_lowercase(rule.required_parameters.iter()),
        }
    };
    Compiled {
        path: rule.path.clone(),
        kind,
        wc_path,
        is_glob: kind != Kind::Exact && is_glob,
        first_wildcard,
        wildcards,
        capabilities: rule.capabilities,
        granting,
        params,
        min_wrapping_ttl: if deny { None } else { rule.min_wrapping_ttl },
        max_wrapping_ttl: if deny { None } else { rule.max_wrapping_ttl },
        control_group: if deny {
            None
        } else {
            rule.control_group.clone()
        },
    }
}

fn dedup_lowercase<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.to_lowercase();
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

fn merge_params(
    into: &mut HashMap<String, Vec<Value>>,
    from: &std::collections::BTreeMap<String, Vec<Value>>,
) {
    for (key, values) in from {
        match into.get_mut(key) {
            Some(existing) => {
                if values.is_empty() || existing.is_empty() {
                    existing.clear();
                } else {
                    existing.extend(values.iter().cloned());
                }
            }
            None => {
                into.insert(key.clone(), values.clone());
            }
        }
    }
}

fn smaller(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

fn merge(existing: &mut Compiled, rule: &PathRule, policy: &str) {
    if existing.capabilities.is_deny() {
        return;
    }
    if rule.capabilities.is_deny() {
        existing.capabilities = Capabilities::of(Capability::Deny);
        existing.params = ParamRules::default();
        existing.min_wrapping_ttl = None;
        existing.max_wrapping_ttl = None;
        existing.control_group = None;
        return;
    }
    existing.capabilities = existing.capabilities.union(rule.capabilities);
    for c in rule.capabilities.iter() {
        let names = &mut existing.granting[cap_index(c)];
        if !names.iter().any(|n| n == policy) {
            names.push(policy.to_owned());
        }
    }
    existing.min_wrapping_ttl = smaller(existing.min_wrapping_ttl, rule.min_wrapping_ttl);
    existing.max_wrapping_ttl = smaller(existing.max_wrapping_ttl, rule.max_wrapping_ttl);
    merge_params(&mut existing.params.allowed, &rule.allowed_parameters);
    merge_params(&mut existing.params.denied, &rule.denied_parameters);
    let required = existing
        .params
        .required
        .iter()
        .chain(rule.required_parameters.iter());
    existing.params.required = dedup_lowercase(required);
    if let Some(cg) = &rule.control_group {
        match &mut existing.control_group {
            Some(e) => {
                e.factors.extend(cg.factors.iter().cloned());
                e.ttl = e.ttl.or(cg.ttl);
                e.self_auth_allowed = e.self_auth_allowed && cg.self_auth_allowed;
            }
            None => existing.control_group = Some(cg.clone()),
        }
    }
}
