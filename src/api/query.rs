//! `herald.v1.QueryService`: read batch state, watch its changes, await a
//! refresh. Watch and await calls each hold one of the caller's stream
//! slots while they last (`server.max_watch_streams`, in total and per
//! token); beyond that they are refused with `RESOURCE_EXHAUSTED`.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::convert::{batch_state_from_proto, batch_to_proto, timestamp};
use super::error::ApiError;
use super::paging::{decode_token, encode_token, page_size};
use super::pb::{self, query_service_server::QueryService};
use super::watch::{self, ChangeStream, Start, WatchParts, PAGE, SNAPSHOT_LIMIT};
use crate::clock::Clock;
use crate::core::batch::{BatchRecord, BatchState};
use crate::core::schedule::Schedule;
use crate::core::validate::{parse_id, parse_optional_id, FieldError};
use crate::feed::{ChangeFeed, Interest, StreamSlot};
use crate::reload::Live;
use crate::store::{BatchFilter, Store, StoreError};

const DEFAULT_AWAIT: Duration = Duration::from_secs(3600);
const MAX_AWAIT: Duration = Duration::from_secs(24 * 3600);

pub struct QueryApi {
    store: Store,
    feed: ChangeFeed,
    clock: Arc<dyn Clock>,
    /// How long a watch may leave its buffer full before it is ended.
    send_timeout: Duration,
    /// The configured refresh schedules, for `ListSchedules` (replaced by
    /// a configuration reload).
    schedules: Live<Vec<Schedule>>,
    /// The configured dependency gates, for `GetGate` and `ListGates`.
    gates: Arc<[crate::core::gate::Gate]>,
}

impl QueryApi {
    pub fn new(
        store: Store,
        feed: ChangeFeed,
        clock: Arc<dyn Clock>,
        send_timeout: Duration,
    ) -> Self {
        Self {
            store,
            feed,
            clock,
            send_timeout,
            schedules: Live::new(Vec::new()),
            gates: Arc::from([]),
        }
    }

    /// Answers `GetGate` and `ListGates` with these gates.
    pub fn with_gates(mut self, gates: Vec<crate::core::gate::Gate>) -> Self {
        self.gates = gates.into();
        self
    }

    /// Answers `ListSchedules` with these schedules.
    pub fn with_schedules(mut self, schedules: Live<Vec<Schedule>>) -> Self {
        self.schedules = schedules;
        self
    }

    /// One of the caller's stream slots, or `RESOURCE_EXHAUSTED`.
    fn open_stream<T>(&self, request: &Request<T>) -> Result<StreamSlot, Status> {
        let caller = request
            .extensions()
            .get::<super::Caller>()
            .map(|c| c.token.as_str())
            .unwrap_or_default();
        self.feed
            .open_stream(caller)
            .map_err(|refused| Status::resource_exhausted(refused.to_string()))
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let batch_id =
            parse_id("batch_id", &request.into_inner().batch_id).map_err(ApiError::from)?;
        let record = self
            .store
            .get_batch(&batch_id)
            .await
            .map_err(ApiError::from)?;
        let record =
            record.ok_or_else(|| ApiError::NotFound(format!("batch_id: no batch `{batch_id}`")))?;
        Ok(Response::new(batch_to_proto(&record)))
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let r = request.into_inner();
        let (filter, page_size, after) = parse_list(&r).map_err(ApiError::from)?;
        let page = self
            .store
            .list_batches(&filter, page_size, after)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListBatchesResponse {
            batches: page.batches.iter().map(batch_to_proto).collect(),
            next_page_token: page
                .next
                .map(|(begun_at, batch_id)| encode_token(begun_at, &batch_id))
                .unwrap_or_default(),
        }))
    }

    async fn get_latest_batch(
        &self,
        request: Request<pb::GetLatestBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let r = request.into_inner();
        let filter = BatchFilter {
            environment_id: parse_optional_id("environment_id", &r.environment_id)
                .map_err(ApiError::from)?,
            cube_id: Some(parse_id("cube_id", &r.cube_id).map_err(ApiError::from)?),
            ..BatchFilter::default()
        };
        let page = self
            .store
            .list_batches(&filter, 1, None)
            .await
            .map_err(ApiError::from)?;
        let latest = page.batches.first().ok_or_else(|| {
            ApiError::NotFound(format!("cube_id: no batch of cube `{}`", r.cube_id))
        })?;
        Ok(Response::new(batch_to_proto(latest)))
    }

    type WatchBatchesStream = ChangeStream;

    async fn watch_batches(
        &self,
        request: Request<pb::WatchBatchesRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let (filter, cursor) = parse_watch(request.get_ref()).map_err(ApiError::from)?;
        let slot = self.open_stream(&request)?;
        let waiter = self.feed.subscribe(Interest::narrowest(
            filter.environment_id.as_deref(),
            filter.project_id.as_deref(),
            filter.cube_id.as_deref(),
            filter.batch_id.as_deref(),
        ));
        // The starting point is fixed before the call returns (and after
        // the waiter registered): a client that sees the stream open knows
        // every later change will follow.
        let start = match cursor {
            Some(cursor) => Start::After(cursor),
            None => Start::Snapshot(
                self.store
                    .first_snapshot_page(&filter, SNAPSHOT_LIMIT, PAGE)
                    .await
                    .map_err(ApiError::from)?,
            ),
        };
        let parts = WatchParts {
            store: self.store.clone(),
            filter,
            waiter,
            send_timeout: self.send_timeout,
            slot,
        };
        Ok(Response::new(watch::open(parts, start)))
    }

    async fn list_schedules(
        &self,
        _request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let schedules = super::schedules::schedule_statuses(
            &self.store,
            &self.schedules.get(),
            self.clock.now(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListSchedulesResponse { schedules }))
    }

    async fn get_gate(
        &self,
        request: Request<pb::GetGateRequest>,
    ) -> Result<Response<pb::GetGateResponse>, Status> {
        let name = parse_id("name", &request.into_inner().name).map_err(ApiError::from)?;
        let gate =
            self.gates.iter().find(|g| g.name == name).ok_or_else(|| {
                ApiError::NotFound(format!("name: no gate `{name}` is configured"))
            })?;
        let gate = super::gates::gate_statuses(&self.store, &[gate], self.clock.now())
            .await
            .map_err(ApiError::from)?
            .pop();
        Ok(Response::new(pb::GetGateResponse { gate }))
    }

    async fn list_gates(
        &self,
        _request: Request<pb::ListGatesRequest>,
    ) -> Result<Response<pb::ListGatesResponse>, Status> {
        let gates: Vec<_> = self.gates.iter().collect();
        let gates = super::gates::gate_statuses(&self.store, &gates, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListGatesResponse { gates }))
    }

    async fn await_batch(
        &self,
        request: Request<pb::AwaitBatchRequest>,
    ) -> Result<Response<pb::AwaitBatchResponse>, Status> {
        // Held until the answer: an await is as long-lived as a watch.
        let _slot = self.open_stream(&request)?;
        let (target, timeout) =
            parse_await(request.into_inner(), self.clock.now()).map_err(ApiError::from)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let (outcome, batch) = self
            .wait_for(&target, deadline)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::AwaitBatchResponse {
            outcome: outcome as i32,
            batch: batch.as_ref().map(batch_to_proto),
        }))
    }
}

/// What an await call waits for.
enum Target {
    Batch(String),
    Cube {
        environment_id: Option<String>,
        cube_id: String,
        after: chrono::DateTime<chrono::Utc>,
    },
}

impl Target {
    fn interest(&self) -> Interest {
        match self {
            Target::Batch(id) => Interest::Batch(id.clone()),
            Target::Cube { cube_id, .. } => Interest::Cube(cube_id.clone()),
        }
    }
}

impl QueryApi {
    /// Re-reads the target after every committed change until it settles
    /// or the deadline passes. Subscribing before the first read means no
    /// change can slip between a read and the wait.
    async fn wait_for(
        &self,
        target: &Target,
        deadline: tokio::time::Instant,
    ) -> Result<(pb::AwaitOutcome, Option<BatchRecord>), StoreError> {
        let changes = self.feed.subscribe(target.interest());
        loop {
            let batch = match target {
                Target::Batch(id) => self.store.get_batch(id).await?,
                Target::Cube {
                    environment_id,
                    cube_id,
                    after,
                } => {
                    self.store
                        .first_batch_after(environment_id.as_deref(), cube_id, *after)
                        .await?
                }
            };
            if let Some(outcome) = batch.as_ref().and_then(|b| settled(b.state)) {
                return Ok((outcome, batch));
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Ok((pb::AwaitOutcome::TimedOut, batch));
            }
        }
    }
}

fn settled(state: BatchState) -> Option<pb::AwaitOutcome> {
    match state {
        BatchState::Running => None,
        BatchState::Succeeded => Some(pb::AwaitOutcome::Succeeded),
        BatchState::Failed => Some(pb::AwaitOutcome::Failed),
        BatchState::Stalled => Some(pb::AwaitOutcome::Stalled),
    }
}

type ListArgs = (BatchFilter, usize, Option<(i64, String)>);

fn parse_list(r: &pb::ListBatchesRequest) -> Result<ListArgs, FieldError> {
    let filter = BatchFilter {
        environment_id: parse_optional_id("environment_id", &r.environment_id)?,
        project_id: parse_optional_id("project_id", &r.project_id)?,
        cube_id: parse_optional_id("cube_id", &r.cube_id)?,
        batch_id: None,
        state: batch_state_from_proto("state", r.state)?,
        since: r.since.map(|t| timestamp("since", t)).transpose()?,
        until: r.until.map(|t| timestamp("until", t)).transpose()?,
    };
    Ok((
        filter,
        page_size(r.page_size)?,
        decode_token(&r.page_token)?,
    ))
}

fn parse_watch(r: &pb::WatchBatchesRequest) -> Result<(BatchFilter, Option<i64>), FieldError> {
    let filter = BatchFilter {
        environment_id: parse_optional_id("environment_id", &r.environment_id)?,
        project_id: parse_optional_id("project_id", &r.project_id)?,
        cube_id: parse_optional_id("cube_id", &r.cube_id)?,
        batch_id: parse_optional_id("batch_id", &r.batch_id)?,
        ..BatchFilter::default()
    };
    let cursor = match r.cursor.as_str() {
        "" => None,
        c => Some(
            c.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| FieldError::new("cursor", "is not a cursor from a BatchChange"))?,
        ),
    };
    Ok((filter, cursor))
}

fn parse_await(
    r: pb::AwaitBatchRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Target, Duration), FieldError> {
    let target = match r.target {
        Some(pb::await_batch_request::Target::BatchId(id)) => {
            Target::Batch(parse_id("batch_id", &id)?)
        }
        Some(pb::await_batch_request::Target::Cube(c)) => Target::Cube {
            environment_id: parse_optional_id("cube.environment_id", &c.environment_id)?,
            cube_id: parse_id("cube.cube_id", &c.cube_id)?,
            after: match c.after {
                Some(t) => timestamp("cube.after", t)?,
                None => now,
            },
        },
        None => return Err(FieldError::new("target", "give batch_id or cube")),
    };
    let timeout = match r.timeout {
        None => DEFAULT_AWAIT,
        Some(d) => Duration::try_from(d)
            .ok()
            .filter(|d| *d <= MAX_AWAIT)
            .ok_or_else(|| FieldError::new("timeout", "must be between 0 and 24 hours"))?,
    };
    Ok((target, timeout))
}
