//! `leash kv put|get|delete|list`, shaped like `vault kv …`.
//!
//! The path names the mount as its first part (`secret/agents/a1`), or `--mount` names
//! it and the path is relative. Which KV version the mount runs is asked of
//! `sys/internal/ui/mounts/<path>`, as the Vault CLI does; if that call fails (older
//! server, no permission) the mount is taken to be version 2, leash's default.
//! Version 2 paths get `data/` (read, write, delete) or `metadata/` (list) inserted
//! after the mount; version 1 paths are used as they are.

use serde_json::{Value, json};

use leash_client::{Client, list_keys};

use leash_client::SecretString;

use super::login::parse_secret;
use super::output::{self, Format};
use super::{CommonArgs, Failure, Outcome, input};

/// `leash kv …`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum KvCommand {
    /// Write a new version of a secret (`k=v`, `k=@file`, `k=-`, or `-` for JSON on stdin).
    Put(PutArgs),
    /// Read a secret.
    // `--version` selects a secret version here, as in `vault kv get -version=N`.
    #[command(disable_version_flag = true)]
    Get(GetArgs),
    /// Delete the latest version of a secret.
    Delete(PathArgs),
    /// List the keys under a path.
    List(PathArgs),
}

/// Where the secret lives.
#[derive(clap::Args, Debug)]
pub(crate) struct Location {
    /// Mount path (`secret`); without it the path's first part is the mount.
    #[arg(long, value_name = "MOUNT")]
    mount: Option<String>,
    /// Secret path.
    path: String,
}

/// Options of `leash kv put`.
#[derive(clap::Args, Debug)]
pub(crate) struct PutArgs {
    #[command(flatten)]
    at: Location,
    /// Data: `key=value`, `key=@file`, `key=-`, or a single `-` / `@file.json`.
    #[arg(value_name = "K=V", required = true, value_parser = parse_secret)]
    data: Vec<SecretString>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash kv get`.
#[derive(clap::Args, Debug)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    at: Location,
    /// Print only this key's value.
    #[arg(long, value_name = "KEY")]
    field: Option<String>,
    /// Read this version instead of the latest (KV v2).
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options naming a path only.
#[derive(clap::Args, Debug)]
pub(crate) struct PathArgs {
    #[command(flatten)]
    at: Location,
    #[command(flatten)]
    common: CommonArgs,
}

/// A resolved location: mount without slashes, path relative to it, KV version.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    mount: String,
    rel: String,
    version: u8,
}

impl Resolved {
    /// The API path for an operation (`data` or `metadata` in v2).
    fn api_path(&self, v2_kind: &str) -> String {
        match self.version {
            2 => leash_client::kv2_path(&self.mount, v2_kind, &self.rel),
            _ => format!("{}/{}", self.mount, self.rel),
        }
    }
}

/// Splits `mount` + `path` when the server could not say: the flag, or the first part.
pub(crate) fn fallback_location(mount: Option<&str>, path: &str) -> Resolved {
    let path = path.trim_start_matches('/');
    let (mount, rel) = match mount {
        Some(m) => (m.trim_matches('/').to_owned(), path.to_owned()),
        None => match path.split_once('/') {
            Some((m, rest)) => (m.to_owned(), rest.to_owned()),
            None => (path.to_owned(), String::new()),
        },
    };
    Resolved {
        mount,
        rel,
        version: 2,
    }
}

/// Asks the server which mount holds the path and its version; falls back to v2.
async fn resolve(client: &Client, at: &Location) -> Resolved {
    let full = match &at.mount {
        Some(m) => format!(
            "{}/{}",
            m.trim_matches('/'),
            at.path.trim_start_matches('/')
        ),
        None => at.path.trim_start_matches('/').to_owned(),
    };
    match client.kv_mount(&full).await {
        Ok(Some(kv)) => {
            let mount = kv.mount.trim_matches('/').to_owned();
            let rel = full
                .strip_prefix(&mount)
                .map(|r| r.trim_start_matches('/').to_owned())
                .unwrap_or_else(|| fallback_location(at.mount.as_deref(), &at.path).rel);
            Resolved {
                mount,
                rel,
                version: kv.version,
            }
        }
        _ => fallback_location(at.mount.as_deref(), &at.path),
    }
}

/// `GET` or `LIST` a KV path. A 404 (nothing there) is "No value found at …", as
/// `vault kv` says, and names the mount when the server says nothing is mounted there
/// (a soft-deleted version's 404 still carries its metadata and is returned).
async fn read_or_explain(
    client: &Client,
    method: &str,
    path: &str,
    mount: &str,
    action: &str,
) -> Result<Value, Failure> {
    let resp = client
        .request(method, path, None)
        .await
        .map_err(|e| Failure::api(action, path, e))?;
    if resp.status == 404 {
        if let Some(b) = resp
            .body
            .as_ref()
            .filter(|b| b.get("data").is_some_and(|d| !d.is_null()))
        {
            return Ok(b.clone());
        }
        let unmounted = resp
            .errors()
            .iter()
            .any(|e| e.starts_with("nothing is mounted"));
        return Err(Failure::Server(if unmounted {
            format!(
                "No value found at {path}: no secrets engine is mounted at {}/ (GET /v1/sys/mounts lists them)",
                mount.trim_end_matches('/')
            )
        } else {
            format!("No value found at {path}")
        }));
    }
    resp.into_result()
        .map_err(|e| Failure::api(action, path, e))?
        .ok_or_else(|| Failure::Server(format!("No value found at {path}")))
}

pub(super) async fn run(cmd: KvCommand) -> Outcome {
    match cmd {
        KvCommand::Put(a) => put(a).await,
        KvCommand::Get(a) => get(a).await,
        KvCommand::Delete(a) => delete(a).await,
        KvCommand::List(a) => list(a).await,
    }
}

async fn put(a: PutArgs) -> Outcome {
    let data =
        input::parse_data_args(&a.data, &mut std::io::stdin().lock()).map_err(Failure::local)?;
    let client = super::client(&a.common)?;
    let loc = resolve(&client, &a.at).await;
    let path = loc.api_path("data");
    let body = if loc.version == 2 {
        json!({ "data": data })
    } else {
        Value::Object(data)
    };
    let answer = client
        .write(&path, &body)
        .await
        .map_err(|e| Failure::api("writing", &path, e))?;
    match (a.common.format, answer) {
        (Format::Json, Some(body)) => output::out(&output::json(&body)),
        (Format::Json, None) => {}
        (Format::Table, Some(body)) if loc.version == 2 => {
            output::out(&section("Secret Path", &path));
            let meta = match body.get("data") {
                Some(Value::Object(m)) => output::data_rows(m),
                _ => Vec::new(),
            };
            output::out(&format!(
                "\n{}",
                section("Metadata", &output::kv_table(&meta))
            ));
        }
        (Format::Table, _) => output::out(&format!("Success! Data written to: {path}")),
    }
    Ok(0)
}

/// A titled section, as `vault kv get` prints them.
fn section(title: &str, body: &str) -> String {
    let width = body.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    format!("{}\n{body}", output::banner(title, width))
}

async fn get(a: GetArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let loc = resolve(&client, &a.at).await;
    let mut path = loc.api_path("data");
    if let (Some(v), 2) = (a.version, loc.version) {
        path.push_str(&format!("?version={v}"));
    }
    let body = read_or_explain(&client, "GET", &path, &loc.mount, "reading").await?;
    let (data, metadata) = split_kv_answer(&body, loc.version);
    if let Some(field) = &a.field {
        let v = data
            .and_then(|d| d.get(field.as_str()))
            .ok_or_else(|| Failure::Local(format!("Field {field:?} not present in secret")))?;
        output::out(&output::field_text(v, a.common.format));
        return Ok(0);
    }
    match a.common.format {
        Format::Json => output::out(&output::json(&body)),
        Format::Table => {
            if let Some(w) = output::warnings(&body) {
                output::err(&w);
            }
            let mut sections = Vec::new();
            if loc.version == 2 {
                sections.push(section("Secret Path", &path));
            }
            if let Some(meta) = metadata {
                sections.push(section(
                    "Metadata",
                    &output::kv_table(&output::data_rows(meta)),
                ));
            }
            match data {
                Some(d) => sections.push(section("Data", &output::kv_table(&output::data_rows(d)))),
                None => sections.push("(this version has been deleted or destroyed)".to_owned()),
            }
            output::out(&sections.join("\n\n"));
        }
    }
    // A deleted v2 version is an answer with no data: nothing to show, like Vault (exit 2).
    Ok(if data.is_none() { 2 } else { 0 })
}

type JsonMap = serde_json::Map<String, Value>;

/// `(data, metadata)` of a KV read: v2 nests them under `data`, v1 has data only.
fn split_kv_answer(body: &Value, version: u8) -> (Option<&JsonMap>, Option<&JsonMap>) {
    let outer = body.get("data");
    if version == 2 {
        let data = outer.and_then(|d| d.get("data")).and_then(Value::as_object);
        let meta = outer
            .and_then(|d| d.get("metadata"))
            .and_then(Value::as_object);
        (data, meta)
    } else {
        (outer.and_then(Value::as_object), None)
    }
}

async fn delete(a: PathArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let loc = resolve(&client, &a.at).await;
    let path = loc.api_path("data");
    client
        .delete(&path)
        .await
        .map_err(|e| Failure::api("deleting", &path, e))?;
    if a.common.format == Format::Table {
        output::out(&format!("Success! Data deleted (if it existed) at: {path}"));
    }
    Ok(0)
}

async fn list(a: PathArgs) -> Outcome {
    let client = super::client(&a.common)?;
    let loc = resolve(&client, &a.at).await;
    let mut path = loc.api_path("metadata");
    if !path.ends_with('/') {
        path.push('/');
    }
    let body = read_or_explain(&client, "LIST", &path, &loc.mount, "listing").await?;
    match a.common.format {
        Format::Json => output::out(&output::json(&body)),
        Format::Table => output::out(&output::keys_table(&list_keys(&body))),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_splits_mount_from_path() {
        assert_eq!(
            fallback_location(None, "secret/agents/a1"),
            Resolved {
                mount: "secret".into(),
                rel: "agents/a1".into(),
                version: 2
            }
        );
        assert_eq!(
            fallback_location(Some("/kv/"), "agents/a1"),
            Resolved {
                mount: "kv".into(),
                rel: "agents/a1".into(),
                version: 2
            }
        );
        assert_eq!(fallback_location(None, "secret").rel, "");
    }

    #[test]
    fn api_paths_per_version() {
        let v2 = Resolved {
            mount: "secret".into(),
            rel: "bench/item".into(),
            version: 2,
        };
        assert_eq!(v2.api_path("data"), "secret/data/bench/item");
        assert_eq!(v2.api_path("metadata"), "secret/metadata/bench/item");
        let v1 = Resolved {
            mount: "kv".into(),
            rel: "a".into(),
            version: 1,
        };
        assert_eq!(v1.api_path("data"), "kv/a");
    }

    #[test]
    fn kv_answers_split_by_version() {
        let v2 = json!({"data": {"data": {"k": "v"}, "metadata": {"version": 3}}});
        let (d, m) = split_kv_answer(&v2, 2);
        assert_eq!(d.unwrap()["k"], "v");
        assert_eq!(m.unwrap()["version"], 3);
        let deleted = json!({"data": {"data": null, "metadata": {"version": 3}}});
        assert!(split_kv_answer(&deleted, 2).0.is_none());
        let v1 = json!({"data": {"k": "v"}});
        let (d, m) = split_kv_answer(&v1, 1);
        assert_eq!(d.unwrap()["k"], "v");
        assert!(m.is_none());
    }

    #[test]
    fn sections_have_banners_as_wide_as_their_body() {
        assert_eq!(
            section("Data", "Key    Value"),
            "=== Data ===\nKey    Value"
        );
    }
}
