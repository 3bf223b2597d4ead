//! The proxy itself: route by package, speak for a CNS card's holder, forward over a traced
//! HTTP/2 channel. Responses stream back untouched, and trailers (the gRPC status) arrive as the
//! backend sent them.

use crate::config::Config;
use crate::overload::Deadline;
use crate::stack::{Gate, Reply};
use futures::future::BoxFuture;
use sportello_platform::client::{self, TracedChannel};
use sportello_platform::health::Dependency;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tower::{Service, ServiceExt};
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

    /// One health dependency per service the gateway exposes (`services`, fully qualified),
    /// asked of the backend that serves it, so that health by name answers for each of them.
    pub fn dependencies<'a>(&self, services: impl IntoIterator<Item = &'a str>) -> Vec<Dependency> {
        let mut deps: Vec<Dependency> = services
            .into_iter()
            .filter_map(|service| {
                let (_, channel) = self.by_domain.get(domain_of(&format!("/{service}/"))?)?;
                Some(Dependency { service: service.to_owned(), channel: channel.clone() })
            })
            .collect();
        deps.sort_by(|a, b| a.service.cmp(&b.service));
        deps
    }
}

/// The backend a call goes to, as [`Route`] chose it.
#[derive(Clone)]
pub struct Backend(TracedChannel);

/// Chooses the backend by the called method's package; a package no backend owns is
/// UNIMPLEMENTED.
#[derive(Clone)]
pub struct Route {
    backends: Arc<HashMap<String, TracedChannel>>,
}

impl Route {
    pub fn new(backends: Backends) -> Self {
        let backends = backends
            .by_domain
            .into_iter()
            .map(|(domain, (_, channel))| (domain, client::traced(channel)))
            .collect();
        Self { backends: Arc::new(backends) }
    }
}

impl Gate for Route {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        let path = req.uri().path();
        let Some(channel) = domain_of(path).and_then(|d| self.backends.get(d)) else {
            return Err(Status::unimplemented(format!("unknown service in {path}")));
        };
        let backend = Backend(channel.clone());
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

/// The hop to the backend [`Route`] chose, with what is left of the deadline.
#[derive(Clone, Copy, Debug)]
pub struct Forward;

impl Service<http::Request<tonic::body::Body>> for Forward {
    type Response = Reply;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Reply, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call takes its own clone of its backend's channel, made ready then.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(Backend(channel)) = req.extensions_mut().remove::<Backend>() else {
            return Box::pin(futures::future::ready(Ok(Status::unimplemented(
                "no backend for this call",
            )
            .into_http())));
        };
        if let Some(deadline) = req.extensions().get::<Deadline>() {
            let timeout = deadline.grpc_timeout();
            req.headers_mut().insert("grpc-timeout", timeout);
        }
        Box::pin(async move {
            match channel.oneshot(req).await {
                Ok(response) => Ok(response),
                // The channel enforces the `grpc-timeout` it forwards, and says so with this error.
                Err(e) if timed_out(&e) => {
                    Ok(Status::deadline_exceeded("deadline exceeded").into_http())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backend unreachable");
                    Ok(Status::unavailable("the service is temporarily unavailable; retry")
                        .into_http())
                }
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
}
