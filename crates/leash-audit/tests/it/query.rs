//! `leash_audit::query`: filters across rotated, gzipped and current files, index reuse,
//! rebuild and tail scans; plus an ignored timing run on a million entries.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use leash_audit::query::{self, Filter, Stats};
use serde_json::Value;

/// 2026-11-29T00:00:00Z in Unix nanoseconds.
const T0: i64 = 1_795_910_400 * 1_000_000_000;

fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn agent(i: usize) -> String {
    format!("5c0e{:04x}-7d1a-4c2e-9f3b-agent{:07}", i % 997, i % 997)
}

fn trace(i: usize) -> String {
    format!("4bf92f3577b34da6{:016x}", i)
}

/// Realistic audit lines: per task (one trace, one of ~1000 agents) a request, a `used`
/// event and a response, sometimes an `issued` lease; one line per millisecond.
fn generate(from: usize, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let mut i = from;
    while out.len() < n {
        let task = i / 4;
        let (a, t) = (agent(task), trace(task));
        let time = rfc3339(T0 + i as i64 * 1_000_000);
        let h = "hmac-sha256:c2a1400c45ef2d346297afcd593a9ba53285e933dc21c3889c3527f610206440";
        let line = match i % 4 {
            0 => format!(
                r#"{{"agent_id":"{a}","auth":{{"accessor":"{h}","client_token":"{h}","display_name":"token-agent","entity_id":"{a}","metadata":{{}},"policies":["agent","default"],"policy_results":{{"allowed":true,"granting_policies":[{{"name":"agent","type":"acl"}}]}},"token_issue_time":"2026-11-29T00:00:00Z","token_policies":["agent","default"],"token_ttl":900,"token_type":"service"}},"request":{{"client_token":"{h}","client_token_accessor":"{h}","data":null,"id":"595147b7-4576-4ac2-9d9c-{i:012}","mount_accessor":"database_6183ee47","mount_point":"database/","mount_type":"database","namespace":{{"id":"root"}},"operation":"read","path":"database/creds/agent-readonly","remote_address":"127.0.0.1","remote_port":54284}},"time":"{time}","trace_id":"{t}","type":"request","prev_hash":"sha256:4e0c0000000000000000000000000000000000000000000000000000000000{:02x}"}}"#,
                i % 256
            ),
            1 => format!(
                r#"{{"type":"lifecycle","timestamp":"{time}","event":"agent.credential.used","agent_id":"{a}","entity_id":"{a}","accessor":"{h}","credential_type":"token","credential_scope":{{"policies":["agent","default"]}},"ttl_seconds":900,"trace_id":"{t}","action_context":{{"request_id":"595147b7-{i}","path":"database/creds/agent-readonly","operation":"read","remote_address":"127.0.0.1","trace_id":"{t}"}},"prev_hash":"sha256:00"}}"#
            ),
            2 => format!(
                r#"{{"type":"lifecycle","timestamp":"{time}","event":"agent.credential.issued","agent_id":"{a}","entity_id":"{a}","accessor":"{h}","credential_type":"database","credential_scope":{{"role":"agent-readonly","db":"pg"}},"ttl_seconds":900,"trace_id":"{t}","lease_id":"database/creds/agent-readonly/L{task}","action_context":{{"request_id":"595147b7-{i}","path":"database/creds/agent-readonly","operation":"read","remote_address":"127.0.0.1","trace_id":"{t}"}},"prev_hash":"sha256:00"}}"#
            ),
            _ => format!(
                r#"{{"agent_id":"{a}","auth":{{"accessor":"{h}","client_token":"{h}","entity_id":"{a}","policies":["agent","default"],"token_type":"service"}},"request":{{"id":"595147b7-{i}","operation":"read","path":"database/creds/agent-readonly"}},"response":{{"data":{{"password":"{h}","username":"{h}"}},"secret":{{"lease_id":"database/creds/agent-readonly/L{task}"}}}},"time":"{time}","trace_id":"{t}","type":"response","prev_hash":"sha256:00"}}"#
            ),
        };
        out.push(line);
        i += 1;
    }
    out
}

fn write(path: &Path, lines: &[String]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
}

fn write_gz(path: &Path, lines: &[String]) {
    let f = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    for l in lines {
        gz.write_all(l.as_bytes()).unwrap();
        gz.write_all(b"\n").unwrap();
    }
    gz.finish().unwrap();
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The lines of `all` that `f` keeps, by brute force.
fn expected(all: &[String], f: &Filter) -> Vec<String> {
    all.iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
            let t = s("/timestamp")
                .or(s("/time"))
                .map(|t| {
                    let t = time::OffsetDateTime::parse(
                        &t,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .unwrap();
                    t.unix_timestamp_nanos() as i64
                })
                .unwrap();
            f.agent.as_ref().is_none_or(|a| {
                s("/agent_id").as_ref() == Some(a) || s("/auth/entity_id").as_ref() == Some(a)
            }) && f
                .trace
                .as_ref()
                .is_none_or(|x| s("/trace_id").as_ref() == Some(x))
                && f.event.as_ref().is_none_or(|e| {
                    s("/event").as_ref() == Some(e)
                        || s("/event") == Some(format!("agent.credential.{e}"))
                        || s("/type").as_ref() == Some(e)
                })
                && f.since.is_none_or(|x| t >= x)
                && f.until.is_none_or(|x| t <= x)
        })
        .cloned()
        .collect()
}

fn run(files: &[PathBuf], f: &Filter) -> (Vec<String>, Stats) {
    let out = query::query(files, f).unwrap();
    (out.matches.into_iter().map(|m| m.line).collect(), out.stats)
}

fn by_agent(a: &str) -> Filter {
    Filter {
        agent: Some(a.to_owned()),
        ..Filter::default()
    }
}

#[test]
fn filters_across_rotated_gz_and_current_files_with_index_reuse_rebuild_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("audit.log");
    let all = generate(0, 10_000);
    let gz = dir.path().join("audit.log.20261101T000000.000000000Z.gz");
    let rotated = dir.path().join("audit.log.20261102T000000.000000000Z");
    write_gz(&gz, &all[..4000]);
    write(&rotated, &all[4000..7000]);
    write(&base, &all[7000..]);
    let files = leash_audit::chain::discover(std::slice::from_ref(&base)).unwrap();
    assert_eq!(files, vec![gz.clone(), rotated.clone(), base.clone()]);

    // Agent 5's tasks span every file (agents repeat every 997 tasks).
    let f = by_agent(&agent(5));
    let (got, stats) = run(&files, &f);
    assert_eq!(got, expected(&all, &f));
    assert_eq!(got.len(), 12);
    assert_eq!((stats.built, stats.reused), (3, 0));
    for file in &files {
        assert!(query::index_path(file).exists());
    }

    // Reused; trace, event (shorthand and type), time and combined filters.
    let filters = [
        Filter {
            trace: Some(trace(1800)),
            ..Filter::default()
        },
        Filter {
            event: Some("issued".into()),
            ..Filter::default()
        },
        Filter {
            event: Some("response".into()),
            agent: Some(agent(5)),
            ..Filter::default()
        },
        Filter {
            since: Some(T0 + 3_990 * 1_000_000),
            until: Some(T0 + 7_010 * 1_000_000),
            ..Filter::default()
        },
        Filter {
            event: Some("agent.credential.used".into()),
            since: Some(T0 + 5_000 * 1_000_000),
            agent: Some(agent(1500)),
            ..Filter::default()
        },
        Filter {
            agent: Some("nobody".into()),
            ..Filter::default()
        },
    ];
    for f in &filters {
        let (got, stats) = run(&files, f);
        assert_eq!(got, expected(&all, f), "{f:?}");
        assert_eq!((stats.built, stats.reused), (0, 3));
    }
    assert_eq!(run(&files, &filters[0]).0.len(), 4);
    assert_eq!(run(&files, &filters[3]).0.len(), 3_021);

    // A deleted index is rebuilt.
    std::fs::remove_file(query::index_path(&gz)).unwrap();
    let (got, stats) = run(&files, &f);
    assert_eq!(got, expected(&all, &f));
    assert_eq!((stats.built, stats.reused), (1, 2));

    // Appends to the current file: only the new complete lines are scanned.
    let more = generate(10_000, 101);
    let mut text: String = more[..100].iter().map(|l| format!("{l}\n")).collect();
    text.push_str(&more[100][..50]);
    append(&base, &text);
    let mut all2 = all.clone();
    all2.extend_from_slice(&more[..100]);
    let f2 = Filter {
        since: Some(T0 + 9_990 * 1_000_000),
        ..Filter::default()
    };
    let (got, stats) = run(&files, &f2);
    assert_eq!(got, expected(&all2, &f2));
    assert_eq!(
        (stats.extended, stats.tail_lines, stats.reused),
        (1, 100, 2)
    );
    // The torn line completes.
    append(&base, &format!("{}\n", &more[100][50..]));
    all2.push(more[100].clone());
    let (got, stats) = run(&files, &f2);
    assert_eq!(got, expected(&all2, &f2));
    assert_eq!((stats.extended, stats.tail_lines), (1, 1));
    let (_, stats) = run(&files, &f2);
    assert_eq!((stats.reused, stats.extended), (3, 0));

    // A replaced current file (shorter, different bytes) gets a fresh index.
    write(&base, &all[9000..9500]);
    let mut all3 = all[..7000].to_vec();
    all3.extend_from_slice(&all[9000..9500]);
    let (got, stats) = run(&files, &f);
    assert_eq!(got, expected(&all3, &f));
    assert_eq!((stats.built, stats.reused), (1, 2));

    // Index files do not disturb discovery of a directory, nor `verify`.
    let files2 = leash_audit::chain::discover(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(files2, files);
}

/// Timing on a million entries; run it in release:
/// `cargo test --release -p leash-audit --test it query::million -- --ignored --nocapture`.
#[test]
#[ignore = "slow: a million entries; prints timings"]
fn million_entries_timing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("audit.log");
    let t = Instant::now();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&base).unwrap());
        for chunk in 0..10 {
            for l in generate(chunk * 100_000, 100_000) {
                f.write_all(l.as_bytes()).unwrap();
                f.write_all(b"\n").unwrap();
            }
        }
        f.flush().unwrap();
    }
    let size = std::fs::metadata(&base).unwrap().len();
    println!(
        "generated 1000000 lines ({} MB) in {:?}",
        size >> 20,
        t.elapsed()
    );
    let files = vec![base.clone()];
    let timed = |name: &str, f: &Filter| {
        let t = Instant::now();
        let out = query::query(&files, f).unwrap();
        let e = t.elapsed();
        println!(
            "{name}: {} matches in {e:?} ({:?})",
            out.matches.len(),
            out.stats
        );
        (out, e)
    };
    let (out, _) = timed("index build + query by agent", &by_agent(&agent(42)));
    assert_eq!(out.stats.built, 1);
    let (out, e) = timed("query by agent", &by_agent(&agent(42)));
    assert_eq!(out.stats.reused, 1);
    assert!(out.matches.len() > 900);
    assert!(e.as_secs_f64() < 1.0, "{e:?}");
    let (out, e) = timed(
        "query by trace",
        &Filter {
            trace: Some(trace(123_456)),
            ..Filter::default()
        },
    );
    assert_eq!(out.matches.len(), 4);
    assert!(e.as_secs_f64() < 1.0, "{e:?}");
    let (_, e) = timed(
        "query by event issued + last hour of entries",
        &Filter {
            event: Some("issued".into()),
            since: Some(T0 + 999_000 * 1_000_000),
            ..Filter::default()
        },
    );
    assert!(e.as_secs_f64() < 1.0, "{e:?}");
    append(&base, &format!("{}\n", generate(1_000_000, 1)[0]));
    timed(
        "tail scan of 1 appended line + query by agent",
        &by_agent(&agent(42)),
    );
}
