//! Queries whose text reads the same on both backends — batch filters,
//! pages of batches and a watch's snapshot — built once over either
//! database's `QueryBuilder`, and their rows read once through
//! [`Columns`]. Each backend runs them on its own connections; SQL that
//! differs between the two stays in the backend's own files.

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::rows::{self, Columns};
use super::types::{BatchFilter, BatchKey, BatchPage, Claim, ScrapeGauges, SnapshotRest};
use super::StoreError;
use crate::core::batch::BatchRecord;
use crate::core::subscription::{Bucket, DeliveryOrder, Taken};

/// `AND {table}.{column} = ?` for each column the filter names.
pub(super) fn push_filter<'a, DB>(
    query: &mut QueryBuilder<'a, DB>,
    filter: &BatchFilter,
    table: &str,
) where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    let columns = [
        ("environment_id", &filter.environment_id),
        ("project_id", &filter.project_id),
        ("cube_id", &filter.cube_id),
        ("batch_id", &filter.batch_id),
    ];
    for (column, value) in columns {
        if let Some(value) = value {
            query
                .push(format!(" AND {table}.{column} = "))
                .push_bind(value.clone());
        }
    }
}

/// `AND e.event_type IN (…)` when a delivery filter names event types
/// (`e` being the events table joined to the deliveries); an empty list
/// matches no row.
pub(super) fn push_event_types<'a, DB>(query: &mut QueryBuilder<'a, DB>, types: Option<&[String]>)
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    let Some(types) = types else { return };
    if types.is_empty() {
        query.push(" AND 1 = 0");
        return;
    }
    query.push(" AND e.event_type IN (");
    let mut list = query.separated(", ");
    for t in types {
        list.push_bind(t.clone());
    }
    list.push_unseparated(")");
}

/// Batches matching `filter`, newest first, after `after`: one row more
/// than a page, to tell whether another follows (see [`batch_page`]).
pub(super) fn list_batches<'a, DB>(
    filter: &BatchFilter,
    page_size: usize,
    after: Option<BatchKey>,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    <DB as Database>::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("SELECT record, begun_at, batch_id FROM batches WHERE 1 = 1");
    push_filter(&mut query, filter, "batches");
    if let Some(state) = filter.state {
        query.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(since) = filter.since {
        query
            .push(" AND begun_at >= ")
            .push_bind(super::to_millis(since));
    }
    if let Some(until) = filter.until {
        query
            .push(" AND begun_at < ")
            .push_bind(super::to_millis(until));
    }
    if let Some((begun_at, batch_id)) = after {
        query
            .push(" AND (begun_at, batch_id) < (")
            .push_bind(begun_at)
            .push(", ")
            .push_bind(batch_id)
            .push(")");
    }
    query
        .push(" ORDER BY begun_at DESC, batch_id DESC LIMIT ")
        .push_bind(page_size as i64 + 1);
    query
}

/// The page [`list_batches`] read.
pub(super) fn batch_page(
    found: &[impl Columns],
    page_size: usize,
) -> Result<BatchPage, StoreError> {
    let more = found.len() > page_size;
    let found = &found[..found.len().min(page_size)];
    let next = found.last().filter(|_| more).map(key);
    let batches = found.iter().map(rows::batch).collect::<Result<_, _>>()?;
    Ok(BatchPage { batches, next })
}

/// The key of the `offset`-th newest batch matching `filter`.
pub(super) fn key_at<'a, DB>(filter: &BatchFilter, offset: usize) -> QueryBuilder<'a, DB>
where
    DB: Database,
    <DB as Database>::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("SELECT begun_at, batch_id FROM batches WHERE 1 = 1");
    push_filter(&mut query, filter, "batches");
    query
        .push(" ORDER BY begun_at DESC, batch_id DESC LIMIT 1 OFFSET ")
        .push_bind(offset as i64);
    query
}

/// A batch's place in "newest" order, from `begun_at, batch_id`.
pub(super) fn key(r: &impl Columns) -> BatchKey {
    (r.int("begun_at"), r.text("batch_id"))
}

/// Up to `page` batches matching `filter` from `from` (the oldest when
/// `None`) to `last`, oldest first, and one more to tell whether the
/// snapshot goes on (see [`snapshot_page`]).
pub(super) fn snapshot_rows<'a, DB>(
    filter: &BatchFilter,
    from: Option<BatchKey>,
    inclusive: bool,
    last: &BatchKey,
    page: usize,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    <DB as Database>::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("SELECT record, begun_at, batch_id FROM batches WHERE 1 = 1");
    push_filter(&mut query, filter, "batches");
    if let Some((begun_at, batch_id)) = from {
        query
            .push(if inclusive {
                " AND (begun_at, batch_id) >= ("
            } else {
                " AND (begun_at, batch_id) > ("
            })
            .push_bind(begun_at)
            .push(", ")
            .push_bind(batch_id)
            .push(")");
    }
    query
        .push(" AND (begun_at, batch_id) <= (")
        .push_bind(last.0)
        .push(", ")
        .push_bind(last.1.clone())
        .push(") ORDER BY begun_at, batch_id LIMIT ")
        .push_bind(page as i64 + 1);
    query
}

/// The batches [`snapshot_rows`] read, and what remains after them.
pub(super) fn snapshot_page(
    found: &[impl Columns],
    page: usize,
    last: BatchKey,
) -> Result<(Vec<BatchRecord>, Option<SnapshotRest>), StoreError> {
    let more = found.len() > page;
    let found = &found[..found.len().min(page)];
    let rest = found.last().filter(|_| more).map(|r| SnapshotRest {
        after: key(r),
        last,
    });
    let batches = found.iter().map(rows::batch).collect::<Result<_, _>>()?;
    Ok((batches, rest))
}

/// The batches whose durations teach the monitor a cube's usual run: its
/// successes whose start Herald saw. Naming the state lets either store
/// read its partial index of successes (`batches_succeeded`).
pub(super) const TIMED_SUCCESS: &str =
    "state = 'SUCCEEDED' AND started_at IS NOT NULL AND finished_at >= started_at";

/// What `/metrics` reads at scrape time: pending deliveries by subscription
/// (over the delivery index), batches running and stalled (over
/// `batches_running`), each cube's latest success (over the partial index
/// `batches_succeeded`). Run each and give the rows to [`scrape_gauges`].
pub(super) const SCRAPE_STATEMENTS: [&str; 3] = [
    "SELECT subscription, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries
     WHERE state = 'pending' GROUP BY subscription ORDER BY subscription",
    "SELECT state, COUNT(*) AS n FROM batches WHERE state IN ('RUNNING', 'STALLED') GROUP BY state",
    "SELECT environment_id, cube_id, MAX(finished_at) AS at FROM batches
     WHERE state = 'SUCCEEDED' AND finished_at IS NOT NULL
     GROUP BY environment_id, cube_id ORDER BY environment_id, cube_id",
];

/// The gauges from the rows of the [`SCRAPE_STATEMENTS`], in their order.
pub(super) fn scrape_gauges<R: Columns>(
    [backlog, states, last_success]: [Vec<R>; 3],
) -> Result<ScrapeGauges, StoreError> {
    let count = |state: &str| {
        states
            .iter()
            .find(|r| r.text("state") == state)
            .map_or(0, |r| r.int("n"))
    };
    Ok(ScrapeGauges {
        backlog: backlog
            .iter()
            .map(|r| {
                Ok((
                    r.text("subscription"),
                    r.int("n"),
                    super::from_millis(r.int("oldest"))?,
                ))
            })
            .collect::<Result<_, StoreError>>()?,
        running_batches: count("RUNNING"),
        stalled_batches: count("STALLED"),
        last_success: last_success
            .iter()
            .map(|r| {
                let at = super::from_millis(r.int("at"))?;
                Ok((r.text("environment_id"), r.text("cube_id"), at))
            })
            .collect::<Result<_, StoreError>>()?,
    })
}

/// The Message-ID of an email group's first mail (one row, maybe NULL).
pub(super) fn email_group_thread<'a, DB>(rule: &str, group: &str) -> QueryBuilder<'a, DB>
where
    DB: Database,
    <DB as Database>::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("SELECT thread_id FROM email_groups WHERE rule = ");
    query
        .push_bind(rule.to_owned())
        .push(" AND group_key = ")
        .push_bind(group.to_owned());
    query
}

/// Makes `message_id` an email group's first mail, unless it has one.
pub(super) fn start_email_thread<'a, DB>(
    rule: &str,
    group: &str,
    message_id: &str,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    <DB as Database>::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("UPDATE email_groups SET thread_id = ");
    query
        .push_bind(message_id.to_owned())
        .push(" WHERE rule = ")
        .push_bind(rule.to_owned())
        .push(" AND group_key = ")
        .push_bind(group.to_owned())
        .push(" AND thread_id IS NULL");
    query
}

/// The SQL that keeps an ordered lane in order, over `deliveries d`: a
/// join (the event's scope, for lanes per cube or batch) and a condition
/// that holds back a delivery while an earlier one of its lane is still
/// pending — in flight, waiting for a retry, or not yet tried. A finished
/// one (delivered, failed, dead) releases the next. Empty for unordered
/// subscriptions, whose claims stay as they are.
pub(super) fn ordered_lane(order: DeliveryOrder) -> (&'static str, &'static str) {
    const JOIN: &str = " JOIN events e ON e.seq = d.event_seq";
    match order {
        DeliveryOrder::None => ("", ""),
        DeliveryOrder::Subscription => (
            "",
            " AND NOT EXISTS (SELECT 1 FROM deliveries p
                WHERE p.subscription = d.subscription AND p.state = 'pending'
                  AND p.event_seq < d.event_seq)",
        ),
        DeliveryOrder::Cube => (
            JOIN,
            " AND NOT EXISTS (SELECT 1 FROM deliveries p JOIN events pe ON pe.seq = p.event_seq
                WHERE p.subscription = d.subscription AND p.state = 'pending'
                  AND p.event_seq < d.event_seq
                  AND pe.environment_id = e.environment_id AND pe.cube_id = e.cube_id)",
        ),
        DeliveryOrder::Batch => (
            JOIN,
            " AND NOT EXISTS (SELECT 1 FROM deliveries p JOIN events pe ON pe.seq = p.event_seq
                WHERE p.subscription = d.subscription AND p.state = 'pending'
                  AND p.event_seq < d.event_seq AND pe.batch_id = e.batch_id)",
        ),
    }
}

/// The rate bucket of one subscription (see [`rows::bucket`]).
pub(super) fn select_bucket<'a, DB>(subscription: &str) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(
        "SELECT milli_tokens, refilled_at, waiting_since, waited_ms FROM rate_buckets
         WHERE subscription = ",
    );
    query.push_bind(subscription.to_owned());
    query
}

/// Stores a subscription's rate bucket as a claim left it.
pub(super) fn upsert_bucket<'a, DB>(subscription: &str, bucket: &Bucket) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    Option<i64>: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(
        "INSERT INTO rate_buckets (subscription, milli_tokens, refilled_at, waiting_since, waited_ms) ",
    );
    query.push_values([bucket], |mut row, b| {
        row.push_bind(subscription.to_owned())
            .push_bind(b.milli_tokens)
            .push_bind(b.refilled_at)
            .push_bind(b.waiting_since)
            .push_bind(b.waited_ms);
    });
    query.push(
        " ON CONFLICT (subscription) DO UPDATE SET milli_tokens = excluded.milli_tokens,
            refilled_at = excluded.refilled_at, waiting_since = excluded.waiting_since,
            waited_ms = excluded.waited_ms",
    );
    query
}

/// Closes a rate-limited claim that leased `leased` of the tokens taken:
/// the bucket to store, and the claim's answer (its deliveries left for
/// the caller to fill in). `due_left`: due work remained unclaimed (the
/// caller need only look when [`Taken::ran_short`]).
pub(super) fn close_claim(
    taken: Taken,
    leased: usize,
    due_left: bool,
    now_ms: i64,
) -> Result<(Bucket, Claim), StoreError> {
    let throttled = due_left && taken.ran_short(leased);
    let mut bucket = taken.bucket;
    let waited = bucket.settle(taken.granted - leased, throttled, now_ms);
    let throttled_until = match throttled {
        true => taken.next_token_at.map(super::from_millis).transpose()?,
        false => None,
    };
    let claim = Claim {
        deliveries: Vec::new(),
        throttled_until,
        waited: std::time::Duration::from_millis(waited.max(0) as u64),
    };
    Ok((bucket, claim))
}
