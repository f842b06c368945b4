-- The custom-detection scheduler lists a tenant's enabled KQL rules by title every few
-- seconds; without this index each listing read every rule of the tenant (its ~2,400 Sigma
-- rules with their text) to keep the few KQL ones.
CREATE INDEX rules_kind ON rules (tenant_id, kind, title, id);
