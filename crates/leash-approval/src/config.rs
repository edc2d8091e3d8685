//! Settings of just-in-time access (`sys/control-group/config`).

use std::time::Duration;

use leash_types::duration::{format_go_duration, parse_duration};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ApprovalError;

/// Default lifetime of a pending request.
pub const DEFAULT_REQUEST_TTL: u64 = 3600;
/// Default delay before escalation when an escalation URL is set.
pub const DEFAULT_ESCALATE_AFTER: u64 = 900;

/// The settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// Seconds a request may wait for a decision before it expires.
    pub request_ttl: u64,
    /// URLs that receive a POST on every new request, decision and expiry.
    pub webhook_urls: Vec<String>,
    /// URL that receives a POST when a request waited `escalate_after` undecided.
    pub escalation_url: Option<String>,
    /// Seconds before escalation.
    pub escalate_after: u64,
    /// Base address of this server's approval page, put in notifications
    /// (`https://leash.example.com`); empty: not mentioned.
    pub ui_base_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_ttl: DEFAULT_REQUEST_TTL,
            webhook_urls: Vec::new(),
            escalation_url: None,
            escalate_after: DEFAULT_ESCALATE_AFTER,
            ui_base_url: String::new(),
        }
    }
}

fn check_url(field: &str, u: &str) -> Result<String, ApprovalError> {
    let u = u.trim();
    let parsed = reqwest::Url::parse(u)
        .map_err(|e| ApprovalError::invalid(format!("{field}: not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApprovalError::invalid(format!(
            "{field}: must be an http:// or https:// URL with a host"
        )));
    }
    Ok(u.to_owned())
}

fn seconds(field: &str, v: &Value, min: u64, max: u64) -> Result<u64, ApprovalError> {
    let s = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => parse_duration(s).ok().map(|d: Duration| d.as_secs()),
        _ => None,
    };
    match s {
        Some(s) if (min..=max).contains(&s) => Ok(s),
        _ => Err(ApprovalError::invalid(format!(
            "{field} must be a duration (\"1h\", \"90s\" or seconds) from {min}s to {max}s"
        ))),
    }
}

impl Config {
    /// Applies API input (a partial update: absent fields keep their value).
    pub fn update(&mut self, data: &Map<String, Value>) -> Result<(), ApprovalError> {
        const KNOWN: &[&str] = &[
            "request_ttl",
            "webhook_urls",
            "escalation_url",
            "escalate_after",
            "ui_base_url",
        ];
        if let Some(k) = data.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ApprovalError::invalid(format!(
                "unknown field {k:?}; expected {}",
                KNOWN.join(", ")
            )));
        }
        let mut next = self.clone();
        if let Some(v) = data.get("request_ttl") {
            next.request_ttl = seconds("request_ttl", v, 10, 7 * 86_400)?;
        }
        if let Some(v) = data.get("escalate_after") {
            next.escalate_after = seconds("escalate_after", v, 1, 7 * 86_400)?;
        }
        if let Some(v) = data.get("webhook_urls") {
            let list: Vec<&str> = match v {
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .ok_or_else(|| ApprovalError::invalid("webhook_urls must be strings"))
                    })
                    .collect::<Result<_, _>>()?,
                Value::String(s) => s.split(',').filter(|s| !s.trim().is_empty()).collect(),
                Value::Null => Vec::new(),
                _ => {
                    return Err(ApprovalError::invalid(
                        "webhook_urls must be a list of URLs",
                    ));
                }
            };
            if list.len() > 16 {
                return Err(ApprovalError::invalid("at most 16 webhook_urls"));
            }
            next.webhook_urls = list
                .into_iter()
                .map(|u| check_url("webhook_urls", u))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = data.get("escalation_url") {
            next.escalation_url = match v {
                Value::Null => None,
                Value::String(s) if s.trim().is_empty() => None,
                Value::String(s) => Some(check_url("escalation_url", s)?),
                _ => return Err(ApprovalError::invalid("escalation_url must be a URL")),
            };
        }
        if let Some(v) = data.get("ui_base_url") {
            next.ui_base_url = match v {
                Value::Null => String::new(),
                Value::String(s) if s.trim().is_empty() => String::new(),
                Value::String(s) => check_url("ui_base_url", s)?
                    .trim_end_matches('/')
                    .to_owned(),
                _ => return Err(ApprovalError::invalid("ui_base_url must be a URL")),
            };
        }
        *self = next;
        Ok(())
    }

    /// The API view.
    pub fn view(&self) -> Value {
        json!({
            "request_ttl": format_go_duration(Duration::from_secs(self.request_ttl)),
            "request_ttl_seconds": self.request_ttl,
            "webhook_urls": self.webhook_urls,
            "escalation_url": self.escalation_url,
            "escalate_after": format_go_duration(Duration::from_secs(self.escalate_after)),
            "escalate_after_seconds": self.escalate_after,
            "ui_base_url": self.ui_base_url,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn partial_updates_and_validation() {
        let mut c = Config::default();
        c.update(
            json!({"request_ttl": "2m", "webhook_urls": ["http://127.0.0.1:9/hook"]})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(c.request_ttl, 120);
        assert_eq!(c.webhook_urls.len(), 1);
        assert_eq!(c.escalate_after, DEFAULT_ESCALATE_AFTER);
        for (bad, needle) in [
            (json!({"webhook_urls": ["ftp://x/"]}), "http"),
            (json!({"escalation_url": "not a url"}), "not a URL"),
            (json!({"request_ttl": "1s"}), "request_ttl"),
            (json!({"colour": 1}), "colour"),
        ] {
            let e = c.update(bad.as_object().unwrap()).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        // A refused update changes nothing.
        assert_eq!(c.request_ttl, 120);
    }

    #[test]
    fn refused_urls_are_not_echoed() {
        // Chat webhook URLs carry their secret in the path.
        let mut c = Config::default();
        for bad in [
            json!({"webhook_urls": ["ftp://hooks.example/services/T0/B0/s3cr3tpath"]}),
            json!({"escalation_url": "hooks.example/services/T0/B0/s3cr3tpath"}),
        ] {
            let e = c.update(bad.as_object().unwrap()).unwrap_err().to_string();
            assert!(!e.contains("s3cr3tpath"), "{e}");
            assert!(
                e.contains("webhook_urls") || e.contains("escalation_url"),
                "{e}"
            );
        }
    }
}
