//! `leash injector`: the Kubernetes mutating admission webhook. A pod carrying Vault
//! Agent Injector annotations (`vault.hashicorp.com/agent-inject: "true"`, …) gets a
//! `leash agent` init container and sidecar that log in with the pod's own
//! service-account token and render its credential files — so a Deployment written
//! for Vault works against leash unchanged.
//!
//! * [`annotations`]: annotations → [`InjectSpec`] or a [`Denial`] naming the
//!   annotation; unknown keys become warnings. Pure.
//! * [`patch`]: the JSONPatch and the agents' configuration. Pure.
//! * [`review`]: the `admission.k8s.io/v1` AdmissionReview wire format.
//! * [`server`]: HTTPS (rustls; certificate and key reloaded when they change),
//!   `POST /mutate`, `GET /healthz`.
#![forbid(unsafe_code)]

pub mod annotations;
mod error;
pub mod patch;
mod quantity;
pub mod review;
pub mod server;

pub use annotations::{Denial, InjectSpec, Resources};
pub use error::InjectorError;
pub use review::{Outcome, review};

use serde_json::Value;

/// The injector's own settings (its flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The leash address the agents use unless a pod's `service` annotation says
    /// otherwise.
    pub leash_addr: String,
    /// The agent image unless `agent-image` says otherwise.
    pub agent_image: String,
    /// A CA bundle (PEM) for the agents to trust leash with, unless `ca-cert` names one.
    pub ca_bundle_pem: Option<String>,
    /// Default resources of the agent containers.
    pub resources: Resources,
    /// Default user (and group) id of the agent containers.
    pub run_as_user: i64,
    /// Namespaces whose pods are considered (`name` or `prefix*`); empty: all.
    pub namespaces: Vec<String>,
    /// Equality-based label selector the pods must match (`app=x,tier!=db,k,!k2`).
    pub label_selector: Vec<LabelRequirement>,
}

/// Default resources: measured, the agent's resident memory is about 10 MiB
/// (docs/agent.md) and it does a few HTTP calls a minute.
pub fn default_resources() -> Resources {
    Resources {
        requests_cpu: "10m".into(),
        requests_mem: "16Mi".into(),
        limits_cpu: "250m".into(),
        limits_mem: "48Mi".into(),
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key=value` (or `key==value`).
    Equals(String, String),
    /// `key!=value`.
    NotEquals(String, String),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// Parses an equality-based label selector: requirements separated by commas.
pub fn parse_label_selector(s: &str) -> Result<Vec<LabelRequirement>, InjectorError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ok_key = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        };
        let req = if let Some((k, v)) = part.split_once("!=") {
            LabelRequirement::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            LabelRequirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some(k) = part.strip_prefix('!') {
            LabelRequirement::NotExists(k.trim().into())
        } else {
            LabelRequirement::Exists(part.into())
        };
        let key = match &req {
            LabelRequirement::Equals(k, _)
            | LabelRequirement::NotEquals(k, _)
            | LabelRequirement::Exists(k)
            | LabelRequirement::NotExists(k) => k,
        };
        if !ok_key(key) {
            return Err(InjectorError::Settings(format!(
                "label selector: {part:?} is not key=value, key!=value, key or !key"
            )));
        }
        out.push(req);
    }
    Ok(out)
}

impl Settings {
    /// Checks the defaults the same way a pod's annotations are checked.
    pub fn check(&self) -> Result<(), InjectorError> {
        let r = &self.resources;
        for (flag, v) in [
            ("--agent-requests-cpu", &r.requests_cpu),
            ("--agent-requests-mem", &r.requests_mem),
            ("--agent-limits-cpu", &r.limits_cpu),
            ("--agent-limits-mem", &r.limits_mem),
        ] {
            if !quantity::is_quantity(v) {
                return Err(InjectorError::Settings(format!(
                    "{flag} {v:?} is not a Kubernetes quantity (like 250m, 64Mi)"
                )));
            }
        }
        if self.run_as_user <= 0 {
            return Err(InjectorError::Settings(
                "--agent-run-as-user: must be a non-root user id".into(),
            ));
        }
        if self.agent_image.trim().is_empty() {
            return Err(InjectorError::Settings("--agent-image is empty".into()));
        }
        Ok(())
    }

    /// Whether a pod in `namespace` with `labels` is within the selectors.
    pub fn selects(&self, namespace: &str, labels: Option<&Value>) -> bool {
        let ns_ok = self.namespaces.is_empty()
            || self.namespaces.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => namespace.starts_with(prefix),
                None => namespace == p,
            });
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        ns_ok
            && self.label_selector.iter().all(|r| match r {
                LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
                LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
                LabelRequirement::Exists(k) => label(k).is_some(),
                LabelRequirement::NotExists(k) => label(k).is_none(),
            })
    }
}

#[cfg(test)]
mod tests;
