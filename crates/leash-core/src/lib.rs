//! The leash core: the one request pipeline every API call goes through, and the
//! built-in backends (`sys/`, `auth/token/`).
//!
//! Pipeline, in order (no handler can skip a step, because no handler does them):
//! canonical path → route by mount and the backend's path table → authenticate the token
//! → existence check (create vs update) → ACL (with `sudo` from the path table) → approval
//! gate (a `control_group` needs an open grant) → audit the request (fail closed) → spend
//! a token use → backend → audit the response (fail closed) → answer.
//!
//! What it is not: it knows no HTTP types (the `leash-http` crate parses and wraps), and
//! engines live in their own crates behind [`leash_backend::Backend`].
#![forbid(unsafe_code)]

mod agents;
mod approvals;
mod audit_log;
mod canary;
mod coherence;
mod containment;
mod events;
mod expiry;
mod identity;
mod latency;
mod leaks;
mod leases;
mod login;
mod metrics;
mod observer;
mod pipeline;
pub mod policy_store;
mod router;
mod sys;
mod sys_leases;
mod telemetry;
pub mod token;
mod token_backend;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use leash_audit::Broker;
pub use leash_backend::{AuthInfo, CoreError, LeaseInfo, Request, Response, ResponseKind};
use leash_backend::{Backend, MountConfig, MountEntry, MountKind, MountStorage, MountTable};
use leash_storage::Storage;
use leash_types::{Clock, SecretString};
pub use router::{Mounted, Router};
use serde::{Deserialize, Serialize};
pub use token::TokenLimits;

use crate::policy_store::PolicyStore;
use crate::token::{TokenSpec, TokenStore};

/// Version reported by `sys/health` and `sys/seal-status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Core settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Token TTL defaults and ceiling.
    pub token_limits: TokenLimits,
    /// Deadline for one audit entry on one device.
    pub audit_deadline: Duration,
    /// Cluster name reported by health.
    pub cluster_name: String,
    /// Dev mode (reported by health; changes nothing else here).
    pub dev: bool,
    /// `sys/metrics` answers without a token (`telemetry { unauthenticated_metrics_access
    /// = true }`).
    pub unauthenticated_metrics_access: bool,
    /// Directories audit file devices may write in (the server's `audit_dir`); empty:
    /// anywhere the server can write.
    pub audit_dirs: Vec<std::path::PathBuf>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            token_limits: TokenLimits::default(),
            audit_deadline: leash_audit::DEFAULT_DEADLINE,
            cluster_name: "leash-cluster".to_owned(),
            dev: false,
            unauthenticated_metrics_access: false,
            audit_dirs: Vec::new(),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: CoreConfig,
    pub(crate) policies: PolicyStore,
    pub(crate) tokens: TokenStore,
    /// Metric state (counters, live-token gauges, request latency), fed by the token
    /// store, the lease book and the pipeline; read by `sys/metrics`.
    pub(crate) telemetry: Arc<telemetry::Telemetry>,
    pub(crate) audit: Broker,
    pub(crate) router: RwLock<Arc<Router>>,
    pub(crate) mount_lock: tokio::sync::Mutex<()>,
    pub(crate) cluster_id: String,
    /// The lease book: registry, expiry worker, claims, issuance windows.
    pub(crate) leases: leases::LeaseBook,
    /// Failed-login accounting (rate limit per source, counts per role).
    pub(crate) logins: login::LoginGuard,
    /// Just-in-time access (webhook notifier).
    pub(crate) approvals: approvals::Approvals,
    /// Last use and recent trace ids per token, for `sys/containment/agents`.
    pub(crate) activity: agents::Activity,
    /// Canaries already tripped (contained once), see `canary.rs`.
    pub(crate) canaries: canary::Tripped,
}

/// A running core. Cheap to clone.
#[derive(Clone)]
pub struct Core(pub(crate) Arc<Inner>);

/// Result of [`Core::open`]: the core and, on first start, the root token (shown once).
pub struct Opened {
    /// The core.
    pub core: Core,
    /// The initial root token, only when storage was initialised just now (or the dev
    /// root token).
    pub root_token: Option<SecretString>,
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct MountTables {
    pub(crate) mounts: Vec<MountEntry>,
}

pub(crate) const SYS_NS: &str = "sys/core";

impl Core {
    /// Opens the core over `storage`: restores mounts, policies and audit devices, and
    /// initialises empty storage (root token, `default` policy). In dev mode a `secret/`
    /// KV v2 mount is created and `dev_root_token` (or a random one) becomes a root
    /// token.
    pub async fn open(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        config: CoreConfig,
        dev_root_token: Option<SecretString>,
    ) -> Result<Opened, CoreError> {
        // Subscribed before anything is read: a change made meanwhile is applied after.
        let changes = storage.changes();
        let policies = PolicyStore::load(Arc::clone(&storage)).await?;
        let lease_wake = Arc::new(tokio::sync::Notify::new());
        let telemetry = Arc::new(telemetry::Telemetry::default());
        let tokens = TokenStore::new(
            Arc::clone(&storage),
            Arc::clone(&clock),
            config.token_limits,
            Arc::clone(&lease_wake),
            Arc::clone(&telemetry),
        );
        let audit = Broker::new(config.audit_deadline).with_allowed_dirs(config.audit_dirs.clone());
        let cluster_id = match storage.get(SYS_NS, "cluster_id").await? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                // Set once, atomically: servers starting together agree on one id.
                let id = leash_types::random::uuid_v4();
                let set = storage
                    .modify(
                        SYS_NS,
                        "cluster_id",
                        Box::new(move |cur| Ok(Some(cur.map_or(id.into_bytes(), <[u8]>::to_vec)))),
                    )
                    .await?;
                set.map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default()
            }
        };
        let inner = Arc::new(Inner {
            storage: Arc::clone(&storage),
            clock,
            config,
            policies,
            tokens,
            telemetry,
            audit,
            router: RwLock::new(Arc::new(Router::default())),
            mount_lock: tokio::sync::Mutex::new(()),
            cluster_id,
            leases: leases::LeaseBook::new(lease_wake, Arc::new(approvals::Ledger)),
            logins: login::LoginGuard::default(),
            approvals: approvals::Approvals::new()?,
            activity: agents::Activity::default(),
            canaries: canary::Tripped::default(),
        });
        let core = Core(inner);
        if let Some(rx) = changes {
            coherence::start(Arc::downgrade(&core.0), rx);
        }

        let mut first_start = storage.get(SYS_NS, "initialized").await?.is_none();
        if first_start && coherence::shared(&storage) {
            // Several servers may be starting on the same empty database: one
            // initialises (and prints the root token), the others wait and join.
            first_start = claim_initialisation(&storage, &*core.0.clock).await?;
        }
        let mut tables: MountTables = match storage.get(SYS_NS, "mounts").await? {
            Some(v) => serde_json::from_slice(&v)
                .map_err(|e| CoreError::internal(format!("mount table is unreadable: {e}")))?,
            None => MountTables::default(),
        };
        if first_start {
            for (path, kind, table, desc) in [
                (
                    "sys/",
                    "system",
                    MountTable::Secret,
                    "system endpoints used for control, policy and debugging",
                ),
                (
                    "token/",
                    "token",
                    MountTable::Auth,
                    "token based credentials",
                ),
            ] {
                // Idempotent: a first start that crashed after writing the table must not
                // add the built-in mounts twice.
                if !tables
                    .mounts
                    .iter()
                    .any(|m| m.table == table && m.path == path)
                {
                    tables
                        .mounts
                        .push(new_mount_entry(path, kind, table, desc, BTreeMap::new()));
                }
            }
            if core.0.config.dev && !tables.mounts.iter().any(|m| m.path == "secret/") {
                let mut opts = BTreeMap::new();
                opts.insert("version".to_owned(), "2".to_owned());
                tables.mounts.push(new_mount_entry(
                    "secret/",
                    "kv",
                    MountTable::Secret,
                    "key/value secret storage",
                    opts,
                ));
            }
            storage
                .put(
                    SYS_NS,
                    "mounts",
                    serde_json::to_vec(&tables).map_err(|e| CoreError::internal(e.to_string()))?,
                )
                .await?;
        }
        // `identity/` (groups of approvers) came after the first releases: added to a
        // table that lacks it, on any start.
        if !tables
            .mounts
            .iter()
            .any(|m| m.table == MountTable::Secret && m.path == "identity/")
        {
            tables.mounts.push(new_mount_entry(
                "identity/",
                "identity",
                MountTable::Secret,
                "identity store",
                BTreeMap::new(),
            ));
            storage
                .put(
                    SYS_NS,
                    "mounts",
                    serde_json::to_vec(&tables).map_err(|e| CoreError::internal(e.to_string()))?,
                )
                .await?;
        }
        core.install_router(&tables.mounts)?;
        audit_log::restore_devices(&storage, &core.0.audit).await?;

        let mut root_token = None;
        if first_start || dev_root_token.is_some() {
            let spec = TokenSpec {
                policies: vec!["root".to_owned()],
                display_name: "root".to_owned(),
                path: "auth/token/root".to_owned(),
                id: dev_root_token,
                renewable: false,
                issuer: token::Issuer::Bootstrap,
                ..TokenSpec::default()
            };
            let exists = match &spec.id {
                Some(id) => {
                    use leash_types::ExposeSecret;
                    core.0.tokens.lookup(id.expose_secret()).await?.is_some()
                }
                None => false,
            };
            if exists {
                root_token = spec.id;
            } else {
                let minted = core.0.tokens.mint(spec, None).await?;
                root_token = Some(SecretString::from(minted.value.expose().to_owned()));
            }
            storage.put(SYS_NS, "initialized", b"1".to_vec()).await?;
        }
        Ok(Opened { core, root_token })
    }

    /// Handles one request through the whole pipeline.
    pub async fn handle(&self, req: Request) -> Result<Response, CoreError> {
        let timer = latency::start(&self.0, &req);
        let r = pipeline::handle(&self.0, req).await;
        timer.finish();
        r
    }

    /// Failed logins so far, per (auth mount path, role): for metrics.
    pub fn login_failures(&self) -> Vec<((String, String), u64)> {
        self.0.logins.failures_per_role()
    }

    /// Starts background work (token expiry, lease expiry and revocation retries).
    /// Returns a handle that stops it.
    pub fn start_background(&self) -> expiry::Background {
        let leases = self.0.leases.start_worker(Arc::downgrade(&self.0));
        expiry::start(Arc::downgrade(&self.0), leases)
    }

    fn install_router(&self, mounts: &[MountEntry]) -> Result<(), CoreError> {
        let current = self.0.router();
        let mut mounted = Vec::new();
        for m in mounts {
            // A mount that did not change keeps its backend (and its connections).
            let backend = match current
                .all()
                .find(|c| c.entry.uuid == m.uuid && c.entry.kind == m.kind)
            {
                Some(c) => Arc::clone(&c.backend),
                None => self.backend_for(m)?,
            };
            mounted.push(Mounted {
                entry: Arc::new(m.clone()),
                backend,
            });
        }
        *self
            .0
            .router
            .write()
            .map_err(|_| CoreError::internal("router lock poisoned"))? =
            Arc::new(Router::new(mounted));
        Ok(())
    }

    fn backend_for(&self, m: &MountEntry) -> Result<Arc<dyn Backend>, CoreError> {
        let weak: Weak<Inner> = Arc::downgrade(&self.0);
        // Engines and auth methods see their own storage namespace only.
        let store = || MountStorage::new(Arc::clone(&self.0.storage), m);
        let clock = || Arc::clone(&self.0.clock);
        let Some(kind) = m.mount_kind() else {
            let what = if m.table == MountTable::Auth {
                "auth method"
            } else {
                "secrets engine"
            };
            return Err(CoreError::invalid(format!("unknown {what} type")));
        };
        Ok(match kind {
            MountKind::System => Arc::new(sys::SysBackend::new(weak)),
            MountKind::Token => Arc::new(token_backend::TokenBackend::new(weak)),
            MountKind::Identity => Arc::new(identity::IdentityBackend::new(weak)),
            MountKind::Kv => leash_engines::kv::new_backend(m, store(), clock()),
            MountKind::Userpass => leash_auth::userpass::new_backend(store()),
            MountKind::AppRole => leash_auth::approle::new_backend(m, store(), clock()),
            MountKind::Jwt => leash_auth::jwt::new_backend(store(), clock()),
            MountKind::KubernetesAuth => leash_auth::kubernetes::new_backend(store(), clock()),
            MountKind::Database => leash_engines::database::engine::new_backend(
                store(),
                Arc::new(leases::Registry { inner: weak }),
            ),
            MountKind::Aws => {
                leash_engines::aws::new_backend(store(), Arc::new(leases::Registry { inner: weak }))
            }
            MountKind::KubernetesSecrets => leash_engines::kubernetes::new_backend(
                store(),
                Arc::new(leases::Registry { inner: weak }),
            ),
        })
    }
}

/// How long an initialisation claim holds before another server may take it over (its
/// server died while initialising).
const INIT_CLAIM_SECS: i64 = 30;

/// On shared storage, decides which starting server initialises: `true` for the one
/// that claimed it, `false` for the others once the initialised marker is written.
async fn claim_initialisation(
    storage: &Arc<dyn Storage>,
    clock: &dyn Clock,
) -> Result<bool, CoreError> {
    loop {
        if storage.get(SYS_NS, "initialized").await?.is_some() {
            return Ok(false);
        }
        let now = clock.unix();
        let claimed = storage
            .modify(
                SYS_NS,
                "init_claim",
                Box::new(move |cur| {
                    let held = cur
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                        .is_some_and(|at| now - at < INIT_CLAIM_SECS);
                    if held {
                        Err("held".into())
                    } else {
                        Ok(Some(now.to_string().into_bytes()))
                    }
                }),
            )
            .await;
        match claimed {
            Ok(_) => return Ok(true),
            Err(leash_storage::StorageError::Rejected(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn new_mount_entry(
    path: &str,
    kind: &str,
    table: MountTable,
    description: &str,
    options: BTreeMap<String, String>,
) -> MountEntry {
    let short: String = kind.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    MountEntry {
        path: path.to_owned(),
        kind: kind.to_owned(),
        description: description.to_owned(),
        accessor: format!("{short}_{}", &leash_types::random::uuid_v4()[..8]),
        uuid: leash_types::random::uuid_v4(),
        config: MountConfig::default(),
        options,
        local: false,
        table,
    }
}

/// The core behind a built-in backend's weak back-reference (the router owns the
/// backends, so they must not keep the core alive).
pub(crate) fn upgrade(inner: &Weak<Inner>) -> Result<Arc<Inner>, CoreError> {
    inner
        .upgrade()
        .ok_or_else(|| CoreError::internal("core is gone"))
}

impl Inner {
    pub(crate) fn router(&self) -> Arc<Router> {
        self.router
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }
}
