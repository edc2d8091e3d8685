use base64::Engine as _;
use leash_types::SecretString;
use serde_json::{Map, Value, json};

use super::config::DbConfig;
use super::public_error;
use super::redact::redact_url;
use super::roles::{check_templates, grants_on_objects, statements};
use crate::database::DbError;

fn data(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[test]
fn statement_fields_take_every_vault_form() {
    let d = data(json!({
        "a": ["CREATE ROLE \"{{name}}\";", " GRANT x TO \"{{name}}\"; ", ""],
        "b": "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT, INSERT ON db.* TO '{{name}}'@'%';",
        "c": "[\"one;\", \"two;\"]",
        "d": base64::engine::general_purpose::STANDARD.encode("DROP ROLE \"{{name}}\";"),
        "e": "",
        "f": 3,
    }));
    assert_eq!(statements(&d, "a").unwrap().unwrap().len(), 2);
    let b = statements(&d, "b").unwrap().unwrap();
    assert_eq!(b.len(), 1, "never split on commas");
    assert_eq!(
        statements(&d, "c").unwrap().unwrap(),
        vec!["one;".to_owned(), "two;".to_owned()]
    );
    assert_eq!(
        statements(&d, "d").unwrap().unwrap(),
        vec!["DROP ROLE \"{{name}}\";".to_owned()]
    );
    assert!(statements(&d, "e").unwrap().unwrap().is_empty());
    assert!(statements(&d, "f").is_err());
    assert!(statements(&d, "missing").unwrap().is_none());
}

#[test]
fn templates_are_checked_per_operation() {
    let ok = vec![
        "CREATE ROLE \"{{name}}\" PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';".to_owned(),
    ];
    check_templates("creation_statements", &ok, true, true).unwrap();
    let e = check_templates("revocation_statements", &ok, false, false).unwrap_err();
    assert!(e.to_string().contains("revocation_statements[0]"), "{e}");
    assert!(e.to_string().contains("{{password}}"), "{e}");
    let bad = vec!["x".to_owned(), "GRANT {{role}} TO \"{{name}}\"".to_owned()];
    let e = check_templates("creation_statements", &bad, true, true).unwrap_err();
    assert!(
        e.to_string().contains("creation_statements[1]") && e.to_string().contains("{{role}}"),
        "{e}"
    );
}

#[test]
fn direct_table_grants_are_spotted() {
    assert!(grants_on_objects(
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
    ));
    assert!(grants_on_objects(
        "CREATE ROLE \"{{name}}\"; grant select on t1 to \"{{name}}\";"
    ));
    assert!(!grants_on_objects(
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' IN ROLE agent_readonly;"
    ));
    assert!(!grants_on_objects("GRANT agent_readonly TO \"{{name}}\";"));
}

#[test]
fn urls_lose_literal_passwords_only() {
    assert_eq!(
        redact_url("postgresql://{{username}}:{{password}}@db:5432/x"),
        "postgresql://{{username}}:{{password}}@db:5432/x"
    );
    assert_eq!(
        redact_url("postgresql://root:hunter2@db:5432/x"),
        "postgresql://root:[redacted]@db:5432/x"
    );
    assert_eq!(
        redact_url("{{username}}:{{password}}@tcp(127.0.0.1:3306)/"),
        "{{username}}:{{password}}@tcp(127.0.0.1:3306)/"
    );
    assert_eq!(
        redact_url("root:pw@tcp(127.0.0.1:3306)/"),
        "root:[redacted]@tcp(127.0.0.1:3306)/"
    );
}

#[test]
fn driver_errors_lose_quoted_values() {
    let cases = [
        (
            DbError::Connect {
                message: "db error: FATAL: password authentication failed for user \"postgres\"".into(),
            },
            "cannot connect to database: db error: FATAL: password authentication failed for user \"…\"",
        ),
        (
            DbError::Connect {
                message: "ERROR 1045 (28000): Access denied for user 'root'@'10.1.2.3' (using password: YES)".into(),
            },
            "cannot connect to database: ERROR 1045 (28000): Access denied for user '…'@'…' (using password: YES)",
        ),
        (
            DbError::Statement {
                index: 1,
                sqlstate: "42710".into(),
                message: "role \"v-token-ro-abc\" already exists".into(),
            },
            "statement 1 failed: 42710: role \"…\" already exists",
        ),
        (
            DbError::Connect {
                message: "Connection refused (os error 111)".into(),
            },
            "cannot connect to database: Connection refused (os error 111)",
        ),
        (
            DbError::Connect {
                message: "unterminated \"secret".into(),
            },
            "cannot connect to database: unterminated \"…\"",
        ),
    ];
    for (e, want) in cases {
        assert_eq!(public_error(&e), want);
    }
}

#[test]
fn keyword_strings_and_query_parameters_lose_passwords() {
    let cases = [
        (
            "host=db password=hunter2 user=root",
            "host=db password=[redacted] user=root",
        ),
        ("host=db PASSWORD=hunter2", "host=db PASSWORD=[redacted]"),
        (
            "host=db password = hunter2 dbname=x",
            "host=db password = [redacted] dbname=x",
        ),
        ("password='hunter 2' host=db", "password=[redacted] host=db"),
        (
            r"host=db password='it\'s a\\ secret' user=u",
            "host=db password=[redacted] user=u",
        ),
        (
            "host=db sslpassword=k3y pwd=x Pwd=y",
            "host=db sslpassword=[redacted] pwd=[redacted] Pwd=[redacted]",
        ),
        (
            "host=db password={{password}} user={{username}}",
            "host=db password={{password}} user={{username}}",
        ),
        (
            "host=db password='{{password}}'",
            "host=db password='{{password}}'",
        ),
        (
            "postgresql://db/x?password=hunter2&sslmode=disable",
            "postgresql://db/x?password=[redacted]&sslmode=disable",
        ),
        (
            "postgresql://db/x?sslmode=disable&PassWord=hunter2",
            "postgresql://db/x?sslmode=disable&PassWord=[redacted]",
        ),
        (
            "postgresql://db/x?pass%77ord=hunter2",
            "postgresql://db/x?pass%77ord=[redacted]",
        ),
        (
            "postgresql://u:pw@db/x?sslpassword=k&a=b",
            "postgresql://u:[redacted]@db/x?sslpassword=[redacted]&a=b",
        ),
        (
            "postgresql://db/x?password={{password}}",
            "postgresql://db/x?password={{password}}",
        ),
        (
            "mysql://u@h:3306/db?password=hunter2",
            "mysql://u@h:3306/db?password=[redacted]",
        ),
        (
            "u@tcp(h:3306)/db?pwd=hunter2&x=1",
            "u@tcp(h:3306)/db?pwd=[redacted]&x=1",
        ),
        (
            "u:pw@tcp(h:3306)/db?passwd=z",
            "u:[redacted]@tcp(h:3306)/db?passwd=[redacted]",
        ),
    ];
    for (url, want) in cases {
        let got = redact_url(url);
        assert_eq!(got, want, "{url}");
        assert!(!got.contains("hunter") && !got.contains("secret"), "{got}");
    }
}

#[test]
fn allowed_roles_match_exact_star_and_prefix_globs() {
    let mut c = DbConfig {
        plugin_name: "postgresql-database-plugin".into(),
        connection_url: String::new(),
        username: String::new(),
        password: SecretString::from(String::new()),
        pending_password: None,
        allowed_roles: vec!["ro".into(), "agent-*".into()],
        verify_connection: true,
        max_open_connections: 4,
        max_idle_connections: 0,
        max_connection_lifetime: 0,
        password_authentication: "scram-sha-256".into(),
        scram_iterations: 4096,
        root_rotation_statements: Vec::new(),
        observe_sessions: false,
        allow_cleartext_password: false,
        tls_ca: String::new(),
        tls_certificate: String::new(),
        private_key: None,
        tls_server_name: String::new(),
        tls_skip_verify: false,
    };
    assert!(c.allows("ro") && c.allows("agent-x") && !c.allows("rw"));
    c.allowed_roles = vec!["*".into()];
    assert!(c.allows("anything"));
    c.allowed_roles.clear();
    assert!(!c.allows("ro"));
}
