-- Webhook features a hotel PMS needs (issue 21): per-entity ordering, latest-state
-- coalescing, echo suppression, endpoint-level backoff and a rate limit per subscription,
-- ed25519 (Standard Webhooks v1a) signatures, operational events, an event-type catalogue.

-- -- subscriptions: the new options ----------------------------------------------------------
ALTER TABLE webhook_subscriptions
    -- 'entity': deliveries of one entity (event type's first segment + payload id) go out one
    -- at a time in event order; different entities stay parallel
    ADD COLUMN ordering text NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'entity')),
    -- a new event replaces the pending (not in-flight) deliveries of the same type and entity
    ADD COLUMN coalesce_updates boolean NOT NULL DEFAULT false,
    -- NULL: true when the subscription has an external_system (see webhook_suppresses)
    ADD COLUMN suppress_own_changes boolean,
    -- deliveries per second (token bucket, burst of one second, at least 1)
    ADD COLUMN rate_limit double precision CHECK (rate_limit > 0 AND rate_limit <= 10000),
    ADD COLUMN rate_tokens double precision,
    ADD COLUMN rate_checked_at timestamptz,
    -- endpoint-level backoff: nothing is claimed for this subscription before this time
    ADD COLUMN paused_until timestamptz,
    ADD COLUMN signature_scheme text NOT NULL DEFAULT 'v1' CHECK (signature_scheme IN ('v1', 'v1a'));

-- -- events: which external system caused one (echo suppression) -----------------------------
ALTER TABLE webhook_events
    ADD COLUMN origin_system text CHECK (origin_system ~ '^[a-z][a-z0-9_]{0,62}$');
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_source_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_source_check
    CHECK (source IN ('outbox', 'api', 'route', 'test', 'system'));

-- -- deliveries: entity, sequence, hold, coalescing -------------------------------------------
ALTER TABLE webhook_deliveries
    ADD COLUMN entity_key text,                        -- 'reservation:<id>'; NULL: no entity
    ADD COLUMN seq bigint,                             -- per (subscription, entity), ordered subs
    ADD COLUMN held boolean NOT NULL DEFAULT false,    -- an older one of its entity is open
    ADD COLUMN coalesced_count integer NOT NULL DEFAULT 0;  -- deliveries this one replaced
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_status_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_status_check
    CHECK (status IN ('pending', 'delivering', 'delivered', 'failed', 'cancelled', 'coalesced'));

-- Claims read only unheld rows.
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (subscription_id, next_attempt_at)
    WHERE status IN ('pending', 'delivering') AND NOT held;
-- The open deliveries of one entity, oldest first (hold, release, coalescing).
CREATE INDEX webhook_deliveries_entity ON webhook_deliveries (subscription_id, entity_key, seq)
    WHERE status IN ('pending', 'delivering') AND entity_key IS NOT NULL;

-- The last sequence number given per (subscription, entity). The row lock taken by the
-- upsert serialises the fan-out of events of one entity, so seq order is commit order.
CREATE TABLE webhook_entity_sequences (
    subscription_id uuid   NOT NULL REFERENCES webhook_subscriptions (id),
    entity_key      text   NOT NULL,
    last_seq        bigint NOT NULL,
    PRIMARY KEY (subscription_id, entity_key)
);

-- -- ed25519 signing keys, one per tenant (v1a) -----------------------------------------------
CREATE TABLE webhook_signing_keys (
    tenant_id   uuid        PRIMARY KEY REFERENCES tenants (id),
    private_key text        NOT NULL,  -- SecretBox token of 'whsk_<base64 of the 32-byte seed>'
    public_key  text        NOT NULL,  -- 'whpk_<base64 of the 32-byte public key>'
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- -- the event-type catalogue --------------------------------------------------------------------
CREATE TABLE webhook_event_types (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    name        text        NOT NULL
        CHECK (name ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$' AND length(name) <= 200),
    description text        NOT NULL CHECK (length(description) BETWEEN 1 AND 2000),
    schema      jsonb       NOT NULL CHECK (jsonb_typeof(schema) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- The entity of an event: its type's first segment and the payload's `id` (or
-- `<entity>_id`); NULL when the payload names none.
CREATE FUNCTION webhook_entity_key(event_type text, payload jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT split_part(event_type, '.', 1) || ':' || coalesce(
        payload ->> 'id', payload ->> (split_part(event_type, '.', 1) || '_id'))
$$;

-- Operational events (webhook.*) go only to subscriptions that name them: '*' does not match.
CREATE OR REPLACE FUNCTION webhook_type_matches(patterns text[], event_type text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT 1 FROM unnest(patterns) AS p
        WHERE p = event_type OR (p = '*' AND NOT starts_with(event_type, 'webhook.'))
           OR (right(p, 2) = '.*' AND starts_with(event_type, left(p, -1))))
$$;

-- Fan-out: one delivery per matching active subscription, in the inserting transaction.
-- Echo suppression skips the subscription of the system that caused the event; ordered and
-- coalescing subscriptions get the entity, a sequence number and a hold.
CREATE OR REPLACE FUNCTION webhook_events_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s          record;
    v_key      text := webhook_entity_key(NEW.event_type, NEW.payload);
    v_seq      bigint;
    v_held     boolean;
    v_replaced integer;
BEGIN
    FOR s IN
        SELECT sub.id, sub.ordering, sub.coalesce_updates
        FROM webhook_subscriptions sub
        WHERE sub.tenant_id = NEW.tenant_id AND sub.deleted_at IS NULL AND sub.active
          AND CASE WHEN NEW.subscription_id IS NOT NULL THEN sub.id = NEW.subscription_id
                   ELSE webhook_type_matches(sub.event_types, NEW.event_type)
                        AND (sub.filter IS NULL OR NEW.payload @> sub.filter)
                        AND NOT (coalesce(NEW.origin_system = sub.external_system, false)
                                 AND coalesce(sub.suppress_own_changes, true)) END
        ORDER BY sub.id  -- a fixed lock order on webhook_entity_sequences
    LOOP
        IF v_key IS NULL OR (s.ordering = 'none' AND NOT s.coalesce_updates)
           OR NEW.subscription_id IS NOT NULL THEN
            INSERT INTO webhook_deliveries (tenant_id, event_id, subscription_id, webhook_id)
            VALUES (NEW.tenant_id, NEW.id, s.id, 'msg_' || replace(NEW.id::text, '-', ''));
            CONTINUE;
        END IF;
        INSERT INTO webhook_entity_sequences AS q (subscription_id, entity_key, last_seq)
        VALUES (s.id, v_key, 1)
        ON CONFLICT (subscription_id, entity_key) DO UPDATE SET last_seq = q.last_seq + 1
        RETURNING last_seq INTO v_seq;
        v_replaced := 0;
        IF s.coalesce_updates THEN
            WITH gone AS (
                UPDATE webhook_deliveries d SET status = 'coalesced', updated_at = now(),
                       last_error = 'replaced by a newer event of the same entity'
                FROM webhook_events e
                WHERE d.subscription_id = s.id AND d.entity_key = v_key AND d.status = 'pending'
                  AND e.id = d.event_id AND e.event_type = NEW.event_type
                RETURNING d.coalesced_count)
            SELECT coalesce(sum(coalesced_count + 1), 0) INTO v_replaced FROM gone;
        END IF;
        v_held := s.ordering = 'entity' AND EXISTS (
            SELECT 1 FROM webhook_deliveries o
            WHERE o.subscription_id = s.id AND o.entity_key = v_key
              AND o.status IN ('pending', 'delivering'));
        INSERT INTO webhook_deliveries (tenant_id, event_id, subscription_id, webhook_id,
                                        entity_key, seq, held, coalesced_count)
        VALUES (NEW.tenant_id, NEW.id, s.id, 'msg_' || replace(NEW.id::text, '-', ''),
                v_key, v_seq, v_held, v_replaced);
    END LOOP;
    RETURN NULL;
END $$;

-- When an ordered delivery is finished (delivered, failed, cancelled, coalesced), the next
-- open one of its entity is released -- unless an older one is still open.
CREATE FUNCTION webhook_deliveries_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE webhook_deliveries n SET held = false, updated_at = now()
    WHERE n.id = (
        SELECT x.id FROM webhook_deliveries x
        WHERE x.subscription_id = NEW.subscription_id AND x.entity_key = NEW.entity_key
          AND x.status IN ('pending', 'delivering')
        ORDER BY x.seq LIMIT 1)
      AND n.held;
    PERFORM pg_notify('webhook_deliveries', '');
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_deliveries_release AFTER UPDATE OF status ON webhook_deliveries
    FOR EACH ROW WHEN (NEW.entity_key IS NOT NULL AND NEW.seq IS NOT NULL
                       AND OLD.status IN ('pending', 'delivering')
                       AND NEW.status NOT IN ('pending', 'delivering'))
    EXECUTE FUNCTION webhook_deliveries_release();

-- -- operational events --------------------------------------------------------------------------
-- A delivery that exhausted its attempts (not of an operational event: no loops).
CREATE FUNCTION webhook_ops_delivery_failed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_type text;
BEGIN
    SELECT event_type INTO v_type FROM webhook_events WHERE id = NEW.event_id;
    IF starts_with(v_type, 'webhook.') THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_events (tenant_id, event_type, payload, source)
    VALUES (NEW.tenant_id, 'webhook.delivery.failed', jsonb_build_object(
        'delivery_id', NEW.id, 'subscription_id', NEW.subscription_id,
        'event_id', NEW.event_id, 'event_type', v_type, 'webhook_id', NEW.webhook_id,
        'attempts', NEW.attempt_count, 'last_status', NEW.last_status,
        'last_error', NEW.last_error), 'system');
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_ops_delivery_failed AFTER UPDATE OF status ON webhook_deliveries
    FOR EACH ROW WHEN (OLD.status <> 'failed' AND NEW.status = 'failed')
    EXECUTE FUNCTION webhook_ops_delivery_failed();

-- A subscription disabled by the gateway (not by an admin), or starting to fail.
CREATE FUNCTION webhook_ops_subscription() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_type text;
BEGIN
    IF OLD.active AND NOT NEW.active AND NEW.deleted_at IS NULL
       AND NEW.disabled_reason IS DISTINCT FROM 'disabled by an admin' THEN
        v_type := 'webhook.subscription.disabled';
    ELSIF OLD.failing_since IS NULL AND NEW.failing_since IS NOT NULL THEN
        v_type := 'webhook.endpoint.failing';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO webhook_events (tenant_id, event_type, payload, source)
    VALUES (NEW.tenant_id, v_type, jsonb_build_object(
        'subscription_id', NEW.id, 'name', NEW.name, 'url', NEW.url,
        'disabled_reason', NEW.disabled_reason, 'failing_since', NEW.failing_since), 'system');
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_ops_subscription AFTER UPDATE ON webhook_subscriptions
    FOR EACH ROW WHEN ((OLD.active AND NOT NEW.active)
                       OR (OLD.failing_since IS NULL AND NEW.failing_since IS NOT NULL))
    EXECUTE FUNCTION webhook_ops_subscription();

-- Held rows, for the sweep that releases those a concurrent completion missed.
CREATE INDEX webhook_deliveries_held ON webhook_deliveries (subscription_id) WHERE held;
