//! `sportello up` supervises its children: one killed (kill -9) is started again on its own
//! address while the others keep serving, and the suite serves again by itself; one that keeps
//! dying spends its restart budget, and `up` stops the suite and exits non-zero naming it.

use crate::helpers::*;
use crate::tracing_across_services::{sportello_up_with, Up};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::net::SocketAddr;
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;

/// The process id of service `name` as `up` (process `up`) runs it now.
fn service_pid(up: u32, name: &str) -> Option<u32> {
    crate::tracing_across_services::children_of(up).into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmdline.split(|&b| b == 0).nth(1) == Some(name.as_bytes())
    })
}

fn kill_9(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9");
}

/// Kills service `name` of `up` with SIGKILL; returns the id it had.
fn kill_service(up: &Up, name: &str) -> u32 {
    let pid = service_pid(up.pid(), name).expect("the service runs");
    kill_9(pid);
    pid
}

/// Whether a PIN request through the gateway at `gateway` is accepted now.
async fn a_citizen_is_served(gateway: SocketAddr) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(url(gateway))
        .expect("url")
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
    else {
        return false;
    };
    let mut identity = IdentityServiceClient::new(channel);
    let mut request = tonic::Request::new(pin_request("RSSMRA85T10A562S"));
    request.set_timeout(Duration::from_secs(5));
    identity.request_pin(request).await.is_ok()
}

#[tokio::test]
async fn a_service_killed_with_sigkill_is_started_again_and_the_suite_serves_by_itself() {
    let db = TestDb::new().await;
    let up = sportello_up_with(&db, &[]).await;
    wait_for_status(up.gateway, "", ServingStatus::Serving).await;
    assert!(a_citizen_is_served(up.gateway).await, "served before any kill");

    for name in ["identity", "gateway"] {
        let before = kill_service(&up, name);
        eventually(&format!("{name} to be started again"), Duration::from_secs(30), || async {
            service_pid(up.pid(), name).is_some_and(|now| now != before)
        })
        .await;
        eventually(
            &format!("a citizen to be served again after {name} was killed"),
            Duration::from_secs(60),
            || a_citizen_is_served(up.gateway),
        )
        .await;
        assert!(
            up.logs().contains(&format!("{name} exited (signal 9); restart 1 of 5 within 60 s in")),
            "the restart is logged:\n{}",
            up.logs()
        );
    }
    let (clean, logs) = up.stop().await;
    assert!(clean, "SIGTERM still stops the whole suite cleanly:\n{logs}");
}

#[tokio::test]
async fn a_service_that_keeps_dying_spends_its_budget_and_up_exits_non_zero_naming_it() {
    let db = TestDb::new().await;
    let env = [
        ("SPORTELLO_UP__MAX_RESTARTS", "2".to_owned()),
        ("SPORTELLO_UP__RESTART_WINDOW", "60s".to_owned()),
    ];
    let up = sportello_up_with(&db, &env).await;
    wait_for_status(up.gateway, "", ServingStatus::Serving).await;
    // Killed again each time it is back: three crashes within the window.
    for crash in 1..=3 {
        kill_service(&up, "claims");
        if crash < 3 {
            eventually("claims to be started again", Duration::from_secs(30), || async {
                up.logs().matches("claims restarted on").count() == crash
            })
            .await;
        }
    }
    let (status, logs) = up.exits_within(Duration::from_secs(60)).await;
    assert!(!status.success(), "up exits non-zero: {status:?}\n{logs}");
    assert!(logs.contains("claims exited (signal 9); restart 2 of 2 within 60 s in"), "{logs}");
    assert!(
        logs.contains("claims crashed 3 times within 60 s (last: signal 9); stopping the suite"),
        "{logs}"
    );
}

#[tokio::test]
async fn when_up_itself_is_killed_with_sigkill_its_children_stop_rather_than_serve_unsupervised() {
    let db = TestDb::new().await;
    let up = sportello_up_with(&db, &[]).await;
    wait_for_status(up.gateway, "", ServingStatus::Serving).await;
    let children = crate::tracing_across_services::children_of(up.pid());
    assert_eq!(children.len(), 4, "four services: {children:?}");
    kill_9(up.pid());
    eventually("every child of the killed up to stop", Duration::from_secs(30), || {
        let children = children.clone();
        async move {
            // A stopped child that nobody waits for stays a zombie: gone all the same.
            children.iter().all(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                stat.is_empty() || stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z'))
            })
        }
    })
    .await;
}

#[tokio::test]
async fn ctrl_c_in_a_terminal_stops_every_child_without_restarting_any() {
    let db = TestDb::new().await;
    let up = sportello_up_with(&db, &[]).await;
    wait_for_status(up.gateway, "", ServingStatus::Serving).await;
    // A terminal's Ctrl-C reaches the whole foreground process group, which `up` leads here.
    nix::sys::signal::killpg(Pid::from_raw(up.pid() as i32), Signal::SIGINT).expect("SIGINT");
    let (status, logs) = up.exits_within(Duration::from_secs(30)).await;
    assert!(status.success(), "stopped cleanly: {status:?}\n{logs}");
    assert!(!logs.contains("restart"), "nothing was restarted:\n{logs}");
}

#[tokio::test]
async fn while_a_killed_backend_is_down_the_gateway_answers_unavailable_for_it_and_serves_the_rest()
{
    use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
    use sportello_proto::claims::v1::ListBenefitsRequest;
    let db = TestDb::new().await;
    let up = sportello_up_with(&db, &[]).await;
    wait_for_status(up.gateway, "", ServingStatus::Serving).await;
    let mut claims = ClaimsServiceClient::new(connect(up.gateway).await);
    claims.list_benefits(ListBenefitsRequest {}).await.expect("served before the kill");
    kill_service(&up, "claims");
    // The restart waits at least 250 ms: a call now finds no claims-svc.
    let status = claims.list_benefits(ListBenefitsRequest {}).await.expect_err("claims is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(a_citizen_is_served(up.gateway).await, "identity still serves through the gateway");
    eventually("the catalogue to be served again", Duration::from_secs(60), || {
        let mut claims = claims.clone();
        async move { claims.list_benefits(ListBenefitsRequest {}).await.is_ok() }
    })
    .await;
    let (clean, logs) = up.stop().await;
    assert!(clean, "{logs}");
}
