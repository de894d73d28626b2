-- The state column's CHECK, written as comparisons instead of an IN list.
-- SQLite evaluates an IN list of more than two constants by building a
-- temporary B-tree of the list, once per statement run: every enqueued
-- delivery and every recorded attempt paid for opening, filling and
-- closing one (about 5 % of a webhook's instructions). Comparisons cost a
-- few instructions. A CHECK can only change with the table, so it is
-- copied once, here, rowids and all.
--
-- `attempts` references this table. The rows are set aside, the table
-- dropped (its attempts' references then count as deferred violations)
-- and made again, and putting the rows back settles every one of them
-- before the commit checks. `defer_foreign_keys` ends with the migration's
-- transaction. The rows wait in the database file, not in a TEMP table:
-- temporary tables are kept in memory here, and thirty days of deliveries
-- may not fit.
PRAGMA defer_foreign_keys = ON;
CREATE TABLE deliveries_copy AS SELECT rowid AS row_id, * FROM deliveries;
DROP TABLE deliveries;
CREATE TABLE deliveries (
    id              TEXT    PRIMARY KEY,
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    subscription    TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state = 'pending' OR state = 'delivered'
                                            OR state = 'failed' OR state = 'dead'),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    -- The silence that held the delivery back (see 0005).
    silence_id      TEXT,
    UNIQUE (event_seq, subscription)
);
INSERT INTO deliveries (rowid, id, event_seq, subscription, state, attempts, next_attempt_at,
                        lease_owner, lease_until, created_at, finished_at, last_status,
                        last_error, silence_id)
    SELECT row_id, id, event_seq, subscription, state, attempts, next_attempt_at,
           lease_owner, lease_until, created_at, finished_at, last_status,
           last_error, silence_id
    FROM deliveries_copy;
DROP TABLE deliveries_copy;
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE state <> 'pending';
CREATE INDEX deliveries_head ON deliveries (subscription, event_seq) WHERE state = 'pending';
CREATE INDEX deliveries_due ON deliveries (subscription, next_attempt_at, id, lease_until)
    WHERE state = 'pending';
