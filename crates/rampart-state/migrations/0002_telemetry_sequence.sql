-- The highest sequence number of agent telemetry stored for each device (NULL: none yet, or
-- since the agent last enrolled). Agents number their rows; a request whose rows are all at or
-- below it is a retry and is not stored again.
ALTER TABLE devices ADD COLUMN telemetry_seq BIGINT;
