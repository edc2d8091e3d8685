//! Exec mode: the child process whose environment comes from `env_template`s. The
//! agent starts it, forwards signals to it, restarts it (stop signal, wait, start) or
//! signals it when its environment changes, and exits with its exit code.
//!
//! Signals go through rustix's safe `kill` wrapper (no `unsafe` here).

use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};
use zeroize::Zeroizing;

use crate::AgentError;

/// How long a child may take to stop after the stop signal before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A signal by its name (`SIGTERM`, `TERM`, `sigterm`).
pub fn signal_by_name(name: &str) -> Option<Signal> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("SIG").unwrap_or(&n);
    Some(match n {
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "QUIT" => Signal::QUIT,
        "KILL" => Signal::KILL,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        _ => return None,
    })
}

/// How long, after the child exited, its output may take to drain (a grandchild
/// holding the pipes open does not keep the agent waiting longer).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Redaction of the child's output: the patterns, and where matches are reported.
#[derive(Clone)]
pub struct Redaction {
    /// The values to replace (the runner replaces the set after each render).
    pub patterns: crate::redact::SharedPatterns,
    /// Where matches go (`None`: not reported).
    pub report: Option<tokio::sync::mpsc::UnboundedSender<crate::redact::Origin>>,
}

/// The running child.
pub struct ChildProcess {
    argv: Vec<String>,
    child: Child,
    /// The tasks copying its stdout and stderr through the redaction filter.
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildProcess")
            .field("argv0", &self.argv.first())
            .field("pid", &self.child.id())
            .finish()
    }
}

impl ChildProcess {
    /// Starts `argv` with the agent's environment plus `env` (which wins); with
    /// `redaction`, its stdout and stderr are piped through the filter.
    pub fn start(
        argv: &[String],
        env: &[(String, Zeroizing<String>)],
        redaction: Option<&Redaction>,
    ) -> Result<ChildProcess, AgentError> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| AgentError::Exec("no command to run".into()))?;
        let mut cmd = Command::new(prog);
        // If the agent dies, its child does not outlive it unsupervised.
        cmd.args(args).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v.as_str());
        }
        if redaction.is_some() {
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| AgentError::Exec(format!("starting {prog:?}: {e}")))?;
        let mut pumps = Vec::new();
        if let Some(r) = redaction {
            if let Some(out) = child.stdout.take() {
                pumps.push(tokio::spawn(crate::redact::pump(
                    out,
                    tokio::io::stdout(),
                    r.patterns.clone(),
                    r.report.clone(),
                )));
            }
            if let Some(err) = child.stderr.take() {
                pumps.push(tokio::spawn(crate::redact::pump(
                    err,
                    tokio::io::stderr(),
                    r.patterns.clone(),
                    r.report.clone(),
                )));
            }
        }
        tracing::info!(command = %prog, pid = child.id(), redacted = redaction.is_some(), "child started");
        Ok(ChildProcess {
            argv: argv.to_vec(),
            child,
            pumps,
        })
    }

    /// Sends `sig` to the child (nothing if it already exited).
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(Pid::from_raw)
            && let Err(e) = kill_process(pid, sig)
        {
            tracing::warn!(error = %e, "signalling the child failed");
        }
    }

    /// Waits for the child to exit (and its filtered output to be written).
    pub async fn wait(&mut self) -> Result<ExitStatus, AgentError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| AgentError::Exec(format!("waiting for the child: {e}")))?;
        self.drain().await;
        Ok(status)
    }

    /// Lets the output pumps write what the child wrote before it exited.
    async fn drain(&mut self) {
        for p in self.pumps.drain(..) {
            let abort = p.abort_handle();
            if tokio::time::timeout(DRAIN_TIMEOUT, p).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Sends `sig`, waits up to [`STOP_TIMEOUT`], then kills.
    pub async fn stop(&mut self, sig: Signal) -> Result<ExitStatus, AgentError> {
        self.signal(sig);
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(r) => {
                let status =
                    r.map_err(|e| AgentError::Exec(format!("waiting for the child: {e}")))?;
                self.drain().await;
                Ok(status)
            }
            Err(_) => {
                tracing::warn!("child did not stop in time; killing it");
                let _ = self.child.start_kill();
                self.wait().await
            }
        }
    }
}

/// The exit code to pass on for a child's status: its code, or 128 + the signal that
/// ended it (as shells report it).
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_by_name("SIGTERM"), Some(Signal::TERM));
        assert_eq!(signal_by_name("hup"), Some(Signal::HUP));
        assert_eq!(signal_by_name("SIGWHAT"), None);
    }

    #[tokio::test]
    async fn child_gets_env_and_its_exit_code_passes_through() {
        let env = vec![("LEASH_T".to_owned(), Zeroizing::new("v1".to_owned()))];
        let argv: Vec<String> = ["/bin/sh", "-c", "test \"$LEASH_T\" = v1 && exit 7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut c = ChildProcess::start(&argv, &env, None).unwrap();
        assert_eq!(exit_code(c.wait().await.unwrap()), 7);
        let argv: Vec<String> = ["/bin/sh", "-c", "sleep 30"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut c = ChildProcess::start(&argv, &[], None).unwrap();
        assert_eq!(exit_code(c.stop(Signal::TERM).await.unwrap()), 128 + 15);
    }
}
