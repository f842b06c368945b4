//! `rampart ingest --server URL`: event logs uploaded to a running server, which stores them,
//! detects on them and answers with what it raised.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rampart_sources::evtx;
use serde_json::Value;

use crate::EXIT_PARTIAL;
use crate::output::Table as TextTable;

/// Where to upload and as whom.
pub struct Target<'a> {
    pub server: &'a str,
    pub token: &'a str,
    /// The CA that signed the server's certificate (DATA_DIR/pki/ca.crt on the server).
    pub cacert: Option<&'a Path>,
}

pub fn run(target: &Target<'_>, paths: &[PathBuf], json: bool) -> Result<ExitCode> {
    let agent = agent(target.cacert)?;
    let (files, mut problems) = {
        let (files, errors) = evtx::collect_files(paths);
        (
            files,
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        )
    };
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let bar = crate::output::progress_bar("uploading", total, files.len());
    let base = target.server.trim_end_matches('/');
    let mut answers = Vec::new();
    for file in &files {
        let name = file.file_name().map_or_else(
            || "upload.evtx".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let size = std::fs::metadata(file).map_or(0, |m| m.len());
        let mut body =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        let url = format!("{base}/api/v1/ingest/evtx?name={}", urlencode(&name));
        let answer = agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", target.token))
            .content_type("application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut body));
        bar.inc(size);
        match answer {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
                if status == 401 || status == 403 {
                    bar.finish_and_clear();
                    bail!("{base}: {}", problem_detail(&body, status));
                }
                if status != 200 {
                    problems.push(format!(
                        "{}: {}",
                        file.display(),
                        problem_detail(&body, status)
                    ));
                    continue;
                }
                for e in body["errors"].as_array().into_iter().flatten() {
                    problems.push(format!(
                        "{}: {}",
                        file.display(),
                        e.as_str().unwrap_or_default()
                    ));
                }
                answers.push((name, body));
            }
            Err(e) => {
                bar.finish_and_clear();
                bail!("cannot reach {base}: {e}");
            }
        }
    }
    bar.finish_and_clear();
    for p in &problems {
        eprintln!("warning: {p}");
    }
    if json {
        let list: Vec<&Value> = answers.iter().map(|(_, v)| v).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print_summary(&answers)?;
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

fn print_summary(answers: &[(String, Value)]) -> Result<()> {
    let mut t = TextTable::with_header(
        [
            "file",
            "records",
            "set aside",
            "alerts",
            "repeats",
            "incidents",
        ]
        .map(String::from)
        .to_vec(),
    );
    let mut sums = [0u64; 5];
    for (name, a) in answers {
        let cells = [
            a["records"].as_u64().unwrap_or(0),
            a["set_aside"].as_u64().unwrap_or(0),
            a["alerts"]["raised"].as_u64().unwrap_or(0),
            a["alerts"]["deduplicated"].as_u64().unwrap_or(0),
            a["alerts"]["incidents"]
                .as_array()
                .map_or(0, |l| l.len() as u64),
        ];
        for (s, c) in sums.iter_mut().zip(cells) {
            *s += c;
        }
        t.row_vec(
            std::iter::once(name.clone())
                .chain(cells.map(|c| c.to_string()))
                .collect(),
        );
    }
    t.row_vec(
        std::iter::once(format!("{} files", answers.len()))
            .chain(sums.map(|c| c.to_string()))
            .collect(),
    );
    t.write(&mut std::io::stderr().lock())?;
    Ok(())
}

fn problem_detail(body: &Value, status: u16) -> String {
    match body["detail"].as_str() {
        Some(d) => format!("{d} (HTTP {status})"),
        None => format!("HTTP {status}"),
    }
}

/// Percent-encodes a file name for a query parameter.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An HTTP client that answers every status (errors are read as problems), trusting `cacert`
/// when given (else the system's web roots).
fn agent(cacert: Option<&Path>) -> Result<ureq::Agent> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if let Some(path) = cacert {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let cert = Certificate::from_pem(&pem)
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?
            .to_owned();
        tls = tls.root_certs(RootCerts::Specific(Arc::new(vec![cert])));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .new_agent())
}
