//! The hot-entry cache: recently read entries (and absences) kept in memory so a
//! policy-checked KV read costs PostgreSQL nothing, invalidated by the change
//! notifications every server receives.
//!
//! Correctness rests on three rules:
//! * an entry is only cached while this server is listening for changes (a dropped
//!   notification connection empties the cache and bypasses it until `LISTEN` is back);
//! * every invalidation bumps a generation, and a value read from PostgreSQL is only
//!   inserted if the generation has not moved since the read began, so a change that
//!   lands while a read is in flight can never be overwritten by the older value;
//! * this server's own writes evict synchronously (read-your-writes), and nothing is
//!   trusted for more than [`MAX_AGE`] (bounding staleness if a notification were ever
//!   lost without the connection dropping).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Plain;

/// How long a cached entry is trusted without a re-read.
const MAX_AGE: Duration = Duration::from_secs(2);
/// At most this many entries are cached.
const CAPACITY: usize = 8_192;
/// Larger values are not cached (they are rarely hot and would crowd out the rest).
const MAX_VALUE: usize = 64 * 1024;

struct Slot {
    value: Option<Plain>,
    at: Instant,
}

#[derive(Default)]
struct State {
    map: HashMap<(String, String), Slot>,
    generation: u64,
    listening: bool,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct EntryCache {
    state: Mutex<State>,
}

/// A read's ticket: the generation when it began.
#[derive(Clone, Copy)]
pub(super) struct Ticket(Option<u64>);

impl EntryCache {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update; the map stays valid
        // (at worst an entry is missing).
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        f(&mut s)
    }

    /// The cached value of `(ns, key)`: `Some(None)` is a cached absence; `None` a miss,
    /// with the ticket to [`EntryCache::fill`] after reading PostgreSQL.
    pub(super) fn get(&self, ns: &str, key: &str) -> Result<Option<Plain>, Ticket> {
        self.with(|s| {
            if !s.listening {
                return Err(Ticket(None));
            }
            let k = (ns.to_owned(), key.to_owned());
            match s.map.get(&k) {
                Some(slot) if slot.at.elapsed() < MAX_AGE => Ok(slot.value.clone()),
                Some(_) => {
                    s.map.remove(&k);
                    Err(Ticket(Some(s.generation)))
                }
                None => Err(Ticket(Some(s.generation))),
            }
        })
    }

    /// Caches what a read that began with `ticket` found, unless anything was
    /// invalidated since (or the value is too large, or the cache is bypassed).
    pub(super) fn fill(&self, ticket: Ticket, ns: &str, key: &str, value: Option<&Plain>) {
        let Ticket(Some(generation)) = ticket else {
            return;
        };
        if value.is_some_and(|v| v.len() > MAX_VALUE) {
            return;
        }
        self.with(|s| {
            if !s.listening || s.generation != generation {
                return;
            }
            if s.map.len() >= CAPACITY {
                // Drop the oldest eighth: cheap enough at this size, and what is hot
                // comes straight back.
                let mut ages: Vec<Instant> = s.map.values().map(|v| v.at).collect();
                ages.sort_unstable();
                let cut = ages[CAPACITY / 8];
                s.map.retain(|_, v| v.at > cut);
            }
            s.map.insert(
                (ns.to_owned(), key.to_owned()),
                Slot {
                    value: value.cloned(),
                    at: Instant::now(),
                },
            );
        });
    }

    /// `(ns, key)` changed (here or on another server).
    pub(super) fn evict(&self, ns: &str, key: &str) {
        self.with(|s| {
            s.generation = s.generation.wrapping_add(1);
            s.map.remove(&(ns.to_owned(), key.to_owned()));
        });
    }

    /// Every key of `ns` starting with `prefix` changed.
    pub(super) fn evict_prefix(&self, ns: &str, prefix: &str) {
        self.with(|s| {
            s.generation = s.generation.wrapping_add(1);
            s.map
                .retain(|(n, k), _| !(n == ns && k.starts_with(prefix)));
        });
    }

    /// Anything may have changed: empties the cache; `listening` says whether it may be
    /// used from now on (only while change notifications are heard).
    pub(super) fn flush(&self, listening: bool) {
        self.with(|s| {
            s.generation = s.generation.wrapping_add(1);
            s.map.clear();
            s.listening = listening;
        });
    }

    /// Number of cached entries (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.with(|s| s.map.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plain(s: &str) -> Plain {
        Plain::new(s.as_bytes().to_vec())
    }

    #[test]
    fn nothing_is_cached_until_changes_are_heard() {
        let c = EntryCache::default();
        let t = c.get("kv", "a").unwrap_err();
        c.fill(t, "kv", "a", Some(&plain("1")));
        assert!(c.get("kv", "a").is_err(), "not listening: bypassed");
        c.flush(true);
        let t = c.get("kv", "a").unwrap_err();
        c.fill(t, "kv", "a", Some(&plain("1")));
        assert_eq!(c.get("kv", "a").ok().flatten().unwrap().as_slice(), b"1");
        c.flush(false);
        assert!(
            c.get("kv", "a").is_err(),
            "a lost connection empties and bypasses"
        );
    }

    #[test]
    fn a_change_during_a_read_keeps_the_older_value_out() {
        let c = EntryCache::default();
        c.flush(true);
        let t = c.get("kv", "a").unwrap_err();
        // Another server changes the entry while our read of the old value is in flight.
        c.evict("kv", "a");
        c.fill(t, "kv", "a", Some(&plain("old")));
        assert!(c.get("kv", "a").is_err(), "the stale value was not cached");
    }

    #[test]
    fn absences_are_cached_and_evicted_like_values() {
        let c = EntryCache::default();
        c.flush(true);
        let t = c.get("kv", "missing").unwrap_err();
        c.fill(t, "kv", "missing", None);
        assert!(matches!(c.get("kv", "missing"), Ok(None)));
        c.evict_prefix("kv", "mis");
        assert!(c.get("kv", "missing").is_err());
    }

    #[test]
    fn the_cache_stays_bounded_and_skips_large_values() {
        let c = EntryCache::default();
        c.flush(true);
        for i in 0..CAPACITY + 100 {
            let k = format!("k{i}");
            let t = c.get("kv", &k).unwrap_err();
            c.fill(t, "kv", &k, Some(&plain("v")));
        }
        assert!(c.len() <= CAPACITY, "{}", c.len());
        let t = c.get("kv", "big").unwrap_err();
        c.fill(t, "kv", "big", Some(&Plain::new(vec![0; MAX_VALUE + 1])));
        assert!(c.get("kv", "big").is_err());
    }
}
