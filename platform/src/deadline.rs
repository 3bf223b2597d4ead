//! A caller's deadline, answered as gRPC says: a call still running when the `grpc-timeout` its
//! caller sent runs out gets DEADLINE_EXCEEDED. tonic's server enforces that header too, but
//! answers CANCELLED (its `TimeoutExpired` error maps to that code); this layer, inside tonic's timer, starts its own timer
//! first for the same span, so it always answers before tonic's does.

use futures::future::BoxFuture;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Parses a `grpc-timeout` header value (e.g. `250m`, `5S`): at most 8 digits and a unit.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    // Byte positions below are characters only in ASCII.
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The caller's deadline as its `grpc-timeout` header says, if it sent a valid one.
pub fn requested(headers: &http::HeaderMap) -> Option<Duration> {
    headers.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout)
}

/// The caller's deadline as a gRPC request's metadata says, if it sent a valid one.
pub fn of_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    metadata.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout)
}

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineExceeded<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineExceeded { inner }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct DeadlineExceeded<S> {
    inner: S,
}

type Reply = http::Response<tonic::body::Body>;

impl<S, B> Service<http::Request<B>> for DeadlineExceeded<S>
where
    S: Service<http::Request<B>, Response = Reply>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Reply, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(within) = requested(req.headers()) else {
            return Box::pin(self.inner.call(req));
        };
        // Made now, before tonic's (which it makes after this returns), so that this one's
        // instant is never later: both fire on the same tick at worst, and tonic polls the
        // call (this future) before its own timer.
        let timer = tokio::time::sleep(within);
        let call = self.inner.call(req);
        Box::pin(async move {
            tokio::select! {
                biased;
                answer = call => answer,
                () = timer => Ok(tonic::Status::deadline_exceeded("deadline exceeded").into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_nothing_else() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_grpc_timeout("123456789S"), None, "at most 8 digits");
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5é"), None, "a unit outside ASCII is no unit, not a panic");
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_answers_deadline_exceeded() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::convert::Infallible>(Reply::default())
        });
        let request = http::Request::builder()
            .uri("/pkg.Svc/Method")
            .header("grpc-timeout", "20m")
            .body(())
            .expect("request");
        let reply = DeadlineLayer.layer(slow).oneshot(request).await.expect("answer");
        let code = reply.headers().get("grpc-status").and_then(|v| v.to_str().ok());
        assert_eq!(code, Some("4"), "DEADLINE_EXCEEDED");
    }
}
