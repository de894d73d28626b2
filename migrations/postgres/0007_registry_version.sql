-- The version of the managed subscriptions: bumped in the transaction of
-- every change to them. An ingest transaction that reads a version newer
-- than the one its replica's registry was built from rebuilds the registry
-- first, so an event ingested on any replica after a subscription change
-- returned sees that change, whether or not its notification has arrived.
CREATE TABLE registry_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT  NOT NULL
);
INSERT INTO registry_version (id, version) VALUES (1, 0);
