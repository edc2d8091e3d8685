//! In-memory metric state of the core (counters, live-token gauges, request latency),
//! fed by the token store, the lease book and the pipeline, and read by `sys/metrics`.
//! It depends on no other module of the core but `latency`, so anything may
//! feed it without a cycle.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use leash_storage::KeyedHash;

/// Most per-label counters kept in one family; past it, new label values count under
/// `"(other)"` (role and entity names may come from callers, so the sets stay bounded).
pub(crate) const MAX_SERIES: usize = 10_000;
/// Most live tokens tracked for the token gauges; past it (after dropping expired
/// ones) new tokens are not tracked and `leash_tokens_untracked_total` grows.
const MAX_TRACKED_TOKENS: usize = 200_000;
/// The label value of tokens and requests without a role or entity name.
pub(crate) const NO_ROLE: &str = "";

struct LiveToken {
    role: String,
    created: i64,
    expire: Option<i64>,
}

/// In-memory metric state: counters reset on restart; the live-token map behind the
/// token gauges is rebuilt from storage when the background work starts.
#[derive(Default)]
pub(crate) struct Telemetry {
    tokens: Mutex<HashMap<KeyedHash, LiveToken>>,
    pub(crate) untracked: AtomicU64,
    pub(crate) tokens_issued: Counters<String>,
    pub(crate) tokens_revoked: Counters<(String, &'static str)>,
    pub(crate) denials: Counters<String>,
    pub(crate) leases_issued: Counters<(String, String)>,
    pub(crate) leases_revoked: Counters<(String, String)>,
    /// Live credentials found by leak scans, per kind (`token`, `database`).
    pub(crate) leaks: Counters<String>,
    /// Sessions of database credentials from an unexpected address, per engine and role.
    pub(crate) anomalies: Counters<(String, String)>,
    /// Canary credentials used, per credential type (`database`, `token`).
    pub(crate) canaries: Counters<&'static str>,
    /// Kill-switch calls, per action (`lock`, `revoke`, `unlock`).
    pub(crate) containment: Counters<&'static str>,
    /// Issuances refused by a per-entity cap, per cap.
    pub(crate) issuance_refused: Counters<&'static str>,
    /// Request latency per route and method.
    pub(crate) latency: crate::latency::Latency,
}

/// A bounded family of counters.
pub(crate) struct Counters<K>(Mutex<HashMap<K, u64>>);

impl<K> Default for Counters<K> {
    fn default() -> Self {
        Counters(Mutex::new(HashMap::new()))
    }
}

impl<K: std::hash::Hash + Eq + Clone + Ord> Counters<K> {
    fn add(&self, key: K, overflow: impl FnOnce(K) -> K, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            let key = if !m.contains_key(&key) && m.len() >= MAX_SERIES {
                overflow(key)
            } else {
                key
            };
            *m.entry(key).or_insert(0) += n;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<(K, u64)> {
        let mut v: Vec<_> = self
            .0
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn other() -> String {
    "(other)".to_owned()
}

/// Per role: newest creation time of a live token, and smallest remaining TTL of the
/// live expiring ones (`None` when all of the role's tokens never expire).
pub(crate) type RoleGauges = BTreeMap<String, (i64, Option<i64>)>;

impl Telemetry {
    /// A token was minted for `role`.
    pub(crate) fn token_minted(
        &self,
        hash: KeyedHash,
        role: &str,
        created: i64,
        expire: Option<i64>,
    ) {
        self.tokens_issued.add(role.to_owned(), |_| other(), 1);
        if role == NO_ROLE {
            return;
        }
        if let Ok(mut m) = self.tokens.lock() {
            if m.len() >= MAX_TRACKED_TOKENS {
                m.retain(|_, t| t.expire.is_none_or(|e| e > created));
                if m.len() >= MAX_TRACKED_TOKENS {
                    self.untracked.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            m.insert(
                hash,
                LiveToken {
                    role: role.to_owned(),
                    created,
                    expire,
                },
            );
        }
    }

    /// A stored token found live at start-up: tracked in the gauges like a minted one,
    /// without counting an issuance. Returns whether it is tracked.
    pub(crate) fn token_restored(
        &self,
        hash: KeyedHash,
        role: &str,
        created: i64,
        expire: Option<i64>,
    ) -> bool {
        if role == NO_ROLE {
            return false;
        }
        let Ok(mut m) = self.tokens.lock() else {
            return false;
        };
        if m.len() >= MAX_TRACKED_TOKENS && !m.contains_key(&hash) {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        m.entry(hash).or_insert(LiveToken {
            role: role.to_owned(),
            created,
            expire,
        });
        true
    }

    /// A token's expiry moved (renewal).
    pub(crate) fn token_renewed(&self, hash: &KeyedHash, expire: Option<i64>) {
        if let Ok(mut m) = self.tokens.lock()
            && let Some(t) = m.get_mut(hash)
        {
            t.expire = expire;
        }
    }

    /// Tokens ended; `why` is `revoked` or `expired`; `role_of` names the role of an
    /// untracked token.
    pub(crate) fn tokens_ended<'a>(
        &self,
        gone: impl IntoIterator<Item = (KeyedHash, Option<&'a str>)>,
        why: &'static str,
    ) {
        let Ok(mut m) = self.tokens.lock() else {
            return;
        };
        for (h, fallback) in gone {
            let role = match m.remove(&h) {
                Some(t) => t.role,
                None => fallback.unwrap_or(NO_ROLE).to_owned(),
            };
            self.tokens_revoked
                .add((role, why), |(_, w)| (other(), w), 1);
        }
    }

    /// The role a live token was tracked under (its login role or token role).
    pub(crate) fn role_of(&self, hash: &KeyedHash) -> Option<String> {
        self.tokens.lock().ok()?.get(hash).map(|t| t.role.clone())
    }

    /// A request was denied for `entity` (see `denial_entity`).
    pub(crate) fn denied(&self, entity: &str) {
        self.denials.add(entity.to_owned(), |_| other(), 1);
    }

    /// A lease of `engine` (its mount path) and `role` became active.
    pub(crate) fn lease_issued(&self, engine: &str, role: &str) {
        self.leases_issued.add(
            (engine.to_owned(), role.to_owned()),
            |(e, _)| (e, other()),
            1,
        );
    }

    /// A lease of `engine` and `role` was revoked (or expired) at its engine.
    pub(crate) fn lease_revoked(&self, engine: &str, role: &str) {
        self.leases_revoked.add(
            (engine.to_owned(), role.to_owned()),
            |(e, _)| (e, other()),
            1,
        );
    }

    /// A leak scan found a live credential of `kind`.
    pub(crate) fn issuance_refused(&self, reason: &'static str) {
        self.issuance_refused.add(reason, |k| k, 1);
    }

    pub(crate) fn containment(&self, action: &'static str) {
        self.containment.add(action, |k| k, 1);
    }

    pub(crate) fn leak_detected(&self, kind: &str) {
        self.leaks.add(kind.to_owned(), |_| other(), 1);
    }

    /// A canary credential of `kind` (`database`, `token`) was used.
    pub(crate) fn canary_tripped(&self, kind: &'static str) {
        self.canaries.add(kind, |k| k, 1);
    }

    /// A database credential of `engine` and `role` was used from an unexpected address.
    pub(crate) fn anomaly(&self, engine: &str, role: &str) {
        self.anomalies.add(
            (engine.to_owned(), role.to_owned()),
            |(e, _)| (e, other()),
            1,
        );
    }

    /// Per-role gauges of the live tracked tokens at `now`.
    pub(crate) fn role_gauges(&self, now: i64) -> RoleGauges {
        let mut out = RoleGauges::new();
        let Ok(m) = self.tokens.lock() else {
            return out;
        };
        // Expired tokens stay until the expiry worker ends them (and counts them).
        for t in m.values().filter(|t| t.expire.is_none_or(|e| e > now)) {
            let g = out.entry(t.role.clone()).or_insert((t.created, None));
            g.0 = g.0.max(t.created);
            if let Some(e) = t.expire {
                let ttl = e - now;
                g.1 = Some(g.1.map_or(ttl, |x| x.min(ttl)));
            }
        }
        out
    }
}
