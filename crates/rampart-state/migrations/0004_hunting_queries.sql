-- Advanced hunting remembers queries per user: the ones they ran (a short history, pruned to
-- the newest on every run) and the ones they saved under a name (one per name). Both are
-- private to the user and go with the user.
CREATE TABLE query_history (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    query TEXT NOT NULL,
    ran_at BIGINT NOT NULL
);
CREATE INDEX query_history_user ON query_history (tenant_id, user_id, ran_at, id);

CREATE TABLE saved_queries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    query TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, user_id, name)
);
