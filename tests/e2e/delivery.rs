//! notify-svc delivering: messages leave QUEUED for their channels, a sent message's secrets are
//! purged, temporary failures are retried and permanent ones fail with their reason.

use crate::helpers::*;
use crate::notify::client;
use notify_svc::config::SmtpSettings;
use notify_svc::testing::smtp::{Answer, SmtpReceiver};
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::notify::v1::{Channel, EnqueueMessageRequest};
use sqlx::Row;
use std::time::Duration;

/// `(status, attempts, last_error, secret_params)` of message `id`.
async fn state(suite: &Suite, id: &str) -> (String, i64, Option<String>, Option<String>) {
    let sql = format!(
        "SELECT status, attempts, last_error, secret_params FROM {} WHERE id = $1",
        suite.db.table("notify", "messages")
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_one(&suite.db.pool("notify").await)
        .await
        .expect("message");
    (row.get("status"), row.get("attempts"), row.get("last_error"), row.get("secret_params"))
}

#[tokio::test]
async fn a_pin_request_is_delivered_and_the_halves_it_delivered_open_the_first_access() {
    let suite = spawn_suite_with(|c| c.notify.dispatch.enabled = true).await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);
    identity.request_pin(pin_request(ROSSI)).await.expect("request accepted");

    let sms = suite.db.delivered_one("PIN_FIRST_HALF").await;
    assert_eq!(sms.channel, "SMS");
    let letter = suite.db.delivered_one("PIN_SECOND_HALF_LETTER").await;
    assert!(letter.text.contains("Istituto Nazionale della Previdenza Sociale"));
    for sent in [&sms, &letter] {
        let (status, attempts, _, secrets) = state(&suite, &sent.message_id).await;
        assert_eq!((status.as_str(), attempts), ("SENT", 1));
        assert_eq!(secrets, None, "a sent message's secrets are purged");
    }
    identity
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: ROSSI.into(),
            initial_pin: format!("{}{}", sms.secret(), letter.secret()),
            new_pin: "RMX7K2QA".into(),
        })
        .await
        .expect("the delivered halves are the PIN");
}

fn email(key: &str, to: &str) -> EnqueueMessageRequest {
    EnqueueMessageRequest {
        idempotency_key: key.into(),
        fiscal_code: ROSSI.into(),
        channel: Channel::Email as i32,
        address: to.into(),
        template: "PIN_CHANGED".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_relay_that_defers_gets_the_message_on_a_later_attempt_with_the_same_message_id() {
    let receiver = SmtpReceiver::start().await;
    receiver.answer(Answer::Defer);
    let relay = receiver.url();
    let suite = spawn_suite_with(|c| {
        c.notify.dispatch.enabled = true;
        c.notify.dispatch.backoff = Duration::from_millis(100);
        c.notify.email = Some(SmtpSettings { relay: relay.into() });
    })
    .await;
    let mut notify = client(&suite).await;
    let id = notify
        .enqueue_message(email("test:delivery:deferred", ROSSI_EMAIL))
        .await
        .expect("accepted")
        .into_inner()
        .message_id;

    eventually("a first attempt deferred", Duration::from_secs(10), || async {
        let (status, attempts, reason, _) = state(&suite, &id).await;
        status == "QUEUED" && attempts >= 1 && reason.as_deref() == Some("relay: SMTP 451")
    })
    .await;
    receiver.answer(Answer::Accept);
    eventually("the message sent", Duration::from_secs(10), || async {
        state(&suite, &id).await.0 == "SENT"
    })
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_to, [ROSSI_EMAIL]);
    let message_id = received[0].header("Message-ID").expect("Message-ID");
    assert!(message_id.starts_with(&format!("<{id}@")), "{message_id}");
}

#[tokio::test]
async fn a_mailbox_the_relay_refuses_fails_at_once_with_the_reason() {
    let receiver = SmtpReceiver::start().await;
    receiver.answer(Answer::Refuse);
    let relay = receiver.url();
    let suite = spawn_suite_with(|c| {
        c.notify.dispatch.enabled = true;
        c.notify.email = Some(SmtpSettings { relay: relay.into() });
    })
    .await;
    let mut notify = client(&suite).await;
    let id = notify
        .enqueue_message(email("test:delivery:refused", "nobody@example.it"))
        .await
        .expect("accepted")
        .into_inner()
        .message_id;

    eventually("the message failed", Duration::from_secs(10), || async {
        state(&suite, &id).await.0 == "FAILED"
    })
    .await;
    let (_, attempts, reason, _) = state(&suite, &id).await;
    assert_eq!(attempts, 1, "a permanent failure is not retried");
    assert_eq!(reason.as_deref(), Some("relay refused: SMTP 550"));
    assert!(!reason.expect("reason").contains("nobody"));
}
