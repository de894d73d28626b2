-- Herald's initial schema. Times are unix milliseconds (UTC).

-- Every accepted event, once. `event_id` is the caller's idempotency key;
-- `reply` is the first answer, returned again to a repeat.
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL UNIQUE,
    event_type     TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    occurred_at    INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    environment_id TEXT,
    project_id     TEXT,
    cube_id        TEXT,
    batch_id       TEXT,
    -- SHA-256 of the event's content: the same event_id with other content
    -- is refused rather than silently answered.
    fingerprint    TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    -- The CloudEvents envelope every delivery of this event sends.
    body           BLOB    NOT NULL,
    reply          TEXT    NOT NULL,
    -- 1 when the event moved its batch to a new state: what watchers see.
    changes_batch  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_batch ON events (batch_id);
CREATE INDEX events_batch_changes ON events (changes_batch, seq);

CREATE TABLE batches (
    batch_id       TEXT    PRIMARY KEY,
    environment_id TEXT    NOT NULL,
    project_id     TEXT,
    cube_id        TEXT    NOT NULL,
    cube_name      TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    -- When the batch began as far as Herald knows: its start, or its
    -- completion when the start was never seen. "Newest" orders by this.
    begun_at       INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    -- The whole batch record as JSON; the columns above are for queries.
    record         TEXT    NOT NULL
);
CREATE INDEX batches_cube ON batches (environment_id, cube_id, finished_at);
CREATE INDEX batches_cube_begun ON batches (cube_id, begun_at);
CREATE INDEX batches_recent ON batches (begun_at, batch_id);
CREATE INDEX batches_running ON batches (state, started_at);

-- The environment registry: latest known state of each environment.
CREATE TABLE environments (
    environment_id TEXT    PRIMARY KEY,
    name           TEXT,
    attributes     TEXT    NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0,
    updated_at     INTEGER NOT NULL
);

-- The schema publish log: every publish and unpublish, in order.
CREATE TABLE schema_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq      INTEGER NOT NULL REFERENCES events (seq),
    environment_id TEXT    NOT NULL,
    project_id     TEXT,
    published      INTEGER NOT NULL,
    catalogs       TEXT    NOT NULL,
    cubes          TEXT    NOT NULL,
    version        TEXT,
    occurred_at    INTEGER NOT NULL
);

-- Runtime state of subscriptions declared elsewhere (the config file).
CREATE TABLE subscriptions (
    name            TEXT PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    disabled_at     INTEGER,
    disabled_reason TEXT
);

-- The outbox: one row per (event, subscription), written in the event's
-- transaction. `id` is the stable webhook-id.
CREATE TABLE deliveries (
    id              TEXT    PRIMARY KEY,
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    subscription    TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    UNIQUE (event_seq, subscription)
);
CREATE INDEX deliveries_due ON deliveries (subscription, state, next_attempt_at);

-- Every attempt of every delivery.
CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      TEXT    NOT NULL REFERENCES deliveries (id),
    attempt          INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    status_code      INTEGER,
    response_excerpt TEXT,
    error            TEXT,
    verdict          TEXT    NOT NULL
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt);

-- Refresh schedules declared in the configuration: when tracking began
-- and, while a refresh is overdue, since when.
CREATE TABLE schedules (
    name           TEXT    PRIMARY KEY,
    environment_id TEXT    NOT NULL,
    cube_id        TEXT    NOT NULL,
    baseline_at    INTEGER NOT NULL,
    overdue_since  INTEGER
);

-- Email alerting state per rule: when each group was last mailed, and
-- what recipients were last told about each alert.
CREATE TABLE email_groups (
    rule         TEXT    NOT NULL,
    group_key    TEXT    NOT NULL,
    last_sent_at INTEGER NOT NULL,
    PRIMARY KEY (rule, group_key)
);

CREATE TABLE email_alerts (
    rule             TEXT    NOT NULL,
    alert_key        TEXT    NOT NULL,
    firing           INTEGER NOT NULL,
    last_notified_at INTEGER NOT NULL,
    PRIMARY KEY (rule, alert_key)
);

-- Subscriptions created over the admin API. `spec` holds the keys of the
-- matching configuration entry (JSON, without secrets); `secrets` the
-- signing secrets, current first, then rotated-out ones with their expiry.
CREATE TABLE managed_subscriptions (
    name       TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    spec       TEXT    NOT NULL,
    secrets    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Project documents (the design tool's XML), stored once per event,
-- deflate-compressed.
CREATE TABLE documents (
    event_id   TEXT    PRIMARY KEY,
    size       INTEGER NOT NULL,
    compressed BLOB    NOT NULL
);
