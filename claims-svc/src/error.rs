//! claims-svc's errors and their one mapping to gRPC statuses.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    #[error("storage failed: {0}")]
    Storage(#[from] sqlx::Error),
}

impl From<ClaimsError> for Status {
    fn from(err: ClaimsError) -> Self {
        match err {
            ClaimsError::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                Status::unavailable("claims are temporarily unavailable; retry")
            }
        }
    }
}
