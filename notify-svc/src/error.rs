//! notify-svc's errors and their one mapping to gRPC statuses.

use sportello_platform::db::is_unstorable_text;
use sportello_platform::error::{unstorable_text, with_reason, FieldViolations};
use tonic::{Code, Status};

const DOMAIN: &str = "notify.sportello";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("invalid request")]
    Invalid(FieldViolations),
    #[error("message not found")]
    NotFound,
    #[error("the message's secret parameters have been purged")]
    SecretsPurged,
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
            NotifyError::NotFound => {
                with_reason(Code::NotFound, "no message has that id", "MESSAGE_NOT_FOUND", DOMAIN)
            }
            NotifyError::SecretsPurged => with_reason(
                Code::FailedPrecondition,
                "the message's secret parameters have been purged, so it cannot be resent; \
                 request a new one",
                "SECRETS_PURGED",
                DOMAIN,
            ),
            NotifyError::Storage(e) if is_unstorable_text(&e) => unstorable_text(),
            NotifyError::Storage(e) => {
                // The cause stays in our logs; callers learn only that they may retry.
                tracing::error!(error = %e, "storage failure");
                Status::unavailable("notifications are temporarily unavailable; retry")
            }
        }
    }
}
