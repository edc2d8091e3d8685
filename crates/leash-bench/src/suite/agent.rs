//! The suite's `leash agent` figure: idle RSS with three templates renewing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http::start_leash;
use super::startup::proc_status_kib;
use super::{Goal, Plan, SuiteArgs, SuiteRow, tempdir};
use crate::bench_leases::{self};

// ---------------------------------------------------------------------------------------
// leash agent idle memory
// ---------------------------------------------------------------------------------------

pub(super) async fn agent_part(
    args: &SuiteArgs,
    plan: &Plan,
    servers: &tokio::runtime::Handle,
) -> Vec<SuiteRow> {
    let (rss, anon) = match agent_measure(args, plan, servers).await {
        Ok((rss, anon)) => {
            eprintln!("agent: VmRSS {rss:.1} MiB, RssAnon {anon:.1} MiB");
            (Some(rss), Some(anon))
        }
        Err(e) => {
            eprintln!("agent: not measured: {e}");
            (None, None)
        }
    };
    vec![
        SuiteRow {
            figure: "leash agent idle RSS, three templates renewing (MiB)".into(),
            value: rss,
            baseline: None,
            goal: Goal::ValueAtMost(8.0, "MiB"),
            unit: "MiB",
        },
        SuiteRow {
            figure: "leash agent own anonymous memory (RssAnon, MiB)".into(),
            value: anon,
            baseline: None,
            goal: Goal::ValueAtMost(2.0, "MiB"),
            unit: "MiB",
        },
    ]
}

/// The `leash` binary next to this one.
pub(super) fn leash_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me
        .parent()
        .map(|d| d.join(format!("leash{}", std::env::consts::EXE_SUFFIX)))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            "no `leash` binary next to leash-bench (cargo build --release -p leash)".to_owned()
        })?;
    Ok(bin)
}

pub(super) async fn agent_measure(
    args: &SuiteArgs,
    plan: &Plan,
    servers: &tokio::runtime::Handle,
) -> Result<(f64, f64), String> {
    let bin = leash_binary()?;
    let dir = tempdir("agent")?;
    let (server, client, _root) = start_leash(servers, &dir.path().join("data")).await?;
    let db = bench_leases::ScratchDb::create(&args.postgres)
        .await
        .map_err(bench_leases::error_text)?;
    let outcome = async {
        let role = format!("ag{}", db.tag());
        let call = |method: &'static str, path: String, body: Value| {
            let client = client.clone();
            async move {
                let r = client
                    .request(method, &path, Some(&body))
                    .await
                    .map_err(|e| format!("{method} {path}: {e}"))?;
                if r.is_success() {
                    Ok(r.body)
                } else {
                    Err(format!("{method} {path}: HTTP {}: {}", r.status, r.errors().join("; ")))
                }
            }
        };
        call("POST", "sys/mounts/database".into(), json!({"type": "database"})).await?;
        call("POST", "database/config/pg".into(), db.leash_config()).await?;
        call(
            "POST",
            format!("database/roles/{role}"),
            json!({
                "db_name": "pg",
                "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
                "default_ttl": "15s",
                "max_ttl": "1h",
            }),
        )
        .await?;
        call(
            "POST",
            "secret/data/agents/config/app".into(),
            json!({"data": {"model": "small", "max_tokens": 512}}),
        )
        .await?;
        call(
            "PUT",
            "sys/policy/suite-agent".into(),
            json!({"policy": format!("path \"database/creds/{role}\" {{ capabilities = [\"read\"] }}\npath \"secret/data/agents/*\" {{ capabilities = [\"read\"] }}\npath \"sys/leases/revoke\" {{ capabilities = [\"update\"] }}\n")}),
        )
        .await?;
        let token = call(
            "POST",
            "auth/token/create".into(),
            json!({"policies": ["suite-agent"], "ttl": "1h"}),
        )
        .await?
        .and_then(|b| b.pointer("/auth/client_token").and_then(Value::as_str).map(str::to_owned))
        .ok_or("auth/token/create returned no token")?;
        let work = dir.path();
        let token_file = work.join("token");
        write_private(&token_file, token.as_bytes())?;
        let hcl = agent_config(server.addr, work, &token_file, &role);
        std::fs::write(work.join("agent.hcl"), hcl).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(&bin)
            .arg("agent")
            .arg("-config")
            .arg(work.join("agent.hcl"))
            .env("LEASH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the agent exited at once")?;
        let measured = async {
            let files = ["db.json", "db.env", "config.json"].map(|f| work.join(f));
            let deadline = Instant::now() + Duration::from_secs(30);
            while !files.iter().all(|f| f.metadata().is_ok_and(|m| m.len() > 0)) {
                if Instant::now() > deadline {
                    return Err("the agent did not render its three templates within 30 s".to_owned());
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("the agent exited ({status})"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!("agent: templates rendered; idling {}s", plan.agent_idle.as_secs());
            tokio::time::sleep(plan.agent_idle).await;
            let rss = proc_status_kib(Some(pid), "VmRSS").ok_or("no VmRSS")?;
            let anon = proc_status_kib(Some(pid), "RssAnon").ok_or("no RssAnon")?;
            Ok((rss as f64 / 1024.0, anon as f64 / 1024.0))
        }
        .await;
        // SIGTERM: the agent revokes its leases on the way out.
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
        let _ = call(
            "PUT",
            "sys/leases/revoke-prefix/database/creds/".into(),
            json!({}),
        )
        .await;
        measured
    }
    .await;
    let storage = server.stop().await;
    drop(storage);
    db.drop_all().await;
    outcome
}

pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    f.write_all(bytes).map_err(|e| e.to_string())
}

pub(super) fn agent_config(
    addr: std::net::SocketAddr,
    work: &Path,
    token_file: &Path,
    role: &str,
) -> String {
    let w = work.display();
    format!(
        r#"vault {{ address = "http://{addr}" }}
auto_auth {{
  method "token_file" {{ config = {{ token_file_path = "{token}" }} }}
}}
template {{
  destination = "{w}/db.json"
  contents = <<EOT
{{{{- with secret "database/creds/{role}" -}}}}
{{
  "username": "{{{{ .Data.username }}}}",
  "password": "{{{{ .Data.password }}}}",
  "ttl_seconds": {{{{ .Data.lease_duration }}}}
}}
{{{{- end -}}}}
EOT
}}
template {{
  destination = "{w}/db.env"
  contents = <<EOT
{{{{ with secret "database/creds/{role}" }}}}PGUSER={{{{ .Data.username }}}}
PGPASSWORD={{{{ .Data.password }}}}
{{{{ end }}}}
EOT
}}
template {{
  destination = "{w}/config.json"
  contents = "{{{{ with secret \"secret/data/agents/config/app\" }}}}{{{{ .Data.data | toJSONPretty }}}}{{{{ end }}}}"
}}
"#,
        token = token_file.display()
    )
}
