//! The router: which backend serves which path prefix.
//!
//! Two tables, as in Vault: secrets engines (`sys/mounts`) and auth methods
//! (`sys/auth`, routed under `auth/`). Both persist as one JSON document each, changed
//! atomically; the router is an immutable snapshot swapped on change, so lookups never
//! lock. Lookup is longest-prefix by segment: O(number of segments), independent of how
//! many mounts exist.

use std::collections::HashMap;
use std::sync::Arc;

use leash_backend::{Backend, MountEntry, MountTable};

/// A mount with its live backend.
#[derive(Clone)]
pub struct Mounted {
    /// The entry.
    pub entry: Arc<MountEntry>,
    /// The backend serving it.
    pub backend: Arc<dyn Backend>,
}

/// An immutable snapshot of both tables, keyed by routing prefix.
#[derive(Clone, Default)]
pub struct Router {
    by_prefix: HashMap<String, Mounted>,
}

impl Router {
    /// Builds a router from mounted backends.
    pub fn new(mounts: impl IntoIterator<Item = Mounted>) -> Router {
        Router {
            by_prefix: mounts
                .into_iter()
                .map(|m| (m.entry.route_prefix(), m))
                .collect(),
        }
    }

    /// The mount whose prefix is the longest match for `path`, and the path relative to
    /// it. `secret` (no slash) matches the `secret/` mount with an empty relative path.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&Mounted, &'p str)> {
        let mut best: Option<(&Mounted, &'p str)> = None;
        // Candidate prefixes end at each '/' (inclusive), plus the whole path + '/'.
        for (i, b) in path.bytes().enumerate() {
            if b == b'/'
                && let Some(m) = self.by_prefix.get(&path[..=i])
            {
                best = Some((m, &path[i + 1..]));
            }
        }
        if !path.ends_with('/') {
            let with_slash = format!("{path}/");
            if let Some(m) = self.by_prefix.get(&with_slash) {
                best = Some((m, ""));
            }
        }
        best
    }

    /// Every mount of a table, sorted by path.
    pub fn entries(&self, table: MountTable) -> Vec<Arc<MountEntry>> {
        let mut v: Vec<_> = self
            .by_prefix
            .values()
            .filter(|m| m.entry.table == table)
            .map(|m| Arc::clone(&m.entry))
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// Every mount, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = &Mounted> {
        self.by_prefix.values()
    }

    /// The mount at exactly this path in a table.
    pub fn get(&self, table: MountTable, path: &str) -> Option<&Mounted> {
        self.by_prefix
            .values()
            .find(|m| m.entry.table == table && m.entry.path == path)
    }
}
