//! One error type for the gRPC boundary and its single mapping to
//! `tonic::Status`: the caller's mistakes get precise codes and messages
//! naming the field; a store that cannot write now (full, read-only) is
//! `UNAVAILABLE`, which clients retry; Herald's own failures are logged
//! with their cause and reach the caller as an opaque `INTERNAL`.

use tonic::{Code, Status};

use crate::core::batch::TransitionError;
use crate::core::validate::FieldError;
use crate::ingest::IngestError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Conflict(#[from] TransitionError),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error(transparent)]
    Internal(#[from] StoreError),
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Transition(t) => ApiError::Conflict(t),
            IngestError::Reused(r) => ApiError::AlreadyExists(r.to_string()),
            IngestError::Store(s) => ApiError::Internal(s),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::Conflict(_) | ApiError::Precondition(_) => Code::FailedPrecondition,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Internal(cause) if cause.unwritable_reason().is_some() => {
                // Says why in the store's words, whatever layer saw it.
                return Status::unavailable(cause.to_shared().to_string());
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "request failed inside Herald");
                return Status::internal("internal error; see Herald's log");
            }
        };
        Status::new(code, e.to_string())
    }
}
