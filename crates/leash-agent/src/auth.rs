//! Auto-auth: logs in with the workload identity (Kubernetes service-account token,
//! AppRole ids, a JWT, or a token file) and writes the token to the file sinks.
//!
//! Credentials read from files are kept only as [`SecretString`]; an AppRole secret id
//! whose file is removed after reading stays in memory for later re-authentication.

use leash_client::{Client, ExposeSecret, SecretString};
use serde_json::json;

use crate::AgentError;
use crate::config::{AuthMethod, AutoAuth};
use crate::files::write_atomic;

/// A token the agent holds, as the login (or lookup) described it.
#[derive(Debug)]
pub struct LoggedIn {
    /// The token.
    pub token: SecretString,
    /// Its TTL in seconds (0: does not expire).
    pub ttl: u64,
    /// Whether it can be renewed.
    pub renewable: bool,
}

/// Logs in with the configured method.
#[derive(Debug)]
pub struct Authenticator {
    cfg: AutoAuth,
    /// The AppRole secret id, once read (its file may be gone).
    secret_id: Option<SecretString>,
}

fn read_secret(path: &std::path::Path) -> Result<SecretString, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::io(path, e))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(AgentError::Auth(format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(t.to_owned()))
}

impl Authenticator {
    /// An authenticator for `cfg`.
    pub fn new(cfg: AutoAuth) -> Authenticator {
        Authenticator {
            cfg,
            secret_id: None,
        }
    }

    /// Logs in. `base` is a client without a token.
    pub async fn login(&mut self, base: &Client) -> Result<LoggedIn, AgentError> {
        let path = format!("{}/login", self.cfg.mount_path);
        let body = match &self.cfg.method {
            AuthMethod::Kubernetes { role, token_path } => {
                let jwt = read_secret(token_path)?;
                json!({"role": role, "jwt": jwt.expose_secret()})
            }
            AuthMethod::Jwt { role, path } => {
                let jwt = read_secret(path)?;
                json!({"role": role, "jwt": jwt.expose_secret()})
            }
            AuthMethod::AppRole {
                role_id_file,
                secret_id_file,
                remove_secret_id_file,
            } => {
                let role_id = read_secret(role_id_file)?;
                let mut body = json!({"role_id": role_id.expose_secret()});
                if let Some(f) = secret_id_file {
                    if f.exists() {
                        self.secret_id = Some(read_secret(f)?);
                        if *remove_secret_id_file {
                            let _ = std::fs::remove_file(f);
                        }
                    }
                    let sid = self.secret_id.as_ref().ok_or_else(|| {
                        AgentError::Auth(format!("secret id file {} is missing", f.display()))
                    })?;
                    body["secret_id"] = json!(sid.expose_secret());
                }
                body
            }
            AuthMethod::TokenFile { path } => {
                let token = read_secret(path)?;
                let info = base.with_token(token.clone()).token_lookup_self().await?;
                return Ok(LoggedIn {
                    token,
                    ttl: info.ttl,
                    renewable: info.renewable,
                });
            }
        };
        let mut body = body;
        if let Some(scope) = &self.cfg.scope {
            body["scope"] = json!(scope);
        }
        let auth = base.login(&path, &body).await?;
        tracing::info!(
            method = self.cfg.method.name(),
            ttl = auth.lease_duration,
            "logged in"
        );
        Ok(LoggedIn {
            token: auth.client_token,
            ttl: auth.lease_duration,
            renewable: auth.renewable,
        })
    }

    /// Writes the token to every sink.
    pub fn write_sinks(&self, token: &SecretString) -> Result<(), AgentError> {
        for s in &self.cfg.sinks {
            write_atomic(&s.path, token.expose_secret().as_bytes(), s.mode)?;
        }
        Ok(())
    }
}
