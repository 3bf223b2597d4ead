//! The gateway under a client that opens calls and never finishes sending them: it holds no
//! gateway-wide slot while its message has not arrived, it cannot hold more calls open than its
//! share (a citizen's, its calling system's, or for nobody known its address's), and it is given
//! up on after a bounded time; everyone else is still served. A portal's many citizens from one
//! address are bounded as citizens and as one calling system, not as one address.

use crate::helpers::*;
use sportello_platform::auth::Level;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::claims::v1::{
    ListBenefitsRequest, ListBenefitsResponse, ListClaimsRequest, SubmitClaimRequest,
    SubmitClaimResponse,
};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

const LIST_BENEFITS: &str = "/sportello.claims.v1.ClaimsService/ListBenefits";
const SUBMIT_CLAIM: &str = "/sportello.claims.v1.ClaimsService/SubmitClaim";

/// The portal backend's credential, as the tests' gateway is configured to know it.
const PORTAL_SECRET: &str = "5b2c0e8f4a9d1b7e3c6f0a2d8e4b9c1f7a3e5d0b6c2f8a4e9d1b7c3f5a0e2d8b";

fn with_portal(c: &mut Configs) {
    c.gateway.callers.insert("portal".into(), gateway::config::Caller::with_secret(PORTAL_SECRET));
}

/// Adds the portal's credential to a request it forwards.
fn through_portal<T>(mut request: tonic::Request<T>) -> tonic::Request<T> {
    let credential = format!("portal:{PORTAL_SECRET}").parse().expect("ascii");
    request.metadata_mut().insert("x-sportello-caller", credential);
    request
}

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

/// A claim of citizen `token` through the portal whose request message never ends: a claimant
/// whose call is open at the gateway (authenticated, counted) and not yet done.
fn never_ending_claim(channel: Channel, token: String) -> JoinHandle<Result<(), tonic::Status>> {
    tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<SubmitClaimRequest, SubmitClaimResponse>::default();
        let never = futures::stream::pending::<SubmitClaimRequest>();
        let path = http::uri::PathAndQuery::from_static(SUBMIT_CLAIM);
        let request = through_portal(with_token(&token, never));
        grpc.client_streaming(request, path, codec).await.map(|_| ())
    })
}

/// A citizen's own claims through the portal: a cheap authenticated read.
async fn list_own_claims(
    suite: &Suite,
    channel: Channel,
    fiscal_code: &str,
) -> Result<(), tonic::Status> {
    let token = suite.citizen_token(fiscal_code, Level::Simplified);
    let request = through_portal(with_token(&token, ListClaimsRequest::default()));
    ClaimsServiceClient::new(channel).list_claims(request).await.map(|_| ())
}

/// The `n`-th of many distinct, well-formed fiscal codes.
fn fiscal_code(n: usize) -> String {
    use sportello_domain::codice_fiscale::{compute, Sex};
    let born = chrono::NaiveDate::from_ymd_opt(1950, 1, 1).expect("date");
    compute("Rossi", "Mario", born + chrono::Days::new(n as u64), Sex::Male, "H501")
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
        (Code::ResourceExhausted, "TOO_MANY_CALLS_IN_FLIGHT_FROM_ADDRESS")
    );
    assert!(refused.get_details_retry_info().is_some(), "it says when to retry");
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

#[tokio::test]
async fn a_thousand_claimants_through_one_calling_system_from_one_address_are_not_refused_for_the_address(
) {
    let suite = spawn_suite_with(|c| {
        with_portal(c);
        // Every claim opened below is still open when the last one is.
        c.gateway.limits.max_receive_time = Duration::from_secs(60);
    })
    .await;
    let address_bound = gateway::config::Limits::default().max_in_flight_per_address;
    assert!(address_bound < 1024, "more than one anonymous address may hold");
    // The portal's few connections, as its backend keeps them.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(suite.gateway_channel().await);
    }
    let claims: Vec<_> = (0..1024)
        .map(|n| {
            let token = suite.citizen_token(&fiscal_code(n), Level::Simplified);
            never_ending_claim(channels[n % channels.len()].clone(), token)
        })
        .collect();
    // Long enough for every claim's headers to reach the gateway.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused: Vec<_> = claims.iter().filter(|c| c.is_finished()).collect();
    assert!(refused.is_empty(), "{} of the 1,024 claimants were answered early", refused.len());
    // One more citizen through the portal is served while the 1,024 are open.
    list_own_claims(&suite, channels[0].clone(), &fiscal_code(5000))
        .await
        .expect("the 1,025th citizen through the portal");
    for claim in claims {
        claim.abort();
    }
}

#[tokio::test]
async fn a_citizen_holding_more_than_their_share_is_refused_while_other_citizens_through_the_same_portal_go_through(
) {
    let suite = spawn_suite_with(|c| {
        with_portal(c);
        c.gateway.limits.max_in_flight_per_principal = 4;
    })
    .await;
    let channel = suite.gateway_channel().await;
    let greedy = fiscal_code(1);
    let token = suite.citizen_token(&greedy, Level::Simplified);
    let held: Vec<_> = (0..4).map(|_| never_ending_claim(channel.clone(), token.clone())).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let refused =
        list_own_claims(&suite, channel.clone(), &greedy).await.expect_err("a fifth call");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::ResourceExhausted, "TOO_MANY_CALLS_IN_FLIGHT_FOR_CITIZEN")
    );
    assert!(refused.get_details_retry_info().is_some(), "it says when to retry");
    assert!(started.elapsed() < Duration::from_millis(500), "refused at once");
    for n in 2..10 {
        list_own_claims(&suite, channel.clone(), &fiscal_code(n)).await.expect("another citizen");
    }
    assert!(held.iter().all(|call| !call.is_finished()), "the greedy citizen's calls are open");
    for call in held {
        call.abort();
    }
    eventually("the citizen's calls to be given back", Duration::from_secs(5), || async {
        list_own_claims(&suite, channel.clone(), &greedy).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_calling_system_credential_that_is_unknown_or_wrong_is_unauthenticated() {
    let suite = spawn_suite_with(with_portal).await;
    let mut claims = ClaimsServiceClient::new(suite.gateway_channel().await);
    let wrong = format!("portal:{}", PORTAL_SECRET.replace('5', "6"));
    let unknown = format!("elsewhere:{PORTAL_SECRET}");
    for credential in [wrong.as_str(), &unknown, "portal", PORTAL_SECRET] {
        let mut request = tonic::Request::new(ListBenefitsRequest {});
        request.metadata_mut().insert("x-sportello-caller", credential.parse().expect("ascii"));
        let refused = claims.list_benefits(request).await.expect_err("refused");
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::Unauthenticated, "UNKNOWN_CALLER"),
            "{credential}"
        );
    }
    let request = through_portal(tonic::Request::new(ListBenefitsRequest {}));
    claims.list_benefits(request).await.expect("the right credential");
}

#[tokio::test]
async fn anonymous_callers_from_one_address_keep_the_address_bound_beside_a_portal() {
    let suite = spawn_suite_with(|c| {
        with_portal(c);
        c.gateway.limits.max_in_flight_per_address = 8;
    })
    .await;
    let stalled = stall(&suite, 8).await;
    let (reply, _) = list_benefits(&suite).await;
    let refused = reply.expect_err("the ninth anonymous call from the address");
    assert_eq!(reason(&refused), "TOO_MANY_CALLS_IN_FLIGHT_FROM_ADDRESS");
    // The portal, from the same address, is not an anonymous caller.
    let channel = suite.gateway_channel().await;
    list_own_claims(&suite, channel.clone(), &fiscal_code(1))
        .await
        .expect("a citizen via the portal");
    let request = through_portal(tonic::Request::new(ListBenefitsRequest {}));
    ClaimsServiceClient::new(channel)
        .list_benefits(request)
        .await
        .expect("a public call via the portal");
    for call in stalled {
        call.abort();
    }
}
