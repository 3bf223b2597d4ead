//! The register of residents (issue 8 §6) and the form kept for operators (§5): the bulk import
//! through the gateway, where the second half's letter goes, what is held back and why, and
//! what the audit trail and the contact center's queue say about it.

use crate::helpers::*;
use sportello_platform::auth::Level;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::contact_center_service_client::ContactCenterServiceClient;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::identity::v1::residents_service_client::ResidentsServiceClient;
use tonic::transport::Channel;
use tonic::Code;

async fn identity(suite: &Suite) -> IdentityServiceClient<Channel> {
    IdentityServiceClient::new(suite.gateway_channel().await)
}

async fn contact_center(suite: &Suite) -> ContactCenterServiceClient<Channel> {
    ContactCenterServiceClient::new(suite.gateway_channel().await)
}

/// Giuseppe Verdi, born in Rome, whom the demo register does not list.
fn verdi() -> (String, id::RequestPinRequest) {
    citizen_request("Verdi", "Giuseppe", (1980, 1, 1), id::Sex::Male)
}

fn living_in_milan(form: &mut id::RequestPinRequest) {
    form.residence = Some(id::Residence {
        place: Some(id::residence::Place::Italy(id::ItalianAddress {
            street: "Via Dante".into(),
            street_number: "12".into(),
            postal_code: "20121".into(),
            province: "MI".into(),
            municipality: "Milano".into(),
        })),
    });
}

async fn lookup(suite: &Suite, cf: &str) -> id::LookupCredentialResponse {
    let request = suite.as_operator(id::LookupCredentialRequest { fiscal_code: cf.into() });
    contact_center(suite).await.lookup_credential(request).await.expect("lookup").into_inner()
}

/// The audit rows of `action` in the trail of `cf`, oldest first.
async fn audit_rows(suite: &Suite, cf: &str, action: &str) -> Vec<id::AuditEvent> {
    let request = suite.as_operator(id::ListAuditEventsRequest {
        fiscal_code: cf.into(),
        page_size: 100,
        ..Default::default()
    });
    let events =
        contact_center(suite).await.list_audit_events(request).await.expect("audit").into_inner();
    events.events.into_iter().rev().filter(|e| e.action == action).collect()
}

/// The outcomes of the register checks in the audit trail of `cf`, oldest first.
async fn register_checks(suite: &Suite, cf: &str) -> Vec<(String, String)> {
    let rows = audit_rows(suite, cf, "RegisterCheck").await;
    rows.into_iter().map(|e| (e.operator_id, e.outcome)).collect()
}

async fn messages_for(suite: &Suite, cf: &str) -> i64 {
    suite.db.count("notify", "messages", &format!("fiscal_code = '{cf}'")).await
}

#[tokio::test]
async fn an_import_keeps_good_rows_reports_bad_ones_by_line_and_field_and_is_idempotent() {
    let suite = spawn_suite().await;
    let (verdi_cf, verdi) = verdi();
    let (_, bianchi) = citizen_request("Bianchi", "Laura", (1990, 1, 1), id::Sex::Female);
    let mut bad_cap = resident_record(3, &bianchi);
    if let Some(id::residence::Place::Italy(a)) =
        bad_cap.residence.as_mut().and_then(|r| r.place.as_mut())
    {
        a.postal_code = "5601".into();
    }
    let mut bad_cf = resident_record(4, &verdi);
    bad_cf.fiscal_code = "RSSMRA85T10A562X".into();
    let records = vec![
        resident_record(2, &verdi),
        bad_cap,
        bad_cf,
        resident_record(5, &verdi),
        resident_record(6, &pin_request(ROSSI)),
    ];

    let first = suite.import_residents(records.clone()).await.expect("imported");
    assert_eq!((first.received, first.written, first.unchanged, first.rejected), (5, 1, 1, 3));
    let where_: Vec<(i64, &str)> =
        first.rejections.iter().map(|r| (r.line, r.field.as_str())).collect();
    assert_eq!(
        where_,
        [(3, "residence.italy.postal_code"), (4, "fiscal_code"), (5, "fiscal_code")],
        "{:?}",
        first.rejections
    );
    assert!(first.rejections[2].description.contains("line 2"));
    assert_eq!(
        suite.db.count("identity", "residents", &format!("fiscal_code = '{verdi_cf}'")).await,
        1
    );

    let again = suite.import_residents(records).await.expect("imported again");
    assert_eq!((again.written, again.unchanged, again.rejected), (0, 2, 3), "nothing changes");
}

#[tokio::test]
async fn only_the_back_office_may_load_the_register() {
    let suite = spawn_suite().await;
    let (cf, form) = verdi();
    let batch = || {
        tokio_stream::iter(vec![id::ImportResidentsRequest {
            residents: vec![resident_record(2, &form)],
        }])
    };
    let mut client = ResidentsServiceClient::new(suite.gateway_channel().await);
    let status = client.import_residents(batch()).await.expect_err("anonymous");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status =
        client.import_residents(suite.as_operator(batch())).await.expect_err("an operator");
    assert_eq!(status.code(), Code::PermissionDenied);
    // Straight at identity-svc too: the service checks the role itself.
    let mut direct = ResidentsServiceClient::new(connect(suite.identity.addr).await);
    let status = direct.import_residents(suite.as_operator(batch())).await.expect_err("direct");
    assert_eq!(status.code(), Code::PermissionDenied);
    let filter = format!("fiscal_code = '{cf}'");
    assert_eq!(suite.db.count("identity", "residents", &filter).await, 0);
}

#[tokio::test]
async fn the_letter_goes_to_the_registered_residence_not_the_one_on_the_form() {
    let suite = spawn_suite().await;
    let (cf, form) = verdi();
    let mut registered = form.clone();
    living_in_milan(&mut registered);
    suite.register_residents(&[&registered]).await;

    // The form gives San Giuliano Terme: someone who knows the fiscal code hoping for the letter.
    let reply = identity(&suite).await.request_pin(form).await.expect("answered").into_inner();
    assert_eq!(reply.message, identity_svc::api::NEUTRAL_ANSWER);
    let letter = suite.db.message("PIN_SECOND_HALF_LETTER").await;
    assert_eq!(letter.address, "Giuseppe Verdi\nVia Dante 12\n20121 Milano (MI)");
    assert_eq!(suite.db.message("PIN_FIRST_HALF").await.address, ROSSI_MOBILE);
    assert_eq!(register_checks(&suite, &cf).await, [("citizen".into(), "ON_REGISTER".into())]);
    let view = lookup(&suite, &cf).await;
    assert_eq!(view.requests[0].register_check, id::RegisterCheck::OnRegister as i32);
    assert_eq!(view.requests[0].pending_reason, "");
}

#[tokio::test]
async fn a_form_disagreeing_with_the_register_gets_the_neutral_answer_and_nothing_is_sent() {
    let suite = spawn_suite().await;
    // "Mauro" has the letters of "Mario" in the fiscal code: the form is valid, but not him.
    let mut registered = pin_request(ROSSI);
    registered.personal_data.as_mut().expect("anagrafica").given_name = "Mauro".into();
    suite.register_residents(&[&registered]).await;

    let reply = identity(&suite)
        .await
        .request_pin(pin_request(ROSSI))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(reply.message, identity_svc::api::NEUTRAL_ANSWER);
    assert_eq!(messages_for(&suite, ROSSI).await, 0, "nothing is sent");
    let view = lookup(&suite, ROSSI).await;
    assert_eq!(view.pin_state, id::PinState::None as i32, "nothing is issued");
    assert_eq!(view.requests[0].outcome, id::PinRequestOutcome::RegisterMismatch as i32);
    assert_eq!(
        register_checks(&suite, ROSSI).await,
        [("citizen".into(), "ANAGRAFICA_MISMATCH".into())]
    );
    // An operator filing it for a caller is told what happened.
    let filed = contact_center(&suite)
        .await
        .request_pin_for_caller(
            suite.as_operator(id::RequestPinForCallerRequest { form: Some(pin_request(ROSSI)) }),
        )
        .await
        .expect("filed")
        .into_inner();
    assert_eq!(filed.outcome, id::PinRequestOutcome::RegisterMismatch as i32);
    assert_eq!(messages_for(&suite, ROSSI).await, 0);
}

#[tokio::test]
async fn a_fiscal_code_not_on_the_register_waits_in_the_queue_with_the_reason_and_the_form() {
    let suite = spawn_suite().await;
    let (cf, mut form) = verdi();
    let contacts = form.contacts.as_mut().expect("contacts");
    contacts.mobile_phone = "347 7654321".into();
    contacts.preferred_time_slot = id::TimeSlot::Evening as i32;

    let reply = identity(&suite).await.request_pin(form).await.expect("answered").into_inner();
    assert_eq!(reply.message, identity_svc::api::NEUTRAL_ANSWER);
    assert_eq!(messages_for(&suite, &cf).await, 0, "nothing is sent before validation");
    assert_eq!(lookup(&suite, &cf).await.pin_state, id::PinState::None as i32);

    // Listed at once (the default 12-hour grace is for deliveries, not for these).
    let queue = contact_center(&suite)
        .await
        .list_undelivered_pin_requests(
            suite.as_operator(id::ListUndeliveredPinRequestsRequest::default()),
        )
        .await
        .expect("queue")
        .into_inner();
    let [request] = queue.requests.as_slice() else { panic!("one request: {queue:?}") };
    assert_eq!(request.request_id, reply.request_id);
    assert_eq!(request.outcome, id::PinRequestOutcome::PendingValidation as i32);
    assert_eq!(request.register_check, id::RegisterCheck::NotOnRegister as i32);
    assert!(request.pending_reason.contains("not on the register"), "{}", request.pending_reason);

    // What the operator verifies with the caller, and when and where to call back.
    let form = request.form.as_ref().expect("the form is kept");
    assert_eq!((form.surname.as_str(), form.given_name.as_str()), ("Verdi", "Giuseppe"));
    assert_eq!(form.birth_date, Some(id::Date { year: 1980, month: 1, day: 1 }));
    assert_eq!(form.birthplace, "Roma (RM)");
    assert_eq!(form.residence, "Via***\n56017 San Giuliano Terme (PI)");
    assert_eq!(form.callback_phone, "+393477654321", "in full, and normalised");
    assert_eq!(form.preferred_time_slot, id::TimeSlot::Evening as i32);
    let masked = form.contacts.as_ref().expect("contacts");
    assert_eq!(masked.email, "m***@e***.it");
    assert_eq!(register_checks(&suite, &cf).await, [("citizen".into(), "NOT_ON_REGISTER".into())]);
    let view = lookup(&suite, &cf).await;
    let looked_up = view.requests[0].form.as_ref().expect("form");
    assert_eq!(looked_up.callback_phone, "+39 *** *** 4321", "the caller is on the line");
    assert_eq!(looked_up.birthplace, form.birthplace);
}

#[tokio::test]
async fn a_residence_abroad_on_the_register_waits_for_the_contact_center() {
    let suite = spawn_suite().await;
    // Luca Ferrari of the demo register lives in Berlin.
    let cf = "FRRLCU95A28A944A";
    let (computed, mut form) = citizen_request("Ferrari", "Luca", (1995, 1, 28), id::Sex::Male);
    form.fiscal_code = cf.into();
    let person = form.personal_data.as_mut().expect("anagrafica");
    person.birth_province = "BO".into();
    person.birth_municipality = "Bologna".into();
    assert_ne!(computed, cf);

    identity(&suite).await.request_pin(form).await.expect("answered");
    assert_eq!(messages_for(&suite, cf).await, 0);
    let view = lookup(&suite, cf).await;
    assert_eq!(view.requests[0].outcome, id::PinRequestOutcome::PendingValidation as i32);
    assert_eq!(view.requests[0].register_check, id::RegisterCheck::ForeignResidence as i32);
    assert!(view.requests[0].pending_reason.contains("abroad"));
    assert_eq!(register_checks(&suite, cf).await, [("citizen".into(), "FOREIGN_RESIDENCE".into())]);
}

#[tokio::test]
async fn a_pin_revoked_before_first_access_gives_no_simplified_access_again() {
    let suite = spawn_suite().await;
    identity(&suite).await.request_pin(pin_request(ROSSI)).await.expect("issued");
    let first_half = suite.db.message("PIN_FIRST_HALF").await.secret("pin_half");
    suite.login_with_pin(ROSSI, &first_half).await.expect("the simplified PIN works");

    contact_center(&suite)
        .await
        .revoke_pin(suite.as_operator(id::RevokePinRequest {
            fiscal_code: ROSSI.into(),
            reason: "lost the letter".into(),
        }))
        .await
        .expect("revoked");
    identity(&suite).await.request_pin(pin_request(ROSSI)).await.expect("issued again");
    let halves = suite.db.messages("PIN_FIRST_HALF").await;
    assert_eq!(halves.len(), 2, "a new PIN was issued");
    let new_first_half = halves[1].secret("pin_half");
    let status = suite.login_with_pin(ROSSI, &new_first_half).await.expect_err("not again");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(lookup(&suite, ROSSI).await.pin_state, id::PinState::Issued as i32);
}

#[tokio::test]
async fn italian_phones_without_prefix_are_accepted_and_normalised() {
    let suite = spawn_suite().await;
    let mut form = pin_request(ROSSI);
    let contacts = form.contacts.as_mut().expect("contacts");
    contacts.mobile_phone = "333 1234567".into();
    contacts.home_phone = "050-123456".into();
    identity(&suite).await.request_pin(form).await.expect("accepted");
    assert_eq!(suite.db.message("PIN_FIRST_HALF").await.address, "+393331234567");
    let view = lookup(&suite, ROSSI).await;
    assert_eq!(view.contacts.expect("contacts").home_phone, "+39 *** *** 3456");
}

#[tokio::test]
async fn sportello_import_residents_loads_a_file_and_reports_bad_rows_by_line_and_column() {
    let suite = spawn_suite().await;
    let (cf, _) = verdi();
    let file = suite.db.data_dir().join("register.csv");
    let csv = format!(
        "fiscal_code,surname,given_name,birth_date,sex,birth_province,birth_municipality,\
         street,street_number,postal_code,province,municipality\n\
         {cf},Verdi,Giuseppe,01/01/1980,M,RM,Roma,Via Roma,1,56017,PI,San Giuliano Terme\n\
         {cf},Verdi,Giuseppe,01/01/1980,M,RM,Roma,Via Roma,1,5601,PI,San Giuliano Terme\n\
         {cf},Verdi,Giuseppe,01/01/1980,X,RM,Roma,Via Roma,1,56017,PI,San Giuliano Terme\n"
    );
    std::fs::write(&file, csv).expect("file");
    let run = || async {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
            .args(["import", "residents"])
            .arg(&file)
            .args(["--gateway", &url(suite.gateway.addr), "--username", BACKOFFICE_ID])
            .env("SPORTELLO_PASSWORD", BACKOFFICE_PASSWORD)
            .output()
            .await
            .expect("sportello runs")
    };
    let out = run().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A row not taken: status 1, said on stderr, so a script can tell.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("not every row was taken"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "line 3, postal_code: must be exactly 5 digits", "{stdout}");
    assert_eq!(lines[1], "line 4, sex: must be M or F", "{stdout}");
    assert!(lines[2]
        .starts_with("3 rows read, 2 sent: 1 written, 0 unchanged, 1 rejected, 1 unreadable"));
    assert_eq!(suite.db.count("identity", "residents", &format!("fiscal_code = '{cf}'")).await, 1);

    let again = run().await;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("0 written, 1 unchanged"), "the same file changes nothing: {stdout}");
}

#[tokio::test]
async fn an_operator_who_verified_the_caller_issues_a_held_request_to_the_forms_residence() {
    let suite = spawn_suite().await;
    let (cf, form) = verdi();
    let held = identity(&suite).await.request_pin(form).await.expect("answered").into_inner();
    let validate = |verified: bool| {
        suite.as_operator(id::ValidatePendingPinRequestRequest {
            request_id: held.request_id.clone(),
            identity_verified: verified,
        })
    };
    let mut cc = contact_center(&suite).await;
    let status = cc.validate_pending_pin_request(validate(false)).await.expect_err("unverified");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(messages_for(&suite, &cf).await, 0);

    let reply = cc.validate_pending_pin_request(validate(true)).await.expect("issued").into_inner();
    assert_eq!(reply.masked_address, "+39 *** *** 4567");
    assert_eq!(suite.db.message("PIN_FIRST_HALF").await.address, ROSSI_MOBILE);
    let letter = suite.db.message("PIN_SECOND_HALF_LETTER").await;
    assert_eq!(letter.address, "Giuseppe Verdi\nVia Roma 1\n56017 San Giuliano Terme (PI)");
    let view = lookup(&suite, &cf).await;
    assert_eq!(view.pin_state, id::PinState::SimplifiedOnly as i32);
    assert_eq!(view.requests[0].outcome, id::PinRequestOutcome::Issued as i32);
    assert_eq!(view.requests[0].validated_by, OPERATOR_ID);
    assert_eq!(view.requests[0].pending_reason, "");

    let status = cc.validate_pending_pin_request(validate(true)).await.expect_err("only once");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let queue = cc
        .list_undelivered_pin_requests(
            suite.as_operator(id::ListUndeliveredPinRequestsRequest::default()),
        )
        .await
        .expect("queue")
        .into_inner();
    assert!(queue.requests.is_empty(), "no longer waiting: {queue:?}");
    assert_eq!(messages_for(&suite, &cf).await, 2, "one PIN, two halves");
}

#[tokio::test]
async fn the_registers_names_are_told_only_to_sportellos_own_services() {
    let suite = spawn_suite().await;
    let (cf, form) = verdi();
    suite.register_residents(&[&form]).await;
    let ask = |codes: &[&str]| id::BatchGetResidentNamesRequest {
        fiscal_codes: codes.iter().map(|c| (*c).to_owned()).collect(),
    };
    let unknown = citizen_request("Bianchi", "Marta", (1990, 5, 5), id::Sex::Female).0;

    let mut direct = ResidentsServiceClient::new(connect(suite.identity.addr).await);
    let names = direct
        .batch_get_resident_names(with_token(&suite.service_token(), ask(&[&cf, &unknown])))
        .await
        .expect("a service asks")
        .into_inner();
    let found: Vec<_> = names
        .residents
        .iter()
        .map(|r| (r.fiscal_code.as_str(), r.given_name.as_str(), r.surname.as_str()))
        .collect();
    assert_eq!(found, [(cf.as_str(), "Giuseppe", "Verdi")], "the one on the register, named");

    let bad = direct
        .batch_get_resident_names(with_token(&suite.service_token(), ask(&[&cf, "RSSMRA"])))
        .await
        .expect_err("not a fiscal code");
    assert_eq!(violated_fields(&bad), ["fiscal_codes[1]"]);
    let citizen = suite.citizen_token(&cf, Level::Dispositive);
    let refused = direct
        .batch_get_resident_names(with_token(&citizen, ask(&[&cf])))
        .await
        .expect_err("a citizen asks");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let through_gateway = ResidentsServiceClient::new(suite.gateway_channel().await)
        .batch_get_resident_names(suite.as_operator(ask(&[&cf])))
        .await
        .expect_err("internal");
    assert_eq!(through_gateway.code(), Code::PermissionDenied, "{through_gateway:?}");
}

#[tokio::test]
async fn a_reimport_that_moves_a_citizen_is_audited_and_notified() {
    let suite = spawn_suite().await;
    let (cf, form) = verdi();
    // Laura Bianchi is on the register too, but holds no PIN: nobody to tell.
    let (bianchi_cf, bianchi) = citizen_request("Bianchi", "Laura", (1990, 1, 1), id::Sex::Female);
    suite.register_residents(&[&form, &bianchi]).await;
    identity(&suite).await.request_pin(form.clone()).await.expect("issued");
    assert!(suite.db.messages("RESIDENCE_CHANGED").await.is_empty());

    let mut moved = form.clone();
    living_in_milan(&mut moved);
    let mut renamed = bianchi.clone();
    renamed.personal_data.as_mut().expect("anagrafica").given_name = "Lara".into();
    let reply = suite.register_residents(&[&moved, &renamed]).await;
    assert_eq!((reply.written, reply.unchanged), (2, 0));

    let [change] = audit_rows(&suite, &cf, "RegisterChange").await.try_into().expect("one row");
    assert_eq!(change.operator_id, BACKOFFICE_ID, "the importer, under the citizen's code");
    assert_eq!(change.outcome, "RESIDENCE_CHANGED");
    assert_eq!(
        change.detail,
        "residence: Via***, 56017 San Giuliano Terme (PI) → Via***, 20121 Milano (MI)",
        "old and new, the streets masked"
    );
    let mut told: Vec<_> = suite
        .db
        .messages("RESIDENCE_CHANGED")
        .await
        .into_iter()
        .map(|m| (m.channel, m.address))
        .collect();
    told.sort();
    assert_eq!(
        told,
        [("EMAIL".into(), ROSSI_EMAIL.into()), ("SMS".into(), ROSSI_MOBILE.into())],
        "every contact on file, and only the PIN holder's"
    );
    let [renaming] =
        audit_rows(&suite, &bianchi_cf, "RegisterChange").await.try_into().expect("one row");
    assert_eq!(renaming.outcome, "ANAGRAFICA_CHANGED");
    assert_eq!(renaming.detail, "given_name: Lau*** → Lar***");

    // The same file again changes nothing, so it tells nobody anything.
    suite.register_residents(&[&moved, &renamed]).await;
    assert_eq!(audit_rows(&suite, &cf, "RegisterChange").await.len(), 1);
    assert_eq!(suite.db.messages("RESIDENCE_CHANGED").await.len(), 2);
}

#[tokio::test]
async fn validating_a_held_request_uses_the_registers_residence_once_the_citizen_is_on_it() {
    let suite = spawn_suite().await;
    let (cf, form) = verdi();
    let held = identity(&suite).await.request_pin(form.clone()).await.expect("held").into_inner();
    assert_eq!(register_checks(&suite, &cf).await, [("citizen".into(), "NOT_ON_REGISTER".into())]);
    // Put on the register afterwards, living elsewhere than the form says.
    let mut registered = form;
    living_in_milan(&mut registered);
    suite.register_residents(&[&registered]).await;

    contact_center(&suite)
        .await
        .validate_pending_pin_request(suite.as_operator(id::ValidatePendingPinRequestRequest {
            request_id: held.request_id,
            identity_verified: true,
        }))
        .await
        .expect("issued");
    let letter = suite.db.message("PIN_SECOND_HALF_LETTER").await;
    assert_eq!(letter.address, "Giuseppe Verdi\nVia Dante 12\n20121 Milano (MI)");
}
