//! The proxy itself: route by package, speak for a CNS card's holder, forward over a traced
//! HTTP/2 channel. Responses stream back untouched, and trailers (the gRPC status) arrive as the
//! backend sent them.

use crate::config::Config;
use crate::overload::{deadline_exceeded, Deadline};
use crate::stack::{Gate, Reply};
use futures::future::BoxFuture;
use sportello_platform::balance::{Picked, Pool, PoolSettings};
use sportello_platform::health::Dependency;
use sportello_platform::trace_context::{RpcTrace, RpcTraceLayer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tower::{Layer, Service};
/// The CNS login: the only call the gateway adds a verified client certificate's fiscal code to.
const CNS_LOGIN: &str = "/sportello.identity.v1.IdentityService/LoginWithCertificate";
/// Headers only Sportello's own services may set; a client sending them is ignored.
const INTERNAL_HEADER_PREFIX: &str = "x-sportello-";

/// The backends, keyed by the first two labels of their package (`sportello.identity`), so that
/// a new version of a package (`sportello.identity.v2`) reaches the same service: each one a
/// pool of instances (one or several URLs, names resolved again and again), calls going to
/// those that report SERVING.
#[derive(Clone, Debug)]
pub struct Backends {
    by_domain: HashMap<String, Arc<Pool<Hop>>>,
    /// Packages the gateway answers itself, behind the same layers as any other call.
    own: HashMap<String, tonic::service::Routes>,
}

/// The HTTP/2 connection calls to one backend instance are forwarded over, opened on first use
/// and again whenever it has closed. Forwarding straight over hyper's `SendRequest`, rather than
/// through a tonic channel, skips the channel's request buffer and the task hop to its worker on
/// every call.
#[derive(Clone, Debug)]
pub struct Hop {
    addr: SocketAddr,
    current: Arc<std::sync::Mutex<Option<SendRequest>>>,
    /// One connection attempt at a time; the others wait for its outcome. Holds when the last
    /// attempt failed: calls that waited for it fail at once (and go to another instance)
    /// rather than each trying again, one after the other, for as long as connecting takes.
    connecting: Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
}

type SendRequest = hyper::client::conn::http2::SendRequest<tonic::body::Body>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long opening a connection to a backend may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How soon after a failed attempt a connection is tried again.
const RECONNECT_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

impl Hop {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, current: Arc::default(), connecting: Arc::default() }
    }

    fn open(&self) -> Option<SendRequest> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The instance's connection, opened if there is none.
    async fn sender(&self) -> Result<SendRequest, BoxError> {
        if let Some(open) = self.open() {
            return Ok(open);
        }
        let mut failed_at = self.connecting.lock().await;
        if let Some(open) = self.open() {
            return Ok(open);
        }
        if failed_at.is_some_and(|at| at.elapsed() < RECONNECT_AFTER) {
            return Err("the last connection attempt failed".into());
        }
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(self.addr)).await;
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            failed => {
                *failed_at = Some(std::time::Instant::now());
                return Err(match failed {
                    Ok(Err(e)) => e.into(),
                    _ => "connect timed out".into(),
                });
            }
        };
        stream.set_nodelay(true)?;
        let (send, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                // An instance gone without a reset (a node lost) is noticed in seconds.
                .keep_alive_interval(std::time::Duration::from_secs(10))
                .keep_alive_timeout(std::time::Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .handshake(hyper_util::rt::TokioIo::new(stream))
                .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "backend connection closed");
            }
        });
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(send.clone());
        Ok(send)
    }
}

/// Forwards a call to one SERVING instance of a backend. A call that never left the gateway
/// (the instance could not be connected to, or its connection closed before the call went out)
/// is tried on another instance; one that did go out is not, since the backend may have acted on
/// it: its failure is the caller's UNAVAILABLE.
#[derive(Clone, Debug)]
pub struct PoolHop {
    pool: Arc<Pool<Hop>>,
}

/// No instance of the backend is SERVING (or none could take the call).
#[derive(Debug, thiserror::Error)]
#[error("no instance of the backend is serving")]
struct NoInstance;

pin_project_lite::pin_project! {
    /// A backend's response body, which keeps its call counted as in flight at its instance
    /// until the body ends: a streaming call is busy for as long as it streams.
    pub struct Counted {
        #[pin]
        body: hyper::body::Incoming,
        picked: Picked<Hop>,
    }
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Service<http::Request<tonic::body::Body>> for PoolHop {
    type Response = http::Response<Counted>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut tried = Vec::new();
            loop {
                let instance = pool.pick(&tried).ok_or(NoInstance)?;
                tried.push(instance.addr);
                let mut send = match instance.conn.sender().await {
                    Ok(send) => send,
                    Err(e) => {
                        tracing::debug!(addr = %instance.addr, error = %e, "instance unreachable");
                        continue;
                    }
                };
                let mut uri = std::mem::take(req.uri_mut()).into_parts();
                uri.scheme = Some(instance.target.scheme.clone());
                uri.authority = Some(instance.authority.clone());
                *req.uri_mut() = http::Uri::from_parts(uri)?;
                match send.try_send_request(req).await {
                    Ok(response) => {
                        return Ok(response.map(|body| Counted { body, picked: instance }))
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(e.into_error().into()),
                    },
                }
            }
        })
    }
}

/// `sportello.identity` for `/sportello.identity.v1.IdentityService/RequestPin`.
fn domain_of(path: &str) -> Option<&str> {
    let service = path.strip_prefix('/')?.split('/').next()?;
    let mut dots = service.match_indices('.');
    let (second, _) = dots.nth(1)?;
    Some(&service[..second])
}

impl Backends {
    /// The backends `config` names, found and followed until `shutdown`.
    pub fn connect(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let mut by_domain = HashMap::new();
        for (package, urls) in [
            ("sportello.identity", &config.identity_url),
            ("sportello.claims", &config.claims_url),
            ("sportello.notify", &config.notify_url),
        ] {
            let settings = PoolSettings {
                // The instance as a whole: SERVING once its own dependencies are.
                health_name: String::new(),
                resolve_every: config.resolve_every,
                health_interval: config.server.health_interval,
            };
            let pool = Pool::new(urls, settings, Hop::new, shutdown.clone())
                .map_err(|e| e.context(format!("{package}: backend URL")))?;
            by_domain.insert(package.to_owned(), pool);
        }
        Ok(Self { by_domain, own: HashMap::new() })
    }

    /// Has the gateway answer the calls of package `domain` (`sportello.privacy`) with `routes`.
    pub fn serve_own(&mut self, domain: &str, routes: tonic::service::Routes) {
        self.own.insert(domain.to_owned(), routes);
    }

    /// One health dependency per service the gateway exposes (`services`, fully qualified):
    /// SERVING while an instance of the backend that serves it is.
    pub fn dependencies<'a>(&self, services: impl IntoIterator<Item = &'a str>) -> Vec<Dependency> {
        let mut deps: Vec<Dependency> = services
            .into_iter()
            .filter_map(|service| {
                let pool = self.by_domain.get(domain_of(&format!("/{service}/"))?)?;
                Some(pool.dependency(service))
            })
            .collect();
        deps.sort_by(|a, b| a.service.cmp(&b.service));
        deps
    }
}

/// The backend a call goes to, as [`Route`] chose it: another service, or the gateway itself.
#[derive(Clone)]
pub enum Backend {
    Remote(RpcTrace<PoolHop>),
    Own(sportello_platform::server::Guarded),
}

/// Chooses the backend by the called method's package; a package no backend owns is
/// UNIMPLEMENTED.
#[derive(Clone)]
pub struct Route {
    backends: Arc<HashMap<String, Backend>>,
}

impl Route {
    pub fn new(backends: Backends) -> Self {
        let mut own: HashMap<String, Backend> = backends
            .own
            .into_iter()
            .map(|(domain, routes)| {
                (domain, Backend::Own(sportello_platform::server::guarded(routes)))
            })
            .collect();
        let backends = backends
            .by_domain
            .into_iter()
            .map(|(domain, pool)| {
                let hop = RpcTraceLayer::client().layer(PoolHop { pool });
                (domain, Backend::Remote(hop))
            })
            .chain(own.drain())
            .collect();
        Self { backends: Arc::new(backends) }
    }
}

impl Gate for Route {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        let path = req.uri().path();
        let Some(backend) = domain_of(path).and_then(|d| self.backends.get(d)) else {
            return Err(Status::unimplemented(format!("unknown service in {path}")));
        };
        let backend = backend.clone();
        req.extensions_mut().insert(backend);
        Ok(())
    }
}

/// Drops every header under Sportello's internal names.
#[derive(Clone, Copy, Debug)]
pub struct StripInternalHeaders;

impl Gate for StripInternalHeaders {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        let headers = req.headers_mut();
        let internal: Vec<_> = headers
            .keys()
            .filter(|k| k.as_str().starts_with(INTERNAL_HEADER_PREFIX))
            .cloned()
            .collect();
        for name in internal {
            headers.remove(name);
        }
        Ok(())
    }
}

/// On a CNS login over TLS with a client certificate the handshake verified, tells identity-svc
/// whose card it is.
#[derive(Clone)]
pub struct VouchForCns {
    cns: crate::cns::Vouch,
}

impl VouchForCns {
    pub fn new(cns: crate::cns::Vouch) -> Self {
        Self { cns }
    }
}

impl Gate for VouchForCns {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        if req.uri().path() != CNS_LOGIN {
            return Ok(());
        }
        let card = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|tls| tls.peer_certs())
            .and_then(|certs| certs.first().map(|c| c.to_vec()));
        if let Some(cert) = card {
            self.cns.vouch(&cert, req.headers_mut());
        }
        Ok(())
    }
}

/// The hop to the backend [`Route`] chose, with what is left of the deadline.
#[derive(Clone, Copy, Debug)]
pub struct Forward;

impl Service<http::Request<tonic::body::Body>> for Forward {
    type Response = Reply;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Reply, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The shared client is always ready: it queues on the backend's connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let mut hop = match req.extensions_mut().remove::<Backend>() {
            Some(Backend::Remote(hop)) => hop,
            Some(Backend::Own(routes)) => return own(routes, req),
            None => {
                return Box::pin(futures::future::ready(Ok(Status::unimplemented(
                    "no backend for this call",
                )
                .into_http())))
            }
        };
        // The cap layer always sets a deadline; the backend enforces what is left of it, and the
        // gateway stops waiting for its answer then too.
        let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
        if let Some(deadline) = req.extensions().get::<Deadline>() {
            let timeout = deadline.grpc_timeout();
            req.headers_mut().insert("grpc-timeout", timeout);
        }
        let call = hop.call(req);
        Box::pin(async move {
            let answer = match deadline {
                Some(at) => match tokio::time::timeout_at(at.into(), call).await {
                    Ok(answer) => answer,
                    Err(_) => return Ok(deadline_exceeded()),
                },
                None => call.await,
            };
            match answer {
                // A backend whose `grpc-timeout` runs out answers CANCELLED (tonic's mapping);
                // what ran out is the deadline the gateway set, and the caller is told so
                // whichever of the two timers fired first.
                Ok(response)
                    if deadline.is_some_and(|at| std::time::Instant::now() >= at)
                        && response.headers().get("grpc-status").map(|v| v.as_bytes())
                            == Some(b"1") =>
                {
                    Ok(deadline_exceeded())
                }
                Ok(response) => Ok(response.map(tonic::body::Body::new)),
                Err(e) => {
                    if e.is::<NoInstance>() {
                        tracing::debug!("no backend instance serving");
                    } else {
                        tracing::warn!(error = %e, "backend unreachable");
                    }
                    Ok(Status::unavailable("the service is temporarily unavailable; retry")
                        .into_http())
                }
            }
        })
    }
}

/// A call the gateway answers itself: its answer must begin within the deadline, like a
/// backend's.
fn own(
    routes: sportello_platform::server::Guarded,
    req: http::Request<tonic::body::Body>,
) -> BoxFuture<'static, Result<Reply, Infallible>> {
    use tower::ServiceExt;
    let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
    Box::pin(async move {
        let call = routes.oneshot(req);
        match deadline {
            Some(at) => match tokio::time::timeout_at(at.into(), call).await {
                Ok(answer) => answer,
                Err(_) => Ok(deadline_exceeded()),
            },
            None => call.await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_route_by_the_first_two_labels_of_their_package() {
        assert_eq!(
            domain_of("/sportello.identity.v1.IdentityService/RequestPin"),
            Some("sportello.identity")
        );
        assert_eq!(domain_of("/sportello.identity.v2.Other/X"), Some("sportello.identity"));
        assert_eq!(domain_of("/nopackage/X"), None);
        assert_eq!(domain_of(""), None);
    }
}
