-- integration_mappings: (tenant, entity_type, internal_id) ⇄ (external_system, external_id).
--
-- The proxy translates a partner's external ids into internal UUIDs on the way in and back
-- on the way out (gateway.mapping). Rows are soft-deleted (deleted_at); only live rows count
-- for translation and for the two uniqueness rules below.
--
-- `credentials` holds a SecretBox token (Fernet) of the configuration's "credentials"
-- value; `configuration` itself never holds it in clear.
CREATE TABLE integration_mappings (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    entity_type     text        NOT NULL CHECK (entity_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    internal_id     uuid        NOT NULL,
    external_system text        NOT NULL CHECK (external_system ~ '^[a-z][a-z0-9_]{0,62}$'),
    external_id     text        NOT NULL CHECK (length(external_id) BETWEEN 1 AND 256),
    direction       text        NOT NULL DEFAULT 'bidirectional'
        CHECK (direction IN ('inbound', 'outbound', 'bidirectional')),
    sync_status     text        NOT NULL DEFAULT 'synced'
        CHECK (sync_status IN ('pending', 'synced', 'failed', 'disabled')),
    configuration   jsonb       NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(configuration) = 'object' AND NOT configuration ? 'credentials'),
    credentials     text,       -- SecretBox token, or NULL
    origin          text        NOT NULL DEFAULT 'api'
        CHECK (origin IN ('api', 'import', 'auto', 'sql')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
-- One live internal id per (tenant, system, entity type, external id), and one live
-- external id per (tenant, system, entity type, internal id).
CREATE UNIQUE INDEX integration_mappings_external_live
    ON integration_mappings (tenant_id, external_system, entity_type, external_id)
    WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX integration_mappings_internal_live
    ON integration_mappings (tenant_id, external_system, entity_type, internal_id)
    WHERE deleted_at IS NULL;
-- Listing: newest first per tenant, keyset on (created_at, id).
CREATE INDEX integration_mappings_tenant_created
    ON integration_mappings (tenant_id, created_at DESC, id DESC);

-- Every change (API, bulk import, auto-mapping, or SQL by another program) tells every
-- gateway process which cache entries to drop, on channel 'integration_mappings'.
-- Payload (JSON): {"rows": [[tenant, system, entity_type, internal_id, external_id], ...]}
-- for statements of up to 40 rows (old and new versions); {"tenants": [...]} when more
-- rows changed; {"all": true} for TRUNCATE or more than 100 tenants. NOTIFY is delivered at commit, so caches refill with
-- committed data only.
CREATE FUNCTION integration_mappings_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed jsonb;   -- at most MAX_ROWS + 1 rows: more means "name the tenants instead"
    tenants jsonb;
BEGIN
    -- Transition tables exist only for the events that declare them: one branch each.
    IF TG_OP = 'INSERT' THEN
        SELECT jsonb_agg(jsonb_build_array(tenant_id, external_system, entity_type,
                                           internal_id, external_id))
          INTO changed FROM (SELECT * FROM new_rows LIMIT 41) r;
        IF jsonb_array_length(changed) > 40 THEN
            SELECT jsonb_agg(DISTINCT tenant_id) INTO tenants FROM new_rows;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT jsonb_agg(jsonb_build_array(tenant_id, external_system, entity_type,
                                           internal_id, external_id))
          INTO changed FROM (SELECT * FROM old_rows LIMIT 41) r;
        IF jsonb_array_length(changed) > 40 THEN
            SELECT jsonb_agg(DISTINCT tenant_id) INTO tenants FROM old_rows;
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT jsonb_agg(jsonb_build_array(tenant_id, external_system, entity_type,
                                           internal_id, external_id))
          INTO changed
          FROM (SELECT * FROM new_rows UNION ALL SELECT * FROM old_rows LIMIT 41) r;
        IF jsonb_array_length(changed) > 40 THEN
            SELECT jsonb_agg(t) INTO tenants
              FROM (SELECT tenant_id AS t FROM new_rows
                    UNION SELECT tenant_id FROM old_rows) x;
        END IF;
    END IF;
    IF TG_OP = 'TRUNCATE' OR jsonb_array_length(tenants) > 100 THEN
        PERFORM pg_notify('integration_mappings', '{"all": true}');
    ELSIF tenants IS NOT NULL OR length(changed::text) >= 7000 THEN
        -- NOTIFY payloads are limited to 8000 bytes: name tenants instead of rows.
        PERFORM pg_notify('integration_mappings', jsonb_build_object('tenants',
            coalesce(tenants, (SELECT jsonb_agg(DISTINCT x -> 0)
                               FROM jsonb_array_elements(changed) x)))::text);
    ELSIF changed IS NOT NULL THEN
        PERFORM pg_notify('integration_mappings', jsonb_build_object('rows', changed)::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER integration_mappings_notify_insert AFTER INSERT ON integration_mappings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION integration_mappings_notify();
CREATE TRIGGER integration_mappings_notify_update AFTER UPDATE ON integration_mappings
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION integration_mappings_notify();
CREATE TRIGGER integration_mappings_notify_delete AFTER DELETE ON integration_mappings
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION integration_mappings_notify();
CREATE TRIGGER integration_mappings_notify_truncate AFTER TRUNCATE ON integration_mappings
    FOR EACH STATEMENT EXECUTE FUNCTION integration_mappings_notify();

-- api_logs: which fields the gateway rewrote (ID translation), appended last so the COPY
-- column list only grows at its end. NULL on routes without translation.
ALTER TABLE api_logs ADD COLUMN translated jsonb;
