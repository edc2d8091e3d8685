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
    #[arg(long, value_name = "FILE", required_unless_present = "config_env")]
    config: Option<PathBuf>,
    /// Read the configuration (HCL or JSON) from this environment variable instead (what
    /// a sidecar injected from a pod annotation is given).
    #[arg(long, value_name = "NAME", conflicts_with = "config")]
    config_env: Option<String>,
    /// Log level (`info`, `debug`, …); `LEASH_LOG` wins.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// A command to run as the agent (after `--`), as `leash agent exec` does.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub(crate) fn run(args: ProxyArgs) -> ExitCode {
    crate::agent::init_tracing(args.log_level.as_deref());
    let loaded = match (&args.config, &args.config_env) {
        (Some(path), _) => ProxyConfig::load(path).map_err(|e| format!("{}: {e}", path.display())),
        (None, Some(var)) => match std::env::var(var) {
            Ok(text) => ProxyConfig::parse(&text, std::path::Path::new("."))
                .map_err(|e| format!("--config-env {var}: {e}")),
            Err(_) => Err(format!("--config-env {var}: the variable is not set")),
        },
        (None, None) => Err("leash proxy needs --config FILE (or --config-env NAME)".into()),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread, as `leash agent`: a proxied request hops between the client's
    // connection and the upstream's, and on one thread those hops are plain task
    // switches instead of cross-thread wake-ups (measured faster by scripts/bench-proxy
    // on the 2-CPU development machine, where the agent and the upstream need the rest).
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
