//! The text guard every service wears: no string field of any request may hold a NUL byte,
//! another control character (tab and newlines aside) or a bidirectional override
//! ([`sportello_domain::text::is_forbidden`]). Such a request is answered INVALID_ARGUMENT with a
//! field violation on each field's proto path (`contacts.email`, `params["name"]`,
//! `fiscal_codes[3]`) before any handler sees it.
//!
//! One rule in one place rather than a check in every handler: PostgreSQL refuses a NUL byte in
//! a text column, and a field forgotten by one handler would fail later, in a batch or a
//! delivery, instead of at the edge. The field's own parser (a name, an address, an email) may
//! be stricter still.
//!
//! Only unary and server-streaming calls are read: a client stream (an import) is checked by
//! its handler message by message. The request is decoded against the contract's descriptors;
//! a body that does not decode is passed on for tonic to refuse (INVALID_ARGUMENT, through
//! [`crate::request_faults`]).

use crate::error::FieldViolations;
use bytes::Bytes;
use http_body_util::BodyExt;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use tower::Service;

/// What the guard says about a refused field; never the text itself.
const DESCRIPTION: &str =
    "must not contain control characters (such as NUL) or direction overrides";

/// The request message of every method whose request is one message, by gRPC path.
static METHODS: LazyLock<HashMap<String, MessageDescriptor>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(sportello_proto::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set is valid");
    pool.services()
        .flat_map(|service| {
            service
                .methods()
                .filter(|m| !m.is_client_streaming())
                .map(|m| (format!("/{}/{}", service.full_name(), m.name()), m.input()))
                .collect::<Vec<_>>()
        })
        .collect()
});

/// The violations of `message`'s string fields, at their proto paths.
pub fn violations(message: &DynamicMessage) -> FieldViolations {
    let mut v = FieldViolations::new();
    walk(message, "", &mut v);
    v
}

fn walk(message: &DynamicMessage, prefix: &str, v: &mut FieldViolations) {
    for (field, value) in message.fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        visit(value, &path, v);
    }
}

fn visit(value: &Value, path: &str, v: &mut FieldViolations) {
    match value {
        Value::String(text) if text.chars().any(sportello_domain::text::is_forbidden) => {
            v.add(path, DESCRIPTION)
        }
        Value::Message(message) => walk(message, path, v),
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                visit(item, &format!("{path}[{i}]"), v);
            }
        }
        Value::Map(entries) => {
            for (key, item) in entries {
                let at = match key {
                    MapKey::String(k) if k.chars().any(sportello_domain::text::is_forbidden) => {
                        v.add(format!("{path}[]"), DESCRIPTION);
                        continue;
                    }
                    MapKey::String(k) => format!("{path}[{k:?}]"),
                    other => format!("{path}[{other:?}]"),
                };
                visit(item, &at, v);
            }
        }
        _ => {}
    }
}

/// The violations of an encoded request body (gRPC frames) of the method at `path`; `None`
/// when the method is not one the guard reads or the body is not plain frames of it.
fn check(path: &str, body: &[u8]) -> Option<FieldViolations> {
    let descriptor = METHODS.get(path)?;
    let mut rest = body;
    let mut found = FieldViolations::new();
    while rest.len() >= 5 {
        // A compressed frame is left to tonic, which refuses what it cannot decompress.
        if rest[0] != 0 {
            return None;
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let frame = rest.get(5..5 + len)?;
        let message = DynamicMessage::decode(descriptor.clone(), frame).ok()?;
        violations(&message).iter().for_each(|(f, d)| found.add(f, d));
        rest = &rest[5 + len..];
    }
    Some(found)
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct TextGuard<S> {
    inner: S,
}

impl<S> TextGuard<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

type Reply = http::Response<tonic::body::Body>;

impl<S> Service<http::Request<tonic::body::Body>> for TextGuard<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Reply> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if !METHODS.contains_key(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        // The clone that was made ready serves this call (tower's rule for services that
        // move into a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes: Bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(status) => return Ok(status.into_http()),
            };
            if let Some(found) = check(parts.uri.path(), &bytes) {
                if !found.is_empty() {
                    return Ok(found.into_status().into_http());
                }
            }
            let body = tonic::body::Body::new(http_body_util::Full::new(bytes));
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use sportello_proto::identity::v1 as id;
    use sportello_proto::notify::v1 as notify;

    fn frame(message: &impl Message) -> Vec<u8> {
        let payload = message.encode_to_vec();
        let mut body = vec![0];
        body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        body.extend_from_slice(&payload);
        body
    }

    fn fields(found: &FieldViolations) -> Vec<&str> {
        found.iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn a_nul_byte_in_a_nested_field_is_refused_at_its_path() {
        let request = id::RequestPinRequest {
            fiscal_code: "RSSMRA85T10A562S".into(),
            contacts: Some(id::Contacts {
                email: "mario\0@example.it".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let found = check("/sportello.identity.v1.IdentityService/RequestPin", &frame(&request));
        assert_eq!(fields(&found.expect("read")), ["contacts.email"]);
    }

    #[test]
    fn control_characters_and_overrides_in_maps_and_lists_are_refused_newlines_pass() {
        let request = notify::EnqueueMessageRequest {
            template: "CLAIM_RECEIPT".into(),
            address: "Via Roma 1\n00100 Roma".into(),
            params: [("name".to_owned(), "Mario\u{1}".to_owned())].into(),
            secret_params: [("pin".to_owned(), "12\u{202e}34".to_owned())].into(),
            ..Default::default()
        };
        let found = check("/sportello.notify.v1.NotifyService/EnqueueMessage", &frame(&request));
        assert_eq!(fields(&found.expect("read")), ["params[\"name\"]", "secret_params[\"pin\"]"]);
        let request = id::BatchGetResidentNamesRequest {
            fiscal_codes: vec!["RSSMRA85T10A562S".into(), "\0".into()],
        };
        let found = check(
            "/sportello.identity.v1.ResidentsService/BatchGetResidentNames",
            &frame(&request),
        );
        assert_eq!(fields(&found.expect("read")), ["fiscal_codes[1]"]);
    }

    #[test]
    fn client_streams_and_unknown_paths_are_not_read() {
        assert!(check("/sportello.identity.v1.ResidentsService/ImportResidents", &[]).is_none());
        assert!(check("/grpc.health.v1.Health/Check", &[]).is_none());
    }
}
