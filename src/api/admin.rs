//! `herald.v1.AdminService`: the delivery log, redelivery, replay, bulk
//! retry of dead deliveries, and silences.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::Caller;
use super::convert::{timestamp, timestamp_to_proto};
use super::error::ApiError;
use super::paging::{decode_token, encode_token, page_size};
use super::pb::{self, admin_service_server::AdminService};
use super::silences::{parse_create, silence_to_proto};
use crate::clock::Clock;
use crate::core::cloudevent::scope_of;
use crate::core::event::EventType;
use crate::core::filter::event_types_matching;
use crate::core::subscription::Subscription;
use crate::core::validate::{parse_id, parse_optional_id, FieldError};
use crate::deliver::Wakeups;
use crate::store::{DeliveryFilter, DeliveryRow, DeliveryState, Store};

pub struct AdminApi {
    store: Store,
    registry: crate::registry::Registry,
    wakeups: Wakeups,
    clock: Arc<dyn Clock>,
}

impl AdminApi {
    pub fn new(
        store: Store,
        registry: crate::registry::Registry,
        wakeups: Wakeups,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            registry,
            wakeups,
            clock,
        }
    }

    fn subscription(&self, field: &str, name: &str) -> Result<Subscription, ApiError> {
        let name = parse_id(field, name)?;
        self.registry
            .current()
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("{field}: no subscription `{name}`")))
    }

    async fn delivery(&self, id: &str) -> Result<DeliveryRow, ApiError> {
        let id = parse_id("delivery_id", id)?;
        self.store
            .get_delivery(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("delivery_id: no delivery `{id}`")))
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let (filter, page_size) = parse_list(request.into_inner()).map_err(ApiError::from)?;
        let mut rows = self
            .store
            .list_deliveries(&filter)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last()
                .map(|r| encode_token(r.event_seq, &r.subscription))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows.iter().map(delivery_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::DeliveryDetail>, Status> {
        let row = self.delivery(&request.into_inner().delivery_id).await?;
        let attempts = self
            .store
            .list_attempts(&row.id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::DeliveryDetail {
            delivery: Some(delivery_to_proto(&row)),
            attempts: attempts
                .iter()
                .map(|a| pb::Attempt {
                    attempt: a.attempt,
                    started_at: Some(timestamp_to_proto(a.started_at)),
                    duration_ms: a.duration_ms.max(0) as u64,
                    status_code: a.status_code.map(u32::from).unwrap_or_default(),
                    response_excerpt: a.response_excerpt.clone().unwrap_or_default(),
                    error: a.error.clone().unwrap_or_default(),
                    verdict: a.verdict.clone(),
                    replica: a.replica.clone().unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn redeliver(
        &self,
        request: Request<pb::RedeliverRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let row = self.delivery(&request.into_inner().delivery_id).await?;
        self.store
            .make_due(std::slice::from_ref(&row.id), self.clock.now())
            .await
            .map_err(ApiError::from)?;
        self.wakeups.wake(&row.subscription);
        let row = self.delivery(&row.id).await?;
        Ok(Response::new(delivery_to_proto(&row)))
    }

    async fn replay(
        &self,
        request: Request<pb::ReplayRequest>,
    ) -> Result<Response<pb::ReplayResponse>, Status> {
        let r = request.into_inner();
        let sub = self.subscription("subscription", &r.subscription)?;
        let since = r
            .since
            .map(|t| timestamp("since", t))
            .transpose()
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::from(FieldError::new("since", "is required")))?;
        let until = match r.until {
            Some(t) => timestamp("until", t).map_err(ApiError::from)?,
            None => self.clock.now(),
        };
        let events = self
            .store
            .events_received(since, until)
            .await
            .map_err(ApiError::from)?;
        let wanted: Vec<i64> = events
            .iter()
            .filter(|(_, envelope)| {
                let event_type = envelope["type"].as_str().and_then(EventType::parse);
                event_type.is_some_and(|t| sub.wants(t, &scope_of(envelope)))
            })
            .map(|(seq, _)| *seq)
            .collect();
        let enqueued = self
            .store
            .replay(&sub.name, &wanted, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        self.wakeups.wake(&sub.name);
        Ok(Response::new(pb::ReplayResponse {
            enqueued: enqueued as u32,
        }))
    }

    async fn retry_dead(
        &self,
        request: Request<pb::RetryDeadRequest>,
    ) -> Result<Response<pb::RetryDeadResponse>, Status> {
        let r = request.into_inner();
        let only = match r.subscription.as_str() {
            "" => None,
            name => Some(self.subscription("subscription", name)?.name.clone()),
        };
        let ids = self
            .store
            .dead_deliveries(only.as_deref())
            .await
            .map_err(ApiError::from)?;
        let retried = self
            .store
            .make_due(&ids, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        for sub in self.registry.current().iter() {
            self.wakeups.wake(&sub.name);
        }
        Ok(Response::new(pb::RetryDeadResponse {
            retried: retried as u32,
        }))
    }

    async fn create_silence(
        &self,
        request: Request<pb::CreateSilenceRequest>,
    ) -> Result<Response<pb::CreateSilenceResponse>, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .map(|c| c.token.clone());
        let now = self.clock.now();
        let silence =
            parse_create(request.into_inner(), now, caller.as_deref()).map_err(ApiError::from)?;
        self.store
            .create_silence(&silence)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(silence = %silence.id, by = %silence.created_by, until = %silence.ends_at, "silence created");
        Ok(Response::new(pb::CreateSilenceResponse {
            silence: Some(silence_to_proto(&silence, now)),
        }))
    }

    async fn list_silences(
        &self,
        request: Request<pb::ListSilencesRequest>,
    ) -> Result<Response<pb::ListSilencesResponse>, Status> {
        let now = self.clock.now();
        let silences = self
            .store
            .list_silences(request.into_inner().include_expired, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListSilencesResponse {
            silences: silences.iter().map(|s| silence_to_proto(s, now)).collect(),
        }))
    }

    async fn expire_silence(
        &self,
        request: Request<pb::ExpireSilenceRequest>,
    ) -> Result<Response<pb::ExpireSilenceResponse>, Status> {
        let id =
            parse_id("silence_id", &request.into_inner().silence_id).map_err(ApiError::from)?;
        let now = self.clock.now();
        let silence = self
            .store
            .expire_silence(&id, now)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("silence_id: no silence `{id}`")))?;
        // Deliveries held back wait for nothing; those mailed again after
        // the silence (reminders, new events) go out as usual.
        tracing::info!(silence = %id, "silence expired");
        Ok(Response::new(pb::ExpireSilenceResponse {
            silence: Some(silence_to_proto(&silence, now)),
        }))
    }
}

fn parse_list(r: pb::ListDeliveriesRequest) -> Result<(DeliveryFilter, usize), FieldError> {
    let page_size = page_size(r.page_size)?;
    let state = match pb::DeliveryState::try_from(r.state) {
        Ok(pb::DeliveryState::Unspecified) => None,
        Ok(pb::DeliveryState::Pending) => Some(DeliveryState::Pending),
        Ok(pb::DeliveryState::Delivered) => Some(DeliveryState::Delivered),
        Ok(pb::DeliveryState::Failed) => Some(DeliveryState::Failed),
        Ok(pb::DeliveryState::Dead) => Some(DeliveryState::Dead),
        Ok(pb::DeliveryState::Suppressed) => Some(DeliveryState::Suppressed),
        Err(_) => {
            return Err(FieldError::new(
                "state",
                format!("unknown value {}", r.state),
            ))
        }
    };
    let before = decode_token(&r.page_token)?;
    let filter = DeliveryFilter {
        subscription: parse_optional_id("subscription", &r.subscription)?,
        event_id: parse_optional_id("event_id", &r.event_id)?,
        state,
        event_types: event_types_matching(&r.event_type)
            .map_err(|e| FieldError::new("event_type", e))?,
        since: r.since.map(|t| timestamp("since", t)).transpose()?,
        until: r.until.map(|t| timestamp("until", t)).transpose()?,
        newest_first: true,
        before,
        // One more than a page says whether another page follows.
        limit: Some(page_size + 1),
    };
    Ok((filter, page_size))
}

fn delivery_to_proto(r: &DeliveryRow) -> pb::Delivery {
    pb::Delivery {
        delivery_id: r.id.clone(),
        subscription: r.subscription.clone(),
        event_id: r.event_id.clone(),
        event_type: r.event_type.clone(),
        state: match r.state {
            DeliveryState::Pending => pb::DeliveryState::Pending,
            DeliveryState::Delivered => pb::DeliveryState::Delivered,
            DeliveryState::Failed => pb::DeliveryState::Failed,
            DeliveryState::Dead => pb::DeliveryState::Dead,
            DeliveryState::Suppressed => pb::DeliveryState::Suppressed,
        } as i32,
        attempts: r.attempts,
        next_attempt_at: Some(timestamp_to_proto(r.next_attempt_at)),
        last_status: r.last_status.map(u32::from).unwrap_or_default(),
        last_error: r.last_error.clone().unwrap_or_default(),
        created_at: Some(timestamp_to_proto(r.created_at)),
        silence_id: r.silence_id.clone().unwrap_or_default(),
    }
}
