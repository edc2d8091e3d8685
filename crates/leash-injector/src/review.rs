//! The `admission.k8s.io/v1` `AdmissionReview` wire format: the API server's request
//! in, the webhook's response out. No HTTP here.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::annotations::{Decision, Denial, decide};
use crate::patch::{agent_config, patch, proxy_config};
use crate::{InjectorError, Settings};

/// What the webhook answered, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed without a patch (the reason).
    Unchanged(&'static str),
    /// Allowed with a patch of this many operations.
    Patched(usize),
    /// Refused.
    Denied(Denial),
}

/// Answers one AdmissionReview body: `(response review, outcome)`, or
/// [`InjectorError::BadReview`] when the body is not one.
pub fn review(body: &[u8], settings: &Settings) -> Result<(Value, Outcome), InjectorError> {
    let bad = |m: &str| InjectorError::BadReview(m.to_owned());
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("the body is not JSON"))?;
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if v.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err(bad("kind is not AdmissionReview"));
    }
    if api_version != "admission.k8s.io/v1" && api_version != "admission.k8s.io/v1beta1" {
        return Err(bad("apiVersion is not admission.k8s.io/v1"));
    }
    let req = v
        .get("request")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no request"))?;
    let uid = req
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("request.uid is missing"))?;

    let kind = req
        .get("kind")
        .and_then(|k| k.get("kind"))
        .and_then(Value::as_str);
    let operation = req.get("operation").and_then(Value::as_str).unwrap_or("");
    let namespace = req.get("namespace").and_then(Value::as_str).unwrap_or("");
    let (outcome, warnings, ops) = if kind != Some("Pod") {
        (Outcome::Unchanged("not a Pod"), Vec::new(), None)
    } else if operation != "CREATE" {
        (Outcome::Unchanged("not a CREATE"), Vec::new(), None)
    } else {
        let pod = req
            .get("object")
            .filter(|o| o.is_object())
            .ok_or_else(|| bad("request.object is missing"))?;
        mutate_pod(pod, namespace, settings)
    };

    let mut resp = Map::new();
    resp.insert("uid".into(), json!(uid));
    match &outcome {
        Outcome::Denied(d) => {
            resp.insert("allowed".into(), json!(false));
            resp.insert(
                "status".into(),
                json!({"status": "Failure", "reason": "BadRequest", "code": 400,
                       "message": format!("leash injector: {d}")}),
            );
        }
        _ => {
            resp.insert("allowed".into(), json!(true));
        }
    }
    if let Some(ops) = ops {
        let text = serde_json::to_vec(&ops).map_err(|_| bad("patch"))?;
        resp.insert("patchType".into(), json!("JSONPatch"));
        resp.insert(
            "patch".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
    if !warnings.is_empty() {
        resp.insert("warnings".into(), json!(warnings));
    }
    Ok((
        json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": resp}),
        outcome,
    ))
}

/// The decision for one pod: outcome, warnings, and the patch if any.
fn mutate_pod(
    pod: &Value,
    namespace: &str,
    settings: &Settings,
) -> (Outcome, Vec<String>, Option<Vec<Value>>) {
    if !settings.selects(namespace, pod.get("metadata").and_then(|m| m.get("labels"))) {
        return (
            Outcome::Unchanged("outside the injector's selectors"),
            Vec::new(),
            None,
        );
    }
    let empty = Map::new();
    let annotations = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let first = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let (spec, warnings) = match decide(annotations, first, settings) {
        Err(d) => return (Outcome::Denied(d), Vec::new(), None),
        Ok((Decision::Skip(why), w)) => return (Outcome::Unchanged(why), w, None),
        Ok((Decision::Inject(spec), w)) => (spec, w),
    };
    // The configuration must be one `leash agent` accepts: check it with the agent's
    // own parser (a template file is not here to read, so its place gets a stand-in).
    for init in [true, false] {
        let mut cfg = agent_config(&spec, init, settings.ca_bundle_pem.is_some());
        if let Some(ts) = cfg.get_mut("template").and_then(Value::as_array_mut) {
            for t in ts.iter_mut().filter_map(Value::as_object_mut) {
                if t.remove("source").is_some() {
                    t.insert("contents".into(), json!(""));
                }
            }
        }
        if let Err(e) = leash_agent::AgentConfig::parse(&cfg.to_string(), std::path::Path::new("/"))
        {
            let d = Denial {
                annotation: format!("{}agent-inject", crate::annotations::VAULT_PREFIX),
                reason: format!("the generated agent configuration is refused: {e}"),
            };
            return (Outcome::Denied(d), warnings, None);
        }
    }
    // Likewise the proxy sidecar's, with the proxy's own parser.
    if let Some(cfg) = proxy_config(&spec, settings.ca_bundle_pem.is_some())
        && let Err(e) = leash_proxy::ProxyConfig::parse(&cfg.to_string(), std::path::Path::new("/"))
    {
        let d = Denial {
            annotation: format!("{}proxy-config", crate::annotations::LEASH_PREFIX),
            reason: format!("the generated proxy configuration is refused: {e}"),
        };
        return (Outcome::Denied(d), warnings, None);
    }
    let ops = patch(&spec, pod, settings.ca_bundle_pem.as_deref());
    (Outcome::Patched(ops.len()), warnings, Some(ops))
}
