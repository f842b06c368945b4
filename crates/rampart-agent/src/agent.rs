//! `rampart-agent run`: the sensor loop (kernel events → process table → rows → queue), the
//! logon reader, and the sender (queue → server, oldest first; heartbeats; actions).
//!
//! Three threads share the queue; mapping stays on one thread (the process table is its own).
//! Loss is counted wherever it can happen — kernel ring buffer (or, without eBPF, the process
//! connector's and fanotify's queues), queue overflow, rows the server refuses — persisted, and
//! reported in every heartbeat.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::batch::{BlockBuilder, Format, RequestBody};
use crate::clock::Clock;
use crate::fanotify::FileWatch;
use crate::hashes::HashCache;
use crate::logons::{self, LogonSource};
use crate::mapping::{FileFilter, Mapper, Row};
use crate::process::ProcessTable;
use crate::queue::{Queue, QueueLimits};
use crate::sensor::{Sensor, SensorConfig};
use crate::state::{StateDir, write_atomic};
use crate::transport::{Client, Delivery};
use crate::{actions, snapshot};

/// How the agent runs; the CLI fills it.
#[derive(Debug, Clone)]
pub struct Options {
    pub queue: QueueLimits,
    /// File events kept; `include` empty and `file_paths_pinned` false: the server's policy.
    pub files: FileFilter,
    /// Given on the command line: the server's policy does not change it.
    pub file_paths_pinned: bool,
    /// `None`: the server's policy (30 s until it says).
    pub heartbeat: Option<Duration>,
    /// Rows per telemetry request at most.
    pub batch_rows: usize,
    pub ring_buffer_bytes: usize,
    pub max_hash_bytes: u64,
    /// Read logons from syslog (journal, auth log, or /dev/log when free).
    pub logons: bool,
    /// Snapshot interval (DeviceInfo, DeviceNetworkInfo).
    pub snapshot: Duration,
    pub sensor: SensorMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue: QueueLimits::default(),
            files: FileFilter::default(),
            file_paths_pinned: false,
            heartbeat: None,
            // Rows per request at most (and the bytes of `BATCH_BYTES`): each request costs an
            // fdatasync of the queue, an HTTP exchange and TLS records, so fewer, fuller ones
            // (2,000 a request were 5.5 requests a second under the benchmark's load). The
            // sender writes a request's body from the queue's compressed blocks as they are, so
            // a larger one no longer holds its rows as text.
            batch_rows: 6_000,
            // ~3,700 records of ~560 bytes: a third of a second of the 11,000 events/s the
            // benchmark makes (no drops there), while the loop drains it every 100 ms (at once
            // when a pass found it an eighth full). It counts twice in RSS (mapped twice): 8 MiB
            // took 16 of 42 MiB.
            ring_buffer_bytes: 2 << 20,
            max_hash_bytes: crate::hashes::DEFAULT_MAX_FILE_BYTES,
            logons: true,
            snapshot: Duration::from_secs(3600),
            sensor: SensorMode::Auto,
        }
    }
}

/// Uncompressed bytes of rows per telemetry request at most (the server decompresses a
/// request whole), but for a request of one block.
const BATCH_BYTES: usize = 2 << 20;

/// How long after a request the next one waits while less than a full batch is queued: fewer,
/// fuller requests (each costs a queue fdatasync, a TLS request and a zstd frame) for at most
/// this much more latency.
const SEND_INTERVAL: Duration = Duration::from_millis(500);

/// How long a row waits in the open block at most before the block goes into the queue, where
/// the sender can take it (a longer wait makes larger blocks, which compress better).
const SEAL_AFTER: Duration = Duration::from_millis(100);

/// How long a queued row may wait before it is made durable: the rows a crash can take with it
/// (the queue buffers pushed records in memory until a flush writes them out). The sender's
/// flushes count: a request carries durable rows only.
const FLUSH_AFTER: Duration = Duration::from_millis(200);

/// The sensor loop's shortest pass (batching events; adds at most this to their latency). Each
/// pass costs a wake-up and syscalls of its own (ring buffer, DNS capture, queue), and seals a
/// block: ~14 % of the agent's samples under load when it was 10 ms; at 50 ms its sleep and
/// wake-up alone were ~4 %.
const PASS: Duration = Duration::from_millis(100);
/// How often the sensor loop checks that its eBPF programs are still attached (the health a
/// heartbeat reports, every 30 s by default).
const PROGRAMS_EVERY: Duration = Duration::from_secs(5);
/// A pass that read this share of the ring buffer or more is followed by the next at once,
/// without sleeping: a burst is read as fast as it comes.
const BUSY_RING_SHARE: usize = 8;

/// Set by SIGTERM / SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Counters every thread adds to; reported in heartbeats.
#[derive(Default)]
struct Counters {
    events: AtomicU64,
    rows_queued: AtomicU64,
    rows_sent: AtomicU64,
    rows_refused: AtomicU64,
    kernel_lost: AtomicU64,
    /// DNS packets the capture socket's buffer overflowed on, plus DNS-over-TCP streams not
    /// followed past a gap.
    dns_lost: AtomicU64,
    send_failures: AtomicU64,
}

/// Drops of earlier runs (the kernel's count restarts with the sensor).
#[derive(Default, PartialEq, Serialize, Deserialize)]
struct DropHistory {
    kernel_lost: u64,
    rows_refused: u64,
    #[serde(default)]
    dns_lost: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    counters: Counters,
    history: DropHistory,
    stop: Arc<AtomicBool>,
    health: Mutex<Value>,
    /// The heartbeat interval in force (the command line's, else the server's policy).
    heartbeat_secs: AtomicU64,
    /// File paths the server's policy asks for, until the sensor loop takes them.
    policy_file_paths: Mutex<Option<Vec<String>>>,
    /// The policy's block indicators, until the sensor loop takes them.
    policy_block: Mutex<Option<Value>>,
    /// What the server's telemetry endpoint takes besides rows with every column (its policy
    /// says; an older server's says less).
    telemetry_format: Mutex<Format>,
    /// The agent's own executable as it started, to notice it being replaced.
    image: Option<SelfImage>,
}

/// What identifies the agent's executable file.
#[derive(PartialEq)]
struct SelfImage {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
}

impl SelfImage {
    fn of(path: &std::path::Path) -> Option<SelfImage> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(SelfImage {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
        })
    }

    fn current() -> Option<SelfImage> {
        SelfImage::of(&std::env::current_exe().ok()?)
    }
}

pub fn run(state: &StateDir, options: &Options) -> Result<()> {
    let identity = state.identity()?;
    crate::live::protect(state.path());
    let client = Client::new(&identity)?;
    match crate::isolation::resume(state.path()) {
        Ok(Some(isolation)) => {
            warn!(since = %isolation.since, "the host is network-isolated: rules applied again")
        }
        Ok(None) => {}
        Err(e) => error!("the host should be network-isolated, but: {e:#}"),
    }
    let queue = Queue::open(&state.queue_dir(), options.queue)
        .with_context(|| format!("cannot open the queue in {}", state.queue_dir().display()))?;
    let history: DropHistory = std::fs::read(state.path().join("drops.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Enforced before the server is reached; replaced by each policy that differs.
    let mut saved_block = state.saved_blocklist();
    let shared = Arc::new(Shared {
        queue: Mutex::new(queue),
        counters: Counters::default(),
        history,
        stop: Arc::clone(&stop),
        health: Mutex::new(json!({})),
        heartbeat_secs: AtomicU64::new(options.heartbeat.map_or(30, |d| d.as_secs())),
        policy_file_paths: Mutex::new(None),
        policy_block: Mutex::new(saved_block.clone()),
        telemetry_format: Mutex::new(Format::default()),
        image: SelfImage::current(),
    });

    let (logon_tx, logon_rx) = mpsc::channel();
    let logon_source = if options.logons {
        LogonSource::detect()
    } else {
        LogonSource::None
    };
    let logon_thread = match logons::spawn(logon_source.clone(), logon_tx, Arc::clone(&stop)) {
        Ok(handle) => handle,
        Err(e) => {
            warn!("logons: {} cannot be read: {e}", logon_source.describe());
            None
        }
    };

    let (mut source, mode, sensor_error, file_events) = start_source(options);
    *lock(&shared.health) = json!({
        "sensor_mode": mode,
        "sensor_error": sensor_error,
        "file_events": file_events,
        "logon_source": logon_source.describe(),
    });

    let (actions_tx, actions_rx) = mpsc::channel();
    let sender = {
        let shared = Arc::clone(&shared);
        let options = options.clone();
        let state_path = state.path().to_path_buf();
        let client = Client::new(&identity)?;
        std::thread::Builder::new()
            .name("sender".into())
            .spawn(move || send_loop(&client, &shared, &options, &state_path, mode, &actions_tx))?
    };
    {
        // Not joined at exit: it may be waiting on the server; an action in progress is
        // reported again by the server as not finished.
        let ctx = actions::ActionContext {
            vault: state.path().join("vault"),
            state: state.path().to_path_buf(),
            server: client.server().to_string(),
        };
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("commands".into())
            .spawn(move || command_loop(&client, &ctx, &actions_rx, &stop))?;
    }

    let hostname = identity.enrollment.hostname.clone();
    let mut mapper = Mapper {
        procs: ProcessTable::new(HashCache::new(options.max_hash_bytes), Clock::now()),
        files: options.files.clone(),
        host: hostname,
        dns_askers: Default::default(),
        file_name_from_path: false,
    };
    let (blocked_tx, blocked_rx) = mpsc::channel();
    let server_addresses = crate::transport::host_port(&identity.enrollment.server)
        .and_then(|(host, port)| crate::isolation::resolve(&host, port))
        .unwrap_or_default();
    let program = std::env::current_exe().context("the agent's own binary")?;
    let mut enforcer = crate::prevent::Enforcer::new(
        program,
        options.max_hash_bytes,
        server_addresses,
        blocked_tx,
    );
    let mut dns = match crate::dns::DnsCapture::start() {
        Ok(d) => Some(d),
        Err(e) => {
            warn!("DNS: cannot capture queries: {e}");
            None
        }
    };
    lock(&shared.health)["dns"] = json!(dns.is_some());
    let (inventory_tx, inventory_rx) = mpsc::channel::<Vec<Row>>();
    let mut last_inventory: Option<(Instant, Option<std::time::SystemTime>)> = None;
    let mut block = BlockBuilder::new(options.queue.max_record_bytes())?;
    let mut last_check = Instant::now();
    let mut last_programs: Option<Instant> = None;
    let mut packages = package_database_time();
    let mut last_snapshot: Option<Instant> = None;
    info!(device = %identity.enrollment.device_id, server = %identity.enrollment.server, "agent running");
    while !STOP.load(Ordering::Relaxed) {
        // At most one pass every `PASS` unless the last was busy: under load the ring buffer
        // would wake the loop for every few events, and each pass costs syscalls of its own
        // (DNS, queue, checks); the ring buffer holds several passes' worth.
        let pass = Instant::now();
        if !options.file_paths_pinned
            && let Some(paths) = lock(&shared.policy_file_paths).take()
            && paths != mapper.files.include
        {
            info!(?paths, "file events: paths from the server's policy");
            mapper.files.include = paths;
            if let Source::ProcConnector(_, Some(files)) = &mut source {
                files.set_filter(mapper.files.clone());
            }
        }
        mapper.file_name_from_path = lock(&shared.telemetry_format).file_name_from_path;
        if let Some(block) = lock(&shared.policy_block).take() {
            let health = enforcer.apply(&block);
            lock(&shared.health)["prevention"] = health;
            if saved_block.as_ref() != Some(&block) {
                if let Err(e) = state.save_blocklist(&block) {
                    warn!("the blocklist is enforced but not saved for the next run: {e:#}");
                }
                saved_block = Some(block);
            }
        }
        while let Ok(blocked) = blocked_rx.try_recv() {
            push(&shared, mapper.blocked(&blocked), &mut block);
        }
        if last_snapshot.is_none_or(|t| t.elapsed() >= options.snapshot) {
            last_snapshot = Some(Instant::now());
            let health = match source {
                Source::Ebpf(_) => "Active",
                Source::ProcConnector(..) | Source::None => "ImpairedCommunication",
            };
            push(
                &shared,
                snapshot::device_info(Utc::now(), mode, health),
                &mut block,
            );
            for row in snapshot::network_info(Utc::now()) {
                push(&shared, row, &mut block);
            }
        }
        // Each row goes into the block as it is made: its buffer is reused, still in the cache,
        // by the next.
        let mut events = 0u64;
        let mut sink = |event: crate::sensor::SensorEvent| {
            events += 1;
            if let Some(row) = mapper.event(&event) {
                push(&shared, row, &mut block);
            }
        };
        let wait = Duration::from_millis(100);
        let mut busy = false;
        match &mut source {
            Source::Ebpf(s) => {
                if let Err(e) = s.poll(wait, &mut sink) {
                    warn!("sensor: {e}");
                }
                busy = s.last_read() >= options.ring_buffer_bytes / BUSY_RING_SHARE;
            }
            Source::ProcConnector(c, files) => {
                if let Err(e) = c.poll_with(files.as_deref_mut(), wait, &mut sink) {
                    warn!("process connector / fanotify: {e}");
                }
            }
            Source::None => std::thread::sleep(wait),
        }
        shared.counters.events.fetch_add(events, Ordering::Relaxed);
        if let Some(d) = dns.as_mut() {
            let mut resolved = 0;
            d.poll(&mut |x| {
                resolved += enforcer.resolved(&x);
                push(&shared, mapper.dns(&x), &mut block);
            });
            if resolved > 0 {
                lock(&shared.health)["prevention"] = enforcer.health();
            }
            shared
                .counters
                .dns_lost
                .store(d.dropped() + d.lost(), Ordering::Relaxed);
        }
        while let Ok(logon) = logon_rx.try_recv() {
            push(&shared, mapper.logon(&logon), &mut block);
        }
        // Software inventory: at start, when the package database changes, and daily; read
        // off this thread (rpm can be slow). The database is looked at once a second (a `stat`
        // every pass was 1 % of the agent's CPU under load).
        if last_check.elapsed() >= Duration::from_secs(1) {
            packages = package_database_time();
        }
        if last_inventory.is_none_or(|(at, seen)| {
            at.elapsed() >= Duration::from_secs(24 * 3600)
                || (seen != packages
                    && at.elapsed() >= options.snapshot.min(Duration::from_secs(3600)))
        }) {
            last_inventory = Some((Instant::now(), packages));
            let tx = inventory_tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(snapshot::software_inventory(&snapshot::os_release()));
            });
        }
        while let Ok(inventory) = inventory_rx.try_recv() {
            for row in inventory {
                push(&shared, row, &mut block);
            }
        }
        if block.age() >= SEAL_AFTER {
            seal(&shared, &mut lock(&shared.queue), &mut block);
        }
        {
            let mut queue = lock(&shared.queue);
            if queue.unsynced_for() >= FLUSH_AFTER
                && let Err(e) = queue.flush()
            {
                warn!("queue: {e}");
            }
        }
        // Loss counters and program checks cost bpf syscalls: once a second, not per poll; the
        // programs (a syscall each, 1.2 % of the agent's samples under load once a second) every
        // `PROGRAMS_EVERY`, well within a heartbeat.
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            store_lost(&shared, &source);
        }
        if last_programs.is_none_or(|t| t.elapsed() >= PROGRAMS_EVERY) {
            last_programs = Some(Instant::now());
            if let Source::Ebpf(s) = &source {
                let detached: Vec<String> = s
                    .programs()
                    .into_iter()
                    .filter(|(_, attached)| !attached)
                    .map(|(name, _)| name)
                    .collect();
                lock(&shared.health)["detached_programs"] = json!(detached);
            }
        }
        if !busy && let Some(rest) = PASS.checked_sub(pass.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    store_lost(&shared, &source);
    info!("stopping: flushing the queue");
    {
        let mut queue = lock(&shared.queue);
        seal(&shared, &mut queue, &mut block);
        queue.flush()?;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    if let Some(t) = logon_thread {
        let _ = t.join();
    }
    save_history(&shared, state.path(), &mut None);
    Ok(())
}

/// Where kernel events come from: eBPF, else the process connector (processes) with fanotify
/// (files) when the kernel allows it.
enum Source {
    Ebpf(Box<Sensor>),
    ProcConnector(crate::fallback::ProcConnector, Option<Box<FileWatch>>),
    None,
}

/// When the package database (dpkg's, else rpm's) last changed.
fn package_database_time() -> Option<std::time::SystemTime> {
    std::fs::metadata("/var/lib/dpkg/status")
        .or_else(|_| std::fs::metadata("/var/lib/rpm"))
        .and_then(|m| m.modified())
        .ok()
}

/// Events the kernel side lost since start (the source's own count restarts with it).
fn store_lost(shared: &Shared, source: &Source) {
    let lost = match source {
        Source::Ebpf(s) => s.lost().total,
        Source::ProcConnector(c, files) => {
            let files = files.as_ref().map(|f| f.lost()).unwrap_or_default();
            let by_kind: serde_json::Map<String, Value> = files
                .by_kind
                .iter()
                .map(|(k, n)| (k.to_string(), json!(n)))
                .collect();
            lock(&shared.health)["file_events_lost"] = Value::Object(by_kind);
            c.lost() + files.total
        }
        Source::None => 0,
    };
    shared.counters.kernel_lost.store(lost, Ordering::Relaxed);
}

/// The best source this machine allows (or the one `options.sensor` forces); its mode name,
/// when it is not eBPF why, and which file events it records (for the health).
fn start_source(options: &Options) -> (Source, &'static str, Option<String>, Value) {
    let ebpf = if options.sensor == SensorMode::ProcConnector {
        Err("the process connector was asked for (--sensor proc-connector)".to_string())
    } else {
        Sensor::start(&SensorConfig {
            ignore_tgid: std::process::id(),
            ring_buffer_bytes: options.ring_buffer_bytes,
            // Paths are filtered by the mapper, whose filter the server's policy may change.
            file_paths: Vec::new(),
        })
        .map_err(|e| e.to_string())
    };
    let why = match ebpf {
        Ok(sensor) => {
            info!("sensor: eBPF programs attached");
            return (
                Source::Ebpf(Box::new(sensor)),
                "ebpf",
                None,
                json!({"source": "ebpf"}),
            );
        }
        Err(why) => why,
    };
    if options.sensor == SensorMode::Ebpf {
        warn!(
            "sensor: eBPF unavailable ({why}) and no fallback allowed: no process, file or network telemetry"
        );
        return (Source::None, "none", Some(why), json!({"source": null}));
    }
    let connector = match crate::fallback::ProcConnector::start() {
        Ok(c) => c,
        Err(e) => {
            warn!(
                "sensor: eBPF unavailable ({why}), process connector too ({e}): no telemetry but logons"
            );
            return (
                Source::None,
                "none",
                Some(format!("{why}; process connector: {e}")),
                json!({"source": null}),
            );
        }
    };
    match FileWatch::start(options.files.clone()) {
        Ok(files) => {
            warn!(
                "sensor: eBPF unavailable ({why}): processes from the process connector, files from fanotify, no network telemetry"
            );
            let status = files.status();
            if status["unwatched"]
                .as_array()
                .is_some_and(|u| !u.is_empty())
            {
                let unwatched = status["unwatched"].to_string();
                warn!("fanotify: filesystems not watched: {unwatched}");
            }
            (
                Source::ProcConnector(connector, Some(Box::new(files))),
                "proc-connector+fanotify",
                Some(why),
                status,
            )
        }
        Err(e) => {
            warn!(
                "sensor: eBPF unavailable ({why}): processes from the process connector; fanotify unavailable ({e}): no file or network telemetry"
            );
            (
                Source::ProcConnector(connector, None),
                "proc-connector",
                Some(why),
                json!({"source": null, "error": e.to_string()}),
            )
        }
    }
}

/// `--sensor`: which kernel source to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SensorMode {
    /// eBPF, else the process connector and fanotify.
    Auto,
    /// eBPF only.
    Ebpf,
    /// The process connector (netlink) and /proc for processes, fanotify for files.
    ProcConnector,
}

/// Adds `row` to the open block, sealing the block into the queue first if it is full (it is
/// sealed once its first row is [`SEAL_AFTER`] old besides). The queue is locked only then,
/// and for the first row of a block.
fn push(shared: &Shared, row: Row, block: &mut BlockBuilder) {
    if !block.fits(&row) {
        seal(shared, &mut lock(&shared.queue), block);
    }
    if block.rows() == 0 {
        // Rows are written as the server takes them; a block one way throughout.
        block.format = *lock(&shared.telemetry_format);
    }
    // The sequence number a block's first row gets: the queue's next.
    block.add(row, || lock(&shared.queue).stats().next_seq);
}

/// Pushes the open block into the queue.
fn seal(shared: &Shared, queue: &mut Queue, block: &mut BlockBuilder) {
    let rows = u64::from(block.rows());
    let pushed = match block.seal() {
        None => return,
        Some(Ok((frame, first, count))) => queue.push(frame, count).map(|seq| {
            debug_assert_eq!(
                seq, first,
                "only blocks are pushed, each numbered at its start"
            );
        }),
        Some(Err(e)) => {
            // zstd failed: nothing to queue.
            shared
                .counters
                .rows_refused
                .fetch_add(rows, Ordering::Relaxed);
            warn!("telemetry block: {e:#}");
            return;
        }
    };
    match pushed {
        Ok(()) => {
            shared
                .counters
                .rows_queued
                .fetch_add(rows, Ordering::Relaxed);
        }
        Err(e) => {
            // Only a block larger than a queue segment is refused (a single row too large to
            // fit in one); its rows are counted as lost.
            shared
                .counters
                .rows_refused
                .fetch_add(rows, Ordering::Relaxed);
            warn!("queue: {e}");
        }
    }
}

/// Sends the queue oldest first; heartbeats on schedule; backs off while the server is away.
fn send_loop(
    client: &Client,
    shared: &Shared,
    options: &Options,
    state: &std::path::Path,
    mode: &str,
    actions: &mpsc::Sender<Value>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut last_send = Instant::now() - SEND_INTERVAL;
    // Kept across batches: a fresh multi-MiB buffer each time is fresh pages to fault in.
    let mut body = match RequestBody::new() {
        Ok(b) => b,
        Err(e) => {
            error!("telemetry cannot be compressed, none is sent: {e:#}");
            return;
        }
    };
    let mut last_heartbeat: Option<Instant> = None;
    let mut drops_reported = 0i64;
    let mut last_dropped = 0u64;
    let mut saved_history = None;
    loop {
        let stopping = shared.stop.load(Ordering::Relaxed);
        let interval = Duration::from_secs(shared.heartbeat_secs.load(Ordering::Relaxed));
        if last_heartbeat.is_none_or(|t| t.elapsed() >= interval) || stopping {
            last_heartbeat = Some(Instant::now());
            let dropped = total_dropped(shared);
            if dropped > last_dropped {
                drops_reported += 1;
                last_dropped = dropped;
            }
            let body = heartbeat_body(shared, state, mode, dropped, drops_reported, stopping);
            match client.heartbeat(&body) {
                Ok(answer) => {
                    for action in answer["actions"].as_array().into_iter().flatten() {
                        let _ = actions.send(action.clone());
                    }
                    apply_policy(shared, options, &answer["policy"]);
                }
                Err(e) => warn!("heartbeat: {e:#}"),
            }
            save_history(shared, state, &mut saved_history);
        }
        if stopping {
            return;
        }
        // The body is written from the queue's buffer as the records are read: no copy each.
        let mut range: Option<(u64, u64)> = None;
        let mut compressed = Ok(());
        let peeked = {
            let mut queue = lock(&shared.queue);
            // Less than a full batch waits for the send interval: fewer, fuller requests.
            let waiting = queue.stats().records;
            let since = last_send.elapsed();
            if waiting < options.batch_rows as u64 && since < SEND_INTERVAL {
                drop(queue);
                sleep_unless_stopped(SEND_INTERVAL - since, &shared.stop);
                continue;
            }
            // Only durable rows go out: a seq the server stored must never be reused.
            body.clear();
            queue.flush().and_then(|()| {
                queue.peek_with(options.batch_rows, |seq, count, record| {
                    if !body.fits(record, BATCH_BYTES) || compressed.is_err() {
                        return false;
                    }
                    range.get_or_insert((seq, seq)).1 = seq + u64::from(count) - 1;
                    compressed = body.push(record).map(|taken| {
                        if !taken {
                            // Acknowledged with the rest, never sent: counted as lost.
                            warn!(
                                seq,
                                count,
                                "queue: a record that is neither a block nor a row is skipped"
                            );
                            let lost = u64::from(count);
                            shared
                                .counters
                                .rows_refused
                                .fetch_add(lost, Ordering::Relaxed);
                        }
                    });
                    true
                })
            })
        };
        let rows = match peeked {
            Ok(n) => n as u64,
            Err(e) => {
                warn!("queue: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = compressed {
            warn!("telemetry: {e:#}");
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let Some((first, last)) = range else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        last_send = Instant::now();
        let ack = match client.send_telemetry(body.finish(), first, last) {
            Ok(Delivery::Stored { .. }) => {
                backoff = Duration::from_secs(1);
                shared.counters.rows_sent.fetch_add(rows, Ordering::Relaxed);
                true
            }
            Ok(Delivery::Busy(wait)) => {
                std::thread::sleep(wait);
                false
            }
            Ok(Delivery::Refused(why)) => {
                warn!(
                    rows,
                    "the server refused a batch, counted as dropped: {why}"
                );
                shared
                    .counters
                    .rows_refused
                    .fetch_add(rows, Ordering::Relaxed);
                true
            }
            Err(e) => {
                shared
                    .counters
                    .send_failures
                    .fetch_add(1, Ordering::Relaxed);
                warn!("telemetry: {e:#}; retrying in {backoff:?}");
                sleep_unless_stopped(backoff, &shared.stop);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                false
            }
        };
        if ack && let Err(e) = lock(&shared.queue).ack(last) {
            warn!("queue: {e}");
        }
    }
}

fn total_dropped(shared: &Shared) -> u64 {
    let c = &shared.counters;
    let queue = lock(&shared.queue).stats();
    shared.history.kernel_lost
        + shared.history.rows_refused
        + shared.history.dns_lost
        + c.kernel_lost.load(Ordering::Relaxed)
        + c.rows_refused.load(Ordering::Relaxed)
        + c.dns_lost.load(Ordering::Relaxed)
        + queue.dropped_records
}

fn heartbeat_body(
    shared: &Shared,
    state: &std::path::Path,
    mode: &str,
    dropped: u64,
    drops_reported: i64,
    stopping: bool,
) -> Value {
    let c = &shared.counters;
    let queue = lock(&shared.queue).stats();
    let mut health = lock(&shared.health).clone();
    health["queue"] = json!({
        "records": queue.records, "bytes": queue.bytes,
        "dropped_records": queue.dropped_records, "dropped_bytes": queue.dropped_bytes,
    });
    health["counters"] = json!({
        "events": c.events.load(Ordering::Relaxed),
        "rows_queued": c.rows_queued.load(Ordering::Relaxed),
        "rows_sent": c.rows_sent.load(Ordering::Relaxed),
        "rows_refused": shared.history.rows_refused + c.rows_refused.load(Ordering::Relaxed),
        "kernel_lost": shared.history.kernel_lost + c.kernel_lost.load(Ordering::Relaxed),
        "dns_lost": shared.history.dns_lost + c.dns_lost.load(Ordering::Relaxed),
        "send_failures": c.send_failures.load(Ordering::Relaxed),
    });
    health["isolated"] = json!(state.join(crate::isolation::STATE_FILE).exists());
    let mut tamper = Vec::new();
    if let Some(image) = &shared.image
        && SelfImage::of(&image.path).as_ref() != Some(image)
    {
        tamper.push(format!(
            "the agent binary {} was replaced or removed",
            image.path.display()
        ));
    }
    if let Some(detached) = health["detached_programs"]
        .as_array()
        .filter(|d| !d.is_empty())
    {
        tamper.push(format!(
            "sensor programs detached: {}",
            Value::Array(detached.clone())
        ));
    }
    if stopping {
        health["stopping"] = json!("the agent was asked to stop (SIGTERM/SIGINT)");
    }
    let healthy = mode == "ebpf" && tamper.is_empty() && !stopping;
    health["tamper"] = json!(tamper);
    json!({
        "agent_version": env!("CARGO_PKG_VERSION"),
        "health_status": if healthy { "active" } else { "misconfigured" },
        "health": health,
        "events_dropped": i64::try_from(dropped).unwrap_or(i64::MAX),
        "drops_reported": drops_reported,
    })
}

/// The server's policy (heartbeat answer): applied where the command line left it open.
fn apply_policy(shared: &Shared, options: &Options, policy: &Value) {
    if options.heartbeat.is_none()
        && let Some(secs) = policy["heartbeat_secs"]
            .as_u64()
            .filter(|s| (1..=3600).contains(s))
    {
        shared.heartbeat_secs.store(secs, Ordering::Relaxed);
    }
    if !options.file_paths_pinned
        && let Some(paths) = policy["file_paths"].as_array()
    {
        let paths = paths
            .iter()
            .filter_map(|p| {
                p.as_str()
                    .filter(|p| p.starts_with('/'))
                    .map(str::to_string)
            })
            .collect();
        *lock(&shared.policy_file_paths) = Some(paths);
    }
    if let Some(block) = policy.get("block") {
        *lock(&shared.policy_block) = Some(block.clone());
    }
    if !policy.is_null() {
        *lock(&shared.telemetry_format) = Format::of_policy(&policy["telemetry"]);
    }
}

/// Carries out actions, one at a time, off the sender thread: from the long-poll (prompt) and
/// from heartbeat answers (servers without it).
fn command_loop(
    client: &Client,
    ctx: &actions::ActionContext,
    from_heartbeats: &mpsc::Receiver<Value>,
    stop: &AtomicBool,
) {
    const WAIT: Duration = Duration::from_secs(25);
    let mut long_poll = true;
    while !stop.load(Ordering::Relaxed) {
        while let Ok(action) = from_heartbeats.try_recv() {
            actions::carry_out(client, ctx, &action);
        }
        if !long_poll {
            if let Ok(action) = from_heartbeats.recv_timeout(Duration::from_secs(1)) {
                actions::carry_out(client, ctx, &action);
            }
            continue;
        }
        match client.wait_actions(WAIT) {
            Ok(Some(actions)) => {
                for action in &actions {
                    actions::carry_out(client, ctx, action);
                }
            }
            Ok(None) => {
                info!("the server has no action long-poll: actions come with heartbeats");
                long_poll = false;
            }
            Err(e) => {
                warn!("actions: {e:#}");
                sleep_unless_stopped(Duration::from_secs(5), stop);
            }
        }
    }
}

/// Saves the drop counters unless they are what was `saved` last (the file is written
/// atomically, with `fsync`s: not for every heartbeat).
fn save_history(shared: &Shared, state: &std::path::Path, saved: &mut Option<DropHistory>) {
    let c = &shared.counters;
    let history = DropHistory {
        kernel_lost: shared.history.kernel_lost + c.kernel_lost.load(Ordering::Relaxed),
        rows_refused: shared.history.rows_refused + c.rows_refused.load(Ordering::Relaxed),
        dns_lost: shared.history.dns_lost + c.dns_lost.load(Ordering::Relaxed),
    };
    if saved.as_ref() == Some(&history) {
        return;
    }
    match serde_json::to_vec(&history)
        .map_err(anyhow::Error::from)
        .and_then(|json| write_atomic(&state.join("drops.json"), &json, 0o600))
    {
        Ok(()) => *saved = Some(history),
        Err(e) => warn!("cannot save drop counters: {e:#}"),
    }
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let until = Instant::now() + total;
    loop {
        let now = Instant::now();
        if now >= until || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

/// A poisoned lock means a thread panicked mid-update; the data is still the best we have.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
