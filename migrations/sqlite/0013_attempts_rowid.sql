-- Attempt ids without AUTOINCREMENT. AUTOINCREMENT made every recorded
-- attempt also update `sqlite_sequence`: one more B-tree write per webhook.
-- Without it a new id is one more than the largest in the table. An id can
-- then come back only after the newest attempts were pruned, and ids only
-- order the attempts of one delivery, which are never pruned apart.
-- The table is copied once, here.
CREATE TABLE attempts_new (
    id               INTEGER PRIMARY KEY,
    delivery_id      TEXT    NOT NULL REFERENCES deliveries (id),
    attempt          INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    status_code      INTEGER,
    response_excerpt TEXT,
    error            TEXT,
    verdict          TEXT    NOT NULL,
    replica          TEXT
);
INSERT INTO attempts_new (id, delivery_id, attempt, started_at, duration_ms, status_code,
                          response_excerpt, error, verdict, replica)
    SELECT id, delivery_id, attempt, started_at, duration_ms, status_code,
           response_excerpt, error, verdict, replica
    FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt);
DELETE FROM sqlite_sequence WHERE name = 'attempts';
