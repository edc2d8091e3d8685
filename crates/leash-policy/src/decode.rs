//! Policy text → [`PolicyDoc`]: the meaning of each key, checked the way OpenBao/Vault
//! check it (`CheckHCLKeys`: an unknown key anywhere is an error naming the key and its
//! line).
//!
//! Accepted shape (HCL1 or the equivalent JSON):
//! * top level: `name` (ignored: the caller names the policy) and any number of
//!   `path "…" { … }` blocks;
//! * in a path block: `capabilities`, legacy `policy` (`deny`, `read`, `write`, `sudo`),
//!   `allowed_parameters`, `denied_parameters`, `required_parameters`,
//!   `min_wrapping_ttl`, `max_wrapping_ttl`, `control_group`, `comment`, and
//!   `subscribe_event_types` (ignored: leash has no event subscriptions);
//! * Vault keys that would *restrict* access in ways leash does not enforce
//!   (`mfa_methods`, `expiration`, `pagination_limit`,
//!   `list_scan_response_keys_filter_path`) are refused with a clear error rather than
//!   silently dropped, so a policy never grants more here than in Vault.
//!
//! Normalisations, as Vault: one leading `/` of a path is stripped; `+*` in a path is an
//! error; `deny` anywhere in a rule leaves only `deny`; parameter names are lowercased;
//! a rule with no capabilities is valid (it matches and grants nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use leash_types::{Capabilities, Capability, Operation, parse_duration};

use crate::doc::{ControlGroup, ControlGroupFactor, PathRule, PolicyDoc};
use crate::error::PolicyError;
use leash_hcl::{self as syntax, Item, Node, NodeKind, Pos};

/// Keys Vault accepts in a path block that leash refuses because it cannot enforce them.
const UNSUPPORTED_PATH_KEYS: [&str; 4] = [
    "mfa_methods",
    "expiration",
    "pagination_limit",
    "list_scan_response_keys_filter_path",
];

const OPERATIONS: [Operation; 6] = [
    Operation::Create,
    Operation::Read,
    Operation::Update,
    Operation::Patch,
    Operation::Delete,
    Operation::List,
];

/// Parses a policy written in HCL, or in JSON when the text starts with `{`.
pub fn parse_policy(name: &str, text: &str) -> Result<PolicyDoc, PolicyError> {
    let items = syntax::parse(text).map_err(|e| PolicyError::Syntax {
        line: e.pos.line,
        column: e.pos.column,
        message: e.message,
    })?;
    let mut rules = Vec::new();
    for item in &items {
        match item.key.as_str() {
            "name" => {
                string(&item.value, "name")?;
            }
            "path" => {
                for (label, pos, body) in labeled(item, "path", "")? {
                    rules.push(path_rule(label, pos, body)?);
                }
            }
            other => {
                return Err(invalid(
                    item.key_pos,
                    format!("unknown key {other:?} (expected \"path\" or \"name\")"),
                ));
            }
        }
    }
    Ok(PolicyDoc {
        name: name.to_owned(),
        rules,
    })
}

fn invalid(pos: Pos, message: String) -> PolicyError {
    PolicyError::Invalid {
        line: Some(pos.line),
        message,
    }
}

/// The `(label, label position, body)` entries of a labelled block such as
/// `path "x" { … }`, also when written as `path = { "x" = { … } }` or, in JSON, as
/// `"path": {"x": {…}}` or `"path": [{"x": {…}}]`.
fn labeled<'a>(
    item: &'a Item,
    what: &str,
    ctx: &str,
) -> Result<Vec<(&'a str, Pos, &'a Node)>, PolicyError> {
    let shape_error = |pos: Pos| {
        invalid(
            pos,
            format!("{ctx}{what} must be a block with a label, like {what} \"…\" {{ … }}"),
        )
    };
    let mut out = Vec::new();
    let mut take = |node: &'a Node| match &node.kind {
        NodeKind::Object(items) => {
            for i in items {
                out.push((i.key.as_str(), i.key_pos, &i.value));
            }
            Ok(())
        }
        _ => Err(shape_error(node.pos)),
    };
    match &item.value.kind {
        NodeKind::List(nodes) => {
            for n in nodes {
                take(n)?;
            }
        }
        _ => take(&item.value)?,
    }
    Ok(out)
}

/// The items of an object value, refusing keys outside `valid` and duplicates of keys not
/// in `repeatable`.
fn body<'a>(
    node: &'a Node,
    ctx: &str,
    valid: &[&str],
    repeatable: &[&str],
    unsupported: &[&str],
) -> Result<&'a [Item], PolicyError> {
    let NodeKind::Object(items) = &node.kind else {
        return Err(invalid(
            node.pos,
            format!(
                "{ctx}: expected a block {{ … }}, found {}",
                node.kind.type_name()
            ),
        ));
    };
    let mut seen = BTreeSet::new();
    for i in items {
        let key = i.key.as_str();
        if unsupported.contains(&key) {
            return Err(invalid(
                i.key_pos,
                format!("{ctx}: {key:?} is a Vault feature leash does not support"),
            ));
        }
        if !valid.contains(&key) {
            return Err(invalid(
                i.key_pos,
                format!(
                    "{ctx}: unknown key {key:?} (expected one of: {})",
                    valid.join(", ")
                ),
            ));
        }
        if !repeatable.contains(&key) && !seen.insert(key) {
            return Err(invalid(i.key_pos, format!("{ctx}: duplicate key {key:?}")));
        }
    }
    Ok(items)
}

fn string<'a>(node: &'a Node, what: &str) -> Result<&'a str, PolicyError> {
    match &node.kind {
        NodeKind::Str(s) => Ok(s),
        other => Err(invalid(
            node.pos,
            format!("{what} must be a string, found {}", other.type_name()),
        )),
    }
}

fn string_list<'a>(node: &'a Node, what: &str) -> Result<Vec<(&'a str, Pos)>, PolicyError> {
    let NodeKind::List(nodes) = &node.kind else {
        return Err(invalid(
            node.pos,
            format!(
                "{what} must be a list of strings, found {}",
                node.kind.type_name()
            ),
        ));
    };
    nodes
        .iter()
        .map(|n| string(n, what).map(|s| (s, n.pos)))
        .collect()
}

/// A duration as Vault's `ParseDurationSecond` takes it: whole seconds or a string such
/// as `"15m"`. Zero means unset.
fn duration(node: &Node, what: &str) -> Result<Option<Duration>, PolicyError> {
    let d = match &node.kind {
        NodeKind::Str(s) => {
            parse_duration(s).map_err(|e| invalid(node.pos, format!("{what}: {e}")))?
        }
        NodeKind::Number(n) => match n.as_u64() {
            Some(secs) => Duration::from_secs(secs),
            None => {
                return Err(invalid(
                    node.pos,
                    format!("{what} must be a whole, non-negative number of seconds"),
                ));
            }
        },
        other => {
            return Err(invalid(
                node.pos,
                format!(
                    "{what} must be a duration such as \"15m\", found {}",
                    other.type_name()
                ),
            ));
        }
    };
    Ok((!d.is_zero()).then_some(d))
}

fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.kind {
        NodeKind::Str(s) => Value::String(s.clone()),
        NodeKind::Number(n) => Value::Number(n.clone()),
        NodeKind::Bool(b) => Value::Bool(*b),
        NodeKind::Null => Value::Null,
        NodeKind::List(nodes) => Value::Array(nodes.iter().map(to_json).collect()),
        NodeKind::Object(items) => Value::Object(
            items
                .iter()
                .map(|i| (i.key.clone(), to_json(&i.value)))
                .collect(),
        ),
    }
}

fn parameter_map(
    node: &Node,
    ctx: &str,
) -> Result<BTreeMap<String, Vec<serde_json::Value>>, PolicyError> {
    let NodeKind::Object(items) = &node.kind else {
        return Err(invalid(
            node.pos,
            format!("{ctx}: expected a map of parameter name to list of values"),
        ));
    };
    let mut out = BTreeMap::new();
    for i in items {
        let NodeKind::List(values) = &i.value.kind else {
            return Err(invalid(
                i.value.pos,
                format!(
                    "{ctx}: parameter {:?} must map to a list of values (use [] for any value), found {}",
                    i.key,
                    i.value.kind.type_name()
                ),
            ));
        };
        // As Vault: names compare case-insensitively; a later spelling replaces an earlier.
        out.insert(i.key.to_lowercase(), values.iter().map(to_json).collect());
    }
    Ok(out)
}

fn path_rule(label: &str, label_pos: Pos, node: &Node) -> Result<PathRule, PolicyError> {
    let ctx = format!("path {label:?}");
    let items = body(
        node,
        &ctx,
        &[
            "capabilities",
            "policy",
            "allowed_parameters",
            "denied_parameters",
            "required_parameters",
            "min_wrapping_ttl",
            "max_wrapping_ttl",
            "control_group",
            "comment",
            "subscribe_event_types",
        ],
        &[],
        &UNSUPPORTED_PATH_KEYS,
    )?;

    let path = label.strip_prefix('/').unwrap_or(label);
    if path.contains("+*") {
        return Err(invalid(
            label_pos,
            format!("{ctx}: invalid use of wildcards ('+*' is forbidden)"),
        ));
    }

    let mut rule = PathRule::new(path, Capabilities::NONE);
    for item in items {
        let key = item.key.as_str();
        let what = format!("{ctx}: {key}");
        match key {
            "capabilities" => {
                for (name, pos) in string_list(&item.value, &what)? {
                    let cap = capability(name, pos, &ctx)?;
                    rule.capabilities.insert(cap);
                }
            }
            "policy" => {
                let legacy = string(&item.value, &what)?;
                let caps: &[Capability] = match legacy {
                    "deny" => &[Capability::Deny],
                    "read" => &[Capability::Read, Capability::List],
                    "write" => &[
                        Capability::Create,
                        Capability::Read,
                        Capability::Update,
                        Capability::Delete,
                        Capability::List,
                    ],
                    "sudo" => &[
                        Capability::Create,
                        Capability::Read,
                        Capability::Update,
                        Capability::Delete,
                        Capability::List,
                        Capability::Sudo,
                    ],
                    other => {
                        return Err(invalid(
                            item.value.pos,
                            format!(
                                "{ctx}: invalid policy {other:?} (expected \"deny\", \"read\", \"write\" or \"sudo\")"
                            ),
                        ));
                    }
                };
                for c in caps {
                    rule.capabilities.insert(*c);
                }
            }
            "allowed_parameters" => rule.allowed_parameters = parameter_map(&item.value, &what)?,
            "denied_parameters" => rule.denied_parameters = parameter_map(&item.value, &what)?,
            "required_parameters" => {
                rule.required_parameters = string_list(&item.value, &what)?
                    .into_iter()
                    .map(|(s, _)| s.to_owned())
                    .collect();
            }
            "min_wrapping_ttl" => rule.min_wrapping_ttl = duration(&item.value, &what)?,
            "max_wrapping_ttl" => rule.max_wrapping_ttl = duration(&item.value, &what)?,
            "control_group" => rule.control_group = Some(control_group(&item.value, &ctx)?),
            // "comment" documents; "subscribe_event_types" narrows event subscriptions,
            // which leash does not offer at all.
            _ => {}
        }
    }
    if rule.capabilities.is_deny() {
        rule.capabilities = Capabilities::of(Capability::Deny);
    }
    if let (Some(min), Some(max)) = (rule.min_wrapping_ttl, rule.max_wrapping_ttl)
        && max < min
    {
        return Err(invalid(
            label_pos,
            format!("{ctx}: max_wrapping_ttl cannot be less than min_wrapping_ttl"),
        ));
    }
    Ok(rule)
}

fn capability(name: &str, pos: Pos, ctx: &str) -> Result<Capability, PolicyError> {
    if let Some(c) = Capability::parse(name) {
        return Ok(c);
    }
    let message = match name {
        "scan" | "recover" => {
            format!("{ctx}: capability {name:?} is a Vault/OpenBao feature leash does not support")
        }
        _ => format!(
            "{ctx}: unknown capability {name:?} (expected one of: create, read, update, patch, delete, list, sudo, deny, subscribe)"
        ),
    };
    Err(invalid(pos, message))
}

fn control_group(node: &Node, path_ctx: &str) -> Result<ControlGroup, PolicyError> {
    let ctx = format!("{path_ctx}: control_group");
    let items = body(
        node,
        &ctx,
        &["ttl", "self_auth_allowed", "factor"],
        &["factor"],
        &[],
    )?;
    let mut cg = ControlGroup {
        ttl: None,
        factors: Vec::new(),
        self_auth_allowed: false,
    };
    for item in items {
        match item.key.as_str() {
            "ttl" => cg.ttl = duration(&item.value, &format!("{ctx}: ttl"))?,
            "self_auth_allowed" => match item.value.kind {
                NodeKind::Bool(b) => cg.self_auth_allowed = b,
                ref other => {
                    return Err(invalid(
                        item.value.pos,
                        format!(
                            "{ctx}: self_auth_allowed must be true or false, found {}",
                            other.type_name()
                        ),
                    ));
                }
            },
            _ => {
                for (label, pos, body) in labeled(item, "factor", &format!("{ctx}: "))? {
                    cg.factors.push(factor(label, pos, body, &ctx)?);
                }
            }
        }
    }
    if cg.factors.is_empty() {
        return Err(invalid(
            node.pos,
            format!("{ctx}: needs at least one factor \"name\" {{ identity {{ … }} }}"),
        ));
    }
    Ok(cg)
}

fn factor(
    label: &str,
    label_pos: Pos,
    node: &Node,
    cg_ctx: &str,
) -> Result<ControlGroupFactor, PolicyError> {
    let ctx = format!("{cg_ctx}: factor {label:?}");
    let items = body(
        node,
        &ctx,
        &["identity", "controlled_capabilities"],
        &[],
        &[],
    )?;
    let mut f = ControlGroupFactor {
        name: label.to_owned(),
        group_names: Vec::new(),
        approvals: 0,
        controlled_operations: Vec::new(),
    };
    let mut has_identity = false;
    for item in items {
        if item.key == "controlled_capabilities" {
            for (name, pos) in string_list(&item.value, &format!("{ctx}: controlled_capabilities"))?
            {
                let op = OPERATIONS
                    .into_iter()
                    .find(|o| o.as_str() == name)
                    .ok_or_else(|| {
                        invalid(
                            pos,
                            format!("{ctx}: unknown operation {name:?} in controlled_capabilities"),
                        )
                    })?;
                f.controlled_operations.push(op);
            }
            continue;
        }
        has_identity = true;
        let ictx = format!("{ctx}: identity");
        for i in body(&item.value, &ictx, &["group_names", "approvals"], &[], &[])? {
            if i.key == "group_names" {
                f.group_names = string_list(&i.value, &format!("{ictx}: group_names"))?
                    .into_iter()
                    .map(|(s, _)| s.to_owned())
                    .collect();
            } else {
                f.approvals = approvals(&i.value, &ictx)?;
            }
        }
    }
    if !has_identity || f.group_names.is_empty() {
        return Err(invalid(
            label_pos,
            format!("{ctx}: needs identity {{ group_names = [\"…\"] approvals = N }}"),
        ));
    }
    if f.approvals == 0 {
        return Err(invalid(
            label_pos,
            format!("{ctx}: identity.approvals must be at least 1"),
        ));
    }
    Ok(f)
}

fn approvals(node: &Node, ctx: &str) -> Result<u32, PolicyError> {
    let n = match &node.kind {
        NodeKind::Number(n) => n.as_u64(),
        // HCL1 decodes a numeric string into an integer field too.
        NodeKind::Str(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(node.pos, format!("{ctx}: approvals must be a whole number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> PathRule {
        let doc = parse_policy("p", text).unwrap();
        assert_eq!(doc.rules.len(), 1);
        doc.rules.into_iter().next().unwrap()
    }

    fn error(text: &str) -> String {
        parse_policy("p", text).unwrap_err().to_string()
    }

    #[test]
    fn basic_rules_in_order() {
        let doc = parse_policy(
            "seed",
            r#"
name = "ignored"
path "database/creds/agent-readonly" { capabilities = ["read"] }
path "secret/data/agents/config/*"   { capabilities = ["read", "list"] }
path "/auth/token/renew-self"        { capabilities = ["update"] }
"#,
        )
        .unwrap();
        assert_eq!(doc.name, "seed");
        assert_eq!(
            doc.paths().collect::<Vec<_>>(),
            [
                "database/creds/agent-readonly",
                "secret/data/agents/config/*",
                "auth/token/renew-self"
            ]
        );
        assert_eq!(doc.rules[1].capabilities.names(), ["read", "list"]);
    }

    #[test]
    fn deny_leaves_only_deny_and_legacy_policy_expands() {
        assert_eq!(
            one(r#"path "a" { capabilities = ["read", "deny"] }"#)
                .capabilities
                .names(),
            ["deny"]
        );
        let deny = one(r#"path "a" { policy = "deny" capabilities = ["read"] }"#);
        assert_eq!(deny.capabilities, Capabilities::of(Capability::Deny));
        assert_eq!(
            one(r#"path "a" { policy = "read" }"#).capabilities.names(),
            ["read", "list"]
        );
        assert_eq!(
            one(r#"path "a" { policy = "write" }"#).capabilities.names(),
            ["create", "read", "update", "delete", "list"]
        );
        assert_eq!(
            one(r#"path "a" { policy = "sudo" capabilities = ["patch"] }"#)
                .capabilities
                .names(),
            [
                "create", "read", "update", "patch", "delete", "list", "sudo"
            ]
        );
        assert!(error(r#"path "a" { policy = "admin" }"#).contains("invalid policy \"admin\""));
    }

    #[test]
    fn empty_capabilities_are_valid_as_in_vault() {
        assert!(
            one(r#"path "a" { capabilities = [] }"#)
                .capabilities
                .is_empty()
        );
        assert!(one(r#"path "a" {}"#).capabilities.is_empty());
    }

    #[test]
    fn parameters_and_wrapping() {
        let r = one(r#"path "a" {
  capabilities = ["create"]
  allowed_parameters = {
    "Name" = ["x*", 3, true]
    "*"    = []
  }
  denied_parameters { "pw" = [] }
  required_parameters = ["name"]
  min_wrapping_ttl = "1m"
  max_wrapping_ttl = 3600
}"#);
        assert_eq!(
            r.allowed_parameters["name"],
            vec![
                serde_json::json!("x*"),
                serde_json::json!(3),
                serde_json::json!(true)
            ]
        );
        assert!(r.allowed_parameters["*"].is_empty());
        assert!(r.denied_parameters.contains_key("pw"));
        assert_eq!(r.required_parameters, ["name"]);
        assert_eq!(r.min_wrapping_ttl, Some(Duration::from_secs(60)));
        assert_eq!(r.max_wrapping_ttl, Some(Duration::from_secs(3600)));
        let e = error("path \"a\" {\n min_wrapping_ttl = \"2h\"\n max_wrapping_ttl = \"1h\"\n}");
        assert!(e.contains("max_wrapping_ttl cannot be less"), "{e}");
        let e = error("path \"a\" {\n allowed_parameters = { x = \"y\" }\n}");
        assert!(
            e.starts_with("line 2: path \"a\": allowed_parameters: parameter \"x\""),
            "{e}"
        );
        let e = error("path \"a\" {\n min_wrapping_ttl = \"soon\"\n}");
        assert!(
            e.starts_with("line 2: ") && e.contains("min_wrapping_ttl") && !e.contains("soon"),
            "{e}"
        );
    }

    #[test]
    fn control_group_in_vault_documented_forms() {
        let text = r#"path "database/creds/prod" {
  capabilities = ["read"]
  control_group = {
    ttl = "15m"
    factor "dba" {
      identity {
        group_names = ["dba"]
        approvals = 1
      }
    }
  }
}"#;
        let cg = one(text).control_group.unwrap();
        assert_eq!(cg.ttl, Some(Duration::from_secs(900)));
        assert_eq!(cg.factors.len(), 1);
        assert_eq!(cg.factors[0].name, "dba");
        assert_eq!(cg.factors[0].group_names, ["dba"]);
        assert_eq!(cg.factors[0].approvals, 1);
        assert!(!cg.self_auth_allowed);

        // One line, HCL1 style, and the block form, with two factors.
        let one_line = r#"path "x" { capabilities = ["read"] control_group = { ttl = "15m" factor "dba" { identity { group_names = ["dba"] approvals = 1 } } } }"#;
        assert_eq!(one(one_line).control_group.unwrap().factors[0].name, "dba");
        let block = r#"path "x" {
  control_group {
    self_auth_allowed = true
    factor "a" { identity { group_names = ["g1", "g2"] approvals = "2" } }
    factor "b" {
      controlled_capabilities = ["update", "create"]
      identity = { group_names = ["g3"], approvals = 1 }
    }
  }
}"#;
        let cg = one(block).control_group.unwrap();
        assert!(cg.self_auth_allowed);
        assert_eq!(cg.ttl, None);
        assert_eq!(cg.factors[0].approvals, 2);
        assert!(cg.factors[0].controls(Operation::Read));
        assert!(!cg.factors[1].controls(Operation::Read));
        assert!(cg.factors[1].controls(Operation::Create));

        let e = error(
            "path \"x\" {\n control_group = {\n factor \"a\" {\n identity { group_names = [\"g\"] approvals = 1 quorum = 2 }\n }\n }\n}",
        );
        assert_eq!(
            e,
            "line 4: path \"x\": control_group: factor \"a\": identity: unknown key \"quorum\" (expected one of: group_names, approvals)"
        );
        let e = error("path \"x\" {\n control_group = { ttl = \"1h\" }\n}");
        assert!(e.contains("at least one factor"), "{e}");
        let e = error(
            "path \"x\" {\n control_group { factor \"a\" { identity { group_names = [\"g\"] approvals = 0 } } }\n}",
        );
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn json_policy_as_hvac_sends_it() {
        let doc = parse_policy(
            "j",
            r#"{"path": {"secret/*": {"capabilities": ["read", "list"]}, "sys/x": {"policy": "deny"}}}"#,
        )
        .unwrap();
        assert_eq!(doc.paths().collect::<Vec<_>>(), ["secret/*", "sys/x"]);
        let doc = parse_policy(
            "j",
            r#"{"path": [{"a": {"capabilities": ["read"]}}, {"b": {}}]}"#,
        )
        .unwrap();
        assert_eq!(doc.paths().collect::<Vec<_>>(), ["a", "b"]);
        let e = parse_policy(
            "j",
            "{\n\"path\": {\n\"a\": {\"capabilities\": [\"reed\"]}}}",
        )
        .unwrap_err();
        assert_eq!(e.line(), Some(3));
    }

    #[test]
    fn errors_name_line_key_and_capability() {
        assert_eq!(
            error("# policy\n\npath \"secret/*\" {\n  capabilities = [\"reed\"]\n}"),
            "line 4: path \"secret/*\": unknown capability \"reed\" (expected one of: create, read, update, patch, delete, list, sudo, deny, subscribe)"
        );
        assert_eq!(
            error("path \"a\" {\n  capabilities = [\"read\"]\n  capabilties = [\"list\"]\n}"),
            "line 3: path \"a\": unknown key \"capabilties\" (expected one of: capabilities, policy, allowed_parameters, denied_parameters, required_parameters, min_wrapping_ttl, max_wrapping_ttl, control_group, comment, subscribe_event_types)"
        );
        assert_eq!(
            error("\npaths \"a\" { capabilities = [\"read\"] }"),
            "line 2: unknown key \"paths\" (expected \"path\" or \"name\")"
        );
        assert!(
            error("path \"a\" {\n mfa_methods = [\"x\"]\n}")
                .starts_with("line 2: path \"a\": \"mfa_methods\" is a Vault feature")
        );
        assert!(error("path \"a\" { capabilities = [\"scan\"] }").contains("does not support"));
        assert!(
            error("path \"a\" { capabilities = \"read\" }").contains("must be a list of strings")
        );
        assert!(
            error("path \"a\" {\n capabilities = [\"read\"]\n capabilities = [\"list\"] }")
                .starts_with("line 3: path \"a\": duplicate key")
        );
        assert!(error("path \"a/+*\" { }").contains("'+*' is forbidden"));
        assert!(error("path = \"a\"").contains("path must be a block with a label"));
        let e = parse_policy("p", "path \"a\" {\n  capabilities = [\"read\"\n").unwrap_err();
        assert!(
            matches!(
                e,
                PolicyError::Syntax {
                    line: 3,
                    column: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("line 3, column 1: "), "{e}");
    }

    #[test]
    fn leading_slash_is_stripped_once() {
        assert_eq!(one(r#"path "/sys/x" {}"#).path, "sys/x");
        assert_eq!(one(r#"path "//sys/x" {}"#).path, "/sys/x");
    }

    #[test]
    fn empty_policy_is_valid() {
        assert!(parse_policy("e", "").unwrap().rules.is_empty());
        assert!(parse_policy("e", "# nothing\n").unwrap().rules.is_empty());
    }
}
