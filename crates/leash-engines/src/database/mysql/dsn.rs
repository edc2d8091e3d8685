//! Vault's MySQL connection strings (Go DSN or `mysql://` URL) → `mysql_async` options.

use leash_dbtls::{Pem, PemKey, SslMode, TlsOptions};
use leash_types::ExposeSecret;
use leash_types::secret::scrub;
use mysql_async::{ClientIdentity, Opts, OptsBuilder, PoolConstraints, PoolOpts, SslOpts};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::database::DbError;

use super::*;

/// Characters left as they are when a username or password goes into a `mysql://` URL.
pub(super) const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Parameters of Go's MySQL driver that only tune that driver; accepted and ignored, so
/// a DSN written for Vault works unchanged.
pub(super) const GO_DRIVER_PARAMS: &[&str] = &[
    "allowAllFiles",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "allowOldPasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeTruncate",
    "timeout",
    "writeTimeout",
];

/// `s` as a MySQL string literal (`'…'`, inner quotes doubled). A backslash is refused:
/// whether it escapes depends on the server's `sql_mode`, so leash cannot quote it
/// reliably (leash's own usernames never contain one).
pub(super) fn quote_literal(s: &str) -> Result<String, DbError> {
    if s.contains('\\') || s.contains('\0') {
        return Err(DbError::Database {
            operation: "quoting an account name",
            sqlstate: String::new(),
            message: "user or host name contains a backslash or NUL; use custom statements"
                .to_owned(),
        });
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// `template` with `{{username}}` and `{{password}}` replaced in one pass (a value that
/// itself contains a placeholder is not substituted again).
pub(super) fn substitute(template: &str, username: &str, password: &str) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        if let Some(tail) = after.strip_prefix("{{username}}") {
            out.push_str(username);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("{{password}}") {
            out.push_str(password);
            rest = tail;
        } else {
            out.push_str("{{");
            rest = &after[2..];
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn invalid(reason: impl Into<String>) -> DbError {
    DbError::InvalidConnectionUrl {
        reason: reason.into(),
    }
}

/// Percent-decodes `s` as Go's `url.QueryUnescape` does (`+` is a space).
pub(super) fn query_unescape(s: &str) -> Result<String, DbError> {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| invalid("a parameter value is not valid percent-encoded UTF-8"))
}

/// `[host]:port`, `host:port`, `host` or a bare IPv6 address, as Go's driver accepts in
/// `tcp(…)`; the port defaults to 3306.
pub(super) fn split_host_port(addr: &str) -> Result<(String, u16), DbError> {
    const DEFAULT_PORT: u16 = 3306;
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| invalid("the port in tcp(…) is not a number from 0 to 65535"))
    };
    if let Some(bracketed) = addr.strip_prefix('[') {
        let Some((host, rest)) = bracketed.split_once(']') else {
            return Err(invalid("missing `]` after an IPv6 address"));
        };
        return match rest {
            "" => Ok((host.to_owned(), DEFAULT_PORT)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host.to_owned(), parse_port(port)?)),
                None => Err(invalid("unexpected text after `]` in tcp(…)")),
            },
        };
    }
    match addr.split_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((_, rest)) if rest.contains(':') => Ok((addr.to_owned(), DEFAULT_PORT)),
        Some((host, port)) => Ok((host.to_owned(), parse_port(port)?)),
        None => Ok((addr.to_owned(), DEFAULT_PORT)),
    }
}

/// Options for a Go DSN `[user[:password]@][net[(addr)]]/dbname[?param=value&…]`,
/// parsed the way Go's MySQL driver does (the last `/` ends the address, the last `@`
/// before it ends the user part, the first `:` in that splits user from password), so
/// a literal password may contain `@`, `:` and `?`.
pub(super) fn go_dsn_opts(
    dsn: &str,
    username: &str,
    password: &str,
    tls: &mut TlsOptions,
) -> Result<OptsBuilder, DbError> {
    let Some(slash) = dsn.rfind('/') else {
        return Err(invalid(
            "expected a Go DSN `user:password@tcp(host:port)/dbname` or a mysql:// URL \
             (missing the `/` before the database name)",
        ));
    };
    let (head, tail) = (&dsn[..slash], &dsn[slash + 1..]);
    let (userinfo, address) = match head.rfind('@') {
        Some(at) => (Some(&head[..at]), &head[at + 1..]),
        None => (None, head),
    };
    let mut builder = OptsBuilder::default().prefer_socket(false);
    builder = match userinfo {
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            builder
                .user(Some(substitute(user, username, password)))
                .pass(pass.map(|p| substitute(p, username, password)))
        }
        None => with_config_user(builder, username, password),
    };
    let (net, addr) = match address.split_once('(') {
        Some((net, rest)) => match rest.strip_suffix(')') {
            Some(addr) => (net, addr),
            None => return Err(invalid("missing `)` after the address")),
        },
        None => (address, ""),
    };
    builder = match net {
        "" | "tcp" | "tcp4" | "tcp6" => {
            let (host, port) = if addr.is_empty() {
                ("127.0.0.1".to_owned(), 3306)
            } else {
                split_host_port(addr)?
            };
            builder.ip_or_hostname(host).tcp_port(port)
        }
        "unix" => builder.socket(Some(if addr.is_empty() {
            "/tmp/mysql.sock"
        } else {
            addr
        })),
        _ => {
            return Err(invalid(
                "unsupported network: use tcp(host:port) or unix(path)",
            ));
        }
    };
    let (db, query) = match tail.split_once('?') {
        Some((db, query)) => (db, Some(query)),
        None => (tail, None),
    };
    if !db.is_empty() {
        let db = percent_decode_str(db)
            .decode_utf8()
            .map_err(|_| invalid("the database name is not valid percent-encoded UTF-8"))?;
        builder = builder.db_name(Some(db.into_owned()));
    }
    let mut system_vars = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = query_unescape(value)?;
        match name {
            // Go's driver: false (the default), preferred, skip-verify, true.
            "tls" => {
                tls.mode_given = true;
                match value.as_str() {
                    "" | "false" => tls.mode = SslMode::Disable,
                    "preferred" => tls.mode = SslMode::Prefer,
                    "skip-verify" => {
                        tls.mode = SslMode::Require;
                        tls.skip_verify = true;
                    }
                    "true" => tls.mode = SslMode::VerifyFull,
                    _ => {
                        return Err(invalid(
                            "tls must be true, false, preferred or skip-verify (a CA goes in the tls_ca field, with tls=true)",
                        ));
                    }
                }
            }
            "allowCleartextPasswords" => {
                builder = builder.enable_cleartext_plugin(matches!(value.as_str(), "true" | "1"));
            }
            n if GO_DRIVER_PARAMS.contains(&n) => {}
            // Go's driver sets any other parameter as a session system variable.
            n if !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !n.as_bytes()[0].is_ascii_digit() =>
            {
                system_vars.push(format!("{n}={value}"));
            }
            _ => return Err(invalid("a parameter name is not a valid identifier")),
        }
    }
    if !system_vars.is_empty() {
        // `setup` runs on every new connection and again after a pooled connection is
        // reset, so the variables hold for every statement leash sends.
        builder = builder.setup(vec![format!("SET {}", system_vars.join(", "))]);
    }
    Ok(builder)
}

/// Uses the configured username and password when the connection URL names no user.
pub(super) fn with_config_user(
    builder: OptsBuilder,
    username: &str,
    password: &str,
) -> OptsBuilder {
    if username.is_empty() {
        return builder;
    }
    builder
        .user(Some(username))
        .pass((!password.is_empty()).then(|| password.to_owned()))
}

/// Connection options for `config` (see [`MySqlConfig::connection_url`]). Errors never
/// repeat the URL or the password.
pub fn connection_opts(config: &MySqlConfig) -> Result<Opts, DbError> {
    let url = config.connection_url.trim();
    if url.is_empty() {
        return Err(invalid("connection_url is empty"));
    }
    let password = config.password.expose_secret();
    // TLS from the Go DSN's `tls=`, then the configuration's fields. A `mysql://` URL's
    // own parameters (`require_ssl`, …) stand unless fields are given.
    let mut tls = TlsOptions {
        mode: SslMode::Disable,
        ..TlsOptions::default()
    };
    let scheme = url.find("://").map(|i| &url[..i]).filter(|s| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    let builder = match scheme {
        Some("mysql") => {
            let user = utf8_percent_encode(&config.username, USERINFO).to_string();
            let pass = utf8_percent_encode(password, USERINFO).to_string();
            let url = substitute(url, &user, &pass);
            let opts = Opts::from_url(&url)
                .map_err(|e| invalid(scrub(&e.to_string(), &[password, &pass])))?;
            let has_user = opts.user().is_some();
            let explicit_socket_choice = url.contains("prefer_socket=");
            let mut builder = OptsBuilder::from_opts(opts);
            if !explicit_socket_choice {
                // Connect where the URL says; mysql_async would otherwise switch to the
                // server's unix socket on loopback, possibly as a different account.
                builder = builder.prefer_socket(false);
            }
            if has_user {
                builder
            } else {
                with_config_user(builder, &config.username, password)
            }
        }
        Some(_) => {
            return Err(invalid(
                "unsupported scheme: use mysql://… or a Go DSN user:password@tcp(host:port)/db",
            ));
        }
        None => go_dsn_opts(url, &config.username, password, &mut tls)?,
    };
    tls.overlay(&config.tls);
    let builder = if tls.mode_given {
        builder.ssl_opts(ssl_opts(&tls)?)
    } else {
        builder
    };
    let max = config.max_open_connections.max(1);
    let Some(constraints) = PoolConstraints::new(0, max) else {
        return Err(invalid("max_open_connections is out of range"));
    };
    let pool_opts = PoolOpts::new()
        .with_constraints(constraints)
        .with_inactive_connection_ttl(IDLE_TTL);
    Ok(Opts::from(
        builder
            .enable_cleartext_plugin(config.allow_cleartext_password)
            .pool_opts(pool_opts),
    ))
}

/// The TLS mode `connection_opts` gives `config` (what [`super::MySqlTarget::connect`]
/// needs to fall back to plain text under `tls=preferred`).
pub(super) fn tls_mode(config: &MySqlConfig) -> SslMode {
    let mut tls = TlsOptions {
        mode: SslMode::Disable,
        ..TlsOptions::default()
    };
    let url = config.connection_url.trim();
    if !url.contains("://") {
        let _ = go_dsn_opts(url, "", "", &mut tls);
    }
    tls.overlay(&config.tls);
    tls.effective_mode()
}

/// Where `mysql_async` reads PEM from (its own type for this is not exported).
enum Source {
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
}

fn pem_source(p: &Pem) -> Result<Source, DbError> {
    match p {
        Pem::File(path) => Ok(Source::File(path.clone())),
        Pem::Inline(text) => Ok(Source::Bytes(text.as_bytes().to_vec())),
        Pem::System => Err(invalid("sslrootcert=system is not a MySQL setting")),
    }
}

/// `mysql_async`'s TLS options for `tls` (rustls underneath, ring provider), or `None`
/// for `disable`. MySQL has no `verify-ca`: the driver cannot check the chain without
/// the name, so that mode is refused rather than silently made stricter or weaker.
fn ssl_opts(tls: &TlsOptions) -> Result<Option<SslOpts>, DbError> {
    let mode = tls.effective_mode();
    let mut opts = SslOpts::default();
    match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => {
            opts = opts.with_danger_accept_invalid_certs(true);
        }
        SslMode::VerifyCa => {
            return Err(invalid(
                "a CA with tls=preferred would verify the chain only, which leash cannot do for MySQL: use tls=true (chain and name, tls_server_name to set the name) or tls=skip-verify",
            ));
        }
        SslMode::VerifyFull => {
            if let Some(root) = &tls.root_cert
                && *root != Pem::System
            {
                let root = match pem_source(root)? {
                    Source::File(p) => p.into(),
                    Source::Bytes(b) => b.into(),
                };
                opts = opts
                    .with_root_certs(vec![root])
                    .with_disable_built_in_roots(true);
            }
        }
    }
    if let Some(name) = &tls.server_name {
        opts = opts.with_danger_tls_hostname_override(Some(name.clone()));
    }
    if let Some(key) = &tls.client_key {
        // Vault's `tls_certificate_key`: one PEM with the key and the certificate.
        let key_source = match key {
            PemKey::File(path) => Source::File(path.clone()),
            PemKey::Inline(text) => Source::Bytes(text.expose_secret().as_bytes().to_vec()),
        };
        let cert_source = match &tls.client_cert {
            Some(c) => pem_source(c)?,
            None => match &key_source {
                Source::File(p) => Source::File(p.clone()),
                Source::Bytes(b) => Source::Bytes(b.clone()),
            },
        };
        let identity = match (cert_source, key_source) {
            (Source::File(c), Source::File(k)) => ClientIdentity::new(c.into(), k.into()),
            (Source::File(c), Source::Bytes(k)) => ClientIdentity::new(c.into(), k.into()),
            (Source::Bytes(c), Source::File(k)) => ClientIdentity::new(c.into(), k.into()),
            (Source::Bytes(c), Source::Bytes(k)) => ClientIdentity::new(c.into(), k.into()),
        };
        opts = opts.with_client_identity(Some(identity));
    }
    Ok(Some(opts))
}
