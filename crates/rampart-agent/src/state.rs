//! The agent's state directory: its key, certificate and the server's CA (written by
//! `enroll`), what enrollment decided (device and tenant ids, server address), the last
//! blocklist the server gave, and the on-disk event queue. Everything the agent needs to run
//! again after a restart.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Where the systemd unit keeps the agent's state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rampart-agent";

/// What enrollment decided, kept in `enrollment.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    /// `https://HOST:PORT` of the server.
    pub server: String,
    pub device_id: String,
    pub tenant_id: String,
    pub hostname: String,
    pub enrolled_at: chrono::DateTime<chrono::Utc>,
}

pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating, mode 0700) the directory.
    pub fn create(dir: &Path) -> Result<StateDir> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        set_mode(dir, 0o700)?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("agent.key")
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.dir.join("queue")
    }

    /// The enrolled identity: enrollment record, CA, certificate and key, all present.
    pub fn identity(&self) -> Result<Identity> {
        let read = |name: &str| {
            let path = self.dir.join(name);
            fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {} (enroll first: rampart-agent enroll --server URL --token TOKEN --state-dir {})",
                    path.display(),
                    self.dir.display()
                )
            })
        };
        let enrollment: Enrollment = serde_json::from_str(&read("enrollment.json")?)
            .with_context(|| format!("{}/enrollment.json is damaged", self.dir.display()))?;
        Ok(Identity {
            enrollment,
            ca_pem: read("ca.crt")?,
            cert_pem: read("agent.crt")?,
            key_pem: read("agent.key")?,
        })
    }

    /// Writes what enrollment returned; the key is written before (see [`StateDir::key_path`]).
    pub fn save_enrollment(
        &self,
        enrollment: &Enrollment,
        ca_pem: &str,
        cert_pem: &str,
    ) -> Result<()> {
        write_atomic(&self.dir.join("ca.crt"), ca_pem.as_bytes(), 0o644)?;
        write_atomic(&self.dir.join("agent.crt"), cert_pem.as_bytes(), 0o644)?;
        let json = serde_json::to_vec_pretty(enrollment)?;
        write_atomic(&self.dir.join("enrollment.json"), &json, 0o600)
    }

    /// The blocklist of the server's last policy (`blocklist.json`), enforced from the start
    /// of a run: a restart while the server is unreachable does not lift the blocks. `None`
    /// when there is none or it cannot be read (logged).
    pub fn saved_blocklist(&self) -> Option<serde_json::Value> {
        let path = self.dir.join("blocklist.json");
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(block) => Some(block),
            Err(e) => {
                tracing::warn!("{} is damaged, ignored: {e}", path.display());
                None
            }
        }
    }

    pub fn save_blocklist(&self, block: &serde_json::Value) -> Result<()> {
        write_atomic(
            &self.dir.join("blocklist.json"),
            &serde_json::to_vec(block)?,
            0o600,
        )
    }

    pub fn is_enrolled(&self) -> bool {
        self.dir.join("enrollment.json").exists()
    }
}

/// An enrolled agent's credentials.
pub struct Identity {
    pub enrollment: Enrollment,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Write to a temporary file, fsync, rename: a crash leaves the old file or the new one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let Some(dir) = path.parent() else {
        bail!("{} has no parent directory", path.display());
    };
    let tmp = path.with_extension("tmp");
    let mut file =
        fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    set_mode(&tmp, mode)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}
