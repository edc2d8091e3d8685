//! `leash-bench`: the benchmarks, kept out of the production `leash` binary. `leash bench …`
//! and `leash bench-leases …` run this binary (installed next to `leash`) with the same
//! arguments, so both spellings work:
//!
//! * `leash-bench bench` drives a running server over HTTP and prints throughput and
//!   latency ([`bench`]);
//! * `leash-bench bench-leases` measures dynamic database credentials and leases
//!   in-process against PostgreSQL, next to a raw-SQL baseline ([`bench_leases`]).
#![forbid(unsafe_code)]

use clap::Parser;

mod bench;
mod bench_ha;
mod bench_leases;
mod suite;

/// The allocator of the `leash` binary (mimalloc), so the servers this binary runs
/// in-process are measured as `leash server` runs them (see crates/leash/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// leash-bench — benchmarks of the leash credential broker.
#[derive(Parser, Debug)]
#[command(name = "leash-bench", version, about, propagate_version = true)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Drive a running server over HTTP and print throughput and latency; `bench suite`
    /// runs every figure against its baseline.
    Bench(BenchCommand),
    /// Every figure of the performance issue next to a baseline measured in the same
    /// run, as one table (the same as `bench suite`).
    Suite(suite::SuiteArgs),
    /// The start-up figure's child process (internal).
    #[command(hide = true)]
    SuiteStartupProbe(suite::ProbeArgs),
    /// Measure dynamic database credentials and leases in-process against PostgreSQL.
    BenchLeases(bench_leases::BenchLeasesArgs),
    /// Measure the PostgreSQL storage backend in-process against baselines of the same
    /// run: token creation vs raw INSERTs, KV reads vs SQLite, mass expiry on three
    /// stores vs one.
    BenchHa(bench_ha::BenchHaArgs),
}

/// `bench` with its options, or `bench suite`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchCommand {
    #[command(subcommand)]
    sub: Option<BenchSub>,
    #[command(flatten)]
    args: bench::BenchArgs,
}

#[derive(clap::Subcommand, Debug)]
enum BenchSub {
    /// Every figure next to a baseline measured in the same run, as one table.
    Suite(suite::SuiteArgs),
}

/// Output format of every benchmark.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Format {
    /// Aligned tables for people.
    #[default]
    Table,
    /// One JSON document on stdout.
    Json,
}

/// The process environment, as the client configuration reads it.
pub(crate) fn real_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Bench(BenchCommand {
            sub: Some(BenchSub::Suite(s)),
            ..
        })
        | Command::Suite(s) => suite::run(s),
        Command::Bench(b) => bench::run(b.args),
        Command::SuiteStartupProbe(p) => suite::probe(p),
        Command::BenchLeases(a) => bench_leases::run(a),
        Command::BenchHa(a) => bench_ha::run(a),
    }
}
