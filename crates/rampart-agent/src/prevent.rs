//! Prevention: the block indicators of the server's policy, enforced on this machine.
//!
//! - **Files** (SHA-1, SHA-256, MD5): fanotify permission events (`FAN_OPEN_EXEC_PERM`) on
//!   every local filesystem. Before the kernel runs an image (a program, or a script started by
//!   its own path), the guard hashes it (cached by file version, as the sensor does)
//!   and denies a blocked one: `execve` fails with `EPERM` and the program never runs. Each
//!   denial is handed over as a [`Blocked`] (a `DeviceEvents` row `ExecutionBlocked`). The guard
//!   is a helper process ([`ExecGuard`]) that runs only while the policy blocks some file; what
//!   it cannot judge it allows (a blocklist is no reason to stop the machine), and when it dies
//!   the kernel allows whatever waited.
//!   Not covered: a script read by an interpreter named on the command line (`sh x.sh`), and
//!   filesystems mounted after the guard started.
//! - **Addresses**: an nftables table of the agent's own, [`TABLE`], drops traffic to and from
//!   the blocked addresses, in and out. The server's addresses and loopback are never blocked
//!   (the agent could not hear the indicator being lifted). The table is replaced whole on every
//!   change and stays when the agent stops, like isolation.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::hashes::{HashCache, Hashes};
use crate::sensor::Task;

/// The nftables table (family and name) that holds the address blocks.
pub const TABLE: &str = "inet rampart_block";
/// Entries of each kind a policy may carry (the server sends at most as many); beyond it the
/// rest is skipped and counted.
pub const MAX_ENTRIES: usize = 10_000;

/// What the policy blocks: file hashes and addresses, each with the indicator that asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    /// Lowercase hex digest (its length tells the kind) → indicator id.
    files: HashMap<String, String>,
    addresses: BTreeMap<IpAddr, String>,
}

impl Blocklist {
    /// From the policy's `block` (`{"files": [{"id", "kind", "value"}], "addresses": [{"id",
    /// "value"}]}`); returns it and how many entries were skipped as malformed or past
    /// [`MAX_ENTRIES`].
    pub fn from_policy(block: &Value) -> (Blocklist, usize) {
        let mut list = Blocklist::default();
        let mut skipped = 0;
        let entries = |key: &str| block[key].as_array().cloned().unwrap_or_default();
        for entry in entries("files") {
            let (Some(id), Some(kind), Some(value)) = (
                entry["id"].as_str(),
                entry["kind"].as_str(),
                entry["value"].as_str(),
            ) else {
                skipped += 1;
                continue;
            };
            let digits = match kind {
                "md5" => 32,
                "sha1" => 40,
                "sha256" => 64,
                _ => 0,
            };
            let value = value.to_ascii_lowercase();
            if digits == 0
                || value.len() != digits
                || !value.bytes().all(|b| b.is_ascii_hexdigit())
                || list.files.len() >= MAX_ENTRIES
            {
                skipped += 1;
                continue;
            }
            list.files.insert(value, id.to_string());
        }
        for entry in entries("addresses") {
            match (
                entry["id"].as_str(),
                entry["value"]
                    .as_str()
                    .and_then(|v| v.parse::<IpAddr>().ok()),
            ) {
                (Some(id), Some(ip)) if list.addresses.len() < MAX_ENTRIES => {
                    list.addresses.insert(ip, id.to_string());
                }
                _ => skipped += 1,
            }
        }
        (list, skipped)
    }

    pub fn files(&self) -> usize {
        self.files.len()
    }

    pub fn addresses(&self) -> impl Iterator<Item = &IpAddr> {
        self.addresses.keys()
    }

    /// The indicator (kind, id) that blocks a file of these hashes.
    pub fn file(&self, h: &Hashes) -> Option<(&'static str, &str)> {
        [("sha256", &h.sha256), ("sha1", &h.sha1), ("md5", &h.md5)]
            .into_iter()
            .find_map(|(kind, digest)| Some((kind, self.files.get(digest)?.as_str())))
    }
}

/// An execution the guard denied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blocked {
    /// The process that called `execve` (still there: only its call failed).
    pub task: Task,
    pub path: String,
    pub hashes: Hashes,
    /// The indicator's id and the hash kind that matched.
    pub indicator: String,
    pub kind: String,
}

/// The exec guard, run as a helper process (`rampart-agent exec-guard`) that holds the
/// fanotify group alone. In the agent's own process it could not be: every child the agent
/// starts (nft, live-response commands) inherits the group's descriptor until its `execve`
/// completes, and one that waits on its own permission event while the guard stops keeps
/// the group alive, unanswered, and with it every `execve` on the machine. The helper starts
/// nothing, so when it exits or is killed the kernel releases the group and allows whatever
/// waited. The agent writes it blocklists (one JSON `block` object per line) and reads its
/// denials (one [`Blocked`] per line); at the end of its input it stops.
pub struct ExecGuard {
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<()>>,
    status: Value,
}

impl ExecGuard {
    /// Starts `program exec-guard` (the agent's own binary) enforcing the policy's `block`;
    /// denials go to `blocked`. Fails when the helper cannot guard any filesystem.
    pub fn start(
        program: &Path,
        block: &Value,
        max_hash_bytes: u64,
        blocked: mpsc::Sender<Blocked>,
    ) -> Result<ExecGuard> {
        let mut child = Command::new(program)
            .args([
                "exec-guard",
                "--max-hash-bytes",
                &max_hash_bytes.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {} exec-guard", program.display()))?;
        let mut stdin = child.stdin.take().context("the helper's input")?;
        let mut lines = BufReader::new(child.stdout.take().context("the helper's output")?).lines();
        writeln!(stdin, "{block}").context("writing to the exec guard")?;
        // The first line says what it guards, or it exits with the reason on stderr.
        let status: Value = match lines.next() {
            Some(Ok(line)) => serde_json::from_str(&line).context("the exec guard's status")?,
            _ => {
                let code = child.wait().ok().and_then(|s| s.code());
                bail!("the exec guard did not start (exit code {code:?})");
            }
        };
        let reader = std::thread::Builder::new()
            .name("exec-guard-reader".into())
            .spawn(move || {
                for line in lines.map_while(Result::ok) {
                    match serde_json::from_str::<Blocked>(&line) {
                        Ok(b) => {
                            let _ = blocked.send(b);
                        }
                        Err(e) => tracing::warn!("exec guard: unreadable denial: {e}"),
                    }
                }
            })?;
        Ok(ExecGuard {
            child,
            stdin: Some(stdin),
            reader: Some(reader),
            status,
        })
    }

    /// Enforces the policy's `block` from now on.
    pub fn set(&mut self, block: &Value) -> Result<()> {
        let stdin = self.stdin.as_mut().context("the exec guard is stopping")?;
        writeln!(stdin, "{block}").context("writing to the exec guard")
    }

    /// For the agent's health: what is guarded and what could not be.
    pub fn status(&self) -> Value {
        self.status.clone()
    }
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        // End of input: the helper stops within a poll; killed if it does not.
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The helper's body (`rampart-agent exec-guard`): marks every local filesystem, prints its
/// status line, then answers permission events — enforcing the latest blocklist read from
/// stdin and printing each denial — until stdin ends.
pub fn serve_stdio(max_hash_bytes: u64) -> Result<()> {
    // SAFETY: plain fanotify_init(2); the fd is owned right away.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
            (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32,
        )
    };
    if fd < 0 {
        bail!("fanotify permission events: {}", io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let (mut watched, mut unwatched) = (Vec::new(), Vec::new());
    for point in crate::fanotify::to_watch(&crate::fanotify::mounts(&mountinfo), false) {
        match mark(&fd, &point) {
            Ok(()) => watched.push(point),
            Err(e) => unwatched.push(json!({"path": point, "error": e.to_string()})),
        }
    }
    if watched.is_empty() {
        bail!("no filesystem could be guarded: {}", json!(unwatched));
    }
    let list: Arc<RwLock<Arc<Blocklist>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (list, stop) = (list.clone(), stop.clone());
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(block) => {
                        let (new, _) = Blocklist::from_policy(&block);
                        *list.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                    }
                    Err(e) => tracing::warn!("exec guard: unreadable blocklist kept out: {e}"),
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}",
        json!({"filesystems": watched, "unguarded": unwatched})
    )?;
    out.flush()?;
    let mut judge = Judge {
        cache: HashCache::new(max_hash_bytes),
        own_pid: std::process::id(),
        tick_ns: crate::fallback::tick_ns(),
    };
    while !stop.load(Ordering::Relaxed) {
        serve(&fd, &list, &mut judge, &mut |b| {
            // The agent gone, the denial has nowhere to go; enforcing goes on until stdin ends.
            let _ = serde_json::to_writer(&mut out, &b)
                .map_err(io::Error::from)
                .and_then(|()| writeln!(out))
                .and_then(|()| out.flush());
        })?;
    }
    Ok(())
}

fn mark(fd: &OwnedFd, point: &str) -> io::Result<()> {
    let path = std::ffi::CString::new(point).map_err(io::Error::other)?;
    // SAFETY: `path` is NUL-terminated; fanotify_mark only reads it.
    let rc = unsafe {
        libc::fanotify_mark(
            fd.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            libc::FAN_OPEN_EXEC_PERM,
            libc::AT_FDCWD,
            path.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What the guard keeps between events.
struct Judge {
    cache: HashCache,
    own_pid: u32,
    tick_ns: u64,
}

/// Waits a little for events and answers every one read, whatever happens to the others (an
/// event read and not answered would hold its process, and every later `execve` of it, until
/// the group is gone).
fn serve(
    fd: &OwnedFd,
    list: &RwLock<Arc<Blocklist>>,
    judge: &mut Judge,
    denied: &mut dyn FnMut(Blocked),
) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
        return Ok(());
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(()),
                _ if n == 0 => Ok(()),
                _ => Err(e),
            };
        }
        let list = list.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut rest = &buf[..usize::try_from(n).unwrap_or(0)];
        while let Some((event_len, mask, event_fd, pid)) = metadata(rest) {
            rest = rest.get(event_len..).unwrap_or_default();
            if event_fd < 0 {
                continue;
            }
            // SAFETY: the kernel opened this descriptor for us; it is ours to close, once the
            // event is answered (the answer names it).
            let mut file = File::from(unsafe { OwnedFd::from_raw_fd(event_fd) });
            if mask & libc::FAN_OPEN_EXEC_PERM == 0 {
                continue;
            }
            let denial = judge.judge(&mut file, pid, &list);
            if let Err(e) = respond(fd.as_raw_fd(), event_fd, denial.is_none()) {
                tracing::warn!("exec guard: cannot answer an event: {e}");
            }
            drop(file);
            if let Some(b) = denial {
                denied(b);
            }
        }
    }
}

impl Judge {
    /// `Some` when the file is blocked (what the event row needs).
    fn judge(&mut self, file: &mut File, pid: u32, list: &Blocklist) -> Option<Blocked> {
        if pid == self.own_pid {
            return None;
        }
        let hashes = self.cache.of_file(file)?;
        let (kind, indicator) = list.file(&hashes)?;
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Some(Blocked {
            task: crate::fallback::task(pid, None, self.tick_ns),
            path,
            indicator: indicator.to_string(),
            kind: kind.to_string(),
            hashes: (*hashes).clone(),
        })
    }
}

/// (event_len, mask, fd, pid) of the event at the start of `buf`, if whole and of a version
/// this code reads.
fn metadata(buf: &[u8]) -> Option<(usize, u64, RawFd, u32)> {
    let u32_at = |o: usize| Some(u32::from_ne_bytes(buf.get(o..o + 4)?.try_into().ok()?));
    let event_len = usize::try_from(u32_at(0)?).ok()?;
    if event_len < 24 || event_len > buf.len() || buf[4] != libc::FANOTIFY_METADATA_VERSION {
        return None;
    }
    let mask = u64::from_ne_bytes(buf.get(8..16)?.try_into().ok()?);
    let fd = u32_at(16)? as i32;
    let pid = u32_at(20)?;
    Some((event_len, mask, fd, pid))
}

fn respond(group: RawFd, fd: RawFd, allow: bool) -> io::Result<()> {
    let response = libc::fanotify_response {
        fd,
        response: if allow {
            libc::FAN_ALLOW
        } else {
            libc::FAN_DENY
        },
    };
    let len = std::mem::size_of::<libc::fanotify_response>();
    // SAFETY: `response` is a plain struct of `len` bytes.
    let n = unsafe { libc::write(group, (&raw const response).cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps this machine in line with the policy's blocklist: starts, updates and stops the exec
/// guard, and replaces the address blocks when they change.
pub struct Enforcer {
    list: Blocklist,
    /// Whether the address blocks were applied once (a table left by an earlier run is
    /// replaced by the first policy even when it blocks nothing).
    applied: bool,
    guard: Option<ExecGuard>,
    /// The agent's binary, run as the guard.
    program: PathBuf,
    blocked: mpsc::Sender<Blocked>,
    max_hash_bytes: u64,
    keep: Vec<IpAddr>,
    health: Value,
}

impl Enforcer {
    /// `program`: the agent's binary (the guard runs as `program exec-guard`); `keep`: the
    /// server's addresses, never blocked; denials go to `blocked`.
    pub fn new(
        program: PathBuf,
        max_hash_bytes: u64,
        keep: Vec<IpAddr>,
        blocked: mpsc::Sender<Blocked>,
    ) -> Self {
        Enforcer {
            list: Blocklist::default(),
            applied: false,
            guard: None,
            program,
            blocked,
            max_hash_bytes,
            keep,
            health: Value::Null,
        }
    }

    /// Enforces the policy's `block`; returns the health report of prevention.
    pub fn apply(&mut self, block: &Value) -> Value {
        let (list, skipped) = Blocklist::from_policy(block);
        // The same list again: nothing to do, unless the guard failed to start (tried again).
        if self.applied && list == self.list && self.health["exec_guard_error"].is_null() {
            return self.health.clone();
        }
        let mut guard_error = None;
        if list.files() == 0 {
            self.guard = None;
        } else {
            let updated = match &mut self.guard {
                Some(g) => g.set(block),
                None => ExecGuard::start(
                    &self.program,
                    block,
                    self.max_hash_bytes,
                    self.blocked.clone(),
                )
                .map(|g| self.guard = Some(g)),
            };
            if let Err(e) = updated {
                tracing::warn!("exec guard: blocked files may run: {e:#}");
                guard_error = Some(format!("{e:#}"));
                self.guard = None;
            }
        }
        let mut address_error = self.health["address_error"].as_str().map(String::from);
        let mut addresses = self.health["blocked_addresses"].as_u64().unwrap_or(0);
        if !self.applied || !list.addresses().eq(self.list.addresses()) {
            address_error = None;
            let nothing = list.addresses().next().is_none();
            match apply_addresses(&list, &self.keep) {
                Ok(n) => addresses = n as u64,
                // No nft and nothing to block: nothing to do.
                Err(_) if nothing && crate::live::find_program("nft").is_err() => addresses = 0,
                Err(e) => {
                    tracing::warn!("address blocks: {e:#}");
                    address_error = Some(format!("{e:#}"));
                }
            }
        }
        self.applied = true;
        self.list = list;
        self.health = json!({
            "blocked_files": self.guard.as_ref().map_or(0, |_| self.list.files()),
            "blocked_addresses": addresses,
            "skipped_entries": skipped,
            "exec_guard": self.guard.as_ref().map(ExecGuard::status),
            "exec_guard_error": guard_error,
            "address_error": address_error,
        });
        self.health.clone()
    }
}

/// Replaces the address blocks with `list`'s, leaving out loopback and `keep` (the server's
/// addresses); with none left, removes the table. Returns how many addresses are blocked.
pub fn apply_addresses(list: &Blocklist, keep: &[IpAddr]) -> Result<usize> {
    let addresses: Vec<IpAddr> = list
        .addresses()
        .filter(|a| !a.is_loopback() && !a.is_unspecified() && !keep.contains(a))
        .copied()
        .collect();
    crate::isolation::nft(&ruleset(&addresses))?;
    Ok(addresses.len())
}

/// The nftables script that makes [`TABLE`] block `addresses` (none: deletes it), in one
/// transaction.
pub fn ruleset(addresses: &[IpAddr]) -> String {
    let replace = format!("table {TABLE}\ndelete table {TABLE}\n");
    if addresses.is_empty() {
        return replace;
    }
    let set = |v6| crate::isolation::elements(addresses, v6);
    format!(
        "{replace}table {TABLE} {{
	set blocked4 {{ type ipv4_addr;{v4} }}
	set blocked6 {{ type ipv6_addr;{v6} }}
	chain input {{
		type filter hook input priority filter - 5; policy accept;
		ip saddr @blocked4 drop
		ip6 saddr @blocked6 drop
	}}
	chain output {{
		type filter hook output priority filter - 5; policy accept;
		ip daddr @blocked4 drop
		ip6 daddr @blocked6 drop
	}}
	chain forward {{
		type filter hook forward priority filter - 5; policy accept;
		ip saddr @blocked4 drop
		ip daddr @blocked4 drop
		ip6 saddr @blocked6 drop
		ip6 daddr @blocked6 drop
	}}
}}
",
        v4 = set(false),
        v6 = set(true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(sha256: &str, sha1: &str, md5: &str) -> Hashes {
        Hashes {
            sha256: sha256.into(),
            sha1: sha1.into(),
            md5: md5.into(),
            size: 1,
        }
    }

    #[test]
    fn policy_entries_are_checked_and_matched_by_any_hash() {
        let sha256 = "AB".repeat(32);
        let block = json!({
            "files": [
                {"id": "i1", "kind": "sha256", "value": sha256},
                {"id": "i2", "kind": "md5", "value": "0".repeat(32)},
                {"id": "bad-length", "kind": "sha1", "value": "0".repeat(39)},
                {"id": "not-hex", "kind": "md5", "value": "g".repeat(32)},
                {"id": "no-kind", "value": "0".repeat(40)},
                {"id": "cert", "kind": "cert", "value": "0".repeat(40)},
            ],
            "addresses": [
                {"id": "a1", "value": "192.0.2.7"},
                {"id": "a2", "value": "2001:db8::1"},
                {"id": "a3", "value": "not an address"},
                {"value": "192.0.2.8"},
            ],
        });
        let (list, skipped) = Blocklist::from_policy(&block);
        assert_eq!(skipped, 6);
        assert_eq!(list.files(), 2);
        assert_eq!(
            list.addresses()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["192.0.2.7", "2001:db8::1"]
        );
        // Upper-case digests in the policy match the sensor's lower-case ones.
        let h = hashes(&"ab".repeat(32), &"1".repeat(40), &"2".repeat(32));
        assert_eq!(list.file(&h), Some(("sha256", "i1")));
        let h = hashes(&"c".repeat(64), &"1".repeat(40), &"0".repeat(32));
        assert_eq!(list.file(&h), Some(("md5", "i2")));
        let h = hashes(&"c".repeat(64), &"1".repeat(40), &"2".repeat(32));
        assert_eq!(list.file(&h), None);
        // Nothing (an old server's policy) blocks nothing.
        assert_eq!(
            Blocklist::from_policy(&Value::Null),
            (Blocklist::default(), 0)
        );
    }

    #[test]
    fn a_policy_past_the_limit_is_cut_and_counted() {
        let files: Vec<Value> = (0..MAX_ENTRIES + 3)
            .map(|i| json!({"id": format!("i{i}"), "kind": "md5", "value": format!("{i:032x}")}))
            .collect();
        let (list, skipped) = Blocklist::from_policy(&json!({ "files": files }));
        assert_eq!((list.files(), skipped), (MAX_ENTRIES, 3));
    }

    #[test]
    fn ruleset_blocks_each_family_in_its_set_and_an_empty_list_removes_the_table() {
        let addresses: Vec<IpAddr> =
            vec!["192.0.2.7".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let script = ruleset(&addresses);
        assert!(script.contains("set blocked4 { type ipv4_addr; elements = { 192.0.2.7 }; }"));
        assert!(script.contains("set blocked6 { type ipv6_addr; elements = { 2001:db8::1 }; }"));
        assert!(script.contains("ip daddr @blocked4 drop"));
        assert_eq!(
            ruleset(&[]),
            "table inet rampart_block\ndelete table inet rampart_block\n"
        );
    }

    #[test]
    fn event_metadata_is_read_only_when_whole() {
        let mut event = Vec::new();
        event.extend_from_slice(&24u32.to_ne_bytes());
        event.push(libc::FANOTIFY_METADATA_VERSION);
        event.push(0);
        event.extend_from_slice(&24u16.to_ne_bytes());
        event.extend_from_slice(&libc::FAN_OPEN_EXEC_PERM.to_ne_bytes());
        event.extend_from_slice(&7i32.to_ne_bytes());
        event.extend_from_slice(&42u32.to_ne_bytes());
        assert_eq!(
            metadata(&event),
            Some((24, libc::FAN_OPEN_EXEC_PERM, 7, 42))
        );
        assert_eq!(metadata(&event[..20]), None);
        event[4] = 2;
        assert_eq!(metadata(&event), None);
    }
}
