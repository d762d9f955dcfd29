-- data_sync_status: per entity, external system and direction, how synchronisation stands.
--
-- Versions (optimistic concurrency, see gateway/sync/model.py):
--   version          the entity version both sides last agreed on (the last success)
--   pending_side     which side ('internal' PMS or 'external' system) has a change not yet
--   pending_version  synced, and that change's version
--   conflict         {"internal": v, "external": v} while both sides changed since 'version'
-- change_xid is the id of the transaction that last changed the row: the incremental feed
-- (GET /admin/v1/sync/changes) pages on (change_xid, id) and only up to the oldest running
-- transaction, so a change committing late is never skipped.
CREATE TABLE data_sync_status (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    entity_type     text        NOT NULL CHECK (entity_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    entity_id       uuid        NOT NULL,  -- the internal (PMS) id
    external_system text        NOT NULL CHECK (external_system ~ '^[a-z][a-z0-9_]{0,62}$'),
    direction       text        NOT NULL
        CHECK (direction IN ('inbound', 'outbound', 'bidirectional')),
    status          text        NOT NULL
        CHECK (status IN ('pending', 'in_progress', 'succeeded', 'failed', 'conflict')),
    version         bigint,
    pending_side    text        CHECK (pending_side IN ('internal', 'external')),
    pending_version bigint,
    conflict        jsonb,
    last_attempt_at timestamptz,
    last_success_at timestamptz,
    unsynced_since  timestamptz,  -- when it last left 'succeeded' (sync lag is measured from it)
    error_message   text,
    retry_count     integer     NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    next_retry_at   timestamptz,
    change_xid      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    CONSTRAINT data_sync_status_conflict CHECK ((status = 'conflict') = (conflict IS NOT NULL))
);
CREATE UNIQUE INDEX data_sync_status_live
    ON data_sync_status (tenant_id, entity_type, entity_id, external_system, direction)
    WHERE deleted_at IS NULL;
CREATE INDEX data_sync_status_feed ON data_sync_status (tenant_id, external_system, change_xid, id);
CREATE INDEX data_sync_status_open ON data_sync_status (external_system, status, unsynced_since)
    WHERE deleted_at IS NULL AND status <> 'succeeded';

CREATE FUNCTION data_sync_status_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id();
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER data_sync_status_touch BEFORE UPDATE ON data_sync_status
    FOR EACH ROW EXECUTE FUNCTION data_sync_status_touch();
