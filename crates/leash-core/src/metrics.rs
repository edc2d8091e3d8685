//! `sys/metrics`: the counters that exist so far, as Prometheus text
//! (`?format=prometheus`) or JSON. The token needs `read` on `sys/metrics`.
//!
//! * `leash_login_failures_total{mount,role}` — failed logins per auth mount and role;
//! * `leash_leases` — lease records in storage (all states);
//! * `leash_lease_revocations_failing` — leases whose revocation has failed at least
//!   once and is being retried.

use std::fmt::Write as _;

use leash_backend::{CoreError, Response, ResponseKind};
use serde_json::{Map, Value, json};

use crate::Inner;

/// Most failing leases counted (the list is read through an index; beyond this the
/// gauge saturates, which is alarm enough).
const FAILING_CAP: usize = 100_000;

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) async fn render(inner: &Inner, q: &Map<String, Value>) -> Result<Response, CoreError> {
    let failures = inner.logins.failures_per_role();
    let leases = inner.storage.lease_count().await?;
    let failing = inner.storage.leases_failing(FAILING_CAP).await?.len();
    let format = q.get("format").and_then(Value::as_str).unwrap_or("");
    match format {
        "prometheus" => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "# HELP leash_login_failures_total Failed logins per auth mount and role.\n# TYPE leash_login_failures_total counter"
            );
            for ((mount, role), n) in &failures {
                let _ = writeln!(
                    out,
                    "leash_login_failures_total{{mount=\"{}\",role=\"{}\"}} {n}",
                    label(mount),
                    label(role)
                );
            }
            let _ = writeln!(
                out,
                "# HELP leash_leases Lease records in storage.\n# TYPE leash_leases gauge\nleash_leases {leases}"
            );
            let _ = writeln!(
                out,
                "# HELP leash_lease_revocations_failing Leases whose revocation failed and is being retried.\n# TYPE leash_lease_revocations_failing gauge\nleash_lease_revocations_failing {failing}"
            );
            Ok(Response {
                data: Some(Value::String(out)),
                secret: None,
                auth: None,
                warnings: Vec::new(),
                kind: ResponseKind::Text(200),
                login: None,
            })
        }
        "" | "json" => Ok(Response::data(json!({
            "login_failures": failures
                .iter()
                .map(|((mount, role), n)| json!({"mount": mount, "role": role, "count": n}))
                .collect::<Vec<_>>(),
            "leases": leases,
            "lease_revocations_failing": failing,
        }))),
        other => Err(CoreError::invalid(format!(
            "unknown format {other:?}: use \"prometheus\" or \"json\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
