//! Gauges that must be right after a restart: the Vault token gauges (rebuilt from
//! storage) and `leash_leases_live` (counted from the lease index); and the per-route
//! latency histogram, whose route label never holds a lease id or a user name.

use std::collections::HashMap;
use std::time::Duration;

use leash_testkit::{Options, TestServer};
use serde_json::json;

use crate::database::PgScratch;
use crate::eventually;

async fn scrape(srv: &TestServer) -> (String, HashMap<String, f64>) {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/sys/metrics?format=prometheus", srv.url()))
        .header("X-Vault-Token", &srv.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    let m = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse::<f64>().ok()?))
        })
        .collect();
    (text, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_lease_gauges_survive_a_restart_and_routes_are_low_cardinality() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/auth/userpass",
            Some(json!({"type": "userpass"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/userpass/users/ai-agent-1",
            Some(json!({"password": "correct horse battery", "token_ttl": "30m"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .call(
            "POST",
            "auth/userpass/login/ai-agent-1",
            None,
            Some(json!({"password": "correct horse battery"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut lease_ids = Vec::new();
    for _ in 0..2 {
        let (s, b) = srv
            .root("GET", &format!("database/creds/{}", pg.role), None)
            .await;
        assert_eq!(s, 200, "{b}");
        lease_ids.push(b["lease_id"].as_str().unwrap().to_owned());
    }
    let live_key = format!(
        "leash_leases_live{{engine=\"database/\",role=\"{}\"}}",
        pg.role
    );
    let (text, before) = scrape(&srv).await;
    assert_eq!(before.get(&live_key), Some(&2.0), "{text}");
    let created = before["vault_token_creation_time{role=\"ai-agent-1\"}"];
    let ttl = before["vault_token_ttl{role=\"ai-agent-1\"}"];
    assert!(ttl > 1700.0 && ttl <= 1800.0, "{ttl}");
    // Routes: mount + first segment; never a lease id, a role's user or a token.
    assert!(
        text.contains("leash_request_duration_seconds_count{route=\"auth/userpass/login\",method=\"update\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("route=\"database/creds\",method=\"read\""),
        "{text}"
    );
    for id in &lease_ids {
        let random = id.rsplit('/').next().unwrap();
        assert!(!text.contains(random), "a lease id in the metrics");
    }
    assert!(
        !text.contains("ai-agent-1\",method"),
        "a user name as a route"
    );

    let root = srv.root_token.clone();
    let (tmp, dir, key) = srv.stop().await;
    let srv = TestServer::start_with(Options {
        dir: Some(dir),
        key: Some(key),
        root_token: Some(root),
        ..Options::default()
    })
    .await;
    // The rebuild runs when the background work starts; poll for it.
    eventually("token gauges rebuilt", Duration::from_secs(30), || async {
        scrape(&srv)
            .await
            .1
            .contains_key("vault_token_creation_time{role=\"ai-agent-1\"}")
    })
    .await;
    let (text, after) = scrape(&srv).await;
    assert_eq!(
        after["vault_token_creation_time{role=\"ai-agent-1\"}"], created,
        "{text}"
    );
    let ttl_after = after["vault_token_ttl{role=\"ai-agent-1\"}"];
    assert!(ttl_after <= ttl && ttl_after > 1600.0, "{ttl_after}");
    assert_eq!(after.get(&live_key), Some(&2.0), "{text}");
    // Counters start again from zero: no issuance is counted twice.
    assert!(
        after
            .get("leash_tokens_issued_total{role=\"ai-agent-1\"}")
            .is_none_or(|n| *n == 0.0),
        "{text}"
    );
    let (_t, _d, _k) = srv.stop().await;
    drop(tmp);
    pg.cleanup().await;
}
