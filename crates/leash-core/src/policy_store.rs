//! ACL policies: storage, built-ins and compiled-ACL caching.
//!
//! `root` is built in and immutable (never stored). `default` is stored at first start
//! from Vault's built-in text; it can be edited but not deleted. Names are lower-cased
//! (as Vault does) and restricted to `[a-z0-9_.@-]` plus `/` is refused, so a name can
//! never smuggle a path.
//!
//! Compiling an ACL costs far more than checking one, so compiled ACLs are cached by
//! their (sorted) policy set and the cache is dropped whenever any policy changes.
//! With several servers on shared storage a policy change reaches the others when their
//! cache entry is rebuilt; the PostgreSQL backend will add a change counter for that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use leash_backend::CoreError;
use leash_policy::{Acl, PolicyDoc, parse_policy};
use leash_storage::Storage;

pub(crate) const NS: &str = "sys/policy";
/// Most distinct policy sets whose ACLs are cached.
const ACL_CACHE_MAX: usize = 4096;
/// Most compiled scopes kept (emptied when full).
const SCOPE_CACHE_MAX: usize = 4096;

/// A stored policy: its name and original text (returned verbatim on read).
#[derive(Clone)]
pub struct StoredPolicy {
    /// Lower-cased name.
    pub name: String,
    /// The HCL or JSON as written.
    pub text: String,
    /// Parsed form.
    pub doc: Arc<PolicyDoc>,
}

/// Policy persistence plus the ACL cache.
pub struct PolicyStore {
    storage: Arc<dyn Storage>,
    docs: RwLock<HashMap<String, StoredPolicy>>,
    acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
    /// Bumped (under the `acls` lock) by every invalidation, so an ACL compiled from
    /// policies that changed meanwhile is never cached.
    generation: AtomicU64,
    /// Compiled inline token scopes, by their text.
    scopes: RwLock<HashMap<String, Arc<Acl>>>,
}

/// Checks and normalises a policy name.
pub fn normalise_name(name: &str) -> Result<String, CoreError> {
    let n = name.trim().to_ascii_lowercase();
    if n.is_empty() {
        return Err(CoreError::invalid("policy name is missing"));
    }
    if n.len() > 128
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
    {
        return Err(CoreError::invalid(format!(
            "invalid policy name {name:?}: use letters, digits, '_', '-', '.', '@' (at most 128)"
        )));
    }
    Ok(n)
}

impl PolicyStore {
    /// Loads every stored policy, writing `default` first if it is missing.
    pub async fn load(storage: Arc<dyn Storage>) -> Result<PolicyStore, CoreError> {
        let store = PolicyStore {
            storage,
            docs: RwLock::new(HashMap::new()),
            acls: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            scopes: RwLock::new(HashMap::new()),
        };
        if store.storage.get(NS, "default").await?.is_none() {
            store
                .storage
                .put(
                    NS,
                    "default",
                    leash_policy::DEFAULT_POLICY.as_bytes().to_vec(),
                )
                .await?;
        }
        let mut docs = HashMap::new();
        for name in store.storage.list(NS, "").await? {
            if let Some(text) = store.storage.get(NS, &name).await? {
                let text = String::from_utf8(text.to_vec()).map_err(|_| {
                    CoreError::internal(format!("stored policy {name} is not UTF-8"))
                })?;
                let doc = parse_policy(&name, &text).map_err(|e| {
                    CoreError::internal(format!("stored policy {name} no longer parses: {e}"))
                })?;
                docs.insert(
                    name.clone(),
                    StoredPolicy {
                        name,
                        text,
                        doc: Arc::new(doc),
                    },
                );
            }
        }
        *store
            .docs
            .write()
            .map_err(|_| CoreError::internal("policy lock poisoned"))? = docs;
        Ok(store)
    }

    /// Names of all policies, sorted, `root` included (as Vault lists it).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .docs
            .read()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        v.push("root".to_owned());
        v.sort();
        v
    }

    /// A policy by name (`root` has no text and is not returned).
    pub fn get(&self, name: &str) -> Option<StoredPolicy> {
        self.docs.read().ok()?.get(name).cloned()
    }

    /// Parses, stores and activates a policy.
    pub async fn put(&self, name: &str, text: &str) -> Result<(), CoreError> {
        let name = normalise_name(name)?;
        if name == "root" {
            return Err(CoreError::invalid("cannot update the root policy"));
        }
        if text.trim().is_empty() {
            return Err(CoreError::invalid(
                "'policy' parameter not supplied or empty",
            ));
        }
        let doc = parse_policy(&name, text)
            .map_err(|e| CoreError::invalid(format!("failed to parse policy: {e}")))?;
        self.storage
            .put(NS, &name, text.as_bytes().to_vec())
            .await?;
        let entry = StoredPolicy {
            name: name.clone(),
            text: text.to_owned(),
            doc: Arc::new(doc),
        };
        self.docs
            .write()
            .map_err(|_| CoreError::internal("policy lock poisoned"))?
            .insert(name, entry);
        self.invalidate();
        Ok(())
    }

    /// Deletes a policy; deleting one that does not exist succeeds (as in Vault).
    pub async fn delete(&self, name: &str) -> Result<(), CoreError> {
        let name = normalise_name(name)?;
        match name.as_str() {
            "root" => return Err(CoreError::invalid("cannot delete \"root\" policy")),
            "default" => return Err(CoreError::invalid("cannot delete \"default\" policy")),
            _ => {}
        }
        self.storage.delete(NS, &name).await?;
        self.docs
            .write()
            .map_err(|_| CoreError::internal("policy lock poisoned"))?
            .remove(&name);
        self.invalidate();
        Ok(())
    }

    /// Re-reads one policy from storage (it changed through another server): present,
    /// it replaces the cached one; absent, it is dropped. Compiled ACLs are dropped.
    pub(crate) async fn reload(&self, name: &str) -> Result<(), CoreError> {
        // Fresh: a read-through must see a policy another server wrote a moment ago.
        let stored = self.storage.get_fresh(NS, name).await?;
        let entry = match stored {
            Some(text) => {
                let text = String::from_utf8(text.to_vec()).map_err(|_| {
                    CoreError::internal(format!("stored policy {name} is not UTF-8"))
                })?;
                let doc = parse_policy(name, &text).map_err(|e| {
                    CoreError::internal(format!("stored policy {name} no longer parses: {e}"))
                })?;
                Some(StoredPolicy {
                    name: name.to_owned(),
                    text,
                    doc: Arc::new(doc),
                })
            }
            None => None,
        };
        {
            let mut docs = self
                .docs
                .write()
                .map_err(|_| CoreError::internal("policy lock poisoned"))?;
            match entry {
                Some(e) => docs.insert(name.to_owned(), e),
                None => docs.remove(name),
            };
        }
        self.invalidate();
        Ok(())
    }

    /// Re-reads every policy (change notifications were lost).
    pub(crate) async fn reload_all(&self) -> Result<(), CoreError> {
        let stored = self.storage.list(NS, "").await?;
        let cached: Vec<String> = self
            .docs
            .read()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        for name in cached.iter().filter(|n| !stored.contains(n)) {
            self.reload(name).await?;
        }
        for name in &stored {
            self.reload(name).await?;
        }
        Ok(())
    }

    /// Drops the compiled ACLs (they are rebuilt from the cached policies on demand).
    pub(crate) fn clear_compiled(&self) {
        self.invalidate();
    }

    fn invalidate(&self) {
        if let Ok(mut a) = self.acls.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            a.clear();
        }
        if let Ok(mut s) = self.scopes.write() {
            s.clear();
        }
    }

    /// The compiled ACL of an inline token scope (policy text in HCL or JSON), cached by
    /// its text. Errors name the line, as for `sys/policy`.
    pub fn scope_acl(&self, text: &str) -> Result<Arc<Acl>, CoreError> {
        if let Some(a) = self.scopes.read().ok().and_then(|m| m.get(text).cloned()) {
            return Ok(a);
        }
        let doc = leash_policy::parse_policy("scope", text)
            .map_err(|e| CoreError::invalid(format!("scope: {e}")))?;
        // A scope narrows what the token may do with what it holds, never its hold on
        // itself: the `default` policy's self-service paths (lookup-self, renew-self,
        // revoke-self, capabilities-self, its own leases) stay reachable, as far as the
        // token's other levels allow them.
        let default = self
            .docs
            .read()
            .ok()
            .and_then(|d| d.get("default").map(|p| Arc::clone(&p.doc)));
        let acl = match &default {
            Some(d) => Arc::new(Acl::compile(&[&doc, d.as_ref()])),
            None => Arc::new(Acl::compile(&[&doc])),
        };
        if let Ok(mut m) = self.scopes.write() {
            if m.len() >= SCOPE_CACHE_MAX {
                m.clear();
            }
            m.insert(text.to_owned(), Arc::clone(&acl));
        }
        Ok(acl)
    }

    /// The compiled ACL for a set of policy names. Unknown names grant nothing (a token
    /// may outlive a deleted policy). `root` anywhere in the set yields the root ACL.
    pub fn acl(&self, policies: &[String]) -> Arc<Acl> {
        // Token entries keep their policies sorted and deduplicated, so the hot path
        // (every authenticated request) looks up without allocating.
        if policies.windows(2).all(|w| w[0] < w[1])
            && let Some(a) = self.acls.read().ok().and_then(|m| m.get(policies).cloned())
        {
            return a;
        }
        let mut key: Vec<String> = policies.to_vec();
        key.sort();
        key.dedup();
        if let Some(a) = self.acls.read().ok().and_then(|m| m.get(&key).cloned()) {
            return a;
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let acl = if key.iter().any(|p| p == "root") {
            Arc::new(Acl::root())
        } else {
            let docs = self.docs.read().map(|d| {
                key.iter()
                    .filter_map(|n| d.get(n).map(|p| Arc::clone(&p.doc)))
                    .collect::<Vec<_>>()
            });
            let docs = docs.unwrap_or_default();
            let refs: Vec<&PolicyDoc> = docs.iter().map(|d| d.as_ref()).collect();
            Arc::new(Acl::compile(&refs))
        };
        if let Ok(mut m) = self.acls.write() {
            // A policy changed while this was compiled from the old text: use it for this
            // request only (it raced with the change), never cache it.
            if self.generation.load(Ordering::SeqCst) == generation {
                if m.len() >= ACL_CACHE_MAX {
                    m.clear();
                }
                m.insert(key, Arc::clone(&acl));
            }
        }
        acl
    }
}
