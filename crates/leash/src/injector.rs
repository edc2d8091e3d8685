//! `leash injector`: the Kubernetes mutating admission webhook (crate `leash-injector`).
//! Every flag can also come from its environment variable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use leash_injector::server::TlsFiles;
use leash_injector::{Resources, Settings};

/// Arguments of `leash injector`.
#[derive(clap::Args, Debug)]
pub(crate) struct InjectorArgs {
    /// Address to listen on (HTTPS).
    #[arg(
        long,
        env = "LEASH_INJECTOR_LISTEN",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    listen: String,
    /// TLS certificate chain (PEM); reloaded when it changes.
    #[arg(long, env = "LEASH_INJECTOR_TLS_CERT", value_name = "FILE")]
    tls_cert: PathBuf,
    /// TLS private key (PEM); reloaded when it changes.
    #[arg(long, env = "LEASH_INJECTOR_TLS_KEY", value_name = "FILE")]
    tls_key: PathBuf,
    /// The leash address the agents use unless a pod's `service` annotation says
    /// otherwise.
    #[arg(long, env = "LEASH_INJECTOR_LEASH_ADDR", value_name = "URL")]
    leash_addr: String,
    /// CA bundle (PEM) the agents trust leash's certificate with (unless a pod names a
    /// `ca-cert`); handed to them through the pod's annotations.
    #[arg(long, env = "LEASH_INJECTOR_CA_BUNDLE", value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
    /// Image of the agent containers (it must have `leash` on its PATH).
    #[arg(long, env = "LEASH_INJECTOR_AGENT_IMAGE", default_value = concat!("leash:", env!("CARGO_PKG_VERSION")), value_name = "IMAGE")]
    agent_image: String,
    /// Default CPU request of the agent containers.
    #[arg(
        long,
        env = "LEASH_INJECTOR_AGENT_REQUESTS_CPU",
        default_value = "10m",
        value_name = "QUANTITY"
    )]
    agent_requests_cpu: String,
    /// Default memory request of the agent containers.
    #[arg(
        long,
        env = "LEASH_INJECTOR_AGENT_REQUESTS_MEM",
        default_value = "16Mi",
        value_name = "QUANTITY"
    )]
    agent_requests_mem: String,
    /// Default CPU limit of the agent containers.
    #[arg(
        long,
        env = "LEASH_INJECTOR_AGENT_LIMITS_CPU",
        default_value = "250m",
        value_name = "QUANTITY"
    )]
    agent_limits_cpu: String,
    /// Default memory limit of the agent containers.
    #[arg(
        long,
        env = "LEASH_INJECTOR_AGENT_LIMITS_MEM",
        default_value = "48Mi",
        value_name = "QUANTITY"
    )]
    agent_limits_mem: String,
    /// Default user (and group) id of the agent containers.
    #[arg(
        long,
        env = "LEASH_INJECTOR_AGENT_RUN_AS_USER",
        default_value_t = 65532,
        value_name = "UID"
    )]
    agent_run_as_user: i64,
    /// Only pods in these namespaces are injected (comma-separated; `prefix*` allowed);
    /// default all. Others are admitted unchanged.
    #[arg(
        long,
        env = "LEASH_INJECTOR_NAMESPACE_SELECTOR",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    namespace_selector: Vec<String>,
    /// Only pods whose labels match this selector are injected (`k=v,k!=v,k,!k`).
    #[arg(
        long,
        env = "LEASH_INJECTOR_LABEL_SELECTOR",
        default_value = "",
        value_name = "SELECTOR"
    )]
    label_selector: String,
    /// Log level (`info`, `debug`, …); `LEASH_LOG` wins.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn settings(a: &InjectorArgs) -> Result<Settings, String> {
    if !(a.leash_addr.starts_with("http://") || a.leash_addr.starts_with("https://")) {
        return Err(format!(
            "--leash-addr {:?}: expected http(s)://host:port",
            a.leash_addr
        ));
    }
    let ca_bundle_pem = match &a.ca_bundle {
        None => None,
        Some(p) => {
            let pem = std::fs::read_to_string(p)
                .map_err(|e| format!("--ca-bundle {}: {e}", p.display()))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "--ca-bundle {}: holds no PEM certificate",
                    p.display()
                ));
            }
            Some(pem)
        }
    };
    // The defaults go through the same checks as a pod's annotations.
    let resources = Resources {
        requests_cpu: a.agent_requests_cpu.clone(),
        requests_mem: a.agent_requests_mem.clone(),
        limits_cpu: a.agent_limits_cpu.clone(),
        limits_mem: a.agent_limits_mem.clone(),
    };
    let s = Settings {
        leash_addr: a.leash_addr.trim_end_matches('/').to_owned(),
        agent_image: a.agent_image.clone(),
        ca_bundle_pem,
        resources,
        run_as_user: a.agent_run_as_user,
        namespaces: a
            .namespace_selector
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
        label_selector: leash_injector::parse_label_selector(&a.label_selector)
            .map_err(|e| e.to_string())?,
    };
    s.check().map_err(|e| e.to_string())?;
    Ok(s)
}

pub(crate) fn run(args: InjectorArgs) -> ExitCode {
    crate::agent::init_tracing(args.log_level.as_deref());
    let settings = match settings(&args) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
    };
    let files = TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    };
    if let Err(e) = leash_injector::server::check_tls(&files) {
        eprintln!("Error: {e}");
        return ExitCode::from(2);
    }
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
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("Error: --listen {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| args.listen.clone());
        tracing::info!(%addr, leash = %settings.leash_addr, "leash injector listening");
        println!("leash injector listening on https://{addr}");
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        };
        match leash_injector::server::serve(listener, files, settings, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
