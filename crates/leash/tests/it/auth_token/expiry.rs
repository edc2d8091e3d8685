//! Token expiry: a short TTL in real time, and the expiry worker deleting expired
//! tokens (observed with a clock the test sets forwards and back).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leash_testkit::{Options, TestServer};
use leash_types::Clock;
use leash_types::SystemClock;
use serde_json::json;

use super::{alive, secs};
use crate::{client_token, create_token, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_after_their_ttl() {
    let srv = TestServer::start().await;
    let a = create_token(&srv, json!({"policies": ["default"], "ttl": "1s"})).await;
    let t = client_token(&a);
    assert!(secs(&a["lease_duration"]) <= 1);
    eventually("the 1s token is refused", Duration::from_secs(20), || {
        let t = t.clone();
        let srv = &srv;
        async move { !alive(srv, &t).await }
    })
    .await;
    let (s, _) = srv
        .root("POST", "auth/token/lookup", Some(json!({"token": t})))
        .await;
    assert_eq!(s, 403);
}

/// A clock a test can set forwards and back (the core reads time only through it).
#[derive(Clone)]
struct SetClock(Arc<AtomicI64>);

impl SetClock {
    fn new() -> SetClock {
        let now = SystemClock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        SetClock(Arc::new(AtomicI64::new(i64::try_from(now).unwrap())))
    }
    fn set(&self, unix: i64) {
        self.0.store(unix, Ordering::SeqCst);
    }
    fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for SetClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(self.get()).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_worker_deletes_expired_tokens() {
    let clock = SetClock::new();
    let srv = TestServer::start_with(Options {
        clock: Arc::new(clock.clone()),
        ..Options::default()
    })
    .await;
    let start = clock.get();
    let a = create_token(&srv, json!({"policies": ["default"], "ttl": "1h"})).await;
    let t = client_token(&a);
    let keep = create_token(&srv, json!({"policies": ["default"], "ttl": "24h"})).await;
    let keep = client_token(&keep);
    assert!(alive(&srv, &t).await);

    clock.set(start + 2 * 3600);
    assert!(!alive(&srv, &t).await, "expired tokens are refused at once");
    // Deleted, not just refused: with the clock turned back it must stay gone. Give
    // the worker its turns with the clock forward, then look with the clock back.
    eventually(
        "the worker deletes the expired token",
        Duration::from_secs(30),
        || {
            let (clock, t, srv) = (clock.clone(), t.clone(), &srv);
            async move {
                clock.set(start + 2 * 3600);
                tokio::time::sleep(Duration::from_millis(600)).await;
                clock.set(start);
                !alive(srv, &t).await
            }
        },
    )
    .await;
    assert!(alive(&srv, &keep).await, "an unexpired token stays");
}
