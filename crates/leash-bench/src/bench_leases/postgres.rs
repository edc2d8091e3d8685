//! The PostgreSQL side of `bench-leases`: the `--postgres` URL, the run's scratch
//! database and roles, and their cleanup.

use std::time::Duration;

use super::{Error, TAG_LEN, error_text, failed};
use leash_engines::database::postgres::quote_ident;
use leash_types::secret::scrub;
use leash_types::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// The PostgreSQL given by `--postgres`: how to connect, and how to describe it without
/// its password.
pub(super) struct Pg {
    pub(super) config: tokio_postgres::Config,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) password: Option<SecretString>,
}

impl Pg {
    pub(super) fn parse(url: &SecretString) -> Result<Pg, Error> {
        let url = url.expose_secret();
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            failed(format!(
                "invalid --postgres URL: {}",
                scrub(&e.to_string(), &[url])
            ))
        })?;
        let host = match config.get_hosts() {
            [Host::Tcp(h)] => h.clone(),
            [] => "localhost".to_owned(),
            [Host::Unix(_)] => {
                return Err(failed(
                    "--postgres: Unix-socket hosts are not supported; give a TCP host (postgresql://user@127.0.0.1:5432/postgres)",
                ));
            }
            _ => return Err(failed("--postgres: give exactly one host")),
        };
        let port = match config.get_ports() {
            [] => 5432,
            [p] => *p,
            _ => return Err(failed("--postgres: give exactly one port")),
        };
        let user = config
            .get_user()
            .map(str::to_owned)
            .ok_or_else(|| failed("--postgres: the URL names no user"))?;
        let password = match config.get_password() {
            Some(p) => Some(SecretString::from(
                String::from_utf8(p.to_vec())
                    .map_err(|_| failed("--postgres: the password is not UTF-8"))?,
            )),
            None => None,
        };
        Ok(Pg {
            config,
            host,
            port,
            user,
            password,
        })
    }

    /// `user@host:port`, for people.
    pub(super) fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    pub(super) fn secrets(&self) -> Vec<&str> {
        self.password
            .as_ref()
            .map(|p| vec![p.expose_secret()])
            .unwrap_or_default()
    }

    /// Opens one connection, to `db` or to the URL's database.
    pub(super) async fn connect(&self, db: Option<&str>) -> Result<tokio_postgres::Client, Error> {
        let mut config = self.config.clone();
        if let Some(d) = db {
            config.dbname(d);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            failed(format!(
                "connecting to PostgreSQL at {}: {}",
                self.label(),
                scrub(&with_causes(&e), &self.secrets())
            ))
        })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// leash's `connection_url` for database `db` (credentials as placeholders).
    pub(super) fn leash_url(&self, db: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let password = if self.password.is_some() {
            ":{{password}}"
        } else {
            ""
        };
        format!(
            "postgresql://{{{{username}}}}{password}@{host}:{}/{db}",
            self.port
        )
    }
}

/// `e` and its causes, `: `-separated (the driver's own text omits the cause of a
/// failed connection, e.g. "connection refused").
pub(super) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        cause = c.source();
    }
    text
}

/// A PostgreSQL error as text, with the server's message when there is one.
pub(super) fn pg_error(what: &str, e: &tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => failed(format!(
            "PostgreSQL, {what}: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => failed(format!("PostgreSQL, {what}: {}", with_causes(e))),
    }
}

/// The names of one run; everything it creates in PostgreSQL carries `tag`.
#[derive(Clone, Debug)]
pub(super) struct Scratch {
    pub(super) tag: String,
    pub(super) db: String,
}

impl Scratch {
    pub(super) fn new() -> Scratch {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let tag: String = leash_types::random::bytes::<TAG_LEN>()
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        Scratch {
            db: format!("leash_bench_{tag}"),
            tag,
        }
    }

    /// A leash role name (at most 8 characters, so usernames keep all of it).
    pub(super) fn leash_role(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.tag)
    }

    /// The start of every username leash issues for `leash_role` to the root token.
    pub(super) fn user_prefix(leash_role: &str) -> String {
        format!("v-root-{leash_role}-")
    }

    pub(super) fn raw_role(&self, iterations: u32, i: u32) -> String {
        format!("bench_raw_{}_{iterations}_{i}", self.tag)
    }

    pub(super) fn group(&self) -> String {
        format!("bench_readers_{}", self.tag)
    }
}

/// Catalogues that role creation and dropping churn (roles, memberships, grants and
/// their dependencies).
pub(super) const CHURNED_CATALOGS: &str =
    "pg_catalog.pg_authid, pg_catalog.pg_auth_members, pg_catalog.pg_shdepend, pg_catalog.pg_class";

/// Vacuums the catalogues the previous measurement churned, so the next one does not
/// pay for its dead rows (creating and dropping a thousand roles with grants otherwise
/// slows the next thousand by ~30 %). Unmeasured; a failure (no privilege) is a warning.
pub(super) async fn settle(db: &tokio_postgres::Client) {
    if let Err(e) = db
        .batch_execute(&format!("VACUUM {CHURNED_CATALOGS}"))
        .await
    {
        eprintln!(
            "warning: VACUUM of the role catalogues failed, figures may carry the previous measurement's dead rows: {}",
            error_text(pg_error("VACUUM", &e))
        );
    }
}

/// Roles whose name starts with `prefix`.
pub(super) async fn roles_with_prefix(
    c: &tokio_postgres::Client,
    prefix: &str,
) -> Result<i64, Error> {
    let row = c
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_roles WHERE starts_with(rolname::text, $1)",
            &[&prefix],
        )
        .await
        .map_err(|e| pg_error("counting roles", &e))?;
    row.try_get(0).map_err(|e| pg_error("counting roles", &e))
}

/// Drops the scratch database (ending its sessions) and every role of the run.
pub(super) async fn cleanup(pg: &Pg, s: &Scratch) {
    let admin = match pg.connect(None).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "warning: cleanup could not connect ({}); drop database {} and the roles named v-root-{}-*, bench_raw_{}_*, bench_readers_{} by hand",
                match e {
                    Error::Failed(m) => m,
                    Error::Interrupted => "interrupted".into(),
                },
                s.db,
                s.tag,
                s.tag,
                s.tag
            );
            return;
        }
    };
    // Dropping the database first removes every grant on its objects, so the roles
    // drop without DROP OWNED. FORCE ends leash's pooled sessions still open.
    if let Err(e) = admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&s.db)
        ))
        .await
    {
        eprintln!(
            "warning: dropping database {}: {}",
            s.db,
            error_text(pg_error("DROP DATABASE", &e))
        );
    }
    let rows = admin
        .query(
            "SELECT rolname::text FROM pg_catalog.pg_roles \
             WHERE starts_with(rolname::text, $1) OR starts_with(rolname::text, $2) \
                OR rolname::text = $3",
            &[
                &format!("v-root-{}-", s.tag),
                &format!("bench_raw_{}_", s.tag),
                &s.group(),
            ],
        )
        .await;
    let names: Vec<String> = match rows {
        Ok(rows) => rows.iter().filter_map(|r| r.try_get(0).ok()).collect(),
        Err(e) => {
            eprintln!(
                "warning: listing the run's roles: {}",
                error_text(pg_error("pg_roles", &e))
            );
            return;
        }
    };
    // Members first, the group role last.
    let (group, members): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| *n == s.group());
    let mut dropped = 0usize;
    for chunk in members.chunks(1000).chain(group.chunks(1)) {
        let list: Vec<String> = chunk.iter().map(|n| quote_ident(n)).collect();
        match admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", list.join(", ")))
            .await
        {
            Ok(()) => dropped += chunk.len(),
            Err(e) => eprintln!(
                "warning: dropping roles: {}",
                error_text(pg_error("DROP ROLE", &e))
            ),
        }
    }
    eprintln!(
        "cleanup: dropped database {} and {dropped} leftover role(s)",
        s.db
    );
}

/// A scratch PostgreSQL database for the suite's agent figure, with a random tag; every
/// role whose name holds the tag is dropped with it.
pub(crate) struct ScratchDb {
    pub(super) pg: Pg,
    pub(super) s: Scratch,
}

impl ScratchDb {
    /// Creates database `leash_bench_<tag>` on `url`.
    pub(crate) async fn create(url: &SecretString) -> Result<ScratchDb, Error> {
        let pg = Pg::parse(url)?;
        let s = Scratch::new();
        let admin = pg.connect(None).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&s.db)))
            .await
            .map_err(|e| pg_error("CREATE DATABASE", &e))?;
        Ok(ScratchDb { pg, s })
    }

    /// The run's random tag.
    pub(crate) fn tag(&self) -> &str {
        &self.s.tag
    }

    /// The body of `database/config/<name>` for this database.
    pub(crate) fn leash_config(&self) -> Value {
        let password = self
            .pg
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned())
            .unwrap_or_default();
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": self.pg.leash_url(&self.s.db),
            "username": self.pg.user,
            "password": password,
            "allowed_roles": "*",
        })
    }

    /// Drops the database and every role whose name holds the tag.
    pub(crate) async fn drop_all(self) {
        cleanup(&self.pg, &self.s).await;
        let Ok(admin) = self.pg.connect(None).await else {
            return;
        };
        let pattern = format!("%{}%", self.s.tag);
        if let Ok(rows) = admin
            .query(
                "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname::text LIKE $1",
                &[&pattern],
            )
            .await
        {
            for r in rows {
                if let Ok(name) = r.try_get::<_, String>(0) {
                    let _ = admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(&name)))
                        .await;
                }
            }
        }
    }
}
