//! Unit tests of the compiled ACL, one group per rule of Vault's semantics. The decision
//! vectors in `tests/vectors/` cover the same ground end to end from policy text.

use std::time::Duration;

use leash_types::{Capabilities, Capability, Operation};
use serde_json::{Map, Value, json};

use crate::{Acl, AclDecision, AclRequest, DEFAULT_POLICY, Denial, PolicyDoc, parse_policy};

fn doc(name: &str, text: &str) -> PolicyDoc {
    parse_policy(name, text).unwrap()
}

fn acl(texts: &[&str]) -> Acl {
    let docs: Vec<PolicyDoc> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| doc(&format!("p{i}"), t))
        .collect();
    Acl::compile(&docs.iter().collect::<Vec<_>>())
}

fn decide(acl: &Acl, op: Operation, path: &str) -> AclDecision {
    acl.check(&AclRequest {
        path,
        operation: op,
        data: None,
        needs_sudo: false,
    })
}

fn allowed(acl: &Acl, op: Operation, path: &str) -> bool {
    decide(acl, op, path).allowed
}

fn with_data(acl: &Acl, op: Operation, path: &str, data: Value) -> AclDecision {
    let map: Map<String, Value> = serde_json::from_value(data).unwrap();
    acl.check(&AclRequest {
        path,
        operation: op,
        data: Some(&map),
        needs_sudo: false,
    })
}

const SEED: &str = r#"
path "database/creds/agent-readonly" { capabilities = ["read"] }
path "secret/data/agents/config/*"   { capabilities = ["read"] }
path "auth/token/renew-self"         { capabilities = ["update"] }
path "*"                             { capabilities = ["deny"] }
"#;

#[test]
fn seed_policy_behaves_as_written() {
    let a = acl(&[SEED]);
    assert!(allowed(
        &a,
        Operation::Read,
        "database/creds/agent-readonly"
    ));
    assert!(allowed(&a, Operation::Read, "secret/data/agents/config/x"));
    let d = decide(&a, Operation::Update, "secret/data/agents/config/x");
    assert_eq!(
        d.denial,
        Some(Denial::MissingCapability(Capability::Update))
    );
    assert!(allowed(&a, Operation::Update, "auth/token/renew-self"));
    let d = decide(&a, Operation::Read, "secret/data/other");
    assert_eq!(d.denial, Some(Denial::ExplicitDeny));
    assert_eq!(d.matched_rule.as_deref(), Some("*"));
    assert!(!allowed(&a, Operation::Update, "sys/policy/x"));
    // Not readable without the default policy, readable with it.
    assert!(!allowed(&a, Operation::Read, "auth/token/lookup-self"));
    let seed = doc("agent", SEED);
    let default = doc("default", DEFAULT_POLICY);
    let both = Acl::compile(&[&seed, &default]);
    let d = decide(&both, Operation::Read, "auth/token/lookup-self");
    assert!(d.allowed);
    assert_eq!(d.granting_policies, ["default"]);
    assert!(!allowed(&both, Operation::Read, "secret/data/other"));
}

#[test]
fn nothing_matches_means_deny() {
    let a = acl(&[r#"path "a" { capabilities = ["read"] }"#]);
    let d = decide(&a, Operation::Read, "b");
    assert_eq!(d.denial, Some(Denial::NoMatchingRule));
    assert_eq!(d.capabilities, Capabilities::NONE);
    assert!(!allowed(&Acl::compile(&[]), Operation::Read, ""));
    assert_eq!(Acl::compile(&[]).capability_names("x"), ["deny"]);
}

#[test]
fn exact_beats_any_glob() {
    let a = acl(&[r#"path "secret/a" { capabilities = ["read"] }
           path "secret/a*" { capabilities = ["deny"] }
           path "+/a" { capabilities = ["deny"] }"#]);
    assert!(allowed(&a, Operation::Read, "secret/a"));
    assert!(!allowed(&a, Operation::Read, "secret/ab"));
}

#[test]
fn precedence_1_later_first_wildcard_wins() {
    // foo/a* (glob at 5) beats foo/+ (wildcard at 4).
    let a = acl(&[r#"path "foo/a*" { capabilities = ["read"] }
                    path "foo/+" { capabilities = ["deny"] }"#]);
    assert!(allowed(&a, Operation::Read, "foo/ab"));
    // foo/bar/+/baz beats foo/+/bar/baz.
    let a = acl(&[r#"path "foo/bar/+/baz" { capabilities = ["read"] }
                    path "foo/+/+/baz" { capabilities = ["deny"] }"#]);
    assert!(allowed(&a, Operation::Read, "foo/bar/x/baz"));
}

#[test]
fn precedence_2_no_trailing_glob_wins() {
    // foo/+ vs foo/*: both have the first wildcard at 4.
    let a = acl(&[r#"path "foo/+" { capabilities = ["read"] }
                    path "foo/*" { capabilities = ["deny"] }"#]);
    assert!(allowed(&a, Operation::Read, "foo/x"));
    assert!(!allowed(&a, Operation::Read, "foo/x/y"));
    // foo/+/bar vs foo/+/ba*.
    let a = acl(&[r#"path "foo/+/bar" { capabilities = ["read"] }
                    path "foo/+/ba*" { capabilities = ["deny"] }"#]);
    assert!(allowed(&a, Operation::Read, "foo/x/bar"));
    assert!(!allowed(&a, Operation::Read, "foo/x/bart"));
}

#[test]
fn precedence_3_fewer_wildcards_wins() {
    let a = acl(&[r#"path "foo/+/bar/+" { capabilities = ["deny"] }
                    path "foo/+/bar/baz" { capabilities = ["read"] }"#]);
    assert!(allowed(&a, Operation::Read, "foo/x/bar/baz"));
    assert!(!allowed(&a, Operation::Read, "foo/x/bar/qux"));
}

#[test]
fn precedence_4_longer_wins() {
    let a = acl(&[r#"path "foo/+/bar/b*" { capabilities = ["deny"] }
                    path "foo/+/bar/ba*" { capabilities = ["read"] }"#]);
    assert!(allowed(&a, Operation::Read, "foo/x/bar/baz"));
    assert!(!allowed(&a, Operation::Read, "foo/x/bar/bz"));
}

#[test]
fn precedence_5_tie_break_on_identical_shape() {
    // "k/+/c" and "k/+/+" differ in wildcards; to reach rule 5 both must match the same
    // path with equal position, globness, wildcard count and length. "+/x/+" and "+/+/x"
    // match "x/x/x" with first wildcard 0, no glob, 2 wildcards, length 5.
    let a = acl(&[r#"path "+/x/+" { capabilities = ["deny"] }
                    path "+/+/x" { capabilities = ["read"] }"#]);
    // "+/x/+" > "+/+/x" lexicographically ('x' > '+'), so the deny wins.
    let d = decide(&a, Operation::Read, "x/x/x");
    assert_eq!(d.matched_rule.as_deref(), Some("+/x/+"));
    assert!(!d.allowed);
}

#[test]
fn plus_matches_exactly_one_segment() {
    let a = acl(&[r#"path "secret/+/config" { capabilities = ["read"] }
                    path "team/+/*" { capabilities = ["list"] }"#]);
    assert!(allowed(&a, Operation::Read, "secret/a/config"));
    assert!(
        allowed(&a, Operation::Read, "secret//config"),
        "an empty segment is a segment"
    );
    assert!(!allowed(&a, Operation::Read, "secret/a/b/config"));
    assert!(!allowed(&a, Operation::Read, "secret/config"));
    assert!(allowed(&a, Operation::List, "team/a/"));
    assert!(allowed(&a, Operation::List, "team/a/b/c"));
    assert!(!allowed(&a, Operation::List, "team/a"));
}

#[test]
fn only_the_most_specific_rule_counts() {
    // The broader rule grants update; the more specific one does not, so update is denied.
    let a = acl(&[
        r#"path "secret/*" { capabilities = ["read", "update"] }"#,
        r#"path "secret/locked/*" { capabilities = ["read"] }"#,
    ]);
    assert!(allowed(&a, Operation::Update, "secret/x"));
    assert!(!allowed(&a, Operation::Update, "secret/locked/x"));
}

#[test]
fn identical_paths_merge_and_record_granting_policies() {
    let a = acl(&[
        r#"path "secret/*" { capabilities = ["read"] }"#,
        r#"path "secret/*" { capabilities = ["update", "read"] }"#,
    ]);
    let d = decide(&a, Operation::Read, "secret/x");
    assert!(d.allowed);
    assert_eq!(d.granting_policies, ["p0", "p1"]);
    let d = decide(&a, Operation::Update, "secret/x");
    assert_eq!(d.granting_policies, ["p1"]);
    assert_eq!(d.capabilities.names(), ["read", "update"]);
}

#[test]
fn deny_wins_within_a_merged_path_in_any_order() {
    for texts in [
        [
            r#"path "s/*" { capabilities = ["read"] }"#,
            r#"path "s/*" { capabilities = ["deny"] }"#,
        ],
        [
            r#"path "s/*" { capabilities = ["deny"] }"#,
            r#"path "s/*" { capabilities = ["read"] }"#,
        ],
    ] {
        let a = acl(&texts);
        assert_eq!(
            decide(&a, Operation::Read, "s/x").denial,
            Some(Denial::ExplicitDeny)
        );
        assert_eq!(a.capability_names("s/x"), ["deny"]);
    }
}

#[test]
fn merged_parameters_follow_vault() {
    let a = acl(&[
        r#"path "p" { capabilities = ["update"] allowed_parameters = { "a" = ["1"] "b" = ["x"] } }"#,
        r#"path "p" { capabilities = ["update"] allowed_parameters = { "a" = ["2"] "b" = [] } required_parameters = ["a"] }"#,
    ]);
    assert!(with_data(&a, Operation::Update, "p", json!({"a": "1"})).allowed);
    assert!(
        with_data(
            &a,
            Operation::Update,
            "p",
            json!({"a": "2", "b": "anything"})
        )
        .allowed
    );
    assert_eq!(
        with_data(&a, Operation::Update, "p", json!({"a": "3"})).denial,
        Some(Denial::ParameterNotAllowed("a".into()))
    );
    assert_eq!(
        with_data(&a, Operation::Update, "p", json!({"b": "x"})).denial,
        Some(Denial::RequiredParameterMissing("a".into()))
    );
}

#[test]
fn parameters_apply_to_read_create_update_patch_only() {
    let a = acl(&[r#"path "p" {
        capabilities = ["read", "create", "update", "patch", "delete", "list"]
        denied_parameters = { "x" = [] }
    }"#]);
    for op in [
        Operation::Read,
        Operation::Create,
        Operation::Update,
        Operation::Patch,
    ] {
        assert!(!with_data(&a, op, "p", json!({"x": 1})).allowed, "{op:?}");
    }
    for op in [Operation::Delete, Operation::List] {
        assert!(with_data(&a, op, "p", json!({"x": 1})).allowed, "{op:?}");
    }
}

#[test]
fn sudo_is_required_only_when_asked() {
    let a = acl(&[r#"path "sys/audit" { capabilities = ["read"] }
                    path "sys/mounts" { capabilities = ["read", "sudo"] }"#]);
    let req = |path| AclRequest {
        path,
        operation: Operation::Read,
        data: None,
        needs_sudo: true,
    };
    let d = a.check(&req("sys/audit"));
    assert_eq!(d.denial, Some(Denial::SudoRequired));
    assert!(a.check(&req("sys/mounts")).allowed);
    assert!(Acl::root().check(&req("sys/audit")).allowed);
}

#[test]
fn root_allows_everything() {
    let r = Acl::root();
    assert!(r.is_root());
    let d = decide(&r, Operation::Delete, "anything/at/all");
    assert!(d.allowed);
    assert_eq!(d.granting_policies, ["root"]);
    assert_eq!(r.capability_names("x"), ["root"]);
    assert!(r.capabilities("x").contains(Capability::Sudo));
    // A policy merely named root is an ordinary policy.
    let not_root = doc("root", "");
    assert!(!Acl::compile(&[&not_root]).is_root());
}

#[test]
fn list_falls_back_to_the_path_without_trailing_slash() {
    let a = acl(&[r#"path "secret/metadata/agents" { capabilities = ["list"] }"#]);
    assert!(allowed(&a, Operation::List, "secret/metadata/agents/"));
    assert!(!allowed(&a, Operation::Read, "secret/metadata/agents/"));
    // `+` rules see the trimmed path too, and outrank a broad deny.
    let a = acl(&[r#"path "kv/+" { capabilities = ["list"] }
                    path "*" { capabilities = ["deny"] }"#]);
    assert!(allowed(&a, Operation::List, "kv/team/"));
    // A more specific deny still wins over the trimmed-path grant.
    let a = acl(&[r#"path "kv/+" { capabilities = ["list"] }
                    path "kv/private/*" { capabilities = ["deny"] }"#]);
    assert!(!allowed(&a, Operation::List, "kv/private/"));
    assert!(allowed(&a, Operation::List, "kv/public/"));
}

#[test]
fn leading_slashes_are_ignored() {
    let a = acl(&[r#"path "/secret/x" { capabilities = ["read"] }"#]);
    assert!(allowed(&a, Operation::Read, "secret/x"));
    assert!(allowed(&a, Operation::Read, "/secret/x"));
    assert!(allowed(&a, Operation::Read, "//secret/x"));
}

#[test]
fn capabilities_for_capabilities_self() {
    let a = acl(
        &[r#"path "a/*" { capabilities = ["update", "read", "sudo"] }
                    path "b" { capabilities = [] }
                    path "c" { capabilities = ["list"] }"#],
    );
    assert_eq!(a.capability_names("a/x"), ["read", "sudo", "update"]);
    assert_eq!(a.capabilities("b"), Capabilities::of(Capability::Deny));
    assert_eq!(a.capability_names("zzz"), ["deny"]);
    assert_eq!(a.capability_names("c/"), ["list"], "answered as for a LIST");
}

#[test]
fn empty_capability_rule_masks_broader_grants() {
    let a = acl(&[r#"path "s/*" { capabilities = ["read"] }
                    path "s/hidden" { capabilities = [] }"#]);
    assert_eq!(
        decide(&a, Operation::Read, "s/hidden").denial,
        Some(Denial::MissingCapability(Capability::Read))
    );
}

#[test]
fn wrapping_ttl_bounds() {
    let a = acl(&[
        r#"path "w" { capabilities = ["read"] min_wrapping_ttl = "1m" max_wrapping_ttl = "1h" }"#,
    ]);
    let req = AclRequest {
        path: "w",
        operation: Operation::Read,
        data: None,
        needs_sudo: false,
    };
    assert!(matches!(
        a.check(&req).denial,
        Some(Denial::WrappingTtlOutOfRange { .. })
    ));
    assert!(!a.check_wrapped(&req, Some(Duration::from_secs(30))).allowed);
    assert!(
        a.check_wrapped(&req, Some(Duration::from_secs(300)))
            .allowed
    );
    assert!(
        !a.check_wrapped(&req, Some(Duration::from_secs(7200)))
            .allowed
    );
    // Merging takes the smaller bound each side.
    let a = acl(&[
        r#"path "w" { capabilities = ["read"] max_wrapping_ttl = "1h" }"#,
        r#"path "w" { capabilities = ["read"] max_wrapping_ttl = "10m" }"#,
    ]);
    assert!(
        !a.check_wrapped(&req, Some(Duration::from_secs(1800)))
            .allowed
    );
    assert!(
        a.check_wrapped(&req, Some(Duration::from_secs(300)))
            .allowed
    );
}

#[test]
fn control_group_is_returned_for_gated_operations() {
    let a = acl(&[r#"path "database/creds/prod" {
  capabilities = ["read", "update"]
  control_group = {
    ttl = "15m"
    factor "dba" {
      controlled_capabilities = ["read"]
      identity { group_names = ["dba"] approvals = 2 }
    }
  }
}"#]);
    let d = decide(&a, Operation::Read, "database/creds/prod");
    assert!(d.allowed);
    let cg = d.control_group.unwrap();
    assert_eq!(cg.ttl, Some(Duration::from_secs(900)));
    assert_eq!(cg.factors[0].approvals, 2);
    assert!(
        decide(&a, Operation::Update, "database/creds/prod")
            .control_group
            .is_none()
    );
    assert!(
        decide(&a, Operation::Delete, "database/creds/prod")
            .control_group
            .is_none()
    );
}

#[test]
fn default_policy_parses_and_grants_self_service() {
    let d = doc("default", DEFAULT_POLICY);
    let a = Acl::compile(&[&d]);
    for (op, path) in [
        (Operation::Read, "auth/token/lookup-self"),
        (Operation::Update, "auth/token/renew-self"),
        (Operation::Update, "auth/token/revoke-self"),
        (Operation::Update, "sys/capabilities-self"),
        (Operation::Update, "sys/leases/renew"),
        (Operation::Update, "sys/renew"),
        (Operation::Update, "sys/leases/lookup"),
        (Operation::Create, "cubbyhole/x"),
        (Operation::List, "cubbyhole/"),
        (Operation::Update, "sys/wrapping/wrap"),
        (Operation::Update, "sys/wrapping/unwrap"),
        (Operation::Update, "sys/wrapping/lookup"),
        (Operation::Update, "sys/tools/hash"),
        (Operation::Update, "sys/tools/hash/sha2-256"),
        (Operation::Update, "sys/control-group/request"),
    ] {
        assert!(allowed(&a, op, path), "{op:?} {path}");
    }
    for (op, path) in [
        (Operation::Read, "auth/token/lookup"),
        (Operation::Update, "auth/token/create"),
        (Operation::Read, "sys/policy/default"),
        (Operation::Update, "sys/leases/revoke"),
        (Operation::Read, "secret/data/x"),
    ] {
        assert!(!allowed(&a, op, path), "{op:?} {path}");
    }
}

#[test]
fn acl_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Acl>();
    assert_send_sync::<AclDecision>();
}

#[test]
fn denial_messages_never_carry_values() {
    let a = acl(&[
        r#"path "p" { capabilities = ["update"] denied_parameters = { "password" = ["hunter2*"] } }"#,
    ]);
    let d = with_data(
        &a,
        Operation::Update,
        "p",
        json!({"password": "hunter2-secret"}),
    );
    let msg = d.denial.unwrap().to_string();
    assert_eq!(msg, "parameter \"password\" is denied by policy");
    assert!(!msg.contains("hunter2"));
}

#[test]
fn many_rules_do_not_change_the_answer() {
    // A few thousand unrelated rules of each kind around the ones that matter.
    let mut text = String::new();
    for i in 0..2000 {
        text.push_str(&format!(
            "path \"noise/{i}\" {{ capabilities = [\"read\"] }}\npath \"noise/{i}/*\" {{ capabilities = [\"read\"] }}\npath \"noise/+/{i}\" {{ capabilities = [\"read\"] }}\n"
        ));
    }
    text.push_str(r#"path "secret/+/x" { capabilities = ["update"] }"#);
    let a = acl(&[&text]);
    assert!(allowed(&a, Operation::Update, "secret/a/x"));
    assert!(allowed(&a, Operation::Read, "noise/5/7"));
    assert!(allowed(&a, Operation::Read, "noise/abc/1999"));
    assert!(!allowed(&a, Operation::Read, "noise"));
}

#[test]
fn request_debug_hides_values() {
    let data: Map<String, Value> = serde_json::from_value(json!({"password": "hunter2"})).unwrap();
    let req = AclRequest {
        path: "p",
        operation: Operation::Update,
        data: Some(&data),
        needs_sudo: false,
    };
    let shown = format!("{req:?}");
    assert!(
        shown.contains("password") && !shown.contains("hunter2"),
        "{shown}"
    );
}

/// A literal, linear transcription of Vault's rule selection (OpenBao `AllowOperation`
/// + `CheckAllowedFromNonExactPaths`, non-LIST), used as the oracle for the indexed one.
fn reference_select(rules: &[String], path: &str) -> Option<String> {
    let path = path.trim_start_matches('/');
    if rules.iter().any(|r| r == path) {
        return Some(path.to_owned());
    }
    let is_seg = |r: &str| r == "+" || r.contains("/+") || r.starts_with("+/");
    // (first wildcard, is glob, wildcards, wc path, rule)
    let mut cands: Vec<(usize, bool, usize, String, String)> = Vec::new();
    let longest_prefix = rules
        .iter()
        .filter(|r| !is_seg(r) && r.ends_with('*'))
        .filter(|r| path.starts_with(&r[..r.len() - 1]))
        .max_by_key(|r| r.len());
    if let Some(r) = longest_prefix {
        let p = r[..r.len() - 1].to_owned();
        cands.push((p.len(), true, 0, p, r.clone()));
    }
    let parts: Vec<&str> = path.split('/').collect();
    'rules: for r in rules.iter().filter(|r| is_seg(r)) {
        let is_glob = r.ends_with('*');
        let wc = if is_glob { &r[..r.len() - 1] } else { &r[..] };
        let split: Vec<&str> = wc.split('/').collect();
        if parts.len() < split.len() || (!is_glob && parts.len() != split.len()) {
            continue;
        }
        let mut wildcards = 0;
        for (i, part) in split.iter().enumerate() {
            let last_glob = is_glob && i == split.len() - 1 && parts[i].starts_with(part);
            if *part == "+" {
                wildcards += 1;
            } else if *part != parts[i] && !last_glob {
                continue 'rules;
            }
        }
        cands.push((
            r.find('+').unwrap(),
            is_glob,
            wildcards,
            wc.to_owned(),
            r.clone(),
        ));
    }
    cands
        .into_iter()
        .max_by(|a, b| {
            a.0.cmp(&b.0)
                .then(b.1.cmp(&a.1))
                .then(b.2.cmp(&a.2))
                .then(a.3.len().cmp(&b.3.len()))
                .then(a.3.cmp(&b.3))
        })
        .map(|c| c.4)
}

#[test]
fn indexed_selection_agrees_with_a_linear_transcription_of_vault() {
    // A small deterministic generator (xorshift) keeps this dependency-free.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let segs = ["a", "b", "ab", "ba", ""];
    for _round in 0..1000 {
        let mut rules: Vec<String> = Vec::new();
        for _ in 0..(1 + next(12)) {
            let n = 1 + next(4);
            let mut parts: Vec<String> = (0..n)
                .map(|_| {
                    if next(3) == 0 {
                        "+".to_owned()
                    } else {
                        segs[next(segs.len())].to_owned()
                    }
                })
                .collect();
            let glob = next(2) == 0;
            if glob && parts.last().is_some_and(|p| p == "+") {
                parts.push(segs[next(segs.len())].to_owned());
            }
            let mut r = parts.join("/");
            if glob {
                r.push('*');
            }
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
        let text: String = rules
            .iter()
            .map(|r| format!("path \"{r}\" {{ capabilities = [\"read\"] }}\n"))
            .collect();
        // The oracle sees the paths as parsed (one leading '/' stripped).
        let parsed = doc("p", &text);
        let rules: Vec<String> = parsed.paths().map(str::to_owned).collect();
        let a = Acl::compile(&[&parsed]);
        for _ in 0..40 {
            let n = 1 + next(5);
            let path: Vec<&str> = (0..n).map(|_| segs[next(segs.len())]).collect();
            let path = path.join("/");
            let got = decide(&a, Operation::Read, &path).matched_rule;
            let want = reference_select(&rules, &path);
            assert_eq!(got, want, "rules {rules:?}, path {path:?}");
        }
    }
}

#[test]
fn parser_never_panics_on_token_soup() {
    let pieces = [
        "path",
        " ",
        "\"a/*\"",
        "{",
        "}",
        "[",
        "]",
        "=",
        ":",
        ",",
        "\n",
        "capabilities",
        "\"read\"",
        "#x\n",
        "/*",
        "*/",
        "<<EOT\n",
        "EOT\n",
        "-1",
        "1.5e3",
        "\"\\u00\"",
        "\"\\ud800\"",
        "true",
        "control_group",
        "factor",
        "identity",
        "\u{e9}",
        "\"",
        "policy",
        "//",
        "<",
        "@",
    ];
    let mut state: u64 = 42;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..5000 {
        let text: String = (0..next(30)).map(|_| pieces[next(pieces.len())]).collect();
        let _ = parse_policy("soup", &text);
        let json = format!("{{{text}");
        let _ = parse_policy("soup", &json);
    }
}

// `sys/internal/ui/mounts/<path>`: any grant under the mount lets a token see it.
#[test]
fn grants_anything_under_a_mount() {
    let a = acl(&[r#"path "secret/data/agent/*" { capabilities = ["read"] }"#]);
    assert!(a.grants_anything_under("secret/"));
    assert!(!a.grants_anything_under("kv/"));
    assert!(!a.grants_anything_under("secretive/"));

    let exact = acl(&[r#"path "database/creds/agent-readwrite" { capabilities = ["read"] }"#]);
    assert!(exact.grants_anything_under("database/"));
    assert!(!exact.grants_anything_under("secret/"));

    let broad = acl(&[r#"path "secret*" { capabilities = ["list"] }"#]);
    assert!(broad.grants_anything_under("secret/"));
    assert!(broad.grants_anything_under("secret2/"));
    assert!(!broad.grants_anything_under("kv/"));

    let seg = acl(&[r#"path "+/data/agent/*" { capabilities = ["read"] }"#]);
    assert!(seg.grants_anything_under("secret/"));
    assert!(seg.grants_anything_under("kv/"));
    let seg2 = acl(&[r#"path "secret/+/x" { capabilities = ["read"] }"#]);
    assert!(seg2.grants_anything_under("secret/"));
    assert!(!seg2.grants_anything_under("kv/"));

    let denied = acl(&[r#"path "secret/data/agent/*" { capabilities = ["deny"] }"#]);
    assert!(!denied.grants_anything_under("secret/"));
    assert!(Acl::root().grants_anything_under("anything/"));
}
