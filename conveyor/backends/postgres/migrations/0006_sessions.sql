-- The dashboard's signed-in sessions: a session cookie is honoured only while its row exists, so
-- logging out ends it on the server, not just in the browser that held it.
CREATE TABLE conveyor_sessions (
    id         TEXT        PRIMARY KEY,
    actor      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX conveyor_sessions_expires ON conveyor_sessions (expires_at);
