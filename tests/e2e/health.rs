//! Health: NOT_SERVING until a service is ready and what it calls answers, SERVING after, and
//! NOT_SERVING again for a backend that goes away.

use crate::helpers::*;
use tonic_health::pb::health_check_response::ServingStatus::{NotServing, Serving};

#[tokio::test]
async fn every_service_is_not_serving_until_the_services_it_calls_answer() {
    let db = TestDb::new().await;
    let ports = Ports::reserve().await;
    let addrs = [ports.gateway.1, ports.identity.1, ports.claims.1, ports.notify.1];
    let c = Configs::new(&db, addrs);

    // Start from the top: each service comes up with nothing below it answering.
    let gateway = Running::start(ports.gateway, |l, s| gateway::serve(c.gateway, l, s));
    wait_for_status(gateway.addr, "", NotServing).await;
    wait_for_status(gateway.addr, IDENTITY, NotServing).await;

    let claims = Running::start(ports.claims, |l, s| claims_svc::serve(c.claims, l, s));
    wait_for_status(claims.addr, "", NotServing).await;
    wait_for_status(claims.addr, CLAIMS, NotServing).await;
    // Not ready, but alive: a liveness probe leaves it be.
    let alive = sportello_platform::health::LIVENESS;
    wait_for_status(claims.addr, alive, Serving).await;
    wait_for_status(gateway.addr, alive, Serving).await;

    let identity = Running::start(ports.identity, |l, s| identity_svc::serve(c.identity, l, s));
    wait_for_status(identity.addr, IDENTITY, NotServing).await;

    let notify = Running::start(ports.notify, |l, s| notify_svc::serve(c.notify, l, s));
    for (addr, service) in [
        (notify.addr, NOTIFY),
        (identity.addr, IDENTITY),
        (claims.addr, CLAIMS),
        (gateway.addr, ""),
        (gateway.addr, IDENTITY),
        (gateway.addr, CLAIMS),
        (gateway.addr, NOTIFY),
    ] {
        wait_for_status(addr, service, Serving).await;
    }
    for r in [gateway, claims, identity, notify] {
        r.shut_down().await;
    }
}

#[tokio::test]
async fn a_service_is_not_serving_until_its_database_is_ready() {
    let db = TestDb::new().await;
    let ports = Ports::reserve().await;
    let addrs = [ports.gateway.1, ports.identity.1, ports.claims.1, ports.notify.1];
    let mut c = Configs::new(&db, addrs);
    let not_yet = db.data_dir().join("not-yet");
    c.notify.store.database_url = sportello_platform::db::sqlite_url(&not_yet, "notify");
    let identity = Running::start(ports.identity, |l, s| identity_svc::serve(c.identity, l, s));
    let notify = Running::start(ports.notify, |l, s| notify_svc::serve(c.notify, l, s));
    wait_for_status(notify.addr, NOTIFY, NotServing).await;
    // The database cannot be opened while its directory is missing; once it appears, the
    // service migrates it and becomes ready without a restart.
    std::fs::create_dir_all(&not_yet).expect("mkdir");
    wait_for_status(notify.addr, NOTIFY, Serving).await;
    for r in [notify, identity] {
        r.shut_down().await;
    }
}

#[tokio::test]
async fn the_gateway_reports_a_stopped_backend_as_not_serving() {
    let suite = spawn_suite().await;
    wait_for_status(suite.gateway.addr, CLAIMS, Serving).await;
    let Suite { gateway, identity, claims, notify, .. } = suite;
    claims.shut_down().await;
    wait_for_status(gateway.addr, CLAIMS, NotServing).await;
    wait_for_status(gateway.addr, "", NotServing).await;
    assert_eq!(health_of(gateway.addr, IDENTITY).await, Some(Serving), "the others stay up");
    for r in [gateway, identity, notify] {
        r.shut_down().await;
    }
}

#[tokio::test]
async fn readiness_follows_dependencies_as_soon_as_they_are_up_not_at_the_next_poll() {
    let db = TestDb::new().await;
    let ports = Ports::reserve().await;
    let addrs = [ports.gateway.1, ports.identity.1, ports.claims.1, ports.notify.1];
    let mut c = Configs::new(&db, addrs);
    // A dependency's health is followed as it changes; a slow retry interval must not matter
    // to a suite whose parts come up together (polling every 10 s, this took 10 s or more).
    let slow = std::time::Duration::from_secs(10);
    c.gateway.server.health_interval = slow;
    c.identity.server.health_interval = slow;
    c.claims.server.health_interval = slow;
    c.notify.server.health_interval = slow;
    let started = std::time::Instant::now();
    let notify = Running::start(ports.notify, |l, s| notify_svc::serve(c.notify, l, s));
    let identity = Running::start(ports.identity, |l, s| identity_svc::serve(c.identity, l, s));
    let claims = Running::start(ports.claims, |l, s| claims_svc::serve(c.claims, l, s));
    let gateway = Running::start(ports.gateway, |l, s| gateway::serve(c.gateway, l, s));
    eventually("the gateway to be SERVING", std::time::Duration::from_secs(5), || async {
        health_of(gateway.addr, "").await == Some(Serving)
    })
    .await;
    eprintln!("start to SERVING: {:?}", started.elapsed());
    for r in [gateway, claims, identity, notify] {
        r.shut_down().await;
    }
}
