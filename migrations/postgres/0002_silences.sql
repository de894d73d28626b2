-- Silences (see `herald silence`): matchers, each exact or a glob and NULL
-- when absent, and the window [starts_at, ends_at). Expiring a silence by
-- hand moves its end to that moment.
CREATE TABLE silences (
    id          TEXT    PRIMARY KEY,
    environment TEXT,
    project     TEXT,
    cube        TEXT,
    event_type  TEXT,
    starts_at   BIGINT  NOT NULL,
    ends_at     BIGINT  NOT NULL,
    created_by  TEXT    NOT NULL,
    comment     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX silences_ends ON silences (ends_at);

-- The silence that held a delivery back. A suppressed delivery is stored
-- as finished ('delivered') with this set: the delivery log shows it as
-- `suppressed` (the state column's CHECK stays as it is, so the table is
-- not rebuilt). Cleared when the delivery is attempted again.
ALTER TABLE deliveries ADD COLUMN silence_id TEXT;

-- Reminders: per email rule and firing alert, the delivery that last told
-- (or would have told) its recipients, since when the alert fires, and
-- when the monitor makes that delivery due again (NULL while it waits to
-- be mailed). The row goes when the alert resolves.
CREATE TABLE email_reminders (
    rule         TEXT    NOT NULL,
    alert_key    TEXT    NOT NULL,
    delivery_id  TEXT    NOT NULL,
    firing_since BIGINT  NOT NULL,
    remind_at    BIGINT,
    PRIMARY KEY (rule, alert_key)
);
CREATE INDEX email_reminders_due ON email_reminders (remind_at);
