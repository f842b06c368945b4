-- An alert's activity (its events' count and time range) in a narrow table of its own. The
-- repeats of an alert's detection update it with every batch of events; rewriting the alert's
-- whole row (evidence, triggering event: ~3.5 KB, a page each) for that was most of the
-- database's work during ingest. `activity_at` is when the activity last changed; an alert's
-- `updated_at` as read is the later of it and the row's own (triage changes).
CREATE TABLE alert_activity (
    alert_id TEXT PRIMARY KEY REFERENCES alerts (id) ON DELETE CASCADE,
    first_event_time BIGINT NOT NULL,
    last_event_time BIGINT NOT NULL,
    event_count BIGINT NOT NULL,
    activity_at BIGINT NOT NULL
);
INSERT INTO alert_activity (alert_id, first_event_time, last_event_time, event_count, activity_at)
    SELECT id, first_event_time, last_event_time, event_count, updated_at FROM alerts;
DROP INDEX alerts_dedup;
ALTER TABLE alerts DROP COLUMN first_event_time;
ALTER TABLE alerts DROP COLUMN last_event_time;
ALTER TABLE alerts DROP COLUMN event_count;
-- The lookups of every batch of events read these indexes alone, not the alerts' wide rows:
-- the open alerts of the batch's deduplication keys, and the tenant and incident of the alerts
-- its repeats fold into.
CREATE INDEX alerts_dedup ON alerts (tenant_id, dedup_key, status, id);
CREATE INDEX alerts_owner ON alerts (id, tenant_id, incident_id);
