//! `herald.v1.IngestService`: what the engine calls.

use tonic::{Request, Response, Status};

use super::convert;
use super::error::ApiError;
use super::pb::{self, ingest_service_server::IngestService};
use crate::core::event::{EnvironmentChange, Event};
use crate::core::validate::FieldError;
use crate::ingest::{Ingestor, Receipt};

pub struct IngestApi {
    ingestor: Ingestor,
}

impl IngestApi {
    pub fn new(ingestor: Ingestor) -> Self {
        Self { ingestor }
    }

    /// Converts with `parse`, ingests, replies. Every RPC is this.
    async fn handle<T>(
        &self,
        request: Request<T>,
        parse: impl FnOnce(T, chrono::DateTime<chrono::Utc>) -> Result<Event, FieldError>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        let event =
            parse(request.into_inner(), self.ingestor.clock().now()).map_err(ApiError::from)?;
        let receipt = self.ingestor.ingest(event).await.map_err(ApiError::from)?;
        Ok(Response::new(reply(&receipt)))
    }
}

fn reply(r: &Receipt) -> pb::IngestReply {
    pb::IngestReply {
        new_event: r.new_event,
        sequence: r.sequence as u64,
        batch: r.batch.as_ref().map(convert::batch_to_proto),
        deliveries: r.deliveries,
    }
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn batch_started(
        &self,
        request: Request<pb::BatchStartedRequest>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        self.handle(request, convert::batch_started).await
    }

    async fn batch_succeeded(
        &self,
        request: Request<pb::BatchSucceededRequest>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        self.handle(request, convert::batch_succeeded).await
    }

    async fn batch_failed(
        &self,
        request: Request<pb::BatchFailedRequest>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        self.handle(request, convert::batch_failed).await
    }

    async fn environment_created(
        &self,
        request: Request<pb::EnvironmentRequest>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        self.handle(request, |r, now| {
            convert::environment(r, EnvironmentChange::Created, now)
        })
        .await
    }

    async fn environment_updated(
        &self,
        request: Request<pb::EnvironmentRequest>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        self.handle(request, |r, now| {
            convert::environment(r, EnvironmentChange::Updated, now)
        })
        .await
    }

    async fn environment_deleted(
        &self,
        request: Request<pb::EnvironmentDeletedRequest>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        self.handle(request, convert::environment_deleted).await
    }

    async fn schema_published(
        &self,
        request: Request<pb::SchemaRequest>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        self.handle(request, |r, now| convert::schema(r, true, now))
            .await
    }

    async fn project_event(
        &self,
        request: Request<pb::ProjectEventRequest>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        self.handle(request, convert::project_event).await
    }

    async fn schema_unpublished(
        &self,
        request: Request<pb::SchemaRequest>,
    ) -> Result<Response<pb::IngestReply>, Status> {
        self.handle(request, |r, now| convert::schema(r, false, now))
            .await
    }
}
