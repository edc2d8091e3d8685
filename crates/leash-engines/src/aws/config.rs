//! `aws/config/root`, `aws/config/lease`'s storage and `rotate-root`: the root key pair
//! and the AWS client built from it. The secret key is sealed, never returned, and only
//! sent where it was configured for.

use super::*;

impl AwsSecrets {
    pub(super) fn http(&self) -> Result<reqwest::Client, CoreError> {
        if let Ok(g) = self.client.lock()
            && let Some(c) = g.as_ref()
        {
            return Ok(c.clone());
        }
        let c = https::client(None, api::TIMEOUT).map_err(|e| upstream(&e))?;
        if let Ok(mut g) = self.client.lock() {
            *g = Some(c.clone());
        }
        Ok(c)
    }

    pub(super) fn aws(&self, c: &RootConfig) -> Result<Aws, CoreError> {
        let region = if c.region.is_empty() {
            "us-east-1".to_owned()
        } else {
            c.region.clone()
        };
        Ok(Aws {
            access_key: c.access_key.clone(),
            secret_key: SecretString::from(c.secret_key.expose_secret().to_owned()),
            iam_endpoint: if c.iam_endpoint.is_empty() {
                "https://iam.amazonaws.com".to_owned()
            } else {
                c.iam_endpoint.clone()
            },
            sts_endpoint: if c.sts_endpoint.is_empty() {
                format!("https://sts.{region}.amazonaws.com")
            } else {
                c.sts_endpoint.clone()
            },
            region,
            max_retries: u32::try_from(c.max_retries).unwrap_or(3),
            client: self.http()?,
        })
    }

    pub(super) async fn client_now(&self) -> Result<Aws, CoreError> {
        let c: RootConfig = self.load("config/root").await?.ok_or_else(|| {
            CoreError::Upstream("aws: the engine is not configured (config/root)".into())
        })?;
        self.aws(&c)
    }

    pub(super) async fn write_root(
        &self,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let _g = self.config_lock.lock().await;
        let existing: Option<RootConfig> = self.load("config/root").await?;
        let endpoint = |field: &str, old: Option<&String>| -> Result<String, CoreError> {
            match fields::string(data, field)? {
                Some(e) if e.trim().is_empty() => Ok(String::new()),
                Some(e) => {
                    let u = reqwest::Url::parse(e.trim())
                        .map_err(|_| CoreError::invalid(format!("{field} is not a URL")))?;
                    if !matches!(u.scheme(), "https" | "http")
                        || !u.username().is_empty()
                        || u.password().is_some()
                        || u.query().is_some()
                    {
                        return Err(CoreError::invalid(format!(
                            "{field} must be an http(s) URL without credentials or query"
                        )));
                    }
                    Ok(e.trim().trim_end_matches('/').to_owned())
                }
                None => Ok(old.cloned().unwrap_or_default()),
            }
        };
        let iam_endpoint = endpoint("iam_endpoint", existing.as_ref().map(|e| &e.iam_endpoint))?;
        let sts_endpoint = endpoint("sts_endpoint", existing.as_ref().map(|e| &e.sts_endpoint))?;
        let access_key = match (fields::string(data, "access_key")?, &existing) {
            (Some(a), _) if !a.trim().is_empty() => a.trim().to_owned(),
            (_, Some(e)) => e.access_key.clone(),
            _ => return Err(CoreError::invalid("missing required field \"access_key\"")),
        };
        let secret_key = match (fields::string(data, "secret_key")?, &existing) {
            (Some(s), _) if !s.trim().is_empty() => SecretString::from(s.trim().to_owned()),
            (_, Some(e)) => {
                // The stored secret only goes where it was sent with.
                if e.access_key != access_key
                    || e.iam_endpoint != iam_endpoint
                    || e.sts_endpoint != sts_endpoint
                {
                    return Err(CoreError::invalid(
                        "missing required field \"secret_key\": it must be given again when access_key, iam_endpoint or sts_endpoint changes",
                    ));
                }
                SecretString::from(e.secret_key.expose_secret().to_owned())
            }
            _ => return Err(CoreError::invalid("missing required field \"secret_key\"")),
        };
        let region = match fields::string(data, "region")? {
            Some(r) => r.trim().to_owned(),
            None => existing
                .as_ref()
                .map(|e| e.region.clone())
                .unwrap_or_default(),
        };
        if !region.is_empty()
            && !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(CoreError::invalid("region is not an AWS region name"));
        }
        let max_retries = match fields::integer(data, "max_retries")? {
            Some(n) if (-1..=100).contains(&n) => n,
            Some(_) => return Err(CoreError::invalid("max_retries must be between -1 and 100")),
            None => existing.as_ref().map_or(-1, |e| e.max_retries),
        };
        let cfg = RootConfig {
            access_key,
            secret_key,
            region,
            iam_endpoint,
            sts_endpoint,
            max_retries,
            retired_access_key: existing.and_then(|e| e.retired_access_key),
        };
        self.save("config/root", &cfg).await?;
        Ok(Response::warnings_only(
            fields::ignored_warning(data, ROOT_FIELDS)
                .into_iter()
                .collect(),
        ))
    }

    pub(super) async fn rotate_root(&self) -> Result<Option<Response>, CoreError> {
        let _g = self.config_lock.lock().await;
        let mut cfg: RootConfig = self
            .load("config/root")
            .await?
            .ok_or_else(|| CoreError::invalid("no root credentials configured (config/root)"))?;
        let aws = self.aws(&cfg)?;
        let me = aws
            .call(Service::Iam, "GetUser", &[])
            .await
            .map_err(|e| upstream(&e))?;
        let user = xml::first(&me, "UserName")
            .map_err(|e| upstream(&ApiError::Decode(e)))?
            .ok_or_else(|| upstream(&ApiError::Decode("GetUser: no UserName".into())))?;
        let made = aws
            .call(
                Service::Iam,
                "CreateAccessKey",
                &[("UserName", user.clone())],
            )
            .await
            .map_err(|e| upstream(&e))?;
        let new_id = xml::first(&made, "AccessKeyId").ok().flatten();
        let new_secret = xml::first(&made, "SecretAccessKey").ok().flatten();
        let (Some(new_id), Some(new_secret)) = (new_id, new_secret) else {
            return Err(upstream(&ApiError::Decode(
                "CreateAccessKey: no access key in the answer".into(),
            )));
        };
        // The new pair is stored before the old one is deleted: a failure from here on
        // leaves a working configuration and the old key named for deletion.
        let old = std::mem::replace(&mut cfg.access_key, new_id.clone());
        cfg.secret_key = SecretString::from(new_secret);
        cfg.retired_access_key = Some(old.clone());
        self.save("config/root", &cfg).await?;
        let new_aws = self.aws(&cfg)?;
        // A new key takes a moment to be usable everywhere in IAM: retry a little.
        let mut last = None;
        for attempt in 0..5u64 {
            match new_aws
                .call(
                    Service::Iam,
                    "DeleteAccessKey",
                    &[("UserName", user.clone()), ("AccessKeyId", old.clone())],
                )
                .await
            {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) if is_no_such_entity(&e) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        }
        if let Some(e) = last {
            return Err(upstream(&e));
        }
        cfg.retired_access_key = None;
        self.save("config/root", &cfg).await?;
        Ok(Some(Response::data(json!({"access_key": new_id}))))
    }
}
