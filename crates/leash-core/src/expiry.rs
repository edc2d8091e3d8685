//! Background work: revoking expired tokens (and their subtrees) with their lifecycle
//! events (`expired`, and `revoked` with reason `parent revoked` for children); the lease worker
//! ([`crate::leases`]) runs beside it.
//!
//! The worker is owned: [`Background`] holds its task and stops it on `shutdown` (or
//! drop). It holds only a weak reference to the core, so it never keeps a stopped
//! server alive. Failures are logged and retried on the next tick; nothing is dropped.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Inner;
use crate::events::{self, Event, Kind, reason};
use crate::token::Ended;

/// How often expired tokens are looked for.
const TICK: Duration = Duration::from_millis(500);
/// Most tokens revoked per tick.
const BATCH: usize = 1000;

/// Handle on the background tasks.
pub struct Background {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// The database session observer (see [`crate::observer`]).
    observer: Option<JoinHandle<()>>,
    leases: Option<crate::leases::Worker>,
}

impl Background {
    /// Stops the tasks and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(t) = self.observer.take() {
            let _ = t.await;
        }
        if let Some(w) = self.leases.take() {
            w.shutdown().await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(t) = self.observer.take() {
            t.abort();
        }
    }
}

pub(crate) fn start(inner: Weak<Inner>, leases: crate::leases::Worker) -> Background {
    let (stop, mut stopped) = watch::channel(false);
    let observer = crate::observer::start(inner.clone(), stopped.clone());
    let task = tokio::spawn(async move {
        // The token gauges start from what storage holds (tokens minted before a
        // restart, or by another server on shared storage).
        if let Some(inner) = inner.upgrade() {
            match inner.tokens.rebuild_gauges().await {
                Ok(n) => tracing::debug!(tokens = n, "token gauges rebuilt from storage"),
                Err(e) => {
                    tracing::warn!(error = %e, "token gauges could not be rebuilt from storage")
                }
            }
        }
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
            let Some(inner) = inner.upgrade() else { break };
            // Just-in-time requests: expiry, escalation, grant windows that ended.
            crate::approvals::sweep(&inner).await;
            loop {
                match inner.tokens.revoke_expired(BATCH).await {
                    Ok(ended) => {
                        let n = ended.len();
                        if n > 0 {
                            tracing::debug!(revoked = n, "expired tokens revoked");
                            ended_events(&inner, &ended).await;
                        }
                        if n < BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "token expiry failed; will retry");
                        break;
                    }
                }
            }
        }
    });
    Background {
        stop,
        task: Some(task),
        observer: Some(observer),
        leases: Some(leases),
    }
}

/// The lifecycle events of tokens the worker ended: `expired` for each expired token,
/// `revoked` (reason `parent revoked`) for the children revoked with it. They share one
/// fresh trace id (no request caused them; `action_context` names the expiry worker).
async fn ended_events(inner: &Inner, ended: &[Ended]) {
    let now = inner.clock.unix();
    let trace_id = leash_backend::Request::new_trace_id();
    let evs: Vec<Event> = ended
        .iter()
        .map(|t| {
            let (kind, why) = if t.expired {
                (Kind::Expired, reason::LEASE_EXPIRED)
            } else {
                (Kind::Revoked, reason::PARENT_REVOKED)
            };
            let mut ev = Event::token(kind, &t.entry, now);
            ev.ttl_seconds = 0;
            ev.reason = Some(why);
            ev.trace_id = trace_id.clone();
            ev
        })
        .collect();
    events::emit_logged(inner, &evs, true).await;
}
