//! The contract between the core and every secrets engine or auth method.
//!
//! The core resolves the mount by longest prefix, checks the token and the ACL, writes
//! the audit request entry, and only then calls [`Backend::handle`] with the path
//! relative to the mount. Backends therefore never do authorization or audit themselves.
//! A backend instance serves exactly one mount.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use leash_types::Operation;
use serde_json::{Map, Value};

use crate::caller::Caller;
use crate::error::CoreError;
use crate::lease::LeaseRecord;
use crate::mount::MountEntry;
use crate::request::Response;
use crate::routes::Routes;

/// What a backend sees of a request.
pub struct BackendRequest<'a> {
    /// The request id.
    pub id: &'a str,
    /// The operation (create vs update already decided).
    pub operation: Operation,
    /// Path relative to the mount, e.g. `data/agents/config` for `secret/data/agents/config`.
    pub path: &'a str,
    /// Body (writes) or query parameters (reads).
    pub data: &'a Map<String, Value>,
    /// The mount this backend serves.
    pub mount: &'a MountEntry,
    /// The authenticated caller; `None` when no valid token was presented, which only
    /// an unauthenticated path lets through.
    pub caller: Option<&'a Caller>,
    /// The real peer address.
    pub remote_addr: Option<SocketAddr>,
    /// The presented token. Only the token backend reads it (`lookup-self` returns it
    /// to its owner as `id`); other backends must not.
    pub token: Option<&'a leash_types::SecretString>,
    /// The just-in-time grant the request runs under (the approval gate opened it): a
    /// lease begun under it is capped to the grant's window.
    pub grant: Option<&'a GrantWindow>,
}

/// An open just-in-time grant a request runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantWindow {
    /// The access request that granted it.
    pub request_id: String,
    /// Unix seconds at which the grant's window closes.
    pub window_ends_at: i64,
}

impl BackendRequest<'_> {
    /// The path as a dispatch key: a list's trailing `/` dropped (`roles/` and `roles`
    /// name the same directory to a list). Other operations never carry a trailing `/`:
    /// the core canonicalises them before the ACL.
    pub fn dispatch_path(&self) -> &str {
        if self.operation == Operation::List {
            self.path.strip_suffix('/').unwrap_or(self.path)
        } else {
            self.path
        }
    }

    /// A string field, if present and a string.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }
}

/// A secrets engine or auth method mounted at one path.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Vault's existence check, used to tell `create` from `update` for POST/PUT:
    /// `Some(true)` if the target exists (→ update), `Some(false)` if not (→ create),
    /// `None` if the path does not distinguish (→ update).
    async fn exists(&self, _req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        Ok(None)
    }

    /// Handles a request. `Ok(None)` means "nothing here": 404 for reads and lists,
    /// 204 for writes and deletes.
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError>;

    /// The paths this backend serves, with their `sudo`, unauthenticated and
    /// case-folding marks ([`Routes`]). The core matches the canonical request path
    /// against it once, before authentication and the ACL, and refuses a path the table
    /// does not list. The default serves every path under the mount with no marks.
    fn routes(&self) -> Routes<'_> {
        Routes::Any
    }

    /// An entry of this mount's storage namespace changed through another server sharing
    /// the storage (`key` within the namespace), or anything may have changed (`None`):
    /// drop whatever is cached from it. The default caches nothing.
    fn storage_changed(&self, _key: Option<&str>) {}

    /// Extends a lease this backend issued in its target, to `lease.expire_at` (the new
    /// expiry, already capped by the core). The default does nothing.
    async fn renew_lease(&self, _lease: &LeaseRecord) -> Result<(), CoreError> {
        Ok(())
    }

    /// Revokes leases this backend issued: one result per lease, in order. `Ok` means
    /// the credential no longer exists in the target (including "never existed": a
    /// lease may be revoked before or without its credential being created). Errors must
    /// not contain secrets; they are stored as the lease's last error. The default has
    /// nothing to revoke.
    async fn revoke_leases(&self, leases: &[LeaseRecord]) -> Vec<Result<(), CoreError>> {
        leases.iter().map(|_| Ok(())).collect()
    }

    // Hooks through which the core's session observer, leak response and metrics learn
    // what they need of an engine's credentials without knowing the engine. Each
    // default says "this engine has nothing of the kind".

    /// The sessions currently open in this engine's targets with credentials it
    /// issued, for the session observer; `Ok(None)` if the engine has nothing to
    /// observe (the default, and an engine whose observation is switched off).
    async fn observe_sessions(&self) -> Result<Option<Vec<ObservedSession>>, CoreError> {
        Ok(None)
    }

    /// How a credential this engine leased (with `internal`, the data it gave
    /// [`crate::LeaseRegistry::begin`]) shows in its target's sessions and in leaked
    /// text: the database user name. `None` (the default): no such identity.
    fn credential_identity<'a>(&self, _internal: &'a Value) -> Option<&'a str> {
        None
    }

    /// Words of `text` that may be [`Backend::credential_identity`]s of this engine's
    /// credentials, for the leak scan (each is then compared with the live leases). The
    /// default finds none.
    fn leak_candidates(&self, _text: &str) -> BTreeSet<String> {
        BTreeSet::new()
    }

    /// The role label of the lease at `path` (below the mount) in the lease metrics;
    /// `""` (the default) for an engine without roles.
    fn lease_role<'p>(&self, _path: &'p str) -> &'p str {
        ""
    }

    /// Whether the credential this engine leased (with `internal`, as for
    /// [`Backend::credential_identity`]) is a canary: `Some` says so, and what to do
    /// when it is used. `None` (the default): a real credential.
    fn canary(&self, _internal: &Value) -> Option<Canary> {
        None
    }

    /// Called when the identity holding these leases is being locked
    /// (`sys/containment/lock`; `lock` names the lock, e.g. `entity/<id>`), just before
    /// they are revoked through [`Backend::revoke_leases`]. An engine whose credentials
    /// cannot be revoked in their target (AWS STS sessions) does here what else ends
    /// them, and records it so [`Backend::release_lock`] can undo it. The default does
    /// nothing.
    async fn contain_leases(&self, leases: &[LeaseRecord], lock: &str) -> Result<(), CoreError> {
        let _ = (leases, lock);
        Ok(())
    }

    /// Undoes what [`Backend::contain_leases`] did for `lock`, when it is unlocked.
    /// The default has nothing to undo.
    async fn release_lock(&self, lock: &str) -> Result<(), CoreError> {
        let _ = lock;
        Ok(())
    }
}

/// What an engine says of a canary credential ([`Backend::canary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    /// Run the kill switch on the identity it was issued to when it is used.
    pub contain_on_trip: bool,
}

/// A session open in an engine's target with a credential the engine issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSession {
    /// The target it is open in (the database connection's name).
    pub target: String,
    /// The target's id of the session (PostgreSQL backend pid, MySQL connection id).
    pub id: String,
    /// The credential's identity as the target names it (the database user).
    pub identity: String,
    /// The client's address; `None` for a local (Unix-socket) session.
    pub client_addr: Option<IpAddr>,
}

/// Matches a relative path against a route pattern: literal segments, `:name` for one
/// segment, and a final `*` for the rest (possibly empty: `data/*` matches `data` too).
/// Returns the captured segments in order (the rest last).
pub fn match_route<'p>(pattern: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut caps = Vec::new();
    let mut rest = path;
    let segs: Vec<&str> = pattern.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i == segs.len() - 1;
        if *seg == "*" && last {
            caps.push(rest);
            return Some(caps);
        }
        let (head, tail) = match rest.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (rest, None),
        };
        if let Some(_name) = seg.strip_prefix(':') {
            if head.is_empty() {
                return None;
            }
            caps.push(head);
        } else if *seg != head {
            return None;
        }
        match (last, tail) {
            (true, None) => return Some(caps),
            (true, Some("")) => return Some(caps), // trailing slash (lists)
            (true, Some(_)) => return None,
            (false, Some(t)) => rest = t,
            (false, None) => {
                // Pattern continues but path ended: only a final `*` may match empty.
                return if segs.len() == i + 2 && segs[i + 1] == "*" {
                    caps.push("");
                    Some(caps)
                } else {
                    None
                };
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::match_route;

    #[test]
    fn routes_match_literals_params_and_rest() {
        assert_eq!(match_route("config", "config"), Some(vec![]));
        assert_eq!(match_route("config", "configs"), None);
        assert_eq!(match_route("data/*", "data/a/b"), Some(vec!["a/b"]));
        assert_eq!(match_route("data/*", "data"), Some(vec![""]));
        assert_eq!(match_route("roles/:name", "roles/x"), Some(vec!["x"]));
        assert_eq!(match_route("roles/:name", "roles/"), None);
        assert_eq!(match_route("roles/", "roles/"), Some(vec![]));
        assert_eq!(match_route("create/:role", "create/r1"), Some(vec!["r1"]));
        assert_eq!(match_route("lookup", "lookup/x"), None);
        assert_eq!(match_route("metadata/*", "metadata/"), Some(vec![""]));
    }
}
