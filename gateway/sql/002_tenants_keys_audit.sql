-- Tenants (hotel groups / properties), their API keys, and the append-only audit trail.

CREATE TABLE tenants (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE UNIQUE INDEX tenants_name_live ON tenants (lower(name)) WHERE deleted_at IS NULL;

-- Only a SHA-256 of each token is stored; the token is shown once, at creation.
-- Tokens carry 256 random bits, so a fast hash is enough (no password stretching needed).
CREATE TABLE api_keys (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id             uuid        NOT NULL REFERENCES tenants (id),
    name                  text        NOT NULL DEFAULT '',
    role                  text        NOT NULL
        CHECK (role IN ('partner', 'service', 'viewer', 'admin')),
    external_system       text
        CHECK (external_system ~ '^[a-z][a-z0-9_]{0,62}$'),
    token_prefix          text        NOT NULL,  -- first characters, to recognise a key
    token_hash            bytea       NOT NULL UNIQUE,
    rate_limit_per_minute integer     CHECK (rate_limit_per_minute > 0),
    expires_at            timestamptz,
    revoked_at            timestamptz,
    last_used_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_partner_system CHECK (role <> 'partner' OR external_system IS NOT NULL)
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- Every change made through the admin API or the CLI. Nothing updates or deletes rows.
CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    tenant_id   uuid,
    actor       text        NOT NULL,  -- 'cli' or 'key:<uuid>'
    actor_key_id uuid,
    action      text        NOT NULL,  -- e.g. tenant.create, key.revoke
    object_type text        NOT NULL,
    object_id   text,
    before      jsonb,                 -- secrets masked
    after       jsonb
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
