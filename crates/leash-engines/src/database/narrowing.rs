//! Request-time narrowing of database credentials.
//!
//! A role may declare what a request may narrow to:
//! `narrowing = { schemas = ["public"], tables = ["*"], privileges = ["SELECT", "INSERT"] }`
//! and put a `{{grants}}` statement among its `creation_statements`. A request for
//! `creds/<role>` may then name `tables` (`schema.table`; for MySQL `database.table`)
//! and `privileges`; leash checks each against the role's set and the target's catalogue
//! and writes the `GRANT` statements itself, quoting every identifier. Without
//! parameters the credential gets the role's whole set.
//!
//! Names are restricted to plain identifiers (`[A-Za-z_][A-Za-z0-9_$]*`, at most 63
//! bytes per part), so nothing a caller sends can change a statement's meaning even
//! before quoting.

use leash_backend::{CoreError, fields};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The placeholder statement replaced by the generated grants.
pub(super) const GRANTS_PLACEHOLDER: &str = "{{grants}}";

/// Most tables one request may name.
pub(super) const MAX_TABLES: usize = 100;

/// The SQL dialect the grants are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Postgres,
    MySql,
}

impl Dialect {
    fn privileges(self) -> &'static [&'static str] {
        match self {
            Dialect::Postgres => &[
                "SELECT",
                "INSERT",
                "UPDATE",
                "DELETE",
                "TRUNCATE",
                "REFERENCES",
                "TRIGGER",
            ],
            Dialect::MySql => &["SELECT", "INSERT", "UPDATE", "DELETE"],
        }
    }

    fn quote(self, ident: &str) -> String {
        match self {
            Dialect::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
            Dialect::MySql => format!("`{}`", ident.replace('`', "``")),
        }
    }
}

/// What a role lets requests narrow to (stored with the role).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(super) struct Narrowing {
    /// Schemas (PostgreSQL) or databases (MySQL) the tables may come from.
    pub(super) schemas: Vec<String>,
    /// Table names (`table` or `schema.table`) inside those schemas, or `*` for all.
    pub(super) tables: Vec<String>,
    /// Privileges that may be granted (upper case).
    pub(super) privileges: Vec<String>,
    /// MySQL only: the host part of the account the grants go to (default `%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) host: Option<String>,
}

/// A narrowed request, checked against the role's [`Narrowing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Narrowed {
    /// `(schema, table)` pairs, or empty for the role's whole set.
    pub(super) tables: Vec<(String, String)>,
    /// Privileges to grant.
    pub(super) privileges: Vec<String>,
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn list(v: Option<&Value>, field: &str) -> Result<Vec<String>, CoreError> {
    let mut m = Map::new();
    if let Some(v) = v {
        m.insert(field.to_owned(), v.clone());
    }
    Ok(fields::string_list(&m, field)?.unwrap_or_default())
}

impl Narrowing {
    /// Parses a role's `narrowing` object.
    pub(super) fn parse(v: &Value, dialect: Dialect) -> Result<Narrowing, CoreError> {
        let Value::Object(o) = v else {
            return Err(CoreError::invalid(
                "narrowing must be an object {schemas, tables, privileges}",
            ));
        };
        for k in o.keys() {
            if !matches!(k.as_str(), "schemas" | "tables" | "privileges" | "host") {
                return Err(CoreError::invalid(format!(
                    "narrowing: unknown key {k:?} (expected schemas, tables, privileges, host)"
                )));
            }
        }
        let schemas = list(o.get("schemas"), "narrowing.schemas")?;
        if schemas.is_empty() {
            return Err(CoreError::invalid(
                "narrowing.schemas must name at least one schema",
            ));
        }
        if let Some(i) = schemas.iter().position(|s| !is_ident(s)) {
            return Err(CoreError::invalid(format!(
                "narrowing.schemas[{i}] is not a plain identifier"
            )));
        }
        let mut tables = list(o.get("tables"), "narrowing.tables")?;
        if tables.is_empty() {
            tables.push("*".to_owned());
        }
        for (i, t) in tables.iter().enumerate() {
            let ok = t == "*"
                || match t.split_once('.') {
                    Some((s, n)) => is_ident(s) && is_ident(n) && schemas.contains(&s.to_owned()),
                    None => is_ident(t),
                };
            if !ok {
                return Err(CoreError::invalid(format!(
                    "narrowing.tables[{i}] must be \"*\", a table name or schema.table within narrowing.schemas"
                )));
            }
        }
        let mut privileges = Vec::new();
        for (i, p) in list(o.get("privileges"), "narrowing.privileges")?
            .iter()
            .enumerate()
        {
            let up = p.to_ascii_uppercase();
            if !dialect.privileges().contains(&up.as_str()) {
                return Err(CoreError::invalid(format!(
                    "narrowing.privileges[{i}] is not one of {}",
                    dialect.privileges().join(", ")
                )));
            }
            if !privileges.contains(&up) {
                privileges.push(up);
            }
        }
        if privileges.is_empty() {
            return Err(CoreError::invalid(
                "narrowing.privileges must name at least one privilege",
            ));
        }
        let host = match o.get("host") {
            None | Some(Value::Null) => None,
            Some(Value::String(h)) if dialect == Dialect::MySql => {
                if h.is_empty()
                    || h.len() > 255
                    || !h.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '%' | '_' | ':')
                    })
                {
                    return Err(CoreError::invalid(
                        "narrowing.host is not a MySQL host pattern",
                    ));
                }
                Some(h.clone())
            }
            Some(_) => {
                return Err(CoreError::invalid(
                    "narrowing.host is a MySQL account host (a string)",
                ));
            }
        };
        Ok(Narrowing {
            schemas,
            tables,
            privileges,
            host,
        })
    }

    /// Whether `schema.table` lies inside the role's set.
    fn covers(&self, schema: &str, table: &str) -> bool {
        self.schemas.iter().any(|s| s == schema)
            && self.tables.iter().any(|t| {
                t == "*"
                    || t == table
                    || t.split_once('.')
                        .is_some_and(|(s, n)| s == schema && n == table)
            })
    }

    /// Checks a request's `tables` and `privileges` (comma strings or lists) against the
    /// role's set. Errors name the offending entry (by position, and by name when it is
    /// a plain identifier) and come before anything is created.
    pub(super) fn narrow(&self, data: &Map<String, Value>) -> Result<Narrowed, CoreError> {
        let requested = fields::string_list(data, "tables")?.unwrap_or_default();
        if requested.len() > MAX_TABLES {
            return Err(CoreError::invalid(format!(
                "tables: at most {MAX_TABLES} tables per request"
            )));
        }
        let mut tables = Vec::new();
        for (i, t) in requested.iter().enumerate() {
            let named = |why: &str| {
                let shown = if t.split('.').all(is_ident) {
                    format!("tables[{i}] ({t})")
                } else {
                    format!("tables[{i}]")
                };
                CoreError::invalid(format!("{shown}: {why}"))
            };
            let (schema, table) = match t.split_once('.') {
                Some((s, n)) => (s, n),
                None if self.schemas.len() == 1 => (self.schemas[0].as_str(), t.as_str()),
                None => return Err(named("name it as schema.table")),
            };
            if !is_ident(schema) || !is_ident(table) {
                return Err(named("not a plain schema.table name"));
            }
            if !self.covers(schema, table) {
                return Err(named("outside the narrowing of this role"));
            }
            let pair = (schema.to_owned(), table.to_owned());
            if !tables.contains(&pair) {
                tables.push(pair);
            }
        }
        let mut privileges = Vec::new();
        for (i, p) in fields::string_list(data, "privileges")?
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let up = p.to_ascii_uppercase();
            if !self.privileges.contains(&up) {
                let shown = if is_ident(p) {
                    format!("privileges[{i}] ({p})")
                } else {
                    format!("privileges[{i}]")
                };
                return Err(CoreError::invalid(format!(
                    "{shown}: not among this role's privileges ({})",
                    self.privileges.join(", ")
                )));
            }
            if !privileges.contains(&up) {
                privileges.push(up);
            }
        }
        if privileges.is_empty() {
            privileges = self.privileges.clone();
        }
        Ok(Narrowed { tables, privileges })
    }

    /// The `GRANT` statements for `n`, with `{{name}}` for the new user.
    pub(super) fn grants(&self, n: &Narrowed, dialect: Dialect) -> Vec<String> {
        let privs = n.privileges.join(", ");
        let mut out = Vec::new();
        match dialect {
            Dialect::Postgres => {
                let mut schemas: Vec<&str> = if n.tables.is_empty() {
                    self.schemas.iter().map(String::as_str).collect()
                } else {
                    n.tables.iter().map(|(s, _)| s.as_str()).collect()
                };
                schemas.sort_unstable();
                schemas.dedup();
                for s in &schemas {
                    out.push(format!(
                        "GRANT USAGE ON SCHEMA {} TO \"{{{{name}}}}\";",
                        dialect.quote(s)
                    ));
                }
                if n.tables.is_empty() {
                    for s in &schemas {
                        let named: Vec<String> = self
                            .tables
                            .iter()
                            .filter(|t| *t != "*")
                            .filter_map(|t| match t.split_once('.') {
                                Some((ts, tn)) if ts == *s => Some(tn.to_owned()),
                                Some(_) => None,
                                None => Some(t.clone()),
                            })
                            .collect();
                        if self.tables.iter().any(|t| t == "*") {
                            out.push(format!(
                                "GRANT {privs} ON ALL TABLES IN SCHEMA {} TO \"{{{{name}}}}\";",
                                dialect.quote(s)
                            ));
                        } else if !named.is_empty() {
                            let list: Vec<String> = named
                                .iter()
                                .map(|t| format!("{}.{}", dialect.quote(s), dialect.quote(t)))
                                .collect();
                            out.push(format!(
                                "GRANT {privs} ON TABLE {} TO \"{{{{name}}}}\";",
                                list.join(", ")
                            ));
                        }
                    }
                } else {
                    let list: Vec<String> = n
                        .tables
                        .iter()
                        .map(|(s, t)| format!("{}.{}", dialect.quote(s), dialect.quote(t)))
                        .collect();
                    out.push(format!(
                        "GRANT {privs} ON TABLE {} TO \"{{{{name}}}}\";",
                        list.join(", ")
                    ));
                }
            }
            Dialect::MySql => {
                let host = self.host.as_deref().unwrap_or("%");
                let to = format!("'{{{{name}}}}'@'{host}'");
                let targets: Vec<String> = if n.tables.is_empty() {
                    self.schemas
                        .iter()
                        .flat_map(|s| {
                            if self.tables.iter().any(|t| t == "*") {
                                vec![format!("{}.*", dialect.quote(s))]
                            } else {
                                self.tables
                                    .iter()
                                    .filter_map(|t| match t.split_once('.') {
                                        Some((ts, tn)) if ts == s => Some(tn.to_owned()),
                                        Some(_) => None,
                                        None => Some(t.clone()),
                                    })
                                    .map(|t| format!("{}.{}", dialect.quote(s), dialect.quote(&t)))
                                    .collect()
                            }
                        })
                        .collect()
                } else {
                    n.tables
                        .iter()
                        .map(|(s, t)| format!("{}.{}", dialect.quote(s), dialect.quote(t)))
                        .collect()
                };
                for t in targets {
                    out.push(format!("GRANT {privs} ON {t} TO {to};"));
                }
            }
        }
        out
    }

    /// How the credential's scope reads in events and lease lookups:
    /// `SELECT on public.user_metrics, public.events`.
    pub(super) fn describe(&self, n: &Narrowed) -> String {
        let what = if n.tables.is_empty() {
            if self.tables.iter().any(|t| t == "*") {
                self.schemas
                    .iter()
                    .map(|s| format!("{s}.*"))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                self.tables.join(", ")
            }
        } else {
            n.tables
                .iter()
                .map(|(s, t)| format!("{s}.{t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("{} on {what}", n.privileges.join(", "))
    }
}

/// `statements` with each `{{grants}}` statement replaced by `grants`.
pub(super) fn expand(statements: &[String], grants: &[String]) -> Vec<String> {
    statements
        .iter()
        .flat_map(|s| {
            if s.trim() == GRANTS_PLACEHOLDER {
                grants.to_vec()
            } else {
                vec![s.clone()]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn role() -> Narrowing {
        Narrowing::parse(
            &json!({"schemas": ["public"], "tables": ["*"], "privileges": ["select", "INSERT"]}),
            Dialect::Postgres,
        )
        .unwrap()
    }

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_request_narrows_to_named_tables_and_privileges() {
        let r = role();
        let n = r
            .narrow(&data(
                json!({"tables": "public.user_metrics,events", "privileges": "select"}),
            ))
            .unwrap();
        assert_eq!(
            n.tables,
            vec![
                ("public".to_owned(), "user_metrics".to_owned()),
                ("public".to_owned(), "events".to_owned())
            ]
        );
        assert_eq!(
            r.grants(&n, Dialect::Postgres),
            vec![
                "GRANT USAGE ON SCHEMA \"public\" TO \"{{name}}\";",
                "GRANT SELECT ON TABLE \"public\".\"user_metrics\", \"public\".\"events\" TO \"{{name}}\";"
            ]
        );
        assert_eq!(
            r.describe(&n),
            "SELECT on public.user_metrics, public.events"
        );
        let whole = r.narrow(&Map::new()).unwrap();
        assert_eq!(
            r.grants(&whole, Dialect::Postgres)[1],
            "GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA \"public\" TO \"{{name}}\";"
        );
    }

    #[test]
    fn hostile_names_are_refused_before_anything_is_made() {
        let r = role();
        for bad in [
            "public.t; DROP TABLE x",
            "public.\"t\"",
            "public.t'--",
            "pg_catalog.pg_authid",
            "other.t",
            "public.",
            ".t",
            "a.b.c",
            "public.t t",
        ] {
            let e = r
                .narrow(&data(json!({"tables": [bad]})))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("tables[0]"), "{bad}: {e}");
            assert!(!e.contains(';') && !e.contains('\''), "{bad}: {e}");
        }
        let many: Vec<String> = (0..10_000).map(|i| format!("public.t{i}")).collect();
        assert!(r.narrow(&data(json!({"tables": many}))).is_err());
        let e = r
            .narrow(&data(json!({"privileges": ["DELETE"]})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("privileges[0]"), "{e}");
    }

    #[test]
    fn role_narrowing_is_validated() {
        for bad in [
            json!("x"),
            json!({"schemas": [], "privileges": ["SELECT"]}),
            json!({"schemas": ["pub lic"], "privileges": ["SELECT"]}),
            json!({"schemas": ["public"], "privileges": ["DROP"]}),
            json!({"schemas": ["public"], "tables": ["other.t"], "privileges": ["SELECT"]}),
            json!({"schemas": ["public"], "privileges": ["SELECT"], "extra": 1}),
        ] {
            assert!(Narrowing::parse(&bad, Dialect::Postgres).is_err(), "{bad}");
        }
        let my = Narrowing::parse(
            &json!({"schemas": ["app"], "tables": ["t1"], "privileges": ["SELECT"]}),
            Dialect::MySql,
        )
        .unwrap();
        let n = my.narrow(&data(json!({"tables": "app.t1"}))).unwrap();
        assert_eq!(
            my.grants(&n, Dialect::MySql),
            vec!["GRANT SELECT ON `app`.`t1` TO '{{name}}'@'%';"]
        );
    }

    #[test]
    fn the_placeholder_expands_in_place() {
        let s = vec![
            "CREATE".to_owned(),
            " {{grants}} ".to_owned(),
            "END".to_owned(),
        ];
        assert_eq!(
            expand(&s, &["G1".to_owned(), "G2".to_owned()]),
            vec!["CREATE", "G1", "G2", "END"]
        );
    }
}
