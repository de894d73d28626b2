-- The Message-ID of each email group's first mail: its later mails answer
-- it (In-Reply-To, References) so mail clients show the group as a thread.
ALTER TABLE email_groups ADD COLUMN thread_id TEXT;
