-- A job's meta: small key/value context carried from its enqueue to its runs (trace context,
-- request ids), written by middleware, never validated as payload. NULL when nobody set any.
ALTER TABLE conveyor_jobs ADD COLUMN meta TEXT;
