//! Capabilities as a bitset, and the request operations that need them.
//!
//! Names and meanings are Vault's: `create read update patch delete list sudo deny
//! subscribe`. `deny` is a capability that wins over every other one in the same rule.

use std::fmt;

/// One capability a policy rule can grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Create a value at a path that does not exist yet.
    Create,
    /// Read a value.
    Read,
    /// Change a value at a path that exists.
    Update,
    /// Partially change a value.
    Patch,
    /// Delete a value.
    Delete,
    /// List keys under a path.
    List,
    /// Use root-protected paths.
    Sudo,
    /// Deny everything; overrides every other capability of the same rule.
    Deny,
    /// Subscribe to events (accepted for compatibility; unused).
    Subscribe,
}

impl Capability {
    /// Every capability, in Vault's canonical order.
    pub const ALL: [Capability; 9] = [
        Capability::Create,
        Capability::Read,
        Capability::Update,
        Capability::Patch,
        Capability::Delete,
        Capability::List,
        Capability::Sudo,
        Capability::Deny,
        Capability::Subscribe,
    ];

    /// The lowercase name Vault uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Create => "create",
            Capability::Read => "read",
            Capability::Update => "update",
            Capability::Patch => "patch",
            Capability::Delete => "delete",
            Capability::List => "list",
            Capability::Sudo => "sudo",
            Capability::Deny => "deny",
            Capability::Subscribe => "subscribe",
        }
    }

    /// Parses a capability name (case-sensitive, as Vault).
    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s)
    }

    const fn bit(self) -> u16 {
        match self {
            Capability::Create => 1,
            Capability::Read => 1 << 1,
            Capability::Update => 1 << 2,
            Capability::Patch => 1 << 3,
            Capability::Delete => 1 << 4,
            Capability::List => 1 << 5,
            Capability::Sudo => 1 << 6,
            Capability::Deny => 1 << 7,
            Capability::Subscribe => 1 << 8,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of capabilities.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u16);

impl Capabilities {
    /// The empty set.
    pub const NONE: Capabilities = Capabilities(0);

    /// A set holding exactly `c`.
    pub const fn of(c: Capability) -> Capabilities {
        Capabilities(c.bit())
    }

    /// Every capability except `deny` (what the root policy holds).
    pub fn root() -> Capabilities {
        let mut s = Capabilities::NONE;
        for c in Capability::ALL {
            if c != Capability::Deny {
                s.insert(c);
            }
        }
        s
    }

    /// Adds `c`.
    pub fn insert(&mut self, c: Capability) {
        self.0 |= c.bit();
    }

    /// Whether `c` is in the set.
    pub fn contains(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    /// Union of two sets.
    pub fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    /// Intersection of two sets.
    pub fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether the set holds `deny` (and so grants nothing).
    pub fn is_deny(self) -> bool {
        self.contains(Capability::Deny)
    }

    /// The capabilities in canonical order; `["deny"]` for a denying set.
    pub fn names(self) -> Vec<&'static str> {
        if self.is_deny() {
            return vec!["deny"];
        }
        Capability::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
            .map(Capability::as_str)
            .collect()
    }

    /// Iterates over the capabilities in the set.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<T: IntoIterator<Item = Capability>>(iter: T) -> Self {
        let mut s = Capabilities::NONE;
        for c in iter {
            s.insert(c);
        }
        s
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// What a request does to its path. `Create` vs `Update` is decided by the backend's
/// existence check, as in Vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// GET
    Read,
    /// POST/PUT on a path that does not exist.
    Create,
    /// POST/PUT on a path that exists (or a backend without existence check).
    Update,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// LIST or GET ?list=true
    List,
}

impl Operation {
    /// The capability a policy must grant for this operation.
    pub fn capability(self) -> Capability {
        match self {
            Operation::Read => Capability::Read,
            Operation::Create => Capability::Create,
            Operation::Update => Capability::Update,
            Operation::Patch => Capability::Patch,
            Operation::Delete => Capability::Delete,
            Operation::List => Capability::List,
        }
    }

    /// Vault's name for the operation, as written in audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Patch => "patch",
            Operation::Delete => "delete",
            Operation::List => "list",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_deny_wins_in_display() {
        for c in Capability::ALL {
            assert_eq!(Capability::parse(c.as_str()), Some(c));
        }
        let s: Capabilities = [Capability::Read, Capability::List].into_iter().collect();
        assert_eq!(s.names(), vec!["read", "list"]);
        let d = s.union(Capabilities::of(Capability::Deny));
        assert_eq!(d.names(), vec!["deny"]);
        assert!(!Capabilities::root().is_deny());
        assert_eq!(Capability::parse("Read"), None);
    }
}
