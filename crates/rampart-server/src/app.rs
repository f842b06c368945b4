//! The shared state every handler sees.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rampart_sigma::{Correlator, RuleSet};
use rampart_state::StateDb;
use rampart_store::Store;
use tokio::sync::{Mutex, Notify, Semaphore, SemaphorePermit};

use crate::alerting::Alerting;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::problem::Problem;

/// A tenant's compiled rules, and the rule-table id of each source they were compiled from
/// (detections name their rule by that source's path).
pub struct TenantRules {
    pub set: RuleSet,
    pub ids: HashMap<PathBuf, String>,
    /// Correlation windows over agent telemetry, kept across requests (an agent sends a few
    /// seconds of rows at a time); started afresh when the rules change.
    pub telemetry_correlator: std::sync::Mutex<Correlator>,
}

impl TenantRules {
    pub fn new(set: RuleSet, ids: HashMap<PathBuf, String>) -> TenantRules {
        TenantRules {
            telemetry_correlator: std::sync::Mutex::new(set.correlator()),
            set,
            ids,
        }
    }

    /// The rule-table id of the rule a detection came from.
    pub fn id_of(&self, path: &std::path::Path) -> Option<&str> {
        self.ids.get(path).map(String::as_str)
    }
}

/// A cheap handle on the server's state.
#[derive(Clone)]
pub struct App(pub Arc<AppInner>);

pub struct AppInner {
    pub config: Config,
    pub db: StateDb,
    pub store: Arc<Store>,
    /// The compiled rules of each tenant, swapped whole when rules change.
    rules: RwLock<HashMap<String, Arc<TenantRules>>>,
    /// Deduplication and incident grouping: one writer at a time keeps them deterministic.
    pub alerting: Mutex<Alerting>,
    pub metrics: Metrics,
    pub started: Instant,
    /// The CA that signs the server's and agents' certificates (none with plain HTTP).
    pub ca: Option<Arc<rampart_pki::Ca>>,
    /// Its `sha256:…` fingerprint.
    pub ca_fingerprint: Option<String>,
    ingest_slots: Semaphore,
    /// One lock per device that numbers its telemetry (see [`AppInner::telemetry_lock`]).
    telemetry_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Each tenant's active indicators as last read, and when (see [`AppInner::indicators_of`]).
    indicators: Mutex<HashMap<String, (Instant, Arc<crate::indicators::Indicators>)>>,
    /// Devices whose telemetry high-water mark was checked against the store since start.
    pub telemetry_checked: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Agents waiting for actions (long-poll), woken when one is created for their device.
    pub action_waiters: ActionWaiters,
    /// Held while a stored package is moved into place and recorded, so that two uploads for
    /// the same action cannot leave one's file under the other's checksum.
    pub package_commits: Mutex<()>,
    /// Sign-in failures by user name.
    pub login_throttle: crate::throttle::Throttle,
    /// Sign-in and enrollment failures by client address (many users may share one).
    pub address_throttle: crate::throttle::Throttle,
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// How long a tenant's indicators are used before they are read again.
pub const INDICATORS_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl AppInner {
    pub fn new(
        config: Config,
        db: StateDb,
        store: Arc<Store>,
        alerting: Alerting,
        ca: Option<Arc<rampart_pki::Ca>>,
    ) -> AppInner {
        let slots = config.limits.ingest_concurrency;
        let waiters = config.limits.max_action_waiters;
        let limits = &config.limits;
        let throttle = |failures: u32| {
            crate::throttle::Throttle::new(
                failures,
                std::time::Duration::from_secs(limits.failure_window_secs),
                std::time::Duration::from_secs(limits.lockout_secs),
            )
        };
        let (login_throttle, address_throttle) = (
            throttle(limits.max_failures),
            throttle(limits.max_failures.saturating_mul(4)),
        );
        AppInner {
            config,
            db,
            store,
            rules: RwLock::default(),
            alerting: Mutex::new(alerting),
            metrics: Metrics::default(),
            started: Instant::now(),
            ca_fingerprint: ca.as_ref().map(|c| c.fingerprint().to_string()),
            ca,
            ingest_slots: Semaphore::new(slots),
            telemetry_locks: std::sync::Mutex::default(),
            telemetry_checked: std::sync::Mutex::default(),
            indicators: Mutex::default(),
            action_waiters: ActionWaiters::new(waiters),
            package_commits: Mutex::new(()),
            login_throttle,
            address_throttle,
        }
    }

    /// The device's telemetry lock: its numbered requests are stored one at a time, so that a
    /// retry sees the high-water mark the request it retries left.
    pub fn telemetry_lock(&self, device: &str) -> Arc<Mutex<()>> {
        let mut locks = self
            .telemetry_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        locks.entry(device.to_string()).or_default().clone()
    }

    /// The tenant's active indicators: read from the database at most every
    /// [`INDICATORS_TTL`] (expiries take effect within it), and at once after a change through
    /// the API ([`AppInner::forget_indicators`]).
    pub async fn indicators_of(
        &self,
        tenant: &str,
    ) -> rampart_state::Result<Arc<crate::indicators::Indicators>> {
        let mut cache = self.indicators.lock().await;
        if let Some((at, indicators)) = cache.get(tenant)
            && at.elapsed() < INDICATORS_TTL
        {
            return Ok(indicators.clone());
        }
        let list = self
            .db
            .active_indicators(tenant, chrono::Utc::now())
            .await?;
        let indicators = Arc::new(crate::indicators::Indicators::new(list));
        cache.insert(tenant.to_string(), (Instant::now(), indicators.clone()));
        Ok(indicators)
    }

    pub async fn forget_indicators(&self, tenant: &str) {
        self.indicators.lock().await.remove(tenant);
    }

    /// The tenant's current rules (none when none are loaded).
    pub fn rules_of(&self, tenant: &str) -> Arc<TenantRules> {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        match rules.get(tenant) {
            Some(set) => set.clone(),
            None => Arc::new(TenantRules::new(RuleSet::from_sources(&[]), HashMap::new())),
        }
    }

    pub fn set_rules(&self, tenant: &str, rules: TenantRules) {
        let mut all = self.rules.write().unwrap_or_else(|p| p.into_inner());
        all.insert(tenant.to_string(), Arc::new(rules));
    }

    /// A turn at ingesting: waits while all workers are busy, and refuses (429) when too many
    /// requests already wait — back-pressure instead of unbounded buffering.
    pub async fn ingest_slot(&self) -> Result<SemaphorePermit<'_>, Problem> {
        if let Ok(permit) = self.ingest_slots.try_acquire() {
            return Ok(permit);
        }
        let waiting = self.metrics.ingest_waiting.fetch_add(1, Ordering::SeqCst);
        let _gauge = Decrement(&self.metrics.ingest_waiting);
        if waiting as usize >= self.config.limits.max_waiting_ingest {
            self.metrics.ingest_refused.fetch_add(1, Ordering::Relaxed);
            return Err(Problem::too_busy(1));
        }
        self.ingest_slots
            .acquire()
            .await
            .map_err(|_| Problem::too_busy(1))
    }
}

/// Takes one back off a gauge when dropped (the request stopped waiting, whichever way).
struct Decrement<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The agents waiting for actions (`GET /api/v1/agents/actions`): one [`Notify`] per device
/// that has a waiter, which creating an action for the device wakes. How many wait at once is
/// bounded (`limits.max_action_waiters`); a poll past it answers at once.
pub struct ActionWaiters {
    limit: usize,
    inner: std::sync::Mutex<WaitersInner>,
}

#[derive(Default)]
struct WaitersInner {
    /// Per device: its `Notify` and how many wait on it (the entry goes with the last).
    devices: HashMap<String, (Arc<Notify>, usize)>,
    waiting: usize,
    /// The server is stopping: no one waits any more.
    closed: bool,
}

impl ActionWaiters {
    fn new(limit: usize) -> ActionWaiters {
        ActionWaiters {
            limit,
            inner: std::sync::Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WaitersInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place among the waiters for `device`; none when the limit is reached or the server is
    /// stopping.
    pub fn enter(&self, device: &str) -> Option<Waiter<'_>> {
        let mut inner = self.lock();
        if inner.closed || inner.waiting >= self.limit {
            return None;
        }
        inner.waiting += 1;
        let (notify, count) = inner.devices.entry(device.to_string()).or_default();
        *count += 1;
        Some(Waiter {
            waiters: self,
            device: device.to_string(),
            notify: notify.clone(),
        })
    }

    /// Wakes the agents waiting for `device` (an action was created for it).
    pub fn wake(&self, device: &str) {
        if let Some((notify, _)) = self.lock().devices.get(device) {
            notify.notify_waiters();
        }
    }

    /// At shutdown: wakes every waiter and lets none in, so that draining the requests in
    /// flight does not wait for long-polls.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for (notify, _) in inner.devices.values() {
            notify.notify_waiters();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// How many agents wait now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }
}

/// One agent's place among the [`ActionWaiters`], given back when dropped.
pub struct Waiter<'a> {
    waiters: &'a ActionWaiters,
    device: String,
    notify: Arc<Notify>,
}

impl Waiter<'_> {
    /// What wakes this waiter.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut inner = self.waiters.lock();
        inner.waiting -= 1;
        if let Some((_, count)) = inner.devices.get_mut(&self.device) {
            *count -= 1;
            if *count == 0 {
                inner.devices.remove(&self.device);
            }
        }
    }
}
