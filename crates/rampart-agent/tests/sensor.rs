//! The kernel sensor on the real kernel: a shell script's process, file and network activity
//! comes back as the expected events. Needs root and BPF; without them the live test prints why
//! and passes, unless RAMPART_REQUIRE_DATA=1 (CI), where it fails.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use rampart_agent::hashes::FileVersion;
use rampart_agent::sensor::{
    Decoder, FILE_CREATED, Net, Protocol, Sensor, SensorConfig, SensorEvent, Task,
};

fn task(event: &SensorEvent) -> &Task {
    match event {
        SensorEvent::Exec { task, .. }
        | SensorEvent::Fork { task }
        | SensorEvent::Exit { task, .. }
        | SensorEvent::FileWriteClose { task, .. }
        | SensorEvent::FileDelete { task, .. }
        | SensorEvent::FileRename { task, .. }
        | SensorEvent::FileChmod { task, .. }
        | SensorEvent::Connect { task, .. }
        | SensorEvent::Accept { task, .. }
        | SensorEvent::Listen { task, .. }
        | SensorEvent::ModuleLoad { task, .. }
        | SensorEvent::Ptrace { task, .. }
        | SensorEvent::SetId { task, .. } => task,
    }
}

/// The started sensor, or None (after saying why) where BPF cannot run and no data is required.
fn start(config: &SensorConfig) -> Option<Sensor> {
    let required = std::env::var("RAMPART_REQUIRE_DATA").is_ok_and(|v| v == "1");
    // SAFETY: geteuid has no preconditions.
    let outcome = if unsafe { libc::geteuid() } != 0 {
        Err("not running as root".to_string())
    } else {
        Sensor::start(config).map_err(|e| e.to_string())
    };
    match outcome {
        Ok(sensor) => Some(sensor),
        Err(reason) if required => {
            panic!("RAMPART_REQUIRE_DATA=1 but the sensor cannot start: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping the live sensor test: {reason}");
            None
        }
    }
}

const SCRIPT: &str = r#"set -e
cd "$DIR"
/bin/echo one 'two words' > /dev/null
echo data > f.txt
echo more >> f.txt
mv f.txt g.txt
chmod 600 g.txt
rm g.txt
mkdir sub
rmdir sub
# A file still open at exit (no close()) is reported by the exit sweep.
perl -MPOSIX -e 'open(my $f, ">", "kept.txt") or die; syswrite($f, "abc"); POSIX::_exit(0)'
perl -MIO::Socket::IP -e 'IO::Socket::IP->new(PeerAddr => $ENV{TCP}, Proto => "tcp") or die "tcp: $@"'
perl -MIO::Socket::IP -e 'IO::Socket::IP->new(PeerAddr => $ENV{UDP}, Proto => "udp") or die "udp: $@"'
perl -MIO::Socket::IP -e '
  my $l = IO::Socket::IP->new(LocalHost => $ENV{LISTEN_HOST}, LocalPort => 0, Listen => 1) or die "listen: $@";
  my $c = IO::Socket::IP->new(PeerHost => $ENV{LISTEN_HOST}, PeerPort => $l->sockport, Proto => "tcp") or die "connect: $@";
  $l->accept or die "accept: $!"'
# Executables without a name on disk, run through /proc/self/fd: a memfd, and an unlinked file.
perl -e 'my $name = "payload"; my $fd = syscall($ENV{NR_MEMFD_CREATE}, $name, 0);
  $fd >= 0 or die "memfd: $!";
  open(my $m, ">&=", $fd) or die; open(my $t, "<", "/bin/true") or die; local $/;
  syswrite($m, <$t>); exec {"/proc/self/fd/$fd"} "fileless" or die "exec: $!"'
cp /bin/true gone
perl -e 'open(my $f, "<", "gone") or die; unlink "gone" or die;
  exec {"/proc/self/fd/" . fileno($f)} "deleted" or die "exec: $!"'
perl -e 'syscall($ENV{NR_SETUID}, 0) == 0 or die "setuid: $!"'
sleep 30 &
T=$!
# Attach only once the child runs sleep: attached earlier, it stops before its exec.
until read c </proc/$T/comm && [ "$c" = sleep ]; do :; done
T=$T perl -e 'syscall($ENV{NR_PTRACE}, 16, 0 + $ENV{T}, 0, 0) == 0 or die "ptrace: $!"'
{ kill -9 $! && wait $!; } 2>/dev/null || true
"#;

/// Everything the script's processes reported, until the shell's exit.
fn collect(sensor: &mut Sensor, shell: u32) -> Vec<SensorEvent> {
    let mut ours: HashSet<u32> = HashSet::from([shell]);
    let mut events = Vec::new();
    let mut others = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = false;
    while !done && Instant::now() < deadline {
        let polled = sensor.poll(Duration::from_millis(200), &mut |event| {
            let t = task(&event);
            if let SensorEvent::Fork { task } = &event
                && ours.contains(&task.ppid)
            {
                ours.insert(task.tgid);
            }
            if ours.contains(&t.tgid) {
                done |= matches!(&event, SensorEvent::Exit { task, .. } if task.tgid == shell);
                events.push(event);
            } else {
                others.push(event);
            }
        });
        polled.expect("poll");
    }
    assert!(
        done,
        "no exit of the shell {shell} within 30 s; got {events:#?}"
    );
    let me = std::process::id();
    let own: Vec<_> = others.iter().filter(|e| task(e).tgid == me).collect();
    assert!(
        own.is_empty(),
        "the ignored test process was reported: {own:#?}"
    );
    events
}

fn net_events<'a>(
    events: &'a [SensorEvent],
    want: fn(&'a SensorEvent) -> Option<&'a Net>,
) -> Vec<&'a Net> {
    events.iter().filter_map(want).collect()
}

#[test]
fn live_kernel_events_of_a_shell_script() {
    let Some(mut sensor) = start(&SensorConfig::default()) else {
        return;
    };
    let all_attached = sensor.programs();
    assert!(
        !all_attached.is_empty() && all_attached.iter().all(|(_, up)| *up),
        "{all_attached:?}"
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().canonicalize().expect("canonical tempdir");
    let dir_s = dir.to_str().expect("utf-8 tempdir").to_string();
    let at = |name: &str| format!("{dir_s}/{name}");
    // The test's own write: in-kernel filtering must drop it.
    std::fs::write(dir.join("own.txt"), b"x").expect("write");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp listener");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let tcp_addr = tcp.local_addr().expect("addr");
    let udp_addr = udp.local_addr().expect("addr");
    let listen_host = if TcpListener::bind("[::1]:0").is_ok() {
        "::1"
    } else {
        "127.0.0.1"
    };

    let mut child = Command::new("/bin/sh")
        .args(["-c", SCRIPT])
        .env("DIR", &dir)
        .env("TCP", tcp_addr.to_string())
        .env("UDP", udp_addr.to_string())
        .env("LISTEN_HOST", listen_host)
        .env("NR_MEMFD_CREATE", libc::SYS_memfd_create.to_string())
        .env("NR_SETUID", libc::SYS_setuid.to_string())
        .env("NR_PTRACE", libc::SYS_ptrace.to_string())
        .spawn()
        .expect("spawn /bin/sh");
    let shell = child.id();
    let events = collect(&mut sensor, shell);
    assert!(child.wait().expect("wait").success(), "the script failed");

    // The shell's own exec gives its start time, which its children see as parent_start_ns.
    let shell_start = events
        .iter()
        .find_map(|e| match e {
            SensorEvent::Exec { task, filename, .. }
                if task.tgid == shell && filename == "/bin/sh" =>
            {
                Some(task.start_ns)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no exec of /bin/sh; got {events:#?}"));

    let echo = events
        .iter()
        .find_map(|e| match e {
            SensorEvent::Exec {
                task,
                filename,
                argv,
                argv_truncated,
                cwd,
                inode,
                dev,
                version,
                ..
            } if filename == "/bin/echo" => {
                Some((task, argv, *argv_truncated, cwd, (*inode, *dev), *version))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no exec of /bin/echo; got {events:#?}"));
    let (echo_task, argv, truncated, cwd, (inode, dev), version) = echo;
    assert_eq!(argv, &["/bin/echo", "one", "two words"]);
    assert!(!truncated);
    assert_eq!(cwd, &dir_s);
    assert_eq!(echo_task.ppid, shell);
    assert_eq!(echo_task.parent_start_ns, shell_start);
    assert_eq!(echo_task.comm, "echo");
    let meta = std::fs::metadata("/bin/echo").expect("stat /bin/echo");
    assert_eq!((inode, dev), (meta.ino(), meta.dev()), "exe inode/dev");
    // Size and times read from the mapped inode: the version a stat gives.
    assert_eq!(version, Some(FileVersion::of(&meta)), "exe version");
    let age = chrono::Utc::now() - echo_task.time;
    assert!(
        age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::seconds(60),
        "time {}",
        echo_task.time
    );

    let written: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SensorEvent::FileWriteClose {
                path, flags, size, ..
            } => Some((path.as_str(), *flags, *size)),
            _ => None,
        })
        .collect();
    let create = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32;
    let f: Vec<_> = written.iter().filter(|(p, ..)| *p == at("f.txt")).collect();
    assert!(
        f.first()
            .is_some_and(|(_, flags, _)| flags & create == create),
        "{written:?}"
    );
    // The first open created the file, the append (O_CREAT too) found it there.
    assert_eq!(f.len(), 2, "{written:?}");
    assert_ne!(f[0].1 & FILE_CREATED, 0, "{written:?}");
    assert_eq!(f[1].1 & FILE_CREATED, 0, "{written:?}");
    assert_ne!(f[1].1 & libc::O_CREAT as u32, 0);
    let kept = written.iter().find(|(p, ..)| *p == at("kept.txt"));
    assert!(
        kept.is_some_and(|(_, flags, size)| flags & create == create && *size == 3),
        "exit sweep: {written:?}"
    );
    assert!(!written.iter().any(|(p, ..)| *p == at("own.txt")));

    assert!(events.iter().any(|e| matches!(e, SensorEvent::FileRename { from, to, .. } if *from == at("f.txt") && *to == at("g.txt"))), "rename: {events:#?}");
    assert!(events.iter().any(|e| matches!(e, SensorEvent::FileChmod { path, mode, .. } if *path == at("g.txt") && *mode == 0o600)), "chmod: {events:#?}");
    assert!(events.iter().any(|e| matches!(e, SensorEvent::FileDelete { path, dir: false, .. } if *path == at("g.txt"))), "unlink: {events:#?}");
    assert!(
        events.iter().any(
            |e| matches!(e, SensorEvent::FileDelete { path, dir: true, .. } if *path == at("sub"))
        ),
        "rmdir: {events:#?}"
    );

    let connects: Vec<(&Net, i32)> = events
        .iter()
        .filter_map(|e| match e {
            SensorEvent::Connect { net, result, .. } => Some((net, *result)),
            _ => None,
        })
        .collect();
    let loopback4 = |a: SocketAddr| a.ip() == IpAddr::from([127, 0, 0, 1]) && a.port() != 0;
    let tcp_connect = connects
        .iter()
        .find(|(n, _)| n.remote == tcp_addr && n.protocol == Protocol::Tcp);
    assert!(
        tcp_connect.is_some_and(|(n, r)| *r == 0 && loopback4(n.local)),
        "tcp connect: {connects:?}"
    );
    let udp_connect = connects
        .iter()
        .find(|(n, _)| n.remote == udp_addr && n.protocol == Protocol::Udp);
    assert!(
        udp_connect.is_some_and(|(n, r)| *r == 0 && loopback4(n.local)),
        "udp connect: {connects:?}"
    );

    // The last perl listens, connects to itself and accepts: all three ends must agree.
    let listens = net_events(&events, |e| match e {
        SensorEvent::Listen { net, .. } => Some(net),
        _ => None,
    });
    let [listen] = listens[..] else {
        panic!("listens: {listens:?}")
    };
    let host: IpAddr = listen_host.parse().expect("ip");
    assert_eq!((listen.local.ip(), listen.protocol), (host, Protocol::Tcp));
    assert_ne!(listen.local.port(), 0);
    let to_listener = connects
        .iter()
        .find(|(n, _)| n.remote == listen.local)
        .unwrap_or_else(|| panic!("{connects:?}"));
    assert_eq!(to_listener.1, 0);
    let accepts = net_events(&events, |e| match e {
        SensorEvent::Accept { net, .. } => Some(net),
        _ => None,
    });
    let [accept] = accepts[..] else {
        panic!("accepts: {accepts:?}")
    };
    assert_eq!(
        (accept.local, accept.remote, accept.protocol),
        (listen.local, to_listener.0.local, Protocol::Tcp)
    );

    let exit = events.iter().find_map(|e| match e {
        SensorEvent::Exit {
            task,
            exit_code,
            signal,
        } if task.tgid == shell => Some((*exit_code, *signal)),
        _ => None,
    });
    assert_eq!(exit, Some((0, 0)));

    let exe_flags = |arg0: &str| {
        events.iter().find_map(|e| match e {
            SensorEvent::Exec {
                argv,
                exe_deleted,
                exe_memfd,
                ..
            } if argv.first().is_some_and(|a| a == arg0) => Some((*exe_deleted, *exe_memfd)),
            _ => None,
        })
    };
    assert_eq!(exe_flags("fileless"), Some((true, true)), "memfd exec");
    assert_eq!(exe_flags("deleted"), Some((true, false)), "deleted exec");

    assert!(
        events.iter().any(|e| matches!(
            e,
            SensorEvent::SetId {
                call: "setuid",
                uid: 0,
                euid: 0,
                ..
            }
        )),
        "setuid: {events:#?}"
    );
    let sleeper = events.iter().find_map(|e| match e {
        SensorEvent::Exec { task, argv, .. } if argv == &["sleep", "30"] => Some(task.tgid),
        _ => None,
    });
    assert!(sleeper.is_some(), "no exec of sleep");
    assert!(
        events.iter().any(|e| matches!(e, SensorEvent::Ptrace { request: 16, target_pid, .. } if Some(*target_pid) == sleeper)),
        "ptrace: {events:#?}"
    );

    let lost = sensor.lost();
    assert_eq!(lost.total, lost.by_kind.iter().map(|(_, n)| n).sum::<u64>());
    assert!(lost.by_kind.iter().any(|(kind, _)| *kind == "exec"));
    drop(tmp);
    assert!(!Path::new(&dir_s).exists());
}

/// A non-blocking connect (`TcpStream::connect_timeout`) from a thread of its own: the thread
/// id, when the call began, and what it returned.
struct Attempt {
    tid: u32,
    began: DateTime<Utc>,
    took: Duration,
    outcome: std::io::Result<TcpStream>,
}

/// The name (comm) of the connecting threads.
const CONNECTOR: &str = "rampart-conn";

fn connect_in_thread(to: SocketAddr) -> thread::JoinHandle<Attempt> {
    let builder = thread::Builder::new().name(CONNECTOR.to_string());
    builder
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            let began = Utc::now();
            let start = Instant::now();
            let outcome = TcpStream::connect_timeout(&to, Duration::from_secs(10));
            Attempt {
                tid,
                began,
                took: start.elapsed(),
                outcome,
            }
        })
        .expect("spawn")
}

/// A loopback listener whose accept queue holds one connection, already taken by a blocking
/// connect from this thread: further SYNs are dropped until that one is accepted, and the
/// client retransmits its SYN a second later.
fn full_listener() -> (TcpListener, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    // listen() again on a listening socket only changes its backlog.
    // SAFETY: a valid socket descriptor owned by `listener`.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
    let filler = TcpStream::connect(listener.local_addr().expect("addr")).expect("filler");
    (listener, filler)
}

/// Non-blocking TCP connects (curl, browsers, Go, Rust's `connect_timeout`: connect() returns
/// EINPROGRESS) are reported once, with the handshake's outcome, for the connecting thread:
/// when the handshake ends inside the call (loopback: the reply is handled as connect()
/// releases the socket) and when it ends after it (a retransmitted SYN).
#[test]
fn nonblocking_connects_are_reported_with_their_outcome() {
    // The connects come from this process.
    let config = SensorConfig {
        ignore_tgid: 0,
        ..SensorConfig::default()
    };
    let Some(mut sensor) = start(&config) else {
        return;
    };
    let me = std::process::id();
    // SAFETY: gettid has no preconditions.
    let main_tid = unsafe { libc::gettid() } as u32;

    let open = TcpListener::bind("127.0.0.1:0").expect("listener");
    let open_addr = open.local_addr().expect("addr");
    let closed_addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (late, late_filler) = full_listener();
    let late_addr = late.local_addr().expect("addr");
    let (gone, gone_filler) = full_listener();
    let gone_addr = gone.local_addr().expect("addr");

    let fast_ok = connect_in_thread(open_addr).join().expect("thread");
    let fast_refused = connect_in_thread(closed_addr).join().expect("thread");
    let late_ok = connect_in_thread(late_addr);
    let late_refused = connect_in_thread(gone_addr);
    // Before the retransmission: room for the late connection, no listener for the other.
    thread::sleep(Duration::from_millis(300));
    let _accepted = late.accept().expect("accept");
    drop(gone);
    let late_ok = late_ok.join().expect("thread");
    let late_refused = late_refused.join().expect("thread");

    let stream = |a: &Attempt| match &a.outcome {
        Ok(s) => s.local_addr().expect("local addr"),
        Err(e) => panic!("connect from thread {}: {e}", a.tid),
    };
    let refused = |a: &Attempt| {
        let kind = a.outcome.as_ref().err().map(std::io::Error::kind);
        assert_eq!(kind, Some(ErrorKind::ConnectionRefused), "thread {}", a.tid);
    };
    let fast_ok_local = stream(&fast_ok);
    refused(&fast_refused);
    let late_ok_local = stream(&late_ok);
    refused(&late_refused);
    for a in [&late_ok, &late_refused] {
        assert!(
            a.took >= Duration::from_millis(500),
            "setup: the SYN of thread {} was not dropped ({:?})",
            a.tid,
            a.took
        );
    }

    // Every connect of this process to these ports, until the six expected ones and a little
    // longer (a duplicate would come late).
    let ports = [open_addr, closed_addr, late_addr, gone_addr];
    let mut connects: Vec<(Task, Net, i32)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut quiet_until = None;
    while quiet_until.is_none_or(|t| Instant::now() < t) && Instant::now() < deadline {
        let polled = sensor.poll(Duration::from_millis(100), &mut |event| {
            if let SensorEvent::Connect { task, net, result } = event
                && task.tgid == me
                && ports.contains(&net.remote)
            {
                connects.push((task, net, result));
            }
        });
        polled.expect("poll");
        if quiet_until.is_none() && connects.len() >= 6 {
            quiet_until = Some(Instant::now() + Duration::from_millis(500));
        }
    }
    let reported = |tid: u32, to: SocketAddr| -> (&Task, &Net, i32) {
        let found: Vec<_> = connects
            .iter()
            .filter(|(t, n, _)| t.pid == tid && n.remote == to)
            .collect();
        let [(task, net, result)] = found[..] else {
            panic!("connects of thread {tid} to {to}: {found:#?}; all: {connects:#?}")
        };
        assert_eq!(net.protocol, Protocol::Tcp);
        (task, net, *result)
    };
    assert_eq!(connects.len(), 6, "{connects:#?}");

    let (task, net, result) = reported(fast_ok.tid, open_addr);
    assert_eq!((result, net.local), (0, fast_ok_local), "{task:?}");
    assert_eq!(task.comm, CONNECTOR);

    let (_, net, result) = reported(fast_refused.tid, closed_addr);
    assert_eq!(result, -libc::ECONNREFUSED);
    assert_eq!(net.local.ip(), IpAddr::from([127, 0, 0, 1]), "{net:?}");

    // Reported when the retransmitted SYN got its answer, by the thread that connected.
    let (task, net, result) = reported(late_ok.tid, late_addr);
    assert_eq!((result, net.local), (0, late_ok_local));
    assert_eq!(task.comm, CONNECTOR);
    assert!(task.time - late_ok.began >= chrono::TimeDelta::milliseconds(500));
    let (task, net, result) = reported(late_refused.tid, gone_addr);
    assert_eq!(result, -libc::ECONNREFUSED);
    assert_eq!(net.local.ip(), IpAddr::from([127, 0, 0, 1]), "{net:?}");
    assert!(task.time - late_refused.began >= chrono::TimeDelta::milliseconds(500));

    // The blocking connects that filled the queues: as before, at the end of the call.
    for (filler, to) in [(&late_filler, late_addr), (&gone_filler, gone_addr)] {
        let (_, net, result) = reported(main_tid, to);
        assert_eq!((result, net.local), (0, filler.local_addr().expect("addr")));
    }
    drop(open);
}

/// A non-blocking IPv4 TCP socket and connect() on it: 0 or the errno.
struct RawSocket(OwnedFd);

impl RawSocket {
    fn new() -> RawSocket {
        // SAFETY: socket() has no memory preconditions.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor, owned by nothing else.
        RawSocket(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn connect(&self, to: SocketAddr) -> i32 {
        let SocketAddr::V4(to) = to else {
            panic!("{to} is not IPv4")
        };
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `sa` is a valid sockaddr_in of `len` bytes.
        let rc = unsafe { libc::connect(self.0.as_raw_fd(), (&raw const sa).cast(), len) };
        if rc == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        }
    }

    /// connect() again until it stops saying the handshake is running.
    fn outcome(&self, to: SocketAddr) -> i32 {
        for _ in 0..300 {
            match self.connect(to) {
                libc::EALREADY => thread::sleep(Duration::from_millis(10)),
                other => return other,
            }
        }
        panic!("connect to {to} still running after 3 s")
    }
}

/// connect() called again on a socket still connecting (the old way to learn the outcome)
/// reports nothing more; a socket closed before the handshake ended is reported as aborted.
#[test]
fn repeated_and_abandoned_connects_are_reported_once() {
    let config = SensorConfig {
        ignore_tgid: 0,
        ..SensorConfig::default()
    };
    let Some(mut sensor) = start(&config) else {
        return;
    };
    let me = std::process::id();
    let open = TcpListener::bind("127.0.0.1:0").expect("listener");
    let open_addr = open.local_addr().expect("addr");
    let closed_addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (full, _filler) = full_listener();
    let full_addr = full.local_addr().expect("addr");

    // The first call starts the handshake, the next ones learn its outcome (EALREADY while it
    // runs); one more finds the socket connected (EISCONN, a failed call of its own, reported
    // as before).
    let s = RawSocket::new();
    assert_eq!(s.connect(open_addr), libc::EINPROGRESS);
    assert_eq!(s.outcome(open_addr), 0);
    assert_eq!(s.connect(open_addr), libc::EISCONN);
    // After a refusal the call returning the error resets the socket: the next is a new attempt.
    let s = RawSocket::new();
    assert_eq!(s.connect(closed_addr), libc::EINPROGRESS);
    let refused = libc::ECONNREFUSED;
    assert_eq!(s.outcome(closed_addr), refused);
    assert_eq!(s.connect(closed_addr), libc::EINPROGRESS);
    // Given up before the (dropped) SYN was answered.
    let s = RawSocket::new();
    assert_eq!(s.connect(full_addr), libc::EINPROGRESS);
    thread::sleep(Duration::from_millis(100));
    drop(s);

    let mut results: Vec<(SocketAddr, i32)> = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let polled = sensor.poll(Duration::from_millis(100), &mut |event| {
            if let SensorEvent::Connect { task, net, result } = event
                && task.tgid == me
                && [open_addr, closed_addr, full_addr].contains(&net.remote)
            {
                results.push((net.remote, result));
            }
        });
        polled.expect("poll");
    }
    results.sort();
    let mut expected = vec![
        (open_addr, 0),
        (open_addr, -libc::EISCONN),
        (closed_addr, -refused),
        (closed_addr, -refused),
        (full_addr, 0), // the blocking connect filling the queue
        (full_addr, -libc::ECONNABORTED),
    ];
    expected.sort();
    assert_eq!(results, expected);
}

/// A burst larger than the ring buffer loses events and `lost()` counts them by kind; the path
/// filter keeps only file events under the configured prefix.
#[test]
fn overflow_is_counted_and_file_paths_are_filtered() {
    const FILES: u64 = 3000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().canonicalize().expect("canonical tempdir");
    let prefix = format!("{}/", dir.to_str().expect("utf-8 tempdir"));
    let config = SensorConfig {
        ring_buffer_bytes: 0, // the smallest: 64 KiB
        file_paths: vec![prefix.clone()],
        ..SensorConfig::default()
    };
    let Some(mut sensor) = start(&config) else {
        return;
    };
    // Nothing is polled during the burst, so the buffer fills after a few hundred records.
    let script =
        format!("cd \"$DIR\"; i=0; while [ $i -lt {FILES} ]; do echo $i > f$i; i=$((i+1)); done");
    let status = Command::new("/bin/sh")
        .args(["-c", &script])
        .env("DIR", &dir)
        .status()
        .expect("run /bin/sh");
    assert!(status.success());

    let (mut ours, mut outside) = (0u64, Vec::new());
    loop {
        let polled = sensor.poll(Duration::from_millis(100), &mut |event| match event {
            SensorEvent::FileWriteClose { path, .. } if path.starts_with(&prefix) => ours += 1,
            SensorEvent::FileWriteClose { path, .. }
            | SensorEvent::FileDelete { path, .. }
            | SensorEvent::FileChmod { path, .. } => outside.push(path),
            SensorEvent::FileRename { from, to, .. } => outside.push(format!("{from} -> {to}")),
            _ => {}
        });
        if polled.expect("poll") == 0 {
            break;
        }
    }
    assert!(
        outside.is_empty(),
        "file events outside {prefix}: {outside:?}"
    );
    let lost = sensor.lost();
    let lost_writes = lost
        .by_kind
        .iter()
        .find(|(kind, _)| *kind == "file_write_close")
        .map_or(0, |(_, n)| *n);
    assert!(ours > 0 && lost_writes > 0, "seen {ours}, lost {lost:?}");
    // Lost counts every process's events, so ours are all either seen or among them.
    assert!(ours + lost_writes >= FILES, "seen {ours}, lost {lost:?}");
}

/// Malformed records (any kind, any length, arbitrary bytes) are counted, never a panic.
#[test]
fn truncated_records_count_as_decode_errors() {
    let mut decoder = Decoder::new();
    let mut failures = 0u64;
    for kind in 0u32..16 {
        for len in 0usize..400 {
            let mut record: Vec<u8> = (0..len).map(|i| (i * 7 + kind as usize) as u8).collect();
            if len >= 8 {
                record[..4].copy_from_slice(&kind.to_ne_bytes());
                record[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
            }
            match decoder.decode(&record) {
                Ok(_) => assert!(len >= 96, "a {len}-byte record of kind {kind} decoded"),
                Err(_) => failures += 1,
            }
        }
    }
    assert_eq!(decoder.errors(), failures);
    // A header-only fork record is complete; one byte short is not.
    let mut fork = vec![0u8; 96];
    fork[..4].copy_from_slice(&2u32.to_ne_bytes());
    fork[4..8].copy_from_slice(&96u32.to_ne_bytes());
    assert!(matches!(
        decoder.decode(&fork),
        Ok(SensorEvent::Fork { .. })
    ));
    fork[4..8].copy_from_slice(&95u32.to_ne_bytes());
    assert!(decoder.decode(&fork[..95]).is_err());
    assert_eq!(decoder.errors(), failures + 1);
}
