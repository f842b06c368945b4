//! The `rampart-agent` command line: `enroll` once, then `run` (what the systemd unit runs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use rampart_agent::agent::{self, Options};
use rampart_agent::mapping::FileFilter;
use rampart_agent::queue::QueueLimits;
use rampart_agent::state::{DEFAULT_STATE_DIR, StateDir};

#[derive(Parser)]
#[command(
    name = "rampart-agent",
    version,
    about = "Rampart's Linux endpoint sensor: records processes, files, network connections and logons into Defender's Device* tables and sends them to rampart server",
    long_about = "Rampart's Linux endpoint sensor.\n\n\
        Enroll once with a token an administrator created (POST /api/v1/enrollment-tokens), then run:\n\n  \
        rampart-agent enroll --server https://rampart.example:8443 --token TOKEN\n  \
        rampart-agent run\n\n\
        The token carries the server's CA fingerprint, so no certificate file needs copying. Telemetry is \
        kept in a bounded on-disk queue until the server confirms it is stored; what is ever dropped is \
        counted and reported. Runs as root (eBPF)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this machine with a one-time token; writes the key, certificate and CA to the state directory.
    Enroll {
        /// The server, https://HOST:PORT.
        #[arg(long, env = "RAMPART_SERVER")]
        server: String,
        /// The enrollment token (SECRET.CA_FINGERPRINT).
        #[arg(long, env = "RAMPART_ENROLLMENT_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, env = "RAMPART_AGENT_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The name the device is known by (default: this machine's hostname).
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Run the sensor and send telemetry until SIGTERM/SIGINT.
    Run {
        #[arg(long, env = "RAMPART_AGENT_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Bound of the on-disk queue, in MiB; when full, the oldest events are dropped and counted.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..))]
        queue_mib: u64,
        /// Record file events only under these paths (repeatable) [default: the server's policy;
        /// everywhere but /dev, /proc, /sys].
        #[arg(long = "file-path", value_name = "PREFIX")]
        file_paths: Vec<String>,
        /// Seconds between heartbeats (health, drop counters) [default: the server's policy, 30].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
        heartbeat_secs: Option<u64>,
        /// Do not read logons from syslog (and never bind /dev/log).
        #[arg(long)]
        no_logons: bool,
        /// Kernel event source: eBPF, falling back to the process connector (processes) and
        /// fanotify (files).
        #[arg(long, value_enum, default_value = "auto")]
        sensor: rampart_agent::agent::SensorMode,
        /// Size of the kernel ring buffer events wait in until the agent reads them, in MiB
        /// (rounded up to a power of two). It counts twice in the agent's RSS (the kernel maps
        /// it twice); raise it on machines with bursts the default cannot hold (drops are
        /// counted and reported as kernel drops).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1024))]
        ring_buffer_mib: u64,
    },
    /// The exec guard the agent runs while its policy blocks files (not for direct use):
    /// reads blocklists on stdin, prints denials on stdout, stops at the end of stdin.
    #[command(hide = true)]
    ExecGuard {
        #[arg(long, default_value_t = rampart_agent::hashes::DEFAULT_MAX_FILE_BYTES)]
        max_hash_bytes: u64,
    },
    /// Generate known activity (execs, file operations, loopback TCP connections) and print
    /// what was done as JSON, to check in hunting that the sensor recorded all of it.
    Loadgen {
        #[arg(long, default_value_t = 1000)]
        execs_per_sec: u32,
        /// File operations (a create-write-close and a delete per file) per second.
        #[arg(long, default_value_t = 10_000)]
        file_ops_per_sec: u32,
        #[arg(long, default_value_t = 100)]
        connections_per_sec: u32,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Marks the activity (exec arguments, file directory) for counting.
        #[arg(long, default_value = "rampart-loadgen")]
        marker: String,
        /// Directory for the files (a subdirectory named after the marker is used).
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
    },
    /// Show the enrollment and the queue.
    Status {
        #[arg(long, env = "RAMPART_AGENT_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAMPART_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rampart-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Enroll {
            server,
            token,
            state_dir,
            hostname,
        } => {
            let state = StateDir::create(&state_dir)?;
            let hostname = hostname.unwrap_or_else(this_hostname);
            let enrollment = rampart_agent::enroll::enroll(&server, &token, &state, &hostname)?;
            println!(
                "Enrolled {} as device {} (tenant {}) with {}.\nStart it with: rampart-agent run --state-dir {}",
                enrollment.hostname,
                enrollment.device_id,
                enrollment.tenant_id,
                enrollment.server,
                state_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            state_dir,
            queue_mib,
            file_paths,
            heartbeat_secs,
            no_logons,
            sensor,
            ring_buffer_mib,
        } => {
            tune_allocator();
            let state = StateDir::create(&state_dir)?;
            let options = Options {
                queue: QueueLimits::with_max_bytes(queue_mib << 20),
                file_paths_pinned: !file_paths.is_empty(),
                files: FileFilter {
                    include: file_paths,
                    ..FileFilter::default()
                },
                heartbeat: heartbeat_secs.map(Duration::from_secs),
                logons: !no_logons,
                sensor,
                ring_buffer_bytes: usize::try_from(ring_buffer_mib << 20)?,
                ..Options::default()
            };
            agent::run(&state, &options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ExecGuard { max_hash_bytes } => {
            rampart_agent::prevent::serve_stdio(max_hash_bytes)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Loadgen {
            execs_per_sec,
            file_ops_per_sec,
            connections_per_sec,
            seconds,
            marker,
            dir,
        } => {
            let generated = rampart_agent::loadgen::run(&rampart_agent::loadgen::Load {
                execs_per_sec,
                file_ops_per_sec,
                connections_per_sec,
                duration: Duration::from_secs(seconds),
                marker,
                dir,
            })?;
            println!("{}", serde_json::to_string(&generated)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { state_dir } => {
            let state = StateDir::create(&state_dir)?;
            let identity = state.identity()?;
            let e = &identity.enrollment;
            println!("server:     {}", e.server);
            println!("device:     {} ({})", e.device_id, e.hostname);
            println!("tenant:     {}", e.tenant_id);
            println!("enrolled:   {}", e.enrolled_at);
            // The running agent owns the queue: only its size is read here.
            let bytes: u64 = std::fs::read_dir(state.queue_dir())
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0);
            println!("queue:      {bytes} bytes on disk");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// glibc gives each thread that allocates an arena of its own and, once a large buffer has
/// been freed, serves later ones from the arenas instead of `mmap`: both keep freed memory
/// in the agent's RSS. The agent's threads allocate little and seldom at once, and its large
/// buffers (telemetry bodies) come and go: two arenas and a fixed `mmap` threshold keep its
/// resident memory to what it uses.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before the threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

fn this_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
