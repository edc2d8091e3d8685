//! Pod annotations → what to inject ([`InjectSpec`]). Pure: no IO, no HTTP.
//!
//! Vault Agent Injector's names (`vault.hashicorp.com/…`) are read, and the same keys
//! under `leash.dev/…`; giving one key under both prefixes with different values is an
//! error. A malformed value is a [`Denial`] naming the annotation, so a typo never lets
//! a pod start without its credentials. Keys under either prefix that leash does not
//! know become warnings.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::Settings;
use crate::quantity::is_quantity;

/// Vault Agent Injector's annotation prefix.
pub const VAULT_PREFIX: &str = "vault.hashicorp.com/";
/// leash's own prefix for the same keys.
pub const LEASH_PREFIX: &str = "leash.dev/";

/// Keys taking one value.
const SINGLE_KEYS: &[&str] = &[
    "agent-inject",
    "role",
    "agent-pre-populate",
    "agent-pre-populate-only",
    "agent-revoke-on-shutdown",
    "agent-inject-status",
    "agent-init-first",
    "auth-path",
    "secret-volume-path",
    "agent-image",
    "agent-requests-cpu",
    "agent-requests-mem",
    "agent-limits-cpu",
    "agent-limits-mem",
    "agent-run-as-user",
    "agent-run-as-same-user",
    "service",
    "tls-skip-verify",
    "ca-cert",
    "agent-cache-enable",
    "proxy-config",
];

/// Per-secret keys: `<prefix><name>`. `template-file-` comes before `template-` so the
/// longer prefix wins.
const SECRET_PREFIXES: &[&str] = &[
    "agent-inject-secret-",
    "agent-inject-template-file-",
    "agent-inject-template-",
    "agent-inject-file-",
    "agent-inject-perms-",
    "agent-inject-command-",
];

/// The leash.dev annotation the injector writes the CA bundle into, for the agent
/// containers to read through a downward-API volume.
pub const CA_BUNDLE_ANNOTATION: &str = "leash.dev/ca-bundle";

/// Why a pod is refused: the annotation and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The full annotation key (`vault.hashicorp.com/agent-inject-perms-db-creds`).
    pub annotation: String,
    /// What is wrong (never a secret; templates are not echoed).
    pub reason: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "annotation {}: {}", self.annotation, self.reason)
    }
}

/// Where a secret's template comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// `agent-inject-template-<name>`.
    Inline(String),
    /// `agent-inject-template-file-<name>`: a file in the agent container.
    File(String),
    /// Neither: Vault's default rendering (one `key: value` line per data key).
    Default,
}

/// One `agent-inject-secret-<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// `<name>`.
    pub name: String,
    /// The secret's path (`database/creds/agent-readonly`).
    pub path: String,
    /// Its template.
    pub template: TemplateSource,
    /// File name under the secret volume (`agent-inject-file-<name>`, default `<name>`).
    pub file: String,
    /// Octal mode, normalised to four digits (`0644` by default, as Vault).
    pub perms: String,
    /// `agent-inject-command-<name>`: run after each render that changed the file.
    pub command: Option<String>,
}

/// Container resources (Kubernetes quantities).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// `requests.cpu`.
    pub requests_cpu: String,
    /// `requests.memory`.
    pub requests_mem: String,
    /// `limits.cpu`.
    pub limits_cpu: String,
    /// `limits.memory`.
    pub limits_mem: String,
}

/// Everything the patch needs, from the annotations and the injector's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectSpec {
    /// `role`: the kubernetes auth role.
    pub role: String,
    /// `auth-path` (`auth/kubernetes`).
    pub auth_path: String,
    /// `secret-volume-path` (`/vault/secrets`).
    pub volume_path: String,
    /// `agent-image`.
    pub image: String,
    /// `agent-pre-populate` (default true): an init container renders first.
    pub pre_populate: bool,
    /// `agent-pre-populate-only`: the init container only, no sidecar.
    pub pre_populate_only: bool,
    /// `agent-revoke-on-shutdown` (default true in leash).
    pub revoke_on_shutdown: bool,
    /// `agent-init-first`: the init container goes before the pod's own.
    pub init_first: bool,
    /// Container resources.
    pub resources: Resources,
    /// User id of the agent containers.
    pub run_as_user: i64,
    /// Group id of the agent containers.
    pub run_as_group: i64,
    /// `service`: the leash address.
    pub address: String,
    /// `tls-skip-verify`.
    pub tls_skip_verify: bool,
    /// `ca-cert`: a CA file inside the agent container.
    pub ca_cert: Option<String>,
    /// `agent-cache-enable` (accepted; the agents always share a lease cache).
    pub cache_enable: bool,
    /// The secrets, by name.
    pub secrets: Vec<SecretSpec>,
    /// `leash.dev/proxy-config`: the `proxy "http"`/`proxy "postgres"` blocks (read into
    /// JSON) of a `leash proxy` sidecar to add, so the app calls its APIs and database
    /// through the proxy and never holds those credentials.
    pub proxy: Option<Value>,
}

/// What the annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No `agent-inject: "true"`, or already injected: leave the pod alone.
    Skip(&'static str),
    /// Inject.
    Inject(Box<InjectSpec>),
}

/// The annotations of one pod, by key without prefix.
struct Keys {
    /// short key → (full key as given, value).
    map: BTreeMap<String, (String, String)>,
}

impl Keys {
    fn value(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|(_, v)| v.as_str())
    }

    /// The full key to name in a message: as given, else the Vault name.
    fn full(&self, key: &str) -> String {
        self.map
            .get(key)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| format!("{VAULT_PREFIX}{key}"))
    }

    fn deny(&self, key: &str, reason: impl Into<String>) -> Denial {
        Denial {
            annotation: self.full(key),
            reason: reason.into(),
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, Denial> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| {
                self.deny(
                    key,
                    format!("{v:?} is not a boolean (true, false, 1, 0, t, f)"),
                )
            }),
        }
    }

    fn quantity(&self, key: &str, default: &str) -> Result<String, Denial> {
        match self.value(key) {
            None => Ok(default.to_owned()),
            Some(v) if is_quantity(v.trim()) => Ok(v.trim().to_owned()),
            Some(v) => Err(self.deny(
                key,
                format!("{v:?} is not a Kubernetes quantity (like 250m, 0.5, 64Mi, 1G)"),
            )),
        }
    }
}

/// Go's `strconv.ParseBool`, which Vault's injector uses.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A file mode of three or four octal digits, normalised to four.
fn parse_perms(v: &str) -> Option<String> {
    let v = v.trim();
    let digits = v.strip_prefix("0o").unwrap_or(v);
    if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    let n = u32::from_str_radix(digits, 8).ok()?;
    Some(format!("{n:04o}"))
}

/// A name usable as a file name in the secret volume.
fn plain_file_name(v: &str) -> bool {
    !v.is_empty() && v != "." && v != ".." && !v.contains('/') && !v.contains('\0')
}

/// Sorts the pod's annotations into known keys and warnings. A key given under both
/// prefixes with different values is denied.
fn collect(annotations: &Map<String, Value>) -> Result<(Keys, Vec<String>), Denial> {
    let mut map: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut warnings = Vec::new();
    for (full, value) in annotations {
        let Some(short) = full
            .strip_prefix(VAULT_PREFIX)
            .or_else(|| full.strip_prefix(LEASH_PREFIX))
        else {
            continue;
        };
        if full == CA_BUNDLE_ANNOTATION {
            continue; // written by the injector itself
        }
        let known = SINGLE_KEYS.contains(&short)
            || SECRET_PREFIXES
                .iter()
                .any(|p| short.strip_prefix(p).is_some_and(|n| !n.is_empty()));
        if !known {
            warnings.push(format!(
                "annotation {full} is not supported by leash's injector and has no effect"
            ));
            continue;
        }
        let Some(value) = value.as_str() else {
            return Err(Denial {
                annotation: full.clone(),
                reason: "the value is not a string".into(),
            });
        };
        if let Some((other, v)) = map.get(short) {
            if v != value {
                return Err(Denial {
                    annotation: full.clone(),
                    reason: format!("{other} is also given, with a different value"),
                });
            }
            continue;
        }
        map.insert(short.to_owned(), (full.clone(), value.to_owned()));
    }
    Ok((Keys { map }, warnings))
}

/// Reads a pod's annotations. `Ok((decision, warnings))`, or the denial.
pub fn decide(
    annotations: &Map<String, Value>,
    first_container: Option<&Value>,
    settings: &Settings,
) -> Result<(Decision, Vec<String>), Denial> {
    let (keys, mut warnings) = collect(annotations)?;
    if !keys.bool("agent-inject", false)? {
        return Ok((Decision::Skip("no agent-inject: \"true\""), warnings));
    }
    match keys.value("agent-inject-status").map(str::trim) {
        None | Some("") | Some("update") => {}
        Some("injected") => return Ok((Decision::Skip("already injected"), warnings)),
        Some(v) => {
            return Err(keys.deny(
                "agent-inject-status",
                format!("{v:?}: expected \"injected\" or \"update\""),
            ));
        }
    }

    let role = match keys.value("role").map(str::trim) {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => {
            return Err(keys.deny(
                "role",
                "is required with agent-inject: the kubernetes auth role the agent logs in with",
            ));
        }
    };
    let auth_path = match keys.value("auth-path").map(str::trim) {
        None => "auth/kubernetes".to_owned(),
        Some(p) => {
            let p = p.trim_matches('/');
            if p.is_empty() || p.contains("//") || p.split('/').any(|s| s == "..") {
                return Err(keys.deny("auth-path", "is not a mount path like auth/kubernetes"));
            }
            if p.starts_with("auth/") {
                p.to_owned()
            } else {
                format!("auth/{p}")
            }
        }
    };
    let volume_path = match keys.value("secret-volume-path").map(str::trim) {
        None => "/vault/secrets".to_owned(),
        Some(p) if p.starts_with('/') && p.len() > 1 && !p.split('/').any(|s| s == "..") => {
            p.trim_end_matches('/').to_owned()
        }
        Some(_) => {
            return Err(keys.deny(
                "secret-volume-path",
                "must be an absolute directory path like /vault/secrets",
            ));
        }
    };
    let image = match keys.value("agent-image").map(str::trim) {
        None => settings.agent_image.clone(),
        Some(i) if !i.is_empty() && !i.contains(char::is_whitespace) => i.to_owned(),
        Some(_) => return Err(keys.deny("agent-image", "is not an image reference")),
    };
    let pre_populate = keys.bool("agent-pre-populate", true)?;
    let pre_populate_only = keys.bool("agent-pre-populate-only", false)?;
    let revoke_on_shutdown = keys.bool("agent-revoke-on-shutdown", true)?;
    let init_first = keys.bool("agent-init-first", false)?;
    let tls_skip_verify = keys.bool("tls-skip-verify", false)?;
    let cache_enable = keys.bool("agent-cache-enable", false)?;
    if cache_enable {
        warnings.push(format!(
            "annotation {}: leash's init and sidecar agents always share a lease cache \
             (no second credential is minted); no caching proxy listener is started",
            keys.full("agent-cache-enable")
        ));
    }
    let d = &settings.resources;
    let resources = Resources {
        requests_cpu: keys.quantity("agent-requests-cpu", &d.requests_cpu)?,
        requests_mem: keys.quantity("agent-requests-mem", &d.requests_mem)?,
        limits_cpu: keys.quantity("agent-limits-cpu", &d.limits_cpu)?,
        limits_mem: keys.quantity("agent-limits-mem", &d.limits_mem)?,
    };

    let (run_as_user, run_as_group) = if keys.bool("agent-run-as-same-user", false)? {
        let sc = first_container.and_then(|c| c.get("securityContext"));
        let uid = sc.and_then(|s| s.get("runAsUser")).and_then(Value::as_i64);
        match uid {
            Some(u) if u > 0 => {
                let gid = sc
                    .and_then(|s| s.get("runAsGroup"))
                    .and_then(Value::as_i64)
                    .unwrap_or(u);
                (u, gid)
            }
            Some(_) => {
                return Err(keys.deny(
                    "agent-run-as-same-user",
                    "the first container runs as root (runAsUser 0); the agent never does",
                ));
            }
            None => {
                return Err(keys.deny(
                    "agent-run-as-same-user",
                    "needs securityContext.runAsUser on the pod's first container",
                ));
            }
        }
    } else {
        match keys.value("agent-run-as-user") {
            None => (settings.run_as_user, settings.run_as_user),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(u) if u > 0 && u <= i64::from(u32::MAX) => (u, u),
                Ok(0) => {
                    return Err(
                        keys.deny("agent-run-as-user", "0 is root; the agent runs as non-root")
                    );
                }
                _ => {
                    return Err(keys.deny(
                        "agent-run-as-user",
                        format!("{v:?} is not a user id (a positive integer)"),
                    ));
                }
            },
        }
    };

    let address = match keys.value("service").map(str::trim) {
        None => settings.leash_addr.clone(),
        Some(a)
            if (a.starts_with("http://") || a.starts_with("https://"))
                && !a.contains(char::is_whitespace) =>
        {
            a.trim_end_matches('/').to_owned()
        }
        Some(_) => {
            return Err(keys.deny("service", "is not a URL like https://leash.leash.svc:8200"));
        }
    };
    let ca_cert = match keys.value("ca-cert").map(str::trim) {
        None => None,
        Some(p) if p.starts_with('/') => Some(p.to_owned()),
        Some(_) => {
            return Err(keys.deny(
                "ca-cert",
                "must be an absolute path of a PEM file in the agent container",
            ));
        }
    };

    let proxy = match keys.value("proxy-config") {
        None => None,
        Some(text) => {
            let v = leash_hcl::parse_to_json(text)
                .map_err(|e| keys.deny("proxy-config", format!("does not parse: {e}")))?;
            let Some(mut m) = v.as_object().cloned() else {
                return Err(keys.deny("proxy-config", "expected `proxy \"http\" { … }` blocks"));
            };
            let proxy = m.remove("proxy");
            if !m.is_empty() || proxy.is_none() {
                return Err(keys.deny(
                    "proxy-config",
                    "holds only `proxy \"http\" { … }` and `proxy \"postgres\" { … }` blocks (the login and the leash address come from the other annotations)",
                ));
            }
            proxy
        }
    };

    let secrets = secrets(&keys)?;
    if secrets.is_empty() {
        warnings.push(format!(
            "{VAULT_PREFIX}agent-inject is true but no {VAULT_PREFIX}agent-inject-secret-<name> \
             is given: the agent logs in and renders nothing"
        ));
    }

    Ok((
        Decision::Inject(Box::new(InjectSpec {
            role,
            auth_path,
            volume_path,
            image,
            pre_populate: pre_populate || pre_populate_only,
            pre_populate_only,
            revoke_on_shutdown,
            init_first,
            resources,
            run_as_user,
            run_as_group,
            address,
            tls_skip_verify,
            ca_cert,
            cache_enable,
            secrets,
            proxy,
        })),
        warnings,
    ))
}

/// The per-secret keys, grouped by name; each checked.
fn secrets(keys: &Keys) -> Result<Vec<SecretSpec>, Denial> {
    // name → prefix → short key
    let mut by_name: BTreeMap<String, BTreeMap<&'static str, String>> = BTreeMap::new();
    for short in keys.map.keys() {
        for p in SECRET_PREFIXES {
            if let Some(name) = short.strip_prefix(p) {
                by_name
                    .entry(name.to_owned())
                    .or_default()
                    .insert(p, short.clone());
                break;
            }
        }
    }
    let mut out = Vec::new();
    for (name, parts) in by_name {
        let key_of = |p: &str| parts.get(p).cloned();
        let Some(secret_key) = key_of("agent-inject-secret-") else {
            // A template, file, perms or command for a secret that is not there.
            let (_, short) = parts.iter().next().ok_or_else(|| Denial {
                annotation: format!("{VAULT_PREFIX}agent-inject-secret-{name}"),
                reason: "missing".into(),
            })?;
            return Err(keys.deny(
                short,
                format!("there is no {VAULT_PREFIX}agent-inject-secret-{name} for it"),
            ));
        };
        if !plain_file_name(&name) {
            return Err(keys.deny(&secret_key, "the secret's name must be a file name"));
        }
        let path = keys.value(&secret_key).unwrap_or("").trim().to_owned();
        if path.is_empty() {
            return Err(keys.deny(&secret_key, "the secret path is empty"));
        }
        let template = match (
            key_of("agent-inject-template-"),
            key_of("agent-inject-template-file-"),
        ) {
            (Some(_), Some(f)) => {
                return Err(keys.deny(
                    &f,
                    format!("give {VAULT_PREFIX}agent-inject-template-{name} or the template file, not both"),
                ));
            }
            (Some(t), None) => {
                let text = keys.value(&t).unwrap_or("");
                if let Err(e) = leash_agent::template::Template::parse(&name, text) {
                    return Err(keys.deny(&t, format!("the template does not parse: {e}")));
                }
                TemplateSource::Inline(text.to_owned())
            }
            (None, Some(f)) => {
                let p = keys.value(&f).unwrap_or("").trim();
                if !p.starts_with('/') {
                    return Err(keys.deny(
                        &f,
                        "must be an absolute path of a template file in the agent container",
                    ));
                }
                TemplateSource::File(p.to_owned())
            }
            (None, None) => TemplateSource::Default,
        };
        let file = match key_of("agent-inject-file-") {
            None => name.clone(),
            Some(k) => {
                let v = keys.value(&k).unwrap_or("").trim();
                if !plain_file_name(v) {
                    return Err(keys.deny(
                        &k,
                        "must be a file name in the secret volume (no directories)",
                    ));
                }
                v.to_owned()
            }
        };
        let perms = match key_of("agent-inject-perms-") {
            None => "0644".to_owned(),
            Some(k) => {
                let v = keys.value(&k).unwrap_or("");
                parse_perms(v).ok_or_else(|| {
                    keys.deny(&k, format!("{v:?} is not an octal file mode like 0440"))
                })?
            }
        };
        let command = match key_of("agent-inject-command-") {
            None => None,
            Some(k) => {
                let v = keys.value(&k).unwrap_or("").trim();
                if v.is_empty() {
                    None
                } else {
                    Some(v.to_owned())
                }
            }
        };
        out.push(SecretSpec {
            name,
            path,
            template,
            file,
            perms,
            command,
        });
    }
    let mut files: Vec<&str> = out.iter().map(|s| s.file.as_str()).collect();
    files.sort_unstable();
    if let Some(w) = files.windows(2).find(|w| w[0] == w[1]) {
        let dup = w[0].to_owned();
        let second = out
            .iter()
            .filter(|s| s.file == dup)
            .nth(1)
            .map(|s| s.name.clone());
        return Err(keys.deny(
            &format!("agent-inject-file-{}", second.unwrap_or_default()),
            format!("two secrets write the file {dup}"),
        ));
    }
    Ok(out)
}

/// Vault's default rendering of a secret without a template: one `key: value` line per
/// key of its data.
pub fn default_template(path: &str) -> String {
    let quoted = serde_json::to_string(path).unwrap_or_else(|_| format!("{path:?}"));
    format!(
        "{{{{ with secret {quoted} }}}}{{{{ range $k, $v := .Data }}}}{{{{ $k }}}}: {{{{ $v }}}}\n{{{{ end }}}}{{{{ end }}}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_are_go_parse_bool() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn perms_are_octal() {
        assert_eq!(parse_perms("0440").as_deref(), Some("0440"));
        assert_eq!(parse_perms("640").as_deref(), Some("0640"));
        assert_eq!(parse_perms("999"), None);
        assert_eq!(parse_perms("rw-r--r--"), None);
        assert_eq!(parse_perms("04400"), None);
    }

    #[test]
    fn default_template_parses() {
        let t = default_template("secret/data/a \"b\"");
        assert!(
            leash_agent::template::Template::parse("x", &t).is_ok(),
            "{t}"
        );
    }
}
