//! Scanning a streamed response for the injected credential: every occurrence of any
//! needle is replaced with `[REDACTED]`, across chunk boundaries, holding back at most
//! the longest needle's length minus one byte between chunks (never the whole body).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use zeroize::Zeroizing;

/// What replaces a credential.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// A streaming scanner for a fixed set of needles.
pub struct Redactor {
    needles: Arc<Vec<Zeroizing<Vec<u8>>>>,
    max: usize,
    carry: BytesMut,
    /// Credentials replaced so far.
    pub found: u64,
}

impl Redactor {
    /// A scanner for `needles` (empty ones are ignored).
    pub fn new(needles: Arc<Vec<Zeroizing<Vec<u8>>>>) -> Redactor {
        let max = needles.iter().map(|n| n.len()).max().unwrap_or(0);
        Redactor {
            needles,
            max,
            carry: BytesMut::new(),
            found: 0,
        }
    }

    /// The leftmost (then longest) needle at or after `from`.
    fn next_match(&self, buf: &[u8], from: usize) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for n in self.needles.iter().filter(|n| !n.is_empty()) {
            if let Some(i) = memchr::memmem::find(&buf[from..], n) {
                let at = from + i;
                best = match best {
                    Some((b, l)) if b < at || (b == at && l >= n.len()) => Some((b, l)),
                    _ => Some((at, n.len())),
                };
            }
        }
        best
    }

    /// The length of the longest end of `tail` that is the start of a needle (so may
    /// become one with the next chunk).
    fn partial_at_end(&self, tail: &[u8]) -> usize {
        let mut best = 0;
        for n in self.needles.iter() {
            let most = n.len().saturating_sub(1).min(tail.len());
            for l in (best + 1..=most).rev() {
                if tail.ends_with(&n[..l]) {
                    best = l;
                    break;
                }
            }
        }
        best
    }

    /// As [`Redactor::feed`], but a chunk with nothing to replace or hold back (the usual
    /// case) is passed on as it is, without copying.
    pub fn feed_bytes(&mut self, chunk: Bytes, last: bool) -> Bytes {
        if self.carry.is_empty()
            && (self.max == 0
                || (self.next_match(&chunk, 0).is_none()
                    && (last || self.partial_at_end(&chunk) == 0)))
        {
            return chunk;
        }
        self.feed(&chunk, last)
    }

    /// Scans `chunk`; returns what can be passed on now. Only an end of the input that
    /// could be the start of a credential is held back (so a stream of small events —
    /// SSE — flows as it comes); `last`: no more input, flush.
    pub fn feed(&mut self, chunk: &[u8], last: bool) -> Bytes {
        if self.max == 0 {
            let mut out = std::mem::take(&mut self.carry);
            out.extend_from_slice(chunk);
            return out.freeze();
        }
        self.carry.extend_from_slice(chunk);
        let buf = std::mem::take(&mut self.carry);
        let mut out = BytesMut::with_capacity(buf.len());
        let mut pos = 0;
        while let Some((at, len)) = self.next_match(&buf, pos) {
            out.extend_from_slice(&buf[pos..at]);
            out.extend_from_slice(REDACTED);
            self.found += 1;
            pos = at + len;
        }
        let keep = if last {
            0
        } else {
            self.partial_at_end(&buf[pos..])
        };
        let end = buf.len() - keep;
        out.extend_from_slice(&buf[pos..end]);
        self.carry.extend_from_slice(&buf[end..]);
        out.freeze()
    }
}

/// A response body passed through a [`Redactor`], with something (a connection permit,
/// a metrics guard) kept alive until the body is done.
pub struct RedactedBody<B, G> {
    inner: B,
    redactor: Redactor,
    done: bool,
    on_found: Option<Box<dyn Fn(u64) + Send + Sync>>,
    _guard: G,
}

impl<B, G> RedactedBody<B, G> {
    /// Wraps `inner`; `on_found` is told how many credentials were replaced, at the end.
    pub fn new(
        inner: B,
        needles: Arc<Vec<Zeroizing<Vec<u8>>>>,
        guard: G,
        on_found: Option<Box<dyn Fn(u64) + Send + Sync>>,
    ) -> Self {
        RedactedBody {
            inner,
            redactor: Redactor::new(needles),
            done: false,
            on_found,
            _guard: guard,
        }
    }

    fn finish(&mut self) -> Bytes {
        self.done = true;
        let out = self.redactor.feed(&[], true);
        if let Some(f) = self.on_found.take()
            && self.redactor.found > 0
        {
            f(self.redactor.found);
        }
        out
    }
}

impl<B, G> Body for RedactedBody<B, G>
where
    B: Body<Data = Bytes> + Unpin,
    G: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    let rest = this.finish();
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.redactor.feed_bytes(data, false);
                        if out.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    // Trailers: flush what is held first would reorder; trailers are
                    // dropped (hop-by-hop in practice for HTTP/1.1 chunked).
                    Err(_) => continue,
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(needles: &[&str], chunks: &[&str]) -> String {
        let n: Arc<Vec<Zeroizing<Vec<u8>>>> = Arc::new(
            needles
                .iter()
                .map(|s| Zeroizing::new(s.as_bytes().to_vec()))
                .collect(),
        );
        let mut r = Redactor::new(n.clone());
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&r.feed(c.as_bytes(), false));
        }
        out.extend_from_slice(&r.feed(&[], true));
        // The copy-free entry point gives the same answer.
        let mut r = Redactor::new(n);
        let mut out2 = Vec::new();
        for c in chunks {
            out2.extend_from_slice(&r.feed_bytes(Bytes::copy_from_slice(c.as_bytes()), false));
        }
        out2.extend_from_slice(&r.feed_bytes(Bytes::new(), true));
        assert_eq!(out, out2, "feed_bytes differs from feed for {chunks:?}");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn replaces_within_and_across_chunks() {
        assert_eq!(run(&["s3cret"], &["a s3cret b"]), "a [REDACTED] b");
        assert_eq!(
            run(&["s3cret"], &["a s3", "cr", "et b s3cret"]),
            "a [REDACTED] b [REDACTED]"
        );
        assert_eq!(
            run(&["s3cret"], &["s", "3", "c", "r", "e", "t"]),
            "[REDACTED]"
        );
        assert_eq!(run(&["s3cret"], &["s3cre"]), "s3cre");
        assert_eq!(
            run(&["s3cret", "Bearer s3cret"], &["Bearer s3cret."]),
            "[REDACTED]."
        );
        assert_eq!(run(&[], &["a", "b"]), "ab");
        assert_eq!(run(&["aa"], &["aaa"]), "[REDACTED]a");
    }

    #[test]
    fn holds_back_only_what_could_start_a_credential() {
        let n = Arc::new(vec![Zeroizing::new(b"s3cret-token".to_vec())]);
        let mut r = Redactor::new(n);
        let big = vec![b'x'; 100_000];
        assert_eq!(r.feed(&big, false).len(), 100_000);
        assert_eq!(&r.feed(b"data: one\n\n", false)[..], b"data: one\n\n");
        assert_eq!(&r.feed(b"a s3c", false)[..], b"a ");
        assert_eq!(&r.feed(b"ret-token!", false)[..], b"[REDACTED]!");
        assert_eq!(&r.feed(b"s3", false)[..], b"");
        assert_eq!(&r.feed(b"x", false)[..], b"s3x");
        assert_eq!(&r.feed(b"s3cr", true)[..], b"s3cr");
    }

    #[test]
    fn a_clean_chunk_is_passed_on_without_copying() {
        let n = Arc::new(vec![Zeroizing::new(b"s3cret-token".to_vec())]);
        let mut r = Redactor::new(n);
        let clean = Bytes::from_static(b"{\"ok\":true}");
        assert_eq!(r.feed_bytes(clean.clone(), false).as_ptr(), clean.as_ptr());
        assert_eq!(r.feed_bytes(clean.clone(), true).as_ptr(), clean.as_ptr());
        // A chunk ending in a needle's start is held back, then joined.
        assert_eq!(
            &r.feed_bytes(Bytes::from_static(b"a s3c"), false)[..],
            b"a "
        );
        assert_eq!(
            &r.feed_bytes(Bytes::from_static(b"ret-token"), true)[..],
            b"[REDACTED]"
        );
    }
}
