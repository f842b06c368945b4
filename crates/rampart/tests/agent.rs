//! `rampart-agent` end to end on this machine: a real server, the agent enrolled with a token
//! and running its eBPF sensor on the real kernel; an exec, a file write, a TCP connection to
//! a loopback listener and a failed `su` each show up in hunting with their process lineage
//! and hashes.
//!
//! Needs root (eBPF, and the agent receives /dev/log when nothing else does); skips otherwise
//! with the reason, unless RAMPART_REQUIRE_DATA=1 (CI), where it fails.

mod common;

use std::ffi::OsStr;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{PASSWORD, Server, scratch};
use serde_json::{Value, json};
use sha2::Digest;

fn skip_or_fail(reason: &str) {
    assert!(
        std::env::var("RAMPART_REQUIRE_DATA").as_deref() != Ok("1"),
        "RAMPART_REQUIRE_DATA=1 but {reason}"
    );
    eprintln!("skipped: {reason}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The agent binary, built beside `rampart` by `cargo test --workspace`.
fn agent_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_rampart")).with_file_name("rampart-agent");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p rampart-agent` (./test does)",
        path.display()
    );
    path
}

struct Agent(Child);

/// Enrolls an agent state directory as `hostname` with a fresh token.
fn enroll(agent_bin: &Path, server: &Server, admin: &str, state: &Path, hostname: &str) {
    let token = server.post(
        "/api/v1/enrollment-tokens",
        admin,
        json!({"name": hostname}),
    );
    let out = Command::new(agent_bin)
        .args(["enroll", "--server", &server.url, "--token"])
        .arg(token["token"].as_str().unwrap())
        .arg("--state-dir")
        .arg(state)
        .args(["--hostname", hostname])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_agent(agent_bin: &Path, state: &Path, log: &Path, extra: &[&str]) -> Agent {
    Agent(
        Command::new(agent_bin)
            .args(["run", "--heartbeat-secs", "1", "--state-dir"])
            .arg(state)
            .args(extra)
            .env("RAMPART_LOG", "info")
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The device once its first heartbeat has said how the sensor runs.
fn wait_ready(server: &Server, admin: &str, hostname: &str, log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let devices = server.get(&format!("/api/v1/devices?hostname={hostname}"), admin);
        if let Some(d) = devices["items"].as_array().and_then(|d| d.first())
            && d["health"]["sensor_mode"].is_string()
        {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A server on a scratch directory and an agent enrolled to it, running without logons,
/// once its first heartbeat came. Bind `_agent` when taking it apart: the agent is stopped
/// when it is dropped.
struct LocalAgent {
    dir: PathBuf,
    server: Server,
    admin: String,
    host: String,
    log: PathBuf,
    device: Value,
    _agent: Agent,
}

impl LocalAgent {
    fn start(name: &str) -> LocalAgent {
        let agent_bin = agent_binary();
        let dir = scratch(&format!("agent-{name}"));
        let server = Server::start(&dir.join("server"), true, &[]);
        let admin = server.login("admin", PASSWORD);
        let state = dir.join("agent");
        let host = format!("{name}-host-{}", std::process::id());
        enroll(&agent_bin, &server, &admin, &state, &host);
        let log = dir.join("agent.log");
        let agent = start_agent(&agent_bin, &state, &log, &["--no-logons"]);
        let device = wait_ready(&server, &admin, &host, &log);
        LocalAgent {
            dir,
            server,
            admin,
            host,
            log,
            device,
            _agent: agent,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls a hunting query until it returns rows; the rows and how long they took.
fn wait_rows(server: &Server, token: &str, query: &str, since: Instant) -> (Vec<Value>, Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = server.hunt(token, query);
        let rows = answer["rows"].as_array().cloned().unwrap_or_default();
        if !rows.is_empty() {
            let columns: Vec<String> = answer["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap_or_default().to_string())
                .collect();
            let objects = rows
                .iter()
                .map(|r| {
                    Value::Object(
                        columns
                            .iter()
                            .cloned()
                            .zip(r.as_array().unwrap().iter().cloned())
                            .collect(),
                    )
                })
                .collect();
            return (objects, since.elapsed());
        }
        assert!(Instant::now() < deadline, "nothing in hunting for: {query}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sha256_of(path: &Path) -> String {
    sha256_of_bytes(&std::fs::read(path).unwrap())
}

#[test]
fn agent_telemetry_reaches_hunting_with_lineage_and_hashes() {
    if !is_root() {
        return skip_or_fail("the agent's eBPF sensor needs root");
    }
    let agent_bin = agent_binary();
    let dir = scratch("agent-e2e");
    let server = Server::start(&dir.join("server"), true, &[]);
    let admin = server.login("admin", PASSWORD);
    let state = dir.join("agent");
    enroll(&agent_bin, &server, &admin, &state, "e2e-host");
    // A token enrolls once.
    let token = server.post("/api/v1/enrollment-tokens", &admin, json!({"name": "once"}));
    let enroll_with = |state: &Path| {
        Command::new(&agent_bin)
            .args(["enroll", "--server", &server.url, "--token"])
            .arg(token["token"].as_str().unwrap())
            .arg("--state-dir")
            .arg(state)
            .output()
            .unwrap()
    };
    assert!(enroll_with(&dir.join("first")).status.success());
    assert!(!enroll_with(&dir.join("second")).status.success());

    let agent = start_agent(&agent_bin, &state, &dir.join("agent.log"), &[]);
    let device = wait_ready(&server, &admin, "e2e-host", &dir.join("agent.log"));
    if device["health"]["sensor_mode"] != "ebpf" {
        return skip_or_fail(&format!("eBPF is unavailable here: {}", device["health"]));
    }
    assert_eq!(device["health_status"], "active", "{device}");

    let nonce = format!("rampart-e2e-{}", std::process::id());
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let file = work.join(format!("{nonce}.txt"));
    let script = format!(
        "/bin/echo {nonce}; echo written > {file}; exec 3<>/dev/tcp/127.0.0.1/{port}; echo hi >&3; sleep 0.2",
        file = file.display()
    );
    let mut shell = Command::new("/bin/bash")
        .args(["-c", &script])
        .current_dir(&work)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let bash_pid = shell.id();
    let (mut conn, _) = listener.accept().unwrap();
    let mut hi = [0u8; 3];
    conn.read_exact(&mut hi).unwrap();
    assert!(shell.wait().unwrap().success());
    let started = Instant::now();

    // Exec, with lineage (bash → echo, bash's parent is this test) and the image's hashes.
    let (rows, exec_latency) = wait_rows(
        &server,
        &admin,
        &format!("DeviceProcessEvents | where ProcessCommandLine == '/bin/echo {nonce}'"),
        started,
    );
    let exec = &rows[0];
    assert_eq!(exec["ActionType"], "ProcessCreated");
    assert_eq!(exec["DeviceName"], "e2e-host");
    assert_eq!(exec["FileName"], "echo");
    assert_eq!(exec["InitiatingProcessId"], bash_pid);
    assert_eq!(exec["InitiatingProcessFileName"], "bash");
    assert_eq!(exec["InitiatingProcessParentId"], std::process::id());
    assert_eq!(exec["AccountName"], "root");
    assert_eq!(exec["SHA256"], sha256_of(Path::new("/bin/echo")));
    assert_eq!(
        exec["InitiatingProcessSHA256"],
        sha256_of(Path::new("/bin/bash"))
    );
    let extra: Value = serde_json::from_str(exec["AdditionalFields"].as_str().unwrap()).unwrap();
    assert_eq!(extra["CurrentDirectory"], work.display().to_string());

    // The file bash wrote.
    let (rows, file_latency) = wait_rows(
        &server,
        &admin,
        &format!(
            "DeviceFileEvents | where FolderPath == '{}'",
            file.display()
        ),
        started,
    );
    assert_eq!(rows[0]["ActionType"], "FileCreated", "{}", rows[0]);
    assert_eq!(rows[0]["InitiatingProcessId"], bash_pid);
    // The agent leaves out what the server writes back in: the name (the path's last
    // component) and the number (from its batch's first).
    assert_eq!(
        rows[0]["FileName"].as_str(),
        file.file_name().and_then(|n| n.to_str()),
        "{}",
        rows[0]
    );
    assert!(
        rows[0]["ReportId"].as_i64().is_some_and(|n| n > 0),
        "{}",
        rows[0]
    );

    // bash's connection, and the accept on this side.
    let (rows, net_latency) = wait_rows(
        &server,
        &admin,
        &format!(
            "DeviceNetworkEvents | where RemotePort == {port} and ActionType == 'ConnectionSuccess'"
        ),
        started,
    );
    assert_eq!(rows[0]["InitiatingProcessId"], bash_pid);
    assert_eq!(rows[0]["RemoteIP"], "127.0.0.1");
    assert_eq!(rows[0]["Protocol"], "Tcp");
    let (rows, _) = wait_rows(
        &server,
        &admin,
        &format!(
            "DeviceNetworkEvents | where LocalPort == {port} and ActionType == 'InboundConnectionAccepted'"
        ),
        started,
    );
    assert_eq!(rows[0]["InitiatingProcessId"], std::process::id());

    let su = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "su",
            "root",
            "-c",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!su.success(), "su without a password fails");
    let su_at = Instant::now();

    // The failed su, from what su logged.
    let (rows, logon_latency) = wait_rows(
        &server,
        &admin,
        "DeviceLogonEvents | where ActionType == 'LogonFailed' and AccountName == 'root' and InitiatingProcessAccountName == 'nobody'",
        su_at,
    );
    assert_eq!(rows[0]["InitiatingProcessFileName"], "su", "{}", rows[0]);

    // A DNS query from a connected UDP socket (nobody answers at 127.0.0.2: unanswered).
    let name = format!("e2e-{}.rampart.example", std::process::id());
    let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    dns.connect("127.0.0.2:53").unwrap();
    dns.send(&dns_query(&name)).unwrap();
    let (rows, _) = wait_rows(
        &server,
        &admin,
        &format!(
            "DeviceEvents | where ActionType == 'DnsQueryResponse' and AdditionalFields has '{name}'"
        ),
        Instant::now(),
    );
    assert_eq!(
        rows[0]["InitiatingProcessId"],
        std::process::id(),
        "{}",
        rows[0]
    );
    assert_eq!(rows[0]["RemoteIP"], "127.0.0.2");

    eprintln!(
        "latency to hunting (from the end of the shell / of su): exec {exec_latency:?}, file {file_latency:?}, network {net_latency:?}, logon {logon_latency:?}"
    );

    // SIGTERM: the agent flushes and exits cleanly.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(agent.0.id().to_string())
        .status();
    let mut agent = agent;
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "agent exit: {status}");
}

/// What `rampart-agent loadgen` did.
fn loadgen(agent_bin: &Path, marker: &str, dir: &Path, args: &[impl AsRef<OsStr>]) -> Value {
    let out = Command::new(agent_bin)
        .args(["loadgen", "--marker", marker, "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (execs, files created, files deleted, connections) of a loadgen run as hunting counts them.
fn counted(server: &Server, token: &str, host: &str, g: &Value) -> [u64; 4] {
    let marker = g["marker"].as_str().unwrap();
    let dir = g["file_dir"].as_str().unwrap();
    let port = g["port"].as_u64().unwrap();
    [
        format!("DeviceProcessEvents | where DeviceName == '{host}' and ProcessCommandLine == '/bin/true {marker}'"),
        format!("DeviceFileEvents | where DeviceName == '{host}' and FolderPath startswith '{dir}' and ActionType == 'FileCreated'"),
        format!("DeviceFileEvents | where DeviceName == '{host}' and FolderPath startswith '{dir}' and ActionType == 'FileDeleted'"),
        // loadgen connects with a timeout (non-blocking): a connect still in progress when
        // connect() returned is a ConnectionAttempt.
        format!("DeviceNetworkEvents | where DeviceName == '{host}' and RemotePort == {port} and ActionType in ('ConnectionSuccess', 'ConnectionAttempt')"),
    ]
    .map(|q| server.count(token, &q))
}

fn generated(g: &Value) -> [u64; 4] {
    ["execs", "files_created", "files_deleted", "connections"].map(|k| g[k].as_u64().unwrap())
}

/// Known load, then more while the server is down: once it is back, every event is in hunting
/// exactly once, or counted as dropped by the agent. The outage lasts 3 s, or
/// `RAMPART_OUTAGE_SECS` (the README's soak run: 300).
#[test]
fn no_event_is_lost_silently_not_even_during_a_server_outage() {
    if !is_root() {
        return skip_or_fail("the agent's eBPF sensor needs root");
    }
    let agent_bin = agent_binary();
    let dir = scratch("agent-loss");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.join("server");
    let server = Server::start_on(&data, &listen, true, &[]);
    let admin = server.login("admin", PASSWORD);
    let state = dir.join("agent");
    let host = "loss-host";
    enroll(&agent_bin, &server, &admin, &state, host);
    let log = dir.join("agent.log");
    // The end-to-end test may hold /dev/log: this one needs no logons.
    let _agent = start_agent(&agent_bin, &state, &log, &["--no-logons"]);
    let device = wait_ready(&server, &admin, host, &log);
    if device["health"]["sensor_mode"] != "ebpf" {
        return skip_or_fail(&format!("eBPF is unavailable here: {}", device["health"]));
    }
    let work = dir.join("work");
    let outage_secs: u64 = match std::env::var("RAMPART_OUTAGE_SECS") {
        Ok(s) => s.parse().expect("RAMPART_OUTAGE_SECS: a number of seconds"),
        Err(_) => 3,
    };
    let load = |seconds: u64| {
        [
            "--execs-per-sec",
            "100",
            "--file-ops-per-sec",
            "2000",
            "--connections-per-sec",
            "50",
            "--seconds",
        ]
        .map(String::from)
        .into_iter()
        .chain([seconds.to_string()])
        .collect::<Vec<_>>()
    };
    // Markers unique to this run: every agent on the machine records every process.
    let before = loadgen(
        &agent_bin,
        &format!("loss-a-{}", std::process::id()),
        &work,
        &load(3),
    );

    // Outage: the server stops; the agent keeps recording into its queue.
    server.stop();
    let during = loadgen(
        &agent_bin,
        &format!("loss-b-{}", std::process::id()),
        &work,
        &load(outage_secs),
    );
    let server = Server::start_on(&data, &listen, true, &[]);
    let admin = server.login("admin", PASSWORD);

    for g in [&before, &during] {
        let want = generated(g);
        assert!(want.iter().all(|&n| n > 0), "{g}");
        let deadline = Instant::now() + Duration::from_secs(120 + outage_secs);
        loop {
            let got = counted(&server, &admin, host, g);
            let dropped = server.get(
                &format!("/api/v1/devices/{}", device["id"].as_str().unwrap()),
                &admin,
            )["events_dropped"]
                .as_u64()
                .unwrap_or(0);
            for (got, want) in got.iter().zip(want) {
                assert!(
                    *got <= want,
                    "more rows than events (duplicates): {got:?} > {want:?} for {g}"
                );
            }
            if got == want {
                eprintln!(
                    "{} (execs, files created, files deleted, connections): {want:?} in hunting, once each",
                    g["marker"]
                );
                break;
            }
            // Short only by what the agent reported dropped: loss, but not silent.
            let missing: u64 = want.iter().zip(got).map(|(w, g)| w - g).sum();
            if Instant::now() > deadline {
                assert!(
                    missing <= dropped,
                    "{missing} events missing, {dropped} reported dropped: {got:?} of {want:?} for {g}; agent log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                eprintln!("{missing} events missing, all reported dropped");
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `scripts/linux-attack-sim` performs safe versions of the techniques of Rampart's Linux rules
/// on this machine: each raises its alert for the agent's device.
#[test]
fn attack_simulation_raises_every_expected_alert() {
    if !is_root() {
        return skip_or_fail("the agent's eBPF sensor needs root");
    }
    let LocalAgent {
        dir,
        server,
        admin,
        host,
        device,
        _agent,
        ..
    } = LocalAgent::start("sim");
    if device["health"]["sensor_mode"] != "ebpf" {
        return skip_or_fail(&format!("eBPF is unavailable here: {}", device["health"]));
    }
    let token = server.post(
        "/api/v1/tokens",
        &admin,
        json!({"name": "simulation", "role": "readonly"}),
    );
    let script = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../../scripts/linux-attack-sim");
    let out = Command::new(&script)
        .args(["--server", &server.url, "--token"])
        .arg(token["token"].as_str().unwrap())
        .arg("--cacert")
        .arg(dir.join("server/pki/ca.crt"))
        .args(["--hostname", &host, "--wait", "120"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "some techniques raised no alert:\n{report}"
    );
    assert!(
        report.lines().filter(|l| l.starts_with("raised")).count() >= 20,
        "{report}"
    );
}

/// `rampart server --local-agent`: the server enrolls and runs this machine's agent itself,
/// and stops it when it stops.
#[test]
fn the_server_runs_a_local_agent() {
    if !is_root() {
        return skip_or_fail("the agent's eBPF sensor needs root");
    }
    agent_binary();
    let dir = scratch("agent-local");
    let data = dir.join("server");
    std::fs::create_dir_all(&data).unwrap();
    // The end-to-end test needs /dev/log: no logons here.
    let config = dir.join("rampart.toml");
    std::fs::write(&config, "[agents]\nlogons = false\n").unwrap();
    let server = Server::start(
        &data,
        true,
        &["--local-agent", "--config", config.to_str().unwrap()],
    );
    let admin = server.login("admin", PASSWORD);
    let deadline = Instant::now() + Duration::from_secs(60);
    let device = loop {
        let devices = server.get("/api/v1/devices", &admin);
        if let Some(d) = devices["items"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["health"]["sensor_mode"].is_string()))
        {
            break d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no local agent; its log:\n{}",
            std::fs::read_to_string(data.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(device["health"]["sensor_mode"], "ebpf", "{device}");
    assert_eq!(device["health"]["logon_source"], "none", "{device}");
    let agent_pid = || {
        Command::new("pgrep")
            .args([
                "-f",
                &format!(
                    "rampart-agent run --state-dir {}",
                    data.join("agent").display()
                ),
            ])
            .output()
            .unwrap()
            .stdout
    };
    assert!(!agent_pid().is_empty(), "the agent runs");
    server.stop();
    assert!(agent_pid().is_empty(), "the agent stops with the server");
}

/// Creates a response action for `device` and waits for the agent's final report.
fn act(server: &Server, token: &str, device: &str, kind: &str, params: Value) -> Value {
    let action = server.post(
        "/api/v1/actions",
        token,
        json!({"device_id": device, "kind": kind, "params": params}),
    );
    let id = action["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let action = server.get(&format!("/api/v1/actions/{id}"), token);
        if ["succeeded", "failed", "cancelled"]
            .contains(&action["status"].as_str().unwrap_or_default())
        {
            return action;
        }
        assert!(Instant::now() < deadline, "{kind} never finished: {action}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kill, quarantine and restore, live response and an investigation package, from the API to
/// the agent and back.
#[test]
fn response_actions_reach_the_agent_and_report_back() {
    if !is_root() {
        return skip_or_fail("the agent's eBPF sensor needs root");
    }
    let agent_bin = agent_binary();
    let dir = scratch("agent-response");
    let server = Server::start(&dir.join("server"), true, &[]);
    let admin = server.login("admin", PASSWORD);
    let state = dir.join("agent");
    let host = format!("response-host-{}", std::process::id());
    enroll(&agent_bin, &server, &admin, &state, &host);
    let log = dir.join("agent.log");
    // A long heartbeat: actions must come by the long-poll.
    let _agent = Agent(
        Command::new(&agent_bin)
            .args([
                "run",
                "--no-logons",
                "--heartbeat-secs",
                "3600",
                "--state-dir",
            ])
            .arg(&state)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let device = wait_ready(&server, &admin, &host, &log);
    let id = device["id"].as_str().unwrap();

    let mut victim = Command::new("/bin/sleep").arg("300").spawn().unwrap();
    let killed = act(
        &server,
        &admin,
        id,
        "kill_process",
        json!({"pid": victim.id()}),
    );
    assert_eq!(killed["status"], "succeeded", "{killed}");
    assert!(!victim.wait().unwrap().success(), "the process was killed");

    let file = dir.join("dropper.sh");
    std::fs::write(&file, b"#!/bin/sh\necho payload\n").unwrap();
    let q = act(
        &server,
        &admin,
        id,
        "quarantine_file",
        json!({"path": file}),
    );
    assert_eq!(q["status"], "succeeded", "{q}");
    assert!(!file.exists(), "quarantined");
    assert_eq!(
        q["result"]["sha256"],
        sha256_of_bytes(b"#!/bin/sh\necho payload\n")
    );
    let r = act(
        &server,
        &admin,
        id,
        "restore_file",
        json!({"id": q["result"]["id"]}),
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(std::fs::read(&file).unwrap(), b"#!/bin/sh\necho payload\n");

    let live = act(
        &server,
        &admin,
        id,
        "run_command",
        json!({"command": "cat", "args": ["/proc/version"]}),
    );
    assert_eq!(live["status"], "succeeded", "{live}");
    assert!(
        live["result"]["stdout"]
            .as_str()
            .unwrap()
            .starts_with("Linux version"),
        "{live}"
    );
    let refused = act(
        &server,
        &admin,
        id,
        "run_command",
        json!({"command": "sh", "args": ["-c", "id"]}),
    );
    assert_eq!(refused["status"], "failed", "{refused}");

    let package = act(&server, &admin, id, "collect_package", json!({}));
    assert_eq!(package["status"], "succeeded", "{package}");
    let mut download = server
        .http
        .get(&format!(
            "{}/api/v1/actions/{}/package",
            server.url,
            package["id"].as_str().unwrap()
        ))
        .header("Authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap();
    assert_eq!(download.status().as_u16(), 200);
    let bytes = download
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    assert_eq!(
        sha256_of_bytes(&bytes),
        package["result"]["sha256"].as_str().unwrap()
    );
}

/// The device's health once `pred` holds for it.
fn wait_health(server: &Server, admin: &str, id: &str, log: &Path, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let device = server.get(&format!("/api/v1/devices/{id}"), admin);
        if pred(&device["health"]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health never changed: {device}; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A block indicator created through the API reaches the agent with its next heartbeat: a
/// file of that hash cannot run (EPERM) while another one does, the attempt shows in hunting
/// as `ExecutionBlocked` with the process that tried and raises the indicator's alert;
/// a restart without the server keeps the block; deleting the indicator lets the file run
/// again.
#[test]
fn block_indicators_are_enforced_by_the_agent() {
    if !is_root() {
        return skip_or_fail("the agent's eBPF sensor and exec guard need root");
    }
    let LocalAgent {
        dir,
        server,
        admin,
        log,
        device,
        _agent,
        ..
    } = LocalAgent::start("block");
    let id = device["id"].as_str().unwrap();

    let (tool, other) = (dir.join("tool.sh"), dir.join("other.sh"));
    let marker = format!("blocked-{}", std::process::id());
    for (path, text) in [(&tool, marker.as_str()), (&other, "other")] {
        std::fs::write(path, format!("#!/bin/sh\necho {text}\n")).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let sha = sha256_of(&tool);
    let indicator = server.post(
        "/api/v1/indicators",
        &admin,
        json!({"kind": "sha256", "value": sha, "action": "block", "severity": "high", "title": "bad tool"}),
    );
    wait_health(&server, &admin, id, &log, |h| {
        h["prevention"]["blocked_files"] == 1
    });
    let err = Command::new(&tool)
        .output()
        .expect_err("the blocked file ran");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let out = Command::new(&other).output().expect("another file runs");
    assert_eq!(out.stdout, b"other\n");

    let since = Instant::now();
    let query = format!(
        "DeviceEvents | where ActionType == 'ExecutionBlocked' and SHA256 == '{sha}' \
         | project FolderPath, InitiatingProcessId, InitiatingProcessParentId, AdditionalFields"
    );
    let (rows, _) = wait_rows(&server, &admin, &query, since);
    assert_eq!(
        rows[0]["FolderPath"],
        tool.canonicalize().unwrap().to_str().unwrap(),
        "{rows:?}"
    );
    // The child this test spawned tried, and failed.
    assert_eq!(
        rows[0]["InitiatingProcessParentId"].as_u64(),
        Some(u64::from(std::process::id())),
        "{rows:?}"
    );
    let extra: Value = serde_json::from_str(rows[0]["AdditionalFields"].as_str().unwrap()).unwrap();
    assert_eq!(extra["IndicatorId"], indicator["id"], "{extra}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.get("/api/v1/alerts?source=indicator", &admin)["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["title"] == "Indicator matched: bad tool")
    {
        assert!(Instant::now() < deadline, "no alert for the blocked file");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Restarted while the server does not answer (stopped, not gone), the agent enforces the
    // blocklist it saved: the file is refused again within seconds, before any heartbeat.
    drop(_agent);
    let server_pid = server.child.id().to_string();
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &server_pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let restarted = start_agent(&agent_binary(), &dir.join("agent"), &log, &["--no-logons"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match Command::new(&tool).output() {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(_) => {
                signal("-CONT");
                panic!(
                    "the blocked file runs after a restart without the server; agent log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    };
    signal("-CONT");
    assert_eq!(refused.raw_os_error(), Some(libc::EPERM), "{refused}");

    let path = format!("/api/v1/indicators/{}", indicator["id"].as_str().unwrap());
    let (status, body) = server.call("DELETE", &path, Some(&admin), None);
    assert!(status == 200 || status == 204, "{status} {body}");
    wait_health(&server, &admin, id, &log, |h| {
        h["prevention"]["blocked_files"] == 0
    });
    let out = Command::new(&tool).output().expect("runs once unblocked");
    assert_eq!(out.stdout, format!("{marker}\n").as_bytes());

    // A blocked domain reaches the agent's rules too. (What those rules do is tested in the
    // namespaces of rampart-agent's response tests: the agents these tests run side by side
    // share the machine's nftables, one table per machine.)
    let domain = format!("blocked-{}.rampart-test.example", std::process::id());
    let indicator = server.post(
        "/api/v1/indicators",
        &admin,
        json!({"kind": "domain", "value": domain, "action": "block", "severity": "high", "title": "bad domain"}),
    );
    wait_health(&server, &admin, id, &log, |h| {
        h["prevention"]["blocked_domains"] == 1
    });
    let path = format!("/api/v1/indicators/{}", indicator["id"].as_str().unwrap());
    let (status, body) = server.call("DELETE", &path, Some(&admin), None);
    assert!(status == 200 || status == 204, "{status} {body}");
    wait_health(&server, &admin, id, &log, |h| {
        h["prevention"]["blocked_domains"] == 0
    });
    drop(restarted);
}

/// A DNS query for the A record of `name` (RFC 1035 wire format).
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn sha256_of_bytes(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Without eBPF the agent falls back to the process connector and fanotify, says so in its
/// health, and still records processes, and files under the configured paths.
#[test]
fn without_ebpf_processes_come_from_the_process_connector() {
    if !is_root() {
        return skip_or_fail("the process connector needs root");
    }
    let agent_bin = agent_binary();
    let dir = scratch("agent-fallback");
    let server = Server::start(&dir.join("server"), true, &[]);
    let admin = server.login("admin", PASSWORD);
    let state = dir.join("agent");
    let host = format!("fallback-host-{}", std::process::id());
    enroll(&agent_bin, &server, &admin, &state, &host);
    // fanotify names paths canonically (no symlinks, e.g. in TMPDIR).
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let work = std::fs::canonicalize(&work).unwrap();
    let watched = format!("{}/", work.display());
    let log = dir.join("agent.log");
    let _agent = start_agent(
        &agent_bin,
        &state,
        &log,
        &[
            "--no-logons",
            "--sensor",
            "proc-connector",
            "--file-path",
            &watched,
        ],
    );
    let device = wait_ready(&server, &admin, &host, &log);
    let mode = device["health"]["sensor_mode"].as_str().unwrap_or_default();
    assert!(
        ["proc-connector+fanotify", "proc-connector"].contains(&mode),
        "{device}"
    );
    assert_eq!(
        device["health_status"], "misconfigured",
        "a degraded sensor shows"
    );
    // The process connector says only "pid N exec'd": the rest is read from /proc, so the
    // process must live a moment. Its duration is the marker.
    let seconds = format!("2.{:06}", std::process::id() % 1_000_000);
    let mut child = Command::new("/bin/sleep").arg(&seconds).spawn().unwrap();
    let (rows, _) = wait_rows(
        &server,
        &admin,
        &format!(
            "DeviceProcessEvents | where DeviceName == '{host}' and ProcessCommandLine == '/bin/sleep {seconds}'"
        ),
        Instant::now(),
    );
    let _ = child.wait();
    assert_eq!(rows[0]["InitiatingProcessId"], std::process::id());
    assert_eq!(rows[0]["FileName"], "sleep");

    if mode != "proc-connector+fanotify" {
        return skip_or_fail(&format!(
            "fanotify is unavailable here: {}",
            device["health"]["file_events"]
        ));
    }
    assert_eq!(
        device["health"]["file_events"]["source"], "fanotify",
        "{device}"
    );
    // A file bash writes under the watched path; one outside it is not recorded. bash lives on
    // a moment, without exec'ing its last command, so /proc still shows bash when read.
    let file = work.join(format!("fallback-{}.txt", std::process::id()));
    let outside = dir.join(format!("outside-{}.txt", std::process::id()));
    let mut shell = Command::new("/bin/bash")
        .args([
            "-c",
            &format!(
                "echo written > {}; echo other > {}; sleep 1; true",
                file.display(),
                outside.display()
            ),
        ])
        .spawn()
        .unwrap();
    let bash_pid = shell.id();
    let (rows, latency) = wait_rows(
        &server,
        &admin,
        &format!(
            "DeviceFileEvents | where DeviceName == '{host}' and FolderPath == '{}'",
            file.display()
        ),
        Instant::now(),
    );
    assert!(shell.wait().unwrap().success());
    assert_eq!(rows[0]["ActionType"], "FileCreated", "{}", rows[0]);
    assert_eq!(rows[0]["InitiatingProcessId"], bash_pid, "{}", rows[0]);
    assert_eq!(rows[0]["InitiatingProcessFileName"], "bash", "{}", rows[0]);
    let answer = server.hunt(
        &admin,
        &format!(
            "DeviceFileEvents | where DeviceName == '{host}' and FolderPath == '{}'",
            outside.display()
        ),
    );
    assert_eq!(
        answer["rows"],
        json!([]),
        "outside the file paths: {answer}"
    );
    eprintln!("fanotify file event to hunting: {latency:?}");
}
