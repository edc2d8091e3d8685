//! Typed access to request fields, with Vault's leniency (a bool may arrive as `"true"`,
//! a list as a comma-separated string, a duration as seconds or `"15m"`) and clear 400s
//! naming the field when a value cannot be used. Values are never echoed in errors:
//! they may be secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::CoreError;

fn bad(field: &str, expected: &str) -> CoreError {
    CoreError::invalid(format!(
        "invalid value for field {field:?}: expected {expected}"
    ))
}

/// A string field (numbers and bools are accepted and turned into strings).
pub fn string(data: &Map<String, Value>, field: &str) -> Result<Option<String>, CoreError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(bad(field, "a string")),
    }
}

/// A boolean field (`true`, `"true"`, `1`, `"1"`…).
pub fn boolean(data: &Map<String, Value>, field: &str) -> Result<Option<bool>, CoreError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" => Ok(Some(true)),
            "false" | "0" | "f" | "no" | "" => Ok(Some(false)),
            _ => Err(bad(field, "a boolean")),
        },
        Some(Value::Number(n)) => match n.as_i64() {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(bad(field, "a boolean")),
        },
        Some(_) => Err(bad(field, "a boolean")),
    }
}

/// An integer field (number or numeric string).
pub fn integer(data: &Map<String, Value>, field: &str) -> Result<Option<i64>, CoreError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad(field, "an integer")),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad(field, "an integer")),
        Some(_) => Err(bad(field, "an integer")),
    }
}

/// A duration field: whole seconds or a Go-style string (`"15m"`).
pub fn duration(data: &Map<String, Value>, field: &str) -> Result<Option<Duration>, CoreError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) => Ok(Some(Duration::from_secs(s))),
            None => Err(bad(field, "a non-negative duration")),
        },
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => leash_types::parse_duration(s)
            .map(Some)
            .map_err(|e| CoreError::invalid(format!("invalid value for field {field:?}: {e}"))),
        Some(_) => Err(bad(field, "a duration such as 900 or \"15m\"")),
    }
}

/// A list of strings: a JSON array of strings, or a comma-separated string.
pub fn string_list(
    data: &Map<String, Value>,
    field: &str,
) -> Result<Option<Vec<String>>, CoreError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        )),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.trim().to_owned()),
                _ => Err(bad(field, "a list of strings")),
            })
            .filter(|r| r.as_ref().map_or(true, |s| !s.is_empty()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad(field, "a list of strings or a comma-separated string")),
    }
}

/// The policy name only the root-token generation path may hand out.
pub const ROOT_POLICY: &str = "root";

/// Normalises policy names as every store of them does (trimmed, lower-cased, empty
/// entries dropped): `" Root "` and `"root"` are one policy.
pub fn normalize_policies(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A list of policy names that an auth method, a role or a group will hand out
/// (`token_policies`, `allowed_policies`, group `policies`): normalised, and refused with
/// a 400 if any spelling of `root` is among them. Only the root-token generation path and
/// a root parent can produce a root token.
pub fn grantable_policies(
    data: &Map<String, Value>,
    field: &str,
) -> Result<Option<Vec<String>>, CoreError> {
    let Some(list) = string_list(data, field)? else {
        return Ok(None);
    };
    let list = normalize_policies(list);
    if list.iter().any(|p| p == ROOT_POLICY) {
        return Err(CoreError::invalid(format!(
            "{field}: the \"root\" policy cannot be granted by a role, a user, a group or an auth method; only a root token can create a root token"
        )));
    }
    Ok(Some(list))
}

/// A map of string to string (`{"k": "v"}`); also accepts `"k=v,k2=v2"`.
pub fn string_map(
    data: &Map<String, Value>,
    field: &str,
) -> Result<Option<BTreeMap<String, String>>, CoreError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                _ => Err(bad(field, "a map of strings")),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Some),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(BTreeMap::new())),
        Some(Value::String(s)) => s
            .split(',')
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| bad(field, "key=value pairs"))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Some),
        Some(_) => Err(bad(field, "a map of strings")),
    }
}

/// Fields present in `data` that are not in `known` (for Vault's "ignored parameters"
/// warning).
pub fn unknown_fields(data: &Map<String, Value>, known: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = data
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    v.sort();
    v
}

/// Vault's warning text for ignored parameters, if any.
pub fn ignored_warning(data: &Map<String, Value>, known: &[&str]) -> Option<String> {
    let unknown = unknown_fields(data, known);
    (!unknown.is_empty()).then(|| {
        format!(
            "Endpoint ignored these unrecognized parameters: [{}]",
            unknown.join(" ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn lenient_but_named_errors() {
        let d = m(
            json!({"b": "true", "n": "5", "t": "15m", "l": "a, b,,c", "a": ["x", "y"], "map": {"k": "v"}, "bad": {"x": 1}, "neg": -1}),
        );
        assert_eq!(boolean(&d, "b").unwrap(), Some(true));
        assert_eq!(integer(&d, "n").unwrap(), Some(5));
        assert_eq!(duration(&d, "t").unwrap(), Some(Duration::from_secs(900)));
        assert_eq!(
            duration(&d, "neg").unwrap_err().to_string(),
            "invalid value for field \"neg\": expected a non-negative duration"
        );
        assert_eq!(string_list(&d, "l").unwrap().unwrap(), vec!["a", "b", "c"]);
        assert_eq!(string_list(&d, "a").unwrap().unwrap(), vec!["x", "y"]);
        assert_eq!(
            string_map(&d, "map")
                .unwrap()
                .unwrap()
                .get("k")
                .map(String::as_str),
            Some("v")
        );
        assert!(
            string(&d, "bad")
                .unwrap_err()
                .to_string()
                .contains("\"bad\"")
        );
        assert_eq!(string(&d, "missing").unwrap(), None);
        assert_eq!(
            ignored_warning(&d, &["b", "n", "t", "l", "a", "map", "bad"]).unwrap(),
            "Endpoint ignored these unrecognized parameters: [neg]"
        );
    }
}
