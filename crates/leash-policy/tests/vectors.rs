//! Decision vectors: every `tests/vectors/*.json` file holds policies (HCL or JSON text)
//! and requests with the decision Vault would make. One test runs them all and reports
//! every failing case by file and case name.
//!
//! File format:
//! ```json
//! {
//!   "description": "what the file covers",
//!   "root": false,                                  // optional: use Acl::root()
//!   "policies": [
//!     {"name": "agent", "text": ["path \"a\" {", "  capabilities = [\"read\"]", "}"]},
//!     {"name": "default"}                           // no text: the built-in default
//!   ],
//!   "cases": [
//!     {"name": "…", "path": "a", "operation": "read",  // create|read|update|patch|delete|list
//!      "data": {…}, "needs_sudo": false, "wrap_ttl": "5m",          // optional
//!      "expect": "allow",                                          // or "deny"
//!      "denial": "explicit_deny",                                  // optional Denial::code
//!      "granting_policies": ["agent"], "matched_rule": "a",         // optional
//!      "control_group_factors": ["dba"]}                           // optional
//!   ],
//!   "capabilities": [{"path": "a", "expect": ["read"]}]             // optional
//! }
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a test harness: a panic with the file and case named is the failure report"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use leash_policy::{Acl, AclRequest, DEFAULT_POLICY, PolicyDoc, parse_policy};
use leash_types::{Operation, parse_duration};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    description: String,
    #[serde(default)]
    root: bool,
    #[serde(default)]
    policies: Vec<PolicySpec>,
    #[serde(default)]
    cases: Vec<Case>,
    #[serde(default)]
    capabilities: Vec<CapCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    name: String,
    text: Option<Text>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    One(String),
    Lines(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    path: String,
    operation: String,
    data: Option<Map<String, Value>>,
    #[serde(default)]
    needs_sudo: bool,
    wrap_ttl: Option<String>,
    expect: Expect,
    denial: Option<String>,
    granting_policies: Option<Vec<String>>,
    matched_rule: Option<String>,
    control_group_factors: Option<Vec<String>>,
}

#[derive(Deserialize, PartialEq, Eq, Debug, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapCase {
    path: String,
    expect: Vec<String>,
}

fn operation(s: &str) -> Operation {
    match s {
        "create" => Operation::Create,
        "read" => Operation::Read,
        "update" => Operation::Update,
        "patch" => Operation::Patch,
        "delete" => Operation::Delete,
        "list" => Operation::List,
        other => panic!("unknown operation {other:?}"),
    }
}

fn vector_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// How a file's policies are applied.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// As the token's own policies.
    Plain,
    /// As the inline scope of a child of a root token.
    ScopeOfRootChild,
    /// As the inline scope of a child of a broad (non-root, everything + sudo) parent.
    ScopeOfBroadChild,
}

/// A parent that may do everything, sudo included, without being root.
const BROAD: &str = r#"path "*" { capabilities = ["create", "read", "update", "patch", "delete", "list", "sudo"] }"#;

/// Runs one file; returns one message per failing case.
fn run_file(path: &Path) -> (usize, Vec<String>) {
    run_file_as(path, Mode::Plain)
}

/// Runs one file with its policies applied as `mode` says. As a scope, a policy must
/// decide exactly as it does on its own: the parent (root, or allowed everything) adds
/// nothing and takes nothing away.
fn run_file_as(path: &Path, mode: Mode) -> (usize, Vec<String>) {
    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
    let raw = fs::read_to_string(path).unwrap();
    let v: VectorFile = serde_json::from_str(&raw)
        .unwrap_or_else(|e| panic!("{file_name}: not a valid vector file: {e}"));
    assert!(!v.description.is_empty(), "{file_name}: empty description");

    let docs: Vec<PolicyDoc> = v
        .policies
        .iter()
        .map(|p| {
            let text = match &p.text {
                None => DEFAULT_POLICY.to_owned(),
                Some(Text::One(s)) => s.clone(),
                Some(Text::Lines(lines)) => lines.join("\n"),
            };
            parse_policy(&p.name, &text)
                .unwrap_or_else(|e| panic!("{file_name}: policy {:?} does not parse: {e}", p.name))
        })
        .collect();
    let own = if v.root {
        Acl::root()
    } else {
        Acl::compile(&docs.iter().collect::<Vec<_>>())
    };
    let acl = match mode {
        Mode::Plain => Arc::new(own),
        Mode::ScopeOfRootChild => Acl::intersection(vec![Arc::new(Acl::root()), Arc::new(own)]),
        Mode::ScopeOfBroadChild => {
            let broad = parse_policy("broad", BROAD).unwrap();
            Acl::intersection(vec![Arc::new(Acl::compile(&[&broad])), Arc::new(own)])
        }
    };
    let scoped = !matches!(mode, Mode::Plain);

    let mut failures = Vec::new();
    let mut count = 0;
    for c in &v.cases {
        count += 1;
        let req = AclRequest {
            path: &c.path,
            operation: operation(&c.operation),
            data: c.data.as_ref(),
            needs_sudo: c.needs_sudo,
        };
        let wrap = c.wrap_ttl.as_deref().map(|s| parse_duration(s).unwrap());
        let d = acl.check_wrapped(&req, wrap);
        let got = if d.allowed {
            Expect::Allow
        } else {
            Expect::Deny
        };
        let mut problems = Vec::new();
        if got != c.expect {
            problems.push(format!(
                "expected {:?}, got {got:?} (denial: {:?})",
                c.expect, d.denial
            ));
        }
        if let Some(code) = &c.denial {
            let actual = d.denial.as_ref().map(|x| x.code());
            if actual != Some(code.as_str()) {
                problems.push(format!("expected denial {code:?}, got {actual:?}"));
            }
        }
        // As a scope, the granting policies and the matched rule reported are the
        // parent's (the first level); the decision is what must not change.
        if let Some(g) = c.granting_policies.as_ref().filter(|_| !scoped)
            && &d.granting_policies != g
        {
            problems.push(format!(
                "expected granting policies {g:?}, got {:?}",
                d.granting_policies
            ));
        }
        if let Some(m) = c.matched_rule.as_ref().filter(|_| !scoped)
            && d.matched_rule.as_ref() != Some(m)
        {
            problems.push(format!(
                "expected matched rule {m:?}, got {:?}",
                d.matched_rule
            ));
        }
        if let Some(f) = &c.control_group_factors {
            let got: Vec<String> = d
                .control_group
                .as_ref()
                .map(|cg| cg.factors.iter().map(|f| f.name.clone()).collect())
                .unwrap_or_default();
            if &got != f {
                problems.push(format!("expected control-group factors {f:?}, got {got:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{file_name} [{mode:?}]: case {:?} ({} {}): {}",
                c.name,
                c.operation,
                c.path,
                problems.join("; ")
            ));
        }
    }
    for c in &v.capabilities {
        // A root scope under a non-root parent is that parent: never `["root"]`.
        if v.root && matches!(mode, Mode::ScopeOfBroadChild) {
            continue;
        }
        count += 1;
        let got = acl.capability_names(&c.path);
        if got != c.expect {
            failures.push(format!(
                "{file_name}: capabilities of {:?}: expected {:?}, got {got:?}",
                c.path, c.expect
            ));
        }
    }
    (count, failures)
}

#[test]
fn decision_vectors() {
    let files = vector_files();
    assert!(!files.is_empty(), "no vector files found");
    let mut total = 0;
    let mut failures = Vec::new();
    for f in &files {
        let (n, mut fails) = run_file(f);
        assert!(n > 0, "{}: no cases", f.display());
        total += n;
        failures.append(&mut fails);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} vector cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} vector cases in {} files passed", files.len());
}

/// Every vector again with its policies used as the inline scope of a child token: the
/// child of a root token, and the child of a broad non-root parent, must decide exactly
/// as the policies do on their own (the intersection never widens, and a parent that
/// allows everything takes nothing away).
#[test]
fn decision_vectors_as_scopes() {
    let files = vector_files();
    let mut total = 0;
    let mut failures = Vec::new();
    for mode in [Mode::ScopeOfRootChild, Mode::ScopeOfBroadChild] {
        for f in &files {
            let (n, mut fails) = run_file_as(f, mode);
            total += n;
            failures.append(&mut fails);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} scoped vector cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} scoped vector cases passed");
}
