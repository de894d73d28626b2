//! gRPC services: thin handlers that convert proto messages to domain types
//! (naming the field on failure), call the domain, and convert back.

mod admin;
mod auth;
mod convert;
mod error;
mod gate;
mod gates;
mod ingest;
mod paging;
mod query;
mod schedules;
mod silences;
mod subscriptions;
mod watch;

pub use admin::AdminApi;
pub use auth::{bearer_token, find_token, Auth, Caller, ReaderMethods, Service};
pub use error::ApiError;
pub use gate::DocumentGate;
pub use ingest::IngestApi;
pub use query::QueryApi;
pub use subscriptions::{SubscriptionApi, SubscriptionParts};

/// Types generated from `proto/herald/v1`.
pub mod pb {
    tonic::include_proto!("herald.v1");

    /// The encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/herald_descriptor.bin"));
}

/// Server reflection over Herald's and the health service's descriptors.
/// Built twice by the caller: as v1, and as v1alpha for the tools that
/// speak only that (grpcurl before 1.9, Postman, Python's grpcio-reflection).
pub fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

pub use convert::{batch_state_from_proto, batch_to_proto, timestamp_to_proto};
