CREATE TABLE conveyor_jobs (
    id               BIGSERIAL PRIMARY KEY,
    type             TEXT        NOT NULL,
    queue            TEXT        NOT NULL DEFAULT 'default',
    state            TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('waiting','scheduled','pending','running','completed','dead','cancelled')),
    payload          JSONB       NOT NULL DEFAULT '{}',
    priority         INTEGER     NOT NULL DEFAULT 0,
    attempt          INTEGER     NOT NULL DEFAULT 0,
    max_attempts     INTEGER     NOT NULL DEFAULT 5,
    run_at           TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    attempted_at     TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    lease_token      BIGINT      NOT NULL DEFAULT 0,
    lease_expires_at TIMESTAMPTZ,
    worker_id        TEXT,
    timeout          DOUBLE PRECISION,
    backoff          TEXT,
    unique_key       TEXT,
    unique_until     TIMESTAMPTZ,
    workflow_id      TEXT,
    parent_id        BIGINT,
    progress         JSONB,
    result           JSONB,
    errors           JSONB       NOT NULL DEFAULT '[]'
);

-- The claim reads only due jobs, so finished and future jobs never enter its index.
CREATE INDEX conveyor_jobs_claim ON conveyor_jobs (queue, priority DESC, id) WHERE state = 'pending';
CREATE INDEX conveyor_jobs_due ON conveyor_jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX conveyor_jobs_lease ON conveyor_jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX conveyor_jobs_unique ON conveyor_jobs (unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX conveyor_jobs_state ON conveyor_jobs (state, queue, type);
CREATE INDEX conveyor_jobs_workflow ON conveyor_jobs (workflow_id) WHERE workflow_id IS NOT NULL;
CREATE INDEX conveyor_jobs_finished ON conveyor_jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE conveyor_marks (
    job_id     BIGINT      NOT NULL,
    key        TEXT        NOT NULL,
    value      JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, key)
);

CREATE TABLE conveyor_workers (
    id           TEXT        PRIMARY KEY,
    host         TEXT        NOT NULL,
    pid          INTEGER     NOT NULL,
    queues       TEXT[]      NOT NULL,
    concurrency  INTEGER     NOT NULL,
    running      INTEGER     NOT NULL DEFAULT 0,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    meta         JSONB       NOT NULL DEFAULT '{}'
);
