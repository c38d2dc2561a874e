-- Edges of the job graph: job_id waits for depends_on. on_failure: 'cancel' or 'continue'.
CREATE TABLE conveyor_deps (
    job_id     BIGINT NOT NULL,
    depends_on BIGINT NOT NULL,
    on_failure TEXT   NOT NULL DEFAULT 'cancel' CHECK (on_failure IN ('cancel', 'continue')),
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX conveyor_deps_parent ON conveyor_deps (depends_on);
