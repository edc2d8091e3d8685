//! `kubernetes/config` and `kubernetes/roles/:name`: checking and storing the engine's
//! configuration (the JWT sealed, never returned, only sent to the host it was given
//! for) and its roles, and the API client built from the configuration.

use super::*;

impl KubernetesSecrets {
    pub(super) fn http(&self, ca: Option<String>) -> Result<reqwest::Client, CoreError> {
        if let Ok(guard) = self.client.lock()
            && let Some((have, c)) = guard.as_ref()
            && *have == ca
        {
            return Ok(c.clone());
        }
        let c = https::client(ca.as_deref(), api::TIMEOUT).map_err(|e| upstream(&e))?;
        if let Ok(mut guard) = self.client.lock() {
            *guard = Some((ca, c.clone()));
        }
        Ok(c)
    }

    /// The API server as configured now (the local CA and JWT filling gaps unless
    /// `disable_local_ca_jwt`).
    pub(super) async fn cluster(&self) -> Result<Cluster, CoreError> {
        let cfg: KubeConfig = self.load("config").await?.ok_or_else(|| {
            CoreError::Upstream("kubernetes: the engine is not configured (config)".into())
        })?;
        let ca = if !cfg.kubernetes_ca_cert.trim().is_empty() {
            Some(cfg.kubernetes_ca_cert.clone())
        } else if cfg.disable_local_ca_jwt {
            None
        } else {
            read_local("ca.crt").await
        };
        let jwt = match &cfg.service_account_jwt {
            Some(j) => SecretString::from(j.expose_secret().to_owned()),
            None if !cfg.disable_local_ca_jwt => match read_local("token").await {
                Some(t) => SecretString::from(t),
                None => {
                    return Err(CoreError::Upstream(
                        "kubernetes: no service_account_jwt configured and no local service-account token".into(),
                    ));
                }
            },
            None => {
                return Err(CoreError::Upstream(
                    "kubernetes: no service_account_jwt configured".into(),
                ));
            }
        };
        Ok(Cluster {
            host: cfg.kubernetes_host.clone(),
            jwt,
            client: self.http(ca)?,
        })
    }

    pub(super) async fn write_config(
        &self,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let existing: Option<KubeConfig> = self.load("config").await?;
        let host = match (fields::string(data, "kubernetes_host")?, &existing) {
            (Some(h), _) if !h.trim().is_empty() => normalise_host(&h)?,
            (_, Some(e)) => e.kubernetes_host.clone(),
            _ => {
                return Err(CoreError::invalid(
                    "missing required field \"kubernetes_host\"",
                ));
            }
        };
        let ca = match (fields::string(data, "kubernetes_ca_cert")?, &existing) {
            (Some(c), _) => c,
            (None, Some(e)) => e.kubernetes_ca_cert.clone(),
            (None, None) => String::new(),
        };
        if !ca.trim().is_empty() {
            https::check_ca(&ca)
                .map_err(|e| CoreError::invalid(format!("invalid kubernetes_ca_cert: {e}")))?;
        }
        let disable_local_ca_jwt = match fields::boolean(data, "disable_local_ca_jwt")? {
            Some(b) => b,
            None => existing.as_ref().is_some_and(|e| e.disable_local_ca_jwt),
        };
        let jwt = match (fields::string(data, "service_account_jwt")?, &existing) {
            (Some(j), _) if !j.trim().is_empty() => Some(SecretString::from(j.trim().to_owned())),
            (Some(_), _) => None,
            (None, Some(e)) => {
                // The stored JWT only goes to the host it was given for.
                if e.kubernetes_host != host && e.service_account_jwt.is_some() {
                    return Err(CoreError::invalid(
                        "missing required field \"service_account_jwt\": it must be given again when kubernetes_host changes",
                    ));
                }
                e.service_account_jwt
                    .as_ref()
                    .map(|j| SecretString::from(j.expose_secret().to_owned()))
            }
            (None, None) => None,
        };
        let cfg = KubeConfig {
            kubernetes_host: host,
            kubernetes_ca_cert: ca,
            service_account_jwt: jwt,
            disable_local_ca_jwt,
        };
        let mut warnings: Vec<String> = fields::ignored_warning(data, CONFIG_FIELDS)
            .into_iter()
            .collect();
        if cfg.service_account_jwt.is_none() && cfg.disable_local_ca_jwt {
            warnings.push("no service_account_jwt and disable_local_ca_jwt is set: issuing credentials will fail until a JWT is configured".into());
        }
        if cfg.kubernetes_host.starts_with("http://") {
            warnings.push("kubernetes_host is plain http: the service-account JWT and the tokens travel unencrypted".into());
        }
        self.save("config", &cfg).await?;
        Ok(Response::warnings_only(warnings))
    }

    pub(super) async fn write_role(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let key = format!("role/{name}");
        let existing: Option<KubeRole> = self.load(&key).await?;
        let str_or = |field: &str, old: Option<&String>| -> Result<String, CoreError> {
            Ok(match fields::string(data, field)? {
                Some(s) => s.trim().to_owned(),
                None => old.cloned().unwrap_or_default(),
            })
        };
        let allowed = match fields::string_list(data, "allowed_kubernetes_namespaces")? {
            Some(l) => l,
            None => existing
                .as_ref()
                .map(|e| e.allowed_kubernetes_namespaces.clone())
                .unwrap_or_default(),
        };
        if allowed.is_empty() {
            return Err(CoreError::invalid(
                "missing required field \"allowed_kubernetes_namespaces\" (a list of namespaces, or [\"*\"])",
            ));
        }
        for (i, n) in allowed.iter().enumerate() {
            if n != "*" && !is_k8s_name(n, 63) {
                return Err(CoreError::invalid(format!(
                    "allowed_kubernetes_namespaces[{i}] is not a namespace name (or \"*\")"
                )));
            }
        }
        if data.contains_key("allowed_kubernetes_namespace_selector") {
            return Err(CoreError::invalid(
                "allowed_kubernetes_namespace_selector is not supported: list the namespaces in allowed_kubernetes_namespaces",
            ));
        }
        let sa = str_or(
            "service_account_name",
            existing.as_ref().map(|e| &e.service_account_name),
        )?;
        let kr = str_or(
            "kubernetes_role_name",
            existing.as_ref().map(|e| &e.kubernetes_role_name),
        )?;
        let rules = str_or(
            "generated_role_rules",
            existing.as_ref().map(|e| &e.generated_role_rules),
        )?;
        let set = [!sa.is_empty(), !kr.is_empty(), !rules.is_empty()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            return Err(CoreError::invalid(
                "give exactly one of \"service_account_name\", \"kubernetes_role_name\" or \"generated_role_rules\"",
            ));
        }
        if !sa.is_empty() && !is_k8s_name(&sa, 253) {
            return Err(CoreError::invalid(
                "service_account_name is not a Kubernetes name",
            ));
        }
        if !kr.is_empty() && !is_k8s_name(&kr, 253) {
            return Err(CoreError::invalid(
                "kubernetes_role_name is not a Kubernetes name",
            ));
        }
        if !rules.is_empty() {
            parse_rules(&rules)?;
        }
        let role_type = match fields::string(data, "kubernetes_role_type")? {
            Some(t) if t.eq_ignore_ascii_case("role") || t.is_empty() => "Role".to_owned(),
            Some(t) if t.eq_ignore_ascii_case("clusterrole") => "ClusterRole".to_owned(),
            Some(_) => {
                return Err(CoreError::invalid(
                    "kubernetes_role_type must be \"Role\" or \"ClusterRole\"",
                ));
            }
            None => existing
                .as_ref()
                .map_or_else(|| "Role".to_owned(), |e| e.kubernetes_role_type.clone()),
        };
        let default_ttl = match fields::duration(data, "token_default_ttl")? {
            Some(d) => d.as_secs(),
            None => existing.as_ref().map_or(0, |e| e.token_default_ttl),
        };
        let max_ttl = match fields::duration(data, "token_max_ttl")? {
            Some(d) => d.as_secs(),
            None => existing.as_ref().map_or(0, |e| e.token_max_ttl),
        };
        if max_ttl > 0 && default_ttl > max_ttl {
            return Err(CoreError::invalid(format!(
                "token_default_ttl ({default_ttl}s) cannot be greater than token_max_ttl ({max_ttl}s)"
            )));
        }
        let audiences = match fields::string_list(data, "token_default_audiences")? {
            Some(l) => l,
            None => existing
                .as_ref()
                .map(|e| e.token_default_audiences.clone())
                .unwrap_or_default(),
        };
        let name_template = str_or("name_template", existing.as_ref().map(|e| &e.name_template))?;
        if !name_template.is_empty() {
            names::render(
                &name_template,
                &names::Vars {
                    display_name: "check",
                    role_name: name,
                    unix_time: 0,
                },
            )?;
        }
        let extra_labels = match fields::string_map(data, "extra_labels")? {
            Some(m) => m,
            None => existing
                .as_ref()
                .map(|e| e.extra_labels.clone())
                .unwrap_or_default(),
        };
        let extra_annotations = match fields::string_map(data, "extra_annotations")? {
            Some(m) => m,
            None => existing
                .as_ref()
                .map(|e| e.extra_annotations.clone())
                .unwrap_or_default(),
        };
        let role = KubeRole {
            allowed_kubernetes_namespaces: allowed,
            service_account_name: sa,
            kubernetes_role_name: kr,
            kubernetes_role_type: role_type,
            generated_role_rules: rules,
            token_default_ttl: default_ttl,
            token_max_ttl: max_ttl,
            token_default_audiences: audiences,
            name_template,
            extra_labels,
            extra_annotations,
        };
        self.save(&key, &role).await?;
        let mut warnings: Vec<String> = fields::ignored_warning(data, ROLE_FIELDS)
            .into_iter()
            .collect();
        if !role.service_account_name.is_empty() {
            warnings.push("tokens of an existing service account cannot be revoked before they expire: revoking the lease ends leash's record, not the token; prefer kubernetes_role_name or generated_role_rules, whose service account is deleted at revocation".into());
        }
        Ok(Response::warnings_only(warnings))
    }

    pub(super) fn role_json(r: &KubeRole) -> Value {
        json!({
            "allowed_kubernetes_namespaces": r.allowed_kubernetes_namespaces,
            "allowed_kubernetes_namespace_selector": "",
            "service_account_name": r.service_account_name,
            "kubernetes_role_name": r.kubernetes_role_name,
            "kubernetes_role_type": r.kubernetes_role_type,
            "generated_role_rules": r.generated_role_rules,
            "token_default_ttl": r.token_default_ttl,
            "token_max_ttl": r.token_max_ttl,
            "token_default_audiences": r.token_default_audiences,
            "name_template": r.name_template,
            "extra_labels": r.extra_labels,
            "extra_annotations": r.extra_annotations,
        })
    }
}
