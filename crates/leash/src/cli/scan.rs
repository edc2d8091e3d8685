//! `leash scan [FILE|-]`: sends a piece of text (a log, a transcript, a commit) to
//! `sys/leaks/scan`, which finds leash tokens and generated database usernames in it and
//! revokes every live credential at once. Prints what was found (never the secret: a
//! token appears as its HMAC'd accessor, a database credential as its lease id).
//!
//! Exit codes: 0 when no live credential was found, 1 when at least one was (so a CI
//! step or a pre-commit hook fails), 2 when the server refused or could not be reached.
//! The token needs `update` with `sudo` on `sys/leaks/scan`.

use std::io::Read;
use std::path::PathBuf;

use leash_client::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::output::{self, Format};
use super::{CommonArgs, Failure, Outcome};

const PATH: &str = "sys/leaks/scan";

/// Options of `leash scan`.
#[derive(clap::Args, Debug)]
pub(crate) struct ScanArgs {
    /// The file to scan; `-` (the default) reads standard input.
    #[arg(value_name = "FILE|-", default_value = "-")]
    file: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
}

/// The text to scan, held as a secret (it may be full of them).
fn read_text(file: &PathBuf) -> Result<SecretString, Failure> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::local(format!("reading standard input: {e}")))?;
    } else {
        bytes =
            std::fs::read(file).map_err(|e| Failure::local(format!("{}: {e}", file.display())))?;
    }
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok(SecretString::from(text))
}

pub(super) async fn run(a: ScanArgs) -> Outcome {
    let text = read_text(&a.file)?;
    let client = super::client(&a.common)?;
    let body = json!({ "text": text.expose_secret() });
    let answer = client
        .write(PATH, &body)
        .await
        .map_err(|e| Failure::api("writing", PATH, e))?
        .ok_or_else(|| Failure::Server(format!("{PATH} answered with no data")))?;
    let data = answer.get("data").cloned().unwrap_or(Value::Null);
    let found: Vec<Value> = data
        .get("found")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match a.common.format {
        Format::Json => output::out(&output::json(&answer)),
        Format::Table => {
            if found.is_empty() {
                output::out("No live credentials found.");
            } else {
                let rows: Vec<Vec<String>> = found
                    .iter()
                    .map(|f| {
                        let kind = f.get("kind").and_then(Value::as_str).unwrap_or("");
                        let id = match kind {
                            "token" => f
                                .get("accessor")
                                .and_then(Value::as_str)
                                .unwrap_or("(no audit device to HMAC the accessor)"),
                            _ => f.get("lease_id").and_then(Value::as_str).unwrap_or(""),
                        };
                        let revoked = f.get("revoked").and_then(Value::as_bool) == Some(true);
                        vec![
                            kind.to_owned(),
                            id.to_owned(),
                            if revoked { "yes" } else { "NO (retrying)" }.to_owned(),
                        ]
                    })
                    .collect();
                output::out(&output::table(
                    &["Kind", "Accessor / lease id", "Revoked"],
                    &rows,
                ));
            }
            let stale = data.get("not_live");
            let n = |k: &str| {
                stale
                    .and_then(|s| s.get(k))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            if n("tokens") + n("database_usernames") > 0 {
                output::err(&format!(
                    "Also found {} token(s) and {} database username(s) that are not live.",
                    n("tokens"),
                    n("database_usernames")
                ));
            }
        }
    }
    Ok(if found.is_empty() { 0 } else { 1 })
}
