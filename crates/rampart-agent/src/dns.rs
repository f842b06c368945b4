//! DNS queries and their answers, seen on the wire in userspace.
//!
//! One `AF_PACKET`/`SOCK_DGRAM` socket on every interface (loopback included): `SOCK_DGRAM`
//! hands over packets from the network header on, so no link layer (Ethernet, loopback, tun,
//! VLAN devices) needs parsing. A classic BPF program attached in the kernel keeps only UDP and
//! TCP packets from or to port 53 (IPv4 without fragments after the first, IPv6 with UDP or TCP
//! as the first next header) and drops loopback's outgoing copy of each packet (loopback shows
//! every packet twice: as sent and as received). Over TCP (zone transfers, answers retried after
//! a truncated one, resolvers that prefer it), each direction of a connection is put back in
//! order by sequence number and cut into messages at their two-byte length prefixes (RFC 7766).
//! Queries are held until their response comes back (matched by client address, port,
//! transaction id and question) or until a timeout, then handed over as one [`DnsExchange`].
//!
//! Not covered: DNS over TLS/HTTPS/QUIC (encrypted), mDNS/LLMNR (other ports), IPv6 packets
//! with extension headers, and which process asked (the wire does not say).
//!
//! Never panics on what it reads: every malformed packet is counted ([`DnsCapture::malformed`]),
//! and so is every TCP stream that could not be followed past a gap ([`DnsCapture::lost`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A query and what came back for it.
#[derive(Debug, Clone)]
pub struct DnsExchange {
    /// When the query was seen (the kernel's receive timestamp of the packet).
    pub time: DateTime<Utc>,
    /// The asking side (local to this machine usually).
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The question's name in lower case, without the final dot ("." for the root).
    pub query: String,
    /// "A", "AAAA", ..., "TYPE65534" for types without a name.
    pub query_type: String,
    /// "NOERROR", "NXDOMAIN", ...; None: no response within the timeout.
    pub rcode: Option<String>,
    /// The answer section as text: "A 93.184.216.34", "CNAME x.example.net", "MX 10 mx.example",
    /// `TXT "v=spf1 -all"`; at most [`MAX_ANSWERS`], each at most [`MAX_ANSWER_TEXT`] bytes.
    pub answers: Vec<String>,
    /// The response had the TC bit: the full answer is usually asked for again over TCP (a
    /// second exchange, with `over_tcp`).
    pub truncated: bool,
    /// Asked over TCP rather than UDP.
    pub over_tcp: bool,
}

/// Answers kept per response.
pub const MAX_ANSWERS: usize = 64;
/// Bytes of text kept per answer (TXT records can be long).
pub const MAX_ANSWER_TEXT: usize = 1024;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_PENDING: usize = 4096;
/// Packets read per [`DnsCapture::poll`] at most, so a flood cannot hold the agent's loop.
const MAX_PACKETS_PER_POLL: usize = 8192;
/// Requested socket receive buffer.
const RCVBUF: libc::c_int = 4 << 20;

// Linux ABI values (asm-generic; the same on x86 and arm).
const SO_ATTACH_FILTER: libc::c_int = 26;
const SO_RCVBUFFORCE: libc::c_int = 33;
const SO_TIMESTAMPNS: libc::c_int = 35;
const SOL_PACKET: libc::c_int = 263;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_OUTGOING: u8 = 4;
const ARPHRD_LOOPBACK: u16 = 772;
const ETH_P_ALL: u16 = 0x0003;

/// `struct tpacket_stats`.
#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    packets: u32,
    drops: u32,
}

/// Captures DNS over UDP on every interface.
pub struct DnsCapture {
    fd: OwnedFd,
    buf: Vec<u8>,
    tracker: Tracker,
    dropped: u64,
}

impl DnsCapture {
    /// Opens the capture (needs CAP_NET_RAW): queries unanswered after 5 s are handed over as
    /// such, at most 4096 wait for their answer.
    pub fn start() -> io::Result<DnsCapture> {
        DnsCapture::with_limits(DEFAULT_TIMEOUT, DEFAULT_MAX_PENDING)
    }

    /// [`DnsCapture::start`] with another timeout and bound on queries waiting for an answer.
    pub fn with_limits(timeout: Duration, max_pending: usize) -> io::Result<DnsCapture> {
        // Protocol 0: the socket receives nothing until bound, so no packet gets in before the
        // filter is attached.
        // SAFETY: plain syscalls on a descriptor we own.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned to us, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let program = filter();
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        setsockopt(&fd, libc::SOL_SOCKET, SO_ATTACH_FILTER, &fprog)?;
        if setsockopt(&fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, &RCVBUF).is_err() {
            // Without CAP_NET_ADMIN: as much as net.core.rmem_max allows.
            let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF);
        }
        setsockopt(&fd, libc::SOL_SOCKET, SO_TIMESTAMPNS, &1 as &libc::c_int)?;
        // SAFETY: an all-zero sockaddr_ll is valid; we fill the fields bind reads.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = 0;
        // SAFETY: `addr` is a sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DnsCapture {
            fd,
            buf: vec![0; 65536],
            tracker: Tracker::new(timeout, max_pending),
            dropped: 0,
        })
    }

    /// Reads what is waiting (never blocks) and hands over each finished exchange: a response
    /// matched to its query (by client address, port and transaction id), or a query left
    /// unanswered for the timeout (then `rcode` is None and `answers` empty).
    pub fn poll(&mut self, sink: &mut dyn FnMut(DnsExchange)) {
        for _ in 0..MAX_PACKETS_PER_POLL {
            match self.recv() {
                Ok(Some((len, time))) => {
                    let now = Instant::now();
                    self.tracker.ip_packet(now, time, &self.buf[..len], sink);
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // WouldBlock: nothing more waiting (or the socket failed).
            }
        }
        self.tracker.expire(Instant::now(), sink);
        self.read_stats();
    }

    /// Hands over every query still waiting as unanswered (at shutdown).
    pub fn flush(&mut self, sink: &mut dyn FnMut(DnsExchange)) {
        self.tracker.flush(sink);
    }

    /// DNS packets that could not be parsed (or only in part), since the start.
    pub fn malformed(&self) -> u64 {
        self.tracker.malformed
    }

    /// Packets the kernel dropped because the socket's buffer was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Responses to no query seen (sent before the capture started, or late), since the start.
    pub fn unmatched(&self) -> u64 {
        self.tracker.unmatched
    }

    /// TCP streams not followed past a gap (the capture missed a segment, or the streams'
    /// bytes were at their bound): the rest of those connections' messages is not seen.
    pub fn lost(&self) -> u64 {
        self.tracker.lost
    }

    /// Queries waiting for their answer.
    pub fn pending(&self) -> usize {
        self.tracker.pending.len()
    }

    /// One packet: Ok(Some((length, time))) for a packet to look at, Ok(None) for one to skip.
    fn recv(&mut self) -> io::Result<Option<(usize, DateTime<Utc>)>> {
        // SAFETY: zeroed sockaddr_ll and msghdr are valid; every pointer set below points at
        // memory that outlives the call, with its size.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: self.buf.len(),
        };
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &mut addr as *mut libc::sockaddr_ll as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: see above.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // The filter drops these already; kept in case it is ever loosened.
        if addr.sll_pkttype == PACKET_OUTGOING && addr.sll_hatype == ARPHRD_LOOPBACK {
            return Ok(None);
        }
        let mut time = None;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
        // msg_controllen; the timestamp is read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                if c.cmsg_level == libc::SOL_SOCKET
                    && c.cmsg_type == SO_TIMESTAMPNS
                    && c.cmsg_len as usize
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as u32) as usize
                {
                    let ts: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                    time = DateTime::from_timestamp(ts.tv_sec as i64, ts.tv_nsec as u32);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok(Some((
            (n as usize).min(self.buf.len()),
            time.unwrap_or_else(Utc::now),
        )))
    }

    fn read_stats(&mut self) {
        let mut stats = TpacketStats::default();
        let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: `stats` is a tpacket_stats of the size given; reading resets the kernel's count.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                &mut stats as *mut TpacketStats as *mut libc::c_void,
                &mut len,
            )
        };
        if rc == 0 {
            self.dropped += u64::from(stats.drops);
        }
    }
}

impl AsRawFd for DnsCapture {
    /// Readable when packets wait (for poll/epoll).
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The classic BPF program: UDP or TCP from or to port 53, offsets from the network header
/// (`SOCK_DGRAM`); loopback's outgoing copies dropped.
fn filter() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const LD_H_IND: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_IND) as u16;
    const LDX_MSH: u16 = (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16;
    const RSH: u16 = (libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const AD: u32 = libc::SKF_AD_OFF as u32;
    const UDP: u32 = libc::IPPROTO_UDP as u32;
    const TCP: u32 = libc::IPPROTO_TCP as u32;
    // (code, jump-if-true target, jump-if-false target, k); targets are instruction indexes,
    // turned into the relative offsets BPF wants below.
    const ACCEPT: u8 = 25;
    const REJECT: u8 = 26;
    #[rustfmt::skip]
    let program: [(u16, u8, u8, u32); 27] = [
        /*  0 */ (LD_W_ABS, 0, 0, AD + libc::SKF_AD_PKTTYPE as u32),
        /*  1 */ (JEQ, 2, 4, u32::from(PACKET_OUTGOING)),
        /*  2 */ (LD_W_ABS, 0, 0, AD + libc::SKF_AD_HATYPE as u32),
        /*  3 */ (JEQ, REJECT, 4, u32::from(ARPHRD_LOOPBACK)),
        /*  4 */ (LD_B_ABS, 0, 0, 0),
        /*  5 */ (RSH, 0, 0, 4),
        /*  6 */ (JEQ, 7, 17, 4),
        // IPv4: UDP or TCP, not a later fragment, port 53 either side (both put the ports first).
        /*  7 */ (LD_B_ABS, 0, 0, 9),
        /*  8 */ (JEQ, 10, 9, UDP),
        /*  9 */ (JEQ, 10, REJECT, TCP),
        /* 10 */ (LD_H_ABS, 0, 0, 6),
        /* 11 */ (JSET, REJECT, 12, 0x1fff),
        /* 12 */ (LDX_MSH, 0, 0, 0),
        /* 13 */ (LD_H_IND, 0, 0, 0),
        /* 14 */ (JEQ, ACCEPT, 15, 53),
        /* 15 */ (LD_H_IND, 0, 0, 2),
        /* 16 */ (JEQ, ACCEPT, REJECT, 53),
        // IPv6: UDP or TCP as the first next header, port 53 either side.
        /* 17 */ (JEQ, 18, REJECT, 6),
        /* 18 */ (LD_B_ABS, 0, 0, 6),
        /* 19 */ (JEQ, 21, 20, UDP),
        /* 20 */ (JEQ, 21, REJECT, TCP),
        /* 21 */ (LD_H_ABS, 0, 0, 40),
        /* 22 */ (JEQ, ACCEPT, 23, 53),
        /* 23 */ (LD_H_ABS, 0, 0, 42),
        /* 24 */ (JEQ, ACCEPT, REJECT, 53),
        /* 25 */ (RET, 0, 0, 65535),
        /* 26 */ (RET, 0, 0, 0),
    ];
    program
        .iter()
        .enumerate()
        .map(|(pc, &(code, jt, jf, k))| {
            let is_jump = code & 0x07 == libc::BPF_JMP as u16;
            let rel = |target: u8| if is_jump { target - pc as u8 - 1 } else { 0 };
            libc::sock_filter {
                code,
                jt: rel(jt),
                jf: rel(jf),
                k,
            }
        })
        .collect()
}

/// What identifies one query: the dedupe and matching key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    client: SocketAddr,
    server: SocketAddr,
    id: u16,
    /// Lower case.
    name: String,
    qtype: u16,
}

struct Pending {
    seq: u64,
    seen: Instant,
    time: DateTime<Utc>,
    over_tcp: bool,
}

/// Matches responses to queries; bounded.
struct Tracker {
    timeout: Duration,
    max_pending: usize,
    pending: HashMap<Key, Pending>,
    /// seq → key, oldest first.
    order: BTreeMap<u64, Key>,
    next_seq: u64,
    /// Queries finished lately: a copy of one seen late (another interface) is not a new query.
    recent: HashMap<Key, Instant>,
    recent_order: VecDeque<(Instant, Key)>,
    malformed: u64,
    /// Responses to no query seen (the capture started after it, or a second copy).
    unmatched: u64,
    /// DNS over TCP: each direction of each connection, by (sender, receiver).
    streams: HashMap<(SocketAddr, SocketAddr), Stream>,
    /// Bytes the streams hold, within `max_held` ([`MAX_HELD`]).
    held: usize,
    max_held: usize,
    last_sweep: Option<Instant>,
    /// TCP streams given up past a gap that did not fill.
    lost: u64,
}

/// How long a finished query's key keeps later copies of it out.
const RECENT_WINDOW: Duration = Duration::from_secs(1);
/// TCP connections followed at once; past this, the one silent longest is forgotten.
const MAX_STREAMS: usize = 1024;
/// A TCP connection silent this long is forgotten (one that ended without a FIN or RST seen).
const STREAM_IDLE: Duration = Duration::from_secs(60);
/// Segments held past a gap in a TCP stream, waiting for the missing one; past this the gap is
/// taken as lost (the capture missed it) and the rest of the connection is not followed.
const MAX_AHEAD: usize = 16;
/// Bytes all TCP streams together hold (partial messages, segments past a gap); a stream that
/// would take more is given up on, so many half-sent messages cannot grow the agent.
const MAX_HELD: usize = 8 << 20;

impl Tracker {
    fn new(timeout: Duration, max_pending: usize) -> Tracker {
        Tracker {
            timeout,
            max_pending: max_pending.max(1),
            pending: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            malformed: 0,
            unmatched: 0,
            streams: HashMap::new(),
            held: 0,
            max_held: MAX_HELD,
            last_sweep: None,
            lost: 0,
        }
    }

    /// One IP packet (network header first), as the filter passed it.
    fn ip_packet(
        &mut self,
        now: Instant,
        time: DateTime<Utc>,
        packet: &[u8],
        sink: &mut dyn FnMut(DnsExchange),
    ) {
        match parse_packet(packet) {
            Some(p) => match p.tcp {
                None => self.message(now, time, p.src, p.dst, p.payload, p.complete, false, sink),
                Some(tcp) => self.tcp_segment(now, time, &p, tcp, sink),
            },
            None => self.malformed += 1,
        }
    }

    /// One TCP segment: its bytes join their direction's stream, and each whole message in it
    /// is handled as one.
    fn tcp_segment(
        &mut self,
        now: Instant,
        time: DateTime<Utc>,
        p: &Packet,
        tcp: TcpHeader,
        sink: &mut dyn FnMut(DnsExchange),
    ) {
        let key = (p.src, p.dst);
        if tcp.rst {
            self.forget(&key);
            self.forget(&(p.dst, p.src));
            return;
        }
        // The SYN takes a sequence number of its own: data starts after it.
        let start = tcp.seq.wrapping_add(u32::from(tcp.syn));
        if tcp.syn || (!p.payload.is_empty() && !self.streams.contains_key(&key)) {
            // A new connection, or one that began before the capture: a message is assumed
            // to start here (RFC 7766 clients send whole messages; a wrong guess parses as
            // malformed).
            self.forget(&key);
            self.make_room(now);
            self.streams.insert(key, Stream::new(start, now));
        }
        let mut messages = Vec::new();
        if let Some(stream) = self.streams.get_mut(&key)
            && !p.payload.is_empty()
        {
            stream.seen = now;
            let before = stream.held();
            let room = self.max_held.saturating_sub(self.held) + before;
            if !stream.push(start, p.payload, p.complete, room) {
                self.lost += 1;
            }
            stream.take_messages(&mut messages);
            self.held = self.held - before + stream.held();
        }
        if tcp.fin {
            self.forget(&key);
        }
        for m in messages {
            self.message(now, time, p.src, p.dst, &m, true, true, sink);
        }
    }

    /// Forgets idle TCP streams, and the longest silent one when still at the bound.
    fn make_room(&mut self, now: Instant) {
        if self.streams.len() < MAX_STREAMS {
            return;
        }
        self.forget_idle(now);
        if self.streams.len() >= MAX_STREAMS
            && let Some(oldest) = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(k, _)| *k)
        {
            self.forget(&oldest);
        }
    }

    fn forget(&mut self, key: &(SocketAddr, SocketAddr)) {
        if let Some(s) = self.streams.remove(key) {
            self.held -= s.held();
        }
    }

    fn forget_idle(&mut self, now: Instant) {
        let mut freed = 0;
        self.streams.retain(|_, s| {
            let keep = now.duration_since(s.seen) < STREAM_IDLE;
            if !keep {
                freed += s.held();
            }
            keep
        });
        self.held -= freed;
    }

    /// One DNS message from `src` to `dst`; `complete`: the whole message was captured.
    #[allow(clippy::too_many_arguments)]
    fn message(
        &mut self,
        now: Instant,
        time: DateTime<Utc>,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        complete: bool,
        over_tcp: bool,
        sink: &mut dyn FnMut(DnsExchange),
    ) {
        self.expire(now, sink);
        let Some(msg) = parse_message(payload) else {
            self.malformed += 1;
            return;
        };
        if !msg.complete && complete {
            self.malformed += 1;
        }
        if !msg.response {
            let Some((name, qtype)) = msg.question else {
                self.malformed += 1;
                return;
            };
            self.query(now, time, src, dst, msg.id, name, qtype, over_tcp, sink);
        } else {
            self.response(now, src, dst, msg, sink);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn query(
        &mut self,
        now: Instant,
        time: DateTime<Utc>,
        client: SocketAddr,
        server: SocketAddr,
        id: u16,
        name: String,
        qtype: u16,
        over_tcp: bool,
        sink: &mut dyn FnMut(DnsExchange),
    ) {
        let key = Key {
            client,
            server,
            id,
            name,
            qtype,
        };
        if self.pending.contains_key(&key) || self.recent.contains_key(&key) {
            return; // The same packet again (another interface), or a retransmission.
        }
        while self.pending.len() >= self.max_pending {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(p) = self.pending.remove(&oldest) {
                self.finish(now, oldest, p, None, sink);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.pending.insert(
            key,
            Pending {
                seq,
                seen: now,
                time,
                over_tcp,
            },
        );
    }

    fn response(
        &mut self,
        now: Instant,
        server: SocketAddr,
        client: SocketAddr,
        msg: Message,
        sink: &mut dyn FnMut(DnsExchange),
    ) {
        let found = match &msg.question {
            Some((name, qtype)) => {
                let key = Key {
                    client,
                    server,
                    id: msg.id,
                    name: name.clone(),
                    qtype: *qtype,
                };
                if self.pending.contains_key(&key) {
                    Some(key)
                } else {
                    // Answered from another address than asked (multi-homed or anycast server).
                    self.pending
                        .keys()
                        .find(|k| {
                            k.client == client
                                && k.id == msg.id
                                && k.name == *name
                                && k.qtype == *qtype
                        })
                        .cloned()
                }
            }
            // No question echoed (FORMERR and the like): the client's port and id only.
            None => self
                .pending
                .iter()
                .filter(|(k, _)| k.client == client && k.id == msg.id)
                .min_by_key(|(_, p)| p.seq)
                .map(|(k, _)| k.clone()),
        };
        let Some(key) = found else {
            self.unmatched += 1;
            return;
        };
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        self.order.remove(&p.seq);
        self.finish(now, key, p, Some(msg), sink);
    }

    fn finish(
        &mut self,
        now: Instant,
        key: Key,
        p: Pending,
        msg: Option<Message>,
        sink: &mut dyn FnMut(DnsExchange),
    ) {
        let exchange = DnsExchange {
            time: p.time,
            client: key.client,
            server: key.server,
            query: key.name.clone(),
            query_type: type_name(key.qtype),
            rcode: msg.as_ref().map(|m| rcode_name(m.rcode)),
            truncated: msg.as_ref().is_some_and(|m| m.truncated),
            over_tcp: p.over_tcp,
            answers: msg.map(|m| m.answers).unwrap_or_default(),
        };
        // Remember it a little while, bounded like the pending queries.
        self.prune_recent(now);
        while self.recent_order.len() >= self.max_pending {
            if let Some((at, k)) = self.recent_order.pop_front()
                && self.recent.get(&k) == Some(&at)
            {
                self.recent.remove(&k);
            }
        }
        self.recent.insert(key.clone(), now);
        self.recent_order.push_back((now, key));
        sink(exchange);
    }

    fn prune_recent(&mut self, now: Instant) {
        while let Some((at, _)) = self.recent_order.front() {
            if now.duration_since(*at) < RECENT_WINDOW {
                break;
            }
            let Some((at, k)) = self.recent_order.pop_front() else {
                break;
            };
            if self.recent.get(&k) == Some(&at) {
                self.recent.remove(&k);
            }
        }
    }

    /// Hands over the queries unanswered for the timeout.
    fn expire(&mut self, now: Instant, sink: &mut dyn FnMut(DnsExchange)) {
        while let Some((_, key)) = self.order.first_key_value() {
            let Some(p) = self.pending.get(key) else {
                self.order.pop_first();
                continue;
            };
            if now.duration_since(p.seen) < self.timeout {
                break;
            }
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some(p) = self.pending.remove(&key) {
                self.finish(now, key, p, None, sink);
            }
        }
        self.prune_recent(now);
        if self
            .last_sweep
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            self.last_sweep = Some(now);
            self.forget_idle(now);
        }
    }

    fn flush(&mut self, sink: &mut dyn FnMut(DnsExchange)) {
        let now = Instant::now();
        while let Some((_, key)) = self.order.pop_first() {
            if let Some(p) = self.pending.remove(&key) {
                self.finish(now, key, p, None, sink);
            }
        }
    }
}

/// One direction of a TCP connection: its bytes put back in order and cut into messages, each
/// after its two-byte length.
struct Stream {
    /// The sequence number of the next byte expected.
    next: u32,
    /// Bytes in order that do not make a whole message yet.
    buf: Vec<u8>,
    /// Segments past a gap, waiting for it to fill: (sequence number, bytes).
    ahead: Vec<(u32, Vec<u8>)>,
    /// False once a gap was given up on: where messages start is unknown from then on.
    framed: bool,
    seen: Instant,
}

impl Stream {
    fn new(next: u32, now: Instant) -> Stream {
        Stream {
            next,
            buf: Vec::new(),
            ahead: Vec::new(),
            framed: true,
            seen: now,
        }
    }

    /// Adds a segment's bytes; false when this gives up on the stream (a gap that did not fill,
    /// bytes the capture cut, or more to hold than `room`).
    fn push(&mut self, seq: u32, data: &[u8], complete: bool, room: usize) -> bool {
        if !self.framed {
            return true; // Given up on already (and counted then).
        }
        let lost = !complete
            || self.held() + data.len() > room
            || (seq.wrapping_sub(self.next) as i32 > 0 && self.ahead.len() >= MAX_AHEAD);
        if lost {
            self.framed = false;
            self.buf = Vec::new();
            self.ahead = Vec::new();
            return false;
        }
        if seq.wrapping_sub(self.next) as i32 > 0 {
            self.ahead.push((seq, data.to_vec()));
            return true;
        }
        self.append(seq, data);
        // What waited past the gap may follow now.
        while let Some(i) = self
            .ahead
            .iter()
            .position(|(s, _)| s.wrapping_sub(self.next) as i32 <= 0)
        {
            let (s, d) = self.ahead.swap_remove(i);
            self.append(s, &d);
        }
        true
    }

    /// Appends what `data` (starting at or before `next`) has past `next`: a retransmission
    /// or an overlap adds nothing twice.
    fn append(&mut self, seq: u32, data: &[u8]) {
        let seen = self.next.wrapping_sub(seq) as usize;
        if let Some(new) = data.get(seen..).filter(|n| !n.is_empty()) {
            self.buf.extend_from_slice(new);
            self.next = self.next.wrapping_add(new.len() as u32);
        }
    }

    /// Bytes held: a partial message and segments past a gap.
    fn held(&self) -> usize {
        self.buf.len() + self.ahead.iter().map(|(_, d)| d.len()).sum::<usize>()
    }

    /// Moves every whole message into `out`.
    fn take_messages(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut at = 0;
        while let Some(len) = self
            .buf
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            && let Some(m) = self.buf.get(at + 2..at + 2 + len)
        {
            out.push(m.to_vec());
            at += 2 + len;
        }
        self.buf.drain(..at);
    }
}

/// What a captured packet carries to or from port 53.
struct Packet<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    /// The UDP payload, or the TCP segment's data.
    payload: &'a [u8],
    /// All of the payload was captured (not cut, not fragmented).
    complete: bool,
    /// None for UDP.
    tcp: Option<TcpHeader>,
}

#[derive(Debug, Clone, Copy)]
struct TcpHeader {
    seq: u32,
    syn: bool,
    fin: bool,
    rst: bool,
}

/// The UDP or TCP packet in an IPv4 or IPv6 packet; None when it is not a well-formed one.
fn parse_packet(packet: &[u8]) -> Option<Packet<'_>> {
    let version = packet.first()? >> 4;
    let (src, dst, protocol, body, ip_complete) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            if ihl < 20 || total < ihl || packet.len() < ihl {
                return None;
            }
            let flags = u16::from_be_bytes([packet[6], packet[7]]);
            if flags & 0x1fff != 0 {
                return None; // A later fragment: no UDP or TCP header.
            }
            let more_fragments = flags & 0x2000 != 0;
            // Short frames carry padding after the IP packet: cut at the IP length.
            let end = total.min(packet.len());
            let src = IpAddr::V4(Ipv4Addr::new(
                packet[12], packet[13], packet[14], packet[15],
            ));
            let dst = IpAddr::V4(Ipv4Addr::new(
                packet[16], packet[17], packet[18], packet[19],
            ));
            (
                src,
                dst,
                packet[9],
                &packet[ihl..end],
                end == total && !more_fragments,
            )
        }
        6 => {
            if packet.len() < 40 {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            let end = (40 + payload).min(packet.len());
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                packet[6],
                &packet[40..end],
                end == 40 + payload,
            )
        }
        _ => return None,
    };
    let port = |at: usize| Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let (sport, dport) = (port(0)?, port(2)?);
    let (payload, complete, tcp) = match i32::from(protocol) {
        libc::IPPROTO_UDP => {
            let ulen = usize::from(port(4)?);
            if ulen < 8 || body.len() < 8 {
                return None;
            }
            let end = ulen.min(body.len());
            (&body[8..end], ip_complete && end == ulen, None)
        }
        libc::IPPROTO_TCP => {
            let offset = usize::from(*body.get(12)? >> 4) * 4;
            if offset < 20 || body.len() < offset {
                return None;
            }
            let seq = u32::from_be_bytes(body[4..8].try_into().ok()?);
            let flags = body[13];
            let header = TcpHeader {
                seq,
                fin: flags & 0x01 != 0,
                syn: flags & 0x02 != 0,
                rst: flags & 0x04 != 0,
            };
            (&body[offset..], ip_complete, Some(header))
        }
        _ => return None,
    };
    Some(Packet {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        payload,
        complete,
        tcp,
    })
}

/// What the tracker needs of a DNS message.
#[derive(Debug)]
struct Message {
    id: u16,
    response: bool,
    truncated: bool,
    /// With the extended bits of an OPT record.
    rcode: u16,
    /// The first question: (name in lower case, type).
    question: Option<(String, u16)>,
    answers: Vec<String>,
    /// Every section parsed to the end.
    complete: bool,
}

/// Parses a DNS message. None when not even the header and the questions parse; past them,
/// what parses is kept and `complete` says whether everything did.
fn parse_message(data: &[u8]) -> Option<Message> {
    if data.len() < 12 {
        return None;
    }
    let word = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
    let id = word(0);
    let flags = word(2);
    let (qdcount, ancount, nscount, arcount) = (word(4), word(6), word(8), word(10));
    let mut msg = Message {
        id,
        response: flags & 0x8000 != 0,
        truncated: flags & 0x0200 != 0,
        rcode: flags & 0x000f,
        question: None,
        answers: Vec::new(),
        complete: false,
    };
    let mut pos = 12;
    for i in 0..qdcount {
        let (name, next) = read_name(data, pos)?;
        let qtype = u16::from_be_bytes([*data.get(next)?, *data.get(next + 1)?]);
        data.get(next + 3)?; // class
        pos = next + 4;
        if i == 0 {
            msg.question = Some((name, qtype));
        }
    }
    // A query's question is all that matters (and all it normally has).
    if !msg.response {
        msg.complete = true;
        return Some(msg);
    }
    for _ in 0..ancount {
        let Some((rr, next)) = read_record(data, pos) else {
            return Some(msg);
        };
        pos = next;
        if msg.answers.len() < MAX_ANSWERS
            && let Some(text) = answer_text(data, &rr)
        {
            msg.answers.push(text);
        }
    }
    for _ in 0..nscount {
        let Some((_, next)) = read_record(data, pos) else {
            return Some(msg);
        };
        pos = next;
    }
    for _ in 0..arcount {
        let Some((rr, next)) = read_record(data, pos) else {
            return Some(msg);
        };
        pos = next;
        if rr.rtype == 41 {
            // OPT: the TTL's top byte extends the rcode.
            msg.rcode |= ((rr.ttl >> 24) as u16) << 4;
        }
    }
    msg.complete = true;
    Some(msg)
}

/// One resource record's fixed fields; its data is `data[rdata.0..rdata.1]`.
struct Record {
    rtype: u16,
    ttl: u32,
    rdata: (usize, usize),
}

fn read_record(data: &[u8], pos: usize) -> Option<(Record, usize)> {
    let (_, next) = read_name(data, pos)?;
    let fixed = data.get(next..next + 10)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let start = next + 10;
    let end = start + rdlen;
    if end > data.len() {
        return None;
    }
    Some((
        Record {
            rtype,
            ttl,
            rdata: (start, end),
        },
        end,
    ))
}

/// An answer as "TYPE value"; None when its data does not parse.
fn answer_text(data: &[u8], rr: &Record) -> Option<String> {
    let (start, end) = rr.rdata;
    let rdata = &data[start..end];
    // A name inside rdata must end inside rdata (compression may point anywhere before).
    let name_at = |pos: usize| -> Option<(String, usize)> {
        let (name, next) = read_name(&data[..end], pos)?;
        Some((name, next))
    };
    let value = match rr.rtype {
        1 => {
            let a: [u8; 4] = rdata.try_into().ok()?;
            Ipv4Addr::from(a).to_string()
        }
        28 => {
            let a: [u8; 16] = rdata.try_into().ok()?;
            Ipv6Addr::from(a).to_string()
        }
        // NS, CNAME, PTR, DNAME
        2 | 5 | 12 | 39 => name_at(start)?.0,
        15 => {
            let pref = u16::from_be_bytes([*rdata.first()?, *rdata.get(1)?]);
            format!("{pref} {}", name_at(start + 2)?.0)
        }
        16 => {
            let mut out = String::new();
            let mut i = 0;
            while i < rdata.len() {
                let len = usize::from(rdata[i]);
                let s = rdata.get(i + 1..i + 1 + len)?;
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push('"');
                for &b in s {
                    match b {
                        b'"' | b'\\' => {
                            out.push('\\');
                            out.push(b as char);
                        }
                        0x20..=0x7e => out.push(b as char),
                        _ => out.push_str(&format!("\\{b:03}")),
                    }
                }
                out.push('"');
                i += 1 + len;
            }
            out
        }
        33 => {
            let f = rdata.get(..6)?;
            let word = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
            format!(
                "{} {} {} {}",
                word(0),
                word(2),
                word(4),
                name_at(start + 6)?.0
            )
        }
        6 => {
            let (mname, next) = name_at(start)?;
            let (rname, next) = name_at(next)?;
            let f = data.get(next..next + 20).filter(|_| next + 20 <= end)?;
            let n = |i: usize| u32::from_be_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
            format!(
                "{mname} {rname} {} {} {} {} {}",
                n(0),
                n(4),
                n(8),
                n(12),
                n(16)
            )
        }
        // Anything else in RFC 3597's generic form.
        _ => {
            let mut hex = String::with_capacity(rdata.len() * 2);
            for b in rdata.iter().take(MAX_ANSWER_TEXT / 2) {
                hex.push_str(&format!("{b:02x}"));
            }
            format!("\\# {} {hex}", rdata.len()).trim_end().to_string()
        }
    };
    let mut text = format!("{} {value}", type_name(rr.rtype));
    if text.len() > MAX_ANSWER_TEXT {
        let mut cut = MAX_ANSWER_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Some(text)
}

/// Reads a (possibly compressed) name at `pos`: (lower-case presentation form without the
/// final dot, "." for the root; the position after the name where it started).
fn read_name(data: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut after = None;
    let mut wire_len = 0usize;
    let mut jumps = 0;
    loop {
        let len = *data.get(pos)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    wire_len += 1;
                    break;
                }
                let label = data.get(pos + 1..pos + 1 + usize::from(len))?;
                wire_len += 1 + label.len();
                if wire_len > 255 {
                    return None;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &b in label {
                    match b {
                        b'.' | b'\\' => {
                            out.push('\\');
                            out.push(b as char);
                        }
                        0x21..=0x7e => out.push(b.to_ascii_lowercase() as char),
                        _ => out.push_str(&format!("\\{b:03}")),
                    }
                }
                pos += 1 + label.len();
            }
            0xc0 => {
                let target = usize::from(u16::from_be_bytes([len, *data.get(pos + 1)?]) & 0x3fff);
                // Only backwards, and not forever: no loops.
                jumps += 1;
                if target >= pos || jumps > 64 {
                    return None;
                }
                after.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return None, // Extended and reserved label types.
        }
    }
    if wire_len > 255 {
        return None;
    }
    if out.is_empty() {
        out.push('.');
    }
    Some((out, after.unwrap_or(pos + 1)))
}

/// The mnemonic of an RR type ("TYPE123" for those without one).
pub fn type_name(t: u16) -> String {
    let name = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        24 => "SIG",
        25 => "KEY",
        28 => "AAAA",
        29 => "LOC",
        33 => "SRV",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        39 => "DNAME",
        41 => "OPT",
        42 => "APL",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        49 => "DHCID",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        53 => "SMIMEA",
        55 => "HIP",
        59 => "CDS",
        60 => "CDNSKEY",
        61 => "OPENPGPKEY",
        62 => "CSYNC",
        63 => "ZONEMD",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        108 => "EUI48",
        109 => "EUI64",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        256 => "URI",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    name.to_string()
}

/// The mnemonic of a response code, extended codes included ("RCODE23" for unnamed ones).
pub fn rcode_name(rcode: u16) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        16 => "BADVERS",
        23 => "BADCOOKIE",
        _ => return format!("RCODE{rcode}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS message: header, one question, then `answers` as raw RR bytes.
    fn message(id: u16, flags: u16, name: &str, qtype: u16, answers: &[Vec<u8>]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&wire_name(name));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        for a in answers {
            m.extend_from_slice(a);
        }
        m
    }

    fn wire_name(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    /// An RR whose owner is a pointer to the question name (offset 12).
    fn rr(rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut r = vec![0xc0, 12];
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&300u32.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }

    fn ipv4_udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn answers_as_text_with_compression() {
        // www.example.com CNAME web.example.com (pointer into the question), A, AAAA, MX, TXT.
        let cname = [&[3u8, b'w', b'e', b'b'][..], &[0xc0, 16]].concat();
        let mx = [&[0u8, 10][..], &[2, b'm', b'x'], &[0xc0, 16]].concat();
        let txt = [&[5u8][..], b"v=a\"b", &[2], b"cd"].concat();
        let srv = [&[0u8, 1, 0, 2, 0x01, 0xbb][..], &[0xc0, 16]].concat();
        let m = message(
            7,
            0x8180,
            "www.Example.com",
            1,
            &[
                rr(5, &cname),
                rr(1, &[93, 184, 216, 34]),
                rr(28, &Ipv6Addr::LOCALHOST.octets()),
                rr(15, &mx),
                rr(16, &txt),
                rr(33, &srv),
                rr(99, &[1, 2]),
                rr(300, &[]),
            ],
        );
        let msg = parse_message(&m).unwrap();
        assert!(msg.response && msg.complete && !msg.truncated);
        assert_eq!(msg.question, Some(("www.example.com".into(), 1)));
        assert_eq!(rcode_name(msg.rcode), "NOERROR");
        assert_eq!(
            msg.answers,
            [
                "CNAME web.example.com",
                "A 93.184.216.34",
                "AAAA ::1",
                "MX 10 mx.example.com",
                "TXT \"v=a\\\"b\" \"cd\"",
                "SRV 1 2 443 example.com",
                "SPF \\# 2 0102",
                "TYPE300 \\# 0",
            ]
        );
    }

    #[test]
    fn extended_rcode_from_opt() {
        let mut m = message(1, 0x8180, "x.test", 1, &[]);
        m[11] = 1; // arcount
        // OPT: root owner, type 41, class 1232, TTL with extended rcode 1 (→ 16 BADVERS).
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 1, 0, 0, 0, 0, 0]);
        let msg = parse_message(&m).unwrap();
        assert_eq!(rcode_name(msg.rcode), "BADVERS");
    }

    #[test]
    fn names_with_loops_or_forward_pointers_are_refused() {
        // A pointer to itself.
        let mut m = message(1, 0x0100, "a.test", 1, &[]);
        m.truncate(12);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_message(&m).is_none());
        // A forward pointer.
        m.truncate(12);
        m.extend_from_slice(&[0xc0, 14, 0, 1, 0, 1, 0]);
        assert!(parse_message(&m).is_none());
        // Names longer than 255 octets.
        let long = vec!["a".repeat(63); 5].join(".");
        assert!(parse_message(&message(1, 0x0100, &long, 1, &[])).is_none());
        // Label escaping.
        let mut m = message(1, 0x0100, "x", 1, &[]);
        m.splice(13..14, [b'.']);
        assert_eq!(parse_message(&m).unwrap().question.unwrap().0, "\\.");
        assert_eq!(read_name(&[0], 0), Some((".".into(), 1)));
    }

    /// Every prefix and many byte flips of valid packets: no panic, and whatever does not
    /// parse counts as malformed.
    #[test]
    fn malformed_packets_never_panic() {
        let answer = message(
            9,
            0x8180,
            "a.b.test",
            1,
            &[rr(1, &[1, 2, 3, 4]), rr(5, &[0xc0, 12])],
        );
        let packet = ipv4_udp([10, 0, 0, 1], 53, [10, 0, 0, 2], 4444, &answer);
        let mut tracker = Tracker::new(Duration::from_secs(5), 16);
        let now = Instant::now();
        let mut sink = |_: DnsExchange| {};
        for len in 0..packet.len() {
            tracker.ip_packet(now, Utc::now(), &packet[..len], &mut sink);
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut p = packet.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % p.len() as u64) as usize;
                p[i] = (seed >> 32) as u8;
            }
            tracker.ip_packet(now, Utc::now(), &p, &mut sink);
            let _ = parse_message(&p[28..]);
        }
        assert!(tracker.malformed > 0);
    }

    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;

    fn ipv4_tcp(
        (src, sport): ([u8; 4], u16),
        (dst, dport): ([u8; 4], u16),
        seq: u32,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let total = 20 + 20 + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// A message after its two-byte length, as DNS over TCP sends it.
    fn framed(m: &[u8]) -> Vec<u8> {
        [&(m.len() as u16).to_be_bytes()[..], m].concat()
    }

    /// A TCP connection's two directions as the capture sees them.
    struct Conn {
        client: ([u8; 4], u16),
        server: ([u8; 4], u16),
        client_seq: u32,
        server_seq: u32,
    }

    impl Conn {
        fn new(port: u16, client_isn: u32, server_isn: u32) -> Conn {
            Conn {
                client: ([10, 0, 0, 1], port),
                server: ([10, 0, 0, 53], 53),
                client_seq: client_isn,
                server_seq: server_isn,
            }
        }

        fn open(&mut self) -> [Vec<u8>; 2] {
            let syn = ipv4_tcp(self.client, self.server, self.client_seq, SYN, &[]);
            let syn_ack = ipv4_tcp(self.server, self.client, self.server_seq, SYN | ACK, &[]);
            self.client_seq = self.client_seq.wrapping_add(1);
            self.server_seq = self.server_seq.wrapping_add(1);
            [syn, syn_ack]
        }

        /// The client's next segment of `data` bytes.
        fn ask(&mut self, data: &[u8]) -> Vec<u8> {
            let p = ipv4_tcp(self.client, self.server, self.client_seq, ACK, data);
            self.client_seq = self.client_seq.wrapping_add(data.len() as u32);
            p
        }

        fn ask_fin(&mut self) -> Vec<u8> {
            ipv4_tcp(self.client, self.server, self.client_seq, ACK | FIN, &[])
        }

        fn answer(&mut self, data: &[u8], flags: u8) -> Vec<u8> {
            let p = ipv4_tcp(self.server, self.client, self.server_seq, ACK | flags, data);
            self.server_seq = self.server_seq.wrapping_add(data.len() as u32);
            p
        }
    }

    fn feed(tracker: &mut Tracker, packets: &[Vec<u8>], got: &mut Vec<DnsExchange>) {
        for p in packets {
            tracker.ip_packet(Instant::now(), Utc::now(), p, &mut |e| got.push(e));
        }
    }

    #[test]
    fn tcp_streams_in_order_split_pipelined_and_retransmitted() {
        let mut tracker = Tracker::new(Duration::from_secs(5), 64);
        let mut got = Vec::new();
        // Sequence numbers that wrap around in the middle of the exchange.
        let mut c = Conn::new(40000, u32::MAX - 10, u32::MAX - 3);
        let q1 = framed(&message(1, 0x0100, "one.test", 1, &[]));
        let q2 = framed(&message(2, 0x0100, "two.test", 28, &[]));
        let q3 = framed(&message(3, 0x0100, "three.test", 1, &[]));
        let r1 = framed(&message(
            1,
            0x8180,
            "one.test",
            1,
            &[rr(1, &[192, 0, 2, 1])],
        ));
        let r2 = framed(&message(2, 0x8183, "two.test", 28, &[]));
        let r3 = framed(&message(
            3,
            0x8180,
            "three.test",
            1,
            &[rr(1, &[192, 0, 2, 3])],
        ));
        let mut packets = c.open().to_vec();
        // q1 in two segments, the second captured first; then the first sent again.
        let first = c.ask(&q1[..5]);
        let second = c.ask(&q1[5..]);
        packets.extend([second, first.clone(), first]);
        // q2 and q3 pipelined in one segment.
        packets.push(c.ask(&[q2.clone(), q3.clone()].concat()));
        // The answers: r1 and the start of r2 in one segment, the rest with r3 in the next.
        let answers = [r1, r2, r3].concat();
        let cut = q1.len() + 3;
        packets.push(c.answer(&answers[..cut], 0));
        packets.push(c.answer(&answers[cut..], FIN));
        feed(&mut tracker, &packets, &mut got);
        let summary: Vec<_> = got
            .iter()
            .map(|e| {
                (
                    e.query.as_str(),
                    e.rcode.as_deref(),
                    e.answers.clone(),
                    e.over_tcp,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "one.test",
                    Some("NOERROR"),
                    vec!["A 192.0.2.1".to_string()],
                    true
                ),
                ("two.test", Some("NXDOMAIN"), vec![], true),
                (
                    "three.test",
                    Some("NOERROR"),
                    vec!["A 192.0.2.3".to_string()],
                    true
                ),
            ]
        );
        assert_eq!(
            (tracker.malformed, tracker.lost, tracker.unmatched),
            (0, 0, 0)
        );
        // The server's FIN ended its direction; the client's stays until its own FIN.
        assert_eq!(tracker.streams.len(), 1);
        feed(&mut tracker, &[c.ask_fin()], &mut got);
        assert!(tracker.streams.is_empty() && tracker.held == 0);
    }

    #[test]
    fn tcp_gaps_joins_and_bounds() {
        let mut tracker = Tracker::new(Duration::from_secs(5), 64);
        let mut got = Vec::new();
        // Joined mid-connection (no SYN seen): a message is assumed to start there.
        let mut c = Conn::new(40001, 7000, 9000);
        let q = framed(&message(9, 0x0100, "late.test", 1, &[]));
        let r = framed(&message(9, 0x8183, "late.test", 1, &[]));
        feed(&mut tracker, &[c.ask(&q), c.answer(&r, 0)], &mut got);
        assert_eq!(got.len(), 1);
        assert!(got[0].over_tcp);

        // A gap that never fills: the stream is given up on, once, and counted.
        let missing = c.ask(&q);
        let mut later = Vec::new();
        for i in 0..=MAX_AHEAD {
            later.push(c.ask(&framed(&message(100 + i as u16, 0x0100, "x.test", 1, &[]))));
        }
        feed(&mut tracker, &later, &mut got);
        assert_eq!(tracker.lost, 1);
        feed(&mut tracker, &[missing, c.ask(&q)], &mut got);
        assert_eq!(got.len(), 1, "nothing framed from a stream given up on");
        assert_eq!(tracker.lost, 1);
        assert_eq!(tracker.held, 0);
        // The connection reset, and a new one on the same ports works again.
        feed(&mut tracker, &[c.answer(&[], RST)], &mut got);
        assert!(tracker.streams.is_empty());
        let mut c = Conn::new(40001, 1, 1);
        let q = framed(&message(10, 0x0100, "again.test", 1, &[]));
        let r = framed(&message(10, 0x8183, "again.test", 1, &[]));
        let mut packets = c.open().to_vec();
        packets.extend([c.ask(&q), c.answer(&r, 0)]);
        feed(&mut tracker, &packets, &mut got);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].query, "again.test");

        // The bound on held bytes, over all streams: the stream that would pass it is given
        // up on.
        tracker.max_held = 100;
        let mut big = Conn::new(40002, 1, 1);
        let q = framed(&message(11, 0x0100, &"y".repeat(60), 1, &[]));
        let mut packets = big.open().to_vec();
        packets.extend([big.ask(&q[..60]), big.ask(&q[60..])]);
        feed(&mut tracker, &packets[..3], &mut got);
        assert_eq!((tracker.held, tracker.lost), (60, 1));
        let mut other = Conn::new(40003, 1, 1);
        let mut partial = other.open().to_vec();
        partial.push(other.ask(&[[0u8, 200].as_slice(), &[7; 40]].concat()));
        feed(&mut tracker, &partial, &mut got);
        assert_eq!((tracker.held, tracker.lost), (60, 2));
        feed(&mut tracker, &packets[3..], &mut got);
        assert_eq!(tracker.held, 0);
        assert_eq!(tracker.pending.len(), 1, "the whole message was read");
        assert_eq!(tracker.malformed, 0);
    }

    #[test]
    fn matching_dedupe_timeout_and_bound() {
        let client = [10, 0, 0, 1];
        let server = [10, 0, 0, 53];
        let q = ipv4_udp(
            client,
            40000,
            server,
            53,
            &message(5, 0x0100, "a.test", 1, &[]),
        );
        let r = ipv4_udp(
            server,
            53,
            client,
            40000,
            &message(5, 0x8183, "a.test", 1, &[]),
        );
        let mut tracker = Tracker::new(Duration::from_secs(5), 2);
        let mut got = Vec::new();
        let t0 = Instant::now();
        // Every packet twice, as on a bridge and its port.
        for p in [&q, &q, &r, &r, &q] {
            tracker.ip_packet(t0, Utc::now(), p, &mut |e| got.push(e));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].query, "a.test");
        assert_eq!(got[0].rcode.as_deref(), Some("NXDOMAIN"));
        assert_eq!(got[0].client, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(tracker.unmatched, 1);
        // Ethernet padding after a short packet is not part of it.
        let mut padded = ipv4_udp(
            client,
            40001,
            server,
            53,
            &message(6, 0x0100, "b.test", 28, &[]),
        );
        padded.extend_from_slice(&[0; 20]);
        tracker.ip_packet(t0, Utc::now(), &padded, &mut |e| got.push(e));
        assert_eq!(tracker.malformed, 0);
        // Unanswered after the timeout.
        tracker.expire(t0 + Duration::from_secs(6), &mut |e| got.push(e));
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].query.as_str(), got[1].query_type.as_str()),
            ("b.test", "AAAA")
        );
        assert!(got[1].rcode.is_none() && got[1].answers.is_empty());
        // The bound: a third pending query pushes the oldest out as unanswered.
        for (i, name) in ["c.test", "d.test", "e.test"].iter().enumerate() {
            let p = ipv4_udp(
                client,
                41000 + i as u16,
                server,
                53,
                &message(1, 0, name, 1, &[]),
            );
            tracker.ip_packet(t0, Utc::now(), &p, &mut |e| got.push(e));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].query, "c.test");
        assert_eq!(tracker.pending.len(), 2);
        assert_eq!(tracker.order.len(), 2);
        tracker.flush(&mut |e| got.push(e));
        assert_eq!(got.len(), 5);
        assert!(tracker.pending.is_empty() && tracker.order.is_empty());
    }

    #[test]
    fn ipv6_and_server_answering_from_another_address() {
        let q = message(77, 0x0100, "six.test", 28, &[]);
        let r = message(
            77,
            0x8180,
            "six.test",
            28,
            &[rr(
                28,
                &[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            )],
        );
        let v6 = |src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]| {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[17, 64]);
            p.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
            p.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
            p.extend_from_slice(&sport.to_be_bytes());
            p.extend_from_slice(&dport.to_be_bytes());
            p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(payload);
            p
        };
        let mut tracker = Tracker::new(Duration::from_secs(5), 16);
        let mut got = Vec::new();
        let now = Instant::now();
        tracker.ip_packet(
            now,
            Utc::now(),
            &v6("fd00::2", 5000, "fd00::1", 53, &q),
            &mut |e| got.push(e),
        );
        tracker.ip_packet(
            now,
            Utc::now(),
            &v6("fd00::9", 53, "fd00::2", 5000, &r),
            &mut |e| got.push(e),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].server, "[fd00::1]:53".parse().unwrap());
        assert_eq!(got[0].answers, ["AAAA 2001:db8::1"]);
    }

    #[test]
    fn filter_jumps_are_forward_and_in_range() {
        let program = filter();
        assert_eq!(program.last().map(|i| (i.code, i.k)), Some((0x06, 0)));
        for (pc, insn) in program.iter().enumerate() {
            if insn.code & 0x07 == libc::BPF_JMP as u16 {
                assert!(pc + 1 + usize::from(insn.jt) < program.len());
                assert!(pc + 1 + usize::from(insn.jf) < program.len());
            } else {
                assert_eq!((insn.jt, insn.jf), (0, 0));
            }
        }
    }
}
