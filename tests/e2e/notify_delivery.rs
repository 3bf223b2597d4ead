//! What happens to a message after it is sent: providers' receipts (SMS delivery reports, PEC
//! receipts), the courtesy channel a refused first half falls back to, the contact center
//! watching and looking up a citizen's messages.

use crate::helpers::*;
use crate::notify::client;
use notify_svc::config::{SmsProvider, SmsSettings};
use notify_svc::testing::sms::{FakeSmsProvider, Reply};
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::contact_center_service_client::ContactCenterServiceClient;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::notify::v1::{
    Channel, DeliveryOutcome, EnqueueMessageRequest, GetMessageRequest, ListMessagesRequest,
    MessageStatus, ReportDeliveryRequest, WatchMessageRequest,
};
use sqlx::Row;
use std::time::Duration;
use tonic::Code;

fn sms_settings(url: String) -> SmsSettings {
    SmsSettings {
        primary: SmsProvider { url, token: "provider-token".to_owned().into() },
        secondary: None,
        sender: "INPS".into(),
    }
}

/// `(id, channel, status, provider_message_id)` of every message with `template`, oldest first.
async fn stored(suite: &Suite, template: &str) -> Vec<(String, String, String, Option<String>)> {
    let sql = format!(
        "SELECT id, channel, status, provider_message_id FROM {} WHERE template = $1 \
         ORDER BY created_at, id",
        suite.db.table("notify", "messages")
    );
    sqlx::query(&sql)
        .bind(template)
        .fetch_all(&suite.db.pool("notify").await)
        .await
        .expect("messages")
        .iter()
        .map(|r| (r.get("id"), r.get("channel"), r.get("status"), r.get("provider_message_id")))
        .collect()
}

async fn lookup(suite: &Suite) -> id::LookupCredentialResponse {
    ContactCenterServiceClient::new(suite.gateway_channel().await)
        .lookup_credential(
            suite.as_operator(id::LookupCredentialRequest { fiscal_code: ROSSI.into() }),
        )
        .await
        .expect("lookup")
        .into_inner()
}

fn receipt(provider: &str, provider_id: &str, outcome: DeliveryOutcome) -> ReportDeliveryRequest {
    ReportDeliveryRequest {
        provider: provider.into(),
        provider_message_id: provider_id.into(),
        outcome: outcome as i32,
        reason: String::new(),
    }
}

#[tokio::test]
async fn an_sms_delivery_report_reaches_the_operator_watching_and_the_contact_centers_view() {
    let sms = FakeSmsProvider::start().await;
    let url = sms.url();
    let suite = spawn_suite_with(|c| {
        c.notify.dispatch.enabled = true;
        c.notify.sms = Some(sms_settings(url));
    })
    .await;
    IdentityServiceClient::new(suite.gateway_channel().await)
        .request_pin(pin_request(ROSSI))
        .await
        .expect("request accepted");
    suite.db.outbox_relayed().await;
    eventually("the first half sent", Duration::from_secs(20), || async {
        stored(&suite, "PIN_FIRST_HALF").await.iter().any(|m| m.2 == "SENT")
    })
    .await;
    let (message_id, _, _, provider_id) = stored(&suite, "PIN_FIRST_HALF").await.remove(0);
    let provider_id = provider_id.expect("the provider's id is recorded");
    assert_eq!(sms.received()[0].id, provider_id);

    let mut watching = NotifyServiceClient::new(suite.gateway_channel().await)
        .watch_message(suite.as_operator(WatchMessageRequest { message_id: message_id.clone() }))
        .await
        .expect("operators may watch")
        .into_inner();
    let now = watching.message().await.expect("a state").expect("the current state");
    let now = now.message.expect("message");
    assert_eq!(now.status, MessageStatus::Sent as i32);
    assert_eq!(now.masked_address, "+39 *** *** 4567");

    let mut notify = client(&suite).await;
    let reported = notify
        .report_delivery(receipt("sms:primary", &provider_id, DeliveryOutcome::Delivered))
        .await
        .expect("receipt taken")
        .into_inner()
        .message
        .expect("message");
    assert_eq!(reported.status, MessageStatus::Delivered as i32);
    assert!(reported.delivered_at.is_some());

    let change = tokio::time::timeout(Duration::from_secs(5), watching.message())
        .await
        .expect("the change arrives")
        .expect("a state")
        .expect("delivered");
    assert_eq!(change.message.expect("message").status, MessageStatus::Delivered as i32);
    let end = tokio::time::timeout(Duration::from_secs(5), watching.message()).await;
    assert!(matches!(end, Ok(Ok(None))), "a final state ends the watch: {end:?}");

    // Providers repeat callbacks: a second receipt, even a contrary one, changes nothing.
    let again = notify
        .report_delivery(receipt("sms:primary", &provider_id, DeliveryOutcome::Failed))
        .await
        .expect("repeat taken")
        .into_inner();
    assert_eq!(again.message.expect("message").status, MessageStatus::Delivered as i32);

    let view = lookup(&suite).await;
    assert_eq!(view.requests[0].first_half, id::DeliveryStatus::Delivered as i32);
}

/// The contact center sees Rossi's first half FAILED and its fallback by email `fallback`;
/// the failed message `failed_id` as notify-svc keeps it.
async fn fell_back_to_email(
    suite: &Suite,
    failed_id: &str,
    fallback: id::DeliveryStatus,
) -> sportello_proto::notify::v1::Message {
    let view = lookup(suite).await;
    let request = &view.requests[0];
    assert_eq!(request.first_half, id::DeliveryStatus::Failed as i32);
    assert_eq!(request.first_half_fallback_channel, id::DeliveryChannel::Email as i32);
    assert_eq!(request.first_half_fallback, fallback as i32);
    client(suite)
        .await
        .batch_get_messages(sportello_proto::notify::v1::BatchGetMessagesRequest {
            message_ids: vec![failed_id.to_owned()],
        })
        .await
        .expect("lookup")
        .into_inner()
        .messages
        .remove(0)
}

#[tokio::test]
async fn a_first_half_whose_sms_is_refused_for_good_goes_to_the_email_on_file() {
    let sms = FakeSmsProvider::start().await;
    sms.reply(Reply::Status(400));
    let url = sms.url();
    let suite = spawn_suite_with(|c| {
        c.notify.dispatch.enabled = true;
        c.notify.sms = Some(sms_settings(url));
    })
    .await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);
    identity.request_pin(pin_request(ROSSI)).await.expect("request accepted");
    suite.db.outbox_relayed().await;

    eventually("the SMS failed and the email sent", Duration::from_secs(20), || async {
        let both = stored(&suite, "PIN_FIRST_HALF").await;
        both.len() == 2 && both[0].2 == "FAILED" && both[1].2 == "SENT"
    })
    .await;
    let both = stored(&suite, "PIN_FIRST_HALF").await;
    assert_eq!((both[0].1.as_str(), both[1].1.as_str()), ("SMS", "EMAIL"));
    let original = fell_back_to_email(&suite, &both[0].0, id::DeliveryStatus::Sent).await;
    assert_eq!(original.fallback_message_id, both[1].0);
    assert_eq!(original.fallback_channel, Channel::Email as i32);
    assert!(original.failure_reason.contains("400"), "{}", original.failure_reason);

    // The half that arrived by email, with the letter's, is the PIN.
    let emailed = read_delivered(suite.db.data_dir(), &both[1].0, "EMAIL");
    let emailed =
        Delivered { message_id: both[1].0.clone(), channel: "EMAIL".into(), text: emailed };
    let letter = suite.db.delivered_one("PIN_SECOND_HALF_LETTER").await;
    identity
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: ROSSI.into(),
            initial_pin: format!("{}{}", emailed.secret(), letter.secret()),
            new_pin: "RMX7K2QA".into(),
        })
        .await
        .expect("the emailed half opens the first access");
}

fn pec(key: &str) -> EnqueueMessageRequest {
    EnqueueMessageRequest {
        idempotency_key: key.into(),
        fiscal_code: ROSSI.into(),
        channel: Channel::Pec as i32,
        address: "mario.rossi@pec.example.it".into(),
        template: "PIN_CHANGED".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_pec_ricevuta_di_consegna_is_delivered_and_an_avviso_di_mancata_consegna_is_failed() {
    let suite = spawn_suite_with(|c| c.notify.dispatch.enabled = true).await;
    let mut notify = client(&suite).await;
    let consegnata = notify.enqueue_message(pec("test:pec:1")).await.expect("accepted");
    let mancata = notify.enqueue_message(pec("test:pec:2")).await.expect("accepted");
    let ids = [consegnata.into_inner().message_id, mancata.into_inner().message_id];
    eventually("both PEC messages sent", Duration::from_secs(20), || async {
        let sent = stored(&suite, "PIN_CHANGED").await;
        sent.len() == 2 && sent.iter().all(|m| m.2 == "SENT")
    })
    .await;
    let sent = stored(&suite, "PIN_CHANGED").await;
    let provider_id =
        |id: &str| sent.iter().find(|m| m.0 == id).and_then(|m| m.3.clone()).expect("provider id");
    // A PEC receipt names the message by its Message-ID.
    assert_eq!(provider_id(&ids[0]), format!("<{}@sportello.local>", ids[0]));

    let delivered = notify
        .report_delivery(receipt("sink:pec", &provider_id(&ids[0]), DeliveryOutcome::Delivered))
        .await
        .expect("ricevuta di consegna")
        .into_inner();
    assert_eq!(delivered.message.expect("m").status, MessageStatus::Delivered as i32);
    let mut avviso = receipt("sink:pec", &provider_id(&ids[1]), DeliveryOutcome::Failed);
    avviso.reason = "casella piena".into();
    let failed = notify.report_delivery(avviso).await.expect("avviso").into_inner();
    let failed = failed.message.expect("m");
    assert_eq!(failed.status, MessageStatus::Failed as i32);
    assert_eq!(failed.failure_reason, "undelivered: casella piena");
}

#[tokio::test]
async fn a_receipt_that_names_nothing_is_invalid_and_one_for_no_message_is_not_found() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;
    let status =
        notify.report_delivery(ReportDeliveryRequest::default()).await.expect_err("empty receipt");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["provider", "provider_message_id", "outcome"]);
    let unknown = notify
        .report_delivery(receipt("sms:primary", "nope", DeliveryOutcome::Delivered))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn operators_see_a_citizens_messages_masked_and_every_lookup_is_audited() {
    let suite = spawn_suite().await;
    IdentityServiceClient::new(suite.gateway_channel().await)
        .request_pin(pin_request(ROSSI))
        .await
        .expect("request accepted");
    suite.db.outbox_relayed().await;
    let mut notify = NotifyServiceClient::new(suite.gateway_channel().await);
    let listed = notify
        .list_messages(suite.as_operator(ListMessagesRequest {
            fiscal_code: ROSSI.to_lowercase(),
            ..Default::default()
        }))
        .await
        .expect("operators list a citizen's messages")
        .into_inner()
        .messages;
    assert_eq!(listed.len(), 2, "first half and letter");
    let sms = listed.iter().find(|m| m.channel == Channel::Sms as i32).expect("the SMS");
    assert_eq!(sms.masked_address, "+39 *** *** 4567");
    let letter = listed.iter().find(|m| m.channel == Channel::Post as i32).expect("the letter");
    assert!(!letter.masked_address.contains("Roma"), "{}", letter.masked_address);
    let one = notify
        .get_message(suite.as_operator(GetMessageRequest { message_id: sms.message_id.clone() }))
        .await
        .expect("one message")
        .into_inner()
        .message
        .expect("message");
    assert_eq!(one.message_id, sms.message_id);

    let sql = format!(
        "SELECT operator_id, action, fiscal_code FROM {} ORDER BY id",
        suite.db.table("notify", "audit_events")
    );
    let trail: Vec<(String, String, String)> = sqlx::query(&sql)
        .fetch_all(&suite.db.pool("notify").await)
        .await
        .expect("trail")
        .iter()
        .map(|r| (r.get("operator_id"), r.get("action"), r.get("fiscal_code")))
        .collect();
    assert_eq!(
        trail,
        [
            (OPERATOR_ID.into(), "LIST_MESSAGES".into(), ROSSI.into()),
            (OPERATOR_ID.into(), "GET_MESSAGE".into(), ROSSI.into()),
        ]
    );
    let bad = notify
        .list_messages(suite.as_operator(ListMessagesRequest {
            fiscal_code: "Robert'); DROP TABLE".into(),
            ..Default::default()
        }))
        .await
        .expect_err("not a fiscal code");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_citizen_cannot_use_the_operators_message_lookups_through_the_gateway_or_directly() {
    let suite = spawn_suite().await;
    IdentityServiceClient::new(suite.gateway_channel().await)
        .request_pin(pin_request(ROSSI))
        .await
        .expect("request accepted");
    let half = suite.db.message("PIN_FIRST_HALF").await.secret("pin_half");
    let citizen = suite.login_with_pin(ROSSI, &half).await.expect("simplified login").access_token;
    let mine = ListMessagesRequest { fiscal_code: ROSSI.into(), ..Default::default() };

    let mut gateway = NotifyServiceClient::new(suite.gateway_channel().await);
    let refused = gateway.list_messages(with_token(&citizen, mine.clone())).await.expect_err("");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut direct = NotifyServiceClient::new(connect(suite.notify.addr).await);
    for status in [
        direct.list_messages(with_token(&citizen, mine.clone())).await.expect_err("direct"),
        direct
            .get_message(with_token(&citizen, GetMessageRequest { message_id: "x".into() }))
            .await
            .expect_err("direct"),
        direct
            .watch_message(with_token(&citizen, WatchMessageRequest { message_id: "x".into() }))
            .await
            .map(|_| ())
            .expect_err("direct"),
        direct
            .report_delivery(with_token(&citizen, receipt("a", "b", DeliveryOutcome::Delivered)))
            .await
            .map(|_| ())
            .expect_err("direct"),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
}

/// The suite with dispatch on and the local sinks reporting deliveries, as on `sportello up`.
async fn suite_on_the_local_sinks() -> Suite {
    spawn_suite_with(|c| {
        c.notify.dispatch.enabled = true;
        c.notify.sinks.report_delivery = true;
        c.notify.sinks.receipt_delay = Duration::from_millis(200);
    })
    .await
}

/// Every state WatchMessage streams for `message_id`, until it ends the stream itself.
async fn watched_to_the_end(suite: &Suite, message_id: &str) -> Vec<i32> {
    let mut watching = NotifyServiceClient::new(suite.gateway_channel().await)
        .watch_message(suite.as_operator(WatchMessageRequest { message_id: message_id.into() }))
        .await
        .expect("operators may watch")
        .into_inner();
    let mut states = Vec::new();
    let watch = async {
        while let Some(change) = watching.message().await.expect("a state") {
            states.push(change.message.expect("message").status);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), watch).await.expect("the watch ends");
    states
}

/// On `sportello up`'s sinks an SMS is DELIVERED shortly after SENT, as a provider's report
/// would say: the operator's WatchMessage ends, and the contact center sees it delivered.
#[tokio::test]
async fn on_the_local_sinks_an_sms_is_delivered_and_the_watch_of_it_ends() {
    let suite = suite_on_the_local_sinks().await;
    IdentityServiceClient::new(suite.gateway_channel().await)
        .request_pin(pin_request(ROSSI))
        .await
        .expect("request accepted");
    suite.db.outbox_relayed().await;
    eventually("the first half written", Duration::from_secs(20), || async {
        !stored(&suite, "PIN_FIRST_HALF").await.is_empty()
    })
    .await;
    let (message_id, channel, _, _) = stored(&suite, "PIN_FIRST_HALF").await.remove(0);
    assert_eq!(channel, "SMS");

    let states = watched_to_the_end(&suite, &message_id).await;
    assert_eq!(states.last(), Some(&(MessageStatus::Delivered as i32)), "{states:?}");
    let view = lookup(&suite).await;
    assert_eq!(view.requests[0].first_half, id::DeliveryStatus::Delivered as i32);
    assert_eq!(view.requests[0].first_half_fallback_channel, 0, "no fallback needed");
}

/// A mobile number matching `notify.sinks.fail_addresses` is refused by the SMS sink as a
/// provider refuses an invalid number: the first half goes to the email on file, which is
/// delivered.
#[tokio::test]
async fn on_the_local_sinks_a_failing_number_falls_back_to_the_email_on_file() {
    let suite = suite_on_the_local_sinks().await;
    let mut form = pin_request(ROSSI);
    form.contacts.as_mut().expect("contacts").mobile_phone = "+39 333 9999999".into();
    IdentityServiceClient::new(suite.gateway_channel().await)
        .request_pin(form)
        .await
        .expect("request accepted");
    suite.db.outbox_relayed().await;
    eventually("the SMS failed and the email went", Duration::from_secs(20), || async {
        stored(&suite, "PIN_FIRST_HALF").await.len() == 2
    })
    .await;
    let both = stored(&suite, "PIN_FIRST_HALF").await;
    assert_eq!((both[0].1.as_str(), both[0].2.as_str()), ("SMS", "FAILED"));
    assert_eq!(both[1].1, "EMAIL");

    let states = watched_to_the_end(&suite, &both[1].0).await;
    assert_eq!(states.last(), Some(&(MessageStatus::Delivered as i32)), "{states:?}");
    let original = fell_back_to_email(&suite, &both[0].0, id::DeliveryStatus::Delivered).await;
    assert!(original.failure_reason.contains("fail_addresses"), "{}", original.failure_reason);
    assert!(!original.failure_reason.contains("9999"), "no address in the reason");
}
