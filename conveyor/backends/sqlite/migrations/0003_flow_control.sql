-- Flow control: cron schedules, and the log of recent starts that rate limits count.

-- One row per schedule the app declares (app.cron). Workers sync the declared set when they
-- start (a schedule no longer declared gets enabled = 0) and fire a due row by moving its
-- next_fire_at forward with a compare-and-set, so each fire is enqueued exactly once.
CREATE TABLE conveyor_schedules (
    name         TEXT    PRIMARY KEY,
    expression   TEXT    NOT NULL,
    tz           TEXT    NOT NULL DEFAULT 'UTC',
    job_type     TEXT    NOT NULL,
    payload      TEXT    NOT NULL DEFAULT 'null',
    options      TEXT    NOT NULL DEFAULT '{}',
    missed       TEXT    NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip','run_once')),
    enabled      INTEGER NOT NULL DEFAULT 1,
    paused       INTEGER NOT NULL DEFAULT 0,
    next_fire_at REAL    NOT NULL,
    last_fire_at REAL,
    last_job_id  INTEGER,
    updated_at   REAL    NOT NULL
);

-- Every claim of a rate-limited job logs (key, time); a claim counts the key's rows younger
-- than the limit's period (a sliding window, exact at any instant) and deletes older ones,
-- so a key holds at most its limit's count of rows.
CREATE TABLE conveyor_rate_starts (
    key TEXT NOT NULL,
    at  REAL NOT NULL
);
CREATE INDEX conveyor_rate_starts_key ON conveyor_rate_starts (key, at);
