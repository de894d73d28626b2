-- The Message-ID of each email group's first mail: its later mails answer
-- it (In-Reply-To, References) so mail clients show the group as a thread.
ALTER TABLE email_groups ADD COLUMN thread_id TEXT;

-- Each cube's latest success for /metrics (herald_cube_seconds_since_last_success),
-- read from the index alone.
CREATE INDEX batches_succeeded ON batches (environment_id, cube_id, finished_at) WHERE state = 'SUCCEEDED';
