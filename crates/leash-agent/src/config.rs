//! The agent's configuration: Vault Agent's HCL shape (or the same as JSON), parsed with
//! leash-policy's HCL1 reader, then checked key by key. Unknown keys are errors naming
//! the key and its block; so are bad values. Nothing here touches the network.
//!
//! ```hcl
//! vault { address = "http://127.0.0.1:8200" }        # or leash { … }
//! auto_auth {
//!   method "approle" {
//!     mount_path = "auth/approle"
//!     config = { role_id_file_path = "/etc/leash/role-id", secret_id_file_path = "/etc/leash/secret-id" }
//!   }
//!   sink "file" { config = { path = "/run/leash/token", mode = 0600 } }
//! }
//! template {
//!   destination = "/run/secrets/db.json"
//!   contents    = "{{ with secret \"database/creds/ro\" }}{{ .Data.username }}{{ end }}"
//! }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::AgentError;
use crate::template::Template;

/// Default share of a lease's TTL after which it is renewed (Vault Agent: 2/3).
pub const DEFAULT_RENEW_FRACTION: f64 = 2.0 / 3.0;
/// Default wait between issuing a replacement credential and revoking the old one.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(30);
/// Default refresh interval of secrets without a lease (KV).
pub const DEFAULT_STATIC_INTERVAL: Duration = Duration::from_secs(300);
/// Default number of retries before `exit_on_retry_failure` gives up (Vault: 12).
pub const DEFAULT_NUM_RETRIES: u32 = 12;

/// The whole configuration.
#[derive(Debug)]
pub struct AgentConfig {
    /// Where the server is.
    pub server: ServerConfig,
    /// How to log in, and where to write the token.
    pub auto_auth: AutoAuth,
    /// Files to render.
    pub templates: Vec<FileTemplate>,
    /// Renewal and rendering settings.
    pub template_config: TemplateSettings,
    /// Exec mode: the child.
    pub exec: Option<ExecConfig>,
    /// Environment variables of the child, rendered from `env_template` blocks (at the
    /// top level or inside `exec`).
    pub env_templates: Vec<(String, Template)>,
    /// Render once, then exit 0 (init containers, batch jobs). Leases are kept.
    pub exit_after_auth: bool,
    /// Revoke leases and the token on SIGTERM/SIGINT (default true).
    pub revoke_on_exit: bool,
    /// Delete rendered files on SIGTERM/SIGINT (default false).
    pub remove_files_on_exit: bool,
    /// 0600 file remembering the token and leases, so a restart reuses them.
    pub lease_cache_file: Option<PathBuf>,
    /// Where `/healthz` and `/metrics` listen (`127.0.0.1:8301`); none by default.
    pub health_address: Option<SocketAddr>,
    /// File to write the agent's process id to.
    pub pid_file: Option<PathBuf>,
}

/// The `vault` (or `leash`) block.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `http[s]://host:port`.
    pub address: String,
    /// Extra CA certificate (PEM file).
    pub ca_cert: Option<PathBuf>,
    /// Skip TLS verification (tests only).
    pub tls_skip_verify: bool,
    /// Retry settings.
    pub retry: RetryConfig,
}

/// `vault { retry { … } }`.
#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    /// Failed attempts in a row before `exit_on_retry_failure` stops the agent.
    pub num_retries: u32,
    /// First wait.
    pub backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            num_retries: DEFAULT_NUM_RETRIES,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// `auto_auth`.
#[derive(Debug, Clone)]
pub struct AutoAuth {
    /// The login method.
    pub method: AuthMethod,
    /// Mount of the method (`auth/approle`).
    pub mount_path: String,
    /// Token files to write after each login.
    pub sinks: Vec<FileSink>,
    /// An inline scope (a policy in HCL or JSON) sent with each login, so the token the
    /// agent holds — and hands the app through its sinks — is narrower than its role.
    pub scope: Option<String>,
}

/// A login method and its settings.
#[derive(Debug, Clone)]
pub enum AuthMethod {
    /// `auth/kubernetes/login` with the service-account token.
    Kubernetes {
        /// Role.
        role: String,
        /// Service-account token file.
        token_path: PathBuf,
    },
    /// `auth/approle/login` with role and secret ids read from files.
    AppRole {
        /// File holding the role id.
        role_id_file: PathBuf,
        /// File holding the secret id (none for roles without `bind_secret_id`).
        secret_id_file: Option<PathBuf>,
        /// Delete the secret-id file after reading it.
        remove_secret_id_file: bool,
    },
    /// `auth/jwt/login` with a JWT read from a file.
    Jwt {
        /// Role.
        role: String,
        /// File holding the JWT.
        path: PathBuf,
    },
    /// A token read from a file (no login).
    TokenFile {
        /// File holding the token.
        path: PathBuf,
    },
}

impl AuthMethod {
    /// The method's name as written in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::Kubernetes { .. } => "kubernetes",
            AuthMethod::AppRole { .. } => "approle",
            AuthMethod::Jwt { .. } => "jwt",
            AuthMethod::TokenFile { .. } => "token_file",
        }
    }
}

/// `sink "file" { config = { path, mode } }`.
#[derive(Debug, Clone)]
pub struct FileSink {
    /// Where the token goes.
    pub path: PathBuf,
    /// File mode (default 0640, as Vault Agent).
    pub mode: u32,
}

/// A `template` block.
#[derive(Debug)]
pub struct FileTemplate {
    /// The parsed template.
    pub template: Template,
    /// Where it is rendered.
    pub destination: PathBuf,
    /// Mode of the file (default 0600).
    pub perms: u32,
    /// Run after each render that changed the file (argv).
    pub command: Option<Vec<String>>,
    /// Missing keys are errors (default true).
    pub error_on_missing_key: bool,
}

/// `template_config`.
#[derive(Debug, Clone, Copy)]
pub struct TemplateSettings {
    /// How often secrets without a lease (KV) are read again.
    pub static_secret_render_interval: Duration,
    /// Exit non-zero once `vault.retry.num_retries` attempts in a row failed.
    pub exit_on_retry_failure: bool,
    /// Renew after this share of the TTL has passed (`lease_renewal_threshold`).
    pub renew_fraction: f64,
    /// Or: renew this long before expiry (`renew_before = "5m"`); wins when set.
    pub renew_before: Option<Duration>,
    /// After a rotation, how long the old credential lives before it is revoked.
    pub rotation_grace: Duration,
}

impl Default for TemplateSettings {
    fn default() -> Self {
        TemplateSettings {
            static_secret_render_interval: DEFAULT_STATIC_INTERVAL,
            exit_on_retry_failure: false,
            renew_fraction: DEFAULT_RENEW_FRACTION,
            renew_before: None,
            rotation_grace: DEFAULT_ROTATION_GRACE,
        }
    }
}

/// What to do with the child when its environment changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// Stop it with the stop signal and start it again with the new environment.
    Always,
    /// Leave it alone.
    Never,
    /// Send it `secret_change_signal` (it re-reads its files itself).
    Signal,
}

/// The `exec` block.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// The child's argv.
    pub command: Vec<String>,
    /// What a change of its environment does.
    pub restart: RestartMode,
    /// Signal that stops it before a restart (default SIGTERM).
    pub stop_signal: String,
    /// Signal for `RestartMode::Signal` (default SIGHUP).
    pub change_signal: String,
    /// Redaction of the child's stdout and stderr (the `redact` block).
    pub redact: RedactConfig,
}

/// The `exec { redact { … } }` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedactConfig {
    /// Pipe the child's stdout and stderr through the agent and replace every live
    /// credential value by `[REDACTED:<kind>]` (default on).
    pub enabled: bool,
    /// On a match, revoke the credential and issue a new one (default on).
    pub report_leaks: bool,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            enabled: true,
            report_leaks: true,
        }
    }
}

impl Default for ExecConfig {
    /// What `leash agent exec -- cmd` uses without an `exec` block.
    fn default() -> Self {
        ExecConfig {
            command: Vec::new(),
            restart: RestartMode::Always,
            stop_signal: "SIGTERM".into(),
            change_signal: "SIGHUP".into(),
            redact: RedactConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        AgentConfig::parse(&text, base)
    }

    /// Parses configuration text; relative template `source` paths are relative to
    /// `base`.
    pub fn parse(text: &str, base: &Path) -> Result<AgentConfig, AgentError> {
        let v = leash_hcl::parse_to_json(text).map_err(|e| AgentError::Config(e.to_string()))?;
        AgentConfig::from_value(v, base)
    }

    /// Checks a configuration already read into JSON (by `leash proxy`, which takes its
    /// own `proxy` blocks out first).
    pub fn from_value(v: Value, base: &Path) -> Result<AgentConfig, AgentError> {
        let mut top = Block::new("the configuration", v)?;
        let server = match (top.block("vault")?, top.block("leash")?) {
            (Some(_), Some(_)) => {
                return Err(cfg("use either `vault` or `leash`, not both"));
            }
            (Some(b), None) | (None, Some(b)) => server_config(b)?,
            (None, None) => return Err(cfg("missing `vault` (or `leash`) block with `address`")),
        };
        let auto_auth = match top.block("auto_auth")? {
            Some(b) => auto_auth(b)?,
            None => return Err(cfg("missing `auto_auth` block")),
        };
        let missing_default = true;
        let mut templates = Vec::new();
        for (i, t) in top.blocks("template")?.into_iter().enumerate() {
            templates.push(file_template(t, i, base, missing_default)?);
        }
        let template_config = match top.block("template_config")? {
            Some(b) => template_settings(b)?,
            None => TemplateSettings::default(),
        };
        let mut env = Vec::new();
        if let Some(b) = top.block("env_template")? {
            env.extend(env_templates(b)?);
        }
        let exec = match top.block("exec")? {
            Some(b) => Some(exec_config(b, &mut env)?),
            None => None,
        };
        let mut names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(cfg(&format!("env_template {:?} is defined twice", w[0])));
        }
        let cfg_out = AgentConfig {
            server,
            auto_auth,
            templates,
            template_config,
            exec,
            env_templates: env,
            exit_after_auth: top.bool("exit_after_auth")?.unwrap_or(false),
            revoke_on_exit: top.bool("revoke_on_exit")?.unwrap_or(true),
            remove_files_on_exit: top.bool("remove_files_on_exit")?.unwrap_or(false),
            lease_cache_file: top.string("lease_cache_file")?.map(PathBuf::from),
            health_address: match top.string("health_address")? {
                Some(a) => Some(a.parse().map_err(|_| {
                    cfg(&format!(
                        "health_address {a:?} is not an address like 127.0.0.1:8301"
                    ))
                })?),
                None => None,
            },
            pid_file: top.string("pid_file")?.map(PathBuf::from),
        };
        top.done()?;
        let mut dests: Vec<&Path> = cfg_out
            .templates
            .iter()
            .map(|t| t.destination.as_path())
            .collect();
        dests.sort();
        if let Some(w) = dests.windows(2).find(|w| w[0] == w[1]) {
            return Err(cfg(&format!("two templates write {}", w[0].display())));
        }
        Ok(cfg_out)
    }
}

fn cfg(msg: &str) -> AgentError {
    AgentError::Config(msg.to_owned())
}

fn server_config(mut b: Block) -> Result<ServerConfig, AgentError> {
    let address = b
        .string("address")?
        .ok_or_else(|| cfg(&format!("{}: `address` is required", b.path)))?;
    if !(address.starts_with("http://") || address.starts_with("https://")) {
        return Err(cfg(&format!(
            "{}.address {address:?}: expected http://host:port or https://host:port",
            b.path
        )));
    }
    let mut retry = RetryConfig::default();
    if let Some(mut r) = b.block("retry")? {
        if let Some(n) = r.u64("num_retries")? {
            retry.num_retries = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(d) = r.duration("backoff")? {
            retry.backoff = d.max(Duration::from_secs(1));
        }
        if let Some(d) = r.duration("max_backoff")? {
            retry.max_backoff = d.max(retry.backoff);
        }
        r.done()?;
    }
    let out = ServerConfig {
        address,
        ca_cert: b.string("ca_cert")?.map(PathBuf::from),
        tls_skip_verify: b.bool("tls_skip_verify")?.unwrap_or(false),
        retry,
    };
    b.done()?;
    Ok(out)
}

fn auto_auth(mut b: Block) -> Result<AutoAuth, AgentError> {
    let mut methods = b
        .block("method")?
        .ok_or_else(|| cfg("auto_auth: a `method \"…\" { … }` block is required"))?;
    let names: Vec<String> = methods.map.keys().cloned().collect();
    let [name] = names.as_slice() else {
        return Err(cfg("auto_auth: exactly one `method` block is supported"));
    };
    let mut m = methods
        .block(name)?
        .ok_or_else(|| cfg(&format!("auto_auth.method.{name}: expected a block")))?;
    methods.done()?;
    let mount_path = m
        .string("mount_path")?
        .unwrap_or_else(|| format!("auth/{}", if name == "token_file" { "token" } else { name }))
        .trim_matches('/')
        .to_owned();
    let mut c = m.block("config")?.unwrap_or_else(|| Block {
        path: format!("auto_auth.method.{name}.config"),
        map: Map::new(),
    });
    let req = |c: &mut Block, k: &str| -> Result<String, AgentError> {
        c.string(k)?
            .ok_or_else(|| cfg(&format!("{}: `{k}` is required", c.path)))
    };
    let method = match name.as_str() {
        "kubernetes" => AuthMethod::Kubernetes {
            role: req(&mut c, "role")?,
            token_path: c
                .string("token_path")?
                .unwrap_or_else(|| "/var/run/secrets/kubernetes.io/serviceaccount/token".into())
                .into(),
        },
        "approle" => AuthMethod::AppRole {
            role_id_file: req(&mut c, "role_id_file_path")?.into(),
            secret_id_file: c.string("secret_id_file_path")?.map(PathBuf::from),
            remove_secret_id_file: c
                .bool("remove_secret_id_file_after_reading")?
                .unwrap_or(true),
        },
        "jwt" => AuthMethod::Jwt {
            role: req(&mut c, "role")?,
            path: req(&mut c, "path")?.into(),
        },
        "token_file" => AuthMethod::TokenFile {
            path: req(&mut c, "token_file_path")?.into(),
        },
        other => {
            return Err(cfg(&format!(
                "auto_auth: method {other:?} is not supported (kubernetes, approle, jwt, token_file)"
            )));
        }
    };
    c.done()?;
    m.done()?;
    let mut sinks = Vec::new();
    if let Some(mut s) = b.block("sink")? {
        let kinds: Vec<String> = s.map.keys().cloned().collect();
        for kind in kinds {
            if kind != "file" {
                return Err(cfg(&format!(
                    "auto_auth: sink {kind:?} is not supported (file)"
                )));
            }
            for mut one in s.blocks("file")? {
                let mut sc = one.block("config")?.ok_or_else(|| {
                    cfg("auto_auth.sink.file: `config = { path = … }` is required")
                })?;
                let path = req(&mut sc, "path")?;
                let mode = sc.mode("mode")?.unwrap_or(0o640);
                sc.done()?;
                one.done()?;
                sinks.push(FileSink {
                    path: path.into(),
                    mode,
                });
            }
        }
        s.done()?;
    }
    let scope = b.string("scope")?.filter(|s| !s.trim().is_empty());
    if scope.is_some() && matches!(method, AuthMethod::TokenFile { .. }) {
        return Err(cfg(
            "auto_auth: `scope` narrows a login; the token_file method does not log in",
        ));
    }
    b.done()?;
    Ok(AutoAuth {
        method,
        mount_path,
        sinks,
        scope,
    })
}

fn file_template(
    mut b: Block,
    i: usize,
    base: &Path,
    missing_default: bool,
) -> Result<FileTemplate, AgentError> {
    b.path = format!("template[{i}]");
    let destination: PathBuf = b
        .string("destination")?
        .ok_or_else(|| cfg(&format!("{}: `destination` is required", b.path)))?
        .into();
    let name = destination.display().to_string();
    let text = match (b.string("contents")?, b.string("source")?) {
        (Some(_), Some(_)) => {
            return Err(cfg(&format!(
                "template {name}: give `contents` or `source`, not both"
            )));
        }
        (Some(c), None) => c,
        (None, Some(src)) => {
            let p = base.join(&src);
            std::fs::read_to_string(&p).map_err(|e| AgentError::io(&p, e))?
        }
        (None, None) => {
            return Err(cfg(&format!(
                "template {name}: `contents` or `source` is required"
            )));
        }
    };
    let command = match b.map.remove("command") {
        None => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(vec!["/bin/sh".into(), "-c".into(), s]),
        Some(Value::Array(a)) => Some(
            a.into_iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s),
                    _ => Err(cfg(&format!("template {name}: `command` must be strings"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(cfg(&format!(
                "template {name}: `command` must be a string or a list"
            )));
        }
    };
    let out = FileTemplate {
        template: Template::parse(&name, &text)?,
        perms: b.mode("perms")?.unwrap_or(0o600),
        error_on_missing_key: b.bool("error_on_missing_key")?.unwrap_or(missing_default),
        command,
        destination,
    };
    b.done()?;
    Ok(out)
}

fn template_settings(mut b: Block) -> Result<TemplateSettings, AgentError> {
    let mut s = TemplateSettings::default();
    if let Some(d) = b.duration("static_secret_render_interval")? {
        s.static_secret_render_interval = d.max(Duration::from_secs(1));
    }
    s.exit_on_retry_failure = b.bool("exit_on_retry_failure")?.unwrap_or(false);
    if let Some(v) = b.map.remove("lease_renewal_threshold") {
        let f = v.as_f64().filter(|f| *f > 0.0 && *f < 1.0).ok_or_else(|| {
            cfg("template_config.lease_renewal_threshold: expected a number between 0 and 1")
        })?;
        s.renew_fraction = f;
    }
    s.renew_before = b.duration("renew_before")?;
    if let Some(d) = b.duration("rotation_grace_period")? {
        s.rotation_grace = d;
    }
    b.done()?;
    Ok(s)
}

fn env_templates(mut b: Block) -> Result<Vec<(String, Template)>, AgentError> {
    let names: Vec<String> = b.map.keys().cloned().collect();
    let mut out = Vec::new();
    for name in names {
        if name.is_empty()
            || name.contains('=')
            || name.contains('\0')
            || name.chars().next().is_some_and(|c| c.is_ascii_digit())
        {
            return Err(cfg(&format!("env_template {name:?}: not a variable name")));
        }
        let mut t = b
            .block(&name)?
            .ok_or_else(|| cfg(&format!("env_template {name:?}: expected a block")))?;
        let contents = t
            .string("contents")?
            .ok_or_else(|| cfg(&format!("env_template {name:?}: `contents` is required")))?;
        // Accepted for Vault compatibility; leash always errors on a missing key here.
        let _ = t.bool("error_on_missing_key")?;
        t.done()?;
        out.push((
            name.clone(),
            Template::parse(&format!("env {name}"), &contents)?,
        ));
    }
    b.done()?;
    Ok(out)
}

fn exec_config(mut b: Block, env: &mut Vec<(String, Template)>) -> Result<ExecConfig, AgentError> {
    let command = match b.map.remove("command") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(cfg("exec.command: must be a list of strings")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(cfg("exec.command: must be a list of strings")),
    };
    let restart = match b.string("restart_on_secret_changes")?.as_deref() {
        None | Some("always") => RestartMode::Always,
        Some("never") => RestartMode::Never,
        Some("signal") => RestartMode::Signal,
        Some(other) => {
            return Err(cfg(&format!(
                "exec.restart_on_secret_changes {other:?}: expected always, never or signal"
            )));
        }
    };
    let stop_signal = b
        .string("restart_stop_signal")?
        .unwrap_or_else(|| "SIGTERM".into());
    let change_signal = b
        .string("secret_change_signal")?
        .unwrap_or_else(|| "SIGHUP".into());
    for s in [&stop_signal, &change_signal] {
        if crate::exec::signal_by_name(s).is_none() {
            return Err(cfg(&format!("exec: unknown signal {s:?}")));
        }
    }
    if let Some(e) = b.block("env_template")? {
        env.extend(env_templates(e)?);
    }
    let mut redact = RedactConfig::default();
    if let Some(mut r) = b.block("redact")? {
        if let Some(v) = r.bool("enabled")? {
            redact.enabled = v;
        }
        if let Some(v) = r.bool("report_leaks")? {
            redact.report_leaks = v;
        }
        r.done()?;
    }
    b.done()?;
    Ok(ExecConfig {
        command,
        restart,
        stop_signal,
        change_signal,
        redact,
    })
}

/// A JSON object being taken apart key by key; [`Block::done`] rejects what is left.
struct Block {
    path: String,
    map: Map<String, Value>,
}

impl Block {
    fn new(path: &str, v: Value) -> Result<Block, AgentError> {
        match v {
            Value::Object(map) => Ok(Block {
                path: path.to_owned(),
                map,
            }),
            _ => Err(cfg(&format!("{path}: expected a block"))),
        }
    }

    fn key(&self, k: &str) -> String {
        if self.path == "the configuration" {
            k.to_owned()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn block(&mut self, k: &str) -> Result<Option<Block>, AgentError> {
        let path = self.key(k);
        match self.map.remove(k) {
            None => Ok(None),
            // `config = [{…}]` (JSON style) is accepted as the single object.
            Some(Value::Array(mut a)) if a.len() == 1 => Block::new(&path, a.remove(0)).map(Some),
            Some(Value::Array(_)) => Err(cfg(&format!("{path}: only one block allowed"))),
            Some(v) => Block::new(&path, v).map(Some),
        }
    }

    fn blocks(&mut self, k: &str) -> Result<Vec<Block>, AgentError> {
        let path = self.key(k);
        match self.map.remove(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .into_iter()
                .enumerate()
                .map(|(i, v)| Block::new(&format!("{path}[{i}]"), v))
                .collect(),
            Some(v) => Ok(vec![Block::new(&path, v)?]),
        }
    }

    fn string(&mut self, k: &str) -> Result<Option<String>, AgentError> {
        match self.map.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(cfg(&format!("{}: expected a string", self.key(k)))),
        }
    }

    fn bool(&mut self, k: &str) -> Result<Option<bool>, AgentError> {
        match self.map.remove(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(_) => Err(cfg(&format!("{}: expected true or false", self.key(k)))),
        }
    }

    fn u64(&mut self, k: &str) -> Result<Option<u64>, AgentError> {
        match self.map.remove(k) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
            Some(_) => Err(cfg(&format!("{}: expected a whole number", self.key(k)))),
        }
    }

    fn duration(&mut self, k: &str) -> Result<Option<Duration>, AgentError> {
        match self.map.remove(k) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                Ok(n.as_u64().map(Duration::from_secs))
            }
            Some(Value::String(s)) => leash_types::parse_duration(&s)
                .map(Some)
                .map_err(|e| cfg(&format!("{}: {e}", self.key(k)))),
            Some(_) => Err(cfg(&format!(
                "{}: expected a duration like \"5m\"",
                self.key(k)
            ))),
        }
    }

    /// A file mode: `"0600"` (octal text) or a number written in octal digits (`0600`,
    /// which HCL reads as 600).
    fn mode(&mut self, k: &str) -> Result<Option<u32>, AgentError> {
        let text = match self.map.remove(k) {
            None => return Ok(None),
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(cfg(&format!(
                    "{}: expected a mode like \"0600\"",
                    self.key(k)
                )));
            }
        };
        u32::from_str_radix(text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(Some)
            .ok_or_else(|| {
                cfg(&format!(
                    "{}: {text:?} is not a file mode like 0600",
                    self.key(k)
                ))
            })
    }

    fn done(self) -> Result<(), AgentError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(cfg(&format!("{}: unknown key `{k}`", self.key(k)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, AgentError> {
        AgentConfig::parse(text, Path::new("/nonexistent"))
    }

    const FULL: &str = r#"
pid_file = "/tmp/agent.pid"
lease_cache_file = "/tmp/cache.json"
health_address = "127.0.0.1:8301"
vault {
  address = "http://127.0.0.1:8200"
  retry { num_retries = 3  backoff = "1s"  max_backoff = "4s" }
}
auto_auth {
  method "approle" {
    mount_path = "auth/approle-x"
    config = { role_id_file_path = "/r", secret_id_file_path = "/s", remove_secret_id_file_after_reading = false }
  }
  sink "file" { config = { path = "/tmp/token", mode = "0600" } }
  scope = "path \"secret/data/x\" { capabilities = [\"read\"] }"
}
template {
  destination = "/tmp/db.json"
  contents = "{{ with secret \"database/creds/ro\" }}{{ .Data.username }}{{ end }}"
  perms = "0640"
  command = "kill -HUP 1"
}
template {
  destination = "/tmp/kv.txt"
  contents = "{{ with secret \"secret/data/x\" }}{{ .Data.data.a }}{{ end }}"
  command = ["true"]
  error_on_missing_key = false
}
template_config {
  static_secret_render_interval = "10s"
  exit_on_retry_failure = true
  renew_before = "5m"
  rotation_grace_period = "2s"
}
exec {
  command = ["python3", "agent.py"]
  restart_on_secret_changes = "always"
  restart_stop_signal = "SIGINT"
  redact { report_leaks = false }
  env_template "DB_USER" { contents = "{{ with secret \"database/creds/ro\" }}{{ .Data.username }}{{ end }}" }
}
"#;

    #[test]
    fn full_vault_agent_shape_parses() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.server.address, "http://127.0.0.1:8200");
        assert_eq!(c.server.retry.num_retries, 3);
        assert_eq!(c.server.retry.max_backoff, Duration::from_secs(4));
        assert_eq!(c.auto_auth.mount_path, "auth/approle-x");
        assert!(matches!(
            c.auto_auth.method,
            AuthMethod::AppRole {
                remove_secret_id_file: false,
                ..
            }
        ));
        assert_eq!(c.auto_auth.sinks[0].mode, 0o600);
        assert!(
            c.auto_auth
                .scope
                .as_deref()
                .unwrap()
                .contains("secret/data/x")
        );
        assert_eq!(c.templates.len(), 2);
        assert_eq!(c.templates[0].perms, 0o640);
        assert_eq!(c.templates[1].perms, 0o600);
        assert_eq!(c.templates[0].command.as_ref().unwrap()[2], "kill -HUP 1");
        assert!(!c.templates[1].error_on_missing_key);
        assert_eq!(
            c.template_config.renew_before,
            Some(Duration::from_secs(300))
        );
        assert_eq!(c.template_config.rotation_grace, Duration::from_secs(2));
        let e = c.exec.unwrap();
        assert_eq!(e.command, ["python3", "agent.py"]);
        assert_eq!(e.stop_signal, "SIGINT");
        assert_eq!(
            e.redact,
            RedactConfig {
                enabled: true,
                report_leaks: false
            },
            "redaction is on unless switched off"
        );
        assert!(ExecConfig::default().redact.enabled);
        assert_eq!(c.env_templates.len(), 1);
        assert!(c.revoke_on_exit && !c.exit_after_auth);
        assert_eq!(c.health_address.unwrap().port(), 8301);
    }

    #[test]
    fn json_configuration() {
        let c = parse(
            r#"{"leash": {"address": "http://127.0.0.1:8200"},
                "auto_auth": {"method": {"jwt": {"config": {"role": "r", "path": "/jwt"}}},
                              "sink": {"file": {"config": {"path": "/t", "mode": "0600"}}}},
                "template": [{"destination": "/a", "contents": "x"},
                             {"destination": "/b", "contents": "y", "perms": "0640"}],
                "revoke_on_exit": false}"#,
        )
        .unwrap();
        assert_eq!(c.templates.len(), 2);
        assert_eq!(c.templates[1].perms, 0o640);
        assert!(!c.revoke_on_exit);
        assert_eq!(c.auto_auth.mount_path, "auth/jwt");
    }

    #[test]
    fn three_or_more_templates() {
        let mut text = String::from(
            "vault { address = \"http://h\" }\nauto_auth { method \"token_file\" { config = { token_file_path = \"/t\" } } }\n",
        );
        for i in 0..4 {
            text.push_str(&format!(
                "template {{\n destination = \"/tmp/{i}\"\n contents = \"x\" \n}}\n"
            ));
        }
        let c = parse(&text).unwrap();
        let d: Vec<_> = c.templates.iter().map(|t| t.destination.clone()).collect();
        assert_eq!(
            d,
            ["/tmp/0", "/tmp/1", "/tmp/2", "/tmp/3"].map(PathBuf::from)
        );
    }

    #[test]
    fn leash_alias_and_other_methods() {
        for (m, want) in [
            (
                r#"method "kubernetes" { config = { role = "r" } }"#,
                "kubernetes",
            ),
            (
                r#"method "jwt" { config = { role = "r", path = "/jwt" } }"#,
                "jwt",
            ),
            (
                r#"method "token_file" { config = { token_file_path = "/t" } }"#,
                "token_file",
            ),
        ] {
            let c = parse(&format!(
                "leash {{ address = \"https://l:8200\" }}\nauto_auth {{ {m} }}\nexit_after_auth = true"
            ))
            .unwrap();
            assert_eq!(c.auto_auth.method.name(), want);
        }
    }

    #[test]
    fn errors_name_the_key() {
        for (text, want) in [
            ("vault { address = \"h:1\" }", "vault.address"),
            (
                "vault { address = \"http://h\"\n adress = 1 }",
                "vault.adress",
            ),
            ("vault { address = \"http://h\" }", "auto_auth"),
            (
                "vault { address = \"http://h\" }\nauto_auth { method \"ldap\" {} }",
                "\"ldap\" is not supported",
            ),
            (
                "vault { address = \"http://h\" }\nauto_auth { method \"approle\" { config = {} } }",
                "role_id_file_path",
            ),
            (
                "vault { address = \"http://h\" }\nauto_auth { method \"token_file\" { config = { token_file_path = \"/t\" } } }\ntemplate { contents = \"x\" }",
                "destination",
            ),
            (
                "vault { address = \"http://h\" }\nauto_auth { method \"token_file\" { config = { token_file_path = \"/t\" } } }\ntemplate { destination = \"/a\"\n contents = \"{{ .x\" }",
                "unclosed action",
            ),
            (
                "vault { address = \"http://h\" }\nauto_auth { method \"token_file\" { config = { token_file_path = \"/t\" } } }\ntemplate { destination = \"/a\"\n contents = \"x\"\n perms = \"999\" }",
                "perms",
            ),
            (
                "vault { address = \"http://h\" }\nauto_auth { method \"token_file\" { config = { token_file_path = \"/t\" } } }\ntemplate_config { renew_before = \"soon\" }\nexit_after_auth = true",
                "template_config.renew_before",
            ),
            (
                "vault { address = \"http://h\" }\nauto_auth { method \"token_file\" { config = { token_file_path = \"/t\" } } }\nexec { restart_stop_signal = \"SIGNOPE\" }",
                "SIGNOPE",
            ),
            (
                "vault { address = \"http://h\" }\nauto_auth { method \"token_file\" { config = { token_file_path = \"/t\" } } }\nlistener \"tcp\" {}\nexit_after_auth = true",
                "unknown key `listener`",
            ),
            ("vault {", "line"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
