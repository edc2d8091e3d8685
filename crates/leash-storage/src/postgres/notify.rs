//! Change notifications: the `LISTEN` loop and parsing of payloads.

use super::*;

/// Listens for changes; on a dropped connection reconnects (backing off to 1 s) and
/// publishes [`Change::Flush`], since changes may have been missed meanwhile.
pub(super) async fn listen_loop(
    s: Arc<Shared>,
    target: Target,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect_listener(&target).await {
            Ok((client, mut rx)) => {
                match client
                    .batch_execute(&format!("LISTEN {}", s.sql.channel))
                    .await
                {
                    Ok(()) => {
                        backoff = Duration::from_millis(50);
                        // Heard from now on: the entry cache may be used (and starts empty).
                        s.cache.flush(true);
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        } else {
                            tracing::info!(
                                "storage: change notifications restored; caches flushed"
                            );
                            let _ = s.changes.send(Change::Flush);
                        }
                        while let Some(n) = rx.recv().await {
                            s.stats.notifications.fetch_add(1, Ordering::Relaxed);
                            if let Some(c) = parse_change(n.payload()) {
                                match &c {
                                    Change::Entry { ns, key } => s.cache.evict(ns, key),
                                    Change::Flush => s.cache.flush(true),
                                    Change::Token(_) => {}
                                }
                                let _ = s.changes.send(c);
                            }
                        }
                        // Lost: nothing cached may be trusted until we listen again.
                        s.cache.flush(false);
                        let _ = s.changes.send(Change::Flush);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "storage: LISTEN failed; will retry");
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "storage: notification connection failed; will retry");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

pub(super) fn parse_change(p: &str) -> Option<Change> {
    let (kind, rest) = p.split_at_checked(1)?;
    match kind {
        "e" => {
            let (ns, key) = rest.split_once('\u{1f}')?;
            Some(Change::Entry {
                ns: ns.to_owned(),
                key: key.to_owned(),
            })
        }
        "t" => {
            let bytes = hex::decode(rest).ok()?;
            Some(Change::Token(KeyedHash(bytes.try_into().ok()?)))
        }
        _ => Some(Change::Flush),
    }
}
