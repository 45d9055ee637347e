-- Sign-ins of the dashboard and the stock desk. The cookie carries a random secret and this
-- table only its hash, so any replica can check a session and signing out ends it everywhere.
-- The session acts with its token: revoking the token ends its sessions too.
CREATE TABLE web_sessions (
    secret_hash BLOB PRIMARY KEY,
    token_id    TEXT NOT NULL REFERENCES tokens(id),
    csrf        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
