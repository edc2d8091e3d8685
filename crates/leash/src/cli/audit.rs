//! `leash audit verify FILE…`: checks the hash chain of a file audit device, offline.
//!
//! Each argument is a device's file (its rotated files are found beside it and walked
//! oldest first), a directory holding one device's files, or one rotated file (`.gz` is
//! read transparently). Prints `OK` with counts and exits 0, or names the first entry that
//! was removed, reordered or edited (file, line, what mismatched) and exits 2; bad
//! arguments and unreadable files exit 1. The chain format is in `docs/audit.md`.
//!
//! `leash audit query [--agent ID] [--trace ID] [--event NAME] [--since T] [--until T]
//! [--format json] FILE…`: filters the entries of the same files through an index beside
//! each file (`leash_audit::query`), printing a table or the original lines.
//!
//! Not here: the chain itself (`leash_audit::chain`), the index (`leash_audit::query`).

use std::path::PathBuf;

use leash_audit::{chain, query};
use leash_types::{Clock as _, SystemClock};
use serde_json::Value;

use super::{Failure, Outcome, output};

/// `leash audit …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Verify the hash chain of audit log files (exit 0 OK, 2 tampered, 1 usage).
    Verify(VerifyArgs),
    /// Filter the entries of audit log files (rotated and `.gz` included) by agent, trace,
    /// event and time, through an index kept beside each file.
    Query(QueryArgs),
}

/// Options of `leash audit query`.
#[derive(clap::Args, Debug)]
pub(crate) struct QueryArgs {
    /// Entries of this agent, by id or readable name: `agent_id` or `agent_name`, or for
    /// request/response entries `auth.entity_id` or the login role, user or display name.
    #[arg(long)]
    agent: Option<String>,
    /// Entries with this `trace_id`.
    #[arg(long)]
    trace: Option<String>,
    /// A lifecycle event (`issued` is short for `agent.credential.issued`) or an entry
    /// type (`request`, `response`, `lifecycle`…).
    #[arg(long)]
    event: Option<String>,
    /// Entries at or after this time: RFC 3339 or a duration ago (`30m`, `1h`, `7d`).
    #[arg(long)]
    since: Option<String>,
    /// Entries at or before this time: RFC 3339 or a duration ago.
    #[arg(long)]
    until: Option<String>,
    /// `table` (default) or `json` (the matching lines as written).
    #[arg(long, default_value = "table")]
    format: String,
    /// Audit log files, as for `leash audit verify`.
    // Checked in `run_query`, so that a missing FILE exits 1 like `verify`.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Options of `leash audit verify`.
#[derive(clap::Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Audit log files, oldest first: a device's file (its rotated files beside it are
    /// included), a directory of one device's files, or single rotated files.
    // Not `required` for clap: a missing FILE is checked in `verify`, so that it exits 1
    // like the command's other usage errors, not clap's 2, which means "tampered" here.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Runs an `audit` subcommand.
pub(crate) async fn run(cmd: AuditCommand) -> Outcome {
    match cmd {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Query(a) => run_query(a),
    }
}

fn verify(args: VerifyArgs) -> Outcome {
    if args.files.is_empty() {
        return Err(Failure::local(
            "name at least one audit log file: leash audit verify FILE…",
        ));
    }
    let files = chain::discover(&args.files).map_err(Failure::local)?;
    let report = chain::verify_files(&files).map_err(Failure::local)?;
    match report.tamper {
        None => {
            let mut text = format!(
                "OK: {} entries in {} file(s), hash chain intact",
                report.lines,
                report.files.len()
            );
            for r in &report.restarts {
                text.push_str(&format!(
                    "\nchain starts at {} line 1: {}",
                    r.file.display(),
                    r.reason
                ));
            }
            output::out(&text);
            Ok(0)
        }
        Some(t) => {
            output::out(&format!(
                "TAMPERED: {t}\n({} entries checked before it)",
                report.lines.saturating_sub(1)
            ));
            Ok(2)
        }
    }
}

fn run_query(args: QueryArgs) -> Outcome {
    if args.files.is_empty() {
        return Err(Failure::local(
            "name at least one audit log file: leash audit query [FILTERS] FILE…",
        ));
    }
    let json = match args.format.as_str() {
        "json" => true,
        "table" => false,
        other => {
            return Err(Failure::local(format!(
                "--format {other}: expected table or json"
            )));
        }
    };
    let now = SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(i64::MAX);
    let bound = |s: &Option<String>| {
        s.as_deref()
            .map(|s| query::parse_time(s, now))
            .transpose()
            .map_err(Failure::local)
    };
    let filter = query::Filter {
        agent: args.agent,
        trace: args.trace,
        event: args.event,
        since: bound(&args.since)?,
        until: bound(&args.until)?,
    };
    let files = chain::discover(&args.files).map_err(Failure::local)?;
    let result = query::query(&files, &filter).map_err(Failure::local)?;
    if json {
        let lines: Vec<&str> = result.matches.iter().map(|m| m.line.as_str()).collect();
        if !lines.is_empty() {
            output::out(&lines.join("\n"));
        }
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = result.matches.iter().map(|m| row(&m.line)).collect();
    if rows.is_empty() {
        output::out("No matching entries.");
    } else {
        output::out(&output::table(
            &["Time", "Type/Event", "Agent", "Trace", "Path/Lease"],
            &rows,
        ));
    }
    Ok(0)
}

/// A table row of an entry: time, type or event, agent, trace, lease or path.
fn row(line: &str) -> Vec<String> {
    let v: Value = line
        .find('{')
        .and_then(|i| line.get(i..))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null);
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
    let first = |ps: &[&str]| {
        ps.iter()
            .map(|p| s(p))
            .find(|x| !x.is_empty())
            .unwrap_or("-")
            .to_owned()
    };
    vec![
        first(&["/timestamp", "/time"]),
        first(&["/event", "/type"]),
        first(&["/agent_id", "/auth/entity_id"]),
        first(&["/trace_id"]),
        first(&[
            "/lease_id",
            "/response/secret/lease_id",
            "/request/path",
            "/action_context/path",
            "/path",
        ]),
    ]
}
