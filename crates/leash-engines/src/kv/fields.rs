//! Request fields decoded the way Vault's `framework.FieldData` does it, weakly: an
//! integer may come as a JSON number or a numeric string (query parameters are strings),
//! a boolean as `true` or `"true"`, a duration as seconds or a Go duration string.
//!
//! A JSON `null` counts as "not given". Error messages name the field, never its value.

use leash_backend::CoreError;
use leash_types::{format_go_duration, parse_duration};
use serde_json::{Map, Value};

/// The field `key`, unless absent or `null`.
pub(super) fn field<'a>(data: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    data.get(key).filter(|v| !v.is_null())
}

/// A whole number: a JSON integer, an integral float, or a numeric string.
pub(super) fn int(name: &str, v: &Value) -> Result<i64, CoreError> {
    let parsed = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| CoreError::invalid(format!("field {name:?} must be a whole number")))
}

/// A whole number that must not be negative.
pub(super) fn uint(name: &str, v: &Value) -> Result<u64, CoreError> {
    u64::try_from(int(name, v)?)
        .map_err(|_| CoreError::invalid(format!("field {name:?} must not be negative")))
}

/// A boolean: JSON `true`/`false`, `0`/`1`, or the strings Go's `strconv.ParseBool`
/// accepts (`true`, `T`, `1`, `false`, `F`, `0`, …).
pub(super) fn boolean(name: &str, v: &Value) -> Result<bool, CoreError> {
    let parsed = match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or_else(|| CoreError::invalid(format!("field {name:?} must be a boolean")))
}

/// A duration in whole seconds: a number of seconds or a Go duration string (`"90s"`,
/// `"1h30m"`). Negative values (`-1`, `"-5m"`) are accepted only when `signed`.
pub(super) fn duration_secs(name: &str, v: &Value, signed: bool) -> Result<i64, CoreError> {
    let secs = match v {
        Value::String(s) => {
            let s = s.trim();
            let (negative, body) = match s.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, s),
            };
            let d = parse_duration(body).map_err(|e| {
                CoreError::invalid(format!(
                    "field {name:?} is not a valid duration: {}",
                    e.reason
                ))
            })?;
            let secs = i64::try_from(d.as_secs())
                .map_err(|_| CoreError::invalid(format!("field {name:?} is too large")))?;
            if negative { -secs } else { secs }
        }
        other => int(name, other)
            .map_err(|_| CoreError::invalid(format!("field {name:?} must be a duration")))?,
    };
    if secs < 0 && !signed {
        return Err(CoreError::invalid(format!(
            "field {name:?} must not be negative"
        )));
    }
    Ok(secs)
}

/// Formats signed seconds as Go's `time.Duration.String()` does (`0s`, `1h0m0s`, `-1s`).
pub(super) fn go_duration(secs: i64) -> String {
    let text = format_go_duration(std::time::Duration::from_secs(secs.unsigned_abs()));
    if secs < 0 { format!("-{text}") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_come_as_numbers_or_strings() {
        assert_eq!(int("v", &json!(3)).unwrap(), 3);
        assert_eq!(int("v", &json!("3")).unwrap(), 3);
        assert_eq!(int("v", &json!(3.0)).unwrap(), 3);
        assert!(int("v", &json!(3.5)).is_err());
        assert!(int("v", &json!("x")).is_err());
        assert!(uint("v", &json!(-1)).is_err());
    }

    #[test]
    fn booleans_follow_go_parse_bool() {
        assert!(boolean("b", &json!(true)).unwrap());
        assert!(boolean("b", &json!("true")).unwrap());
        assert!(!boolean("b", &json!("0")).unwrap());
        assert!(boolean("b", &json!("yes")).is_err());
    }

    #[test]
    fn durations_take_seconds_or_go_strings() {
        assert_eq!(duration_secs("d", &json!(90), false).unwrap(), 90);
        assert_eq!(duration_secs("d", &json!("1h"), false).unwrap(), 3600);
        assert_eq!(duration_secs("d", &json!("0s"), false).unwrap(), 0);
        assert_eq!(duration_secs("d", &json!("-1s"), true).unwrap(), -1);
        assert!(duration_secs("d", &json!("-1s"), false).is_err());
        assert!(duration_secs("d", &json!("soon"), true).is_err());
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(-1), "-1s");
    }
}
