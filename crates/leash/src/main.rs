//! The `leash` binary: `leash server` runs the broker, the other subcommands are the CLI
//! that talks to a running server over its Vault-compatible HTTP API, and `leash bench`
//! runs the benchmarks (a separate binary, `leash-bench`, so this one does not carry them).
#![forbid(unsafe_code)]

use clap::Parser;

mod agent;
mod bench;
mod cli;
mod config;
mod docs;
mod injector;
mod migrate;
mod proxy;
mod server;

/// mimalloc instead of the system allocator: a request allocates many small, short-lived
/// values, and with mimalloc the unaudited hot paths ran 21–27 % faster in the same
/// benchmark run (docs/benchmarks.md). The agent-only `leash-agent` keeps the system
/// allocator, which needs less resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// leash — short-lived, narrowly scoped, audited credentials for AI agents.
#[derive(Parser, Debug)]
#[command(name = "leash", version, about, propagate_version = true)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Run the leash server.
    Server(server::ServerArgs),
    /// Run the sidecar agent: log in, render credential files or a child's environment,
    /// renew and re-issue them, revoke them on exit.
    Agent(agent::AgentArgs),
    /// Run the Kubernetes mutating admission webhook that injects `leash agent` init
    /// and sidecar containers into pods with Vault Agent Injector annotations.
    Injector(injector::InjectorArgs),
    /// Run the credential proxy: attach credentials to the agent's HTTP requests and
    /// PostgreSQL sessions so the agent never holds them (docs/proxy.md).
    Proxy(proxy::ProxyArgs),
    /// Drive a running server over HTTP and print throughput and latency (runs the
    /// `leash-bench` binary; `leash bench --help` lists its options).
    #[command(disable_help_flag = true)]
    Bench(bench::Forward),
    /// Measure dynamic database credentials and leases in-process against PostgreSQL
    /// (runs the `leash-bench` binary).
    #[command(disable_help_flag = true)]
    BenchLeases(bench::Forward),
    /// Operator commands that work on storage directly, with the servers stopped.
    #[command(subcommand)]
    Operator(migrate::OperatorCommand),
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Generate documentation (docs/cli.md) from the command definitions.
    #[command(subcommand, hide = true)]
    Docs(docs::DocsCommand),
}

fn main() -> std::process::ExitCode {
    let argv = cli::normalise_vault_style_flags(std::env::args_os());
    let args = Args::parse_from(argv);
    match args.command {
        Command::Server(a) => server::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Injector(a) => injector::run(a),
        Command::Proxy(a) => proxy::run(a),
        Command::Bench(a) => bench::forward("bench", a),
        Command::BenchLeases(a) => bench::forward("bench-leases", a),
        Command::Operator(o) => migrate::run(o),
        Command::Client(c) => cli::run(c),
        Command::Docs(d) => docs::run(d),
    }
}
