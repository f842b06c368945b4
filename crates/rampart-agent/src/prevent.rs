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
//! - **Domains**: the same table refuses DNS queries (UDP and TCP, sent or forwarded) for a
//!   blocked domain and its subdomains, letters in any case, so the name does not resolve; and
//!   the addresses a blocked name resolved to anyway (a resolver the rules did not see, an
//!   answer cached before the block) are dropped both ways for [`RESOLVED_TIMEOUT`] once the DNS
//!   capture sees the answer ([`Enforcer::resolved`]). The kernel's rules match names of at
//!   most [`MAX_RULE_NAME_BYTES`] in wire form, under at most [`SUBDOMAIN_PREFIX_BYTES`] of
//!   further labels; longer ones are left to the answers. Not covered: DNS over TLS or HTTPS
//!   (encrypted), and URLs (the path of an HTTPS request is not visible).

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

use crate::dns::DnsExchange;
use crate::hashes::{HashCache, Hashes};
use crate::sensor::Task;

/// The nftables table (family and name) that holds the address blocks.
pub const TABLE: &str = "inet rampart_block";
/// Entries of each kind a policy may carry (the server sends at most as many); beyond it the
/// rest is skipped and counted.
pub const MAX_ENTRIES: usize = 10_000;
/// Longest blocked name, in wire form (each label after its length, then a zero byte), the
/// kernel's rules match: an nftables set key holds at most 64 bytes.
pub const MAX_RULE_NAME_BYTES: usize = 64;
/// How many bytes of labels before a blocked domain (in wire form: `www.` is 4) the kernel's
/// rules look past: one rule per offset, so each costs every DNS packet a set lookup.
pub const SUBDOMAIN_PREFIX_BYTES: usize = 64;
/// How long an address a blocked name resolved to stays blocked after the answer was seen.
pub const RESOLVED_TIMEOUT: Duration = Duration::from_secs(3600);
/// Resolved addresses remembered (so each is added to the kernel's set once per timeout).
const MAX_RESOLVED: usize = 10_000;

/// What the policy blocks: file hashes and addresses, each with the indicator that asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    /// Lowercase hex digest (its length tells the kind) → indicator id.
    files: HashMap<String, String>,
    addresses: BTreeMap<IpAddr, String>,
    /// Lowercase, without the final dot.
    domains: BTreeMap<String, String>,
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
        for entry in entries("domains") {
            match (
                entry["id"].as_str(),
                entry["value"].as_str().and_then(domain_name),
            ) {
                (Some(id), Some(name)) if list.domains.len() < MAX_ENTRIES => {
                    list.domains.insert(name, id.to_string());
                }
                _ => skipped += 1,
            }
        }
        (list, skipped)
    }

    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }

    /// The blocked domain `name` (lowercase) is or is under.
    pub fn blocked_domain(&self, name: &str) -> Option<&str> {
        let mut rest = name.strip_suffix('.').unwrap_or(name);
        loop {
            if let Some((domain, _)) = self.domains.get_key_value(rest) {
                return Some(domain);
            }
            rest = rest.split_once('.')?.1;
        }
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
    /// Addresses blocked names resolved to, with when they were added to the kernel's set.
    resolved: HashMap<IpAddr, std::time::Instant>,
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
            resolved: HashMap::new(),
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
        if !self.applied
            || !list.addresses().eq(self.list.addresses())
            || !list.domains().eq(self.list.domains())
        {
            address_error = None;
            let nothing = list.addresses().next().is_none() && list.domains().next().is_none();
            // A new table starts with empty sets of resolved addresses.
            self.resolved.clear();
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
            "blocked_domains": if address_error.is_none() { self.list.domains.len() } else { 0 },
            // Too long for the kernel's rules: blocked by what they resolve to only.
            "domains_without_query_rules": self
                .list
                .domains()
                .filter(|d| wire_name(d).len() > MAX_RULE_NAME_BYTES)
                .count(),
            "skipped_entries": skipped,
            "exec_guard": self.guard.as_ref().map(ExecGuard::status),
            "exec_guard_error": guard_error,
            "address_error": address_error,
        });
        self.health.clone()
    }

    /// The health report of prevention, as last applied or updated.
    pub fn health(&self) -> Value {
        self.health.clone()
    }

    /// A DNS answer the capture saw: when its name is or is under a blocked domain, the
    /// addresses it gave are blocked both ways for [`RESOLVED_TIMEOUT`] (never loopback or the
    /// server's). Returns how many were added.
    pub fn resolved(&mut self, exchange: &DnsExchange) -> usize {
        if self.list.domains.is_empty() || self.list.blocked_domain(&exchange.query).is_none() {
            return 0;
        }
        let now = std::time::Instant::now();
        let fresh: Vec<IpAddr> = exchange
            .answers
            .iter()
            .filter_map(|a| {
                let (kind, value) = a.split_once(' ')?;
                matches!(kind, "A" | "AAAA").then(|| value.parse::<IpAddr>().ok())?
            })
            .filter(|a| !a.is_loopback() && !a.is_unspecified() && !self.keep.contains(a))
            .filter(|a| {
                self.resolved
                    .get(a)
                    .is_none_or(|at| now.duration_since(*at) >= RESOLVED_TIMEOUT / 2)
            })
            .collect();
        if fresh.is_empty() {
            return 0;
        }
        if let Err(e) = crate::isolation::nft(&resolved_elements(&fresh)) {
            tracing::warn!(query = %exchange.query, "cannot block what a blocked name resolved to: {e:#}");
            return 0;
        }
        if self.resolved.len() + fresh.len() > MAX_RESOLVED {
            self.resolved
                .retain(|_, at| now.duration_since(*at) < RESOLVED_TIMEOUT);
        }
        for a in &fresh {
            if self.resolved.len() < MAX_RESOLVED {
                self.resolved.insert(*a, now);
            }
        }
        self.health["resolved_addresses_blocked"] = json!(self.resolved.len());
        fresh.len()
    }
}

/// Replaces the address and domain blocks with `list`'s, leaving out loopback and `keep` (the
/// server's addresses); with none left, removes the table. Returns how many addresses are
/// blocked.
pub fn apply_addresses(list: &Blocklist, keep: &[IpAddr]) -> Result<usize> {
    let addresses: Vec<IpAddr> = list
        .addresses()
        .filter(|a| !a.is_loopback() && !a.is_unspecified() && !keep.contains(a))
        .copied()
        .collect();
    let domains: Vec<&str> = list.domains().collect();
    crate::isolation::nft(&ruleset(&addresses, &domains))?;
    Ok(addresses.len())
}

/// The nftables script that makes [`TABLE`] block `addresses` and `domains` (none: deletes
/// it), in one transaction.
pub fn ruleset(addresses: &[IpAddr], domains: &[&str]) -> String {
    let replace = format!("table {TABLE}\ndelete table {TABLE}\n");
    if addresses.is_empty() && domains.is_empty() {
        return replace;
    }
    let set = |v6| crate::isolation::elements(addresses, v6);
    let (name_sets, name_rules) = dns_rules(domains);
    format!(
        "{replace}table {TABLE} {{
	set blocked4 {{ type ipv4_addr;{v4} }}
	set blocked6 {{ type ipv6_addr;{v6} }}
	set resolved4 {{ type ipv4_addr; flags timeout; }}
	set resolved6 {{ type ipv6_addr; flags timeout; }}
{name_sets}	chain dns {{
{name_rules}	}}
	chain input {{
		type filter hook input priority filter - 5; policy accept;
		ip saddr @blocked4 drop
		ip saddr @resolved4 drop
		ip6 saddr @blocked6 drop
		ip6 saddr @resolved6 drop
	}}
	chain output {{
		type filter hook output priority filter - 5; policy accept;
		meta l4proto {{ tcp, udp }} th dport 53 jump dns
		ip daddr @blocked4 drop
		ip daddr @resolved4 drop
		ip6 daddr @blocked6 drop
		ip6 daddr @resolved6 drop
	}}
	chain forward {{
		type filter hook forward priority filter - 5; policy accept;
		meta l4proto {{ tcp, udp }} th dport 53 jump dns
		ip saddr @blocked4 drop
		ip daddr @blocked4 drop
		ip saddr @resolved4 drop
		ip daddr @resolved4 drop
		ip6 saddr @blocked6 drop
		ip6 daddr @blocked6 drop
		ip6 saddr @resolved6 drop
		ip6 daddr @resolved6 drop
	}}
}}
",
        v4 = set(false),
        v6 = set(true),
    )
}

/// The script that adds `addresses` to the resolved sets, each for [`RESOLVED_TIMEOUT`].
fn resolved_elements(addresses: &[IpAddr]) -> String {
    let secs = RESOLVED_TIMEOUT.as_secs();
    let mut script = String::new();
    for (set, v6) in [("resolved4", false), ("resolved6", true)] {
        let of_family: Vec<String> = addresses
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(|a| format!("{a} timeout {secs}s"))
            .collect();
        if !of_family.is_empty() {
            script.push_str(&format!(
                "add element {TABLE} {set} {{ {} }}\n",
                of_family.join(", ")
            ));
        }
    }
    script
}

/// A domain name as a block entry: lowercase, without the final dot, at least two labels of
/// letters, digits, `-` and `_` (1 to 63 bytes each), at most 253 bytes.
fn domain_name(value: &str) -> Option<String> {
    let name = value
        .strip_suffix('.')
        .unwrap_or(value)
        .to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (name.len() <= 253 && name.split('.').count() >= 2 && name.split('.').all(label_ok))
        .then_some(name)
}

/// A name in DNS wire form: each label after its length, then a zero byte.
fn wire_name(name: &str) -> Vec<u8> {
    let mut wire = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    wire
}

/// Where a query's question name starts in the transport payload: after the 12-byte DNS
/// header, and over TCP after the message's two-byte length too.
const QUESTION_UDP: usize = 12;
const QUESTION_TCP: usize = 14;

/// The sets and the `dns` chain's rules that refuse queries for `domains` and their
/// subdomains. Names are grouped by wire length, one set each; a rule per (set, offset of the
/// name in the question, protocol) looks the bytes there up with bit 0x20 cleared (ASCII
/// letters in any case; a length byte or digit changed in that bit alone is no hostname).
fn dns_rules(domains: &[&str]) -> (String, String) {
    let mut by_length: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
    for domain in domains {
        let wire = wire_name(domain);
        if wire.len() <= MAX_RULE_NAME_BYTES {
            by_length.entry(wire.len()).or_default().push(wire);
        }
    }
    let (mut sets, mut rules) = (String::new(), String::new());
    for (len, names) in &by_length {
        // Keys of at most 16 bytes (a register), concatenated.
        let chunks: Vec<(usize, usize)> = (0..*len)
            .step_by(16)
            .map(|at| (at, (len - at).min(16)))
            .collect();
        let typeof_ = chunks
            .iter()
            .map(|(at, n)| format!("@ih,{},{}", at * 8, n * 8))
            .collect::<Vec<_>>()
            .join(" . ");
        let elements = names
            .iter()
            .map(|wire| {
                chunks
                    .iter()
                    .map(|(at, n)| format!("0x{}", hex(wire[*at..at + n].iter().map(|b| b & 0xdf))))
                    .collect::<Vec<_>>()
                    .join(" . ")
            })
            .collect::<Vec<_>>()
            .join(", ");
        sets.push_str(&format!(
            "\tset names{len} {{ typeof {typeof_}; elements = {{ {elements} }}; }}\n"
        ));
        // The name itself (no prefix), then under 2 or more bytes of further labels.
        let prefixes = std::iter::once(0).chain(2..=SUBDOMAIN_PREFIX_BYTES);
        for prefix in prefixes {
            for (protocol, question, verdict) in [
                ("udp", QUESTION_UDP, "reject"),
                ("tcp", QUESTION_TCP, "reject with tcp reset"),
            ] {
                let key = chunks
                    .iter()
                    .map(|(at, n)| {
                        format!(
                            "@ih,{},{} & 0x{}",
                            (question + prefix + at) * 8,
                            n * 8,
                            "df".repeat(*n)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" . ");
                rules.push_str(&format!(
                    "\t\t{protocol} dport 53 {key} @names{len} {verdict}\n"
                ));
            }
        }
    }
    (sets, rules)
}

fn hex(bytes: impl Iterator<Item = u8>) -> String {
    bytes.map(|b| format!("{b:02x}")).collect()
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
        let script = ruleset(&addresses, &[]);
        assert!(script.contains("set blocked4 { type ipv4_addr; elements = { 192.0.2.7 }; }"));
        assert!(script.contains("set blocked6 { type ipv6_addr; elements = { 2001:db8::1 }; }"));
        assert!(script.contains("ip daddr @blocked4 drop"));
        assert!(!script.contains("set names"));
        assert_eq!(
            ruleset(&[], &[]),
            "table inet rampart_block\ndelete table inet rampart_block\n"
        );
    }

    #[test]
    fn domains_are_checked_and_match_their_subdomains() {
        let block = json!({"domains": [
            {"id": "d1", "value": "Evil.Example."},
            {"id": "d2", "value": "c2.test"},
            {"id": "bad", "value": "no_dots"},
            {"id": "bad2", "value": "a..b"},
            {"id": "bad3", "value": "sp ace.test"},
        ]});
        let (list, skipped) = Blocklist::from_policy(&block);
        assert_eq!(skipped, 3);
        assert_eq!(
            list.domains().collect::<Vec<_>>(),
            ["c2.test", "evil.example"]
        );
        assert_eq!(list.blocked_domain("evil.example"), Some("evil.example"));
        assert_eq!(
            list.blocked_domain("a.b.evil.example."),
            Some("evil.example")
        );
        assert_eq!(list.blocked_domain("notevil.example"), None);
        assert_eq!(list.blocked_domain("evil.example.org"), None);
        assert_eq!(list.blocked_domain("test"), None);
    }

    #[test]
    fn dns_rules_look_names_up_by_length_at_every_prefix_in_any_case() {
        assert_eq!(wire_name("ab.c"), b"\x02ab\x01c\x00");
        let long = format!("{}.example", "x".repeat(60));
        let (sets, rules) = dns_rules(&["evil.example", "c2.test", "Z9.test", long.as_str()]);
        // evil.example is 14 bytes in wire form; c2.test and Z9.test 9 each, in one set.
        assert!(sets.contains("set names14 { typeof @ih,0,112;"), "{sets}");
        assert!(
            sets.contains("elements = { 0x044556494c074558414d504c4500 }"),
            "{sets}"
        );
        assert!(sets.contains("set names9 { typeof @ih,0,72; elements = { 0x024312045445535400, 0x025a19045445535400 }; }"), "{sets}");
        // Names longer than a key are left to the answers.
        assert_eq!(sets.lines().count(), 2, "{sets}");
        // The name itself and under 2..=64 bytes of labels, over UDP and TCP.
        assert_eq!(
            rules.lines().count(),
            2 * 2 * (1 + SUBDOMAIN_PREFIX_BYTES - 1)
        );
        assert!(rules.contains(
            "udp dport 53 @ih,96,112 & 0xdfdfdfdfdfdfdfdfdfdfdfdfdfdf @names14 reject\n"
        ));
        assert!(rules.contains("tcp dport 53 @ih,112,112 & 0xdfdfdfdfdfdfdfdfdfdfdfdfdfdf @names14 reject with tcp reset\n"));
        assert!(
            rules.contains("udp dport 53 @ih,128,112 & "),
            "www. before it: {rules}"
        );
        // Keys past 16 bytes are concatenated.
        let (sets, rules) = dns_rules(&["abcdefghijklmnop.example"]);
        assert!(sets.contains("typeof @ih,0,128 . @ih,128,80;"), "{sets}");
        assert!(rules.contains("udp dport 53 @ih,96,128 & 0xdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdf . @ih,224,80 & 0xdfdfdfdfdfdfdfdfdfdf @names26 reject"));
    }

    #[test]
    fn resolved_addresses_are_added_with_a_timeout() {
        let script = resolved_elements(&[
            "192.0.2.9".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
        ]);
        assert_eq!(
            script,
            "add element inet rampart_block resolved4 { 192.0.2.9 timeout 3600s, 192.0.2.10 timeout 3600s }\nadd element inet rampart_block resolved6 { 2001:db8::9 timeout 3600s }\n"
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
