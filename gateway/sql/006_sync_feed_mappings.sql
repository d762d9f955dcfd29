-- The incremental sync feed (GET /admin/v1/sync/changes) reports mapping changes too:
-- integration_mappings rows remember the transaction that last changed them, exactly like
-- data_sync_status (see 005). Adding the column rewrites the table once.
ALTER TABLE integration_mappings
    ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX integration_mappings_feed
    ON integration_mappings (tenant_id, external_system, change_xid, id);

CREATE FUNCTION integration_mappings_touch_xid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id();
    RETURN NEW;
END $$;
CREATE TRIGGER integration_mappings_touch_xid BEFORE UPDATE ON integration_mappings
    FOR EACH ROW EXECUTE FUNCTION integration_mappings_touch_xid();
