//! File events without eBPF: fanotify in FID mode (`FAN_REPORT_DFID_NAME`: each event names the
//! directory by file handle, and the entry in it) with a mark on every local filesystem. The
//! directory handle is opened with `open_by_handle_at` on an fd of that filesystem and named by
//! /proc/self/fd, so paths are as this mount namespace sees them.
//!
//! Events come out as the eBPF sensor's file [`SensorEvent`]s:
//! - `FAN_CLOSE_WRITE` → [`SensorEvent::FileWriteClose`], with [`FILE_CREATED`] when a
//!   `FAN_CREATE` of that path came first (its other flags, the open's, are unknown: 0);
//! - `FAN_DELETE` → [`SensorEvent::FileDelete`];
//! - `FAN_RENAME` (or, before Linux 5.17, a `FAN_MOVED_FROM` and the `FAN_MOVED_TO` that
//!   follows it from the same process) → [`SensorEvent::FileRename`];
//! - `FAN_ATTRIB` → [`SensorEvent::FileChmod`] with the mode the file has when the event is
//!   read (fanotify does not say which attribute changed: chown, utimes and xattr changes come
//!   the same way; an entry already gone by then is not reported).
//!
//! What fanotify cannot do: paths are resolved when the event is read, not when it happened (a
//! directory renamed meanwhile gives its new name; one already removed cannot be named, and its
//! events count as lost); the process is known by pid only (its details are read from /proc, as
//! the process connector's); filesystems mounted after the start are not watched; the kernel's
//! queue (`max_queued_events`, 16384 by default) overflowing loses events, counted as lost (at
//! least one per overflow: the kernel does not say how many). This process's own file
//! operations are not reported (its queue writes would feed back).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

use serde_json::{Value, json};

use crate::mapping::FileFilter;
use crate::sensor::{FILE_CREATED, Lost, SensorEvent, Task};

const METADATA_LEN: usize = 24;
/// fsid (8) + file_handle's handle_bytes and handle_type (8).
const FID_HEADER: usize = 16;
const EVENTS: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR;
/// Directory paths remembered by handle; beyond it the cache starts over.
const MAX_CACHED_DIRS: usize = 4096;
/// Created files waiting for their close-write; beyond it the set starts over.
const MAX_CREATED: usize = 4096;
/// Reads per drain at most, so a flood cannot hold the loop.
const MAX_READS: usize = 64;
/// Filesystems with nothing an endpoint sensor reports (and whose writes are not files).
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "efivarfs",
    "rpc_pipefs",
    "selinuxfs",
];

/// One directory entry as an info record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<'a> {
    fsid: [u8; 8],
    /// The `struct file_handle`: handle_bytes, handle_type, f_handle.
    handle: &'a [u8],
    /// Empty when the record has none (the object is the directory itself).
    name: &'a [u8],
}

/// One event as read: fsid/handle/name records by type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw<'a> {
    mask: u64,
    pid: i32,
    /// `FAN_EVENT_INFO_TYPE_DFID_NAME` (or `_DFID`).
    entry: Option<Entry<'a>>,
    /// `FAN_RENAME`'s old and new entries.
    old: Option<Entry<'a>>,
    new: Option<Entry<'a>>,
}

/// The events of one read, and how many could not be parsed. An event whose length does not
/// hold ends the parse (what follows cannot be found); a bad info record skips its event.
fn parse(mut buf: &[u8]) -> (Vec<Raw<'_>>, u64) {
    let (mut out, mut bad) = (Vec::new(), 0);
    while !buf.is_empty() {
        let (Some(len), Some(&vers), Some(meta)) = (u32_at(buf, 0), buf.get(4), u16_at(buf, 6))
        else {
            bad += 1;
            break;
        };
        let (len, meta) = (len as usize, usize::from(meta));
        if vers != libc::FANOTIFY_METADATA_VERSION
            || meta < METADATA_LEN
            || len < meta
            || len > buf.len()
        {
            bad += 1;
            break;
        }
        let (event, rest) = buf.split_at(len);
        buf = rest;
        match parse_event(event, meta) {
            Some(raw) => out.push(raw),
            None => bad += 1,
        }
    }
    (out, bad)
}

fn parse_event(event: &[u8], meta: usize) -> Option<Raw<'_>> {
    let mut raw = Raw {
        mask: u64::from_ne_bytes(event.get(8..16)?.try_into().ok()?),
        pid: i32::from_ne_bytes(event.get(20..24)?.try_into().ok()?),
        entry: None,
        old: None,
        new: None,
    };
    let mut info = &event[meta..];
    while !info.is_empty() {
        let (&kind, len) = (info.first()?, usize::from(u16_at(info, 2)?));
        if len < 4 || len > info.len() {
            return None;
        }
        let (record, rest) = info.split_at(len);
        info = rest;
        let slot = match kind {
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME | libc::FAN_EVENT_INFO_TYPE_DFID => &mut raw.entry,
            libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => &mut raw.old,
            libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => &mut raw.new,
            // Records of kinds not asked for (a child FID, a pidfd) are skipped.
            _ => continue,
        };
        *slot = Some(entry(&record[4..])?);
    }
    Some(raw)
}

/// fsid, file_handle and (NUL-terminated, possibly padded) name of an info record's body.
fn entry(body: &[u8]) -> Option<Entry<'_>> {
    let fsid: [u8; 8] = body.get(..8)?.try_into().ok()?;
    let handle_bytes = u32_at(body, 8)? as usize;
    if handle_bytes > libc::MAX_HANDLE_SZ as usize {
        return None;
    }
    let end = FID_HEADER.checked_add(handle_bytes)?;
    let handle = body.get(8..end)?;
    let tail = &body[end..];
    let name = &tail[..tail.iter().position(|&b| b == 0).unwrap_or(tail.len())];
    Some(Entry { fsid, handle, name })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// A mount of /proc/self/mountinfo: (device, root inside the filesystem, mount point, type,
/// read-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    dev: String,
    root: String,
    point: String,
    fstype: String,
    read_only: bool,
}

pub(crate) fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            Some(Mount {
                dev: f.get(2)?.to_string(),
                root: unescape(f.get(3)?),
                point: unescape(f.get(4)?),
                fstype: right.split(' ').next()?.to_string(),
                read_only: f.get(5)?.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points to mark, one per filesystem: its mount of the filesystem's root when there
/// is one (paths are named through it). Pseudo-filesystems and what is mounted under /dev,
/// /proc and /sys (never reported, see [`FileFilter`]) are left out, and with `writable_only`
/// filesystems mounted read-only everywhere (nothing is written there).
pub(crate) fn to_watch(mounts: &[Mount], writable_only: bool) -> Vec<String> {
    let mut chosen: Vec<&Mount> = Vec::new();
    let skipped = |m: &Mount| {
        PSEUDO.contains(&m.fstype.as_str())
            || ["/dev", "/proc", "/sys"]
                .iter()
                .any(|p| m.point == *p || m.point.starts_with(&format!("{p}/")))
    };
    for m in mounts.iter().filter(|m| !skipped(m)) {
        match chosen.iter_mut().find(|c| c.dev == m.dev) {
            Some(c) if c.root != "/" && m.root == "/" => *c = m,
            Some(c) if c.read_only && !m.read_only && (c.root == m.root || m.root == "/") => *c = m,
            Some(_) => {}
            None => chosen.push(m),
        }
    }
    let writable: HashSet<&str> = mounts
        .iter()
        .filter(|m| !m.read_only)
        .map(|m| m.dev.as_str())
        .collect();
    chosen
        .into_iter()
        .filter(|m| !writable_only || writable.contains(m.dev.as_str()))
        .map(|m| m.point.clone())
        .collect()
}

/// A filesystem being watched: an fd on it to open handles with, and where it is mounted.
struct Filesystem {
    fd: OwnedFd,
    point: String,
}

/// The fanotify group and what it needs to name and attribute its events.
pub struct FileWatch {
    fd: OwnedFd,
    buf: Vec<u8>,
    by_fsid: HashMap<[u8; 8], Filesystem>,
    /// Filesystems that could not be marked, with why.
    unwatched: Vec<(String, String)>,
    /// `FAN_RENAME` was accepted; else renames are MOVED_FROM/MOVED_TO pairs.
    rename_events: bool,
    /// A `FAN_MOVED_FROM` (pid, path) waiting for its `FAN_MOVED_TO`.
    moved_from: Option<(i32, String)>,
    created: HashSet<String>,
    /// Directory paths by fsid + handle; those below a renamed directory are forgotten.
    dirs: HashMap<Vec<u8>, String>,
    filter: FileFilter,
    own_pid: i32,
    tick_ns: u64,
    overflows: u64,
    undecodable: u64,
    unresolved: u64,
}

impl FileWatch {
    /// Marks every local filesystem (needs CAP_SYS_ADMIN, and CAP_DAC_READ_SEARCH to open
    /// handles: root). Fails when fanotify cannot report names (Linux before 5.9) or no
    /// filesystem could be marked; filesystems that refuse a mark are listed in
    /// [`FileWatch::status`].
    pub fn start(filter: FileFilter) -> io::Result<FileWatch> {
        // SAFETY: plain fanotify_init(2); the fd is owned right away.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF
                    | libc::FAN_CLOEXEC
                    | libc::FAN_NONBLOCK
                    | libc::FAN_REPORT_DFID_NAME,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => io::Error::other(format!(
                    "fanotify cannot report file names on this kernel (FAN_REPORT_DFID_NAME needs Linux 5.9): {e}"
                )),
                Some(libc::EPERM) => {
                    io::Error::other(format!("fanotify needs CAP_SYS_ADMIN (root): {e}"))
                }
                _ => e,
            });
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut watch = FileWatch {
            fd,
            buf: vec![0; 256 << 10],
            by_fsid: HashMap::new(),
            unwatched: Vec::new(),
            rename_events: true,
            moved_from: None,
            created: HashSet::new(),
            dirs: HashMap::new(),
            filter,
            own_pid: i32::try_from(std::process::id()).unwrap_or(-1),
            tick_ns: crate::fallback::tick_ns(),
            overflows: 0,
            undecodable: 0,
            unresolved: 0,
        };
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        for point in to_watch(&mounts(&mountinfo), true) {
            if let Err(e) = watch.mark(&point) {
                watch.unwatched.push((point, e.to_string()));
            }
        }
        if watch.by_fsid.is_empty() {
            let why: Vec<String> = watch
                .unwatched
                .iter()
                .map(|(p, e)| format!("{p}: {e}"))
                .collect();
            return Err(io::Error::other(format!(
                "no filesystem could be watched ({})",
                why.join("; ")
            )));
        }
        Ok(watch)
    }

    /// Marks the filesystem mounted at `point`; the first mark finds out whether this kernel
    /// has `FAN_RENAME` (5.17).
    fn mark(&mut self, point: &str) -> io::Result<()> {
        let path = CString::new(point).map_err(io::Error::other)?;
        // SAFETY: `path` is NUL-terminated; the fd is owned right away.
        let dir = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if dir < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dir` is a fresh descriptor nobody else owns.
        let dir = unsafe { OwnedFd::from_raw_fd(dir) };
        // SAFETY: a zeroed statfs is valid; fstatfs fills it.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `dir` is open and `st` writable.
        if unsafe { libc::fstatfs(dir.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fsid_t is two c_ints, 8 bytes, as the event records carry it.
        let fsid: [u8; 8] = unsafe { std::mem::transmute(st.f_fsid) };
        loop {
            let mask = if self.rename_events {
                EVENTS | libc::FAN_RENAME
            } else {
                EVENTS | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO
            };
            // SAFETY: `path` is NUL-terminated; fanotify_mark only reads it.
            let rc = unsafe {
                libc::fanotify_mark(
                    self.fd.as_raw_fd(),
                    libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                    mask,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                )
            };
            if rc == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            // EINVAL for the first mark: no FAN_RENAME here; pairs of moves instead.
            if e.raw_os_error() == Some(libc::EINVAL)
                && self.rename_events
                && self.by_fsid.is_empty()
            {
                self.rename_events = false;
                continue;
            }
            return Err(e);
        }
        self.by_fsid.entry(fsid).or_insert(Filesystem {
            fd: dir,
            point: point.to_string(),
        });
        Ok(())
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The path filter (the server's policy may change it).
    pub fn set_filter(&mut self, filter: FileFilter) {
        self.filter = filter;
    }

    /// What is watched, for the agent's health.
    pub fn status(&self) -> Value {
        let mut watched: Vec<&str> = self.by_fsid.values().map(|f| f.point.as_str()).collect();
        watched.sort_unstable();
        json!({
            "source": "fanotify",
            "events": ["FileCreated", "FileModified", "FileDeleted", "FileRenamed", "FilePermissionsModified"],
            "renames": if self.rename_events { "FAN_RENAME" } else { "FAN_MOVED_FROM/FAN_MOVED_TO pairs" },
            "filesystems": watched,
            "unwatched": self.unwatched.iter().map(|(p, e)| json!({"mount": p, "error": e})).collect::<Vec<_>>(),
        })
    }

    /// Events lost since start: queue overflows (at least one event each), events that could
    /// not be parsed, and events whose directory was gone before it could be named.
    pub fn lost(&self) -> Lost {
        let by_kind = vec![
            ("fanotify_overflow", self.overflows),
            ("fanotify_undecodable", self.undecodable),
            ("fanotify_unresolved", self.unresolved),
        ];
        Lost {
            total: by_kind.iter().map(|(_, n)| n).sum(),
            by_kind,
        }
    }

    /// Reads what is queued (without waiting) and hands each event over; returns how many.
    pub fn drain(&mut self, sink: &mut dyn FnMut(SensorEvent)) -> io::Result<usize> {
        let mut count = 0;
        let mut buf = std::mem::take(&mut self.buf);
        let mut result = Ok(());
        for _ in 0..MAX_READS {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if n < 0 && !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                    result = Err(e);
                }
                break;
            }
            let (events, bad) = parse(&buf[..usize::try_from(n).unwrap_or(0)]);
            self.undecodable += bad;
            for raw in &events {
                count += self.event(raw, sink);
            }
        }
        self.buf = buf;
        result.map(|()| count)
    }

    /// The sensor events of one fanotify event, in the order they most likely happened (the
    /// kernel merges a process's consecutive events on one entry into one mask).
    fn event(&mut self, raw: &Raw<'_>, sink: &mut dyn FnMut(SensorEvent)) -> usize {
        if raw.mask & libc::FAN_Q_OVERFLOW != 0 {
            self.overflows += 1;
            self.moved_from = None;
            self.created.clear();
            self.dirs.clear();
            return 0;
        }
        if raw.pid == self.own_pid {
            return 0;
        }
        let ondir = raw.mask & libc::FAN_ONDIR != 0;
        let tick_ns = self.tick_ns;
        // Read from /proc once, and only for an event that is reported.
        let mut task: Option<Task> = None;
        let mut task = |pid: i32| -> Task {
            task.get_or_insert_with(|| {
                crate::fallback::task(u32::try_from(pid).unwrap_or(0), None, tick_ns)
            })
            .clone()
        };
        let mut count = 0;
        let mut emit = |event: SensorEvent| {
            sink(event);
            count += 1;
        };
        let needs_entry = libc::FAN_CREATE
            | libc::FAN_CLOSE_WRITE
            | libc::FAN_ATTRIB
            | libc::FAN_DELETE
            | libc::FAN_MOVED_FROM
            | libc::FAN_MOVED_TO;
        let path = match &raw.entry {
            Some(e) if raw.mask & needs_entry != 0 => {
                let path = self.path(e);
                if path.is_none() {
                    self.unresolved += 1;
                }
                path
            }
            _ => None,
        };
        if let Some(path) = path.as_deref().filter(|p| self.filter.wants(p)) {
            if raw.mask & libc::FAN_CREATE != 0 && !ondir {
                if self.created.len() >= MAX_CREATED {
                    self.created.clear();
                }
                self.created.insert(path.to_string());
            }
            if raw.mask & libc::FAN_CLOSE_WRITE != 0 {
                let created = self.created.remove(path);
                let meta = std::fs::symlink_metadata(path).ok();
                let task = task(raw.pid);
                emit(SensorEvent::FileWriteClose {
                    opened: task.time,
                    task,
                    path: path.to_string(),
                    flags: if created { FILE_CREATED } else { 0 },
                    inode: meta.as_ref().map_or(0, |m| m.ino()),
                    size: meta.as_ref().map_or(0, |m| m.size()),
                });
            }
            if raw.mask & libc::FAN_ATTRIB != 0
                && let Ok(meta) = std::fs::symlink_metadata(path)
            {
                emit(SensorEvent::FileChmod {
                    task: task(raw.pid),
                    path: path.to_string(),
                    mode: meta.mode(),
                });
            }
        }
        if ondir && raw.mask & libc::FAN_MOVED_FROM != 0 {
            self.forget_below(path.as_deref());
        }
        if let Some(path) = &path {
            if raw.mask & libc::FAN_MOVED_FROM != 0 {
                self.moved_from = Some((raw.pid, path.clone()));
            }
            if raw.mask & libc::FAN_MOVED_TO != 0
                && let Some((pid, from)) = self.moved_from.take()
                && pid == raw.pid
                && (self.filter.wants(&from) || self.filter.wants(path))
            {
                self.created.remove(&from);
                emit(SensorEvent::FileRename {
                    task: task(raw.pid),
                    from,
                    to: path.clone(),
                });
            }
        }
        if raw.mask & libc::FAN_RENAME != 0 {
            let from = raw.old.as_ref().and_then(|e| self.path(e));
            let to = raw.new.as_ref().and_then(|e| self.path(e));
            if ondir {
                self.forget_below(from.as_deref());
            }
            match (from, to) {
                (Some(from), Some(to)) => {
                    if self.filter.wants(&from) || self.filter.wants(&to) {
                        self.created.remove(&from);
                        emit(SensorEvent::FileRename {
                            task: task(raw.pid),
                            from,
                            to,
                        });
                    }
                }
                _ => self.unresolved += 1,
            }
        }
        if raw.mask & libc::FAN_DELETE != 0
            && let Some(path) = path.as_deref().filter(|p| self.filter.wants(p))
        {
            self.created.remove(path);
            emit(SensorEvent::FileDelete {
                task: task(raw.pid),
                path: path.to_string(),
                dir: ondir,
            });
        }
        count
    }

    /// A directory was renamed from `old`: cached paths of it and below are stale (all of
    /// them when `old` is unknown). A removed one needs nothing: its handle is dead.
    fn forget_below(&mut self, old: Option<&str>) {
        match old {
            Some(old) => self.dirs.retain(|_, path| {
                !(path == old || path.strip_prefix(old).is_some_and(|r| r.starts_with('/')))
            }),
            None => self.dirs.clear(),
        }
    }

    /// The absolute path of an entry: its directory's, named from the handle, and its name.
    fn path(&mut self, entry: &Entry<'_>) -> Option<String> {
        let dir = self.dir(entry)?;
        Some(match entry.name {
            b"" | b"." => dir,
            name if dir == "/" => format!("/{}", String::from_utf8_lossy(name)),
            name => format!("{dir}/{}", String::from_utf8_lossy(name)),
        })
    }

    fn dir(&mut self, entry: &Entry<'_>) -> Option<String> {
        let key = [&entry.fsid[..], entry.handle].concat();
        if let Some(path) = self.dirs.get(&key) {
            return Some(path.clone());
        }
        let fs = self.by_fsid.get(&entry.fsid)?;
        // open_by_handle_at wants a `struct file_handle` (4-byte aligned): copied into u32s.
        let mut handle = vec![0u32; entry.handle.len().div_ceil(4)];
        for (word, chunk) in handle.iter_mut().zip(entry.handle.chunks(4)) {
            let mut bytes = [0u8; 4];
            bytes[..chunk.len()].copy_from_slice(chunk);
            *word = u32::from_ne_bytes(bytes);
        }
        // SAFETY: `handle` holds a file_handle of the size its handle_bytes says (checked when
        // parsed); the kernel only reads it. The fd is owned right away.
        let fd = unsafe {
            libc::open_by_handle_at(
                fs.fd.as_raw_fd(),
                handle.as_mut_ptr().cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let path = path.to_string_lossy();
        // A directory removed since: its entries cannot be named any more.
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            return None;
        }
        if self.dirs.len() >= MAX_CACHED_DIRS {
            self.dirs.clear();
        }
        self.dirs.insert(key, path.to_string());
        Some(path.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One info record: header, fsid, file_handle (type 1, `handle`), name and NUL, padded.
    fn record(kind: u8, fsid: [u8; 8], handle: &[u8], name: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 0, 0, 0];
        r.extend(fsid);
        r.extend((handle.len() as u32).to_ne_bytes());
        r.extend(1i32.to_ne_bytes());
        r.extend(handle);
        if !name.is_empty() {
            r.extend(name);
            r.push(0);
        }
        while !r.len().is_multiple_of(4) {
            r.push(0);
        }
        let len = r.len() as u16;
        r[2..4].copy_from_slice(&len.to_ne_bytes());
        r
    }

    fn event(mask: u64, pid: i32, records: &[Vec<u8>]) -> Vec<u8> {
        let mut e = Vec::new();
        let len = METADATA_LEN + records.iter().map(Vec::len).sum::<usize>();
        e.extend((len as u32).to_ne_bytes());
        e.push(libc::FANOTIFY_METADATA_VERSION);
        e.push(0);
        e.extend((METADATA_LEN as u16).to_ne_bytes());
        e.extend(mask.to_ne_bytes());
        e.extend(libc::FAN_NOFD.to_ne_bytes());
        e.extend(pid.to_ne_bytes());
        for r in records {
            e.extend(r);
        }
        e
    }

    #[test]
    fn events_parse_with_their_entries() {
        let fsid = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut buf = event(
            libc::FAN_CREATE | libc::FAN_CLOSE_WRITE,
            4242,
            &[record(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                fsid,
                &[9; 8],
                b"new.txt",
            )],
        );
        buf.extend(event(
            libc::FAN_RENAME | libc::FAN_ONDIR,
            7,
            &[
                record(
                    libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
                    fsid,
                    &[1; 12],
                    b"a",
                ),
                // A record of a kind not asked for is skipped.
                record(libc::FAN_EVENT_INFO_TYPE_FID, fsid, &[3; 8], b""),
                record(
                    libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
                    fsid,
                    &[2; 12],
                    b"bc",
                ),
            ],
        ));
        buf.extend(event(libc::FAN_Q_OVERFLOW, 0, &[]));
        let (events, bad) = parse(&buf);
        assert_eq!(bad, 0);
        assert_eq!(events.len(), 3);
        let created = &events[0];
        assert_eq!(
            (created.mask, created.pid),
            (libc::FAN_CREATE | libc::FAN_CLOSE_WRITE, 4242)
        );
        let entry = created.entry.as_ref().expect("the entry");
        assert_eq!(entry.fsid, fsid);
        assert_eq!(entry.name, b"new.txt");
        assert_eq!(&entry.handle[..4], &8u32.to_ne_bytes());
        assert_eq!(&entry.handle[8..], &[9; 8]);
        let renamed = &events[1];
        assert!(renamed.entry.is_none());
        assert_eq!(renamed.old.as_ref().map(|e| e.name), Some(&b"a"[..]));
        assert_eq!(renamed.new.as_ref().map(|e| e.name), Some(&b"bc"[..]));
        assert_eq!(renamed.new.as_ref().map(|e| e.handle.len()), Some(20));
        assert_eq!(events[2].mask, libc::FAN_Q_OVERFLOW);
    }

    #[test]
    fn malformed_events_are_counted_never_read_past() {
        let fsid = [0; 8];
        let good = event(
            libc::FAN_DELETE,
            1,
            &[record(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                fsid,
                &[5; 8],
                b"x",
            )],
        );
        // Every truncation of a valid event: nothing parsed, one bad event, no panic.
        for len in 1..good.len() {
            let (events, bad) = parse(&good[..len]);
            assert!(events.is_empty(), "{len} bytes parsed");
            assert_eq!(bad, 1, "{len} bytes");
        }
        // A record whose handle claims more bytes than it has: that event is skipped, the
        // next one still read.
        let mut lying = good.clone();
        lying[METADATA_LEN + 12..METADATA_LEN + 16].copy_from_slice(&64u32.to_ne_bytes());
        lying.extend(&good);
        let (events, bad) = parse(&lying);
        assert_eq!((events.len(), bad), (1, 1));
        // An unknown metadata version ends the read.
        let mut version = good.clone();
        version[4] = 2;
        assert_eq!(parse(&version).1, 1);
    }

    /// A watch over no filesystem (its fd is /dev/null's), to feed parsed events to.
    fn bare_watch() -> FileWatch {
        FileWatch {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            buf: Vec::new(),
            by_fsid: HashMap::new(),
            unwatched: Vec::new(),
            rename_events: true,
            moved_from: None,
            created: HashSet::new(),
            dirs: HashMap::new(),
            filter: FileFilter::default(),
            own_pid: 1000,
            tick_ns: 10_000_000,
            overflows: 0,
            undecodable: 0,
            unresolved: 0,
        }
    }

    #[test]
    fn overflows_and_unnameable_events_are_counted_as_lost() {
        let mut watch = bare_watch();
        let dfid = record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, [7; 8], &[1; 8], b"f");
        let mut buf = event(libc::FAN_Q_OVERFLOW, 0, &[]);
        buf.extend(event(libc::FAN_Q_OVERFLOW, 0, &[]));
        // This process's own event: not reported, not lost.
        buf.extend(event(
            libc::FAN_CLOSE_WRITE,
            1000,
            std::slice::from_ref(&dfid),
        ));
        // A filesystem it does not know: the path cannot be named.
        buf.extend(event(libc::FAN_DELETE, 1001, &[dfid]));
        let (events, bad) = parse(&buf);
        assert_eq!(bad, 0);
        let mut out = Vec::new();
        for raw in &events {
            watch.event(raw, &mut |e| out.push(e));
        }
        assert!(out.is_empty(), "{out:?}");
        let lost = watch.lost();
        assert_eq!(lost.total, 3);
        assert_eq!(
            lost.by_kind,
            [
                ("fanotify_overflow", 2),
                ("fanotify_undecodable", 0),
                ("fanotify_unresolved", 1)
            ]
        );
    }

    #[test]
    fn a_renamed_directory_forgets_the_paths_below_it_only() {
        let mut watch = bare_watch();
        for (key, path) in [(1u8, "/a"), (2, "/a/b"), (3, "/ab"), (4, "/c")] {
            watch.dirs.insert(vec![key], path.to_string());
        }
        watch.forget_below(Some("/a"));
        let mut left: Vec<&str> = watch.dirs.values().map(String::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["/ab", "/c"]);
        watch.forget_below(None);
        assert!(watch.dirs.is_empty());
    }

    #[test]
    fn one_mark_per_writable_filesystem_through_its_root() {
        let info = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
46 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
50 27 8:1 /data /srv/data\\040x rw - xfs /dev/sdb1 rw
51 27 8:1 / /mnt/whole rw - xfs /dev/sdb1 rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
28 27 0:25 / /opt/tools ro,nosuid - squashfs /dev/loop0 ro
30 27 0:26 / /tmp rw - tmpfs tmpfs rw
";
        let m = mounts(info);
        assert_eq!(m[3].point, "/srv/data x");
        assert!(m[6].read_only);
        assert_eq!(to_watch(&m, true), ["/", "/mnt/whole", "/tmp"]);
        // Programs run from read-only filesystems too.
        assert_eq!(
            to_watch(&m, false),
            ["/", "/mnt/whole", "/opt/tools", "/tmp"]
        );
    }
}
