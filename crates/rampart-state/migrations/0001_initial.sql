-- Rampart state database, initial schema.
--
-- One file serves SQLite and PostgreSQL: only TEXT and BIGINT columns (ids are generated in Rust,
-- times are unix microseconds, JSON and lists are TEXT, booleans are 0/1), standard constraints,
-- and plain indexes. Every row carries tenant_id and every index that serves a tenant's query
-- leads with it.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE device_groups (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Usernames are unique across tenants: login is {"username","password"} with no tenant field.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    scope_groups TEXT NOT NULL,
    disabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT
);
CREATE INDEX users_tenant ON users (tenant_id, username);

-- API tokens and login sessions; only the SHA-256 of the secret is stored.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, created_at, id);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE enrollment_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    group_id TEXT REFERENCES device_groups (id) ON DELETE CASCADE,
    max_uses BIGINT NOT NULL,
    used_count BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX enrollment_tokens_tenant ON enrollment_tokens (tenant_id, created_at, id);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hostname TEXT NOT NULL,
    platform TEXT NOT NULL,
    os_version TEXT NOT NULL,
    agent_version TEXT,
    group_id TEXT REFERENCES device_groups (id) ON DELETE SET NULL,
    tags TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    health_status TEXT NOT NULL,
    health TEXT NOT NULL,
    cert_fingerprint TEXT UNIQUE,
    events_dropped BIGINT NOT NULL,
    drops_reported BIGINT NOT NULL,
    isolation TEXT NOT NULL,
    risk TEXT NOT NULL,
    UNIQUE (tenant_id, hostname)
);
CREATE INDEX devices_group ON devices (tenant_id, group_id);
CREATE INDEX devices_last_seen ON devices (tenant_id, last_seen);

CREATE TABLE rules (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    sigma_id TEXT,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    severity TEXT NOT NULL,
    tags TEXT NOT NULL,
    schedule_secs BIGINT,
    alert_template TEXT,
    origin TEXT NOT NULL,
    origin_path TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- NULL sigma ids are distinct in both engines, so rules without an id never collide.
CREATE UNIQUE INDEX rules_sigma_id ON rules (tenant_id, sigma_id);
CREATE INDEX rules_tenant ON rules (tenant_id, created_at, id);

CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    classification TEXT,
    determination TEXT,
    assigned_to TEXT,
    tags TEXT NOT NULL,
    first_activity BIGINT NOT NULL,
    last_activity BIGINT NOT NULL,
    alert_count BIGINT NOT NULL,
    merged_into TEXT REFERENCES incidents (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX incidents_tenant ON incidents (tenant_id, created_at, id);
CREATE INDEX incidents_activity ON incidents (tenant_id, last_activity);

CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    rule_id TEXT REFERENCES rules (id) ON DELETE SET NULL,
    rule_title TEXT,
    rule_kind TEXT,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    classification TEXT,
    determination TEXT,
    assigned_to TEXT,
    tactics TEXT NOT NULL,
    techniques TEXT NOT NULL,
    device_id TEXT REFERENCES devices (id) ON DELETE SET NULL,
    device_name TEXT,
    first_event_time BIGINT NOT NULL,
    last_event_time BIGINT NOT NULL,
    event_count BIGINT NOT NULL,
    dedup_key TEXT,
    evidence TEXT NOT NULL,
    trigger_event TEXT,
    matched_fields TEXT NOT NULL,
    incident_id TEXT REFERENCES incidents (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX alerts_tenant ON alerts (tenant_id, created_at, id);
CREATE INDEX alerts_dedup ON alerts (tenant_id, dedup_key, last_event_time);
CREATE INDEX alerts_incident ON alerts (tenant_id, incident_id);
CREATE INDEX alerts_device ON alerts (tenant_id, device_id);

-- Why each alert joined its incident; rows move (reason intact) when incidents merge.
CREATE TABLE incident_alerts (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    alert_id TEXT NOT NULL UNIQUE REFERENCES alerts (id) ON DELETE CASCADE,
    reason TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (incident_id, alert_id)
);

CREATE TABLE comments (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX comments_target ON comments (tenant_id, target_kind, target_id, created_at);

CREATE TABLE indicators (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    action TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    scope_groups TEXT NOT NULL,
    expires_at BIGINT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, kind, value)
);
CREATE INDEX indicators_tenant ON indicators (tenant_id, created_at, id);

CREATE TABLE actions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    result TEXT
);
CREATE INDEX actions_tenant ON actions (tenant_id, requested_at, id);
CREATE INDEX actions_device ON actions (tenant_id, device_id, status);

-- Append-only: the crate has no UPDATE or DELETE statement for this table.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    details TEXT NOT NULL,
    remote_addr TEXT
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at, id);
