//! Prometheus metrics, fed by one tower layer on every server: calls, their latency and their
//! gRPC status per RPC (OpenTelemetry's RPC semantic names, `rpc.server.duration` becoming
//! `rpc_server_duration_seconds`), calls in flight; and the gauges services set of their own
//! (database pool use, the hashing queue, notify's queues). Each service serves them as text on
//! its own HTTP port (`<svc>.metrics_listen`, path `/metrics`). Labels never carry personal data:
//! service and method names, status codes, reasons.

use futures::future::BoxFuture;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, in seconds: a cached read is well under a millisecond, an argon2id login
/// tens of milliseconds, a click-day claim a few, an upload seconds.
const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process's recorder, installed on first use (several services in one process, as in the
/// tests, share it and tell themselves apart by their `service` label).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), BUCKETS)
            .expect("the buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a test harness): its metrics are then its.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let handle = handle();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Records every call through the server it wraps, under `service` (the process's name).
#[derive(Clone, Copy, Debug)]
pub struct MetricsLayer {
    service: &'static str,
}

impl MetricsLayer {
    pub fn new(service: &'static str) -> Self {
        handle();
        Self { service }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Metered { inner, service: self.service }
    }
}

/// See [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
    service: &'static str,
}

/// Takes one call off the in-flight gauge however the call ends (a client hanging up drops the
/// future).
struct InFlight(metrics::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for Metered<S>
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
        let (rpc_service, rpc_method) = crate::trace_context::rpc_parts(req.uri().path());
        let (rpc_service, rpc_method) = (rpc_service.to_owned(), rpc_method.to_owned());
        let service = self.service;
        let gauge = metrics::gauge!(
            "rpc_server_active_requests",
            "service" => service,
            "rpc_service" => rpc_service.clone(),
            "rpc_method" => rpc_method.clone(),
        );
        gauge.increment(1.0);
        let in_flight = InFlight(gauge);
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            drop(in_flight);
            // Errors come back trailers-only, their code in the headers; a success sends it in
            // the trailers, after the headers this waits for.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0),
                Err(_) => tonic::Code::Unknown as i32,
            };
            let labels = [
                ("service", service.to_owned()),
                ("rpc_system", "grpc".to_owned()),
                ("rpc_service", rpc_service),
                ("rpc_method", rpc_method),
                ("rpc_grpc_status_code", code.to_string()),
            ];
            metrics::counter!("rpc_server_requests_total", &labels).increment(1);
            metrics::histogram!("rpc_server_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// Follows a database pool's use every `every` until `stop`: connections in use and idle
/// (`db_client_connections_usage`, OTel's `db.client.connections.usage`).
pub async fn follow_pool(
    service: &'static str,
    pool: sqlx::AnyPool,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (size, idle) = (f64::from(pool.size()), pool.num_idle() as f64);
        metrics::gauge!("db_client_connections_usage", "service" => service, "state" => "used")
            .set(size - idle);
        metrics::gauge!("db_client_connections_usage", "service" => service, "state" => "idle")
            .set(idle);
        metrics::gauge!("db_client_connections_max", "service" => service)
            .set(f64::from(pool.options().get_max_connections()));
    }
}
