//! What the integration tests share: a `rampart server` process on a free port, driven over
//! HTTP(S) as a client would.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";

/// A server process on a free port with its own data directory.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub http: ureq::Agent,
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rampart-server-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub fn agent(ca: Option<&Path>) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("ca.crt");
        let cert = Certificate::from_pem(&pem).expect("PEM").to_owned();
        tls = tls.root_certs(RootCerts::Specific(Arc::new(vec![cert])));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .new_agent()
}

impl Server {
    /// Starts `rampart server` on `dir` (plain HTTP unless `tls`), waiting until it listens.
    pub fn start(dir: &Path, tls: bool, extra: &[&str]) -> Server {
        Server::start_on(dir, "127.0.0.1:0", tls, extra)
    }

    /// Starts it on `listen` (a fixed port survives a restart, as agents need).
    pub fn start_on(dir: &Path, listen: &str, tls: bool, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
        cmd.args(["server", "--data-dir"])
            .arg(dir)
            .args(["--listen", listen])
            .args(extra)
            .env("RAMPART_ADMIN_PASSWORD", PASSWORD)
            .env("RAMPART_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.with_extension("log")).expect("log file"));
        if !tls {
            cmd.arg("--insecure-http");
        }
        let mut child = cmd.spawn().expect("the binary runs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("Rampart server listening on ") {
                        break rest.trim().to_string();
                    }
                }
                _ => {
                    let log =
                        std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                    panic!("the server did not start:\n{log}");
                }
            }
        };
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let ca = dir.join("pki/ca.crt");
        Server {
            child,
            url: url.trim_end_matches('/').to_string(),
            http: agent(tls.then_some(ca.as_path())),
        }
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut response = match (method, body) {
            ("GET" | "DELETE", _) => {
                let mut req = if method == "GET" {
                    self.http.get(&url)
                } else {
                    self.http.delete(&url)
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            (_, body) => {
                let mut req = match method {
                    "POST" => self.http.post(&url),
                    "PATCH" => self.http.patch(&url),
                    "PUT" => self.http.put(&url),
                    other => panic!("method {other}"),
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.send_json(body.cloned().unwrap_or_else(|| json!({})))
            }
        }
        .expect("the server answers");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn get(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.call("GET", path, Some(token), None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, answer) = self.call("POST", path, Some(token), Some(&body));
        assert!(
            status == 200 || status == 201,
            "POST {path}: {status} {answer}"
        );
        answer
    }

    pub fn login(&self, user: &str, password: &str) -> String {
        let (status, body) = self.call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({"username": user, "password": password})),
        );
        assert_eq!(status, 200, "login {user}: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    pub fn upload(&self, token: &str, file: &Path) -> (u16, Value) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let url = format!(
            "{}/api/v1/ingest/evtx?name={}",
            self.url,
            name.replace(' ', "%20")
        );
        let mut response = self
            .http
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .content_type("application/octet-stream")
            .send(std::fs::read(file).expect("evtx"))
            .expect("the server answers");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_json().unwrap_or(Value::Null),
        )
    }

    pub fn hunt(&self, token: &str, query: &str) -> Value {
        self.post("/api/v1/hunting/query", token, json!({"query": query}))
    }

    pub fn count(&self, token: &str, query: &str) -> u64 {
        let r = self.hunt(token, &format!("{query} | count"));
        r["rows"][0][0]
            .as_u64()
            .unwrap_or_else(|| panic!("count of {query}: {r}"))
    }
}

impl Server {
    /// Stops it as an operator does (SIGTERM: in-flight requests finish, everything flushes).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
