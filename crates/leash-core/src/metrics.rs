//! `sys/metrics`: Prometheus text (`?format=prometheus`) or JSON. The token needs
//! `read` on `sys/metrics`, unless the server runs with
//! `telemetry { unauthenticated_metrics_access = true }`. See `docs/monitoring.md`.
//!
//! Vault-compatible families (so Vault alert rules work unchanged):
//!
//! * `vault_token_creation_time{role}` — unix time of the newest live token per role;
//! * `vault_token_ttl{role}` — smallest remaining TTL (seconds) of the live expiring
//!   tokens per role;
//! * `vault_audit_log_request_failure{auth_entity_id}` — requests denied (403) per
//!   entity; `auth_entity_id` is the caller's *name-based* id: the role its token was
//!   issued for (login role, e.g. the userpass user or AppRole role name, else the token
//!   role), else its display name; `""` for requests without a valid token.
//!
//! `role` is the auth role the login went through (`LoginGrant::role`), or for tokens
//! made by `auth/token/create/<role>` the token role. Tokens with neither (root, ad hoc
//! children) are counted under `role=""` in the counters but left out of the gauges.
//!
//! leash's own: `leash_tokens_issued_total{role}`, `leash_tokens_revoked_total{role,reason}`,
//! `leash_tokens_untracked_total`, `leash_leases_issued_total{engine,role}`,
//! `leash_leases_revoked_total{engine,role}`, `leash_login_failures_total{mount,role}`,
//! `leash_leases`, `leash_lease_revocations_failing`, `leash_leaks_detected_total{kind}`,
//! `leash_containment_actions_total{action}`, `leash_issuance_refused_total{reason}`,
//! `leash_leases_live{engine,role}`, `leash_credential_anomalies_total{engine,role}`,
//! `leash_canary_tripped_total{credential_type}`,
//! `leash_audit_device_up{path}`,
//! `leash_request_duration_seconds{route,method}` (histogram, see `latency`),
//! `leash_audit_device_failures_total{path}`, `leash_audit_device_entries_total{path}`,
//! `leash_jit_requests_pending`, `leash_jit_oldest_pending_seconds`.
//!
//! Counters are in memory and bounded, and reset on restart. The token gauges are
//! rebuilt from storage when the background work starts (`TokenStore::rebuild_gauges`),
//! then maintained on mint, renewal, revocation and expiry; `leash_leases_live` is
//! counted from the lease index at each scrape.

use std::collections::BTreeMap;

/// The credential types a canary can be (every series is present from the start, so
/// `increase()` sees the first trip).
const CANARY_TYPES: &[&str] = &["database", "token"];
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use leash_backend::{CoreError, Response, ResponseKind};
use serde_json::{Map, Value, json};

use crate::Inner;

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family in Prometheus text format.
fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    labels: &[&str],
    rows: impl IntoIterator<Item = (Vec<&'a str>, String)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (values, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
            continue;
        }
        let l: Vec<String> = labels
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {v}", l.join(","));
    }
}

pub(crate) async fn render(inner: &Inner, q: &Map<String, Value>) -> Result<Response, CoreError> {
    let format = q.get("format").and_then(Value::as_str).unwrap_or("");
    if !matches!(format, "" | "json" | "prometheus") {
        return Err(CoreError::invalid(
            "unknown format: use \"prometheus\" or \"json\"",
        ));
    }
    let t = &inner.telemetry;
    let now = inner.clock.unix();
    let failures = inner.logins.failures_per_role();
    let leases = inner.storage.lease_count().await?;
    let failing = inner.storage.leases_failing_count().await?;
    let (jit_pending, jit_oldest) = crate::approvals::pending_stats(inner).await?;
    let gauges = t.role_gauges(now);
    let issued = t.tokens_issued.snapshot();
    let revoked = t.tokens_revoked.snapshot();
    let denials = t.denials.snapshot();
    let l_issued = t.leases_issued.snapshot();
    let l_revoked = t.leases_revoked.snapshot();
    let untracked = t.untracked.load(Ordering::Relaxed);
    let leaks = t.leaks.snapshot();
    let contained = t.containment.snapshot();
    let refused = t.issuance_refused.snapshot();
    let anomalies = t.anomalies.snapshot();
    let canaries = t.canaries.snapshot();
    let live = live_leases(inner).await?;
    let devices = inner.audit.stats();
    let ha = inner.storage.ha_stats();
    if format == "prometheus" {
        let mut out = String::new();
        family(
            &mut out,
            "vault_token_creation_time",
            "gauge",
            "Unix time of the newest live token per auth role.",
            &["role"],
            gauges
                .iter()
                .map(|(r, (c, _))| (vec![r.as_str()], c.to_string())),
        );
        family(
            &mut out,
            "vault_token_ttl",
            "gauge",
            "Smallest remaining TTL in seconds of the live expiring tokens per auth role.",
            &["role"],
            gauges
                .iter()
                .filter_map(|(r, (_, ttl))| ttl.map(|t| (vec![r.as_str()], t.to_string()))),
        );
        family(
            &mut out,
            "vault_audit_log_request_failure",
            "counter",
            "Denied requests per entity (auth_entity_id = the caller's role or display name).",
            &["auth_entity_id"],
            denials
                .iter()
                .map(|(e, n)| (vec![e.as_str()], n.to_string())),
        );
        family(
            &mut out,
            "leash_tokens_issued_total",
            "counter",
            "Tokens minted per auth role.",
            &["role"],
            issued
                .iter()
                .map(|(r, n)| (vec![r.as_str()], n.to_string())),
        );
        family(
            &mut out,
            "leash_tokens_revoked_total",
            "counter",
            "Tokens ended per auth role and reason (revoked, expired).",
            &["role", "reason"],
            revoked
                .iter()
                .map(|((r, why), n)| (vec![r.as_str(), *why], n.to_string())),
        );
        family(
            &mut out,
            "leash_tokens_untracked_total",
            "counter",
            "Tokens left out of the token gauges because the tracker was full.",
            &[],
            [(Vec::new(), untracked.to_string())],
        );
        family(
            &mut out,
            "leash_leases_issued_total",
            "counter",
            "Leases that became active per engine mount and role.",
            &["engine", "role"],
            l_issued
                .iter()
                .map(|((e, r), n)| (vec![e.as_str(), r.as_str()], n.to_string())),
        );
        family(
            &mut out,
            "leash_leases_revoked_total",
            "counter",
            "Leases revoked or expired at their engine per engine mount and role.",
            &["engine", "role"],
            l_revoked
                .iter()
                .map(|((e, r), n)| (vec![e.as_str(), r.as_str()], n.to_string())),
        );
        family(
            &mut out,
            "leash_login_failures_total",
            "counter",
            "Failed logins per auth mount and role.",
            &["mount", "role"],
            failures
                .iter()
                .map(|((m, r), n)| (vec![m.as_str(), r.as_str()], n.to_string())),
        );
        family(
            &mut out,
            "leash_leases",
            "gauge",
            "Lease records in storage.",
            &[],
            [(Vec::new(), leases.to_string())],
        );
        family(
            &mut out,
            "leash_lease_revocations_failing",
            "gauge",
            "Leases whose revocation failed and is being retried.",
            &[],
            [(Vec::new(), failing.to_string())],
        );
        family(
            &mut out,
            "leash_jit_requests_pending",
            "gauge",
            "Just-in-time access requests waiting for a decision.",
            &[],
            [(Vec::new(), jit_pending.to_string())],
        );
        family(
            &mut out,
            "leash_jit_oldest_pending_seconds",
            "gauge",
            "Age of the oldest pending just-in-time access request (0 when none).",
            &[],
            [(Vec::new(), jit_oldest.to_string())],
        );
        family(
            &mut out,
            "leash_leaks_detected_total",
            "counter",
            "Live credentials found (and revoked) by leak scans, per kind (token, database).",
            &["kind"],
            LEAK_KINDS
                .iter()
                .copied()
                .chain(
                    leaks
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .filter(|k| !LEAK_KINDS.contains(k)),
                )
                .map(|k| {
                    let n = leaks.iter().find(|(l, _)| l == k).map_or(0, |(_, n)| *n);
                    (vec![k], n.to_string())
                }),
        );
        family(
            &mut out,
            "leash_containment_actions_total",
            "counter",
            "Kill-switch calls (sys/containment/*, leak scans with contain), per action (lock, revoke, unlock).",
            &["action"],
            CONTAINMENT_ACTIONS.iter().map(|k| {
                let n = contained
                    .iter()
                    .find(|(l, _)| l == k)
                    .map_or(0, |(_, n)| *n);
                (vec![*k], n.to_string())
            }),
        );
        family(
            &mut out,
            "leash_issuance_refused_total",
            "counter",
            "Credential issuances refused (429) by a per-entity cap of their role, per cap.",
            &["reason"],
            ISSUANCE_CAPS.iter().map(|k| {
                let n = refused.iter().find(|(l, _)| l == k).map_or(0, |(_, n)| *n);
                (vec![*k], n.to_string())
            }),
        );
        family(
            &mut out,
            "leash_credential_anomalies_total",
            "counter",
            "Database sessions of a leased credential from an address other than the one its agent called leash from, per engine mount and role.",
            &["engine", "role"],
            anomalies
                .iter()
                .map(|((e, r), n)| (vec![e.as_str(), r.as_str()], n.to_string())),
        );
        family(
            &mut out,
            "leash_canary_tripped_total",
            "counter",
            "Uses of canary credentials (a login with a canary database credential, a canary token presented), per credential type; any increase means a harvested credential is being tried.",
            &["credential_type"],
            CANARY_TYPES.iter().map(|k| {
                let n = canaries.iter().find(|(l, _)| l == k).map_or(0, |(_, n)| *n);
                (vec![*k], n.to_string())
            }),
        );
        family(
            &mut out,
            "leash_leases_live",
            "gauge",
            "Leases whose credential exists (not yet revoked at its target), per engine mount and role; counted from storage at each scrape.",
            &["engine", "role"],
            live.iter()
                .map(|((e, r), n)| (vec![e.as_str(), r.as_str()], n.to_string())),
        );
        family(
            &mut out,
            "leash_audit_device_up",
            "gauge",
            "1 while the audit device works (last write succeeded; a socket device is connected), else 0.",
            &["path"],
            devices
                .iter()
                .map(|d| (vec![d.path.as_str()], u8::from(d.up).to_string())),
        );
        family(
            &mut out,
            "leash_audit_device_failures_total",
            "counter",
            "Entries an audit device failed to record (write error, deadline, full queue or buffer).",
            &["path"],
            devices
                .iter()
                .map(|d| (vec![d.path.as_str()], d.failures.to_string())),
        );
        family(
            &mut out,
            "leash_audit_device_entries_total",
            "counter",
            "Entries an audit device recorded.",
            &["path"],
            devices
                .iter()
                .map(|d| (vec![d.path.as_str()], d.entries.to_string())),
        );
        histograms(&mut out, &t.latency.snapshot());
        if let Some(ha) = &ha {
            ha_families(&mut out, ha);
        }
        return Ok(Response {
            data: Some(Value::String(out)),
            secret: None,
            auth: None,
            warnings: Vec::new(),
            kind: ResponseKind::Text(200),
            login: None,
        });
    }
    let pairs = |v: &[((String, String), u64)], a: &str, b: &str| -> Vec<Value> {
        v.iter()
            .map(|((x, y), n)| json!({a: x, b: y, "count": n}))
            .collect()
    };
    Ok(Response::data(json!({
        "login_failures": pairs(&failures, "mount", "role"),
        "leases": leases,
        "lease_revocations_failing": failing,
        "jit_requests_pending": jit_pending,
        "jit_oldest_pending_seconds": jit_oldest,
        "tokens": gauges.iter().map(|(r, (c, ttl))| json!({
            "role": r, "newest_creation_time": c, "min_ttl": ttl,
        })).collect::<Vec<_>>(),
        "tokens_issued": issued.iter().map(|(r, n)| json!({"role": r, "count": n})).collect::<Vec<_>>(),
        "tokens_revoked": revoked.iter().map(|((r, why), n)| json!({"role": r, "reason": why, "count": n})).collect::<Vec<_>>(),
        "tokens_untracked": untracked,
        "request_failures": denials.iter().map(|(e, n)| json!({"auth_entity_id": e, "count": n})).collect::<Vec<_>>(),
        "leases_issued": pairs(&l_issued, "engine", "role"),
        "leases_revoked": pairs(&l_revoked, "engine", "role"),
        "leases_live": live.iter().map(|((e, r), n)| json!({"engine": e, "role": r, "count": n})).collect::<Vec<_>>(),
        "credential_anomalies": pairs(&anomalies, "engine", "role"),
        "canaries_tripped": canaries.iter().map(|(k, n)| json!({"credential_type": k, "count": n})).collect::<Vec<_>>(),
        "issuance_refused": refused.iter().map(|(k, n)| json!({"reason": k, "count": n})).collect::<Vec<_>>(),
        "containment_actions": contained.iter().map(|(k, n)| json!({"action": k, "count": n})).collect::<Vec<_>>(),
        "leaks_detected": leaks.iter().map(|(k, n)| json!({"kind": k, "count": n})).collect::<Vec<_>>(),
        "audit_devices": devices.iter().map(|d| json!({
            "path": d.path, "up": d.up, "failures": d.failures, "entries": d.entries,
        })).collect::<Vec<_>>(),
        "ha": ha.map(|h| json!({
            "heartbeats": h.heartbeats, "heartbeat_failures": h.heartbeat_failures,
            "claim_batches": h.claim_batches, "claimed": h.claimed,
            "notifications": h.notifications, "reconnects": h.reconnects,
            "storage_latency_count": h.latency_count, "storage_latency_sum": h.latency_sum,
        })),
    })))
}

/// `leash_ha_*`: this server's share of the work on storage shared with others, and
/// `leash_storage_duration_seconds`, the latency of its storage operations.
fn ha_families(out: &mut String, h: &leash_storage::HaStats) {
    for (name, help, v) in [
        (
            "leash_ha_heartbeats_total",
            "Heartbeats this server wrote to the shared storage.",
            h.heartbeats,
        ),
        (
            "leash_ha_heartbeat_failures_total",
            "Heartbeats that failed (storage unreachable).",
            h.heartbeat_failures,
        ),
        (
            "leash_ha_claim_batches_total",
            "Batches of due leases this server claimed.",
            h.claim_batches,
        ),
        (
            "leash_ha_claimed_items_total",
            "Due leases this server claimed (and so revoked or retried).",
            h.claimed,
        ),
        (
            "leash_ha_notifications_total",
            "Change notifications received from the shared storage.",
            h.notifications,
        ),
        (
            "leash_ha_reconnects_total",
            "Times the notification connection was re-opened (each flushed every cache).",
            h.reconnects,
        ),
    ] {
        family(
            out,
            name,
            "counter",
            help,
            &[],
            [(Vec::new(), v.to_string())],
        );
    }
    let name = "leash_storage_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Latency of storage operations in seconds (pool wait included).\n# TYPE {name} histogram"
    );
    for (le, n) in &h.latency_buckets {
        let le = if le.is_infinite() {
            "+Inf".to_owned()
        } else {
            le.to_string()
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum {}", h.latency_sum);
    let _ = writeln!(out, "{name}_count {}", h.latency_count);
}

/// Live leases per (engine mount path, role), read from the lease ids alone (the
/// primary-key index; no lease is decrypted), so the gauge is right after a restart
/// and on storage shared by several servers. The role is what the engine says of the
/// lease's path ([`leash_backend::Backend::lease_role`]: the database engine's role, as
/// in the other lease series; `""` for engines without roles); leases of a mount since
/// disabled are under `(unmounted)`.
async fn live_leases(inner: &Inner) -> Result<BTreeMap<(String, String), u64>, CoreError> {
    let ids = inner.storage.lease_ids_with_prefix("").await?;
    let router = inner.router();
    let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
    for id in &ids {
        let key = match router.route(id) {
            Some((m, rel)) => (m.entry.route_prefix(), m.backend.lease_role(rel).to_owned()),
            None => ("(unmounted)".to_owned(), String::new()),
        };
        *out.entry(key).or_insert(0) += 1;
    }
    Ok(out)
}

/// `leash_request_duration_seconds{route,method}` in Prometheus text format.
fn histograms(
    out: &mut String,
    rows: &[(
        (String, &'static str),
        std::sync::Arc<crate::latency::Histogram>,
    )],
) {
    let name = "leash_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Request latency in seconds per route (mount and first path segment) and operation.\n# TYPE {name} histogram"
    );
    for ((route, method), h) in rows {
        let (buckets, sum, count) = h.snapshot();
        let l = format!("route=\"{}\",method=\"{method}\"", label(route));
        for (i, n) in buckets.iter().enumerate() {
            let le = crate::latency::BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_sum{{{l}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{l}}} {count}");
    }
}

/// The kinds of `leash_leaks_detected_total`, exported from the start (at 0) so that
/// `increase()` sees the first leak.
const LEAK_KINDS: [&str; 2] = ["database", "token"];
/// The actions of `leash_containment_actions_total`, exported from the start (at 0).
const CONTAINMENT_ACTIONS: [&str; 3] = ["lock", "revoke", "unlock"];
/// The reasons of `leash_issuance_refused_total`, exported from the start (at 0).
const ISSUANCE_CAPS: [&str; 3] = [
    "max_live_leases_per_entity",
    "max_issuance_per_minute_per_entity",
    "max_live_tokens_per_entity",
];

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn token_gauges_follow_mint_renew_and_end() {
        use crate::telemetry::Telemetry;
        use leash_storage::KeyedHash;
        let t = Telemetry::default();
        let h = |b: u8| KeyedHash([b; 32]);
        t.token_minted(h(1), "ai-agent", 100, Some(1000));
        t.token_minted(h(2), "ai-agent", 200, Some(500));
        t.token_minted(h(3), "", 300, None);
        let g = t.role_gauges(250);
        assert_eq!(g.len(), 1, "role-less tokens stay out of the gauges");
        assert_eq!(g["ai-agent"], (200, Some(250)));
        t.token_renewed(&h(2), Some(2000));
        assert_eq!(t.role_gauges(250)["ai-agent"], (200, Some(750)));
        t.tokens_ended([(h(2), None)], "revoked");
        assert_eq!(t.role_gauges(250)["ai-agent"], (100, Some(750)));
        assert!(
            t.role_gauges(1000).is_empty(),
            "expired tokens are not live"
        );
        t.tokens_ended([(h(1), None), (h(3), None)], "expired");
        assert_eq!(
            t.tokens_revoked.snapshot(),
            vec![
                (("".to_owned(), "expired"), 1),
                (("ai-agent".to_owned(), "expired"), 1),
                (("ai-agent".to_owned(), "revoked"), 1),
            ]
        );
        assert_eq!(t.role_of(&h(1)), None);
    }

    #[test]
    fn counter_families_are_bounded() {
        let t = crate::telemetry::Telemetry::default();
        for i in 0..crate::telemetry::MAX_SERIES + 5 {
            t.denied(&format!("e{i}"));
        }
        let s = t.denials.snapshot();
        assert_eq!(s.len(), crate::telemetry::MAX_SERIES + 1);
        assert!(s.contains(&("(other)".to_owned(), 5)));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
