//! identity-svc's errors and their one mapping to gRPC statuses.

use crate::hashing::HashError;
use sportello_platform::error::{retry_later, FieldViolations};
use std::time::Duration;
use tonic::{Code, Status};

const DOMAIN: &str = "identity.sportello";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid request")]
    Invalid(FieldViolations),
    #[error("too busy")]
    Overloaded,
    #[error("{service} unavailable: {status}")]
    Dependency {
        service: &'static str,
        status: Status,
    },
    #[error("storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<FieldViolations> for IdentityError {
    fn from(v: FieldViolations) -> Self {
        IdentityError::Invalid(v)
    }
}

impl From<HashError> for IdentityError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => IdentityError::Overloaded,
            HashError::Failed(why) => IdentityError::Internal(why),
        }
    }
}

impl From<IdentityError> for Status {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::Invalid(violations) => violations.into_status(),
            IdentityError::Overloaded => retry_later(
                Code::ResourceExhausted,
                "too many requests in progress; retry shortly",
                "OVERLOADED",
                DOMAIN,
                Duration::from_secs(1),
            ),
            // Causes stay in our logs: they may name internal hosts or tables.
            IdentityError::Dependency { service, status } => {
                tracing::error!(service, code = ?status.code(), "dependency failed");
                retry_later(
                    Code::Unavailable,
                    "the service is temporarily unavailable; retry",
                    "DEPENDENCY_UNAVAILABLE",
                    DOMAIN,
                    Duration::from_secs(2),
                )
            }
            IdentityError::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                Status::unavailable("the service is temporarily unavailable; retry")
            }
            IdentityError::Internal(why) => {
                tracing::error!(%why, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
