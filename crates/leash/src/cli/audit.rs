//! `leash audit verify FILE…`: checks the hash chain of a file audit device, offline.
//!
//! Each argument is a device's file (its rotated files are found beside it and walked
//! oldest first), a directory holding one device's files, or one rotated file (`.gz` is
//! read transparently). Prints `OK` with counts and exits 0, or names the first entry that
//! was removed, reordered or edited (file, line, what mismatched) and exits 2; bad
//! arguments and unreadable files exit 1. The chain format is in `docs/audit.md`.
//!
//! Not here: the chain itself (`leash_audit::chain`); querying entries.

use std::path::PathBuf;

use leash_audit::chain;

use super::{Failure, Outcome, output};

/// `leash audit …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Verify the hash chain of audit log files (exit 0 OK, 2 tampered, 1 usage).
    Verify(VerifyArgs),
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
