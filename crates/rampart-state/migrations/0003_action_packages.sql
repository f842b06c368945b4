-- The investigation package an agent uploaded for a collect_package action: its size, SHA-256
-- and when it was stored (all NULL: none). The file itself lives in the server's data directory;
-- retention finds expired ones by package_at.
ALTER TABLE actions ADD COLUMN package_bytes BIGINT;
ALTER TABLE actions ADD COLUMN package_sha256 TEXT;
ALTER TABLE actions ADD COLUMN package_at BIGINT;
CREATE INDEX actions_package_at ON actions (package_at);
