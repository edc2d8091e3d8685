//! The small `leash-agent` binary: the same command line as `leash agent`, and the same
//! work end to end against a real (in-process, dev) leash server — log in from a token
//! file, render templates, keep running, revoke its token on SIGTERM.
//!
//! The whole agent suite of the `leash` crate (tests/it/agent.rs) also runs against
//! this binary with `LEASH_AGENT_BIN=target/debug/leash-agent`.

// Helpers outside `#[test]` fns unwrap too (allowed in tests by clippy.toml).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use leash_testkit::TestServer;
use serde_json::json;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_leash-agent");

fn run_sync(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn help_and_version_name_the_flags_of_leash_agent() {
    let out = run_sync(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config <FILE>",
        "--config-env <NAME>",
        "--log-level <LEVEL>",
        "exec",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let out = run_sync(&["exec", "--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("--config <FILE>") && help.contains("<COMMAND>..."),
        "{help}"
    );
    let out = run_sync(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("leash-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn without_a_configuration_it_fails_with_a_usage_error() {
    let out = run_sync(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("needs --config FILE"), "{err}");
    let out = run_sync(&["--config-env", "LEASH_AGENT_TEST_UNSET_VARIABLE"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config(srv: &TestServer, d: &Path, extra: &str) -> String {
    format!(
        r#"vault {{ address = "{url}" }}
auto_auth {{
  method "token_file" {{ config = {{ token_file_path = "{d}/token" }} }}
}}
template {{
  destination = "{d}/app.env"
  contents = <<EOT
{{{{ with secret "secret/data/agents/app" }}}}MODEL={{{{ .Data.data.model }}}}
MAX_TOKENS={{{{ .Data.data.max_tokens }}}}
{{{{ end }}}}
EOT
}}
template {{
  destination = "{d}/model.json"
  contents = "{{{{ with secret \"secret/data/agents/app\" }}}}{{{{ .Data.data.model | toJSON }}}}{{{{ end }}}}"
}}
{extra}
"#,
        url = srv.url(),
        d = d.display()
    )
}

/// Against a real server: the single-dash (Vault-style) `-config` is accepted, both
/// templates render with exactly the text `leash agent` renders, the files are 0600,
/// and SIGTERM revokes the token and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_templates_against_a_dev_server_and_revokes_on_sigterm() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "secret/data/agents/app",
            Some(json!({"data": {"model": "small", "max_tokens": 512}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    srv.write_policy(
        "agent",
        "path \"secret/data/agents/*\" { capabilities = [\"read\"] }\n",
    )
    .await;
    let token = srv.token_with(&["agent"]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("token"), format!("{token}\n")).unwrap();
    let cfg = d.join("agent.hcl");
    std::fs::write(&cfg, config(&srv, d, "")).unwrap();
    let log = std::fs::File::create(d.join("agent.log")).unwrap();
    let mut agent = Command::new(BIN)
        .arg("-config")
        .arg(&cfg)
        .env("LEASH_LOG", "info,leash_agent=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (env, model) = (d.join("app.env"), d.join("model.json"));
    eventually("the two files", || env.exists() && model.exists()).await;
    // The newline after `{{ end }}` is template text too (as in consul-template).
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "MODEL=small\nMAX_TOKENS=512\n\n"
    );
    assert_eq!(std::fs::read_to_string(&model).unwrap(), "\"small\"");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Still running (a sidecar, not a one-shot).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(agent.try_wait().unwrap().is_none(), "the agent exited");

    let pid = agent.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(60), agent.wait())
        .await
        .unwrap()
        .unwrap();
    let log = std::fs::read_to_string(d.join("agent.log")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{log}");
    // revoke_on_exit (the default) revoked the token it was given.
    let (s, _) = srv
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(s, 403, "{log}");
}

/// `exit_after_auth` (the init-container mode) from `--config-env`, as the injector
/// runs it: render once, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_env_with_exit_after_auth_renders_once_and_exits() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "secret/data/agents/app",
            Some(json!({"data": {"model": "large", "max_tokens": 4096}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    srv.write_policy(
        "agent",
        "path \"secret/data/agents/*\" { capabilities = [\"read\"] }\n",
    )
    .await;
    let token = srv.token_with(&["agent"]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("token"), &token).unwrap();
    let out = Command::new(BIN)
        .args(["--config-env", "LEASH_AGENT_TEST_CONFIG"])
        .env(
            "LEASH_AGENT_TEST_CONFIG",
            config(&srv, d, "exit_after_auth = true\nrevoke_on_exit = false"),
        )
        .env("LEASH_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(d.join("app.env")).unwrap(),
        "MODEL=large\nMAX_TOKENS=4096\n\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("model.json")).unwrap(),
        "\"large\""
    );
}
