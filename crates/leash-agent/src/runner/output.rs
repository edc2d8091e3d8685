//! What the agent produces: rendered files and environments (and the commands run after
//! them), the lease cache, and the clean-up on exit.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use zeroize::Zeroizing;

use super::Agent;
use crate::AgentError;
use crate::cache::{Cache, CachedSecret};
use crate::files::write_atomic;
use crate::health;
use crate::template::{RenderEnv, SecretRequest};

impl Agent {
    /// Renders every file and environment template. Returns whether the environment
    /// changed. On the first render an error is fatal (a missing key names the key and
    /// the template); later ones are logged and the old output kept.
    pub(super) async fn render(&mut self, first: bool) -> Result<bool, AgentError> {
        let values: BTreeMap<String, Value> = self
            .held
            .iter()
            .map(|(k, h)| (k.clone(), h.value()))
            .collect();
        if let Some(p) = &self.publish {
            p.0.send_if_modified(|cur| {
                if *cur.0 == values {
                    return false;
                }
                *cur = super::SecretSnapshot(std::sync::Arc::new(values.clone()));
                true
            });
        }
        let lookup = |r: &SecretRequest| values.get(&r.key()).cloned();
        let env_lookup = |k: &str| std::env::var(k).ok();
        let mut commands = Vec::new();
        let mut writes = 0u64;
        for (i, ft) in self.cfg.templates.iter().enumerate() {
            let env = RenderEnv {
                secret: &lookup,
                env: &env_lookup,
                error_on_missing_key: ft.error_on_missing_key,
            };
            let out = match ft.template.render(&env) {
                Ok(o) => Zeroizing::new(o),
                Err(e) if first => return Err(e.into()),
                Err(e) => {
                    tracing::error!(error = %e, "render failed; keeping the previous file");
                    continue;
                }
            };
            let h = hash(out.as_bytes());
            if self.file_hashes[i] == Some(h) {
                continue;
            }
            write_atomic(&ft.destination, out.as_bytes(), ft.perms)?;
            tracing::info!(destination = %ft.destination.display(), "rendered");
            self.file_hashes[i] = Some(h);
            writes += 1;
            if let Some(cmd) = &ft.command {
                commands.push(cmd.clone());
            }
        }
        let mut env_changed = false;
        if !self.cfg.env_templates.is_empty() {
            let mut vars = Vec::new();
            let mut failed = false;
            for (name, t) in &self.cfg.env_templates {
                let env = RenderEnv {
                    secret: &lookup,
                    env: &env_lookup,
                    error_on_missing_key: true,
                };
                match t.render(&env) {
                    Ok(v) => vars.push((name.clone(), Zeroizing::new(v))),
                    Err(e) if first => return Err(e.into()),
                    Err(e) => {
                        tracing::error!(error = %e, "env render failed; keeping the child's environment");
                        failed = true;
                    }
                }
            }
            if !failed && self.env.as_ref() != Some(&vars) {
                env_changed = self.env.is_some();
                self.env = Some(vars);
                writes += 1;
            }
        }
        if writes > 0 {
            health::update(&self.status, |s| s.renders += writes);
        }
        for cmd in commands {
            run_command(&cmd).await;
        }
        Ok(env_changed)
    }

    pub(super) fn save_cache(&self) {
        let (Some(path), Some(tok)) = (&self.cfg.lease_cache_file, &self.token) else {
            return;
        };
        let Some(token) = tok.client.token() else {
            return;
        };
        let secrets: BTreeMap<String, CachedSecret> = self
            .held
            .iter()
            .filter(|(_, h)| !h.lease_id.is_empty() && !h.lease_gone)
            .map(|(k, h)| {
                (
                    k.clone(),
                    CachedSecret {
                        lease_id: h.lease_id.clone(),
                        lease_duration: h.issued_ttl,
                        renewable: h.renewable,
                        data: h.data.clone(),
                    },
                )
            })
            .collect();
        if let Err(e) = Cache::save(path, token, &secrets) {
            tracing::warn!(error = %e, "writing the lease cache failed");
        }
    }

    /// Stops: revokes leases and tokens unless told not to, removes files if asked.
    /// Returns the exit code (`code`, or 0).
    pub(super) async fn shutdown(&mut self, code: Option<i32>) -> i32 {
        if self.cfg.revoke_on_exit {
            let mut revoked = 0;
            let mut token_revoked = true;
            if let Some(tok) = &self.token {
                // Revoking the token revokes every lease issued under it; revoke the
                // leases first anyway so each credential is dropped even if the token
                // was an orphan created elsewhere (token_file).
                for h in self.held.values() {
                    if !h.lease_id.is_empty()
                        && !h.lease_gone
                        && tok.client.lease_revoke(&h.lease_id).await.is_ok()
                    {
                        revoked += 1;
                    }
                }
                for (id, _, _) in &self.to_revoke {
                    let _ = tok.client.lease_revoke(id).await;
                }
                match tok.client.token_revoke_self().await {
                    Ok(()) => tracing::info!("token revoked"),
                    Err(e) => {
                        // The server's expiry worker still ends everything at its TTL;
                        // keep the cache so a restarted agent can finish the job.
                        tracing::warn!(error = %e, "revoking the token failed; its leases end at their TTL");
                        token_revoked = false;
                    }
                }
            }
            for (c, _) in &self.old_tokens {
                let _ = c.token_revoke_self().await;
            }
            tracing::info!(leases = revoked, "revoked on exit");
            if let Some(p) = &self.cfg.lease_cache_file
                && token_revoked
            {
                let _ = std::fs::remove_file(p);
            }
        } else {
            self.save_cache();
        }
        if self.cfg.remove_files_on_exit {
            for t in &self.cfg.templates {
                let _ = std::fs::remove_file(&t.destination);
            }
        }
        code.unwrap_or(0)
    }
}

async fn run_command(argv: &[String]) {
    let Some((prog, args)) = argv.split_first() else {
        return;
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(command = %prog, error = %e, "template command failed to start");
            return;
        }
    };
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => tracing::warn!(command = %prog, status = %s, "template command failed"),
        Ok(Err(e)) => tracing::warn!(command = %prog, error = %e, "template command failed"),
        Err(_) => tracing::warn!(command = %prog, "template command timed out after 30s"),
    }
}

fn hash(b: &[u8]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}
