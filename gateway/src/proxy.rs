//! The proxy itself: route by package, bound concurrency and deadlines, forward over a traced
//! HTTP/2 channel. Request and response bodies stream through untouched, so unary and streaming
//! RPCs alike pass, and trailers (the gRPC status) arrive as the backend sent them.

use crate::config::Config;
use crate::guard::Guard;
use bytes::Bytes;
use futures::future::BoxFuture;
use sportello_platform::client::{self, TracedChannel};
use sportello_platform::error::retry_later;
use sportello_platform::health::Dependency;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

const DOMAIN: &str = "gateway.sportello";
/// The CNS login: the only call the gateway adds a verified client certificate's fiscal code to.
const CNS_LOGIN: &str = "/sportello.identity.v1.IdentityService/LoginWithCertificate";
/// Headers only Sportello's own services may set; a client sending them is ignored.
const INTERNAL_HEADER_PREFIX: &str = "x-sportello-";

/// The backends, keyed by the first two labels of their package (`sportello.identity`), so that
/// a new version of a package (`sportello.identity.v2`) reaches the same service.
#[derive(Clone, Debug)]
pub struct Backends {
    by_domain: HashMap<String, (String, tonic::transport::Channel)>,
}

/// `sportello.identity` for `/sportello.identity.v1.IdentityService/RequestPin`.
fn domain_of(path: &str) -> Option<&str> {
    let service = path.strip_prefix('/')?.split('/').next()?;
    let mut dots = service.match_indices('.');
    let (second, _) = dots.nth(1)?;
    Some(&service[..second])
}

impl Backends {
    pub fn connect(config: &Config) -> Result<Self, tonic::transport::Error> {
        let mut by_domain = HashMap::new();
        for (service, url) in [
            ("sportello.identity.v1.IdentityService", &config.identity_url),
            ("sportello.claims.v1.ClaimsService", &config.claims_url),
            ("sportello.notify.v1.NotifyService", &config.notify_url),
        ] {
            let domain = domain_of(&format!("/{service}/")).expect("well-formed name").to_owned();
            by_domain.insert(domain, (service.to_owned(), client::channel(url)?));
        }
        Ok(Self { by_domain })
    }

    /// One health dependency per backend service.
    pub fn dependencies(&self) -> Vec<Dependency> {
        let mut deps: Vec<Dependency> = self
            .by_domain
            .values()
            .map(|(service, channel)| Dependency {
                service: service.clone(),
                channel: channel.clone(),
            })
            .collect();
        deps.sort_by(|a, b| a.service.cmp(&b.service));
        deps
    }
}

/// Parses a `grpc-timeout` header value (e.g. `250m`, `5S`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
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

/// The caller's deadline, capped; the cap when the caller gave none.
fn effective_deadline(headers: &http::HeaderMap, cap: Duration) -> Duration {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(cap, |d| d.min(cap))
}

/// The proxy service, the gateway router's fallback.
#[derive(Clone)]
pub struct Proxy {
    guard: Guard,
    cns: crate::cns::Vouch,
    backends: Arc<HashMap<String, TracedChannel>>,
    in_flight: Arc<Semaphore>,
    max_deadline: Duration,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("backends", &self.backends.keys()).finish()
    }
}

impl Proxy {
    pub fn new(backends: Backends, config: &Config, guard: Guard, cns: crate::cns::Vouch) -> Self {
        let limits = &config.limits;
        let backends = backends
            .by_domain
            .into_iter()
            .map(|(domain, (_, channel))| (domain, client::traced(channel)))
            .collect();
        Self {
            guard,
            cns,
            backends: Arc::new(backends),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            max_deadline: limits.max_deadline,
        }
    }
}

type Reply = http::Response<tonic::body::Body>;

/// Whether a channel error is the deadline running out.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn reply(status: Status) -> BoxFuture<'static, Result<Reply, Infallible>> {
    Box::pin(futures::future::ready(Ok(status.into_http())))
}

impl<B> Service<http::Request<B>> for Proxy
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Reply;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Reply, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is decided per call (by route and by the in-flight bound), never by queueing.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let Some(channel) = domain_of(path).and_then(|d| self.backends.get(d)).cloned() else {
            return reply(Status::unimplemented(format!("unknown service in {path}")));
        };
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let tls = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let peer = tls
            .map(|t| t.get_ref())
            .or_else(|| req.extensions().get::<TcpConnectInfo>())
            .and_then(|i| i.remote_addr())
            .map(|a| a.ip());
        let cns_cert = (path == CNS_LOGIN)
            .then(|| tls.and_then(|t| t.peer_certs()))
            .flatten()
            .and_then(|certs| certs.first().map(|c| c.to_vec()));
        if let Err(status) = self.guard.admit(path, req.headers(), peer) {
            return reply(status);
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return reply(retry_later(
                Code::ResourceExhausted,
                "the gateway is at capacity; retry shortly",
                "GATEWAY_OVERLOADED",
                DOMAIN,
                Duration::from_millis(500),
            ));
        };
        let deadline = effective_deadline(req.headers(), self.max_deadline);
        let (mut parts, body) = req.into_parts();
        let internal: Vec<_> = parts
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with(INTERNAL_HEADER_PREFIX))
            .cloned()
            .collect();
        for name in internal {
            parts.headers.remove(name);
        }
        // Only now, with whatever the client claimed gone, may the gateway vouch for a CNS card.
        if let Some(cert) = cns_cert {
            self.cns.vouch(&cert, &mut parts.headers);
        }
        let timeout = format!("{}m", deadline.as_millis().max(1));
        parts.headers.insert(
            "grpc-timeout",
            http::HeaderValue::from_str(&timeout).expect("digits and a unit are a valid header"),
        );
        let req = http::Request::from_parts(parts, tonic::body::Body::new(body));
        Box::pin(async move {
            let _permit = permit;
            match tokio::time::timeout(deadline, channel.oneshot(req)).await {
                Ok(Ok(response)) => Ok(response),
                // The channel enforces the `grpc-timeout` it forwards, and says so with this error.
                Ok(Err(e)) if timed_out(&e) => {
                    Ok(Status::deadline_exceeded("deadline exceeded").into_http())
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "backend unreachable");
                    Ok(Status::unavailable("the service is temporarily unavailable; retry")
                        .into_http())
                }
                Err(_) => Ok(Status::deadline_exceeded("deadline exceeded").into_http()),
            }
        })
    }
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

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse_grpc_timeout("123456789S"), None, "at most 8 digits");
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }

    #[test]
    fn deadlines_are_capped_and_defaulted() {
        let cap = Duration::from_secs(30);
        let mut headers = http::HeaderMap::new();
        assert_eq!(effective_deadline(&headers, cap), cap);
        headers.insert("grpc-timeout", http::HeaderValue::from_static("1H"));
        assert_eq!(effective_deadline(&headers, cap), cap);
        headers.insert("grpc-timeout", http::HeaderValue::from_static("100m"));
        assert_eq!(effective_deadline(&headers, cap), Duration::from_millis(100));
    }
}
