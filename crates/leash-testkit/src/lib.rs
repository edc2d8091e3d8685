//! A real leash server for tests: storage in a temporary directory, the full pipeline,
//! HTTP on `127.0.0.1:0`, a root token, and a small HTTP helper that speaks the wire
//! format exactly as clients see it (no shortcuts into the core).
//!
//! ```no_run
//! # async fn t() {
//! let srv = leash_testkit::TestServer::start().await;
//! let (status, body) = srv.call("GET", "sys/health", None, None).await;
//! assert_eq!(status, 200);
//! # }
//! ```
#![forbid(unsafe_code)]
// Test support: failures should panic with their location, like assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use leash_core::{Core, CoreConfig};
use leash_storage::{Keyring, SqliteStorage, Storage};
use leash_types::{Clock, SecretBytes, SecretString, SystemClock};
use serde_json::Value;

/// Options for [`TestServer::start_with`].
pub struct Options {
    /// Data directory (default: a fresh temporary one).
    pub dir: Option<PathBuf>,
    /// Master key (default: a fresh one). Reuse it with `dir` to restart a server.
    pub key: Option<Vec<u8>>,
    /// Core settings.
    pub config: CoreConfig,
    /// Clock (default: the system clock).
    pub clock: Arc<dyn Clock>,
    /// Root token to install (default: a generated one).
    pub root_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: None,
            key: None,
            config: CoreConfig {
                dev: true,
                ..CoreConfig::default()
            },
            clock: Arc::new(SystemClock),
            root_token: None,
        }
    }
}

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A root token.
    pub root_token: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its master key (to restart on the same data).
    pub key: Vec<u8>,
    /// The core (for tests that need to reach past HTTP, e.g. background work).
    pub core: Core,
    /// Its storage (for tests that check what is persisted, e.g. lease records).
    pub storage: Arc<dyn Storage>,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a dev-like server (KV v2 at `secret/`) on a fresh temporary directory.
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    /// Starts a server with options.
    pub async fn start_with(opts: Options) -> TestServer {
        let (tmp, dir) = match opts.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("leash-test-")
                    .tempdir()
                    .unwrap();
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let key = opts
            .key
            .unwrap_or_else(|| Keyring::generate_master().expose().to_vec());
        let keyring = Keyring::from_master(&SecretBytes::new(key.clone())).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir, keyring).unwrap());
        let root = opts
            .root_token
            .unwrap_or_else(|| format!("test-root-{}", leash_types::random::base62(24)));
        let opened = Core::open(
            Arc::clone(&storage),
            opts.clock,
            opts.config,
            Some(SecretString::from(root.clone())),
        )
        .await
        .unwrap();
        let core = opened.core;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = leash_http::app(core.clone(), leash_http::HttpConfig::default());
        let bg_core = core.clone();
        let task = tokio::spawn(async move {
            let bg = bg_core.start_background();
            let _ = leash_http::serve(listener, app, None, async move {
                let _ = stop_rx.await;
            })
            .await;
            bg.shutdown().await;
        });
        TestServer {
            addr,
            root_token: root,
            dir,
            key,
            core,
            storage,
            http: reqwest::Client::new(),
            stop: Some(stop_tx),
            task: Some(task),
            _tmp: tmp,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and returns its data directory (kept on disk while the returned
    /// guard lives) and key, so a test can restart on the same data.
    pub async fn stop(mut self) -> (Option<tempfile::TempDir>, PathBuf, Vec<u8>) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let tmp = self._tmp.take();
        let dir = self.dir.clone();
        let key = self.key.clone();
        drop(self);
        // Give the storage writer a moment to close the database.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        (tmp, dir, key)
    }

    /// Sends a request as a client would: `method` may be `LIST`; `path` is below `/v1/`.
    /// Returns the status and the JSON body (`Value::Null` when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}/v1/{}", self.url(), path);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, url);
        if let Some(t) = token {
            rb = rb.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, v)
    }

    /// `call` with the root token.
    pub async fn root(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.root_token), body).await
    }

    /// How many lease records storage holds.
    pub async fn core_lease_count(&self) -> u64 {
        self.storage.lease_count().await.unwrap()
    }

    /// Writes a policy with the root token, asserting success.
    pub async fn write_policy(&self, name: &str, hcl: &str) {
        let (s, b) = self
            .root(
                "PUT",
                &format!("sys/policy/{name}"),
                Some(serde_json::json!({ "policy": hcl })),
            )
            .await;
        assert_eq!(s, 204, "policy write failed: {b}");
    }

    /// Creates a token with these policies (root parent), returning the token.
    pub async fn token_with(&self, policies: &[&str]) -> String {
        let (s, b) = self
            .root(
                "POST",
                "auth/token/create",
                Some(serde_json::json!({ "policies": policies })),
            )
            .await;
        assert_eq!(s, 200, "token create failed: {b}");
        b["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
