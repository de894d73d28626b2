-- A cube's latest outcome is read from two partial indexes, of its
-- successes (batches_succeeded, 0008) and of its failures (batches_failed,
-- here), instead of batches_cube over every batch. Every batch written
-- changed a leaf of batches_cube, so with many cubes each group commit
-- wrote one more page per cube it touched; failures are few, and so are
-- the writes to batches_failed.
CREATE INDEX batches_failed ON batches (environment_id, cube_id, finished_at) WHERE state = 'FAILED';
DROP INDEX batches_cube;
