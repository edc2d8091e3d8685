//! The database session observer: who really uses a leased database credential, and
//! from where.
//!
//! Off by default; turned on per database connection with `observe_sessions = true` in
//! `database/config/:name`. Every [`TICK`] the observer asks each such connection for the
//! sessions of leash-made users (PostgreSQL `pg_stat_activity`, MySQL/MariaDB
//! `information_schema.PROCESSLIST`), matches each session's user to the live lease that
//! issued it, and logs:
//!
//! * `agent.credential.used` once per new session (not once per poll), with the client
//!   address, the session id and the first and latest use of the lease seen so far in
//!   its `action_context`;
//! * `agent.credential.anomaly` when the session's client address is not the address the
//!   agent called leash from when the credential was issued (the lease remembers it),
//!   and `leash_credential_anomalies_total{engine,role}`.
//!
//! State is in memory and bounded ([`MAX_TRACKED`] sessions): after a restart a session
//! still open is logged once more. Leases issued before leash remembered the caller's
//! address are never anomalous (nothing to compare with).
//!
//! Not here: listing sessions (the database engine, `observe_sessions`).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use leash_storage::LeaseState;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Inner;
use crate::events::{self, Kind};
use crate::leases::LeaseEntry;

/// How often observed databases are polled.
pub(crate) const TICK: Duration = Duration::from_secs(2);
/// Most (lease, session) pairs remembered; past it the memory is cleared (a session
/// still open is then logged once more).
const MAX_TRACKED: usize = 100_000;

/// What the observer remembers.
#[derive(Default)]
pub(crate) struct Seen {
    /// Sessions already logged: (lease id, session id).
    sessions: HashMap<(String, String), ()>,
    /// First use seen per lease (unix seconds).
    first_use: HashMap<String, i64>,
    /// Every session id seen, leased or not (so a poll with no new session reads no
    /// lease). Session ids are per database server; a reused id after a server restart
    /// is taken as seen until the memory is cleared.
    session_ids: HashSet<String>,
}

/// Whether a session from `client` is an anomaly for a lease issued to a caller at
/// `agent`: both known and different. A Unix-socket session (no address) or a lease
/// without a recorded address is not.
pub(crate) fn is_anomaly(agent: &str, client: Option<IpAddr>) -> bool {
    match (agent.parse::<IpAddr>(), client) {
        (Ok(a), Some(c)) => canonical(a) != canonical(c),
        _ => false,
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// Starts the observer loop; it stops when `stopped` changes or the core is gone.
pub(crate) fn start(inner: Weak<Inner>, mut stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let seen = Mutex::new(Seen::default());
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
            let Some(inner) = inner.upgrade() else { break };
            poll(&inner, &seen).await;
        }
    })
}

/// One round over every `database` mount.
async fn poll(inner: &Arc<Inner>, seen: &Mutex<Seen>) {
    let mounts: Vec<(String, String)> = inner
        .router()
        .all()
        .filter(|m| m.entry.kind == "database")
        .map(|m| (m.entry.route_prefix(), m.entry.storage_ns()))
        .collect();
    for (prefix, ns) in mounts {
        let observed =
            match leash_engines::database::engine::observe_sessions(&inner.storage, &ns).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(mount = %prefix, error = %e, "session observer failed");
                    continue;
                }
            };
        // Sessions already logged need nothing more; the leases are read (one pass over
        // the mount's leases) only when a session is new to the observer.
        let any_new = {
            let Ok(seen) = seen.lock() else { return };
            observed.iter().any(|(db, sessions)| {
                sessions
                    .iter()
                    .any(|s| !seen.session_ids.contains(&session_key(&prefix, db, &s.id)))
            })
        };
        if !any_new {
            continue;
        }
        let leases = match live_leases_by_user(inner, &prefix).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(mount = %prefix, error = %e, "session observer cannot read leases");
                continue;
            }
        };
        if let Ok(mut seen) = seen.lock() {
            for (db, sessions) in &observed {
                for s in sessions {
                    seen.session_ids.insert(session_key(&prefix, db, &s.id));
                }
            }
        }
        for (db, sessions) in observed {
            for s in sessions {
                let Some((lease_id, entry)) = leases.get(&s.username) else {
                    continue;
                };
                let now = inner.clock.unix();
                let first = {
                    let Ok(mut seen) = seen.lock() else { return };
                    if seen.sessions.len() >= MAX_TRACKED || seen.session_ids.len() >= MAX_TRACKED {
                        seen.sessions.clear();
                        seen.session_ids.clear();
                        seen.first_use.clear();
                    }
                    if seen
                        .sessions
                        .insert((lease_id.clone(), s.id.clone()), ())
                        .is_some()
                    {
                        continue;
                    }
                    *seen.first_use.entry(lease_id.clone()).or_insert(now)
                };
                let agent_address = entry
                    .issued
                    .as_ref()
                    .map(|i| i.remote_address.clone())
                    .unwrap_or_default();
                let client = s.client_addr.map(|a| a.to_string()).unwrap_or_default();
                let anomaly = is_anomaly(&agent_address, s.client_addr);
                let context = json!({
                    "initiator": "session-observer",
                    "database": db,
                    "session_id": s.id,
                    "client_address": client,
                    "agent_address": agent_address,
                    "first_use": leash_types::rfc3339(first),
                    "latest_use": leash_types::rfc3339(now),
                });
                let mut evs = vec![entry.event(lease_id, Kind::Used, 0, None)];
                if anomaly {
                    let (engine, role) = entry.metric_labels();
                    inner.telemetry.anomaly(engine, role);
                    tracing::warn!(engine, role, client = %client, agent = %agent_address,
                        "database credential used from an address other than its agent's");
                    evs.push(entry.event(lease_id, Kind::Anomaly, 0, None));
                }
                events::emit_observed(inner, &evs, &context).await;
            }
        }
    }
}

/// A session's identity across mounts and connections.
fn session_key(mount: &str, db: &str, id: &str) -> String {
    format!("{mount}{db}/{id}")
}

/// The live (`Active`) leases of the mount at `prefix`, by database username.
async fn live_leases_by_user(
    inner: &Arc<Inner>,
    prefix: &str,
) -> Result<HashMap<String, (String, LeaseEntry)>, leash_backend::CoreError> {
    let mut out = HashMap::new();
    for id in inner.storage.lease_ids_with_prefix(prefix).await? {
        let Some(l) = inner.storage.lease_get(&id).await? else {
            continue;
        };
        if l.state != LeaseState::Active {
            continue;
        }
        let Ok(e) = LeaseEntry::decode(&l) else {
            continue;
        };
        if let Some(user) = e.internal.get("username").and_then(|u| u.as_str()) {
            out.insert(user.to_owned(), (id, e));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_known_different_address_is_an_anomaly() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(!is_anomaly("127.0.0.1", ip("127.0.0.1")));
        assert!(is_anomaly("127.0.0.2", ip("127.0.0.1")));
        assert!(is_anomaly("10.0.0.5", ip("::1")));
        assert!(!is_anomaly("10.0.0.5", ip("::ffff:10.0.0.5")), "v4-mapped");
        assert!(!is_anomaly("", ip("10.0.0.5")), "no recorded address");
        assert!(!is_anomaly("10.0.0.5", None), "a Unix-socket session");
    }
}
