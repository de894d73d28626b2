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

/// The gRPC connections `listener` accepts, with `TCP_NODELAY` on each.
///
/// Tonic sets it only on listeners it binds itself; a server handed its
/// own listener (Herald binds first, to report `127.0.0.1:0`'s port) got
/// Nagle's algorithm, which holds a small reply back while an earlier one
/// is unacknowledged. The bench's bare gRPC reference accepts through this
/// too, so both run the same socket settings.
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

pub use convert::{batch_state_from_proto, batch_to_proto, timestamp_to_proto};

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    /// Every accepted connection replies without waiting for Nagle.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
