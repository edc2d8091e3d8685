//! The TLS settings of one database connection, parsed once, and the rustls client
//! configuration they make.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use leash_types::{ExposeSecret, SecretString};
use percent_encoding::percent_decode_str;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::error::DbTlsError;
use crate::verify;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is not checked (unless a root certificate is
    /// given: then as `verify-ca`).
    Require,
    /// TLS, and the server's certificate chains to the root certificate.
    VerifyCa,
    /// TLS, the chain, and the certificate names the host.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling.
    pub fn parse(s: &str) -> Result<SslMode, DbTlsError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(DbTlsError::Invalid {
                    key: "sslmode",
                    reason:
                        "\"allow\" is not supported; use prefer, require, verify-ca or verify-full"
                            .into(),
                });
            }
            _ => {
                return Err(DbTlsError::Invalid {
                    key: "sslmode",
                    reason: "use disable, prefer, require, verify-ca or verify-full".into(),
                });
            }
        })
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a server without TLS is refused.
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }
}

/// Certificates in PEM: a file on the leash server, the PEM text itself, or the
/// built-in Mozilla roots (`sslrootcert=system`).
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A path on the leash server.
    File(PathBuf),
    /// The PEM text (Vault's `tls_ca`).
    Inline(String),
    /// The Mozilla root certificates (webpki-roots); only as a root certificate.
    System,
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => write!(f, "File({p:?})"),
            Pem::Inline(_) => f.write_str("Inline(…)"),
            Pem::System => f.write_str("System"),
        }
    }
}

/// A private key in PEM: a file, or the PEM text (kept secret, zeroized).
#[derive(Clone)]
pub enum PemKey {
    /// A path on the leash server.
    File(PathBuf),
    /// The PEM text.
    Inline(SecretString),
}

impl fmt::Debug for PemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemKey::File(p) => write!(f, "File({p:?})"),
            PemKey::Inline(_) => f.write_str("Inline([REDACTED])"),
        }
    }
}

/// The TLS settings of one connection.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// `sslmode`.
    pub mode: SslMode,
    /// Whether `mode` was given (URL or field) rather than defaulted.
    pub mode_given: bool,
    /// `sslrootcert` / `tls_ca`.
    pub root_cert: Option<Pem>,
    /// `sslcert` / `tls_certificate` (a chain, leaf first).
    pub client_cert: Option<Pem>,
    /// `sslkey` / `private_key`.
    pub client_key: Option<PemKey>,
    /// The name the certificate must carry, when not the host connected to
    /// (`tls_server_name`).
    pub server_name: Option<String>,
    /// Encrypt but accept any certificate, whatever the mode and root certificate say
    /// (Vault's `tls_skip_verify`).
    pub skip_verify: bool,
}

/// The libpq keywords this crate owns; they are taken out of a connection string
/// before the driver parses it.
const PG_KEYS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Keywords libpq knows that leash cannot honour: refused rather than ignored.
const PG_UNSUPPORTED: &[&str] = &["sslpassword", "sslcrl", "sslcrldir", "sslsni"];

impl TlsOptions {
    /// Sets one libpq-style key (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`); a later
    /// call wins. `sslrootcert=system` means the Mozilla roots.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), DbTlsError> {
        match key {
            "sslmode" => {
                self.mode = SslMode::parse(value)?;
                self.mode_given = true;
            }
            "sslrootcert" => {
                self.root_cert = match value {
                    "" => None,
                    "system" => Some(Pem::System),
                    p => Some(Pem::File(PathBuf::from(p))),
                };
            }
            "sslcert" => {
                self.client_cert = (!value.is_empty()).then(|| Pem::File(PathBuf::from(value)));
            }
            "sslkey" => {
                self.client_key = (!value.is_empty()).then(|| PemKey::File(PathBuf::from(value)));
            }
            k if PG_UNSUPPORTED.contains(&k) => {
                return Err(DbTlsError::Invalid {
                    key: "connection_url",
                    reason: format!("{k} is not supported"),
                });
            }
            _ => {
                return Err(DbTlsError::Invalid {
                    key: "connection_url",
                    reason: format!("{key} is not a TLS setting"),
                });
            }
        }
        Ok(())
    }

    /// Applies settings given as separate configuration fields over those of the
    /// connection string: each field given wins. A root certificate given as a field
    /// with no `sslmode` anywhere means `verify-full` (what an operator handing leash a
    /// CA wants; Vault's MySQL plugin does the same with `tls_ca`).
    pub fn overlay(&mut self, fields: &TlsOptions) {
        if fields.mode_given {
            self.mode = fields.mode;
            self.mode_given = true;
        }
        if let Some(root) = &fields.root_cert {
            self.root_cert = Some(root.clone());
            if !self.mode_given {
                self.mode = SslMode::VerifyFull;
                self.mode_given = true;
            }
        }
        if fields.client_cert.is_some() {
            self.client_cert = fields.client_cert.clone();
        }
        if fields.client_key.is_some() {
            self.client_key = fields.client_key.clone();
        }
        if fields.server_name.is_some() {
            self.server_name = fields.server_name.clone();
        }
        if fields.skip_verify {
            self.skip_verify = true;
            if !self.mode_given {
                self.mode = SslMode::Require;
                self.mode_given = true;
            }
        }
    }

    /// The mode in force: `require` and `prefer` with a root certificate verify the
    /// chain, as libpq does; `skip_verify` verifies nothing.
    pub fn effective_mode(&self) -> SslMode {
        if self.skip_verify && self.mode.requires_tls() {
            return SslMode::Require;
        }
        match (self.mode, &self.root_cert) {
            (SslMode::Prefer, _) if self.skip_verify => SslMode::Prefer,
            (SslMode::Require | SslMode::Prefer, Some(_)) => SslMode::VerifyCa,
            (m, _) => m,
        }
    }

    /// The rustls configuration these settings make, or `None` for `disable`. Files are
    /// read now. Errors name the setting at fault.
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, DbTlsError> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(DbTlsError::Invalid {
                key: "sslcert",
                reason: "a client certificate needs its key (sslcert and sslkey together)".into(),
            });
        }
        if self.root_cert == Some(Pem::System)
            && self.mode != SslMode::VerifyFull
            && !self.skip_verify
        {
            return Err(DbTlsError::Invalid {
                key: "sslrootcert",
                reason: "sslrootcert=system needs sslmode=verify-full (as in libpq)".into(),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mode = self.effective_mode();
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match mode {
            SslMode::Disable => return Ok(None),
            SslMode::Prefer | SslMode::Require => verify::no_verification(Arc::clone(&provider)),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let Some(root) = &self.root_cert else {
                    return Err(DbTlsError::Invalid {
                        key: "sslrootcert",
                        reason: format!(
                            "sslmode={} needs the CA to verify against (sslrootcert / tls_ca, or sslrootcert=system)",
                            mode.as_str()
                        ),
                    });
                };
                let roots = root_store(root)?;
                verify::chain(roots, Arc::clone(&provider), mode == SslMode::VerifyFull)?
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| DbTlsError::Invalid {
                key: "sslmode",
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates("sslcert", cert)?;
                let key = private_key(key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| DbTlsError::Invalid {
                        key: "sslkey",
                        reason: format!("the key does not fit the certificate: {e}"),
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }
}

fn read(key: &'static str, pem: &Pem) -> Result<Vec<u8>, DbTlsError> {
    match pem {
        Pem::File(path) => std::fs::read(path).map_err(|source| DbTlsError::ReadFile {
            key,
            path: path.clone(),
            source,
        }),
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
        Pem::System => Err(DbTlsError::Invalid {
            key,
            reason: "\"system\" names root certificates only".into(),
        }),
    }
}

fn certificates(key: &'static str, pem: &Pem) -> Result<Vec<CertificateDer<'static>>, DbTlsError> {
    let bytes = read(key, pem)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DbTlsError::Invalid {
            key,
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(DbTlsError::Invalid {
            key,
            reason: "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

fn root_store(pem: &Pem) -> Result<RootCertStore, DbTlsError> {
    let mut roots = RootCertStore::empty();
    if *pem == Pem::System {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    }
    for cert in certificates("sslrootcert", pem)? {
        roots.add(cert).map_err(|e| DbTlsError::Invalid {
            key: "sslrootcert",
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn private_key(key: &PemKey) -> Result<PrivateKeyDer<'static>, DbTlsError> {
    let parsed = match key {
        PemKey::File(path) => {
            let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| {
                DbTlsError::ReadFile {
                    key: "sslkey",
                    path: path.clone(),
                    source,
                }
            })?);
            PrivateKeyDer::from_pem_slice(&bytes)
        }
        PemKey::Inline(text) => PrivateKeyDer::from_pem_slice(text.expose_secret().as_bytes()),
    };
    // The parser's error names the PEM section, never key bytes.
    parsed.map_err(|e| DbTlsError::Invalid {
        key: "sslkey",
        reason: format!("no usable private key in it: {e}"),
    })
}

/// Splits a PostgreSQL connection string (URL or keyword/value form) into the string
/// without leash's TLS keywords (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), for the
/// driver to parse, and the TLS settings they gave. Other keywords are kept as written.
pub fn split_pg_url(url: &str) -> Result<(String, TlsOptions), DbTlsError> {
    let mut tls = TlsOptions::default();
    let is_url = url.starts_with("postgresql://") || url.starts_with("postgres://");
    if is_url {
        let Some((base, rest)) = url.split_once('?') else {
            return Ok((url.to_owned(), tls));
        };
        let (query, fragment) = match rest.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (rest, None),
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode_str(k).decode_utf8_lossy();
            if PG_KEYS.contains(&key.as_ref()) || PG_UNSUPPORTED.contains(&key.as_ref()) {
                let value =
                    percent_decode_str(v)
                        .decode_utf8()
                        .map_err(|_| DbTlsError::Invalid {
                            key: "connection_url",
                            reason: format!("{key} is not valid percent-encoded UTF-8"),
                        })?;
                tls.set(&key, &value)?;
            } else {
                kept.push(pair);
            }
        }
        let mut out = base.to_owned();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        return Ok((out, tls));
    }
    // Keyword/value form: `host=db sslmode='verify-full' …`.
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    loop {
        let trimmed = rest.trim_start();
        let ws = &rest[..rest.len() - trimmed.len()];
        rest = trimmed;
        if rest.is_empty() {
            break;
        }
        let Some(eq) = rest.find('=') else {
            out.push_str(ws);
            out.push_str(rest);
            break;
        };
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let value_start = after.len() - after.trim_start().len();
        let v = &after[value_start..];
        let (raw_len, value) = keyword_value(v);
        let whole = eq + 1 + value_start + raw_len;
        if PG_KEYS.contains(&key) || PG_UNSUPPORTED.contains(&key) {
            tls.set(key, &value)?;
        } else {
            out.push_str(ws);
            out.push_str(&rest[..whole]);
        }
        rest = &rest[whole..];
    }
    Ok((out.trim_start().to_owned(), tls))
}

/// A keyword value at the start of `v`: its length as written and its unquoted text.
fn keyword_value(v: &str) -> (usize, String) {
    if let Some(body) = v.strip_prefix('\'') {
        let mut out = String::new();
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                _ if escaped => {
                    out.push(c);
                    escaped = false;
                }
                '\\' => escaped = true,
                '\'' => return (i + 2, out),
                _ => out.push(c),
            }
        }
        (v.len(), out)
    } else {
        let end = v.find(char::is_whitespace).unwrap_or(v.len());
        let mut out = String::new();
        let mut escaped = false;
        for c in v[..end].chars() {
            if escaped || c != '\\' {
                out.push(c);
                escaped = false;
            } else {
                escaped = true;
            }
        }
        (end, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_query_loses_tls_keys_and_keeps_the_rest() {
        let (url, tls) = split_pg_url(
            "postgresql://u:p@db:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgresql://u:p@db:5432/app?application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert!(tls.mode_given);
        assert_eq!(tls.root_cert, Some(Pem::File("/etc/ca.pem".into())));
        let (url, tls) = split_pg_url("postgresql://db/app?sslmode=require").unwrap();
        assert_eq!(url, "postgresql://db/app");
        assert_eq!(tls.effective_mode(), SslMode::Require);
        let (url, tls) = split_pg_url("postgresql://db/app").unwrap();
        assert_eq!(
            (url.as_str(), tls.mode),
            ("postgresql://db/app", SslMode::Prefer)
        );
        assert!(!tls.mode_given);
    }

    #[test]
    fn keyword_strings_lose_tls_keys_quoted_or_not() {
        let (s, tls) = split_pg_url(
            "host=db sslmode=verify-ca  password='a b\\'c' sslrootcert='/x y/ca.pem' dbname=app",
        )
        .unwrap();
        assert_eq!(s, "host=db  password='a b\\'c' dbname=app");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(Pem::File("/x y/ca.pem".into())));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let e = split_pg_url("postgresql://db/?sslmode=maybe").unwrap_err();
        assert!(e.to_string().contains("sslmode"), "{e}");
        let e = split_pg_url("host=db sslpassword=x").unwrap_err();
        assert!(e.to_string().contains("sslpassword"), "{e}");
        assert!(!e.to_string().contains("=x"));
    }

    #[test]
    fn libpq_semantics_of_modes() {
        let mut t = TlsOptions::default();
        t.set("sslmode", "require").unwrap();
        assert_eq!(t.effective_mode(), SslMode::Require);
        assert!(t.client_config().unwrap().is_some());
        t.set("sslrootcert", "/nonexistent/ca.pem").unwrap();
        assert_eq!(t.effective_mode(), SslMode::VerifyCa);
        let e = t.client_config().unwrap_err().to_string();
        assert!(
            e.contains("sslrootcert") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let mut t = TlsOptions::default();
        t.set("sslmode", "verify-full").unwrap();
        let e = t.client_config().unwrap_err().to_string();
        assert!(e.contains("needs the CA"), "{e}");
        t.set("sslrootcert", "system").unwrap();
        assert!(t.client_config().unwrap().is_some());
        t.set("sslmode", "require").unwrap();
        assert!(t.client_config().is_err());
        t.set("sslmode", "disable").unwrap();
        assert!(t.client_config().unwrap().is_none());
    }

    #[test]
    fn fields_overlay_the_connection_string() {
        let (_, mut t) = split_pg_url("postgresql://db/app").unwrap();
        t.overlay(&TlsOptions {
            root_cert: Some(Pem::Inline("pem".into())),
            ..TlsOptions::default()
        });
        assert_eq!(t.effective_mode(), SslMode::VerifyFull);
        let (_, mut t) = split_pg_url("postgresql://db/app?sslmode=verify-ca").unwrap();
        t.overlay(&TlsOptions {
            root_cert: Some(Pem::Inline("pem".into())),
            ..TlsOptions::default()
        });
        assert_eq!(t.effective_mode(), SslMode::VerifyCa);
        t.overlay(&TlsOptions {
            skip_verify: true,
            ..TlsOptions::default()
        });
        assert_eq!(t.effective_mode(), SslMode::Require);
        assert!(t.client_config().unwrap().is_some());
    }

    #[test]
    fn debug_never_prints_an_inline_key() {
        // Made at run time: no key-shaped literal is committed.
        let marker = format!("{:x}", std::process::id() ^ 0x5eed_cafe);
        let pem = format!("-----BEGIN {} KEY-----{marker}", "PRIVATE");
        let t = TlsOptions {
            client_key: Some(PemKey::Inline(SecretString::from(pem))),
            ..TlsOptions::default()
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains(&marker), "{shown}");
    }
}
