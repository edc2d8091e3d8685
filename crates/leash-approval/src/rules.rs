//! Pre-approval rules: low-risk operations that pass without a human.
//!
//! A rule matches a request when the target path matches its glob (`*` matches any run
//! of characters, `/` included), the operation is one of its operations, the requested
//! duration is at most its maximum, and — if it has one — the current UTC time of day is
//! inside its window (`"09:00-17:00"`; a window may wrap midnight, `"22:00-06:00"`).
//! The request is then approved at once, recorded with the rule's name, and audited like
//! any other approval. A rule never widens a policy: the core only consults rules for
//! requests the token's policies already allow.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{ApprovalError, check_operation};

/// A pre-approval rule.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rule {
    /// Its name (`[A-Za-z0-9_.-]`, at most 128).
    pub name: String,
    /// Path glob (`database/creds/reporting-*`).
    pub path: String,
    /// Operations it pre-approves.
    pub operations: Vec<String>,
    /// Longest grant it pre-approves, in minutes.
    pub max_duration_minutes: u64,
    /// Optional UTC time-of-day window, minutes since midnight `[start, end)`.
    #[serde(default)]
    pub window: Option<(u16, u16)>,
    /// Uses of the grant (`0`: unlimited within the window).
    #[serde(default = "one")]
    pub uses: u32,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

fn one() -> u32 {
    1
}

/// Checks a name used in a path segment (rules, groups).
pub fn check_name(kind: &str, name: &str) -> Result<(), ApprovalError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(ApprovalError::invalid(format!(
            "invalid {kind} name {name:?}: use 1 to 128 characters from A-Z a-z 0-9 _ - ."
        )));
    }
    Ok(())
}

/// Parses `"HH:MM-HH:MM"`.
fn parse_window(s: &str) -> Result<(u16, u16), ApprovalError> {
    let bad = || {
        ApprovalError::invalid("time_window must be \"HH:MM-HH:MM\" in UTC, e.g. \"09:00-17:00\"")
    };
    let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
    let hm = |t: &str| -> Result<u16, ApprovalError> {
        let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if h > 24 || m > 59 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(h * 60 + m)
    };
    let (start, end) = (hm(a)?, hm(b)?);
    if start == end {
        return Err(ApprovalError::invalid(
            "time_window is empty (start equals end)",
        ));
    }
    Ok((start, end))
}

fn fmt_hm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// Whether `glob` matches `text` (`*` = any run of characters).
pub fn glob_match(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Rule {
    /// Builds a rule from API input (`path`, `operations`, `max_duration_minutes`,
    /// `time_window`, `uses`, `description`).
    pub fn from_input(name: &str, data: &Map<String, Value>) -> Result<Rule, ApprovalError> {
        check_name("rule", name)?;
        const KNOWN: &[&str] = &[
            "path",
            "operations",
            "max_duration_minutes",
            "time_window",
            "uses",
            "description",
        ];
        if let Some(k) = data.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ApprovalError::invalid(format!(
                "unknown field {k:?}; expected {}",
                KNOWN.join(", ")
            )));
        }
        let path = match data.get("path") {
            Some(Value::String(p)) if !p.trim().is_empty() => p.trim().trim_start_matches('/'),
            _ => {
                return Err(ApprovalError::invalid(
                    "missing required field \"path\" (a path glob, e.g. \"database/creds/reporting-*\")",
                ));
            }
        }
        .to_owned();
        let operations = match data.get("operations") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| ApprovalError::invalid("operations must be strings"))
                        .and_then(check_operation)
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::String(s)) if !s.trim().is_empty() => s
                .split(',')
                .map(check_operation)
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(ApprovalError::invalid(
                    "missing required field \"operations\" (e.g. [\"read\"])",
                ));
            }
        };
        let max_duration_minutes = match data.get("max_duration_minutes") {
            Some(v) => match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            {
                Some(m) if (1..=10_080).contains(&m) => m,
                _ => {
                    return Err(ApprovalError::invalid(
                        "max_duration_minutes must be a whole number from 1 to 10080",
                    ));
                }
            },
            None => {
                return Err(ApprovalError::invalid(
                    "missing required field \"max_duration_minutes\"",
                ));
            }
        };
        let window = match data.get("time_window") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(parse_window(s)?),
            Some(_) => {
                return Err(ApprovalError::invalid(
                    "time_window must be a string \"HH:MM-HH:MM\"",
                ));
            }
        };
        let uses = match data.get("uses") {
            None => 1,
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|u| u32::try_from(u).ok())
                .filter(|u| *u <= 1000)
                .ok_or_else(|| {
                    ApprovalError::invalid(
                        "uses must be a whole number from 0 (unlimited within the window) to 1000",
                    )
                })?,
        };
        let description = data
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(1024)
            .collect();
        Ok(Rule {
            name: name.to_owned(),
            path,
            operations,
            max_duration_minutes,
            window,
            uses,
            description,
        })
    }

    /// Whether the rule pre-approves `operation` on `path` for `minutes` at unix `now`.
    pub fn matches(&self, path: &str, operation: &str, minutes: u64, now: i64) -> bool {
        glob_match(&self.path, path)
            && self.operations.iter().any(|o| o == operation)
            && minutes <= self.max_duration_minutes
            && self.in_window(now)
    }

    fn in_window(&self, now: i64) -> bool {
        let Some((start, end)) = self.window else {
            return true;
        };
        let minute = u16::try_from(now.rem_euclid(86_400) / 60).unwrap_or(0);
        if start < end {
            (start..end).contains(&minute)
        } else {
            minute >= start || minute < end
        }
    }

    /// The uses a grant by this rule gets (`None`: unlimited).
    pub fn grant_uses(&self) -> Option<u32> {
        (self.uses > 0).then_some(self.uses)
    }

    /// The API view.
    pub fn view(&self) -> Value {
        json!({
            "name": self.name,
            "path": self.path,
            "operations": self.operations,
            "max_duration_minutes": self.max_duration_minutes,
            "time_window": self.window.map(|(a, b)| format!("{}-{}", fmt_hm(a), fmt_hm(b))),
            "uses": self.uses,
            "description": self.description,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(input: Value) -> Result<Rule, ApprovalError> {
        Rule::from_input("r", input.as_object().unwrap())
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "database/creds/report-*",
            "database/creds/report-daily"
        ));
        assert!(glob_match("*", "anything/at/all"));
        assert!(glob_match("a/*/c", "a/b/x/c"));
        assert!(!glob_match(
            "database/creds/report-*",
            "database/creds/admin"
        ));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn a_rule_matches_path_operation_duration_and_hours() {
        let r = rule(
            json!({"path": "database/creds/ro-*", "operations": ["read"],
            "max_duration_minutes": 30, "time_window": "09:00-17:00"}),
        )
        .unwrap();
        let ten_am = 10 * 3600;
        assert!(r.matches("database/creds/ro-1", "read", 30, ten_am));
        assert!(!r.matches("database/creds/ro-1", "read", 31, ten_am));
        assert!(!r.matches("database/creds/ro-1", "update", 5, ten_am));
        assert!(!r.matches("database/creds/rw", "read", 5, ten_am));
        assert!(!r.matches("database/creds/ro-1", "read", 5, 18 * 3600));
        assert_eq!(r.grant_uses(), Some(1));
        assert_eq!(r.view()["time_window"], "09:00-17:00");
    }

    #[test]
    fn windows_may_wrap_midnight() {
        let r = rule(
            json!({"path": "*", "operations": "read", "max_duration_minutes": 5,
            "time_window": "22:00-06:00", "uses": 0}),
        )
        .unwrap();
        assert!(r.matches("x", "read", 5, 23 * 3600));
        assert!(r.matches("x", "read", 5, 3600));
        assert!(!r.matches("x", "read", 5, 12 * 3600));
        assert_eq!(r.grant_uses(), None);
    }

    #[test]
    fn bad_input_is_named() {
        for (input, needle) in [
            (
                json!({"operations": ["read"], "max_duration_minutes": 5}),
                "path",
            ),
            (
                json!({"path": "a", "max_duration_minutes": 5}),
                "operations",
            ),
            (
                json!({"path": "a", "operations": ["fly"], "max_duration_minutes": 5}),
                "unknown operation",
            ),
            (
                json!({"path": "a", "operations": ["read"]}),
                "max_duration_minutes",
            ),
            (
                json!({"path": "a", "operations": ["read"], "max_duration_minutes": 0}),
                "max_duration_minutes",
            ),
            (
                json!({"path": "a", "operations": ["read"], "max_duration_minutes": 5, "time_window": "9-5"}),
                "HH:MM",
            ),
            (
                json!({"path": "a", "operations": ["read"], "max_duration_minutes": 5, "colour": 1}),
                "colour",
            ),
        ] {
            let e = rule(input).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should name {needle}");
            // The rejected value is never echoed.
            assert!(!e.contains("fly") && !e.contains("9-5"), "{e}");
        }
        assert!(Rule::from_input("bad name", &Map::new()).is_err());
    }
}
