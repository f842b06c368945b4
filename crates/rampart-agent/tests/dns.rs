//! DNS capture on real sockets: a small responder on 127.0.0.2:53, queries from ordinary UDP
//! sockets, and the exchanges the capture reports for them (once each, with the right name,
//! type, rcode, answers and client port); a query nobody answers comes out unanswered. Then the
//! same over TCP: a query written in two parts, two queries in one write, answers read back.
//!
//! Needs root (CAP_NET_RAW, and port 53); skipped otherwise unless RAMPART_REQUIRE_DATA=1.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rampart_agent::dns::{DnsCapture, DnsExchange};

mod common;
use common::query;

const SUFFIX: &str = "rampart-dns-test.example";

fn name(label: &str) -> String {
    format!("{label}.{SUFFIX}")
}

fn skip(reason: &str) -> bool {
    if std::env::var("RAMPART_REQUIRE_DATA").as_deref() == Ok("1") {
        panic!("RAMPART_REQUIRE_DATA=1 but {reason}");
    }
    eprintln!("skipped: {reason}");
    true
}

/// The responder's answer to a query: A and AAAA for `www` (a CNAME to `a`, then the address,
/// names compressed), NXDOMAIN for anything else.
fn answer(q: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(pos)?);
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(pos + 1..pos + 1 + len)?).to_string());
        pos += 1 + len;
    }
    let qname = labels.join(".");
    let end = pos + 5;
    let qtype = u16::from_be_bytes([*q.get(pos + 1)?, *q.get(pos + 2)?]);
    let mut r = q.get(..end)?.to_vec();
    r[2] = 0x81; // QR, RD
    let www = qname == name("www");
    r[3] = if www { 0x80 } else { 0x83 }; // RA; NOERROR or NXDOMAIN
    if !www {
        return Some(r);
    }
    r[7] = 2; // ancount
    // www CNAME a.<suffix>: owner → the question (offset 12); target "a" + pointer to the
    // suffix (after the question's first label, "www").
    let suffix_at = 12 + 1 + 3;
    let cname = [&[1u8, b'a'][..], &[0xc0, suffix_at as u8]].concat();
    let a_at = r.len() + 12; // where the CNAME's rdata (the name "a.<suffix>") starts
    let rr = |r: &mut Vec<u8>, owner: &[u8], rtype: u16, rdata: &[u8]| {
        r.extend_from_slice(owner);
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
    };
    rr(&mut r, &[0xc0, 12], 5, &cname);
    let owner = [0xc0, a_at as u8];
    match qtype {
        1 => rr(&mut r, &owner, 1, &Ipv4Addr::new(192, 0, 2, 7).octets()),
        28 => rr(
            &mut r,
            &owner,
            28,
            &"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets(),
        ),
        _ => r[7] = 1,
    }
    Some(r)
}

/// A query the test sends and what should come of it.
struct Case {
    label: &'static str,
    qtype: u16,
    to: &'static str,
    rcode: Option<&'static str>,
    answers: &'static [&'static str],
}

#[test]
fn captures_exchanges_on_loopback() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 && skip("not root (needs CAP_NET_RAW and port 53)") {
        return;
    }
    let timeout = Duration::from_millis(500);
    let mut capture = match DnsCapture::with_limits(timeout, 4096) {
        Ok(c) => c,
        Err(e) => {
            skip(&format!("no AF_PACKET socket: {e}"));
            return;
        }
    };
    let server = match UdpSocket::bind("127.0.0.2:53") {
        Ok(s) => s,
        Err(e) => {
            skip(&format!("cannot bind 127.0.0.2:53: {e}"));
            return;
        }
    };
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let responder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = server.recv_from(&mut buf)
                    && let Some(r) = answer(&buf[..n])
                {
                    let _ = server.send_to(&r, from);
                }
            }
        })
    };

    let cases = [
        Case {
            label: "www",
            qtype: 1,
            to: "127.0.0.2:53",
            rcode: Some("NOERROR"),
            answers: &["CNAME a.rampart-dns-test.example", "A 192.0.2.7"],
        },
        Case {
            label: "www",
            qtype: 28,
            to: "127.0.0.2:53",
            rcode: Some("NOERROR"),
            answers: &["CNAME a.rampart-dns-test.example", "AAAA 2001:db8::7"],
        },
        Case {
            label: "nx",
            qtype: 1,
            to: "127.0.0.2:53",
            rcode: Some("NXDOMAIN"),
            answers: &[],
        },
        Case {
            label: "silent",
            qtype: 1,
            to: "127.0.0.3:53",
            rcode: None,
            answers: &[],
        },
    ];
    // Client port → its case.
    let mut expected: HashMap<u16, &Case> = HashMap::new();
    let mut sockets = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let id = 0x1200 + i as u16;
        socket
            .send_to(&query(id, &name(case.label), case.qtype), case.to)
            .unwrap();
        if case.rcode.is_some() {
            let mut buf = [0u8; 1500];
            let (n, _) = socket.recv_from(&mut buf).expect("the responder answers");
            assert!(n > 12 && buf[..2] == id.to_be_bytes());
        }
        expected.insert(port, case);
        sockets.push(socket);
    }

    let got = collect(&mut capture, timeout, sockets.len(), |e| {
        !e.over_tcp && expected.contains_key(&e.client.port())
    });
    stop.store(true, Ordering::Relaxed);
    responder.join().unwrap();
    assert_eq!(got.len(), expected.len(), "each exchange once: {got:#?}");
    for e in &got {
        let case = expected[&e.client.port()];
        assert_eq!(e.query, name(case.label));
        assert_eq!(e.query_type, if case.qtype == 1 { "A" } else { "AAAA" });
        assert_eq!(e.client.ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(e.server, case.to.parse::<SocketAddr>().unwrap());
        assert_eq!(e.rcode.as_deref(), case.rcode, "{e:?}");
        assert_eq!(e.answers, case.answers, "{e:?}");
        assert!(!e.truncated);
        let age = chrono::Utc::now() - e.time;
        assert!(
            age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::seconds(30),
            "{e:?}"
        );
    }

    over_tcp(&mut capture, timeout);
    assert_eq!(capture.malformed(), 0);
    assert_eq!(capture.lost(), 0);
    eprintln!(
        "unmatched responses {}, dropped {}",
        capture.unmatched(),
        capture.dropped()
    );
}

/// Polls until `want` exchanges that `keep` accepts came, then a while longer to see nothing
/// comes twice.
fn collect(
    capture: &mut DnsCapture,
    timeout: Duration,
    want: usize,
    keep: impl Fn(&DnsExchange) -> bool,
) -> Vec<DnsExchange> {
    let mut got: Vec<DnsExchange> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut settle: Option<Instant> = None;
    while Instant::now() < deadline && settle.is_none_or(|t| t.elapsed() < timeout * 3) {
        capture.poll(&mut |e| {
            if e.query.ends_with(SUFFIX) && keep(&e) {
                got.push(e);
            }
        });
        if settle.is_none() && got.len() >= want {
            settle = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for e in &got {
        eprintln!("{e:?}");
    }
    got
}

/// DNS over TCP (RFC 7766): the responder answers each length-prefixed query on a connection;
/// the client writes one query in two parts (two segments) and then two queries at once.
fn over_tcp(capture: &mut DnsCapture, timeout: Duration) {
    let listener = TcpListener::bind("127.0.0.2:53").expect("bind 127.0.0.2:53 over TCP");
    let responder = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for _ in 0..3 {
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).unwrap();
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut q).unwrap();
            let r = answer(&q).unwrap();
            conn.write_all(&[&(r.len() as u16).to_be_bytes()[..], &r].concat())
                .unwrap();
        }
    });
    let framed = |m: Vec<u8>| [(m.len() as u16).to_be_bytes().to_vec(), m].concat();
    let mut client = TcpStream::connect("127.0.0.2:53").unwrap();
    client.set_nodelay(true).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let first = framed(query(0x2001, &name("www"), 1));
    client.write_all(&first[..7]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    client.write_all(&first[7..]).unwrap();
    let both = [
        framed(query(0x2002, &name("www"), 28)),
        framed(query(0x2003, &name("nx-tcp"), 1)),
    ]
    .concat();
    client.write_all(&both).unwrap();
    let mut answers = 0;
    while answers < 3 {
        let mut len = [0u8; 2];
        client.read_exact(&mut len).expect("the responder answers");
        let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
        client.read_exact(&mut r).unwrap();
        answers += 1;
    }
    responder.join().unwrap();
    let port = client.local_addr().unwrap().port();
    drop(client);

    let got = collect(capture, timeout, 3, |e| {
        e.over_tcp && e.client.port() == port
    });
    let mut summary: Vec<_> = got
        .iter()
        .map(|e| {
            assert_eq!(e.server, "127.0.0.2:53".parse::<SocketAddr>().unwrap());
            assert!(!e.truncated);
            (
                e.query.clone(),
                e.query_type.clone(),
                e.rcode.clone(),
                e.answers.clone(),
            )
        })
        .collect();
    summary.sort();
    let row = |label: &str, qtype: &str, rcode: &str, answers: &[&str]| {
        (
            name(label),
            qtype.to_string(),
            Some(rcode.to_string()),
            answers.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        summary,
        [
            row("nx-tcp", "A", "NXDOMAIN", &[]),
            row(
                "www",
                "A",
                "NOERROR",
                &["CNAME a.rampart-dns-test.example", "A 192.0.2.7"]
            ),
            row(
                "www",
                "AAAA",
                "NOERROR",
                &["CNAME a.rampart-dns-test.example", "AAAA 2001:db8::7"]
            ),
        ],
        "each exchange once: {got:#?}"
    );
}

/// By hand: prints every exchange seen for RAMPART_DNS_WATCH_SECS (10) seconds.
/// `cargo test -p rampart-agent --test dns -- --ignored --nocapture watch`
#[test]
#[ignore]
fn watch() {
    let secs = std::env::var("RAMPART_DNS_WATCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut capture = DnsCapture::start().expect("capture (root?)");
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        capture.poll(&mut |e| eprintln!("{e:?}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    capture.flush(&mut |e| eprintln!("{e:?}"));
    eprintln!(
        "malformed {}, unmatched {}, dropped {}",
        capture.malformed(),
        capture.unmatched(),
        capture.dropped()
    );
}
