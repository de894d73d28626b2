-- A scratch table for readiness probes: a row is written and deleted in one
-- transaction to see whether the store takes writes again.
CREATE TABLE write_probe (filler BLOB NOT NULL);
