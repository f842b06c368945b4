//! Load generator for `rampart server` (run by `bench/server.sh`): concurrent clients post
//! batches of forwarded Windows events to `/api/v1/ingest/events` for a fixed time, and the
//! server's sustained rate, acknowledgement latency, CPU time and memory are reported.
//!
//! The events are the records of every `.evtx` file below `--samples`, rendered as the evtx
//! crate renders them (the route's wire shape), shuffled deterministically and replayed in
//! batches, so each batch is a realistic mix of Sysmon, Security, System, PowerShell and
//! Defender records.
//!
//! A fleet never sends the same record twice: each replay of a record is given its own
//! `EventRecordID` (the original plus a billion per replay) and, with the times moved to now,
//! a time that advances with the clock (its moved time plus the time since the generator
//! started), so its stored text (`AdditionalFields`) is its own too. `--repeat-records` sends
//! the records unchanged every time instead (as earlier builds of this benchmark did). Bodies
//! are built and compressed as they are sent, in both modes.
//!
//! A fleet forwards what just happened, so by default each file's records are moved in time
//! (the gaps between them kept) to end when the generator starts: the store then writes the
//! few day partitions a live server writes, and alert deduplication and incident windows see
//! each attack's own sequence. `--original-times` replays the records as they were recorded
//! (the samples span years: every flush then writes hundreds of day partitions).
//!
//! ```text
//! server_load --url http://127.0.0.1:8080 --password P --pid PID --samples DIR
//!             [--clients 4] [--batch 1000] [--seconds 60] [--encoding zstd|gzip|none]
//!             [--original-times] [--repeat-records] [--requests N] [--skip N]
//!             [--token-file FILE]
//! ```
//!
//! `--requests N` stops once N batches were sent (within `--seconds`): a fixed amount of work,
//! for counting the server's instructions under callgrind (`CALLGRIND=1 bench/server.sh`).
//! `--skip N` starts where a run of N batches stopped (the same replays, ids and alerts'
//! repeats follow on), so a counted run can follow a warm-up run. `--token-file FILE` keeps
//! the session token there: a run that finds one does not log in (a login's password hash is
//! ~100 M instructions, which a short counted run should not carry).
//!
//! "Per core" divides by the server process's CPU seconds (user + system, from
//! `/proc/PID/stat`) over the run, so it does not depend on how many cores the machine has or
//! what else (this generator) runs on them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

struct Args {
    url: String,
    password: String,
    pid: u32,
    samples: PathBuf,
    clients: usize,
    batch: usize,
    seconds: u64,
    encoding: String,
    original_times: bool,
    repeat_records: bool,
    /// Batches to send in all (0: as many as `seconds` allow).
    requests: u64,
    /// Batches of the replay sequence to pass over before the first sent.
    skip: u64,
    /// Where the session token is kept between runs.
    token_file: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        url: String::new(),
        password: String::new(),
        pid: 0,
        samples: PathBuf::new(),
        clients: 4,
        batch: 1000,
        seconds: 60,
        encoding: "zstd".into(),
        original_times: false,
        repeat_records: false,
        requests: 0,
        skip: 0,
        token_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--original-times" {
            args.original_times = true;
            continue;
        }
        if flag == "--repeat-records" {
            args.repeat_records = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => args.url = value.trim_end_matches('/').to_string(),
            "--password" => args.password = value,
            "--pid" => args.pid = value.parse()?,
            "--samples" => args.samples = value.into(),
            "--clients" => args.clients = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--encoding" => args.encoding = value,
            "--requests" => args.requests = value.parse()?,
            "--skip" => args.skip = value.parse()?,
            "--token-file" => args.token_file = Some(value.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    if args.url.is_empty() || args.pid == 0 || args.samples.as_os_str().is_empty() {
        bail!("--url, --pid and --samples are required");
    }
    if args.clients == 0 || args.batch == 0 {
        bail!("--clients and --batch must be at least 1");
    }
    if !matches!(args.encoding.as_str(), "none" | "zstd" | "gzip") {
        bail!("unknown encoding {}", args.encoding);
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let records = sample_records(&args.samples, !args.original_times)?;
    let raw_bytes: usize = records.iter().map(Template::len).sum();
    eprintln!(
        "{} records ({:.1} MB of JSON lines), {}, in batches of {} ({}), {} clients, {} s",
        records.len(),
        raw_bytes as f64 / 1e6,
        if args.repeat_records {
            "each sent unchanged every time"
        } else {
            "each replay with its own record id and time"
        },
        args.batch,
        args.encoding,
        args.clients,
        args.seconds
    );

    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let token = login(&http, &args)?;

    let stop = Arc::new(AtomicBool::new(false));
    let start = args.skip.saturating_mul(args.batch as u64);
    let next = Arc::new(AtomicU64::new(start));
    let events = Arc::new(AtomicU64::new(0));
    let detections = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let records = Arc::new(records);

    let cpu_start = cpu_seconds(args.pid)?;
    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|_| {
            let (http, stop, next, events, detections, refused, latencies, failures, records) = (
                http.clone(),
                stop.clone(),
                next.clone(),
                events.clone(),
                detections.clone(),
                refused.clone(),
                latencies.clone(),
                failures.clone(),
                records.clone(),
            );
            let url = format!("{}/api/v1/ingest/events?name=bench", args.url);
            let auth = format!("Bearer {token}");
            let encoding = args.encoding.clone();
            let (batch, repeat) = (args.batch, args.repeat_records);
            let last = match args.requests {
                0 => u64::MAX,
                n => start.saturating_add(n.saturating_mul(batch as u64)),
            };
            // Recorded times stay as recorded; moved ones move on with the clock.
            let still = repeat || args.original_times;
            std::thread::spawn(move || {
                let mut text = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let first = next.fetch_add(batch as u64, Ordering::Relaxed);
                    if first >= last {
                        break;
                    }
                    let moved = if still {
                        Duration::ZERO
                    } else {
                        started.elapsed()
                    };
                    text.clear();
                    for n in first..first + batch as u64 {
                        let (replay, i) = (n / records.len() as u64, n % records.len() as u64);
                        let replay = if repeat { 0 } else { replay };
                        records[i as usize].render(replay, moved, &mut text);
                    }
                    let count = batch as u64;
                    let body = match encode(&text, &encoding) {
                        Ok(body) => body,
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            break;
                        }
                    };
                    let mut req = http
                        .post(&url)
                        .header("Authorization", &auth)
                        .content_type("application/x-ndjson");
                    if encoding != "none" {
                        req = req.header("Content-Encoding", &encoding);
                    }
                    let sent = Instant::now();
                    match req.send(&body[..]) {
                        Ok(mut r) if r.status() == 200 => {
                            let took = sent.elapsed();
                            let answer: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                            if answer["records"].as_u64() != Some(count) {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("short ack: {answer}"));
                            }
                            events.fetch_add(count, Ordering::Relaxed);
                            let found = answer["detections"].as_u64().unwrap_or(0);
                            detections.fetch_add(found, Ordering::Relaxed);
                            latencies.lock().unwrap().push(took);
                        }
                        Ok(r) if r.status() == 429 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Ok(mut r) => {
                            let text = r.body_mut().read_to_string().unwrap_or_default();
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{}: {text}", r.status()));
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();

    // RSS once a second while the clients run.
    let mut rss = Vec::new();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut last_report = Instant::now();
    while Instant::now() < deadline && !clients.iter().all(|c| c.is_finished()) {
        std::thread::sleep(Duration::from_secs(1));
        rss.push((started.elapsed().as_secs_f64(), rss_kib(args.pid)?));
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "  {:>5.0} s: {} events acknowledged, RSS {} MiB",
                started.elapsed().as_secs_f64(),
                events.load(Ordering::Relaxed),
                rss.last().map_or(0, |r| r.1 / 1024)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(args.pid)? - cpu_start;

    let events = events.load(Ordering::Relaxed);
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let failures = failures.lock().unwrap();
    for f in failures.iter().take(5) {
        eprintln!("failure: {f}");
    }
    let kib: Vec<u64> = rss.iter().map(|r| r.1).collect();
    let third = (kib.len() / 3).max(1);
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64 / 1024.0;
    let summary = json!({
        "clients": args.clients,
        "batch": args.batch,
        "encoding": args.encoding,
        "original_times": args.original_times,
        "repeat_records": args.repeat_records,
        "seconds": wall,
        "requests": latencies.len(),
        "events": events,
        "events_per_s": events as f64 / wall,
        // The attack samples are dense with detections; each becomes alert work.
        "detections": detections.load(Ordering::Relaxed),
        "server_cpu_s": cpu,
        "events_per_cpu_s": events as f64 / cpu.max(1e-9),
        "latency_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0)},
        "refused_429": refused.load(Ordering::Relaxed),
        "failures": failures.len(),
        "rss_mib": {
            "max": kib.iter().max().copied().unwrap_or(0) / 1024,
            "first_third_mean": mean(&kib[..third.min(kib.len())]),
            "last_third_mean": mean(&kib[kib.len().saturating_sub(third)..]),
        },
        "rss_samples_mib": kib.iter().map(|k| k / 1024).collect::<Vec<_>>(),
        // Flushes and compaction: merged rows per flushed row is the write amplification.
        "store": store_work(&http, &args.url, &token)?,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{summary}")?;
    Ok(())
}

/// The server's `rampart_store_*` counters from `/metrics`, by name without the prefix.
fn store_work(http: &ureq::Agent, url: &str, token: &str) -> Result<Value> {
    let text = http
        .get(&format!("{url}/metrics"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let work: serde_json::Map<String, Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("rampart_store_")?.split_once(' '))
        .filter_map(|(name, v)| Some((name.to_string(), json!(v.parse::<f64>().ok()?))))
        .collect();
    Ok(Value::Object(work))
}

fn login(http: &ureq::Agent, args: &Args) -> Result<String> {
    let kept = args
        .token_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok());
    if let Some(token) = kept.filter(|t| !t.trim().is_empty()) {
        return Ok(token.trim().to_string());
    }
    let mut r = http
        .post(&format!("{}/api/v1/auth/login", args.url))
        .send_json(json!({"username": "admin", "password": args.password}))?;
    let body: Value = r.body_mut().read_json()?;
    let token = body["token"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("login failed: {body}"))?;
    if let Some(file) = &args.token_file {
        std::fs::write(file, &token).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(token)
}

/// One sample record as a JSON line, with holes for its record id and time.
struct Template {
    /// The line's text between the holes.
    pieces: Vec<String>,
    /// What goes in each hole, in order.
    holes: Vec<Hole>,
    record_id: u64,
    time: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Clone, Copy)]
enum Hole {
    RecordId,
    Time,
}

/// Marks a hole in the rendered record: no record holds these strings.
const RECORD_ID_MARK: &str = "\u{1}rampart-record-id\u{1}";
const TIME_MARK: &str = "\u{1}rampart-time\u{1}";

/// Added to a record's id per replay: replays never share ids (the samples' are far smaller).
const IDS_PER_REPLAY: u64 = 1_000_000_000;

impl Template {
    fn new(mut record: Value) -> Template {
        let record_id = record["Event"]["System"]["EventRecordID"].as_u64();
        let time = written(&record);
        let system = &mut record["Event"]["System"];
        if record_id.is_some() {
            system["EventRecordID"] = json!(RECORD_ID_MARK);
        }
        if time.is_some() {
            system["TimeCreated_attributes"]["SystemTime"] = json!(TIME_MARK);
        }
        let text = record.to_string();
        let (id_mark, time_mark) = (
            json!(RECORD_ID_MARK).to_string(),
            json!(TIME_MARK).to_string(),
        );
        let mut pieces = Vec::new();
        let mut holes = Vec::new();
        let mut rest = text.as_str();
        loop {
            let next = [
                (rest.find(&id_mark), Hole::RecordId, id_mark.len()),
                (rest.find(&time_mark), Hole::Time, time_mark.len()),
            ]
            .into_iter()
            .filter_map(|(at, hole, len)| Some((at?, hole, len)))
            .min_by_key(|(at, ..)| *at);
            let Some((at, hole, len)) = next else { break };
            pieces.push(rest[..at].to_string());
            holes.push(hole);
            rest = &rest[at + len..];
        }
        pieces.push(rest.to_string());
        Template {
            pieces,
            holes,
            record_id: record_id.unwrap_or(0),
            time,
        }
    }

    /// Bytes of one rendering, about.
    fn len(&self) -> usize {
        self.pieces.iter().map(String::len).sum::<usize>() + 40 * self.holes.len() + 1
    }

    /// Appends the `replay`-th sending of the record, its time moved on by `moved`, as a line.
    fn render(&self, replay: u64, moved: Duration, out: &mut Vec<u8>) {
        for (i, piece) in self.pieces.iter().enumerate() {
            out.extend_from_slice(piece.as_bytes());
            match self.holes.get(i) {
                Some(Hole::RecordId) => {
                    let id = self.record_id + replay * IDS_PER_REPLAY;
                    out.extend_from_slice(id.to_string().as_bytes());
                }
                Some(Hole::Time) => {
                    let t = self.time.unwrap_or_default()
                        + chrono::Duration::from_std(moved).unwrap_or_default();
                    let text = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                    out.extend_from_slice(json!(text).to_string().as_bytes());
                }
                None => {}
            }
        }
        out.push(b'\n');
    }
}

/// Every record below `dir` as a JSON line template, in a fixed pseudo-random order (so that a
/// batch mixes files, as a forwarder's would mix channels); with `recent`, each file's records
/// moved to end now.
fn sample_records(dir: &Path, recent: bool) -> Result<Vec<Template>> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.into_path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("evtx"))
        })
        .collect();
    files.sort();
    let settings = evtx::ParserSettings::new().separate_json_attributes(true);
    let now = chrono::Utc::now();
    let mut templates = Vec::new();
    for file in &files {
        let Ok(parser) = evtx::EvtxParser::from_path(file) else {
            continue;
        };
        let mut parser = parser.with_configuration(settings.clone());
        let mut records: Vec<Value> = parser
            .records_json_value()
            .flatten()
            .map(|r| r.data)
            .collect();
        if recent {
            let last = records.iter().filter_map(written).max();
            if let Some(shift) = last.map(|last| now - last) {
                for record in &mut records {
                    if let Some(t) = written(record) {
                        record["Event"]["System"]["TimeCreated_attributes"]["SystemTime"] =
                            json!((t + shift).to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
                    }
                }
            }
        }
        templates.extend(records.into_iter().map(Template::new));
    }
    if templates.is_empty() {
        bail!("no records below {}", dir.display());
    }
    // xorshift: deterministic, no dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..templates.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        templates.swap(i, (state % (i as u64 + 1)) as usize);
    }
    Ok(templates)
}

/// When a record was written (`System.TimeCreated_attributes.SystemTime`).
fn written(record: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = record["Event"]["System"]["TimeCreated_attributes"]["SystemTime"].as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.to_utc())
}

/// A request body: JSON lines, compressed as `encoding` says (checked by `parse_args`).
fn encode(text: &[u8], encoding: &str) -> Result<Vec<u8>> {
    Ok(match encoding {
        // One frame that declares its size, as a client holding the whole body sends it.
        "zstd" => zstd::bulk::compress(text, 3)?,
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(text)?;
            e.finish()?
        }
        _ => text.to_vec(),
    })
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("odd /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let [utime, stime] = fields.get(11..13).context("short /proc/PID/stat")? else {
        bail!("short /proc/PID/stat");
    };
    let ticks = utime.parse::<f64>()? + stime.parse::<f64>()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// The process's resident set (VmRSS), KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}
