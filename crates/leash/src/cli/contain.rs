//! `leash contain`: the kill switch from the command line.
//!
//! * `leash contain --entity ID|--role MOUNT/ROLE|--accessor A|--trace T --reason TEXT`
//!   calls `sys/containment/lock`: every token, lease and just-in-time request of the
//!   agent ends before the command returns, and an entity or role is locked (its logins
//!   are refused until unlocked). `--async` returns at once with a job id to poll
//!   (`leash read sys/containment/jobs/<id>`).
//! * `leash contain --list` lists the locks (`LIST sys/containment/locks`).
//! * `leash contain --agents` lists the live agents (`LIST sys/containment/agents`, no
//!   `sudo` needed): what `--entity` or `--accessor` would contain.
//! * `leash contain --unlock --entity ID|--role MOUNT/ROLE` lifts one.
//!
//! The token needs `update` (or `list`) with `sudo` on the path. Exit codes: 0 done, 1 a
//! local mistake, 2 the server refused or some lease revocation is still being retried.

use serde_json::{Map, Value, json};

use super::output::{self, Format};
use super::{CommonArgs, Failure, Outcome};

/// Options of `leash contain`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("selector").args(["entity", "role", "accessor", "trace"])))]
pub(crate) struct ContainArgs {
    /// Contain (or unlock) an entity: every token and lease of it; locks its logins.
    #[arg(long, value_name = "ENTITY_ID")]
    entity: Option<String>,
    /// Contain (or unlock) a login role of an auth mount (`kubernetes/ai-agent-role`);
    /// locks its logins.
    #[arg(long, value_name = "MOUNT/ROLE")]
    role: Option<String>,
    /// Revoke one token tree (by its accessor) and everything issued to it.
    #[arg(long, value_name = "ACCESSOR")]
    accessor: Option<String>,
    /// Revoke everything issued under one trace id (one task).
    #[arg(long, value_name = "TRACE_ID")]
    trace: Option<String>,
    /// Why (recorded, and shown to a locked agent when it tries to log in).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Answer at once with a job id instead of waiting for the revocations.
    #[arg(long = "async")]
    asynchronous: bool,
    /// List the locks instead.
    #[arg(long, conflicts_with_all = ["unlock", "reason", "asynchronous"])]
    list: bool,
    /// List the live agents instead (identity, role, tokens, leases, last use).
    #[arg(long, conflicts_with_all = ["unlock", "reason", "asynchronous", "list"])]
    agents: bool,
    /// Lift the lock of `--entity` or `--role` instead.
    #[arg(long, conflicts_with_all = ["reason", "asynchronous", "accessor", "trace"])]
    unlock: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn selector(a: &ContainArgs) -> Result<Map<String, Value>, Failure> {
    let mut body = Map::new();
    if let Some(e) = &a.entity {
        body.insert("entity_id".into(), json!(e));
    } else if let Some(r) = &a.role {
        let Some((mount, role)) = r.trim_matches('/').rsplit_once('/') else {
            return Err(Failure::local(
                "--role takes MOUNT/ROLE, e.g. kubernetes/ai-agent-role",
            ));
        };
        body.insert("role".into(), json!({"mount": mount, "role": role}));
    } else if let Some(x) = &a.accessor {
        body.insert("accessor".into(), json!(x));
    } else if let Some(t) = &a.trace {
        body.insert("trace_id".into(), json!(t));
    } else {
        return Err(Failure::local(
            "name what to contain: --entity, --role, --accessor or --trace (or use --list or --agents)",
        ));
    }
    Ok(body)
}

pub(super) async fn run(a: ContainArgs) -> Outcome {
    let client = super::client(&a.common)?;
    if a.agents {
        const PATH: &str = "sys/containment/agents";
        let answer = client
            .list(PATH)
            .await
            .map_err(|e| Failure::api("listing", PATH, e))?
            .unwrap_or(Value::Null);
        match a.common.format {
            Format::Json => output::out(&output::json(&answer)),
            Format::Table => {
                let keys: Vec<String> = answer["data"]["keys"]
                    .as_array()
                    .map(|k| {
                        k.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    output::out("No live agents.");
                } else {
                    let rows: Vec<Vec<String>> = keys
                        .iter()
                        .map(|k| {
                            let v = &answer["data"]["key_info"][k];
                            let s = |f: &str| v[f].as_str().unwrap_or("").to_owned();
                            let n = |f: &str| v[f].as_array().map_or(0, Vec::len);
                            let roles: Vec<&str> = v["roles"]
                                .as_array()
                                .map(|r| r.iter().filter_map(Value::as_str).collect())
                                .unwrap_or_default();
                            vec![
                                k.replacen("entity/", "--entity ", 1).replacen(
                                    "accessor/",
                                    "--accessor ",
                                    1,
                                ),
                                s("name"),
                                roles.join(","),
                                v["tokens"].as_u64().unwrap_or(0).to_string(),
                                n("leases").to_string(),
                                s("last_use"),
                            ]
                        })
                        .collect();
                    output::out(&output::table(
                        &[
                            "Contain with",
                            "Name",
                            "Role",
                            "Tokens",
                            "Leases",
                            "Last use",
                        ],
                        &rows,
                    ));
                }
            }
        }
        return Ok(0);
    }
    if a.list {
        const PATH: &str = "sys/containment/locks";
        let answer = client
            .list(PATH)
            .await
            .map_err(|e| Failure::api("listing", PATH, e))?
            .unwrap_or(Value::Null);
        match a.common.format {
            Format::Json => output::out(&output::json(&answer)),
            Format::Table => {
                let info = answer["data"]["key_info"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                if info.is_empty() {
                    output::out("No locks.");
                } else {
                    let rows: Vec<Vec<String>> = info
                        .iter()
                        .map(|(k, v)| {
                            let s =
                                |f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
                            vec![k.clone(), s("reason"), s("locked_at"), s("locked_by")]
                        })
                        .collect();
                    output::out(&output::table(
                        &["Lock", "Reason", "Locked at", "Locked by"],
                        &rows,
                    ));
                }
            }
        }
        return Ok(0);
    }
    let mut body = selector(&a)?;
    if a.unlock {
        const PATH: &str = "sys/containment/unlock";
        let answer = client
            .write(PATH, &Value::Object(body))
            .await
            .map_err(|e| Failure::api("writing", PATH, e))?
            .unwrap_or(Value::Null);
        match a.common.format {
            Format::Json => output::out(&output::json(&answer)),
            Format::Table => output::out("Success! Unlocked."),
        }
        return Ok(0);
    }
    let Some(reason) = a.reason.as_deref().filter(|r| !r.trim().is_empty()) else {
        return Err(Failure::local(
            "--reason is required: say why the agent is contained",
        ));
    };
    body.insert("reason".into(), json!(reason));
    if a.asynchronous {
        body.insert("async".into(), json!(true));
    }
    const PATH: &str = "sys/containment/lock";
    let answer = client
        .write(PATH, &Value::Object(body))
        .await
        .map_err(|e| Failure::api("writing", PATH, e))?
        .unwrap_or(Value::Null);
    let d = &answer["data"];
    let retrying = d["leases_retrying"].as_u64().unwrap_or(0);
    match a.common.format {
        Format::Json => output::out(&output::json(&answer)),
        Format::Table if a.asynchronous => {
            let id = d["job_id"].as_str().unwrap_or("");
            output::out(&format!(
                "Containment started; poll it with: leash read sys/containment/jobs/{id}"
            ));
        }
        Format::Table => {
            let n = |k: &str| d["revoked"][k].as_u64().unwrap_or(0).to_string();
            output::out(&output::kv_table(&[
                ("locked".to_owned(), d["locked"].to_string()),
                ("tokens_revoked".to_owned(), n("tokens")),
                ("leases_revoked".to_owned(), n("leases")),
                ("jit_requests_ended".to_owned(), n("approvals")),
                ("leases_retrying".to_owned(), retrying.to_string()),
                ("elapsed_ms".to_owned(), d["elapsed_ms"].to_string()),
            ]));
            if retrying > 0 {
                output::err(&format!(
                    "{retrying} lease revocation(s) failed and are being retried (see sys/leases/failing)."
                ));
            }
        }
    }
    Ok(if retrying > 0 { 2 } else { 0 })
}
