//! The gateway as a tower stack: one layer per concern, outermost first, each placed where it is
//! for a reason given next to it. Most concerns decide on the request alone, admitting or
//! refusing it at once; those are [`Gate`]s, all run by one layer type ([`GateLayer`]), so that
//! what differs between them is only their rule.

use crate::config::Config;
use crate::guard::{Authenticate, Guard, IdentifyCaller, RateLimitByAddress, RateLimitByPrincipal};
use crate::overload::{DeadlineCapLayer, InFlightFair, ReceiveMessageLayer, Shed, ShedEarly};
use crate::policy::Policy;
use crate::proxy::{Backends, Forward, Route, StripInternalHeaders, VouchForCns};
use crate::streams::StreamBoundsLayer;
use bytes::Bytes;
use pin_project_lite::pin_project;
use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;
use tower::{Layer, Service, ServiceBuilder};

/// What every layer of the stack answers: a gRPC response, refusals included.
pub type Reply = http::Response<tonic::body::Body>;

/// The gateway's handling of every call that is not its own (health, reflection): the router's
/// fallback.
pub fn build<B>(
    config: &Config,
    guard: &Guard,
    backends: Backends,
    streaming_requests: HashSet<String>,
    streaming_responses: HashSet<String>,
    shed: Shed,
    cns: crate::cns::Vouch,
) -> impl Service<http::Request<B>, Response = Reply, Error = Infallible, Future: Send + 'static>
       + Clone
       + Send
       + Sync
       + 'static
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = &config.limits;
    ServiceBuilder::new()
        // Outside this stack, applied by `server::run` to every service: the panic guard
        // (outermost, so that nothing below can take the connection down) and the RPC trace
        // span (so that a refused call still shows in its trace).
        //
        // The deadline cap comes first: every wait below it (for a slot, for the request
        // message, for the backend) then ends when the caller's deadline does, and a call
        // without a deadline gets the cap rather than holding anything forever. A live stream
        // gets a cap of its own, its longest life.
        .layer(DeadlineCapLayer::new(
            limits.max_deadline,
            streaming_responses.clone(),
            limits.max_stream_lifetime,
        ))
        // Which calling system the call comes through, if any (its credential or certificate,
        // checked in constant time; a wrong one is refused here): the bounds below count a
        // portal's calls as its citizens' and its own, not as its address's.
        .layer(GateLayer::new(IdentifyCaller::new(guard)))
        // A flood of anonymous calls is refused by its rate before it costs anything else,
        // counters included.
        .layer(GateLayer::new(RateLimitByAddress::new(guard)))
        // A call for no backend is UNIMPLEMENTED, not PERMISSION_DENIED: the caller learns it has
        // the wrong address, not that it lacks rights.
        .layer(GateLayer::new(Route::new(backends)))
        // The policy table decides whether a session is needed at all, and refuses internal
        // methods before a token is even looked at.
        .layer(GateLayer::new(Policy))
        // A method at its limit is refused before its caller's session is checked: under
        // overload most calls are refused, and a refusal must cost next to nothing.
        .layer(GateLayer::new(ShedEarly(shed.clone())))
        // The session the policy asks for (signature, expiry, not logged out, role, level), from
        // headers alone: a caller who may not make the call does not get to upload its message.
        .layer(GateLayer::new(Authenticate::new(guard)))
        // Per principal only once we know who the principal is.
        .layer(GateLayer::new(RateLimitByPrincipal::new(guard)))
        // Calls open per citizen, per calling system, and per address for callers who are
        // neither: nobody can hold more than their share of the gateway, whatever their calls
        // wait for (a body that never ends, a slow backend). After authentication, because the
        // unit is whom the call is for (its principal, known from the token, and its calling
        // system), not where it comes from; before the request message is received, because
        // holding calls open while sending nothing is exactly what it bounds.
        .layer(GateLayer::new(InFlightFair::new(
            limits.max_in_flight_per_principal,
            limits.max_in_flight_per_address,
        )))
        // Live streams per principal and in total, also once the principal is known; their
        // places are held for as long as they stream.
        .layer(StreamBoundsLayer::new(
            streaming_responses,
            limits.max_streams_per_principal,
            limits.max_streams,
        ))
        // The request message, bounded in size and in the time it may take to arrive, is
        // received before a gateway-wide slot is taken, so that a client whose message never
        // ends holds no slot (only its own share, above).
        .layer(ReceiveMessageLayer::new(
            limits.max_request_bytes,
            limits.max_receive_time,
            streaming_requests,
        ))
        // Gateway-wide load shedding: a call that would exceed the bound is refused at once
        // with RESOURCE_EXHAUSTED, never queued; only calls ready to be forwarded count.
        .layer(GateLayer::new(shed))
        // Whatever the client sent under Sportello's internal header names is dropped right
        // before the gateway adds its own, so that nothing forged reaches a backend.
        .layer(GateLayer::new(StripInternalHeaders))
        // The one place the gateway speaks for a caller: a verified CNS card's holder.
        .layer(GateLayer::new(VouchForCns::new(cns)))
        // Innermost: the traced hop to the backend the route chose.
        .service(Forward)
}

/// The client's IP address, as the TCP (or TLS over TCP) connection gives it.
pub fn client_address<B>(req: &http::Request<B>) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = req.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().map(|t| t.get_ref()))
        .and_then(|info| info.remote_addr())
        .map(|addr| addr.ip())
}

/// A rule that admits or refuses a call on its request alone (it may also add to the request:
/// a header, an extension for the layers below). What it returns on admission is kept until the
/// backend has answered: a permit, a count, or nothing.
pub trait Gate {
    type Held: Send + 'static;
    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<Self::Held, Status>;
}

/// A layer that runs one [`Gate`].
#[derive(Clone, Debug)]
pub struct GateLayer<G> {
    gate: G,
}

impl<G> GateLayer<G> {
    pub fn new(gate: G) -> Self {
        Self { gate }
    }
}

impl<S, G: Clone> Layer<S> for GateLayer<G> {
    type Service = Gated<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        Gated { inner, gate: self.gate.clone() }
    }
}

/// See [`GateLayer`].
#[derive(Clone, Debug)]
pub struct Gated<S, G> {
    inner: S,
    gate: G,
}

impl<S, G, B> Service<http::Request<B>> for Gated<S, G>
where
    S: Service<http::Request<B>, Response = Reply, Error = Infallible>,
    G: Gate,
{
    type Response = Reply;
    type Error = Infallible;
    type Future = Admitted<S::Future, G::Held>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.gate.admit(&mut req) {
            Ok(held) => Admitted::Passed { call: self.inner.call(req), held: Some(held) },
            Err(status) => Admitted::Refused { reply: Some(status.into_http()) },
        }
    }
}

pin_project! {
    /// The answer of a [`Gated`] service: the refusal, or the inner call's answer with what the
    /// gate handed out kept until then.
    #[project = AdmittedProj]
    pub enum Admitted<F, H> {
        Refused { reply: Option<Reply> },
        Passed { #[pin] call: F, held: Option<H> },
    }
}

impl<F, H> Future for Admitted<F, H>
where
    F: Future<Output = Result<Reply, Infallible>>,
{
    type Output = Result<Reply, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProj::Refused { reply } => {
                Poll::Ready(Ok(reply.take().expect("polled after completion")))
            }
            AdmittedProj::Passed { call, held } => {
                let reply = std::task::ready!(call.poll(cx));
                drop(held.take());
                Poll::Ready(reply)
            }
        }
    }
}
