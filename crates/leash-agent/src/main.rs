//! `leash-agent`: the sidecar alone, for images that want a small resident footprint.
//!
//! It runs exactly what `leash agent` runs (the arguments and the entry point are
//! [`leash_agent::cli`], shared with the `leash` binary), but the binary links only the
//! agent, its HTTP client and the command line: no server, engines, storage or UI. Its
//! resident memory is the measure (docs/agent.md).
#![forbid(unsafe_code)]

use clap::Parser;

/// leash-agent — the leash sidecar: log in, render credential files or a child's
/// environment, renew and re-issue them, revoke them on exit (the same as `leash agent`).
#[derive(Parser, Debug)]
#[command(name = "leash-agent", version)]
struct Args {
    #[command(flatten)]
    agent: leash_agent::cli::AgentArgs,
}

fn main() -> std::process::ExitCode {
    let argv = leash_types::flags::normalise_vault_style_flags(std::env::args_os());
    leash_agent::cli::run(Args::parse_from(argv).agent)
}
