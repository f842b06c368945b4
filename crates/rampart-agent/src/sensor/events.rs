//! Decoding of the kernel's ring-buffer records (layout: the structs at the top of
//! `sensor.bpf.c`). Every read is bounds-checked: a short or malformed record is an error,
//! never a panic.

use crate::clock::Clock;
use crate::hashes::FileVersion;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chrono::{DateTime, Utc};

use super::{Comm, Net, Protocol, SensorEvent, Task};

/// Record kinds, as `enum ev_kind` in sensor.bpf.c; index = kind, name used by `Lost`.
pub(crate) const KIND_NAMES: [&str; 14] = [
    "unknown",
    "exec",
    "fork",
    "exit",
    "file_write_close",
    "file_delete",
    "file_rename",
    "file_chmod",
    "connect",
    "accept",
    "listen",
    "module_load",
    "ptrace",
    "setid",
];

/// `enum setid_call` in sensor.bpf.c.
const SETID_CALLS: [&str; 9] = [
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "capset",
];

const HDR_LEN: usize = 96;
const SECT_TRUNC: u16 = 1;
const SECT_WALKED: u16 = 4;
const EXEC_ARGV_TRUNC: u32 = 1;
const EXEC_DELETED: u32 = 2;
const EXEC_MEMFD: u32 = 4;
const EXEC_VERSION: u32 = 8;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes ends inside its {what}")]
    Short { what: &'static str, len: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("record declares {declared} bytes but has {actual}")]
    Length { declared: usize, actual: usize },
    #[error("unknown address family {0}")]
    Family(u16),
    #[error("unknown setid call {0}")]
    SetIdCall(u32),
}

/// Turns raw records into events and counts the ones it could not decode.
#[derive(Debug)]
pub struct Decoder {
    /// Event times are CLOCK_BOOTTIME: the offset to the wall clock.
    clock: Clock,
    errors: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            clock: Clock::now(),
            errors: 0,
        }
    }

    /// Re-reads the boot-to-wall-clock offset, which moves when the wall clock is set.
    pub fn refresh_clock(&mut self) {
        self.clock = Clock::now();
    }

    /// Decodes one record; a failure is counted in [`Decoder::errors`].
    pub fn decode(&mut self, record: &[u8]) -> Result<SensorEvent, DecodeError> {
        let decoded = self.parse(record);
        if decoded.is_err() {
            self.errors += 1;
        }
        decoded
    }

    /// Records that could not be decoded so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    fn time(&self, boot_ns: u64) -> DateTime<Utc> {
        self.clock.boot_to_utc(boot_ns)
    }

    fn parse(&self, record: &[u8]) -> Result<SensorEvent, DecodeError> {
        let mut r = Reader {
            buf: record,
            pos: 0,
            what: "header",
        };
        let kind = r.u32()?;
        let declared = r.u32()? as usize;
        if declared != record.len() {
            return Err(DecodeError::Length {
                declared,
                actual: record.len(),
            });
        }
        let task = self.task(&mut r)?;
        debug_assert_eq!(r.pos, HDR_LEN);
        r.what = KIND_NAMES.get(kind as usize).copied().unwrap_or("body");
        Ok(match kind {
            1 => {
                let inode = r.u64()?;
                let dev = kernel_dev_to_user(r.u64()?);
                let _nlink = r.u32()?;
                let flags = r.u32()?;
                let size = r.u64()?;
                // Seconds since the epoch, as the kernel's time64_t (signed).
                let mtime_sec = r.u64()? as i64;
                let ctime_sec = r.u64()? as i64;
                let mtime_nsec = i64::from(r.u32()?);
                let ctime_nsec = i64::from(r.u32()?);
                let version = (flags & EXEC_VERSION != 0).then(|| {
                    FileVersion::new(
                        (dev, inode, size),
                        (mtime_sec, mtime_nsec),
                        (ctime_sec, ctime_nsec),
                    )
                });
                let filename = r.section()?;
                let argv_section = r.section()?;
                let cwd = r.section()?.path();
                let filename = absolute(filename.data, || cwd.clone());
                SensorEvent::Exec {
                    task,
                    filename,
                    argv: split_argv(argv_section.data),
                    argv_truncated: flags & EXEC_ARGV_TRUNC != 0,
                    cwd,
                    inode,
                    dev,
                    version,
                    exe_deleted: flags & EXEC_DELETED != 0,
                    exe_memfd: flags & EXEC_MEMFD != 0,
                }
            }
            2 => SensorEvent::Fork { task },
            3 => {
                let code = r.u32()?;
                let _pad = r.u32()?;
                SensorEvent::Exit {
                    task,
                    exit_code: ((code >> 8) & 0xff) as i32,
                    signal: (code & 0x7f) as i32,
                }
            }
            4 => {
                let inode = r.u64()?;
                let size = r.u64()?;
                let opened = self.time(r.u64()?);
                let flags = r.u32()?;
                let _pad = r.u32()?;
                let path = r.section()?.path();
                SensorEvent::FileWriteClose {
                    task,
                    path,
                    flags,
                    inode,
                    size,
                    opened,
                }
            }
            5 => {
                let dir = r.u32()? != 0;
                let _pad = r.u32()?;
                let path = r.at_path()?;
                SensorEvent::FileDelete { task, path, dir }
            }
            6 => {
                let from = r.at_path()?;
                let to = r.at_path()?;
                SensorEvent::FileRename { task, from, to }
            }
            7 => {
                let mode = r.u32()?;
                let _pad = r.u32()?;
                let path = r.at_path()?;
                SensorEvent::FileChmod { task, path, mode }
            }
            8 => {
                let (result, net) = r.net()?;
                SensorEvent::Connect { task, net, result }
            }
            9 => SensorEvent::Accept {
                task,
                net: r.net()?.1,
            },
            10 => SensorEvent::Listen {
                task,
                net: r.net()?.1,
            },
            11 => SensorEvent::ModuleLoad {
                task,
                name: r.section()?.text(),
            },
            12 => {
                let request = r.i64()?;
                let target_pid = r.u32()?;
                SensorEvent::Ptrace {
                    task,
                    request,
                    target_pid,
                }
            }
            13 => {
                let call = r.u32()?;
                let name = SETID_CALLS
                    .get(call as usize)
                    .copied()
                    .ok_or(DecodeError::SetIdCall(call))?;
                let uid = r.u32()?;
                let euid = r.u32()?;
                let _suid = r.u32()?;
                let _fsuid = r.u32()?;
                let gid = r.u32()?;
                let egid = r.u32()?;
                SensorEvent::SetId {
                    task,
                    call: name,
                    uid,
                    euid,
                    gid,
                    egid,
                }
            }
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }

    fn task(&self, r: &mut Reader<'_>) -> Result<Task, DecodeError> {
        let time = self.time(r.u64()?);
        let start_ns = r.u64()?;
        let parent_start_ns = r.u64()?;
        let cgroup_id = r.u64()?;
        let pid = r.u32()?;
        let tgid = r.u32()?;
        let ppid = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let euid = r.u32()?;
        let egid = r.u32()?;
        let loginuid = r.u32()?;
        let sessionid = r.u32()?;
        let _pad = r.u32()?;
        let comm = r.bytes(16)?;
        let comm = &comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())];
        Ok(Task {
            pid,
            tgid,
            ppid,
            uid,
            gid,
            euid,
            egid,
            loginuid,
            sessionid,
            cgroup_id,
            comm: Comm::new(comm),
            start_ns,
            parent_start_ns,
            time,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(DecodeError::Short {
                what: self.what,
                len: self.buf.len(),
            });
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_ne_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_ne_bytes)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_ne_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_ne_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_ne_bytes)
    }

    /// A `struct sect` (4-byte aligned) and its bytes.
    fn section(&mut self) -> Result<Section<'a>, DecodeError> {
        let aligned = self.pos.next_multiple_of(4);
        self.bytes(aligned - self.pos)?;
        let len = self.u16()? as usize;
        let flags = self.u16()?;
        Ok(Section {
            data: self.bytes(len)?,
            flags,
        })
    }

    /// A path argument: the string as passed and the directory it is relative to (built
    /// only for a relative path).
    fn at_path(&mut self) -> Result<String, DecodeError> {
        let raw = self.section()?;
        let base = self.section()?;
        Ok(absolute(raw.data, || base.path()))
    }

    /// `struct net_body`: (result, addresses).
    fn net(&mut self) -> Result<(i32, Net), DecodeError> {
        let result = self.i32()?;
        let lfamily = self.u16()?;
        let rfamily = self.u16()?;
        let protocol = self.u16()?;
        let _sock_type = self.u16()?;
        let lport = self.u16()?;
        let rport = self.u16()?;
        let laddr = self.array::<16>()?;
        let raddr = self.array::<16>()?;
        let protocol = match protocol {
            IPPROTO_TCP => Protocol::Tcp,
            IPPROTO_UDP => Protocol::Udp,
            other => Protocol::Other(other),
        };
        let local = socket_addr(lfamily, laddr, lport)?;
        let remote = socket_addr(rfamily, raddr, rport)?;
        Ok((
            result,
            Net {
                protocol,
                local,
                remote,
            },
        ))
    }
}

struct Section<'a> {
    data: &'a [u8],
    flags: u16,
}

impl Section<'_> {
    fn text(&self) -> String {
        String::from_utf8_lossy(self.data).into_owned()
    }

    /// Components arrive leaf first, NUL-terminated. A walk that ran out of depth or space
    /// starts with "…/" (not absolute: the top is unknown); no walk at all is "".
    fn path(&self) -> String {
        if self.flags & SECT_WALKED == 0 {
            return String::new();
        }
        // The components, leaf first, each ended by a NUL.
        let data = self.data.strip_suffix(&[0]).unwrap_or(self.data);
        if data.is_empty() && self.flags & SECT_TRUNC == 0 {
            return "/".into();
        }
        // Sized once: a path is built for every file event.
        let mut out = String::with_capacity(data.len() + 4);
        if self.flags & SECT_TRUNC != 0 {
            out.push('…');
        }
        if !self.data.is_empty() {
            for part in data.rsplit(|&b| b == 0) {
                out.push('/');
                out.push_str(&String::from_utf8_lossy(part));
            }
        }
        out
    }
}

/// The path `raw` names as the kernel resolved it: absolute as is, else below `base` (asked
/// for only then); "." and ".." are folded lexically (a ".." after a symlink inside `raw` may
/// differ from the kernel's walk).
///
/// A path is resolved for every exec and file event, so the usual case costs one allocation:
/// an absolute path already in normal form is copied as it is; any other is folded into a
/// string sized once.
fn absolute(raw: &[u8], base: impl FnOnce() -> String) -> String {
    let raw = String::from_utf8_lossy(raw);
    if raw.starts_with('/') {
        if is_normal(&raw) {
            return raw.into_owned();
        }
        return folded(&["", &raw]);
    }
    let base = base();
    if !base.starts_with('/') {
        // No walk ("": the relative path is all there is) or a truncated one ("…/b/c").
        return match (base.is_empty(), raw.is_empty()) {
            (true, _) => raw.into_owned(),
            (false, true) => base,
            (false, false) => format!("{base}/{raw}"),
        };
    }
    folded(&[&base, &raw])
}

/// An absolute path without empty, "." or ".." components (nor a trailing "/"). One pass
/// over the bytes (every exec and file event's path is checked).
fn is_normal(path: &str) -> bool {
    let path = path.as_bytes();
    if path.len() < 2 || path[0] != b'/' {
        return false;
    }
    // The length of the component so far, and whether it is all dots.
    let (mut len, mut dots) = (0usize, true);
    for &b in &path[1..] {
        if b == b'/' {
            if len == 0 || (dots && len <= 2) {
                return false;
            }
            (len, dots) = (0, true);
        } else {
            len += 1;
            dots &= b == b'.';
        }
    }
    len > 0 && !(dots && len <= 2)
}

/// `parts` joined by "/" (the first absolute), with empty and "." components dropped and
/// ".." taking away the one before.
fn folded(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts.iter().flat_map(|p| p.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            p => {
                out.push('/');
                out.push_str(p);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn split_argv(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn socket_addr(family: u16, addr: [u8; 16], port: u16) -> Result<SocketAddr, DecodeError> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(addr)),
        other => return Err(DecodeError::Family(other)),
    };
    Ok(SocketAddr::new(ip, port))
}

/// The kernel's dev_t (major << 20 | minor) as userspace's st_dev.
fn kernel_dev_to_user(dev: u64) -> u64 {
    libc::makedev((dev >> 20) as u32, (dev & 0xf_ffff) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECT_UNROOTED: u16 = 2;

    /// A header followed by `body`, with the length field set.
    fn record(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(kind.to_ne_bytes());
        r.extend(((HDR_LEN + body.len()) as u32).to_ne_bytes());
        r.extend([0u8; 8 * 4]);
        for field in 0u32..10 {
            r.extend((100 + field).to_ne_bytes());
        }
        r.extend(b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(r.len(), HDR_LEN);
        r.extend(body);
        r
    }

    fn section(out: &mut Vec<u8>, flags: u16, data: &[u8]) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend((data.len() as u16).to_ne_bytes());
        out.extend(flags.to_ne_bytes());
        out.extend(data);
    }

    fn exec_record() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(7u64.to_ne_bytes());
        body.extend(((8u64 << 20) | 1).to_ne_bytes());
        body.extend(1u32.to_ne_bytes());
        body.extend((EXEC_MEMFD | EXEC_VERSION).to_ne_bytes());
        body.extend(4096u64.to_ne_bytes());
        body.extend(1_700_000_000i64.to_ne_bytes());
        body.extend(1_700_000_100i64.to_ne_bytes());
        body.extend(5u32.to_ne_bytes());
        body.extend(6u32.to_ne_bytes());
        let mut rec = record(1, &body);
        section(&mut rec, 0, b"./bin/tool");
        section(&mut rec, 0, b"tool\0-v\0a b\0");
        section(&mut rec, SECT_WALKED, b"work\0home\0");
        let len = rec.len() as u32;
        rec[4..8].copy_from_slice(&len.to_ne_bytes());
        rec
    }

    #[test]
    fn exec_record_decodes_and_every_truncation_is_an_error() {
        let mut d = Decoder::new();
        let rec = exec_record();
        let Ok(SensorEvent::Exec {
            task,
            filename,
            argv,
            cwd,
            dev,
            version,
            exe_memfd,
            ..
        }) = d.decode(&rec)
        else {
            panic!("exec record did not decode");
        };
        assert_eq!(
            (task.pid, task.tgid, task.ppid, task.comm.as_str()),
            (100, 101, 102, "sh")
        );
        assert_eq!(filename, "/home/work/bin/tool");
        assert_eq!(argv, ["tool", "-v", "a b"]);
        assert_eq!(cwd, "/home/work");
        assert_eq!(dev, libc::makedev(8, 1));
        assert_eq!(
            version,
            Some(FileVersion::new(
                (libc::makedev(8, 1), 7, 4096),
                (1_700_000_000, 5),
                (1_700_000_100, 6)
            ))
        );
        assert!(exe_memfd);
        for len in 0..rec.len() {
            let mut short = rec[..len].to_vec();
            if len >= 8 {
                // Even with a consistent length field the body must not be read past its end.
                short[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
            }
            assert!(d.decode(&short).is_err(), "{len} bytes decoded");
        }
        assert_eq!(d.errors(), rec.len() as u64);
    }

    #[test]
    fn comm_is_held_as_from_utf8_lossy_reads_it() {
        for raw in [
            &b"sh"[..],
            b"",
            b"exactly-16-bytes",
            b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0",
            "caf\u{e9}\u{1f600}".as_bytes(),
        ] {
            let comm = Comm::new(raw);
            assert_eq!(comm.as_str(), String::from_utf8_lossy(raw), "{raw:?}");
            let json = serde_json::to_string(&comm).unwrap();
            assert_eq!(serde_json::from_str::<Comm>(&json).unwrap(), comm);
        }
        // Longer text keeps its whole characters that fit.
        let long = "\u{1f600}".repeat(13);
        assert_eq!(Comm::from(long.as_str()).as_str(), "\u{1f600}".repeat(12));
        assert_eq!(Comm::from("run"), "run");
    }

    #[test]
    fn a_normal_path_is_one_folding_leaves_as_it_is() {
        for path in [
            "/", "/a", "/a/b", "//a", "/a//b", "/a/", "/.", "/..", "/...", "/a/./b", "/a/../b",
            "/a/.", "/a/..", "/.a", "/..a", "/a./b", "/a/.../b", "/a/b/.x", "/é/ü", "a/b", "",
        ] {
            let expected = path.starts_with('/') && folded(&["", path]) == path && path != "/";
            assert_eq!(is_normal(path), expected, "{path:?}");
        }
    }

    #[test]
    fn paths_are_absolute_and_folded() {
        let base = |b: &'static str| move || b.to_string();
        assert_eq!(absolute(b"../x/./y", base("/a/b")), "/a/x/y");
        assert_eq!(absolute(b"/etc//passwd", base("/ignored")), "/etc/passwd");
        assert_eq!(absolute(b"/etc/passwd", base("/ignored")), "/etc/passwd");
        assert_eq!(absolute(b"/a/b/..", base("/ignored")), "/a");
        assert_eq!(absolute(b"/", base("/ignored")), "/");
        assert_eq!(absolute(b"/..", base("/ignored")), "/");
        assert_eq!(absolute(b"", base("/tmp/f")), "/tmp/f");
        assert_eq!(absolute(b"", base("/tmp//f/")), "/tmp/f");
        assert_eq!(absolute(b"rel", base("")), "rel");
        assert_eq!(absolute(b"x/../y", base("…/b/c")), "…/b/c/x/../y");
        assert_eq!(absolute(b"", base("…/b")), "…/b");
        // The base is not built for an absolute path.
        assert_eq!(
            absolute(b"/etc/shadow", || unreachable!(
                "no base for an absolute path"
            )),
            "/etc/shadow"
        );
        let s = Section {
            data: b"c\0b\0",
            flags: SECT_WALKED | SECT_TRUNC,
        };
        assert_eq!(s.path(), "…/b/c");
        let s = Section {
            data: b"memfd:x\0",
            flags: SECT_WALKED | SECT_UNROOTED,
        };
        assert_eq!(s.path(), "/memfd:x");
        assert_eq!(
            Section {
                data: b"",
                flags: SECT_WALKED
            }
            .path(),
            "/"
        );
        assert_eq!(
            Section {
                data: b"",
                flags: 0
            }
            .path(),
            ""
        );
    }
}
