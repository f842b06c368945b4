//! Logons (sshd, sudo, su, console login) from what those programs log to syslog: read from
//! the journal when journald runs, else from the auth log a syslog daemon writes, else — on a
//! machine where nothing listens on /dev/log, where these messages would be lost — from
//! /dev/log itself, which the agent then receives.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// One logon attempt, as read from a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logon {
    pub time: DateTime<Utc>,
    pub success: bool,
    /// The account logged on to (the target of su/sudo).
    pub account: String,
    /// Who asked (su/sudo's caller), when known.
    pub by: Option<String>,
    /// Defender's LogonType: Interactive (console, su, sudo) or Network (ssh).
    pub logon_type: &'static str,
    pub protocol: Option<&'static str>,
    pub remote_ip: Option<String>,
    pub remote_port: Option<u16>,
    pub failure_reason: Option<&'static str>,
    /// The program that logged it, and its pid.
    pub program: String,
    pub pid: Option<u32>,
    pub terminal: Option<String>,
}

/// Where logons come from on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogonSource {
    Journal,
    AuthLog(PathBuf),
    /// The agent binds this socket (nothing else did).
    SyslogSocket(PathBuf),
    None,
}

impl LogonSource {
    /// The first that applies: journald, an auth log, else /dev/log if free.
    pub fn detect() -> LogonSource {
        if Path::new("/run/systemd/journal/socket").exists() {
            return LogonSource::Journal;
        }
        for log in ["/var/log/auth.log", "/var/log/secure"] {
            if Path::new(log).exists() && is_served(Path::new("/dev/log")) {
                return LogonSource::AuthLog(log.into());
            }
        }
        if !is_served(Path::new("/dev/log")) {
            return LogonSource::SyslogSocket("/dev/log".into());
        }
        LogonSource::None
    }

    pub fn describe(&self) -> String {
        match self {
            LogonSource::Journal => "journald".into(),
            LogonSource::AuthLog(p) => p.display().to_string(),
            LogonSource::SyslogSocket(p) => format!("syslog socket {}", p.display()),
            LogonSource::None => "none".into(),
        }
    }
}

/// Reads `source` on a thread until `stop`, sending each logon to `out`.
pub fn spawn(
    source: LogonSource,
    out: mpsc::Sender<Logon>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    let emit = move |line: &str, out: &mpsc::Sender<Logon>| {
        if let Some(msg) = SyslogMessage::parse(line)
            && let Some(logon) = parse_logon(&msg)
        {
            let _ = out.send(logon);
        }
    };
    let handle = match source {
        LogonSource::None => return Ok(None),
        LogonSource::SyslogSocket(path) => {
            let socket = bind_syslog(&path)?;
            std::thread::Builder::new()
                .name("logons".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 8192];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(n) = socket.recv(&mut buf) {
                            emit(&String::from_utf8_lossy(&buf[..n]), &out);
                        }
                    }
                    let _ = std::fs::remove_file(&path);
                })?
        }
        LogonSource::AuthLog(path) => {
            let mut file = std::fs::File::open(&path)?;
            file.seek(SeekFrom::End(0))?;
            std::thread::Builder::new()
                .name("logons".into())
                .spawn(move || tail(file, &path, &stop, |line| emit(line, &out)))?
        }
        LogonSource::Journal => {
            let mut child = Command::new("journalctl")
                .args(["--follow", "--lines=0", "--output=short-iso"])
                .args(["SYSLOG_FACILITY=4", "SYSLOG_FACILITY=10"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| std::io::Error::other("no stdout"))?;
            std::thread::Builder::new()
                .name("logons".into())
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        emit(&line, &out);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                })?
        }
    };
    Ok(Some(handle))
}

/// Whether a program receives what is sent to `path` (a socket left by a dead one does not).
fn is_served(path: &Path) -> bool {
    UnixDatagram::unbound()
        .and_then(|s| s.connect(path))
        .is_ok()
}

fn bind_syslog(path: &Path) -> std::io::Result<UnixDatagram> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() && !is_served(path) {
        std::fs::remove_file(path)?;
    }
    let socket = UnixDatagram::bind(path)?;
    // Every program logs through it, as through syslogd's.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket)
}

/// Follows a log file, reopening it when it is rotated.
fn tail(mut file: std::fs::File, path: &Path, stop: &AtomicBool, mut line: impl FnMut(&str)) {
    use std::os::unix::fs::MetadataExt;
    let mut pending = String::new();
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                let rotated = match (std::fs::metadata(path), file.metadata()) {
                    (Ok(now), Ok(open)) => now.ino() != open.ino() || now.len() < open.len(),
                    _ => false,
                };
                if rotated && let Ok(f) = std::fs::File::open(path) {
                    file = f;
                }
            }
            Ok(n) => {
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(end) = pending.find('\n') {
                    line(&pending[..end]);
                    pending.drain(..=end);
                }
            }
        }
    }
}

/// A syslog line: `<PRI>Mmm dd hh:mm:ss [host ]tag[pid]: message` (RFC 3164, as glibc's
/// syslog(3) sends it and syslog daemons write it), or a file line without `<PRI>`.
#[derive(Debug, PartialEq, Eq)]
pub struct SyslogMessage<'a> {
    pub program: &'a str,
    pub pid: Option<u32>,
    pub message: &'a str,
}

impl<'a> SyslogMessage<'a> {
    pub fn parse(line: &'a str) -> Option<SyslogMessage<'a>> {
        let line = line.trim_end_matches(['\n', '\0']);
        let rest = match line.strip_prefix('<') {
            Some(r) => &r[r.find('>')? + 1..],
            None => line,
        };
        // The tag is the first word ending in ':' (timestamp and host come before it).
        let colon = rest.find(": ")?;
        let head = &rest[..colon];
        let tag = head.rsplit(' ').next()?;
        let (program, pid) = match tag.split_once('[') {
            Some((p, pid)) => (p, pid.trim_end_matches(']').parse().ok()),
            None => (tag, None),
        };
        Some(SyslogMessage {
            program,
            pid,
            message: &rest[colon + 2..],
        })
    }
}

/// The logon a message records, if it records one.
pub fn parse_logon(msg: &SyslogMessage<'_>) -> Option<Logon> {
    let base = |success: bool, account: &str| Logon {
        time: Utc::now(),
        success,
        account: account.to_string(),
        by: None,
        logon_type: "Interactive",
        protocol: None,
        remote_ip: None,
        remote_port: None,
        failure_reason: (!success).then_some("InvalidUserNameOrPassword"),
        program: msg.program.to_string(),
        pid: msg.pid,
        terminal: None,
    };
    let m = msg.message;
    match msg.program {
        "su" => {
            // util-linux: "FAILED SU (to root) alice on pts/0", "(to root) alice on pts/0";
            // shadow: "FAILED su for root by alice", "+ pts/0 alice:root".
            if let Some(rest) = m.strip_prefix("FAILED SU (to ") {
                let (target, rest) = rest.split_once(") ")?;
                let (by, tty) = rest.split_once(" on ")?;
                return Some(Logon {
                    by: Some(by.to_string()),
                    terminal: Some(tty.to_string()),
                    ..base(false, target)
                });
            }
            if let Some(rest) = m.strip_prefix("(to ") {
                let (target, rest) = rest.split_once(") ")?;
                let (by, tty) = rest.split_once(" on ")?;
                return Some(Logon {
                    by: Some(by.to_string()),
                    terminal: Some(tty.to_string()),
                    ..base(true, target)
                });
            }
            if let Some(rest) = m.strip_prefix("FAILED su for ") {
                let (target, by) = rest.split_once(" by ")?;
                return Some(Logon {
                    by: Some(by.to_string()),
                    ..base(false, target)
                });
            }
            if let Some(rest) = m.strip_prefix("+ ") {
                let (tty, users) = rest.split_once(' ')?;
                let (by, target) = users.split_once(':')?;
                return Some(Logon {
                    by: Some(by.to_string()),
                    terminal: Some(tty.to_string()),
                    ..base(true, target)
                });
            }
            None
        }
        "sudo" => {
            // "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id" and
            // "alice : 3 incorrect password attempts ; TTY=... ; USER=root ; COMMAND=...".
            let (by, rest) = m.split_once(" : ")?;
            let target = rest
                .split(" ; ")
                .find_map(|f| f.strip_prefix("USER="))
                .unwrap_or("root");
            let failed = rest.contains("incorrect password attempt");
            if !failed && !rest.starts_with("TTY=") && !rest.contains("COMMAND=") {
                return None;
            }
            Some(Logon {
                by: Some(by.trim().to_string()),
                ..base(!failed, target)
            })
        }
        "sshd" => {
            let (success, rest) = if let Some(r) = m.strip_prefix("Accepted ") {
                (true, r)
            } else if let Some(r) = m.strip_prefix("Failed ") {
                (false, r)
            } else {
                return None;
            };
            // "<method> for [invalid user ]<user> from <ip> port <port> ssh2"
            let (_, rest) = rest.split_once(" for ")?;
            let (invalid, rest) = match rest.strip_prefix("invalid user ") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let (user, rest) = rest.rsplit_once(" from ")?;
            let mut words = rest.split(' ');
            let ip = words.next()?.to_string();
            let port = match (words.next(), words.next()) {
                (Some("port"), Some(p)) => p.parse().ok(),
                _ => None,
            };
            Some(Logon {
                logon_type: "Network",
                protocol: Some("SSH"),
                remote_ip: Some(ip),
                remote_port: port,
                failure_reason: (!success).then_some(if invalid {
                    "UnknownUser"
                } else {
                    "InvalidUserNameOrPassword"
                }),
                ..base(success, user)
            })
        }
        "login" => {
            // "FAILED LOGIN (1) on '/dev/tty1' FOR 'alice', Authentication failure",
            // "ROOT LOGIN  on '/dev/tty1'", "LOGIN ON tty1 BY alice".
            if let Some(rest) = m.strip_prefix("FAILED LOGIN ") {
                let user = rest.split("FOR '").nth(1)?.split('\'').next()?;
                let tty = rest.split("on '").nth(1).and_then(|r| r.split('\'').next());
                return Some(Logon {
                    terminal: tty.map(str::to_string),
                    failure_reason: Some(if user == "UNKNOWN" {
                        "UnknownUser"
                    } else {
                        "InvalidUserNameOrPassword"
                    }),
                    ..base(false, user)
                });
            }
            if m.starts_with("ROOT LOGIN") {
                let tty = m.split("on '").nth(1).and_then(|r| r.split('\'').next());
                return Some(Logon {
                    terminal: tty.map(str::to_string),
                    ..base(true, "root")
                });
            }
            if let Some(rest) = m.strip_prefix("LOGIN ON ") {
                let (tty, user) = rest.split_once(" BY ")?;
                return Some(Logon {
                    terminal: Some(tty.to_string()),
                    ..base(true, user.trim())
                });
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logon(line: &str) -> Option<Logon> {
        parse_logon(&SyslogMessage::parse(line)?)
    }

    #[test]
    fn syslog_lines() {
        let m = SyslogMessage::parse(
            "<37>Dec  2 00:25:50 su[9861]: FAILED SU (to root) nobody on none",
        )
        .unwrap();
        assert_eq!(
            (m.program, m.pid, m.message),
            ("su", Some(9861), "FAILED SU (to root) nobody on none")
        );
        let m = SyslogMessage::parse("2026-12-02T00:25:50.1+00:00 web01 sshd[77]: Accepted publickey for alice from 10.0.0.5 port 51234 ssh2: ED25519").unwrap();
        assert_eq!((m.program, m.pid), ("sshd", Some(77)));
        assert!(SyslogMessage::parse("no tag here").is_none());
    }

    #[test]
    fn su_failures_and_successes() {
        let l = logon("<37>Dec  2 00:25:50 su[9861]: FAILED SU (to root) nobody on none").unwrap();
        assert!(!l.success);
        assert_eq!(
            (l.account.as_str(), l.by.as_deref(), l.pid),
            ("root", Some("nobody"), Some(9861))
        );
        assert_eq!(l.failure_reason, Some("InvalidUserNameOrPassword"));
        let l = logon("<86>Dec  2 00:25:50 su[1]: (to root) alice on pts/0").unwrap();
        assert!(l.success && l.account == "root" && l.terminal.as_deref() == Some("pts/0"));
        let l = logon("Dec  2 00:25:50 host su[1]: FAILED su for root by alice").unwrap();
        assert!(!l.success && l.by.as_deref() == Some("alice"));
        // PAM's own line for the same failure is not a second logon.
        assert!(logon("<82>Dec  2 00:25:49 su: pam_unix(su:auth): auth could not identify password for [root]").is_none());
    }

    #[test]
    fn sshd_sudo_login() {
        let l = logon("<38>Dec  2 00:00:01 sshd[5]: Failed password for invalid user bob from 203.0.113.9 port 4022 ssh2").unwrap();
        assert!(!l.success);
        assert_eq!(
            (l.account.as_str(), l.remote_ip.as_deref(), l.remote_port),
            ("bob", Some("203.0.113.9"), Some(4022))
        );
        assert_eq!(
            (l.logon_type, l.failure_reason),
            ("Network", Some("UnknownUser"))
        );
        let l = logon("<38>Dec  2 00:00:01 sshd[5]: Accepted password for alice from 2001:db8::1 port 22 ssh2").unwrap();
        assert!(l.success && l.remote_ip.as_deref() == Some("2001:db8::1"));
        let l = logon("<85>Dec  2 00:00:01 sudo[9]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id").unwrap();
        assert!(l.success && l.account == "root" && l.by.as_deref() == Some("alice"));
        let l = logon("<85>Dec  2 00:00:01 sudo[9]:    alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/sh").unwrap();
        assert!(!l.success);
        assert!(
            logon(
                "<85>Dec  2 00:00:01 sudo[9]: pam_unix(sudo:session): session closed for user root"
            )
            .is_none()
        );
        let l = logon("<38>Dec  2 00:00:01 login[3]: FAILED LOGIN (1) on '/dev/tty1' FOR 'alice', Authentication failure").unwrap();
        assert!(!l.success && l.account == "alice" && l.terminal.as_deref() == Some("/dev/tty1"));
    }

    #[test]
    fn socket_receives_what_programs_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        // A socket left behind by a dead syslog daemon is taken over.
        drop(UnixDatagram::bind(&path).unwrap());
        assert!(path.exists() && !is_served(&path));
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn(
            LogonSource::SyslogSocket(path.clone()),
            tx,
            Arc::clone(&stop),
        )
        .unwrap()
        .unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client
            .send_to(b"<13>Dec  2 00:00:01 logger: unrelated", &path)
            .unwrap();
        client
            .send_to(
                b"<37>Dec  2 00:25:50 su[42]: FAILED SU (to root) nobody on none",
                &path,
            )
            .unwrap();
        let l = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((l.pid, l.success), (Some(42), false));
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        assert!(!path.exists(), "the socket is removed on stop");
    }
}
