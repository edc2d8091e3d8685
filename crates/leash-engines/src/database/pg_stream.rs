//! The byte stream leash talks to PostgreSQL over, with a guard on authentication:
//! until the server has accepted the login, every backend message is inspected, and an
//! `AuthenticationCleartextPassword` request (type `R`, code 3) fails the read unless
//! the connection's configuration allows cleartext passwords. The driver answers an
//! authentication request only after reading it, so a refused request means the
//! password is never written to the socket.
//!
//! TLS is negotiated underneath (see `leash_dbtls::pg`), so the guard sees the
//! decrypted messages whatever the `sslmode`.
//!
//! Why: whoever can change a connection's `connection_url` could otherwise point leash
//! at a server they run and have it hand over the stored root password in clear.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Anything leash can speak the PostgreSQL protocol over (TCP or a Unix socket).
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The error text of a refused cleartext request (no secret in it).
pub(super) const CLEARTEXT_REFUSED: &str = "the server asked for the password in cleartext (AuthenticationCleartextPassword); refused because allow_cleartext_password is false";

/// Where the startup phase of the backend stream is.
#[derive(Debug, Default)]
struct Scan {
    /// Header bytes of the message being read (type + 4-byte length).
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current message still to come.
    body_left: usize,
    /// The first body bytes of an `R` message (its authentication code).
    code: [u8; 4],
    code_len: usize,
    /// The login is over (AuthenticationOk or ReadyForQuery seen): stop looking.
    done: bool,
}

impl Scan {
    /// Feeds backend bytes; `Err` when the server asks for a refused authentication.
    fn feed(&mut self, mut bytes: &[u8], allow_cleartext: bool) -> io::Result<()> {
        while !bytes.is_empty() && !self.done {
            if self.header_len < 5 {
                let n = (5 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == 5 {
                    let len = u32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]);
                    self.body_left = usize::try_from(len).unwrap_or(usize::MAX).saturating_sub(4);
                    self.code_len = 0;
                    if self.header[0] == b'Z' {
                        self.done = true;
                    }
                    if self.body_left == 0 {
                        self.header_len = 0;
                    }
                }
                continue;
            }
            let n = self.body_left.min(bytes.len());
            if self.header[0] == b'R' && self.code_len < 4 {
                let take = (4 - self.code_len).min(n);
                self.code[self.code_len..self.code_len + take].copy_from_slice(&bytes[..take]);
                self.code_len += take;
                if self.code_len == 4 {
                    match u32::from_be_bytes(self.code) {
                        0 => self.done = true,
                        3 if !allow_cleartext => {
                            return Err(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                CLEARTEXT_REFUSED,
                            ));
                        }
                        _ => {}
                    }
                }
            }
            self.body_left -= n;
            bytes = &bytes[n..];
            if self.body_left == 0 {
                self.header_len = 0;
            }
        }
        Ok(())
    }
}

/// A stream whose reads are checked by [`Scan`] during the login.
pub(super) struct Guarded {
    inner: Box<dyn Io>,
    scan: Scan,
    allow_cleartext: bool,
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if !this.scan.done {
                    let allow = this.allow_cleartext;
                    if let Err(e) = this.scan.feed(&buf.filled()[before..], allow) {
                        // Hand the driver nothing of the refused request.
                        buf.set_filled(before);
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Opens a socket to the first of `config`'s hosts that answers within its connect
/// timeout, negotiates TLS as `tls` says (`leash_dbtls`), and wraps the resulting
/// stream — decrypted, so the guard reads the real messages — in the authentication
/// guard.
pub(super) async fn open(
    config: &tokio_postgres::Config,
    tls: &leash_dbtls::pg::PgTls,
    allow_cleartext: bool,
) -> Result<Guarded, leash_dbtls::DbTlsError> {
    let stream = leash_dbtls::pg::open(config, tls).await?;
    Ok(Guarded {
        inner: Box::new(stream),
        scan: Scan::default(),
        allow_cleartext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn cleartext_request_is_refused_even_split_byte_by_byte() {
        let m = msg(b'R', &3u32.to_be_bytes());
        let mut scan = Scan::default();
        let mut refused = false;
        for b in &m {
            if scan.feed(std::slice::from_ref(b), false).is_err() {
                refused = true;
            }
        }
        assert!(refused);
        assert!(Scan::default().feed(&m, true).is_ok());
    }

    #[test]
    fn scram_and_md5_pass_and_scanning_stops_after_login() {
        let mut scan = Scan::default();
        let mut stream = msg(
            b'R',
            &[&10u32.to_be_bytes()[..], b"SCRAM-SHA-256\0\0"].concat(),
        );
        stream.extend(msg(b'R', &0u32.to_be_bytes()));
        // After AuthenticationOk nothing is inspected, even bytes that look like a request.
        stream.extend(msg(b'R', &3u32.to_be_bytes()));
        assert!(scan.feed(&stream, false).is_ok());
        assert!(scan.done);
        let mut scan = Scan::default();
        assert!(
            scan.feed(
                &msg(b'R', &[&5u32.to_be_bytes()[..], b"salt"].concat()),
                false
            )
            .is_ok()
        );
    }
}
