//! Test fixtures: a real SQLite storage in a temp dir, mount entries and hand-built
//! requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use leash_backend::{
    Backend, BackendRequest, CoreError, MountConfig, MountEntry, MountTable, Response,
};
use leash_storage::{Keyring, SqliteStorage, Storage};
use leash_types::{ManualClock, Operation};
use serde_json::{Map, Value};

/// A backend over fresh storage, with the pieces a test may want to poke at.
pub(super) struct Fixture {
    pub(super) backend: Arc<dyn Backend>,
    pub(super) storage: Arc<dyn Storage>,
    pub(super) clock: ManualClock,
    pub(super) mount: MountEntry,
    _dir: tempfile::TempDir,
}

/// A `kv` mount at `path` with the given version option (`None` = v1 without options).
pub(super) fn mount(path: &str, uuid: &str, version: Option<&str>) -> MountEntry {
    let mut options = BTreeMap::new();
    if let Some(v) = version {
        options.insert("version".to_owned(), v.to_owned());
    }
    MountEntry {
        path: path.to_owned(),
        kind: "kv".to_owned(),
        description: String::new(),
        accessor: format!("kv_{uuid}"),
        uuid: uuid.to_owned(),
        config: MountConfig::default(),
        options,
        local: false,
        table: MountTable::Secret,
    }
}

/// A fixture serving `secret/` as KV v2 (`version` = `Some("2")`) or v1.
pub(super) fn fixture(version: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::from_master(&Keyring::generate_master()).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path(), keyring).unwrap());
    let clock = ManualClock::new();
    let mount = mount("secret/", "0000-kv-test", version);
    let backend = super::new_backend(
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

/// The body of a JSON object literal.
pub(super) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

impl Fixture {
    /// Sends one request.
    pub(super) async fn call(
        &self,
        op: Operation,
        path: &str,
        data: Value,
    ) -> Result<Option<Response>, CoreError> {
        call(self.backend.as_ref(), &self.mount, op, path, data).await
    }

    /// Sends one request that must succeed with a body; returns its `data`.
    pub(super) async fn ok(&self, op: Operation, path: &str, data: Value) -> Value {
        let resp = self
            .call(op, path, data)
            .await
            .unwrap()
            .expect("a response");
        resp.data.expect("response data")
    }

    /// Runs the existence check.
    pub(super) async fn exists(&self, path: &str) -> Option<bool> {
        let data = Map::new();
        let req = request(&self.mount, Operation::Update, path, &data);
        self.backend.exists(&req).await.unwrap()
    }

    /// The `errors` message of a request expected to fail with 400.
    pub(super) async fn invalid(&self, op: Operation, path: &str, data: Value) -> String {
        match self.call(op, path, data).await {
            Err(CoreError::InvalidRequest(msg)) => msg,
            Err(other) => panic!("expected a 400 for {path}, got error {other:?}"),
            Ok(Some(r)) => panic!("expected a 400 for {path}, got {:?}", r.kind),
            Ok(None) => panic!("expected a 400 for {path}, got nothing"),
        }
    }
}

fn request<'a>(
    mount: &'a MountEntry,
    operation: Operation,
    path: &'a str,
    data: &'a Map<String, Value>,
) -> BackendRequest<'a> {
    BackendRequest {
        id: "test-request",
        operation,
        path,
        data,
        mount,
        caller: None,
        remote_addr: None,
        token: None,
        grant: None,
    }
}

/// Sends one request to any backend.
pub(super) async fn call(
    backend: &dyn Backend,
    mount: &MountEntry,
    op: Operation,
    path: &str,
    data: Value,
) -> Result<Option<Response>, CoreError> {
    let data = obj(data);
    let req = request(mount, op, path, &data);
    backend.handle(&req).await
}
