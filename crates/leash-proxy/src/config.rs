//! The proxy's configuration: `leash agent`'s (the `vault`/`auto_auth` blocks and
//! everything else it accepts, exec mode included) plus `proxy "http"` and
//! `proxy "postgres"` blocks.
//!
//! ```hcl
//! proxy "http" {
//!   listen = "127.0.0.1:8700"
//!   upstream "github" {
//!     url    = "https://api.github.com"
//!     secret = "secret/data/agents/github"
//!     header "Authorization" { value = "Bearer {{ .Data.data.token }}" }
//!     allow { methods = ["GET"], paths = ["/repos/acme/*"] }
//!   }
//! }
//! proxy "postgres" {
//!   listen   = "127.0.0.1:6432"
//!   upstream = "db.internal:5432"
//!   secret   = "database/creds/agent-readonly"
//! }
//! ```
//!
//! Unknown keys are errors naming the key, as in `leash agent`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leash_agent::AgentConfig;
use leash_agent::template::{SecretRequest, Template};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::ProxyError;
use crate::error::cfg;

/// Default most concurrent client connections a listener accepts.
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 1024;
/// Default most concurrent requests (so connections) to one upstream.
pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS: usize = 128;
/// Default wait for an upstream's response headers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default wait for a TCP (and TLS) connection to an upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole configuration.
#[derive(Debug)]
pub struct ProxyConfig {
    /// Everything `leash agent` reads (login, server, templates, exec, …).
    pub agent: AgentConfig,
    /// `proxy "http"`.
    pub http: Option<HttpProxy>,
    /// `proxy "postgres"`.
    pub postgres: Option<PgProxy>,
}

/// `proxy "http" { … }`.
#[derive(Debug)]
pub struct HttpProxy {
    /// `listen`, loopback unless `allow_remote`.
    pub listen: SocketAddr,
    /// Most concurrent client connections (`max_connections`).
    pub max_connections: usize,
    /// The upstreams, by name (the first path segment).
    pub upstreams: Vec<Upstream>,
}

/// `upstream "<name>" { … }`.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The first path segment clients use.
    pub name: String,
    /// `url`: scheme, authority and an optional base path (no query).
    pub url: hyper::Uri,
    /// `secret`: what the headers are rendered from.
    pub secret: SecretRequest,
    /// `header "<Name>" { value = "…" }`: rendered with the secret as `.`.
    pub headers: Vec<(hyper::header::HeaderName, Template)>,
    /// `allow { methods, paths }`: none means everything is allowed.
    pub allow: Vec<AllowRule>,
    /// `ca_cert`: PEM roots for this `https://` upstream instead of the built-in ones.
    pub ca_cert: Option<PathBuf>,
    /// `timeout`: wait for response headers.
    pub timeout: Duration,
    /// `connect_timeout`.
    pub connect_timeout: Duration,
    /// `max_connections`: concurrent requests to this upstream.
    pub max_connections: usize,
}

/// One `allow` block: a request passes when its method is in `methods` and its path
/// matches one of `paths` (`*` matches any run of characters, `/` included). An empty
/// list allows any.
#[derive(Debug, Clone)]
pub struct AllowRule {
    /// Upper-case methods; empty or `*`: any.
    pub methods: Vec<String>,
    /// Path patterns below the upstream's prefix.
    pub paths: Vec<String>,
}

impl AllowRule {
    /// Whether `method` and `path` pass this rule.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        let m = self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|x| x == "*" || x.eq_ignore_ascii_case(method));
        let p = self.paths.is_empty() || self.paths.iter().any(|g| glob(g, path));
        m && p
    }
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    let Some(mut s) = s.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = rest.split_last().unwrap_or((&"", &[]));
    for m in middle {
        match s.find(m) {
            Some(i) => s = &s[i + m.len()..],
            None => return false,
        }
    }
    s.ends_with(last)
}

/// TLS to the PostgreSQL server (`tls` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTls {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, else plain.
    Prefer,
    /// TLS, certificate checked against the roots and the host name.
    Require,
}

/// `proxy "postgres" { … }`.
#[derive(Debug)]
pub struct PgProxy {
    /// `listen`.
    pub listen: SocketAddr,
    /// `upstream`: `host:port` of the PostgreSQL server.
    pub upstream: String,
    /// `secret`: a leased credential with `username` and `password`.
    pub secret: SecretRequest,
    /// `local_password`: what clients must send (none: any, or no, password).
    pub local_password: Option<LocalPassword>,
    /// `tls`.
    pub tls: PgTls,
    /// `ca_cert` for `tls`.
    pub ca_cert: Option<PathBuf>,
    /// Most concurrent sessions.
    pub max_connections: usize,
}

/// The fixed local password clients of the PostgreSQL proxy send; never printed.
pub struct LocalPassword(pub Zeroizing<String>);

impl std::fmt::Debug for LocalPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalPassword(..)")
    }
}

impl ProxyConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<ProxyConfig, ProxyError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProxyError::Io {
            what: path.display().to_string(),
            source: e,
        })?;
        ProxyConfig::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses configuration text (HCL or JSON).
    pub fn parse(text: &str, base: &Path) -> Result<ProxyConfig, ProxyError> {
        let mut v = leash_hcl::parse_to_json(text).map_err(|e| cfg(e.to_string()))?;
        let proxy = match v.as_object_mut() {
            Some(m) => m.remove("proxy"),
            None => None,
        };
        let agent = AgentConfig::from_value(v, base)?;
        let mut http = None;
        let mut postgres = None;
        let Some(proxy) = proxy else {
            return Err(cfg(
                "missing `proxy \"http\" { … }` or `proxy \"postgres\" { … }` block",
            ));
        };
        for b in flat_blocks("proxy", proxy)? {
            let mut kinds = b;
            let names: Vec<String> = kinds.map.keys().cloned().collect();
            for kind in names {
                let Some(block) = kinds.map.remove(&kind) else {
                    continue;
                };
                let block = single(&format!("proxy.{kind}"), block)?;
                match kind.as_str() {
                    "http" if http.is_none() => http = Some(http_proxy(block, base)?),
                    "postgres" if postgres.is_none() => postgres = Some(pg_proxy(block, base)?),
                    "http" | "postgres" => {
                        return Err(cfg(format!("proxy \"{kind}\": only one block allowed")));
                    }
                    other => {
                        return Err(cfg(format!(
                            "proxy {other:?}: unknown kind (http, postgres)"
                        )));
                    }
                }
            }
        }
        Ok(ProxyConfig {
            agent,
            http,
            postgres,
        })
    }

    /// Every secret the proxy itself needs.
    pub fn secrets(&self) -> Vec<SecretRequest> {
        let mut out: Vec<SecretRequest> = Vec::new();
        if let Some(h) = &self.http {
            out.extend(h.upstreams.iter().map(|u| u.secret.clone()));
        }
        if let Some(p) = &self.postgres {
            out.push(p.secret.clone());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// A block of the JSON the HCL reader gives, consumed key by key.
struct Block {
    path: String,
    map: Map<String, Value>,
}

fn single(path: &str, v: Value) -> Result<Block, ProxyError> {
    match v {
        Value::Array(mut a) if a.len() == 1 => single(path, a.remove(0)),
        Value::Array(_) => Err(cfg(format!("{path}: only one block allowed"))),
        Value::Object(map) => Ok(Block {
            path: path.to_owned(),
            map,
        }),
        _ => Err(cfg(format!("{path}: expected a block"))),
    }
}

/// A block that may repeat (the HCL reader nests repeats as `[[a, b], c]`).
fn flat_blocks(path: &str, v: Value) -> Result<Vec<Block>, ProxyError> {
    fn flatten(v: Value, out: &mut Vec<Value>) {
        match v {
            Value::Array(a) => a.into_iter().for_each(|x| flatten(x, out)),
            other => out.push(other),
        }
    }
    let mut flat = Vec::new();
    flatten(v, &mut flat);
    flat.into_iter().map(|x| single(path, x)).collect()
}

impl Block {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.path)
    }

    fn string(&mut self, k: &str) -> Result<Option<String>, ProxyError> {
        match self.map.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(cfg(format!("{}: expected a string", self.key(k)))),
        }
    }

    fn required(&mut self, k: &str) -> Result<String, ProxyError> {
        self.string(k)?
            .ok_or_else(|| cfg(format!("{}: `{k}` is required", self.path)))
    }

    fn bool(&mut self, k: &str) -> Result<Option<bool>, ProxyError> {
        match self.map.remove(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(cfg(format!("{}: expected true or false", self.key(k)))),
        }
    }

    fn usize(&mut self, k: &str) -> Result<Option<usize>, ProxyError> {
        match self.map.remove(k) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64().and_then(|x| usize::try_from(x).ok()) {
                Some(x) if x > 0 => Ok(Some(x)),
                _ => Err(cfg(format!("{}: expected a positive number", self.key(k)))),
            },
            Some(_) => Err(cfg(format!("{}: expected a positive number", self.key(k)))),
        }
    }

    fn duration(&mut self, k: &str) -> Result<Option<Duration>, ProxyError> {
        match self.map.remove(k) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                Ok(n.as_u64().map(Duration::from_secs))
            }
            Some(Value::String(s)) => leash_types::parse_duration(&s)
                .map(Some)
                .map_err(|e| cfg(format!("{}: {e}", self.key(k)))),
            Some(_) => Err(cfg(format!(
                "{}: expected a duration like \"30s\"",
                self.key(k)
            ))),
        }
    }

    fn strings(&mut self, k: &str) -> Result<Vec<String>, ProxyError> {
        match self.map.remove(k) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s]),
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s),
                    _ => Err(cfg(format!("{}: expected a list of strings", self.key(k)))),
                })
                .collect(),
            Some(_) => Err(cfg(format!("{}: expected a list of strings", self.key(k)))),
        }
    }

    fn labelled(&mut self, k: &str) -> Result<Vec<(String, Block)>, ProxyError> {
        let path = self.key(k);
        let Some(v) = self.map.remove(k) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for b in flat_blocks(&path, v)? {
            for (label, inner) in b.map {
                out.push((label.clone(), single(&format!("{path}.{label}"), inner)?));
            }
        }
        Ok(out)
    }

    fn done(self) -> Result<(), ProxyError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(cfg(format!("{}: unknown key `{k}`", self.key(k)))),
        }
    }
}

fn listen(b: &mut Block) -> Result<SocketAddr, ProxyError> {
    let a = b.required("listen")?;
    let addr: SocketAddr = a.parse().map_err(|_| {
        cfg(format!(
            "{}: {a:?} is not an address like 127.0.0.1:8700",
            b.key("listen")
        ))
    })?;
    let remote = b.bool("allow_remote")?.unwrap_or(false);
    if !addr.ip().is_loopback() && !remote {
        return Err(cfg(format!(
            "{}: {a} is not a loopback address; set allow_remote = true to listen on it",
            b.key("listen")
        )));
    }
    Ok(addr)
}

fn secret(b: &mut Block) -> Result<SecretRequest, ProxyError> {
    let s = b.required("secret")?;
    if s.contains('"') || s.contains('\\') || s.contains("{{") {
        return Err(cfg(format!("{}: not a secret path", b.key("secret"))));
    }
    SecretRequest::from_args(&[s]).map_err(|e| cfg(format!("{}: {e}", b.key("secret"))))
}

fn http_proxy(mut b: Block, base: &Path) -> Result<HttpProxy, ProxyError> {
    let listen = listen(&mut b)?;
    let max_connections = b
        .usize("max_connections")?
        .unwrap_or(DEFAULT_MAX_CLIENT_CONNECTIONS);
    let mut upstreams = Vec::new();
    for (name, u) in b.labelled("upstream")? {
        upstreams.push(upstream(name, u, base)?);
    }
    b.done()?;
    if upstreams.is_empty() {
        return Err(cfg(
            "proxy.http: at least one `upstream \"<name>\" { … }` is required",
        ));
    }
    Ok(HttpProxy {
        listen,
        max_connections,
        upstreams,
    })
}

/// Names the proxy answers itself.
pub const RESERVED_NAMES: [&str; 2] = ["metrics", "healthz"];

fn upstream(name: String, mut b: Block, base: &Path) -> Result<Upstream, ProxyError> {
    if name.is_empty()
        || RESERVED_NAMES.contains(&name.as_str())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(cfg(format!(
            "{}: upstream names are letters, digits, '-', '_', '.' (not metrics or healthz)",
            b.path
        )));
    }
    let url_text = b.required("url")?;
    let url: hyper::Uri = url_text
        .parse()
        .map_err(|_| cfg(format!("{}: not a URL", b.key("url"))))?;
    match url.scheme_str() {
        Some("http" | "https") if url.authority().is_some() && url.query().is_none() => {}
        _ => {
            return Err(cfg(format!(
                "{}: expected http(s)://host[:port][/base/path]",
                b.key("url")
            )));
        }
    }
    let secret = secret(&mut b)?;
    let mut headers = Vec::new();
    for (hname, mut h) in b.labelled("header")? {
        let header = hyper::header::HeaderName::from_bytes(hname.as_bytes())
            .map_err(|_| cfg(format!("{}: not a header name", h.path)))?;
        let value = h.required("value")?;
        // The header's text is rendered with the upstream's secret as `.`.
        let text = format!(
            "{{{{ with secret \"{}\" }}}}{value}{{{{ end }}}}",
            secret.path
        );
        let t = Template::parse(&h.path, &text).map_err(|e| cfg(e.to_string()))?;
        if t.secrets().len() != 1 {
            return Err(cfg(format!(
                "{}: a header reads only its upstream's `secret`",
                h.key("value")
            )));
        }
        h.done()?;
        headers.push((header, t));
    }
    if headers.is_empty() {
        return Err(cfg(format!(
            "{}: at least one `header \"<Name>\" {{ value = \"…\" }}` is required",
            b.path
        )));
    }
    let mut allow = Vec::new();
    if let Some(v) = b.map.remove("allow") {
        for (i, mut a) in flat_blocks(&b.key("allow"), v)?.into_iter().enumerate() {
            a.path = format!("{}[{i}]", a.path);
            let methods: Vec<String> = a
                .strings("methods")?
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            let paths = a.strings("paths")?;
            if let Some(p) = paths.iter().find(|p| !p.starts_with('/') && *p != "*") {
                return Err(cfg(format!(
                    "{}: path {p:?} must start with /",
                    a.key("paths")
                )));
            }
            a.done()?;
            allow.push(AllowRule { methods, paths });
        }
    }
    let ca_cert = b.string("ca_cert")?.map(|p| base.join(p));
    let out = Upstream {
        name,
        url,
        secret,
        headers,
        allow,
        ca_cert,
        timeout: b.duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT),
        connect_timeout: b
            .duration("connect_timeout")?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        max_connections: b
            .usize("max_connections")?
            .unwrap_or(DEFAULT_MAX_UPSTREAM_CONNECTIONS),
    };
    b.done()?;
    Ok(out)
}

fn pg_proxy(mut b: Block, base: &Path) -> Result<PgProxy, ProxyError> {
    let listen = listen(&mut b)?;
    let upstream = b.required("upstream")?;
    if upstream
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(cfg(format!("{}: expected host:port", b.key("upstream"))));
    }
    let secret = secret(&mut b)?;
    let local_password = b
        .string("local_password")?
        .map(|p| LocalPassword(Zeroizing::new(p)));
    let tls = match b.string("tls")?.as_deref() {
        None | Some("prefer") => PgTls::Prefer,
        Some("disable") => PgTls::Disable,
        Some("require") => PgTls::Require,
        Some(_) => {
            return Err(cfg(format!(
                "{}: expected disable, prefer or require",
                b.key("tls")
            )));
        }
    };
    let out = PgProxy {
        listen,
        upstream,
        secret,
        local_password,
        tls,
        ca_cert: b.string("ca_cert")?.map(|p| base.join(p)),
        max_connections: b.usize("max_connections")?.unwrap_or(256),
    };
    b.done()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE: &str = r#"
vault { address = "http://127.0.0.1:8200" }
auto_auth {
  method "token_file" { config = { token_file_path = "/tmp/t" } }
}
proxy "http" {
  listen = "127.0.0.1:8700"
  upstream "github" {
    url      = "https://api.github.com"
    secret   = "secret/data/agents/github"          # KV v2 path, read and refreshed by leash
    header "Authorization" { value = "Bearer {{ .Data.data.token }}" }
    allow { methods = ["GET"], paths = ["/repos/acme/*"] }   # deny anything else
  }
  upstream "internal" {
    url    = "https://billing.internal"
    secret = "database/creds/agent-readonly"        # any leased secret works too
    header "X-Api-Key" { value = "{{ .Data.password }}" }
  }
}
proxy "postgres" { listen = "127.0.0.1:6432"  upstream = "db.internal:5432"  secret = "database/creds/agent-readonly" }
"#;

    #[test]
    fn the_issue_example_parses() {
        let c = ProxyConfig::parse(ISSUE, Path::new("/")).unwrap();
        let h = c.http.unwrap();
        assert_eq!(h.listen.port(), 8700);
        assert_eq!(h.upstreams.len(), 2);
        let g = &h.upstreams[0];
        assert_eq!(g.name, "github");
        assert_eq!(g.secret.path, "secret/data/agents/github");
        assert_eq!(g.headers[0].0.as_str(), "authorization");
        assert_eq!(g.allow.len(), 1);
        assert!(g.allow[0].allows("GET", "/repos/acme/app/issues"));
        assert!(!g.allow[0].allows("POST", "/repos/acme/app/issues"));
        assert!(!g.allow[0].allows("GET", "/orgs/acme"));
        assert!(h.upstreams[1].allow.is_empty());
        let p = c.postgres.unwrap();
        assert_eq!(p.upstream, "db.internal:5432");
        assert_eq!(p.secret.path, "database/creds/agent-readonly");
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |proxy: &str| {
            let text = format!(
                "vault {{ address = \"http://h\" }}\nauto_auth {{ method \"token_file\" {{ config = {{ token_file_path = \"/t\" }} }} }}\n{proxy}"
            );
            ProxyConfig::parse(&text, Path::new("/"))
                .unwrap_err()
                .to_string()
        };
        assert!(bad("").contains("proxy"));
        let e = bad(
            r#"proxy "http" { listen = "0.0.0.0:8700" upstream "a" { url = "http://x" secret = "s/a" header "A" { value = "x" } } }"#,
        );
        assert!(e.contains("allow_remote"), "{e}");
        let e = bad(
            r#"proxy "http" { listen = "127.0.0.1:1" upstream "a" { url = "http://x" secret = "s/a" header "A" { value = "x" } bogus = 1 } }"#,
        );
        assert!(e.contains("upstream.a.bogus"), "{e}");
        let e = bad(
            r#"proxy "http" { listen = "127.0.0.1:1" upstream "metrics" { url = "http://x" secret = "s/a" header "A" { value = "x" } } }"#,
        );
        assert!(e.contains("metrics"), "{e}");
        let e = bad(
            r#"proxy "http" { listen = "127.0.0.1:1" upstream "a" { url = "ftp://x" secret = "s/a" header "A" { value = "x" } } }"#,
        );
        assert!(e.contains("upstream.a.url"), "{e}");
        let e = bad(r#"proxy "udp" { listen = "127.0.0.1:1" }"#);
        assert!(e.contains("udp"), "{e}");
        let remote = r#"
vault { address = "http://h" }
auto_auth { method "token_file" { config = { token_file_path = "/t" } } }
proxy "http" {
  listen = "0.0.0.0:1"
  allow_remote = true
  upstream "a" { url = "http://x" secret = "s/a" header "A" { value = "x" } }
}"#;
        assert!(ProxyConfig::parse(remote, Path::new("/")).is_ok());
    }

    #[test]
    fn globs() {
        assert!(glob("/repos/acme/*", "/repos/acme/a/b"));
        assert!(!glob("/repos/acme/*", "/repos/acmex"));
        assert!(glob("*", "/x"));
        assert!(glob("/a/*/c", "/a/b/c"));
        assert!(!glob("/a/*/c", "/a/b/d"));
        assert!(glob("/exact", "/exact"));
        assert!(!glob("/exact", "/exact/more"));
    }
}
