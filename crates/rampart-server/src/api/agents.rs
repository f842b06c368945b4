//! The agent gateway: enrollment with a one-time token (the agent sends a CSR, gets a client
//! certificate naming the tenant and device the server decided), then mutual TLS for
//! telemetry, heartbeats and action results. An agent's tenant and device come from its
//! certificate only: nothing an agent sends can place rows in another tenant or device.

use std::collections::BTreeMap;
use std::io::Read;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chrono::Utc;
use rampart_schema::Table;
use rampart_state::{ActionStatus, DeviceHeartbeat, HealthStatus, NewAuditEntry, NewDevice, Scope};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::auth::AgentIdentity;
use crate::listener::Peer;
use crate::problem::{ApiResult, Json, Problem, Query, json};
use crate::telemetry::{Received, Sequence, skip_stored};

/// Agent certificates are valid this long; agents renew by enrolling again.
const AGENT_CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
/// Rows of one telemetry request, and its size once decompressed.
pub const MAX_TELEMETRY_ROWS: usize = 100_000;
pub const MAX_TELEMETRY_BYTES: usize = 64 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// `<secret>.<CA fingerprint hex>`, as `POST /api/v1/enrollment-tokens` gave it.
    token: String,
    /// The agent's certificate signing request (PEM); only its public key is used.
    csr: String,
    hostname: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    os_version: String,
    agent_version: String,
}

pub async fn enroll(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Json(body): Json<Enrollment>,
) -> ApiResult {
    let addr_key = format!("addr:{}", peer.addr.ip());
    super::session::throttled(&app.address_throttle, &addr_key)?;
    let Some(ca) = app.ca.clone() else {
        return Err(Problem::conflict(
            "agents enroll over TLS: the server runs --insecure-http",
        ));
    };
    let secret = body
        .token
        .rsplit_once('.')
        .map_or(body.token.as_str(), |(s, _)| s);
    let Some(grant) = app.db.consume_enrollment_token(secret).await? else {
        app.address_throttle.failed(&[&addr_key]);
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "the enrollment token is unknown, used up, expired or revoked",
        ));
    };
    // The device id goes into the certificate, whose fingerprint goes into the device: register
    // under a provisional fingerprint (the CSR's), then under the certificate's.
    let provisional = rampart_pki::cert_fingerprint(body.csr.as_bytes()).to_hex();
    let mut new = NewDevice {
        hostname: body.hostname,
        platform: body.platform,
        os_version: body.os_version,
        agent_version: body.agent_version,
        group_id: grant.group_id.clone(),
        tags: Vec::new(),
        cert_fingerprint: provisional,
    };
    let device = app.db.register_device(&grant.tenant_id, &new).await?;
    let claims = rampart_pki::AgentClaims {
        tenant: grant.tenant_id.clone(),
        device_id: device.id.clone(),
    };
    let cert = ca
        .sign_agent_csr(&body.csr, &claims, AGENT_CERT_VALIDITY)
        .map_err(|e| Problem::bad_request(format!("csr: {e}")))?;
    let der = rampart_pki::rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
        .map(|c: rampart_pki::rustls::pki_types::CertificateDer<'static>| c.to_vec())
        .map_err(Problem::internal)?;
    new.cert_fingerprint = rampart_pki::cert_fingerprint(&der).to_hex();
    let device = app.db.register_device(&grant.tenant_id, &new).await?;
    let entry = NewAuditEntry {
        actor: format!("enrollment:{}", grant.token_id),
        action: "device.enroll".into(),
        target_kind: "device".into(),
        target_id: device.id.clone(),
        details: json!({"hostname": device.hostname}),
        remote_addr: None,
    };
    app.db.append_audit(&grant.tenant_id, &entry).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "device_id": device.id,
            "tenant_id": grant.tenant_id,
            "certificate": cert,
            "ca_certificate": ca.cert_pem(),
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    agent_version: String,
    #[serde(default = "active")]
    health_status: HealthStatus,
    #[serde(default)]
    health: Value,
    #[serde(default)]
    events_dropped: i64,
    #[serde(default)]
    drops_reported: i64,
}

fn active() -> HealthStatus {
    HealthStatus::Active
}

/// Records the agent's health, hands it the actions waiting for it (marked sent) and tells it
/// the policy: `[agents]` of the configuration, and under `block` the block indicators it
/// enforces (its device group's and everyone's).
pub async fn heartbeat(
    State(app): State<App>,
    Extension(agent): Extension<AgentIdentity>,
    Json(body): Json<Heartbeat>,
) -> ApiResult {
    let hb = DeviceHeartbeat {
        agent_version: body.agent_version,
        health_status: body.health_status,
        health: body.health,
        events_dropped: body.events_dropped,
        drops_reported: body.drops_reported,
        seen_at: Utc::now(),
    };
    app.db
        .record_heartbeat(&agent.tenant, &agent.device_id, &hb)
        .await?;
    let actions = app
        .db
        .hand_over_pending_actions(&agent.tenant, &agent.device_id)
        .await?;
    let device = app
        .db
        .get_device(&agent.tenant, &Scope::all(), &agent.device_id)
        .await?;
    let mut policy = serde_json::to_value(&app.config.agents).map_err(Problem::internal)?;
    policy["block"] = app
        .indicators_of(&agent.tenant)
        .await?
        .blocklist(device.group_id.as_deref());
    // What this server's telemetry endpoint understands beyond plain rows.
    policy["telemetry"] = json!({"initiating": true, "first": true, "file_name_from_path": true});
    Ok(json(&json!({"actions": actions, "policy": policy})))
}

/// Longest an agent may wait for actions in one request, and how long it waits by default.
const MAX_WAIT_SECS: u64 = 60;
const DEFAULT_WAIT_SECS: u64 = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollQuery {
    wait_secs: Option<u64>,
}

/// `GET /api/v1/agents/actions?wait_secs=N` (long-poll): the device's pending actions, handed
/// over at once if there are any, else as soon as one is created for it, or none after N
/// seconds. An action goes to one call only, whether this or a heartbeat (the hand-over is one
/// conditional update).
pub async fn poll_actions(
    State(app): State<App>,
    Extension(agent): Extension<AgentIdentity>,
    Query(q): Query<PollQuery>,
) -> ApiResult {
    let wait_secs = q.wait_secs.unwrap_or(DEFAULT_WAIT_SECS);
    if wait_secs > MAX_WAIT_SECS {
        return Err(Problem::bad_request(format!(
            "wait_secs is {wait_secs}: wait 0 to {MAX_WAIT_SECS} seconds"
        )));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
    let hand_over = || {
        app.db
            .hand_over_pending_actions(&agent.tenant, &agent.device_id)
    };
    // Past the limit of waiters (or at shutdown) the call answers at once.
    let waiter = match wait_secs {
        0 => None,
        _ => app.action_waiters.enter(&agent.device_id),
    };
    let Some(waiter) = waiter else {
        return Ok(json(&json!({"actions": hand_over().await?})));
    };
    loop {
        // Listening before looking: an action created after the look wakes this waiter, one
        // created before it is found by the look.
        let woken = waiter.notify().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let actions = hand_over().await?;
        if !actions.is_empty() || app.action_waiters.is_closed() {
            return Ok(json(&json!({"actions": actions})));
        }
        // Woken but another call took the action: wait on until the deadline.
        if tokio::time::timeout_at(deadline, woken).await.is_err() {
            return Ok(json(&json!({"actions": actions})));
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionReport {
    status: ActionStatus,
    #[serde(default)]
    result: Value,
}

pub async fn action_result(
    State(app): State<App>,
    Extension(agent): Extension<AgentIdentity>,
    Path(id): Path<String>,
    Json(body): Json<ActionReport>,
) -> ApiResult {
    own_action(&app, &agent, &id).await?;
    let action = app
        .db
        .set_action_status(&agent.tenant, &id, body.status, Some(&body.result))
        .await?;
    Ok(json(&action))
}

/// Action `id` when it is the calling device's; another device's is as missing (404).
pub(super) async fn own_action(
    app: &App,
    agent: &AgentIdentity,
    id: &str,
) -> Result<rampart_state::Action, Problem> {
    let action = app
        .db
        .get_action(&agent.tenant, &rampart_state::Scope::all(), id)
        .await?;
    if action.device_id != agent.device_id {
        return Err(Problem::not_found("action"));
    }
    Ok(action)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    batches: Vec<TelemetryBatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryBatch {
    table: String,
    rows: Vec<Map<String, Value>>,
    /// Columns rows share, written once: a row's `"$i": N` stands for the columns of entry N
    /// (columns the row has itself win). The initiating process's ~15 columns are the bulk
    /// of most rows, and a process causes rows by the thousand.
    #[serde(default)]
    initiating: Vec<Map<String, Value>>,
    /// The `ReportId` of the batch's first row, the next rows numbered on from it: an agent's
    /// rows are numbered in order, so a number per row (a tenth of a file event's text) need
    /// not be sent. A row's own `ReportId` wins.
    #[serde(default)]
    first: Option<u64>,
}

/// The key of a row's reference into its batch's `initiating` list.
const SHARED_COLUMNS_KEY: &str = "$i";

impl TelemetryBatch {
    /// The rows of `table` with what they leave out written in: the shared columns they refer
    /// to, their number from the batch's `first`, and a `FileName` that is the last component
    /// of their `FolderPath`; `index` is the batch's place in the request (for errors).
    fn expanded(self, index: usize, table: Table) -> Result<Vec<Map<String, Value>>, Problem> {
        let TelemetryBatch {
            mut rows,
            initiating,
            first,
            ..
        } = self;
        let first = first.filter(|_| table.column("ReportId").is_some());
        let file_names = table.column("FileName").is_some() && table.column("FolderPath").is_some();
        for (r, row) in rows.iter_mut().enumerate() {
            if let Some(first) = first
                && !row.contains_key("ReportId")
            {
                // Stored as a long.
                let number = i64::try_from(first)
                    .ok()
                    .and_then(|f| f.checked_add(i64::try_from(r).ok()?))
                    .ok_or_else(|| {
                    Problem::bad_request(format!(
                        "batches[{index}].first: {first} numbers row {r} past the largest ReportId"
                    ))
                    })?;
                row.insert("ReportId".into(), number.into());
            }
            if file_names && !row.contains_key("FileName") {
                let name = row
                    .get("FolderPath")
                    .and_then(Value::as_str)
                    .and_then(|path| path.rsplit('/').next())
                    .filter(|name| !name.is_empty())
                    .map(str::to_string);
                if let Some(name) = name {
                    row.insert("FileName".into(), name.into());
                }
            }
            let Some(reference) = row.remove(SHARED_COLUMNS_KEY) else {
                continue;
            };
            let shared = reference
                .as_u64()
                .and_then(|i| initiating.get(usize::try_from(i).ok()?))
                .ok_or_else(|| {
                    Problem::bad_request(format!(
                        "batches[{index}].rows[{r}].{SHARED_COLUMNS_KEY}: {reference} names no entry of the batch's {} initiating entries",
                        initiating.len()
                    ))
                })?;
            for (column, value) in shared {
                if !row.contains_key(column) {
                    row.insert(column.clone(), value.clone());
                }
            }
        }
        Ok(rows)
    }
}

/// Rows of hunting tables (`{"batches": [{"table", "rows": [{column: value}]}]}`, optionally
/// `Content-Encoding: zstd`), detected on and appended durably before the answer. `DeviceId`
/// and `DeviceName` are the enrolled device's, whatever the rows say. With
/// `X-Rampart-Sequence: FIRST-LAST`, rows the device already had stored are not stored again
/// (see [`crate::telemetry`]).
pub async fn telemetry(
    State(app): State<App>,
    Extension(agent): Extension<AgentIdentity>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let sequence = Sequence::from_headers(&headers)?;
    // One numbered request of a device at a time (a retry may arrive while the request it
    // retries is still being stored): each must see the mark the previous one left. Taken
    // before an ingest slot, so a device waiting for itself holds none.
    let device_lock = sequence.map(|_| app.telemetry_lock(&agent.device_id));
    let _turn = match &device_lock {
        Some(lock) => Some(lock.lock().await),
        None => None,
    };
    let _slot = app.ingest_slot().await?;
    let text = decode(&headers, &body)?;
    let telemetry: Telemetry = serde_json::from_slice(&text)
        .map_err(|e| Problem::bad_request(format!("malformed telemetry: {e}")))?;
    let rows: usize = telemetry.batches.iter().map(|b| b.rows.len()).sum();
    if rows > MAX_TELEMETRY_ROWS {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_TELEMETRY_ROWS} rows per request"),
        ));
    }
    let mut received = Vec::new();
    for (index, batch) in telemetry.batches.into_iter().enumerate() {
        let Some(table) = Table::from_name(&batch.table) else {
            return Err(Problem::bad_request(format!(
                "batches[{index}].table: no hunting table '{}'",
                batch.table
            )));
        };
        received.push(Received {
            index,
            table,
            rows: batch.expanded(index, table)?,
        });
    }
    let (mut first_record, mut skipped) = (1, 0);
    if let Some(seq) = sequence {
        if rows as u64 > seq.len() {
            return Err(Problem::bad_request(format!(
                "X-Rampart-Sequence: {}-{} holds {} numbers, too few for the request's {rows} rows",
                seq.first,
                seq.last,
                seq.len()
            )));
        }
        let mut high_water = app
            .db
            .telemetry_high_water(&agent.tenant, &agent.device_id)
            .await?
            .map(|h| h as u64);
        let unchecked = !app
            .telemetry_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&agent.device_id);
        if unchecked {
            // First numbered request since this server started: a crash may have come between
            // a request's append and its mark. What the store holds of the range says. Marked
            // checked only once it has answered (the device's lock is held meanwhile).
            let stored = crate::telemetry::stored_through(&app, &agent, seq, high_water, &received)
                .await
                .map_err(Problem::internal)?;
            high_water = high_water.max(stored);
            app.telemetry_checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(agent.device_id.clone());
        }
        if high_water.is_some_and(|h| h >= seq.last) {
            return Ok(json(&json!({
                "rows": 0, "rows_per_table": {}, "duplicate": true, "skipped": rows,
                "alerts": crate::alerting::Outcome::default(),
            })));
        }
        skipped = skip_stored(seq, high_water, &mut received);
        first_record = seq.number_of(skipped);
    }
    let indicators = app.indicators_of(&agent.tenant).await?;
    let store = app.store.clone();
    let rules = app.rules_of(&agent.tenant);
    let sender = agent.clone();
    let ingested = tokio::task::spawn_blocking(move || {
        crate::telemetry::ingest(&store, &rules, &indicators, &sender, received, first_record)
    })
    .await
    .map_err(Problem::internal)??;
    // Everything stored: the whole range is. After a failed append, the rows before it are:
    // the mark covers them (at the lowest number the last of them can have), so a retry skips
    // them.
    let stored_through = match (sequence, &ingested.error) {
        (Some(seq), None) => Some(seq.last),
        (Some(seq), Some(_)) if ingested.stored > 0 => {
            Some(seq.number_of(skipped + ingested.stored - 1))
        }
        _ => None,
    };
    if let Some(last) = stored_through {
        app.db
            .advance_telemetry_high_water(&agent.tenant, &agent.device_id, last as i64)
            .await?;
    }
    let devices = BTreeMap::from([(agent.hostname.clone(), agent.device_id.clone())]);
    let outcome =
        crate::alerting::place_all(&app, &agent.tenant, ingested.candidates, &devices).await?;
    app.metrics
        .events_ingested
        .fetch_add(ingested.stored, std::sync::atomic::Ordering::Relaxed);
    if let Some(error) = ingested.error {
        return Err(Problem::internal(error));
    }
    Ok(json(&json!({
        "rows": ingested.stored, "rows_per_table": ingested.per_table, "duplicate": false,
        "skipped": skipped, "alerts": outcome,
    })))
}

/// The body, decompressed when it says so, bounded either way.
fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, Problem> {
    let too_big = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("telemetry is limited to {MAX_TELEMETRY_BYTES} bytes decompressed"),
        )
    };
    match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()) {
        None | Some(b"identity") => Ok(body.to_vec()),
        Some(b"zstd") => {
            let decoder = zstd::stream::read::Decoder::new(body)
                .map_err(|e| Problem::bad_request(format!("zstd: {e}")))?;
            let mut out = Vec::new();
            decoder
                .take(MAX_TELEMETRY_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Problem::bad_request(format!("zstd: {e}")))?;
            if out.len() > MAX_TELEMETRY_BYTES {
                return Err(too_big());
            }
            Ok(out)
        }
        Some(other) => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding {} is not supported (use zstd)",
                String::from_utf8_lossy(other)
            ),
        )),
    }
}
