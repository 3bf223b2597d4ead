//! W3C trace context across gRPC hops, as tower layers: the server side extracts `traceparent`
//! from the request metadata and opens an RPC server span under it; the client side opens an RPC
//! client span and injects its context into the outgoing metadata. Span names and attributes follow
//! the OpenTelemetry RPC semantic conventions. No request payload is ever recorded.

use futures::future::BoxFuture;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tracing::{field::Empty, Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Health probes run every second or so; tracing them would bury the real traffic.
fn is_probe(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

/// Splits `/pkg.Service/Method` into its service and method.
pub(crate) fn rpc_parts(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

fn record_status<B>(span: &Span, response: &http::Response<B>) {
    // Unary errors come back trailers-only, so the code is in the headers; a successful unary
    // call sends it in the trailers, which this layer does not wait for.
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "ERROR");
    }
}

/// Which end of an RPC a span stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Continues the caller's `traceparent`.
    Server,
    /// Sends its own context as the callee's `traceparent`.
    Client,
}

/// One span per RPC, on either side; see [`Side`].
#[derive(Clone, Copy, Debug)]
pub struct RpcTraceLayer {
    side: Side,
}

impl RpcTraceLayer {
    pub const fn server() -> Self {
        Self { side: Side::Server }
    }

    pub const fn client() -> Self {
        Self { side: Side::Client }
    }
}

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner, side: self.side }
    }
}

/// See [`RpcTraceLayer`].
#[derive(Clone, Debug)]
pub struct RpcTrace<S> {
    inner: S,
    side: Side,
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for RpcTrace<S>
where
    S: Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqB>) -> Self::Future {
        // Without an exporter nobody reads a span per call; calls through the gateway still
        // carry their client's `traceparent`, which the gateway forwards as it came.
        let probe = self.side == Side::Server && is_probe(req.uri().path());
        if probe || !crate::telemetry::traces_exported() {
            return Box::pin(self.inner.call(req));
        }
        let (service, method) = rpc_parts(req.uri().path());
        let span = tracing::info_span!(
            "rpc",
            otel.name = format!("{service}/{method}"),
            otel.kind = if self.side == Side::Server { "server" } else { "client" },
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
        );
        use opentelemetry::global::get_text_map_propagator as propagator;
        match self.side {
            Side::Server => {
                let parent = propagator(|p| p.extract(&HeaderExtractor(req.headers())));
                // A request with no (or a malformed) traceparent starts a new trace.
                let _ = span.set_parent(parent);
            }
            Side::Client => {
                let cx = span.context();
                propagator(|p| p.inject_context(&cx, &mut HeaderInjector(req.headers_mut())));
            }
        }
        let fut = span.in_scope(|| self.inner.call(req));
        Box::pin(
            async move {
                let result = fut.await;
                if let Ok(response) = &result {
                    record_status(&Span::current(), response);
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The W3C `traceparent` of the current span, for work that a later task does on its behalf
/// (an outbox row the relay sends after the RPC has answered).
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::global::get_text_map_propagator as propagator;
    let cx = Span::current().context();
    let mut headers = http::HeaderMap::new();
    propagator(|p| p.inject_context(&cx, &mut HeaderInjector(&mut headers)));
    headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// A span for deferred work that continues the trace `traceparent` names (a new trace without).
pub fn deferred_span(name: &'static str, traceparent: Option<&str>) -> Span {
    use opentelemetry::global::get_text_map_propagator as propagator;
    let span = tracing::info_span!("deferred", otel.name = name, otel.kind = "internal");
    let value = traceparent.and_then(|t| http::HeaderValue::from_str(t).ok());
    if let Some(value) = value {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value);
        let parent = propagator(|p| p.extract(&HeaderExtractor(&headers)));
        let _ = span.set_parent(parent);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_path_splits_into_service_and_method() {
        assert_eq!(
            rpc_parts("/sportello.identity.v1.IdentityService/RequestPin"),
            ("sportello.identity.v1.IdentityService", "RequestPin")
        );
        assert_eq!(rpc_parts("/weird"), ("weird", ""));
    }

    #[test]
    fn health_and_reflection_are_not_traced() {
        assert!(is_probe("/grpc.health.v1.Health/Check"));
        assert!(is_probe("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
        assert!(!is_probe("/sportello.claims.v1.ClaimsService/ListBenefits"));
    }
}
