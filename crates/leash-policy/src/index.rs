//! Lookup structures that find the rules matching a path without scanning every rule.
//!
//! * [`PrefixTrie`]: a byte trie of glob prefixes (`secret/*` is stored as `secret/`).
//!   Walking a path visits each stored prefix of it once: O(|path|).
//! * [`SegmentTrie`]: rules containing `+` segment wildcards, split on `/`. A node has
//!   literal children (hash map), one `+` child, the rule that ends there exactly, and a
//!   [`PrefixTrie`] of rules whose *last* segment is a glob prefix (`a/+/b*`). Matching
//!   walks the path's segments, branching only into children that exist, so the cost is
//!   bounded by the number of trie nodes that match the path (at most 2 per segment per
//!   live branch), never by the number of rules.
//!
//! Matching semantics are Vault's (`CheckAllowedFromNonExactPaths`): a `+` consumes exactly
//! one segment (possibly empty); a rule without trailing `*` needs the same number of
//! segments as the path; a rule with trailing `*` needs at least as many, and its last
//! segment is a string prefix of the path's segment at that position.

use std::collections::HashMap;

/// Index of a compiled rule.
pub(crate) type RuleId = usize;

/// A byte trie mapping prefixes to rules.
#[derive(Clone, Debug, Default)]
pub(crate) struct PrefixTrie {
    nodes: Vec<TrieNode>,
}

#[derive(Clone, Debug, Default)]
struct TrieNode {
    /// Sorted by byte for binary search.
    children: Vec<(u8, usize)>,
    rule: Option<RuleId>,
}

impl PrefixTrie {
    /// Stores `rule` under `prefix` (replacing any rule already there).
    pub(crate) fn insert(&mut self, prefix: &str, rule: RuleId) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut at = 0;
        for b in prefix.bytes() {
            at = match self.nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.nodes[at].children[i].1,
                Err(i) => {
                    let next = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[at].children.insert(i, (b, next));
                    next
                }
            };
        }
        self.nodes[at].rule = Some(rule);
    }

    /// Calls `f(prefix_len, rule)` for every stored prefix of `s`, shortest first.
    pub(crate) fn for_each_prefix_of(&self, s: &str, mut f: impl FnMut(usize, RuleId)) {
        let Some(root) = self.nodes.first() else {
            return;
        };
        if let Some(r) = root.rule {
            f(0, r);
        }
        let mut at = 0;
        for (i, b) in s.bytes().enumerate() {
            match self.nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                Ok(j) => at = self.nodes[at].children[j].1,
                Err(_) => return,
            }
            if let Some(r) = self.nodes[at].rule {
                f(i + 1, r);
            }
        }
    }

    /// The longest stored prefix of `s` and its rule.
    pub(crate) fn longest_prefix_of(&self, s: &str) -> Option<(usize, RuleId)> {
        let mut best = None;
        self.for_each_prefix_of(s, |len, r| best = Some((len, r)));
        best
    }
}

/// Rules with `+` segments.
#[derive(Clone, Debug, Default)]
pub(crate) struct SegmentTrie {
    nodes: Vec<SegNode>,
}

#[derive(Clone, Debug, Default)]
struct SegNode {
    literal: HashMap<String, usize>,
    plus: Option<usize>,
    /// A rule without trailing `*` whose segments end at this node.
    exact: Option<RuleId>,
    /// Rules with trailing `*` whose earlier segments end at this node, keyed by their
    /// last segment (a string prefix of the path's next segment).
    glob_last: PrefixTrie,
}

impl SegmentTrie {
    /// Stores a rule. `path` is the rule path without its trailing `*`; `is_glob` says
    /// whether it had one.
    pub(crate) fn insert(&mut self, path: &str, is_glob: bool, rule: RuleId) {
        if self.nodes.is_empty() {
            self.nodes.push(SegNode::default());
        }
        let parts: Vec<&str> = path.split('/').collect();
        let (walk, last) = if is_glob {
            match parts.split_last() {
                Some((last, walk)) => (walk, Some(*last)),
                None => (&parts[..], None),
            }
        } else {
            (&parts[..], None)
        };
        let mut at = 0;
        for part in walk {
            let existing = if *part == "+" {
                self.nodes[at].plus
            } else {
                self.nodes[at].literal.get(*part).copied()
            };
            at = match existing {
                Some(n) => n,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(SegNode::default());
                    if *part == "+" {
                        self.nodes[at].plus = Some(n);
                    } else {
                        self.nodes[at].literal.insert((*part).to_owned(), n);
                    }
                    n
                }
            };
        }
        match last {
            Some(last) => self.nodes[at].glob_last.insert(last, rule),
            None => self.nodes[at].exact = Some(rule),
        }
    }

    /// Calls `f(rule)` for every rule matching the path split into `parts`.
    pub(crate) fn for_each_match(&self, parts: &[&str], mut f: impl FnMut(RuleId)) {
        if self.nodes.is_empty() {
            return;
        }
        // Depth-first over (node, segment index); the stack never holds more entries than
        // live branches, each at most parts.len() deep.
        let mut stack = vec![(0usize, 0usize)];
        while let Some((at, i)) = stack.pop() {
            let node = &self.nodes[at];
            match parts.get(i) {
                None => {
                    if let Some(r) = node.exact {
                        f(r);
                    }
                }
                Some(seg) => {
                    node.glob_last.for_each_prefix_of(seg, |_, r| f(r));
                    if let Some(&n) = node.literal.get(*seg) {
                        stack.push((n, i + 1));
                    }
                    if let Some(n) = node.plus {
                        stack.push((n, i + 1));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_trie_finds_every_prefix_in_order() {
        let mut t = PrefixTrie::default();
        t.insert("", 0);
        t.insert("secret/", 1);
        t.insert("secret/data/", 2);
        t.insert("sys", 3);
        let mut seen = Vec::new();
        t.for_each_prefix_of("secret/data/x", |len, r| seen.push((len, r)));
        assert_eq!(seen, [(0, 0), (7, 1), (12, 2)]);
        assert_eq!(t.longest_prefix_of("secret/dat"), Some((7, 1)));
        assert_eq!(t.longest_prefix_of("other"), Some((0, 0)));
        assert_eq!(PrefixTrie::default().longest_prefix_of("x"), None);
    }

    fn matches(t: &SegmentTrie, path: &str) -> Vec<RuleId> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut out = Vec::new();
        t.for_each_match(&parts, |r| out.push(r));
        out.sort_unstable();
        out
    }

    #[test]
    fn segment_trie_matches_like_vault() {
        let mut t = SegmentTrie::default();
        t.insert("a/+/c", false, 0);
        t.insert("a/+", false, 1);
        t.insert("a/+/", true, 2); // a/+/*
        t.insert("a/+/c", true, 3); // a/+/c*
        t.insert("+/b/c", false, 4);
        assert_eq!(matches(&t, "a/b/c"), [0, 2, 3, 4]);
        assert_eq!(matches(&t, "a/b"), [1]);
        assert_eq!(matches(&t, "a/b/"), [2]);
        assert_eq!(matches(&t, "a/b/cd/e"), [2, 3]);
        assert_eq!(matches(&t, "a//c"), [0, 2, 3]);
        assert_eq!(matches(&t, "x/y/z"), Vec::<RuleId>::new());
    }
}
