//! One citizen action is one trace: `sportello up` runs each service as its own process with its
//! own `service.name`, and a PIN request shows as gateway → identity → notify in one trace.

use crate::collector::{Collector, ReceivedSpan};
use crate::helpers::*;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

/// `sportello up` as a user runs it, on free ports, exporting to `otlp`.
async fn sportello_up(db: &TestDb, otlp: SocketAddr) -> (tokio::process::Child, SocketAddr) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"));
    cmd.args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(db.data_dir());
    if db.is_postgres() {
        cmd.arg("--database-url").arg(db.url("any"));
    }
    for svc in ["IDENTITY", "CLAIMS", "NOTIFY"] {
        cmd.env(format!("SPORTELLO_{svc}__LISTEN"), "127.0.0.1:0");
    }
    cmd.env("SPORTELLO_CONFIG", db.data_dir().join("absent.toml"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("sportello up");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let gateway = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if let Some(addr) = line.strip_prefix("sportello-listening gateway ") {
                return addr.trim().parse::<SocketAddr>().expect("address");
            }
        }
        panic!("sportello up exited before the gateway listened");
    })
    .await
    .expect("the suite starts");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, gateway)
}

fn parent_of<'a>(spans: &'a [ReceivedSpan], span: &ReceivedSpan) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span_id == span.parent_span_id)
}

#[tokio::test]
async fn one_pin_request_is_one_trace_from_gateway_through_identity_to_notify() {
    let db = TestDb::new().await;
    let stop = CancellationToken::new();
    let (collector, otlp) = Collector::start(stop.clone()).await;
    let (mut suite, gateway) = sportello_up(&db, otlp).await;
    wait_for_status(gateway, "", ServingStatus::Serving).await;

    let mut identity = IdentityServiceClient::new(connect(gateway).await);
    identity.request_pin(pin_request("RSSMRA85T10A562S")).await.expect("request accepted");

    let is_notify_server = |s: &ReceivedSpan| {
        s.service == "sportello-notify" && s.attribute("rpc.method") == Some("EnqueueMessage")
    };
    eventually("the spans of all three services", Duration::from_secs(20), || {
        let spans = collector.spans();
        async move {
            spans.iter().any(is_notify_server)
                && spans.iter().any(|s| s.service == "sportello-gateway")
        }
    })
    .await;
    // Walk from notify's server span up to the root: every hop must be there.
    let spans = collector.spans();
    let leaf = spans.iter().find(|s| is_notify_server(s)).expect("notify span");
    let mut chain = vec![leaf];
    while let Some(parent) = parent_of(&spans, chain.last().expect("non-empty")) {
        chain.push(parent);
    }
    let hops: Vec<(&str, &str)> =
        chain.iter().rev().map(|s| (s.service.as_str(), s.name.as_str())).collect();
    let root = chain.last().expect("root");
    assert!(root.parent_span_id.is_empty(), "the chain reaches the root: {hops:?}");
    assert!(chain.iter().all(|s| s.trace_id == leaf.trace_id), "one trace id");
    let services: Vec<&str> = {
        let mut seen: Vec<&str> = Vec::new();
        for (service, _) in &hops {
            if seen.last() != Some(service) {
                seen.push(service);
            }
        }
        seen
    };
    assert_eq!(
        services,
        ["sportello-gateway", "sportello-identity", "sportello-notify"],
        "{hops:?}"
    );
    assert_eq!(root.name, "sportello.identity.v1.IdentityService/RequestPin");
    assert_eq!(root.attribute("rpc.system"), Some("grpc"));

    // Ctrl-C/SIGTERM stops the whole suite cleanly.
    let pid = suite.id().expect("pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
        .expect("signal");
    let status = tokio::time::timeout(Duration::from_secs(30), suite.wait())
        .await
        .expect("stops in time")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
    stop.cancel();
}
