//! The service account a token names, from either claim layout Kubernetes uses:
//!
//! * legacy (secret-based) tokens: flat `kubernetes.io/serviceaccount/namespace`,
//!   `…/service-account.name`, `…/service-account.uid`, `…/secret.name`;
//! * projected (bound) tokens: `kubernetes.io: {namespace, serviceaccount: {name, uid},
//!   pod: {name, uid}, secret?: {name}}`.
//!
//! When both layouts are present they must agree, and a `sub` claim, when present, must
//! be `system:serviceaccount:<namespace>:<name>`, so a token cannot name one service
//! account in one place and another elsewhere.

use serde_json::{Map, Value};

/// A service account's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServiceAccount {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    /// The token's secret (legacy tokens only; "" otherwise).
    pub(crate) secret_name: String,
}

const LEGACY_NS: &str = "kubernetes.io/serviceaccount/namespace";
const LEGACY_NAME: &str = "kubernetes.io/serviceaccount/service-account.name";
const LEGACY_UID: &str = "kubernetes.io/serviceaccount/service-account.uid";
const LEGACY_SECRET: &str = "kubernetes.io/serviceaccount/secret.name";

fn s(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

fn legacy(c: &Map<String, Value>) -> Option<ServiceAccount> {
    if !(c.contains_key(LEGACY_NS) || c.contains_key(LEGACY_NAME)) {
        return None;
    }
    Some(ServiceAccount {
        namespace: s(c.get(LEGACY_NS)).unwrap_or_default(),
        name: s(c.get(LEGACY_NAME)).unwrap_or_default(),
        uid: s(c.get(LEGACY_UID)).unwrap_or_default(),
        secret_name: s(c.get(LEGACY_SECRET)).unwrap_or_default(),
    })
}

fn projected(c: &Map<String, Value>) -> Option<ServiceAccount> {
    let k = c.get("kubernetes.io")?.as_object()?;
    let sa = k.get("serviceaccount").and_then(Value::as_object);
    Some(ServiceAccount {
        namespace: s(k.get("namespace")).unwrap_or_default(),
        name: s(sa.and_then(|m| m.get("name"))).unwrap_or_default(),
        uid: s(sa.and_then(|m| m.get("uid"))).unwrap_or_default(),
        secret_name: s(k
            .get("secret")
            .and_then(Value::as_object)
            .and_then(|m| m.get("name")))
        .unwrap_or_default(),
    })
}

/// Parses `system:serviceaccount:<namespace>:<name>`.
pub(crate) fn parse_username(username: &str) -> Option<(String, String)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    if ns.is_empty() || name.is_empty() || name.contains(':') {
        return None;
    }
    Some((ns.to_owned(), name.to_owned()))
}

/// The service account of a token's claims, or why there is none.
pub(crate) fn service_account(c: &Map<String, Value>) -> Result<ServiceAccount, &'static str> {
    let sa = match (legacy(c), projected(c)) {
        (None, None) => {
            return Err(
                "the token is not a Kubernetes service-account token (no service-account claims)",
            );
        }
        (Some(a), None) | (None, Some(a)) => a,
        (Some(l), Some(p)) => {
            if l.namespace != p.namespace || l.name != p.name || l.uid != p.uid {
                return Err("the token's legacy and projected service-account claims disagree");
            }
            ServiceAccount {
                secret_name: if l.secret_name.is_empty() {
                    p.secret_name
                } else {
                    l.secret_name
                },
                ..l
            }
        }
    };
    if sa.namespace.is_empty() || sa.name.is_empty() {
        return Err("the token's service-account claims lack the namespace or name");
    }
    if let Some(sub) = c.get("sub") {
        let matches = sub
            .as_str()
            .and_then(parse_username)
            .is_some_and(|(ns, name)| ns == sa.namespace && name == sa.name);
        if !matches {
            return Err("the token's sub claim does not name its service account");
        }
    }
    Ok(sa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn both_layouts_are_read() {
        let legacy = m(json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "agents",
            "kubernetes.io/serviceaccount/secret.name": "summariser-token-x1",
            "kubernetes.io/serviceaccount/service-account.name": "summariser",
            "kubernetes.io/serviceaccount/service-account.uid": "uid-1",
            "sub": "system:serviceaccount:agents:summariser",
        }));
        let sa = service_account(&legacy).unwrap();
        assert_eq!(
            sa,
            ServiceAccount {
                namespace: "agents".into(),
                name: "summariser".into(),
                uid: "uid-1".into(),
                secret_name: "summariser-token-x1".into()
            }
        );
        let projected = m(json!({
            "kubernetes.io": {"namespace": "agents",
                "pod": {"name": "p", "uid": "pod-uid"},
                "serviceaccount": {"name": "summariser", "uid": "uid-1"}},
            "sub": "system:serviceaccount:agents:summariser",
        }));
        let sa2 = service_account(&projected).unwrap();
        assert_eq!(
            (
                sa2.namespace.as_str(),
                sa2.name.as_str(),
                sa2.uid.as_str(),
                sa2.secret_name.as_str()
            ),
            ("agents", "summariser", "uid-1", "")
        );
        let mut both = legacy.clone();
        both.extend(projected.clone());
        assert_eq!(service_account(&both).unwrap(), sa);
    }

    #[test]
    fn inconsistent_or_missing_claims_are_refused() {
        assert!(service_account(&m(json!({"sub": "x"}))).is_err());
        let disagree = m(json!({
            "kubernetes.io/serviceaccount/namespace": "agents",
            "kubernetes.io/serviceaccount/service-account.name": "a",
            "kubernetes.io": {"namespace": "agents", "serviceaccount": {"name": "b"}},
        }));
        assert!(service_account(&disagree).unwrap_err().contains("disagree"));
        let bad_sub = m(json!({
            "kubernetes.io": {"namespace": "agents", "serviceaccount": {"name": "a", "uid": "u"}},
            "sub": "system:serviceaccount:kube-system:a",
        }));
        assert!(service_account(&bad_sub).unwrap_err().contains("sub"));
        let no_name = m(json!({"kubernetes.io": {"namespace": "agents"}}));
        assert!(service_account(&no_name).is_err());
    }

    #[test]
    fn usernames() {
        assert_eq!(
            parse_username("system:serviceaccount:agents:summariser"),
            Some(("agents".into(), "summariser".into()))
        );
        for bad in [
            "system:serviceaccount:agents",
            "system:serviceaccount::x",
            "system:serviceaccount:a:b:c",
            "alice",
            "system:node:n1",
        ] {
            assert_eq!(parse_username(bad), None, "{bad}");
        }
    }
}
