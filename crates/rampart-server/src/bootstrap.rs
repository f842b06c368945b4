//! Start-up and shut-down: open the store and the database, create what a first run needs
//! (default tenant, admin account, CA and server certificate), compile the rules, serve until
//! told to stop, then flush everything acknowledged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use rampart_state::{DEFAULT_TENANT_ID, NewUser, PageRequest, Role, StateDb};
use rampart_store::{Store, StoreConfig};
use tokio::net::TcpListener;

use crate::alerting::Alerting;
use crate::app::{App, AppInner};
use crate::config::Config;

/// The environment variable that sets the first admin password (first run only).
pub const ADMIN_PASSWORD_ENV: &str = "RAMPART_ADMIN_PASSWORD";
/// The first user.
pub const ADMIN_USER: &str = "admin";
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// An agent silent this long is shown inactive (agents send a heartbeat every minute).
const AGENT_SILENCE: Duration = Duration::from_secs(10 * 60);

/// What the server tells whoever started it, once it listens.
#[derive(Debug, Clone)]
pub struct Started {
    pub addr: SocketAddr,
    /// `https://127.0.0.1:8443/`
    pub url: String,
    /// Set on the first run when the admin password was generated: shown once.
    pub generated_admin_password: Option<String>,
    pub ca_fingerprint: Option<String>,
    pub ca_cert: Option<std::path::PathBuf>,
    /// With `local_agent`: what became of it (running, or why not).
    pub local_agent: Option<String>,
}

/// Runs the server until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(&Started),
) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    restrict(&config.data_dir);

    let store_dir = config.data_dir.join("events");
    let store_config = StoreConfig {
        retention: chrono::Duration::days(i64::from(config.store.retention_days)),
        memory_limit_bytes: config.store.memory_limit_mib << 20,
        row_group_rows: config.store.row_group_rows,
        sources: crate::forwarded::sources(),
        // Every body the events route takes can be logged as it came.
        max_batch_bytes: (config.limits.max_events_bytes as usize)
            .max(StoreConfig::default().max_batch_bytes),
        ..StoreConfig::default()
    };
    let store = tokio::task::spawn_blocking(move || Store::open(&store_dir, store_config))
        .await?
        .context("cannot open the event store")?;
    for torn in &store.recovery().torn {
        tracing::warn!(%torn, "event store log: torn record skipped");
    }
    let store = Arc::new(store);

    let db = StateDb::connect(&config.database_url())
        .await
        .context("cannot open the state database")?;
    db.ensure_default_tenant().await?;
    let generated_admin_password = ensure_admin(&db).await?;

    let (tls, ca, ca_cert) = if config.insecure_http {
        (None, None, None)
    } else {
        let pki = config.data_dir.join("pki");
        let ca = rampart_pki::Ca::load_or_create(&pki).context("cannot set up the CA")?;
        let identity = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => rampart_pki::ServerIdentity::from_pem_files(cert, key)?,
            _ => {
                let mut names = rampart_pki::default_server_names(config.listen_host());
                names.extend(config.server_names.iter().cloned());
                rampart_pki::ServerIdentity::load_or_create(&pki, &ca, &names)
                    .context("cannot issue the server certificate")?
            }
        };
        let tls = rampart_pki::server_config(&identity, &ca)?;
        (Some(tls), Some(Arc::new(ca)), Some(pki.join("ca.crt")))
    };

    let alerting = Alerting::new(&config);
    let app = App(Arc::new(AppInner::new(
        config.clone(),
        db.clone(),
        store.clone(),
        alerting,
        ca,
    )));
    sync_builtin_rules(&app).await?;
    crate::alerting::restore(&app).await?;

    let Some(addr) = config.listen_addr() else {
        bail!("listen: '{}' is not HOST:PORT", config.listen);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = match config.listen_host() {
        "0.0.0.0" | "::" => "localhost".to_string(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    // The local agent dials the server on loopback (the certificate names it).
    let (local_agent, local_status) = if config.local_agent {
        let url = format!("https://127.0.0.1:{}", addr.port());
        let started = match crate::local_agent::binary(&config) {
            Ok(binary) => crate::local_agent::LocalAgent::start(&app, binary, url).await,
            Err(why) => Err(anyhow::Error::msg(why)),
        };
        match started {
            Ok(agent) => (
                Some(agent),
                Some(format!(
                    "running (state {}, log {})",
                    config.data_dir.join("agent").display(),
                    config.data_dir.join("agent.log").display()
                )),
            ),
            Err(e) => (None, Some(format!("not started: {e:#}"))),
        }
    } else {
        (None, None)
    };
    on_ready(&Started {
        addr,
        url: format!("{scheme}://{host}:{}/", addr.port()),
        generated_admin_password,
        ca_fingerprint: app.ca_fingerprint.clone(),
        ca_cert,
        local_agent: local_status,
    });

    let retention = tokio::spawn(retention_loop(app.clone()));
    let silence = tokio::spawn(silence_loop(app.clone()));
    let custom = tokio::spawn(crate::custom::scheduler(app.clone()));
    let router = crate::router(app.clone());
    let waiters = app.clone();
    let shutdown = async move {
        shutdown.await;
        if let Some(agent) = local_agent {
            // First, while the server still answers its last heartbeat.
            let _ = tokio::task::spawn_blocking(move || agent.stop()).await;
        }
        // Long-polls answer now instead of holding up the drain.
        waiters.action_waiters.close();
    };
    crate::listener::serve(
        listener,
        tls,
        router,
        config.limits.max_connections,
        shutdown,
    )
    .await;
    retention.abort();
    silence.abort();
    custom.abort();

    tracing::info!("shutting down: flushing the event store");
    drop(app);
    let flushed = tokio::task::spawn_blocking(move || match Arc::try_unwrap(store) {
        Ok(store) => store.close(),
        // A request still holds it (drained past the timeout): flush what was acknowledged.
        Err(store) => store.flush(),
    })
    .await?;
    flushed.context("cannot flush the event store")?;
    db.close().await;
    Ok(())
}

/// The data directory holds keys and events: owner only.
fn restrict(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(error) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(%error, dir = %dir.display(), "cannot restrict the data directory to its owner");
    }
}

/// Creates the `admin` user on the first run; returns the password when it was generated.
async fn ensure_admin(db: &StateDb) -> Result<Option<String>> {
    let users = db
        .list_users(DEFAULT_TENANT_ID, &PageRequest::first(1))
        .await?;
    if !users.items.is_empty() {
        return Ok(None);
    }
    let (password, generated) = match std::env::var(ADMIN_PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (random_password()?, true),
    };
    db.create_user(
        DEFAULT_TENANT_ID,
        &NewUser {
            username: ADMIN_USER.into(),
            password: password.clone(),
            role: Role::Admin,
            scope_groups: Vec::new(),
        },
    )
    .await
    .context("cannot create the admin user")?;
    Ok(generated.then_some(password))
}

fn random_password() -> Result<String> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Every tenant's builtin rules, from the `--rules` folders.
async fn sync_builtin_rules(app: &App) -> Result<()> {
    for tenant in app.db.list_tenants().await? {
        crate::rules::install_builtin(app, &tenant.id).await?;
    }
    Ok(())
}

/// Drops whole days past the retention period, and investigation packages as old, hourly.
async fn retention_loop(app: App) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    let retention = chrono::Duration::days(i64::from(app.config.store.retention_days));
    loop {
        tick.tick().await;
        let store = app.store.clone();
        match tokio::task::spawn_blocking(move || store.apply_retention(chrono::Utc::now())).await {
            Ok(Ok(report)) => tracing::debug!(?report, "retention applied"),
            Ok(Err(error)) => tracing::warn!(%error, "retention failed"),
            Err(error) => tracing::warn!(%error, "retention task failed"),
        }
        let before = chrono::Utc::now() - retention;
        let data_dir = &app.config.data_dir;
        match crate::api::packages::remove_expired(&app.db, data_dir, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                packages = n,
                "investigation packages past retention removed"
            ),
            Err(error) => tracing::warn!(%error, "package retention failed"),
        }
    }
}

/// Marks agents that stopped reporting inactive, every minute.
async fn silence_loop(app: App) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let since = chrono::Utc::now() - AGENT_SILENCE;
        match app.db.mark_silent_agents_inactive(since).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(agents = n, "agents silent for 10 minutes marked inactive"),
            Err(error) => tracing::warn!(%error, "cannot mark silent agents"),
        }
    }
}
