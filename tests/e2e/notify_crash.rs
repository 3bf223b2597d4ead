//! Nothing accepted is lost, nothing is sent twice under two names: notify-svc killed with
//! kill -9 in the middle of a dispatch run, restarted on its database, sends every accepted
//! message, and a message sent again after the crash carries the same Message-ID, so the
//! receiving relay can drop the copy.

use crate::helpers::*;
use notify_svc::testing::smtp::SmtpReceiver;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::notify::v1::{Channel, EnqueueMessageRequest};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinSet;
use tonic_health::pb::health_check_response::ServingStatus;

const MESSAGES: usize = 300;

/// `sportello notify` as an operator runs it, on `addr`, sending email through `relay`.
fn notify_process(
    db: &TestDb,
    addr: SocketAddr,
    identity: SocketAddr,
    relay: &str,
) -> tokio::process::Child {
    let mut cmd = service_process(db, "notify", addr);
    cmd.env("SPORTELLO_NOTIFY__IDENTITY_URL", url(identity))
        .env("SPORTELLO_NOTIFY__EMAIL__RELAY", relay)
        // Slow enough to be killed half-way, with leases short enough to be taken over soon.
        .env("SPORTELLO_NOTIFY__DISPATCH__RATE_LIMITS__EMAIL", "150")
        .env("SPORTELLO_NOTIFY__DISPATCH__LEASE", "2s")
        .env("SPORTELLO_NOTIFY__DISPATCH__SEND_TIMEOUT", "1s");
    cmd.spawn().expect("sportello notify")
}

fn email(n: usize) -> EnqueueMessageRequest {
    EnqueueMessageRequest {
        idempotency_key: format!("test:crash:{n}"),
        fiscal_code: ROSSI.into(),
        channel: Channel::Email as i32,
        address: format!("citizen{n}@example.it"),
        template: "PIN_CHANGED".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_notify_restarted_on_its_database_sends_every_accepted_message_under_one_id() {
    let db = TestDb::new().await;
    let ports = Ports::reserve().await;
    let (notify_listener, notify_addr) = ports.notify;
    drop(notify_listener);
    let configs =
        Configs::new(&db, [ports.gateway.1, ports.identity.1, ports.claims.1, notify_addr]);
    let identity =
        Running::start(ports.identity, |l, s| identity_svc::serve(configs.identity, l, s));
    let receiver = SmtpReceiver::start().await;
    let mut notify = notify_process(&db, notify_addr, identity.addr, &receiver.url());
    wait_for_status(notify_addr, NOTIFY, ServingStatus::Serving).await;

    let key = db.data_dir().join("keys/session-ed25519.der");
    let signer = identity_svc::keys::Signer::load_or_generate(&key).expect("identity's key");
    let token = signer.service_token("test-service").expect("token");
    let channel = connect(notify_addr).await;
    let mut calls = JoinSet::new();
    for n in 0..MESSAGES {
        let (mut client, token) = (NotifyServiceClient::new(channel.clone()), token.clone());
        calls.spawn(async move {
            let reply = client.enqueue_message(with_token(&token, email(n))).await;
            reply.expect("accepted").into_inner().message_id
        });
    }
    let mut accepted = HashSet::new();
    while let Some(id) = calls.join_next().await {
        accepted.insert(id.expect("call task"));
    }
    assert_eq!(accepted.len(), MESSAGES);
    eventually("dispatch to be under way", Duration::from_secs(30), || async {
        receiver.received().len() >= 30
    })
    .await;
    notify.start_kill().expect("kill -9");
    notify.wait().await.expect("killed");
    let before = receiver.received().len();
    assert!(before < MESSAGES, "killed in the middle of dispatch ({before} sent)");

    let mut restarted = notify_process(&db, notify_addr, identity.addr, &receiver.url());
    eventually("every accepted message sent", Duration::from_secs(60), || async {
        db.count("notify", "messages", "status = 'SENT'").await == MESSAGES as i64
    })
    .await;
    let received = receiver.received();
    let ids: HashSet<String> =
        received.iter().map(|m| m.header("Message-ID").expect("Message-ID")).collect();
    let expected: HashSet<String> =
        accepted.iter().map(|id| format!("<{id}@sportello.local>")).collect();
    assert_eq!(ids, expected, "each accepted message arrived, under its own Message-ID");
    eprintln!(
        "killed after {before} of {MESSAGES} sent; {} received in all ({} copies after the crash)",
        received.len(),
        received.len() - MESSAGES
    );
    restarted.start_kill().expect("stop");
    identity.shut_down().await;
}
