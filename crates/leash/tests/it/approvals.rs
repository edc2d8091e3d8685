//! Just-in-time access (`sys/control-group/*`, `identity/group`, `/ui/approvals`) against
//! the real server and the real PostgreSQL: the agent's four-step flow, M-of-N, refusal
//! of self-approval and of outsiders, denial, expiry, auto-approval rules, the grant
//! window capping and revoking leases, webhooks with retry and escalation, and the
//! audit trail of every step.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use leash_testkit::{Options, TestServer};
use leash_types::{Clock as _, ManualClock, SystemClock};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::database::PgScratch;
use crate::{create_token, error, eventually};

/// The agent's policy: the read-only role freely, the read-write role only with a DBA's
/// approval (the issue's `control_group` stanza), `approvals` of them.
fn agent_policy(role: &str, approvals: u32, ttl: &str) -> String {
    format!(
        r#"
path "database/creds/{role}" {{
  capabilities = ["read"]
  control_group = {{
    ttl = "{ttl}"
    factor "dba" {{
      identity {{
        group_names = ["dba"]
        approvals   = {approvals}
      }}
    }}
  }}
}}
path "secret/data/free" {{ capabilities = ["read"] }}
"#
    )
}

/// A server with PostgreSQL behind `database/`, userpass users `alice`, `bob`, `carol`
/// (in group `dba`) and `eve` (not), and an agent token whose policy gates the role.
struct Jit {
    srv: TestServer,
    pg: PgScratch,
    agent: String,
    target: String,
    log: std::path::PathBuf,
}

impl Jit {
    async fn new(approvals: u32, ttl: &str) -> Jit {
        Jit::with(TestServer::start().await, approvals, ttl).await
    }

    async fn with(srv: TestServer, approvals: u32, ttl: &str) -> Jit {
        let log = srv.dir.join("audit.log");
        let (s, b) = srv
            .root(
                "POST",
                "sys/audit/file",
                Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
            )
            .await;
        assert_eq!(s, 204, "{b}");
        let pg = PgScratch::new().await;
        pg.setup(
            &srv,
            "database",
            json!({"default_ttl": "1h", "max_ttl": "2h"}),
        )
        .await;
        let target = format!("database/creds/{}", pg.role);
        srv.write_policy("agent", &agent_policy(&pg.role, approvals, ttl))
            .await;
        let (s, b) = srv
            .root(
                "POST",
                "sys/auth/userpass",
                Some(json!({"type": "userpass"})),
            )
            .await;
        assert_eq!(s, 204, "{b}");
        let mut dba = Vec::new();
        for user in ["alice", "bob", "carol", "eve"] {
            let (s, b) = srv
                .root(
                    "POST",
                    &format!("auth/userpass/users/{user}"),
                    Some(json!({"password": format!("{user}-passphrase"), "token_policies": "agent"})),
                )
                .await;
            assert_eq!(s, 204, "{b}");
            if user != "eve" {
                dba.push(entity_of(&srv, user).await);
            }
        }
        let (s, b) = srv
            .root(
                "POST",
                "identity/group",
                Some(json!({"name": "dba", "member_entity_ids": dba})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let agent = crate::client_token(
            &create_token(
                &srv,
                json!({"policies": ["agent"], "display_name": "agent-7", "ttl": "24h"}),
            )
            .await,
        );
        Jit {
            srv,
            pg,
            agent,
            target,
            log,
        }
    }

    async fn login(&self, user: &str) -> String {
        let (s, b) = self
            .srv
            .call(
                "POST",
                &format!("auth/userpass/login/{user}"),
                None,
                Some(json!({"password": format!("{user}-passphrase")})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    async fn ask(&self, token: &str, minutes: u64) -> (u16, Value) {
        self.srv
            .call(
                "POST",
                "sys/control-group/request",
                Some(token),
                Some(json!({
                    "agent_id": "agent-7",
                    "operation": "read",
                    "target_resource": self.target,
                    "justification": "apply the approved schema migration",
                    "requested_duration_minutes": minutes,
                    "timestamp": "2026-11-29T10:00:00Z",
                })),
            )
            .await
    }

    async fn ask_ok(&self, minutes: u64) -> String {
        let (s, b) = self.ask(&self.agent, minutes).await;
        assert_eq!(s, 200, "{b}");
        b["request_id"].as_str().unwrap().to_owned()
    }

    async fn status(&self, token: &str, id: &str) -> Value {
        let (s, b) = self
            .srv
            .call(
                "GET",
                &format!("sys/control-group/request/{id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    async fn decide(&self, user: &str, id: &str, action: &str, comment: &str) -> (u16, Value) {
        let t = self.login(user).await;
        self.srv
            .call(
                "POST",
                &format!("sys/control-group/request/{id}/{action}"),
                Some(&t),
                Some(json!({ "comment": comment })),
            )
            .await
    }

    async fn creds(&self, token: &str) -> (u16, Value) {
        self.srv.call("GET", &self.target, Some(token), None).await
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `approval.*` audit events of request `id`, in order.
    fn steps(&self, id: &str) -> Vec<String> {
        self.audit()
            .into_iter()
            .filter(|e| e["type"] == "approval" && e["request_id"] == id)
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn done(self) {
        self.pg.cleanup().await;
    }
}

async fn entity_of(srv: &TestServer, user: &str) -> String {
    let (_, b) = srv.root("GET", "sys/auth", None).await;
    let accessor = b["data"]["userpass/"]["accessor"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = srv
        .root(
            "POST",
            "identity/lookup/entity",
            Some(json!({"alias_name": user, "alias_mount_accessor": accessor})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["data"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_four_step_flow_grants_one_window_capped_credential_and_completes() {
    let j = Jit::new(1, "10m").await;

    // Without a grant: 403 that says an approval is needed and how to ask.
    let (s, b) = j.creds(&j.agent).await;
    assert_eq!(s, 403, "{b}");
    let e = error(&b);
    assert!(e.contains("requires an approval"), "{e}");
    assert!(e.contains("sys/control-group/request"), "{e}");

    // 1. Ask: the top-level request_id is the access request's id.
    let (s, b) = j.ask(&j.agent, 30).await;
    assert_eq!(s, 200, "{b}");
    let id = b["request_id"].as_str().unwrap().to_owned();
    assert_eq!(b["data"]["request_id"], id.as_str());
    assert_eq!(b["approved"], false);
    assert_eq!(b["data"]["status"], "pending");
    // 30 minutes asked, the control group allows 10.
    assert_eq!(b["data"]["grant_duration_seconds"], 600);
    assert!(
        b["warnings"][0]
            .as_str()
            .unwrap()
            .contains("at most 10 min"),
        "{b}"
    );

    // 2. Poll: not yet.
    let b = j.status(&j.agent, &id).await;
    assert_eq!(b["approved"], false);
    assert_eq!(b["data"]["approvals"], 0);
    assert_eq!(b["data"]["approvals_needed"], 1);
    let (s, _) = j.creds(&j.agent).await;
    assert_eq!(s, 403, "a pending request grants nothing");

    // Someone outside the group cannot approve; alice (dba) can.
    let (s, b) = j.decide("eve", &id, "approve", "sure").await;
    assert_eq!(s, 403, "{b}");
    assert!(error(&b).contains("dba"), "{b}");
    let (s, b) = j.decide("alice", &id, "approve", "ticket DB-42").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["approved"], true);
    let b = j.status(&j.agent, &id).await;
    assert_eq!(b["approved"], true);
    assert_eq!(b["data"]["status"], "approved");
    assert_eq!(b["data"]["decided_by"]["name"], "userpass-alice");
    assert_eq!(b["data"]["decided_by"]["comment"], "ticket DB-42");
    assert!(b["data"]["grant_expires_at"].is_string());

    // 3. The credential: its lease ends no later than the window; it works.
    let (s, b) = j.creds(&j.agent).await;
    assert_eq!(s, 200, "{b}");
    let ttl = b["lease_duration"].as_u64().unwrap();
    assert!(ttl <= 600 && ttl > 500, "lease of {ttl}s in a 600s window");
    let user = b["data"]["username"].as_str().unwrap().to_owned();
    let pass = b["data"]["password"].as_str().unwrap().to_owned();
    let lease = b["lease_id"].as_str().unwrap().to_owned();
    let conn = j.pg.login(&user, &pass).await;
    conn.simple_query("SELECT 1").await.unwrap();
    drop(conn);
    // The lease cannot be renewed past the window.
    let (s, b) = j
        .srv
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&j.agent),
            Some(json!({"lease_id": lease, "increment": 7200})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["lease_duration"].as_u64().unwrap() <= 600, "{b}");

    // Single use: a second read needs a new approval.
    let (s, b) = j.creds(&j.agent).await;
    assert_eq!(s, 403, "{b}");
    assert!(error(&b).contains("already used"), "{b}");

    // 4. Complete: the window ends now and the credential is revoked.
    let (s, b) = j
        .srv
        .call(
            "POST",
            &format!("sys/control-group/request/{id}/complete"),
            Some(&j.agent),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["status"], "completed");
    assert_eq!(b["approved"], false);
    assert!(!j.pg.role_exists(&user).await, "role dropped at completion");
    let (s, _) = j
        .srv
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(&j.srv.root_token),
            Some(json!({"lease_id": lease})),
        )
        .await;
    assert_eq!(s, 400, "lease gone");

    // Every step is audited, in order, under the request's id and trace.
    let steps = j.steps(&id);
    assert_eq!(
        steps,
        [
            "approval.requested",
            "approval.refused",
            "approval.approved",
            "approval.granted",
            "approval.completed"
        ]
    );
    let entries: Vec<Value> = j
        .audit()
        .into_iter()
        .filter(|e| e["type"] == "approval" && e["request_id"] == id.as_str())
        .collect();
    let trace = entries[0]["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert!(entries.iter().all(|e| e["trace_id"] == trace));
    assert_eq!(entries[2]["actor"]["name"], "userpass-alice");
    assert_eq!(entries[2]["details"]["comment"], "ticket DB-42");
    // Lease ids are HMAC'd, the agent's accessor too.
    let granted = &entries[3]["lease_ids"][0];
    assert!(
        granted.as_str().unwrap().starts_with("hmac-sha256:"),
        "{granted}"
    );
    assert!(!j.audit().iter().any(|e| e.to_string().contains(&pass)));
    j.done().await;
}

#[tokio::test]
async fn m_of_n_counts_distinct_approvers_and_never_the_requester() {
    let j = Jit::new(2, "15m").await;
    // carol is a DBA and asks for herself: she cannot approve her own request.
    let carol = j.login("carol").await;
    let (s, b) = j.ask(&carol, 5).await;
    assert_eq!(s, 200, "{b}");
    let id = b["request_id"].as_str().unwrap().to_owned();
    let (s, b) = j.decide("carol", &id, "approve", "mine").await;
    assert_eq!(s, 403, "{b}");
    assert!(error(&b).contains("your own"), "{b}");

    let (s, b) = j.decide("alice", &id, "approve", "one").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["approved"], false);
    assert_eq!(b["data"]["approvals"], 1);
    assert_eq!(b["data"]["approvals_needed"], 2);
    // The same approver twice does not make two.
    let (s, b) = j.decide("alice", &id, "approve", "again").await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = j.creds(&carol).await;
    assert_eq!(s, 403);
    let (s, b) = j.decide("bob", &id, "approve", "two").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["approved"], true);
    let (s, b) = j.creds(&carol).await;
    assert_eq!(s, 200, "{b}");
    // Another token of the same person does not hold the grant: it is bound to the token.
    let carol2 = j.login("carol").await;
    let (s, _) = j.creds(&carol2).await;
    assert_eq!(s, 403);
    // A stranger cannot read the request; the approvers and the requester can.
    let (s, _) = j
        .srv
        .call(
            "GET",
            &format!("sys/control-group/request/{id}"),
            Some(&j.agent),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let bob = j.login("bob").await;
    assert_eq!(j.status(&bob, &id).await["data"]["approvals"], 2);
    j.done().await;
}

#[tokio::test]
async fn a_denial_ends_the_request() {
    let j = Jit::new(2, "15m").await;
    let id = j.ask_ok(5).await;
    let (s, b) = j.decide("alice", &id, "deny", "").await;
    assert_eq!(s, 400, "a denial needs a reason: {b}");
    let (s, b) = j
        .decide("alice", &id, "deny", "not during the freeze")
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["status"], "denied");
    let (s, b) = j.decide("bob", &id, "approve", "").await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("denied"), "{b}");
    let (s, _) = j.creds(&j.agent).await;
    assert_eq!(s, 403);
    // The late approval is refused, and the refusal is on record too.
    assert_eq!(
        j.steps(&id),
        ["approval.requested", "approval.denied", "approval.refused"]
    );
    j.done().await;
}

#[tokio::test]
async fn pending_requests_expire_and_grant_windows_revoke_at_their_end() {
    let clock = ManualClock::new();
    let srv = TestServer::start_with(Options {
        clock: Arc::new(clock.clone()),
        ..Options::default()
    })
    .await;
    let j = Jit::with(srv, 1, "10m").await;
    let (s, b) = j.srv.root("GET", "sys/control-group/config", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["request_ttl_seconds"], 3600, "default: one hour");

    // Nobody decides for an hour: expired.
    let stale = j.ask_ok(5).await;
    clock.advance(Duration::from_secs(3601));
    eventually("the request expires", Duration::from_secs(20), || async {
        j.status(&j.agent, &stale).await["data"]["status"] == "expired"
    })
    .await;
    let (s, b) = j.decide("alice", &stale, "approve", "too late").await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("expired"), "{b}");

    // An approved window of 5 minutes: at its end the credential is revoked.
    let id = j.ask_ok(5).await;
    let (s, b) = j.decide("alice", &id, "approve", "ok").await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = j.creds(&j.agent).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["lease_duration"].as_u64().unwrap() <= 300);
    let user = b["data"]["username"].as_str().unwrap().to_owned();
    assert!(j.pg.role_exists(&user).await);
    clock.advance(Duration::from_secs(301));
    eventually(
        "the window closes and the role is dropped",
        Duration::from_secs(30),
        || async { !j.pg.role_exists(&user).await },
    )
    .await;
    eventually(
        "the request is completed",
        Duration::from_secs(20),
        || async { j.status(&j.agent, &id).await["data"]["status"] == "completed" },
    )
    .await;
    let b = j.status(&j.agent, &id).await;
    assert_eq!(b["data"]["closed_reason"], "window ended");
    assert!(j.steps(&stale).contains(&"approval.expired".to_owned()));
    // The status flips to completed first; the sweep then revokes what the window
    // issued and writes the completion event.
    eventually(
        "the completion is audited",
        Duration::from_secs(20),
        || async { j.steps(&id).contains(&"approval.completed".to_owned()) },
    )
    .await;

    // Finished requests are kept 30 days, then deleted (the audit trail keeps them).
    let root = j.srv.root_token.clone();
    clock.advance(Duration::from_secs(31 * 86_400));
    for rid in [&stale, &id] {
        eventually(
            "old requests are pruned",
            Duration::from_secs(20),
            || async {
                j.srv
                    .call(
                        "GET",
                        &format!("sys/control-group/request/{rid}"),
                        Some(&root),
                        None,
                    )
                    .await
                    .0
                    == 404
            },
        )
        .await;
    }
    j.done().await;
}

#[tokio::test]
async fn pre_approval_rules_approve_low_risk_requests_at_once() {
    let j = Jit::new(1, "1h").await;
    let prefix = j.target.rsplit_once('/').unwrap().0.to_owned();
    let (s, b) = j
        .srv
        .root(
            "POST",
            "sys/control-group/rules/short-reads",
            Some(json!({
                "path": format!("{prefix}/*"),
                "operations": ["read"],
                "max_duration_minutes": 15,
                "uses": 0,
                "description": "short reads are low risk",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    // Within the rule: approved at once, by the rule, audited.
    let (s, b) = j.ask(&j.agent, 10).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["approved"], true);
    assert_eq!(b["data"]["rule"], "short-reads");
    assert_eq!(b["data"]["decided_by"]["name"], "rule:short-reads");
    let id = b["request_id"].as_str().unwrap().to_owned();
    // uses = 0: any number of reads within the window.
    for _ in 0..2 {
        let (s, b) = j.creds(&j.agent).await;
        assert_eq!(s, 200, "{b}");
        assert!(b["lease_duration"].as_u64().unwrap() <= 600);
    }
    assert_eq!(
        j.steps(&id)[..2],
        ["approval.requested", "approval.auto_approved"]
    );
    let entries: Vec<Value> = j
        .audit()
        .into_iter()
        .filter(|e| e["request_id"] == id.as_str())
        .collect();
    assert_eq!(entries[0]["status"], "pending");
    assert_eq!(entries[1]["status"], "approved");
    assert_eq!(entries[1]["rule"], "short-reads");
    // Longer than the rule allows: a human decides.
    let (s, b) = j.ask(&j.agent, 30).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["approved"], false);
    // A time window that excludes now: a human decides.
    let now_min = (SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400)
        / 60;
    let start = (now_min + 120) % 1440;
    let end = (now_min + 180) % 1440;
    let (s, b) = j
        .srv
        .root(
            "POST",
            "sys/control-group/rules/short-reads",
            Some(json!({
                "path": format!("{prefix}/*"), "operations": ["read"], "max_duration_minutes": 15,
                "time_window": format!("{:02}:{:02}-{:02}:{:02}", start / 60, start % 60, end / 60, end % 60),
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = j.ask(&j.agent, 10).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["approved"], false, "outside the rule's hours");
    // Rules are sudo-only and validated.
    let (s, _) = j
        .srv
        .call("LIST", "sys/control-group/rules", Some(&j.agent), None)
        .await;
    assert_eq!(s, 403);
    let (s, b) = j
        .srv
        .root(
            "POST",
            "sys/control-group/rules/bad",
            Some(json!({"path": "x", "operations": ["fly"], "max_duration_minutes": 5})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(error(&b).contains("unknown operation"), "{b}");
    assert!(!error(&b).contains("fly"), "the value is not echoed: {b}");
    let (_, b) = j.srv.root("LIST", "sys/control-group/rules", None).await;
    assert_eq!(b["data"]["keys"], json!(["short-reads"]));
    j.done().await;
}

#[tokio::test]
async fn an_approval_never_widens_a_policy_and_input_is_checked() {
    let j = Jit::new(1, "1h").await;
    let ask = |body: Value| {
        let srv = &j.srv;
        let t = j.agent.clone();
        async move {
            srv.call("POST", "sys/control-group/request", Some(&t), Some(body))
                .await
        }
    };
    let base = json!({
        "agent_id": "a", "operation": "read", "target_resource": j.target,
        "justification": "why", "requested_duration_minutes": 5,
    });
    // A path the policies never allow: refused at once.
    let mut b = base.clone();
    b["target_resource"] = json!("database/creds/admin");
    let (s, r) = ask(b).await;
    assert_eq!(s, 403, "{r}");
    assert!(error(&r).contains("cannot grant more"), "{r}");
    // An operation the policy does not grant on the controlled path is the agent's
    // intent: the grant is bound to what the policy gates there (read), never more.
    let mut b = base.clone();
    b["operation"] = json!("delete");
    let (s, r) = ask(b).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["operation"], "delete");
    assert_eq!(r["granted_operations"], json!(["read"]));
    // On a path the policy does not allow at all, an intent gets nothing either.
    let mut b = base.clone();
    b["operation"] = json!("production write");
    b["target_resource"] = json!("database/creds/admin");
    let (s, r) = ask(b).await;
    assert_eq!(s, 403, "{r}");
    assert!(error(&r).contains("production write"), "{r}");
    // A path that needs no approval: told to call it directly.
    let mut b = base.clone();
    b["target_resource"] = json!("secret/data/free");
    let (s, r) = ask(b).await;
    assert_eq!(s, 400, "{r}");
    assert!(error(&r).contains("does not need an approval"), "{r}");
    for (field, value, needle) in [
        ("operation", json!("x".repeat(65)), "operation is longer"),
        ("operation", json!(" "), "operation"),
        (
            "requested_duration_minutes",
            json!(0),
            "requested_duration_minutes",
        ),
        (
            "requested_duration_minutes",
            json!(100000),
            "requested_duration_minutes",
        ),
        ("justification", json!(""), "justification"),
        (
            "target_resource",
            json!("a/../b"),
            "not a valid request path",
        ),
        (
            "target_resource",
            json!("secret//data/x"),
            "not a valid request path",
        ),
        (
            "target_resource",
            json!("secret/data/x?version=1"),
            "not a valid request path",
        ),
        (
            "target_resource",
            json!("secret/dat%61/x"),
            "not a valid request path",
        ),
        (
            "target_resource",
            json!("secret/data/x/"),
            "not a valid request path",
        ),
        (
            "target_resource",
            json!("/secret/data/x"),
            "not a valid request path",
        ),
        (
            "target_resource",
            json!(" secret/data/x"),
            "not a valid request path",
        ),
        (
            "target_resource",
            json!("secret/data/\nAPPROVED"),
            "not a valid request path",
        ),
    ] {
        let mut b = base.clone();
        b[field] = value;
        let (s, r) = ask(b).await;
        assert_eq!(s, 400, "{field}: {r}");
        assert!(error(&r).contains(needle), "{field}: {r}");
    }
    let mut b = base.clone();
    b.as_object_mut().unwrap().remove("target_resource");
    let (s, r) = ask(b).await;
    assert_eq!(s, 400);
    assert!(error(&r).contains("target_resource"), "{r}");
    // Unknown ids are 404; malformed ones too.
    let (s, _) = j
        .srv
        .call(
            "GET",
            "sys/control-group/request/00000000-0000-4000-8000-000000000000",
            Some(&j.agent),
            None,
        )
        .await;
    assert_eq!(s, 404);
    j.done().await;
}

/// A local webhook receiver: records each POSTed JSON body per path; answers 500 to the
/// first `fail_first` requests (to prove retries), 200 after.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let seen = Arc::clone(&got);
        tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                n += 1;
                let fail = n <= fail_first;
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let (path, body) = loop {
                        let k = sock.read(&mut chunk).await.unwrap_or(0);
                        if k == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                            break (path, buf[end + 4..end + 4 + len].to_vec());
                        }
                    };
                    let status = if fail {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let _ = sock
                        .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes())
                        .await;
                    if !fail && let Ok(v) = serde_json::from_slice(&body) {
                        seen.lock().unwrap().push((path, v));
                    }
                });
            }
        });
        Receiver { url, got }
    }

    fn events(&self, path: &str) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v["leash"]["event"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn payload(&self, path: &str, event: &str) -> Value {
        self.got
            .lock()
            .unwrap()
            .iter()
            .find(|(p, v)| p == path && v["leash"]["event"] == event)
            .map(|(_, v)| v.clone())
            .unwrap()
    }
}

#[tokio::test]
async fn webhooks_announce_requests_and_decisions_retry_and_escalate() {
    let j = Jit::new(1, "1h").await;
    let rx = Receiver::start(1).await;
    let (s, b) = j
        .srv
        .root(
            "POST",
            "sys/control-group/config",
            Some(json!({
                "webhook_urls": [format!("{}/hook", rx.url)],
                "escalation_url": format!("{}/escalate", rx.url),
                "escalate_after": "2s",
                "ui_base_url": "https://leash.example.com",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = j
        .srv
        .root(
            "POST",
            "sys/control-group/config",
            Some(json!({"webhook_urls": ["ftp://x"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");

    let id = j.ask_ok(5).await;
    // The first delivery is refused (500): it is retried.
    eventually(
        "the new request is announced",
        Duration::from_secs(30),
        || async { rx.events("/hook").contains(&"requested".to_owned()) },
    )
    .await;
    let p = rx.payload("/hook", "requested");
    let text = p["text"].as_str().unwrap();
    assert!(
        text.contains("agent-7") && text.contains(&j.target),
        "{text}"
    );
    assert!(
        text.contains("https://leash.example.com/ui/approvals"),
        "{text}"
    );
    assert_eq!(p["leash"]["request_id"], id.as_str());
    assert!(p["attachments"][0]["fields"].as_array().unwrap().len() >= 5);
    assert!(!p.to_string().contains(&j.agent), "no token in payloads");
    eventually(
        "no decision for 2s: escalated",
        Duration::from_secs(30),
        || async { rx.events("/escalate").contains(&"escalated".to_owned()) },
    )
    .await;
    assert_eq!(rx.events("/escalate").len(), 1, "escalated once");
    let (s, b) = j.decide("alice", &id, "approve", "go").await;
    assert_eq!(s, 200, "{b}");
    eventually(
        "the decision is announced",
        Duration::from_secs(30),
        || async { rx.events("/hook").contains(&"approved".to_owned()) },
    )
    .await;
    assert_eq!(rx.payload("/hook", "approved")["leash"]["comment"], "go");
    assert!(j.steps(&id).contains(&"approval.escalated".to_owned()));
    j.done().await;
}

#[tokio::test]
async fn chat_markup_written_by_an_agent_reaches_the_webhook_inert() {
    let j = Jit::new(1, "1h").await;
    let rx = Receiver::start(0).await;
    let (s, b) = j
        .srv
        .root(
            "POST",
            "sys/control-group/config",
            Some(json!({"webhook_urls": [format!("{}/hook", rx.url)]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = j
        .srv
        .call(
            "POST",
            "sys/control-group/request",
            Some(&j.agent),
            Some(json!({
                "agent_id": "<!channel> <@U123>",
                "operation": "read",
                "target_resource": j.target,
                "justification": "see <http://evil.example/x|the runbook> & co\n*APPROVED by dba*\r\n> quoted",
                "requested_duration_minutes": 5,
            })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let id = b["request_id"].as_str().unwrap().to_owned();
    eventually(
        "the request is announced",
        Duration::from_secs(30),
        || async { rx.events("/hook").contains(&"requested".to_owned()) },
    )
    .await;
    let p = rx.payload("/hook", "requested");
    let (s, b) = j
        .decide("alice", &id, "approve", "<!here> ok\n*DENIED*")
        .await;
    assert_eq!(s, 200, "{b}");
    eventually(
        "the decision is announced",
        Duration::from_secs(30),
        || async { rx.events("/hook").contains(&"approved".to_owned()) },
    )
    .await;
    let d = rx.payload("/hook", "approved");
    for p in [&p, &d] {
        assert_eq!(p["mrkdwn"], false, "{p}");
        let mut shown = vec![p["text"].as_str().unwrap().to_owned()];
        for f in p["attachments"][0]["fields"].as_array().unwrap() {
            shown.push(f["value"].as_str().unwrap().to_owned());
        }
        for t in &shown {
            assert!(!t.contains('<') && !t.contains('>'), "{t}");
            assert!(!t.contains('\n') && !t.contains('\r'), "{t}");
        }
    }
    let text = p["text"].as_str().unwrap();
    assert!(text.contains("&lt;!channel&gt; &lt;@U123&gt;"), "{text}");
    assert!(
        text.contains("&lt;http://evil.example/x|the runbook&gt; &amp; co *APPROVED by dba*"),
        "{text}"
    );
    assert!(
        d["text"]
            .as_str()
            .unwrap()
            .contains("(&lt;!here&gt; ok *DENIED*)"),
        "{d}"
    );
    // Machines get the values as written.
    assert_eq!(p["leash"]["agent_id"], "<!channel> <@U123>");
    j.done().await;
}

#[tokio::test]
async fn identity_groups_crud_and_entity_lookup_matches_logins() {
    let srv = TestServer::start().await;
    let (s, _) = srv
        .root(
            "POST",
            "sys/auth/userpass",
            Some(json!({"type": "userpass"})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .root(
            "POST",
            "auth/userpass/users/alice",
            Some(json!({"password": "alice-passphrase"})),
        )
        .await;
    assert_eq!(s, 204);
    let id = entity_of(&srv, "alice").await;
    let (_, b) = srv
        .call(
            "POST",
            "auth/userpass/login/alice",
            None,
            Some(json!({"password": "alice-passphrase"})),
        )
        .await;
    assert_eq!(
        b["auth"]["entity_id"],
        id.as_str(),
        "lookup gives the login's entity id"
    );

    let (s, b) = srv
        .root(
            "POST",
            "identity/group",
            Some(json!({"name": "dba", "member_entity_ids": [id]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let gid = b["data"]["id"].as_str().unwrap().to_owned();
    let (s, b) = srv.root("GET", "identity/group/name/dba", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["id"], gid.as_str());
    assert_eq!(b["data"]["member_entity_ids"], json!([id]));
    let (_, b) = srv.root("LIST", "identity/group/name", None).await;
    assert_eq!(b["data"]["keys"], json!(["dba"]));
    let (_, b) = srv.root("LIST", "identity/group/id", None).await;
    assert_eq!(b["data"]["keys"], json!([gid]));
    // Update by name keeps the id.
    let (s, b) = srv
        .root(
            "POST",
            "identity/group/name/dba",
            Some(json!({"member_entity_ids": []})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["id"], gid.as_str());
    let (_, b) = srv
        .root("GET", &format!("identity/group/id/{gid}"), None)
        .await;
    assert_eq!(b["data"]["member_entity_ids"], json!([]));
    // Validation.
    let (s, b) = srv
        .root("POST", "identity/group", Some(json!({"name": "x y"})))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "identity/group",
            Some(json!({"name": "g", "member_entity_ids": ["<script>"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // Ordinary tokens cannot manage groups.
    let t = srv.token_with(&["default"]).await;
    let (s, _) = srv
        .call(
            "POST",
            "identity/group",
            Some(&t),
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv
        .root("DELETE", &format!("identity/group/id/{gid}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv.root("GET", "identity/group/name/dba", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn the_approval_page_logs_in_lists_and_decides_with_csrf_protection() {
    let j = Jit::new(1, "1h").await;
    let id = j.ask_ok(5).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = j.srv.url();
    let page = http
        .get(format!("{base}/ui/approvals"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(page.text().await.unwrap().contains("name=\"password\""));

    let bad = http
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("mount=userpass&username=alice&password=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    let ok = http
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("mount=userpass&username=alice&password=alice-passphrase")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let html = http
        .get(format!("{base}/ui/approvals"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(&format!("id=\"req-{id}\"")), "{html}");
    assert!(html.contains("apply the approved schema migration"));
    assert!(!html.contains("lsh."), "no token on the page");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();

    // Without the CSRF token, or from another origin: refused, nothing decided.
    let r = http
        .post(format!("{base}/ui/approvals/{id}/decide"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=approve&comment=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{base}/ui/approvals/{id}/decide"))
        .header("cookie", &session)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("action=approve&comment=x&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(j.status(&j.agent, &id).await["data"]["status"], "pending");

    let r = http
        .post(format!("{base}/ui/approvals/{id}/decide"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("action=approve&comment=from+the+page&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let b = j.status(&j.agent, &id).await;
    assert_eq!(b["approved"], true);
    assert_eq!(b["data"]["decided_by"]["comment"], "from the page");
    j.done().await;
}

/// Runs the `leash` binary with `token` against `srv`.
fn leash_cli(srv: &TestServer, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(args)
        .env("LEASH_ADDR", srv.url())
        .env("LEASH_TOKEN", token)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leash_jit_lists_shows_approves_and_denies() {
    let j = Jit::new(1, "1h").await;
    let first = j.ask_ok(5).await;
    let second = j.ask_ok(5).await;
    let alice = j.login("alice").await;
    let srv = &j.srv;
    let (code, out, err) = tokio::task::block_in_place(|| leash_cli(srv, &alice, &["jit", "list"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&first) && out.contains(&second), "{out}");
    assert!(out.contains("agent-7") && out.contains("pending"), "{out}");
    let (code, _, err) =
        tokio::task::block_in_place(|| leash_cli(srv, &alice, &["jit", "deny", &second]));
    assert_eq!(code, 1, "a denial needs a comment");
    assert!(err.contains("--comment"), "{err}");
    let (code, out, err) = tokio::task::block_in_place(|| {
        leash_cli(srv, &alice, &["jit", "deny", &second, "-m", "not now"])
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("denied"), "{out}");
    let (code, out, err) = tokio::task::block_in_place(|| {
        leash_cli(srv, &alice, &["jit", "approve", &first, "--comment", "ok"])
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("approved"), "{out}");
    let (code, out, err) = tokio::task::block_in_place(|| {
        leash_cli(srv, &j.agent, &["jit", "show", &first, "-field=status"])
    });
    assert_eq!((code, out.trim()), (0, "approved"), "{err}");
    // The requester cannot approve, and the CLI says why (exit 2: the server refused).
    let (code, _, err) =
        tokio::task::block_in_place(|| leash_cli(srv, &j.agent, &["jit", "approve", &second]));
    assert_eq!(code, 2);
    assert!(err.contains("Code: 4"), "{err}");
    j.done().await;
}

#[tokio::test]
async fn a_failed_issuance_does_not_spend_the_grant() {
    let j = Jit::new(1, "1h").await;
    let id = j.ask_ok(5).await;
    let (s, b) = j.decide("alice", &id, "approve", "ok").await;
    assert_eq!(s, 200, "{b}");
    // The database is unreachable for a moment: the read fails (502)...
    let broken =
        j.pg.url()
            .replace(&crate::database::pg_host_port(), "127.0.0.1:1");
    let (s, b) = j
        .srv
        .root(
            "POST",
            "database/config/pg",
            Some(json!({"plugin_name": "postgresql-database-plugin", "connection_url": broken,
                "username": "postgres", "password": "x", "allowed_roles": "*", "verify_connection": false})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = j.creds(&j.agent).await;
    assert_eq!(s, 502, "{b}");
    // ...and once it is back, the single-use grant still holds.
    j.pg.configure(&j.srv, "database", &j.pg.url()).await;
    let (s, b) = j.creds(&j.agent).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = j.creds(&j.agent).await;
    assert_eq!(s, 403, "then it is used");
    j.done().await;
}

/// An access request whose audit entry cannot be written is refused and never stored
/// (fail closed): no pending request appears, no approver sees one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_be_audited_is_not_created() {
    let Some(fs) = crate::sys_audit::Tmpfs::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let j = Jit::new(1, "1h").await;
    // The only audit device is on a file system about to be full.
    let (s, b) = j.srv.root("DELETE", "sys/audit/file", None).await;
    assert_eq!(s, 204, "{b}");
    let log = fs.path().join("audit.log");
    let (s, b) = j
        .srv
        .root(
            "POST",
            "sys/audit/tmp",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let filler = fs.fill();
    // What is left of the log's last page may still take a request or two.
    let mut created: Vec<String> = Vec::new();
    let mut refused = None;
    for _ in 0..200 {
        let (s, b) = j.ask(&j.agent, 5).await;
        if s != 200 {
            refused = Some((s, b));
            break;
        }
        created.push(b["request_id"].as_str().unwrap().to_owned());
    }
    let (s, b) = refused.expect("the full file system never refused a request");
    assert_eq!(s, 500, "{b}");
    assert_eq!(error(&b), crate::sys_audit::FAIL_CLOSED);

    std::fs::remove_file(filler).unwrap();
    let alice = j.login("alice").await;
    let (s, b) = j
        .srv
        .call("LIST", "sys/control-group/request", Some(&alice), None)
        .await;
    // Only the requests that were answered 200 exist.
    let listed: Vec<String> = if s == 404 {
        Vec::new()
    } else {
        b["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    };
    created.sort();
    let mut listed = listed;
    listed.sort();
    assert_eq!(listed, created, "the refused request was not stored: {b}");
    j.done().await;
}

/// The design's JIT script sends its stated intent (`update`, `write`, `production
/// write`) while obtaining the credential is a `read`: the request keeps the intent for
/// approvers and audit, the grant is bound to `read` (what the policy gates), and the
/// credential read succeeds once approved — and only that read.
#[tokio::test]
async fn a_stated_intent_binds_the_grant_to_what_the_policy_gates() {
    let j = Jit::new(1, "1h").await;
    for intent in ["update", "write", "production write"] {
        let (s, b) = j
            .srv
            .call(
                "POST",
                "sys/control-group/request",
                Some(&j.agent),
                Some(json!({
                    "agent_id": "agent-deployer", "operation": intent,
                    "target_resource": j.target, "justification": "production database writes",
                    "requested_duration_minutes": 5, "timestamp": "2026-11-29T10:00:00Z",
                })),
            )
            .await;
        assert_eq!(s, 200, "{intent}: {b}");
        assert_eq!(b["operation"], intent, "the intent is kept as stated");
        assert_eq!(b["granted_operations"], json!(["read"]));
        assert_eq!(b["approved"], false);
        let id = b["request_id"].as_str().unwrap().to_owned();
        // The approvers see the intent.
        let alice = j.login("alice").await;
        let seen = j.status(&alice, &id).await;
        assert_eq!(seen["data"]["operation"], intent);
        let (s, b) = j.decide("alice", &id, "approve", "ok").await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(j.status(&j.agent, &id).await["approved"], true);
        let (s, b) = j.creds(&j.agent).await;
        assert_eq!(s, 200, "{intent}: {b}");
        assert!(b["data"]["username"].is_string(), "{b}");
        // Single use: a second read needs a new approval.
        assert_eq!(j.creds(&j.agent).await.0, 403);
        // The audit trail names the intent.
        let requested = j
            .audit()
            .into_iter()
            .find(|e| e["event"] == "approval.requested" && e["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no approval.requested for {id}"));
        assert_eq!(requested["operation"], intent, "{requested}");
        // The agent's readable name beside the free-text agent_id (a token-store token:
        // its display name).
        assert_eq!(requested["agent_name"], "token-agent-7", "{requested}");
    }
    // A denied request reads approved: false with its status.
    let (s, b) = j
        .srv
        .call(
            "POST",
            "sys/control-group/request",
            Some(&j.agent),
            Some(json!({
                "operation": "write", "target_resource": j.target,
                "justification": "j", "requested_duration_minutes": 5,
            })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let id = b["request_id"].as_str().unwrap().to_owned();
    let (s, b) = j.decide("alice", &id, "deny", "not now").await;
    assert_eq!(s, 200, "{b}");
    let b = j.status(&j.agent, &id).await;
    assert_eq!(b["approved"], false, "{b}");
    assert_eq!(b["status"], "denied", "{b}");
    assert_eq!(j.creds(&j.agent).await.0, 403);
    j.done().await;
}
