//! The token store: minting, authenticating, renewing and revoking tokens.
//!
//! Invariants:
//! * Token values exist only in the response to their creator; storage keeps the keyed
//!   hash. A presented token is hashed and looked up; the stored hash is compared in
//!   constant time after the index lookup.
//! * A child's policies are a subset of its parent's unless the parent is root or holds
//!   `sudo` on the create path; its life ends no later than its parent's (it is capped by
//!   the parent's expiry and revoked with it).
//! * Renewal never extends past `max_expire_time` (explicit max TTL, system max, parent).
//! * A token with `num_uses` dies after its last use.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use leash_backend::fields::ROOT_POLICY;
use leash_backend::{AuthInfo, Caller, CoreError, TokenEntry};
use leash_storage::{KeyedHash, Storage, StoredToken, TokenUse};
use leash_types::cidr::{self, Cidr};
use leash_types::{Clock, ExposeSecret, SecretString, TokenKind, TokenValue, rfc3339};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::policy_store::PolicyStore;

/// Token lifetimes the operator configures.
#[derive(Debug, Clone, Copy)]
pub struct TokenLimits {
    /// TTL when none is asked for.
    pub default_ttl: Duration,
    /// Hard ceiling on every token's life.
    pub max_ttl: Duration,
}

impl Default for TokenLimits {
    fn default() -> Self {
        TokenLimits {
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Everything needed to mint a token, already validated by the caller's endpoint.
#[derive(Debug, Default, Clone)]
pub struct TokenSpec {
    /// Policies attached (before `default` is added).
    pub policies: Vec<String>,
    /// Do not add `default`.
    pub no_default_policy: bool,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Display name as given (prefixed by the creation path's kind).
    pub display_name: String,
    /// Requested TTL (None = default).
    pub ttl: Option<Duration>,
    /// Explicit max TTL.
    pub explicit_max_ttl: Option<Duration>,
    /// Period.
    pub period: Option<Duration>,
    /// Uses (0 = unlimited).
    pub num_uses: i64,
    /// Renewable.
    pub renewable: bool,
    /// Creation path (`auth/token/create`, `auth/approle/login`…).
    pub path: String,
    /// Token role.
    pub role: Option<String>,
    /// Identity entity.
    pub entity_id: String,
    /// Allowed source CIDRs.
    pub bound_cidrs: Vec<String>,
    /// A caller-chosen token value (root only).
    pub id: Option<SecretString>,
    /// Who asks for the token: decides whether it may hold `root`.
    pub issuer: Issuer,
    /// An inline scope (policy text, already validated): the token's effective ACL is
    /// bounded by it and by its parent's.
    pub scope: Option<String>,
    /// A canary token: it authenticates nothing and trips the canary when presented.
    pub canary: bool,
    /// For a canary: contain the identity it was issued to when it trips.
    pub contain_on_trip: bool,
}

/// A short, stable fingerprint of a scope's text (hex SHA-256), shown by token lookups
/// and recorded in audit entries so a reviewer can match a request to its delegation.
pub fn scope_hash(scope: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(scope.as_bytes());
    hex::encode(&d[..16])
}

/// How many levels of scoped delegation an effective ACL is computed over.
pub const MAX_SCOPE_DEPTH: usize = 32;

/// Who asks for a token to be minted. Only [`Issuer::Bootstrap`] and a root
/// [`Issuer::Token`] may mint a token holding the `root` policy; a login never can, and
/// every login token expires.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// An auth method's login (the default: the least authority).
    #[default]
    Login,
    /// `auth/token/create*` by an authenticated token; `root` says whether that token
    /// holds the root policy (it is the creator even of an orphan).
    Token {
        /// The creating token is a root token.
        root: bool,
    },
    /// The server's own root-token generation (first start, `--dev-root-token-id`).
    Bootstrap,
}

impl Issuer {
    fn may_mint_root(self) -> bool {
        matches!(self, Issuer::Bootstrap | Issuer::Token { root: true })
    }
}

/// A token that was just minted.
pub struct Minted {
    /// The value, to be shown once.
    pub value: TokenValue,
    /// The stored entry.
    pub entry: TokenEntry,
    /// Its keyed hash.
    pub hash: KeyedHash,
    /// Warnings for the caller (TTL capped…).
    pub warnings: Vec<String>,
}

/// Minting and validation of tokens over [`Storage`].
///
/// Live tokens without a use limit are cached in memory after their first lookup, so
/// the hot path (every request authenticates) usually does no storage read. The cache
/// is invalidated by every revocation and renewal in this process, and entries older
/// than [`CACHE_TTL`] are re-read, which bounds how long a revocation made by another
/// server on shared storage can go unnoticed here.
pub struct TokenStore {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    limits: TokenLimits,
    cache: std::sync::RwLock<std::collections::HashMap<KeyedHash, Cached>>,
    /// Bumped by every invalidation; a lookup that started before one may not cache
    /// what it read (it may predate a revocation).
    generation: std::sync::atomic::AtomicU64,
    /// Wakes the lease worker when tokens (and so their leases) are revoked.
    lease_wake: Arc<tokio::sync::Notify>,
    /// The core's metric state, fed by this store (live tokens per role, issuance and
    /// revocation counts).
    telemetry: Arc<crate::telemetry::Telemetry>,
}

#[derive(Clone)]
struct Cached {
    entry: Arc<TokenEntry>,
    expire_at: Option<i64>,
    loaded: std::time::Instant,
}

/// A token the expiry worker ended: expired itself, or revoked with an expired parent.
pub struct Ended {
    /// The token's properties.
    pub entry: TokenEntry,
    /// `true` for the expired token, `false` for a child revoked with it.
    pub expired: bool,
}

/// How long a cached token entry is trusted before it is read again.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Most cached token entries (the cache is emptied when full; cheap and rare).
const CACHE_MAX: usize = 100_000;

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl TokenStore {
    /// A store over `storage`, reporting to `telemetry`.
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        limits: TokenLimits,
        lease_wake: Arc<tokio::sync::Notify>,
        telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> TokenStore {
        TokenStore {
            storage,
            clock,
            limits,
            cache: std::sync::RwLock::new(std::collections::HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            lease_wake,
            telemetry,
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> TokenLimits {
        self.limits
    }

    /// The storage key of an accessor (domain-separated from token values).
    fn accessor_hash(&self, accessor: &str) -> KeyedHash {
        let locator = leash_types::token::accessor_locator(accessor).unwrap_or(0);
        self.storage
            .keyring()
            .located_hash(locator, &format!("accessor:{accessor}"))
    }

    /// The storage key of a presented token value (see `Keyring::located_hash`).
    pub fn hash(&self, value: &str) -> KeyedHash {
        let locator = leash_types::token::locator(value).unwrap_or(0);
        self.storage.keyring().located_hash(locator, value)
    }

    fn decode(stored: &StoredToken) -> Result<TokenEntry, CoreError> {
        serde_json::from_slice(&stored.entry)
            .map_err(|e| CoreError::internal(format!("stored token entry is unreadable: {e}")))
    }

    fn encode(entry: &TokenEntry) -> Result<Vec<u8>, CoreError> {
        serde_json::to_vec(entry)
            .map_err(|e| CoreError::internal(format!("cannot encode token entry: {e}")))
    }

    /// Looks up a live token by value. Expired tokens count as absent (the expiry
    /// worker removes them).
    pub async fn lookup(
        &self,
        token: &str,
    ) -> Result<Option<(KeyedHash, TokenEntry, Option<i64>)>, CoreError> {
        let presented = TokenValue::from_presented(SecretString::from(token.to_owned()));
        if token.is_empty() || token.len() > 512 || presented.is_malformed_leash_token() {
            return Ok(None);
        }
        let hash = self.hash(token);
        if let Some(c) = self.cached(&hash) {
            return Ok(Some((hash, (*c.entry).clone(), None)));
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let found = self.load(hash, |s| s.hash.ct_eq(&hash)).await?;
        if let Some((h, e, None)) = &found {
            self.remember(*h, e, generation);
        }
        Ok(found)
    }

    fn cached(&self, hash: &KeyedHash) -> Option<Cached> {
        let c = self.cache.read().ok()?.get(hash).cloned()?;
        let fresh = c.loaded.elapsed() < CACHE_TTL;
        let live = c.expire_at.is_none_or(|e| e > self.clock.unix());
        (fresh && live).then_some(c)
    }

    fn remember(&self, hash: KeyedHash, entry: &TokenEntry, generation: u64) {
        if let Ok(mut m) = self.cache.write() {
            if self.generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
                return;
            }
            if m.len() >= CACHE_MAX {
                m.clear();
            }
            m.insert(
                hash,
                Cached {
                    entry: Arc::new(entry.clone()),
                    expire_at: entry.expire_time,
                    loaded: std::time::Instant::now(),
                },
            );
        }
    }

    fn forget(&self, hashes: impl IntoIterator<Item = KeyedHash>) {
        if let Ok(mut m) = self.cache.write() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            for h in hashes {
                m.remove(&h);
            }
        }
    }

    /// Drops one cached token (changed or deleted through another server).
    pub(crate) fn forget_one(&self, hash: KeyedHash) {
        self.forget([hash]);
    }

    /// Drops every cached token (change notifications were lost).
    pub(crate) fn forget_all(&self) {
        if let Ok(mut m) = self.cache.write() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            m.clear();
        }
    }

    /// Looks up a live token by accessor.
    pub async fn lookup_accessor(
        &self,
        accessor: &str,
    ) -> Result<Option<(KeyedHash, TokenEntry, Option<i64>)>, CoreError> {
        if accessor.is_empty() || accessor.len() > 128 {
            return Ok(None);
        }
        let ah = self.accessor_hash(accessor);
        match self.storage.token_by_accessor(ah).await? {
            Some(s) if s.accessor_hash.ct_eq(&ah) => self.live(s),
            _ => Ok(None),
        }
    }

    async fn load(
        &self,
        hash: KeyedHash,
        check: impl Fn(&StoredToken) -> bool,
    ) -> Result<Option<(KeyedHash, TokenEntry, Option<i64>)>, CoreError> {
        match self.storage.token_get(hash).await? {
            Some(s) if check(&s) => self.live(s),
            _ => Ok(None),
        }
    }

    fn live(
        &self,
        s: StoredToken,
    ) -> Result<Option<(KeyedHash, TokenEntry, Option<i64>)>, CoreError> {
        if let Some(exp) = s.expire_at
            && exp <= self.clock.unix()
        {
            return Ok(None);
        }
        if s.uses_left == Some(0) {
            return Ok(None);
        }
        let mut entry = Self::decode(&s)?;
        // The parent column is the truth: `revoke-orphan` clears it for the children.
        if s.parent.is_none() {
            entry.orphan = true;
            entry.parent_accessor = None;
        }
        Ok(Some((s.hash, entry, s.uses_left)))
    }

    /// Authenticates a presented token for one request: it must exist, be unexpired,
    /// have uses left and be used from an allowed address. `None` for any failure — the
    /// caller answers "permission denied" without saying which.
    pub async fn authenticate(
        &self,
        token: &SecretString,
        remote: Option<SocketAddr>,
        policies: &PolicyStore,
    ) -> Result<Option<Caller>, CoreError> {
        Ok(self
            .authenticate_or_canary(token, remote, policies)
            .await?
            .0)
    }

    /// Like [`TokenStore::authenticate`], and when the token is a canary (refused like a
    /// revoked one), its entry too, so the caller can trip it.
    pub(crate) async fn authenticate_or_canary(
        &self,
        token: &SecretString,
        remote: Option<SocketAddr>,
        policies: &PolicyStore,
    ) -> Result<(Option<Caller>, Option<TokenEntry>), CoreError> {
        let Some((hash, entry, uses_left)) = self.lookup(token.expose_secret()).await? else {
            return Ok((None, None));
        };
        if entry.canary {
            // Exactly the answer a revoked token gets; the trip happens elsewhere.
            return Ok((None, Some(entry)));
        }
        if !entry.bound_cidrs.is_empty() {
            // A block that does not parse fails closed: the token is refused, never
            // allowed from everywhere.
            let Ok(blocks) = entry
                .bound_cidrs
                .iter()
                .map(|c| Cidr::parse(c))
                .collect::<Result<Vec<Cidr>, _>>()
            else {
                return Ok((None, None));
            };
            if !cidr::allowed(&blocks, remote.map(|r| r.ip())) {
                return Ok((None, None));
            }
        }
        // On shared storage a policy written through another server may not have been
        // announced here yet: one it does not know is read through before the ACL.
        if self.storage.shared() {
            for name in &entry.policies {
                if name != "root" && policies.get(name).is_none() {
                    policies.reload(name).await?;
                }
            }
        }
        let (acl, chain) = if entry.scoped {
            self.effective_acl(&entry, policies).await?
        } else {
            (policies.acl(&entry.policies), Vec::new())
        };
        Ok((
            Some(Caller {
                entry,
                hash,
                acl,
                uses_left,
                chain,
            }),
            None,
        ))
    }

    /// The effective ACL of a scoped token: its policies ∩ its scope ∩ its parent's
    /// effective ACL, up the chain while the ancestors are scoped too (an unscoped
    /// ancestor's effective ACL is its policies). Computed at every request, so a parent
    /// whose policies shrink shrinks its descendants at once. Also returns the accessors
    /// of the ancestors that bounded it, nearest first. A scope that no longer parses, or
    /// an ancestor that is gone, grants nothing.
    async fn effective_acl(
        &self,
        entry: &TokenEntry,
        policies: &PolicyStore,
    ) -> Result<(Arc<leash_policy::Acl>, Vec<String>), CoreError> {
        let nothing = || Arc::new(leash_policy::Acl::default());
        let mut levels = Vec::new();
        let mut chain = Vec::new();
        let mut current = entry.clone();
        for _ in 0..MAX_SCOPE_DEPTH {
            levels.push(policies.acl(&current.policies));
            if let Some(scope) = &current.scope {
                match policies.scope_acl(scope) {
                    Ok(a) => levels.push(a),
                    Err(_) => return Ok((nothing(), chain)),
                }
            }
            let Some(parent) = current.parent_accessor.clone().filter(|_| current.scoped) else {
                return Ok((leash_policy::Acl::intersection(levels), chain));
            };
            let Some((_, pe, _)) = self.lookup_accessor(&parent).await? else {
                return Ok((nothing(), chain));
            };
            chain.push(parent);
            current = pe;
        }
        // Deeper than any delegation leash lets one build: grant nothing.
        Ok((nothing(), chain))
    }

    /// Spends one use of a counted token. Returns the uses left, or `PermissionDenied`
    /// when none were.
    pub async fn spend_use(&self, caller: &Caller) -> Result<Option<i64>, CoreError> {
        if caller.uses_left.is_none() {
            return Ok(None);
        }
        match self.storage.token_use(caller.hash).await? {
            TokenUse::Unlimited => Ok(None),
            TokenUse::Remaining(n) => Ok(Some(n)),
            TokenUse::Exhausted => Err(CoreError::PermissionDenied),
        }
    }

    /// Mints and stores a token under `parent` (`None` for an orphan).
    pub async fn mint(
        &self,
        spec: TokenSpec,
        parent: Option<&Caller>,
    ) -> Result<Minted, CoreError> {
        let role = spec.role.clone();
        self.mint_for_role(spec, parent, role.as_deref()).await
    }

    /// [`TokenStore::mint`], counting the token under `metrics_role` (the auth role of a
    /// login; the token role otherwise) in the metrics.
    pub(crate) async fn mint_for_role(
        &self,
        spec: TokenSpec,
        parent: Option<&Caller>,
        metrics_role: Option<&str>,
    ) -> Result<Minted, CoreError> {
        let now = self.clock.unix();
        let mut warnings = Vec::new();
        let mut policies = leash_backend::fields::normalize_policies(spec.policies.clone());
        let is_root = policies.iter().any(|p| p == ROOT_POLICY);
        // Only root mints root: checked here, where every token is born, whatever path
        // or spelling led to it.
        if is_root && !spec.issuer.may_mint_root() {
            return Err(match spec.issuer {
                Issuer::Login => CoreError::Forbidden(
                    "this login would grant the root policy, which no auth method may grant"
                        .to_owned(),
                ),
                _ => CoreError::invalid("root tokens may only be created by a root token"),
            });
        }
        if !spec.no_default_policy && !is_root {
            policies.push("default".to_owned());
        }
        policies.sort();
        policies.dedup();

        // Lifetime: the requested TTL (or period), capped by explicit max, the system max
        // and the parent's remaining life.
        let sys_max = secs(self.limits.max_ttl);
        let mut max_expire: Option<i64> = None;
        let mut cap = |limit: i64| {
            max_expire = Some(max_expire.map_or(limit, |m: i64| m.min(limit)));
        };
        let never_expires = is_root
            && spec.ttl.is_none()
            && spec.period.is_none()
            && spec.explicit_max_ttl.is_none()
            && parent.is_none_or(|p| p.entry.expire_time.is_none());
        if !never_expires {
            cap(now + sys_max);
        }
        if let Some(m) = spec.explicit_max_ttl.filter(|d| !d.is_zero()) {
            cap(now + secs(m));
        }
        if let Some(p) = parent
            && let Some(pe) = p.entry.expire_time
        {
            cap(pe);
        }
        let wanted = if let Some(period) = spec.period.filter(|d| !d.is_zero()) {
            Some(secs(period))
        } else if never_expires {
            None
        } else {
            Some(secs(
                spec.ttl
                    .filter(|d| !d.is_zero())
                    .unwrap_or(self.limits.default_ttl),
            ))
        };
        let expire_time = match (wanted, max_expire) {
            (None, _) => None,
            (Some(w), None) => Some(now + w),
            (Some(w), Some(m)) => {
                if now + w > m {
                    warnings.push(format!(
                        "TTL of {w}s exceeded the effective max_ttl of {}s; TTL value is capped accordingly",
                        (m - now).max(0)
                    ));
                }
                Some((now + w).min(m))
            }
        };
        if expire_time.is_none() && spec.issuer == Issuer::Login {
            return Err(CoreError::internal("a login token without an expiry"));
        }
        if let Some(e) = expire_time
            && e <= now
        {
            return Err(CoreError::invalid(
                "the token's TTL would end immediately (the parent token expires now)",
            ));
        }

        let display_name = {
            let base: String = spec
                .display_name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
                .take(64)
                .collect();
            if base.is_empty() {
                "token".to_owned()
            } else if spec.path.starts_with("auth/token/") && spec.path != "auth/token/root" {
                // Vault's naming: token-store tokens are `token-<name>`; the root token
                // is plain `root` (so its database usernames read `v-root-…`).
                format!("token-{base}")
            } else {
                base
            }
        };

        let value = match &spec.id {
            Some(id) => {
                TokenValue::from_presented(SecretString::from(id.expose_secret().to_owned()))
            }
            None => TokenValue::generate(TokenKind::Service),
        };
        let accessor = leash_types::token::new_accessor();
        let entry = TokenEntry {
            accessor: accessor.clone(),
            policies,
            meta: spec.meta,
            display_name,
            path: spec.path,
            creation_time: now,
            creation_ttl: wanted
                .map(|w| expire_time.map_or(w, |e| e - now))
                .unwrap_or(0)
                .max(0) as u64,
            explicit_max_ttl: spec.explicit_max_ttl.map(|d| d.as_secs()).unwrap_or(0),
            period: spec.period.map(|d| d.as_secs()).unwrap_or(0),
            num_uses: spec.num_uses,
            renewable: spec.renewable && expire_time.is_some(),
            orphan: parent.is_none(),
            role: spec.role,
            entity_id: spec.entity_id,
            bound_cidrs: spec.bound_cidrs,
            expire_time,
            max_expire_time: max_expire,
            last_renewal: None,
            parent_accessor: parent.map(|p| p.entry.accessor.clone()),
            metrics_role: metrics_role.map(str::to_owned),
            scoped: spec.scope.is_some() || parent.is_some_and(|p| p.entry.scoped),
            scope: spec.scope,
            trace_id: crate::events::current()
                .map(|c| c.trace_id.clone())
                .unwrap_or_default(),
            canary: spec.canary,
            contain_on_trip: spec.contain_on_trip,
        };
        let hash = self.hash(value.expose());
        let stored = StoredToken {
            hash,
            accessor_hash: self.accessor_hash(&accessor),
            parent: parent.map(|p| p.hash),
            expire_at: expire_time,
            uses_left: (spec.num_uses > 0).then_some(spec.num_uses),
            entry: Zeroizing::new(Self::encode(&entry)?),
        };
        match self.storage.token_insert(stored).await {
            Ok(()) => {}
            Err(leash_storage::StorageError::Conflict(_)) => {
                return Err(CoreError::invalid("a token with that id already exists"));
            }
            Err(e) => return Err(e.into()),
        }
        self.telemetry.token_minted(
            hash,
            metrics_role.unwrap_or(crate::telemetry::NO_ROLE),
            now,
            expire_time,
        );
        Ok(Minted {
            value,
            entry,
            hash,
            warnings,
        })
    }

    /// Renews a token by `increment` (or its creation TTL), never past its max.
    /// Returns the updated entry and warnings.
    pub async fn renew(
        &self,
        hash: KeyedHash,
        mut entry: TokenEntry,
        increment: Option<Duration>,
    ) -> Result<(TokenEntry, Vec<String>), CoreError> {
        let now = self.clock.unix();
        let mut warnings = Vec::new();
        let Some(_) = entry.expire_time else {
            // Non-expiring (root) tokens: nothing to extend.
            return Ok((entry, warnings));
        };
        if !entry.renewable {
            return Err(CoreError::invalid("lease is not renewable"));
        }
        let want = if entry.period > 0 {
            i64::try_from(entry.period).unwrap_or(i64::MAX)
        } else {
            increment
                .filter(|d| !d.is_zero())
                .map(secs)
                .unwrap_or_else(|| i64::try_from(entry.creation_ttl).unwrap_or(i64::MAX))
        };
        let mut new_exp = now.saturating_add(want);
        if let Some(max) = entry.max_expire_time
            && new_exp > max
        {
            warnings.push(format!(
                    "TTL of {want}s exceeded the effective max_ttl of {}s; TTL value is capped accordingly",
                    (max - now).max(0)
                ));
            new_exp = max;
        }
        if new_exp <= now {
            return Err(CoreError::invalid(
                "token has reached its maximum TTL and cannot be renewed",
            ));
        }
        entry.expire_time = Some(new_exp);
        entry.last_renewal = Some(now);
        if !self
            .storage
            .token_update(hash, Some(new_exp), Self::encode(&entry)?)
            .await?
        {
            return Err(CoreError::invalid("token not found"));
        }
        self.forget([hash]);
        self.telemetry.token_renewed(&hash, entry.expire_time);
        Ok((entry, warnings))
    }

    /// Revokes a token and its subtree (or only the token, orphaning its children).
    /// Returns the revoked entries, the token itself first.
    pub async fn revoke(
        &self,
        hash: KeyedHash,
        orphan_children: bool,
    ) -> Result<Vec<TokenEntry>, CoreError> {
        let gone = self
            .storage
            .token_delete_tree(hash, orphan_children, self.clock.unix())
            .await?;
        self.forget(gone.iter().map(|t| t.hash));
        self.lease_wake.notify_one();
        if orphan_children {
            // The children changed (they are orphans now) but are not known here by
            // hash; revoke-orphan is rare (sudo), so drop every cached entry.
            if let Ok(mut m) = self.cache.write() {
                m.clear();
            }
        }
        let entries: Vec<TokenEntry> = gone.iter().map(Self::decode).collect::<Result<_, _>>()?;
        self.telemetry.tokens_ended(
            gone.iter()
                .zip(&entries)
                .map(|(s, e)| (s.hash, e.role.as_deref())),
            "revoked",
        );
        Ok(entries)
    }

    /// Puts every live stored token back into the token gauges (after a restart, or
    /// for tokens another server minted on shared storage): walks the live tokens page
    /// by page through the storage index and reads each one's metrics role. Returns how
    /// many were tracked. Tokens minted or ended meanwhile are tracked by their own
    /// calls; a token revoked while its page was being read may stay in the gauges
    /// until it would have expired.
    pub(crate) async fn rebuild_gauges(&self) -> Result<usize, CoreError> {
        const PAGE: usize = 1000;
        let now = self.clock.unix();
        let mut after = None;
        let mut n = 0;
        loop {
            let page = self.storage.tokens_live_page(now, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.hash);
            for t in &page {
                let Ok(e) = Self::decode(t) else { continue };
                if let Some(role) = e.metrics_role.as_deref().or(e.role.as_deref())
                    && self
                        .telemetry
                        .token_restored(t.hash, role, e.creation_time, t.expire_at)
                {
                    n += 1;
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(n)
    }

    /// The accessors of every live token, sorted (`LIST auth/token/accessors`): a walk
    /// over the live tokens page by page, like [`TokenStore::rebuild_gauges`].
    pub(crate) async fn live_accessors(&self) -> Result<Vec<String>, CoreError> {
        const PAGE: usize = 1000;
        let now = self.clock.unix();
        let mut after = None;
        let mut out = Vec::new();
        loop {
            let page = self.storage.tokens_live_page(now, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.hash);
            for t in &page {
                if t.uses_left == Some(0) {
                    continue;
                }
                if let Ok(e) = Self::decode(t) {
                    out.push(e.accessor);
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Every live token with its entry (the kill switch walks them to find an agent's
    /// tokens and their subtrees), page by page like [`TokenStore::live_accessors`].
    pub(crate) async fn live_entries(&self) -> Result<Vec<(KeyedHash, TokenEntry)>, CoreError> {
        const PAGE: usize = 1000;
        let now = self.clock.unix();
        let mut after = None;
        let mut out = Vec::new();
        loop {
            let page = self.storage.tokens_live_page(now, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.hash);
            for t in &page {
                if t.uses_left == Some(0) {
                    continue;
                }
                if let Ok(e) = Self::decode(t) {
                    out.push((t.hash, e));
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(out)
    }

    /// Revokes every token expired by now (and their subtrees); returns what ended, each
    /// expired token first and then the children revoked with it.
    pub async fn revoke_expired(&self, limit: usize) -> Result<Vec<Ended>, CoreError> {
        let now = self.clock.unix();
        let mut ended = Vec::new();
        for h in self.storage.tokens_expired(now, limit).await? {
            let gone = self.storage.token_delete_tree(h, false, now).await?;
            self.forget(gone.iter().map(|t| t.hash));
            // An unreadable entry still ended; it only gets no event.
            let entries: Vec<Option<TokenEntry>> =
                gone.iter().map(|t| Self::decode(t).ok()).collect();
            self.telemetry.tokens_ended(
                gone.iter()
                    .zip(&entries)
                    .map(|(t, e)| (t.hash, e.as_ref().and_then(|e| e.role.as_deref()))),
                "expired",
            );
            for (i, (t, e)) in gone.iter().zip(entries).enumerate() {
                if let Some(entry) = e {
                    ended.push(Ended {
                        entry,
                        expired: i == 0 && t.hash == h,
                    });
                }
            }
        }
        if !ended.is_empty() {
            self.lease_wake.notify_one();
        }
        Ok(ended)
    }

    /// The `auth` block for a new token.
    pub fn auth_info(&self, m: &Minted) -> AuthInfo {
        // The TTL granted, counted from the token's creation: a second boundary crossed
        // while the answer is built must not shave a second off (899 for a 15m TTL).
        let now = m.entry.creation_time;
        AuthInfo {
            client_token: SecretString::from(m.value.expose().to_owned()),
            accessor: m.entry.accessor.clone(),
            policies: m.entry.policies.clone(),
            token_policies: m.entry.policies.clone(),
            metadata: m.entry.meta.clone(),
            display_name: m.entry.display_name.clone(),
            lease_duration: m
                .entry
                .expire_time
                .map(|e| (e - now).max(0) as u64)
                .unwrap_or(0),
            renewable: m.entry.renewable,
            entity_id: m.entry.entity_id.clone(),
            token_type: "service".to_owned(),
            orphan: m.entry.orphan,
            num_uses: m.entry.num_uses,
        }
    }

    /// Vault's token lookup data. `id` is the token value when the caller presented it,
    /// `""` for accessor lookups.
    pub fn lookup_data(&self, entry: &TokenEntry, id: &str, uses_left: Option<i64>) -> Value {
        let now = self.clock.unix();
        let ttl = entry.expire_time.map(|e| (e - now).max(0)).unwrap_or(0);
        let mut d = json!({
            "accessor": entry.accessor,
            "creation_time": entry.creation_time,
            "creation_ttl": entry.creation_ttl,
            "display_name": entry.display_name,
            "entity_id": entry.entity_id,
            "expire_time": entry.expire_time.map(rfc3339),
            "explicit_max_ttl": entry.explicit_max_ttl,
            "id": id,
            "issue_time": rfc3339(entry.creation_time),
            "meta": if entry.meta.is_empty() { Value::Null } else { json!(entry.meta) },
            "num_uses": uses_left.unwrap_or(0),
            "orphan": entry.orphan,
            "path": entry.path,
            "policies": entry.policies,
            "renewable": entry.renewable,
            "ttl": ttl,
            "type": "service",
        });
        if let Some(obj) = d.as_object_mut() {
            if let Some(lr) = entry.last_renewal {
                obj.insert("last_renewal".into(), json!(rfc3339(lr)));
                obj.insert("last_renewal_time".into(), json!(lr));
            }
            if entry.period > 0 {
                obj.insert("period".into(), json!(entry.period));
            }
            if let Some(r) = &entry.role {
                obj.insert("role".into(), json!(r));
            }
            if !entry.bound_cidrs.is_empty() {
                obj.insert("bound_cidrs".into(), json!(entry.bound_cidrs));
            }
            if let Some(s) = &entry.scope {
                obj.insert("scope".into(), json!(s));
                obj.insert("scope_hash".into(), json!(scope_hash(s)));
            }
            if entry.scoped {
                obj.insert("scoped".into(), json!(true));
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leash_storage::{Keyring, SqliteStorage};
    use leash_types::SystemClock;

    async fn store() -> (tempfile::TempDir, TokenStore, PolicyStore) {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::from_master(&Keyring::generate_master()).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path(), keyring).unwrap());
        let policies = PolicyStore::load(Arc::clone(&storage)).await.unwrap();
        let tokens = TokenStore::new(
            storage,
            Arc::new(SystemClock),
            TokenLimits::default(),
            Arc::new(tokio::sync::Notify::new()),
            Arc::default(),
        );
        (dir, tokens, policies)
    }

    async fn mint_bound(tokens: &TokenStore, cidrs: &[&str]) -> String {
        let spec = TokenSpec {
            path: "auth/token/create".into(),
            renewable: true,
            bound_cidrs: cidrs.iter().map(|c| (*c).to_owned()).collect(),
            ..TokenSpec::default()
        };
        tokens
            .mint(spec, None)
            .await
            .unwrap()
            .value
            .expose()
            .to_owned()
    }

    /// A bound CIDR that does not parse (only bad stored data can hold one: roles
    /// validate on write) makes the token unusable, never usable from anywhere.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unparseable_bound_cidrs_fail_closed() {
        let (_dir, tokens, policies) = store().await;
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let good = mint_bound(&tokens, &["127.0.0.1/32"]).await;
        let bad = mint_bound(&tokens, &["127.0.0.1/32", "not-a-cidr"]).await;
        let auth = |t: String| {
            let (tokens, policies) = (&tokens, &policies);
            async move {
                tokens
                    .authenticate(&SecretString::from(t), Some(local), policies)
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        assert!(auth(good).await);
        assert!(!auth(bad).await);
    }
}
