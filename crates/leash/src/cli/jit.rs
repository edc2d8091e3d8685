//! `leash jit list|show|approve|deny|request|complete`: just-in-time access requests
//! from a terminal (`sys/control-group/request/*`). Approvers log in first
//! (`leash login` with a userpass token) so their identity groups count.

use std::time::Duration;

use serde_json::{Value, json};

use super::output::{self, Format};
use super::{CommonArgs, Failure, Outcome, print_secret};

/// `leash jit …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum JitCommand {
    /// List the requests you can see (pending by default).
    List(ListArgs),
    /// Show one request: status, approvals, who decided, the grant window.
    Show(IdArgs),
    /// Approve a request (you must be in an approver group it names, and not its
    /// requester).
    Approve(DecideArgs),
    /// Deny a request; the comment saying why is required.
    Deny(DecideArgs),
    /// Ask for approval of an operation a control group guards (as an agent does).
    Request(RequestArgs),
    /// End a grant window early and revoke what was issued under it.
    Complete(IdArgs),
}

/// Options of `leash jit list`.
#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    /// Which requests: pending, approved (open windows) or all.
    #[arg(long, default_value = "pending", value_parser = ["pending", "approved", "all"])]
    status: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// A request id.
#[derive(clap::Args, Debug)]
pub(crate) struct IdArgs {
    /// The request id (`request_id` of the request's answer).
    #[arg(value_name = "REQUEST_ID")]
    id: String,
    /// Print only this field.
    #[arg(long, value_name = "NAME")]
    field: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash jit approve|deny`.
#[derive(clap::Args, Debug)]
pub(crate) struct DecideArgs {
    /// The request id.
    #[arg(value_name = "REQUEST_ID")]
    id: String,
    /// Why (required to deny).
    #[arg(long, short = 'm', value_name = "TEXT", default_value = "")]
    comment: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash jit request`.
#[derive(clap::Args, Debug)]
pub(crate) struct RequestArgs {
    /// The leash path (`database/creds/agent-readwrite`).
    #[arg(long, value_name = "PATH")]
    target: String,
    /// The operation, as you would state it: a Vault operation (`read`, `update`, …) or
    /// free text (`production write`). Shown to approvers; the grant is bound to what the
    /// policy puts behind the control group (`granted_operations`).
    #[arg(long, default_value = "read")]
    operation: String,
    /// Why.
    #[arg(long, value_name = "TEXT")]
    justification: String,
    /// Minutes of access asked for.
    #[arg(long, value_name = "N")]
    minutes: u64,
    /// The agent id to record.
    #[arg(long, value_name = "ID")]
    agent_id: Option<String>,
    /// Wait (printing progress) until the request is decided or expires; exit 2 unless
    /// it was approved.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub(super) async fn run(cmd: JitCommand) -> Outcome {
    match cmd {
        JitCommand::List(a) => list(a).await,
        JitCommand::Show(a) => show(a).await,
        JitCommand::Approve(a) => decide(a, "approve").await,
        JitCommand::Deny(a) => decide(a, "deny").await,
        JitCommand::Request(a) => request(a).await,
        JitCommand::Complete(a) => complete(a).await,
    }
}

fn check_id(id: &str) -> Result<&str, Failure> {
    let id = id.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(Failure::local(format!(
            "{id:?} is not a request id (a UUID such as 3f0c…-…)"
        )));
    }
    Ok(id)
}

fn age(secs: i64) -> String {
    output::human_duration(u64::try_from(secs).unwrap_or(0))
}

async fn list(a: ListArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let path = format!("sys/control-group/request?list=true&status={}", a.status);
    let resp = client
        .request("GET", &path, None)
        .await
        .map_err(|e| Failure::api("listing", "sys/control-group/request", e))?;
    if resp.status == 404 {
        if a.common.format == Format::Json {
            output::out("{}");
        } else {
            output::out(&format!("No {} requests you can see.", a.status));
        }
        return Ok(0);
    }
    let body = resp
        .into_result()
        .map_err(|e| Failure::api("listing", "sys/control-group/request", e))?
        .unwrap_or(Value::Null);
    if a.common.format == Format::Json {
        output::out(&output::json(&body));
        return Ok(0);
    }
    let keys = body["data"]["keys"].as_array().cloned().unwrap_or_default();
    let info = &body["data"]["key_info"];
    let rows: Vec<Vec<String>> = keys
        .iter()
        .filter_map(Value::as_str)
        .map(|id| {
            let r = &info[id];
            let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
            let mut just = s("justification");
            if just.chars().count() > 40 {
                just = just.chars().take(39).collect::<String>() + "…";
            }
            vec![
                id.to_owned(),
                s("status"),
                s("agent_id"),
                s("operation"),
                s("target_resource"),
                format!(
                    "{}m",
                    r["grant_duration_seconds"].as_u64().unwrap_or(0) / 60
                ),
                age(r["age_seconds"].as_i64().unwrap_or(0)),
                format!("{}/{}", r["approvals"], r["approvals_needed"]),
                just,
            ]
        })
        .collect();
    output::out(&output::table(
        &[
            "ID",
            "Status",
            "Agent",
            "Operation",
            "Target",
            "Duration",
            "Age",
            "Approvals",
            "Justification",
        ],
        &rows,
    ));
    Ok(0)
}

async fn fetch(client: &leash_client::Client, id: &str) -> Result<Value, Failure> {
    let path = format!("sys/control-group/request/{id}");
    client
        .read(&path)
        .await
        .map_err(|e| Failure::api("reading", &path, e))?
        .ok_or_else(|| Failure::Server(format!("No access request {id}")))
}

fn summary(body: &Value) -> String {
    let d = &body["data"];
    let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
    let mut rows = vec![
        ("request_id".to_owned(), s("request_id")),
        ("status".to_owned(), s("status")),
        ("approved".to_owned(), d["approved"].to_string()),
        ("agent_id".to_owned(), s("agent_id")),
        ("operation".to_owned(), s("operation")),
        (
            "granted_operations".to_owned(),
            d["granted_operations"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        ),
        ("agent_name".to_owned(), s("agent_name")),
        ("target_resource".to_owned(), s("target_resource")),
        ("justification".to_owned(), s("justification")),
        (
            "grant_duration".to_owned(),
            output::human_duration(d["grant_duration_seconds"].as_u64().unwrap_or(0)),
        ),
        (
            "approvals".to_owned(),
            format!("{}/{}", d["approvals"], d["approvals_needed"]),
        ),
        ("created_at".to_owned(), s("created_at")),
    ];
    if let Some(by) = d["decided_by"].as_object() {
        let t = |k: &str| by.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        rows.push((
            "decided_by".to_owned(),
            format!("{} ({}) {}", t("name"), t("outcome"), t("comment")),
        ));
    }
    if let Some(e) = d["grant_expires_at"].as_str() {
        rows.push(("grant_expires_at".to_owned(), e.to_owned()));
    }
    if let Some(r) = d["rule"].as_str() {
        rows.push(("rule".to_owned(), r.to_owned()));
    }
    output::kv_table(&rows)
}

fn print(body: &Value, format: Format, field: Option<&str>) -> Outcome {
    if field.is_some() || format == Format::Json {
        return print_secret(body, format, field);
    }
    if let Some(w) = output::warnings(body) {
        output::err(&w);
    }
    output::out(&summary(body));
    Ok(0)
}

async fn show(a: IdArgs) -> Outcome {
    let id = check_id(&a.id)?;
    let client = super::client(&a.common)?;
    let body = fetch(&client, id).await?;
    print(&body, a.common.format, a.field.as_deref())
}

async fn decide(a: DecideArgs, action: &str) -> Outcome {
    let id = check_id(&a.id)?;
    if action == "deny" && a.comment.trim().is_empty() {
        return Err(Failure::local("a denial needs --comment saying why"));
    }
    let client = super::client(&a.common)?;
    let path = format!("sys/control-group/request/{id}/{action}");
    let body = client
        .write(&path, &json!({ "comment": a.comment }))
        .await
        .map_err(|e| Failure::api("writing", &path, e))?
        .ok_or_else(|| Failure::Server(format!("No access request {id}")))?;
    print(&body, a.common.format, None)
}

async fn complete(a: IdArgs) -> Outcome {
    let id = check_id(&a.id)?;
    let client = super::client(&a.common)?;
    let path = format!("sys/control-group/request/{id}/complete");
    let body = client
        .write(&path, &json!({}))
        .await
        .map_err(|e| Failure::api("writing", &path, e))?
        .ok_or_else(|| Failure::Server(format!("No access request {id}")))?;
    print(&body, a.common.format, a.field.as_deref())
}

async fn request(a: RequestArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let mut body = json!({
        "operation": a.operation,
        "target_resource": a.target,
        "justification": a.justification,
        "requested_duration_minutes": a.minutes,
    });
    if let Some(id) = &a.agent_id {
        body["agent_id"] = json!(id);
    }
    let path = "sys/control-group/request";
    let answer = client
        .write(path, &body)
        .await
        .map_err(|e| Failure::api("writing", path, e))?
        .ok_or_else(|| Failure::Server("empty answer".to_owned()))?;
    if !a.wait || answer["approved"] == true {
        return print(&answer, a.common.format, None);
    }
    let id = answer["request_id"].as_str().unwrap_or_default().to_owned();
    output::err(&format!(
        "Request {id} is pending; waiting for approvers (Ctrl-C stops waiting, the request stays)…"
    ));
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let b = fetch(&client, &id).await?;
        let status = b["data"]["status"].as_str().unwrap_or("").to_owned();
        let progress = format!(
            "  {status}: {}/{} approvals, waiting {}",
            b["data"]["approvals"],
            b["data"]["approvals_needed"],
            age(b["data"]["age_seconds"].as_i64().unwrap_or(0))
        );
        if progress != last {
            output::err(&progress);
            last = progress;
        }
        if status != "pending" {
            print(&b, a.common.format, None)?;
            return Ok(if b["approved"] == true { 0 } else { 2 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: JitCommand,
    }

    #[test]
    fn ids_and_flags_are_checked() {
        assert!(check_id("3f0c2a5e-1111-4222-8333-444455556666").is_ok());
        assert!(check_id("../sys").is_err());
        assert!(T::try_parse_from(["t", "list", "--status", "weird"]).is_err());
        assert!(T::try_parse_from(["t", "deny", "abc", "-m", "freeze"]).is_ok());
        assert!(
            T::try_parse_from(["t", "request", "--target", "x", "--justification", "y"]).is_err(),
            "--minutes is required"
        );
    }
}
