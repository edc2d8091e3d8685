//! Exec mode's redaction, on the runner's side: the values the filter looks for (kept
//! up to date after each render), and what a match does (`report_leaks`): the leaked
//! credential is revoked and a new one issued, so the value is dead even if it escaped
//! by another route than the child's output.

use zeroize::Zeroizing;

use super::Agent;
use crate::redact::{Origin, Patterns, secret_values};

/// Most values remembered for redaction (current and replaced ones: a child that is not
/// restarted may still print a replaced credential).
const MAX_VALUES: usize = 1024;
/// Shortest time between two leak responses for one secret: a child that prints its
/// credential at every start would otherwise have it re-issued (and be restarted) in a
/// loop. Its output is redacted all the same.
pub(super) const MIN_REISSUE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Agent {
    /// Rebuilds the filter's patterns from the secrets held and the agent's token, plus
    /// values seen before (newest kept, at most [`MAX_VALUES`]).
    pub(super) fn update_patterns(&mut self) {
        let Some(r) = &self.redaction else { return };
        let mut now: Vec<(Zeroizing<String>, Origin)> = Vec::new();
        for (key, h) in &self.held {
            secret_values(key, &h.lease_id, &h.data.0, &mut now);
        }
        if let Some(t) = self.token.as_ref().and_then(|t| t.client.token()) {
            use leash_client::ExposeSecret as _;
            now.push((
                Zeroizing::new(t.expose_secret().to_owned()),
                Origin::AgentToken {
                    generation: self.token_generation,
                },
            ));
        }
        // Current values win over what an older credential had.
        self.redact_values
            .retain(|(v, _)| !now.iter().any(|(n, _)| n.as_str() == v.as_str()));
        self.redact_values.extend(now);
        if self.redact_values.len() > MAX_VALUES {
            let extra = self.redact_values.len() - MAX_VALUES;
            self.redact_values.drain(..extra);
        }
        let p = Patterns::new(self.redact_values.clone());
        match r.patterns.write() {
            Ok(mut g) => *g = std::sync::Arc::new(p),
            Err(e) => *e.into_inner() = std::sync::Arc::new(p),
        }
    }

    /// A credential appeared in the child's output: revoke it and issue a new one.
    pub(super) async fn on_leak(&mut self, o: Origin) {
        let now = leash_types::Clock::now(&leash_types::SystemClock);
        match o {
            Origin::Secret {
                request,
                kind,
                lease_id,
            } => {
                let Some(h) = self.held.get_mut(&request) else {
                    return;
                };
                if lease_id.is_empty() {
                    if !self.leaks_warned.contains(&request) {
                        tracing::warn!(
                            secret = %h.req.path,
                            kind = %kind,
                            "a static secret appeared in the child's output (redacted); it has no lease, so rotate it where it is stored"
                        );
                        self.leaks_warned.push(request);
                    }
                    return;
                }
                if h.lease_id != lease_id || h.lease_gone {
                    // Already replaced: the value is dead.
                    return;
                }
                if let Some(last) = self.leak_responses.get(&request)
                    && now.duration_since(*last).unwrap_or_default() < MIN_REISSUE_INTERVAL
                {
                    tracing::warn!(
                        secret = %h.req.path,
                        kind = %kind,
                        "the re-issued credential appeared in the child's output again (redacted); not re-issuing it again so soon — the child prints its credentials"
                    );
                    return;
                }
                self.leak_responses.insert(request.clone(), now);
                tracing::warn!(
                    secret = %h.req.path,
                    lease = %lease_id,
                    kind = %kind,
                    "a credential appeared in the child's output (redacted); revoking it and issuing a new one"
                );
                h.rotate = true;
                h.lease_gone = true;
                h.next = now;
                self.to_revoke.push((lease_id, now, 0));
            }
            Origin::AgentToken { generation } => {
                if generation != self.token_generation || self.token.is_none() {
                    return;
                }
                tracing::warn!(
                    "the agent's token appeared in the child's output (redacted); logging in again and revoking it"
                );
                let before = self.old_tokens.len();
                if let Err(e) = self.reauthenticate(true).await {
                    tracing::error!(error = %e, "logging in again after a leak failed");
                }
                for t in self.old_tokens.iter_mut().skip(before) {
                    t.1 = now;
                }
            }
            Origin::TokenFormat => {
                tracing::warn!(
                    "a leash token not issued to this agent appeared in the child's output (redacted); \
                     run `leash scan` on the output's source to revoke it"
                );
            }
        }
    }
}
