//! What keeps the gateway answering when clients ask too much of it: a capped deadline on every
//! call, a bound on the calls one citizen, one calling system or (for callers who are neither)
//! one client address keeps open, a bounded wait for the request message, and a gateway-wide
//! bound on the calls being worked on. Every refusal is immediate; nothing queues.

use crate::adaptive::Limit;
use crate::guard::KnownCaller;
use crate::stack::{client_address, Gate, Reply};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sportello_platform::auth::Claims;
use sportello_platform::error::retry_later;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};
use tower::{Layer, Service, ServiceExt};

const DOMAIN: &str = "gateway.sportello";

/// When the call must be over, as the deadline layer decided it; the hop to the backend passes
/// on what is left of it.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// What is left, as a `grpc-timeout` header value.
    pub fn grpc_timeout(&self) -> http::HeaderValue {
        let left = self.0.saturating_duration_since(Instant::now());
        let value = format!("{}m", left.as_millis().max(1));
        http::HeaderValue::from_str(&value).expect("digits and a unit are a valid header")
    }
}

/// The caller's deadline, capped; the cap when the caller gave none.
fn effective_deadline(headers: &http::HeaderMap, cap: Duration) -> Duration {
    sportello_platform::deadline::requested(headers).map_or(cap, |d| d.min(cap))
}

pub(crate) fn deadline_exceeded() -> Reply {
    Status::deadline_exceeded("deadline exceeded").into_http()
}

/// Ends every call at the caller's deadline, capped at `cap`; a live stream (a method at one
/// of `streams`) at the caller's deadline capped at `stream_cap`, its longest life.
#[derive(Clone, Debug)]
pub struct DeadlineCapLayer {
    cap: Duration,
    streams: Arc<HashSet<String>>,
    stream_cap: Duration,
}

impl DeadlineCapLayer {
    pub fn new(cap: Duration, streams: HashSet<String>, stream_cap: Duration) -> Self {
        Self { cap, streams: Arc::new(streams), stream_cap }
    }
}

impl<S> Layer<S> for DeadlineCapLayer {
    type Service = DeadlineCap<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineCap { inner, caps: self.clone() }
    }
}

/// See [`DeadlineCapLayer`].
#[derive(Clone, Debug)]
pub struct DeadlineCap<S> {
    inner: S,
    caps: DeadlineCapLayer,
}

impl<S, B> Service<http::Request<B>> for DeadlineCap<S>
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let caps = &self.caps;
        let cap = if caps.streams.contains(req.uri().path()) { caps.stream_cap } else { caps.cap };
        let within = effective_deadline(req.headers(), cap);
        req.extensions_mut().insert(Deadline(Instant::now() + within));
        let call = self.inner.call(req);
        Box::pin(async move {
            tokio::time::timeout(within, call).await.unwrap_or_else(|_| Ok(deadline_exceeded()))
        })
    }
}

/// Whose share of the gateway a call is counted in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Unit {
    /// A logged-in principal (a citizen, a staff member), by the subject of its token.
    Principal(String),
    /// A known calling system (a portal backend), by its configured name.
    Caller(Arc<str>),
    /// A client address, for calls of nobody known.
    Address(IpAddr),
}

/// Calls open at once per citizen, per calling system and, for callers that are neither, per
/// client address; see [`InFlightFair::new`].
///
/// The unit of fairness is whoever the call is for, not where it comes from: a portal backend
/// forwards a whole population's calls over a few connections from one address, and many
/// citizens share one address behind a carrier-grade NAT, so an address bound would throttle
/// all of them for the sake of any one. A citizen is bounded as a citizen, whichever address or
/// calling system it comes through; a calling system by a bound sized for it; an address only
/// when nobody is known.
#[derive(Clone, Debug)]
pub struct InFlightFair {
    open: Arc<Mutex<HashMap<Unit, usize>>>,
    per_principal: usize,
    per_address: usize,
}

impl InFlightFair {
    /// At most `per_principal` calls open at once for one principal, at most `per_address` from
    /// one address for anonymous callers; a calling system's bound is its own
    /// ([`KnownCaller::max_in_flight`]).
    pub fn new(per_principal: usize, per_address: usize) -> Self {
        Self {
            open: Arc::default(),
            per_principal: per_principal.max(1),
            per_address: per_address.max(1),
        }
    }

    /// Takes one slot of `unit`, or says which bound refused it.
    fn take(&self, unit: Unit, max: usize) -> Result<Slot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = open.entry(unit.clone()).or_insert(0);
        if *n >= max {
            let (reason, whose) = match unit {
                Unit::Principal(_) => ("TOO_MANY_CALLS_IN_FLIGHT_FOR_CITIZEN", "for this citizen"),
                Unit::Caller(_) => {
                    ("TOO_MANY_CALLS_IN_FLIGHT_FOR_CALLER", "for this calling system")
                }
                Unit::Address(_) => ("TOO_MANY_CALLS_IN_FLIGHT_FROM_ADDRESS", "from this address"),
            };
            metrics::counter!("sportello_gateway_refused_total", "reason" => reason).increment(1);
            return Err(retry_later(
                Code::ResourceExhausted,
                format!("too many calls in flight {whose}; retry shortly"),
                reason,
                DOMAIN,
                Duration::from_millis(500),
            ));
        }
        *n += 1;
        Ok(Slot { open: self.open.clone(), unit })
    }
}

/// One open call of a unit, counted until it is dropped.
#[derive(Debug)]
pub struct Slot {
    open: Arc<Mutex<HashMap<Unit, usize>>>,
    unit: Unit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = open.get_mut(&self.unit) {
            *n -= 1;
            // Forgotten at zero, so that the map holds only units with calls open.
            if *n == 0 {
                open.remove(&self.unit);
            }
        }
    }
}

impl Gate for InFlightFair {
    /// The citizen's slot and the calling system's, as the call has them.
    type Held = (Option<Slot>, Option<Slot>);

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<Self::Held, Status> {
        let principal = req.extensions().get::<Claims>().map(|c| c.sub.clone());
        let caller = req.extensions().get::<KnownCaller>().cloned();
        if principal.is_none() && caller.is_none() {
            let Some(address) = client_address(req) else { return Ok((None, None)) };
            return Ok((Some(self.take(Unit::Address(address), self.per_address)?), None));
        }
        // The citizen first: one citizen over its bound must not take its calling system's
        // slot for a call that is refused anyway.
        let citizen =
            principal.map(|p| self.take(Unit::Principal(p), self.per_principal)).transpose()?;
        let caller =
            caller.map(|c| self.take(Unit::Caller(c.name), c.max_in_flight)).transpose()?;
        Ok((citizen, caller))
    }
}

/// Gateway-wide load shedding: at most so many calls being worked on at once, and at most so
/// many of them of one method. A method answered in one message is bounded by its adaptive
/// limit ([`crate::adaptive`]): as many at once as are answered about as fast as when the suite
/// is not loaded, never more than the fixed bound. A method that streams (a live stream, an
/// export, a bulk import) lives as long as its caller wants, so its time says nothing of load:
/// it keeps the fixed bound.
#[derive(Clone, Debug)]
pub struct Shed {
    slots: Arc<Semaphore>,
    /// The contract's methods, each with its limit; calls of any other path (answered
    /// UNIMPLEMENTED by a backend) share the entry at `""`, so that made-up paths add nothing.
    by_method: Arc<HashMap<String, Mutex<MethodLimit>>>,
}

#[derive(Debug)]
struct MethodLimit {
    limit: Limit,
    /// Whether its answers' times adapt the limit (a unary method's do).
    measured: bool,
}

impl Shed {
    /// `max_in_flight` calls at once in all; of one method at most `per_method`, and for the
    /// methods that neither stream their request nor their answer, as many as are answered in
    /// time.
    pub fn new(
        max_in_flight: usize,
        per_method: usize,
        descriptor_set: &[u8],
    ) -> Result<Self, prost::DecodeError> {
        let now = Instant::now();
        let streaming =
            methods_where(descriptor_set, |m| m.client_streaming() || m.server_streaming())?;
        let every = methods_where(descriptor_set, |_| true)?;
        let by_method = every
            .into_iter()
            .chain([String::new()])
            .map(|path| {
                let measured = !path.is_empty() && !streaming.contains(&path);
                let limit = Limit::new(ADAPTIVE_FLOOR, per_method, now);
                (path, Mutex::new(MethodLimit { limit, measured }))
            })
            .collect();
        Ok(Self {
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            by_method: Arc::new(by_method),
        })
    }

    fn method(&self, path: &str) -> (&str, std::sync::MutexGuard<'_, MethodLimit>) {
        let (path, limit) = self
            .by_method
            .get_key_value(path)
            .or_else(|| self.by_method.get_key_value(""))
            .expect("the entry for other paths is always there");
        (path, limit.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// The calls of one method a limit lets through at once whatever their answers' times: a batch
/// (a group commit of claims) must still be able to form, and one citizen holding all the calls
/// it may (`max_in_flight_per_principal`, 32) must not be able to hold every place there is.
const ADAPTIVE_FLOOR: usize = 64;

/// One call of a method, counted until it is dropped, when its time is given to the method's
/// limit.
#[derive(Debug)]
pub struct MethodSlot {
    shed: Shed,
    path: String,
    since: Instant,
}

impl Drop for MethodSlot {
    fn drop(&mut self) {
        let (_, mut method) = self.shed.method(&self.path);
        let now = Instant::now();
        let took = now.saturating_duration_since(self.since);
        if method.measured {
            method.limit.release(took, now);
        } else {
            method.limit.release_unmeasured();
        }
    }
}

fn method_at_capacity() -> Status {
    metrics::counter!("sportello_gateway_refused_total", "reason" => "METHOD_AT_CAPACITY")
        .increment(1);
    retry_later(
        Code::ResourceExhausted,
        "too many calls of this method in progress; retry shortly",
        "METHOD_AT_CAPACITY",
        DOMAIN,
        Duration::from_millis(500),
    )
}

impl Gate for Shed {
    type Held = (MethodSlot, OwnedSemaphorePermit);

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<Self::Held, Status> {
        // The gateway-wide place first: a call refused for it must not be counted as an answer
        // of its method's (in no time at all, it would hide the method's real answers' times).
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("sportello_gateway_refused_total", "reason" => "GATEWAY_OVERLOADED")
                .increment(1);
            retry_later(
                Code::ResourceExhausted,
                "the gateway is at capacity; retry shortly",
                "GATEWAY_OVERLOADED",
                DOMAIN,
                Duration::from_millis(500),
            )
        })?;
        let method = {
            let (path, mut method) = self.method(req.uri().path());
            if !method.limit.try_acquire() {
                drop(method);
                return Err(method_at_capacity());
            }
            MethodSlot { shed: self.clone(), path: path.to_owned(), since: Instant::now() }
        };
        Ok((method, slot))
    }
}

/// The refusal of a call whose method is at its limit already, before anything costly is done
/// for it: the session's signature check is most of what a refused call costs the gateway, and
/// at three times what the suite can serve, checking the signatures of the calls to be refused
/// took the CPU the refusals themselves were waiting for. The place is taken later, by
/// [`Shed`], once the call is known to be allowed and its message has arrived; this only looks.
#[derive(Clone, Debug)]
pub struct ShedEarly(pub Shed);

impl Gate for ShedEarly {
    type Held = ();

    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        let full = self.0.method(req.uri().path()).1.limit.is_full();
        if full {
            return Err(method_at_capacity());
        }
        Ok(())
    }
}

/// The paths (`/package.Service/Method`) of the contract's methods that stream their request.
pub fn streaming_requests(descriptor_set: &[u8]) -> Result<HashSet<String>, prost::DecodeError> {
    methods_where(descriptor_set, |m| m.client_streaming())
}

/// The paths of the contract's methods that `which` picks.
pub fn methods_where(
    descriptor_set: &[u8],
    which: impl Fn(&prost_types::MethodDescriptorProto) -> bool,
) -> Result<HashSet<String>, prost::DecodeError> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(descriptor_set)?;
    let mut paths = HashSet::new();
    for file in &set.file {
        for service in &file.service {
            for method in service.method.iter().filter(|m| which(m)) {
                paths.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
            }
        }
    }
    Ok(paths)
}

/// Receives the whole request message of a unary call before the call goes on, within
/// `max_bytes` and `max_wait`: for a call that takes one request message, "the request has
/// arrived" and "its body has ended" are the same moment. A method that streams its request
/// (a bulk import, a PIN dispositivo upload) passes through as it streams: the policy and
/// authentication layers above have already let its caller in, the service enforces its own
/// limits as the stream arrives, and the deadline cap bounds it.
#[derive(Clone, Debug)]
pub struct ReceiveMessageLayer {
    max_bytes: usize,
    max_wait: Duration,
    streaming: Arc<HashSet<String>>,
}

impl ReceiveMessageLayer {
    pub fn new(max_bytes: usize, max_wait: Duration, streaming: HashSet<String>) -> Self {
        Self { max_bytes, max_wait, streaming: Arc::new(streaming) }
    }
}

impl<S> Layer<S> for ReceiveMessageLayer {
    type Service = ReceiveMessage<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ReceiveMessage {
            inner,
            max_bytes: self.max_bytes,
            max_wait: self.max_wait,
            streaming: self.streaming.clone(),
        }
    }
}

/// See [`ReceiveMessageLayer`].
#[derive(Clone, Debug)]
pub struct ReceiveMessage<S> {
    inner: S,
    max_bytes: usize,
    max_wait: Duration,
    streaming: Arc<HashSet<String>>,
}

impl<S, B> Service<http::Request<B>> for ReceiveMessage<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Reply, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Reply;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Reply, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service is made ready per call, once the message is in.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        if self.streaming.contains(req.uri().path()) {
            return Box::pin(inner.oneshot(req.map(tonic::body::Body::new)));
        }
        let (parts, body) = req.into_parts();
        let receive = Limited::new(body, self.max_bytes).collect();
        let (max_wait, max_bytes) = (self.max_wait, self.max_bytes);
        Box::pin(async move {
            let message = match tokio::time::timeout(max_wait, receive).await {
                Ok(Ok(message)) => message,
                Ok(Err(e)) if e.is::<LengthLimitError>() => {
                    return Ok(Status::resource_exhausted(format!(
                        "the request message is larger than {max_bytes} bytes"
                    ))
                    .into_http())
                }
                // The client reset the stream: nobody is listening for an answer.
                Ok(Err(_)) => return Ok(Status::cancelled("the request was cancelled").into_http()),
                Err(_) => {
                    return Ok(Status::deadline_exceeded(
                        "the request message did not arrive in time",
                    )
                    .into_http())
                }
            };
            let req = http::Request::from_parts(parts, tonic::body::Body::new(message));
            inner.oneshot(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[test]
    fn one_methods_flood_leaves_the_rest_of_the_gateway_to_other_methods() {
        let shed = Shed::new(4, 2, sportello_proto::FILE_DESCRIPTOR_SET).expect("contract");
        let call = |path: &str| http::Request::builder().uri(path).body(()).expect("request");
        let submit = "/sportello.claims.v1.ClaimsService/SubmitClaim";
        let read = "/sportello.identity.v1.IdentityService/GetProfile";
        let first = shed.admit(&mut call(submit)).expect("first submission");
        let _second = shed.admit(&mut call(submit)).expect("second submission");
        let refused = shed.admit(&mut call(submit)).expect_err("a third of one method");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let _reads = [
            shed.admit(&mut call(read)).expect("a read beside the flood"),
            shed.admit(&mut call(read)).expect("another"),
        ];
        let full = shed.admit(&mut call(read)).expect_err("the gateway is full");
        assert_eq!(full.code(), Code::ResourceExhausted);
        drop(first);
        let _again = shed.admit(&mut call(submit)).expect("a place back once a call ends");
    }

    #[test]
    fn a_method_at_its_limit_is_refused_before_anything_else_is_done_for_the_call() {
        let shed = Shed::new(100, 2, sportello_proto::FILE_DESCRIPTOR_SET).expect("contract");
        let early = ShedEarly(shed.clone());
        let call = |path: &str| http::Request::builder().uri(path).body(()).expect("request");
        let submit = "/sportello.claims.v1.ClaimsService/SubmitClaim";
        early.admit(&mut call(submit)).expect("room: the early look takes no place");
        early.admit(&mut call(submit)).expect("still room");
        let held = [shed.admit(&mut call(submit)), shed.admit(&mut call(submit))];
        let refused = early.admit(&mut call(submit)).expect_err("the method is full");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(reason(&refused), "METHOD_AT_CAPACITY");
        early.admit(&mut call("/sportello.claims.v1.ClaimsService/ListClaims")).expect("another");
        drop(held);
        early.admit(&mut call(submit)).expect("places back");
    }

    #[test]
    fn made_up_methods_share_one_bound_and_add_nothing_to_the_gateways_memory() {
        let shed = Shed::new(100, 2, sportello_proto::FILE_DESCRIPTOR_SET).expect("contract");
        let entries = shed.by_method.len();
        let call = |path: String| http::Request::builder().uri(path).body(()).expect("request");
        let mut held = Vec::new();
        for n in 0..2 {
            held.push(shed.admit(&mut call(format!("/sportello.claims.v1.X/M{n}"))).expect("ok"));
        }
        let refused = shed.admit(&mut call("/sportello.claims.v1.X/Other".into()));
        assert_eq!(refused.expect_err("shared bound").code(), Code::ResourceExhausted);
        assert_eq!(shed.by_method.len(), entries);
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

    #[test]
    fn the_bulk_imports_and_the_document_upload_are_the_only_methods_that_stream_their_requests() {
        let streaming = streaming_requests(sportello_proto::FILE_DESCRIPTOR_SET).expect("set");
        let expected = [
            "/sportello.identity.v1.ResidentsService/ImportResidents".to_owned(),
            "/sportello.claims.v1.ClaimsBackOfficeService/ImportRegistry".to_owned(),
            "/sportello.identity.v1.PinConversionService/UploadConversionDocuments".to_owned(),
        ];
        assert_eq!(streaming, HashSet::from(expected));
    }

    /// Answers with the size of the request message it got.
    fn echo_size() -> impl Service<
        http::Request<tonic::body::Body>,
        Response = Reply,
        Error = Infallible,
        Future = BoxFuture<'static, Result<Reply, Infallible>>,
    > + Clone {
        tower::service_fn(|req: http::Request<tonic::body::Body>| -> BoxFuture<'static, _> {
            Box::pin(async move {
                let bytes = req.into_body().collect().await.expect("body").to_bytes();
                Ok(Status::ok(bytes.len().to_string()).into_http())
            })
        })
    }

    fn message_of(reply: &Reply) -> (String, String) {
        let header = |name| {
            reply
                .headers()
                .get(name)
                .map(|v| v.to_str().expect("ascii").to_owned())
                .unwrap_or_default()
        };
        (header("grpc-status"), header("grpc-message"))
    }

    #[tokio::test]
    async fn the_whole_request_message_reaches_the_backend() {
        let layer = ReceiveMessageLayer::new(100, Duration::from_secs(1), HashSet::new());
        let req = http::Request::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 3, 1, 2, 3])));
        let reply = layer.layer(echo_size()).oneshot(req).await.expect("reply");
        assert_eq!(message_of(&reply), ("0".into(), "8".into()));
    }

    #[tokio::test]
    async fn a_request_message_too_large_is_refused() {
        let layer = ReceiveMessageLayer::new(4, Duration::from_secs(1), HashSet::new());
        let req = http::Request::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 3, 1, 2, 3])));
        let reply = layer.layer(echo_size()).oneshot(req).await.expect("reply");
        assert_eq!(message_of(&reply).0, (Code::ResourceExhausted as i32).to_string());
    }

    #[tokio::test]
    async fn a_request_message_that_never_ends_is_given_up_on() {
        let layer = ReceiveMessageLayer::new(100, Duration::from_millis(50), HashSet::new());
        let never = futures::stream::pending::<Result<http_body::Frame<Bytes>, Infallible>>();
        let req = http::Request::new(StreamBody::new(never));
        let reply = layer.layer(echo_size()).oneshot(req).await.expect("reply");
        assert_eq!(message_of(&reply).0, (Code::DeadlineExceeded as i32).to_string());
    }

    fn from(ip: [u8; 4]) -> http::Request<()> {
        let mut req = http::Request::new(());
        let addr = std::net::SocketAddr::from((ip, 4000));
        req.extensions_mut().insert(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(addr),
        });
        req
    }

    fn of_citizen(mut req: http::Request<()>, cf: &str) -> http::Request<()> {
        use sportello_platform::auth::{Amr, Level, Role};
        req.extensions_mut().insert(Claims {
            iss: "sportello".into(),
            sub: cf.into(),
            role: Role::Citizen,
            level: Level::Simplified,
            amr: Amr::Pin,
            sid: format!("session of {cf}"),
            iat: 0,
            exp: 0,
            acr: None,
        });
        req
    }

    fn through(mut req: http::Request<()>, caller: &str, max: usize) -> http::Request<()> {
        req.extensions_mut().insert(KnownCaller { name: caller.into(), max_in_flight: max });
        req
    }

    fn reason(status: &Status) -> String {
        use tonic_types::StatusExt;
        status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
    }

    #[test]
    fn an_anonymous_address_holds_at_most_its_share_of_calls_and_gets_them_back() {
        let bound = InFlightFair::new(100, 2);
        let first = bound.admit(&mut from([10, 0, 0, 1])).expect("first");
        let _second = bound.admit(&mut from([10, 0, 0, 1])).expect("second");
        let refused = bound.admit(&mut from([10, 0, 0, 1])).expect_err("third");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(reason(&refused), "TOO_MANY_CALLS_IN_FLIGHT_FROM_ADDRESS");
        bound.admit(&mut from([10, 0, 0, 2])).expect("another address is not affected");
        drop(first);
        bound.admit(&mut from([10, 0, 0, 1])).expect("a slot came back");
    }

    #[test]
    fn citizens_behind_one_address_are_each_bounded_as_citizens_not_as_their_address() {
        let bound = InFlightFair::new(2, 1);
        let nat = [100, 64, 0, 1];
        let mut held = Vec::new();
        for n in 0..50 {
            let cf = format!("CITIZEN{n:09}");
            held.push(bound.admit(&mut of_citizen(from(nat), &cf)).expect("first call"));
            held.push(bound.admit(&mut of_citizen(from(nat), &cf)).expect("second call"));
        }
        let refused =
            bound.admit(&mut of_citizen(from(nat), "CITIZEN000000007")).expect_err("third");
        assert_eq!(reason(&refused), "TOO_MANY_CALLS_IN_FLIGHT_FOR_CITIZEN");
        bound.admit(&mut of_citizen(from(nat), "SOMEONEELSE00000")).expect("someone else");
    }

    #[test]
    fn a_calling_system_is_bounded_by_its_own_share_and_a_citizen_through_it_by_theirs() {
        let bound = InFlightFair::new(1, 1);
        let portal = [10, 1, 1, 1];
        let one = bound.admit(&mut through(of_citizen(from(portal), "A"), "portal", 3)).expect("A");
        let refused = bound
            .admit(&mut through(of_citizen(from(portal), "A"), "portal", 3))
            .expect_err("A's second");
        assert_eq!(reason(&refused), "TOO_MANY_CALLS_IN_FLIGHT_FOR_CITIZEN");
        // A's refusal took none of the portal's share: B, C and a login (no principal yet) fit.
        let _b = bound.admit(&mut through(of_citizen(from(portal), "B"), "portal", 3)).expect("B");
        let _login = bound.admit(&mut through(from(portal), "portal", 3)).expect("a login");
        let refused = bound
            .admit(&mut through(of_citizen(from(portal), "C"), "portal", 3))
            .expect_err("the portal's fourth");
        assert_eq!(reason(&refused), "TOO_MANY_CALLS_IN_FLIGHT_FOR_CALLER");
        // And the refusal of the caller gave back the slot C had taken as a citizen.
        drop(one);
        bound.admit(&mut through(of_citizen(from(portal), "C"), "portal", 3)).expect("C");
        // The portal's address is not bounded as an anonymous address is.
        bound.admit(&mut from(portal)).expect("an anonymous call from the portal's address");
    }
}
