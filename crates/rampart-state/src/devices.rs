//! Device groups and devices: devices with an agent (enrolled, with a certificate) and devices
//! known only from the event logs that name them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{
    Cols, FromRow, Order, Page, PageRequest, Scope, Sql, Time, micros, now, str_enum, to_json,
};
use crate::incidents::Incident;
use crate::validate::{body, json, limits, line, tags};
use crate::{Error, Result, StateDb, ids};

str_enum! {
    /// Defender's device health states.
    HealthStatus {
        Active = "active",
        Inactive = "inactive",
        Misconfigured = "misconfigured",
        /// Known from event logs only: no agent reports for it.
        NoSensorData = "no_sensor_data",
    }
}

str_enum! {
    IsolationState {
        NotIsolated = "not_isolated",
        Isolating = "isolating",
        Isolated = "isolated",
        Releasing = "releasing",
    }
}

str_enum! {
    DeviceRisk {
        None = "none",
        Low = "low",
        Medium = "medium",
        High = "high",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceGroup {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub description: String,
    pub created_at: Time,
}

impl FromRow for DeviceGroup {
    const COLUMNS: &'static str = "id, tenant_id, name, description, created_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(DeviceGroup {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            name: r.str("name")?,
            description: r.str("description")?,
            created_at: r.time("created_at")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub tenant_id: String,
    /// Lowercased, unique per tenant.
    pub hostname: String,
    pub platform: String,
    pub os_version: String,
    pub agent_version: Option<String>,
    pub group_id: Option<String>,
    pub tags: Vec<String>,
    pub first_seen: Time,
    pub last_seen: Time,
    pub health_status: HealthStatus,
    /// Agent-reported health details (sensor mode, collectors, queue depth, …).
    pub health: Value,
    pub cert_fingerprint: Option<String>,
    /// Events the agent dropped, as last reported (a cumulative counter).
    pub events_dropped: i64,
    /// Drop reports the agent sent, as last reported.
    pub drops_reported: i64,
    pub isolation: IsolationState,
    pub risk: DeviceRisk,
}

impl FromRow for Device {
    const COLUMNS: &'static str = "id, tenant_id, hostname, platform, os_version, agent_version, group_id, tags, \
        first_seen, last_seen, health_status, health, cert_fingerprint, events_dropped, drops_reported, isolation, risk";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(Device {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            hostname: r.str("hostname")?,
            platform: r.str("platform")?,
            os_version: r.str("os_version")?,
            agent_version: r.opt_str("agent_version")?,
            group_id: r.opt_str("group_id")?,
            tags: r.json("tags")?,
            first_seen: r.time("first_seen")?,
            last_seen: r.time("last_seen")?,
            health_status: r.parse("health_status")?,
            health: r.json("health")?,
            cert_fingerprint: r.opt_str("cert_fingerprint")?,
            events_dropped: r.i64("events_dropped")?,
            drops_reported: r.i64("drops_reported")?,
            isolation: r.parse("isolation")?,
            risk: r.parse("risk")?,
        })
    }
}

/// An agent enrolling (or re-enrolling) its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevice {
    pub hostname: String,
    pub platform: String,
    pub os_version: String,
    pub agent_version: String,
    pub group_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// SHA-256 of the agent's client certificate, hex.
    pub cert_fingerprint: String,
}

/// A host named by an event (EVTX, syslog, …) with no agent of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSighting {
    pub hostname: String,
    /// Empty when the source does not say.
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub os_version: String,
    pub seen_at: Time,
}

/// A device named by a batch of events: its (normalised) host name and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SightedDevice {
    pub id: String,
    pub hostname: String,
}

/// How far past a host's recorded last seen a sighting may be and still skip the database.
pub const SIGHTING_GRANULARITY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Hosts cached at most; the cache starts over past this.
const MAX_CACHED_SIGHTINGS: usize = 100_000;

/// What the database holds for a host, as this process last wrote it; keyed by tenant and
/// normalised host name.
pub(crate) type Sightings = std::collections::HashMap<(String, String), KnownHost>;

#[derive(Debug)]
pub(crate) struct KnownHost {
    id: String,
    first_seen: Time,
    last_seen: Time,
}

impl KnownHost {
    fn covers(&self, at: Time) -> bool {
        self.first_seen <= at && at <= self.last_seen + SIGHTING_GRANULARITY
    }
}

/// A sighting with its fields validated.
struct Sighting {
    host: String,
    platform: String,
    os_version: String,
    at: Time,
}

impl Sighting {
    fn check(seen: &DeviceSighting) -> Result<Sighting> {
        Ok(Sighting {
            host: hostname(&seen.hostname)?,
            platform: line("platform", &seen.platform, limits::SHORT_MAX_CHARS, false)?,
            os_version: line(
                "os_version",
                &seen.os_version,
                limits::SHORT_MAX_CHARS,
                false,
            )?,
            at: seen.seen_at,
        })
    }

    async fn upsert(&self, conn: &mut sqlx::AnyConnection, tenant: &str) -> Result<Device> {
        let sql = format!(
            "INSERT INTO devices (id, tenant_id, hostname, platform, os_version, tags, first_seen, last_seen, \
             health_status, health, events_dropped, drops_reported, isolation, risk) \
             VALUES ($1, $2, $3, $4, $5, '[]', $6, $6, $7, '{{}}', 0, 0, $8, $9) \
             ON CONFLICT (tenant_id, hostname) DO UPDATE SET \
             last_seen = CASE WHEN excluded.last_seen > devices.last_seen THEN excluded.last_seen ELSE devices.last_seen END, \
             first_seen = CASE WHEN excluded.first_seen < devices.first_seen THEN excluded.first_seen ELSE devices.first_seen END, \
             platform = CASE WHEN devices.platform = '' THEN excluded.platform ELSE devices.platform END, \
             os_version = CASE WHEN devices.os_version = '' THEN excluded.os_version ELSE devices.os_version END \
             RETURNING {}",
            Device::COLUMNS
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ids::new_id("dev")?)
            .bind(tenant.to_owned())
            .bind(self.host.clone())
            .bind(self.platform.clone())
            .bind(self.os_version.clone())
            .bind(micros(self.at))
            .bind(HealthStatus::NoSensorData.as_str())
            .bind(IsolationState::NotIsolated.as_str())
            .bind(DeviceRisk::None.as_str())
            .fetch_one(conn)
            .await?;
        Device::from_row(&Cols(&row))
    }
}

/// What an agent reports periodically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceHeartbeat {
    pub agent_version: String,
    pub health_status: HealthStatus,
    pub health: Value,
    pub events_dropped: i64,
    pub drops_reported: i64,
    pub seen_at: Time,
}

/// Changes an analyst or the response pipeline makes to a device; `None` leaves a field as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceUpdate {
    /// `Some(None)` removes the device from its group.
    #[serde(default, with = "double_option")]
    pub group_id: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub isolation: Option<IsolationState>,
    pub risk: Option<DeviceRisk>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`) in JSON.
pub(crate) mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_ref().and_then(Option::as_ref).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFilter {
    #[serde(default)]
    pub scope: Scope,
    pub group_id: Option<String>,
    pub tag: Option<String>,
    /// Case-insensitive substring of the hostname.
    pub hostname_contains: Option<String>,
    pub health_status: Option<HealthStatus>,
    pub last_seen_from: Option<Time>,
    pub last_seen_to: Option<Time>,
}

fn hostname(value: &str) -> Result<String> {
    Ok(line("hostname", value, limits::SHORT_MAX_CHARS, true)?.to_lowercase())
}

fn fingerprint(value: &str) -> Result<String> {
    let v = value.trim().to_ascii_lowercase().replace(':', "");
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(
            "cert_fingerprint",
            "expected a SHA-256 in hex",
        ));
    }
    Ok(v)
}

impl StateDb {
    pub async fn create_device_group(
        &self,
        tenant: &str,
        name: &str,
        description: &str,
    ) -> Result<DeviceGroup> {
        let group = DeviceGroup {
            id: ids::new_id("grp")?,
            tenant_id: tenant.to_owned(),
            name: line("name", name, limits::NAME_MAX_CHARS, true)?,
            description: body(
                "description",
                description,
                limits::DESCRIPTION_MAX_CHARS,
                false,
            )?,
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO device_groups (id, tenant_id, name, description, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(group.id.clone())
        .bind(group.tenant_id.clone())
        .bind(group.name.clone())
        .bind(group.description.clone())
        .bind(micros(group.created_at))
        .execute(&self.pool)
        .await
        .map_err(Error::from)
        .map_err(Error::unique("device group name"))?;
        Ok(group)
    }

    pub async fn get_device_group(&self, tenant: &str, id: &str) -> Result<DeviceGroup> {
        let mut sql = Self::select::<DeviceGroup>("device_groups", tenant);
        sql.and_eq("id", Some(id.to_owned()));
        self.fetch_one(sql, "device group").await
    }

    /// Groups by name.
    pub async fn list_device_groups(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> Result<Page<DeviceGroup>> {
        let sql = Self::select::<DeviceGroup>("device_groups", tenant);
        self.fetch_page(sql, Order::Alphabetical("name"), page)
            .await
    }

    pub async fn update_device_group(
        &self,
        tenant: &str,
        id: &str,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<DeviceGroup> {
        let mut sql = Sql::new("UPDATE device_groups SET id = id");
        if let Some(name) = name {
            sql.push(", name = ")
                .bind(line("name", name, limits::NAME_MAX_CHARS, true)?);
        }
        if let Some(d) = description {
            sql.push(", description = ").bind(body(
                "description",
                d,
                limits::DESCRIPTION_MAX_CHARS,
                false,
            )?);
        }
        sql.push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .push(" AND id = ")
            .bind(id.to_owned());
        let done = sql
            .query(self.backend)?
            .execute(&self.pool)
            .await
            .map_err(Error::from)
            .map_err(Error::unique("device group name"))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound("device group"));
        }
        self.get_device_group(tenant, id).await
    }

    /// Deletes a group; its devices become ungrouped, its enrollment tokens are deleted.
    pub async fn delete_device_group(&self, tenant: &str, id: &str) -> Result<()> {
        self.delete_by_id("device_groups", tenant, id, "device group")
            .await
    }

    /// Registers an enrolling agent's host. A host already known from event logs (same hostname)
    /// is adopted, keeping its id and first-seen time, so earlier alerts stay attached to it.
    /// Its telemetry high-water mark is cleared: an agent that enrolls anew may number its rows
    /// anew, and sends only rows it was not told were stored.
    pub async fn register_device(&self, tenant: &str, new: &NewDevice) -> Result<Device> {
        let host = hostname(&new.hostname)?;
        let platform = line("platform", &new.platform, limits::SHORT_MAX_CHARS, false)?;
        let os_version = line(
            "os_version",
            &new.os_version,
            limits::SHORT_MAX_CHARS,
            false,
        )?;
        let agent_version = line(
            "agent_version",
            &new.agent_version,
            limits::SHORT_MAX_CHARS,
            true,
        )?;
        let tags = tags("tags", &new.tags)?;
        let fp = fingerprint(&new.cert_fingerprint)?;
        if let Some(group) = &new.group_id {
            self.ensure_groups(tenant, "group_id", std::slice::from_ref(group))
                .await?;
        }
        let at = micros(now());
        let mut sql = Sql::new(
            "INSERT INTO devices (id, tenant_id, hostname, platform, os_version, agent_version, \
             group_id, tags, first_seen, last_seen, health_status, health, cert_fingerprint, events_dropped, \
             drops_reported, isolation, risk) VALUES (",
        );
        sql.bind(ids::new_id("dev")?).push(", ");
        sql.bind(tenant.to_owned()).push(", ");
        sql.bind(host).push(", ");
        sql.bind(platform).push(", ");
        sql.bind(os_version).push(", ");
        sql.bind(agent_version).push(", ");
        sql.bind(new.group_id.clone()).push(", ");
        sql.bind(to_json(&tags)).push(", ");
        sql.bind(at).push(", ");
        sql.bind(at).push(", ");
        sql.bind(HealthStatus::Active.as_str()).push(", '{}', ");
        sql.bind(fp).push(", 0, 0, ");
        sql.bind(IsolationState::NotIsolated.as_str()).push(", ");
        sql.bind(DeviceRisk::None.as_str());
        sql.push(
            ") ON CONFLICT (tenant_id, hostname) DO UPDATE SET platform = excluded.platform, \
             os_version = excluded.os_version, agent_version = excluded.agent_version, \
             group_id = COALESCE(excluded.group_id, devices.group_id), \
             tags = excluded.tags, last_seen = excluded.last_seen, health_status = excluded.health_status, \
             cert_fingerprint = excluded.cert_fingerprint, telemetry_seq = NULL",
        );
        sql.push(&format!(" RETURNING {}", Device::COLUMNS));
        let row = sql
            .query(self.backend)?
            .fetch_one(&self.pool)
            .await
            .map_err(Error::from)
            .map_err(Error::unique("certificate fingerprint"))?;
        Device::from_row(&Cols(&row))
    }

    /// Records a host named by an event: creates the device on first sight, else widens its
    /// first/last seen range.
    pub async fn record_device_sighting(
        &self,
        tenant: &str,
        seen: &DeviceSighting,
    ) -> Result<Device> {
        let seen = Sighting::check(seen)?;
        let mut conn = self.pool.acquire().await?;
        seen.upsert(&mut conn, tenant).await
    }

    /// Records the hosts a batch of events named, in one transaction, and returns each one's
    /// device (name and id). A sighting within the range this process last recorded for the
    /// host (up to [`SIGHTING_GRANULARITY`] past its last seen) skips the database: a busy host
    /// costs one statement a minute, not one per batch. Host names the database would refuse
    /// are left out (the events themselves are stored already).
    pub async fn record_device_sightings(
        &self,
        tenant: &str,
        seen: &[DeviceSighting],
    ) -> Result<Vec<SightedDevice>> {
        let mut found = Vec::with_capacity(seen.len());
        let mut missing = Vec::new();
        {
            let cache = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
            for s in seen {
                let Ok(s) = Sighting::check(s) else { continue };
                let key = (tenant.to_owned(), s.host.clone());
                match cache.get(&key) {
                    Some(known) if known.covers(s.at) => found.push(SightedDevice {
                        id: known.id.clone(),
                        hostname: s.host,
                    }),
                    _ => missing.push(s),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let mut tx = self.begin().await?;
        let mut stored = Vec::with_capacity(missing.len());
        for s in &missing {
            stored.push(s.upsert(&mut tx, tenant).await?);
        }
        tx.commit().await?;
        let mut cache = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED_SIGHTINGS {
            cache.clear();
        }
        for device in stored {
            cache.insert(
                (tenant.to_owned(), device.hostname.clone()),
                KnownHost {
                    id: device.id.clone(),
                    first_seen: device.first_seen,
                    last_seen: device.last_seen,
                },
            );
            found.push(SightedDevice {
                id: device.id,
                hostname: device.hostname,
            });
        }
        Ok(found)
    }

    /// Marks the agents of every tenant that have not reported since `silent_since` inactive;
    /// returns how many changed. Devices known from event logs only are left as they are.
    pub async fn mark_silent_agents_inactive(&self, silent_since: Time) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE devices SET health_status = $1 WHERE health_status = $2 AND last_seen < $3",
        )
        .bind(HealthStatus::Inactive.as_str())
        .bind(HealthStatus::Active.as_str())
        .bind(micros(silent_since))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Applies an agent heartbeat.
    pub async fn record_heartbeat(
        &self,
        tenant: &str,
        id: &str,
        hb: &DeviceHeartbeat,
    ) -> Result<Device> {
        let agent_version = line(
            "agent_version",
            &hb.agent_version,
            limits::SHORT_MAX_CHARS,
            true,
        )?;
        let health = json("health", &hb.health, limits::HEALTH_MAX_BYTES)?;
        let mut sql = Sql::new("UPDATE devices SET agent_version = ");
        sql.bind(agent_version)
            .push(", health_status = ")
            .bind(hb.health_status.as_str())
            .push(", health = ")
            .bind(health)
            .push(", events_dropped = ")
            .bind(hb.events_dropped.max(0))
            .push(", drops_reported = ")
            .bind(hb.drops_reported.max(0))
            .push(", last_seen = CASE WHEN last_seen > ")
            .bind(micros(hb.seen_at))
            .push(" THEN last_seen ELSE ")
            .bind(micros(hb.seen_at))
            .push(" END");
        // The agent knows whether its host is isolated (it keeps the state across restarts).
        if let Some(isolated) = hb.health.get("isolated").and_then(Value::as_bool) {
            let state = if isolated {
                IsolationState::Isolated
            } else {
                IsolationState::NotIsolated
            };
            sql.push(", isolation = ").bind(state.as_str());
        }
        self.update_device_with(tenant, id, sql).await
    }

    pub async fn update_device(
        &self,
        tenant: &str,
        id: &str,
        update: &DeviceUpdate,
    ) -> Result<Device> {
        let mut sql = Sql::new("UPDATE devices SET id = id");
        if let Some(group) = &update.group_id {
            if let Some(g) = group {
                self.ensure_groups(tenant, "group_id", std::slice::from_ref(g))
                    .await?;
            }
            sql.push(", group_id = ").bind(group.clone());
        }
        if let Some(t) = &update.tags {
            sql.push(", tags = ").bind(to_json(&tags("tags", t)?));
        }
        if let Some(iso) = update.isolation {
            sql.push(", isolation = ").bind(iso.as_str());
        }
        if let Some(risk) = update.risk {
            sql.push(", risk = ").bind(risk.as_str());
        }
        self.update_device_with(tenant, id, sql).await
    }

    /// Finishes an `UPDATE devices SET …` with the tenant/id condition and returns the new row.
    async fn update_device_with(&self, tenant: &str, id: &str, mut sql: Sql) -> Result<Device> {
        sql.push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .push(" AND id = ")
            .bind(id.to_owned())
            .push(&format!(" RETURNING {}", Device::COLUMNS));
        self.fetch_one(sql, "device").await
    }

    /// A device, if it exists in this tenant and is within `scope`.
    pub async fn get_device(&self, tenant: &str, scope: &Scope, id: &str) -> Result<Device> {
        let mut sql = Self::select::<Device>("devices", tenant);
        sql.and_eq("id", Some(id.to_owned()))
            .and_device_scope(tenant, "id", scope);
        self.fetch_one(sql, "device").await
    }

    /// The devices of this tenant named `hostnames` (any case), as `(hostname, id)` with the
    /// stored, lower-case hostname; names no device has are left out.
    pub async fn device_ids_by_hostname(
        &self,
        tenant: &str,
        hostnames: &[String],
    ) -> Result<Vec<(String, String)>> {
        let names: Vec<String> = hostnames.iter().map(|h| h.to_lowercase()).collect();
        let mut found = Vec::new();
        for chunk in names.chunks(crate::alerts::KEYS_PER_LOOKUP) {
            let mut sql = Sql::new("SELECT hostname, id FROM devices WHERE tenant_id = ");
            sql.bind(tenant.to_owned()).and_in("hostname", chunk);
            for row in sql.query(self.backend)?.fetch_all(&self.pool).await? {
                let r = Cols(&row);
                found.push((r.str("hostname")?, r.str("id")?));
            }
        }
        Ok(found)
    }

    /// The device a client certificate belongs to (agent gateway authentication; the
    /// certificate determines the tenant).
    pub async fn device_by_cert_fingerprint(
        &self,
        cert_fingerprint: &str,
    ) -> Result<Option<Device>> {
        let Ok(fp) = fingerprint(cert_fingerprint) else {
            return Ok(None);
        };
        let mut sql = Sql::new(&format!(
            "SELECT {} FROM devices WHERE cert_fingerprint = ",
            Device::COLUMNS
        ));
        sql.bind(fp);
        self.fetch_optional(sql).await
    }

    /// Devices by hostname.
    pub async fn list_devices(
        &self,
        tenant: &str,
        filter: &DeviceFilter,
        page: &PageRequest,
    ) -> Result<Page<Device>> {
        let mut sql = Self::select::<Device>("devices", tenant);
        sql.and_device_scope(tenant, "id", &filter.scope)
            .and_eq("group_id", filter.group_id.clone())
            .and_tag(self.backend, "tags", filter.tag.as_deref())
            .and_contains(
                self.backend,
                "hostname",
                filter.hostname_contains.as_ref().map(|h| h.to_lowercase()),
            )
            .and_eq(
                "health_status",
                filter.health_status.map(HealthStatus::as_str),
            )
            .and_range("last_seen", filter.last_seen_from, filter.last_seen_to);
        self.fetch_page(sql, Order::Alphabetical("hostname"), page)
            .await
    }

    /// The incidents with an alert on the device (merged ones left out), latest activity first.
    pub async fn list_device_incidents(
        &self,
        tenant: &str,
        device_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Incident>> {
        let mut sql = Self::select::<Incident>("incidents", tenant);
        sql.push(
            " AND merged_into IS NULL AND id IN (SELECT incident_id FROM alerts WHERE tenant_id = ",
        )
        .bind(tenant.to_owned())
        .push(" AND device_id = ")
        .bind(device_id.to_owned())
        .push(")");
        self.fetch_page(sql, Order::NewestFirst("last_activity"), page)
            .await
    }

    /// The highest telemetry sequence number stored for the device, if any (see
    /// [`StateDb::advance_telemetry_high_water`]).
    pub async fn telemetry_high_water(&self, tenant: &str, id: &str) -> Result<Option<i64>> {
        let mut sql = Sql::new("SELECT telemetry_seq FROM devices WHERE tenant_id = ");
        sql.bind(tenant.to_owned())
            .push(" AND id = ")
            .bind(id.to_owned());
        let row = sql
            .query(self.backend)?
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("device"))?;
        Cols(&row).opt_i64("telemetry_seq")
    }

    /// Records that the device's telemetry up to sequence number `seq` is stored (durably: call
    /// it after the event store acknowledged the rows). The mark only moves forward, so a late
    /// request cannot lower it.
    pub async fn advance_telemetry_high_water(
        &self,
        tenant: &str,
        id: &str,
        seq: i64,
    ) -> Result<()> {
        if seq < 0 {
            return Err(Error::invalid("seq", "sequence numbers are not negative"));
        }
        let mut sql = Sql::new(
            "UPDATE devices SET telemetry_seq = CASE WHEN telemetry_seq IS NULL OR telemetry_seq < ",
        );
        sql.bind(seq)
            .push(" THEN ")
            .bind(seq)
            .push(" ELSE telemetry_seq END");
        self.execute_on_id(sql, tenant, id, "device").await
    }

    /// Deletes a device with its pending actions; its alerts keep the device name.
    pub async fn delete_device(&self, tenant: &str, id: &str) -> Result<()> {
        self.delete_by_id("devices", tenant, id, "device").await?;
        self.sightings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(t, _), known| t != tenant || known.id != id);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::NewIncident;

    /// A fresh SQLite state database (kept while the directory lives), a tenant and a device
    /// known from event logs.
    pub(crate) async fn scratch() -> (tempfile::TempDir, StateDb, String, Device) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("state.db").display()
        );
        let db = StateDb::connect(&url).await.expect("connect");
        let tenant = db.create_tenant("acme").await.expect("tenant").id;
        let sighting = DeviceSighting {
            hostname: "pc01".into(),
            platform: String::new(),
            os_version: String::new(),
            seen_at: Utc::now(),
        };
        let device = db
            .record_device_sighting(&tenant, &sighting)
            .await
            .expect("device");
        (dir, db, tenant, device)
    }

    #[tokio::test]
    async fn heartbeats_say_whether_the_device_is_isolated() {
        let (_dir, db, t, d) = scratch().await;
        let beat = |health: Value| DeviceHeartbeat {
            agent_version: "1".into(),
            health_status: HealthStatus::Active,
            health,
            events_dropped: 0,
            drops_reported: 0,
            seen_at: Utc::now(),
        };
        let on = beat(json!({"isolated": true}));
        let device = db.record_heartbeat(&t, &d.id, &on).await.unwrap();
        assert_eq!(device.isolation, IsolationState::Isolated);
        // A report that does not say leaves the state as it is.
        let silent = beat(json!({"sensor_mode": "ebpf"}));
        let device = db.record_heartbeat(&t, &d.id, &silent).await.unwrap();
        assert_eq!(device.isolation, IsolationState::Isolated);
        let off = beat(json!({"isolated": false}));
        let device = db.record_heartbeat(&t, &d.id, &off).await.unwrap();
        assert_eq!(device.isolation, IsolationState::NotIsolated);
    }

    #[tokio::test]
    async fn a_device_lists_the_incidents_of_its_alerts() {
        let (_dir, db, t, d) = scratch().await;
        let sighting = DeviceSighting {
            hostname: "pc02".into(),
            platform: String::new(),
            os_version: String::new(),
            seen_at: Utc::now(),
        };
        let other = db.record_device_sighting(&t, &sighting).await.unwrap();
        let mut incidents = Vec::new();
        for (title, device) in [("on pc01", &d), ("on pc02", &other), ("on pc01 again", &d)] {
            let alert = serde_json::from_value(json!({
                "rule": null, "title": title, "severity": "high", "device_id": device.id,
                "device_name": device.hostname, "first_event_time": Utc::now(),
                "last_event_time": Utc::now(), "dedup_key": null, "trigger_event": null,
            }))
            .unwrap();
            let alert = db.create_alert(&t, &alert).await.unwrap();
            let new = NewIncident {
                id: None,
                title: title.into(),
                tags: vec![],
            };
            let incident = db.create_incident(&t, &new).await.unwrap();
            db.attach_alert(&t, &incident.id, &alert.id, &json!({}))
                .await
                .unwrap();
            incidents.push(incident.id);
        }
        let first = PageRequest::first(10);
        let page = db.list_device_incidents(&t, &d.id, &first).await.unwrap();
        let mut ids: Vec<String> = page.items.into_iter().map(|i| i.id).collect();
        ids.sort();
        let mut expected = vec![incidents[0].clone(), incidents[2].clone()];
        expected.sort();
        assert_eq!(ids, expected);
        // Another tenant finds nothing under the same device id.
        let other_tenant = db.create_tenant("other").await.unwrap().id;
        let none = db
            .list_device_incidents(&other_tenant, &d.id, &first)
            .await
            .unwrap();
        assert!(none.items.is_empty());
    }
}
