//! Response actions the server hands over in heartbeat answers, carried out here and reported
//! back (running, then succeeded or failed with the reason): kill a process (or its tree),
//! quarantine a file into the agent's vault and restore it, isolate the host from the network
//! and release it, collect an investigation package, run a read-only live-response command.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::transport::Client;

/// Where actions keep what they need across restarts.
pub struct ActionContext {
    /// Quarantined files and their metadata.
    pub vault: PathBuf,
    /// The agent's state directory (isolation state, packages being uploaded).
    pub state: PathBuf,
    /// The server's URL: isolation keeps it reachable.
    pub server: String,
}

/// Carries out one action (`{"id", "kind", "params", ...}` as the server sends it) and reports.
pub fn carry_out(client: &Client, ctx: &ActionContext, action: &Value) {
    let Some(id) = action["id"].as_str() else {
        warn!("an action without an id: {action}");
        return;
    };
    let kind = action["kind"].as_str().unwrap_or_default();
    let params = &action["params"];
    info!(id, kind, "action");
    if let Err(e) = client.action_result(id, &json!({"status": "running"})) {
        warn!(id, "cannot report the action running: {e:#}");
    }
    let outcome = match kind {
        "kill_process" => kill_process(params),
        "quarantine_file" => quarantine(ctx, params),
        "restore_file" => restore(ctx, params),
        "isolate" => crate::isolation::isolate(&ctx.state, &ctx.server),
        "release" => crate::isolation::release(&ctx.state),
        "collect_package" => crate::collect::collect_and_upload(client, &ctx.state, id),
        "run_command" => crate::live::run_command(params),
        other => Err(anyhow!(
            "this agent (version {}) cannot carry out '{other}' actions",
            env!("CARGO_PKG_VERSION")
        )),
    };
    let report = match outcome {
        Ok(result) => json!({"status": "succeeded", "result": result}),
        Err(e) => json!({"status": "failed", "result": {"error": format!("{e:#}")}}),
    };
    if let Err(e) = client.action_result(id, &report) {
        warn!(id, "cannot report the action's result: {e:#}");
    }
}

/// `{"pid": N, "tree": bool}`: SIGKILL to the process (and, with `tree`, every descendant,
/// children first found, all stopped before any is killed so none can respawn the others).
pub fn kill_process(params: &Value) -> Result<Value> {
    let pid = params["pid"]
        .as_u64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|&p| p > 1)
        .ok_or_else(|| anyhow!("params.pid must be a process id greater than 1"))?;
    if pid == std::process::id() as i32 {
        bail!("refusing to kill the agent itself");
    }
    let mut pids = vec![pid];
    if params["tree"].as_bool().unwrap_or(false) {
        let mut i = 0;
        while i < pids.len() {
            pids.extend(children(pids[i]));
            i += 1;
        }
    }
    for &p in &pids {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(p, libc::SIGSTOP) };
    }
    let mut killed = Vec::new();
    for &p in &pids {
        // SAFETY: as above.
        if unsafe { libc::kill(p, libc::SIGKILL) } == 0 {
            killed.push(p);
        } else if p == pid {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("kill {pid}"));
        }
    }
    Ok(json!({"killed": killed}))
}

/// Direct children of `pid`, from /proc/PID/task/*/children.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// What the vault keeps beside a quarantined file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Quarantined {
    pub id: String,
    pub original_path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha256: String,
    pub quarantined_at: chrono::DateTime<chrono::Utc>,
}

/// `{"path": "/abs/file"}`: moves the file into the vault (readable by root only), keeping its
/// owner, mode and hash to restore it exactly.
pub fn quarantine(ctx: &ActionContext, params: &Value) -> Result<Value> {
    let path = absolute_param(params, "path")?;
    let meta = std::fs::symlink_metadata(&path)
        .with_context(|| format!("cannot quarantine {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let hashes = crate::hashes::HashCache::new(u64::MAX)
        .of(&path)
        .ok_or_else(|| anyhow!("cannot read {}", path.display()))?;
    std::fs::create_dir_all(&ctx.vault)?;
    std::fs::set_permissions(&ctx.vault, std::fs::Permissions::from_mode(0o700))?;
    let id = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f"),
        &hashes.sha256[..16]
    );
    let record = Quarantined {
        id: id.clone(),
        original_path: path.clone(),
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        sha256: hashes.sha256.clone(),
        quarantined_at: chrono::Utc::now(),
    };
    let stored = ctx.vault.join(&id);
    move_file(&path, &stored)?;
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o400))?;
    crate::state::write_atomic(
        &ctx.vault.join(format!("{id}.json")),
        &serde_json::to_vec_pretty(&record)?,
        0o600,
    )?;
    Ok(serde_json::to_value(&record)?)
}

/// `{"id": QUARANTINE_ID}` (or `{"path": ORIGINAL}`: its latest quarantine): puts the file back
/// with its owner and mode, unless something else now occupies the path.
pub fn restore(ctx: &ActionContext, params: &Value) -> Result<Value> {
    let record = match params["id"].as_str() {
        Some(id) if !id.contains('/') && !id.starts_with('.') => {
            read_record(&ctx.vault.join(format!("{id}.json")))?
        }
        Some(id) => bail!("'{id}' is not a quarantine id"),
        None => {
            let path = absolute_param(params, "path")?;
            latest_for(&ctx.vault, &path)?
        }
    };
    if record.original_path.exists() {
        bail!(
            "{} exists again: not overwritten",
            record.original_path.display()
        );
    }
    let stored = ctx.vault.join(&record.id);
    move_file(&stored, &record.original_path)?;
    std::fs::set_permissions(
        &record.original_path,
        std::fs::Permissions::from_mode(record.mode & 0o7777),
    )?;
    std::os::unix::fs::chown(&record.original_path, Some(record.uid), Some(record.gid))?;
    std::fs::remove_file(ctx.vault.join(format!("{}.json", record.id)))?;
    Ok(json!({"restored": record.original_path, "sha256": record.sha256}))
}

fn read_record(path: &Path) -> Result<Quarantined> {
    let bytes =
        std::fs::read(path).with_context(|| format!("no quarantine record {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
}

fn latest_for(vault: &Path, original: &Path) -> Result<Quarantined> {
    let mut best: Option<Quarantined> = None;
    for entry in std::fs::read_dir(vault)?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "json")
            && let Ok(r) = read_record(&entry.path())
            && r.original_path == original
            && best
                .as_ref()
                .is_none_or(|b| r.quarantined_at > b.quarantined_at)
        {
            best = Some(r);
        }
    }
    best.ok_or_else(|| anyhow!("{} is not in quarantine", original.display()))
}

/// rename, or copy + remove across filesystems.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::File::open(to)?.sync_all()?;
    std::fs::remove_file(from).with_context(|| format!("cannot remove {}", from.display()))
}

fn absolute_param(params: &Value, name: &str) -> Result<PathBuf> {
    let path = params[name]
        .as_str()
        .ok_or_else(|| anyhow!("params.{name} must be a path"))?;
    let path = PathBuf::from(path);
    if !path.is_absolute()
        || path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        bail!("params.{name} must be an absolute path without '..'");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_and_restore_keep_content_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ActionContext {
            vault: dir.path().join("vault"),
            state: dir.path().to_path_buf(),
            server: "https://127.0.0.1:8443".into(),
        };
        let file = dir.path().join("evil.sh");
        std::fs::write(&file, b"#!/bin/sh\necho pwned\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let q = quarantine(&ctx, &json!({"path": file})).unwrap();
        assert!(!file.exists());
        let id = q["id"].as_str().unwrap();
        assert_eq!(
            std::fs::metadata(ctx.vault.join(id)).unwrap().mode() & 0o777,
            0o400
        );
        // A path that is occupied again is not overwritten.
        std::fs::write(&file, b"new").unwrap();
        assert!(restore(&ctx, &json!({"id": id})).is_err());
        std::fs::remove_file(&file).unwrap();
        restore(&ctx, &json!({"path": file})).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"#!/bin/sh\necho pwned\n");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o755);
        assert!(restore(&ctx, &json!({"id": id})).is_err(), "restored once");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let ctx = ActionContext {
            vault: "/nonexistent".into(),
            state: "/nonexistent".into(),
            server: "https://127.0.0.1:8443".into(),
        };
        assert!(quarantine(&ctx, &json!({"path": "relative"})).is_err());
        assert!(quarantine(&ctx, &json!({"path": "/tmp/../etc/passwd"})).is_err());
        assert!(restore(&ctx, &json!({"id": "../x"})).is_err());
        assert!(kill_process(&json!({"pid": 1})).is_err());
        assert!(kill_process(&json!({"pid": "x"})).is_err());
        assert!(kill_process(&json!({"pid": std::process::id()})).is_err());
    }

    #[test]
    fn kill_tree_kills_descendants() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 60 & sleep 60 & wait"])
            .spawn()
            .unwrap();
        // Let the shell start its children.
        let pid = child.id() as i32;
        let mut kids = Vec::new();
        for _ in 0..50 {
            kids = children(pid);
            if kids.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(kids.len(), 2, "the shell's two sleeps");
        let result = kill_process(&json!({"pid": pid, "tree": true})).unwrap();
        assert_eq!(result["killed"].as_array().unwrap().len(), 3);
        let status = child.wait().unwrap();
        assert!(!status.success());
        for k in kids {
            // The sleeps die (gone, or zombies until init reaps them).
            let dead = || {
                let state = std::fs::read_to_string(format!("/proc/{k}/stat")).unwrap_or_default();
                state.is_empty() || state.contains(") Z")
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !dead() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert!(dead(), "{k} survived");
        }
    }
}
