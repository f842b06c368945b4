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
use rampart_schema::{KustoType, Table};
use rampart_state::{ActionStatus, DeviceHeartbeat, HealthStatus, NewAuditEntry, NewDevice};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::alerting::Candidate;
use crate::app::App;
use crate::auth::AgentIdentity;
use crate::indicators::Indicators;
use crate::problem::{ApiResult, Json, Problem, json};

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

pub async fn enroll(State(app): State<App>, Json(body): Json<Enrollment>) -> ApiResult {
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

/// Records the agent's health and hands it the actions waiting for it (marked sent).
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
    let mut actions = Vec::new();
    for action in app
        .db
        .pending_actions_for_device(&agent.tenant, &agent.device_id)
        .await?
    {
        actions.push(
            app.db
                .set_action_status(&agent.tenant, &action.id, ActionStatus::Sent, None)
                .await?,
        );
    }
    Ok(json(&json!({"actions": actions})))
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
    let action = app
        .db
        .get_action(&agent.tenant, &rampart_state::Scope::all(), &id)
        .await?;
    if action.device_id != agent.device_id {
        return Err(Problem::not_found("action"));
    }
    let action = app
        .db
        .set_action_status(&agent.tenant, &id, body.status, Some(&body.result))
        .await?;
    Ok(json(&action))
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
}

/// Rows of hunting tables (`{"batches": [{"table", "rows": [{column: value}]}]}`, optionally
/// `Content-Encoding: zstd`), appended durably before the answer. `DeviceId` and `DeviceName`
/// are the enrolled device's, whatever the rows say.
pub async fn telemetry(
    State(app): State<App>,
    Extension(agent): Extension<AgentIdentity>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
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
    let mut batches = Vec::new();
    for (i, batch) in telemetry.batches.into_iter().enumerate() {
        let Some(table) = Table::from_name(&batch.table) else {
            return Err(Problem::bad_request(format!(
                "batches[{i}].table: no hunting table '{}'",
                batch.table
            )));
        };
        let record = to_record_batch(table, batch.rows, &agent)
            .map_err(|e| Problem::bad_request(format!("batches[{i}] ({}): {e}", table.name())))?;
        batches.push((table, record));
    }
    let indicators = Indicators::new(app.db.active_indicators(&agent.tenant, Utc::now()).await?);
    let store = app.store.clone();
    let tenant = agent.tenant.clone();
    let (appended, candidates) = tokio::task::spawn_blocking(move || {
        let mut per_table: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut candidates = Vec::new();
        for (table, batch) in batches {
            // Drafts first: the batch moves into the store.
            candidates.extend(indicators.scan(table, &batch).iter().map(|hit| Candidate {
                draft: crate::indicators::draft(table, &batch, hit),
                rule_id: None,
                kind: None,
            }));
            let n = batch.num_rows() as u64;
            store.append(&tenant, table, batch)?;
            *per_table.entry(table.name()).or_default() += n;
        }
        Ok::<_, rampart_store::StoreError>((per_table, candidates))
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    let devices = BTreeMap::from([(agent.hostname.clone(), agent.device_id.clone())]);
    let outcome = crate::alerting::place_all(&app, &agent.tenant, candidates, &devices).await?;
    let total: u64 = appended.values().sum();
    app.metrics
        .events_ingested
        .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
    Ok(json(
        &json!({"rows": total, "rows_per_table": appended, "alerts": outcome}),
    ))
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

/// JSON rows as an Arrow batch of `table`: the device columns forced to the agent's, values
/// of text columns (string and dynamic) that are not strings kept as their JSON text (as
/// Defender keeps `AdditionalFields`), unknown columns refused.
fn to_record_batch(
    table: Table,
    rows: Vec<Map<String, Value>>,
    agent: &AgentIdentity,
) -> Result<datafusion::arrow::record_batch::RecordBatch, String> {
    let schema = table.arrow_schema();
    let text: Vec<&str> = table
        .columns()
        .iter()
        .filter(|c| matches!(c.kind, KustoType::Dynamic | KustoType::String))
        .map(|c| c.name)
        .collect();
    let has = |name: &str| table.column(name).is_some();
    let mut fixed = Vec::with_capacity(rows.len());
    for (n, mut row) in rows.into_iter().enumerate() {
        if let Some(unknown) = row.keys().find(|k| !has(k)) {
            return Err(format!("rows[{n}]: no column '{unknown}'"));
        }
        for name in &text {
            if let Some(v) = row.get_mut(*name)
                && !v.is_string()
                && !v.is_null()
            {
                *v = Value::String(v.to_string());
            }
        }
        if has("DeviceId") {
            row.insert("DeviceId".into(), Value::String(agent.device_id.clone()));
        }
        if has("DeviceName") {
            row.insert("DeviceName".into(), Value::String(agent.hostname.clone()));
        }
        fixed.push(row);
    }
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(schema)
        .with_batch_size(fixed.len().max(1))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    decoder.serialize(&fixed).map_err(|e| e.to_string())?;
    decoder
        .flush()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no rows".to_string())
}
