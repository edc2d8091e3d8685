//! `aws/creds/:name` and `aws/sts/:name`: issuing IAM users and STS credentials under
//! leases (intent first), and deleting an IAM user at revocation.

use super::*;

impl AwsSecrets {
    pub(super) async fn issue(
        &self,
        req: &BackendRequest<'_>,
        name: &str,
        sts_path: bool,
    ) -> Result<Option<Response>, CoreError> {
        let role: AwsRole = self
            .load(&format!("role/{name}"))
            .await?
            .ok_or_else(|| CoreError::invalid(format!("unknown role: {name}")))?;
        if role.credential_type == "iam_user" {
            if sts_path {
                return Err(CoreError::invalid(
                    "role has credential_type \"iam_user\": ask aws/creds, not aws/sts",
                ));
            }
            for f in ["role_arn", "ttl", "role_session_name"] {
                if req.data.get(f).is_some_and(|v| !v.is_null()) {
                    return Err(CoreError::invalid(format!(
                        "{f} applies to STS credential types, not \"iam_user\""
                    )));
                }
            }
            return self.issue_user(req, name, &role).await;
        }
        self.issue_sts(req, name, &role).await
    }

    pub(super) async fn issue_user(
        &self,
        req: &BackendRequest<'_>,
        name: &str,
        role: &AwsRole,
    ) -> Result<Option<Response>, CoreError> {
        let aws = self.client_now().await?;
        let lease_cfg: LeaseConfig = self.load("config/lease").await?.unwrap_or_default();
        let display = req
            .caller
            .map(|c| c.entry.display_name.as_str())
            .unwrap_or("token");
        let cut = |s: &str| aws_chars(s).chars().take(8).collect::<String>();
        let mut username = format!(
            "leash-{}-{}-{}-{}",
            cut(display),
            cut(name),
            SystemClock.unix(),
            random::base62(20)
        );
        username.truncate(64);
        let internal = LeaseData {
            role: name.to_owned(),
            credential_type: "iam_user".into(),
            username: username.clone(),
            role_arn: String::new(),
            irrevocable: false,
        };
        let pending = self
            .leases
            .begin(
                req,
                LeaseRequest {
                    path: format!("creds/{name}"),
                    ttl: Duration::from_secs(lease_cfg.lease),
                    max_ttl: Duration::from_secs(lease_cfg.lease_max),
                    renewable: true,
                    internal: serde_json::to_value(&internal)
                        .map_err(|e| CoreError::internal(e.to_string()))?,
                    caps: Default::default(),
                },
            )
            .await?;
        let made = async {
            let mut p: Vec<(&str, String)> = vec![("UserName", username.clone())];
            if !role.user_path.is_empty() {
                p.push(("Path", role.user_path.clone()));
            }
            if !role.permissions_boundary_arn.is_empty() {
                p.push(("PermissionsBoundary", role.permissions_boundary_arn.clone()));
            }
            let tag_keys: Vec<String> = (1..=role.iam_tags.len())
                .flat_map(|i| {
                    [
                        format!("Tags.member.{i}.Key"),
                        format!("Tags.member.{i}.Value"),
                    ]
                })
                .collect();
            let mut tk = tag_keys.iter();
            for (k, v) in &role.iam_tags {
                if let (Some(kk), Some(vk)) = (tk.next(), tk.next()) {
                    p.push((kk.as_str(), k.clone()));
                    p.push((vk.as_str(), v.clone()));
                }
            }
            aws.call(Service::Iam, "CreateUser", &p).await?;
            if !role.policy_document.is_empty() {
                aws.call(
                    Service::Iam,
                    "PutUserPolicy",
                    &[
                        ("UserName", username.clone()),
                        ("PolicyName", format!("leash-{name}")),
                        ("PolicyDocument", role.policy_document.clone()),
                    ],
                )
                .await?;
            }
            for arn in &role.policy_arns {
                aws.call(
                    Service::Iam,
                    "AttachUserPolicy",
                    &[("UserName", username.clone()), ("PolicyArn", arn.clone())],
                )
                .await?;
            }
            for g in &role.iam_groups {
                aws.call(
                    Service::Iam,
                    "AddUserToGroup",
                    &[("UserName", username.clone()), ("GroupName", g.clone())],
                )
                .await?;
            }
            let k = aws
                .call(
                    Service::Iam,
                    "CreateAccessKey",
                    &[("UserName", username.clone())],
                )
                .await?;
            let id = xml::first(&k, "AccessKeyId").map_err(ApiError::Decode)?;
            let secret = xml::first(&k, "SecretAccessKey").map_err(ApiError::Decode)?;
            match (id, secret) {
                (Some(i), Some(s)) => Ok((i, SecretString::from(s))),
                _ => Err(ApiError::Decode(
                    "CreateAccessKey: no access key in the answer".into(),
                )),
            }
        }
        .await;
        let (id, secret) = match made {
            Ok(v) => v,
            Err(e) => {
                self.leases.abandon(&pending).await?;
                return Err(upstream(&e));
            }
        };
        if let Err(e) = self.leases.activate(&pending).await {
            self.leases.abandon(&pending).await?;
            return Err(e);
        }
        let mut r = Response::data(json!({
            "access_key": id,
            "secret_key": secret.expose_secret(),
            "security_token": null,
            "session_token": null,
        }));
        r.secret = Some(LeaseInfo {
            lease_id: pending.id,
            renewable: true,
            lease_duration: pending.ttl,
        });
        Ok(Some(r))
    }

    pub(super) async fn issue_sts(
        &self,
        req: &BackendRequest<'_>,
        name: &str,
        role: &AwsRole,
    ) -> Result<Option<Response>, CoreError> {
        let assumed = role.credential_type == "assumed_role";
        let role_arn = match fields::string(req.data, "role_arn")?.filter(|s| !s.is_empty()) {
            Some(a) if !assumed => {
                let _ = a;
                return Err(CoreError::invalid(
                    "role_arn applies to credential_type \"assumed_role\" only",
                ));
            }
            Some(a) => {
                if !role.role_arns.contains(&a) {
                    return Err(CoreError::invalid(
                        "role_arn is not one of the role's role_arns",
                    ));
                }
                a
            }
            None if assumed => match role.role_arns.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(CoreError::invalid(
                        "missing required field \"role_arn\": the role allows several",
                    ));
                }
            },
            None => String::new(),
        };
        let ttl = match fields::duration(req.data, "ttl")? {
            Some(d) if d.as_secs() > 0 => d.as_secs(),
            _ if role.default_sts_ttl > 0 => role.default_sts_ttl,
            _ => DEFAULT_STS_SECONDS,
        };
        if role.max_sts_ttl > 0 && ttl > role.max_sts_ttl {
            return Err(CoreError::invalid(format!(
                "ttl ({ttl}s) is greater than the role's max_sts_ttl ({}s)",
                role.max_sts_ttl
            )));
        }
        let given_name = match fields::string(req.data, "role_session_name")? {
            Some(n) if !n.trim().is_empty() => {
                let n = n.trim().to_owned();
                if n.len() > MAX_SESSION_NAME || aws_chars(&n) != n {
                    return Err(CoreError::invalid(
                        "role_session_name must be at most 64 characters of A-Z, a-z, 0-9 and _+=,.@-",
                    ));
                }
                Some(n)
            }
            _ => None,
        };
        let aws = self.client_now().await?;
        let internal = LeaseData {
            role: name.to_owned(),
            credential_type: role.credential_type.clone(),
            username: String::new(),
            role_arn: role_arn.clone(),
            irrevocable: true,
        };
        let pending = self
            .leases
            .begin(
                req,
                LeaseRequest {
                    path: format!(
                        "{}/{name}",
                        if req.path.starts_with("sts/") {
                            "sts"
                        } else {
                            "creds"
                        }
                    ),
                    ttl: Duration::from_secs(ttl),
                    max_ttl: Duration::from_secs(ttl),
                    renewable: false,
                    internal: serde_json::to_value(&internal)
                        .map_err(|e| CoreError::internal(e.to_string()))?,
                    caps: Default::default(),
                },
            )
            .await?;
        let who = given_name.unwrap_or_else(|| agent_name(req));
        let duration = pending.ttl.max(MIN_STS_SECONDS).to_string();
        let mut p: Vec<(String, String)> = Vec::new();
        let action = if assumed {
            p.push(("RoleArn".into(), role_arn.clone()));
            p.push((
                "RoleSessionName".into(),
                session_name(&who, &pending.trace_id, MAX_SESSION_NAME),
            ));
            for (i, (k, v)) in role.session_tags.iter().enumerate() {
                p.push((format!("Tags.member.{}.Key", i + 1), k.clone()));
                p.push((format!("Tags.member.{}.Value", i + 1), v.clone()));
            }
            "AssumeRole"
        } else {
            p.push((
                "Name".into(),
                session_name(&who, &pending.trace_id, MAX_FEDERATION_NAME),
            ));
            "GetFederationToken"
        };
        p.push(("DurationSeconds".into(), duration));
        if !role.policy_document.is_empty() {
            p.push(("Policy".into(), role.policy_document.clone()));
        }
        for (i, a) in role.policy_arns.iter().enumerate() {
            p.push((format!("PolicyArns.member.{}.arn", i + 1), a.clone()));
        }
        let params: Vec<(&str, String)> = p.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let answer = match aws.call(Service::Sts, action, &params).await {
            Ok(a) => a,
            Err(e) => {
                self.leases.abandon(&pending).await?;
                return Err(upstream(&e));
            }
        };
        let get = |tag: &str| xml::first(&answer, tag).ok().flatten();
        let (Some(id), Some(secret), Some(token)) = (
            get("AccessKeyId"),
            get("SecretAccessKey"),
            get("SessionToken"),
        ) else {
            self.leases.abandon(&pending).await?;
            return Err(upstream(&ApiError::Decode(format!(
                "{action}: no credentials in the answer"
            ))));
        };
        let secret = SecretString::from(secret);
        let token = SecretString::from(token);
        let arn = get("Arn").unwrap_or_default();
        if let Err(e) = self.leases.activate(&pending).await {
            self.leases.abandon(&pending).await?;
            return Err(e);
        }
        let mut r = Response::data(json!({
            "access_key": id,
            "secret_key": secret.expose_secret(),
            "security_token": token.expose_secret(),
            "session_token": token.expose_secret(),
            "arn": arn,
        }));
        r.secret = Some(LeaseInfo {
            lease_id: pending.id,
            renewable: false,
            lease_duration: pending.ttl,
        });
        r = r.with_warning(
            "STS credentials cannot be revoked in AWS before they expire: revoking this lease ends leash's record only; locking the identity (sys/containment/lock) denies the assumed role's sessions issued before the lock",
        );
        if pending.ttl < MIN_STS_SECONDS {
            r = r.with_warning(format!(
                "STS issues credentials for at least {MIN_STS_SECONDS}s: these outlive their {}s lease",
                pending.ttl
            ));
        }
        Ok(Some(r))
    }

    /// Deletes an IAM user and everything that keeps it from being deleted.
    pub(super) async fn delete_user(aws: &Aws, user: &str) -> Result<(), ApiError> {
        let u = || ("UserName", user.to_owned());
        let ok_if_gone = |r: Result<String, ApiError>| match r {
            Ok(_) => Ok(()),
            Err(e) if is_no_such_entity(&e) => Ok(()),
            Err(e) => Err(e),
        };
        let keys = match aws.call(Service::Iam, "ListAccessKeys", &[u()]).await {
            Ok(x) => xml::texts(&x, "AccessKeyId").map_err(ApiError::Decode)?,
            Err(e) if is_no_such_entity(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        for k in keys {
            ok_if_gone(
                aws.call(Service::Iam, "DeleteAccessKey", &[u(), ("AccessKeyId", k)])
                    .await,
            )?;
        }
        let inline = aws.call(Service::Iam, "ListUserPolicies", &[u()]).await?;
        for p in xml::texts(&inline, "member").map_err(ApiError::Decode)? {
            ok_if_gone(
                aws.call(Service::Iam, "DeleteUserPolicy", &[u(), ("PolicyName", p)])
                    .await,
            )?;
        }
        let attached = aws
            .call(Service::Iam, "ListAttachedUserPolicies", &[u()])
            .await?;
        for p in xml::texts(&attached, "PolicyArn").map_err(ApiError::Decode)? {
            ok_if_gone(
                aws.call(Service::Iam, "DetachUserPolicy", &[u(), ("PolicyArn", p)])
                    .await,
            )?;
        }
        let groups = aws.call(Service::Iam, "ListGroupsForUser", &[u()]).await?;
        for g in xml::texts(&groups, "GroupName").map_err(ApiError::Decode)? {
            ok_if_gone(
                aws.call(
                    Service::Iam,
                    "RemoveUserFromGroup",
                    &[u(), ("GroupName", g)],
                )
                .await,
            )?;
        }
        ok_if_gone(aws.call(Service::Iam, "DeleteUser", &[u()]).await)
    }
}
