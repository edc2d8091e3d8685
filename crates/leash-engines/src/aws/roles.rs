//! `aws/roles/:name`: checking and storing roles (each field's error names it).

use super::*;

impl AwsSecrets {
    pub(super) async fn write_role(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let key = format!("role/{name}");
        let existing: Option<AwsRole> = self.load(&key).await?;
        let list = |field: &str, old: Option<&Vec<String>>| -> Result<Vec<String>, CoreError> {
            Ok(match fields::string_list(data, field)? {
                Some(l) => l,
                None => old.cloned().unwrap_or_default(),
            })
        };
        let map = |field: &str,
                   old: Option<&BTreeMap<String, String>>|
         -> Result<BTreeMap<String, String>, CoreError> {
            Ok(match fields::string_map(data, field)? {
                Some(m) => m,
                None => old.cloned().unwrap_or_default(),
            })
        };
        let text = |field: &str, old: Option<&String>| -> Result<String, CoreError> {
            Ok(match fields::string(data, field)? {
                Some(s) => s.trim().to_owned(),
                None => old.cloned().unwrap_or_default(),
            })
        };
        let e = existing.as_ref();
        let credential_type = text("credential_type", e.map(|e| &e.credential_type))?;
        if !TYPES.contains(&credential_type.as_str()) {
            return Err(CoreError::invalid(
                "credential_type must be one of \"assumed_role\", \"federation_token\" or \"iam_user\"",
            ));
        }
        let role_arns = list("role_arns", e.map(|e| &e.role_arns))?;
        let policy_arns = list("policy_arns", e.map(|e| &e.policy_arns))?;
        let iam_groups = list("iam_groups", e.map(|e| &e.iam_groups))?;
        let session_tags = map("session_tags", e.map(|e| &e.session_tags))?;
        let iam_tags = map("iam_tags", e.map(|e| &e.iam_tags))?;
        let mut policy_document = text("policy_document", e.map(|e| &e.policy_document))?;
        if !policy_document.is_empty() {
            policy_document = policy_json("policy_document", &policy_document)?;
        }
        let permissions_boundary_arn = text(
            "permissions_boundary_arn",
            e.map(|e| &e.permissions_boundary_arn),
        )?;
        let user_path = text("user_path", e.map(|e| &e.user_path))?;
        let default_sts_ttl = match fields::duration(data, "default_sts_ttl")? {
            Some(d) => d.as_secs(),
            None => e.map_or(0, |e| e.default_sts_ttl),
        };
        let max_sts_ttl = match fields::duration(data, "max_sts_ttl")? {
            Some(d) => d.as_secs(),
            None => e.map_or(0, |e| e.max_sts_ttl),
        };
        for (i, a) in role_arns.iter().enumerate() {
            if role_name_of(a).is_none() {
                return Err(CoreError::invalid(format!(
                    "role_arns[{i}] is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
                )));
            }
        }
        for (i, a) in policy_arns.iter().enumerate() {
            if !a.starts_with("arn:") {
                return Err(CoreError::invalid(format!(
                    "policy_arns[{i}] is not an ARN"
                )));
            }
        }
        match credential_type.as_str() {
            "assumed_role" => {
                if role_arns.is_empty() {
                    return Err(CoreError::invalid(
                        "role_arns is required for credential_type \"assumed_role\"",
                    ));
                }
            }
            "iam_user" => {
                if !role_arns.is_empty() {
                    return Err(CoreError::invalid(
                        "role_arns is only for credential_type \"assumed_role\"",
                    ));
                }
                if data.contains_key("default_sts_ttl") || data.contains_key("max_sts_ttl") {
                    return Err(CoreError::invalid(
                        "default_sts_ttl and max_sts_ttl are for STS credential types; iam_user leases follow config/lease",
                    ));
                }
                if policy_arns.is_empty() && policy_document.is_empty() && iam_groups.is_empty() {
                    return Err(CoreError::invalid(
                        "credential_type \"iam_user\" needs policy_arns, policy_document or iam_groups",
                    ));
                }
                let path_ok = user_path.is_empty()
                    || (user_path.starts_with('/')
                        && user_path.ends_with('/')
                        && user_path.len() <= 512);
                if !path_ok {
                    return Err(CoreError::invalid("user_path must start and end with '/'"));
                }
                if !permissions_boundary_arn.is_empty()
                    && !permissions_boundary_arn.starts_with("arn:")
                {
                    return Err(CoreError::invalid("permissions_boundary_arn is not an ARN"));
                }
            }
            _ => {
                if !role_arns.is_empty() {
                    return Err(CoreError::invalid(
                        "role_arns is only for credential_type \"assumed_role\"",
                    ));
                }
            }
        }
        if credential_type != "iam_user"
            && (!iam_groups.is_empty()
                || !user_path.is_empty()
                || !permissions_boundary_arn.is_empty())
        {
            return Err(CoreError::invalid(
                "iam_groups, user_path and permissions_boundary_arn are only for credential_type \"iam_user\"",
            ));
        }
        if max_sts_ttl > 0 && default_sts_ttl > max_sts_ttl {
            return Err(CoreError::invalid(format!(
                "default_sts_ttl ({default_sts_ttl}s) cannot be greater than max_sts_ttl ({max_sts_ttl}s)"
            )));
        }
        let role = AwsRole {
            credential_type,
            role_arns,
            policy_document,
            policy_arns,
            session_tags,
            iam_groups,
            iam_tags,
            permissions_boundary_arn,
            user_path,
            default_sts_ttl,
            max_sts_ttl,
        };
        self.save(&key, &role).await?;
        Ok(Response::warnings_only(
            fields::ignored_warning(data, ROLE_FIELDS)
                .into_iter()
                .collect(),
        ))
    }

    pub(super) fn role_json(r: &AwsRole) -> Value {
        json!({
            "credential_type": r.credential_type,
            "role_arns": r.role_arns,
            "policy_document": r.policy_document,
            "policy_arns": r.policy_arns,
            "session_tags": r.session_tags,
            "iam_groups": r.iam_groups,
            "iam_tags": r.iam_tags,
            "permissions_boundary_arn": r.permissions_boundary_arn,
            "user_path": r.user_path,
            "default_sts_ttl": r.default_sts_ttl,
            "max_sts_ttl": r.max_sts_ttl,
        })
    }
}
