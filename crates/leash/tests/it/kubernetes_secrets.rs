//! `kubernetes/*` (the secrets engine) against a local HTTPS server speaking the
//! Kubernetes API's JSON (TokenRequest, ServiceAccount, Role/ClusterRole, bindings, and
//! their deletion), with a certificate from a test CA leash is told to pin. The server
//! keeps the objects it was asked to create and records every request, so the tests see
//! the paths, bodies, `expirationSeconds`, the bearer token, and the deletions at
//! revocation — including a revocation that fails and is retried until it succeeds.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::auth_jwt::support::{FakeServer, Reply, Seen, pki};
use crate::{error, eventually};

/// The engine's own service-account JWT (made up; only compared).
fn engine_jwt() -> String {
    format!("engine-jwt-{}", leash_types::random::base62(24))
}

/// A fake API server: objects it holds, whether deletions fail, and how many tokens it
/// minted.
struct Api {
    srv: FakeServer,
    objects: Arc<Mutex<BTreeSet<String>>>,
    fail_deletes: Arc<AtomicBool>,
}

async fn api() -> Api {
    let objects: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::from([
        // An existing service account.
        "/api/v1/namespaces/agents/serviceaccounts/summariser".to_owned(),
    ])));
    let fail_deletes = Arc::new(AtomicBool::new(false));
    let minted = Arc::new(AtomicUsize::new(0));
    let (o, f) = (Arc::clone(&objects), Arc::clone(&fail_deletes));
    let srv = FakeServer::start(Some(&pki().server), move |r: &Seen| {
        let mut objs = o.lock().unwrap();
        let status = |code: u16, msg: &str| {
            Reply::Json(
                code,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": msg, "code": code}),
            )
        };
        match r.method.as_str() {
            "POST" if r.path.ends_with("/token") => {
                let sa = r.path.trim_end_matches("/token");
                if !objs.contains(sa) {
                    return status(404, "serviceaccounts not found");
                }
                let n = minted.fetch_add(1, Ordering::SeqCst);
                let mut body = r.json();
                body["status"] = json!({
                    "token": format!("k8s-token-{n}-{}", "x".repeat(16)),
                    "expirationTimestamp": "2030-01-01T00:00:00Z",
                });
                Reply::Json(201, body)
            }
            "POST" => {
                let body = r.json();
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let path = format!("{}/{name}", r.path);
                if !objs.insert(path) {
                    return status(409, "already exists");
                }
                Reply::Json(201, body)
            }
            "DELETE" => {
                if f.load(Ordering::SeqCst) {
                    return status(503, "etcd is unavailable");
                }
                if objs.remove(&r.path) {
                    Reply::Json(200, json!({"kind": "Status", "status": "Success"}))
                } else {
                    status(404, "not found")
                }
            }
            _ => status(405, "method not allowed"),
        }
    })
    .await;
    Api {
        srv,
        objects,
        fail_deletes,
    }
}

impl Api {
    fn holds(&self, path: &str) -> bool {
        self.objects.lock().unwrap().contains(path)
    }
}

async fn setup(api: &Api) -> (TestServer, String) {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/kubernetes",
            Some(json!({"type": "kubernetes"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let jwt = engine_jwt();
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/config",
            Some(json!({
                "kubernetes_host": api.srv.url(),
                "kubernetes_ca_cert": pki().ca_pem,
                "service_account_jwt": jwt,
                "disable_local_ca_jwt": true,
            })),
        )
        .await;
    assert!(s == 204 || s == 200, "{s} {b}");
    (srv, jwt)
}

fn requests(api: &Api, method: &str) -> Vec<Seen> {
    api.srv
        .requests()
        .into_iter()
        .filter(|r| r.method == method)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_service_account_gets_a_token_request_with_the_lease_ttl() {
    let api = api().await;
    let (srv, jwt) = setup(&api).await;

    // The configuration reads back without the JWT.
    let (s, b) = srv.root("GET", "kubernetes/config", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["kubernetes_host"], api.srv.url().as_str());
    assert_eq!(b["data"]["disable_local_ca_jwt"], true);
    assert!(!b.to_string().contains(&jwt), "{b}");

    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/roles/summariser",
            Some(json!({
                "allowed_kubernetes_namespaces": ["agents"],
                "service_account_name": "summariser",
                "token_default_ttl": "15m",
                "token_max_ttl": "1h",
                "token_default_audiences": ["leash-api"],
            })),
        )
        .await;
    assert_eq!(s, 200, "a warning says such tokens cannot be revoked: {b}");
    assert!(
        b["warnings"][0]
            .as_str()
            .unwrap()
            .contains("cannot be revoked")
    );
    let (s, b) = srv.root("GET", "kubernetes/roles/summariser", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["token_default_ttl"], 900);
    assert_eq!(
        b["data"]["allowed_kubernetes_namespaces"],
        json!(["agents"])
    );
    let (s, b) = srv.root("LIST", "kubernetes/roles", None).await;
    assert_eq!((s, &b["data"]["keys"]), (200, &json!(["summariser"])));

    // An agent with a policy for the creds path only.
    srv.write_policy(
        "k8s-agent",
        r#"path "kubernetes/creds/summariser" { capabilities = ["update"] }"#,
    )
    .await;
    let agent = srv.token_with(&["k8s-agent"]).await;
    let (s, b) = srv
        .call(
            "POST",
            "kubernetes/creds/summariser",
            Some(&agent),
            Some(json!({"kubernetes_namespace": "agents"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["service_account_name"], "summariser");
    assert_eq!(b["data"]["service_account_namespace"], "agents");
    assert!(
        b["data"]["service_account_token"]
            .as_str()
            .unwrap()
            .starts_with("k8s-token-0-")
    );
    assert_eq!(b["lease_duration"], 900);
    assert_eq!(b["renewable"], false);
    let lease_id = b["lease_id"].as_str().unwrap().to_owned();
    assert!(
        lease_id.starts_with("kubernetes/creds/summariser/"),
        "{lease_id}"
    );

    let posts = requests(&api, "POST");
    assert_eq!(posts.len(), 1, "only the TokenRequest: {posts:?}");
    let tr = &posts[0];
    assert_eq!(
        tr.path,
        "/api/v1/namespaces/agents/serviceaccounts/summariser/token"
    );
    assert_eq!(
        tr.header("authorization"),
        Some(format!("Bearer {jwt}").as_str())
    );
    let body = tr.json();
    assert_eq!(body["kind"], "TokenRequest");
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["spec"]["expirationSeconds"], 900);
    assert_eq!(body["spec"]["audiences"], json!(["leash-api"]));

    // A request's ttl and audiences win; more than token_max_ttl is refused.
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/creds/summariser",
            Some(json!({"kubernetes_namespace": "agents", "ttl": "20m", "audiences": "a,b"})),
        )
        .await;
    assert_eq!((s, &b["lease_duration"]), (200, &json!(1200)), "{b}");
    let last = requests(&api, "POST").pop().unwrap().json();
    assert_eq!(last["spec"]["expirationSeconds"], 1200);
    assert_eq!(last["spec"]["audiences"], json!(["a", "b"]));
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/creds/summariser",
            Some(json!({"kubernetes_namespace": "agents", "ttl": "2h"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("token_max_ttl"), "{b}");

    // Namespaces outside the role's list, and missing ones, are refused before any call.
    let before = api.srv.requests().len();
    for (ns, want) in [
        (json!("kube-system"), "allowed_kubernetes_namespaces"),
        (json!("Bad_NS"), "kubernetes_namespace"),
        (Value::Null, "kubernetes_namespace"),
    ] {
        let (s, b) = srv
            .call(
                "POST",
                "kubernetes/creds/summariser",
                Some(&agent),
                Some(json!({"kubernetes_namespace": ns})),
            )
            .await;
        assert_eq!(s, 400, "{b}");
        assert!(error(&b).contains(want), "{b}");
    }
    assert_eq!(api.srv.requests().len(), before);

    // Revoking the lease deletes nothing: the service account is not leash's.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/revoke",
            Some(json!({"lease_id": lease_id})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    assert!(requests(&api, "DELETE").is_empty());
    assert!(api.holds("/api/v1/namespaces/agents/serviceaccounts/summariser"));

    // The metrics count the engine's leases like database ones.
    let (s, b) = srv.root("GET", "sys/metrics", None).await;
    assert_eq!(s, 200);
    let issued = b["data"]["leases_issued"].to_string();
    assert!(
        issued.contains("kubernetes/") && issued.contains("summariser"),
        "{issued}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_roles_create_objects_and_revocation_deletes_them() {
    let api = api().await;
    let (srv, _jwt) = setup(&api).await;
    let rules =
        json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/roles/pod-reader",
            Some(json!({
                "allowed_kubernetes_namespaces": "*",
                "generated_role_rules": rules.to_string(),
                "token_default_ttl": "5m",
                "extra_labels": {"team": "agents"},
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/creds/pod-reader",
            Some(json!({"kubernetes_namespace": "jobs"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["lease_duration"], 300);
    // Kubernetes refuses tokens shorter than 10 minutes: the warning says the account
    // (and with it the token) ends with the lease.
    assert!(
        b["warnings"][0]
            .as_str()
            .unwrap()
            .contains("deleted when the 300s lease ends"),
        "{b}"
    );
    let sa = b["data"]["service_account_name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sa.starts_with("v-") && sa.contains("-pod-read-"), "{sa}");
    let lease_id = b["lease_id"].as_str().unwrap().to_owned();

    let posts = requests(&api, "POST");
    let paths: Vec<&str> = posts.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/apis/rbac.authorization.k8s.io/v1/namespaces/jobs/roles",
            "/api/v1/namespaces/jobs/serviceaccounts",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/jobs/rolebindings",
            format!("/api/v1/namespaces/jobs/serviceaccounts/{sa}/token").as_str(),
        ]
    );
    let role = posts[0].json();
    assert_eq!(role["kind"], "Role");
    assert_eq!(role["metadata"]["name"], sa.as_str());
    assert_eq!(role["rules"], rules["rules"]);
    assert_eq!(role["metadata"]["labels"]["team"], "agents");
    assert_eq!(
        role["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "leash"
    );
    let binding = posts[2].json();
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa, "namespace": "jobs"}])
    );
    assert_eq!(posts[3].json()["spec"]["expirationSeconds"], 600);

    // Revocation deletes the binding, then the account, then the role.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/revoke",
            Some(json!({"lease_id": lease_id})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let deletes: Vec<String> = requests(&api, "DELETE")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        deletes,
        vec![
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/jobs/rolebindings/{sa}"),
            format!("/api/v1/namespaces/jobs/serviceaccounts/{sa}"),
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/jobs/roles/{sa}"),
        ]
    );
    assert_eq!(
        api.objects.lock().unwrap().len(),
        1,
        "only the pre-existing account is left"
    );

    // An existing ClusterRole bound cluster-wide: a ClusterRoleBinding, no role made.
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/roles/viewer",
            Some(json!({
                "allowed_kubernetes_namespaces": ["jobs"],
                "kubernetes_role_name": "view",
                "kubernetes_role_type": "ClusterRole",
                "token_default_ttl": "10m",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/creds/viewer",
            Some(json!({"kubernetes_namespace": "jobs", "cluster_role_binding": true})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("warnings").is_none_or(Value::is_null), "{b}");
    let sa = b["data"]["service_account_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let posts = requests(&api, "POST");
    let crb = posts
        .iter()
        .find(|r| r.path == "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
        .expect("a ClusterRoleBinding");
    assert_eq!(crb.json()["roleRef"]["kind"], "ClusterRole");
    assert_eq!(crb.json()["roleRef"]["name"], "view");
    assert!(!posts.iter().any(|r| r.path.ends_with("/clusterroles")));
    assert_eq!(
        posts.last().unwrap().json()["spec"]["expirationSeconds"],
        600
    );

    // A role bound in a namespace cannot ask for a cluster-wide binding.
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/creds/pod-reader",
            Some(json!({"kubernetes_namespace": "jobs", "cluster_role_binding": true})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("ClusterRole"), "{b}");

    // Revoke-prefix cleans up the viewer's account and binding.
    let (s, _) = srv
        .root(
            "PUT",
            "sys/leases/revoke-prefix/kubernetes/creds/viewer",
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert!(!api.holds(&format!("/api/v1/namespaces/jobs/serviceaccounts/{sa}")));
    assert!(!api.holds(&format!(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{sa}"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deletion_is_retried_until_the_objects_are_gone() {
    let api = api().await;
    let (srv, _) = setup(&api).await;
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/roles/edit",
            Some(json!({
                "allowed_kubernetes_namespaces": ["jobs"],
                "kubernetes_role_name": "edit",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/creds/edit",
            Some(json!({"kubernetes_namespace": "jobs", "ttl": "2s"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let sa = b["data"]["service_account_name"]
        .as_str()
        .unwrap()
        .to_owned();
    api.fail_deletes.store(true, Ordering::SeqCst);
    // The lease expires; its revocation fails and is recorded, with the API's reason.
    eventually(
        "the revocation is failing",
        Duration::from_secs(20),
        || async {
            let (s, b) = srv.root("GET", "sys/leases/failing", None).await;
            s == 200 && b["data"]["count"] == 1
        },
    )
    .await;
    let (_, b) = srv.root("GET", "sys/leases/failing", None).await;
    let err = b["data"]["leases"][0]["last_error"].as_str().unwrap();
    assert!(
        err.contains("503") && err.contains("etcd is unavailable"),
        "{err}"
    );
    assert!(api.holds(&format!("/api/v1/namespaces/jobs/serviceaccounts/{sa}")));
    // The API recovers: the retry deletes everything and the lease goes.
    api.fail_deletes.store(false, Ordering::SeqCst);
    eventually("the retry succeeds", Duration::from_secs(30), || async {
        srv.core_lease_count().await == 0
    })
    .await;
    assert!(!api.holds(&format!("/api/v1/namespaces/jobs/serviceaccounts/{sa}")));
    assert!(!api.holds(&format!(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/jobs/rolebindings/{sa}"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_and_roles_are_refused_naming_the_field() {
    let api = api().await;
    let (srv, jwt) = setup(&api).await;
    // Pointing the engine elsewhere needs the JWT again.
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/config",
            Some(json!({"kubernetes_host": "https://elsewhere.example:6443"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("service_account_jwt"), "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/config",
            Some(json!({"kubernetes_ca_cert": "not a certificate"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("kubernetes_ca_cert"), "{b}");
    for (body, want) in [
        (
            json!({"service_account_name": "x"}),
            "allowed_kubernetes_namespaces",
        ),
        (
            json!({"allowed_kubernetes_namespaces": ["a"], "service_account_name": "x", "kubernetes_role_name": "y"}),
            "exactly one",
        ),
        (
            json!({"allowed_kubernetes_namespaces": ["a"]}),
            "exactly one",
        ),
        (
            json!({"allowed_kubernetes_namespaces": ["a"], "generated_role_rules": "rules: [oops"}),
            "generated_role_rules",
        ),
        (
            json!({"allowed_kubernetes_namespaces": ["a"], "kubernetes_role_name": "y", "kubernetes_role_type": "Group"}),
            "kubernetes_role_type",
        ),
        (
            json!({"allowed_kubernetes_namespaces": ["a"], "kubernetes_role_name": "y", "name_template": "{{.Secret}}"}),
            "name_template",
        ),
        (
            json!({"allowed_kubernetes_namespaces": ["a"], "kubernetes_role_name": "y", "token_default_ttl": "2h", "token_max_ttl": "1h"}),
            "token_max_ttl",
        ),
    ] {
        let (s, b) = srv.root("POST", "kubernetes/roles/bad", Some(body)).await;
        assert_eq!(s, 400, "{b}");
        assert!(error(&b).contains(want), "{want}: {b}");
    }
    let (s, _) = srv.root("GET", "kubernetes/roles/bad", None).await;
    assert_eq!(s, 404, "nothing was stored");
    // Unknown paths under the mount are not served.
    let (s, _) = srv.root("GET", "kubernetes/whatever", None).await;
    assert_eq!(s, 404);
    // An API server whose certificate is not from the pinned CA is refused.
    let rogue = FakeServer::start(Some(&pki().rogue_server), |_| Reply::Json(200, json!({}))).await;
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/config",
            Some(json!({"kubernetes_host": rogue.url(), "service_account_jwt": jwt})),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    srv.root(
        "POST",
        "kubernetes/roles/summariser",
        Some(json!({"allowed_kubernetes_namespaces": ["agents"], "service_account_name": "summariser"})),
    )
    .await;
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/creds/summariser",
            Some(json!({"kubernetes_namespace": "agents"})),
        )
        .await;
    assert_eq!(s, 502, "{b}");
    assert!(error(&b).contains("kubernetes"), "{b}");
    assert!(!b.to_string().contains(&jwt));
    eventually(
        "the abandoned lease is revoked",
        Duration::from_secs(10),
        || async { srv.core_lease_count().await == 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_metrics_and_the_kill_switch_cover_kubernetes_credentials() {
    let api = api().await;
    let (srv, _) = setup(&api).await;
    let log = srv.dir.join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "kubernetes/roles/edit",
            Some(
                json!({"allowed_kubernetes_namespaces": ["jobs"], "kubernetes_role_name": "edit"}),
            ),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    srv.write_policy(
        "k8s-edit",
        r#"path "kubernetes/creds/edit" { capabilities = ["update"] }"#,
    )
    .await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["k8s-edit"], "ttl": "1h"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().unwrap().to_owned();
    let accessor = b["auth"]["accessor"].as_str().unwrap().to_owned();
    let (s, b) = srv
        .call(
            "POST",
            "kubernetes/creds/edit",
            Some(&token),
            Some(json!({"kubernetes_namespace": "jobs"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let sa = b["data"]["service_account_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let lease_id = b["lease_id"].as_str().unwrap().to_owned();
    let secret = b["data"]["service_account_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(api.holds(&format!("/api/v1/namespaces/jobs/serviceaccounts/{sa}")));

    // The kill switch (by the token's accessor) deletes the account and its binding.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/containment/lock",
            Some(json!({"accessor": accessor, "reason": "test"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["revoked"]["leases"], 1, "{b}");
    assert!(!api.holds(&format!("/api/v1/namespaces/jobs/serviceaccounts/{sa}")));
    assert!(!api.holds(&format!(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/jobs/rolebindings/{sa}"
    )));

    // Lifecycle events: issued, then revoked because contained; the token never logged.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(&secret),
        "the service-account token is in the audit log"
    );
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "lifecycle" && v["lease_id"] == lease_id.as_str())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["agent.credential.issued", "agent.credential.revoked"],
        "{events:?}"
    );
    assert_eq!(events[0]["credential_type"], "kubernetes");
    assert_eq!(events[1]["reason"], "contained");

    // Metrics count them per engine and role.
    let (_, b) = srv.root("GET", "sys/metrics", None).await;
    let issued = &b["data"]["leases_issued"];
    assert!(issued.to_string().contains("\"role\":\"edit\""), "{issued}");
    let revoked = b["data"]["leases_revoked"].to_string();
    assert!(
        revoked.contains("kubernetes/") && revoked.contains("edit"),
        "{revoked}"
    );
}
