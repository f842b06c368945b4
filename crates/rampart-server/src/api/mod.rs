//! The REST API under `/api/v1`, one module per resource. [`routes`] is the whole table.

mod agents;
mod alerts;
mod devices;
mod hunting;
mod incidents;
mod ingest;
pub mod packages;
mod response;
mod rules;
mod session;
mod spool;
mod system;

use axum::http::Method;
use axum::routing::{delete, get, patch, post};
use rampart_state::{NewAuditEntry, PageRequest, Principal};
use serde::Deserialize;

use crate::app::App;
use crate::auth::Access::{self, Admin, Agent, Analyst, Public, ReadOnly};
use crate::problem::Problem;
use crate::routes::Route;

/// Every route of the server, one per line (kept unformatted so the table reads as one).
#[rustfmt::skip]
pub fn routes() -> Vec<Route> {
    use Method as M;
    let r = Route::new;
    vec![
        r(M::GET, "/healthz", Public, "system", "Liveness: 200 while the process serves", get(system::healthz)),
        r(M::GET, "/readyz", Public, "system", "Readiness: 200 once storage and database answer", get(system::readyz)),
        r(M::GET, "/api/openapi.json", Public, "system", "This document", get(system::openapi)),
        r(M::GET, "/metrics", ReadOnly, "system", "Prometheus metrics", get(system::metrics)),
        r(M::POST, "/api/v1/auth/login", Public, "auth", "Sign in: returns a session token for Authorization: Bearer", post(session::login)),
        r(M::POST, "/api/v1/auth/logout", ReadOnly, "auth", "End the session (or revoke the token) used for this call", post(session::logout)),
        r(M::GET, "/api/v1/auth/me", ReadOnly, "auth", "Who the token belongs to", get(session::me)),
        r(M::POST, "/api/v1/auth/password", ReadOnly, "auth", "Change your own password ({\"current_password\", \"new_password\"}): ends your sessions and returns a new one when called with a session", post(session::change_password)),
        r(M::GET, "/api/v1/tokens", ReadOnly, "auth", "Your API tokens (admins: everyone's)", get(session::list_tokens)),
        r(M::POST, "/api/v1/tokens", Analyst, "auth", "Create an API token (its secret is shown once)", post(session::create_token)),
        r(M::DELETE, "/api/v1/tokens/{id}", Analyst, "auth", "Revoke an API token", delete(session::revoke_token)),
        r(M::GET, "/api/v1/users", Admin, "users", "List users", get(session::list_users)),
        r(M::POST, "/api/v1/users", Admin, "users", "Create a user", post(session::create_user)),
        r(M::PATCH, "/api/v1/users/{id}", Admin, "users", "Change a user's role, scope, password or disabled flag", patch(session::update_user)),
        r(M::DELETE, "/api/v1/users/{id}", Admin, "users", "Delete a user", delete(session::delete_user)),
        r(M::GET, "/api/v1/tenants", Admin, "tenants", "Tenants (provider admins only)", get(session::list_tenants)),
        r(M::POST, "/api/v1/tenants", Admin, "tenants", "Create a tenant with its first admin (provider admins only)", post(session::create_tenant)),
        r(M::GET, "/api/v1/devices", ReadOnly, "devices", "List devices (filters: group, tag, hostname, health, seen_after)", get(devices::list)),
        r(M::GET, "/api/v1/devices/{id}", ReadOnly, "devices", "One device", get(devices::get_one)),
        r(M::GET, "/api/v1/devices/{id}/incidents", ReadOnly, "devices", "The incidents with an alert on the device, latest activity first", get(devices::incidents)),
        r(M::PATCH, "/api/v1/devices/{id}", Analyst, "devices", "Set a device's tags or group", patch(devices::update)),
        r(M::GET, "/api/v1/device-groups", ReadOnly, "devices", "List device groups", get(devices::list_groups)),
        r(M::POST, "/api/v1/device-groups", Admin, "devices", "Create a device group", post(devices::create_group)),
        r(M::DELETE, "/api/v1/device-groups/{id}", Admin, "devices", "Delete a device group", delete(devices::delete_group)),
        r(M::GET, "/api/v1/alerts", ReadOnly, "alerts", "List alerts (filters: status, severity, device_id, rule_id, incident_id, assigned_to, source, from, to)", get(alerts::list)),
        r(M::GET, "/api/v1/alerts/{id}", ReadOnly, "alerts", "One alert with its evidence and triggering event", get(alerts::get_one)),
        r(M::GET, "/api/v1/alerts/{id}/event", ReadOnly, "alerts", "The stored event that triggered an alert: {\"table\", \"row\"}", get(alerts::event)),
        r(M::PATCH, "/api/v1/alerts/{id}", Analyst, "alerts", "Set status, classification, determination, assignment", patch(alerts::update)),
        r(M::GET, "/api/v1/alerts/{id}/comments", ReadOnly, "alerts", "Comments on an alert", get(incidents::alert_comments)),
        r(M::POST, "/api/v1/alerts/{id}/comments", Analyst, "alerts", "Comment on an alert", post(incidents::comment_alert)),
        r(M::GET, "/api/v1/incidents", ReadOnly, "incidents", "List incidents with the devices, users and detection sources of their alerts (filters: status, severity, assigned_to, tag, from, to, source, q in the title; sort: newest, oldest, activity, severity)", get(incidents::list)),
        r(M::GET, "/api/v1/incidents/{id}", ReadOnly, "incidents", "One incident with its alerts, entities and why each alert joined", get(incidents::get_one)),
        r(M::PATCH, "/api/v1/incidents/{id}", Analyst, "incidents", "Set title, status, classification, assignment, tags", patch(incidents::update)),
        r(M::POST, "/api/v1/incidents/{id}/merge", Analyst, "incidents", "Fold other incidents into this one", post(incidents::merge)),
        r(M::GET, "/api/v1/incidents/{id}/comments", ReadOnly, "incidents", "Comments on an incident", get(incidents::incident_comments)),
        r(M::POST, "/api/v1/incidents/{id}/comments", Analyst, "incidents", "Comment on an incident", post(incidents::comment_incident)),
        r(M::POST, "/api/v1/hunting/query", ReadOnly, "hunting", "Run a KQL query over the tenant's events (recorded in your history unless \"history\": false)", post(hunting::query)),
        r(M::GET, "/api/v1/hunting/schema", ReadOnly, "hunting", "The hunting tables and their columns", get(hunting::schema)),
        r(M::GET, "/api/v1/hunting/history", ReadOnly, "hunting", "Your recent queries, newest first (the last 50 you ran)", get(hunting::history)),
        r(M::GET, "/api/v1/hunting/saved", ReadOnly, "hunting", "Your saved queries, by name", get(hunting::list_saved)),
        r(M::POST, "/api/v1/hunting/saved", ReadOnly, "hunting", "Save a query under a name ({\"name\", \"query\"}); saving a name again replaces its query", post(hunting::save)),
        r(M::DELETE, "/api/v1/hunting/saved/{id}", ReadOnly, "hunting", "Delete one of your saved queries", delete(hunting::delete_saved)),
        r(M::POST, "/api/v1/ingest/evtx", Analyst, "ingest", "Upload a Windows event log (.evtx body): stored, detected on, acknowledged once durable", post(ingest::evtx)),
        r(M::POST, "/api/v1/ingest/events", Analyst, "ingest", "Forward Windows events (one JSON record per line, optionally gzip/zstd): stored, detected on, acknowledged once durable", post(ingest::events)),
        r(M::GET, "/api/v1/rules", ReadOnly, "rules", "List detection rules (filters: kind, enabled, origin = builtin|uploaded, q = text in the title)", get(rules::list)),
        r(M::GET, "/api/v1/rules/{id}", ReadOnly, "rules", "One rule with its source", get(rules::get_one)),
        r(M::POST, "/api/v1/rules", Admin, "rules", "Upload Sigma rules (YAML, one or more documents; or JSON {\"yaml\": \"...\"})", post(rules::upload)),
        r(M::POST, "/api/v1/custom-detections", Admin, "rules", "Create a custom detection: KQL run on a schedule, each row an alert", post(rules::create_custom)),
        r(M::POST, "/api/v1/rules/{id}/run", Analyst, "rules", "Run a custom detection now", post(rules::run_now)),
        r(M::POST, "/api/v1/rules/{id}/test", Analyst, "rules", "Test a rule over stored data (from, to) without alerting: a custom detection's query, a Linux Sigma rule over agent telemetry, a Windows Sigma rule over the event-log records rebuilt from stored rows (approximate_tables: registry and image-load rows, rebuilt from their columns)", post(rules::test)),
        r(M::PATCH, "/api/v1/rules/{id}", Admin, "rules", "Enable or disable a rule", patch(rules::update)),
        r(M::DELETE, "/api/v1/rules/{id}", Admin, "rules", "Delete an uploaded rule", delete(rules::remove)),
        r(M::GET, "/api/v1/indicators", ReadOnly, "indicators", "List indicators (filters: kind, action, value, active_at)", get(response::list_indicators)),
        r(M::POST, "/api/v1/indicators", Analyst, "indicators", "Add an indicator (hash, IP, domain, URL, certificate) with its action", post(response::create_indicator)),
        r(M::GET, "/api/v1/indicators/{id}", ReadOnly, "indicators", "One indicator", get(response::get_indicator)),
        r(M::DELETE, "/api/v1/indicators/{id}", Analyst, "indicators", "Delete an indicator", delete(response::delete_indicator)),
        r(M::GET, "/api/v1/actions", ReadOnly, "actions", "Response actions, pending and past (filters: device_id, kind, status, open, from, to)", get(response::list_actions)),
        r(M::POST, "/api/v1/actions", Analyst, "actions", "Queue a response action for a device", post(response::create_action)),
        r(M::GET, "/api/v1/actions/{id}", ReadOnly, "actions", "One action with its result", get(response::get_action)),
        r(M::POST, "/api/v1/actions/{id}/cancel", Analyst, "actions", "Cancel an action not yet carried out", post(response::cancel_action)),
        r(M::GET, "/api/v1/actions/{id}/package", Analyst, "actions", "Download the investigation package of a collect_package action (application/gzip, <hostname>-<action id>.tar.gz)", get(packages::download)),
        r(M::GET, "/api/v1/audit", Admin, "audit", "The audit log (filters: actor, action, target_kind, target_id, from, to)", get(response::list_audit)),
        r(M::POST, "/api/v1/agents/enroll", Public, "agents", "Enroll an agent: one-time token + CSR in, client certificate out", post(agents::enroll)),
        r(M::POST, "/api/v1/agents/heartbeat", Agent, "agents", "Agent health and drop counters; answers the actions waiting for it and the agent policy", post(agents::heartbeat))
            .describe(HEARTBEAT_DESCRIPTION),
        r(M::GET, "/api/v1/agents/actions", Agent, "agents", "Wait for actions (long-poll): answers {\"actions\": [...]} as soon as the device has some, or empty after wait_secs", get(agents::poll_actions))
            .query("wait_secs", "Seconds to wait for an action, 0 to 60 (default 30)"),
        r(M::POST, "/api/v1/agents/telemetry", Agent, "agents", "Hunting-table rows from an agent (zstd allowed), detected on, acknowledged once durable", post(agents::telemetry))
            .describe(TELEMETRY_DESCRIPTION)
            .header("X-Rampart-Sequence", SEQUENCE_DESCRIPTION),
        r(M::POST, "/api/v1/agents/actions/{id}/result", Agent, "agents", "An action's progress or result, from the agent carrying it out", post(agents::action_result)),
        r(M::POST, "/api/v1/agents/actions/{id}/package", Agent, "agents", "Upload the investigation package (.tar.gz) of the device's open collect_package action; answers 201 {\"bytes\", \"sha256\"}", post(packages::upload))
            .accepts("application/gzip"),
        r(M::GET, "/api/v1/enrollment-tokens", Admin, "agents", "Agent enrollment tokens", get(response::list_enrollment_tokens)),
        r(M::POST, "/api/v1/enrollment-tokens", Admin, "agents", "Create an agent enrollment token (carries the CA fingerprint)", post(response::create_enrollment_token)),
        r(M::DELETE, "/api/v1/enrollment-tokens/{id}", Admin, "agents", "Revoke an enrollment token (agents already enrolled keep their certificates)", delete(response::revoke_enrollment_token)),
    ]
}

const HEARTBEAT_DESCRIPTION: &str = "Body: {\"agent_version\", \"health_status\"?, \"health\"?, \"events_dropped\"?, \"drops_reported\"?}. Answers {\"actions\": [...], \"policy\": {\"heartbeat_secs\", \"file_paths\", \"logons\"}}: the actions waiting for the device (each handed over once, to this call or to a long-poll) and the policy of the server's [agents] configuration.";
const TELEMETRY_DESCRIPTION: &str = "Body: {\"batches\": [{\"table\": \"DeviceProcessEvents\", \"rows\": [{column: value}]}]}, at most 100,000 rows and 64 MiB decompressed. DeviceId and DeviceName are the enrolled device's, whatever the rows say. Rows are evaluated by the tenant's Sigma rules of product linux (process_creation, file_event, file_delete, network_connection) and matched against its indicators. Answers {\"rows\", \"rows_per_table\", \"duplicate\", \"skipped\", \"alerts\"}.";
const SEQUENCE_DESCRIPTION: &str = "FIRST-LAST: the inclusive range of the agent's sequence numbers of the request's rows, in request order (strictly increasing per device, never reused; numbers may be skipped; at most 9223372036854775807). Rows at or below the highest sequence number already stored for the device are not stored again: a request whose LAST is at or below it answers 200 with \"duplicate\": true and stores nothing; one that overlaps it stores only the rows above it (\"skipped\" counts the others; where skipped numbers leave it open whether a row is above, it is stored). The mark is raised once the rows are durable, and cleared when the agent enrolls again. A malformed header, or a range with fewer numbers than the request has rows, is a 400.";

/// `?limit=&cursor=` of every list.
#[derive(Debug, Default, Deserialize)]
pub struct Paging {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl Paging {
    pub fn request(&self) -> PageRequest {
        PageRequest {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

/// Records a change in the audit log. A change that cannot be audited is reported as failed,
/// though it was made: the caller sees the error and the log says why.
pub async fn audit(
    app: &App,
    who: &Principal,
    action: &str,
    target_kind: &str,
    target_id: &str,
    details: serde_json::Value,
) -> Result<(), Problem> {
    let entry = NewAuditEntry {
        actor: who.username.clone(),
        action: action.to_string(),
        target_kind: target_kind.to_string(),
        target_id: target_id.to_string(),
        details,
        remote_addr: None,
    };
    app.db.append_audit(&who.tenant_id, &entry).await?;
    Ok(())
}

/// Access levels, for modules that check beyond the route (e.g. own tokens vs everyone's).
pub fn is_admin(p: &Principal) -> bool {
    crate::auth::may(p, Access::Admin)
}
