//! notify-svc's errors and their one mapping to gRPC statuses.

use sportello_platform::error::FieldViolations;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("invalid request")]
    Invalid(FieldViolations),
    #[error("storage failed: {0}")]
    Storage(#[from] sqlx::Error),
}

impl From<FieldViolations> for NotifyError {
    fn from(v: FieldViolations) -> Self {
        NotifyError::Invalid(v)
    }
}

impl From<NotifyError> for Status {
    fn from(err: NotifyError) -> Self {
        match err {
            NotifyError::Invalid(violations) => violations.into_status(),
            NotifyError::Storage(e) => {
                // The cause stays in our logs; callers learn only that they may retry.
                tracing::error!(error = %e, "storage failure");
                Status::unavailable("notifications are temporarily unavailable; retry")
            }
        }
    }
}
