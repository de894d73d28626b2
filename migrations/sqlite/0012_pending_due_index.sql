-- The claim index holds pending rows only, as PostgreSQL's always has.
-- Every query that reads it asks for `state = 'pending'`. A finished
-- delivery then leaves the index when its attempt is recorded, instead of
-- moving to another entry that no claim reads. The index stays as small as
-- the outbox, not as large as the history.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (subscription, next_attempt_at, id, lease_until)
    WHERE state = 'pending';
