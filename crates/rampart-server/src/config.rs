//! The server's configuration: defaults for one machine, a TOML file, environment variables and
//! flags, later ones overriding earlier ones (the CLI maps flags and `RAMPART_*` variables onto
//! [`Overrides`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything `rampart server` can be told. Every field has a default fit for one machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where everything is kept: the event store, the state database, the CA.
    pub data_dir: PathBuf,
    /// `HOST:PORT` to listen on.
    pub listen: String,
    /// Serve plain HTTP (only behind a TLS-terminating proxy).
    pub insecure_http: bool,
    /// Sigma rules (files or folders) loaded at start, beside those uploaded through the API.
    pub rules: Vec<PathBuf>,
    /// State database: `sqlite://…` (default: `state.db` in the data dir) or `postgres://…`.
    pub database_url: Option<String>,
    /// Extra names (DNS or IP) the server certificate is valid for, beyond the listen host,
    /// `localhost`, loopback and the machine's host name.
    pub server_names: Vec<String>,
    /// Use this certificate and key (PEM) instead of one signed by Rampart's own CA.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub limits: Limits,
    pub detection: Detection,
    pub hunting: Hunting,
    pub store: Store,
    pub agents: Agents,
    /// Also run `rampart-agent` (found beside this binary) on this machine, enrolled
    /// automatically, its state in `DATA_DIR/agent`.
    pub local_agent: bool,
}

/// Bounds on what clients may send.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest JSON request body.
    pub max_json_bytes: usize,
    /// Largest uploaded event-log file.
    pub max_upload_bytes: u64,
    /// Largest body of forwarded JSON events, after decompression (the compressed body is held
    /// to it too): a compression bomb is refused with 413 once it expands past this.
    pub max_events_bytes: u64,
    /// Most events (non-blank lines) in one request of forwarded JSON events; more get 413.
    pub max_events_per_request: usize,
    /// Uploads processed at once; more wait, and past `max_waiting_ingest` get 429.
    pub ingest_concurrency: usize,
    pub max_waiting_ingest: usize,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Sessions (logins) last this long.
    pub session_secs: u64,
    /// Largest investigation package an agent may upload.
    pub max_package_bytes: u64,
    /// Agents waiting at once for actions (long-poll); past it a poll answers at once.
    pub max_action_waiters: usize,
    /// Failed sign-ins per user name (and, four times as many, sign-ins or enrollments per
    /// address) within `failure_window_secs` before it is refused for `lockout_secs`, doubling
    /// with each further failure (at most an hour).
    pub max_failures: u32,
    pub failure_window_secs: u64,
    pub lockout_secs: u64,
}

/// Alerting and incident grouping.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Detection {
    /// A repeat of an open alert (same rule, device and key entities) within this window adds to
    /// it instead of raising a new one.
    pub dedup_window_secs: u64,
    /// Alerts sharing an entity within this window join one incident.
    pub incident_window_secs: u64,
    /// Load Rampart's own rules (`rules/linux`, embedded in the binary) for every tenant.
    pub builtin_rules: bool,
}

/// Advanced hunting through the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hunting {
    /// Rows returned at most (a query asking for more is cut, and says so).
    pub max_rows: usize,
    /// Longest a query may run.
    pub timeout_secs: u64,
}

/// The event store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// Days of events kept; older days are dropped whole (investigation packages too).
    pub retention_days: u32,
    /// Memory (MiB) for acknowledged rows not yet in Parquet (already visible to hunting,
    /// and in the log): a flush starts once they take half of it, and an append that finds
    /// all of it taken waits for the flush. 1024 by default.
    pub memory_limit_mib: usize,
    /// Rows per Parquet row group. A flush writes a table's day clustered (row groups that
    /// compaction copies instead of encoding again) once it has half a row group of rows,
    /// so with many busy tables smaller row groups spare compaction work.
    pub row_group_rows: usize,
}

/// The policy every agent is given in each heartbeat's answer, serialised as it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Agents {
    /// How often agents send a heartbeat.
    pub heartbeat_secs: u64,
    /// Absolute paths (folders or files) whose file events agents record.
    pub file_paths: Vec<String>,
    /// Whether agents record logons.
    pub logons: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("rampart-data"),
            listen: "127.0.0.1:8443".into(),
            insecure_http: false,
            rules: Vec::new(),
            database_url: None,
            server_names: Vec::new(),
            tls_cert: None,
            tls_key: None,
            limits: Limits::default(),
            detection: Detection::default(),
            hunting: Hunting::default(),
            store: Store::default(),
            agents: Agents::default(),
            local_agent: false,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_json_bytes: 1 << 20,
            max_upload_bytes: 256 << 20,
            max_events_bytes: 64 << 20,
            max_events_per_request: 100_000,
            ingest_concurrency: 2,
            max_waiting_ingest: 16,
            max_connections: 1024,
            session_secs: 12 * 3600,
            max_package_bytes: 256 << 20,
            max_action_waiters: 10_000,
            max_failures: 5,
            failure_window_secs: 900,
            lockout_secs: 60,
        }
    }
}

impl Default for Detection {
    fn default() -> Detection {
        Detection {
            dedup_window_secs: 3600,
            incident_window_secs: 24 * 3600,
            builtin_rules: true,
        }
    }
}

impl Default for Hunting {
    fn default() -> Hunting {
        Hunting {
            max_rows: 10_000,
            timeout_secs: 60,
        }
    }
}

/// The server's store memory (MiB) by default (the store's own default is smaller). A server
/// takes in a steady stream spread over many tables; the longer its rows wait in memory, the
/// more of a table's day a flush writes as full row groups (encoded once) rather than as
/// fragments that compaction reads and encodes again. On the server benchmark (10-minute
/// runs), 1 GiB against 256 MiB: the store's CPU per flushed row 0.63×, events per server
/// CPU second 1.14×, RSS max 1,292 against 1,081 MiB.
const SERVER_MEMORY_LIMIT_MIB: usize = 1024;

impl Default for Store {
    fn default() -> Store {
        let store = rampart_store::StoreConfig::default();
        Store {
            retention_days: 30,
            memory_limit_mib: SERVER_MEMORY_LIMIT_MIB,
            row_group_rows: store.row_group_rows,
        }
    }
}

impl Default for Agents {
    fn default() -> Agents {
        Agents {
            heartbeat_secs: 30,
            file_paths: Vec::new(),
            logons: true,
        }
    }
}

/// What flags and environment variables set; `None` leaves the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub insecure_http: bool,
    pub rules: Vec<PathBuf>,
    pub database_url: Option<String>,
    pub local_agent: bool,
}

/// A configuration that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl Config {
    /// The file's settings (if any) over the defaults, then the overrides over those.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let mut config = match file {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                // toml's message carries the line and column of the mistake.
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
        };
        if let Some(dir) = overrides.data_dir {
            config.data_dir = dir;
        }
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        config.insecure_http |= overrides.insecure_http;
        config.local_agent |= overrides.local_agent;
        config.rules.extend(overrides.rules);
        if overrides.database_url.is_some() {
            config.database_url = overrides.database_url;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_string(),
            })
        };
        if self.listen_addr().is_none() {
            return invalid(
                "listen",
                &format!("'{}' is not HOST:PORT (e.g. 127.0.0.1:8443)", self.listen),
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert", "tls_cert and tls_key go together");
        }
        if self.limits.max_json_bytes < 1024 {
            return invalid("limits.max_json_bytes", "must be at least 1024");
        }
        if self.limits.max_events_bytes == 0 || self.limits.max_events_per_request == 0 {
            return invalid(
                "limits",
                "max_events_bytes and max_events_per_request must be at least 1",
            );
        }
        if self.limits.max_events_bytes > crate::forwarded::MAX_REPLAYED_BYTES {
            return invalid(
                "limits.max_events_bytes",
                "must be at most 1073741824 (1 GiB): the store's log keeps bodies whole",
            );
        }
        if self.limits.ingest_concurrency == 0 || self.limits.max_connections == 0 {
            return invalid(
                "limits",
                "concurrency and connection limits must be at least 1",
            );
        }
        if self.hunting.max_rows == 0 || self.hunting.timeout_secs == 0 {
            return invalid("hunting", "max_rows and timeout_secs must be at least 1");
        }
        if self.store.retention_days == 0 {
            return invalid("store.retention_days", "must be at least 1");
        }
        if !(16..=1 << 20).contains(&self.store.memory_limit_mib) {
            return invalid(
                "store.memory_limit_mib",
                "must be between 16 and 1048576 (1 TiB)",
            );
        }
        if !(1024..=1 << 20).contains(&self.store.row_group_rows) {
            return invalid("store.row_group_rows", "must be between 1024 and 1048576");
        }
        if self.limits.max_failures == 0
            || self.limits.failure_window_secs == 0
            || self.limits.lockout_secs == 0
        {
            return invalid(
                "limits",
                "max_failures, failure_window_secs and lockout_secs must be at least 1",
            );
        }
        if self.limits.max_package_bytes == 0 {
            return invalid("limits.max_package_bytes", "must be at least 1");
        }
        if !(1..=3600).contains(&self.agents.heartbeat_secs) {
            return invalid("agents.heartbeat_secs", "must be 1 to 3600 (seconds)");
        }
        if let Some(path) = self
            .agents
            .file_paths
            .iter()
            .find(|p| !Path::new(p).is_absolute())
        {
            return invalid(
                "agents.file_paths",
                &format!("'{path}' is not an absolute path (start it with /)"),
            );
        }
        Ok(())
    }

    /// The socket address to bind. Host names resolve (`localhost:8443`).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        use std::net::ToSocketAddrs;
        self.listen.to_socket_addrs().ok()?.next()
    }

    /// The host part of `listen`, as clients would write it.
    pub fn listen_host(&self) -> &str {
        match self.listen.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => &self.listen,
        }
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.limits.session_secs)
    }

    /// The database URL, defaulting to SQLite in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("state.db").display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = std::env::temp_dir().join(format!("rampart-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("server.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nrules = [\"/a\"]\n[hunting]\nmax_rows = 5\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            Overrides {
                rules: vec!["/b".into()],
                database_url: Some("postgres://x".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.rules, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(config.hunting.max_rows, 5);
        assert_eq!(config.hunting.timeout_secs, 60);
        assert_eq!(config.database_url(), "postgres://x");

        let listen = Overrides {
            listen: Some("127.0.0.1:1".into()),
            ..Overrides::default()
        };
        assert_eq!(
            Config::load(Some(&file), listen).unwrap().listen,
            "127.0.0.1:1"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mistakes_are_named() {
        let dir = std::env::temp_dir().join(format!("rampart-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("server.toml");
        std::fs::write(&file, "listen = \"x\"\nlisten_typo = 1\n").unwrap();
        let err = Config::load(Some(&file), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("listen_typo"), "{err}");

        let bad = Overrides {
            listen: Some("nohost".into()),
            ..Overrides::default()
        };
        let err = Config::load(None, bad).unwrap_err();
        assert!(err.to_string().starts_with("listen:"), "{err}");

        std::fs::write(&file, "[limits]\nmax_events_bytes = 1073741825\n").unwrap();
        let err = Config::load(Some(&file), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("limits.max_events_bytes"), "{err}");
        std::fs::write(&file, "[limits]\nmax_events_bytes = 1073741824\n").unwrap();
        assert!(Config::load(Some(&file), Overrides::default()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn store_limits_are_read_and_bounded() {
        let dir = std::env::temp_dir().join(format!("rampart-config-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("server.toml");
        let defaults = Config::load(None, Overrides::default()).unwrap().store;
        assert_eq!(defaults.memory_limit_mib, 1024);
        assert_eq!(defaults.row_group_rows, 128 * 1024);

        std::fs::write(
            &file,
            "[store]\nmemory_limit_mib = 512\nrow_group_rows = 32768\n",
        )
        .unwrap();
        let store = Config::load(Some(&file), Overrides::default())
            .unwrap()
            .store;
        assert_eq!((store.memory_limit_mib, store.row_group_rows), (512, 32768));

        for (text, key) in [
            ("memory_limit_mib = 8", "store.memory_limit_mib"),
            ("row_group_rows = 10", "store.row_group_rows"),
            ("row_group_rows = 2000000", "store.row_group_rows"),
        ] {
            std::fs::write(&file, format!("[store]\n{text}\n")).unwrap();
            let err = Config::load(Some(&file), Overrides::default()).unwrap_err();
            assert!(err.to_string().starts_with(key), "{text}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn agent_policy_is_read_and_checked() {
        let dir =
            std::env::temp_dir().join(format!("rampart-config-agents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("server.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file), Overrides::default())
        };
        assert_eq!(Config::default().agents.heartbeat_secs, 30);
        let config =
            load("[agents]\nheartbeat_secs = 5\nfile_paths = [\"/etc\"]\nlogons = false\n")
                .unwrap();
        assert_eq!(
            config.agents,
            Agents {
                heartbeat_secs: 5,
                file_paths: vec!["/etc".into()],
                logons: false
            }
        );
        for (text, field) in [
            ("[agents]\nheartbeat_secs = 0\n", "agents.heartbeat_secs:"),
            (
                "[agents]\nheartbeat_secs = 3601\n",
                "agents.heartbeat_secs:",
            ),
            ("[agents]\nfile_paths = [\"etc\"]\n", "agents.file_paths:"),
            (
                "[limits]\nmax_package_bytes = 0\n",
                "limits.max_package_bytes:",
            ),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.to_string().starts_with(field), "{text}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listen_host_strips_brackets() {
        let mut c = Config {
            listen: "[::1]:8443".into(),
            ..Config::default()
        };
        assert_eq!(c.listen_host(), "::1");
        c.listen = "localhost:1".into();
        assert_eq!(c.listen_host(), "localhost");
    }
}
