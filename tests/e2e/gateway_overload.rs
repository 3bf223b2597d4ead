//! The gateway under a client that opens calls and never finishes sending them: it holds no
//! gateway-wide slot while its message has not arrived, it cannot hold more calls open than its
//! address's share, and it is given up on after a bounded time; everyone else is still served.

use crate::helpers::*;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::claims::v1::{ListBenefitsRequest, ListBenefitsResponse};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

const LIST_BENEFITS: &str = "/sportello.claims.v1.ClaimsService/ListBenefits";

/// A ListBenefits call whose request body never ends, as a client that stalls after the
/// headers (or a slowloris) makes it; it lasts until the gateway answers or the task is aborted.
fn never_ending_call(channel: Channel) -> JoinHandle<Result<(), tonic::Status>> {
    tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<ListBenefitsRequest, ListBenefitsResponse>::default();
        let never = futures::stream::pending::<ListBenefitsRequest>();
        let path = http::uri::PathAndQuery::from_static(LIST_BENEFITS);
        grpc.client_streaming(tonic::Request::new(never), path, codec).await.map(|_| ())
    })
}

/// `n` never-ending calls, spread over a few connections like a real attacker's.
async fn stall(suite: &Suite, n: usize) -> Vec<JoinHandle<Result<(), tonic::Status>>> {
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(suite.gateway_channel().await);
    }
    let calls = (0..n).map(|i| never_ending_call(channels[i % channels.len()].clone())).collect();
    // Long enough for every call's headers to reach the gateway.
    tokio::time::sleep(Duration::from_millis(500)).await;
    calls
}

async fn list_benefits(suite: &Suite) -> (Result<(), tonic::Status>, Duration) {
    let mut claims = ClaimsServiceClient::new(suite.gateway_channel().await);
    let started = Instant::now();
    let reply = claims.list_benefits(ListBenefitsRequest {}).await.map(|_| ());
    (reply, started.elapsed())
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

#[tokio::test]
async fn calls_whose_message_never_arrives_hold_no_gateway_slot_and_a_patient_client_is_served() {
    // Far fewer gateway-wide slots than stalled calls: were a slot taken before the message
    // arrived, every other client would be refused.
    let suite = spawn_suite_with(|c| c.gateway.limits.max_in_flight = 4).await;
    let stalled = stall(&suite, 40).await;
    for _ in 0..10 {
        let (reply, took) = list_benefits(&suite).await;
        reply.expect("a patient client is served");
        assert!(took < Duration::from_secs(2), "served promptly, not after {took:?}");
    }
    assert!(stalled.iter().all(|call| !call.is_finished()), "the stalled calls are still open");
    for call in stalled {
        call.abort();
    }
}

#[tokio::test]
async fn an_address_holding_its_share_of_calls_open_is_refused_at_once_until_it_lets_go() {
    let suite = spawn_suite_with(|c| c.gateway.limits.max_in_flight_per_address = 8).await;
    let stalled = stall(&suite, 8).await;
    let (reply, took) = list_benefits(&suite).await;
    let refused = reply.expect_err("the ninth call from the same address");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::ResourceExhausted, "TOO_MANY_CALLS_IN_FLIGHT")
    );
    assert!(took < Duration::from_millis(500), "refused at once, not after {took:?}");
    assert!(stalled.iter().all(|call| !call.is_finished()), "the stalled calls are still open");
    // A client that hangs up gives its calls back.
    for call in stalled {
        call.abort();
    }
    eventually("the address's calls to be given back", Duration::from_secs(5), || async {
        list_benefits(&suite).await.0.is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_request_message_that_never_arrives_is_given_up_on_and_its_slot_given_back() {
    let suite = spawn_suite_with(|c| {
        c.gateway.limits.max_receive_time = Duration::from_millis(300);
        c.gateway.limits.max_in_flight_per_address = 1;
    })
    .await;
    let started = Instant::now();
    let stalled = never_ending_call(suite.gateway_channel().await);
    let status = stalled.await.expect("task").expect_err("never completes");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(3), "given up on after the receive time");
    list_benefits(&suite).await.0.expect("the address's one call is free again");
}
