//! `auth/kubernetes/role/:name`: which service accounts may log in (names and
//! namespaces, both required, `*` globs allowed), the audience their tokens must carry,
//! how the identity alias is formed, and the token fields.

use leash_backend::{CoreError, TOKEN_FIELDS, TokenParams, fields};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::verify;

/// A stored role.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct KubeRole {
    pub(crate) bound_service_account_names: Vec<String>,
    pub(crate) bound_service_account_namespaces: Vec<String>,
    #[serde(default)]
    pub(crate) audience: String,
    /// `serviceaccount_uid` or `serviceaccount_name`.
    #[serde(default = "uid_source")]
    pub(crate) alias_name_source: String,
    #[serde(default)]
    pub(crate) token: TokenParams,
}

fn uid_source() -> String {
    "serviceaccount_uid".to_owned()
}

const ROLE_FIELDS: &[&str] = &[
    "bound_service_account_names",
    "bound_service_account_namespaces",
    "audience",
    "alias_name_source",
];

fn check_list(field: &str, list: &[String]) -> Result<(), CoreError> {
    if list.is_empty() {
        return Err(CoreError::invalid(format!(
            "{field} is required: list the names (\"*\" for all, \"prefix-*\" globs allowed)"
        )));
    }
    if list.len() > 1 && list.iter().any(|v| v == "*") {
        return Err(CoreError::invalid(format!(
            "{field}: \"*\" cannot be mixed with other values"
        )));
    }
    Ok(())
}

impl KubeRole {
    /// Applies a write to `self` (absent fields keep their value), checks the result,
    /// and returns warnings.
    pub(crate) fn update(&mut self, data: &Map<String, Value>) -> Result<Vec<String>, CoreError> {
        if self.token.token_type.is_empty() {
            // `TokenParams::default()` leaves it empty; serde's default is "default".
            self.token.token_type = "default".to_owned();
        }
        if self.alias_name_source.is_empty() {
            self.alias_name_source = uid_source();
        }
        if let Some(v) = fields::string_list(data, "bound_service_account_names")? {
            self.bound_service_account_names = v;
        }
        if let Some(v) = fields::string_list(data, "bound_service_account_namespaces")? {
            self.bound_service_account_namespaces = v;
        }
        if let Some(a) = fields::string(data, "audience")? {
            self.audience = a.trim().to_owned();
        }
        if let Some(s) = fields::string(data, "alias_name_source")? {
            self.alias_name_source = match s.trim() {
                "" | "serviceaccount_uid" => uid_source(),
                "serviceaccount_name" => "serviceaccount_name".to_owned(),
                _ => {
                    return Err(CoreError::invalid(
                        "invalid alias_name_source: expected \"serviceaccount_uid\" or \"serviceaccount_name\"",
                    ));
                }
            };
        }
        self.token.update(data)?;
        check_list(
            "bound_service_account_names",
            &self.bound_service_account_names,
        )?;
        check_list(
            "bound_service_account_namespaces",
            &self.bound_service_account_namespaces,
        )?;
        if self.bound_service_account_names == ["*"]
            && self.bound_service_account_namespaces == ["*"]
        {
            return Err(CoreError::invalid(
                "bound_service_account_names and bound_service_account_namespaces can not both be \"*\"",
            ));
        }
        let mut known: Vec<&str> = ROLE_FIELDS.to_vec();
        known.extend_from_slice(TOKEN_FIELDS);
        let mut warnings: Vec<String> = fields::ignored_warning(data, &known).into_iter().collect();
        if self.audience.is_empty() {
            warnings.push(
                "audience is not set: a service-account token issued for any audience (another service's token) can log in with this role; set audience"
                    .to_owned(),
            );
        }
        Ok(warnings)
    }

    /// Whether the service account `namespace/name` is bound.
    pub(crate) fn check_bound(&self, namespace: &str, name: &str) -> Result<(), CoreError> {
        if !self
            .bound_service_account_names
            .iter()
            .any(|p| verify::glob_match(p, name))
        {
            return Err(CoreError::Forbidden(
                "service account name not authorized".to_owned(),
            ));
        }
        if !self
            .bound_service_account_namespaces
            .iter()
            .any(|p| verify::glob_match(p, namespace))
        {
            return Err(CoreError::Forbidden("namespace not authorized".to_owned()));
        }
        Ok(())
    }

    /// The role as a read returns it.
    pub(crate) fn to_json(&self) -> Value {
        let mut m = self.token.to_json();
        for (k, v) in [
            (
                "bound_service_account_names",
                json!(self.bound_service_account_names),
            ),
            (
                "bound_service_account_namespaces",
                json!(self.bound_service_account_namespaces),
            ),
            ("audience", json!(self.audience)),
            ("alias_name_source", json!(self.alias_name_source)),
        ] {
            m.insert(k.to_owned(), v);
        }
        Value::Object(m)
    }
}
