-- Scheduled batch sync jobs (routes.yaml `syncs:`, gateway/sync/jobs/): one row per job with
-- its cursor and schedule, its lease (one runner across processes), its run history, and
-- the items that failed and wait for a retry.
--
-- A job row is upserted from routes.yaml at start; its cursor, pause flag and history
-- survive restarts and configuration edits. A runner claims a due job with
-- FOR UPDATE SKIP LOCKED and holds it by a lease it renews while running: a runner that dies
-- leaves a lease that expires, and another process claims the job again and resumes from the
-- last committed cursor (the cursor only moves in the transaction that records its batch).
CREATE TABLE sync_jobs (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name             text        NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    tenant_id        uuid        NOT NULL REFERENCES tenants (id),
    external_system  text        NOT NULL CHECK (external_system ~ '^[a-z][a-z0-9_]{0,62}$'),
    entity_type      text        NOT NULL CHECK (entity_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    direction        text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    schedule         text        NOT NULL,  -- 'every 900s' or 'cron 0 2 * * *' (shown only)
    -- SecretBox token of a JSON object: {"token"} | {"username", "password"} | {"headers"}
    -- for the external end (outbound target, inbound source); NULL: no auth
    auth_secret      text,
    cursor           text,       -- the source's next cursor, opaque; NULL: from the start
    paused           boolean     NOT NULL DEFAULT false,
    run_requested_at timestamptz,  -- POST .../run: run now, whatever the schedule says
    next_run_at      timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    last_run_at      timestamptz,
    last_success_at  timestamptz,
    last_status      text        CHECK (last_status IN ('succeeded', 'failed', 'abandoned')),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sync_jobs_lease CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);
CREATE INDEX sync_jobs_due ON sync_jobs (next_run_at) WHERE NOT paused;
CREATE INDEX sync_jobs_tenant ON sync_jobs (tenant_id, name);

-- One row per run; counts are written with every batch, so a run that died shows how far
-- it got ('abandoned' once another runner took the job over).
CREATE TABLE sync_job_runs (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id        uuid        NOT NULL REFERENCES sync_jobs (id),
    tenant_id     uuid        NOT NULL REFERENCES tenants (id),
    trigger       text        NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    runner        text        NOT NULL,  -- host:pid:random of the process that ran it
    status        text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    cursor_before text,
    cursor_after  text,
    batches       integer     NOT NULL DEFAULT 0,
    items_read    integer     NOT NULL DEFAULT 0,  -- items the source returned
    items_synced  integer     NOT NULL DEFAULT 0,  -- accepted by the target
    items_failed  integer     NOT NULL DEFAULT 0,  -- refused, untranslatable, or target down
    items_skipped integer     NOT NULL DEFAULT 0,  -- already synced at that version, conflicts
    items_retried integer     NOT NULL DEFAULT 0,  -- earlier failures sent again
    errors        jsonb       NOT NULL DEFAULT '[]',  -- the first errors: [{"id", "error"}]
    error         text,       -- why the run itself failed
    CONSTRAINT sync_job_runs_finished CHECK ((status = 'running') = (finished_at IS NULL))
);
CREATE INDEX sync_job_runs_job ON sync_job_runs (job_id, started_at DESC, id DESC);
CREATE INDEX sync_job_runs_running ON sync_job_runs (job_id) WHERE status = 'running';

-- Items that failed, kept as the source gave them (before translation) so the job can send
-- them again when data_sync_status says their retry is due; deleted once they succeed or a
-- newer version supersedes them. Keyed like data_sync_status (internal entity id).
CREATE TABLE sync_job_items (
    job_id     uuid        NOT NULL REFERENCES sync_jobs (id),
    entity_id  uuid        NOT NULL,
    version    bigint,
    item       jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, entity_id)
);
