//! Redaction of the exec child's own output. With `exec { redact { enabled = true } }`
//! (the default), the child's stdout and stderr are pipes read by the agent: every live
//! credential value the agent rendered — any string of at least [`MIN_SECRET`] bytes in
//! the data of a secret its templates use (passwords, keys, tokens; not usernames),
//! the agent's own token — and anything in the leash token format is replaced by
//! `[REDACTED:<kind>]` before it reaches the agent's stdout and stderr.
//!
//! * **Line-buffered**: complete lines are written as they come; a partial line is
//!   written after [`PARTIAL_DELAY`] without more output, except a tail that could be
//!   the start of a secret, which waits for the next write (a match split across two
//!   writes is still found) for at most [`HOLD_MAX`].
//! * **Binary-safe**: bytes are matched as bytes; non-UTF-8 output passes unchanged.
//! * **Matches are reported** (kind and which secret, never the value) so the runner can
//!   revoke and re-issue the credential (`report_leaks`).
//!
//! Cost: one Aho-Corasick pass over the output (the patterns are the secret values
//! plus the token prefixes); see `scripts/bench-redact` for the throughput.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aho_corasick::{AhoCorasick, MatchKind};
use leash_types::token::{TokenKind, recognise};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;
use zeroize::Zeroizing;

/// Shortest value treated as a secret (shorter ones would redact ordinary words).
pub const MIN_SECRET: usize = 8;
/// How long a partial line (no newline yet) waits for more output before it is written.
pub const PARTIAL_DELAY: Duration = Duration::from_millis(50);
/// Longest a tail that could start a secret is held back waiting for the rest.
pub const HOLD_MAX: Duration = Duration::from_secs(1);
/// A partial line longer than this is filtered and written without waiting for its end.
const MAX_LINE: usize = 64 * 1024;
/// Keys whose values are identifiers, not secrets (a leaked user name is not a leak).
const NOT_SECRET: &[&str] = &["username", "user", "lease_id", "lease_duration", "ttl"];

/// What a secret value is, for `[REDACTED:<kind>]` and for the leak report.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A value in the data of the secret with this request key (`kind` is its key).
    Secret {
        /// `SecretRequest::key` of the secret.
        request: String,
        /// The data key (`password`).
        kind: String,
        /// The lease the value came with (`""` for a secret without a lease).
        lease_id: String,
    },
    /// The agent's own token (of the `generation`-th login).
    AgentToken {
        /// Which login issued it.
        generation: u64,
    },
    /// Something in the leash token format that is not the agent's token.
    TokenFormat,
}

impl Origin {
    fn label(&self) -> &str {
        match self {
            Origin::Secret { kind, .. } => kind,
            Origin::AgentToken { .. } | Origin::TokenFormat => "token",
        }
    }
}

/// The values to redact. Built by the runner after each render; the filters read the
/// newest set before each chunk.
pub struct Patterns {
    ac: Option<AhoCorasick>,
    /// Per pattern id: what it is (`None`: a token-format prefix).
    origins: Vec<Option<Origin>>,
    /// The patterns themselves (for the held-back tail check).
    values: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns")
            .field("count", &self.values.len())
            .finish()
    }
}

impl Patterns {
    /// Patterns for `secrets` (value, origin); values shorter than [`MIN_SECRET`] are
    /// skipped. The token prefixes are always searched.
    pub fn new(secrets: Vec<(Zeroizing<String>, Origin)>) -> Patterns {
        let mut values: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut origins = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (v, o) in secrets {
            if v.len() < MIN_SECRET || v.contains('\n') || !seen.insert(v.as_bytes().to_vec()) {
                continue;
            }
            values.push(Zeroizing::new(v.as_bytes().to_vec()));
            origins.push(Some(o));
        }
        for k in TokenKind::ALL {
            values.push(Zeroizing::new(k.prefix().as_bytes().to_vec()));
            origins.push(None);
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(values.iter().map(|v| v.as_slice()))
            .map_err(|e| {
                // Not with these few short patterns; logged (without them) if ever.
                tracing::error!(error = %e, "building the redaction patterns failed");
            })
            .ok();
        Patterns {
            ac,
            origins,
            values,
        }
    }

    /// Copies `input` to `out` with every match replaced; reports each match.
    pub fn redact(&self, input: &[u8], out: &mut Vec<u8>, hits: &mut Vec<Origin>) {
        let mut at = 0;
        let Some(ac) = &self.ac else {
            out.extend_from_slice(input);
            return;
        };
        for m in ac.find_iter(input) {
            if m.start() < at {
                continue;
            }
            match &self.origins[m.pattern().as_usize()] {
                Some(o) => {
                    out.extend_from_slice(&input[at..m.start()]);
                    push_label(out, o.label());
                    hits.push(o.clone());
                    at = m.end();
                }
                None => {
                    // A token prefix: the token is the prefix and its alphanumeric run.
                    let run = input[m.end()..]
                        .iter()
                        .take_while(|b| b.is_ascii_alphanumeric())
                        .count();
                    let end = m.end() + run;
                    let candidate = std::str::from_utf8(&input[m.start()..end]).unwrap_or("");
                    if recognise(candidate).is_some() {
                        out.extend_from_slice(&input[at..m.start()]);
                        push_label(out, "token");
                        hits.push(Origin::TokenFormat);
                        at = end;
                    }
                }
            }
        }
        out.extend_from_slice(&input[at..]);
    }

    /// Length of the longest tail of `buf` that could be the start of a secret (a
    /// proper prefix of a value, or a token not yet complete).
    fn risky_tail(&self, buf: &[u8]) -> usize {
        let mut best = 0;
        for (v, o) in self.values.iter().zip(&self.origins) {
            let longest = if o.is_some() {
                v.len() - 1
            } else {
                // A token: its prefix plus any alphanumeric run so far.
                let run = buf
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_alphanumeric())
                    .count();
                let with = run + v.len();
                if with <= buf.len() && buf[buf.len() - with..].starts_with(v) {
                    best = best.max(with);
                }
                v.len() - 1
            };
            for n in (best + 1..=longest.min(buf.len())).rev() {
                if buf[buf.len() - n..] == v[..n] {
                    best = n;
                    break;
                }
            }
        }
        best
    }
}

fn push_label(out: &mut Vec<u8>, kind: &str) {
    out.extend_from_slice(b"[REDACTED:");
    out.extend(
        kind.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')),
    );
    out.push(b']');
}

/// Every secret string in a secret's `data` (nested objects included, KV v2's
/// `data.data` too), except identifiers such as `username`, with its origin.
pub fn secret_values(
    request: &str,
    lease_id: &str,
    data: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(Zeroizing<String>, Origin)>,
) {
    for (k, v) in data {
        match v {
            serde_json::Value::String(s)
                if s.len() >= MIN_SECRET && !NOT_SECRET.contains(&k.as_str()) =>
            {
                out.push((
                    Zeroizing::new(s.clone()),
                    Origin::Secret {
                        request: request.to_owned(),
                        kind: k.clone(),
                        lease_id: lease_id.to_owned(),
                    },
                ));
            }
            serde_json::Value::Object(m) if k != "metadata" => {
                secret_values(request, lease_id, m, out);
            }
            _ => {}
        }
    }
}

/// The shared, replaceable pattern set.
pub type SharedPatterns = Arc<RwLock<Arc<Patterns>>>;

/// A new shared set holding only the token prefixes.
pub fn shared() -> SharedPatterns {
    Arc::new(RwLock::new(Arc::new(Patterns::new(Vec::new()))))
}

fn current(p: &SharedPatterns) -> Arc<Patterns> {
    match p.read() {
        Ok(g) => Arc::clone(&g),
        Err(e) => Arc::clone(&e.into_inner()),
    }
}

/// The state of one stream's filter.
#[derive(Default)]
pub struct Filter {
    pending: Vec<u8>,
}

impl Filter {
    /// Takes `data`; appends to `out` what may be written now (complete lines,
    /// redacted).
    pub fn feed(&mut self, p: &Patterns, data: &[u8], out: &mut Vec<u8>, hits: &mut Vec<Origin>) {
        self.pending.extend_from_slice(data);
        let upto = match self.pending.iter().rposition(|&b| b == b'\n') {
            Some(nl) => nl + 1,
            None if self.pending.len() > MAX_LINE => {
                self.pending.len() - p.risky_tail(&self.pending)
            }
            None => return,
        };
        p.redact(&self.pending[..upto], out, hits);
        self.pending.drain(..upto);
    }

    /// After [`PARTIAL_DELAY`] without output: writes the partial line except a tail
    /// that could start a secret (everything with `all`). Returns whether anything is
    /// still held back.
    pub fn flush(
        &mut self,
        p: &Patterns,
        all: bool,
        out: &mut Vec<u8>,
        hits: &mut Vec<Origin>,
    ) -> bool {
        let keep = if all { 0 } else { p.risky_tail(&self.pending) };
        let upto = self.pending.len() - keep;
        if upto > 0 {
            p.redact(&self.pending[..upto], out, hits);
            self.pending.drain(..upto);
        }
        !self.pending.is_empty()
    }
}

/// Copies `from` to `to` through a [`Filter`] until `from` ends; each match is sent on
/// `report`. Write errors end the copy (the reader is then drained and dropped so the
/// child does not block on a full pipe).
pub async fn pump<R, W>(
    mut from: R,
    mut to: W,
    patterns: SharedPatterns,
    report: Option<UnboundedSender<Origin>>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut filter = Filter::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = Vec::with_capacity(320 * 1024);
    let mut hits = Vec::new();
    let mut held_since: Option<tokio::time::Instant> = None;
    let mut writable = true;
    loop {
        let waiting = !filter.pending.is_empty();
        let delay = match held_since {
            Some(t) => (t + HOLD_MAX).saturating_duration_since(tokio::time::Instant::now()),
            None => PARTIAL_DELAY,
        };
        let read = tokio::select! {
            r = from.read(&mut buf) => Some(r),
            _ = tokio::time::sleep(delay), if waiting => None,
        };
        let p = current(&patterns);
        let eof = match read {
            Some(Ok(0)) | Some(Err(_)) => {
                filter.flush(&p, true, &mut out, &mut hits);
                true
            }
            Some(Ok(n)) => {
                filter.feed(&p, &buf[..n], &mut out, &mut hits);
                if filter.pending.is_empty() {
                    held_since = None;
                }
                false
            }
            None => {
                let all = held_since.is_some_and(|t| t.elapsed() >= HOLD_MAX);
                if filter.flush(&p, all, &mut out, &mut hits) {
                    held_since.get_or_insert_with(tokio::time::Instant::now);
                } else {
                    held_since = None;
                }
                false
            }
        };
        if !out.is_empty() {
            if writable && (to.write_all(&out).await.is_err() || to.flush().await.is_err()) {
                writable = false;
            }
            out.clear();
        }
        if let Some(r) = &report {
            for h in hits.drain(..) {
                let _ = r.send(h);
            }
        } else {
            hits.clear();
        }
        if eof {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leash_types::token::TokenValue;

    fn pats() -> Patterns {
        Patterns::new(vec![
            (
                Zeroizing::new("s3cret-Pa55word".to_owned()),
                Origin::Secret {
                    request: "database/creds/ro".into(),
                    kind: "password".into(),
                    lease_id: "database/creds/ro/abc".into(),
                },
            ),
            (
                Zeroizing::new("short".to_owned()),
                Origin::Secret {
                    request: "x".into(),
                    kind: "password".into(),
                    lease_id: String::new(),
                },
            ),
        ])
    }

    fn run(p: &Patterns, writes: &[&[u8]]) -> (Vec<u8>, Vec<Origin>) {
        let mut f = Filter::default();
        let (mut out, mut hits) = (Vec::new(), Vec::new());
        for w in writes {
            f.feed(p, w, &mut out, &mut hits);
        }
        f.flush(p, true, &mut out, &mut hits);
        (out, hits)
    }

    #[test]
    fn secrets_and_tokens_are_replaced_and_reported() {
        let p = pats();
        let t = TokenValue::generate(TokenKind::Service);
        let line = format!("connecting with s3cret-Pa55word and {} short\n", t.expose());
        let (out, hits) = run(&p, &[line.as_bytes()]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "connecting with [REDACTED:password] and [REDACTED:token] short\n"
        );
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[1], Origin::TokenFormat);
        // Something that only looks like a token passes.
        let (out, hits) = run(&p, &[b"lsh.notatoken\n"]);
        assert_eq!(out, b"lsh.notatoken\n");
        assert!(hits.is_empty());
    }

    #[test]
    fn a_match_split_across_writes_is_found_and_binary_passes() {
        let p = pats();
        let (out, hits) = run(&p, &[b"\xff\xfe pw=s3cret-P", b"a55word \x00\n"]);
        assert_eq!(out, b"\xff\xfe pw=[REDACTED:password] \x00\n");
        assert_eq!(hits.len(), 1);
        // A partial line is flushed except the tail that could start the secret.
        let mut f = Filter::default();
        let (mut out, mut hits) = (Vec::new(), Vec::new());
        f.feed(&p, b"progress 50% s3cr", &mut out, &mut hits);
        assert!(out.is_empty(), "no newline yet");
        assert!(f.flush(&p, false, &mut out, &mut hits), "tail held");
        assert_eq!(out, b"progress 50% ");
        f.feed(&p, b"et-Pa55word!", &mut out, &mut hits);
        f.flush(&p, false, &mut out, &mut hits);
        assert_eq!(out, b"progress 50% [REDACTED:password]!");
        // A token split in two writes.
        let t = TokenValue::generate(TokenKind::Service);
        let (a, b) = t.expose().as_bytes().split_at(9);
        let mut f = Filter::default();
        let mut out = Vec::new();
        f.feed(&p, a, &mut out, &mut hits);
        assert!(f.flush(&p, false, &mut out, &mut hits));
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        f.feed(&p, b, &mut out, &mut hits);
        f.flush(&p, true, &mut out, &mut hits);
        assert_eq!(out, b"[REDACTED:token]");
    }

    #[tokio::test]
    async fn pump_writes_partial_lines_after_the_delay() {
        let patterns = shared();
        *patterns.write().unwrap() = Arc::new(pats());
        let (mut w, r) = tokio::io::duplex(1024);
        let (out_w, mut out_r) = tokio::io::duplex(1024);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(pump(r, out_w, patterns, Some(tx)));
        w.write_all(b"prompt> ").await.unwrap();
        let mut got = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), out_r.read(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..n], b"prompt> ");
        w.write_all(b"s3cret-Pa55word\n").await.unwrap();
        drop(w);
        let mut rest = Vec::new();
        out_r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"[REDACTED:password]\n");
        task.await.unwrap();
        assert!(matches!(rx.recv().await, Some(Origin::Secret { .. })));
    }
}
