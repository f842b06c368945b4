//! `rampart server`: flags and environment over the config file, logging, and the runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use rampart_server::config::{Config, Overrides};

#[derive(clap::Args)]
pub struct Args {
    /// Where events, the state database and the CA are kept [default: ./rampart-data].
    #[arg(long, env = "RAMPART_HOME", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8443].
    #[arg(long, env = "RAMPART_LISTEN", value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Sigma rules (files or folders) loaded at start, for every tenant. Repeatable.
    #[arg(long, value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (only behind a TLS-terminating proxy).
    #[arg(long, env = "RAMPART_INSECURE_HTTP")]
    insecure_http: bool,
    /// State database: sqlite://PATH or postgres://USER@HOST/DB [default: SQLite in the data dir].
    #[arg(long, env = "RAMPART_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// Also run rampart-agent (beside this binary) on this machine, enrolled automatically;
    /// needs root (eBPF). Its state goes to DATA_DIR/agent, its log to DATA_DIR/agent.log.
    #[arg(long, env = "RAMPART_LOCAL_AGENT")]
    local_agent: bool,
    /// TOML configuration file; flags and RAMPART_* variables override it.
    #[arg(long, env = "RAMPART_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    init_logging();
    let config = Config::load(
        args.config.as_deref(),
        Overrides {
            data_dir: args.data_dir,
            listen: args.listen,
            insecure_http: args.insecure_http,
            rules: args.rules,
            database_url: args.database_url,
            local_agent: args.local_agent,
        },
    )?;
    let runtime = rampart_kql::runtime().context("cannot start the runtime")?;
    runtime.block_on(rampart_server::run(config, shutdown_signal(), |started| {
        announce(started)
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// Tells the operator where to go. The generated password is printed here once, and never
/// logged.
fn announce(started: &rampart_server::Started) {
    println!("Rampart server listening on {}", started.url);
    println!("  sign in:      {}  (user admin)", started.url);
    match &started.generated_admin_password {
        Some(password) => println!(
            "  password:     {password}\n                (generated on this first run and shown once; set RAMPART_ADMIN_PASSWORD before the first run to choose it)"
        ),
        None => println!("  password:     the admin password set on the first run"),
    }
    if let (Some(fp), Some(ca)) = (&started.ca_fingerprint, &started.ca_cert) {
        println!("  CA:           {}  ({fp})", ca.display());
        println!(
            "                e.g. curl --cacert {} {}healthz",
            ca.display(),
            started.url
        );
    }
    if let Some(agent) = &started.local_agent {
        println!("  local agent:  {agent}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RAMPART_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Ctrl-C or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("stop requested: finishing requests in flight and flushing the store");
}
