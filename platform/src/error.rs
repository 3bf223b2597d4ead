//! Building rich `tonic::Status` values (google.rpc error details) the same way in every service.

use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Problems found in a request, each tied to the proto path of the field it concerns
/// (`contacts.email`, `residence.italy.postal_code`). Validation collects all of them, so a
/// client learns everything wrong with a form in one round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldViolations(Vec<(String, String)>);

impl FieldViolations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong, and why.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(f, d)| (f.as_str(), d.as_str()))
    }

    /// `Ok(value)` when nothing was recorded, otherwise the violations.
    pub fn into_result<T>(self, value: T) -> Result<T, FieldViolations> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// INVALID_ARGUMENT with a `google.rpc.BadRequest` listing every violation.
    pub fn into_status(self) -> Status {
        self.into_status_with(ErrorDetails::new())
    }

    /// [`Self::into_status`] with an ErrorInfo too, for a refusal a client must tell apart from
    /// other bad input (a file that cannot be read, say).
    pub fn into_status_with_reason(self, reason: &str, domain: &str) -> Status {
        let info = ErrorDetails::with_error_info(reason, domain, HashMap::<String, String>::new());
        self.into_status_with(info)
    }

    fn into_status_with(self, mut details: ErrorDetails) -> Status {
        let fields: Vec<&str> = self.0.iter().map(|(f, _)| f.as_str()).collect();
        let message = format!("invalid request: check {}", fields.join(", "));
        for (field, description) in &self.0 {
            details.add_bad_request_violation(field.clone(), description.clone());
        }
        Status::with_error_details(Code::InvalidArgument, message, details)
    }
}

/// A status with a `google.rpc.ErrorInfo` carrying a stable UPPER_SNAKE `reason`, so that
/// clients branch on the reason rather than on the message text.
pub fn with_reason(code: Code, message: impl Into<String>, reason: &str, domain: &str) -> Status {
    with_info(code, message, reason, domain, HashMap::new())
}

/// [`with_reason`] with the ErrorInfo's `metadata` (e.g. the eligibility reasons of a refusal).
pub fn with_info(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    domain: &str,
    metadata: HashMap<String, String>,
) -> Status {
    let details = ErrorDetails::with_error_info(reason, domain, metadata);
    Status::with_error_details(code, message, details)
}

/// RESOURCE_EXHAUSTED or UNAVAILABLE with a `google.rpc.RetryInfo` telling the client when to
/// come back.
pub fn retry_later(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    domain: &str,
    after: Duration,
) -> Status {
    let mut details =
        ErrorDetails::with_error_info(reason, domain, HashMap::<String, String>::new());
    details.set_retry_info(Some(after));
    Status::with_error_details(code, message, details)
}

/// The answer to a request whose text the database cannot store (a NUL byte): INVALID_ARGUMENT,
/// as for any other malformed input, without echoing the text.
pub fn unstorable_text() -> Status {
    with_reason(
        Code::InvalidArgument,
        "the request contains characters that cannot be stored (a NUL byte)",
        "UNSTORABLE_TEXT",
        "sportello",
    )
}
