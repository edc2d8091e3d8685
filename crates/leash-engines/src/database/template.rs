//! Vault's statement templating: `{{name}}` (alias `{{username}}`), `{{password}}`,
//! `{{expiration}}`.
//!
//! Values are inserted as they are, without quoting or escaping: statements quote
//! identifiers and literals themselves (`"{{name}}"`, `'{{password}}'`), as Vault's
//! plugins expect. That is safe for what leash generates — usernames are `[a-z0-9_-]`,
//! passwords `[A-Za-z0-9-]`, SCRAM verifiers base64 and `$:` — and is why an unknown
//! placeholder is an error rather than left in place.

use std::fmt;

use leash_types::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

use super::DbError;

/// Go's `2006-01-02 15:04:05-0700`, the layout Vault's PostgreSQL plugin uses for
/// `{{expiration}}`; rendered in UTC, so the offset is `+0000`.
const EXPIRATION_FORMAT: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day] [hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
);

/// The values a statement template may refer to. Its `Debug` never shows the password.
pub struct Vars {
    name: String,
    password: Option<SecretString>,
    expiration: Option<OffsetDateTime>,
}

impl Vars {
    /// Values for the role `name`, with no password and no expiration yet.
    pub fn new(name: impl Into<String>) -> Vars {
        Vars {
            name: name.into(),
            password: None,
            expiration: None,
        }
    }

    /// Sets the value of `{{password}}`.
    pub fn with_password(mut self, password: SecretString) -> Vars {
        self.password = Some(password);
        self
    }

    /// Sets the value of `{{expiration}}`.
    pub fn with_expiration(mut self, expiration: OffsetDateTime) -> Vars {
        self.expiration = Some(expiration);
        self
    }

    /// The role name (`{{name}}`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The password, if set.
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }

    /// The expiration, if set.
    pub fn expiration(&self) -> Option<OffsetDateTime> {
        self.expiration
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vars")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// `expiration` as `{{expiration}}` renders it: `2026-11-29 15:04:05+0000`.
pub fn format_expiration(expiration: OffsetDateTime) -> String {
    expiration
        .to_offset(time::UtcOffset::UTC)
        .format(EXPIRATION_FORMAT)
        .unwrap_or_default()
}

/// Substitutes the placeholders of `template` with `vars`. Whitespace inside the braces
/// is allowed (`{{ name }}`). The result may contain the password: callers must not log
/// it and should drop it as soon as it has been sent.
pub fn render(template: &str, vars: &Vars) -> Result<String, DbError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    let mut consumed = 0;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(DbError::UnterminatedPlaceholder {
                offset: consumed + open,
            });
        };
        match after[..close].trim() {
            "name" | "username" => out.push_str(&vars.name),
            "password" => match &vars.password {
                Some(p) => out.push_str(p.expose_secret()),
                None => return Err(DbError::MissingValue { name: "password" }),
            },
            "expiration" => match vars.expiration {
                Some(e) => out.push_str(&format_expiration(e)),
                None => return Err(DbError::MissingValue { name: "expiration" }),
            },
            other => {
                return Err(DbError::UnknownPlaceholder {
                    name: other.to_owned(),
                });
            }
        }
        let used = open + 2 + close + 2;
        consumed += used;
        rest = &rest[used..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn vars() -> Vars {
        Vars::new("v-agent-ro-abc")
            .with_password(SecretString::from("Pa55-word".to_owned()))
            .with_expiration(datetime!(2026-11-29 15:04:05 +01:00))
    }

    #[test]
    fn renders_the_issue_role() {
        let s = render(
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            &vars(),
        )
        .unwrap();
        assert_eq!(
            s,
            "CREATE ROLE \"v-agent-ro-abc\" WITH LOGIN PASSWORD 'Pa55-word' VALID UNTIL '2026-11-29 14:04:05+0000';"
        );
        assert_eq!(
            render("{{username}}/{{ name }}", &vars()).unwrap(),
            "v-agent-ro-abc/v-agent-ro-abc"
        );
        assert_eq!(
            render("no placeholders", &vars()).unwrap(),
            "no placeholders"
        );
        assert_eq!(render("", &vars()).unwrap(), "");
    }

    #[test]
    fn rejects_bad_templates() {
        let e = render("GRANT {{role}} TO \"{{name}}\"", &vars()).unwrap_err();
        assert!(matches!(&e, DbError::UnknownPlaceholder { name } if name == "role"));
        assert!(e.to_string().contains("{{role}}"), "{e}");
        let e = render("ok {{name}} then {{name", &vars()).unwrap_err();
        assert!(
            matches!(e, DbError::UnterminatedPlaceholder { offset: 17 }),
            "{e:?}"
        );
        let e = render("'{{password}}'", &Vars::new("x")).unwrap_err();
        assert!(matches!(e, DbError::MissingValue { name: "password" }));
        let e = render("'{{expiration}}'", &Vars::new("x")).unwrap_err();
        assert!(matches!(e, DbError::MissingValue { name: "expiration" }));
    }

    #[test]
    fn debug_hides_password() {
        let d = format!("{:?}", vars());
        assert!(!d.contains("Pa55"), "{d}");
        assert!(d.contains("v-agent-ro-abc"));
    }
}
