//! `leash login [TOKEN|-]`: checks a token against the server (`lookup-self`) and saves
//! it to `~/.leash-token`, which later commands read when no token variable is set.
//!
//! The token comes from the argument, or from stdin when the argument is `-` or absent
//! (so it need not appear in shell history or `ps`). The file is written atomically
//! (temporary file with mode 0600 in the same directory, then rename), so a reader never
//! sees half a token and the token is never world-readable, even briefly.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;

use leash_client::config::{ENV_TOKEN, ENV_VAULT_TOKEN, token_file_path};
use leash_client::{Client, ExposeSecret, SecretString};
use serde_json::Value;

use super::output::{self, Format};
use super::{CommonArgs, Failure, Outcome};

/// Options of `leash login`.
#[derive(clap::Args, Debug)]
pub(crate) struct LoginArgs {
    /// The token; `-` or nothing reads it from stdin.
    #[arg(value_name = "TOKEN", value_parser = parse_secret)]
    token: Option<SecretString>,
    #[command(flatten)]
    common: CommonArgs,
}

/// clap value parser that keeps a value secret from the start.
pub(crate) fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

pub(super) async fn run(args: LoginArgs) -> Outcome {
    let token = match args.token {
        Some(t) if t.expose_secret() != "-" => t,
        _ => read_token_from_stdin()?,
    };
    if token.expose_secret().trim().is_empty() {
        return Err(Failure::local("no token given"));
    }
    let token = SecretString::from(token.expose_secret().trim().to_owned());
    let mut config = super::config(&args.common)?;
    config.token = Some(token.clone());
    let client = Client::new(config).map_err(Failure::local)?;
    let body = client
        .read("auth/token/lookup-self")
        .await
        .map_err(|e| Failure::api("authenticating with", "auth/token/lookup-self", e))?
        .unwrap_or(Value::Null);
    let path = token_file_path(super::real_env)
        .ok_or_else(|| Failure::local("HOME is not set: nowhere to save the token"))?;
    write_token_file(&path, &token)
        .map_err(|e| Failure::local(format!("saving token to {}: {e}", path.display())))?;
    if super::real_env(ENV_TOKEN).is_some() || super::real_env(ENV_VAULT_TOKEN).is_some() {
        output::err(&format!(
            "WARNING! {ENV_TOKEN} or {ENV_VAULT_TOKEN} is set; it takes precedence over the \
             token saved by this login. Unset it to use the saved token."
        ));
    }
    match args.common.format {
        Format::Json => output::out(&output::json(&body)),
        Format::Table => {
            output::out(&format!(
                "Success! You are now authenticated. The token is saved in {} and future \
                 commands will use it.\n",
                path.display()
            ));
            output::out(&output::kv_table(&login_rows(&body)));
        }
    }
    Ok(0)
}

/// What `login` shows about the token: everything `lookup-self` said except the token.
fn login_rows(body: &Value) -> Vec<(String, String)> {
    match body.get("data") {
        Some(Value::Object(data)) => {
            let mut data = data.clone();
            data.remove("id");
            output::data_rows(&data)
        }
        _ => Vec::new(),
    }
}

fn read_token_from_stdin() -> Result<SecretString, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "Token (will be echoed; prefer piping it in): ");
        let _ = stderr.flush();
        let mut line = String::new();
        stdin
            .read_line(&mut line)
            .map_err(|e| Failure::local(format!("reading stdin: {e}")))?;
        return Ok(SecretString::from(line));
    }
    let mut buf = String::new();
    stdin
        .lock()
        .read_to_string(&mut buf)
        .map_err(|e| Failure::local(format!("reading stdin: {e}")))?;
    Ok(SecretString::from(buf))
}

/// Writes `token` to `path` atomically with mode 0600.
pub(crate) fn write_token_file(path: &Path, token: &SecretString) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("leash-token");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(token.expose_secret().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_file_is_private_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".leash-token");
        std::fs::write(&path, "old").unwrap();
        write_token_file(&path, &SecretString::from("lsh.new")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "lsh.new\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
        let read = leash_client::config::read_token_file(&path)
            .unwrap()
            .unwrap();
        assert_eq!(read.expose_secret(), "lsh.new");
    }

    #[test]
    fn login_output_never_shows_the_token() {
        let rows =
            login_rows(&json!({"data": {"id": "lsh.secret", "ttl": 60, "policies": ["default"]}}));
        assert!(
            rows.iter()
                .all(|(k, v)| k != "id" && !v.contains("lsh.secret"))
        );
        assert_eq!(rows[1], ("ttl".to_owned(), "1m".to_owned()));
    }
}
