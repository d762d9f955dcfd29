-- Outbound webhooks: subscriptions, the events outbox, one delivery per event x matching
-- subscription, and every attempt. Version 004 does not depend on 003 (integration_mappings):
-- the runner applies missing versions in any order.

CREATE TABLE webhook_subscriptions (
    id                         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id                  uuid        NOT NULL REFERENCES tenants (id),
    name                       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    url                        text        NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    -- exact names ('reservation.created'), prefixes ('reservation.*') or '*'
    event_types                text[]      NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 100),
    -- the event payload must contain this JSON (jsonb @>); NULL matches every payload
    filter                     jsonb       CHECK (filter IS NULL OR jsonb_typeof(filter) = 'object'),
    auth_type                  text        NOT NULL DEFAULT 'none'
        CHECK (auth_type IN ('none', 'bearer', 'basic', 'headers')),
    -- SecretBox token of a JSON object: {"token"} | {"username", "password"} | {"headers"}
    auth_secret                text,
    auth_header_names          text[]      NOT NULL DEFAULT '{}',  -- shown; values are not
    secret                     text        NOT NULL,  -- SecretBox token of 'whsec_...'
    previous_secret            text,                  -- still signs until the time below
    previous_secret_expires_at timestamptz,
    max_attempts               integer     NOT NULL DEFAULT 8 CHECK (max_attempts BETWEEN 1 AND 50),
    retry_schedule             double precision[],    -- seconds before attempt 1, 2, ...
    backoff_initial            double precision CHECK (backoff_initial > 0),
    backoff_multiplier         double precision CHECK (backoff_multiplier >= 1),
    backoff_max                double precision CHECK (backoff_max > 0),
    attempt_timeout            double precision NOT NULL DEFAULT 15
        CHECK (attempt_timeout > 0 AND attempt_timeout <= 300),
    max_concurrency            integer     NOT NULL DEFAULT 10
        CHECK (max_concurrency BETWEEN 1 AND 1000),
    payload_fields             jsonb,  -- {"output_name": "path.in.data"}
    payload_template           jsonb,  -- JSON with "{{type}}", "{{data}}", "{{data.x}}" ...
    external_system            text    CHECK (external_system ~ '^[a-z][a-z0-9_]{0,62}$'),
    active                     boolean     NOT NULL DEFAULT true,
    disabled_reason            text,
    disabled_at                timestamptz,
    failing_since              timestamptz,  -- first failed attempt since the last success
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    deleted_at                 timestamptz,
    CONSTRAINT webhook_subscriptions_auth CHECK ((auth_type = 'none') = (auth_secret IS NULL)),
    CONSTRAINT webhook_subscriptions_one_policy CHECK
        (retry_schedule IS NULL OR backoff_initial IS NULL),
    CONSTRAINT webhook_subscriptions_rotation CHECK
        ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);
CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant_id, created_at)
    WHERE deleted_at IS NULL;

-- The outbox. Internal services may INSERT here in their own transaction (only tenant_id,
-- event_type and payload are required); the trigger below fans each row out to the
-- matching subscriptions and wakes the delivery loops with NOTIFY webhook_deliveries.
CREATE TABLE webhook_events (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    event_type      text        NOT NULL
        CHECK (event_type ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$' AND length(event_type) <= 200),
    payload         jsonb       NOT NULL,
    idempotency_key text        CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    source          text        NOT NULL DEFAULT 'outbox'
        CHECK (source IN ('outbox', 'api', 'route', 'test')),
    subscription_id uuid        REFERENCES webhook_subscriptions (id),  -- set: that one only
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_events_idempotency UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX webhook_events_tenant_created ON webhook_events (tenant_id, created_at);

CREATE TABLE webhook_deliveries (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid        NOT NULL REFERENCES tenants (id),
    event_id         uuid        NOT NULL REFERENCES webhook_events (id),
    subscription_id  uuid        NOT NULL REFERENCES webhook_subscriptions (id),
    webhook_id       text        NOT NULL,  -- the webhook-id header, the same on every retry
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivering', 'delivered', 'failed', 'cancelled')),
    attempt_count    integer     NOT NULL DEFAULT 0,  -- attempts since creation or last replay
    -- pending: when the next attempt is due; delivering: when the lease expires (then the
    -- delivery is due again: a crashed process's work is picked up by the others)
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    replay_count     integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_once UNIQUE (event_id, subscription_id),
    CONSTRAINT webhook_deliveries_lease CHECK
        ((status = 'delivering') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (subscription_id, next_attempt_at)
    WHERE status IN ('pending', 'delivering');
-- in-flight count per subscription (its concurrency limit), read by every claim
CREATE INDEX webhook_deliveries_in_flight ON webhook_deliveries (subscription_id)
    WHERE status = 'delivering';
CREATE INDEX webhook_deliveries_tenant_created ON webhook_deliveries (tenant_id, created_at);
CREATE INDEX webhook_deliveries_sub_created ON webhook_deliveries (subscription_id, created_at);

CREATE TABLE webhook_attempts (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      uuid        NOT NULL REFERENCES webhook_deliveries (id),
    attempt_number   integer     NOT NULL,
    result           text        NOT NULL
        CHECK (result IN ('delivered', 'http_error', 'timeout', 'connect_error', 'refused',
                          'released')),
    status_code      integer,
    duration_ms      double precision NOT NULL,
    error            text,
    response_excerpt text,       -- the first bytes of the answer (capped)
    attempted_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

-- Does an event type match a subscription's patterns? 'a.*' matches 'a.b' and 'a.b.c'.
CREATE FUNCTION webhook_type_matches(patterns text[], event_type text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT 1 FROM unnest(patterns) AS p
        WHERE p = event_type OR p = '*'
           OR (right(p, 2) = '.*' AND starts_with(event_type, left(p, -1))))
$$;

-- Fan-out: one delivery per matching active subscription, in the inserting transaction.
CREATE FUNCTION webhook_events_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (tenant_id, event_id, subscription_id, webhook_id)
    SELECT NEW.tenant_id, NEW.id, s.id, 'msg_' || replace(NEW.id::text, '-', '')
    FROM webhook_subscriptions s
    WHERE s.tenant_id = NEW.tenant_id AND s.deleted_at IS NULL AND s.active
      AND CASE WHEN NEW.subscription_id IS NOT NULL THEN s.id = NEW.subscription_id
               ELSE webhook_type_matches(s.event_types, NEW.event_type)
                    AND (s.filter IS NULL OR NEW.payload @> s.filter) END;
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_events_fan_out AFTER INSERT ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION webhook_events_fan_out();

-- Wake the delivery loops when something becomes due now (new delivery, replay, release).
-- NOTIFY folds duplicates within a transaction, so a fan-out of N rows wakes them once.
CREATE FUNCTION webhook_deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('webhook_deliveries', '');
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_deliveries_notify AFTER INSERT OR UPDATE ON webhook_deliveries
    FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.next_attempt_at <= now())
    EXECUTE FUNCTION webhook_deliveries_notify();
