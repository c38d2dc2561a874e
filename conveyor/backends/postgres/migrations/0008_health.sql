-- Health under load (issue 19; docs/discussions.md, "PostgreSQL under a pinned horizon").

-- A lease renewal changes only lease_expires_at. With no index on it, the renewal is a HOT
-- update: the new row version goes in the same page and no index gains an entry, so leases of
-- long runs renewed every few seconds stop bloating every index of the table. The rescue finds
-- expired leases through the state index (running jobs are few: at most the workers' slots).
DROP INDEX IF EXISTS conveyor_jobs_lease;

-- Room in each page for those HOT versions; vacuum by a fixed count of dead rows rather than a
-- fraction of a table that can hold a day of finished jobs (20% of 69 million rows would let
-- 14 million dead versions pile up first), and without cost-based sleeps, so the dead versions a
-- long transaction held back are gone within a vacuum or two of it ending.
ALTER TABLE conveyor_jobs SET (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);

-- One row per worker, rewritten at every heartbeat: HOT in half-empty pages, vacuumed often.
ALTER TABLE conveyor_workers SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 100
);
