-- A claim walks a subscription's pending rows in due order and skips those
-- whose lease is still held (sends in flight). With `id` and `lease_until`
-- in the index it answers from the index alone, without a table lookup
-- for every leased row it passes.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (subscription, state, next_attempt_at, id, lease_until);
