//! Metrics (issue 13): each service's `/metrics`, scraped over HTTP while calls go through, and
//! the figures that should move do: calls by RPC and status code, refusals at the gateway, the
//! database pools, the hashing queue and notify's queues.

use crate::helpers::*;
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free port on loopback, for a metrics listener.
pub(crate) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The Prometheus text at `addr`.
pub(crate) async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("metrics listener");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("response");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the sample whose name and labels contain every one of `parts`; 0 if none.
pub(crate) fn value(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test]
async fn the_metrics_each_service_serves_move_with_its_calls_and_refusals() {
    let (gateway_metrics, identity_metrics) = (free_addr(), free_addr());
    let suite = spawn_suite_with(|c| {
        c.gateway.server.metrics_listen = Some(gateway_metrics);
        c.identity.server.metrics_listen = Some(identity_metrics);
        // Few calls per address, so that the test can be refused.
        c.gateway.limits.per_address = gateway::config::RateLimit { per_second: 1, burst: 30 };
    })
    .await;
    let benefits =
        ["rpc_method=\"ListBenefits\"", "service=\"gateway\"", "rpc_grpc_status_code=\"0\""];
    let before = value(&scrape(gateway_metrics).await, "rpc_server_requests_total", &benefits);

    let mut claims = ClaimsServiceClient::new(suite.gateway_channel().await);
    for _ in 0..3 {
        claims.list_benefits(cl::ListBenefitsRequest {}).await.expect("catalogue");
    }
    let token = suite.citizen_token(ROSSI, sportello_platform::auth::Level::Ordinary);
    let bad = cl::GetClaimRequest { claim_id: "not-a-claim".into() };
    claims.get_claim(with_token(&token, bad)).await.expect_err("bad id");
    IdentityServiceClient::new(suite.gateway_channel().await)
        .request_pin(pin_request(ROSSI))
        .await
        .expect("a PIN request");

    let text = scrape(gateway_metrics).await;
    assert_eq!(value(&text, "rpc_server_requests_total", &benefits) - before, 3.0, "{text}");
    let invalid = ["rpc_method=\"GetClaim\"", "rpc_grpc_status_code=\"3\""];
    assert!(value(&text, "rpc_server_requests_total", &invalid) >= 1.0, "errors by code: {text}");
    assert!(value(&text, "rpc_server_duration_seconds_count", &benefits) >= 3.0);
    assert!(text.contains("rpc_server_duration_seconds_bucket"), "latency histograms: {text}");
    assert!(text.contains("rpc_server_active_requests"), "calls in flight: {text}");

    // The same process-wide figures, served by identity-svc on its own port.
    let identity = scrape(identity_metrics).await;
    let pin = ["service=\"identity\"", "rpc_method=\"RequestPin\""];
    assert!(value(&identity, "rpc_server_requests_total", &pin) >= 1.0, "{identity}");
    assert!(identity.contains("sportello_hash_queue_depth"), "the hashing queue: {identity}");
    eventually("the pools and queues published", Duration::from_secs(5), || async {
        let text = scrape(identity_metrics).await;
        value(&text, "db_client_connections_max", &["service=\"identity\""]) > 0.0
            // notify-svc does not dispatch in these tests: the PIN's messages wait.
            && value(&text, "sportello_notify_queue_depth", &[]) >= 1.0
            && text.contains("sportello_notify_oldest_waiting_seconds{channel=\"SMS\"}")
    })
    .await;

    // Past the burst, the gateway refuses calls from this address, and counts them.
    let mut refused = 0;
    for _ in 0..40 {
        if claims.list_benefits(cl::ListBenefitsRequest {}).await.is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0);
    let text = scrape(gateway_metrics).await;
    let limited = value(&text, "sportello_gateway_refused_total", &["reason=\"RATE_LIMITED\""]);
    assert!(limited >= refused as f64, "{limited} counted, {refused} refused: {text}");
}
