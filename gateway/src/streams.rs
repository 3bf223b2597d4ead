//! Live streams (WatchMyClaims, WatchMyPinRequest, the contact center's WatchMessage): calls
//! that stay open for as long as someone watches. The deadline cap meant for ordinary calls
//! would cut them, so they get their own, a maximum lifetime (the backend also ends them when
//! their session or token ends); and since each one holds memory in the gateway and its backend
//! for its whole life, they are bounded per principal and in total, beyond which a new one is
//! refused at once with RESOURCE_EXHAUSTED and RetryInfo. A stream's place is held until its
//! response body ends or is dropped, not only until its headers are sent.

use crate::stack::Reply;
use bytes::Bytes;
use futures::future::BoxFuture;
use sportello_platform::auth::Claims;
use sportello_platform::error::retry_later;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::{Code, Status};
use tower::{Layer, Service};

const DOMAIN: &str = "gateway.sportello";

/// How soon a refused stream may be tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The paths (`/package.Service/Method`) of the contract's methods that stream their response.
pub fn streaming_responses(descriptor_set: &[u8]) -> Result<HashSet<String>, prost::DecodeError> {
    crate::overload::methods_where(descriptor_set, |m| m.server_streaming())
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_principal: HashMap<String, usize>,
}

/// Open streams, per principal and in total; see [`StreamBoundsLayer::new`].
#[derive(Clone, Debug)]
pub struct StreamBoundsLayer {
    paths: Arc<HashSet<String>>,
    open: Arc<Mutex<Open>>,
    per_principal: usize,
    total: usize,
}

impl StreamBoundsLayer {
    /// At most `per_principal` streams open at once for one principal (by its subject: a
    /// citizen's fiscal code), and `total` across the gateway, among the methods at `paths`.
    pub fn new(paths: HashSet<String>, per_principal: usize, total: usize) -> Self {
        Self {
            paths: Arc::new(paths),
            open: Arc::default(),
            per_principal: per_principal.max(1),
            total: total.max(1),
        }
    }

    /// Takes a place for a stream of `principal`, or says why not.
    fn admit(&self, principal: &str) -> Result<StreamSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.total {
            metrics::counter!("sportello_gateway_refused_total", "reason" => "STREAMS_AT_CAPACITY")
                .increment(1);
            return Err(retry_later(
                Code::ResourceExhausted,
                "the gateway holds as many live streams as it may; retry later",
                "STREAMS_AT_CAPACITY",
                DOMAIN,
                RETRY_AFTER,
            ));
        }
        let mine = open.by_principal.entry(principal.to_owned()).or_insert(0);
        if *mine >= self.per_principal {
            metrics::counter!("sportello_gateway_refused_total", "reason" => "TOO_MANY_STREAMS")
                .increment(1);
            return Err(retry_later(
                Code::ResourceExhausted,
                format!(
                    "at most {} live streams at once per person; close one",
                    self.per_principal
                ),
                "TOO_MANY_STREAMS",
                DOMAIN,
                RETRY_AFTER,
            ));
        }
        *mine += 1;
        open.total += 1;
        Ok(StreamSlot { open: self.open.clone(), principal: principal.to_owned() })
    }

    /// Streams open now (for tests).
    pub fn open(&self) -> usize {
        self.open.lock().map(|o| o.total).unwrap_or_default()
    }
}

/// One open stream's place, given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    open: Arc<Mutex<Open>>,
    principal: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_principal.get_mut(&self.principal) {
            *n -= 1;
            // Forgotten at zero: the map holds only principals with streams open.
            if *n == 0 {
                open.by_principal.remove(&self.principal);
            }
        }
    }
}

impl<S> Layer<S> for StreamBoundsLayer {
    type Service = StreamBounds<S>;
    fn layer(&self, inner: S) -> Self::Service {
        StreamBounds { inner, bounds: self.clone() }
    }
}

/// See [`StreamBoundsLayer`].
#[derive(Clone, Debug)]
pub struct StreamBounds<S> {
    inner: S,
    bounds: StreamBoundsLayer,
}

impl<S, B> Service<http::Request<B>> for StreamBounds<S>
where
    S: Service<http::Request<B>, Response = Reply, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Reply, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !self.bounds.paths.contains(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        // Every streaming method takes a session (the policy table says so): the layers above
        // have put its claims on the request.
        let principal = req.extensions().get::<Claims>().map(|c| c.sub.clone());
        let slot = match principal.as_deref().map(|p| self.bounds.admit(p)) {
            Some(Ok(slot)) => slot,
            Some(Err(status)) => return Box::pin(futures::future::ready(Ok(status.into_http()))),
            None => {
                let status = Status::unauthenticated("a live stream needs a session");
                return Box::pin(futures::future::ready(Ok(status.into_http())));
            }
        };
        let call = self.inner.call(req);
        Box::pin(async move {
            let reply = call.await?;
            Ok(reply.map(|body| tonic::body::Body::new(Holding { body, _slot: slot })))
        })
    }
}

pin_project_lite::pin_project! {
    /// A stream's response body, holding its place until it ends or is dropped.
    struct Holding {
        #[pin]
        body: tonic::body::Body,
        _slot: StreamSlot,
    }
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_holds_at_most_its_streams_and_the_gateway_its_total() {
        let bounds = StreamBoundsLayer::new(HashSet::new(), 2, 3);
        let a1 = bounds.admit("A").expect("first of A");
        let _a2 = bounds.admit("A").expect("second of A");
        let refused = bounds.admit("A").expect_err("third of A");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let _b1 = bounds.admit("B").expect("B is not affected by A");
        let full = bounds.admit("C").expect_err("the gateway is full");
        assert_eq!(full.code(), Code::ResourceExhausted);
        drop(a1);
        let _c = bounds.admit("C").expect("a place came back");
        assert_eq!(bounds.open(), 3);
    }

    #[test]
    fn the_live_streams_are_the_methods_that_stream_their_responses() {
        let streams = streaming_responses(sportello_proto::FILE_DESCRIPTOR_SET).expect("set");
        assert!(streams.contains("/sportello.claims.v1.ClaimsService/WatchMyClaims"));
        assert!(streams.contains("/sportello.notify.v1.NotifyService/WatchMessage"));
        assert!(!streams.contains("/sportello.claims.v1.ClaimsService/ListClaims"));
    }
}
