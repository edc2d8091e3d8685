//! Helpers of the agent tests: a server with the database engine on a scratch
//! PostgreSQL database, an AppRole for the agent, its configuration, the agent binary
//! as a child process, a TCP proxy that survives server restarts, a Python reader.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::database::PgScratch;

pub(crate) struct Fixture {
    pub(crate) srv: TestServer,
    pub(crate) pg: PgScratch,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) log_path: PathBuf,
    /// The `auto_auth` method block (`{d}` stands for the test's directory).
    pub(crate) method: String,
}

impl Fixture {
    /// A server whose `database/` issues credentials with these TTLs, an AppRole
    /// `agent` whose tokens may read them (and revoke replaced leases), and the
    /// role-id and secret-id files.
    pub(crate) async fn new(ttl: &str, max_ttl: &str) -> Fixture {
        Fixture::with_token_ttls(ttl, max_ttl, "1h", "").await
    }

    /// Same, with the AppRole's token TTL and max TTL (`""`: the server's).
    pub(crate) async fn with_token_ttls(
        ttl: &str,
        max_ttl: &str,
        token_ttl: &str,
        token_max_ttl: &str,
    ) -> Fixture {
        let srv = TestServer::start().await;
        let pg = PgScratch::new().await;
        pg.setup(
            &srv,
            "database",
            json!({"default_ttl": ttl, "max_ttl": max_ttl}),
        )
        .await;
        srv.write_policy(
            "agent",
            &format!(
                "path \"database/creds/{}\" {{ capabilities = [\"read\"] }}\n\
                 path \"sys/leases/revoke\" {{ capabilities = [\"update\"] }}\n\
                 path \"secret/data/agents/*\" {{ capabilities = [\"read\"] }}\n",
                pg.role
            ),
        )
        .await;
        let (s, b) = srv
            .root("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
            .await;
        assert_eq!(s, 204, "{b}");
        let (s, b) = srv
            .root(
                "POST",
                "auth/approle/role/agent",
                Some(if token_max_ttl.is_empty() {
                    json!({"token_policies": ["agent"], "token_ttl": token_ttl})
                } else {
                    json!({"token_policies": ["agent"], "token_ttl": token_ttl,
                           "token_max_ttl": token_max_ttl})
                }),
            )
            .await;
        assert_eq!(s, 204, "{b}");
        let (_, b) = srv
            .root("GET", "auth/approle/role/agent/role-id", None)
            .await;
        let role_id = b["data"]["role_id"].as_str().unwrap().to_owned();
        let (_, b) = srv
            .root("POST", "auth/approle/role/agent/secret-id", Some(json!({})))
            .await;
        let secret_id = b["data"]["secret_id"].as_str().unwrap().to_owned();
        let dir = tempfile::Builder::new()
            .prefix("leash-agent-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("role-id"), role_id).unwrap();
        std::fs::write(dir.path().join("secret-id"), secret_id).unwrap();
        let log_path = dir.path().join("agent.log");
        Fixture {
            srv,
            pg,
            dir,
            log_path,
            method: APPROLE.to_owned(),
        }
    }

    /// The issue's template, for this test's role.
    pub(crate) fn issue_template(&self) -> String {
        format!(
            "{{{{- with secret \"database/creds/{}\" -}}}}\n{{\n  \"username\": \"{{{{ .Data.username }}}}\",\n  \"password\": \"{{{{ .Data.password }}}}\",\n  \"ttl_seconds\": {{{{ .Data.lease_duration }}}}\n}}\n{{{{- end -}}}}\n",
            self.pg.role
        )
    }

    /// A configuration rendering the issue's template to `db.json`, plus `extra`.
    pub(crate) fn config(&self, extra: &str, _more: &[&str]) -> PathBuf {
        let t = self.issue_template();
        self.config_full(
            &self.srv.url(),
            RETRY,
            extra,
            &t,
            &self.dir.path().join("db.json"),
        )
    }

    /// Same, against another server address (a proxy).
    pub(crate) fn config_at(&self, address: &str, extra: &str) -> PathBuf {
        let t = self.issue_template();
        self.config_full(address, RETRY, extra, &t, &self.dir.path().join("db.json"))
    }

    /// Same, with another `vault { retry { … } }` body.
    pub(crate) fn config_retry(&self, address: &str, retry: &str, extra: &str) -> PathBuf {
        let t = self.issue_template();
        self.config_full(address, retry, extra, &t, &self.dir.path().join("db.json"))
    }

    /// A configuration with one template of these contents at `dest`.
    pub(crate) fn config_with(&self, extra: &str, template: &str, dest: &Path) -> PathBuf {
        self.config_full(&self.srv.url(), RETRY, extra, template, dest)
    }

    fn config_full(
        &self,
        address: &str,
        retry: &str,
        extra: &str,
        template: &str,
        dest: &Path,
    ) -> PathBuf {
        let d = self.dir.path();
        let name = format!("t{}.tmpl", leash_types::random::base62(6));
        std::fs::write(d.join(&name), template).unwrap();
        let text = format!(
            r#"
vault {{
  address = "{address}"
  retry {{ {retry} }}
}}
auto_auth {{
  {method}
  sink "file" {{ config = {{ path = "{d}/token", mode = "0600" }} }}
}}
lease_cache_file = "{d}/cache.json"
template_config {{ rotation_grace_period = "2s" }}
template {{
  source = "{name}"
  destination = "{dest}"
}}
{extra}
"#,
            d = d.display(),
            dest = dest.display(),
            method = self.method.replace("{d}", &d.display().to_string()),
        );
        let p = d.join(format!("agent-{}.hcl", leash_types::random::base62(6)));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Starts the `leash` binary with these arguments (`agent …`); its stderr goes to
    /// the log. See [`agent_command`] for running the small `leash-agent` instead.
    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        agent_command(args)
            .env("LEASH_LOG", "info,leash_agent=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// What the agents wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A Python process that reloads `db.json` whenever its mtime changes and counts
    /// the reloads that did not parse.
    pub(crate) fn python_reader(&self) -> Reader {
        let d = self.dir.path();
        let stop = d.join("reader.stop");
        let child = Command::new("python3")
            .arg("-c")
            .arg(READER)
            .arg(d.join("db.json"))
            .arg(&stop)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 is needed for this test");
        Reader { child, stop }
    }

    pub(crate) async fn cleanup(self) {
        self.pg.cleanup().await;
    }
}

/// A command running `args` (which start with `agent`): `leash agent …`, or, when
/// `LEASH_AGENT_BIN` names the small `leash-agent` binary, that binary with the same
/// arguments after `agent` — so every agent test can run against either binary:
/// `LEASH_AGENT_BIN=target/debug/leash-agent cargo test -p leash --test it -- agent`.
pub(crate) fn agent_command(args: &[&str]) -> Command {
    match std::env::var_os("LEASH_AGENT_BIN").filter(|b| !b.is_empty()) {
        Some(bin) => {
            assert_eq!(args.first(), Some(&"agent"), "{args:?}");
            let mut c = Command::new(bin);
            c.args(&args[1..]);
            c
        }
        None => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_leash"));
            c.args(args);
            c
        }
    }
}

/// The AppRole login the fixture sets up.
const APPROLE: &str = r#"method "approle" {
    config = {
      role_id_file_path = "{d}/role-id"
      secret_id_file_path = "{d}/secret-id"
      remove_secret_id_file_after_reading = false
    }
  }"#;

/// Fast retries, so outages in tests are short.
const RETRY: &str = "backoff = \"1s\"  max_backoff = \"2s\"";

const READER: &str = r#"
import json, os, sys, time
path, stop = sys.argv[1], sys.argv[2]
last, reloads, bad, users = None, 0, 0, set()
while not os.path.exists(stop):
    try:
        m = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        time.sleep(0.005)
        continue
    if m != last:
        last = m
        try:
            with open(path) as f:
                d = json.load(f)
            users.add(d["username"])
            reloads += 1
        except Exception as e:
            bad += 1
            print("reader: bad file:", repr(e), file=sys.stderr)
    time.sleep(0.001)
print(json.dumps({"reloads": reloads, "bad": bad, "users": len(users)}))
"#;

pub(crate) struct Reader {
    child: Child,
    stop: PathBuf,
}

impl Reader {
    pub(crate) async fn finish(self) -> Value {
        std::fs::write(&self.stop, "").unwrap();
        let out = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

pub(crate) fn read_json(p: &Path) -> Value {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub(crate) fn sigterm(child: &Child) {
    let pid = child.id().expect("agent already exited");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
}

/// Waits (generously) for the child to exit; its exit code.
pub(crate) async fn wait_exit(child: &mut Child) -> Option<i32> {
    tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("the agent did not exit")
        .unwrap()
        .code()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on the agent's health port: status and body (0 when nothing listens).
pub(crate) async fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(Ok(r)) = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::get(format!("http://127.0.0.1:{port}{path}")),
    )
    .await
    else {
        return (0, String::new());
    };
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

pub(crate) async fn pg_can_login(pg: &PgScratch, user: &str, password: &str) -> bool {
    let url = format!(
        "postgresql://{user}:{password}@{}/{}?sslmode=disable",
        crate::database::pg_host_port(),
        pg.name
    );
    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((c, conn)) => {
            let task = tokio::spawn(conn);
            let ok = c.simple_query("SELECT 1").await.is_ok();
            drop(c);
            let _ = task.await;
            ok
        }
        Err(_) => false,
    }
}

/// A TCP proxy on a fixed local port whose target can change (a restarted server
/// listens on a new port; the agent's configured address stays the same).
pub(crate) struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let t = Arc::clone(&target);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = l.accept().await else {
                    continue;
                };
                let to = *t.lock().unwrap();
                conns.spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Proxy { addr, target, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
