//! `leash policy write|read|list|delete`, shaped like `vault policy …` (`sys/policy/*`).
//!
//! The policy text is sent as the server received it from the file: HCL or JSON, not
//! parsed here, so the server's error (with line and column) is what the user sees.

use serde_json::Value;

use super::output::{self, Format};
use leash_client::{policy_names, policy_text};

use super::{CommonArgs, Failure, Outcome, input};

/// `leash policy …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum PolicyCommand {
    /// Create or replace a policy from a file (`-` for stdin).
    Write(WriteArgs),
    /// Print a policy's text.
    Read(NameArgs),
    /// List policy names.
    List(ListArgs),
    /// Delete a policy.
    Delete(NameArgs),
}

/// Options of `leash policy write`.
#[derive(clap::Args, Debug)]
pub(crate) struct WriteArgs {
    /// Policy name.
    name: String,
    /// HCL or JSON file, or `-` for stdin.
    #[arg(value_name = "FILE")]
    file: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options naming one policy.
#[derive(clap::Args, Debug)]
pub(crate) struct NameArgs {
    /// Policy name.
    name: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash policy list`.
#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    common: CommonArgs,
}

pub(super) async fn run(cmd: PolicyCommand) -> Outcome {
    match cmd {
        PolicyCommand::Write(a) => write(a).await,
        PolicyCommand::Read(a) => read(a).await,
        PolicyCommand::List(a) => list(a).await,
        PolicyCommand::Delete(a) => delete(a).await,
    }
}

async fn write(a: WriteArgs) -> Outcome {
    let text =
        input::read_file_or_stdin(&a.file, &mut std::io::stdin().lock()).map_err(Failure::local)?;
    let client = super::client(&a.common)?;
    let path = format!("sys/policy/{}", a.name);
    client
        .policy_write(&a.name, &text)
        .await
        .map_err(|e| Failure::api("uploading policy", &path, e))?;
    if a.common.format == Format::Table {
        output::out(&format!("Success! Uploaded policy: {}", a.name));
    }
    Ok(0)
}

async fn read(a: NameArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let path = format!("sys/policy/{}", a.name);
    let body = client
        .read(&path)
        .await
        .map_err(|e| Failure::api("reading", &path, e))?;
    let Some(body) = body else {
        return Err(Failure::Server(format!("No policy named: {}", a.name)));
    };
    match a.common.format {
        Format::Json => output::out(&output::json(&body)),
        Format::Table => {
            let rules = policy_text(&body).ok_or_else(|| {
                Failure::Server(format!(
                    "Error reading {path}: the answer has no policy text"
                ))
            })?;
            output::out(rules.trim_end());
        }
    }
    Ok(0)
}

async fn list(a: ListArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let body = client
        .read("sys/policy")
        .await
        .map_err(|e| Failure::api("listing policies at", "sys/policy", e))?
        .unwrap_or(Value::Null);
    match a.common.format {
        Format::Json => output::out(&output::json(&body)),
        Format::Table => {
            for name in policy_names(&body) {
                output::out(&name);
            }
        }
    }
    Ok(0)
}

async fn delete(a: NameArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let path = format!("sys/policy/{}", a.name);
    client
        .policy_delete(&a.name)
        .await
        .map_err(|e| Failure::api("deleting", &path, e))?;
    if a.common.format == Format::Table {
        output::out(&format!("Success! Deleted policy: {}", a.name));
    }
    Ok(0)
}
