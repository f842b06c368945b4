//! Response actions for real: network isolation and address blocks inside network namespaces
//! the test creates (never on the host), execution blocks on this machine, the investigation
//! package collected on this machine, live-response commands and their refusals.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rampart_agent::{collect, isolation, live, prevent};

mod common;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CHILD_ENV: &str = "RAMPART_ISOLATION_TEST_SERVER_NS";
const SERVER: &str = "10.231.0.1";
const OTHER_HOST: &str = "10.231.0.2";
const AGENT: &str = "10.231.0.10";
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Skips (printing why), or fails when RAMPART_REQUIRE_DATA=1 asks every test to run.
fn skip(reason: &str) {
    if std::env::var("RAMPART_REQUIRE_DATA").as_deref() == Ok("1") {
        panic!("cannot run: {reason} (and RAMPART_REQUIRE_DATA=1)");
    }
    eprintln!("skipped: {reason}");
}

fn installed(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).is_file())
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The two namespaces of the test, deleted (with their veth pair) however the test ends.
struct Namespaces {
    server: String,
    agent: String,
}

impl Namespaces {
    /// "Server side" 10.231.0.1 and .2 (another host), "agent side" 10.231.0.10, one veth pair.
    fn create() -> Result<Namespaces, String> {
        let pid = std::process::id();
        let ns = Namespaces {
            server: format!("rampart-test-srv-{pid}"),
            agent: format!("rampart-test-agt-{pid}"),
        };
        let (veth_srv, veth_agt) = (format!("rts{pid}"), format!("rta{pid}"));
        ip(&["netns", "add", &ns.server])?;
        ip(&["netns", "add", &ns.agent])?;
        ip(&[
            "link", "add", &veth_agt, "netns", &ns.agent, "type", "veth", "peer", "name",
            &veth_srv, "netns", &ns.server,
        ])?;
        for (name, dev, addrs) in [
            (&ns.server, &veth_srv, vec![SERVER, OTHER_HOST]),
            (&ns.agent, &veth_agt, vec![AGENT]),
        ] {
            for addr in addrs {
                ip(&["-n", name, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            }
            ip(&["-n", name, "link", "set", dev, "up"])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.server, &self.agent] {
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

fn host_nft_tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn isolation_in_network_namespaces() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("network isolation needs root (network namespaces, nftables)");
    }
    for tool in ["ip", "nft"] {
        if !installed(tool) {
            return skip(&format!(
                "{tool} is not installed (scripts/system-packages installs nftables)"
            ));
        }
    }
    let host_before = host_nft_tables();
    let ns = match Namespaces::create() {
        Ok(ns) => ns,
        Err(e) => return skip(&format!("cannot create network namespaces: {e}")),
    };
    // The whole child process lives in the agent's namespace: nft cannot reach the host's rules.
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.agent])
        .arg(&exe)
        .args([
            "--exact",
            "isolation_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &ns.server)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test isolation_child ... ok"),
        "the child did not run:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        host_nft_tables(),
        host_before,
        "the host's nftables were touched"
    );
}

/// Runs `f` on a thread that has entered the network namespace `name` (sockets made there stay
/// there).
fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(format!("/run/netns/{name}")).expect("the namespace");
            // SAFETY: setns on this thread only, with a namespace descriptor we hold.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

fn reachable(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok()
}

/// The accepted end of `client`'s connection (earlier probes wait in the queue before it).
fn accept(listener: &TcpListener, client: &TcpStream) -> TcpStream {
    let want = client.local_addr().unwrap();
    loop {
        let (peer, from) = listener.accept().unwrap();
        if from == want {
            return peer;
        }
    }
}

/// Data crosses `client` → `peer` → `client`.
fn exchange(client: &mut TcpStream, peer: &mut TcpStream) -> bool {
    for s in [&*client, &*peer] {
        s.set_read_timeout(Some(CONNECT_TIMEOUT)).unwrap();
    }
    let mut buf = [0u8; 4];
    client.write_all(b"ping").is_ok()
        && peer.read_exact(&mut buf).is_ok()
        && peer.write_all(b"pong").is_ok()
        && client.read_exact(&mut buf).is_ok()
        && &buf == b"pong"
}

fn nft_ruleset() -> String {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The isolation check proper, run by `isolation_in_network_namespaces` inside the agent's
/// namespace.
#[test]
#[ignore = "run inside a network namespace by isolation_in_network_namespaces"]
fn isolation_child() {
    let server_ns = std::env::var(CHILD_ENV).expect("run by isolation_in_network_namespaces");
    let (server, other) = in_netns(&server_ns, || {
        (
            TcpListener::bind((SERVER, 0)).unwrap(),
            TcpListener::bind((OTHER_HOST, 0)).unwrap(),
        )
    });
    let (server_addr, other_addr) = (server.local_addr().unwrap(), other.local_addr().unwrap());
    let agent_listener = TcpListener::bind((AGENT, 0)).unwrap();
    let agent_addr = agent_listener.local_addr().unwrap();
    let loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    let loopback_addr = loopback.local_addr().unwrap();
    let inbound = || in_netns(&server_ns, || reachable(agent_addr));
    // Datagrams need no answer: they show each direction's rules on their own.
    let agent_udp = UdpSocket::bind((AGENT, 0)).unwrap();
    let other_udp = in_netns(&server_ns, || UdpSocket::bind((OTHER_HOST, 0)).unwrap());
    for s in [&agent_udp, &other_udp] {
        s.set_read_timeout(Some(CONNECT_TIMEOUT)).unwrap();
    }
    let (agent_udp_addr, other_udp_addr) = (
        agent_udp.local_addr().unwrap(),
        other_udp.local_addr().unwrap(),
    );
    let datagram_in = || {
        in_netns(&server_ns, || {
            UdpSocket::bind((SERVER, 0))
                .unwrap()
                .send_to(b"in", agent_udp_addr)
                .unwrap()
        });
        agent_udp.recv_from(&mut [0u8; 8]).is_ok()
    };
    // Dropped on the way out, the send itself fails (EPERM).
    let datagram_out = || {
        agent_udp.send_to(b"out", other_udp_addr).is_ok()
            && other_udp.recv_from(&mut [0u8; 8]).is_ok()
    };

    // A rule set of "the host's own", which isolation and release must leave alone.
    let host_rules = "table inet host_rules {\n\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n}\n";
    let mut nft = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(host_rules.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success());

    assert!(reachable(server_addr) && reachable(other_addr) && reachable(loopback_addr));
    assert!(
        datagram_in() && datagram_out(),
        "datagrams pass before isolation"
    );
    assert!(
        inbound(),
        "the agent's listener is reachable from the server side before isolation"
    );
    let mut old_connection = TcpStream::connect_timeout(&other_addr, CONNECT_TIMEOUT).unwrap();
    let mut old_peer = accept(&other, &old_connection);
    assert!(exchange(&mut old_connection, &mut old_peer));

    let state = tempfile::tempdir().unwrap();
    let url = format!("https://{server_addr}");
    let result = isolation::isolate(state.path(), &url).unwrap();
    assert_eq!(
        result["allowed"],
        // An IP-literal server URL needs no DNS while isolated.
        json!({"loopback": true, "server": {"addresses": [SERVER], "port": server_addr.port(), "protocol": "tcp"}, "dns": []})
    );
    let check_isolated = |when: &str| {
        let mut to_server = TcpStream::connect_timeout(&server_addr, CONNECT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{when}: the server is unreachable: {e}"));
        let mut peer = accept(&server, &to_server);
        assert!(
            exchange(&mut to_server, &mut peer),
            "{when}: data to and from the server"
        );
        assert!(!reachable(other_addr), "{when}: another host is reachable");
        assert!(reachable(loopback_addr), "{when}: loopback is cut");
        assert!(!inbound(), "{when}: the agent is reachable from outside");
        assert!(!datagram_in(), "{when}: a datagram reached the agent");
        assert!(!datagram_out(), "{when}: a datagram left the agent");
    };
    check_isolated("isolated");
    // An established connection to anyone else is cut too.
    assert!(
        !exchange(&mut old_connection, &mut old_peer),
        "the old connection still carries data"
    );

    // Twice is once, and isolation began the first time.
    let again = isolation::isolate(state.path(), &url).unwrap();
    assert_eq!(again["since"], result["since"]);
    check_isolated("isolated twice");
    assert_eq!(
        nft_ruleset()
            .matches("table inet rampart_isolation")
            .count(),
        1
    );

    // A reboot forgets the rules; the agent applies them again at start.
    let out = Command::new("nft")
        .args(["delete", "table", "inet", "rampart_isolation"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(reachable(other_addr), "rules gone");
    let resumed = isolation::resume(state.path())
        .unwrap()
        .expect("the state says isolated");
    assert_eq!(resumed.port, server_addr.port());
    check_isolated("after a restart");

    let released = isolation::release(state.path()).unwrap();
    assert_eq!(released, json!({"isolated": false, "was_isolated": true}));
    assert!(reachable(server_addr) && reachable(other_addr) && reachable(loopback_addr));
    assert!(inbound(), "reachable from outside again");
    assert!(datagram_in() && datagram_out(), "datagrams pass again");
    assert!(
        isolation::resume(state.path()).unwrap().is_none(),
        "a restart does not isolate again"
    );
    let ruleset = nft_ruleset();
    assert!(!ruleset.contains("rampart_isolation"), "{ruleset}");
    assert!(
        ruleset.contains("table inet host_rules"),
        "the host's rules were touched:\n{ruleset}"
    );
    assert_eq!(
        isolation::release(state.path()).unwrap(),
        json!({"isolated": false, "was_isolated": false})
    );

    // Isolated by name, then the name no longer resolves (DNS is cut off): isolating again
    // uses the saved addresses.
    let by_name = format!("https://rampart.invalid:{}", server_addr.port());
    let saved = json!({"server": by_name, "addresses": [SERVER], "port": server_addr.port(), "since": "2026-01-01T00:00:00Z"});
    std::fs::write(state.path().join("isolation.json"), saved.to_string()).unwrap();
    let renewed = isolation::isolate(state.path(), &by_name).unwrap();
    assert_eq!(renewed["allowed"]["server"]["addresses"], json!([SERVER]));
    assert_eq!(renewed["since"], "2026-01-01T00:00:00Z");
    check_isolated("isolated again by name");
    isolation::release(state.path()).unwrap();
    assert!(reachable(other_addr));

    // Block indicators: the blocked address is cut both ways, the server never is (even when
    // a policy names it), and an empty list removes the table.
    let block = json!({"addresses": [
        {"id": "other", "value": OTHER_HOST},
        {"id": "server", "value": SERVER},
        {"id": "loopback", "value": "127.0.0.1"},
    ]});
    let (list, skipped) = prevent::Blocklist::from_policy(&block);
    assert_eq!(skipped, 0);
    let server_ip: std::net::IpAddr = SERVER.parse().unwrap();
    assert_eq!(prevent::apply_addresses(&list, &[server_ip]).unwrap(), 1);
    assert!(!reachable(other_addr), "a blocked address is reachable");
    assert!(!datagram_out(), "a datagram reached a blocked address");
    assert!(reachable(server_addr) && reachable(loopback_addr));
    assert!(datagram_in(), "datagrams from the server pass");
    let empty = prevent::Blocklist::default();
    assert_eq!(prevent::apply_addresses(&empty, &[server_ip]).unwrap(), 0);
    assert!(reachable(other_addr) && datagram_out(), "unblocked");
    assert!(!nft_ruleset().contains("rampart_block"));
    assert_eq!(
        prevent::apply_addresses(&empty, &[]).unwrap(),
        0,
        "idempotent"
    );

    // Domain blocks: queries for a blocked domain or its subdomains, letters in any case, over
    // UDP or TCP, are refused before they leave; other names still go out; and an address a
    // blocked name resolved to anyway is cut both ways once the answer is seen.
    let resolver_udp = in_netns(&server_ns, || UdpSocket::bind((OTHER_HOST, 53)).unwrap());
    resolver_udp
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .unwrap();
    let resolver_tcp = in_netns(&server_ns, || TcpListener::bind((OTHER_HOST, 53)).unwrap());
    let (denials, _) = std::sync::mpsc::channel();
    let mut enforcer = prevent::Enforcer::new(
        std::env::current_exe().unwrap(),
        1 << 20,
        vec![server_ip],
        denials,
    );
    let long = format!("{}.{}.example", "a".repeat(40), "b".repeat(20));
    let health = enforcer.apply(&json!({"domains": [
        {"id": "d1", "value": "evil.example"},
        {"id": "d2", "value": long},
    ]}));
    assert_eq!(health["blocked_domains"], 2, "{health}");
    assert_eq!(health["domains_without_query_rules"], 1, "{health}");
    assert!(health["address_error"].is_null(), "{health}");
    let sent_over_udp = |name: &str| {
        let q = common::query(0x1234, name, 1);
        let socket = UdpSocket::bind((AGENT, 0)).unwrap();
        let _ = socket.send_to(&q, (OTHER_HOST, 53));
        let mut buf = [0u8; 512];
        resolver_udp
            .recv_from(&mut buf)
            .is_ok_and(|(n, _)| buf[..n] == q[..])
    };
    let sent_over_tcp = |name: &str| {
        let q = common::query(0x1234, name, 1);
        let framed = [&(q.len() as u16).to_be_bytes()[..], &q].concat();
        let mut client = TcpStream::connect_timeout(
            &format!("{OTHER_HOST}:53").parse().unwrap(),
            CONNECT_TIMEOUT,
        )
        .unwrap();
        let _ = client.write_all(&framed);
        let mut peer = accept(&resolver_tcp, &client);
        peer.set_read_timeout(Some(CONNECT_TIMEOUT)).unwrap();
        let mut got = vec![0u8; framed.len()];
        peer.read_exact(&mut got).is_ok_and(|_| got == framed)
    };
    for name in ["evil.example", "WWW.Evil.EXAMPLE", "a.b-c.d1.evil.example"] {
        assert!(!sent_over_udp(name), "a query for {name} left over UDP");
        assert!(!sent_over_tcp(name), "a query for {name} left over TCP");
    }
    for name in ["notevil.example", "evil.example.org", "example"] {
        assert!(
            sent_over_udp(name),
            "a query for {name} was refused over UDP"
        );
        assert!(
            sent_over_tcp(name),
            "a query for {name} was refused over TCP"
        );
    }
    let answer = |query: &str, answers: &[&str]| rampart_agent::dns::DnsExchange {
        time: chrono::Utc::now(),
        client: (AGENT.parse::<std::net::IpAddr>().unwrap(), 40000).into(),
        server: "192.0.2.53:53".parse().unwrap(),
        query: query.into(),
        query_type: "A".into(),
        rcode: Some("NOERROR".into()),
        answers: answers.iter().map(|a| a.to_string()).collect(),
        truncated: false,
        over_tcp: false,
    };
    assert!(reachable(other_addr));
    assert_eq!(
        enforcer.resolved(&answer("good.example", &[&format!("A {OTHER_HOST}")])),
        0
    );
    assert!(
        reachable(other_addr),
        "an address an unblocked name resolved to is cut"
    );
    let resolved = answer(
        "cdn.evil.example",
        &[
            "CNAME edge.example",
            &format!("A {OTHER_HOST}"),
            &format!("A {SERVER}"),
            "A 127.0.0.1",
        ],
    );
    assert_eq!(
        enforcer.resolved(&resolved),
        1,
        "only the address that is not the server's"
    );
    assert!(
        !reachable(other_addr),
        "an address a blocked name resolved to is reachable"
    );
    assert!(reachable(server_addr) && reachable(loopback_addr));
    assert_eq!(enforcer.resolved(&resolved), 0, "once");
    assert_eq!(enforcer.health()["resolved_addresses_blocked"], 1);
    // Lifting the block lifts what came of it.
    let health = enforcer.apply(&json!({}));
    assert_eq!(health["blocked_domains"], 0, "{health}");
    assert!(reachable(other_addr) && sent_over_udp("evil.example"));
    assert!(!nft_ruleset().contains("rampart_block"));
}

/// A file blocked by hash cannot be executed (EPERM), and the denial names the indicator and
/// the process that tried; other programs still run, also while the guard starts, changes and
/// stops under a stream of executions; when the guard stops, the file runs again.
#[test]
fn blocked_files_cannot_be_executed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("blocking executions needs root (fanotify permission events)");
    }
    let dir = tempfile::tempdir().unwrap();
    let (blocked, allowed) = (
        dir.path().join("blocked-tool"),
        dir.path().join("other-tool"),
    );
    for (path, marker) in [(&blocked, "blocked"), (&allowed, "allowed")] {
        // Scripts run by path are opened for execution like any program.
        std::fs::write(path, format!("#!/bin/sh\necho {marker}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let digest = hex::encode(Sha256::digest(std::fs::read(&blocked).unwrap()));
    let policy = json!({"files": [{"id": "ind-1", "kind": "sha256", "value": digest}]});
    // Executions go on all along; none may hang on the guard.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(Command::new("/bin/true").status().unwrap().success());
                runs += 1;
            }
            runs
        })
    };
    let program = Path::new(env!("CARGO_BIN_EXE_rampart-agent"));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut guard = match prevent::ExecGuard::start(program, &json!({}), 1 << 20, tx) {
        Ok(g) => g,
        Err(e) => return skip(&format!("fanotify permission events unavailable: {e:#}")),
    };
    assert!(
        guard.status()["filesystems"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
    let run = |path: &Path| Command::new(path).output();
    assert!(run(&blocked).is_ok(), "nothing blocked yet");
    guard.set(&policy).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        // The helper takes the new list between two events.
        match run(&blocked) {
            Err(e) => break e,
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "the file was never blocked"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let out = run(&allowed).expect("another file runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "allowed\n");
    let denial = rx.recv_timeout(Duration::from_secs(5)).expect("a denial");
    assert_eq!(
        (denial.indicator.as_str(), denial.kind.as_str()),
        ("ind-1", "sha256")
    );
    assert_eq!(Path::new(&denial.path), blocked.canonicalize().unwrap());
    assert_eq!(denial.hashes.sha256, digest);
    // The process whose execve failed: the child this test spawned.
    assert_eq!(denial.task.ppid, std::process::id());
    assert_ne!(denial.task.tgid, std::process::id());
    drop(guard);
    let out = run(&blocked).expect("runs once the guard is gone");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "blocked\n");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(background.join().unwrap() > 0);
}

#[test]
fn investigation_package_from_this_machine() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let package = collect::collect_package(&dir.path().join("packages")).unwrap();

    let bytes = std::fs::read(&package.path).unwrap();
    assert!(package.path.starts_with(dir.path()));
    assert!(package.path.to_string_lossy().ends_with(".tar.gz"));
    assert_eq!(bytes.len() as u64, package.bytes);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), package.sha256);
    assert_eq!(
        std::fs::metadata(&package.path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let mut entries: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.insert(name, data);
    }
    let manifest: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    assert_eq!(manifest["caps"]["file_bytes"], collect::FILE_CAP);
    assert_eq!(manifest["caps"]["package_bytes"], collect::PACKAGE_CAP);
    let items = manifest["items"].as_array().unwrap();
    let collected: Vec<&Value> = items.iter().filter(|i| i["name"].is_string()).collect();
    assert_eq!(collected.len(), package.items);
    assert_eq!(manifest["collected"], package.items);
    assert_eq!(
        entries.len(),
        package.items + 1,
        "every archive entry but the manifest is listed"
    );
    for item in &collected {
        let data = &entries[item["name"].as_str().unwrap()];
        assert_eq!(data.len() as u64, item["bytes"].as_u64().unwrap(), "{item}");
        assert!(item["bytes"].as_u64().unwrap() <= collect::FILE_CAP);
    }
    for item in items.iter().filter(|i| i["name"].is_null()) {
        assert!(
            item["error"].is_string(),
            "an item not collected says why: {item}"
        );
    }
    for name in [
        "processes.jsonl",
        "connections.jsonl",
        "listening.jsonl",
        "listing.jsonl",
        "files/etc/passwd",
        "files/proc/mounts",
    ] {
        assert!(
            entries.contains_key(name),
            "{name} missing; manifest: {manifest:#}"
        );
    }
    // A kernel without module support has no /proc/modules: noted, not fatal.
    let modules = items
        .iter()
        .find(|i| i["source"] == "/proc/modules")
        .unwrap();
    if Path::new("/proc/modules").exists() {
        assert!(entries.contains_key("files/proc/modules"), "{modules}");
    } else {
        assert_eq!(modules["error"], "not found", "{modules}");
    }
    assert!(
        !entries.keys().any(|k| k.contains("shadow")),
        "no password hashes"
    );
    assert!(String::from_utf8_lossy(&entries["files/etc/passwd"]).contains("root:x:0:0"));

    let lines = |name: &str| -> Vec<Value> {
        String::from_utf8_lossy(&entries[name])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let me = std::process::id();
    let processes = lines("processes.jsonl");
    let mine = processes
        .iter()
        .find(|p| p["pid"] == me)
        .expect("this test's process");
    assert_eq!(
        mine["cmdline"],
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    assert_eq!(
        mine["exe"],
        std::env::current_exe().unwrap().to_string_lossy().as_ref()
    );
    assert!(mine["start_time"].is_string() && mine["user"].is_string());
    assert!(processes.iter().any(|p| p["pid"] == 1), "pid 1 is listed");

    for name in ["connections.jsonl", "listening.jsonl"] {
        let sockets = lines(name);
        let ours = sockets
            .iter()
            .find(|c| c["protocol"] == "tcp" && c["local_port"] == port)
            .unwrap_or_else(|| panic!("{name}: the test's listener on port {port}"));
        assert_eq!(ours["local_address"], "127.0.0.1");
        assert_eq!(ours["state"], "LISTEN");
        assert!(
            ours["pids"].as_array().unwrap().contains(&json!(me)),
            "{ours}"
        );
    }
    assert!(
        lines("listening.jsonl")
            .iter()
            .all(|c| c["listening"] == true)
    );
    drop(listener);
}

fn run(command: &str, args: &[&str]) -> anyhow::Result<Value> {
    live::run_command(&json!({"command": command, "args": args}))
}

#[test]
fn allowed_commands_run_and_return_their_output() {
    let cat = run("cat", &["/proc/self/status"]).unwrap();
    assert_eq!(cat["exit_code"], 0);
    assert!(
        cat["stdout"].as_str().unwrap().contains("Name:\tcat"),
        "{cat}"
    );
    assert_eq!(
        (cat["truncated"].as_bool(), cat["timed_out"].as_bool()),
        (Some(false), Some(false))
    );
    assert!(cat["duration_ms"].is_u64());

    let found = run(
        "find",
        &["/", "-maxdepth", "1", "-name", "etc", "-type", "d"],
    )
    .unwrap();
    assert_eq!(found["stdout"], "/etc\n");

    let ps = run("ps", &["-e", "-o", "pid,comm"]).unwrap();
    let me = std::process::id().to_string();
    assert!(
        ps["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(me.as_str())),
        "{ps}"
    );

    // A failing command is still an answer, with its exit code and stderr.
    let missing = run("stat", &["/nonexistent/file"]).unwrap();
    assert_ne!(missing["exit_code"], 0);
    assert!(
        missing["stderr"].as_str().unwrap().contains("No such file"),
        "{missing}"
    );
}

#[test]
fn output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    std::fs::write(&big, vec![b'a'; 2 * live::MAX_OUTPUT]).unwrap();
    let text = run("cat", &[big.to_str().unwrap()]).unwrap();
    assert_eq!(text["truncated"], true);
    assert_eq!(text["timed_out"], false);
    assert_eq!(text["exit_code"], Value::Null, "killed at the cap");
    assert_eq!(text["stdout"].as_str().unwrap().len(), live::MAX_OUTPUT);

    // Control characters take six bytes each in the report: the cap counts them so.
    let zeros = run("cat", &["/dev/zero"]).unwrap();
    assert_eq!(zeros["truncated"], true);
    let reported = serde_json::to_string(&zeros["stdout"]).unwrap().len() - 2;
    assert!(
        reported <= live::MAX_OUTPUT && reported > live::MAX_OUTPUT - 6,
        "{reported}"
    );
    let report = json!({"status": "succeeded", "result": zeros});
    assert!(
        serde_json::to_vec(&report).unwrap().len() < 1 << 20,
        "fits the server's limit"
    );
}

#[test]
fn commands_outside_the_allow_list_are_refused() {
    let refused = |command: &str, args: &[&str], why: &str| {
        let err = run(command, args).expect_err(&format!("{command} {args:?} ran"));
        let err = format!("{err:#}");
        assert!(
            err.contains(why),
            "{command} {args:?}: '{err}' does not say '{why}'"
        );
    };
    for (command, args) in [
        ("rm", &["-rf", "/tmp/x"][..]),
        ("sh", &[]),
        ("bash", &["-c", "id"]),
        ("/usr/bin/ps", &[]),
    ] {
        refused(command, args, "is not an allowed command");
    }
    refused(
        "find",
        &["/", "-maxdepth", "1", "-exec", "id", ";"],
        "'-exec' is not allowed",
    );
    refused(
        "find",
        &["/", "-maxdepth", "1", "-delete"],
        "'-delete' is not allowed",
    );
    refused(
        "find",
        &["/", "-maxdepth", "1", "-fprint", "/tmp/x"],
        "'-fprint' is not allowed",
    );
    refused("find", &["/", "-name", "x"], "find needs -maxdepth");
    // Secrets stay out of reach, also through a symlink; and so does the agent's state.
    refused("cat", &["/etc/shadow"], "holds secrets");
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("innocent");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    refused("cat", &[link.to_str().unwrap()], "holds secrets");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("agent.key"), "secret").unwrap();
    rampart_agent::live::protect(&state);
    refused(
        "cat",
        &[state.join("agent.key").to_str().unwrap()],
        "holds secrets",
    );
    refused(
        "find",
        &["/", "-maxdepth", "50"],
        "-maxdepth must be a number from 0 to 10",
    );
    refused("find", &["etc", "-maxdepth", "1"], "absolute path");
    refused("cat", &["etc/passwd"], "must be an absolute path");
    refused("cat", &["/etc/../etc/passwd"], "without '..'");
    refused("cat", &[], "needs at least 1 absolute path");
    refused(
        "tail",
        &["-f", "/var/log/syslog"],
        "option '-f' is not allowed",
    );
    refused(
        "ss",
        &["-K", "dst", "10.0.0.1"],
        "option '-K' is not allowed",
    );
    refused("ss", &["-tK"], "option '-tK' is not allowed");
    refused(
        "ip",
        &["addr", "flush", "dev", "lo"],
        "'addr flush dev lo' is not allowed",
    );
    refused("ip", &["-b", "/tmp/commands"], "option '-b' is not allowed");
    refused("ip", &["netns", "exec", "x", "sh"], "is not allowed");
    refused("systemctl", &["stop", "ssh"], "'stop ssh' is not allowed");
    refused("journalctl", &["-n", "--vacuum-size=1"], "-n needs a value");
    refused("journalctl", &["--vacuum-size=1"], "is not allowed");
    refused("mount", &["/dev/sda1", "/mnt"], "no operands are allowed");
    refused("lsof", &["+D", "/"], "'+D' is not allowed");
    refused(
        "head",
        &["--lines=5", "/etc/passwd"],
        "option '--lines=5' is not allowed",
    );
    let err =
        live::run_command(&json!({"command": "cat", "args": ["/etc/hostname", 5]})).unwrap_err();
    assert!(
        err.to_string()
            .contains("params.args must be a list of strings"),
        "{err}"
    );
    let err = live::run_command(&json!({"args": []})).unwrap_err();
    assert!(err.to_string().contains("params.command"), "{err}");
}
