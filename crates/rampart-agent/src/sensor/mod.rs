//! The kernel sensor. eBPF programs on tracepoints (`sensor.bpf.c`, compiled CO-RE by build.rs)
//! report process, file, network and privilege events through one ring buffer; [`Sensor`] loads
//! and attaches them and decodes the records into [`SensorEvent`]s.
//!
//! Clocks: the kernel stamps events with CLOCK_BOOTTIME (`bpf_ktime_get_boot_ns`), and task
//! start times are `task->start_boottime`, the clock of /proc/PID/stat's starttime (which /proc
//! rounds to clock ticks). `Task::time` is that boot time plus the boot-to-wall-clock offset read
//! at each [`Sensor::poll`].
//!
//! Not seen, by construction: 32-bit (ia32) syscalls and io_uring operations (syscall
//! tracepoints do not fire for them), UDP sendto/sendmsg without connect(), and written files
//! closed other than by close() or process exit (close_range, dup2 over the fd, close-on-exec).

mod events;

#[allow(
    clippy::all,
    clippy::pedantic,
    dead_code,
    non_camel_case_types,
    unused_imports
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/sensor.skel.rs"));
}

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, PrintLevel, Program, RingBuffer};

use events::KIND_NAMES;

use crate::hashes::FileVersion;
pub use events::{DecodeError, Decoder};

/// What the sensor watches and how much it may buffer.
#[derive(Debug, Clone)]
pub struct SensorConfig {
    /// This process is not reported at all (in-kernel), so the agent's own file writes and
    /// connections never feed back into its telemetry. 0 ignores nothing.
    pub ignore_tgid: u32,
    /// Ring buffer size; rounded up to a power of two of at least 64 KiB.
    pub ring_buffer_bytes: usize,
    /// File events are kept only for paths starting with one of these; empty keeps all.
    pub file_paths: Vec<String>,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            ignore_tgid: std::process::id(),
            ring_buffer_bytes: 32 << 20,
            file_paths: Vec::new(),
        }
    }
}

/// The task an event is about (for `Fork`, the child), read when the event happened.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// u32::MAX when unset.
    pub loginuid: u32,
    /// u32::MAX when unset.
    pub sessionid: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    pub comm: Comm,
    /// Start time of the process (its thread group leader) in ns since boot (CLOCK_BOOTTIME),
    /// /proc/PID/stat's starttime before /proc rounds it to clock ticks.
    pub start_ns: u64,
    /// The same for the parent process.
    pub parent_start_ns: u64,
    /// When it happened.
    pub time: DateTime<Utc>,
}

impl Default for Task {
    /// Nothing known: ids 0, no login uid or session (unset, as the kernel says it), no comm,
    /// at the epoch.
    fn default() -> Self {
        Task {
            pid: 0,
            tgid: 0,
            ppid: 0,
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
            loginuid: u32::MAX,
            sessionid: u32::MAX,
            cgroup_id: 0,
            comm: Comm::from(""),
            start_ns: 0,
            parent_start_ns: 0,
            time: DateTime::<Utc>::UNIX_EPOCH,
        }
    }
}

/// A task's `comm` (the kernel keeps at most 15 bytes), held inline: a `String` was an
/// allocation for every event, and the allocator a measurable share of the agent's CPU. Bytes
/// that are not UTF-8 are replaced as `String::from_utf8_lossy` replaces them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Comm {
    len: u8,
    /// 16 bytes, each replaced by U+FFFD (3 bytes) at worst.
    bytes: [u8; 48],
}

impl Comm {
    pub fn new(raw: &[u8]) -> Comm {
        let raw = &raw[..raw.len().min(16)];
        Comm::from(String::from_utf8_lossy(raw).as_ref())
    }

    pub fn as_str(&self) -> &str {
        // Only whole characters of a `str` were copied in.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl From<&str> for Comm {
    /// The first 48 bytes' whole characters of `s`.
    fn from(s: &str) -> Comm {
        let mut end = s.len().min(48);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; 48];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        Comm {
            len: end as u8,
            bytes,
        }
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Comm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Comm, D::Error> {
        Ok(Comm::from(String::deserialize(d)?.as_str()))
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// In [`SensorEvent::FileWriteClose`] flags: the open created the file (the kernel's
/// FMODE_CREATED; from fanotify, a create of that path came first), as opposed to opening one
/// that existed.
pub const FILE_CREATED: u32 = 1 << 31;

#[derive(Debug, Clone)]
pub enum SensorEvent {
    /// `filename` is the path given to execve, made absolute against `cwd`; `inode`/`dev`
    /// (st_dev encoding) are those of the running executable (the interpreter for scripts).
    Exec {
        task: Task,
        filename: String,
        argv: Vec<String>,
        argv_truncated: bool,
        cwd: String,
        inode: u64,
        dev: u64,
        /// The image's version (size and times with the inode), when the kernel gave it.
        version: Option<FileVersion>,
        exe_deleted: bool,
        exe_memfd: bool,
    },
    Fork {
        task: Task,
    },
    /// The whole thread group exited.
    Exit {
        task: Task,
        exit_code: i32,
        signal: i32,
    },
    /// A regular file opened with write intent was closed (by close() or by the process exit).
    /// `flags` are the open's flags, with [`FILE_CREATED`] set when that open created the file.
    FileWriteClose {
        task: Task,
        path: String,
        flags: u32,
        inode: u64,
        size: u64,
        opened: DateTime<Utc>,
    },
    FileDelete {
        task: Task,
        path: String,
        dir: bool,
    },
    FileRename {
        task: Task,
        from: String,
        to: String,
    },
    FileChmod {
        task: Task,
        path: String,
        mode: u32,
    },
    /// A connect() call. For TCP, the outcome of the handshake: when the call returns before
    /// it ends (a non-blocking socket's EINPROGRESS, an SO_SNDTIMEO timeout, a signal), the
    /// event comes when it ends, with the task as it was at the call and the time of the
    /// outcome; `net.local` is the address the connection used. connect() called again on a
    /// socket still connecting (to learn the outcome) is not reported again. Other protocols:
    /// when the call returns.
    Connect {
        task: Task,
        net: Net,
        /// The outcome: 0 for success, else -errno. A failed TCP handshake gives the error the
        /// kernel stored for the socket (-ECONNREFUSED for a reset, -ETIMEDOUT, an ICMP error
        /// such as -EHOSTUNREACH), -ECONNABORTED when the socket was closed before the handshake
        /// ended, or the call's own error (e.g. -ENETUNREACH, -EADDRNOTAVAIL). -EINPROGRESS only
        /// for a non-blocking connect of a protocol whose handshake is not followed (SCTP,
        /// MPTCP); a TCP handshake whose end is never seen (its tracking entry evicted) is not
        /// reported.
        result: i32,
    },
    Accept {
        task: Task,
        net: Net,
    },
    Listen {
        task: Task,
        net: Net,
    },
    ModuleLoad {
        task: Task,
        name: String,
    },
    /// PTRACE_ATTACH or PTRACE_SEIZE, reported when requested (before the kernel decides).
    Ptrace {
        task: Task,
        request: i64,
        target_pid: u32,
    },
    /// A successful set*id/capset; the ids are those in force afterwards.
    SetId {
        task: Task,
        call: &'static str,
        uid: u32,
        euid: u32,
        gid: u32,
        egid: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Net {
    pub protocol: Protocol,
    pub local: SocketAddr,
    /// Unspecified address and port 0 for `Listen`.
    pub remote: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Other(u16),
}

/// Events lost since start. `by_kind` has one entry per event kind the kernel could not hand
/// over (ring buffer full) and a last one, "undecodable", for records userspace could not
/// decode; `total` is their sum.
#[derive(Debug, Clone, Default)]
pub struct Lost {
    pub total: u64,
    pub by_kind: Vec<(&'static str, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("tracefs is not mounted and mounting it on /sys/kernel/tracing failed: {0}")]
    Tracefs(std::io::Error),
    #[error("program {program}: tracepoint {tracepoint} does not exist on this kernel")]
    MissingTracepoint { program: String, tracepoint: String },
    #[error("opening the BPF object failed: {source}{log}")]
    Open {
        source: libbpf_rs::Error,
        log: String,
    },
    #[error(
        "loading the BPF programs failed: {source} (this needs root, or CAP_BPF and CAP_PERFMON; \
         a program the verifier refused is named in libbpf's log){log}"
    )]
    Load {
        source: libbpf_rs::Error,
        log: String,
    },
    #[error("attaching program {program} ({section}) failed: {source}{log}")]
    Attach {
        program: String,
        section: String,
        source: libbpf_rs::Error,
        log: String,
    },
    #[error("setting up the ring buffer failed: {0}")]
    RingBuffer(libbpf_rs::Error),
    #[error("polling the ring buffer failed: {0}")]
    Poll(std::io::Error),
}

/// Tracepoints that some kernels lack (no modules, arm64's missing legacy syscalls, older
/// kernels' newer syscalls): their programs are skipped there instead of failing the start.
const OPTIONAL_TRACEPOINTS: &[&str] = &[
    "module/module_load",
    "syscalls/sys_enter_open",
    "syscalls/sys_exit_open",
    "syscalls/sys_enter_creat",
    "syscalls/sys_exit_creat",
    "syscalls/sys_enter_openat2",
    "syscalls/sys_exit_openat2",
    "syscalls/sys_enter_unlink",
    "syscalls/sys_exit_unlink",
    "syscalls/sys_enter_rmdir",
    "syscalls/sys_exit_rmdir",
    "syscalls/sys_enter_rename",
    "syscalls/sys_exit_rename",
    "syscalls/sys_enter_renameat",
    "syscalls/sys_exit_renameat",
    "syscalls/sys_enter_chmod",
    "syscalls/sys_exit_chmod",
    "syscalls/sys_enter_fchmodat2",
    "syscalls/sys_exit_fchmodat2",
];

/// The ring buffer's records of one poll, copied as they are: they are decoded one at a time
/// as the sink takes them, so that each event's strings are freed before the next event's are
/// allocated (decoding a poll's hundreds of events first made the allocator's slow paths a
/// tenth of the agent's CPU).
#[derive(Default)]
struct Records {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
}

/// Whether a file event is under `file_paths` (every event when it is empty).
fn wanted(file_paths: &[String], event: &SensorEvent) -> bool {
    let under = |path: &str| file_paths.iter().any(|p| path.starts_with(p.as_str()));
    if file_paths.is_empty() {
        return true;
    }
    match event {
        SensorEvent::FileWriteClose { path, .. }
        | SensorEvent::FileDelete { path, .. }
        | SensorEvent::FileChmod { path, .. } => under(path),
        SensorEvent::FileRename { from, to, .. } => under(from) || under(to),
        _ => true,
    }
}

struct Attached {
    name: String,
    prog_id: u32,
    link: Link,
}

/// The loaded and attached sensor. Dropping it detaches every program.
pub struct Sensor {
    // Field order is drop order: the ring buffer and links go before the object they use.
    ring: RingBuffer<'static>,
    attached: Vec<Attached>,
    skel: skel::SensorSkel<'static>,
    /// What the ring buffer's callback fills. The callback runs inside `poll`, on this thread:
    /// no lock to take for each of ~14,000 records a second.
    records: Rc<RefCell<Records>>,
    unavailable: Vec<String>,
    decoder: Decoder,
    file_paths: Vec<String>,
    /// The records of the previous poll, kept for their capacity.
    spare: Records,
    /// Bytes of records the last poll read.
    last_read: usize,
}

impl Sensor {
    /// Loads and attaches every program; an error says which program failed and why.
    pub fn start(config: &SensorConfig) -> Result<Sensor, SensorError> {
        let capture = LibbpfLog::capture();
        let tracefs = tracefs()?;

        // The skeleton borrows its object storage for as long as it lives; the sensor lives as
        // long as the agent, so the storage (one pointer) is leaked rather than self-referenced.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = skel::SensorSkelBuilder::default()
            .open(storage)
            .map_err(|source| SensorError::Open {
                source,
                log: capture.take(),
            })?;
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.ignore_tgid = config.ignore_tgid;
        }
        open.maps
            .events
            .set_max_entries(ring_size(config.ring_buffer_bytes))
            .map_err(|source| SensorError::Open {
                source,
                log: capture.take(),
            })?;

        let mut unavailable = Vec::new();
        for mut prog in open.open_object_mut().progs_mut() {
            let section = prog.section().to_string_lossy().into_owned();
            let Some(tracepoint) = section.strip_prefix("tp/") else {
                continue;
            };
            if tracefs.join("events").join(tracepoint).is_dir() {
                continue;
            }
            let program = prog.name().to_string_lossy().into_owned();
            if !OPTIONAL_TRACEPOINTS.contains(&tracepoint) {
                return Err(SensorError::MissingTracepoint {
                    program,
                    tracepoint: tracepoint.to_string(),
                });
            }
            prog.set_autoload(false);
            unavailable.push(program);
        }

        let skel = open.load().map_err(|source| SensorError::Load {
            source,
            log: capture.take(),
        })?;

        let mut attached = Vec::new();
        for prog in skel.object().progs_mut() {
            if !prog.autoload() {
                continue;
            }
            let name = prog.name().to_string_lossy().into_owned();
            let failed = |source| SensorError::Attach {
                program: name.clone(),
                section: prog.section().to_string_lossy().into_owned(),
                source,
                log: capture.take(),
            };
            let link = prog.attach().map_err(failed)?;
            let prog_id = Program::id_from_fd(prog.as_fd()).map_err(failed)?;
            attached.push(Attached {
                name,
                prog_id,
                link,
            });
        }
        drop(capture);

        let records = Rc::new(RefCell::new(Records::default()));
        let sink = Rc::clone(&records);
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        builder
            .add(&skel.maps.events, move |record: &[u8]| {
                let mut records = sink.borrow_mut();
                records.bytes.extend_from_slice(record);
                let end = records.bytes.len();
                records.ends.push(end);
                0
            })
            .map_err(SensorError::RingBuffer)?;
        let ring = builder.build().map_err(SensorError::RingBuffer)?;
        Ok(Sensor {
            ring,
            attached,
            skel,
            records,
            unavailable,
            decoder: Decoder::new(),
            file_paths: config.file_paths.clone(),
            spare: Records::default(),
            last_read: 0,
        })
    }

    /// Waits up to `timeout` for events, hands each decoded event to `sink`; returns how many.
    pub fn poll(
        &mut self,
        timeout: Duration,
        sink: &mut dyn FnMut(SensorEvent),
    ) -> Result<usize, SensorError> {
        self.decoder.refresh_clock();
        let ret = self.ring.poll_raw(timeout);
        if ret < 0 && ret != -libc::EINTR {
            return Err(SensorError::Poll(std::io::Error::from_raw_os_error(-ret)));
        }
        std::mem::swap(&mut *self.records.borrow_mut(), &mut self.spare);
        self.last_read = self.spare.bytes.len();
        let mut count = 0;
        let mut start = 0;
        for &end in &self.spare.ends {
            if let Ok(event) = self.decoder.decode(&self.spare.bytes[start..end])
                && wanted(&self.file_paths, &event)
            {
                count += 1;
                sink(event);
            }
            start = end;
        }
        self.spare.bytes.clear();
        self.spare.ends.clear();
        Ok(count)
    }

    /// Bytes of records the last [`Sensor::poll`] read from the ring buffer (how full it was).
    pub fn last_read(&self) -> usize {
        self.last_read
    }

    /// Events the kernel side could not hand over (ring buffer full), by kind, since start.
    pub fn lost(&self) -> Lost {
        let mut lost = Lost::default();
        for (kind, name) in KIND_NAMES.iter().enumerate().skip(1) {
            let key = (kind as u32).to_ne_bytes();
            let per_cpu = self.skel.maps.drops.lookup_percpu(&key, MapFlags::ANY);
            let count: u64 = per_cpu
                .ok()
                .flatten()
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.get(..8)?.try_into().ok().map(u64::from_ne_bytes))
                .sum();
            lost.by_kind.push((name, count));
        }
        lost.by_kind.push(("undecodable", self.decoder.errors()));
        lost.total = lost.by_kind.iter().map(|(_, n)| n).sum();
        lost
    }

    /// Names of the programs and whether each is still attached (the agent reports detached
    /// programs as tampering): the link must still exist in the kernel and run our program.
    pub fn programs(&self) -> Vec<(String, bool)> {
        self.attached
            .iter()
            .map(|a| {
                let live = a.link.info().is_ok_and(|info| info.prog_id == a.prog_id);
                (a.name.clone(), live)
            })
            .collect()
    }

    /// Programs not loaded because this kernel lacks their tracepoint (e.g. `on_module_load`
    /// on a kernel built without module support).
    pub fn unavailable(&self) -> &[String] {
        &self.unavailable
    }
}

/// A power of two (the kernel requires it) of at least 64 KiB, room for the largest record.
fn ring_size(bytes: usize) -> u32 {
    let size = bytes.clamp(64 << 10, 1 << 30).next_power_of_two();
    u32::try_from(size).unwrap_or(1 << 30)
}

/// The tracefs mount libbpf resolves tracepoints in; mounted when the system has not.
fn tracefs() -> Result<&'static Path, SensorError> {
    const TRACING: &str = "/sys/kernel/tracing";
    const DEBUG_TRACING: &str = "/sys/kernel/debug/tracing";
    for dir in [TRACING, DEBUG_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(Path::new(dir));
        }
    }
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(SensorError::Tracefs(std::io::Error::last_os_error()));
    }
    Ok(Path::new(TRACING))
}

/// libbpf's messages while a sensor starts, for the error (the verifier log says which program
/// was refused and why). Starts are serialized because libbpf's print hook is process-wide.
struct LibbpfLog {
    _serial: MutexGuard<'static, ()>,
    previous: Option<(PrintLevel, libbpf_rs::PrintCallback)>,
}

static LIBBPF_SERIAL: Mutex<()> = Mutex::new(());
static LIBBPF_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
const LIBBPF_KEEP: usize = 60;

impl LibbpfLog {
    fn capture() -> LibbpfLog {
        let serial = LIBBPF_SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        LIBBPF_LINES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let previous = libbpf_rs::set_print(Some((PrintLevel::Warn, Self::record)));
        LibbpfLog {
            _serial: serial,
            previous,
        }
    }

    fn record(_level: PrintLevel, message: String) {
        tracing::debug!(target: "libbpf", "{}", message.trim_end());
        let mut lines = LIBBPF_LINES.lock().unwrap_or_else(PoisonError::into_inner);
        lines.extend(message.lines().map(str::to_string));
        let excess = lines.len().saturating_sub(LIBBPF_KEEP);
        lines.drain(..excess);
    }

    /// The captured lines, as a suffix for an error message.
    fn take(&self) -> String {
        let lines =
            std::mem::take(&mut *LIBBPF_LINES.lock().unwrap_or_else(PoisonError::into_inner));
        if lines.is_empty() {
            String::new()
        } else {
            format!("\nlibbpf:\n{}", lines.join("\n"))
        }
    }
}

impl Drop for LibbpfLog {
    fn drop(&mut self) {
        libbpf_rs::set_print(self.previous.take());
    }
}
