-- Console sign-in sessions. Only the SHA-256 digest of a session's token
-- is kept (a copy of the database signs nobody in); the token it signed in
-- with is named, so its role is read from the configuration on each request.
CREATE TABLE console_sessions (
    digest     TEXT    PRIMARY KEY,
    token_name TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
