//! The sensor without eBPF: the kernel's process connector (netlink, `CN_IDX_PROC`) announces
//! every fork, exec and exit, and /proc fills in the rest — argv, working directory, image,
//! credentials. File events come from fanotify ([`crate::fanotify`]) where the kernel allows
//! it; network events need the eBPF sensor. A process that exits before /proc is read is
//! reported with what the connector said (pid, parent).
//!
//! Events come out as the eBPF sensor's [`SensorEvent`]s, so mapping is the same code.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use chrono::Utc;

use crate::fanotify::FileWatch;
use crate::sensor::{Comm, SensorEvent, Task};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// nlmsghdr (16) + cn_msg header (20).
const HEADERS: usize = 36;

pub struct ProcConnector {
    socket: OwnedFd,
    buf: Vec<u8>,
    /// Messages too short for what they said they were.
    malformed: u64,
    /// Times the kernel dropped messages for us (ENOBUFS; at least one each).
    overruns: u64,
    tick_ns: u64,
}

impl ProcConnector {
    /// Subscribes to process events (needs CAP_NET_ADMIN, i.e. root).
    pub fn start() -> io::Result<ProcConnector> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_CONNECTOR,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_nl is valid; fields set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = CN_IDX_PROC;
        addr.nl_pid = 0;
        // SAFETY: `addr` is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut msg = Vec::with_capacity(HEADERS + 4);
        let total = (HEADERS + 4) as u32;
        msg.extend_from_slice(&total.to_ne_bytes()); // nlmsg_len
        msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes()); // nlmsg_type
        msg.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
        msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        msg.extend_from_slice(&std::process::id().to_ne_bytes()); // nlmsg_pid
        msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
        msg.extend_from_slice(&4u16.to_ne_bytes()); // len
        msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
        msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
        // SAFETY: `msg` is a valid buffer of the length given.
        let sent = unsafe { libc::send(socket.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ProcConnector {
            socket,
            buf: vec![0; 64 << 10],
            malformed: 0,
            overruns: 0,
            tick_ns: tick_ns(),
        })
    }

    /// Messages lost since start: dropped by the kernel (at least one per overrun) or too
    /// short to read.
    pub fn lost(&self) -> u64 {
        self.malformed + self.overruns
    }

    /// Waits up to `timeout` for events and hands each over; returns how many.
    pub fn poll(
        &mut self,
        timeout: Duration,
        sink: &mut dyn FnMut(SensorEvent),
    ) -> io::Result<usize> {
        self.poll_with(None, timeout, sink)
    }

    /// [`ProcConnector::poll`] that also waits for `files`' events: process events are handed
    /// over first, so a file event's process has had its exec recorded.
    pub fn poll_with(
        &mut self,
        files: Option<&mut FileWatch>,
        timeout: Duration,
        sink: &mut dyn FnMut(SensorEvent),
    ) -> io::Result<usize> {
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.socket.as_raw_fd())
            .chain(files.as_ref().map(|f| f.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid array of pollfds of the length given.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) } <= 0 {
            return Ok(0);
        }
        let mut count = self.drain(sink)?;
        if let Some(files) = files {
            count += files.drain(sink)?;
        }
        Ok(count)
    }

    /// Reads what is queued (without waiting) and hands each event over; returns how many.
    fn drain(&mut self, sink: &mut dyn FnMut(SensorEvent)) -> io::Result<usize> {
        let mut count = 0;
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                // ENOBUFS: the kernel dropped messages for us; they are gone (counted), go on.
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    self.overruns += 1;
                }
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | None => Ok(count),
                    _ if n == 0 => Ok(count),
                    _ => Err(e),
                };
            }
            let len = usize::try_from(n).unwrap_or(0);
            let events = match parse(&self.buf[..len]) {
                Some(e) => e,
                None => {
                    self.malformed += 1;
                    continue;
                }
            };
            for (what, data) in events {
                if let Some(event) = self.event(what, &data) {
                    sink(event);
                    count += 1;
                }
            }
        }
    }

    fn event(&self, what: u32, data: &[u8]) -> Option<SensorEvent> {
        let u32_at = |i: usize| {
            data.get(i..i + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        match what {
            PROC_EVENT_EXEC => {
                let (pid, tgid) = (u32_at(0)?, u32_at(4)?);
                if pid != tgid {
                    return None;
                }
                let dir = format!("/proc/{tgid}");
                let argv = crate::process::read_cmdline(&dir);
                let exe = std::fs::read_link(format!("{dir}/exe")).ok();
                let filename = exe.as_ref().map_or_else(
                    || argv.first().cloned().unwrap_or_default(),
                    |p| {
                        p.to_string_lossy()
                            .trim_end_matches(" (deleted)")
                            .to_string()
                    },
                );
                let cwd = std::fs::read_link(format!("{dir}/cwd"))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let meta = std::fs::metadata(format!("{dir}/exe")).ok();
                use std::os::unix::fs::MetadataExt;
                Some(SensorEvent::Exec {
                    task: task(tgid, None, self.tick_ns),
                    exe_deleted: exe
                        .as_ref()
                        .is_some_and(|p| p.to_string_lossy().ends_with(" (deleted)")),
                    exe_memfd: filename.starts_with("/memfd:"),
                    filename,
                    argv,
                    argv_truncated: false,
                    cwd,
                    inode: meta.as_ref().map_or(0, |m| m.ino()),
                    dev: meta.as_ref().map_or(0, |m| m.dev()),
                    version: meta.as_ref().map(crate::hashes::FileVersion::of),
                })
            }
            PROC_EVENT_FORK => {
                let (parent, child_pid, child_tgid) = (u32_at(4)?, u32_at(8)?, u32_at(12)?);
                if child_pid != child_tgid {
                    return None;
                }
                Some(SensorEvent::Fork {
                    task: task(child_tgid, Some(parent), self.tick_ns),
                })
            }
            PROC_EVENT_EXIT => {
                let (pid, tgid, code, signal, parent) =
                    (u32_at(0)?, u32_at(4)?, u32_at(8)?, u32_at(12)?, u32_at(20)?);
                if pid != tgid {
                    return None;
                }
                Some(SensorEvent::Exit {
                    task: task(tgid, Some(parent), self.tick_ns),
                    exit_code: (code >> 8) as i32,
                    signal: signal as i32,
                })
            }
            _ => None,
        }
    }
}

/// Nanoseconds per clock tick (/proc's unit of start times).
pub(crate) fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// A task from /proc (what is left of it when the process is already gone: the pid and the
/// parent given, a start time of 0).
pub(crate) fn task(tgid: u32, parent: Option<u32>, tick_ns: u64) -> Task {
    let dir = format!("/proc/{tgid}");
    let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (uids, gids) = (ids("Uid:"), ids("Gid:"));
    let (comm, ppid, start) = crate::process::parse_stat(&stat).unwrap_or_default();
    let ppid = parent.unwrap_or(ppid);
    let parent_start = std::fs::read_to_string(format!("/proc/{ppid}/stat"))
        .ok()
        .and_then(|s| crate::process::parse_stat(&s))
        .map_or(0, |(_, _, s)| s);
    let read_u32 = |f: &str| {
        std::fs::read_to_string(format!("{dir}/{f}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u32::MAX)
    };
    Task {
        pid: tgid,
        tgid,
        ppid,
        uid: uids.first().copied().unwrap_or(0),
        euid: uids.get(1).copied().unwrap_or(0),
        gid: gids.first().copied().unwrap_or(0),
        egid: gids.get(1).copied().unwrap_or(0),
        loginuid: read_u32("loginuid"),
        sessionid: read_u32("sessionid"),
        cgroup_id: 0,
        comm: Comm::from(comm.as_str()),
        start_ns: start * tick_ns,
        parent_start_ns: parent_start * tick_ns,
        time: Utc::now(),
    }
}

/// The proc events of one datagram: (what, event data) after the nlmsghdr, cn_msg and the
/// proc_event header (what, cpu, timestamp). `None` when it is shorter than it says.
fn parse(mut buf: &[u8]) -> Option<Vec<(u32, Vec<u8>)>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < HEADERS || len > buf.len() {
            return None;
        }
        let msg = &buf[..len];
        let idx = u32::from_ne_bytes(msg[16..20].try_into().ok()?);
        let body = &msg[HEADERS..];
        if idx == CN_IDX_PROC && body.len() >= 16 {
            let what = u32::from_ne_bytes(body[0..4].try_into().ok()?);
            out.push((what, body[16..].to_vec()));
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_lying_messages_are_refused() {
        assert!(parse(&[0u8; 8]).is_some_and(|v| v.is_empty()));
        let mut lying = vec![0u8; 40];
        lying[0..4].copy_from_slice(&400u32.to_ne_bytes());
        assert!(parse(&lying).is_none());
    }

    #[test]
    fn execs_are_announced_with_their_command_line() {
        let Ok(mut connector) = ProcConnector::start() else {
            assert!(
                std::env::var("RAMPART_REQUIRE_DATA").as_deref() != Ok("1"),
                "RAMPART_REQUIRE_DATA=1 but the process connector is unavailable (root?)"
            );
            eprintln!("skipped: the process connector needs root");
            return;
        };
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("3.25")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut seen = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.is_none() && std::time::Instant::now() < deadline {
            connector
                .poll(Duration::from_millis(100), &mut |e| {
                    if let SensorEvent::Exec { task, argv, .. } = &e
                        && task.tgid == pid
                    {
                        seen = Some((task.clone(), argv.clone()));
                    }
                })
                .unwrap();
        }
        let _ = child.kill();
        let _ = child.wait();
        let (task, argv) = seen.expect("the exec was announced");
        assert_eq!(argv, ["/bin/sleep", "3.25"]);
        assert_eq!(task.ppid, std::process::id());
        assert_eq!(task.comm, "sleep");
    }
}
