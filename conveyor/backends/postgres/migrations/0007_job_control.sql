-- Everyday job control: the 'expired' state and a job's expiry, paused queues, schedules
-- added at run time.

-- The new state. The constraint is looser than the one it replaces, so existing rows need no
-- check (NOT VALID spares a scan of the whole table under its lock).
ALTER TABLE conveyor_jobs DROP CONSTRAINT conveyor_jobs_state_check;
ALTER TABLE conveyor_jobs ADD CONSTRAINT conveyor_jobs_state_check
    CHECK (state IN ('waiting','scheduled','pending','running','completed','dead','cancelled','expired')) NOT VALID;

-- Not started by then: the job ends 'expired' and never runs. Every claim first ends the
-- unstarted jobs whose expiry passed: only those enter the index.
ALTER TABLE conveyor_jobs ADD COLUMN expires_at TIMESTAMPTZ;
CREATE INDEX conveyor_jobs_expiry ON conveyor_jobs (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('waiting', 'scheduled', 'pending');

-- A paused queue has a row here: workers stop claiming from it (they re-read this table at
-- least every second); enqueueing into it still works. Resuming deletes the row.
CREATE TABLE conveyor_queue_pauses (
    queue     TEXT        PRIMARY KEY,
    paused_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- 'code': declared with app.cron (a worker's start-up sync owns the row); 'runtime': added
-- through the admin surface, kept until removed there.
ALTER TABLE conveyor_schedules ADD COLUMN source TEXT NOT NULL DEFAULT 'code' CHECK (source IN ('code', 'runtime'));

-- An expired job fails its dependents as a dead or cancelled one does.
CREATE OR REPLACE FUNCTION conveyor_resolve(finished BIGINT[]) RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    frontier BIGINT[] := finished;
    parents  BIGINT[] := finished;
    promoted INTEGER := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM conveyor_deps WHERE depends_on = ANY(finished)) THEN
        RETURN 0;
    END IF;
    LOOP
        PERFORM 1 FROM conveyor_jobs
        WHERE state = 'waiting' AND id IN (SELECT job_id FROM conveyor_deps WHERE depends_on = ANY(frontier))
        ORDER BY id FOR UPDATE;
        WITH cancelled AS (
            UPDATE conveyor_jobs j SET state = 'cancelled', finished_at = now(),
                errors = j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempt,
                    'at', extract(epoch FROM now()),
                    'error', 'cancelled: job ' || (SELECT min(d.depends_on) FROM conveyor_deps d
                                                   JOIN conveyor_jobs p ON p.id = d.depends_on
                                                   WHERE d.job_id = j.id AND d.on_failure = 'cancel'
                                                     AND p.state IN ('dead', 'cancelled', 'expired'))
                             || ' it depends on did not complete'))
            WHERE j.state = 'waiting' AND j.id IN (
                SELECT d.job_id FROM conveyor_deps d JOIN conveyor_jobs p ON p.id = d.depends_on
                WHERE d.depends_on = ANY(frontier) AND d.on_failure = 'cancel' AND p.state IN ('dead', 'cancelled', 'expired'))
            RETURNING j.id)
        SELECT coalesce(array_agg(id), '{}') INTO frontier FROM cancelled;
        EXIT WHEN cardinality(frontier) = 0;
        parents := parents || frontier;
    END LOOP;
    UPDATE conveyor_jobs j SET state = CASE WHEN j.run_at > now() THEN 'scheduled' ELSE 'pending' END
    WHERE j.state = 'waiting'
      AND j.id IN (SELECT job_id FROM conveyor_deps WHERE depends_on = ANY(parents))
      AND NOT EXISTS (SELECT 1 FROM conveyor_deps d JOIN conveyor_jobs p ON p.id = d.depends_on
                      WHERE d.job_id = j.id
                        AND NOT (p.state = 'completed' OR (d.on_failure = 'continue' AND p.state IN ('dead', 'cancelled', 'expired'))));
    GET DIAGNOSTICS promoted = ROW_COUNT;
    RETURN promoted;
END
$$;
