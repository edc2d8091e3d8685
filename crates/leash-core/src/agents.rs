//! `LIST sys/containment/agents`: the live agents, for the `/ui/agents` page and for
//! operators deciding what to contain.
//!
//! An **agent** is an identity holding live tokens: an entity (every token of a login,
//! and the children it made) or, for tokens without an entity (`auth/token/create` by an
//! operator), one token tree. Root tokens are not agents. Per agent: its readable name,
//! its login role (`mount/role`), its live tokens, its live leases, its last use and
//! the trace ids of its requests in the last hour, and the selector the kill switch
//! takes for it (`entity_id` locks; an `accessor` tree is only revoked).
//!
//! Last use and recent trace ids are kept in memory ([`Activity`]), fed by the pipeline
//! at every authenticated request: they start empty after a restart.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use leash_backend::{Caller, CoreError, Response, TokenEntry};
use leash_storage::LeaseState;
use serde_json::{Value, json};

use crate::Inner;
use crate::leases::LeaseEntry;

/// How long a trace id is remembered.
const TRACE_WINDOW: i64 = 3600;
/// Trace ids remembered per token.
const TRACES_PER_TOKEN: usize = 16;
/// Tokens remembered; beyond it entries unused for an hour are dropped, then all.
const MAX_TOKENS: usize = 100_000;

#[derive(Default)]
struct Seen {
    last: i64,
    traces: VecDeque<(String, i64)>,
}

/// Last use and recent trace ids per token accessor.
#[derive(Default)]
pub(crate) struct Activity {
    seen: Mutex<HashMap<String, Seen>>,
}

impl Activity {
    /// Records a use of the token `accessor` at `now` under `trace_id`.
    pub(crate) fn used(&self, accessor: &str, trace_id: &str, now: i64) {
        let Ok(mut m) = self.seen.lock() else { return };
        if m.len() >= MAX_TOKENS && !m.contains_key(accessor) {
            m.retain(|_, s| now - s.last < TRACE_WINDOW);
            if m.len() >= MAX_TOKENS {
                m.clear();
            }
        }
        let s = m.entry(accessor.to_owned()).or_default();
        s.last = s.last.max(now);
        if !trace_id.is_empty() && !s.traces.iter().any(|(t, _)| t == trace_id) {
            if s.traces.len() >= TRACES_PER_TOKEN {
                s.traces.pop_front();
            }
            s.traces.push_back((trace_id.to_owned(), now));
        }
    }

    fn of(&self, accessor: &str) -> Option<(i64, Vec<(String, i64)>)> {
        let m = self.seen.lock().ok()?;
        m.get(accessor)
            .map(|s| (s.last, s.traces.iter().cloned().collect()))
    }
}

#[derive(Default)]
struct Agent {
    name: String,
    entity_id: String,
    /// `accessor` of the tree root, for agents without an entity.
    root_accessor: String,
    roles: BTreeMap<String, ()>,
    tokens: usize,
    accessors: HashSet<String>,
    leases: Vec<String>,
    last_use: i64,
    traces: BTreeMap<String, i64>,
}

/// `mount/role` of a login token (`auth/kubernetes/login` + role `ai`), or the token
/// role of a token-store token, or "".
fn role_of(e: &TokenEntry) -> String {
    if let Some(rest) = e.path.strip_prefix("auth/")
        && !rest.starts_with("token/")
        && let Some(r) = e.metrics_role.as_deref().filter(|r| !r.is_empty())
    {
        let mount = rest.split("/login").next().unwrap_or("").trim_matches('/');
        return format!("{mount}/{r}");
    }
    e.role
        .as_deref()
        .map(|r| format!("token/{r}"))
        .unwrap_or_default()
}

/// The live agents (see the module docs), most recently used first (the caller's own
/// identity last).
pub(crate) async fn list(inner: &Inner, caller: Option<&Caller>) -> Result<Response, CoreError> {
    let now = inner.clock.unix();
    let live = inner.tokens.live_entries().await?;
    let by_accessor: HashMap<&str, &TokenEntry> =
        live.iter().map(|(_, e)| (e.accessor.as_str(), e)).collect();
    let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
    let mut agent_of_hash = HashMap::new();
    for (h, e) in &live {
        if e.is_root() || e.canary {
            continue;
        }
        let key = if e.entity_id.is_empty() {
            // The root of its tree among live tokens without an entity.
            let mut root = e;
            let mut hops = 0;
            while let Some(p) = root.parent_accessor.as_deref()
                && let Some(pe) = by_accessor.get(p)
                && pe.entity_id.is_empty()
                && !pe.is_root()
                && hops < 64
            {
                root = pe;
                hops += 1;
            }
            format!("accessor/{}", root.accessor)
        } else {
            format!("entity/{}", e.entity_id)
        };
        let a = agents.entry(key.clone()).or_default();
        if a.name.is_empty() || e.parent_accessor.is_none() {
            a.name = crate::events::agent_name(&e.meta, &e.display_name);
        }
        a.entity_id.clone_from(&e.entity_id);
        if let Some(k) = key.strip_prefix("accessor/") {
            a.root_accessor = k.to_owned();
        }
        let role = role_of(e);
        if !role.is_empty() {
            a.roles.insert(role, ());
        }
        a.tokens += 1;
        a.accessors.insert(e.accessor.clone());
        if now - e.creation_time < TRACE_WINDOW && !e.trace_id.is_empty() {
            a.traces.insert(e.trace_id.clone(), e.creation_time);
        }
        if let Some((last, traces)) = inner.activity.of(&e.accessor) {
            a.last_use = a.last_use.max(last);
            for (t, at) in traces {
                if now - at < TRACE_WINDOW {
                    let v = a.traces.entry(t).or_insert(at);
                    *v = (*v).max(at);
                }
            }
        }
        agent_of_hash.insert(*h, key);
    }
    for id in inner.storage.lease_ids_with_prefix("").await? {
        let Some(l) = inner.storage.lease_get(&id).await? else {
            continue;
        };
        if l.state != LeaseState::Active || l.expire_at <= now {
            continue;
        }
        let key = l
            .token
            .and_then(|h| agent_of_hash.get(&h).cloned())
            .or_else(|| {
                let e = LeaseEntry::decode(&l).ok()?;
                let i = e.issued?;
                let k = format!("entity/{}", i.agent.entity_id);
                (!i.agent.entity_id.is_empty() && agents.contains_key(&k)).then_some(k)
            });
        if let Some(a) = key.and_then(|k| agents.get_mut(&k)) {
            a.leases.push(id);
        }
    }
    let me = caller.map(|c| c.entry.entity_id.as_str()).unwrap_or("");
    let mut rows: Vec<(i64, String, Value)> = agents
        .into_iter()
        .map(|(key, mut a)| {
            a.leases.sort();
            let mut traces: Vec<(String, i64)> = a.traces.into_iter().collect();
            traces.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
            let selector = if a.entity_id.is_empty() {
                json!({"accessor": a.root_accessor})
            } else {
                json!({"entity_id": a.entity_id})
            };
            let v = json!({
                "name": a.name,
                "entity_id": a.entity_id,
                "roles": a.roles.keys().collect::<Vec<_>>(),
                "tokens": a.tokens,
                "leases": a.leases,
                "last_use": if a.last_use > 0 { json!(leash_types::rfc3339(a.last_use)) } else { Value::Null },
                "trace_ids": traces.into_iter().map(|(t, _)| t).collect::<Vec<_>>(),
                "selector": selector,
                "locks": !a.entity_id.is_empty(),
                "you": !me.is_empty() && a.entity_id == me,
            });
            (a.last_use, key, v)
        })
        .collect();
    // The caller's own identity last, then the most recently used first.
    rows.sort_by(|x, y| {
        let you = |r: &(i64, String, Value)| r.2["you"].as_bool() == Some(true);
        you(x)
            .cmp(&you(y))
            .then_with(|| y.0.cmp(&x.0))
            .then_with(|| x.1.cmp(&y.1))
    });
    let keys: Vec<&String> = rows.iter().map(|(_, k, _)| k).collect();
    let info: serde_json::Map<String, Value> = rows
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Response::data(json!({"keys": keys, "key_info": info})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_keeps_the_last_use_and_a_bounded_set_of_traces() {
        let a = Activity::default();
        for i in 0..40 {
            a.used("acc", &format!("t{}", i % 20), 100 + i);
        }
        let (last, traces) = a.of("acc").unwrap();
        assert_eq!(last, 139);
        assert_eq!(traces.len(), TRACES_PER_TOKEN);
        assert!(a.of("other").is_none());
    }
}
