//! identity-svc's errors and their one mapping to gRPC statuses.

use crate::hashing::HashError;
use sportello_platform::db::is_unstorable_text;
use sportello_platform::error::{retry_later, unstorable_text, with_reason, FieldViolations};
use std::time::Duration;
use tonic::{Code, Status};

const DOMAIN: &str = "identity.sportello";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid request")]
    Invalid(FieldViolations),
    /// Unknown fiscal code, wrong PIN, locked or revoked PIN: one answer for all, so a caller
    /// learns nothing about which (the real reason goes to the audit trail and the operators).
    #[error("invalid credentials")]
    BadCredentials,
    /// The call's own session token names a session that has since ended (logged out,
    /// revoked): the same answer the gateway gives once it has heard of the end.
    #[error("session ended")]
    SessionEnded,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Precondition { reason: &'static str, message: &'static str },
    #[error("{message}")]
    Forbidden { reason: &'static str, message: &'static str },
    #[error("too busy")]
    Overloaded,
    /// A file that cannot be read as what it claims to be, or not within the reading budget.
    #[error("unreadable file")]
    Unreadable(FieldViolations),
    /// A per-citizen bound is reached (notices this hour, bytes of uploads in progress).
    #[error("{message}")]
    Exhausted { reason: &'static str, message: &'static str },
    /// The request stream itself failed (a message over the size limit, the client gone).
    #[error("request stream: {0}")]
    Stream(Status),
    #[error("{service} unavailable: {status}")]
    Dependency { service: &'static str, status: Status },
    #[error("storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IdentityError {
    /// The gRPC code this error becomes (also what the audit trail records as the outcome).
    pub fn code(&self) -> Code {
        match self {
            IdentityError::Invalid(_) | IdentityError::Unreadable(_) => Code::InvalidArgument,
            IdentityError::Exhausted { .. } => Code::ResourceExhausted,
            IdentityError::BadCredentials | IdentityError::SessionEnded => Code::Unauthenticated,
            IdentityError::NotFound(_) => Code::NotFound,
            IdentityError::Precondition { .. } => Code::FailedPrecondition,
            IdentityError::Forbidden { .. } => Code::PermissionDenied,
            IdentityError::Stream(s) => s.code(),
            IdentityError::Overloaded => Code::ResourceExhausted,
            IdentityError::Storage(e) if is_unstorable_text(e) => Code::InvalidArgument,
            IdentityError::Dependency { .. } | IdentityError::Storage(_) => Code::Unavailable,
            IdentityError::Internal(_) => Code::Internal,
        }
    }
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
        let code = err.code();
        match err {
            IdentityError::Invalid(violations) => violations.into_status(),
            IdentityError::Unreadable(violations) => {
                violations.into_status_with_reason("DOCUMENT_UNREADABLE", DOMAIN)
            }
            IdentityError::Exhausted { reason, message } => {
                retry_later(code, message, reason, DOMAIN, Duration::from_secs(60))
            }
            IdentityError::BadCredentials => {
                with_reason(code, "codice fiscale o PIN non validi", "INVALID_CREDENTIALS", DOMAIN)
            }
            IdentityError::SessionEnded => sportello_platform::auth::AuthError::Expired.into(),
            IdentityError::NotFound(what) => {
                with_reason(code, format!("{what} not found"), "NOT_FOUND", DOMAIN)
            }
            IdentityError::Precondition { reason, message }
            | IdentityError::Forbidden { reason, message } => {
                with_reason(code, message, reason, DOMAIN)
            }
            IdentityError::Overloaded => retry_later(
                code,
                "too many requests in progress; retry shortly",
                "OVERLOADED",
                DOMAIN,
                Duration::from_secs(1),
            ),
            // Causes stay in our logs: they may name internal hosts or tables.
            IdentityError::Dependency { service, status } => {
                tracing::error!(service, code = ?status.code(), "dependency failed");
                retry_later(
                    code,
                    "the service is temporarily unavailable; retry",
                    "DEPENDENCY_UNAVAILABLE",
                    DOMAIN,
                    Duration::from_secs(2),
                )
            }
            IdentityError::Stream(status) => status,
            IdentityError::Storage(e) if is_unstorable_text(&e) => unstorable_text(),
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
