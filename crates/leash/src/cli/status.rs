//! `leash status`: is the server up, initialised and unsealed?
//!
//! Asks `sys/seal-status` (as `vault status` does) and falls back to `sys/health` if the
//! server does not serve it. Exit code 0 when unsealed, 2 when sealed or unreachable,
//! like `vault status`. Needs no token.

use serde_json::Value;

use super::output::{self, Format};
use super::{CommonArgs, Failure, Outcome};

/// Options of `leash status`.
#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    common: CommonArgs,
}

pub(super) async fn run(args: StatusArgs) -> Outcome {
    let client = super::client(&args.common)?;
    let seal = client
        .request("GET", "sys/seal-status", None)
        .await
        .map_err(|e| Failure::api("checking seal status", "sys/seal-status", e))?;
    let (body, rows) = match seal.body {
        Some(body) if seal.is_success() => {
            let rows = seal_rows(&body);
            (body, rows)
        }
        _ => {
            let health = client
                .request("GET", "sys/health", None)
                .await
                .map_err(|e| Failure::api("checking health", "sys/health", e))?;
            if !leash_client::HEALTH_STATUSES.contains(&health.status) {
                return Err(Failure::api(
                    "checking health",
                    "sys/health",
                    leash_client::ClientError::from_response_body(
                        health.status,
                        health.body.as_ref(),
                    ),
                ));
            }
            let body = health.body.unwrap_or(Value::Null);
            let rows = health_rows(&body);
            (body, rows)
        }
    };
    match args.common.format {
        Format::Json => output::out(&output::json(&body)),
        Format::Table => output::out(&output::kv_table(&rows)),
    }
    let sealed = body.get("sealed").and_then(Value::as_bool).unwrap_or(false);
    Ok(if sealed { 2 } else { 0 })
}

/// Rows of `vault status` from a seal-status body; fields the server omits are skipped.
fn seal_rows(body: &Value) -> Vec<(String, String)> {
    let fields = [
        ("Seal Type", "type"),
        ("Initialized", "initialized"),
        ("Sealed", "sealed"),
        ("Total Shares", "n"),
        ("Threshold", "t"),
        ("Unseal Progress", "progress"),
        ("Version", "version"),
        ("Build Date", "build_date"),
        ("Storage Type", "storage_type"),
        ("Cluster Name", "cluster_name"),
        ("Cluster ID", "cluster_id"),
    ];
    rows_of(body, &fields)
}

/// Rows from a `sys/health` body.
fn health_rows(body: &Value) -> Vec<(String, String)> {
    let fields = [
        ("Initialized", "initialized"),
        ("Sealed", "sealed"),
        ("Standby", "standby"),
        ("Version", "version"),
        ("Cluster Name", "cluster_name"),
        ("Cluster ID", "cluster_id"),
        ("Server Time (Unix)", "server_time_utc"),
    ];
    rows_of(body, &fields)
}

fn rows_of(body: &Value, fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .filter_map(|(label, key)| {
            let v = body.get(*key)?;
            if v.is_null() || v.as_str() == Some("") {
                return None;
            }
            Some(((*label).to_owned(), output::display_value(v)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seal_status_rows_skip_missing_fields() {
        let rows = seal_rows(
            &json!({"type": "shamir", "initialized": true, "sealed": false,
            "n": 1, "t": 1, "version": "0.1.0", "cluster_name": ""}),
        );
        let labels: Vec<&str> = rows.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Seal Type",
                "Initialized",
                "Sealed",
                "Total Shares",
                "Threshold",
                "Version"
            ]
        );
        assert_eq!(rows[2].1, "false");
    }

    #[test]
    fn health_rows_from_health_body() {
        let rows = health_rows(&json!({"initialized": true, "sealed": true, "standby": false}));
        assert_eq!(rows[1], ("Sealed".to_owned(), "true".to_owned()));
    }
}
