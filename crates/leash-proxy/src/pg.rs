//! `proxy "postgres"`: the agent connects without the real password; the proxy
//! authenticates to PostgreSQL with the current leased credential and then relays the
//! session byte for byte.
//!
//! Startup, client side: an `SSLRequest`/`GSSENCRequest` is answered `N` (the listener
//! is loopback, plain TCP), a `CancelRequest` is dropped, and the `StartupMessage`'s
//! parameters are kept (its `user` replaced by the leased one). With `local_password`
//! the client must send that password (cleartext request, compared in constant time);
//! without it no password is asked for.
//!
//! Startup, server side: TLS per `tls` (rustls), then cleartext, MD5 or SCRAM-SHA-256
//! (no channel binding) with `postgres-protocol`, the rust-postgres project's protocol
//! crate (tokio-postgres' own): its message parser reads the server's authentication
//! messages and its SCRAM client does the exchange. Once the server says
//! `AuthenticationOk`, the client is told the same and from there bytes are copied
//! both ways unchanged, so every later message (queries, COPY, notifications, the
//! server's `FATAL` when the credential's role is dropped at revocation) passes as the
//! server sent it.
//!
//! Why the client side's few startup messages are framed here rather than with a
//! server-side crate: `pgwire` (the maintained one) is built to *answer* queries — it
//! decodes every message of the session into its handler API — while a relay needs to
//! read exactly one length-prefixed startup packet (and optionally one password
//! message) and then not parse anything. That is about forty lines below, against a
//! dependency tree of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::ProxyError;
use crate::config::{PgProxy, PgTls};
use crate::creds::{Current, Login};
use crate::metrics::{self, Metrics, Use};

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
const PROTOCOL_3: i32 = 196_608;
/// Longest startup packet accepted (PostgreSQL's own limit is 10 000).
const MAX_STARTUP: usize = 10_000;
/// The whole startup (both sides) must finish within this.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Shared by every session.
pub(crate) struct PgState {
    upstream: String,
    secret_key: String,
    local_password: Option<zeroize::Zeroizing<String>>,
    tls: PgTls,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    slots: Arc<Semaphore>,
    creds: watch::Receiver<Arc<Current>>,
    metrics: Arc<Metrics>,
}

impl PgState {
    pub(crate) fn new(
        cfg: &PgProxy,
        creds: watch::Receiver<Arc<Current>>,
        metrics: Arc<Metrics>,
    ) -> Result<PgState, ProxyError> {
        let tls_config = match cfg.tls {
            PgTls::Disable => None,
            _ => Some(Arc::new(crate::http::tls_config(cfg.ca_cert.as_deref())?)),
        };
        Ok(PgState {
            upstream: cfg.upstream.clone(),
            secret_key: cfg.secret.key(),
            local_password: cfg.local_password.as_ref().map(|p| p.0.clone()),
            tls: cfg.tls,
            tls_config,
            slots: Arc::new(Semaphore::new(cfg.max_connections)),
            creds,
            metrics,
        })
    }
}

/// Accepts sessions until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, state: Arc<PgState>) {
    loop {
        let Ok(permit) = state.slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            session(&state, stream, peer).await;
            drop(permit);
        });
    }
}

/// A refusal sent to the client as a PostgreSQL `FATAL` error.
struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

fn error_response(r: &Refusal) -> BytesMut {
    let mut body = BytesMut::new();
    for (t, v) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', r.code),
        (b'M', r.message.as_str()),
    ] {
        body.put_u8(t);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::new();
    out.put_u8(b'E');
    out.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
    out.put_slice(&body);
    out
}

async fn session(state: &PgState, mut client: TcpStream, peer: SocketAddr) {
    let start = tokio::time::timeout(STARTUP_TIMEOUT, startup(state, &mut client)).await;
    let (upstream, lease_id, leftover) = match start {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return,
        Ok(Err(r)) => {
            state.metrics.pg_refused();
            tracing::info!(client = %peer, reason = %r.message, "postgres session refused");
            let _ = client.write_all(&error_response(&r)).await;
            return;
        }
        Err(_) => {
            state.metrics.pg_refused();
            let _ = client
                .write_all(&error_response(&refuse(
                    "08006",
                    "leash proxy: startup timed out",
                )))
                .await;
            return;
        }
    };
    let mut upstream = upstream;
    state.metrics.pg_session(true);
    metrics::used(&Use {
        kind: "postgres",
        upstream: &state.upstream,
        lease_id: &lease_id,
        method: "",
        path: "",
        status: 0,
        trace_id: "",
    });
    // AuthenticationOk to the client, then what the server sent after its own.
    let mut hello = BytesMut::new();
    hello.put_u8(b'R');
    hello.put_i32(8);
    hello.put_i32(0);
    hello.extend_from_slice(&leftover);
    if client.write_all(&hello).await.is_ok() {
        let r = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        tracing::debug!(client = %peer, result = ?r.map_err(|e| e.kind()), "postgres session ended");
    }
    state.metrics.pg_session(false);
}

async fn read_startup_packet(c: &mut TcpStream) -> Result<Option<BytesMut>, Refusal> {
    let len = match c.read_i32().await {
        Ok(l) => l,
        Err(_) => return Ok(None),
    };
    let len = usize::try_from(len).unwrap_or(0);
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(refuse(
            "08P01",
            "leash proxy: invalid startup packet length",
        ));
    }
    let mut body = BytesMut::zeroed(len - 4);
    c.read_exact(&mut body)
        .await
        .map_err(|_| refuse("08P01", "leash proxy: incomplete startup packet"))?;
    Ok(Some(body))
}

/// The client's startup and both authentications. `None`: the client went away or
/// sent a cancel request.
async fn startup(
    state: &PgState,
    client: &mut TcpStream,
) -> Result<Option<(Box<dyn Io>, String, BytesMut)>, Refusal> {
    let mut body = loop {
        let Some(mut b) = read_startup_packet(client).await? else {
            return Ok(None);
        };
        let code = b.get_i32();
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                client
                    .write_all(b"N")
                    .await
                    .map_err(|_| refuse("08006", "leash proxy: client went away"))?;
            }
            CANCEL_REQUEST => return Ok(None),
            PROTOCOL_3 => break b,
            _ => {
                return Err(refuse(
                    "08P01",
                    "leash proxy: unsupported frontend protocol (3.0 only)",
                ));
            }
        }
    };
    let mut params: Vec<(String, String)> = Vec::new();
    let fields: Vec<&[u8]> = body[..].split(|b| *b == 0).collect();
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if k.is_empty() {
            break;
        }
        params.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    body.clear();
    let client_user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| refuse("28000", "leash proxy: no user name in the startup packet"))?;
    if !params.iter().any(|(k, _)| k == "database") {
        params.push(("database".into(), client_user.clone()));
    }
    if let Some(expected) = &state.local_password {
        check_local_password(client, expected).await?;
    }
    let login = state.creds.borrow().logins.get(&state.secret_key).cloned();
    let Some(login) = login else {
        return Err(refuse(
            "08004",
            "leash proxy: the database credential is not available yet (leash has not fetched it); try again",
        ));
    };
    params.retain(|(k, _)| k != "user");
    params.push(("user".into(), login.username.clone()));
    let (up, leftover) = connect_upstream(state, &login, &params).await?;
    Ok(Some((up, login.lease_id.clone(), leftover)))
}

async fn check_local_password(
    client: &mut TcpStream,
    expected: &zeroize::Zeroizing<String>,
) -> Result<(), Refusal> {
    let bad = || {
        refuse(
            "28P01",
            "leash proxy: password authentication failed (local_password)",
        )
    };
    let mut req = BytesMut::new();
    req.put_u8(b'R');
    req.put_i32(8);
    req.put_i32(3);
    client.write_all(&req).await.map_err(|_| bad())?;
    let t = client.read_u8().await.map_err(|_| bad())?;
    let len = client.read_i32().await.map_err(|_| bad())?;
    let len = usize::try_from(len).unwrap_or(0);
    if t != b'p' || !(5..=1024).contains(&len) {
        return Err(bad());
    }
    let mut got = zeroize::Zeroizing::new(vec![0u8; len - 4]);
    client.read_exact(&mut got).await.map_err(|_| bad())?;
    let got = got.strip_suffix(&[0]).unwrap_or(&got);
    use subtle::ConstantTimeEq as _;
    if got.len() == expected.len() && bool::from(got.ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(bad())
    }
}

async fn connect_upstream(
    state: &PgState,
    login: &Login,
    params: &[(String, String)],
) -> Result<(Box<dyn Io>, BytesMut), Refusal> {
    let unreachable = |e: std::io::Error| {
        refuse(
            "08001",
            format!(
                "leash proxy: cannot reach PostgreSQL at {}: {e}",
                state.upstream
            ),
        )
    };
    let mut tcp =
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&state.upstream))
            .await
            .map_err(|_| unreachable(std::io::ErrorKind::TimedOut.into()))?
            .map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let mut up: Box<dyn Io> = match (&state.tls_config, state.tls) {
        (Some(cfg), PgTls::Prefer | PgTls::Require) => {
            let mut b = BytesMut::new();
            frontend::ssl_request(&mut b);
            tcp.write_all(&b).await.map_err(unreachable)?;
            let answer = tcp.read_u8().await.map_err(unreachable)?;
            match (answer, state.tls) {
                (b'S', _) => {
                    let host = state
                        .upstream
                        .rsplit_once(':')
                        .map_or(state.upstream.as_str(), |(h, _)| h)
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned();
                    let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| {
                        refuse(
                            "08001",
                            "leash proxy: the upstream host is not a valid TLS name",
                        )
                    })?;
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| {
                            refuse(
                                "08001",
                                format!("leash proxy: TLS to {} failed: {e}", state.upstream),
                            )
                        })?;
                    Box::new(tls)
                }
                (_, PgTls::Require) => {
                    return Err(refuse(
                        "08001",
                        format!(
                            "leash proxy: {} does not offer TLS and tls = \"require\"",
                            state.upstream
                        ),
                    ));
                }
                _ => Box::new(tcp),
            }
        }
        _ => Box::new(tcp),
    };
    let mut b = BytesMut::new();
    frontend::startup_message(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut b)
        .map_err(|_| refuse("08P01", "leash proxy: bad startup parameters"))?;
    up.write_all(&b).await.map_err(unreachable)?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut scram: Option<ScramSha256> = None;
    let password = login.password.as_bytes();
    loop {
        let msg = loop {
            match Message::parse(&mut buf) {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(_) => return Err(refuse("08P01", "leash proxy: bad message from PostgreSQL")),
            }
            let n = up.read_buf(&mut buf).await.map_err(unreachable)?;
            if n == 0 {
                return Err(refuse(
                    "08006",
                    format!(
                        "leash proxy: PostgreSQL at {} closed the connection during authentication",
                        state.upstream
                    ),
                ));
            }
        };
        let mut out = BytesMut::new();
        match msg {
            Message::AuthenticationOk => {
                let rest = until_ready(&mut up, buf, state, login).await?;
                return Ok((up, rest));
            }
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password, &mut out).map_err(|_| internal())?;
            }
            Message::AuthenticationMd5Password(b) => {
                let h = postgres_protocol::authentication::md5_hash(
                    login.username.as_bytes(),
                    password,
                    b.salt(),
                );
                frontend::password_message(h.as_bytes(), &mut out).map_err(|_| internal())?;
            }
            Message::AuthenticationSasl(b) => {
                let mut mechs = b.mechanisms();
                let mut ok = false;
                while let Ok(Some(m)) = fallible_next(&mut mechs) {
                    ok |= m == SCRAM_SHA_256;
                }
                if !ok {
                    return Err(refuse(
                        "28000",
                        "leash proxy: PostgreSQL offers no SASL mechanism leash supports (SCRAM-SHA-256)",
                    ));
                }
                let s = ScramSha256::new(password, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)
                    .map_err(|_| internal())?;
                scram = Some(s);
            }
            Message::AuthenticationSaslContinue(b) => {
                let s = scram.as_mut().ok_or_else(internal)?;
                s.update(b.data()).map_err(|_| {
                    refuse(
                        "28000",
                        "leash proxy: SCRAM exchange with PostgreSQL failed",
                    )
                })?;
                frontend::sasl_response(s.message(), &mut out).map_err(|_| internal())?;
            }
            Message::AuthenticationSaslFinal(b) => {
                let s = scram.as_mut().ok_or_else(internal)?;
                s.finish(b.data()).map_err(|_| {
                    refuse(
                        "28000",
                        "leash proxy: PostgreSQL's SCRAM signature did not verify",
                    )
                })?;
                continue;
            }
            Message::ErrorResponse(e) => return Err(refused(login, &e)),
            Message::NoticeResponse(_) => continue,
            _ => {
                return Err(refuse(
                    "28000",
                    "leash proxy: PostgreSQL asked for an authentication method leash does not support (cleartext, MD5, SCRAM-SHA-256)",
                ));
            }
        }
        up.write_all(&out).await.map_err(unreachable)?;
    }
}

/// The server's refusal of the leased credential, said as such.
fn refused(login: &Login, e: &postgres_protocol::message::backend::ErrorResponseBody) -> Refusal {
    let (mut text, mut code) = (String::new(), String::new());
    let mut f = e.fields();
    while let Ok(Some(x)) = fallible_next_field(&mut f) {
        match x.0 {
            b'M' => text = x.1,
            b'C' => code = x.1,
            _ => {}
        }
    }
    // Not an authorization failure (class 28): pass the server's reason on as it is.
    if !code.starts_with("28") {
        return refuse("08004", format!("leash proxy: PostgreSQL: {text}"));
    }
    let lease = if login.lease_id.is_empty() {
        "-"
    } else {
        &login.lease_id
    };
    refuse(
        "28P01",
        format!(
            "leash proxy: PostgreSQL refused the leased credential (lease {lease}; revoked or expired?): {text}"
        ),
    )
}

/// After `AuthenticationOk` the server still checks the role (under `trust` this is
/// where a dropped role is refused): reads up to `ReadyForQuery`, keeping the raw
/// messages for the client, and turns an `ErrorResponse` into a clear refusal.
async fn until_ready(
    up: &mut Box<dyn Io>,
    mut buf: BytesMut,
    state: &PgState,
    login: &Login,
) -> Result<BytesMut, Refusal> {
    use postgres_protocol::message::backend::Header;
    let mut out = BytesMut::new();
    loop {
        let header = Header::parse(&buf)
            .map_err(|_| refuse("08P01", "leash proxy: bad message from PostgreSQL"))?;
        match header {
            Some(h) if buf.len() > usize::try_from(h.len()).unwrap_or(usize::MAX) => {
                let raw = buf.split_to(usize::try_from(h.len()).unwrap_or(0) + 1);
                match h.tag() {
                    b'E' => {
                        let mut copy = raw.clone();
                        if let Ok(Some(Message::ErrorResponse(e))) = Message::parse(&mut copy) {
                            return Err(refused(login, &e));
                        }
                        return Err(internal());
                    }
                    b'Z' => {
                        out.extend_from_slice(&raw);
                        out.extend_from_slice(&buf);
                        return Ok(out);
                    }
                    _ => out.extend_from_slice(&raw),
                }
            }
            _ => {
                let n = up.read_buf(&mut buf).await.map_err(|e| {
                    refuse(
                        "08006",
                        format!("leash proxy: PostgreSQL at {}: {e}", state.upstream),
                    )
                })?;
                if n == 0 {
                    return Err(refuse(
                        "08006",
                        format!(
                            "leash proxy: PostgreSQL at {} closed the connection during startup",
                            state.upstream
                        ),
                    ));
                }
            }
        }
    }
}

fn internal() -> Refusal {
    refuse("XX000", "leash proxy: internal error during authentication")
}

fn fallible_next<'a>(
    it: &mut postgres_protocol::message::backend::SaslMechanisms<'a>,
) -> std::io::Result<Option<&'a str>> {
    use fallible_iterator::FallibleIterator as _;
    it.next()
}

fn fallible_next_field(
    it: &mut postgres_protocol::message::backend::ErrorFields<'_>,
) -> std::io::Result<Option<(u8, String)>> {
    use fallible_iterator::FallibleIterator as _;
    Ok(it.next()?.map(|f| {
        (
            f.type_(),
            String::from_utf8_lossy(f.value_bytes()).into_owned(),
        )
    }))
}

#[cfg(test)]
mod tests {
    //! The PostgreSQL of the project machine trusts loopback connections, so it never
    //! asks for a password: these tests play a server that does (SCRAM-SHA-256, MD5,
    //! cleartext), written from RFC 5802/7677 with the workspace's RFC crypto crates.
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use hmac::{Hmac, Mac as _};
    use sha2::{Digest as _, Sha256};

    use super::*;

    const USER: &str = "v-token-ro-abc";
    const PASSWORD: &str = "A1a-real-leased-password";

    fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }

    async fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let t = s.read_u8().await.unwrap();
        let len = usize::try_from(s.read_i32().await.unwrap()).unwrap();
        let mut b = vec![0; len - 4];
        s.read_exact(&mut b).await.unwrap();
        (t, b)
    }

    async fn send(s: &mut TcpStream, t: u8, body: &[u8]) {
        let mut out = vec![t];
        out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        s.write_all(&out).await.unwrap();
    }

    async fn auth_code(s: &mut TcpStream, code: i32, rest: &[u8]) {
        let mut b = code.to_be_bytes().to_vec();
        b.extend_from_slice(rest);
        send(s, b'R', &b).await;
    }

    async fn fatal(s: &mut TcpStream, msg: &str) {
        let body = format!("SFATAL\0VFATAL\0C28P01\0M{msg}\0\0");
        send(s, b'E', body.as_bytes()).await;
    }

    /// A server that wants `method` ("scram", "md5", "password"); returns the startup
    /// parameters it saw and whether the password was right.
    async fn fake_pg(l: TcpListener, method: &'static str) -> (BTreeMap<String, String>, bool) {
        let (mut s, _) = l.accept().await.unwrap();
        let len = usize::try_from(s.read_i32().await.unwrap()).unwrap();
        let mut b = vec![0; len - 4];
        s.read_exact(&mut b).await.unwrap();
        let parts: Vec<String> = b[4..]
            .split(|c| *c == 0)
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .collect();
        let params: BTreeMap<String, String> = parts
            .chunks(2)
            .filter(|c| c.len() == 2 && !c[0].is_empty())
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        let ok = match method {
            "scram" => {
                auth_code(&mut s, 10, b"SCRAM-SHA-256\0\0").await;
                let (_, m) = read_msg(&mut s).await;
                let mech_end = m.iter().position(|c| *c == 0).unwrap();
                assert_eq!(&m[..mech_end], b"SCRAM-SHA-256");
                let first = String::from_utf8(m[mech_end + 5..].to_vec()).unwrap();
                let bare = first.strip_prefix("n,,").unwrap().to_owned();
                let cnonce = bare.split(",r=").nth(1).unwrap().to_owned();
                let salt = b"pepper-and-salt!";
                let nonce = format!("{cnonce}srvnonce");
                let server_first = format!("r={nonce},s={},i=4096", B64.encode(salt));
                auth_code(&mut s, 11, server_first.as_bytes()).await;
                let (_, fin) = read_msg(&mut s).await;
                let fin = String::from_utf8(fin).unwrap();
                let (without_proof, proof) = fin.rsplit_once(",p=").unwrap();
                let mut salted = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(PASSWORD.as_bytes(), salt, 4096, &mut salted);
                let client_key = hmac(&salted, b"Client Key");
                let stored = Sha256::digest(&client_key);
                let auth_msg = format!("{bare},{server_first},{without_proof}");
                let sig = hmac(&stored, auth_msg.as_bytes());
                let proof = B64.decode(proof).unwrap();
                let key: Vec<u8> = proof.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
                let ok = Sha256::digest(&key)[..] == stored[..];
                if ok {
                    let server_key = hmac(&salted, b"Server Key");
                    let v = B64.encode(hmac(&server_key, auth_msg.as_bytes()));
                    auth_code(&mut s, 12, format!("v={v}").as_bytes()).await;
                }
                ok
            }
            "md5" => {
                auth_code(&mut s, 5, b"salt").await;
                let (_, p) = read_msg(&mut s).await;
                let want = postgres_protocol::authentication::md5_hash(
                    USER.as_bytes(),
                    PASSWORD.as_bytes(),
                    *b"salt",
                );
                p.strip_suffix(&[0]).unwrap() == want.as_bytes()
            }
            _ => {
                auth_code(&mut s, 3, b"").await;
                let (_, p) = read_msg(&mut s).await;
                p.strip_suffix(&[0]).unwrap() == PASSWORD.as_bytes()
            }
        };
        if ok {
            auth_code(&mut s, 0, b"").await;
            send(&mut s, b'S', b"server_version\x0016.0\0").await;
            send(&mut s, b'Z', b"I").await;
            // Relay check: answer one simple query.
            let (t, q) = read_msg(&mut s).await;
            assert_eq!(t, b'Q');
            assert_eq!(q, b"SELECT 1\0");
            send(&mut s, b'C', b"SELECT 1\0").await;
        } else {
            fatal(
                &mut s,
                &format!("password authentication failed for user \"{USER}\""),
            )
            .await;
        }
        (params, ok)
    }

    fn state(upstream: SocketAddr, password: &str, local: Option<&str>) -> Arc<PgState> {
        let secret =
            leash_agent::template::SecretRequest::from_args(&["database/creds/ro".into()]).unwrap();
        let mut cur = Current::default();
        cur.logins.insert(
            secret.key(),
            Arc::new(Login {
                username: USER.into(),
                password: zeroize::Zeroizing::new(password.into()),
                lease_id: "database/creds/ro/abc".into(),
            }),
        );
        let (_tx, rx) = watch::channel(Arc::new(cur));
        std::mem::forget(_tx);
        Arc::new(PgState {
            upstream: upstream.to_string(),
            secret_key: secret.key(),
            local_password: local.map(|p| zeroize::Zeroizing::new(p.to_owned())),
            tls: PgTls::Disable,
            tls_config: None,
            slots: Arc::new(Semaphore::new(4)),
            creds: rx,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// Connects as a client with user "anyone" (and `password` when asked); returns
    /// the messages up to ReadyForQuery or the error text.
    async fn client(proxy: SocketAddr, password: Option<&str>) -> Result<(), String> {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        let mut b = BytesMut::new();
        frontend::startup_message([("user", "anyone"), ("database", "app")], &mut b).unwrap();
        c.write_all(&b).await.unwrap();
        loop {
            let (t, body) = read_msg(&mut c).await;
            match t {
                b'R' if body[..4] == 3i32.to_be_bytes() => {
                    let mut p = BytesMut::new();
                    frontend::password_message(password.unwrap_or("").as_bytes(), &mut p).unwrap();
                    c.write_all(&p).await.unwrap();
                }
                b'E' => return Err(String::from_utf8_lossy(&body).into_owned()),
                b'Z' => break,
                _ => {}
            }
        }
        let mut q = BytesMut::new();
        frontend::query("SELECT 1", &mut q).unwrap();
        c.write_all(&q).await.unwrap();
        let (t, body) = read_msg(&mut c).await;
        assert_eq!((t, &body[..]), (b'C', &b"SELECT 1\0"[..]));
        Ok(())
    }

    async fn case(
        method: &'static str,
        password: &str,
        local: Option<&str>,
        sent: Option<&str>,
    ) -> (Result<(), String>, BTreeMap<String, String>) {
        let pg = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pg_addr = pg.local_addr().unwrap();
        let server = tokio::spawn(fake_pg(pg, method));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = l.local_addr().unwrap();
        let task = tokio::spawn(serve(l, state(pg_addr, password, local)));
        let r = client(proxy, sent).await;
        task.abort();
        let params = if local.is_some() && sent != local {
            server.abort();
            BTreeMap::new()
        } else {
            server.await.unwrap().0
        };
        (r, params)
    }

    #[tokio::test]
    async fn scram_md5_and_cleartext_upstream_logins_use_the_leased_credential() {
        for method in ["scram", "md5", "password"] {
            let (r, params) = case(method, PASSWORD, None, None).await;
            assert_eq!(r, Ok(()), "{method}");
            assert_eq!(params["user"], USER, "{method}");
            assert_eq!(params["database"], "app");
        }
    }

    #[tokio::test]
    async fn a_refused_credential_is_said_clearly() {
        for method in ["scram", "md5", "password"] {
            let (r, _) = case(method, "stale-password", None, None).await;
            let e = r.unwrap_err();
            assert!(
                e.contains("leash proxy: PostgreSQL refused the leased credential (lease database/creds/ro/abc")
                    && e.contains("password authentication failed"),
                "{method}: {e}"
            );
            assert!(!e.contains("stale-password"));
        }
    }

    #[tokio::test]
    async fn local_password_is_checked_and_is_not_the_real_one() {
        let (r, params) = case("scram", PASSWORD, Some("local-only"), Some("local-only")).await;
        assert_eq!(r, Ok(()));
        assert_eq!(params["user"], USER);
        let (r, _) = case("scram", PASSWORD, Some("local-only"), Some("wrong")).await;
        assert!(r.unwrap_err().contains("local_password"));
        let (r, _) = case("scram", PASSWORD, Some("local-only"), Some(PASSWORD)).await;
        assert!(r.is_err(), "the real password is not the local one");
    }
}
