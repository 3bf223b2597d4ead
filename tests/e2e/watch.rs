//! Live status (issue 25, item 3): a citizen watches their own claims, and their PIN request,
//! move without polling.
//! The stream passes through the gateway, which bounds it per citizen; it carries only the
//! caller's claims, ends with the session, and sees changes made through any instance of
//! claims-svc on the same database (PostgreSQL LISTEN/NOTIFY, or SQLite's change log).

use crate::auth::{active_citizen, identity};
use crate::claims::{claim_form, nth_cf, professional_row, registry, submit};
use crate::helpers::*;
use sportello_platform::auth::Level;
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use tonic_types::StatusExt;

type Watch = Streaming<cl::WatchMyClaimsResponse>;

async fn watch(channel: Channel, token: &str) -> Result<Watch, tonic::Status> {
    let request = with_token(token, cl::WatchMyClaimsRequest {});
    Ok(ClaimsServiceClient::new(channel).watch_my_claims(request).await?.into_inner())
}

/// The next message, within a few seconds.
async fn next(stream: &mut Watch) -> Result<cl::WatchMyClaimsResponse, tonic::Status> {
    let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")?;
    Ok(message.expect("the stream goes on"))
}

/// Reads the stream until claim `id` shows `want`; returns its Italian label. Changes that
/// follow each other quickly may arrive as one (the stream sends the state as it then is).
async fn until_status(stream: &mut Watch, id: &str, want: cl::ClaimStatus) -> String {
    loop {
        let message = next(stream).await.expect("no error");
        assert!(!message.initial, "only the first message is the initial one");
        for watched in message.claims {
            let claim = watched.claim.expect("claim");
            let receipt = claim.receipt.expect("receipt");
            if receipt.claim_id == id && claim.status == want as i32 {
                return watched.status_label;
            }
        }
    }
}

async fn backoffice(suite: &Suite) -> (ClaimsBackOfficeServiceClient<Channel>, String) {
    let token = suite.login_staff(BACKOFFICE_ID, BACKOFFICE_PASSWORD).await.access_token;
    (ClaimsBackOfficeServiceClient::new(suite.gateway_channel().await), token)
}

#[tokio::test]
async fn a_citizen_watches_their_claim_from_submission_to_payment_and_sees_nobody_elses() {
    let (mine, other) = (nth_cf(301), nth_cf(302));
    let suite = spawn_suite().await;
    suite
        .import_registry(&registry([professional_row(&mine), professional_row(&other)]))
        .await
        .expect("registry");
    let gateway = suite.gateway_channel().await;
    let (my_token, other_token) = (
        suite.citizen_token(&mine, Level::Simplified),
        suite.citizen_token(&other, Level::Simplified),
    );
    let mut stream = watch(gateway.clone(), &my_token).await.expect("watching");
    let first = next(&mut stream).await.expect("the current state at once");
    assert!(first.initial);
    assert!(first.claims.is_empty(), "no claim yet");

    // Another citizen's claim is filed and decided: nothing of it reaches this watcher.
    let theirs = submit(gateway.clone(), &other_token, claim_form("AGRICOLI", &other, "k"))
        .await
        .expect("filed");
    let receipt = submit(gateway.clone(), &my_token, claim_form("AGRICOLI", &mine, "k"))
        .await
        .expect("filed");
    let id = receipt.claim_id.clone();
    // No bank check is configured: the automatic decision leaves it to the back office.
    let label = until_status(&mut stream, &id, cl::ClaimStatus::InReview).await;
    assert_eq!(label, "In istruttoria");

    let (mut bo, token) = backoffice(&suite).await;
    let approve = cl::DecideClaimRequest {
        claim_id: id.clone(),
        decision: cl::Decision::Approve as i32,
        ..Default::default()
    };
    bo.decide_claim(with_token(&token, approve)).await.expect("approved");
    assert_eq!(until_status(&mut stream, &id, cl::ClaimStatus::Approved).await, "Accolta");
    let batch = bo
        .create_payment_batch(with_token(&token, cl::CreatePaymentBatchRequest::default()))
        .await
        .expect("ordered")
        .into_inner();
    assert_eq!(
        until_status(&mut stream, &id, cl::ClaimStatus::PaymentOrdered).await,
        "Pagamento disposto"
    );
    let confirm = cl::ConfirmPaymentBatchRequest { batch_id: batch.batch_id };
    bo.confirm_payment_batch(with_token(&token, confirm)).await.expect("paid");
    assert_eq!(until_status(&mut stream, &id, cl::ClaimStatus::Paid).await, "Pagata");

    // A new watcher gets the claim as it now stands, and never the other citizen's.
    let mut again = watch(gateway.clone(), &my_token).await.expect("watching");
    let now = next(&mut again).await.expect("state");
    let ids: Vec<String> = now
        .claims
        .iter()
        .map(|w| w.claim.clone().expect("claim").receipt.expect("receipt").claim_id)
        .collect();
    assert_eq!(ids, std::slice::from_ref(&id));
    assert!(!ids.contains(&theirs.claim_id));
    assert_eq!(now.claims[0].claim.as_ref().expect("claim").fiscal_code, mine);
}

#[tokio::test]
async fn a_withdrawal_reaches_the_watcher_and_staff_and_patronati_cannot_watch() {
    let mine = nth_cf(303);
    let suite = spawn_suite_with(crate::claims::undecided).await;
    suite.import_registry(&registry([professional_row(&mine)])).await.expect("registry");
    let gateway = suite.gateway_channel().await;
    let token = suite.citizen_token(&mine, Level::Simplified);
    let mut stream = watch(gateway.clone(), &token).await.expect("watching");
    assert!(next(&mut stream).await.expect("state").initial);
    let receipt =
        submit(gateway.clone(), &token, claim_form("AGRICOLI", &mine, "k")).await.expect("filed");
    assert_eq!(
        until_status(&mut stream, &receipt.claim_id, cl::ClaimStatus::Submitted).await,
        "Presentata"
    );
    let withdraw = cl::WithdrawClaimRequest { claim_id: receipt.claim_id.clone() };
    ClaimsServiceClient::new(gateway.clone())
        .withdraw_claim(with_token(&token, withdraw))
        .await
        .expect("withdrawn");
    assert_eq!(
        until_status(&mut stream, &receipt.claim_id, cl::ClaimStatus::Withdrawn).await,
        "Ritirata"
    );

    for (user, password) in [
        (OPERATOR_ID, OPERATOR_PASSWORD),
        (BACKOFFICE_ID, BACKOFFICE_PASSWORD),
        (PATRONATO_ID, PATRONATO_PASSWORD),
    ] {
        let staff = suite.login_staff(user, password).await.access_token;
        let refused = watch(gateway.clone(), &staff).await.expect_err(user);
        assert_eq!(refused.code(), Code::PermissionDenied, "{user} through the gateway");
        // claims-svc itself refuses them too, called directly.
        let direct = watch(connect(suite.claims.addr).await, &staff).await;
        let refused = match direct {
            Err(status) => status,
            Ok(mut stream) => stream.message().await.expect_err("refused"),
        };
        assert_eq!(refused.code(), Code::PermissionDenied, "{user} directly");
    }
    let mut client = ClaimsServiceClient::new(gateway);
    let anonymous = client.watch_my_claims(cl::WatchMyClaimsRequest {}).await;
    assert_eq!(anonymous.expect_err("no session").code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_citizen_holds_at_most_four_live_streams_and_gets_a_place_back_when_one_closes() {
    let mine = nth_cf(304);
    let suite = spawn_suite().await;
    let gateway = suite.gateway_channel().await;
    let token = suite.citizen_token(&mine, Level::Simplified);
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut stream = watch(gateway.clone(), &token).await.expect("within the bound");
        next(&mut stream).await.expect("state");
        open.push(stream);
    }
    let fifth = watch(gateway.clone(), &token).await.expect_err("a fifth stream");
    assert_eq!(fifth.code(), Code::ResourceExhausted);
    assert_eq!(fifth.get_details_error_info().expect("reason").reason, "TOO_MANY_STREAMS");
    assert!(fifth.get_details_retry_info().is_some(), "told when to retry");
    // Another citizen is not affected.
    let other = suite.citizen_token(&nth_cf(305), Level::Simplified);
    let mut theirs = watch(gateway.clone(), &other).await.expect("another citizen's stream");
    next(&mut theirs).await.expect("state");
    drop(open.pop());
    eventually("the closed stream's place is given back", Duration::from_secs(5), || {
        let (gateway, token) = (gateway.clone(), token.clone());
        async move { watch(gateway, &token).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn the_gateways_deadline_cap_does_not_cut_a_live_stream_whose_own_lifetime_ends_it() {
    let mine = nth_cf(307);
    let suite = spawn_suite_with(|c| {
        crate::claims::undecided(c);
        c.gateway.limits.max_deadline = Duration::from_secs(1);
        c.gateway.limits.max_stream_lifetime = Duration::from_secs(4);
    })
    .await;
    suite.import_registry(&registry([professional_row(&mine)])).await.expect("registry");
    let gateway = suite.gateway_channel().await;
    let token = suite.citizen_token(&mine, Level::Simplified);
    let opened = std::time::Instant::now();
    let mut stream = watch(gateway.clone(), &token).await.expect("watching");
    assert!(next(&mut stream).await.expect("state").initial);
    // Past the cap of ordinary calls, the stream still carries changes.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let receipt =
        submit(gateway.clone(), &token, claim_form("AGRICOLI", &mine, "k")).await.expect("filed");
    until_status(&mut stream, &receipt.claim_id, cl::ClaimStatus::Submitted).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("ended by its lifetime")
        .expect_err("ended with a status");
    assert_eq!(ended.code(), Code::DeadlineExceeded);
    assert!(opened.elapsed() >= Duration::from_secs(3), "not before its lifetime");
}

#[tokio::test]
async fn a_logout_ends_the_live_stream_within_seconds() {
    let suite = spawn_suite().await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    let token = session.access_token;
    let mut stream = watch(suite.gateway_channel().await, &token).await.expect("watching");
    assert!(next(&mut stream).await.expect("state").initial);
    identity(&suite).await.logout(with_token(&token, id::LogoutRequest {})).await.expect("out");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("ended within seconds")
        .expect_err("ended with an error");
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert_eq!(ended.get_details_error_info().expect("reason").reason, "SESSION_ENDED");
}

#[tokio::test]
async fn a_change_made_through_one_claims_instance_reaches_a_watcher_of_another() {
    let mine = nth_cf(306);
    let mut second = None;
    let suite = spawn_suite_with(|c| second = Some(c.claims.clone())).await;
    let second = second.expect("config");
    let b = Running::start(listener().await, |l, s| claims_svc::serve(second, l, s));
    wait_for_status(b.addr, "", tonic_health::pb::health_check_response::ServingStatus::Serving)
        .await;
    suite.import_registry(&registry([professional_row(&mine)])).await.expect("registry");
    let token = suite.citizen_token(&mine, Level::Simplified);
    // Watching on instance B, filing through the gateway's instance A.
    let mut stream = watch(connect(b.addr).await, &token).await.expect("watching on B");
    assert!(next(&mut stream).await.expect("state").initial);
    let receipt =
        submit(connect(suite.claims.addr).await, &token, claim_form("AGRICOLI", &mine, "k"))
            .await
            .expect("filed on A");
    until_status(&mut stream, &receipt.claim_id, cl::ClaimStatus::InReview).await;
}

type PinWatch = Streaming<id::WatchMyPinRequestResponse>;

async fn watch_pin(channel: Channel, token: &str) -> Result<PinWatch, tonic::Status> {
    let request = with_token(token, id::WatchMyPinRequestRequest {});
    let reply = IdentityServiceClient::new(channel).watch_my_pin_request(request).await?;
    Ok(reply.into_inner())
}

/// Reads the stream until it shows `want`, checking that the stages never go back.
async fn until_stage(
    stream: &mut PinWatch,
    want: id::PinRequestStage,
) -> id::WatchMyPinRequestResponse {
    let mut last = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("a message within 20 s")
            .expect("no error")
            .expect("the stream goes on");
        assert!(message.stage >= last, "the stages move forward: {last} then {}", message.stage);
        last = message.stage;
        if message.stage == want as i32 {
            return message;
        }
    }
}

/// The PIN half that message `template` carried, as its channel delivered it.
async fn half(suite: &Suite, template: &str) -> String {
    use sqlx::Row;
    let sql = format!(
        "SELECT id, channel FROM {} WHERE template = $1",
        suite.db.table("notify", "messages")
    );
    let pool = suite.db.pool("notify").await;
    let row = sqlx::query(&sql).bind(template).fetch_one(&pool).await.expect("message");
    let (id, channel): (String, String) = (row.get("id"), row.get("channel"));
    let text = read_delivered(suite.db.data_dir(), &id, &channel);
    Delivered { message_id: id, channel, text }.secret()
}

#[tokio::test]
async fn a_citizen_watches_their_pin_request_from_issue_to_first_access_and_nobody_elses() {
    let suite = spawn_suite_with(|c| {
        c.notify.dispatch.enabled = true;
        c.notify.sinks.report_delivery = true;
    })
    .await;
    let gateway = suite.gateway_channel().await;
    let token = suite.citizen_token(ROSSI, Level::Simplified);
    let mut stream = watch_pin(gateway.clone(), &token).await.expect("watching");
    let nothing = until_stage(&mut stream, id::PinRequestStage::Unspecified).await;
    assert_eq!(nothing.stage_label, "Nessuna richiesta di PIN");
    let other = suite.citizen_token(&nth_cf(310), Level::Simplified);
    let mut theirs = watch_pin(gateway.clone(), &other).await.expect("another citizen watching");
    until_stage(&mut theirs, id::PinRequestStage::Unspecified).await;

    let filed = IdentityServiceClient::new(gateway.clone())
        .request_pin(pin_request(ROSSI))
        .await
        .expect("requested")
        .into_inner();
    // The local sinks deliver both halves: the stream moves to the printed letter.
    let printed = until_stage(&mut stream, id::PinRequestStage::LetterPrinted).await;
    assert_eq!(printed.request_id, filed.request_id);
    assert_eq!(printed.stage_label, "Lettera con la seconda parte del PIN stampata e spedita");
    let spooled = [id::DeliveryStatus::Sent as i32, id::DeliveryStatus::Delivered as i32];
    assert!(spooled.contains(&printed.second_half), "the letter is in the print spool");

    let initial = format!(
        "{}{}",
        half(&suite, "PIN_FIRST_HALF").await,
        half(&suite, "PIN_SECOND_HALF_LETTER").await
    );
    IdentityServiceClient::new(gateway.clone())
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: ROSSI.into(),
            initial_pin: initial,
            new_pin: crate::auth::OWN_PIN.into(),
        })
        .await
        .expect("first access");
    let active = until_stage(&mut stream, id::PinRequestStage::FirstAccess).await;
    assert!(active.first_access_completed);
    assert_eq!(active.stage_label, "Primo accesso completato: il PIN è attivo");

    // Nothing of Rossi's request reached the other citizen's stream.
    let quiet = tokio::time::timeout(Duration::from_millis(500), theirs.message()).await;
    assert!(quiet.is_err(), "another citizen's stream stays silent: {quiet:?}");
    let operator = watch_pin(gateway, &suite.operator_token).await.expect_err("staff");
    assert_eq!(operator.code(), Code::PermissionDenied);
}
