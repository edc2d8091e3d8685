//! `leash lease lookup|renew|revoke`, shaped like `vault lease …`, plus `lease failing`
//! (leases whose revocation keeps failing; a leash extension).
//!
//! Lease ids are not secrets (they cannot be used without a token), so they are plain
//! strings here; the credentials a lease covers never pass through these commands.

use serde_json::{Value, json};

use super::output::{self, Format};
use super::{CommonArgs, Failure, Outcome, print_secret};

/// `leash lease …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum LeaseCommand {
    /// Show a lease: issue and expiry times, TTL, state, revocation attempts.
    Lookup(LookupArgs),
    /// Extend a lease (capped by its max TTL and its token's expiry).
    Renew(RenewArgs),
    /// Revoke a lease (and end the credential in its target), or every lease under a
    /// prefix with --prefix.
    Revoke(RevokeArgs),
    /// List leases whose revocation keeps failing, with their last error (needs sudo).
    Failing(FailingArgs),
}

/// Options of `leash lease lookup`.
#[derive(clap::Args, Debug)]
pub(crate) struct LookupArgs {
    /// The lease id (`database/creds/readonly/…`).
    #[arg(value_name = "LEASE_ID")]
    lease_id: String,
    /// Print only this field.
    #[arg(long, value_name = "NAME")]
    field: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash lease renew`.
#[derive(clap::Args, Debug)]
pub(crate) struct RenewArgs {
    /// The lease id.
    #[arg(value_name = "LEASE_ID")]
    lease_id: String,
    /// Requested extension (`15m`); the server may grant less. Default: the lease's TTL.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    increment: Option<String>,
    /// Print only this field.
    #[arg(long, value_name = "NAME")]
    field: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash lease revoke`.
#[derive(clap::Args, Debug)]
pub(crate) struct RevokeArgs {
    /// The lease id, or with --prefix a lease id prefix (`database/creds/readonly/`).
    #[arg(value_name = "ID")]
    id: String,
    /// Revoke every lease under the prefix (needs sudo).
    #[arg(long)]
    prefix: bool,
    /// With --prefix: drop the lease records WITHOUT revoking the credentials in their
    /// targets (needs sudo; for a target that is gone for good).
    #[arg(long, requires = "prefix")]
    force: bool,
    /// Return at once; the revocation happens in the background.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash lease failing`.
#[derive(clap::Args, Debug)]
pub(crate) struct FailingArgs {
    #[command(flatten)]
    common: CommonArgs,
}

fn parse_duration_arg(s: &str) -> Result<String, String> {
    leash_types::parse_duration(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

pub(super) async fn run(cmd: LeaseCommand) -> Outcome {
    match cmd {
        LeaseCommand::Lookup(a) => lookup(a).await,
        LeaseCommand::Renew(a) => renew(a).await,
        LeaseCommand::Revoke(a) => revoke(a).await,
        LeaseCommand::Failing(a) => failing(a).await,
    }
}

fn check_id(id: &str) -> Result<&str, Failure> {
    let id = id.trim().trim_start_matches('/');
    if id.is_empty() {
        return Err(Failure::local("a lease id is required"));
    }
    Ok(id)
}

async fn lookup(a: LookupArgs) -> Outcome {
    let id = check_id(&a.lease_id)?;
    let client = super::client(&a.common)?;
    let path = "sys/leases/lookup";
    let body = client
        .write(path, &json!({ "lease_id": id }))
        .await
        .map_err(|e| Failure::api("looking up lease at", path, e))?
        .ok_or_else(|| Failure::Server(format!("Error looking up lease {id}: empty answer")))?;
    print_secret(&body, a.common.format, a.field.as_deref())
}

/// The renew request body the flags describe.
fn renew_body(id: &str, increment: Option<&str>) -> Result<Value, Failure> {
    let mut body = json!({ "lease_id": id });
    if let Some(inc) = increment {
        let secs = leash_types::parse_duration(inc)
            .map_err(Failure::local)?
            .as_secs();
        body["increment"] = json!(secs);
    }
    Ok(body)
}

async fn renew(a: RenewArgs) -> Outcome {
    let id = check_id(&a.lease_id)?;
    let body = renew_body(id, a.increment.as_deref())?;
    let client = super::client(&a.common)?;
    let path = "sys/leases/renew";
    let answer = client
        .write(path, &body)
        .await
        .map_err(|e| Failure::api("renewing lease at", path, e))?
        .ok_or_else(|| Failure::Server(format!("Error renewing lease {id}: empty answer")))?;
    print_secret(&answer, a.common.format, a.field.as_deref())
}

/// Which call a revoke makes: path and body.
fn revoke_call(a: &RevokeArgs) -> Result<(String, Value), Failure> {
    let id = check_id(&a.id)?;
    let sync = json!({ "sync": !a.no_wait });
    Ok(match (a.prefix, a.force) {
        (false, _) => (
            "sys/leases/revoke".to_owned(),
            json!({ "lease_id": id, "sync": !a.no_wait }),
        ),
        (true, false) => (format!("sys/leases/revoke-prefix/{id}"), sync),
        (true, true) => (format!("sys/leases/revoke-force/{id}"), json!({})),
    })
}

async fn revoke(a: RevokeArgs) -> Outcome {
    let (path, body) = revoke_call(&a)?;
    let client = super::client(&a.common)?;
    let answer = client
        .write(&path, &body)
        .await
        .map_err(|e| Failure::api("revoking leases at", &path, e))?;
    if let Some(b) = &answer
        && let Some(w) = output::warnings(b)
    {
        output::err(&w);
    }
    match (a.common.format, answer) {
        (Format::Json, Some(body)) => output::out(&output::json(&body)),
        (Format::Json, None) => {}
        (Format::Table, _) if a.force => {
            output::out("Success! Dropped the lease records (their credentials were NOT revoked)")
        }
        (Format::Table, _) if a.no_wait => output::out("Success! Revocation queued"),
        (Format::Table, _) => output::out("Success! Revoked (if it existed)"),
    }
    Ok(0)
}

async fn failing(a: FailingArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let path = "sys/leases/failing";
    let body = client
        .read(path)
        .await
        .map_err(|e| Failure::api("reading", path, e))?
        .ok_or_else(|| Failure::Server(format!("Error reading {path}: empty answer")))?;
    match a.common.format {
        Format::Json => output::out(&output::json(&body)),
        Format::Table => {
            let leases = body["data"]["leases"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if leases.is_empty() {
                output::out("No lease is failing its revocation.");
            }
            for l in leases {
                let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                output::out(&format!(
                    "{}\n  state: {}  attempts: {}  next attempt: {}\n  last error: {}",
                    s("lease_id"),
                    s("state"),
                    l["attempts"],
                    s("next_attempt_time"),
                    s("last_error")
                ));
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: LeaseCommand,
    }

    fn parse(args: &[&str]) -> Result<LeaseCommand, clap::Error> {
        let argv = super::super::normalise_vault_style_flags(
            std::iter::once("t")
                .chain(args.iter().copied())
                .map(std::ffi::OsString::from),
        );
        T::try_parse_from(argv).map(|t| t.cmd)
    }

    #[test]
    fn revoke_variants_pick_their_endpoint() {
        let call = |args: &[&str]| {
            let LeaseCommand::Revoke(a) = parse(args).unwrap() else {
                panic!("not revoke")
            };
            revoke_call(&a)
        };
        assert_eq!(
            call(&["revoke", "database/creds/ro/abc"]).unwrap(),
            (
                "sys/leases/revoke".to_owned(),
                json!({"lease_id": "database/creds/ro/abc", "sync": true})
            )
        );
        assert_eq!(
            call(&["revoke", "-prefix", "database/creds/ro/"])
                .unwrap()
                .0,
            "sys/leases/revoke-prefix/database/creds/ro/"
        );
        assert_eq!(
            call(&["revoke", "-prefix", "-force", "database/"])
                .unwrap()
                .0,
            "sys/leases/revoke-force/database/"
        );
        assert_eq!(
            call(&["revoke", "-no-wait", "x/y"]).unwrap().1["sync"],
            json!(false)
        );
        assert!(call(&["revoke", " "]).is_err());
        assert!(
            parse(&["revoke", "-force", "x"]).is_err(),
            "--force needs --prefix"
        );
    }

    #[test]
    fn renew_takes_durations() {
        assert_eq!(
            renew_body("a/b", Some("15m")).unwrap(),
            json!({"lease_id": "a/b", "increment": 900})
        );
        assert_eq!(renew_body("a/b", None).unwrap(), json!({"lease_id": "a/b"}));
        assert!(parse(&["renew", "a/b", "-increment=soon"]).is_err());
    }
}
