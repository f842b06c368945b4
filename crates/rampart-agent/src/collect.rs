//! The investigation package (`collect_package`): one `.tar.gz` of what an analyst wants first
//! from a suspect Linux host — processes, network connections and listeners, users and groups,
//! persistence places (cron, systemd, init scripts, shell start-up files, `ld.so.preload`,
//! authorized keys), recent authentication logs, shell histories, kernel modules, mounts — and
//! a `manifest.json` listing every item with its size, whether it was cut, and what could not
//! be read (a missing file is noted, never fatal). Files are copied under `files/` with their
//! absolute path; what the agent derives from /proc is at the top.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::clock::Clock;
use crate::hashes::{DEFAULT_MAX_FILE_BYTES, HashCache};
use crate::process::ProcessTable;
use crate::transport::Client;

/// Bytes kept of one item; logs and histories keep their end, other files their start.
pub const FILE_CAP: u64 = 10 << 20;
/// Uncompressed bytes of all items together; items beyond are cut or skipped (and listed).
pub const PACKAGE_CAP: u64 = 200 << 20;
/// Journal lines taken when there is no auth log file.
const JOURNAL_LINES: &str = "5000";
/// How deep the listed and copied directories are walked.
const WALK_DEPTH: u32 = 4;

/// Single files, copied from their start.
const FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/crontab",
    "/etc/rc.local",
    "/etc/ld.so.preload",
    "/etc/profile",
    "/etc/bash.bashrc",
    "/etc/environment",
    "/proc/modules",
    "/proc/mounts",
];
/// Authentication logs (Debian's, Red Hat's), copied from their end.
const AUTH_LOGS: &[&str] = &["/var/log/auth.log", "/var/log/secure"];
/// Directories whose regular files are copied (their entries, links included, are listed).
const COPIED_DIRS: &[&str] = &[
    "/etc/cron.d",
    "/etc/cron.hourly",
    "/etc/cron.daily",
    "/etc/cron.weekly",
    "/etc/cron.monthly",
    "/var/spool/cron",
    "/etc/profile.d",
    "/etc/systemd/system",
    "/etc/systemd/user",
];
/// Directories only listed (unit files shipped by packages; init scripts).
const LISTED_DIRS: &[&str] = &[
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/etc/init.d",
];
/// Per home directory: start-up files and persistence places, copied from their start.
const HOME_FILES: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zprofile",
    ".zshenv",
    ".zlogin",
    ".config/fish/config.fish",
    ".ssh/authorized_keys",
    ".ssh/authorized_keys2",
];
/// Per home directory: shell and tool histories, copied from their end.
const HISTORIES: &[&str] = &[
    ".bash_history",
    ".zsh_history",
    ".sh_history",
    ".ash_history",
    ".history",
    ".local/share/fish/fish_history",
    ".python_history",
    ".mysql_history",
    ".psql_history",
];
/// Per home directory: user units, copied.
const HOME_DIRS: &[&str] = &[".config/systemd/user"];

/// A package on disk.
#[derive(Debug)]
pub struct Package {
    pub path: PathBuf,
    /// Compressed size.
    pub bytes: u64,
    pub sha256: String,
    /// Items in the archive (the manifest not counted).
    pub items: usize,
}

/// The `collect_package` action: collects into `state_dir/packages`, uploads, removes the
/// local file whatever became of the upload.
pub fn collect_and_upload(client: &Client, state_dir: &Path, action_id: &str) -> Result<Value> {
    let dir = state_dir.join("packages");
    // Actions run one at a time: anything there is a package a crash left behind.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    let package = collect_package(&dir)?;
    let uploaded = client.upload_package(action_id, &package.path);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        // The next collection empties the directory again.
        warn!("cannot remove {}: {e}", dir.display());
    }
    uploaded.with_context(|| {
        format!(
            "the package ({} bytes) was collected but not uploaded",
            package.bytes
        )
    })?;
    Ok(json!({"package_bytes": package.bytes, "items": package.items, "sha256": package.sha256}))
}

/// Collects the package into `dir` (created 0700 if needed) as
/// `rampart-package-TIMESTAMP.tar.gz`, readable by root only.
pub fn collect_package(dir: &Path) -> Result<Package> {
    collect_with(
        dir,
        Caps {
            file: FILE_CAP,
            package: PACKAGE_CAP,
        },
    )
}

#[derive(Clone, Copy)]
struct Caps {
    file: u64,
    package: u64,
}

fn collect_with(dir: &Path, caps: Caps) -> Result<Package> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let name = format!(
        "rampart-package-{}.tar.gz",
        Utc::now().format("%Y%m%dT%H%M%S%.3f")
    );
    let path = dir.join(&name);
    let partial = dir.join(format!("{name}.partial"));
    let written = write_package(&partial, caps).and_then(|package| {
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot rename {}", partial.display()))?;
        Ok(Package { path, ..package })
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

fn write_package(path: &Path, caps: Caps) -> Result<Package> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let out = Digesting {
        file,
        sha256: Sha256::new(),
        bytes: 0,
    };
    let mut package = Writer {
        tar: tar::Builder::new(GzEncoder::new(out, Compression::default())),
        caps,
        used: 0,
        items: Vec::new(),
    };
    collect_into(&mut package)?;

    let collected = package
        .items
        .iter()
        .filter(|i| i["name"].is_string())
        .count();
    let manifest = json!({
        "created": Utc::now(),
        "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
        "agent_version": env!("CARGO_PKG_VERSION"),
        "caps": {
            "file_bytes": caps.file,
            "package_bytes": caps.package,
            "how": "each item is cut at file_bytes (logs and histories keep their end); all items together at package_bytes, uncompressed",
        },
        "collected": collected,
        "not_collected": package.items.len() - collected,
        "items": package.items,
    });
    package.append(
        "manifest.json",
        &serde_json::to_vec_pretty(&manifest)?,
        Utc::now(),
    )?;
    let out = package.tar.into_inner()?.finish()?;
    out.file.sync_all()?;
    Ok(Package {
        path: path.to_path_buf(),
        bytes: out.bytes,
        sha256: hex::encode(out.sha256.finalize()),
        items: collected,
    })
}

fn collect_into(package: &mut Writer) -> Result<()> {
    let (processes, names) = processes();
    package.generated(
        "processes.jsonl",
        "/proc/PID/{stat,status,cmdline,exe}",
        processes,
        false,
        None,
    )?;

    let (connections, errors) = connections(&names);
    let listening: Vec<&Value> = connections
        .iter()
        .filter(|c| c["listening"] == true)
        .collect();
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    package.generated(
        "listening.jsonl",
        "/proc/net/{tcp,tcp6,udp,udp6}",
        json_lines(&listening),
        false,
        error.clone(),
    )?;
    package.generated(
        "connections.jsonl",
        "/proc/net/{tcp,tcp6,udp,udp6} + /proc/PID/fd",
        json_lines(&connections),
        false,
        error,
    )?;

    for path in FILES {
        package.file(Path::new(path), Keep::Start)?;
    }
    auth_logs(package)?;

    let homes = home_dirs();
    // What is walked: the directory, whether its regular files are copied, and for a directory
    // in a home, that home (then it is skipped when missing).
    let mut dirs: Vec<(PathBuf, bool, Option<&PathBuf>)> =
        COPIED_DIRS.iter().map(|d| (d.into(), true, None)).collect();
    dirs.extend(LISTED_DIRS.iter().map(|d| (d.into(), false, None)));
    dirs.extend(
        homes
            .iter()
            .flat_map(|h| HOME_DIRS.iter().map(move |d| (h.join(d), true, Some(h)))),
    );
    let mut listing = Vec::new();
    let mut copied = Vec::new();
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    for (dir, copy, home) in &dirs {
        let real = match std::fs::canonicalize(dir) {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && home.is_some() => continue,
            Err(e) => {
                errors.push(format!("{}: {}", dir.display(), describe(&e)));
                continue;
            }
        };
        if let Some(home) = home
            && !real.starts_with(home)
        {
            errors.push(outside_home(dir, &real));
            continue;
        }
        // /lib is /usr/lib on merged-/usr systems: list it once.
        if !seen.insert(real) {
            continue;
        }
        match walk(dir) {
            Ok(entries) => {
                if *copy {
                    copied.extend(
                        entries
                            .iter()
                            .filter(|(_, m)| m.is_file())
                            .map(|(p, _)| p.clone()),
                    );
                }
                listing.extend(entries);
            }
            Err(e) => errors.push(format!("{}: {}", dir.display(), describe(&e))),
        }
    }
    let listing: Vec<Value> = listing.iter().map(|(p, m)| entry_json(p, m)).collect();
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    package.generated(
        "listing.jsonl",
        "cron, systemd, init.d and profile.d directories",
        json_lines(&listing),
        false,
        error,
    )?;
    for path in &copied {
        package.file(path, Keep::Start)?;
    }

    for home in &homes {
        for name in HOME_FILES {
            package.user_file(home, &home.join(name), Keep::Start)?;
        }
        for name in HISTORIES {
            package.user_file(home, &home.join(name), Keep::End)?;
        }
    }
    Ok(())
}

/// A path in a home directory that leads out of it: a user could point it at /etc/shadow.
fn outside_home(path: &Path, real: &Path) -> String {
    format!(
        "{} leads to {}, outside its home directory: not followed",
        path.display(),
        real.display()
    )
}

/// The auth log files there are, or else the journal's auth and authpriv messages.
fn auth_logs(package: &mut Writer) -> Result<()> {
    let present: Vec<&str> = AUTH_LOGS
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    for path in &present {
        package.file(Path::new(path), Keep::End)?;
    }
    if !present.is_empty() {
        return Ok(());
    }
    let source = format!("journalctl -n {JOURNAL_LINES} --facility=auth,authpriv");
    if !Path::new("/run/systemd/journal").exists() {
        return package.skipped(
            &source,
            format!(
                "no auth log: {} are missing and journald is not running",
                AUTH_LOGS.join(" and ")
            ),
        );
    }
    let args: Vec<String> = [
        "--no-pager",
        "-o",
        "short-iso",
        "-n",
        JOURNAL_LINES,
        "--facility=auth,authpriv",
    ]
    .map(String::from)
    .into();
    let room = usize::try_from(package.room()).unwrap_or(usize::MAX);
    let run = crate::live::find_program("journalctl")
        .and_then(|program| crate::live::run(&program, &args, Duration::from_secs(60), room));
    match run {
        Ok(out) if out.exit_code == Some(0) || !out.stdout.is_empty() => {
            let error = out
                .timed_out
                .then(|| "journalctl timed out: its output is partial".to_string());
            package.generated(
                "logs/journal-auth.log",
                &source,
                out.stdout,
                out.truncated,
                error,
            )
        }
        Ok(out) => package.skipped(
            &source,
            format!(
                "journalctl failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
        Err(e) => package.skipped(&source, format!("{e:#}")),
    }
}

/// The home directories of /etc/passwd's accounts that exist, resolved, each once.
fn home_dirs() -> BTreeSet<PathBuf> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(5))
        .filter(|h| h.starts_with('/'))
        .filter_map(|h| std::fs::canonicalize(h).ok())
        .collect()
}

/// One JSON line per process, and pid → process name.
fn processes() -> (Vec<u8>, HashMap<u32, String>) {
    let mut table = ProcessTable::new(HashCache::new(DEFAULT_MAX_FILE_BYTES), Clock::now());
    let mut lines = Vec::new();
    let mut names = HashMap::new();
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids {
        // Gone since the directory was read.
        let Some(p) = table.lookup(pid, None) else {
            continue;
        };
        // The process table drops the mark; a deleted image is worth knowing about.
        let deleted = std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|l| l.to_string_lossy().ends_with(" (deleted)"));
        let line = json!({
            "pid": p.pid,
            "ppid": p.ppid,
            "uid": p.uid,
            "user": &*p.account,
            "name": &*p.name,
            "exe": &*p.path,
            "exe_deleted": deleted,
            "cmdline": &*p.command_line,
            "start_time": p.created,
            "sha256": p.hashes.as_ref().map(|h| h.sha256.clone()),
        });
        names.insert(pid, p.name.to_string());
        lines.extend(line.to_string().bytes());
        lines.push(b'\n');
    }
    (lines, names)
}

/// Sockets from /proc/net with the processes holding them; errors of the tables unreadable.
fn connections(names: &HashMap<u32, String>) -> (Vec<Value>, Vec<String>) {
    let owners = socket_owners();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for protocol in ["tcp", "tcp6", "udp", "udp6"] {
        let path = format!("/proc/net/{protocol}");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{path}: {}", describe(&e)));
                continue;
            }
        };
        for socket in text.lines().skip(1).filter_map(parse_socket_line) {
            let pids = owners.get(&socket.inode).cloned().unwrap_or_default();
            let processes: Vec<&str> = pids
                .iter()
                .filter_map(|p| names.get(p).map(String::as_str))
                .collect();
            let tcp = protocol.starts_with("tcp");
            out.push(json!({
                "protocol": protocol,
                "local_address": socket.local.0,
                "local_port": socket.local.1,
                "remote_address": socket.remote.0,
                "remote_port": socket.remote.1,
                "state": if tcp { tcp_state(socket.state) } else if socket.state == 1 { "CONNECTED" } else { "UNCONNECTED" },
                // A TCP listener, or a UDP socket bound to a port and connected to no one.
                "listening": if tcp { socket.state == 0x0A } else { socket.remote.1 == 0 && socket.local.1 != 0 },
                "uid": socket.uid,
                "inode": socket.inode,
                "pids": pids,
                "processes": processes,
            }));
        }
    }
    (out, errors)
}

struct Socket {
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    state: u8,
    uid: u32,
    inode: u64,
}

/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...` of /proc/net/{tcp,udp}[6].
fn parse_socket_line(line: &str) -> Option<Socket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(Socket {
        local: parse_endpoint(f.get(1)?)?,
        remote: parse_endpoint(f.get(2)?)?,
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        uid: f.get(7)?.parse().ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

/// `0100007F:1F90`: the address as the kernel's 32-bit words in host byte order, the port in hex.
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..addr.len()).step_by(8) {
        bytes.extend(
            u32::from_str_radix(addr.get(i..i + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        );
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some((ip, port))
}

fn tcp_state(state: u8) -> &'static str {
    match state {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Socket inode → the processes with a descriptor on it.
fn socket_owners() -> HashMap<u64, Vec<u32>> {
    let mut owners: HashMap<u64, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        for fd in std::fs::read_dir(entry.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(inode) = inode {
                let pids = owners.entry(inode).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    owners
}

/// Every entry under `dir` (links not followed), `WALK_DEPTH` levels deep at most, sorted.
fn walk(dir: &Path) -> std::io::Result<Vec<(PathBuf, Metadata)>> {
    let mut out = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0)];
    while let Some((current, depth)) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(e) => e,
            Err(e) if current == dir => return Err(e),
            // A subdirectory that vanished or is unreadable: its entry is listed already.
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() && depth + 1 < WALK_DEPTH {
                pending.push((entry.path(), depth + 1));
            }
            out.push((entry.path(), meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn entry_json(path: &Path, meta: &Metadata) -> Value {
    let kind = if meta.is_symlink() {
        "symlink"
    } else if meta.is_dir() {
        "dir"
    } else if meta.is_file() {
        "file"
    } else {
        "other"
    };
    json!({
        "path": path,
        "kind": kind,
        "target": meta.is_symlink().then(|| std::fs::read_link(path).ok()).flatten(),
        "size": meta.size(),
        "mode": format!("{:o}", meta.mode() & 0o7777),
        "uid": meta.uid(),
        "gid": meta.gid(),
        "modified": DateTime::from_timestamp(meta.mtime(), 0),
    })
}

fn json_lines<T: serde::Serialize>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        if let Ok(line) = serde_json::to_vec(v) {
            out.extend(line);
            out.push(b'\n');
        }
    }
    out
}

fn describe(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "not found".into()
    } else {
        e.to_string()
    }
}

/// Which end of a file is kept when it is cut.
#[derive(Clone, Copy)]
enum Keep {
    Start,
    End,
}

/// Where an item came from.
struct Origin {
    source: String,
    /// Its size there (what was read, for a generated item).
    size: u64,
    cut: bool,
    modified: DateTime<Utc>,
    error: Option<String>,
}

/// The archive being written and its manifest entries.
struct Writer {
    tar: tar::Builder<GzEncoder<Digesting>>,
    caps: Caps,
    /// Uncompressed bytes of the items so far.
    used: u64,
    items: Vec<Value>,
}

impl Writer {
    /// Bytes the next item may have.
    fn room(&self) -> u64 {
        self.caps
            .file
            .min(self.caps.package.saturating_sub(self.used))
    }

    /// Copies a file to `files/PATH`, or notes why it could not be. Only archive write errors
    /// are errors.
    fn file(&mut self, path: &Path, keep: Keep) -> Result<()> {
        let source = path.display().to_string();
        let room = self.room();
        if room == 0 {
            return self.skipped(&source, self.cap_reached());
        }
        match read_capped(path, room, keep) {
            Ok((data, size, modified)) => {
                let name = format!("files{source}");
                let origin = Origin {
                    source,
                    size,
                    cut: false,
                    modified,
                    error: None,
                };
                self.item(&name, data, origin)
            }
            Err(e) => self.skipped(&source, describe(&e)),
        }
    }

    /// A file in a user's `home` (resolved): copied when present and when it resolves inside
    /// that home.
    fn user_file(&mut self, home: &Path, path: &Path, keep: Keep) -> Result<()> {
        match std::fs::canonicalize(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => self.skipped(&path.display().to_string(), describe(&e)),
            Ok(real) if !real.starts_with(home) => {
                self.skipped(&path.display().to_string(), outside_home(path, &real))
            }
            Ok(_) => self.file(path, keep),
        }
    }

    /// Adds what the agent produced, cut at its end when too large; `cut` when its producer
    /// cut it already.
    fn generated(
        &mut self,
        name: &str,
        source: &str,
        mut data: Vec<u8>,
        cut: bool,
        error: Option<String>,
    ) -> Result<()> {
        let room = self.room();
        if room == 0 {
            return self.skipped(source, self.cap_reached());
        }
        let size = data.len() as u64;
        data.truncate(usize::try_from(room).unwrap_or(usize::MAX));
        let origin = Origin {
            source: source.to_string(),
            size,
            cut,
            modified: Utc::now(),
            error,
        };
        self.item(name, data, origin)
    }

    fn item(&mut self, name: &str, data: Vec<u8>, origin: Origin) -> Result<()> {
        let bytes = data.len() as u64;
        self.append(name, &data, origin.modified)?;
        self.used += bytes;
        self.items.push(json!({
            "name": name,
            "source": origin.source,
            "bytes": bytes,
            "source_bytes": origin.size,
            "truncated": origin.cut || origin.size > bytes,
            "error": origin.error,
        }));
        Ok(())
    }

    fn skipped(&mut self, source: &str, error: String) -> Result<()> {
        self.items
            .push(json!({"name": null, "source": source, "bytes": 0, "error": error}));
        Ok(())
    }

    fn cap_reached(&self) -> String {
        format!(
            "not collected: the package cap ({} bytes) is reached",
            self.caps.package
        )
    }

    fn append(&mut self, name: &str, data: &[u8], modified: DateTime<Utc>) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(u64::try_from(modified.timestamp()).unwrap_or(0));
        header.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut header, name, data)
            .with_context(|| format!("cannot write {name} into the package"))
    }
}

/// At most `limit` bytes of a regular file, from its start or its end; with its size and
/// modification time. Opened non-blocking so a FIFO planted in a listed directory cannot hang
/// the collection.
fn read_capped(
    path: &Path,
    limit: u64,
    keep: Keep,
) -> std::io::Result<(Vec<u8>, u64, DateTime<Utc>)> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let modified = DateTime::from_timestamp(meta.mtime(), 0).unwrap_or_default();
    if let Keep::End = keep
        && meta.len() > limit
    {
        file.seek(SeekFrom::Start(meta.len() - limit))?;
    }
    // /proc files report size 0: read one byte past the limit to know it was cut.
    let mut data = Vec::new();
    file.take(limit + 1).read_to_end(&mut data)?;
    let size = meta.len().max(data.len() as u64);
    data.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok((data, size, modified))
}

/// The package file, hashed and counted as it is written.
struct Digesting {
    file: File,
    sha256: Sha256,
    bytes: u64,
}

impl Write for Digesting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.sha256.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_in_kernel_notation() {
        let (ip, port) = parse_endpoint("0100007F:1F90").unwrap();
        assert_eq!((ip.to_string().as_str(), port), ("127.0.0.1", 8080));
        let (ip, port) = parse_endpoint("00000000000000000000000001000000:0016").unwrap();
        assert_eq!((ip.to_string().as_str(), port), ("::1", 22));
        assert!(parse_endpoint("0100007F").is_none());
        assert!(parse_endpoint("01007F:0016").is_none());
        let line = "   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20461 1 0000000000000000 100 0 0 10 0";
        let s = parse_socket_line(line).unwrap();
        assert_eq!((s.local.1, s.state, s.uid, s.inode), (631, 0x0A, 0, 20461));
    }

    fn writer(dir: &Path, caps: Caps) -> Writer {
        let out = Digesting {
            file: File::create(dir.join("p.tar.gz")).unwrap(),
            sha256: Sha256::new(),
            bytes: 0,
        };
        Writer {
            tar: tar::Builder::new(GzEncoder::new(out, Compression::default())),
            caps,
            used: 0,
            items: Vec::new(),
        }
    }

    #[test]
    fn caps_cut_files_and_then_skip_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, b"old line\nnew line\n").unwrap();
        let mut w = writer(
            dir.path(),
            Caps {
                file: 9,
                package: 20,
            },
        );
        w.file(&log, Keep::End).unwrap();
        w.file(&log, Keep::Start).unwrap();
        w.file(&log, Keep::Start).unwrap();
        w.file(&dir.path().join("missing"), Keep::Start).unwrap();
        assert_eq!(w.items.len(), 4, "{:?}", w.items);
        assert_eq!(w.items[0]["bytes"], 9);
        assert_eq!(w.items[0]["truncated"], true);
        assert_eq!(w.items[0]["source_bytes"], 18);
        // The package has 2 bytes left for the third copy, none for the fourth.
        assert_eq!(w.items[2]["bytes"], 2);
        assert_eq!(
            w.items[3]["error"],
            "not collected: the package cap (20 bytes) is reached"
        );
        w.tar.into_inner().unwrap().finish().unwrap();

        let (tail, _, _) = read_capped(&log, 9, Keep::End).unwrap();
        assert_eq!(tail, b"new line\n");
        let (head, size, _) = read_capped(&log, 9, Keep::Start).unwrap();
        assert_eq!((head.as_slice(), size), (&b"old line\n"[..], 18));
        let missing = read_capped(&dir.path().join("missing"), 9, Keep::Start).unwrap_err();
        assert_eq!(describe(&missing), "not found");
        assert!(
            read_capped(dir.path(), 9, Keep::Start).is_err(),
            "a directory is not copied"
        );
    }

    #[test]
    fn user_files_are_not_followed_out_of_their_home() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let home = root.join("home");
        std::fs::create_dir_all(home.join("dotfiles")).unwrap();
        std::fs::write(root.join("shadow"), b"root:$6$secret").unwrap();
        std::fs::write(home.join("dotfiles/profile"), b"export A=1").unwrap();
        std::os::unix::fs::symlink(root.join("shadow"), home.join(".bash_history")).unwrap();
        std::os::unix::fs::symlink(home.join("dotfiles/profile"), home.join(".profile")).unwrap();
        let mut w = writer(
            &root,
            Caps {
                file: 1 << 20,
                package: 1 << 20,
            },
        );
        for name in [".bash_history", ".profile", ".zshrc"] {
            w.user_file(&home, &home.join(name), Keep::Start).unwrap();
        }
        assert_eq!(
            w.items.len(),
            2,
            "a missing user file is not listed: {:?}",
            w.items
        );
        assert!(w.items[0]["name"].is_null());
        let why = w.items[0]["error"].as_str().unwrap();
        assert!(
            why.contains("outside its home directory: not followed"),
            "{why}"
        );
        assert_eq!(
            w.items[1]["bytes"], 10,
            "a link inside the home is followed"
        );
    }
}
