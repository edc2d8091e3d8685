//! Webhook notifications: a JSON POST per event to each configured URL, delivered in the
//! background (the request path only enqueues), retried with exponential backoff and
//! jitter, and dropped with an error log when the queue is full or the attempts run out.
//!
//! The payload is what a chat incoming webhook (Slack, Mattermost, Rocket.Chat…) accepts:
//! a `text` summary, `attachments[].fields` for the details, and the same details under
//! `leash` for machines. It never carries a token, a credential or a lease id.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::model::AccessRequest;
use leash_types::rfc3339;

use crate::Config;

/// Queue length; beyond it deliveries are dropped (and logged).
const QUEUE: usize = 1024;
/// Deliveries in flight at once.
const PARALLEL: usize = 8;
/// Attempts per delivery.
pub const ATTEMPTS: u32 = 6;
/// Timeout of one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

struct Delivery {
    url: String,
    payload: Value,
}

/// A webhook URL as logs show it: scheme and host only. Chat incoming-webhook URLs carry
/// their secret in the path (`https://hooks.slack.com/services/T…/B…/<secret>`).
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")),
        Err(_) => "(invalid URL)".to_owned(),
    }
}

/// Sends webhook payloads in the background. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Delivery>,
}

impl Notifier {
    /// Starts the delivery task (on the current tokio runtime). `first_retry` is the
    /// delay before the second attempt; it doubles per attempt, capped at one minute.
    pub fn start(first_retry: Duration) -> Notifier {
        let (tx, mut rx) = mpsc::channel::<Delivery>(QUEUE);
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leash/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let slots = Arc::new(Semaphore::new(PARALLEL));
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let http = http.clone();
                tokio::spawn(async move {
                    deliver(&http, &d, first_retry).await;
                    drop(permit);
                });
            }
        });
        Notifier { tx }
    }

    /// Enqueues `payload` for each URL; never waits.
    pub fn send(&self, urls: &[String], payload: &Value) {
        for url in urls {
            let d = Delivery {
                url: url.clone(),
                payload: payload.clone(),
            };
            if let Err(e) = self.tx.try_send(d) {
                tracing::error!(url = %shown(url), error = %e, "webhook queue full or closed; notification dropped");
            }
        }
    }
}

async fn deliver(http: &reqwest::Client, d: &Delivery, first_retry: Duration) {
    let mut delay = first_retry;
    for attempt in 1..=ATTEMPTS {
        let outcome = http.post(&d.url).json(&d.payload).send().await;
        let err = match outcome {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(url = %shown(&d.url), attempt, "webhook delivered");
                return;
            }
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => e.without_url().to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::error!(url = %shown(&d.url), attempts = ATTEMPTS, error = %err, "webhook delivery failed; giving up");
            return;
        }
        tracing::warn!(url = %shown(&d.url), attempt, error = %err, "webhook delivery failed; retrying");
        let jitter =
            u64::from(leash_types::random::bytes::<1>()[0]) * delay.as_millis() as u64 / 512;
        tokio::time::sleep(delay / 2 + Duration::from_millis(jitter)).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// The payload for `event` (`requested`, `auto-approved`, `approved`, `denied`,
/// `expired`, `escalated`, `completed`) about `r`.
pub fn payload(event: &str, r: &AccessRequest, cfg: &Config, now: i64) -> Value {
    let (have, need) = r.tally();
    let mins = r.window_seconds / 60;
    let who = if r.agent_id.is_empty() {
        r.requester.display_name.as_str()
    } else {
        r.agent_id.as_str()
    };
    let mut text = match event {
        "requested" => format!(
            "Access request from {who}: {} on {} for {mins} min ({have}/{need} approvals). Justification: {}",
            r.operation, r.target_resource, r.justification
        ),
        "escalated" => format!(
            "ESCALATION: access request from {who} ({} on {}) has waited {} min without a decision.",
            r.operation,
            r.target_resource,
            r.age(now) / 60
        ),
        "auto-approved" => format!(
            "Access request from {who}: {} on {} auto-approved by rule {} for {mins} min.",
            r.operation,
            r.target_resource,
            r.rule.as_deref().unwrap_or("")
        ),
        "approved" | "denied" => {
            let d = r.decision.as_ref();
            format!(
                "Access request from {who}: {} on {} was {event} by {}{}",
                r.operation,
                r.target_resource,
                d.map_or("", |d| d.by.as_str()),
                d.filter(|d| !d.comment.is_empty())
                    .map(|d| format!(" ({})", d.comment))
                    .unwrap_or_default()
            )
        }
        "expired" => format!(
            "Access request from {who}: {} on {} expired without a decision.",
            r.operation, r.target_resource
        ),
        other => format!(
            "Access request from {who}: {} on {}: {other}.",
            r.operation, r.target_resource
        ),
    };
    if !cfg.ui_base_url.is_empty() && matches!(event, "requested" | "escalated") {
        text.push_str(&format!(" Decide at {}/ui/approvals", cfg.ui_base_url));
    }
    let field = |title: &str, value: String, short: bool| json!({"title": title, "value": value, "short": short});
    json!({
        "text": text,
        "attachments": [{
            "fallback": text,
            "color": match event {
                "approved" | "auto-approved" => "good",
                "denied" | "escalated" => "danger",
                _ => "warning",
            },
            "fields": [
                field("Request", r.id.clone(), false),
                field("Agent", who.to_owned(), true),
                field("Operation", r.operation.clone(), true),
                field("Target", r.target_resource.clone(), false),
                field("Duration", format!("{mins} min"), true),
                field("Approvals", format!("{have}/{need}"), true),
                field("Justification", r.justification.clone(), false),
            ],
        }],
        "leash": {
            "event": event,
            "request_id": r.id,
            "status": r.status.as_str(),
            "agent_id": r.agent_id,
            "requester_entity_id": r.requester.entity_id,
            "operation": r.operation,
            "target_resource": r.target_resource,
            "justification": r.justification,
            "requested_duration_minutes": r.requested_duration_minutes,
            "grant_duration_seconds": r.window_seconds,
            "approvals": have,
            "approvals_needed": need,
            "created_at": rfc3339(r.created_at),
            "decided_by": r.decision.as_ref().map(|d| d.by.clone()),
            "comment": r.decision.as_ref().map(|d| d.comment.clone()),
            "rule": r.rule,
            "trace_id": r.trace_id,
            "time": rfc3339(now),
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn logs_never_show_a_webhook_url_path() {
        let s = super::shown("https://hooks.slack.com/services/T000/B000/secretsecret");
        assert_eq!(s, "https://hooks.slack.com/…");
        assert!(!super::shown("not a url").contains("not"));
    }
}
