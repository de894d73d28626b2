-- An ordered lane (`ordering = "subscription" | "cube" | "batch"`) claims a
-- pending delivery only when no earlier pending one of its subscription
-- (and cube, or batch) waits. Without an index on (subscription,
-- event_seq) that check walked every pending row of the subscription for
-- each candidate, so a lane with a backlog slowed with the square of it.
-- PostgreSQL has had the same index since its first migration.
CREATE INDEX deliveries_head ON deliveries (subscription, event_seq) WHERE state = 'pending';
