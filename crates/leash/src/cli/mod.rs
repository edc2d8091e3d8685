//! The client half of the `leash` binary: commands that talk to a running server over
//! its Vault-compatible HTTP API through [`leash_client::Client`].
//!
//! Behaviour follows the Vault CLI where it makes sense: the same command names and
//! flags (single-dash spellings accepted, see [`flags`]), tables for people and
//! `--format json` for programs (the server's body, unchanged), errors on stderr, exit
//! code 2 when the server refused or could not be reached and 1 for local mistakes.
//!
//! Invariants: a token is held as a `SecretString` from the moment it is parsed and is
//! printed only where the user asked for it (`token create`, `token lookup`, `-field`,
//! `--format json`); the token file is written with mode 0600, atomically.
//! Not here: the server (`server.rs`) and the benchmark (`bench.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use leash_client::{Client, ClientConfig, ClientError};

mod audit;
mod contain;
mod input;
mod jit;
mod kv;
mod lease;
mod login;
mod output;
mod paths;
mod policy;
mod scan;
mod status;
mod token;

pub(crate) use leash_types::flags::normalise_vault_style_flags;
pub(crate) use output::Format;

/// Commands that talk to a running server.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum ClientCommand {
    /// Print the server's seal status (exit code 2 if sealed).
    Status(status::StatusArgs),
    /// Check a token and save it to ~/.leash-token for later commands.
    Login(login::LoginArgs),
    /// Create, look up, renew and revoke tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Write, read, list and delete ACL policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Read and write key/value secrets (KV version 2, or version 1 if the mount is).
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Look up, renew and revoke leases of dynamic credentials.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Just-in-time access: list, show, approve, deny, request and complete approvals.
    #[command(subcommand)]
    Jit(jit::JitCommand),
    /// Check audit log files offline (hash chain verification).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Find leash credentials in a file (or stdin) and revoke the live ones (exit 1 if any).
    Scan(scan::ScanArgs),
    /// Kill switch: revoke everything an agent holds and lock its identity (--list, --unlock).
    Contain(contain::ContainArgs),
    /// Read data from any path.
    Read(paths::ReadArgs),
    /// Write data to any path.
    Write(paths::WriteArgs),
    /// List the keys under any path.
    List(paths::ListArgs),
    /// Delete data at any path.
    Delete(paths::DeleteArgs),
}

/// Options every client command takes.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct CommonArgs {
    /// Server address [default: $LEASH_ADDR, $VAULT_ADDR or http://127.0.0.1:8200].
    #[arg(long, value_name = "URL")]
    pub(crate) address: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// PEM file of CA certificates to trust [default: $LEASH_CACERT or $VAULT_CACERT].
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Do not verify the server's TLS certificate (dangerous).
    #[arg(long)]
    pub(crate) tls_skip_verify: bool,
}

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A local mistake (bad arguments, unreadable file, bad configuration): exit 1.
    Local(String),
    /// The server refused, could not be reached, or answered nonsense: exit 2.
    Server(String),
}

impl Failure {
    /// The failure of a server call, described like the Vault CLI does
    /// (`Error writing sys/policy/x: Code: 400. Errors:` and a bullet list).
    pub(crate) fn api(action: &str, path: &str, e: ClientError) -> Failure {
        match e {
            ClientError::Api { status, errors } => {
                let mut msg = format!("Error {action} {path}: Code: {status}. Errors:\n");
                for e in &errors {
                    msg.push_str("\n* ");
                    msg.push_str(e);
                }
                Failure::Server(msg)
            }
            ClientError::Config(m) => Failure::Local(format!("Error: {m}")),
            other => Failure::Server(format!("Error {action} {path}: {other}")),
        }
    }

    /// Bad local input.
    pub(crate) fn local(msg: impl std::fmt::Display) -> Failure {
        Failure::Local(format!("Error: {msg}"))
    }
}

/// What a command returns: the exit code on success (0, or 2 for a sealed `status`).
pub(crate) type Outcome = Result<u8, Failure>;

/// The real environment, for [`ClientConfig::from_env`].
pub(crate) fn real_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Resolves the client configuration: environment and token file, then flags.
pub(crate) fn config(common: &CommonArgs) -> Result<ClientConfig, Failure> {
    let mut cfg = ClientConfig::from_env(real_env).map_err(Failure::local)?;
    if let Some(a) = &common.address {
        cfg.address = a.clone();
    }
    if let Some(ca) = &common.ca_cert {
        cfg.ca_cert = Some(ca.clone());
    }
    if common.tls_skip_verify {
        cfg.tls_skip_verify = true;
    }
    Ok(cfg)
}

/// Builds a client from the common options.
pub(crate) fn client(common: &CommonArgs) -> Result<Client, Failure> {
    Client::new(config(common)?).map_err(Failure::local)
}

/// Runs one client command to completion.
pub(crate) fn run(cmd: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::err(&format!("Error: starting the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        match cmd {
            ClientCommand::Status(a) => status::run(a).await,
            ClientCommand::Login(a) => login::run(a).await,
            ClientCommand::Token(c) => token::run(c).await,
            ClientCommand::Policy(c) => policy::run(c).await,
            ClientCommand::Kv(c) => kv::run(c).await,
            ClientCommand::Lease(c) => lease::run(c).await,
            ClientCommand::Audit(c) => audit::run(c).await,
            ClientCommand::Jit(c) => jit::run(c).await,
            ClientCommand::Scan(a) => scan::run(a).await,
            ClientCommand::Contain(a) => contain::run(a).await,
            ClientCommand::Read(a) => paths::read(a).await,
            ClientCommand::Write(a) => paths::write(a).await,
            ClientCommand::List(a) => paths::list(a).await,
            ClientCommand::Delete(a) => paths::delete(a).await,
        }
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Local(msg)) => {
            output::err(&msg);
            ExitCode::from(1)
        }
        Err(Failure::Server(msg)) => {
            output::err(&msg);
            ExitCode::from(2)
        }
    }
}

/// Prints an answer: JSON as is, or its table (or `-field`), plus warnings on stderr.
pub(crate) fn print_secret(
    body: &serde_json::Value,
    format: Format,
    field: Option<&str>,
) -> Outcome {
    if let Some(field) = field {
        let Some(v) = output::find_field(body, field) else {
            return Err(Failure::Local(format!(
                "Field {field:?} not present in secret"
            )));
        };
        output::out(&output::field_text(&v, format));
        return Ok(0);
    }
    match format {
        Format::Json => output::out(&output::json(body)),
        Format::Table => {
            if let Some(w) = output::warnings(body) {
                output::err(&w);
            }
            let rows = output::secret_rows(body);
            if !rows.is_empty() {
                output::out(&output::kv_table(&rows));
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser as _};

    fn parse(args: &[&str]) -> ClientCommand {
        let argv = normalise_vault_style_flags(
            std::iter::once("leash")
                .chain(args.iter().copied())
                .map(std::ffi::OsString::from),
        );
        match crate::Args::try_parse_from(argv) {
            Ok(crate::Args {
                command: crate::Command::Client(c),
            }) => c,
            Ok(other) => panic!("not a client command: {other:?}"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn command_tree_is_consistent() {
        crate::Args::command().debug_assert();
    }

    #[test]
    fn vault_style_command_lines_parse() {
        let ClientCommand::Kv(kv::KvCommand::Get(_)) = parse(&[
            "kv",
            "get",
            "-field=password",
            "-format=json",
            "secret/agents/a1",
        ]) else {
            panic!("kv get")
        };
        let ClientCommand::Write(_) = parse(&["write", "-f", "auth/token/revoke-self"]) else {
            panic!("write")
        };
        let ClientCommand::Token(token::TokenCommand::Create(_)) = parse(&[
            "token",
            "create",
            "-policy=bench",
            "-address=http://127.0.0.1:1",
        ]) else {
            panic!("token create")
        };
        let ClientCommand::Policy(policy::PolicyCommand::Write(_)) =
            parse(&["policy", "write", "bench", "-"])
        else {
            panic!("policy write")
        };
        let ClientCommand::Status(_) = parse(&["status", "--format", "json"]) else {
            panic!("status")
        };
        let ClientCommand::Kv(kv::KvCommand::Put(_)) =
            parse(&["kv", "put", "-mount=secret", "bench/item", "a=1", "b=@f"])
        else {
            panic!("kv put")
        };
    }

    #[test]
    fn debug_of_parsed_commands_hides_secret_values() {
        let cmd = parse(&["kv", "put", "secret/db", "password=hunter2", "-format=json"]);
        assert!(!format!("{cmd:?}").contains("hunter2"));
        let cmd = parse(&["write", "auth/token/lookup", "token=lsh.hidden"]);
        assert!(!format!("{cmd:?}").contains("lsh.hidden"));
        let cmd = parse(&["login", "lsh.hidden"]);
        assert!(!format!("{cmd:?}").contains("lsh.hidden"));
    }

    #[test]
    fn api_failures_read_like_vault() {
        let f = Failure::api(
            "writing",
            "sys/policy/x",
            ClientError::Api {
                status: 400,
                errors: vec!["bad HCL".into(), "line 2".into()],
            },
        );
        match f {
            Failure::Server(m) => {
                assert_eq!(
                    m,
                    "Error writing sys/policy/x: Code: 400. Errors:\n\n* bad HCL\n* line 2"
                );
            }
            Failure::Local(_) => panic!("expected a server failure"),
        }
        assert!(matches!(
            Failure::api("reading", "x", ClientError::Config("bad".into())),
            Failure::Local(_)
        ));
        assert!(matches!(
            Failure::api("reading", "x", ClientError::Decode("odd".into())),
            Failure::Server(_)
        ));
    }
}
