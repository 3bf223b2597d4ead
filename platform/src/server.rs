//! The bootstrap every service runs: a tonic server on a listener it is handed, with health and
//! reflection, traced, that starts answering at once (health says NOT_SERVING while the service
//! gets ready) and drains in-flight calls within a bound when asked to stop.

use crate::db::{self, Database, Migrations};
use crate::health::{self, Needs, Readiness};
use crate::panic_guard::PanicGuardLayer;
use crate::trace_context::RpcTraceLayer;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tower::{Service, ServiceExt};

/// Settings every server shares.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How long in-flight calls may run on after a stop is requested.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The longest wait before trying again to reach a service this one calls that is down
    /// (their health is followed through Watch streams; this bounds the reconnect backoff).
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Serve TLS instead of plaintext (the gateway does, for CNS smart cards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// Threads of the service's async runtime; default one per CPU. Under `sportello up`, where
    /// the four services already run side by side as processes, the gateway, identity and claims
    /// default to 1: their calls then never hop between threads of one process, a hop that costs
    /// more CPU than a forwarded call or a cheap read itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// The process's CPU priority as nice(1) counts it, from -20 (first) to 19 (last); none
    /// leaves it as started. Under `sportello up`, where the four services share one machine's
    /// CPUs, identity, claims and notify default to 10: when they saturate the CPUs on click
    /// day, the gateway, which refuses the excess, still gets the CPU to refuse it at once. With
    /// all four at one priority, a refusal at three times the claims' capacity waited behind the
    /// backends' work (p99 11–390 ms across runs on two cores); with the backends at 10, 4–12 ms.
    /// Like `worker_threads`, it applies to a service run as a process of its own (`sportello
    /// <svc>`), not to one served inside another program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
    /// Where to serve Prometheus metrics over HTTP (`/metrics`); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// A server certificate, and optionally the CA whose client certificates are asked for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TlsSettings {
    /// PEM certificate chain of this server.
    pub cert_file: PathBuf,
    /// PEM private key of this server.
    pub key_file: PathBuf,
    /// PEM CA certificates whose client certificates are accepted (CNS issuers); clients
    /// without a certificate are still served.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsSettings {
    fn server_config(&self) -> std::io::Result<tonic::transport::ServerTlsConfig> {
        let cert = std::fs::read(&self.cert_file)?;
        let key = std::fs::read(&self.key_file)?;
        let mut config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca_file {
            config = config
                .client_ca_root(tonic::transport::Certificate::from_pem(std::fs::read(ca)?))
                .client_auth_optional(true);
        }
        Ok(config)
    }
}

/// Where a service keeps its data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoreSettings {
    /// Where SQLite files (and other local state) live when no database URL is given.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; empty means a SQLite file in `data_dir`.
    pub database_url: String,
    /// Size of the connection pool.
    pub max_connections: u32,
}

impl ServerSettings {
    /// Sets the calling thread's CPU priority to [`ServerSettings::nice`]; called before the
    /// runtime starts its threads, which inherit it (on Linux a priority is per thread).
    pub fn apply_nice(&self) -> anyhow::Result<()> {
        let Some(nice) = self.nice else { return Ok(()) };
        anyhow::ensure!((-20..=19).contains(&nice), "nice {nice} is not within -20..=19");
        rustix::process::setpriority_process(None, nice).map_err(|e| {
            let now = rustix::process::getpriority_process(None).unwrap_or_default();
            anyhow::anyhow!(
                "cannot set the CPU priority (`nice`) to {nice} from {now}: {e} (raising a \
                 priority, to a lower number, needs CAP_SYS_NICE)"
            )
        })
    }

    /// Defaults for a service listening on `listen`.
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            drain_timeout: Duration::from_secs(10),
            health_interval: Duration::from_secs(1),
            tls: None,
            worker_threads: None,
            nice: None,
            metrics_listen: None,
        }
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> std::io::Result<TcpListener> {
        TcpListener::bind(self.listen).await
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { data_dir: PathBuf::from("data"), database_url: String::new(), max_connections: 8 }
    }
}

impl StoreSettings {
    /// The database URL of service `name`: the configured one, else its SQLite file in the data
    /// directory (created, 0700, if missing).
    pub fn database_url_for(&self, name: &str) -> std::io::Result<String> {
        if !self.database_url.trim().is_empty() {
            return Ok(self.database_url.trim().to_owned());
        }
        crate::files::create_dir(&self.data_dir)?;
        Ok(crate::db::sqlite_url(&self.data_dir, name))
    }
}

/// Adds reflection for the whole Sportello contract to `routes`, so that grpcurl needs no .proto
/// at hand: both `grpc.reflection.v1` and the older `v1alpha`, which Python's grpcio-reflection
/// and older grpcurl builds still speak.
pub fn with_reflection(routes: Routes) -> Routes {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sportello_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    routes
        .add_service(builder().build_v1().expect("the embedded descriptor sets are valid"))
        .add_service(builder().build_v1alpha().expect("the embedded descriptor sets are valid"))
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then lets in-flight calls finish
/// for at most `drain_timeout`.
pub async fn run(
    name: &'static str,
    listener: TcpListener,
    routes: Routes,
    settings: &ServerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_service(name, listener, guarded(routes), settings, shutdown).await
}

/// Services whose requests are read as [`guarded`] says.
pub type Guarded = crate::request_faults::RequestFaults<crate::text_guard::TextGuard<Routes>>;

/// `routes` behind the checks every request of a Sportello service passes: its text is checked
/// once, before any handler (see `text_guard`), and a request tonic cannot read is answered
/// INVALID_ARGUMENT, not INTERNAL (see `request_faults`). [`run`] serves its routes so; the
/// gateway its own (privacy.v1), which it answers rather than forwards.
pub fn guarded(routes: Routes) -> Guarded {
    crate::request_faults::RequestFaults::new(crate::text_guard::TextGuard::new(routes.prepare()))
}

/// See `http2_max_pending_accept_reset_streams` in [`run_service`].
const MAX_PENDING_ACCEPT_RESETS: usize = 1024;

/// As [`run`], for any service of gRPC requests: the gateway's, which routes by itself.
pub async fn run_service<S>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    settings: &ServerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    if let Some(addr) = settings.metrics_listen {
        let metrics = TcpListener::bind(addr).await?;
        tracing::info!(addr = %metrics.local_addr()?, "metrics at /metrics");
        tokio::spawn(crate::metrics::serve(metrics, shutdown.clone()));
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = Server::builder()
        // Streams a peer may reset before this server accepted them, per connection, before h2
        // ends the connection (its guard against "rapid reset" floods). h2's default of 20 is
        // met by an honest gateway under overload: callers give up (their deadline passes)
        // while their calls wait to be accepted, the gateway resets each one, and the one
        // connection every call of that backend shares was torn down, failing all of them.
        // Still a bound: a peer cannot make a server hold more than this many.
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS));
    if let Some(tls) = &settings.tls {
        let config = tls.server_config().map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
        builder = builder.tls_config(config)?;
    }
    let server = builder
        // Tracing wraps everything, so a rejected or failed call still shows in its trace.
        .layer(RpcTraceLayer::server())
        // Outside everything else, so no handler or layer can take the connection down: one bad
        // request costs one INTERNAL answer.
        .layer(PanicGuardLayer)
        // Inside the guard, so a call that panicked is counted with its INTERNAL answer.
        .layer(crate::metrics::MetricsLayer::new(name))
        // Innermost, so the call is counted and traced with its DEADLINE_EXCEEDED, and so its
        // timer starts before tonic's (which would answer CANCELLED).
        .layer(crate::deadline::DeadlineLayer)
        .serve_with_incoming_shutdown(service, incoming, shutdown.clone().cancelled_owned());
    tokio::pin!(server);
    let drain = settings.drain_timeout;
    tokio::select! {
        result = &mut server => Ok(result?),
        _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "in-flight calls still running after the drain timeout; closing");
            Ok(())
        }
    }
}

/// The database a service owns: its name (also its PostgreSQL schema), where it is, and the
/// migrations that shape it.
#[derive(Clone, Copy, Debug)]
pub struct Storage<'a> {
    pub name: &'static str,
    pub settings: &'a StoreSettings,
    pub migrations: &'a Migrations,
}

/// Starts a storage-backed service: the server answers at once with health NOT_SERVING; the
/// database is opened and migrated (retrying until it is reachable); then `build` makes the
/// service's routes from it, and health of `services` follows the `dependencies` from there on.
/// Returns when the server has drained after `shutdown`.
pub async fn serve_with_store<Fut>(
    storage: Storage<'_>,
    services: &[&str],
    listener: TcpListener,
    settings: &ServerSettings,
    needs: Needs,
    shutdown: CancellationToken,
    build: impl FnOnce(Database) -> Fut,
) -> anyhow::Result<()>
where
    Fut: std::future::Future<Output = anyhow::Result<Routes>>,
{
    let Storage { name, settings: store, migrations } = storage;
    let url = store.database_url_for(name)?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let own = std::iter::once(String::new()).chain(services.iter().map(|s| s.to_string()));
    let readiness = Readiness {
        own: own.collect(),
        dependencies: needs.dependencies,
        mirror: false,
        condition: needs.condition.map(health::Condition),
    };
    health::starting(&reporter, &readiness).await;
    let app = Deferred::default();
    let router = with_reflection(Routes::new(health_service))
        .into_axum_router()
        .fallback_service(app.clone());
    let server = tokio::spawn({
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        async move { run(name, listener, Routes::from(router), &settings, shutdown).await }
    });
    let opened =
        db::open_with_retry(&url, name, migrations, store.max_connections, &shutdown).await;
    if let Some(database) = opened {
        tracing::info!(backend = ?database.backend, "database ready");
        let every = Duration::from_secs(1);
        tokio::spawn(crate::metrics::follow_pool(
            name,
            database.pool.clone(),
            every,
            shutdown.clone(),
        ));
        match build(database).await {
            Ok(routes) => app.set(routes),
            Err(e) => {
                // A service that cannot build itself must not linger half-alive.
                shutdown.cancel();
                let _ = server.await;
                return Err(e);
            }
        }
        tokio::spawn(health::track(reporter, readiness, settings.health_interval, shutdown));
    }
    server.await??;
    Ok(())
}

/// The service's own routes before they exist: UNAVAILABLE until [`Deferred::set`] hands them
/// over (after migrations ran), so that the server and its health endpoint can start at once.
#[derive(Clone, Default)]
pub struct Deferred {
    inner: Arc<OnceLock<Routes>>,
}

impl Deferred {
    /// Makes the real routes answer from now on.
    pub fn set(&self, routes: Routes) {
        let _ = self.inner.set(routes.prepare());
    }
}

impl<B> Service<http::Request<B>> for Deferred
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.inner.get() {
            Some(routes) => Box::pin(routes.clone().oneshot(req)),
            None => Box::pin(futures::future::ready(Ok(tonic::Status::unavailable(
                "the service is starting; retry shortly",
            )
            .into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    #[test]
    fn a_configured_priority_is_taken_by_the_threads_started_after_it() {
        // On a thread of its own: a priority is per thread, and the test's must not change.
        std::thread::spawn(|| {
            let mut settings = ServerSettings::on(([127, 0, 0, 1], 0).into());
            settings.nice = Some(19);
            settings.apply_nice().expect("a lower priority needs no privilege");
            let child = std::thread::spawn(|| rustix::process::getpriority_process(None));
            assert_eq!(child.join().unwrap().unwrap(), 19);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_priority_outside_nice_range_is_refused_by_name() {
        let mut settings = ServerSettings::on(([127, 0, 0, 1], 0).into());
        settings.nice = Some(40);
        let refusal = settings.apply_nice().unwrap_err().to_string();
        assert!(refusal.contains("nice 40 is not within"), "{refusal}");
    }

    /// A service that panics on every call, with request content in its message, standing in
    /// for a handler with a bug.
    #[derive(Clone)]
    struct Panics;

    impl tonic::server::NamedService for Panics {
        const NAME: &'static str = "grpc.health.v1.Health";
    }

    impl Service<http::Request<tonic::body::Body>> for Panics {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move { panic!("slicing the PIN of {}", req.uri().path()) })
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_the_server_keeps_serving() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let settings = ServerSettings::on(addr);
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { run("test", listener, Routes::new(Panics), &settings, shutdown).await }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        for _ in 0..2 {
            let status = HealthClient::new(channel.clone())
                .check(HealthCheckRequest { service: "x".into() })
                .await
                .expect_err("the handler panics");
            assert_eq!(status.code(), tonic::Code::Internal);
            assert_eq!(status.message(), "internal error", "nothing of the panic leaks");
        }
        shutdown.cancel();
        server.await.expect("task").expect("clean stop");
    }
}
