//! The agent's side of the gateway: mutual-TLS calls for telemetry, heartbeats and action
//! results. Telemetry goes in zstd-compressed batches that carry their queue sequence range,
//! so a batch the server already stored (answer lost, agent restarted) is not stored twice.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::state::Identity;

const TIMEOUT: Duration = Duration::from_secs(60);
/// An investigation package (up to 200 MiB) may take long on a slow link.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What became of a telemetry batch.
#[derive(Debug)]
pub enum Delivery {
    /// Durable on the server (or already was): acknowledge it in the queue.
    Stored { rows: u64, duplicate: bool },
    /// The server is busy: try again after this long.
    Busy(Duration),
    /// The server will never take this batch (it is malformed for it): count it as dropped.
    Refused(String),
}

pub struct Client {
    http: ureq::Agent,
    base: String,
}

impl Client {
    pub fn new(identity: &Identity) -> Result<Client> {
        Ok(Client {
            http: http_agent(
                &identity.ca_pem,
                Some((&identity.cert_pem, &identity.key_pem)),
            )?,
            base: identity.enrollment.server.clone(),
        })
    }

    /// Posts one zstd-compressed telemetry body (`{"batches": ...}`, see [`crate::batch`])
    /// holding the rows `first..=last`. Network failures and server errors are `Err` (retry
    /// later).
    pub fn send_telemetry(&self, compressed: &[u8], first: u64, last: u64) -> Result<Delivery> {
        let mut answer = self
            .http
            .post(&format!("{}/api/v1/agents/telemetry", self.base))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "zstd")
            .header("X-Rampart-Sequence", &format!("{first}-{last}"))
            .send(compressed)
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = answer.status().as_u16();
        let retry_after = answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let json: Value = answer.body_mut().read_json().unwrap_or(Value::Null);
        match status {
            200 => Ok(Delivery::Stored {
                rows: json["rows"].as_u64().unwrap_or(0),
                duplicate: json["duplicate"].as_bool().unwrap_or(false),
            }),
            429 | 503 => Ok(Delivery::Busy(Duration::from_secs(
                retry_after.unwrap_or(1).clamp(1, 300),
            ))),
            400 | 413 | 422 => Ok(Delivery::Refused(format!(
                "{status}: {}",
                problem_detail(&json)
            ))),
            _ => Err(anyhow!("telemetry: {status}: {}", problem_detail(&json))),
        }
    }

    /// Posts health and counters; answers the actions the server hands over.
    /// Posts health and counters; the answer carries the actions handed over and the policy.
    pub fn heartbeat(&self, body: &Value) -> Result<Value> {
        self.post_json("/api/v1/agents/heartbeat", body)
    }

    /// Waits up to `wait` for actions (the server answers as soon as one is created).
    /// `None`: the server has no long-poll route (actions then come with heartbeats).
    pub fn wait_actions(&self, wait: Duration) -> Result<Option<Vec<Value>>> {
        let mut answer = self
            .http
            .get(&format!("{}/api/v1/agents/actions", self.base))
            .query("wait_secs", wait.as_secs().to_string())
            .config()
            .timeout_global(Some(wait + TIMEOUT))
            .build()
            .call()
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = answer.status().as_u16();
        let json: Value = answer.body_mut().read_json().unwrap_or(Value::Null);
        match status {
            200 => Ok(Some(
                json["actions"].as_array().cloned().unwrap_or_default(),
            )),
            404 | 405 => Ok(None),
            _ => Err(anyhow!("actions: {status}: {}", problem_detail(&json))),
        }
    }

    /// Reports an action's progress or result.
    pub fn action_result(&self, id: &str, body: &Value) -> Result<()> {
        self.post_json(&format!("/api/v1/agents/actions/{id}/result"), body)
            .map(drop)
    }

    /// The server's URL, `https://HOST:PORT`.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// Uploads an investigation package (`.tar.gz`) for action `id`.
    pub fn upload_package(&self, id: &str, package: &Path) -> Result<()> {
        let file = std::fs::File::open(package)
            .with_context(|| format!("cannot read {}", package.display()))?;
        let path = format!("/api/v1/agents/actions/{id}/package");
        let answer = self
            .http
            .post(&format!("{}{path}", self.base))
            .config()
            .timeout_global(Some(UPLOAD_TIMEOUT))
            .build()
            .header("Content-Type", "application/gzip")
            .send(file);
        self.answer(&path, answer).map(drop)
    }

    fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let answer = self
            .http
            .post(&format!("{}{path}", self.base))
            .send_json(body);
        self.answer(path, answer)
    }

    /// A 2xx answer's JSON body (Null when none); anything else is an error with its detail.
    fn answer(
        &self,
        path: &str,
        answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let mut answer = answer.with_context(|| format!("cannot reach {}", self.base))?;
        let status = answer.status().as_u16();
        let json: Value = answer.body_mut().read_json().unwrap_or(Value::Null);
        if status / 100 != 2 {
            return Err(anyhow!("{path}: {status}: {}", problem_detail(&json)));
        }
        Ok(json)
    }
}

/// An HTTPS client trusting only `ca_pem`, presenting `client` (certificate, key) when given.
/// Every status is an answer (problems are read from the body).
pub fn http_agent(ca_pem: &str, client: Option<(&str, &str)>) -> Result<ureq::Agent> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let ca = Certificate::from_pem(ca_pem.as_bytes())
        .context("the CA certificate is not PEM")?
        .to_owned();
    let mut tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca])));
    if let Some((cert, key)) = client {
        let cert = Certificate::from_pem(cert.as_bytes())
            .context("the agent certificate is not PEM")?
            .to_owned();
        let key = PrivateKey::from_pem(key.as_bytes())
            .context("the agent key is not PEM")?
            .to_owned();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    let config = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .build();
    Ok(ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        CachingResolver::new(DefaultResolver::default()),
    ))
}

/// How long a resolution of the server's name is used.
const RESOLVED_FOR: Duration = Duration::from_secs(60);

/// The last resolution of a name, used for [`RESOLVED_FOR`]: ureq resolves the server's name
/// before it looks for a pooled connection, and with a timeout set it spawns a thread for each
/// resolution, so every telemetry request, heartbeat and long poll cost a thread.
#[derive(Debug)]
struct CachingResolver<R> {
    inner: R,
    last: Mutex<Option<(String, Instant, ResolvedSocketAddrs)>>,
}

impl<R> CachingResolver<R> {
    fn new(inner: R) -> Self {
        CachingResolver {
            inner,
            last: Mutex::new(None),
        }
    }
}

impl<R: Resolver> Resolver for CachingResolver<R> {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // Scheme and authority: what the address depends on.
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or_default(),
            uri.authority().map_or("", |a| a.as_str())
        );
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((name, at, addrs)) = last.as_ref()
            && *name == key
            && at.elapsed() < RESOLVED_FOR
        {
            return Ok(addrs.clone());
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *last = Some((key, Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// `https://HOST:PORT[/]` → (HOST, PORT); IPv6 hosts without brackets.
pub fn host_port(server: &str) -> Result<(String, u16)> {
    let uri: ureq::http::Uri = server
        .parse()
        .with_context(|| format!("'{server}' is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(anyhow!(
            "'{server}': agents talk to the server over https://"
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("'{server}' names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// The `detail` (or `title`) of a problem+json answer.
pub fn problem_detail(answer: &Value) -> String {
    answer["detail"]
        .as_str()
        .or_else(|| answer["title"].as_str())
        .map_or_else(|| answer.to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers 127.0.0.1:PORT, counting the calls.
    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl Resolver for Counting {
        fn resolve(
            &self,
            uri: &ureq::http::Uri,
            _: &ureq::config::Config,
            _: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.0.fetch_add(1, Ordering::Relaxed);
            let mut addrs = self.empty();
            addrs.push(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                uri.port_u16().unwrap_or(443),
            )));
            Ok(addrs)
        }
    }

    #[test]
    fn a_name_is_resolved_once_while_its_resolution_is_fresh() {
        let resolver = CachingResolver::new(Counting::default());
        let config = ureq::config::Config::default();
        let resolve = |uri: &str| {
            let uri: ureq::http::Uri = uri.parse().unwrap();
            let addrs = resolver
                .resolve(&uri, &config, NextTimeout::default())
                .unwrap();
            addrs.iter().map(|a| a.port()).collect::<Vec<_>>()
        };
        assert_eq!(
            resolve("https://server:8443/api/v1/agents/telemetry"),
            [8443]
        );
        assert_eq!(
            resolve("https://server:8443/api/v1/agents/heartbeat"),
            [8443]
        );
        assert_eq!(
            resolver.inner.0.load(Ordering::Relaxed),
            1,
            "the path does not matter"
        );
        assert_eq!(resolve("https://other:9443/"), [9443]);
        assert_eq!(
            resolver.inner.0.load(Ordering::Relaxed),
            2,
            "another name is resolved"
        );
        // A stale resolution is renewed.
        if let Some((_, at, _)) = resolver.last.lock().unwrap().as_mut() {
            *at = at.checked_sub(RESOLVED_FOR).expect("a minute of uptime");
        }
        assert_eq!(resolve("https://other:9443/"), [9443]);
        assert_eq!(resolver.inner.0.load(Ordering::Relaxed), 3);
    }
}
