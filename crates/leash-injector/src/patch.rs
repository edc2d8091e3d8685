//! [`InjectSpec`] + the pod → a JSONPatch (RFC 6902) and the agents' configuration.
//! Pure: no IO, no HTTP.
//!
//! What the patch adds (replacing an entry of the same name, so `agent-inject-status:
//! update` re-injects cleanly):
//!
//! * volumes: `vault-secrets` (emptyDir, medium Memory) — the rendered files;
//!   `leash-agent-home` (emptyDir, Memory) — the agents' lease cache, mounted in the
//!   agent containers only; `leash-token` — a projected service-account token, mounted
//!   read-only in the agent containers only; `leash-ca` (downward API) when the
//!   injector has a CA bundle and the pod names no `ca-cert`;
//! * a `vault-secrets` mount in every app container that has none (nor anything else at
//!   that path);
//! * the init container `leash-agent-init` (`exit_after_auth`) and the sidecar
//!   `leash-agent`, each with its configuration in `LEASH_AGENT_CONFIG` (JSON);
//! * `vault.hashicorp.com/agent-inject-status: injected`.

use serde_json::{Map, Value, json};

use crate::annotations::{
    CA_BUNDLE_ANNOTATION, InjectSpec, TemplateSource, VAULT_PREFIX, default_template,
};

/// The volume of the rendered files (Vault's name; app containers mount it).
pub const SECRETS_VOLUME: &str = "vault-secrets";
/// The agents' own volume (lease cache), never mounted in app containers.
pub const HOME_VOLUME: &str = "leash-agent-home";
/// Where the agents mount [`HOME_VOLUME`].
pub const HOME_PATH: &str = "/home/leash";
/// The projected service-account token volume.
pub const TOKEN_VOLUME: &str = "leash-token";
/// Where the agents mount [`TOKEN_VOLUME`].
pub const TOKEN_DIR: &str = "/var/run/secrets/leash/serviceaccount";
/// The CA bundle volume (downward API of [`CA_BUNDLE_ANNOTATION`]).
pub const CA_VOLUME: &str = "leash-ca";
/// Where the agents mount [`CA_VOLUME`].
pub const CA_DIR: &str = "/var/run/secrets/leash/ca";
/// The init container's name.
pub const INIT_CONTAINER: &str = "leash-agent-init";
/// The sidecar's name.
pub const SIDECAR_CONTAINER: &str = "leash-agent";
/// The environment variable holding an agent's configuration.
pub const CONFIG_ENV: &str = "LEASH_AGENT_CONFIG";
/// Lifetime asked for the projected token (the kubelet refreshes it at 80%).
pub const TOKEN_EXPIRATION_SECONDS: u64 = 3600;

/// The agent configuration (Vault Agent's JSON shape) of the init container
/// (`init = true`: render once and exit) or of the sidecar.
pub fn agent_config(spec: &InjectSpec, init: bool, ca_bundle: bool) -> Value {
    let mut vault = Map::new();
    vault.insert("address".into(), json!(spec.address));
    if spec.tls_skip_verify {
        vault.insert("tls_skip_verify".into(), json!(true));
    }
    if let Some(ca) = &spec.ca_cert {
        vault.insert("ca_cert".into(), json!(ca));
    } else if ca_bundle {
        vault.insert("ca_cert".into(), json!(format!("{CA_DIR}/ca.pem")));
    }
    let templates: Vec<Value> = spec
        .secrets
        .iter()
        .map(|s| {
            let mut t = Map::new();
            t.insert(
                "destination".into(),
                json!(format!("{}/{}", spec.volume_path, s.file)),
            );
            match &s.template {
                TemplateSource::Inline(text) => {
                    t.insert("contents".into(), json!(text));
                }
                TemplateSource::File(path) => {
                    t.insert("source".into(), json!(path));
                }
                TemplateSource::Default => {
                    t.insert("contents".into(), json!(default_template(&s.path)));
                }
            }
            t.insert("perms".into(), json!(s.perms));
            if let Some(c) = &s.command {
                t.insert("command".into(), json!(c));
            }
            Value::Object(t)
        })
        .collect();
    json!({
        "vault": vault,
        "auto_auth": {
            "method": {
                "kubernetes": {
                    "mount_path": spec.auth_path,
                    "config": {
                        "role": spec.role,
                        "token_path": format!("{TOKEN_DIR}/token"),
                    }
                }
            }
        },
        "template": templates,
        "exit_after_auth": init,
        "revoke_on_exit": spec.revoke_on_shutdown,
        "lease_cache_file": format!("{HOME_PATH}/cache.json"),
    })
}

/// The proxy sidecar's name.
pub const PROXY_CONTAINER: &str = "leash-proxy";
/// The environment variable holding the proxy's configuration.
pub const PROXY_CONFIG_ENV: &str = "LEASH_PROXY_CONFIG";

/// The `leash proxy` configuration of the proxy sidecar: the sidecar agent's login and
/// leash address, its own lease cache, no files of its own, and the annotation's
/// `proxy` blocks. `None` when the pod asks for no proxy.
pub fn proxy_config(spec: &InjectSpec, ca_bundle: bool) -> Option<Value> {
    let proxy = spec.proxy.as_ref()?;
    let mut cfg = agent_config(spec, false, ca_bundle);
    if let Some(m) = cfg.as_object_mut() {
        m.insert("template".into(), json!([]));
        m.insert(
            "lease_cache_file".into(),
            json!(format!("{HOME_PATH}/proxy-cache.json")),
        );
        m.insert("proxy".into(), proxy.clone());
    }
    Some(cfg)
}

/// An agent container.
fn agent_container(spec: &InjectSpec, init: bool, ca_bundle: bool) -> Value {
    let config = agent_config(spec, init, ca_bundle).to_string();
    let mut mounts = vec![
        json!({"name": SECRETS_VOLUME, "mountPath": spec.volume_path}),
        json!({"name": HOME_VOLUME, "mountPath": HOME_PATH}),
        json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}),
    ];
    if ca_bundle && spec.ca_cert.is_none() {
        mounts.push(json!({"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": true}));
    }
    sidecar(
        spec,
        if init {
            INIT_CONTAINER
        } else {
            SIDECAR_CONTAINER
        },
        &["agent", "--config-env", CONFIG_ENV],
        (CONFIG_ENV, config),
        mounts,
    )
}

/// The proxy sidecar (when the pod asks for one).
fn proxy_container(spec: &InjectSpec, ca_bundle: bool) -> Option<Value> {
    let config = proxy_config(spec, ca_bundle)?.to_string();
    let mut mounts = vec![
        json!({"name": HOME_VOLUME, "mountPath": HOME_PATH}),
        json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}),
    ];
    if ca_bundle && spec.ca_cert.is_none() {
        mounts.push(json!({"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": true}));
    }
    Some(sidecar(
        spec,
        PROXY_CONTAINER,
        &["proxy", "--config-env", PROXY_CONFIG_ENV],
        (PROXY_CONFIG_ENV, config),
        mounts,
    ))
}

/// A leash container: the image, the command, its configuration in one environment
/// variable, the sidecar resources and the locked-down security context.
fn sidecar(
    spec: &InjectSpec,
    name: &str,
    args: &[&str],
    (env, config): (&str, String),
    mounts: Vec<Value>,
) -> Value {
    let r = &spec.resources;
    json!({
        "name": name,
        "image": spec.image,
        "command": ["leash"],
        "args": args,
        "env": [{"name": env, "value": config}],
        "resources": {
            "requests": {"cpu": r.requests_cpu, "memory": r.requests_mem},
            "limits": {"cpu": r.limits_cpu, "memory": r.limits_mem},
        },
        "securityContext": {
            "runAsUser": spec.run_as_user,
            "runAsGroup": spec.run_as_group,
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    })
}

/// JSON Pointer escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn names(list: Option<&Vec<Value>>) -> Vec<Option<&str>> {
    list.map(|l| {
        l.iter()
            .map(|v| v.get("name").and_then(Value::as_str))
            .collect()
    })
    .unwrap_or_default()
}

/// Ops putting `items` into the array at `path` (which may be absent): an item whose
/// name is already there replaces it; the others are added at `at` (an index or `-`).
fn put_named(
    ops: &mut Vec<Value>,
    path: &str,
    list: Option<&Vec<Value>>,
    items: Vec<Value>,
    at: &str,
) {
    let existing = names(list);
    if list.is_none() {
        ops.push(json!({"op": "add", "path": path, "value": items}));
        return;
    }
    let mut fresh = Vec::new();
    for item in items {
        let name = item.get("name").and_then(Value::as_str);
        match existing.iter().position(|n| n.is_some() && *n == name) {
            Some(i) => {
                ops.push(json!({"op": "replace", "path": format!("{path}/{i}"), "value": item}))
            }
            None => fresh.push(item),
        }
    }
    if at == "-" {
        for item in fresh {
            ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": item}));
        }
    } else {
        // Added in reverse at the same index so they end up in order.
        for item in fresh.into_iter().rev() {
            ops.push(json!({"op": "add", "path": format!("{path}/{at}"), "value": item}));
        }
    }
}

/// The JSONPatch for `pod`.
pub fn patch(spec: &InjectSpec, pod: &Value, ca_bundle_pem: Option<&str>) -> Vec<Value> {
    let mut ops = Vec::new();
    let pod_spec = pod.get("spec");
    let arr = |k: &str| pod_spec.and_then(|s| s.get(k)).and_then(Value::as_array);
    let use_ca = ca_bundle_pem.is_some() && spec.ca_cert.is_none();

    // Volumes.
    let mut volumes = vec![
        json!({"name": SECRETS_VOLUME, "emptyDir": {"medium": "Memory"}}),
        json!({"name": HOME_VOLUME, "emptyDir": {"medium": "Memory"}}),
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}}
        ]}}),
    ];
    if use_ca {
        volumes.push(json!({"name": CA_VOLUME, "downwardAPI": {"items": [{
            "path": "ca.pem",
            "fieldRef": {"fieldPath": format!("metadata.annotations['{CA_BUNDLE_ANNOTATION}']")}
        }]}}));
    }
    put_named(&mut ops, "/spec/volumes", arr("volumes"), volumes, "-");

    // The secrets volume in every app container lacking it.
    if let Some(containers) = arr("containers") {
        for (i, c) in containers.iter().enumerate() {
            let name = c.get("name").and_then(Value::as_str);
            if name == Some(SIDECAR_CONTAINER) || name == Some(PROXY_CONTAINER) {
                continue;
            }
            let mounts = c.get("volumeMounts").and_then(Value::as_array);
            let has = mounts.is_some_and(|m| {
                m.iter().any(|v| {
                    v.get("name").and_then(Value::as_str) == Some(SECRETS_VOLUME)
                        || v.get("mountPath")
                            .and_then(Value::as_str)
                            .map(|p| p.trim_end_matches('/'))
                            == Some(spec.volume_path.as_str())
                })
            });
            if has {
                continue;
            }
            let mount =
                json!({"name": SECRETS_VOLUME, "mountPath": spec.volume_path, "readOnly": true});
            let path = format!("/spec/containers/{i}/volumeMounts");
            if mounts.is_some() {
                ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": mount}));
            } else {
                ops.push(json!({"op": "add", "path": path, "value": [mount]}));
            }
        }
    }

    if spec.pre_populate {
        let at = if spec.init_first { "0" } else { "-" };
        put_named(
            &mut ops,
            "/spec/initContainers",
            arr("initContainers"),
            vec![agent_container(spec, true, use_ca)],
            at,
        );
    }
    if !spec.pre_populate_only {
        let mut sidecars = vec![agent_container(spec, false, use_ca)];
        sidecars.extend(proxy_container(spec, use_ca));
        put_named(
            &mut ops,
            "/spec/containers",
            arr("containers"),
            sidecars,
            "-",
        );
    }

    // Annotations: the status, and the CA bundle the downward-API volume reads.
    let has_annotations = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .is_some_and(Value::is_object);
    let mut notes = vec![(
        format!("{VAULT_PREFIX}agent-inject-status"),
        "injected".to_owned(),
    )];
    if let (true, Some(pem)) = (use_ca, ca_bundle_pem) {
        notes.push((CA_BUNDLE_ANNOTATION.to_owned(), pem.to_owned()));
    }
    if has_annotations {
        for (k, v) in notes {
            ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(&k)), "value": v}));
        }
    } else {
        let m: Map<String, Value> = notes
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": m}));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn pointer_escaping() {
        assert_eq!(
            escape("vault.hashicorp.com/agent-inject-status"),
            "vault.hashicorp.com~1agent-inject-status"
        );
        assert_eq!(escape("a~b"), "a~0b");
    }
}
