//! The real vaultrs client, unmodified, against a leash server: the flows issue 13 found
//! broken (`sys::auth::list` needing `config.token_type`, `LIST auth/token/accessors`,
//! `sys/internal/ui/mounts/<path>` for a least-privilege token) and the everyday ones
//! around them. Usage:
//!
//!     LEASH_ADDR=http://127.0.0.1:8200 LEASH_ROOT_TOKEN=... leash-vaultrs-check
//!
//! Prints one line per check and closes with `vaultrs: N passed, M failed`; exits 1 if
//! any failed. Every name it creates carries a random suffix, so it can share a server.

use std::collections::HashMap;
use std::future::Future;

use rustify_derive::Endpoint;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vaultrs::api::sys::requests::EnableEngineRequest;
use vaultrs::api::token::requests::{CreateTokenRequest, ListAccessorRequest};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::{api, kv2, sys, token};

/// `GET sys/internal/ui/mounts/<path>`, declared the way vaultrs declares its own.
#[derive(Debug, Endpoint)]
#[endpoint(path = "sys/internal/ui/mounts/{self.path}", response = "UiMount")]
struct UiMountRequest {
    #[endpoint(skip)]
    path: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct UiMount {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    options: Option<HashMap<String, String>>,
}

struct Run {
    passed: u32,
    failed: u32,
}

impl Run {
    async fn check<F>(&mut self, name: &str, f: F)
    where
        F: Future<Output = Result<(), String>>,
    {
        match f.await {
            Ok(()) => {
                self.passed += 1;
                println!("ok - {name}");
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL - {name}: {e}");
            }
        }
    }
}

fn client(addr: &str, token: &str) -> VaultClient {
    let settings = VaultClientSettingsBuilder::default()
        .address(addr)
        .token(token)
        .build()
        .expect("client settings");
    VaultClient::new(settings).expect("client")
}

fn err(e: ClientError) -> String {
    format!("{e}: {e:?}")
}

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.into())
    }
}

/// The call failed with this status, and one error string contains `needle`.
fn refused<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
    code: u16,
    needle: &str,
) -> Result<(), String> {
    match r {
        Err(ClientError::APIError { code: c, errors }) if c == code => ensure(
            errors.iter().any(|e| e.contains(needle)),
            format!("errors {errors:?} lack {needle:?}"),
        ),
        other => Err(format!("expected HTTP {code}, got {other:?}")),
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::var("LEASH_ADDR")
        .or_else(|_| std::env::var("VAULT_ADDR"))
        .unwrap_or_default();
    let root_token = std::env::var("LEASH_ROOT_TOKEN").unwrap_or_default();
    if addr.is_empty() || root_token.is_empty() {
        eprintln!("vaultrs check: set LEASH_ADDR and LEASH_ROOT_TOKEN");
        std::process::exit(2);
    }
    let sfx = format!(
        "{:08x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ std::process::id())
            .unwrap_or(0)
    );
    let root = client(&addr, &root_token);
    let db = format!("database-{sfx}");
    let approle = format!("approle-{sfx}");
    let policy = format!("agent-config-{sfx}");
    let key = format!("agent/config-{sfx}");
    let mut run = Run {
        passed: 0,
        failed: 0,
    };

    run.check("sys::health", async {
        let h = sys::health(&root).await.map_err(err)?;
        ensure(h.initialized && !h.sealed, format!("{h:?}"))
    })
    .await;
    run.check("sys::mount::list deserializes every mount", async {
        let m = sys::mount::list(&root).await.map_err(err)?;
        let secret = serde_json::to_value(&m["secret/"]).map_err(|e| e.to_string())?;
        ensure(secret["options"]["version"] == "2", format!("{secret}"))
    })
    .await;
    run.check("sys::mount::enable database with options {}", async {
        sys::mount::enable(
            &root,
            &db,
            "database",
            Some(EnableEngineRequest::builder().options(HashMap::new())),
        )
        .await
        .map_err(err)?;
        let m = sys::mount::list(&root).await.map_err(err)?;
        let e = serde_json::to_value(&m[&format!("{db}/")]).map_err(|e| e.to_string())?;
        ensure(e["options"] == json!({}), format!("options: {e}"))
    })
    .await;
    run.check("sys::auth::list deserializes config.token_type", async {
        sys::auth::enable(&root, &approle, "approle", None)
            .await
            .map_err(err)?;
        let a = sys::auth::list(&root).await.map_err(err)?;
        let e = serde_json::to_value(&a[&format!("{approle}/")]).map_err(|e| e.to_string())?;
        ensure(
            e["config"]["token_type"] == "default-service" && e["type"] == "approle",
            format!("{e}"),
        )
    })
    .await;
    run.check("sys::policy::set read on secret/data/agent/*", async {
        sys::policy::set(
            &root,
            &policy,
            r#"path "secret/data/agent/*" { capabilities = ["read"] }"#,
        )
        .await
        .map_err(err)?;
        let p = sys::policy::read(&root, &policy).await.map_err(err)?;
        ensure(p.rules.contains("secret/data/agent/*"), p.rules)
    })
    .await;
    run.check("kv2::set as root", async {
        kv2::set(&root, "secret", &key, &json!({"model": "small"}))
            .await
            .map_err(err)
            .map(drop)
    })
    .await;
    let mut agent_token = String::new();
    let mut agent_accessor = String::new();
    run.check("token::new least privilege", async {
        let a = token::new(
            &root,
            Some(
                CreateTokenRequest::builder()
                    .policies(vec![policy.clone()])
                    .display_name(format!("agent-{sfx}"))
                    .ttl("10m"),
            ),
        )
        .await
        .map_err(err)?;
        agent_token = a.client_token;
        agent_accessor = a.accessor;
        Ok(())
    })
    .await;
    let agent = client(&addr, &agent_token);
    run.check(
        "least privilege: sys/internal/ui/mounts sees KV v2",
        async {
            let m: UiMount = api::exec_with_result(
                &agent,
                UiMountRequest {
                    path: format!("secret/{key}"),
                },
            )
            .await
            .map_err(err)?;
            let v2 = m
                .options
                .as_ref()
                .and_then(|o| o.get("version"))
                .map(String::as_str);
            ensure(
                m.kind == "kv" && m.path == "secret/" && v2 == Some("2"),
                format!("{m:?}"),
            )
        },
    )
    .await;
    run.check("least privilege: kv2::read", async {
        let v: Value = kv2::read(&agent, "secret", &key).await.map_err(err)?;
        ensure(v["model"] == "small", format!("{v}"))
    })
    .await;
    run.check(
        "least privilege: ui/mounts of a mount it has nothing under is 403",
        async {
            let r: Result<UiMount, _> = api::exec_with_result(
                &agent,
                UiMountRequest {
                    path: format!("{db}/creds/x"),
                },
            )
            .await;
            refused(r, 403, "permission denied")
        },
    )
    .await;
    run.check("least privilege: token::lookup_self", async {
        let t = token::lookup_self(&agent).await.map_err(err)?;
        ensure(t.accessor == agent_accessor, format!("{t:?}"))
    })
    .await;
    run.check(
        "least privilege: LIST auth/token/accessors is refused (sudo)",
        async {
            let r = api::exec_with_result(&agent, ListAccessorRequest::builder().build().unwrap())
                .await;
            refused(r, 403, "permission denied")
        },
    )
    .await;
    run.check("LIST auth/token/accessors lists the live tokens", async {
        let r = api::exec_with_result(&root, ListAccessorRequest::builder().build().unwrap())
            .await
            .map_err(err)?;
        ensure(r.keys.contains(&agent_accessor), format!("{:?}", r.keys))
    })
    .await;
    run.check("token::lookup_accessor", async {
        let t = token::lookup_accessor(&root, &agent_accessor)
            .await
            .map_err(err)?;
        ensure(
            t.display_name == format!("token-agent-{sfx}"),
            t.display_name,
        )
    })
    .await;
    run.check("token::revoke_accessor, then it is not listed", async {
        token::revoke_accessor(&root, &agent_accessor)
            .await
            .map_err(err)?;
        let r = api::exec_with_result(&root, ListAccessorRequest::builder().build().unwrap())
            .await
            .map_err(err)?;
        ensure(!r.keys.contains(&agent_accessor), "still listed")
    })
    .await;
    run.check("a revoked token is refused with the reason", async {
        let r: Result<Value, _> = kv2::read(&agent, "secret", &key).await;
        refused(r, 403, "token is not valid")
    })
    .await;
    run.check("no token: refused with the reason", async {
        let r: Result<Value, _> = kv2::read(&client(&addr, ""), "secret", &key).await;
        refused(r, 403, "no token presented")
    })
    .await;
    run.check("a missing key is 404 saying where", async {
        let r: Result<Value, _> = kv2::read(&root, "secret", &format!("nothing-{sfx}")).await;
        refused(r, 404, &format!("secret/data/nothing-{sfx}"))
    })
    .await;
    run.check("kv2::list", async {
        let keys = kv2::list(&root, "secret", "agent").await.map_err(err)?;
        ensure(keys.contains(&format!("config-{sfx}")), format!("{keys:?}"))
    })
    .await;
    run.check("clean up: delete, unmount, disable", async {
        kv2::delete_metadata(&root, "secret", &key)
            .await
            .map_err(err)?;
        sys::mount::disable(&root, &db).await.map_err(err)?;
        sys::auth::disable(&root, &approle).await.map_err(err)?;
        sys::policy::delete(&root, &policy).await.map_err(err)?;
        let m = sys::mount::list(&root).await.map_err(err)?;
        ensure(!m.contains_key(&format!("{db}/")), "still mounted")
    })
    .await;

    println!("vaultrs: {} passed, {} failed", run.passed, run.failed);
    std::process::exit(i32::from(run.failed != 0));
}
