//! Where the client connects and with which token: [`ClientConfig`], and its resolution
//! from the environment.
//!
//! Resolution takes the environment as an injected lookup function, so tests never
//! touch the process environment. Every key is a named constant below, and an error
//! names the key whose value it could not use. The `LEASH_*` variable wins over its
//! `VAULT_*` twin (so existing Vault scripts keep working); an empty value counts as
//! unset. The token file (`~/.leash-token`, written by `leash login`) is read only when
//! neither token variable is set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::ClientError;

/// Server address (`http://127.0.0.1:8200`).
pub const ENV_ADDR: &str = "LEASH_ADDR";
/// Vault's name for the server address, honoured when [`ENV_ADDR`] is unset.
pub const ENV_VAULT_ADDR: &str = "VAULT_ADDR";
/// Token to send.
pub const ENV_TOKEN: &str = "LEASH_TOKEN";
/// Vault's name for the token.
pub const ENV_VAULT_TOKEN: &str = "VAULT_TOKEN";
/// PEM file with the CA certificate(s) that sign the server's certificate.
pub const ENV_CACERT: &str = "LEASH_CACERT";
/// Vault's name for the CA file.
pub const ENV_VAULT_CACERT: &str = "VAULT_CACERT";
/// Disables TLS certificate verification (Go `ParseBool` syntax: `1`, `true`, …).
pub const ENV_SKIP_VERIFY: &str = "LEASH_SKIP_VERIFY";
/// Vault's name for [`ENV_SKIP_VERIFY`].
pub const ENV_VAULT_SKIP_VERIFY: &str = "VAULT_SKIP_VERIFY";
/// Whole-request timeout (`60`, `30s`, `2m`).
pub const ENV_TIMEOUT: &str = "LEASH_CLIENT_TIMEOUT";
/// Vault's name for [`ENV_TIMEOUT`].
pub const ENV_VAULT_TIMEOUT: &str = "VAULT_CLIENT_TIMEOUT";
/// Home directory, where the token file lives.
pub const ENV_HOME: &str = "HOME";

/// Address used when no variable names one.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8200";
/// Request timeout used when no variable sets one (Vault's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Name of the token file in the home directory.
pub const TOKEN_FILE_NAME: &str = ".leash-token";

/// How to reach a leash (or Vault) server.
///
/// `Debug` is safe: the token is a [`SecretString`] and prints as `[REDACTED]`.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base address, `http[s]://host:port`, without `/v1`.
    pub address: String,
    /// Token sent as `X-Vault-Token`; `None` sends no token (health, login paths).
    pub token: Option<SecretString>,
    /// PEM file of extra trusted CA certificates.
    pub ca_cert: Option<PathBuf>,
    /// Accept any server certificate. Dangerous; for tests and local setups only.
    pub tls_skip_verify: bool,
    /// Timeout of one whole request.
    pub timeout: Duration,
}

impl ClientConfig {
    /// A configuration for `address` with no token and default settings.
    pub fn new(address: impl Into<String>) -> ClientConfig {
        ClientConfig {
            address: address.into(),
            token: None,
            ca_cert: None,
            tls_skip_verify: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the token.
    pub fn with_token(mut self, token: SecretString) -> ClientConfig {
        self.token = Some(token);
        self
    }

    /// Resolves the configuration from an environment lookup (use
    /// `|k| std::env::var(k).ok()` for the real one). Reads the token file when no
    /// token variable is set.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<ClientConfig, ClientError> {
        let get = |key: &str| get(key).filter(|v| !v.is_empty());
        let address = get(ENV_ADDR)
            .or_else(|| get(ENV_VAULT_ADDR))
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        let token = match get(ENV_TOKEN).or_else(|| get(ENV_VAULT_TOKEN)) {
            Some(t) => Some(SecretString::from(t.trim().to_owned())),
            None => match token_file_path(get) {
                Some(path) => read_token_file(&path)?,
                None => None,
            },
        };
        let ca_cert = get(ENV_CACERT)
            .or_else(|| get(ENV_VAULT_CACERT))
            .map(PathBuf::from);
        let tls_skip_verify = match first_set(&get, ENV_SKIP_VERIFY, ENV_VAULT_SKIP_VERIFY) {
            Some((key, v)) => parse_bool(&v).ok_or_else(|| {
                ClientError::Config(format!("{key}: expected true or false, got {v:?}"))
            })?,
            None => false,
        };
        let timeout = match first_set(&get, ENV_TIMEOUT, ENV_VAULT_TIMEOUT) {
            Some((key, v)) => leash_types::parse_duration(&v)
                .map_err(|e| ClientError::Config(format!("{key}: {e}")))?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(ClientConfig {
            address,
            token,
            ca_cert,
            tls_skip_verify,
            timeout,
        })
    }
}

/// The value of `primary`, else of `fallback`, with the key it came from.
fn first_set(
    get: &impl Fn(&str) -> Option<String>,
    primary: &'static str,
    fallback: &'static str,
) -> Option<(&'static str, String)> {
    get(primary)
        .map(|v| (primary, v))
        .or_else(|| get(fallback).map(|v| (fallback, v)))
}

/// Where `leash login` keeps the token: `$HOME/.leash-token`, if `HOME` is set.
pub fn token_file_path(get: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    get(ENV_HOME)
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(TOKEN_FILE_NAME))
}

/// Reads a token file: a missing or blank file means no token; any other failure is an
/// error naming the file.
pub fn read_token_file(path: &Path) -> Result<Option<SecretString>, ClientError> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let secret = SecretString::from(s);
            let trimmed = secrecy::ExposeSecret::expose_secret(&secret).trim();
            Ok((!trimmed.is_empty()).then(|| SecretString::from(trimmed.to_owned())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClientError::Config(format!(
            "reading token file {}: {e}",
            path.display()
        ))),
    }
}

/// Go's `strconv.ParseBool`, which Vault uses for its boolean variables.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let c = ClientConfig::from_env(env(&[])).unwrap();
        assert_eq!(c.address, DEFAULT_ADDRESS);
        assert!(c.token.is_none());
        assert!(c.ca_cert.is_none());
        assert!(!c.tls_skip_verify);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn leash_variables_win_over_vault_ones() {
        let c = ClientConfig::from_env(env(&[
            (ENV_ADDR, "http://leash:1"),
            (ENV_VAULT_ADDR, "http://vault:2"),
            (ENV_TOKEN, "lsh.one"),
            (ENV_VAULT_TOKEN, "hvs.two"),
            (ENV_CACERT, "/a.pem"),
            (ENV_VAULT_CACERT, "/b.pem"),
            (ENV_SKIP_VERIFY, "false"),
            (ENV_VAULT_SKIP_VERIFY, "true"),
            (ENV_TIMEOUT, "5s"),
            (ENV_VAULT_TIMEOUT, "9"),
        ]))
        .unwrap();
        assert_eq!(c.address, "http://leash:1");
        assert_eq!(c.token.unwrap().expose_secret(), "lsh.one");
        assert_eq!(c.ca_cert.unwrap(), PathBuf::from("/a.pem"));
        assert!(!c.tls_skip_verify);
        assert_eq!(c.timeout, Duration::from_secs(5));
    }

    #[test]
    fn vault_variables_are_the_fallback_and_empty_means_unset() {
        let c = ClientConfig::from_env(env(&[
            (ENV_ADDR, ""),
            (ENV_VAULT_ADDR, "https://vault:8200"),
            (ENV_VAULT_TOKEN, "hvs.two\n"),
            (ENV_VAULT_SKIP_VERIFY, "1"),
            (ENV_VAULT_TIMEOUT, "90"),
        ]))
        .unwrap();
        assert_eq!(c.address, "https://vault:8200");
        assert_eq!(c.token.unwrap().expose_secret(), "hvs.two");
        assert!(c.tls_skip_verify);
        assert_eq!(c.timeout, Duration::from_secs(90));
    }

    #[test]
    fn token_file_is_used_only_without_a_token_variable() {
        let home = tempfile::tempdir().unwrap();
        let home_s = home.path().to_str().unwrap().to_owned();
        std::fs::write(home.path().join(TOKEN_FILE_NAME), "lsh.fromfile\n").unwrap();
        let c = ClientConfig::from_env(env(&[(ENV_HOME, &home_s)])).unwrap();
        assert_eq!(c.token.unwrap().expose_secret(), "lsh.fromfile");
        let c =
            ClientConfig::from_env(env(&[(ENV_HOME, &home_s), (ENV_TOKEN, "lsh.env")])).unwrap();
        assert_eq!(c.token.unwrap().expose_secret(), "lsh.env");
    }

    #[test]
    fn missing_or_blank_token_file_means_no_token() {
        let home = tempfile::tempdir().unwrap();
        let home_s = home.path().to_str().unwrap().to_owned();
        let c = ClientConfig::from_env(env(&[(ENV_HOME, &home_s)])).unwrap();
        assert!(c.token.is_none());
        std::fs::write(home.path().join(TOKEN_FILE_NAME), " \n").unwrap();
        let c = ClientConfig::from_env(env(&[(ENV_HOME, &home_s)])).unwrap();
        assert!(c.token.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = ClientConfig::from_env(env(&[(ENV_VAULT_SKIP_VERIFY, "yes")])).unwrap_err();
        assert!(e.to_string().contains(ENV_VAULT_SKIP_VERIFY), "{e}");
        let e = ClientConfig::from_env(env(&[(ENV_TIMEOUT, "soon")])).unwrap_err();
        assert!(e.to_string().contains(ENV_TIMEOUT), "{e}");
    }

    #[test]
    fn debug_does_not_print_the_token() {
        let c = ClientConfig::new("http://x").with_token(SecretString::from("lsh.secret"));
        assert!(!format!("{c:?}").contains("lsh.secret"));
    }
}
