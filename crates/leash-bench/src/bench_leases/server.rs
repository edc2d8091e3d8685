//! The in-process leash that `bench-leases` (and the suite) measures.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leash_client::{Client, ClientConfig};
use leash_core::{Core, CoreConfig};
use leash_storage::{Keyring, SqliteStorage, Storage};
use leash_types::{Clock, SecretBytes, SecretString};
use serde_json::Value;

use super::{Error, HEALTH_DEADLINE, HTTP_TIMEOUT, failed};
use crate::bench::driver::{RequestSpec, Target, request_once};

// ---------------------------------------------------------------------------------------
// An in-process server
// ---------------------------------------------------------------------------------------

/// A running leash: storage, core, background workers and the HTTP listener.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(super) storage: Arc<dyn Storage>,
    pub(super) root: SecretString,
    pub(super) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) task: Option<tokio::task::JoinHandle<()>>,
}

pub(super) fn dev_config() -> CoreConfig {
    CoreConfig {
        dev: true,
        ..CoreConfig::default()
    }
}

/// Opens (or creates) SQLite storage in `dir` off the async threads.
pub(super) async fn open_storage(dir: &Path, key: &SecretBytes) -> Result<Arc<dyn Storage>, Error> {
    let keyring = Keyring::from_master(key).map_err(failed)?;
    let path = dir.to_path_buf();
    let storage = tokio::task::spawn_blocking(move || SqliteStorage::open(&path, keyring))
        .await
        .map_err(failed)?
        .map_err(|e| failed(format!("opening storage in {}: {e}", dir.display())))?;
    Ok(Arc::new(storage))
}

/// Closes storage (its writer finishes and the database is closed) off the async
/// threads; fails if something still holds it.
pub(super) async fn close_storage(storage: Arc<dyn Storage>) -> Result<(), Error> {
    if Arc::strong_count(&storage) != 1 {
        return Err(failed("storage is still in use after the server stopped"));
    }
    tokio::task::spawn_blocking(move || drop(storage))
        .await
        .map_err(failed)
}

impl Server {
    /// Opens storage in `dir`, the core, its background work and the listener, in the
    /// order `leash server` does.
    pub(crate) async fn launch(
        dir: &Path,
        key: &SecretBytes,
        clock: Arc<dyn Clock>,
        root: &SecretString,
    ) -> Result<Server, Error> {
        let storage = open_storage(dir, key).await?;
        let opened = Core::open(
            Arc::clone(&storage),
            clock,
            dev_config(),
            Some(root.clone()),
        )
        .await
        .map_err(|e| failed(format!("opening the core: {e}")))?;
        let core = opened.core;
        let background = core.start_background();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| failed(format!("binding 127.0.0.1:0: {e}")))?;
        let addr = listener.local_addr().map_err(failed)?;
        let app = leash_http::app(core, leash_http::HttpConfig::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = leash_http::serve(listener, app, None, shutdown).await {
                eprintln!("warning: the in-process server stopped: {e}");
            }
            background.shutdown().await;
        });
        Ok(Server {
            addr,
            storage,
            root: root.clone(),
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// A client of this server with the root token.
    pub(crate) fn client(&self) -> Result<Client, Error> {
        let mut config =
            ClientConfig::new(format!("http://{}", self.addr)).with_token(self.root.clone());
        config.timeout = HTTP_TIMEOUT;
        Client::new(config).map_err(failed)
    }

    /// Stops the listener and the background work, and returns the storage.
    pub(crate) async fn stop(mut self) -> Arc<dyn Storage> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        Arc::clone(&self.storage)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// One `GET /v1/sys/health` on a fresh connection; the status.
pub(super) async fn health(addr: SocketAddr) -> Result<u16, String> {
    let target = Target {
        addr,
        host: hyper::header::HeaderValue::from_str(&addr.to_string())
            .map_err(|e| format!("host: {e}"))?,
    };
    let spec = RequestSpec {
        method: hyper::Method::GET,
        path: "/v1/sys/health".into(),
        token: None,
        body: None,
    };
    request_once(&target, &spec).await
}

/// Waits for the first `200` from `sys/health`.
pub(crate) async fn first_health(addr: SocketAddr) -> Result<(), Error> {
    let deadline = Instant::now() + HEALTH_DEADLINE;
    let mut last = String::new();
    while Instant::now() < deadline {
        match health(addr).await {
            Ok(200) => return Ok(()),
            Ok(s) => last = format!("HTTP {s}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(failed(format!(
        "sys/health did not answer 200 within {}s (last: {last})",
        HEALTH_DEADLINE.as_secs()
    )))
}

/// A 2xx answer's body, or an error that says what the request was.
pub(super) async fn call(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Option<Value>, Error> {
    let resp = client
        .request(method, path, body)
        .await
        .map_err(|e| failed(format!("{method} {path}: {e}")))?;
    if resp.is_success() {
        Ok(resp.body)
    } else {
        Err(failed(format!(
            "{method} {path}: HTTP {}: {}",
            resp.status,
            resp.errors().join("; ")
        )))
    }
}
