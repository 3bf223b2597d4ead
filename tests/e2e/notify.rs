//! notify-svc's lookups and resends, straight at the service (it is internal: the other services
//! and the contact center's back office call it): what a lookup shows and hides, and when a
//! message can be sent again.

use crate::helpers::*;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::notify::v1::{
    BatchGetMessagesRequest, Channel, EnqueueMessageRequest, ListTemplatesRequest, MessageStatus,
    ResendMessageRequest,
};
use sqlx::Row;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel as Wire;
use tonic::Code;
use tonic_types::StatusExt;

const PHONE: &str = "+393331234567";
const SECRET: &str = "K7Q2M9XZ";

/// Calls as an internal service would: with a service token.
pub(crate) type Transport = InterceptedService<Wire, AsService>;

#[derive(Clone)]
pub(crate) struct AsService(String);

impl tonic::service::Interceptor for AsService {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {}", self.0).parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

pub(crate) async fn client(suite: &Suite) -> NotifyServiceClient<Transport> {
    let channel = connect(suite.notify.addr).await;
    NotifyServiceClient::with_interceptor(channel, AsService(suite.service_token()))
}

fn pin_message(key: &str) -> EnqueueMessageRequest {
    EnqueueMessageRequest {
        idempotency_key: key.into(),
        fiscal_code: "RSSMRA85T10A562S".into(),
        channel: Channel::Sms as i32,
        address: PHONE.into(),
        template: "PIN_FIRST_HALF".into(),
        params: [("name".to_owned(), "Mario".to_owned())].into(),
        secret_params: [("pin_half".to_owned(), SECRET.to_owned())].into(),
        fallback: None,
    }
}

async fn enqueue(notify: &mut NotifyServiceClient<Transport>, key: &str) -> String {
    notify.enqueue_message(pin_message(key)).await.expect("enqueued").into_inner().message_id
}

fn resend_request(message_id: &str, key: &str) -> ResendMessageRequest {
    ResendMessageRequest {
        message_id: message_id.into(),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

/// `(channel, address, secret parameters opened)` of message `id`, as stored.
async fn stored(
    suite: &Suite,
    id: &str,
) -> (String, String, Option<std::collections::BTreeMap<String, String>>) {
    let sql = format!(
        "SELECT channel, address, secret_params, secrets_key FROM {} WHERE id = $1",
        suite.db.table("notify", "messages")
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_one(&suite.db.pool("notify").await)
        .await
        .expect("message row");
    let secrets = suite.db.open_secrets("messages", id, &row);
    (row.get("channel"), row.get("address"), secrets)
}

/// What the dispatcher does to a message once it has been sent.
async fn purge_secrets(suite: &Suite, id: &str) {
    let sql = format!(
        "UPDATE {} SET secrets_purged_at = $1, secret_params = NULL WHERE id = $2",
        suite.db.table("notify", "messages")
    );
    sqlx::query(&sql)
        .bind(sportello_platform::now_millis())
        .bind(id)
        .execute(&suite.db.pool("notify").await)
        .await
        .expect("purge");
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

#[tokio::test]
async fn an_enqueued_message_reads_back_masked_and_queued_without_its_secrets() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;
    let id = enqueue(&mut notify, "test:batch-get:1").await;

    let reply = notify
        .batch_get_messages(BatchGetMessagesRequest { message_ids: vec![id.clone()] })
        .await
        .expect("looked up")
        .into_inner();

    assert_eq!(reply.messages.len(), 1);
    let message = &reply.messages[0];
    assert_eq!(message.message_id, id);
    assert_eq!(message.fiscal_code, "RSSMRA85T10A562S");
    assert_eq!(message.channel(), Channel::Sms);
    assert_eq!(message.masked_address, "+39 *** *** 4567");
    assert_eq!(message.template, "PIN_FIRST_HALF");
    assert_eq!(message.status(), MessageStatus::Queued);
    assert!(message.failure_reason.is_empty());
    let created = message.created_at.expect("created_at");
    assert!(created.seconds > 1_577_836_800, "a time after 2020");
    assert_eq!(message.updated_at, message.created_at);

    let shown = format!("{reply:?}");
    assert!(!shown.contains(SECRET), "no secret in the reply: {shown}");
    assert!(!shown.contains("pin_half"), "no secret name either: {shown}");
    assert!(!shown.contains("1234567"), "no full address: {shown}");
}

#[tokio::test]
async fn unknown_ids_are_left_out_and_the_answer_follows_the_order_asked() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;
    let first = enqueue(&mut notify, "test:order:1").await;
    let second = enqueue(&mut notify, "test:order:2").await;

    let reply = notify
        .batch_get_messages(BatchGetMessagesRequest {
            message_ids: vec![
                second.clone(),
                "no-such-message".into(),
                first.clone(),
                uuid::Uuid::now_v7().to_string(),
            ],
        })
        .await
        .expect("looked up")
        .into_inner();

    let ids: Vec<&str> = reply.messages.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);

    let none = notify
        .batch_get_messages(BatchGetMessagesRequest { message_ids: vec!["no-such-message".into()] })
        .await
        .expect("an answer, not an error")
        .into_inner();
    assert!(none.messages.is_empty());
}

#[tokio::test]
async fn more_than_a_hundred_ids_is_invalid_argument_naming_message_ids() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;

    for n in [0, 101] {
        let status = notify
            .batch_get_messages(BatchGetMessagesRequest {
                message_ids: (0..n).map(|i| format!("id-{i}")).collect(),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{n} ids");
        let violations =
            status.get_details_bad_request().expect("BadRequest details").field_violations;
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["message_ids"], "{n} ids");
    }
}

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status.get_details_bad_request().expect("BadRequest details").field_violations;
    violations.into_iter().map(|v| v.field).collect()
}

#[tokio::test]
async fn a_message_that_could_not_be_rendered_is_refused_at_enqueue_and_nothing_is_stored() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;

    let mut unknown = pin_message("test:templates:unknown");
    unknown.template = "PIN_FIRST_HALVE".into();
    let status = notify.enqueue_message(unknown).await.expect_err("no such template");
    assert_eq!(violated_fields(&status), ["template"]);

    let mut no_half = pin_message("test:templates:no-half");
    no_half.secret_params.clear();
    let status = notify.enqueue_message(no_half).await.expect_err("nothing to send");
    assert_eq!(violated_fields(&status), ["secret_params[pin_half]"]);

    let mut by_post = pin_message("test:templates:by-post");
    by_post.channel = Channel::Post as i32;
    by_post.address = "Via Roma 1, 00100 Roma RM".into();
    let status = notify.enqueue_message(by_post).await.expect_err("a first half is not posted");
    assert_eq!(violated_fields(&status), ["channel"]);
    assert!(!status.message().contains(SECRET));

    assert_eq!(suite.db.count("notify", "messages", "1 = 1").await, 0);
}

#[tokio::test]
async fn integrators_list_every_template_with_the_parameters_it_needs() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;

    let templates = notify
        .list_templates(ListTemplatesRequest {})
        .await
        .expect("listed")
        .into_inner()
        .templates;
    let first_half = templates.iter().find(|t| t.name == "PIN_FIRST_HALF").expect("listed");
    assert!(first_half.params.is_empty());
    assert_eq!(first_half.secret_params, ["pin_half"]);
    assert!(first_half.channels.contains(&(Channel::Sms as i32)));
    assert!(!first_half.channels.contains(&(Channel::Post as i32)));
    let receipt = templates.iter().find(|t| t.name == "CLAIM_RECEIPT").expect("listed");
    assert_eq!(receipt.params, ["benefit_title", "protocol_number", "submitted_at"]);
    // Every template identity sends is there.
    for name in ["PIN_SECOND_HALF_LETTER", "PIN_RECOVERY_CODE", "PIN_REVOKED", "PIN_UNLOCKED"] {
        assert!(templates.iter().any(|t| t.name == name), "{name}");
    }
}

#[tokio::test]
async fn a_resend_to_a_corrected_address_is_a_new_message_with_the_same_secrets() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;
    let original = enqueue(&mut notify, "test:resend:original").await;

    let mut request = resend_request(&original, "test:resend:corrected");
    request.address = "+39 347 7654321".into();
    let reply = notify.resend_message(request).await.expect("resent").into_inner();

    assert_ne!(reply.message_id, original, "a new message");
    assert_eq!(reply.status(), MessageStatus::Queued);
    let (old_channel, old_address, old_secrets) = stored(&suite, &original).await;
    let (channel, address, secrets) = stored(&suite, &reply.message_id).await;
    assert_eq!(channel, old_channel, "the original's channel is kept");
    assert_eq!(old_address, PHONE, "the original is untouched");
    assert_eq!(address, "+393477654321", "in E.164 form");
    assert_eq!(secrets, old_secrets);
    assert_eq!(secrets.expect("secret params")["pin_half"], SECRET);

    let looked_up = notify
        .batch_get_messages(BatchGetMessagesRequest { message_ids: vec![reply.message_id.clone()] })
        .await
        .expect("looked up")
        .into_inner();
    assert_eq!(looked_up.messages[0].masked_address, "+39 *** *** 4321");
    assert_eq!(looked_up.messages[0].template, "PIN_FIRST_HALF");
    assert_eq!(suite.db.count("notify", "messages", "fiscal_code = 'RSSMRA85T10A562S'").await, 2);
}

#[tokio::test]
async fn a_resend_on_another_channel_goes_to_the_address_given() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;
    let original = enqueue(&mut notify, "test:resend-email:original").await;

    let mut request = resend_request(&original, "test:resend-email:1");
    request.channel = Channel::Email as i32;
    request.address = "mario.rossi@example.it".into();
    let reply = notify.resend_message(request).await.expect("resent").into_inner();

    let (channel, address, _) = stored(&suite, &reply.message_id).await;
    assert_eq!(channel, "EMAIL");
    assert_eq!(address, "mario.rossi@example.it");

    let mut without_address = resend_request(&original, "test:resend-email:2");
    without_address.channel = Channel::Pec as i32;
    let status =
        notify.resend_message(without_address).await.expect_err("a phone number is no PEC address");
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = status.get_details_bad_request().expect("BadRequest details").field_violations;
    assert_eq!(violations[0].field, "address");
}

#[tokio::test]
async fn resending_an_unknown_message_is_not_found() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;

    let status = notify
        .resend_message(resend_request(&uuid::Uuid::now_v7().to_string(), "test:resend-unknown:1"))
        .await
        .expect_err("nothing to resend");

    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "MESSAGE_NOT_FOUND");
    assert_eq!(suite.db.count("notify", "messages", "1 = 1").await, 0);
}

#[tokio::test]
async fn resending_after_the_secrets_were_purged_is_failed_precondition() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;
    let original = enqueue(&mut notify, "test:purged:original").await;
    purge_secrets(&suite, &original).await;

    let status = notify
        .resend_message(resend_request(&original, "test:purged:resend"))
        .await
        .expect_err("the secrets are gone");

    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "SECRETS_PURGED");
    assert_eq!(suite.db.count("notify", "messages", "1 = 1").await, 1);
}

#[tokio::test]
async fn resending_twice_with_the_same_key_gives_the_same_message() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;
    let original = enqueue(&mut notify, "test:idempotent:original").await;

    let first = notify
        .resend_message(resend_request(&original, "test:idempotent:resend"))
        .await
        .expect("first")
        .into_inner();
    let second = notify
        .resend_message(resend_request(&original, "test:idempotent:resend"))
        .await
        .expect("second")
        .into_inner();

    assert_eq!(first.message_id, second.message_id);
    assert_eq!(
        suite.db.count("notify", "messages", "idempotency_key = 'test:idempotent:resend'").await,
        1
    );
    assert_eq!(suite.db.count("notify", "messages", "1 = 1").await, 2);
}

#[tokio::test]
async fn a_retried_resend_answers_the_same_even_after_the_secrets_were_purged() {
    let suite = spawn_suite().await;
    let mut notify = client(&suite).await;
    let original = enqueue(&mut notify, "test:retry-after-purge:original").await;
    let first = notify
        .resend_message(resend_request(&original, "test:retry-after-purge:resend"))
        .await
        .expect("first")
        .into_inner();
    purge_secrets(&suite, &original).await;

    let retried = notify
        .resend_message(resend_request(&original, "test:retry-after-purge:resend"))
        .await
        .expect("a retry is answered, not refused")
        .into_inner();

    assert_eq!(retried.message_id, first.message_id);
}

#[tokio::test]
async fn internal_rpcs_refuse_callers_that_are_not_services_even_straight_at_notify() {
    let suite = spawn_suite().await;
    let mut anonymous = NotifyServiceClient::new(connect(suite.notify.addr).await);
    let status =
        anonymous.enqueue_message(pin_message("test:anonymous:1")).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = anonymous
        .batch_get_messages(with_token(
            &suite.operator_token,
            BatchGetMessagesRequest { message_ids: vec!["x".into()] },
        ))
        .await
        .expect_err("a person, not a service");
    assert_eq!(status.code(), Code::PermissionDenied);
}
