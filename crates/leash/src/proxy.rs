//! `leash proxy`: runs the credential-injecting sidecar (crate `leash-proxy`).
//!
//! ```text
//! leash proxy --config proxy.hcl                 # serve the proxy "http"/"postgres" blocks
//! leash proxy --config proxy.hcl -- cmd args     # and run cmd as the agent (exec mode)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use leash_proxy::ProxyConfig;

/// Arguments of `leash proxy`.
#[derive(clap::Args, Debug)]
pub(crate) struct ProxyArgs {
    /// Proxy configuration file (`leash agent`'s blocks plus `proxy "http"` /
    /// `proxy "postgres"`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Log level (`info`, `debug`, …); `LEASH_LOG` wins.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// A command to run as the agent (after `--`), as `leash agent exec` does.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub(crate) fn run(args: ProxyArgs) -> ExitCode {
    crate::agent::init_tracing(args.log_level.as_deref());
    let cfg = match ProxyConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    // Two worker threads: the proxy forwards every request of the agent.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exec = (!args.command.is_empty()).then_some(args.command);
    match rt.block_on(leash_proxy::run(cfg, exec)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
