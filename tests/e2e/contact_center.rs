//! The contact center's RPCs: operators only, every call audited, the 12-hour queue and the
//! re-send of a stuck first half.

use crate::helpers::*;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::contact_center_service_client::ContactCenterServiceClient;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

async fn operator_client(suite: &Suite) -> ContactCenterServiceClient<Channel> {
    ContactCenterServiceClient::new(suite.gateway_channel().await)
}

async fn file_for_caller(suite: &Suite, fiscal_code: &str) -> id::RequestPinForCallerResponse {
    file_form(suite, pin_request(fiscal_code)).await
}

async fn file_form(suite: &Suite, form: id::RequestPinRequest) -> id::RequestPinForCallerResponse {
    operator_client(suite)
        .await
        .request_pin_for_caller(
            suite.as_operator(id::RequestPinForCallerRequest { form: Some(form) }),
        )
        .await
        .expect("filed")
        .into_inner()
}

pub(crate) async fn audit_trail(suite: &Suite, fiscal_code: &str) -> Vec<id::AuditEvent> {
    operator_client(suite)
        .await
        .list_audit_events(suite.as_operator(id::ListAuditEventsRequest {
            fiscal_code: fiscal_code.into(),
            ..Default::default()
        }))
        .await
        .expect("trail")
        .into_inner()
        .events
}

#[tokio::test]
async fn contact_center_rpcs_need_operator_credentials() {
    let suite = spawn_suite().await;
    let mut cc = operator_client(&suite).await;
    let status = cc
        .lookup_credential(id::LookupCredentialRequest { fiscal_code: ROSSI.into() })
        .await
        .expect_err("anonymous");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(id::LookupCredentialRequest { fiscal_code: ROSSI.into() });
    wrong.metadata_mut().insert("authorization", "Bearer guessed".parse().expect("ascii"));
    assert_eq!(
        cc.lookup_credential(wrong).await.expect_err("wrong key").code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn an_operator_files_a_request_for_a_caller_and_sees_the_real_outcome() {
    let suite = spawn_suite().await;
    let first = file_for_caller(&suite, ROSSI).await;
    assert_eq!(first.outcome, id::PinRequestOutcome::Issued as i32);
    let second = file_for_caller(&suite, ROSSI).await;
    assert_eq!(
        second.outcome,
        id::PinRequestOutcome::AlreadyHasPin as i32,
        "operators see the truth"
    );
    let invalid = operator_client(&suite)
        .await
        .request_pin_for_caller(suite.as_operator(id::RequestPinForCallerRequest {
            form: Some(pin_request("RSSMRA85T10A562X")),
        }))
        .await
        .expect_err("same checks as the portal");
    assert_eq!(invalid.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn lookup_shows_state_delivery_and_masked_contacts() {
    let suite = spawn_suite().await;
    IdentityServiceClient::new(suite.gateway_channel().await)
        .request_pin(pin_request(ROSSI))
        .await
        .expect("filed");
    let view = operator_client(&suite)
        .await
        .lookup_credential(
            suite.as_operator(id::LookupCredentialRequest { fiscal_code: ROSSI.into() }),
        )
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(view.pin_state, id::PinState::SimplifiedOnly as i32);
    let contacts = view.contacts.clone().expect("contacts");
    assert_eq!(contacts.mobile_phone, "+39 *** *** 4567");
    assert_eq!(contacts.email, "m***@e***.it");
    let request = &view.requests[0];
    assert_eq!(request.first_half, id::DeliveryStatus::Queued as i32);
    assert_eq!(request.second_half, id::DeliveryStatus::Queued as i32);
    assert!(!format!("{view:?}").contains("1234567"), "no full contact in the answer");
}

#[tokio::test]
async fn requests_not_delivered_within_the_grace_period_are_listed_oldest_first_in_pages() {
    let suite = spawn_suite_with(|c| c.identity.pins.first_half_grace = Duration::ZERO).await;
    let ids = [
        file_for_caller(&suite, ROSSI).await.request_id,
        file_form(&suite, citizen_request("Bianchi", "Laura", (1990, 1, 1), id::Sex::Female).1)
            .await
            .request_id,
        file_form(&suite, citizen_request("Verdi", "Giuseppe", (1980, 1, 1), id::Sex::Male).1)
            .await
            .request_id,
    ];
    let mut cc = operator_client(&suite).await;
    let page = |token: String| {
        suite.as_operator(id::ListUndeliveredPinRequestsRequest { page_size: 2, page_token: token })
    };
    let first =
        cc.list_undelivered_pin_requests(page(String::new())).await.expect("page 1").into_inner();
    assert_eq!(first.requests.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = cc
        .list_undelivered_pin_requests(page(first.next_page_token))
        .await
        .expect("page 2")
        .into_inner();
    let listed: Vec<String> =
        first.requests.iter().chain(&second.requests).map(|r| r.request_id.clone()).collect();
    assert_eq!(listed, ids, "oldest first, each once");
    assert!(second.next_page_token.is_empty());
}

#[tokio::test]
async fn fresh_requests_are_not_stuck_yet() {
    let suite = spawn_suite().await;
    file_for_caller(&suite, ROSSI).await;
    let listed = operator_client(&suite)
        .await
        .list_undelivered_pin_requests(
            suite.as_operator(id::ListUndeliveredPinRequestsRequest::default()),
        )
        .await
        .expect("list")
        .into_inner();
    assert!(listed.requests.is_empty(), "12 hours have not passed");
}

#[tokio::test]
async fn an_operator_validates_a_stuck_request_and_resends_the_first_half_to_a_corrected_contact() {
    let suite = spawn_suite_with(|c| c.identity.pins.first_half_grace = Duration::ZERO).await;
    let request_id = file_for_caller(&suite, ROSSI).await.request_id;
    // Its first half has left identity's outbox (as it has, 12 hours on).
    suite.db.outbox_relayed().await;
    let mut cc = operator_client(&suite).await;

    let unverified = cc
        .resend_first_half(suite.as_operator(id::ResendFirstHalfRequest {
            request_id: request_id.clone(),
            ..Default::default()
        }))
        .await
        .expect_err("identity not checked");
    assert_eq!(unverified.code(), Code::InvalidArgument);

    let reply = cc
        .resend_first_half(suite.as_operator(id::ResendFirstHalfRequest {
            request_id: request_id.clone(),
            identity_verified: true,
            channel: id::DeliveryChannel::Sms as i32,
            address: "+39 347 7654321".into(),
        }))
        .await
        .expect("re-sent")
        .into_inner();
    assert_eq!(reply.masked_address, "+39 *** *** 4321");
    let again = cc
        .resend_first_half(suite.as_operator(id::ResendFirstHalfRequest {
            request_id: request_id.clone(),
            identity_verified: true,
            ..Default::default()
        }))
        .await
        .expect_err("validated: no longer stuck");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let sent = suite.db.messages("PIN_FIRST_HALF").await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].address, "+393477654321");
    assert_eq!(sent[1].secret("pin_half"), sent[0].secret("pin_half"), "the same first half");

    let listed = cc
        .list_undelivered_pin_requests(
            suite.as_operator(id::ListUndeliveredPinRequestsRequest::default()),
        )
        .await
        .expect("list")
        .into_inner();
    assert!(listed.requests.is_empty(), "validated requests leave the queue");
    let view = cc
        .lookup_credential(
            suite.as_operator(id::LookupCredentialRequest { fiscal_code: ROSSI.into() }),
        )
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(view.requests[0].validated_by, OPERATOR_ID);
    assert_eq!(
        view.contacts.expect("contacts").mobile_phone,
        "+39 *** *** 4567",
        "a corrected contact serves that re-send only"
    );
    let trail = audit_trail(&suite, ROSSI).await;
    let resend = trail.iter().find(|e| e.action == "ResendFirstHalf" && e.outcome == "OK");
    let resend = resend.expect("audited");
    assert!(resend.detail.contains("SMS +39 *** *** 4321"), "{}", resend.detail);
}

fn resend(suite: &Suite, request_id: &str) -> tonic::Request<id::ResendFirstHalfRequest> {
    suite.as_operator(id::ResendFirstHalfRequest {
        request_id: request_id.into(),
        identity_verified: true,
        ..Default::default()
    })
}

#[tokio::test]
async fn only_a_stuck_request_can_be_resent() {
    let suite = spawn_suite().await;
    let request_id = file_for_caller(&suite, ROSSI).await.request_id;
    let mut cc = operator_client(&suite).await;
    let fresh =
        cc.resend_first_half(resend(&suite, &request_id)).await.expect_err("not 12 hours old");
    assert_eq!(fresh.code(), Code::FailedPrecondition);
    let trail = audit_trail(&suite, ROSSI).await;
    assert_eq!(
        (trail[0].action.as_str(), trail[0].outcome.as_str()),
        ("ResendFirstHalf", "FailedPrecondition"),
        "refusals are audited under the citizen"
    );

    // An active citizen's request is not stuck either, however old.
    let suite = spawn_suite_with(|c| c.identity.pins.first_half_grace = Duration::ZERO).await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);
    let request_id =
        identity.request_pin(pin_request(ROSSI)).await.expect("filed").into_inner().request_id;
    let first = suite.db.message("PIN_FIRST_HALF").await.secret("pin_half");
    let second = suite.db.message("PIN_SECOND_HALF_LETTER").await.secret("pin_half");
    identity
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: ROSSI.into(),
            initial_pin: format!("{first}{second}"),
            new_pin: "Q7ZK2MPX".into(),
        })
        .await
        .expect("first access");
    let mut cc = operator_client(&suite).await;
    let active = cc.resend_first_half(resend(&suite, &request_id)).await.expect_err("PIN in use");
    assert_eq!(active.code(), Code::FailedPrecondition);
    assert_eq!(suite.db.messages("PIN_FIRST_HALF").await.len(), 1, "nothing re-sent");
}

#[tokio::test]
async fn changing_a_contact_tells_the_old_contacts_and_audits_the_masked_new_one() {
    let suite = spawn_suite().await;
    file_for_caller(&suite, ROSSI).await;
    let mut cc = operator_client(&suite).await;
    let change = |verified: bool| {
        suite.as_operator(id::UpdateContactsRequest {
            fiscal_code: ROSSI.into(),
            identity_verified: verified,
            channel: id::DeliveryChannel::Email as i32,
            address: "nuovo.indirizzo@example.org".into(),
        })
    };
    let unverified = cc.update_contacts(change(false)).await.expect_err("identity not checked");
    assert_eq!(unverified.code(), Code::InvalidArgument);
    let reply = cc.update_contacts(change(true)).await.expect("changed").into_inner();
    assert_eq!(reply.masked_address, "n***@e***.org");

    let mut told: Vec<String> =
        suite.db.messages("PIN_CONTACTS_CHANGED").await.into_iter().map(|m| m.address).collect();
    told.sort();
    assert_eq!(told, [ROSSI_MOBILE, ROSSI_EMAIL], "the contacts on file before the change");
    let trail = audit_trail(&suite, ROSSI).await;
    let event = trail.iter().find(|e| e.action == "UpdateContacts" && e.outcome == "OK");
    let event = event.expect("audited");
    assert_eq!(event.detail, "EMAIL n***@e***.org");
    assert!(!format!("{trail:?}").contains("nuovo.indirizzo"), "no full address in the trail");
}

#[tokio::test]
async fn audit_rows_are_filed_under_the_canonical_fiscal_code() {
    let suite = spawn_suite().await;
    let mut cc = operator_client(&suite).await;
    let omocode = "RSSDIA96A43A6VTT";
    cc.lookup_credential(
        suite.as_operator(id::LookupCredentialRequest { fiscal_code: omocode.into() }),
    )
    .await
    .expect("lookup");
    cc.revoke_pin(
        suite.as_operator(id::RevokePinRequest {
            fiscal_code: omocode.into(),
            reason: "test".into(),
        }),
    )
    .await
    .expect_err("no PIN");
    let trail = audit_trail(&suite, "RSSDIA96A43A697K").await;
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["RevokePin", "LookupCredential"]);
    assert!(trail.iter().all(|e| e.fiscal_code == "RSSDIA96A43A697K"));
}

#[tokio::test]
async fn listing_the_queue_is_in_the_operators_own_trail() {
    let suite = spawn_suite().await;
    let mut cc = operator_client(&suite).await;
    cc.list_undelivered_pin_requests(
        suite.as_operator(id::ListUndeliveredPinRequestsRequest::default()),
    )
    .await
    .expect("list");
    let trail = cc
        .list_audit_events(suite.as_operator(id::ListAuditEventsRequest {
            operator_id: OPERATOR_ID.into(),
            ..Default::default()
        }))
        .await
        .expect("the operator's trail")
        .into_inner()
        .events;
    assert_eq!(trail[0].action, "ListUndeliveredPinRequests");
    assert_eq!(trail[0].operator_id, OPERATOR_ID);
}

#[tokio::test]
async fn revoking_a_pin_ends_every_session_of_the_citizen() {
    let suite = spawn_suite().await;
    IdentityServiceClient::new(suite.gateway_channel().await)
        .request_pin(pin_request(ROSSI))
        .await
        .expect("filed");
    let first = suite.db.message("PIN_FIRST_HALF").await.secret("pin_half");
    suite.login_with_pin(ROSSI, &first).await.expect("simplified login");
    suite.login_with_pin(ROSSI, &first).await.expect("another device");
    let live = "revoked_at IS NULL AND subject = 'RSSMRA85T10A562S'";
    assert_eq!(suite.db.count("identity", "sessions", live).await, 2);
    operator_client(&suite)
        .await
        .revoke_pin(suite.as_operator(id::RevokePinRequest {
            fiscal_code: ROSSI.into(),
            reason: "stolen phone".into(),
        }))
        .await
        .expect("revoked");
    assert_eq!(suite.db.count("identity", "sessions", live).await, 0, "every session ended");
}

#[tokio::test]
async fn a_revoked_pin_is_notified_and_a_new_one_can_be_requested() {
    let suite = spawn_suite().await;
    file_for_caller(&suite, ROSSI).await;
    let mut cc = operator_client(&suite).await;
    let no_reason = cc
        .revoke_pin(
            suite.as_operator(id::RevokePinRequest {
                fiscal_code: ROSSI.into(),
                reason: " ".into(),
            }),
        )
        .await
        .expect_err("reason required");
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    cc.revoke_pin(suite.as_operator(id::RevokePinRequest {
        fiscal_code: ROSSI.into(),
        reason: "lost the letter".into(),
    }))
    .await
    .expect("revoked");
    assert_eq!(suite.db.messages("PIN_REVOKED").await.len(), 2);
    let again = file_for_caller(&suite, ROSSI).await;
    assert_eq!(again.outcome, id::PinRequestOutcome::Issued as i32);
    let not_locked = cc
        .unlock_pin(
            suite.as_operator(id::UnlockPinRequest {
                fiscal_code: ROSSI.into(),
                reason: "x".into(),
            }),
        )
        .await
        .expect_err("nothing to unlock");
    assert_eq!(not_locked.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn every_operator_call_is_audited_with_who_what_and_outcome() {
    let suite = spawn_suite().await;
    let mut cc = operator_client(&suite).await;
    file_for_caller(&suite, ROSSI).await;
    cc.lookup_credential(
        suite.as_operator(id::LookupCredentialRequest { fiscal_code: ROSSI.into() }),
    )
    .await
    .expect("lookup");
    cc.revoke_pin(suite.as_operator(id::RevokePinRequest {
        fiscal_code: ROSSI.into(),
        reason: "fraud suspected".into(),
    }))
    .await
    .expect("revoked");
    cc.unlock_pin(
        suite
            .as_operator(id::UnlockPinRequest { fiscal_code: ROSSI.into(), reason: "test".into() }),
    )
    .await
    .expect_err("not locked");

    let trail = audit_trail(&suite, ROSSI).await;
    let seen: Vec<(&str, &str)> =
        trail.iter().map(|e| (e.action.as_str(), e.outcome.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("UnlockPin", "FailedPrecondition"),
            ("RevokePin", "OK"),
            ("LookupCredential", "OK"),
            ("RequestPinForCaller", "OK"),
            ("RegisterCheck", "ON_REGISTER"),
        ],
        "newest first"
    );
    assert!(trail
        .iter()
        .all(|e| e.operator_id == OPERATOR_ID && e.fiscal_code == ROSSI && e.time.is_some()));
    assert_eq!(trail[1].detail, "fraud suspected");
    // Reading the trail is itself an operator action.
    assert_eq!(audit_trail(&suite, ROSSI).await[0].action, "ListAuditEvents");
}

#[tokio::test]
async fn the_audit_trail_cannot_be_changed_even_from_the_database() {
    let suite = spawn_suite().await;
    file_for_caller(&suite, ROSSI).await;
    let pool = suite.db.pool("identity").await;
    let table = suite.db.table("identity", "audit_events");
    let update = sqlx::query(&format!("UPDATE {table} SET outcome = 'OK'")).execute(&pool).await;
    assert!(update.is_err(), "update refused");
    let delete = sqlx::query(&format!("DELETE FROM {table}")).execute(&pool).await;
    assert!(delete.is_err(), "delete refused");
    // The filing and its register check.
    assert_eq!(suite.db.count("identity", "audit_events", "1 = 1").await, 2);
}

#[tokio::test]
async fn a_citizen_cannot_change_contacts_or_issue_a_held_request_even_on_their_own_record() {
    let suite = spawn_suite().await;
    IdentityServiceClient::new(suite.gateway_channel().await)
        .request_pin(pin_request(ROSSI))
        .await
        .expect("issued");
    let first_half = suite.db.message("PIN_FIRST_HALF").await.secret("pin_half");
    let citizen = suite.login_with_pin(ROSSI, &first_half).await.expect("simplified").access_token;
    let change = || {
        with_token(
            &citizen,
            id::UpdateContactsRequest {
                fiscal_code: ROSSI.into(),
                identity_verified: true,
                channel: id::DeliveryChannel::Email as i32,
                address: "attacker@example.org".into(),
            },
        )
    };
    let issue = || {
        with_token(
            &citizen,
            id::ValidatePendingPinRequestRequest {
                request_id: uuid::Uuid::now_v7().to_string(),
                identity_verified: true,
            },
        )
    };
    // Through the gateway, and straight at identity-svc as an insider could.
    for channel in [suite.gateway_channel().await, connect(suite.identity.addr).await] {
        let mut cc = ContactCenterServiceClient::new(channel);
        assert_eq!(
            cc.update_contacts(change()).await.expect_err("no").code(),
            Code::PermissionDenied
        );
        let held = cc.validate_pending_pin_request(issue()).await.expect_err("no");
        assert_eq!(held.code(), Code::PermissionDenied);
    }
    assert_eq!(suite.db.messages("PIN_CONTACTS_CHANGED").await.len(), 0, "nothing changed");
}

#[tokio::test]
async fn a_malformed_contact_or_request_id_is_a_field_violation() {
    let suite = spawn_suite().await;
    file_for_caller(&suite, ROSSI).await;
    let mut cc = operator_client(&suite).await;
    for (channel, address) in [
        (id::DeliveryChannel::Email, "not an email"),
        (id::DeliveryChannel::Sms, "call me maybe"),
        (id::DeliveryChannel::Unspecified, "mario@example.it"),
    ] {
        let request = suite.as_operator(id::UpdateContactsRequest {
            fiscal_code: ROSSI.into(),
            identity_verified: true,
            channel: channel as i32,
            address: address.into(),
        });
        let status = cc.update_contacts(request).await.expect_err("malformed");
        assert_eq!(status.code(), Code::InvalidArgument, "{channel:?} {address:?}");
    }
    let request = suite.as_operator(id::ValidatePendingPinRequestRequest {
        request_id: "\u{0}not-a-request".into(),
        identity_verified: true,
    });
    let status = cc.validate_pending_pin_request(request).await.expect_err("malformed");
    assert!(matches!(status.code(), Code::InvalidArgument | Code::NotFound), "{status:?}");
    assert_eq!(suite.db.messages("PIN_CONTACTS_CHANGED").await.len(), 0, "nothing changed");
}
