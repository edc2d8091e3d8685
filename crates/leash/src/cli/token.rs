//! `leash token create|lookup|renew|revoke`, shaped like `vault token …`.
//!
//! A token given on the command line is parsed straight into a `SecretString` and sent
//! only in a request body. `token create` prints the new token (that is what it is
//! for); `lookup` prints the token's fields as the server returned them.

use leash_client::{ExposeSecret, SecretString, TokenCreateRequest};
use serde_json::{Value, json};

use super::login::parse_secret;
use super::output::{self, Format};
use super::{CommonArgs, Failure, Outcome, input, print_secret};

/// `leash token …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Create a new token, a child of the current one unless --orphan.
    Create(CreateArgs),
    /// Show a token's properties (the current token if none is given).
    Lookup(LookupArgs),
    /// Extend a token's lease (the current token if none is given).
    Renew(RenewArgs),
    /// Revoke a token and, unless --mode orphan, all its children.
    Revoke(RevokeArgs),
}

/// Options of `leash token create`.
#[derive(clap::Args, Debug)]
pub(crate) struct CreateArgs {
    /// Policy to attach; repeat or separate with commas.
    #[arg(long = "policy", value_name = "NAME", value_delimiter = ',')]
    policies: Vec<String>,
    /// Initial TTL (`1h`, `900`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    ttl: Option<String>,
    /// Hard cap on the lifetime, renewals included.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    explicit_max_ttl: Option<String>,
    /// Make a periodic token, renewable by this period indefinitely.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    period: Option<String>,
    /// Number of uses before the token is revoked (0 = unlimited).
    #[arg(long, value_name = "N")]
    num_uses: Option<u64>,
    /// Create a token with no parent (not revoked with the current token).
    #[arg(long)]
    orphan: bool,
    /// Do not attach the `default` policy.
    #[arg(long)]
    no_default_policy: bool,
    /// Whether the token can be renewed (`--renewable=false` to forbid).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          require_equals = true, value_parser = clap::builder::BoolishValueParser::new())]
    renewable: Option<bool>,
    /// Human-readable name.
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,
    /// Metadata `key=value`; repeat for more.
    #[arg(long, value_name = "K=V")]
    metadata: Vec<String>,
    /// Create through this token role.
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
    /// Token type (`service`).
    #[arg(long = "type", value_name = "TYPE")]
    token_type: Option<String>,
    /// Narrow the new token to this inline scope: a policy file in HCL or JSON (`-` reads
    /// standard input). The token can do only what both the scope and the current token
    /// allow.
    #[arg(long, value_name = "FILE|-")]
    scope: Option<String>,
    /// Print only this field of the answer (`token`, `token_accessor`, …).
    #[arg(long, value_name = "NAME")]
    field: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash token lookup`.
#[derive(clap::Args, Debug)]
pub(crate) struct LookupArgs {
    /// Token to look up (or its accessor with --accessor); default: the current token.
    #[arg(value_name = "TOKEN", value_parser = parse_secret)]
    token: Option<SecretString>,
    /// The argument is an accessor, not a token.
    #[arg(long)]
    accessor: bool,
    /// Print only this field.
    #[arg(long, value_name = "NAME")]
    field: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash token renew`.
#[derive(clap::Args, Debug)]
pub(crate) struct RenewArgs {
    /// Token to renew; default: the current token.
    #[arg(value_name = "TOKEN", value_parser = parse_secret)]
    token: Option<SecretString>,
    /// Requested extension (`1h`); the server may grant less.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    increment: Option<String>,
    /// Print only this field.
    #[arg(long, value_name = "NAME")]
    field: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// How `token revoke` treats children.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RevokeMode {
    /// Revoke only the token; its children become orphans (needs sudo).
    Orphan,
}

/// Options of `leash token revoke`.
#[derive(clap::Args, Debug)]
pub(crate) struct RevokeArgs {
    /// Token to revoke (or its accessor with --accessor).
    #[arg(value_name = "TOKEN", value_parser = parse_secret)]
    token: Option<SecretString>,
    /// The argument is an accessor, not a token.
    #[arg(long)]
    accessor: bool,
    /// Revoke the current token.
    #[arg(long = "self")]
    revoke_self: bool,
    /// `orphan`: keep the children alive as orphans.
    #[arg(long, value_enum)]
    mode: Option<RevokeMode>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Checks a duration flag locally, so a typo is caught before any request.
fn parse_duration_arg(s: &str) -> Result<String, String> {
    leash_types::parse_duration(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

pub(super) async fn run(cmd: TokenCommand) -> Outcome {
    match cmd {
        TokenCommand::Create(a) => create(a).await,
        TokenCommand::Lookup(a) => lookup(a).await,
        TokenCommand::Renew(a) => renew(a).await,
        TokenCommand::Revoke(a) => revoke(a).await,
    }
}

/// The create request the flags describe.
fn create_request(a: &CreateArgs) -> Result<TokenCreateRequest, Failure> {
    Ok(TokenCreateRequest {
        policies: a
            .policies
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        meta: input::parse_metadata(&a.metadata).map_err(Failure::local)?,
        no_default_policy: a.no_default_policy,
        renewable: a.renewable,
        ttl: a.ttl.clone(),
        explicit_max_ttl: a.explicit_max_ttl.clone(),
        period: a.period.clone(),
        display_name: a.display_name.clone(),
        num_uses: a.num_uses,
        token_type: a.token_type.clone(),
        scope: match &a.scope {
            Some(f) => Some(
                input::read_file_or_stdin(f, &mut std::io::stdin().lock())
                    .map_err(Failure::local)?,
            ),
            None => None,
        },
        role: a.role.clone(),
        orphan: a.orphan,
    })
}

async fn create(a: CreateArgs) -> Outcome {
    let req = create_request(&a)?;
    let client = super::client(&a.common)?;
    let path = req.path();
    let body = client
        .write(&path, &req.body())
        .await
        .map_err(|e| Failure::api("creating token at", &path, e))?
        .ok_or_else(|| Failure::Server(format!("Error creating token at {path}: empty answer")))?;
    print_secret(&body, a.common.format, a.field.as_deref())
}

async fn lookup(a: LookupArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let (path, result) = match (&a.token, a.accessor) {
        (None, true) => return Err(Failure::local("--accessor needs an accessor argument")),
        (None, false) => {
            let path = "auth/token/lookup-self";
            (path, client.read(path).await)
        }
        (Some(acc), true) => {
            let path = "auth/token/lookup-accessor";
            (
                path,
                client
                    .write(path, &json!({ "accessor": acc.expose_secret() }))
                    .await,
            )
        }
        (Some(tok), false) => {
            let path = "auth/token/lookup";
            (
                path,
                client
                    .write(path, &json!({ "token": tok.expose_secret() }))
                    .await,
            )
        }
    };
    let body = result
        .map_err(|e| Failure::api("looking up token at", path, e))?
        .ok_or_else(|| Failure::Server(format!("Error looking up token at {path}: no answer")))?;
    print_secret(&body, a.common.format, a.field.as_deref())
}

async fn renew(a: RenewArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let mut body = match &a.token {
        Some(t) => json!({ "token": t.expose_secret() }),
        None => json!({}),
    };
    if let Some(inc) = &a.increment {
        let secs = leash_types::parse_duration(inc)
            .map_err(Failure::local)?
            .as_secs();
        body["increment"] = json!(secs);
    }
    let path = if a.token.is_some() {
        "auth/token/renew"
    } else {
        "auth/token/renew-self"
    };
    let answer = client
        .write(path, &body)
        .await
        .map_err(|e| Failure::api("renewing token at", path, e))?
        .ok_or_else(|| Failure::Server(format!("Error renewing token at {path}: empty answer")))?;
    print_secret(&answer, a.common.format, a.field.as_deref())
}

/// Which call a revoke makes: path and body.
fn revoke_call(a: &RevokeArgs) -> Result<(&'static str, Value), Failure> {
    match (&a.token, a.revoke_self, a.accessor, a.mode) {
        (Some(_), true, _, _) => Err(Failure::local("--self takes no token argument")),
        (None, true, false, None) => Ok(("auth/token/revoke-self", json!({}))),
        (None, true, _, _) => Err(Failure::local(
            "--self cannot be combined with --accessor or --mode",
        )),
        (None, false, _, _) => Err(Failure::local("a token (or --self) is required")),
        (Some(_), false, true, Some(RevokeMode::Orphan)) => Err(Failure::local(
            "--mode orphan cannot be used with --accessor",
        )),
        (Some(acc), false, true, None) => Ok((
            "auth/token/revoke-accessor",
            json!({ "accessor": acc.expose_secret() }),
        )),
        (Some(tok), false, false, Some(RevokeMode::Orphan)) => Ok((
            "auth/token/revoke-orphan",
            json!({ "token": tok.expose_secret() }),
        )),
        (Some(tok), false, false, None) => {
            Ok(("auth/token/revoke", json!({ "token": tok.expose_secret() })))
        }
    }
}

async fn revoke(a: RevokeArgs) -> Outcome {
    let (path, body) = revoke_call(&a)?;
    let client = super::client(&a.common)?;
    let answer = client
        .write(path, &body)
        .await
        .map_err(|e| Failure::api("revoking token at", path, e))?;
    match (a.common.format, answer) {
        (Format::Json, Some(body)) => output::out(&output::json(&body)),
        (Format::Json, None) => {}
        (Format::Table, _) => output::out("Success! Revoked token (if it existed)"),
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
        cmd: TokenCommand,
    }

    fn parse(args: &[&str]) -> TokenCommand {
        let argv = super::super::normalise_vault_style_flags(
            std::iter::once("t")
                .chain(args.iter().copied())
                .map(std::ffi::OsString::from),
        );
        T::try_parse_from(argv).unwrap().cmd
    }

    #[test]
    fn create_flags_map_onto_the_request() {
        let TokenCommand::Create(a) = parse(&[
            "create",
            "-policy=bench",
            "--policy",
            "a,b",
            "-ttl=1h",
            "-explicit-max-ttl=2h",
            "-period=30m",
            "-num-uses=3",
            "-orphan",
            "-no-default-policy",
            "-renewable=false",
            "-display-name=agent",
            "-metadata=agent=a1",
            "-metadata",
            "team=x",
            "-type=service",
        ]) else {
            panic!("not create")
        };
        let r = create_request(&a).unwrap();
        assert_eq!(r.path(), "auth/token/create-orphan");
        assert_eq!(
            r.body(),
            json!({"policies": ["bench", "a", "b"], "ttl": "1h", "explicit_max_ttl": "2h",
                   "period": "30m", "num_uses": 3, "no_default_policy": true,
                   "renewable": false, "display_name": "agent",
                   "meta": {"agent": "a1", "team": "x"}, "type": "service"})
        );
        let TokenCommand::Create(a) = parse(&["create", "--renewable", "--role", "ci"]) else {
            panic!("not create")
        };
        let r = create_request(&a).unwrap();
        assert_eq!(r.renewable, Some(true));
        assert_eq!(r.path(), "auth/token/create/ci");
    }

    #[test]
    fn bad_durations_are_rejected_before_any_request() {
        let argv = ["t", "create", "--ttl", "soon"].map(std::ffi::OsString::from);
        assert!(T::try_parse_from(argv).is_err());
    }

    #[test]
    fn revoke_variants_pick_their_endpoint() {
        let call = |args: &[&str]| {
            let TokenCommand::Revoke(a) = parse(args) else {
                panic!("not revoke")
            };
            revoke_call(&a)
        };
        assert_eq!(
            call(&["revoke", "-self"]).unwrap().0,
            "auth/token/revoke-self"
        );
        let (p, b) = call(&["revoke", "lsh.x"]).unwrap();
        assert_eq!((p, b), ("auth/token/revoke", json!({"token": "lsh.x"})));
        assert_eq!(
            call(&["revoke", "-accessor", "acc"]).unwrap().0,
            "auth/token/revoke-accessor"
        );
        assert_eq!(
            call(&["revoke", "-mode=orphan", "lsh.x"]).unwrap().0,
            "auth/token/revoke-orphan"
        );
        assert!(call(&["revoke"]).is_err());
        assert!(call(&["revoke", "-self", "lsh.x"]).is_err());
        assert!(call(&["revoke", "-accessor", "-mode=orphan", "a"]).is_err());
    }

    #[test]
    fn debug_of_parsed_args_hides_tokens() {
        let a = parse(&["lookup", "lsh.very-secret"]);
        assert!(!format!("{a:?}").contains("very-secret"));
    }
}
