-- Console sessions: a person signed in to /console/ with a dispatch-api token holds a random
-- cookie; only its sha256 is stored, so a database dump signs nobody in. Rows live here, not
-- in a replica's memory, so every replica serves a session and sign-out really ends it.

CREATE TABLE console_sessions (
    cookie_sha256  bytea PRIMARY KEY,
    principal_id   text NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    -- The token every form of this session carries (CSRF); not secret from its own pages.
    csrf_token     text NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);

CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
