//! `kubernetes/creds/:name`: a credential under a lease, intent first — the lease names
//! every object it will create before any exists — then the objects and the TokenRequest.

use super::*;

impl KubernetesSecrets {
    pub(super) async fn issue(
        &self,
        req: &BackendRequest<'_>,
        role_name: &str,
    ) -> Result<Option<Response>, CoreError> {
        let role: KubeRole = self
            .load(&format!("role/{role_name}"))
            .await?
            .ok_or_else(|| CoreError::invalid(format!("unknown role: {role_name}")))?;
        let ns = fields::string(req.data, "kubernetes_namespace")?
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CoreError::invalid("missing required field \"kubernetes_namespace\""))?;
        if !is_k8s_name(&ns, 63) {
            return Err(CoreError::invalid(
                "kubernetes_namespace is not a namespace name",
            ));
        }
        if !role
            .allowed_kubernetes_namespaces
            .iter()
            .any(|a| a == "*" || *a == ns)
        {
            return Err(CoreError::invalid(format!(
                "kubernetes_namespace {ns:?} is not in the role's allowed_kubernetes_namespaces"
            )));
        }
        let cluster_binding = fields::boolean(req.data, "cluster_role_binding")?.unwrap_or(false);
        if cluster_binding && role.kubernetes_role_type != "ClusterRole" {
            return Err(CoreError::invalid(
                "cluster_role_binding needs a role whose kubernetes_role_type is \"ClusterRole\"",
            ));
        }
        if cluster_binding && !role.service_account_name.is_empty() {
            return Err(CoreError::invalid(
                "cluster_role_binding applies to roles with kubernetes_role_name or generated_role_rules",
            ));
        }
        let ttl = fields::duration(req.data, "ttl")?.map_or(0, |d| d.as_secs());
        if role.token_max_ttl > 0 && ttl > role.token_max_ttl {
            return Err(CoreError::invalid(format!(
                "ttl ({ttl}s) is greater than the role's token_max_ttl ({}s)",
                role.token_max_ttl
            )));
        }
        let audiences = match fields::string_list(req.data, "audiences")? {
            Some(l) if !l.is_empty() => l,
            _ => role.token_default_audiences.clone(),
        };
        let cluster = self.cluster().await?;

        // What will exist: names first, so the lease can name everything to delete.
        let display = req
            .caller
            .map(|c| c.entry.display_name.as_str())
            .unwrap_or("token");
        let generated = role.service_account_name.is_empty();
        let mut objects: Vec<(Object, Value)> = Vec::new();
        let sa_name = if generated {
            let template = if role.name_template.is_empty() {
                names::DEFAULT_TEMPLATE
            } else {
                &role.name_template
            };
            let name = names::render(
                template,
                &names::Vars {
                    display_name: display,
                    role_name,
                    unix_time: SystemClock.unix(),
                },
            )?;
            if name.is_empty() {
                return Err(CoreError::invalid("name_template renders an empty name"));
            }
            name
        } else {
            role.service_account_name.clone()
        };
        let mut labels: Map<String, Value> = role
            .extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        labels.insert("app.kubernetes.io/managed-by".into(), json!("leash"));
        labels.insert(
            "app.kubernetes.io/created-by".into(),
            json!("leash-kubernetes-secrets"),
        );
        let metadata = json!({"labels": labels, "annotations": role.extra_annotations});
        let cluster_role = role.kubernetes_role_type == "ClusterRole";
        if generated {
            let (role_ref_kind, role_ref_name) = if role.generated_role_rules.is_empty() {
                (
                    role.kubernetes_role_type.clone(),
                    role.kubernetes_role_name.clone(),
                )
            } else {
                let rules = parse_rules(&role.generated_role_rules)?;
                let o = api::role((!cluster_role).then_some(ns.as_str()), &sa_name);
                let kind = o.kind.clone();
                objects.push((
                    o,
                    json!({
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": kind,
                        "metadata": metadata,
                        "rules": rules,
                    }),
                ));
                (kind, sa_name.clone())
            };
            objects.push((
                api::service_account(&ns, &sa_name),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}),
            ));
            let b = api::binding((!cluster_binding).then_some(ns.as_str()), &sa_name);
            let kind = b.kind.clone();
            objects.push((
                b,
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": kind,
                    "metadata": metadata,
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": role_ref_kind,
                        "name": role_ref_name,
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": ns}],
                }),
            ));
        }
        let internal = LeaseData {
            role: role_name.to_owned(),
            namespace: ns.clone(),
            service_account_name: sa_name.clone(),
            objects: objects.iter().map(|(o, _)| o.clone()).collect(),
            irrevocable: !generated,
        };
        let pending = self
            .leases
            .begin(
                req,
                LeaseRequest {
                    path: format!("creds/{role_name}"),
                    ttl: Duration::from_secs(if ttl > 0 { ttl } else { role.token_default_ttl }),
                    max_ttl: Duration::from_secs(role.token_max_ttl),
                    renewable: false,
                    internal: serde_json::to_value(&internal)
                        .map_err(|e| CoreError::internal(e.to_string()))?,
                    caps: Default::default(),
                },
            )
            .await?;
        let made = async {
            for (o, manifest) in &objects {
                cluster.create(o, manifest.clone()).await?;
            }
            cluster
                .token(
                    &ns,
                    &sa_name,
                    pending.ttl.max(MIN_TOKEN_SECONDS),
                    &audiences,
                )
                .await
        }
        .await;
        let minted = match made {
            Ok(m) => m,
            Err(e) => {
                // Whatever was made is deleted by the worker.
                self.leases.abandon(&pending).await?;
                return Err(upstream(&e));
            }
        };
        if let Err(e) = self.leases.activate(&pending).await {
            self.leases.abandon(&pending).await?;
            return Err(e);
        }
        let mut r = Response::data(json!({
            "service_account_name": sa_name,
            "service_account_namespace": ns,
            "service_account_token": minted.token.expose_secret(),
        }));
        r.secret = Some(LeaseInfo {
            lease_id: pending.id,
            renewable: false,
            lease_duration: pending.ttl,
        });
        if pending.ttl < MIN_TOKEN_SECONDS {
            r = r.with_warning(if generated {
                format!("the token was requested for {MIN_TOKEN_SECONDS}s (the API server's minimum); its service account is deleted when the {}s lease ends, which ends the token", pending.ttl)
            } else {
                format!("the token was requested for {MIN_TOKEN_SECONDS}s (the API server's minimum) and outlives its {}s lease: tokens of an existing service account cannot be revoked", pending.ttl)
            });
        }
        Ok(Some(r))
    }
}
