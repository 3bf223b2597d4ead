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
fn rpc_parts(path: &str) -> (&str, &str) {
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

/// Server side: one span per RPC, child of the caller's `traceparent` when there is one.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTraceLayer;

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

/// See [`ServerTraceLayer`].
#[derive(Clone, Debug)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for ServerTrace<S>
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

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        if is_probe(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let (service, method) = rpc_parts(req.uri().path());
        let span = tracing::info_span!(
            "rpc.server",
            otel.name = format!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        // A request with no (or a malformed) traceparent starts a new trace: nothing to report.
        let _ = span.set_parent(parent);
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

/// Client side: wraps a channel so that every call is a client span whose context travels in the
/// request's `traceparent`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientTraceLayer;

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTrace { inner }
    }
}

/// See [`ClientTraceLayer`].
#[derive(Clone, Debug)]
pub struct ClientTrace<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for ClientTrace<S>
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
        let (service, method) = rpc_parts(req.uri().path());
        let span = tracing::info_span!(
            "rpc.client",
            otel.name = format!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
        );
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(req.headers_mut()))
        });
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
