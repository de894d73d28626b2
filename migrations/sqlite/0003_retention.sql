-- Indexes for pruning (see `[retention]`): finished deliveries by when they
-- finished, events by when they arrived, batches by when they last changed,
-- and the schema log by event, which keeps its events.
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE state <> 'pending';
CREATE INDEX events_received ON events (received_at);
CREATE INDEX batches_updated ON batches (updated_at);
CREATE INDEX schema_log_event ON schema_log (event_seq);
