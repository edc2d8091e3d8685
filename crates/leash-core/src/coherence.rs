//! Cross-server coherence: what this server caches follows changes made through any
//! server sharing the storage.
//!
//! Shared storage ([`Storage::changes`], the PostgreSQL backend) pushes every change of
//! an entry and every update or deletion of a token. This task applies each to the
//! cache that holds it:
//!
//! | change | cache |
//! | --- | --- |
//! | token updated or deleted | the token cache entry (revocation seen at once) |
//! | `sys/policy/<name>` | that policy, re-read; compiled ACLs dropped |
//! | `sys/core/mounts` | the mount table, re-read; the router rebuilt |
//! | `sys/audit/<path>` | the audit device enabled or disabled to match storage |
//! | `mount/<uuid>/<key>` | the engine's own cache (`Backend::storage_changed`) |
//! | lost notifications | everything above, flushed and re-read |
//!
//! A lagging receiver (more than the channel holds) and a re-opened notification
//! connection both arrive as [`Change::Flush`].

use std::sync::{Arc, Weak};

use leash_storage::{Change, Storage};
use tokio::sync::broadcast;

use crate::{Core, Inner, MountTables, SYS_NS};

/// Starts applying `changes` to the caches of the core behind `inner`; ends with it.
pub(crate) fn start(inner: Weak<Inner>, mut changes: broadcast::Receiver<Change>) {
    tokio::spawn(async move {
        loop {
            let change = match changes.recv().await {
                Ok(c) => c,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "coherence: change notifications lagged; flushing caches"
                    );
                    Change::Flush
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = apply(&inner, &change).await {
                // A failed re-read leaves a cache possibly stale: drop what can be dropped
                // and let the next change (or flush) retry.
                tracing::warn!(error = %e, ?change, "coherence: cannot apply a change; caches flushed");
                inner.tokens.forget_all();
                inner.policies.clear_compiled();
            }
        }
    });
}

async fn apply(inner: &Arc<Inner>, change: &Change) -> Result<(), crate::CoreError> {
    match change {
        Change::Token(h) => inner.tokens.forget_one(*h),
        Change::Entry { ns, key } => match ns.as_str() {
            crate::policy_store::NS => inner.policies.reload(key).await?,
            SYS_NS if key == "mounts" => reload_mounts(inner).await?,
            crate::audit_log::NS => crate::audit_log::sync_device(inner, key).await?,
            _ => {
                if let Some(uuid) = ns.strip_prefix("mount/") {
                    for m in inner.router().all() {
                        if m.entry.uuid == uuid {
                            m.backend.storage_changed(Some(key));
                        }
                    }
                }
            }
        },
        Change::Flush => {
            inner.tokens.forget_all();
            inner.policies.reload_all().await?;
            reload_mounts(inner).await?;
            for m in inner.router().all() {
                m.backend.storage_changed(None);
            }
            crate::audit_log::sync_all(inner).await?;
        }
    }
    Ok(())
}

/// Re-reads the mount table and swaps in a router for it (mounts that did not change
/// keep their backends).
pub(crate) async fn reload_mounts(inner: &Arc<Inner>) -> Result<(), crate::CoreError> {
    let _guard = inner.mount_lock.lock().await;
    let tables: MountTables = match inner.storage.get_fresh(SYS_NS, "mounts").await? {
        Some(v) => serde_json::from_slice(&v)
            .map_err(|e| crate::CoreError::internal(format!("mount table is unreadable: {e}")))?,
        None => return Ok(()),
    };
    Core(Arc::clone(inner)).install_router(&tables.mounts)
}

/// Whether `storage` is shared with other servers (its changes are pushed).
pub(crate) fn shared(storage: &Arc<dyn Storage>) -> bool {
    storage.shared()
}
