//! TLS for `tokio_postgres`'s own connect: [`PgTls`] as the driver's
//! `MakeTlsConnect`, so `tokio_postgres::Config::connect` (and a connection pool built on
//! it, such as deadpool's `Manager::from_config`) negotiates TLS with leash's rustls
//! configuration and libpq's semantics. The driver does the `SSLRequest`, its host list,
//! `hostaddr`, timeouts, keepalives and `target_session_attrs`; this module does the
//! handshake and the verification.
//!
//! The driver knows `sslmode` disable, prefer and require only: [`driver_config`] sets
//! `require` for `verify-ca` and `verify-full`, and the rustls verifier of the
//! [`PgTls`] does the verification. Unix-domain sockets never use TLS (as in libpq).
//!
//! Channel binding (`SCRAM-SHA-256-PLUS`) is not offered: the verification of
//! `verify-full` is what binds the connection to the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::Host;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::error::{DbTlsError, describe_tls_failure};
use crate::options::SslMode;
use crate::pg::{PgTls, parse};

/// Parses a connection string (URL or keyword/value) for `tokio_postgres`'s own
/// connect: the driver's configuration without leash's TLS keywords, its `sslmode` set
/// from the mode in force (see the module documentation), and the connector to pass to
/// `Config::connect` or a pool. `overrides` (libpq keys, e.g. from configuration keys of
/// their own) win over the string's. Certificate files are read now. Errors name the
/// setting.
pub fn driver_config(
    connection_url: &str,
    overrides: &[(&str, &str)],
) -> Result<(tokio_postgres::Config, PgTls), DbTlsError> {
    let (mut config, options) = parse(connection_url, overrides)?;
    let mut tls = PgTls::new(&options)?;
    config.ssl_mode(driver_ssl_mode(tls.mode(), &config));
    // `sslnegotiation=direct` (PostgreSQL 17) starts TLS at once, and the server then
    // requires the ALPN protocol `postgresql` (as libpq sends it).
    if config.get_ssl_negotiation() == tokio_postgres::config::SslNegotiation::Direct
        && let Some(c) = &tls.config
    {
        let mut c = ClientConfig::clone(c);
        c.alpn_protocols = vec![b"postgresql".to_vec()];
        tls.config = Some(Arc::new(c));
    }
    Ok((config, tls))
}

/// The driver's `sslmode` for libpq's `mode` on `config`'s hosts.
fn driver_ssl_mode(
    mode: SslMode,
    config: &tokio_postgres::Config,
) -> tokio_postgres::config::SslMode {
    use tokio_postgres::config::SslMode as Driver;
    let unix_only = config.get_hostaddrs().is_empty()
        && !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, Host::Tcp(_)));
    if unix_only {
        return Driver::Disable;
    }
    match mode {
        SslMode::Disable => Driver::Disable,
        SslMode::Prefer => Driver::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = DbTlsError;

    /// `host` is the host name of the connection string (empty for a `hostaddr` without
    /// `host` or a Unix socket: the driver then does not start a handshake).
    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, DbTlsError> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            name: self.server_name.clone().unwrap_or_else(|| host.to_owned()),
        })
    }
}

/// One handshake, to one host (made by [`PgTls`] for the driver).
pub struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = DbTlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, DbTlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // The driver asks for a handshake only when its sslmode is not `disable`,
            // which `driver_config` sets exactly when there is no configuration.
            let Some(config) = self.config else {
                return Err(DbTlsError::Invalid {
                    key: "sslmode",
                    reason: "TLS is disabled (sslmode=disable)".into(),
                });
            };
            let server_name =
                ServerName::try_from(self.name.clone()).map_err(|_| DbTlsError::Invalid {
                    key: "host",
                    reason: format!(
                        "{:?} is not a DNS name or IP address TLS can verify",
                        self.name
                    ),
                })?;
            match tokio_rustls::TlsConnector::from(config)
                .connect(server_name, stream)
                .await
            {
                Ok(s) => Ok(RustlsStream(Box::new(s))),
                Err(e) => Err(DbTlsError::Handshake {
                    host: self.name,
                    message: describe_tls_failure(&crate::pg::handshake_text(&e)),
                }),
            }
        })
    }
}

/// A TLS session to PostgreSQL made by [`RustlsConnect`].
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.get_mut().0.as_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().0.as_mut()).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use tokio_postgres::config::SslMode as Driver;

    use super::*;

    fn mode_of(url: &str) -> (Driver, SslMode) {
        let (config, tls) = driver_config(url, &[]).unwrap();
        (config.get_ssl_mode(), tls.mode())
    }

    #[test]
    fn libpq_modes_map_to_the_drivers() {
        assert_eq!(
            mode_of("postgresql://u:p@db/app"),
            (Driver::Prefer, SslMode::Prefer),
            "prefer by default, as libpq"
        );
        assert_eq!(
            mode_of("postgresql://db/app?sslmode=disable"),
            (Driver::Disable, SslMode::Disable)
        );
        assert_eq!(
            mode_of("postgresql://db/app?sslmode=require"),
            (Driver::Require, SslMode::Require)
        );
        assert_eq!(
            mode_of("host=db dbname=app sslmode=verify-full sslrootcert=system"),
            (Driver::Require, SslMode::VerifyFull)
        );
        // Keys given apart win over the string's.
        let (config, tls) = driver_config(
            "postgresql://db/app?sslmode=disable",
            &[("sslmode", "verify-full"), ("sslrootcert", "system")],
        )
        .unwrap();
        assert_eq!(
            (config.get_ssl_mode(), tls.mode()),
            (Driver::Require, SslMode::VerifyFull)
        );
        // A Unix socket never uses TLS, whatever the mode (libpq).
        assert_eq!(
            mode_of("host=/run/postgresql dbname=app sslmode=require").0,
            Driver::Disable
        );
    }

    #[test]
    fn direct_negotiation_offers_the_postgresql_alpn() {
        let alpn = |url: &str| {
            let (_, tls) = driver_config(url, &[]).unwrap();
            tls.config.unwrap().alpn_protocols.clone()
        };
        assert_eq!(
            alpn("postgresql://db/app?sslmode=require&sslnegotiation=direct"),
            vec![b"postgresql".to_vec()]
        );
        assert!(alpn("postgresql://db/app?sslmode=require").is_empty());
    }

    #[test]
    fn the_driver_gets_the_rest_of_the_string() {
        let (config, _) = driver_config(
            "postgresql://leash:pw@db.example:6432/app?sslmode=verify-full&sslrootcert=system&application_name=leash",
            &[],
        )
        .unwrap();
        assert_eq!(config.get_user(), Some("leash"));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));
        assert_eq!(config.get_dbname(), Some("app"));
        assert_eq!(config.get_ports(), &[6432]);
        assert_eq!(config.get_application_name(), Some("leash"));
    }

    #[test]
    fn errors_name_the_setting_never_the_password() {
        let e = driver_config("postgresql://u:hunter2@db/app?sslmode=verify-ca", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslrootcert") && !e.contains("hunter2"), "{e}");
        let e = driver_config(
            "postgresql://u:hunter2@db/app?sslrootcert=/nonexistent/ca.pem",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
