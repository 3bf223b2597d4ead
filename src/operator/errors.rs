//! Errors as the operator sees them, on stderr: the gRPC code and message, each field violation
//! of a `google.rpc.BadRequest` as `field: description` (the field is the proto path, and the
//! flags of `request-pin` are named after it), the ErrorInfo reason and the RetryInfo delay;
//! with `--json`, the same status as JSON. The exit status tells scripts what kind of failure
//! it was (see the module above).

use super::output::json_of_bytes;
use super::session::NeedsLogin;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

const FAILED: i32 = 1;
const BAD_INPUT: i32 = 2;
const LOG_IN: i32 = 3;

/// Prints `error` on stderr and returns the exit status. `logging_in`: the command was `login`,
/// so an UNAUTHENTICATED answer is about the password, not a session to open.
pub fn report(error: &anyhow::Error, json: bool, logging_in: bool) -> i32 {
    let status = error.downcast_ref::<Status>();
    let needs_login =
        error.is::<NeedsLogin>() || status.is_some_and(|s| s.code() == Code::Unauthenticated);
    let exit = match status.map(Status::code) {
        _ if needs_login => LOG_IN,
        Some(Code::InvalidArgument) => BAD_INPUT,
        _ => FAILED,
    };
    let hint = (needs_login && !logging_in).then_some("run `sportello operator login`");
    if json {
        eprintln!("{}", as_json(error, status, hint));
    } else {
        eprint!("{}", as_text(error, status, hint));
    }
    exit
}

fn as_text(error: &anyhow::Error, status: Option<&Status>, hint: Option<&str>) -> String {
    let mut text = match status {
        Some(status) => format!("error: {} ({})\n", status.message(), code_name(status.code())),
        None => format!("error: {error:#}\n"),
    };
    if let Some(status) = status {
        let details = status.get_error_details();
        for violation in details.bad_request().map_or(&[][..], |b| &b.field_violations) {
            text += &format!("  {}: {}\n", violation.field, violation.description);
        }
        if let Some(info) = details.error_info() {
            text += &format!("  reason: {}\n", info.reason);
        }
        if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
            text += &format!("  retry in {}\n", humantime::format_duration(delay));
        }
    }
    if let Some(hint) = hint {
        text += &format!("  {hint}\n");
    }
    text
}

/// `{"error": {"code": "INVALID_ARGUMENT", "message": …, "details": [...]}}`: the details as
/// google.rpc.Status holds them (each with its `@type`), as grpcurl prints them. Failures that
/// are not a gRPC status get the code that fits (UNAUTHENTICATED for no session, UNAVAILABLE for
/// a gateway out of reach) and no details.
fn as_json(
    error: &anyhow::Error,
    status: Option<&Status>,
    hint: Option<&str>,
) -> serde_json::Value {
    let (code, message, details) = match status {
        Some(status) => (status.code(), status.message().to_owned(), details_of(status)),
        None if error.is::<NeedsLogin>() => (Code::Unauthenticated, format!("{error}"), vec![]),
        None if error.chain().any(|e| e.is::<tonic::transport::Error>()) => {
            (Code::Unavailable, format!("{error:#}"), vec![])
        }
        None => (Code::Unknown, format!("{error:#}"), vec![]),
    };
    let mut body = serde_json::json!({
        "code": code_name(code),
        "message": message,
        "details": details,
    });
    if let Some(hint) = hint {
        body["hint"] = hint.into();
    }
    serde_json::json!({ "error": body })
}

fn details_of(status: &Status) -> Vec<serde_json::Value> {
    if status.details().is_empty() {
        return vec![];
    }
    match json_of_bytes(status.details(), "google.rpc.Status") {
        Ok(serde_json::Value::Object(mut status)) => match status.remove("details") {
            Some(serde_json::Value::Array(details)) => details,
            _ => vec![],
        },
        _ => vec![],
    }
}

/// The code as the gRPC spec names it: `InvalidArgument` → `INVALID_ARGUMENT`.
fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_the_grpc_spec_names_them() {
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }

    #[test]
    fn field_violations_print_one_a_line_and_as_the_statuss_details_in_json() {
        let mut details = tonic_types::ErrorDetails::new();
        details.add_bad_request_violation("fiscal_code", "is not a valid codice fiscale");
        let status = Status::with_error_details(Code::InvalidArgument, "invalid", details);
        let text = as_text(&anyhow::Error::new(status.clone()), Some(&status), None);
        assert_eq!(
            text,
            "error: invalid (INVALID_ARGUMENT)\n  fiscal_code: is not a valid codice fiscale\n"
        );
        let json = as_json(&anyhow::Error::new(status.clone()), Some(&status), None);
        assert_eq!(json["error"]["details"][0]["fieldViolations"][0]["field"], "fiscal_code");
    }
}
