//! Property test of ACL intersection (inline token scopes): over random parent
//! policies, scopes, paths and operations, the intersection allows a request exactly
//! when both the parent and the scope do, and never reports a capability either lacks.
//! The generator is a fixed-seed xorshift, so every run checks the same cases.

#![allow(
    clippy::unwrap_used,
    reason = "a test harness: a panic with the failing case is the report"
)]

use std::sync::Arc;

use leash_policy::{Acl, AclRequest, parse_policy};
use leash_types::Operation;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SEGMENTS: &[&str] = &["a", "b", "sys", "data"];
const CAPS: &[&str] = &[
    "create", "read", "update", "patch", "delete", "list", "sudo", "deny",
];
const OPS: &[Operation] = &[
    Operation::Create,
    Operation::Read,
    Operation::Update,
    Operation::Patch,
    Operation::Delete,
    Operation::List,
];

fn random_path(r: &mut Rng) -> String {
    let depth = 1 + r.below(3);
    (0..depth)
        .map(|_| r.pick(SEGMENTS))
        .collect::<Vec<_>>()
        .join("/")
}

/// A rule path: exact, a `*` glob, or with a `+` segment.
fn random_rule_path(r: &mut Rng) -> String {
    let p = random_path(r);
    match r.below(4) {
        0 => p,
        1 => format!("{p}*"),
        2 => format!("{p}/*"),
        _ => {
            let mut segs: Vec<&str> = p.split('/').collect();
            let i = r.below(segs.len());
            segs[i] = "+";
            segs.join("/")
        }
    }
}

fn random_policy(r: &mut Rng) -> String {
    let rules = 1 + r.below(4);
    let mut text = String::new();
    for _ in 0..rules {
        let n = 1 + r.below(3);
        let caps: Vec<String> = (0..n).map(|_| format!("\"{}\"", r.pick(CAPS))).collect();
        text.push_str(&format!(
            "path \"{}\" {{ capabilities = [{}] }}\n",
            random_rule_path(r),
            caps.join(", ")
        ));
    }
    text
}

#[test]
fn the_intersection_allows_exactly_what_both_allow() {
    let mut r = Rng(0x5eed_1eaf_cafe_f00d);
    let mut checked = 0;
    for case in 0..2000 {
        let parent_text = random_policy(&mut r);
        let scope_text = random_policy(&mut r);
        let parent = Arc::new(Acl::compile(&[
            &parse_policy("parent", &parent_text).unwrap()
        ]));
        let scope = Arc::new(Acl::compile(
            &[&parse_policy("scope", &scope_text).unwrap()],
        ));
        let child = Acl::intersection(vec![Arc::clone(&parent), Arc::clone(&scope)]);
        // A grandchild bounded by a second scope is bounded by all three.
        let scope2_text = random_policy(&mut r);
        let scope2 = Arc::new(Acl::compile(&[
            &parse_policy("scope2", &scope2_text).unwrap()
        ]));
        let grandchild = Acl::intersection(vec![Arc::clone(&child), Arc::clone(&scope2)]);
        for _ in 0..20 {
            let path = random_path(&mut r);
            let operation = OPS[r.below(OPS.len())];
            let needs_sudo = r.below(4) == 0;
            let req = AclRequest {
                path: &path,
                operation,
                data: None,
                needs_sudo,
            };
            let (p, s, s2) = (
                parent.check(&req).allowed,
                scope.check(&req).allowed,
                scope2.check(&req).allowed,
            );
            assert_eq!(
                child.check(&req).allowed,
                p && s,
                "case {case}: {operation:?} {path} sudo={needs_sudo}\nparent:\n{parent_text}scope:\n{scope_text}"
            );
            assert_eq!(
                grandchild.check(&req).allowed,
                p && s && s2,
                "case {case}: {operation:?} {path} (grandchild)"
            );
            let caps = child.capabilities(&path);
            for c in caps.iter() {
                let deny = leash_types::Capability::Deny;
                if c != deny {
                    assert!(
                        parent.capabilities(&path).contains(c)
                            && scope.capabilities(&path).contains(c),
                        "case {case}: {path}: the child reports {c:?} that one level lacks"
                    );
                }
            }
            checked += 1;
        }
    }
    eprintln!("{checked} random intersection decisions checked");
}

#[test]
fn a_scope_never_widens_a_parent() {
    let parent = Arc::new(Acl::compile(&[&parse_policy(
        "p",
        r#"path "a/*" { capabilities = ["read"] }"#,
    )
    .unwrap()]));
    for scope in [
        r#"path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }"#,
        r#"path "sys/*" { capabilities = ["sudo", "update"] }"#,
        r#"path "a/x" { capabilities = ["update", "sudo"] }"#,
    ] {
        let s = Arc::new(Acl::compile(&[&parse_policy("s", scope).unwrap()]));
        let child = Acl::intersection(vec![Arc::clone(&parent), s]);
        for (path, op, sudo) in [
            ("sys/policy/x", Operation::Update, true),
            ("a/x", Operation::Update, false),
            ("a/x", Operation::Read, true),
            ("b", Operation::Read, false),
        ] {
            let req = AclRequest {
                path,
                operation: op,
                data: None,
                needs_sudo: sudo,
            };
            assert!(!child.check(&req).allowed, "{scope} widened {op:?} {path}");
        }
        assert!(!child.is_root());
    }
    // Root ∩ scope is the scope; root ∩ root is root.
    let s = Arc::new(Acl::compile(&[&parse_policy(
        "s",
        r#"path "a" { capabilities = ["read"] }"#,
    )
    .unwrap()]));
    let child = Acl::intersection(vec![Arc::new(Acl::root()), s]);
    assert!(!child.is_root());
    assert_eq!(child.capability_names("a"), vec!["read"]);
    assert!(Acl::intersection(vec![Arc::new(Acl::root()), Arc::new(Acl::root())]).is_root());
}
