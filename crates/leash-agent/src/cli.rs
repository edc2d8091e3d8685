//! The command line of the agent, shared by `leash agent` (the all-in-one `leash`
//! binary) and the small `leash-agent` binary (this crate's `src/main.rs`), so the two
//! take the same flags and behave the same way:
//!
//! ```text
//! leash agent --config agent.hcl                   # render files, keep them fresh
//! leash agent exec --config agent.hcl -- cmd args  # run cmd with env_template variables
//! leash-agent --config agent.hcl                   # the same, from the small binary
//! ```
//!
//! The agent runs on a single-threaded runtime: it does a handful of HTTP calls a minute,
//! and one thread keeps its resident memory small.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{AgentConfig, RunOptions};

/// Arguments of `leash agent` (and of `leash-agent`).
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// Agent configuration file (HCL or JSON, Vault Agent's shape).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read the configuration text (HCL or JSON) from this environment variable
    /// instead of a file — how `leash injector` hands it to the agent containers.
    #[arg(long, value_name = "NAME", conflicts_with = "config")]
    config_env: Option<String>,
    /// Log level (`info`, `debug`, …); `LEASH_LOG` wins.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
enum AgentCommand {
    /// Render `env_template`s, run a command with them in its environment, forward
    /// signals, restart it on rotation, exit with its exit code.
    Exec {
        /// Agent configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log level; `LEASH_LOG` wins.
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
}

/// Runs the agent with these arguments; the process's exit code.
pub fn run(args: AgentArgs) -> ExitCode {
    let (config, log_level, opts) = match args.command {
        Some(AgentCommand::Exec {
            config,
            log_level,
            command,
        }) => (
            config,
            log_level,
            RunOptions {
                exec_command: Some(command),
                ..RunOptions::default()
            },
        ),
        None => match (args.config, args.config_env) {
            (Some(c), _) => (c, args.log_level, RunOptions::default()),
            (None, Some(var)) => {
                init_tracing(args.log_level.as_deref());
                let Some(text) = std::env::var(&var).ok().filter(|t| !t.trim().is_empty()) else {
                    eprintln!("Error: --config-env {var}: the variable is not set");
                    return ExitCode::from(2);
                };
                return match AgentConfig::parse(&text, std::path::Path::new("/")) {
                    Ok(cfg) => run_config(cfg, RunOptions::default()),
                    Err(e) => {
                        eprintln!("Error: the configuration in {var}: {e}");
                        ExitCode::from(2)
                    }
                };
            }
            (None, None) => {
                eprintln!("Error: the agent needs --config FILE (or --config-env NAME)");
                return ExitCode::from(2);
            }
        },
    };
    init_tracing(log_level.as_deref());
    let cfg = match AgentConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {}: {e}", config.display());
            return ExitCode::from(2);
        }
    };
    run_config(cfg, opts)
}

fn run_config(cfg: AgentConfig, opts: RunOptions) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::run(cfg, opts)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `LEASH_LOG` (an env-filter), else `level`, else `info`.
pub fn init_tracing(level: Option<&str>) {
    let filter = std::env::var("LEASH_LOG")
        .ok()
        .or_else(|| level.map(str::to_owned))
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
