-- Monitoring and administration: the audit log, and indexes the stats and the pruner read.

-- Who changed what, and when: one row per mutating admin action (API, dashboard, CLI).
CREATE TABLE conveyor_audit (
    id      BIGSERIAL   PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor   TEXT        NOT NULL,
    action  TEXT        NOT NULL,
    target  TEXT        NOT NULL DEFAULT '',
    detail  JSONB       NOT NULL DEFAULT '{}'
);
CREATE INDEX conveyor_audit_at ON conveyor_audit (at);

-- Throughput, failure rate and dead-letter growth read recent finishes by time; covering the
-- grouping columns keeps those reads inside the index however many old jobs the table holds.
CREATE INDEX conveyor_jobs_finished_stats ON conveyor_jobs (finished_at, state, queue, type) WHERE finished_at IS NOT NULL;

-- "Keep the last N completed per type" walks each type's newest completions first.
CREATE INDEX conveyor_jobs_completed_type ON conveyor_jobs (type, finished_at, id) WHERE state = 'completed';
