//! `sys/leaks/scan`: leak response. Finds leash credentials in a piece of text (a log, a
//! prompt, a commit), revokes each live one at once, and says what it found.
//!
//! * **Tokens** are recognised offline by their format ([`leash_types::token::recognise`]:
//!   prefix, length, alphabet and checksum), then looked up; a live one is revoked with
//!   its subtree.
//! * **Database credentials** are recognised by the usernames leash generates
//!   (`v-<display>-<role>-<random>-<unix>`); each candidate is compared with the
//!   usernames of the live leases of every `database` mount.
//!
//! Each live credential found gets an `agent.credential.leaked` event, then its
//! `revoked` event with reason `leak` (children of a token: `parent revoked`), and
//! counts in `leash_leaks_detected_total{kind}`. The answer never echoes the secret: a
//! token is named by its accessor HMAC'd with the first audit device's key (as in that
//! device's log), a lease by its id (not a secret, as in the audit log).
//!
//! With `contain = true`, each leaking identity (the entity of a leaked token, or of the
//! token a leaked database credential was issued to) is also run through the kill switch
//! (`containment::run`): locked, and everything else it holds revoked; `contained`
//! lists what that ended per entity.
//!
//! Not here: routing and the `sudo` requirement (`sys`), the CLI (`leash scan`).

use std::collections::BTreeSet;
use std::sync::Arc;

use leash_backend::{Caller, CoreError, Response, fields};
use leash_storage::LeaseState;
use leash_types::token::{TokenKind, recognise};
use serde_json::{Map, Value, json};

use crate::Inner;
use crate::events::{self, Event, Kind, reason};
use crate::leases::{self, LeaseEntry, Reason};

/// The largest text accepted (the HTTP body limit applies first).
const MAX_TEXT: usize = 8 << 20;
/// The shortest generated database username (`v-` + parts + 20 random characters).
const MIN_USERNAME: usize = 24;

/// Token candidates in `text`: every `<prefix><alphanumerics>` run that passes the
/// offline format check, once each.
pub(crate) fn token_candidates(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kind in TokenKind::ALL {
        let prefix = kind.prefix();
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let after = &rest[at + prefix.len()..];
            let len = after.bytes().take_while(u8::is_ascii_alphanumeric).count();
            let candidate = &rest[at..at + prefix.len() + len];
            if recognise(candidate).is_some() {
                out.insert(candidate.to_owned());
            }
            rest = after;
        }
    }
    out
}

/// Database username candidates in `text`: words of `[a-z0-9_-]` that start with `v-`
/// and are long enough to be generated ones.
pub(crate) fn username_candidates(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
        .filter(|w| w.starts_with("v-") && w.len() >= MIN_USERNAME)
        .map(str::to_owned)
        .collect()
}

/// `PUT sys/leaks/scan {"text": …}`.
pub(crate) async fn scan(
    inner: &Arc<Inner>,
    data: &Map<String, Value>,
    caller: Option<&Caller>,
) -> Result<Response, CoreError> {
    let text = fields::string(data, "text")?
        .ok_or_else(|| CoreError::invalid("missing required field \"text\" (the text to scan)"))?;
    if text.len() > MAX_TEXT {
        return Err(CoreError::invalid(format!(
            "\"text\" is {} bytes; at most {MAX_TEXT} can be scanned at once",
            text.len()
        )));
    }
    let contain = fields::boolean(data, "contain")?.unwrap_or(false);
    // Entities of the leaking agents (for `contain`), in order found.
    let mut leakers: Vec<String> = Vec::new();
    let mut found: Vec<Value> = Vec::new();
    let now = inner.clock.unix();
    let device = inner.audit.list().into_iter().next().map(|d| d.path);
    let hmac = |accessor: &str| match &device {
        Some(path) => inner
            .audit
            .hash(path, accessor)
            .map_or(Value::Null, Value::String),
        None => Value::Null,
    };

    // Tokens.
    let tokens = token_candidates(&text);
    let mut stale_tokens = 0usize;
    for t in &tokens {
        let Some((hash, entry, _)) = inner.tokens.lookup(t).await? else {
            stale_tokens += 1;
            continue;
        };
        if !entry.entity_id.is_empty() && !leakers.contains(&entry.entity_id) {
            leakers.push(entry.entity_id.clone());
        }
        let mut leaked = Event::token(Kind::Leaked, &entry, now);
        leaked.reason = Some(reason::LEAK);
        events::emit(inner, &[leaked], false).await?;
        inner.telemetry.leak_detected("token");
        let revoked = match inner.tokens.revoke(hash, false).await {
            Ok(gone) => {
                let mut evs = Vec::with_capacity(gone.len());
                for e in &gone {
                    let mut ev = Event::token(Kind::Revoked, e, now);
                    ev.ttl_seconds = 0;
                    ev.reason = Some(if e.accessor == entry.accessor {
                        reason::LEAK
                    } else {
                        reason::PARENT_REVOKED
                    });
                    evs.push(ev);
                }
                events::emit_logged(inner, &evs, false).await;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "a leaked token could not be revoked");
                false
            }
        };
        found.push(json!({
            "kind": "token",
            "accessor": hmac(&entry.accessor),
            "policies": entry.policies,
            "live": true,
            "revoked": revoked,
        }));
    }

    // Database credentials.
    let names = username_candidates(&text);
    let mut stale_usernames = names.len();
    if !names.is_empty() {
        let mut hits: Vec<(String, LeaseEntry)> = Vec::new();
        let mounts: Vec<String> = inner
            .router()
            .all()
            .filter(|m| m.entry.kind == "database")
            .map(|m| m.entry.path.clone())
            .collect();
        for mount in mounts {
            for id in inner.storage.lease_ids_with_prefix(&mount).await? {
                let Some(l) = inner.storage.lease_get(&id).await? else {
                    continue;
                };
                if l.state != LeaseState::Active {
                    continue;
                }
                let Ok(e) = LeaseEntry::decode(&l) else {
                    continue;
                };
                let user = e.internal.get("username").and_then(Value::as_str);
                if user.is_some_and(|u| names.contains(u)) {
                    hits.push((id, e));
                }
            }
        }
        stale_usernames -= hits.len().min(stale_usernames);
        let ids: Vec<String> = hits.iter().map(|(id, _)| id.clone()).collect();
        let evs: Vec<Event> = hits
            .iter()
            .map(|(id, e)| e.event(id, Kind::Leaked, 0, Some(reason::LEAK)))
            .collect();
        events::emit(inner, &evs, false).await?;
        for (_, e) in &hits {
            if let Some(i) = &e.issued
                && !i.agent.entity_id.is_empty()
                && !leakers.contains(&i.agent.entity_id)
            {
                leakers.push(i.agent.entity_id.clone());
            }
            let (engine, role) = e.metric_labels();
            inner.telemetry.leak_detected("database");
            tracing::warn!(
                engine,
                role,
                "leaked database credential found; revoking it"
            );
        }
        let outcome = leases::revoke_ids_because(inner, &ids, Reason::Leak).await?;
        for (id, e) in &hits {
            let failed = outcome.failed.iter().any(|(f, _)| f == id);
            found.push(json!({
                "kind": "database",
                "lease_id": id,
                "scope": e.internal.get("role"),
                "live": true,
                "revoked": !failed,
            }));
        }
    }

    // `contain`: the leaking identities are locked and everything else they hold ends.
    let mut contained: Vec<Value> = Vec::new();
    if contain {
        for entity_id in leakers {
            let sel = crate::containment::Selector::Entity { entity_id };
            let why = "leak: a credential of this agent was found by sys/leaks/scan";
            contained.push(crate::containment::run(inner, &sel, why, caller).await?);
        }
    }
    let live = found.len();
    if live > 0 {
        tracing::warn!(
            live,
            scanner = caller.map_or("", |c| c.entry.display_name.as_str()),
            "leak scan found live credentials and revoked them"
        );
    }
    Ok(Response::data(json!({
        "found": found,
        "live": live,
        "not_live": {
            "tokens": stale_tokens,
            "database_usernames": stale_usernames,
        },
        "hmac_device": device,
        "contained": contained,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leash_types::token::TokenValue;

    #[test]
    fn tokens_are_found_by_format_only() {
        let t = TokenValue::generate(TokenKind::Service);
        let t = t.expose();
        let text = format!("export VAULT_TOKEN={t}\nretry with \"{t}\" lsh.notatoken lsh.");
        let found = token_candidates(&text);
        assert_eq!(found.into_iter().collect::<Vec<_>>(), vec![t.to_owned()]);
        // One changed character breaks the checksum.
        let mut bad = t.to_owned();
        let last = bad.pop().unwrap();
        bad.push(if last == 'a' { 'b' } else { 'a' });
        assert!(token_candidates(&bad).is_empty());
        // Glued to more alphanumerics, it is not the token.
        assert!(token_candidates(&format!("{t}x")).is_empty());
    }

    #[test]
    fn usernames_are_generated_looking_words() {
        let text = "FATAL: password authentication failed for user \"v-approle-ro-abcdefghij0123456789-1700000000\" \
                    v-short vault v-x";
        let found = username_candidates(text);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec!["v-approle-ro-abcdefghij0123456789-1700000000".to_owned()]
        );
    }
}
