//! `leash audit query` as a command: filters over a rotated file and the current file,
//! table and JSON output, and its usage errors (exit 1). The filtering itself (`.gz`,
//! index reuse, rebuild, tail scans) is tested in leash-audit (`tests/it/query.rs`).

use std::path::Path;
use std::process::Command;

fn query(args: &[&str], files: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(["audit", "query"])
        .args(args)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const OLD: &str = r#"{"agent_id":"agent-a","auth":{"entity_id":"agent-a"},"request":{"path":"database/creds/ro"},"time":"2026-11-01T10:00:00.5Z","trace_id":"t1","type":"request","prev_hash":"sha256:00"}
{"type":"lifecycle","timestamp":"2026-11-01T10:00:01Z","event":"agent.credential.issued","agent_id":"agent-a","trace_id":"t1","lease_id":"database/creds/ro/L1","prev_hash":"sha256:00"}
"#;
const NEW: &str = r#"{"agent_id":"agent-b","auth":{"entity_id":"agent-b"},"request":{"path":"secret/data/x"},"time":"2026-11-29T10:00:00Z","trace_id":"t2","type":"request","prev_hash":"sha256:00"}
{"type":"lifecycle","timestamp":"2026-11-29T10:00:02Z","event":"agent.credential.revoked","agent_id":"agent-a","trace_id":"t1","lease_id":"database/creds/ro/L1","reason":"operator","prev_hash":"sha256:00"}
"#;

#[test]
fn query_filters_rotated_and_current_files() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("audit.log");
    let rotated = tmp.path().join("audit.log.20261102T000000.000000000Z");
    std::fs::write(&rotated, OLD).unwrap();
    std::fs::write(&log, NEW).unwrap();

    let (code, out, err) = query(&["--trace", "t1", "--format", "json"], &[&log]);
    assert_eq!(code, 0, "{out}{err}");
    let want: Vec<&str> = OLD.lines().chain(NEW.lines().skip(1)).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);

    let (code, out, err) = query(&["--agent", "agent-a", "--event", "issued"], &[&log]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("agent.credential.issued"), "{out}");
    assert!(out.contains("database/creds/ro/L1"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("agent-a")).count(),
        1,
        "{out}"
    );

    let (code, out, _) = query(&["--since", "2026-11-29T00:00:00Z"], &[tmp.path()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("secret/data/x") && out.contains("revoked"),
        "{out}"
    );
    assert!(!out.contains("issued"), "{out}");
    assert!(log.with_extension("log.qidx").exists());

    let (code, out, _) = query(&["--agent", "nobody"], &[&log]);
    assert_eq!((code, out.trim()), (0, "No matching entries."));
    for bad in [&["--since", "soon"][..], &["--format", "yaml"][..]] {
        let (code, _, err) = query(bad, &[&log]);
        assert_eq!(code, 1, "{bad:?}: {err}");
    }
    assert_eq!(query(&[], &[]).0, 1);
    assert_eq!(query(&[], &[&tmp.path().join("missing.log")]).0, 1);
}
