//! A caller's deadline, at every server of the suite: a call still running when the deadline
//! its caller sent runs out is answered DEADLINE_EXCEEDED, whether it came through the gateway
//! or straight to a service (as the services call each other).

use crate::helpers::*;
use sportello_proto::claims::v1::{ListBenefitsRequest, ListBenefitsResponse};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic::Code;

/// A connection to `addr` over plain HTTP/2. A tonic channel would end the call itself at the
/// deadline (as CANCELLED); this one leaves it to the server, whose answer the test is about.
async fn leaves_deadlines_to_the_server(
    addr: SocketAddr,
) -> impl tonic::client::GrpcService<
    tonic::body::Body,
    ResponseBody = hyper::body::Incoming,
    Error = hyper::Error,
> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let mut send = send.clone();
        async move { send.send_request(req).await }
    })
}

/// A call to `path` at `addr` whose request message never ends, so that it runs until its
/// deadline.
async fn never_ending_call(
    addr: SocketAddr,
    path: &'static str,
    deadline: Duration,
) -> Result<(), tonic::Status> {
    let origin = url(addr).parse().expect("origin");
    let mut grpc =
        tonic::client::Grpc::with_origin(leaves_deadlines_to_the_server(addr).await, origin);
    grpc.ready().await.map_err(|_| tonic::Status::unavailable("connection closed"))?;
    // Any message type serves: the server waits for the message before decoding it.
    let codec = tonic_prost::ProstCodec::<ListBenefitsRequest, ListBenefitsResponse>::default();
    let mut request = tonic::Request::new(futures::stream::pending::<ListBenefitsRequest>());
    request.set_timeout(deadline);
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.client_streaming(request, path, codec).await.map(|_| ())
}

#[tokio::test]
async fn a_call_straight_to_any_service_that_outlives_its_deadline_gets_deadline_exceeded() {
    let suite = spawn_suite().await;
    let calls = [
        (suite.claims.addr, "/sportello.claims.v1.ClaimsService/ListBenefits"),
        (suite.identity.addr, "/sportello.identity.v1.IdentityService/RequestPin"),
        (suite.notify.addr, "/sportello.notify.v1.NotifyService/EnqueueMessage"),
        (suite.gateway.addr, "/sportello.claims.v1.ClaimsService/ListBenefits"),
    ];
    for (addr, path) in calls {
        for deadline in [Duration::from_millis(1), Duration::from_millis(150)] {
            let started = Instant::now();
            let status =
                never_ending_call(addr, path, deadline).await.expect_err("the message never ends");
            assert_eq!(status.code(), Code::DeadlineExceeded, "{path} at {addr}: {status:?}");
            assert!(started.elapsed() < Duration::from_secs(3), "answered at the deadline");
        }
    }
}
