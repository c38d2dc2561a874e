-- Edges of the job graph: job_id waits for depends_on. on_failure: 'cancel' or 'continue'.
CREATE TABLE conveyor_deps (
    job_id     BIGINT NOT NULL,
    depends_on BIGINT NOT NULL,
    on_failure TEXT   NOT NULL DEFAULT 'cancel' CHECK (on_failure IN ('cancel', 'continue')),
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX conveyor_deps_parent ON conveyor_deps (depends_on);

-- Wake or cancel the dependents of jobs that just finished, in the finishing transaction.
-- Dependents are locked first (in id order), so two transactions finishing two parents of one
-- job cannot both miss the other's commit: the second waits, then sees the first.
CREATE FUNCTION conveyor_resolve(finished BIGINT[]) RETURNS INTEGER LANGUAGE plpgsql AS $$
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
                                                     AND p.state IN ('dead', 'cancelled'))
                             || ' it depends on did not complete'))
            WHERE j.state = 'waiting' AND j.id IN (
                SELECT d.job_id FROM conveyor_deps d JOIN conveyor_jobs p ON p.id = d.depends_on
                WHERE d.depends_on = ANY(frontier) AND d.on_failure = 'cancel' AND p.state IN ('dead', 'cancelled'))
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
                        AND NOT (p.state = 'completed' OR (d.on_failure = 'continue' AND p.state IN ('dead', 'cancelled'))));
    GET DIAGNOSTICS promoted = ROW_COUNT;
    RETURN promoted;
END
$$;
