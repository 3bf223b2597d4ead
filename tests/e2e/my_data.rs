//! A citizen's own data (issue 25): who looked at it, across identity, claims and notify, with
//! one call; and all of it taken away as JSON Lines, audited and notified. Only ever the
//! citizen's own: the session names the citizen, staff are refused, and each service's part
//! answers services only.

use crate::auth::active_citizen;
use crate::helpers::*;
use sportello_platform::auth::Level;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::contact_center_service_client::ContactCenterServiceClient;
use sportello_proto::notify::v1 as nt;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::privacy::v1 as pv;
use sportello_proto::privacy::v1::citizen_data_service_client::CitizenDataServiceClient;
use sportello_proto::privacy::v1::privacy_service_client::PrivacyServiceClient;
use tonic::Code;
use tonic_types::StatusExt as _;

async fn privacy(suite: &Suite) -> PrivacyServiceClient<tonic::transport::Channel> {
    PrivacyServiceClient::new(suite.gateway_channel().await)
}

async fn access_list(
    suite: &Suite,
    token: &str,
    request: pv::ListMyDataAccessRequest,
) -> Result<pv::ListMyDataAccessResponse, tonic::Status> {
    let reply = privacy(suite).await.list_my_data_access(with_token(token, request)).await?;
    Ok(reply.into_inner())
}

/// Every entry of the citizen's list, page by page.
async fn whole_list(suite: &Suite, token: &str, page_size: i32) -> Vec<pv::DataAccess> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pv::ListMyDataAccessRequest { page_size, page_token, ..Default::default() };
        let page = access_list(suite, token, request).await.expect("a page");
        all.extend(page.entries);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// The export, as its JSON Lines records.
async fn export(suite: &Suite, token: &str) -> Result<Vec<serde_json::Value>, tonic::Status> {
    let mut stream = privacy(suite)
        .await
        .export_my_data(with_token(token, pv::ExportMyDataRequest {}))
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert!(chunk.data.ends_with(b"\n"), "a chunk ends at a line's end");
        bytes.extend(chunk.data);
    }
    let text = String::from_utf8(bytes).expect("UTF-8");
    Ok(text.lines().map(|l| serde_json::from_str(l).expect("one JSON record a line")).collect())
}

/// The contact center looks at `cf`'s credential and messages.
async fn operator_looks_at(suite: &Suite, cf: &str) {
    ContactCenterServiceClient::new(suite.gateway_channel().await)
        .lookup_credential(
            suite.as_operator(id::LookupCredentialRequest { fiscal_code: cf.into() }),
        )
        .await
        .expect("looked up");
    NotifyServiceClient::new(suite.gateway_channel().await)
        .list_messages(
            suite.as_operator(nt::ListMessagesRequest {
                fiscal_code: cf.into(),
                ..Default::default()
            }),
        )
        .await
        .expect("listed");
}

#[tokio::test]
async fn a_citizen_sees_every_staff_look_at_their_data_with_one_call_and_nobody_elses() {
    let suite = spawn_suite().await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    let (other, _) = citizen_request("Verdi", "Anna", (1990, 5, 4), id::Sex::Female);
    operator_looks_at(&suite, ROSSI).await;
    operator_looks_at(&suite, &other).await;
    let list = whole_list(&suite, &session.access_token, 500).await;
    let by_operator: Vec<&pv::DataAccess> =
        list.iter().filter(|e| e.actor_role == pv::ActorRole::Operator as i32).collect();
    let actions: Vec<&str> = by_operator.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"LOOKUP_CREDENTIAL"), "{actions:?}");
    assert!(actions.contains(&"LIST_MESSAGES"), "{actions:?}");
    assert_eq!(by_operator.len(), 2, "only the looks at this citizen: {actions:?}");
    let lookup = by_operator.iter().find(|e| e.action == "LOOKUP_CREDENTIAL").expect("lookup");
    assert_eq!(lookup.source, pv::Source::Identity as i32);
    assert_eq!(lookup.action_label, "Consultazione dello stato del PIN");
    assert_eq!(lookup.office, "Contact Center INPS");
    assert_eq!(lookup.actor_role_label, "operatore del Contact Center");
    assert_eq!(lookup.outcome_label, "Eseguita");
    // One operator, one pseudonym across services; never the operator's name.
    let pseudonyms: Vec<&str> = by_operator.iter().map(|e| e.operator_pseudonym.as_str()).collect();
    assert!(pseudonyms[0].starts_with("OP-") && pseudonyms[0] == pseudonyms[1], "{pseudonyms:?}");
    let printed = format!("{list:?}");
    assert!(!printed.contains(OPERATOR_ID), "the operator is not named");
    assert!(!printed.contains(&other), "nothing about another citizen");
    // The citizen's own steps and the services' automatic ones are there too.
    assert!(list
        .iter()
        .any(|e| e.action == "COMPLETE_FIRST_ACCESS"
            && e.actor_role == pv::ActorRole::Citizen as i32));
    // Newest first.
    let times: Vec<i64> = list.iter().map(|e| e.at.expect("time").seconds).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    // The other citizen's list shows the same operator under another pseudonym.
    let theirs = suite.citizen_token(&other, Level::Ordinary);
    let their_list = whole_list(&suite, &theirs, 500).await;
    let their_lookup =
        their_list.iter().find(|e| e.action == "LOOKUP_CREDENTIAL").expect("their lookup");
    assert_ne!(their_lookup.operator_pseudonym, lookup.operator_pseudonym);
    assert!(!format!("{their_list:?}").contains(ROSSI));
}

#[tokio::test]
async fn the_list_pages_newest_first_without_gaps_or_repeats_and_filters_by_service_and_period() {
    let suite = spawn_suite().await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    for _ in 0..3 {
        operator_looks_at(&suite, ROSSI).await;
    }
    let token = &session.access_token;
    let whole = whole_list(&suite, token, 500).await;
    assert!(whole.len() >= 8, "{}", whole.len());
    let paged = whole_list(&suite, token, 1).await;
    assert_eq!(paged, whole, "pages of one make the same list");
    let paged = whole_list(&suite, token, 3).await;
    assert_eq!(paged, whole, "pages of three make the same list");
    let notify_only = access_list(
        &suite,
        token,
        pv::ListMyDataAccessRequest {
            sources: vec![pv::Source::Notify as i32],
            page_size: 500,
            ..Default::default()
        },
    )
    .await
    .expect("notify's part");
    assert!(!notify_only.entries.is_empty());
    assert!(notify_only.entries.iter().all(|e| e.source == pv::Source::Notify as i32));
    let newest = whole[0].at.expect("time");
    let since_newest = access_list(
        &suite,
        token,
        pv::ListMyDataAccessRequest { since: Some(newest), page_size: 500, ..Default::default() },
    )
    .await
    .expect("since");
    assert!(!since_newest.entries.is_empty());
    assert!(since_newest.entries.iter().all(|e| e.at.expect("time").seconds >= newest.seconds));
    let bad = access_list(
        &suite,
        token,
        pv::ListMyDataAccessRequest { page_token: "rubbish".into(), ..Default::default() },
    )
    .await
    .expect_err("a token of no page");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad), ["page_token"]);
}

#[tokio::test]
async fn staff_and_weak_sessions_are_refused_the_citizens_own_data() {
    let suite = spawn_suite().await;
    let operator = suite.as_operator(pv::ListMyDataAccessRequest::default());
    let refused = privacy(&suite).await.list_my_data_access(operator).await.expect_err("staff");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let as_operator = suite.as_operator(pv::ExportMyDataRequest {});
    let refused = privacy(&suite).await.export_my_data(as_operator).await.expect_err("staff");
    assert_eq!(refused.code(), Code::PermissionDenied);
    for (username, password) in
        [(BACKOFFICE_ID, BACKOFFICE_PASSWORD), (PATRONATO_ID, PATRONATO_PASSWORD)]
    {
        let token = suite.login_staff(username, password).await.access_token;
        let refused = access_list(&suite, &token, Default::default()).await.expect_err(username);
        assert_eq!(refused.code(), Code::PermissionDenied, "{username}");
    }
    let simplified = suite.citizen_token(ROSSI, Level::Simplified);
    access_list(&suite, &simplified, Default::default()).await.expect("any level lists");
    let refused = export(&suite, &simplified).await.expect_err("a simplified PIN exports nothing");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let anonymous = privacy(&suite)
        .await
        .list_my_data_access(pv::ListMyDataAccessRequest::default())
        .await
        .expect_err("anonymous");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn each_services_part_answers_the_gateway_only() {
    let suite = spawn_suite().await;
    let citizen = suite.citizen_token(ROSSI, Level::Dispositive);
    let ask = || pv::ListAccessEntriesRequest { fiscal_code: ROSSI.into(), ..Default::default() };
    for addr in [suite.identity.addr, suite.claims.addr, suite.notify.addr] {
        let mut part = CitizenDataServiceClient::new(connect(addr).await);
        let anonymous = part.list_access_entries(ask()).await.expect_err("anonymous");
        assert_eq!(anonymous.code(), Code::Unauthenticated, "{addr}");
        let as_citizen =
            part.list_access_entries(with_token(&citizen, ask())).await.expect_err("a citizen");
        assert_eq!(as_citizen.code(), Code::PermissionDenied, "{addr}");
        let export = pv::ExportCitizenDataRequest { fiscal_code: ROSSI.into() };
        let as_citizen =
            part.export_citizen_data(with_token(&citizen, export)).await.expect_err("a citizen");
        assert_eq!(as_citizen.code(), Code::PermissionDenied, "{addr}");
        let other_service = suite.service_token();
        let refused = part.list_access_entries(with_token(&other_service, ask())).await;
        assert_eq!(refused.expect_err("another service").code(), Code::PermissionDenied);
        let gateway = suite.gateway_token();
        part.list_access_entries(with_token(&gateway, ask())).await.expect("the gateway");
    }
    let through = CitizenDataServiceClient::new(suite.gateway_channel().await)
        .list_access_entries(with_token(&citizen, ask()))
        .await
        .expect_err("never from outside");
    assert_eq!(through.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn the_export_holds_everything_about_the_citizen_and_no_secret_and_is_audited_and_notified() {
    let suite = spawn_suite().await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    operator_looks_at(&suite, ROSSI).await;
    let records = export(&suite, &session.access_token).await.expect("exported");
    let kinds: std::collections::BTreeSet<(String, String)> = records
        .iter()
        .map(|r| {
            (r["source"].as_str().expect("source").into(), r["kind"].as_str().expect("kind").into())
        })
        .collect();
    for (source, kind) in [
        ("identity", "register_entry"),
        ("identity", "pin"),
        ("identity", "contacts"),
        ("identity", "pin_request"),
        ("identity", "login"),
        ("notify", "message"),
        ("identity", "data_access"),
        ("notify", "data_access"),
    ] {
        assert!(kinds.contains(&(source.into(), kind.into())), "{source} {kind}: {kinds:?}");
    }
    let contacts = records.iter().find(|r| r["kind"] == "contacts").expect("contacts");
    assert_eq!(contacts["contacts"]["email"], ROSSI_EMAIL);
    let login = records.iter().find(|r| r["kind"] == "login").expect("a login");
    assert_eq!(login["method"], "pin");
    let text = serde_json::to_string(&records).expect("json");
    assert!(!text.contains("argon2"), "no hash");
    assert!(!text.contains("pin_hash") && !text.contains("secret_params"), "no secret column");
    let first_half = suite.db.message("PIN_FIRST_HALF").await;
    let sent_half = records
        .iter()
        .find(|r| r["kind"] == "message" && r["template"] == "PIN_FIRST_HALF")
        .expect("the first half's message");
    assert!(sent_half["text"].as_str().expect("its text").contains("[riservato]"));
    if let Some(secrets) = &first_half.secrets {
        for secret in secrets.values() {
            assert!(!text.contains(secret.as_str()), "a PIN half is never exported");
        }
    }
    // The export is in the citizen's trail, and the citizen was told on the contacts on file.
    let list = whole_list(&suite, &session.access_token, 500).await;
    assert!(list
        .iter()
        .any(|e| e.action == "EXPORT_MY_DATA" && e.action_label == "Esportazione dei propri dati"));
    let told = suite.db.messages("DATA_EXPORTED").await;
    assert!(!told.is_empty(), "the citizen is told of the export");
    // Another citizen's export holds nothing of this one.
    let (other, _) = citizen_request("Verdi", "Anna", (1990, 5, 4), id::Sex::Female);
    let theirs =
        export(&suite, &suite.citizen_token(&other, Level::Ordinary)).await.expect("theirs");
    assert!(!serde_json::to_string(&theirs).expect("json").contains(ROSSI));
}

#[tokio::test]
async fn claims_part_shows_the_back_offices_reads_and_the_export_holds_the_claim_with_its_history()
{
    use crate::claims::{claim_form, professional_row, registry, submit, undecided};
    use sportello_proto::claims::v1 as cl;
    use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
    let suite = spawn_suite_with(undecided).await;
    suite.import_registry(&registry([professional_row(ROSSI)])).await.expect("registry");
    let citizen = suite.citizen_token(ROSSI, Level::Ordinary);
    let form = claim_form("PROFESSIONISTI_COCOCO", ROSSI, "my-data-1");
    let receipt = submit(suite.gateway_channel().await, &citizen, form).await.expect("filed");
    let backoffice = suite.login_staff(BACKOFFICE_ID, BACKOFFICE_PASSWORD).await.access_token;
    let read = cl::GetClaimRequest { claim_id: receipt.claim_id.clone() };
    ClaimsServiceClient::new(suite.gateway_channel().await)
        .get_claim(with_token(&backoffice, read))
        .await
        .expect("the back office reads the claim");
    let request = pv::ListMyDataAccessRequest {
        sources: vec![pv::Source::Claims as i32],
        page_size: 500,
        ..Default::default()
    };
    let list = access_list(&suite, &citizen, request).await.expect("claims' part").entries;
    let read = list.iter().find(|e| e.action == "GET_CLAIM").expect("the read is listed");
    assert_eq!(read.actor_role, pv::ActorRole::Backoffice as i32);
    assert_eq!(read.office, "Sede INPS - back office");
    assert!(read.operator_pseudonym.starts_with("OP-"));
    assert!(!format!("{list:?}").contains(BACKOFFICE_ID), "the back office is not named");
    // A citizen's own filing is not a look by anyone else (only a patronato's is audited).
    assert!(!list.iter().any(|e| e.action == "SUBMIT_CLAIM"));
    let records = export(&suite, &citizen).await.expect("exported");
    let claim = records.iter().find(|r| r["kind"] == "claim").expect("the claim");
    assert_eq!(claim["source"], "claims");
    assert_eq!(claim["protocol_number"], receipt.protocol_number.as_str());
    assert_eq!(claim["status"], "SUBMITTED");
    assert!(claim["submitted_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{claim}");
    // The account as everywhere an ordinary PIN reads it: recognisable, not reusable.
    let iban = sportello_domain::iban::Iban::parse(crate::claims::IBAN).expect("the form's IBAN");
    assert_eq!(claim["iban_masked"], iban.masked().as_str(), "{claim}");
    let text = serde_json::to_string(&records).expect("json");
    assert!(!text.contains(iban.as_str()), "no full IBAN: {text}");
    assert!(records.iter().any(|r| r["kind"] == "insured_position"));
}

#[tokio::test]
async fn the_services_automatic_steps_show_as_the_system_sending_and_delivering_a_message() {
    let suite = spawn_suite_with(|c| {
        c.notify.dispatch.enabled = true;
        c.notify.sinks.report_delivery = true;
    })
    .await;
    let message = nt::EnqueueMessageRequest {
        idempotency_key: "test:my-data:notice".into(),
        fiscal_code: ROSSI.into(),
        channel: nt::Channel::Email as i32,
        address: ROSSI_EMAIL.into(),
        template: "PIN_CHANGED".into(),
        ..Default::default()
    };
    NotifyServiceClient::new(connect(suite.notify.addr).await)
        .enqueue_message(with_token(&suite.service_token(), message))
        .await
        .expect("accepted");
    let citizen = suite.citizen_token(ROSSI, Level::Simplified);
    let steps = || async {
        let list = whole_list(&suite, &citizen, 50).await;
        list.into_iter().filter(|e| e.actor_role == pv::ActorRole::System as i32).collect()
    };
    eventually("the message sent and delivered", std::time::Duration::from_secs(15), || async {
        let steps: Vec<pv::DataAccess> = steps().await;
        steps.iter().any(|e| e.action == "MESSAGE_DELIVERED")
            && steps.iter().any(|e| e.action == "MESSAGE_SENT")
    })
    .await;
    let steps: Vec<pv::DataAccess> = steps().await;
    let sent = steps.iter().find(|e| e.action == "MESSAGE_SENT").expect("sent");
    assert_eq!(sent.actor_role_label, "sistema");
    assert_eq!(sent.office, "Sistema - comunicazioni");
    assert_eq!(sent.action_label, "Invio di un messaggio");
    assert_eq!(sent.reason, "PIN_CHANGED via EMAIL");
    assert!(sent.operator_pseudonym.is_empty(), "a step of the system has no operator");
    let delivered = steps.iter().find(|e| e.action == "MESSAGE_DELIVERED").expect("delivered");
    let seconds = |e: &pv::DataAccess| e.at.map(|t| (t.seconds, t.nanos));
    assert!(seconds(delivered) >= seconds(sent), "delivered after it was sent");
}

#[tokio::test]
async fn a_fourth_export_within_the_hour_is_refused_with_when_to_retry_and_tells_nobody() {
    // Each export is announced to every contact on file: a thief holding the PIN must not be
    // able to flood them, nor to hide a real export among a thousand.
    let suite = spawn_suite().await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    for _ in 0..3 {
        export(&suite, &session.access_token).await.expect("an export within the bound");
    }
    let told = suite.db.messages("DATA_EXPORTED").await.len();
    let refused = export(&suite, &session.access_token).await.expect_err("a fourth");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let info = refused.get_details_error_info().expect("its reason");
    assert_eq!(info.reason, "TOO_MANY_EXPORTS");
    assert!(refused.get_details_retry_info().and_then(|r| r.retry_delay).is_some());
    assert!(refused.message().contains("riprova"), "said in Italian: {}", refused.message());
    assert_eq!(suite.db.messages("DATA_EXPORTED").await.len(), told, "no notice for a refusal");
    let exports = suite.db.count("identity", "audit_events", "action = 'ExportMyData'").await;
    assert_eq!(exports, 3, "a refused export is not recorded as made");
    // Another citizen's exports are their own.
    let (other, _) = citizen_request("Verdi", "Anna", (1990, 5, 4), id::Sex::Female);
    export(&suite, &suite.citizen_token(&other, Level::Ordinary)).await.expect("Verdi's export");
}
