//! claims-svc's errors and their one mapping to gRPC statuses.

use crate::domain::claim::Refusal;
use crate::domain::level_name;
use sportello_platform::auth::Level;
use sportello_platform::db::is_unstorable_text;
use sportello_platform::error::{
    retry_later, unstorable_text, with_info, with_reason, FieldViolations,
};
use std::collections::HashMap;
use tonic::{Code, Status};

const DOMAIN: &str = "claims.sportello";

#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    #[error("invalid request")]
    Invalid(FieldViolations),
    /// Not there, or not the caller's to see: the same answer for both.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("refused: {0:?}")]
    Refused(Refusal),
    #[error("{message}")]
    Precondition { reason: &'static str, message: String },
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The caller's session is of a lower credential level than `action` needs.
    #[error("{action} needs a {} credential", level_name(*required))]
    LevelTooLow { action: &'static str, required: Level },
    #[error("storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    /// A service this call needs did not answer.
    #[error("{0} is not available")]
    Unavailable(&'static str),
    /// More claims are being filed than can be committed within the time a caller waits.
    #[error("too many claims being filed")]
    Overloaded,
}

impl From<FieldViolations> for ClaimsError {
    fn from(v: FieldViolations) -> Self {
        ClaimsError::Invalid(v)
    }
}

impl From<Refusal> for ClaimsError {
    fn from(r: Refusal) -> Self {
        ClaimsError::Refused(r)
    }
}

impl From<ClaimsError> for Status {
    fn from(err: ClaimsError) -> Self {
        match err {
            ClaimsError::Invalid(violations) => violations.into_status(),
            ClaimsError::NotFound(what) => {
                with_reason(Code::NotFound, format!("no such {what}"), "NOT_FOUND", DOMAIN)
            }
            ClaimsError::Refused(refusal) => {
                let mut metadata = HashMap::new();
                if let Refusal::NotEligible(reasons) = &refusal {
                    let reasons: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
                    metadata.insert("reasons".to_owned(), reasons.join(","));
                }
                with_info(
                    Code::FailedPrecondition,
                    refusal.message(),
                    refusal.reason(),
                    DOMAIN,
                    metadata,
                )
            }
            ClaimsError::Precondition { reason, message } => {
                with_reason(Code::FailedPrecondition, message, reason, DOMAIN)
            }
            ClaimsError::PermissionDenied(why) => {
                with_reason(Code::PermissionDenied, why, "PERMISSION_DENIED", DOMAIN)
            }
            ClaimsError::LevelTooLow { action, required } => {
                let level = level_name(required);
                let logins = match required {
                    Level::Dispositive => "PIN dispositivo, SPID, CIE or CNS",
                    Level::Ordinary => "an ordinary PIN or stronger",
                    Level::Simplified => "any PIN",
                };
                let message = format!(
                    "{action} needs a {level} credential ({logins}): log in again with one"
                );
                let metadata = HashMap::from([("required_level".to_owned(), level.to_owned())]);
                with_info(Code::PermissionDenied, message, "LEVEL_TOO_LOW", DOMAIN, metadata)
            }
            ClaimsError::Unavailable(what) => {
                Status::unavailable(format!("{what} is temporarily unavailable; retry"))
            }
            ClaimsError::Overloaded => retry_later(
                Code::ResourceExhausted,
                "more claims are being filed than can be taken now; retry shortly",
                "TOO_MANY_SUBMISSIONS",
                DOMAIN,
                std::time::Duration::from_secs(1),
            ),
            ClaimsError::Storage(e) if is_unstorable_text(&e) => unstorable_text(),
            ClaimsError::Storage(e) => {
                // The cause stays in our logs; callers learn only that they may retry.
                tracing::error!(error = %e, "storage failure");
                Status::unavailable("claims are temporarily unavailable; retry")
            }
        }
    }
}
