//! What the edge accepts is what every later step can store, send and print (issue 21): one
//! parser per kind of value, the same at every service, and a bad value that slips through
//! fails only its own request.

use crate::claims::{
    claim_form, claims_store, nth_cf, professional_row, registry, submit, undecided,
};
use crate::helpers::*;
use sportello_platform::auth::Level;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::notify::v1 as notify;
use tonic::Code;

/// The addresses issue 21 found accepted by SubmitClaim and RequestPin and never delivered.
const UNDELIVERABLE: &[&str] = &[
    "mario;rossi@example.it",
    "a,b@example.it",
    "x@example..it",
    "<mario>@example.it",
    "mario<rossi@example.it",
    "m(comment)@example.it",
    "mario\u{202e}@example.it",
    "mario\u{1}@example.it",
];

fn undeliverable() -> Vec<String> {
    let mut all: Vec<String> = UNDELIVERABLE.iter().map(|s| (*s).to_owned()).collect();
    all.push(format!("{}@example.it", "m".repeat(240)));
    all
}

fn refused_on(status: &tonic::Status, field: &str, what: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert!(violated_fields(status).iter().any(|f| f == field), "{what}: {status:?}");
}

#[tokio::test]
async fn every_undeliverable_email_is_refused_at_request_pin_submit_claim_and_enqueue_message() {
    let suite = spawn_suite_with(undecided).await;
    let cf = nth_cf(1);
    suite.import_registry(&registry([professional_row(&cf)])).await.expect("registry");
    let token = suite.citizen_token(&cf, Level::Simplified);
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);
    let mut notify = crate::notify::client(&suite).await;
    for (i, email) in undeliverable().into_iter().enumerate() {
        let mut pin = pin_request(ROSSI);
        pin.contacts.as_mut().expect("contacts").email = email.clone();
        let status = identity.request_pin(pin).await.expect_err("RequestPin");
        refused_on(&status, "contacts.email", &format!("RequestPin {email:?}"));

        let mut claim = claim_form("PROFESSIONISTI_COCOCO", &cf, &format!("bad-email-{i}"));
        claim.contacts.as_mut().expect("contacts").email = email.clone();
        let status = submit(suite.gateway_channel().await, &token, claim).await.expect_err("claim");
        refused_on(&status, "contacts.email", &format!("SubmitClaim {email:?}"));

        let message = notify::EnqueueMessageRequest {
            idempotency_key: format!("test:bad-email:{i}"),
            fiscal_code: ROSSI.into(),
            channel: notify::Channel::Email as i32,
            address: email.clone(),
            template: "CLAIM_RECEIPT".into(),
            ..Default::default()
        };
        let status = notify.enqueue_message(message).await.expect_err("EnqueueMessage");
        refused_on(&status, "address", &format!("EnqueueMessage {email:?}"));
    }
    assert_eq!(suite.db.count("claims", "claims", "1 = 1").await, 0);
    assert_eq!(suite.db.count("notify", "messages", "1 = 1").await, 0);
}

#[tokio::test]
async fn a_nul_byte_in_any_text_field_is_refused_by_field_before_any_handler() {
    let suite = spawn_suite_with(undecided).await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);
    let mut pin = pin_request(ROSSI);
    pin.personal_data.as_mut().expect("anagrafica").surname = "Ros\0si".into();
    pin.contacts.as_mut().expect("contacts").pec = "mario\0@pec.example.it".into();
    let status = identity.request_pin(pin).await.expect_err("NUL");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["personal_data.surname", "contacts.pec"]);

    let mut notify = crate::notify::client(&suite).await;
    let message = notify::EnqueueMessageRequest {
        idempotency_key: "test:nul".into(),
        fiscal_code: ROSSI.into(),
        channel: notify::Channel::Sms as i32,
        address: ROSSI_MOBILE.into(),
        template: "PIN_FIRST_HALF".into(),
        params: [("name".to_owned(), "Ma\0rio".to_owned())].into(),
        ..Default::default()
    };
    let status = notify.enqueue_message(message).await.expect_err("NUL");
    assert_eq!(violated_fields(&status), ["params[\"name\"]"]);
}

#[tokio::test]
async fn a_claim_with_a_nul_byte_among_40_honest_concurrent_ones_is_the_only_one_refused() {
    let suite = spawn_suite_with(undecided).await;
    let citizens: Vec<String> = (0..41).map(nth_cf).collect();
    let rows = registry(citizens.iter().map(|cf| professional_row(cf)));
    assert_eq!(suite.import_registry(&rows).await.expect("registry").rows_changed, 41);
    let channel = connect(suite.claims.addr).await;
    let mut calls = tokio::task::JoinSet::new();
    for (n, cf) in citizens.iter().enumerate() {
        let token = suite.citizen_token(cf, Level::Simplified);
        let mut form = claim_form("PROFESSIONISTI_COCOCO", cf, "click-day");
        if n == 20 {
            form.contacts.as_mut().expect("contacts").email = "luca\0@example.it".into();
        }
        let channel = channel.clone();
        calls.spawn(async move { (n, submit(channel, &token, form).await) });
    }
    let mut accepted = 0;
    while let Some(done) = calls.join_next().await {
        match done.expect("call") {
            (20, outcome) => {
                let status = outcome.expect_err("the NUL claim");
                refused_on(&status, "contacts.email", "the NUL claim");
            }
            (n, outcome) => {
                outcome.unwrap_or_else(|s| panic!("honest claim {n}: {s:?}"));
                accepted += 1;
            }
        }
    }
    assert_eq!(accepted, 40);
}

/// Behind the edge: a claim whose text the database cannot store (PostgreSQL refuses NUL) that
/// reached the batch anyway fails alone, and as a client error; the batch is committed in
/// halves down to the culprit.
#[tokio::test]
async fn a_batch_the_database_refuses_is_committed_in_halves_so_only_the_culprit_fails() {
    use claims_svc::domain::claim::{ClaimForm, Filing};
    use claims_svc::store::{Filer, Submission, Submitted};
    let suite = spawn_suite_with(undecided).await;
    let citizens: Vec<String> = (0..41).map(nth_cf).collect();
    let rows = registry(citizens.iter().map(|cf| professional_row(cf)));
    assert_eq!(suite.import_registry(&rows).await.expect("registry").rows_changed, 41);
    let store = claims_store(&suite).await;
    let today = chrono::Utc::now().date_naive();
    let mut calls = tokio::task::JoinSet::new();
    for (n, cf) in citizens.iter().enumerate() {
        let request = claim_form("PROFESSIONISTI_COCOCO", cf, "click-day");
        let mut form = ClaimForm::parse(&request, Filing::Citizen(cf), today).expect("form");
        if n == 20 {
            form.contacts.email = Some("luca\0@example.it".into());
        }
        let submission = Submission {
            form,
            filer: Filer::Citizen(cf.clone()),
            level: Level::Simplified,
            traceparent: None,
        };
        let store = store.clone();
        calls.spawn(async move { (n, store.submit(submission).await) });
    }
    let mut accepted = 0;
    while let Some(done) = calls.join_next().await {
        match done.expect("call") {
            (20, Err(e)) => {
                assert!(suite.db.is_postgres(), "SQLite stores a NUL: {e}");
                assert!(sportello_platform::db::is_unstorable_text(&e), "{e}");
            }
            (_, Ok(Submitted::Accepted(_))) => accepted += 1,
            (n, other) => panic!("claim {n}: {other:?}"),
        }
    }
    let expected = if suite.db.is_postgres() { 40 } else { 41 };
    assert_eq!(accepted, expected);
    assert_eq!(suite.db.count("claims", "claims", "1 = 1").await, expected);
}
