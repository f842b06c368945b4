//! `local_agent = true` (`rampart server --local-agent`): the server also runs `rampart-agent`
//! on its own machine — found beside the `rampart` binary, enrolled with a one-time token the
//! server mints itself, its state in `DATA_DIR/agent`, its log in `DATA_DIR/agent.log` — and
//! restarts it if it exits, stops it (SIGTERM: it flushes its queue) when the server stops.
//! The agent stays a separate process: it never links the server, as on any other machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rampart_state::{DEFAULT_TENANT_ID, NewEnrollmentToken};

use crate::app::App;

/// Where the agent binary is expected, or why the local agent cannot run here.
pub fn binary(config: &crate::config::Config) -> Result<PathBuf, String> {
    if config.insecure_http {
        return Err("agents talk HTTPS and the server runs --insecure-http".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let agent = exe.with_file_name("rampart-agent");
    if !agent.exists() {
        return Err(format!(
            "no rampart-agent beside {} (cargo build -p rampart-agent)",
            exe.display()
        ));
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false);
    if !root {
        return Err("the agent's eBPF sensor needs root".into());
    }
    Ok(agent)
}

/// The running supervisor; [`LocalAgent::stop`] ends it.
pub struct LocalAgent {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl LocalAgent {
    /// Enrolls (first time) and runs the agent against `url` on a supervising thread.
    pub async fn start(app: &App, binary: PathBuf, url: String) -> Result<LocalAgent> {
        let stop = Arc::new(AtomicBool::new(false));
        let data_dir = &app.config.data_dir;
        let state = data_dir.join("agent");
        let log = data_dir.join("agent.log");
        // The policy's logon switch decides at start whether the agent reads syslog.
        let logons = app.config.agents.logons;
        let token = if state.join("enrollment.json").exists() {
            None
        } else {
            Some(mint_token(app).await?)
        };
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("local-agent".into())
            .spawn(move || {
                if let Some(token) = token
                    && let Err(e) = enroll(&binary, &url, &token, &state, &log)
                {
                    tracing::error!("local agent: {e:#}");
                    return;
                }
                supervise(&binary, &state, &log, logons, &flag);
            })?;
        Ok(LocalAgent { stop, thread })
    }

    /// SIGTERM to the agent (it flushes), then waits for it.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// A one-time enrollment token of the default tenant, valid ten minutes.
async fn mint_token(app: &App) -> Result<String> {
    let Some(fingerprint) = app.ca_fingerprint.clone() else {
        bail!("the server has no CA of its own (tls_cert is set): enroll the agent by hand");
    };
    let new = NewEnrollmentToken {
        name: "local agent".into(),
        group_id: None,
        max_uses: 1,
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(10),
    };
    let (_, secret) = app
        .db
        .create_enrollment_token(DEFAULT_TENANT_ID, &new, "local-agent")
        .await?;
    Ok(format!(
        "{secret}.{}",
        fingerprint.trim_start_matches("sha256:")
    ))
}

fn enroll(binary: &Path, url: &str, token: &str, state: &Path, log: &Path) -> Result<()> {
    // The server answers only once it serves: retry for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = Command::new(binary)
            .args(["enroll", "--server", url, "--token", token, "--state-dir"])
            .arg(state)
            .stdout(Stdio::null())
            .stderr(append(log)?)
            .status()
            .context("cannot run rampart-agent")?;
        if status.success() || Instant::now() > deadline {
            return if status.success() {
                Ok(())
            } else {
                bail!("enrollment failed (see {})", log.display())
            };
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Keeps `rampart-agent run` going until `stop`; restarts it (backing off) when it exits.
fn supervise(binary: &Path, state: &Path, log: &Path, logons: bool, stop: &AtomicBool) {
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let child = append(log).and_then(|err| {
            Command::new(binary)
                .args(["run", "--state-dir"])
                .arg(state)
                .args((!logons).then_some("--no-logons"))
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .map_err(Into::into)
        });
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("local agent: cannot start: {e:#}");
                return;
            }
        };
        tracing::info!(pid = child.id(), "local agent running");
        if let Some(status) = wait_or_stop(&mut child, stop) {
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            tracing::warn!(%status, "local agent exited; restarting in {backoff:?} (log: {})", log.display());
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

/// The child's exit status, or `None` once it was stopped on request.
fn wait_or_stop(child: &mut Child, stop: &AtomicBool) -> Option<std::process::ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if stop.load(Ordering::Relaxed) {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn append(log: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot write {}", log.display()))
}
