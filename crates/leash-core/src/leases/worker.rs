//! The expiry worker.

use super::*;

/// The expiry worker's handle.
pub(crate) struct Worker {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Worker {
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Starts the expiry worker. Its first act is to give up the intents of issuances the
/// previous process never finished.
pub(crate) fn start(inner: Weak<Inner>, wake: Arc<Notify>) -> Worker {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        if let Some(i) = inner.upgrade() {
            match i.storage.leases_abandon_pending(i.clock.unix()).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    leases = n,
                    "leases left pending by an interrupted issuance are being revoked"
                ),
                Err(e) => tracing::error!(error = %e, "could not recover pending leases"),
            }
        }
        loop {
            if let Some(i) = inner.upgrade() {
                match revoke_due(&i).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(revoked = n, "leases revoked"),
                    Err(e) => tracing::warn!(error = %e, "lease expiry round failed; will retry"),
                }
            } else {
                break;
            }
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tokio::time::sleep(TICK) => {}
                _ = wake.notified() => {}
            }
        }
    });
    Worker {
        stop,
        task: Some(task),
    }
}
