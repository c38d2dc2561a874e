-- Everyday job control: the 'expired' state and a job's expiry, paused queues, schedules
-- added at run time.

-- SQLite cannot change a CHECK constraint in place: the jobs table is rebuilt with 'expired'
-- among its states and the new expires_at column (meta, from 0005, carried over), keeping every row, id and index, and the
-- AUTOINCREMENT counter (so ids of pruned jobs are never handed out again).
CREATE TABLE conveyor_jobs_next (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    type             TEXT    NOT NULL,
    queue            TEXT    NOT NULL DEFAULT 'default',
    state            TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('waiting','scheduled','pending','running','completed','dead','cancelled','expired')),
    payload          TEXT    NOT NULL DEFAULT '{}',
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 5,
    run_at           REAL    NOT NULL,
    created_at       REAL    NOT NULL,
    attempted_at     REAL,
    finished_at      REAL,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    worker_id        TEXT,
    timeout          REAL,
    backoff          TEXT,
    unique_key       TEXT,
    unique_until     REAL,
    workflow_id      TEXT,
    parent_id        INTEGER,
    progress         TEXT,
    result           TEXT,
    errors           TEXT    NOT NULL DEFAULT '[]',
    meta             TEXT,
    expires_at       REAL    -- not started by then: the job ends 'expired' and never runs
);
INSERT INTO conveyor_jobs_next (id, type, queue, state, payload, priority, attempt, max_attempts, run_at, created_at,
    attempted_at, finished_at, lease_token, lease_expires_at, worker_id, timeout, backoff, unique_key, unique_until,
    workflow_id, parent_id, progress, result, errors, meta)
SELECT id, type, queue, state, payload, priority, attempt, max_attempts, run_at, created_at,
    attempted_at, finished_at, lease_token, lease_expires_at, worker_id, timeout, backoff, unique_key, unique_until,
    workflow_id, parent_id, progress, result, errors, meta
FROM conveyor_jobs;
UPDATE sqlite_sequence SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'conveyor_jobs'))
WHERE name = 'conveyor_jobs_next';
INSERT INTO sqlite_sequence (name, seq) SELECT 'conveyor_jobs_next', seq FROM sqlite_sequence
WHERE name = 'conveyor_jobs' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'conveyor_jobs_next');
DROP TABLE conveyor_jobs;
ALTER TABLE conveyor_jobs_next RENAME TO conveyor_jobs;

CREATE INDEX conveyor_jobs_claim ON conveyor_jobs (queue, priority DESC, id) WHERE state = 'pending';
CREATE INDEX conveyor_jobs_due ON conveyor_jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX conveyor_jobs_lease ON conveyor_jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX conveyor_jobs_unique ON conveyor_jobs (unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX conveyor_jobs_state ON conveyor_jobs (state, queue, type);
CREATE INDEX conveyor_jobs_workflow ON conveyor_jobs (workflow_id) WHERE workflow_id IS NOT NULL;
CREATE INDEX conveyor_jobs_finished ON conveyor_jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX conveyor_jobs_finished_stats ON conveyor_jobs (finished_at, state, queue, type) WHERE finished_at IS NOT NULL;
CREATE INDEX conveyor_jobs_completed_type ON conveyor_jobs (type, finished_at, id) WHERE state = 'completed';
-- Every claim first ends the unstarted jobs whose expiry passed: only those enter this index.
CREATE INDEX conveyor_jobs_expiry ON conveyor_jobs (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('waiting', 'scheduled', 'pending');

-- A paused queue has a row here: workers stop claiming from it (they re-read this table at
-- least every second); enqueueing into it still works. Resuming deletes the row.
CREATE TABLE conveyor_queue_pauses (
    queue     TEXT PRIMARY KEY,
    paused_at REAL NOT NULL
);

-- 'code': declared with app.cron (a worker's start-up sync owns the row); 'runtime': added
-- through the admin surface, kept until removed there.
ALTER TABLE conveyor_schedules ADD COLUMN source TEXT NOT NULL DEFAULT 'code' CHECK (source IN ('code', 'runtime'));
