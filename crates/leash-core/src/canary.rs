//! Canary credentials: credentials nobody legitimate ever uses, so any use of one means
//! it was harvested.
//!
//! * **Database** — a role with `canary = true` issues real credentials (same username
//!   pattern, a user that can log in, made by `canary_statements`, by default with no
//!   privilege); only the lease's record says it is a canary. The session observer
//!   watches every connection serving a canary role whatever `observe_sessions` says;
//!   each new session of a canary user trips it ([`trip_lease`]).
//! * **Token** — `auth/token/create` with `canary = true` stores a token that
//!   authenticates nothing: every presentation is refused exactly as a revoked token is
//!   (same status, same body, no extra wait: the trip runs in its own task). Its first
//!   presentation trips it ([`trip_token`]).
//!
//! A trip writes `agent.credential.canary_tripped` (with the client address in its
//! `action_context`), counts `leash_canary_tripped_total{credential_type}` (the
//! `LeashCanaryTripped` alert), logs at WARN and, with `contain_on_trip = true`, runs
//! the kill switch on the identity (entity) the canary was issued to, once per canary.
//! A canary issued to a token without an entity has no identity to lock: the trip is
//! reported and nothing is contained.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use leash_backend::{Canary, TokenEntry};
use serde_json::{Value, json};

use crate::Inner;
use crate::containment::{self, Selector};
use crate::events::{self, Event, Kind};
use crate::leases::LeaseEntry;

/// The metric label of lease canaries (the database engine is the only engine with
/// canaries).
const DATABASE: &str = "database";

/// Canaries remembered as tripped (beyond it the memory is cleared: a canary may then
/// trip, and contain, once more).
const MAX_TRIPPED: usize = 100_000;

/// The canaries that have tripped since the start (in memory).
#[derive(Default)]
pub(crate) struct Tripped(Mutex<HashSet<String>>);

impl Tripped {
    /// Whether `key` trips now for the first time.
    fn first(&self, key: String) -> bool {
        let Ok(mut s) = self.0.lock() else {
            return false;
        };
        if s.len() >= MAX_TRIPPED {
            s.clear();
        }
        s.insert(key)
    }
}

/// A session of the canary credential of lease `lease_id` was seen (`canary`: what
/// its engine says of it, [`leash_backend::Backend::canary`]; `context`: the
/// observer's, with the client address).
pub(crate) async fn trip_lease(
    inner: &Arc<Inner>,
    lease_id: &str,
    e: &LeaseEntry,
    canary: Canary,
    context: &Value,
) {
    let (engine, role) = e.metric_labels();
    inner.telemetry.canary_tripped(DATABASE);
    tracing::warn!(
        engine,
        role,
        lease_id,
        client = %context["client_address"].as_str().unwrap_or(""),
        "canary credential used: a login with a canary database credential"
    );
    let ev = e.event(lease_id, Kind::CanaryTripped, 0, None);
    let entity = e
        .issued
        .as_ref()
        .map(|i| i.agent.entity_id.clone())
        .unwrap_or_default();
    let contain = canary.contain_on_trip;
    let mut ctx = context.clone();
    ctx["canary"] = json!({"lease_id": lease_id, "contain_on_trip": contain});
    events::emit_observed(inner, &[ev], &ctx).await;
    if contain && inner.canaries.first(format!("lease/{lease_id}")) {
        contain_entity(
            inner,
            &entity,
            &format!("canary credential used ({lease_id})"),
        )
        .await;
    }
}

/// The canary token `e` was presented from `remote`. Returns at once; the trip (first
/// presentation only) runs in its own task.
pub(crate) fn trip_token(inner: &Arc<Inner>, e: TokenEntry, remote: Option<SocketAddr>) {
    if !inner.canaries.first(format!("token/{}", e.accessor)) {
        return;
    }
    let inner = Arc::clone(inner);
    let ctx = events::current();
    let job = async move {
        inner.telemetry.canary_tripped("token");
        let client = remote.map(|a| a.ip().to_string()).unwrap_or_default();
        tracing::warn!(client = %client, "canary token presented");
        let ev = Event::token(Kind::CanaryTripped, &e, inner.clock.unix());
        let context = json!({
            "initiator": "token-presented",
            "client_address": client,
            "canary": {"contain_on_trip": e.contain_on_trip},
        });
        events::emit_observed(&inner, &[ev], &context).await;
        if e.contain_on_trip {
            contain_entity(&inner, &e.entity_id, "canary token presented").await;
        }
    };
    match ctx {
        Some(c) => tokio::spawn(events::scope_arc(c, job)),
        None => tokio::spawn(job),
    };
}

async fn contain_entity(inner: &Arc<Inner>, entity_id: &str, why: &str) {
    if entity_id.is_empty() {
        tracing::warn!(
            "canary tripped: it was issued to a token without an entity, nothing to contain"
        );
        return;
    }
    let sel = Selector::Entity {
        entity_id: entity_id.to_owned(),
    };
    match containment::run(inner, &sel, why, None).await {
        Ok(v) => tracing::warn!(result = %v, "canary tripped: identity contained"),
        Err(e) => tracing::error!(error = %e, "canary tripped: containment failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_trips_once() {
        let t = Tripped::default();
        assert!(t.first("token/a".into()));
        assert!(!t.first("token/a".into()));
        assert!(t.first("lease/a".into()));
    }
}
