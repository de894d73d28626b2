-- A token bucket per rate-limited subscription (`rate_limit`): tokens in
-- thousandths as of `refilled_at`, spent by the claim transaction that
-- leases deliveries. `waiting_since` is set while due work waits for a
-- token; `waited_ms` sums the waits that ended (shown by `subs get`).
CREATE TABLE rate_buckets (
    subscription  TEXT    PRIMARY KEY,
    milli_tokens  BIGINT  NOT NULL,
    refilled_at   BIGINT  NOT NULL,
    waiting_since BIGINT,
    waited_ms     BIGINT  NOT NULL DEFAULT 0
);
