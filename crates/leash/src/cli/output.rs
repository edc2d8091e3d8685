//! Rendering answers for people (tables shaped like the Vault CLI's) and for programs
//! (`--format json`: the server's body, pretty-printed, unchanged).
//!
//! Everything here is pure: functions take JSON and return text, so the shapes are unit
//! tested. Printing goes through [`out`] and [`err`], which ignore a closed pipe
//! (`leash policy list | head`) instead of panicking.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Map, Value};

/// Output format of every client command.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Format {
    /// Aligned key/value tables for people.
    #[default]
    Table,
    /// The server's JSON body, unchanged.
    Json,
}

/// Writes `text` and a newline to stdout; a closed pipe is not an error.
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// Writes `text` and a newline to stderr.
pub(crate) fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// Pretty JSON (as the Vault CLI prints it, two-space indent).
pub(crate) fn json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A two-column table with a `Key`/`Value` header, columns separated by four spaces.
pub(crate) fn kv_table(rows: &[(String, String)]) -> String {
    table(
        &["Key", "Value"],
        &rows
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect::<Vec<_>>(),
    )
}

/// A table with `headers` and `rows`, each column padded to its widest cell, columns
/// separated by four spaces, a dashed line under the header (Vault's `columnize`).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let dashes: Vec<String> = headers
        .iter()
        .map(|h| "-".repeat(h.chars().count()))
        .collect();
    let mut lines = Vec::with_capacity(rows.len() + 2);
    let render = |cells: &[String]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate().take(cols) {
            line.push_str(cell);
            if i + 1 < cols {
                let pad = widths[i] - cell.chars().count() + 4;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.trim_end().to_owned()
    };
    lines.push(render(
        &headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
    ));
    lines.push(render(&dashes));
    for row in rows {
        lines.push(render(row));
    }
    lines.join("\n")
}

/// A one-column `Keys` table, for LIST answers.
pub(crate) fn keys_table(keys: &[String]) -> String {
    table(
        &["Keys"],
        &keys.iter().map(|k| vec![k.clone()]).collect::<Vec<_>>(),
    )
}

/// A value the way Go's `%v` prints it, which is what Vault's tables show: strings bare,
/// lists `[a b]`, maps `map[k:v]` with sorted keys, null `<nil>`.
pub(crate) fn display_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(display_value).collect::<Vec<_>>().join(" ")
            )
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", display_value(&m[k.as_str()])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// Whole seconds as the Vault CLI shows durations (its `humanDuration`): Go's format
/// with zero tails trimmed (`768h`, `1h30m`, `1h1s`, `59m59s`, `0s`).
pub(crate) fn human_duration(secs: u64) -> String {
    let mut s = leash_types::format_go_duration(Duration::from_secs(secs));
    if s.ends_with("m0s") {
        s.truncate(s.len() - 2);
    }
    if let Some(i) = s.find("h0m") {
        s.replace_range(i + 1..i + 3, "");
    }
    s
}

/// `human_duration` of a JSON number of seconds; other values are shown as they are.
fn display_duration(v: &Value) -> String {
    match v
        .as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    {
        Some(secs) => human_duration(secs),
        None => display_value(v),
    }
}

/// Keys the Vault CLI shows as durations.
fn looks_like_duration(key: &str) -> bool {
    key == "ttl" || key.ends_with("_ttl") || key == "period" || key.ends_with("_period")
}

/// Rows for one `data` map: keys sorted, durations humanised.
pub(crate) fn data_rows(data: &Map<String, Value>) -> Vec<(String, String)> {
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let v = &data[k.as_str()];
            let shown = if looks_like_duration(k) {
                display_duration(v)
            } else {
                display_value(v)
            };
            (k.clone(), shown)
        })
        .collect()
}

/// Rows for an `auth` block, as `vault token create` prints them. Includes the token:
/// only call this where the user asked for it.
pub(crate) fn auth_rows(auth: &Value) -> Vec<(String, String)> {
    let get = |k: &str| auth.get(k).cloned().unwrap_or(Value::Null);
    let list = |k: &str| match auth.get(k) {
        Some(v @ Value::Array(_)) => display_value(v),
        _ => "[]".to_owned(),
    };
    let mut rows = vec![
        ("token".to_owned(), display_value(&get("client_token"))),
        ("token_accessor".to_owned(), display_value(&get("accessor"))),
        (
            "token_duration".to_owned(),
            display_duration(&get("lease_duration")),
        ),
        (
            "token_renewable".to_owned(),
            display_value(&get("renewable")),
        ),
        ("token_policies".to_owned(), list("token_policies")),
        ("identity_policies".to_owned(), list("identity_policies")),
        ("policies".to_owned(), list("policies")),
    ];
    if let Some(Value::Object(meta)) = auth.get("metadata") {
        let mut keys: Vec<&String> = meta.keys().collect();
        keys.sort();
        for k in keys {
            rows.push((format!("token_meta_{k}"), display_value(&meta[k.as_str()])));
        }
    }
    rows
}

/// Whether a body is a response envelope rather than plain JSON (`sys/health`).
fn is_envelope(body: &Value) -> bool {
    ["request_id", "data", "auth", "lease_id"]
        .iter()
        .any(|k| body.get(*k).is_some())
}

/// The table rows of a whole answer, as `vault read`/`write` print it: lease fields if
/// leased, auth fields if any, then the data. A plain (non-envelope) object is shown
/// field by field.
pub(crate) fn secret_rows(body: &Value) -> Vec<(String, String)> {
    let Value::Object(top) = body else {
        return vec![("value".to_owned(), display_value(body))];
    };
    if !is_envelope(body) {
        return data_rows(top);
    }
    let mut rows = Vec::new();
    let lease_duration = body
        .get("lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let lease_id = body.get("lease_id").and_then(Value::as_str).unwrap_or("");
    if lease_duration > 0 {
        if lease_id.is_empty() {
            rows.push((
                "refresh_interval".to_owned(),
                human_duration(lease_duration),
            ));
        } else {
            rows.push(("lease_id".to_owned(), lease_id.to_owned()));
            rows.push(("lease_duration".to_owned(), human_duration(lease_duration)));
            let renewable = body.get("renewable").cloned().unwrap_or(Value::Bool(false));
            rows.push(("lease_renewable".to_owned(), display_value(&renewable)));
        }
    }
    if let Some(auth @ Value::Object(_)) = body.get("auth") {
        rows.extend(auth_rows(auth));
    }
    if let Some(Value::Object(data)) = body.get("data") {
        rows.extend(data_rows(data));
    }
    rows
}

/// The server's warnings, formatted for stderr the way Vault does; `None` if none.
pub(crate) fn warnings(body: &Value) -> Option<String> {
    let list = body.get("warnings")?.as_array()?;
    if list.is_empty() {
        return None;
    }
    let mut s = "WARNING! The following warnings were returned from the server:\n".to_owned();
    for w in list {
        s.push_str("\n  * ");
        s.push_str(&display_value(w));
    }
    s.push('\n');
    Some(s)
}

/// Looks up `-field` in an answer: in `data`, then the auth block under Vault's row
/// names (`token`, `token_accessor`, …), then at the top level.
pub(crate) fn find_field(body: &Value, field: &str) -> Option<Value> {
    if let Some(v) = body.get("data").and_then(|d| d.get(field)) {
        return Some(v.clone());
    }
    if let Some(auth) = body.get("auth").filter(|a| a.is_object()) {
        let key = match field {
            "token" => "client_token",
            "token_accessor" => "accessor",
            "token_duration" => "lease_duration",
            "token_renewable" => "renewable",
            other => other,
        };
        if let Some(v) = auth.get(key) {
            return Some(v.clone());
        }
    }
    body.get(field).cloned()
}

/// A field's value as printed by `-field`: strings bare (no newline added by us beyond
/// the line end), everything else as in tables, or JSON in json format.
pub(crate) fn field_text(v: &Value, format: Format) -> String {
    match (format, v) {
        (Format::Json, _) => json(v),
        (Format::Table, v) => display_value(v),
    }
}

/// A `==== Title ====` banner, as the Vault CLI prints above KV sections.
pub(crate) fn banner(title: &str, width: usize) -> String {
    let inner = title.chars().count() + 2;
    let pad = width.saturating_sub(inner).max(2);
    let left = pad / 2;
    let right = pad - left;
    format!("{} {title} {}", "=".repeat(left), "=".repeat(right))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_like_columnize() {
        let t = kv_table(&[
            ("a".into(), "1".into()),
            ("longer_key".into(), "x y".into()),
        ]);
        assert_eq!(
            t,
            "Key           Value\n---           -----\na             1\nlonger_key    x y"
        );
        assert_eq!(keys_table(&["a".into(), "b/".into()]), "Keys\n----\na\nb/");
    }

    #[test]
    fn values_print_like_go() {
        assert_eq!(
            display_value(&json!(["default", "bench"])),
            "[default bench]"
        );
        assert_eq!(display_value(&json!({"b": 1, "a": "x"})), "map[a:x b:1]");
        assert_eq!(display_value(&json!(null)), "<nil>");
        assert_eq!(display_value(&json!(true)), "true");
        assert_eq!(display_value(&json!([])), "[]");
    }

    #[test]
    fn durations_trim_zero_tails() {
        assert_eq!(human_duration(768 * 3600), "768h");
        assert_eq!(human_duration(5400), "1h30m");
        assert_eq!(human_duration(3599), "59m59s");
        assert_eq!(human_duration(3601), "1h1s");
        assert_eq!(human_duration(60), "1m");
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(7), "7s");
    }

    #[test]
    fn token_create_answer_renders_auth_rows() {
        let body = json!({"request_id": "r", "lease_id": "", "lease_duration": 0,
            "data": null, "warnings": ["TTL capped"],
            "auth": {"client_token": "lsh.t", "accessor": "acc", "lease_duration": 3600,
                     "renewable": true, "policies": ["bench", "default"],
                     "token_policies": ["bench", "default"], "metadata": {"agent": "a1"}}});
        let rows = secret_rows(&body);
        let get = |k: &str| rows.iter().find(|(rk, _)| rk == k).map(|(_, v)| v.as_str());
        assert_eq!(get("token"), Some("lsh.t"));
        assert_eq!(get("token_duration"), Some("1h"));
        assert_eq!(get("token_policies"), Some("[bench default]"));
        assert_eq!(get("identity_policies"), Some("[]"));
        assert_eq!(get("token_meta_agent"), Some("a1"));
        assert_eq!(find_field(&body, "token"), Some(json!("lsh.t")));
        assert_eq!(
            warnings(&body).unwrap(),
            "WARNING! The following warnings were returned from the server:\n\n  * TTL capped\n"
        );
    }

    #[test]
    fn leased_answer_shows_lease_then_sorted_data() {
        let body = json!({"lease_id": "database/creds/ro/abc", "lease_duration": 900,
            "renewable": true, "data": {"username": "u", "password": "p"}});
        let rows = secret_rows(&body);
        let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "lease_id",
                "lease_duration",
                "lease_renewable",
                "password",
                "username"
            ]
        );
        assert_eq!(rows[1].1, "15m");
    }

    #[test]
    fn token_lookup_data_humanises_ttls() {
        let body = json!({"data": {"ttl": 2_764_799, "creation_ttl": 2_764_800,
            "explicit_max_ttl": 0, "policies": ["root"], "num_uses": 0}});
        let rows = secret_rows(&body);
        let get = |k: &str| rows.iter().find(|(rk, _)| rk == k).map(|(_, v)| v.clone());
        assert_eq!(get("ttl").unwrap(), "767h59m59s");
        assert_eq!(get("creation_ttl").unwrap(), "768h");
        assert_eq!(get("explicit_max_ttl").unwrap(), "0s");
        assert_eq!(get("num_uses").unwrap(), "0");
    }

    #[test]
    fn plain_objects_are_shown_field_by_field() {
        let rows = secret_rows(&json!({"sealed": false, "version": "0.1.0"}));
        assert_eq!(
            rows,
            vec![
                ("sealed".into(), "false".into()),
                ("version".into(), "0.1.0".into())
            ]
        );
        assert!(warnings(&json!({"warnings": null})).is_none());
    }

    #[test]
    fn fields_print_raw_or_as_json() {
        assert_eq!(field_text(&json!("s3cr3t"), Format::Table), "s3cr3t");
        assert_eq!(field_text(&json!("s3cr3t"), Format::Json), "\"s3cr3t\"");
        assert_eq!(field_text(&json!(["a"]), Format::Table), "[a]");
        assert_eq!(
            find_field(&json!({"data": {"x": 1}, "x": 2}), "x"),
            Some(json!(1))
        );
        assert_eq!(
            find_field(&json!({"sealed": true}), "sealed"),
            Some(json!(true))
        );
        assert_eq!(find_field(&json!({}), "nope"), None);
    }

    #[test]
    fn banners_are_centred() {
        assert_eq!(banner("Data", 12), "=== Data ===");
        assert_eq!(banner("Secret Path", 4), "= Secret Path =");
    }
}
