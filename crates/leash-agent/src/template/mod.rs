//! Vault Agent / consul-template syntax (Go `text/template`), the subset sidecar
//! templates use: `{{ with secret "path" "k=v" }}…{{ end }}`, field chains (`.Data.x`,
//! `.Data.data.x`, `.LeaseID`, `.LeaseDuration`, `.Renewable`), `range`, `if/else`,
//! variables, `{{-`/`-}}` trimming, pipelines and the functions `secret`, `toJSON`,
//! `toJSONPretty`, `base64Encode`, `base64Decode`, `env`, `file`, `index`, `len`, `eq`,
//! `ne`, `not`, `and`, `or`, `printf` (`%s`/`%d`/`%v`/`%q`).
//!
//! Why hand-written: the Go-template ports for Rust (gtmpl, last release 2021; its forks
//! with a few downloads) are unmaintained, print `<no value>` for missing keys, and call
//! functions synchronously, while `secret` needs the server. This engine does what
//! consul-template does: [`Template::secrets`] lists every `secret` call (its arguments
//! must be string literals), the agent fetches them, and [`Template::render`] runs with
//! the answers. A missing key is always an error naming the key and the template (or,
//! with `error_on_missing_key = false`, renders as nothing) — never `<no value>`.
//!
//! Not here: `define`/`template`/`block`, custom delimiters, method calls.

mod exec;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value;

pub use exec::RenderEnv;

/// A template that does not parse or cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The text is not a valid template.
    #[error("template {template}: line {line}: {message}")]
    Syntax {
        /// Template name (its destination or source).
        template: String,
        /// 1-based line of the action.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A key the template asks for is not in the data.
    #[error("template {template}: line {line}: missing key {key:?} (in {path})")]
    MissingKey {
        /// Template name.
        template: String,
        /// Line of the action.
        line: usize,
        /// The missing key.
        key: String,
        /// The whole field chain, e.g. `.Data.username`.
        path: String,
    },
    /// Something else failed while rendering (bad function argument, unreadable file).
    #[error("template {template}: line {line}: {message}")]
    Render {
        /// Template name.
        template: String,
        /// Line of the action.
        line: usize,
        /// What failed.
        message: String,
    },
}

impl TemplateError {
    pub(crate) fn syntax(template: &str, line: usize, message: &str) -> TemplateError {
        TemplateError::Syntax {
            template: template.to_owned(),
            line,
            message: message.to_owned(),
        }
    }
}

/// What one `secret` call asks for: a path, and write parameters (`"k=v"`) which make
/// it a write instead of a read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRequest {
    /// API path below `/v1/`.
    pub path: String,
    /// Write parameters, sorted by key.
    pub params: BTreeMap<String, String>,
}

impl SecretRequest {
    /// Builds a request from the `secret` arguments.
    pub fn from_args(args: &[String]) -> Result<SecretRequest, String> {
        let (path, rest) = args
            .split_first()
            .ok_or_else(|| "secret needs a path".to_owned())?;
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Err("secret needs a path".into());
        }
        let mut params = BTreeMap::new();
        for p in rest {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("secret parameter {p:?} is not key=value"))?;
            if k.is_empty() {
                return Err(format!("secret parameter {p:?} has no key"));
            }
            params.insert(k.to_owned(), v.to_owned());
        }
        Ok(SecretRequest {
            path: path.to_owned(),
            params,
        })
    }

    /// A stable text key (`path?k=v&…`), used in the lease cache.
    pub fn key(&self) -> String {
        let mut s = self.path.clone();
        for (i, (k, v)) in self.params.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    nodes: Vec<parse::Node>,
    secrets: Vec<SecretRequest>,
}

impl Template {
    /// Parses `text`; `name` appears in every error.
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let pieces = lex::split(name, text)?;
        let nodes = parse::parse(name, pieces)?;
        let mut secrets = Vec::new();
        exec::collect_secrets(name, &nodes, &mut secrets)?;
        secrets.sort();
        secrets.dedup();
        Ok(Template {
            name: name.to_owned(),
            nodes,
            secrets,
        })
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every secret the template reads, deduplicated.
    pub fn secrets(&self) -> &[SecretRequest] {
        &self.secrets
    }

    /// Renders with `env` answering `secret`, `env` and `file`.
    pub fn render(&self, env: &RenderEnv<'_>) -> Result<String, TemplateError> {
        exec::render(&self.name, &self.nodes, env)
    }
}

/// The value `secret` returns to a template, in Vault's shape: `Data`, `LeaseID`,
/// `LeaseDuration`, `Renewable`, `RequestID`, `Warnings`. `.Data.lease_duration` is a
/// leash convenience beside `.LeaseDuration` (not added when the data has its own).
pub fn secret_value(
    data: &serde_json::Map<String, Value>,
    lease_id: &str,
    lease_duration: u64,
    renewable: bool,
) -> Value {
    let mut d = data.clone();
    d.entry("lease_duration")
        .or_insert_with(|| Value::from(lease_duration));
    serde_json::json!({
        "Data": d,
        "LeaseID": lease_id,
        "LeaseDuration": lease_duration,
        "Renewable": renewable,
        "RequestID": "",
        "Warnings": [],
    })
}
