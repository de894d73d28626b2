-- Dependency gates (`[[gates]]`): each gate's state as a JSON record
-- (core::gate::GateRecord), written by the ingest transaction that applies
-- a required cube's outcome and by the monitor's deadline checks.
CREATE TABLE gates (
    name       TEXT    PRIMARY KEY,
    record     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
