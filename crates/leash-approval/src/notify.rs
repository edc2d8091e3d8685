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

use crate::{ApprovalError, Config};

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
    /// Fails (at start-up) when the HTTP client cannot be built, rather than falling back
    /// to a default client that would follow redirects and wait forever.
    pub fn start(first_retry: Duration) -> Result<Notifier, ApprovalError> {
        let (tx, mut rx) = mpsc::channel::<Delivery>(QUEUE);
        let http = http_client(concat!("leash/", env!("CARGO_PKG_VERSION")))?;
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
        Ok(Notifier { tx })
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

/// The webhook client: one attempt's timeout, no redirects (a webhook that redirects is
/// misconfigured, and following it could carry the payload elsewhere).
fn http_client(user_agent: &str) -> Result<reqwest::Client, ApprovalError> {
    reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()
        .map_err(|e| ApprovalError::Setup(format!("cannot build the webhook HTTP client: {e}")))
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

/// `s` made safe to show in a chat message (Slack's message-formatting rules, which
/// Mattermost and Rocket.Chat share): `&`, `<` and `>` become `&amp;`, `&lt;`, `&gt;`,
/// so no `<!channel>`, `<@user>` or disguised `<http://evil|text>` link can form; line
/// breaks and other control characters become spaces, so the text cannot fake further
/// lines (a bold `*APPROVED*` line, a quoted `>` line). Every agent-written value goes
/// through this before it reaches `text` or an attachment field; the message also sets
/// `"mrkdwn": false` so `*bold*`, `_italic_` and `~strike~` in those values stay literal.
/// The machine-readable `leash` section keeps the values as they are.
pub fn chat_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The payload for `event` (`requested`, `auto-approved`, `approved`, `denied`,
/// `expired`, `escalated`, `completed`) about `r`.
pub fn payload(event: &str, r: &AccessRequest, cfg: &Config, now: i64) -> Value {
    let (have, need) = r.tally();
    let mins = r.window_seconds / 60;
    // Everything below that an agent (or an approver) wrote is escaped for chat.
    let who = chat_escape(if r.agent_id.is_empty() {
        r.requester.display_name.as_str()
    } else {
        r.agent_id.as_str()
    });
    let operation = chat_escape(&r.operation);
    let target = chat_escape(&r.target_resource);
    let justification = chat_escape(&r.justification);
    let rule = chat_escape(r.rule.as_deref().unwrap_or(""));
    let decided_by = chat_escape(r.decision.as_ref().map_or("", |d| d.by.as_str()));
    let comment = chat_escape(r.decision.as_ref().map_or("", |d| d.comment.as_str()));
    let r_op = &operation;
    let r_target = &target;
    let mut text = match event {
        "requested" => format!(
            "Access request from {who}: {r_op} on {r_target} for {mins} min ({have}/{need} approvals). Justification: {justification}"
        ),
        "escalated" => format!(
            "ESCALATION: access request from {who} ({r_op} on {r_target}) has waited {} min without a decision.",
            r.age(now) / 60
        ),
        "auto-approved" => format!(
            "Access request from {who}: {r_op} on {r_target} auto-approved by rule {rule} for {mins} min."
        ),
        "approved" | "denied" => format!(
            "Access request from {who}: {r_op} on {r_target} was {event} by {decided_by}{}",
            if comment.is_empty() {
                String::new()
            } else {
                format!(" ({comment})")
            }
        ),
        "expired" => {
            format!("Access request from {who}: {r_op} on {r_target} expired without a decision.")
        }
        other => format!(
            "Access request from {who}: {r_op} on {r_target}: {}.",
            chat_escape(other)
        ),
    };
    if !cfg.ui_base_url.is_empty() && matches!(event, "requested" | "escalated") {
        text.push_str(&format!(
            " Decide at {}/ui/approvals",
            chat_escape(&cfg.ui_base_url)
        ));
    }
    let field = |title: &str, value: String, short: bool| json!({"title": title, "value": value, "short": short});
    json!({
        "text": text,
        "mrkdwn": false,
        "attachments": [{
            "fallback": text,
            "mrkdwn_in": [],
            "color": match event {
                "approved" | "auto-approved" => "good",
                "denied" | "escalated" => "danger",
                _ => "warning",
            },
            "fields": [
                field("Request", chat_escape(&r.id), false),
                field("Agent", who.clone(), true),
                field("Operation", operation.clone(), true),
                field("Target", target.clone(), false),
                field("Duration", format!("{mins} min"), true),
                field("Approvals", format!("{have}/{need}"), true),
                field("Justification", justification.clone(), false),
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

    #[test]
    fn chat_markup_in_agent_text_is_neutralised() {
        use super::chat_escape;
        assert_eq!(chat_escape("<!channel> hi"), "&lt;!channel&gt; hi");
        assert_eq!(
            chat_escape("<http://evil.example|docs.internal>"),
            "&lt;http://evil.example|docs.internal&gt;"
        );
        assert_eq!(chat_escape("a & b"), "a &amp; b");
        assert_eq!(chat_escape("&lt;"), "&amp;lt;");
        assert_eq!(
            chat_escape("ok\n*APPROVED* by dba\r\n> quote"),
            "ok *APPROVED* by dba  &gt; quote"
        );
        assert_eq!(chat_escape("x\u{2028}y\u{85}z\tw"), "x y z w");
        assert_eq!(chat_escape("plain text"), "plain text");
    }

    #[test]
    fn a_client_that_cannot_be_built_is_an_error_not_a_default_client() {
        assert!(super::http_client("leash/test").is_ok());
        let e = super::http_client("bad\nagent").unwrap_err();
        assert!(matches!(e, crate::ApprovalError::Setup(_)), "{e}");
    }
}
