//! Request-parameter checks of a winning rule: `required_parameters`,
//! `denied_parameters`, `allowed_parameters` — Vault's order and meaning.
//!
//! 1. every required parameter must be present (names compared lowercased);
//! 2. a request without data passes;
//! 3. `denied_parameters`: key `*` denies any data; a listed key with an empty list
//!    denies any value; otherwise the value is denied if it, any element of it (arrays),
//!    or any comma-separated part of it (strings) matches a listed value;
//! 4. `allowed_parameters` (when not empty): `*` alone allows everything; otherwise each
//!    request key must be listed (or `*` present), and a listed key with values allows a
//!    value that matches one of them, or whose elements (arrays) / comma-separated parts
//!    (strings) all do.
//!
//! Value matching: strings use Vault's glob (`*` at the start and/or end of the policy
//! value means suffix / prefix / substring; a value shorter than 2 bytes is literal);
//! numbers compare by numeric value (`1` matches `1.0`); other values compare exactly.
//! Values of `policies` and `token_policies` are lowercased first (Vault normalises
//! them, so case games cannot slip past a deny).
//!
//! Deliberately stricter than Vault, because each Vault behaviour below widens access:
//! an empty string or an empty array is *not* vacuously allowed by a value list (Vault
//! lets `policies=""` through `allowed_parameters {policies = ["dev"]}`, which on token
//! creation means "inherit the parent's policies"); and a string containing a comma is
//! allowed only when each part is allowed or the whole value is listed verbatim (Vault
//! also accepts a glob match on the whole string, so `"dev-*"` would let
//! `"dev-x,admin"` through).
//!
//! Denials name the parameter, never its value (values can be secrets).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::acl::Denial;

/// The parameter conditions of a compiled rule (keys lowercased).
#[derive(Clone, Debug, Default)]
pub(crate) struct ParamRules {
    pub(crate) allowed: HashMap<String, Vec<Value>>,
    pub(crate) denied: HashMap<String, Vec<Value>>,
    /// Lowercased, deduplicated, in first-seen order.
    pub(crate) required: Vec<String>,
}

impl ParamRules {
    /// Checks request data; `Err` names the first offending parameter.
    pub(crate) fn check(&self, data: Option<&Map<String, Value>>) -> Result<(), Denial> {
        for name in &self.required {
            if !data.is_some_and(|d| d.contains_key(name)) {
                return Err(Denial::RequiredParameterMissing(name.clone()));
            }
        }
        let Some(data) = data.filter(|d| !d.is_empty()) else {
            return Ok(());
        };

        if !self.denied.is_empty() {
            if self.denied.contains_key("*") {
                let first = data.keys().next().cloned().unwrap_or_default();
                return Err(Denial::ParameterDenied(first));
            }
            for (key, value) in data {
                if let Some(list) = self.denied.get(&key.to_lowercase())
                    && value_denied(&normalize(key, value), list)
                {
                    return Err(Denial::ParameterDenied(key.clone()));
                }
            }
        }

        if self.allowed.is_empty() {
            return Ok(());
        }
        let allow_all_keys = self.allowed.contains_key("*");
        if allow_all_keys && self.allowed.len() == 1 {
            return Ok(());
        }
        for (key, value) in data {
            match self.allowed.get(&key.to_lowercase()) {
                None if allow_all_keys => {}
                None => return Err(Denial::ParameterNotAllowed(key.clone())),
                Some(list) => {
                    if !value_allowed(&normalize(key, value), list) {
                        return Err(Denial::ParameterNotAllowed(key.clone()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Vault lowercases policy names before storing them; compare them the same way.
fn normalize(key: &str, value: &Value) -> Value {
    let key = key.to_lowercase();
    if key != "policies" && key != "token_policies" {
        return value.clone();
    }
    match value {
        Value::String(s) => Value::String(s.to_lowercase()),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Value::String(s.to_lowercase()),
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Vault's `GlobbedStringsMatch`: a leading and/or trailing `*` in the policy value.
pub(crate) fn glob_match(pattern: &str, value: &str) -> bool {
    if pattern.len() < 2 {
        return pattern == value;
    }
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(_), Some(_)) => value.contains(&pattern[1..pattern.len() - 1]),
        (Some(suffix), None) => value.ends_with(suffix),
        (None, Some(prefix)) => value.starts_with(prefix),
        (None, None) => pattern == value,
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Whether request value `v` matches policy value `el`.
fn matches(el: &Value, v: &Value) -> bool {
    match (el, v) {
        (Value::String(p), Value::String(s)) => glob_match(p, s),
        (Value::Number(a), Value::Number(b)) => numbers_equal(a, b),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| matches_exactly(x, y))
        }
        _ => el == v,
    }
}

/// Equality with numbers compared by value (no globbing).
fn matches_exactly(el: &Value, v: &Value) -> bool {
    match (el, v) {
        (Value::Number(a), Value::Number(b)) => numbers_equal(a, b),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| matches_exactly(x, y))
        }
        _ => el == v,
    }
}

fn in_list(v: &Value, list: &[Value]) -> bool {
    list.iter().any(|el| matches(el, v))
}

/// Vault's `ParseCommaStringSlice` for a string: split on `,`, trim, drop nothing.
fn comma_parts(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(',').map(str::trim).collect()
    }
}

fn value_denied(v: &Value, list: &[Value]) -> bool {
    if list.is_empty() || in_list(v, list) {
        return true;
    }
    match v {
        Value::Array(items) => items.iter().any(|i| in_list(i, list)),
        Value::String(s) => comma_parts(s)
            .into_iter()
            .any(|p| in_list(&Value::String(p.to_owned()), list)),
        _ => false,
    }
}

fn value_allowed(v: &Value, list: &[Value]) -> bool {
    if list.is_empty() {
        return true;
    }
    match v {
        Value::String(s) => {
            if list.iter().any(|el| el == v) {
                return true;
            }
            let parts = comma_parts(s);
            !parts.is_empty()
                && parts
                    .into_iter()
                    .all(|p| in_list(&Value::String(p.to_owned()), list))
        }
        Value::Array(items) => {
            in_list(v, list) || (!items.is_empty() && items.iter().all(|i| in_list(i, list)))
        }
        _ => in_list(v, list),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(allowed: Value, denied: Value, required: &[&str]) -> ParamRules {
        let map = |v: Value| -> HashMap<String, Vec<Value>> {
            serde_json::from_value::<HashMap<String, Vec<Value>>>(v).unwrap()
        };
        ParamRules {
            allowed: map(allowed),
            denied: map(denied),
            required: required.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn check(r: &ParamRules, data: Value) -> Result<(), Denial> {
        r.check(data.as_object())
    }

    #[test]
    fn glob_is_vaults() {
        assert!(glob_match("foo*", "foobar"));
        assert!(glob_match("*bar", "foobar"));
        assert!(glob_match("*oob*", "foobar"));
        assert!(!glob_match("*oob*", "fobar"));
        assert!(glob_match("*", "*"));
        assert!(!glob_match("*", "anything"), "a lone * is literal in Vault");
        assert!(glob_match("fo*o", "fo*o"));
        assert!(!glob_match("fo*o", "foxo"), "only leading/trailing * glob");
    }

    #[test]
    fn required_then_empty_data_passes() {
        let r = rules(json!({"a": ["x"]}), json!({}), &["name"]);
        assert_eq!(
            check(&r, json!({})),
            Err(Denial::RequiredParameterMissing("name".into()))
        );
        assert_eq!(
            r.check(None),
            Err(Denial::RequiredParameterMissing("name".into()))
        );
        let r = rules(json!({"a": ["x"]}), json!({}), &[]);
        assert_eq!(check(&r, json!({})), Ok(()));
        assert_eq!(r.check(None), Ok(()));
    }

    #[test]
    fn denied_wins_and_star_denies_all() {
        let r = rules(json!({"*": []}), json!({"pw": [], "role": ["admin*"]}), &[]);
        assert_eq!(
            check(&r, json!({"pw": "x"})),
            Err(Denial::ParameterDenied("pw".into()))
        );
        assert_eq!(
            check(&r, json!({"PW": "x"})),
            Err(Denial::ParameterDenied("PW".into()))
        );
        assert_eq!(
            check(&r, json!({"role": "administrator"})),
            Err(Denial::ParameterDenied("role".into()))
        );
        assert_eq!(
            check(&r, json!({"role": ["dev", "admin"]})),
            Err(Denial::ParameterDenied("role".into()))
        );
        assert_eq!(
            check(&r, json!({"role": "dev, admin"})),
            Err(Denial::ParameterDenied("role".into()))
        );
        assert_eq!(check(&r, json!({"role": "dev"})), Ok(()));
        let r = rules(json!({}), json!({"*": []}), &[]);
        assert!(matches!(
            check(&r, json!({"x": 1})),
            Err(Denial::ParameterDenied(_))
        ));
        assert_eq!(r.check(None), Ok(()));
    }

    #[test]
    fn allowed_keys_and_values() {
        let r = rules(
            json!({"name": [], "ttl": ["1h", "30m"], "n": [3]}),
            json!({}),
            &[],
        );
        assert_eq!(check(&r, json!({"name": "anything", "ttl": "1h"})), Ok(()));
        assert_eq!(
            check(&r, json!({"ttl": "2h"})),
            Err(Denial::ParameterNotAllowed("ttl".into()))
        );
        assert_eq!(
            check(&r, json!({"other": 1})),
            Err(Denial::ParameterNotAllowed("other".into()))
        );
        assert_eq!(check(&r, json!({"n": 3.0})), Ok(()));
        assert_eq!(
            check(&r, json!({"n": "3"})),
            Err(Denial::ParameterNotAllowed("n".into()))
        );
        let r = rules(json!({"*": [], "ttl": ["1h"]}), json!({}), &[]);
        assert_eq!(check(&r, json!({"other": 1, "ttl": "1h"})), Ok(()));
        assert_eq!(
            check(&r, json!({"ttl": "2h"})),
            Err(Denial::ParameterNotAllowed("ttl".into()))
        );
    }

    #[test]
    fn lists_and_comma_strings_need_every_element_allowed() {
        let r = rules(
            json!({"policies": ["dev-*", "default"], "tags": ["a,b"]}),
            json!({}),
            &[],
        );
        assert_eq!(check(&r, json!({"policies": ["dev-1", "default"]})), Ok(()));
        assert_eq!(check(&r, json!({"policies": "dev-1, default"})), Ok(()));
        assert_eq!(
            check(&r, json!({"policies": "DEV-1"})),
            Ok(()),
            "policy names are lowercased"
        );
        assert!(check(&r, json!({"policies": ["dev-1", "admin"]})).is_err());
        assert!(
            check(&r, json!({"policies": "dev-x,admin"})).is_err(),
            "no glob over the whole list"
        );
        assert!(
            check(&r, json!({"policies": ""})).is_err(),
            "empty is not vacuously allowed"
        );
        assert!(
            check(&r, json!({"policies": []})).is_err(),
            "empty is not vacuously allowed"
        );
        assert_eq!(check(&r, json!({"tags": "a,b"})), Ok(()), "listed verbatim");
        let r = rules(json!({"x": [["a", "b"]]}), json!({}), &[]);
        assert_eq!(
            check(&r, json!({"x": ["a", "b"]})),
            Ok(()),
            "whole-array match as Vault"
        );
    }

    #[test]
    fn null_matches_only_null() {
        let r = rules(json!({"x": [null]}), json!({}), &[]);
        assert_eq!(check(&r, json!({"x": null})), Ok(()));
        assert!(check(&r, json!({"x": "null"})).is_err());
    }
}
