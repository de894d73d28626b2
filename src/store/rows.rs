//! Reading domain types out of result rows, once for both backends: each
//! backend's row type exposes its columns through [`Columns`], and the
//! functions here turn them into domain types. The SQL that produced the
//! rows stays in the backend's own files; only the column names are
//! shared.

use sqlx::Row;

use super::{from_json, from_millis, StoreError};
use crate::core::batch::BatchRecord;
use crate::core::document::StoredDocument;
use crate::core::event::Scope;
use crate::core::filter::Pattern;
use crate::core::gate::GateRecord;
use crate::core::silence::{Matchers, Silence};
use crate::store::types::{
    AttemptRow, BatchChange, ClaimedDelivery, DeliveryRow, DeliveryState, ManagedSubscription,
    PendingDelivery, PriorEvent, ScheduleState,
};

/// A result row's columns by name. The schema is Herald's own, so a column
/// of the wrong type is a programming error and panics, as `Row::get` does.
pub(super) trait Columns {
    fn text(&self, column: &str) -> String;
    fn opt_text(&self, column: &str) -> Option<String>;
    fn int(&self, column: &str) -> i64;
    fn opt_int(&self, column: &str) -> Option<i64>;
    fn bytes(&self, column: &str) -> Vec<u8>;
}

macro_rules! columns_for {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> String {
                self.get(column)
            }
            fn opt_text(&self, column: &str) -> Option<String> {
                self.get(column)
            }
            fn int(&self, column: &str) -> i64 {
                self.get(column)
            }
            fn opt_int(&self, column: &str) -> Option<i64> {
                self.get(column)
            }
            fn bytes(&self, column: &str) -> Vec<u8> {
                self.get(column)
            }
        }
    };
}

columns_for!(sqlx::sqlite::SqliteRow);
columns_for!(sqlx::postgres::PgRow);

/// The ingest connection's rows (see `sqlite::direct`).
impl Columns for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> String {
        direct_get(self, column)
    }
    fn opt_text(&self, column: &str) -> Option<String> {
        direct_get(self, column)
    }
    fn int(&self, column: &str) -> i64 {
        direct_get(self, column)
    }
    fn opt_int(&self, column: &str) -> Option<i64> {
        direct_get(self, column)
    }
    fn bytes(&self, column: &str) -> Vec<u8> {
        direct_get(self, column)
    }
}

fn direct_get<T: rusqlite::types::FromSql>(row: &rusqlite::Row<'_>, column: &str) -> T {
    row.get(column)
        .unwrap_or_else(|e| panic!("column {column} of Herald's schema: {e}"))
}

/// A rate bucket, as `portable::select_bucket` reads it.
pub(super) fn bucket(r: &impl Columns) -> crate::core::subscription::Bucket {
    crate::core::subscription::Bucket {
        milli_tokens: r.int("milli_tokens"),
        refilled_at: r.int("refilled_at"),
        waiting_since: r.opt_int("waiting_since"),
        waited_ms: r.int("waited_ms"),
    }
}

fn opt_time(
    r: &impl Columns,
    column: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    r.opt_int(column).map(from_millis).transpose()
}

/// A batch from its `record` column.
pub(super) fn batch(r: &impl Columns) -> Result<BatchRecord, StoreError> {
    from_json(&r.text("record"))
}

/// `id, subscription, attempts, event_type, body`.
pub(super) fn claimed(r: &impl Columns) -> ClaimedDelivery {
    ClaimedDelivery {
        id: r.text("id"),
        subscription: r.text("subscription"),
        event_type: r.text("event_type"),
        attempts: r.int("attempts") as u32,
        body: r.bytes("body"),
    }
}

/// The columns of [`DELIVERY_COLUMNS`].
pub(super) fn delivery(r: &impl Columns) -> Result<DeliveryRow, StoreError> {
    let state = r.text("state");
    let silence_id = r.opt_text("silence_id");
    let state = match (DeliveryState::parse(&state), &silence_id) {
        (Some(DeliveryState::Delivered), Some(_)) => DeliveryState::Suppressed,
        (Some(state), _) => state,
        (None, _) => return Err(StoreError::Corrupt(format!("delivery state `{state}`"))),
    };
    Ok(DeliveryRow {
        id: r.text("id"),
        event_id: r.text("event_id"),
        event_type: r.text("event_type"),
        subscription: r.text("subscription"),
        state,
        attempts: r.int("attempts") as u32,
        next_attempt_at: from_millis(r.int("next_attempt_at"))?,
        last_status: r.opt_int("last_status").map(|c| c as u16),
        last_error: r.opt_text("last_error"),
        event_seq: r.int("event_seq"),
        created_at: from_millis(r.int("created_at"))?,
        silence_id,
    })
}

/// The condition on `deliveries d` that selects one state (no binds; the
/// same text on both backends). See [`DeliveryState::stored`].
pub(super) fn state_condition(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "d.state = 'pending'",
        DeliveryState::Delivered => "d.state = 'delivered' AND d.silence_id IS NULL",
        DeliveryState::Failed => "d.state = 'failed'",
        DeliveryState::Dead => "d.state = 'dead'",
        DeliveryState::Suppressed => "d.state = 'delivered' AND d.silence_id IS NOT NULL",
    }
}

/// A silence from the columns of [`SILENCE_COLUMNS`].
pub(super) fn silence(r: &impl Columns) -> Result<Silence, StoreError> {
    let pattern = |column: &str| r.opt_text(column).map(Pattern::new);
    Ok(Silence {
        id: r.text("id"),
        matchers: Matchers {
            environment: pattern("environment"),
            project: pattern("project"),
            cube: pattern("cube"),
            event_type: pattern("event_type"),
        },
        starts_at: from_millis(r.int("starts_at"))?,
        ends_at: from_millis(r.int("ends_at"))?,
        created_by: r.text("created_by"),
        comment: r.text("comment"),
        created_at: from_millis(r.int("created_at"))?,
    })
}

/// A silence's matchers as the columns `environment, project, cube,
/// event_type` hold them (NULL when absent).
pub(super) fn matcher_columns(m: &Matchers) -> [Option<&str>; 4] {
    [&m.environment, &m.project, &m.cube, &m.event_type].map(|p| p.as_ref().map(Pattern::as_str))
}

/// `alert_key, delivery_id, firing_since` of `email_reminders`: the alert,
/// and the delivery that reminds of it and since when it fires.
pub(super) fn reminder(
    r: &impl Columns,
) -> Result<(String, (String, chrono::DateTime<chrono::Utc>)), StoreError> {
    let since = from_millis(r.int("firing_since"))?;
    Ok((r.text("alert_key"), (r.text("delivery_id"), since)))
}

pub(super) const SILENCE_COLUMNS: &str =
    "id, environment, project, cube, event_type, starts_at, ends_at, created_by, comment, created_at";

/// What the delivery log shows of a delivery, from `deliveries d` joined
/// with `events e`; the same text on both backends.
pub(super) const DELIVERY_COLUMNS: &str =
    "d.id, d.event_seq, e.event_id, e.event_type, d.subscription, d.state, d.attempts,
     d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.silence_id";

/// The columns of [`ATTEMPT_COLUMNS`].
pub(super) fn attempt(r: &impl Columns) -> Result<AttemptRow, StoreError> {
    Ok(AttemptRow {
        attempt: r.int("attempt") as u32,
        started_at: from_millis(r.int("started_at"))?,
        duration_ms: r.int("duration_ms"),
        status_code: r.opt_int("status_code").map(|c| c as u16),
        response_excerpt: r.opt_text("response_excerpt"),
        error: r.opt_text("error"),
        verdict: r.text("verdict"),
        replica: r.opt_text("replica"),
    })
}

pub(super) const ATTEMPT_COLUMNS: &str =
    "attempt, started_at, duration_ms, status_code, response_excerpt, error, verdict, replica";

/// `id, attempts, created_at, next_attempt_at, body`.
pub(super) fn pending(r: &impl Columns) -> Result<PendingDelivery, StoreError> {
    Ok(PendingDelivery {
        id: r.text("id"),
        attempts: r.int("attempts") as u32,
        created_at: from_millis(r.int("created_at"))?,
        next_attempt_at: from_millis(r.int("next_attempt_at"))?,
        body: r.bytes("body"),
    })
}

/// `seq, fingerprint, reply, event_type` and the scope columns.
pub(super) fn prior(r: &impl Columns) -> PriorEvent {
    PriorEvent {
        seq: r.int("seq"),
        fingerprint: r.text("fingerprint"),
        event_type: r.text("event_type"),
        scope: prior_scope(r),
        reply: r.text("reply"),
    }
}

/// An event's scope from its `environment_id, project_id, cube_id,
/// batch_id` columns.
pub(super) fn prior_scope(r: &impl Columns) -> Scope {
    Scope {
        environment_id: r.opt_text("environment_id"),
        project_id: r.opt_text("project_id"),
        cube_id: r.opt_text("cube_id"),
        cube_name: None,
        batch_id: r.opt_text("batch_id"),
    }
}

/// `size, compressed`.
pub(super) fn document(r: &impl Columns) -> StoredDocument {
    StoredDocument::from_parts(r.int("size").max(0) as u64, r.bytes("compressed").into())
}

/// `name, baseline_at, overdue_since`.
/// A gate's name and record.
pub(super) fn gate(r: &impl Columns) -> Result<(String, GateRecord), StoreError> {
    Ok((r.text("name"), from_json(&r.text("record"))?))
}

pub(super) fn schedule(r: &impl Columns) -> Result<ScheduleState, StoreError> {
    Ok(ScheduleState {
        name: r.text("name"),
        baseline_at: from_millis(r.int("baseline_at"))?,
        overdue_since: opt_time(r, "overdue_since")?,
    })
}

/// `name, kind, spec, secrets`.
pub(super) fn managed(r: &impl Columns) -> Result<ManagedSubscription, StoreError> {
    Ok(ManagedSubscription {
        name: r.text("name"),
        kind: r.text("kind"),
        spec: from_json(&r.text("spec"))?,
        secrets: from_json(&r.text("secrets"))?,
    })
}

/// The reply stored with a batch event holds the batch as it stood after
/// the event.
#[derive(serde::Deserialize)]
struct StoredReply {
    batch: Option<BatchRecord>,
}

/// `seq, event_type, occurred_at, reply` of an event that changed a batch.
pub(super) fn change(r: &impl Columns) -> Result<BatchChange, StoreError> {
    let reply: StoredReply = from_json(&r.text("reply"))?;
    let seq = r.int("seq");
    Ok(BatchChange {
        seq,
        event_type: r.text("event_type"),
        occurred_at: from_millis(r.int("occurred_at"))?,
        batch: reply.batch.ok_or_else(|| {
            StoreError::Corrupt(format!("event {seq} changes a batch but has none"))
        })?,
    })
}
