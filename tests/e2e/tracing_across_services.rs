//! One citizen action is one trace: `sportello up` runs each service as its own process with its
//! own `service.name`, and a PIN request shows as gateway → identity → notify in one trace.

use crate::collector::{Collector, ReceivedSpan};
use crate::helpers::*;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

/// A running `sportello up` and everything it wrote to stderr (all four services' logs).
pub struct Up {
    child: tokio::process::Child,
    pub gateway: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl Up {
    /// The process id of `sportello up` itself.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// What the suite has written to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("lock").clone()
    }

    /// Waits (at most `within`) for `up` to exit by itself; its status and its logs.
    pub async fn exits_within(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("exits in time")
            .expect("exit status");
        tokio::time::sleep(Duration::from_millis(200)).await;
        (status, self.logs())
    }

    /// Stops the suite as Ctrl-C/SIGTERM would, and says whether it exited cleanly.
    pub async fn stop(mut self) -> (bool, String) {
        let pid = self.child.id().expect("pid") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
            .expect("signal");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("stops in time")
            .expect("exit status");
        // Let the log pump drain what the children wrote last.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let logs = self.logs.lock().expect("lock").clone();
        (status.success(), logs)
    }
}

impl Drop for Up {
    /// A test that fails leaves no service running: SIGKILL to the services, then to `up`.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            for pid in self.child.id().map(children_of).unwrap_or_default() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = self.child.start_kill();
        }
    }
}

/// The process ids of `pid`'s children.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<_>>())
        .collect()
}

/// `sportello up` as a user runs it, on free ports, exporting to `otlp`.
async fn sportello_up(db: &TestDb, otlp: SocketAddr, log_filter: &str) -> Up {
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("RUST_LOG", log_filter.into()),
    ];
    sportello_up_with(db, &env).await
}

/// `sportello up` as a user runs it, on embedded defaults and free ports, with `env` besides.
pub async fn sportello_up_with(db: &TestDb, env: &[(&str, String)]) -> Up {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"));
    cmd.args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(db.data_dir());
    if db.is_postgres() {
        cmd.arg("--database-url").arg(db.url("any"));
    }
    for svc in ["IDENTITY", "CLAIMS", "NOTIFY"] {
        cmd.env(format!("SPORTELLO_{svc}__LISTEN"), "127.0.0.1:0");
    }
    // Leading a process group of its own, as in a terminal (tests may signal the group).
    cmd.process_group(0);
    cmd.env("SPORTELLO_CONFIG", db.data_dir().join("absent.toml"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("sportello up");
    let logs = Arc::new(Mutex::new(String::new()));
    let mut errors = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = errors.next_line().await {
            eprintln!("{line}");
            let mut all = sink.lock().expect("lock");
            all.push_str(&line);
            all.push('\n');
        }
    });
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
    Up { child, gateway, logs }
}

fn parent_of<'a>(spans: &'a [ReceivedSpan], span: &ReceivedSpan) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span_id == span.parent_span_id)
}

/// The spans from `leaf` up through its parents, and whether that reaches a root span.
fn chain<'a>(spans: &'a [ReceivedSpan], leaf: &'a ReceivedSpan) -> (Vec<&'a ReceivedSpan>, bool) {
    let mut chain = vec![leaf];
    while let Some(parent) = parent_of(spans, chain[chain.len() - 1]) {
        chain.push(parent);
    }
    let complete = chain[chain.len() - 1].parent_span_id.is_empty();
    (chain, complete)
}

#[tokio::test]
async fn one_pin_request_is_one_trace_from_gateway_through_identity_to_notify() {
    let db = TestDb::new().await;
    let stop = CancellationToken::new();
    let (collector, otlp) = Collector::start(stop.clone()).await;
    let up = sportello_up(&db, otlp, "info").await;
    let gateway = up.gateway;
    wait_for_status(gateway, "", ServingStatus::Serving).await;

    let mut identity = IdentityServiceClient::new(connect(gateway).await);
    identity.request_pin(pin_request("RSSMRA85T10A562S")).await.expect("request accepted");

    let is_notify_server = |s: &ReceivedSpan| {
        s.service == "sportello-notify" && s.attribute("rpc.method") == Some("EnqueueMessage")
    };
    // Each process exports on its own schedule: wait until the chain from notify's server span
    // up to a root span is complete.
    eventually("the spans of all three services", Duration::from_secs(20), || {
        let spans = collector.spans();
        async move { spans.iter().filter(|s| is_notify_server(s)).any(|leaf| chain(&spans, leaf).1) }
    })
    .await;
    let spans = collector.spans();
    let (chain, _) = spans
        .iter()
        .filter(|s| is_notify_server(s))
        .map(|leaf| chain(&spans, leaf))
        .find(|(_, complete)| *complete)
        .expect("a complete chain");
    let leaf = chain[0];
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
    let (clean, _) = up.stop().await;
    assert!(clean, "sportello up exits 0 after SIGTERM");
    stop.cancel();
}

#[tokio::test]
async fn no_pin_and_no_full_contact_appears_in_any_log_or_span() {
    let db = TestDb::new().await;
    let stop = CancellationToken::new();
    let (collector, otlp) = Collector::start(stop.clone()).await;
    // Debug level for Sportello and for the libraries under it: the strictest a deployment runs.
    let up = sportello_up(&db, otlp, "debug").await;
    wait_for_status(up.gateway, "", ServingStatus::Serving).await;

    let mut identity = IdentityServiceClient::new(connect(up.gateway).await);
    identity.request_pin(pin_request(ROSSI)).await.expect("request accepted");
    // `sportello up` delivers: the halves are read where the citizen reads them.
    let first = db.delivered_one("PIN_FIRST_HALF").await.secret();
    let second = db.delivered_one("PIN_SECOND_HALF_LETTER").await.secret();
    let initial = format!("{first}{second}");
    let own = "RMX7K2QA";
    identity
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: ROSSI.into(),
            initial_pin: initial.clone(),
            new_pin: own.into(),
        })
        .await
        .expect("first access");
    identity
        .start_pin_recovery(id::StartPinRecoveryRequest {
            fiscal_code: ROSSI.into(),
            contacts: Some(id::Contacts {
                mobile_phone: ROSSI_MOBILE.into(),
                email: ROSSI_EMAIL.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("recovery started");
    let code = db.delivered_one("PIN_RECOVERY_CODE").await.secret();

    eventually("the spans of the last call", Duration::from_secs(20), || {
        let spans = collector.spans();
        async move { spans.iter().any(|s| s.attribute("rpc.method") == Some("StartPinRecovery")) }
    })
    .await;
    let (_, logs) = up.stop().await;
    let spans = format!("{:?}", collector.spans());
    assert!(logs.contains("PIN request handled"), "the logs were captured");
    for secret in [
        first.as_str(),
        second.as_str(),
        initial.as_str(),
        own,
        code.as_str(),
        ROSSI_MOBILE,
        "3331234567",
        ROSSI_EMAIL,
        ROSSI,
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
        assert!(!spans.contains(secret), "{secret:?} appears in a span");
    }
    stop.cancel();
}
