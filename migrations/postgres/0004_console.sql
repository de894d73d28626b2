-- Console sign-in sessions, shared by every replica. Only the SHA-256
-- digest of a session's token is kept; the token it signed in with is
-- named, so its role is read from the configuration on each request.
CREATE TABLE console_sessions (
    digest     TEXT    PRIMARY KEY,
    token_name TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
