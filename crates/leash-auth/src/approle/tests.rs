//! Unit tests of the AppRole backend over real SQLite storage and a manual clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use leash_backend::{
    Backend, BackendRequest, CoreError, LoginGrant, MountConfig, MountEntry, MountTable, Response,
};
use leash_storage::{Keyring, SqliteStorage, Storage};
use leash_types::{ManualClock, Operation};
use serde_json::{Value, json};

use super::{EXPIRED, INVALID_CREDENTIALS, USED_UP, new_backend};

struct Fixture {
    backend: Arc<dyn Backend>,
    storage: Arc<dyn Storage>,
    clock: ManualClock,
    mount: MountEntry,
    _dir: tempfile::TempDir,
}

const LOCAL: &str = "127.0.0.1:50000";

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::from_master(&Keyring::generate_master()).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path(), keyring).unwrap());
    let clock = ManualClock::new();
    let mount = MountEntry {
        path: "approle/".into(),
        kind: "approle".into(),
        description: String::new(),
        accessor: "auth_approle_test".into(),
        uuid: "0000-approle-test".into(),
        config: MountConfig::default(),
        options: BTreeMap::new(),
        local: false,
        table: MountTable::Auth,
    };
    let backend = new_backend(
        &mount,
        leash_backend::MountStorage::new(Arc::clone(&storage), &mount),
        Arc::new(clock.clone()),
    );
    Fixture {
        backend,
        storage,
        clock,
        mount,
        _dir: dir,
    }
}

async fn call_from(
    backend: &dyn Backend,
    mount: &MountEntry,
    operation: Operation,
    path: &str,
    data: Value,
    from: &str,
) -> Result<Option<Response>, CoreError> {
    let data = data.as_object().cloned().unwrap_or_default();
    let addr: SocketAddr = from.parse().unwrap();
    let req = BackendRequest {
        id: "test",
        operation,
        path,
        data: &data,
        mount,
        caller: None,
        remote_addr: Some(addr),
        token: None,
        grant: None,
    };
    backend.handle(&req).await
}

impl Fixture {
    async fn call(
        &self,
        operation: Operation,
        path: &str,
        data: Value,
    ) -> Result<Option<Response>, CoreError> {
        call_from(
            self.backend.as_ref(),
            &self.mount,
            operation,
            path,
            data,
            LOCAL,
        )
        .await
    }

    async fn data(&self, operation: Operation, path: &str, data: Value) -> Value {
        self.call(operation, path, data)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no response from {path}"))
            .data
            .unwrap()
    }

    async fn invalid(&self, operation: Operation, path: &str, data: Value) -> String {
        invalid(self.call(operation, path, data).await, path)
    }

    async fn login_from(
        &self,
        role_id: &str,
        secret_id: &str,
        from: &str,
    ) -> Result<Option<Response>, CoreError> {
        call_from(
            self.backend.as_ref(),
            &self.mount,
            Operation::Update,
            "login",
            json!({"role_id": role_id, "secret_id": secret_id}),
            from,
        )
        .await
    }

    async fn grant(&self, role_id: &str, secret_id: &str) -> LoginGrant {
        *self
            .login_from(role_id, secret_id, LOCAL)
            .await
            .unwrap()
            .unwrap()
            .login
            .unwrap()
    }

    /// Creates a role and returns its role ID.
    async fn role(&self, name: &str, body: Value) -> String {
        self.call(Operation::Create, &format!("role/{name}"), body)
            .await
            .unwrap();
        self.data(Operation::Read, &format!("role/{name}/role-id"), json!({}))
            .await["role_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Generates a secret ID; returns (secret_id, accessor).
    async fn secret(&self, name: &str, body: Value) -> (String, String) {
        let d = self
            .data(Operation::Update, &format!("role/{name}/secret-id"), body)
            .await;
        (
            d["secret_id"].as_str().unwrap().to_owned(),
            d["secret_id_accessor"].as_str().unwrap().to_owned(),
        )
    }

    /// Every key and value the mount has stored, as text.
    async fn stored_text(&self) -> String {
        let ns = self.mount.storage_ns();
        let mut out = String::new();
        for k in self.storage.list(&ns, "").await.unwrap() {
            let v = self.storage.get(&ns, &k).await.unwrap().unwrap();
            out.push_str(&k);
            out.push('\n');
            out.push_str(&String::from_utf8_lossy(&v));
            out.push('\n');
        }
        out
    }
}

fn invalid(r: Result<Option<Response>, CoreError>, what: &str) -> String {
    match r {
        Err(CoreError::InvalidRequest(m)) => m,
        Err(e) => panic!("expected a 400 from {what}, got {e:?}"),
        Ok(r) => panic!("expected a 400 from {what}, got {r:?}"),
    }
}

#[tokio::test]
async fn role_crud_and_vault_fields() {
    let f = fixture();
    let r = f
        .call(
            Operation::Create,
            "role/Agents",
            json!({
                "token_policies": ["db-read", "kv-read"],
                "token_ttl": "10m",
                "token_max_ttl": "1h",
                "secret_id_ttl": "30m",
                "secret_id_num_uses": 3,
                "secret_id_bound_cidrs": "127.0.0.0/8, 10.0.0.0/8",
                "enable_local_secret_ids": true,
            }),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        r.warnings[0].contains("enable_local_secret_ids"),
        "{:?}",
        r.warnings
    );
    let d = f.data(Operation::Read, "role/agents", json!({})).await;
    assert_eq!(d["token_policies"], json!(["db-read", "kv-read"]));
    assert_eq!(d["token_ttl"], json!(600));
    assert_eq!(d["token_max_ttl"], json!(3600));
    assert_eq!(d["secret_id_ttl"], json!(1800));
    assert_eq!(d["secret_id_num_uses"], json!(3));
    assert_eq!(d["bind_secret_id"], json!(true));
    assert_eq!(
        d["secret_id_bound_cidrs"],
        json!(["127.0.0.0/8", "10.0.0.0/8"])
    );
    assert_eq!(d["local_secret_ids"], json!(false));
    assert!(d.get("role_id").is_none() && d.get("uid").is_none(), "{d}");
    assert_eq!(
        f.backend
            .exists(&req(&f.mount, "role/agents"))
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(
        f.backend
            .exists(&req(&f.mount, "role/other"))
            .await
            .unwrap(),
        Some(false)
    );

    // An update keeps what it does not name.
    f.call(Operation::Update, "role/agents", json!({"token_ttl": 60}))
        .await
        .unwrap();
    let d = f.data(Operation::Read, "role/agents", json!({})).await;
    assert_eq!(
        (d["token_ttl"].clone(), d["secret_id_num_uses"].clone()),
        (json!(60), json!(3))
    );

    let l = f.data(Operation::List, "role/", json!({})).await;
    assert_eq!(l["keys"], json!(["agents"]));
    f.call(Operation::Delete, "role/agents", json!({}))
        .await
        .unwrap();
    assert!(
        f.call(Operation::List, "role/", json!({}))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.call(Operation::Read, "role/agents", json!({}))
            .await
            .unwrap()
            .is_none()
    );
}

fn req<'a>(mount: &'a MountEntry, path: &'a str) -> BackendRequest<'a> {
    static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> = std::sync::OnceLock::new();
    BackendRequest {
        id: "test",
        operation: Operation::Update,
        path,
        data: EMPTY.get_or_init(serde_json::Map::new),
        mount,
        caller: None,
        remote_addr: None,
        token: None,
        grant: None,
    }
}

#[tokio::test]
async fn role_writes_are_validated_and_change_nothing() {
    let f = fixture();
    for (body, want) in [
        (
            json!({"secret_id_num_uses": -1}),
            "secret_id_num_uses cannot be negative",
        ),
        (
            json!({"secret_id_bound_cidrs": ["10.0.0.0/40"]}),
            "secret_id_bound_cidrs",
        ),
        (json!({"secret_id_ttl": "forever"}), "secret_id_ttl"),
        (json!({"bind_secret_id": false}), "at least one constraint"),
        (json!({"token_type": "batch"}), "token_type"),
        (
            json!({"token_ttl": "2h", "token_max_ttl": "1h"}),
            "token_ttl",
        ),
        (json!({"role_id": "has space"}), "role_id"),
        (json!({"bind_secret_id": "maybe"}), "bind_secret_id"),
    ] {
        let m = f.invalid(Operation::Create, "role/r1", body.clone()).await;
        assert!(m.contains(want), "{body}: {m}");
    }
    let m = f.invalid(Operation::Create, "role/..", json!({})).await;
    assert!(m.contains("invalid role name"), "{m}");
    let m = f.invalid(Operation::Create, "role/a%2fb", json!({})).await;
    assert!(m.contains("invalid role name"), "{m}");
    assert!(
        f.call(Operation::List, "role/", json!({}))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.stored_text().await.is_empty(),
        "a refused write stored something"
    );
}

#[tokio::test]
async fn login_grants_the_role_and_secret_ids_are_stored_only_as_hashes() {
    let f = fixture();
    let role_id = f
        .role(
            "summariser",
            json!({"token_policies": "db-read", "token_ttl": "15m", "token_bound_cidrs": ["127.0.0.1/32"]}),
        )
        .await;
    let (secret, accessor) = f
        .secret("summariser", json!({"metadata": "{\"agent\": \"a-17\"}"}))
        .await;
    let g = f.grant(&role_id, &secret).await;
    assert_eq!(g.policies, vec!["db-read"]);
    assert_eq!(g.ttl, Some(Duration::from_secs(900)));
    assert_eq!(g.display_name, "approle");
    assert_eq!(g.alias, role_id);
    assert_eq!(g.role.as_deref(), Some("summariser"));
    assert_eq!(g.bound_cidrs, vec!["127.0.0.1/32"]);
    assert_eq!(
        g.metadata,
        BTreeMap::from([
            ("agent".to_owned(), "a-17".to_owned()),
            ("role_name".to_owned(), "summariser".to_owned())
        ])
    );
    // Unlimited uses: it logs in again.
    f.grant(&role_id, &secret).await;

    let stored = f.stored_text().await;
    assert!(!stored.contains(&secret), "secret ID stored in clear");
    assert!(!stored.contains(&role_id) || stored.matches(&role_id).count() == 1);
    assert!(stored.contains(&accessor));

    // Wrong secret, wrong role ID, and a secret ID of another role: one answer.
    let other_id = f.role("other", json!({})).await;
    let (other_secret, _) = f.secret("other", json!({})).await;
    for (r, s) in [
        (role_id.as_str(), "00000000-0000-0000-0000-000000000000"),
        ("no-such-role-id", secret.as_str()),
        (role_id.as_str(), other_secret.as_str()),
        (other_id.as_str(), secret.as_str()),
    ] {
        let m = invalid(f.login_from(r, s, LOCAL).await, "login");
        assert_eq!(m, INVALID_CREDENTIALS);
        assert!(!m.contains(s) && !m.contains(r));
    }
    let m = invalid(
        f.login_from(&role_id, "", LOCAL).await,
        "login without secret",
    );
    assert_eq!(m, "missing secret_id");
    let m = invalid(
        f.login_from("unknown", "", LOCAL).await,
        "login without secret",
    );
    assert_eq!(
        m, "missing secret_id",
        "unknown role IDs are not told apart"
    );
    let m = f.invalid(Operation::Update, "login", json!({})).await;
    assert_eq!(m, "missing role_id");
    let m = f
        .invalid(
            Operation::Update,
            "login",
            json!({"role_id": 5, "secret_id": "x"}),
        )
        .await;
    assert!(m.contains("expected a string"), "{m}");
    let long = "x".repeat(1000);
    let m = f
        .invalid(
            Operation::Update,
            "login",
            json!({"role_id": role_id, "secret_id": long}),
        )
        .await;
    assert!(m.contains("longer than") && !m.contains("xxxx"), "{m}");
}

#[tokio::test]
async fn used_up_secret_ids_are_refused_and_replays_are_named() {
    let f = fixture();
    let role_id = f.role("r", json!({"secret_id_num_uses": 2})).await;
    let (secret, accessor) = f.secret("r", json!({})).await;
    let d = f
        .data(
            Operation::Update,
            "role/r/secret-id/lookup",
            json!({"secret_id": secret}),
        )
        .await;
    assert_eq!(d["secret_id_num_uses"], json!(2));
    f.grant(&role_id, &secret).await;
    let d = f
        .data(
            Operation::Update,
            "role/r/secret-id-accessor/lookup",
            json!({"secret_id_accessor": accessor}),
        )
        .await;
    assert_eq!(d["secret_id_num_uses"], json!(1));
    f.grant(&role_id, &secret).await;
    let m = invalid(f.login_from(&role_id, &secret, LOCAL).await, "replay");
    assert_eq!(m, USED_UP);
    // Used up: no longer listed or looked up.
    assert!(
        f.call(Operation::List, "role/r/secret-id/", json!({}))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.call(
            Operation::Update,
            "role/r/secret-id/lookup",
            json!({"secret_id": secret})
        )
        .await
        .unwrap()
        .is_none()
    );
    // After the tombstone's day it is simply unknown.
    f.clock.advance(Duration::from_secs(86_401));
    let m = invalid(f.login_from(&role_id, &secret, LOCAL).await, "late replay");
    assert_eq!(m, INVALID_CREDENTIALS);

    // Per-secret num_uses may narrow the role's, not widen it.
    let m = f
        .invalid(
            Operation::Update,
            "role/r/secret-id",
            json!({"num_uses": 3}),
        )
        .await;
    assert!(m.contains("num_uses"), "{m}");
    let (one, _) = f.secret("r", json!({"num_uses": 1})).await;
    f.grant(&role_id, &one).await;
    assert_eq!(
        invalid(f.login_from(&role_id, &one, LOCAL).await, "replay"),
        USED_UP
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_cannot_spend_the_last_use_twice() {
    let f = fixture();
    let role_id = f.role("r", json!({})).await;
    for round in 0..5 {
        let (secret, _) = f.secret("r", json!({"num_uses": 1})).await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let backend = Arc::clone(&f.backend);
            let mount = f.mount.clone();
            let body = json!({"role_id": role_id, "secret_id": secret});
            tasks.push(tokio::spawn(async move {
                call_from(
                    backend.as_ref(),
                    &mount,
                    Operation::Update,
                    "login",
                    body,
                    LOCAL,
                )
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(Some(r)) if r.login.is_some() => ok += 1,
                Err(CoreError::InvalidRequest(m)) => assert_eq!(m, USED_UP),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            ok, 1,
            "round {round}: exactly one login may spend the only use"
        );
    }
}

#[tokio::test]
async fn expired_secret_ids_are_refused() {
    let f = fixture();
    let role_id = f.role("r", json!({"secret_id_ttl": "1m"})).await;
    let m = f
        .invalid(Operation::Update, "role/r/secret-id", json!({"ttl": "2m"}))
        .await;
    assert!(m.contains("cannot be longer"), "{m}");
    let (short, _) = f.secret("r", json!({"ttl": 1})).await;
    let (long, _) = f.secret("r", json!({})).await;
    let d = f
        .data(
            Operation::Update,
            "role/r/secret-id/lookup",
            json!({"secret_id": long}),
        )
        .await;
    assert_eq!(d["secret_id_ttl"], json!(60));
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(
        invalid(f.login_from(&role_id, &short, LOCAL).await, "expired"),
        EXPIRED
    );
    f.grant(&role_id, &long).await;
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(
        invalid(f.login_from(&role_id, &long, LOCAL).await, "expired"),
        EXPIRED
    );
}

#[tokio::test]
async fn cidr_bindings_are_checked_on_the_peer_before_a_use_is_spent() {
    let f = fixture();
    let role_id = f
        .role(
            "r",
            json!({"secret_id_bound_cidrs": ["127.0.0.0/8"], "secret_id_num_uses": 1}),
        )
        .await;
    let m = f
        .invalid(
            Operation::Update,
            "role/r/secret-id",
            json!({"cidr_list": "10.0.0.0/8"}),
        )
        .await;
    assert!(m.contains("subset"), "{m}");
    let (secret, _) = f.secret("r", json!({"cidr_list": "127.0.0.2/32"})).await;
    let d = f
        .data(
            Operation::Update,
            "role/r/secret-id/lookup",
            json!({"secret_id": secret}),
        )
        .await;
    assert_eq!(d["cidr_list"], json!(["127.0.0.2/32"]));
    let m = invalid(
        f.login_from(&role_id, &secret, "127.0.0.1:4000").await,
        "cidr",
    );
    assert_eq!(
        m,
        "source address 127.0.0.1 is not allowed by the secret ID's CIDR list"
    );
    let m = invalid(
        f.login_from(&role_id, &secret, "10.1.2.3:4000").await,
        "cidr",
    );
    assert!(m.contains("10.1.2.3"), "{m}");
    // The refused attempts spent nothing: the one use is still there.
    assert!(
        f.login_from(&role_id, &secret, "127.0.0.2:4000")
            .await
            .is_ok()
    );

    // Without a cidr_list the secret ID inherits the role's.
    let (inherit, _) = f.secret("r", json!({})).await;
    let m = invalid(
        f.login_from(&role_id, &inherit, "192.168.1.1:1").await,
        "cidr",
    );
    assert!(m.contains("192.168.1.1"), "{m}");

    // A role-only (bind_secret_id = false) login is bound by the role's CIDRs.
    let open_id = f
        .role(
            "open",
            json!({"bind_secret_id": false, "secret_id_bound_cidrs": "127.0.0.1/32"}),
        )
        .await;
    let body = json!({"role_id": open_id});
    let ok = call_from(
        f.backend.as_ref(),
        &f.mount,
        Operation::Update,
        "login",
        body.clone(),
        LOCAL,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(ok.login.is_some());
    let m = invalid(
        call_from(
            f.backend.as_ref(),
            &f.mount,
            Operation::Update,
            "login",
            body,
            "10.0.0.1:1",
        )
        .await,
        "cidr",
    );
    assert_eq!(
        m,
        "source address 10.0.0.1 is not allowed by the role's secret_id_bound_cidrs"
    );
    let m = f
        .invalid(Operation::Update, "role/open/secret-id", json!({}))
        .await;
    assert!(m.contains("bind_secret_id"), "{m}");
}

#[tokio::test]
async fn token_bound_cidrs_of_a_secret_id_narrow_the_roles() {
    let f = fixture();
    let role_id = f
        .role("r", json!({"token_bound_cidrs": "127.0.0.0/8"}))
        .await;
    let m = f
        .invalid(
            Operation::Update,
            "role/r/secret-id",
            json!({"token_bound_cidrs": "10.0.0.0/8"}),
        )
        .await;
    assert!(m.contains("subset"), "{m}");
    let (secret, _) = f
        .secret("r", json!({"token_bound_cidrs": "127.0.0.1/32"}))
        .await;
    assert_eq!(
        f.grant(&role_id, &secret).await.bound_cidrs,
        vec!["127.0.0.1/32"]
    );
}

#[tokio::test]
async fn accessors_list_look_up_and_destroy() {
    let f = fixture();
    let role_id = f.role("r", json!({})).await;
    let (s1, a1) = f.secret("r", json!({})).await;
    let (s2, a2) = f.secret("r", json!({"metadata": {"k": "v"}})).await;
    let l = f
        .data(Operation::List, "role/r/secret-id/", json!({}))
        .await;
    let mut want = vec![a1.clone(), a2.clone()];
    want.sort();
    assert_eq!(l["keys"], json!(want));
    let d = f
        .data(
            Operation::Update,
            "role/r/secret-id-accessor/lookup",
            json!({"secret_id_accessor": a2}),
        )
        .await;
    assert_eq!(d["metadata"], json!({"k": "v"}));
    assert_eq!(d["secret_id_accessor"], json!(a2));
    assert_eq!(d["expiration_time"], json!("0001-01-01T00:00:00Z"));
    assert!(!d.to_string().contains(&s2));
    f.call(
        Operation::Update,
        "role/r/secret-id-accessor/destroy",
        json!({"secret_id_accessor": a2}),
    )
    .await
    .unwrap();
    assert_eq!(
        invalid(f.login_from(&role_id, &s2, LOCAL).await, "destroyed"),
        INVALID_CREDENTIALS
    );
    let m = f
        .invalid(
            Operation::Update,
            "role/r/secret-id-accessor/lookup",
            json!({"secret_id_accessor": a2}),
        )
        .await;
    assert!(m.contains("no secret ID with accessor"), "{m}");
    f.call(
        Operation::Update,
        "role/r/secret-id/destroy",
        json!({"secret_id": s1}),
    )
    .await
    .unwrap();
    assert_eq!(
        invalid(f.login_from(&role_id, &s1, LOCAL).await, "destroyed"),
        INVALID_CREDENTIALS
    );
    assert!(
        f.call(Operation::List, "role/r/secret-id/", json!({}))
            .await
            .unwrap()
            .is_none()
    );
    let m = f
        .invalid(Operation::Update, "role/nope/secret-id", json!({}))
        .await;
    assert_eq!(m, "role \"nope\" does not exist");
}

#[tokio::test]
async fn role_ids_can_be_set_and_are_unique() {
    let f = fixture();
    let old = f.role("a", json!({})).await;
    f.role("b", json!({"role_id": "agent-b-role-id"})).await;
    let (secret, _) = f.secret("a", json!({})).await;
    let m = f
        .invalid(
            Operation::Update,
            "role/a/role-id",
            json!({"role_id": "agent-b-role-id"}),
        )
        .await;
    assert_eq!(m, "role_id is already in use by another role");
    f.call(
        Operation::Update,
        "role/a/role-id",
        json!({"role_id": "agent-a-custom"}),
    )
    .await
    .unwrap();
    assert_eq!(
        invalid(f.login_from(&old, &secret, LOCAL).await, "old role id"),
        INVALID_CREDENTIALS
    );
    assert_eq!(
        f.grant("agent-a-custom", &secret).await.alias,
        "agent-a-custom"
    );
    let m = f
        .invalid(
            Operation::Update,
            "role/zzz/role-id",
            json!({"role_id": "x"}),
        )
        .await;
    assert!(m.contains("does not exist"), "{m}");
    assert!(
        f.call(Operation::Read, "role/zzz/role-id", json!({}))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn deleting_a_role_deletes_its_secret_ids() {
    let f = fixture();
    let role_id = f.role("r", json!({"role_id": "fixed-role-id"})).await;
    let (secret, _) = f.secret("r", json!({})).await;
    f.call(Operation::Delete, "role/r", json!({}))
        .await
        .unwrap();
    assert!(
        f.stored_text().await.is_empty(),
        "{}",
        f.stored_text().await
    );
    // The same name and role ID again: the old secret ID does not come back.
    f.role("r", json!({"role_id": "fixed-role-id"})).await;
    assert_eq!(
        invalid(f.login_from(&role_id, &secret, LOCAL).await, "old secret"),
        INVALID_CREDENTIALS
    );
}

#[tokio::test]
async fn custom_secret_ids_and_tidy() {
    let f = fixture();
    let role_id = f.role("r", json!({})).await;
    let m = f
        .invalid(
            Operation::Update,
            "role/r/custom-secret-id",
            json!({"secret_id": "short"}),
        )
        .await;
    assert!(m.contains("at least 16"), "{m}");
    let custom = "my-custom-secret-id-0001";
    let d = f
        .data(
            Operation::Update,
            "role/r/custom-secret-id",
            json!({"secret_id": custom, "ttl": 10}),
        )
        .await;
    assert_eq!(d["secret_id"], json!(custom));
    let m = f
        .invalid(
            Operation::Update,
            "role/r/custom-secret-id",
            json!({"secret_id": custom}),
        )
        .await;
    assert!(m.contains("already exists"), "{m}");
    f.grant(&role_id, custom).await;
    assert!(!f.stored_text().await.contains(custom));

    f.clock.advance(Duration::from_secs(20));
    let t = f.data(Operation::Update, "tidy/secret-id", json!({})).await;
    assert_eq!(t["secret_ids_deleted"], json!(1));
    assert_eq!(t["accessors_deleted"], json!(1));
    assert!(!f.stored_text().await.contains("secret_id/"));
}

#[tokio::test]
async fn routes_and_unauthenticated_paths() {
    let f = fixture();
    assert!(f.backend.routes().is_unauthenticated("login"));
    assert!(!f.backend.routes().is_unauthenticated("role/x"));
    assert!(!f.backend.routes().is_unauthenticated("login/x"));
    assert!(matches!(
        f.call(Operation::Read, "login", json!({})).await,
        Err(CoreError::UnsupportedOperation)
    ));
    assert!(matches!(
        f.call(Operation::Read, "role/x/nothing", json!({})).await,
        Err(CoreError::UnknownPath(_))
    ));
    assert!(matches!(
        f.call(Operation::Delete, "role/x/role-id", json!({})).await,
        Err(CoreError::UnsupportedOperation)
    ));
}

#[tokio::test]
async fn dead_secret_ids_are_swept_as_new_ones_are_created() {
    let f = fixture();
    f.role("r", json!({"secret_id_ttl": 10})).await;
    for _ in 0..10 {
        f.secret("r", json!({})).await;
    }
    f.clock.advance(Duration::from_secs(20));
    let count = |prefix: &'static str| {
        let storage = Arc::clone(&f.storage);
        let ns = f.mount.storage_ns();
        async move { storage.list(&ns, prefix).await.unwrap().len() }
    };
    for _ in 0..53 {
        f.secret("r", json!({})).await;
    }
    assert_eq!(
        count("secret_id/").await,
        63,
        "no sweep before the 64th creation"
    );
    f.secret("r", json!({})).await;
    assert_eq!(count("secret_id/").await, 54);
    assert_eq!(count("accessor/").await, 54);
}

#[tokio::test]
async fn secret_id_metadata_cannot_forge_what_leash_sets() {
    let f = fixture();
    f.role("r", json!({})).await;
    for key in ["role", "role_name"] {
        let m = f
            .invalid(
                Operation::Update,
                "role/r/secret-id",
                json!({"metadata": {key: "admin"}}),
            )
            .await;
        assert!(m.contains("reserved"), "{m}");
    }
}

#[test]
fn a_narrowing_cidr_list_must_lie_inside_the_roles_blocks_in_every_spelling() {
    let within = |inner: &[&str], outer: &[&str]| {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        super::cidrs_within(&s(inner), &s(outer))
    };
    // Inside: a narrower block, the same block, a bare address, one of several blocks.
    assert!(within(&["10.1.0.0/16"], &["10.0.0.0/8"]));
    assert!(within(&["10.0.0.0/8"], &["10.0.0.0/8"]));
    assert!(within(&["10.2.3.4"], &["10.0.0.0/8"]));
    assert!(within(&[" 10.2.3.4/32 "], &["10.0.0.0/8"]));
    assert!(within(
        &["192.168.1.0/24", "10.9.0.0/16"],
        &["10.0.0.0/8", "192.168.0.0/16"]
    ));
    assert!(within(&["fd00:1::/32"], &["fd00::/16"]));
    // An IPv4-mapped IPv6 block is the same addresses as its IPv4 block.
    assert!(within(&["::ffff:10.1.0.0/112"], &["10.0.0.0/8"]));
    // Outside: wider, beside, the other family (either way round), everything, and one
    // block of several.
    assert!(!within(&["10.0.0.0/7"], &["10.0.0.0/8"]));
    assert!(!within(&["11.0.0.0/8"], &["10.0.0.0/8"]));
    assert!(!within(&["fd00::/8"], &["10.0.0.0/8"]));
    assert!(!within(&["10.0.0.0/8"], &["::/0"]));
    assert!(!within(&["0.0.0.0/0"], &["10.0.0.0/8"]));
    assert!(!within(&["10.1.0.0/16", "11.0.0.0/24"], &["10.0.0.0/8"]));
    // Unparseable blocks fail closed, inside or outside.
    assert!(!within(&["10.1.0.0/33"], &["10.0.0.0/8"]));
    assert!(!within(&["ten.one"], &["10.0.0.0/8"]));
    assert!(!within(&["10.1.0.0/16"], &["10.0.0.0/88"]));
}
