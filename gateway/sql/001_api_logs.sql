-- api_logs: one row per proxied (or refused) call. Range-partitioned by day on created_at;
-- daily partitions (api_logs_pYYYYMMDD) are created ahead and dropped after the retention
-- period by gateway.capture.partitions, never by hand.
--
-- Bodies: *_body holds the JSON value for JSON bodies, a JSON string for UTF-8 text, and
-- {"base64": ...} for binary; *_body_format says which ('json', 'text', 'binary', 'empty',
-- 'omitted'); *_body_size is the original size in bytes; *_body_truncated is true when only
-- the first max_body_bytes were kept. Headers are [[name, value], ...] so repeats survive.
CREATE TABLE api_logs (
    id                      uuid        NOT NULL,  -- UUIDv7: its time part equals created_at
    created_at              timestamptz NOT NULL,
    tenant_id               uuid,                  -- filled once API keys exist
    api_key_id              uuid,                  -- who called (seed: user attribution)
    external_system         text,
    request_id              text        NOT NULL,
    route                   text,                  -- NULL when no route matched
    upstream                text,
    method                  text        NOT NULL,
    path                    text        NOT NULL,
    query                   text        NOT NULL DEFAULT '',
    request_headers         jsonb       NOT NULL,
    request_body            jsonb,
    request_body_format     text        NOT NULL,
    request_body_size       bigint      NOT NULL,
    request_body_truncated  boolean     NOT NULL DEFAULT false,
    response_headers        jsonb,
    response_body           jsonb,
    response_body_format    text        NOT NULL,
    response_body_size      bigint      NOT NULL,
    response_body_truncated boolean     NOT NULL DEFAULT false,
    status                  smallint    NOT NULL,
    duration_ms             double precision NOT NULL,
    upstream_ms             double precision,     -- until the upstream's answer headers arrived
    error_code              text,
    error_message           text,
    client_ip               inet,
    user_agent              text,
    CONSTRAINT api_logs_pkey PRIMARY KEY (created_at, id),
    CONSTRAINT api_logs_request_body_format CHECK
        (request_body_format IN ('json', 'text', 'binary', 'empty', 'omitted')),
    CONSTRAINT api_logs_response_body_format CHECK
        (response_body_format IN ('json', 'text', 'binary', 'empty', 'omitted'))
) PARTITION BY RANGE (created_at);

CREATE INDEX api_logs_created_at_brin ON api_logs USING brin (created_at);
CREATE INDEX api_logs_tenant_created_at ON api_logs (tenant_id, created_at);
CREATE INDEX api_logs_request_id ON api_logs (request_id);

-- One row per COPY batch, written in the same transaction as the batch: replaying a
-- journaled batch whose first attempt did commit finds its id here and skips it, so a
-- row is never written twice. Old markers are pruned with the partitions.
CREATE TABLE api_log_batches (
    batch_id   uuid        PRIMARY KEY,
    row_count  integer     NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_log_batches_written_at ON api_log_batches (written_at);
