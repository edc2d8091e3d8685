//! `leash read|write|list|delete PATH`: the generic commands that reach any API path,
//! shaped like `vault read` and friends.
//!
//! `write` sends `k=v` arguments as a JSON object (see [`super::input`] for `@file` and
//! `-`); like `vault write` it refuses an empty body unless `-f/--force` is given, so a
//! forgotten argument does not silently send `{}`.

use serde_json::Value;

use leash_client::list_keys;

use leash_client::SecretString;

use super::login::parse_secret;
use super::output::{self, Format};
use super::{CommonArgs, Failure, Outcome, input, print_secret};

/// Options of `leash read`.
#[derive(clap::Args, Debug)]
pub(crate) struct ReadArgs {
    /// API path, without `/v1/` (`sys/mounts`, `database/creds/ro`).
    path: String,
    /// Print only this field.
    #[arg(long, value_name = "NAME")]
    field: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash write`.
#[derive(clap::Args, Debug)]
pub(crate) struct WriteArgs {
    /// API path, without `/v1/`.
    path: String,
    /// Data: `key=value`, `key=@file`, `key=-`, or a single `-` / `@file.json`.
    #[arg(value_name = "K=V", value_parser = parse_secret)]
    data: Vec<SecretString>,
    /// Allow writing with no data.
    #[arg(short = 'f', long)]
    force: bool,
    /// Print only this field of the answer.
    #[arg(long, value_name = "NAME")]
    field: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash list`.
#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    /// API path, without `/v1/`.
    path: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `leash delete`.
#[derive(clap::Args, Debug)]
pub(crate) struct DeleteArgs {
    /// API path, without `/v1/`.
    path: String,
    #[command(flatten)]
    common: CommonArgs,
}

fn clean(path: &str) -> &str {
    let p = path.trim_start_matches('/');
    p.strip_prefix("v1/").unwrap_or(p)
}

pub(super) async fn read(a: ReadArgs) -> Outcome {
    let path = clean(&a.path);
    let client = super::client(&a.common)?;
    let body = client
        .read(path)
        .await
        .map_err(|e| Failure::api("reading", path, e))?;
    let Some(body) = body else {
        return Err(Failure::Server(format!("No value found at {path}")));
    };
    print_secret(&body, a.common.format, a.field.as_deref())
}

pub(super) async fn write(a: WriteArgs) -> Outcome {
    let path = clean(&a.path);
    let data =
        input::parse_data_args(&a.data, &mut std::io::stdin().lock()).map_err(Failure::local)?;
    if data.is_empty() && !a.force {
        return Err(Failure::local("must supply data or use -force"));
    }
    let client = super::client(&a.common)?;
    let answer = client
        .write(path, &Value::Object(data))
        .await
        .map_err(|e| Failure::api("writing", path, e))?;
    match answer {
        Some(body) => print_secret(&body, a.common.format, a.field.as_deref()),
        None => {
            if a.common.format == Format::Table {
                output::out(&format!("Success! Data written to: {path}"));
            }
            Ok(0)
        }
    }
}

pub(super) async fn list(a: ListArgs) -> Outcome {
    let path = clean(&a.path);
    let client = super::client(&a.common)?;
    let body = client
        .list(path)
        .await
        .map_err(|e| Failure::api("listing", path, e))?;
    let Some(body) = body else {
        return Err(Failure::Server(format!("No value found at {path}")));
    };
    match a.common.format {
        Format::Json => output::out(&output::json(&body)),
        Format::Table => output::out(&output::keys_table(&list_keys(&body))),
    }
    Ok(0)
}

pub(super) async fn delete(a: DeleteArgs) -> Outcome {
    let path = clean(&a.path);
    let client = super::client(&a.common)?;
    let answer = client
        .delete(path)
        .await
        .map_err(|e| Failure::api("deleting", path, e))?;
    match (a.common.format, answer) {
        (Format::Json, Some(body)) => output::out(&output::json(&body)),
        (Format::Json, None) => {}
        (Format::Table, _) => {
            output::out(&format!("Success! Data deleted (if it existed) at: {path}"))
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_leading_slash_and_v1() {
        assert_eq!(clean("/v1/sys/mounts"), "sys/mounts");
        assert_eq!(clean("sys/mounts"), "sys/mounts");
        assert_eq!(clean("/secret/data/x"), "secret/data/x");
    }
}
