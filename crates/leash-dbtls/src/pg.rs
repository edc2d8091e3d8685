//! TLS for PostgreSQL: the `SSLRequest` negotiation done by leash itself over any byte
//! stream, so the stream the driver then speaks over (plain or TLS) can be wrapped
//! further (the database engine inspects the decrypted login messages), and a
//! `connect` for callers that just want a client.
//!
//! The driver is then run with `NoTls` over the negotiated stream: it never sends its
//! own `SSLRequest`. (SCRAM channel binding is therefore not used; the TLS
//! verification of `verify-full` is what binds the connection to the server.)
//!
//! Unix-domain sockets never use TLS, whatever the mode (as in libpq).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_postgres::config::Host;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, NoTls};

use crate::error::{DbTlsError, describe_tls_failure};
use crate::options::{SslMode, TlsOptions, split_pg_url};

/// The `SSLRequest` message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// How long opening a connection may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Anything the PostgreSQL protocol can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TCP or Unix-domain socket.
pub type Socket = Box<dyn Io>;

/// The driver's connection future over a negotiated stream (poll it, e.g. in a task).
pub type Connection = tokio_postgres::Connection<PgStream<Socket>, NoTlsStream>;

/// The TLS settings of one PostgreSQL connection, prepared once (files read, rustls
/// configuration built): cheap to clone, used for every new connection.
#[derive(Clone, Debug)]
pub struct PgTls {
    pub(crate) mode: SslMode,
    pub(crate) config: Option<Arc<ClientConfig>>,
    pub(crate) server_name: Option<String>,
}

impl PgTls {
    /// Prepares `options` (reads the certificate files). Errors name the setting.
    pub fn new(options: &TlsOptions) -> Result<PgTls, DbTlsError> {
        Ok(PgTls {
            mode: options.effective_mode(),
            config: options.client_config()?,
            server_name: options.server_name.clone(),
        })
    }

    /// No TLS (`sslmode=disable`).
    pub fn disabled() -> PgTls {
        PgTls {
            mode: SslMode::Disable,
            config: None,
            server_name: None,
        }
    }

    /// The mode in force (after libpq's upgrades, see [`TlsOptions::effective_mode`]).
    pub fn mode(&self) -> SslMode {
        self.mode
    }
}

/// A stream after negotiation: TLS, or plain when the mode allowed it.
pub enum PgStream<S> {
    /// Unencrypted (`disable`, a Unix socket, or `prefer` with a server without TLS).
    Plain(S),
    /// Encrypted.
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
}

impl<S> PgStream<S> {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, PgStream::Tls(_))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Negotiates TLS on a fresh TCP connection to `host` (the name the certificate must
/// carry under `verify-full`, unless the settings override it): sends `SSLRequest`;
/// on `S` runs the TLS handshake, on `N` continues in plain text if the mode allows
/// (`prefer`) or fails. With `disable` the stream is returned untouched.
pub async fn negotiate<S>(mut stream: S, host: &str, tls: &PgTls) -> Result<PgStream<S>, DbTlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(config) = &tls.config else {
        return Ok(PgStream::Plain(stream));
    };
    stream.write_all(&SSL_REQUEST).await?;
    stream.flush().await?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {}
        b'N' if !tls.mode.requires_tls() => return Ok(PgStream::Plain(stream)),
        b'N' => {
            return Err(DbTlsError::ServerRefusedTls {
                mode: tls.mode.as_str(),
            });
        }
        _ => {
            return Err(DbTlsError::Handshake {
                host: host.to_owned(),
                message: "the server answered the TLS request with an error (not a PostgreSQL server, or one too old)".into(),
            });
        }
    }
    let name = tls.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_owned()).map_err(|_| DbTlsError::Invalid {
        key: "host",
        reason: format!("{name:?} is not a DNS name or IP address TLS can verify"),
    })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
    match connector.connect(server_name, stream).await {
        Ok(s) => Ok(PgStream::Tls(Box::new(s))),
        Err(e) => Err(DbTlsError::Handshake {
            host: name.to_owned(),
            message: describe_tls_failure(&handshake_text(&e)),
        }),
    }
}

/// The rustls error inside an I/O error from the handshake, as text.
pub(crate) fn handshake_text(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

/// Parses a connection string (URL or keyword/value) into the driver's configuration
/// and the TLS settings, with `overrides` (libpq keys such as `sslmode`,
/// `sslrootcert`, `sslcert`, `sslkey`, e.g. from separate configuration fields)
/// applied after the string's own.
pub fn parse(
    connection_url: &str,
    overrides: &[(&str, &str)],
) -> Result<(tokio_postgres::Config, TlsOptions), DbTlsError> {
    let (rest, mut options) = split_pg_url(connection_url)?;
    for (k, v) in overrides {
        options.set(k, v)?;
    }
    let config: tokio_postgres::Config = rest.parse()?;
    Ok((config, options))
}

/// Opens a TCP or Unix socket to the first of `config`'s hosts that answers within the
/// connect timeout, negotiated per `tls`. Returns the stream and whether it is TLS.
pub async fn open(
    config: &tokio_postgres::Config,
    tls: &PgTls,
) -> Result<PgStream<Socket>, DbTlsError> {
    let timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT);
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    let addrs = config.get_hostaddrs();
    let port_of = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut last = DbTlsError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        "no host in connection_url",
    ));
    for i in 0..hosts.len().max(addrs.len()) {
        let port = port_of(i);
        let attempt = async {
            match (hosts.get(i), addrs.get(i)) {
                (Some(Host::Tcp(h)), ip) => {
                    let tcp = match ip {
                        Some(ip) => tokio::net::TcpStream::connect((*ip, port)).await?,
                        None => tokio::net::TcpStream::connect((h.as_str(), port)).await?,
                    };
                    let _ = tcp.set_nodelay(true);
                    negotiate(Box::new(tcp) as Socket, h, tls).await
                }
                (None, Some(ip)) => {
                    let tcp = tokio::net::TcpStream::connect((*ip, port)).await?;
                    let _ = tcp.set_nodelay(true);
                    negotiate(Box::new(tcp) as Socket, &ip.to_string(), tls).await
                }
                #[cfg(unix)]
                (Some(Host::Unix(dir)), _) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok(PgStream::Plain(Box::new(s) as Socket))
                }
                #[allow(unreachable_patterns)]
                _ => Err(DbTlsError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "unsupported host in connection_url",
                ))),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(s)) => return Ok(s),
            // A certificate problem is not fixed by another host of the same service.
            Ok(Err(e @ (DbTlsError::Handshake { .. } | DbTlsError::ServerRefusedTls { .. }))) => {
                return Err(e);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = DbTlsError::Io(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            }
        }
    }
    Err(last)
}

/// Connects to PostgreSQL as `connection_url` says, TLS included (`sslmode`,
/// `sslrootcert`, `sslcert`, `sslkey` in the URL, then `overrides`). The caller polls
/// the returned [`Connection`] (e.g. `tokio::spawn`). (The storage backend, which lets
/// the driver connect, uses [`crate::driver_config`] instead.)
pub async fn connect(
    connection_url: &str,
    overrides: &[(&str, &str)],
) -> Result<(Client, Connection), DbTlsError> {
    let (config, options) = parse(connection_url, overrides)?;
    let tls = PgTls::new(&options)?;
    connect_with(&config, &tls).await
}

/// [`connect`] with a configuration and TLS settings already prepared (a pool keeps
/// both and calls this for each new connection).
pub async fn connect_with(
    config: &tokio_postgres::Config,
    tls: &PgTls,
) -> Result<(Client, Connection), DbTlsError> {
    let stream = open(config, tls).await?;
    let mut config = config.clone();
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    Ok(config.connect_raw(stream, NoTls).await?)
}
