//! Claims from the form to the decision: the registry they are decided on, the ceiling they can
//! never overspend, idempotent retries, art. 31, patronati under mandates, the automatic
//! decision with the bank's account check, the back-office queue, and who may read what.

use crate::helpers::*;
use sportello_platform::auth::Level;
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

pub const REGISTRY_HEADER: &str =
    "fiscal_code,schemes,vat_from,vat_to,pensioner,agricultural_days_2019,children,health_or_security_worker";

/// A professional with a VAT number since 2015, enrolled in the Gestione separata: eligible for
/// art. 27, and (with 60 agricultural days) for art. 30 too.
pub fn professional_row(cf: &str) -> String {
    format!("{cf},GESTIONE_SEPARATA:2015-01-01:,2015-01-01,,0,60,,0")
}

/// The `n`th of many distinct citizens' fiscal codes.
pub fn nth_cf(n: i64) -> String {
    use identity_svc::domain::codice_fiscale::{compute, Sex};
    let born =
        chrono::NaiveDate::from_ymd_opt(1960, 1, 1).expect("date") + chrono::Duration::days(n);
    compute("Esposito", "Luca", born, Sex::Male, "F839")
}

pub fn registry(rows: impl IntoIterator<Item = String>) -> String {
    let mut csv = format!("{REGISTRY_HEADER}\n");
    for row in rows {
        csv.push_str(&row);
        csv.push('\n');
    }
    csv
}

pub(crate) const IBAN: &str = "IT60 X054 2811 1010 0000 0123 456";

/// A complete claim for `benefit`, paid to [`IBAN`] held by `cf`.
pub fn claim_form(benefit: &str, cf: &str, key: &str) -> cl::SubmitClaimRequest {
    cl::SubmitClaimRequest {
        benefit_code: benefit.into(),
        fiscal_code: String::new(),
        payment: Some(cl::Payment {
            method: Some(cl::payment::Method::BankTransfer(cl::BankTransfer {
                iban: IBAN.into(),
                holder_fiscal_code: cf.into(),
            })),
        }),
        contacts: Some(cl::ClaimContacts {
            email: "luca@example.it".into(),
            mobile_phone: String::new(),
        }),
        declarations: Some(cl::Declarations { truthful: true, no_parental_leave_instead: false }),
        child_fiscal_code: String::new(),
        idempotency_key: key.into(),
    }
}

fn cash(mut form: cl::SubmitClaimRequest) -> cl::SubmitClaimRequest {
    form.payment = Some(cl::Payment {
        method: Some(cl::payment::Method::PostOfficeCash(cl::PostOfficeCash {})),
    });
    form
}

fn claims(channel: Channel) -> ClaimsServiceClient<Channel> {
    ClaimsServiceClient::new(channel)
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

pub(crate) async fn submit(
    channel: Channel,
    token: &str,
    form: cl::SubmitClaimRequest,
) -> Result<cl::ClaimReceipt, tonic::Status> {
    let reply = claims(channel).submit_claim(with_token(token, form)).await?;
    Ok(reply.into_inner().receipt.expect("receipt"))
}

async fn get_claim(channel: Channel, token: &str, id: &str) -> Result<cl::Claim, tonic::Status> {
    let reply = claims(channel)
        .get_claim(with_token(token, cl::GetClaimRequest { claim_id: id.into() }))
        .await?;
    Ok(reply.into_inner().claim.expect("claim"))
}

async fn backoffice(suite: &Suite) -> (ClaimsBackOfficeServiceClient<Channel>, String) {
    let token = suite.login_staff(BACKOFFICE_ID, BACKOFFICE_PASSWORD).await.access_token;
    (ClaimsBackOfficeServiceClient::new(suite.gateway_channel().await), token)
}

/// Sets a benefit's ceiling on the record, as the back office does.
async fn set_ceiling(suite: &Suite, code: &str, cents: i64) -> cl::Benefit {
    let (mut bo, token) = backoffice(suite).await;
    let change = cl::UpdateBenefitRequest {
        code: code.into(),
        ceiling_cents: Some(cents),
        reason: "test budget".into(),
        ..Default::default()
    };
    bo.update_benefit(with_token(&token, change))
        .await
        .expect("updated")
        .into_inner()
        .benefit
        .expect("benefit")
}

async fn benefit(suite: &Suite, code: &str) -> cl::Benefit {
    let reply = claims(suite.gateway_channel().await)
        .get_benefit(cl::GetBenefitRequest { code: code.into() })
        .await;
    reply.expect("benefit").into_inner().benefit.expect("benefit")
}

/// No automatic decision, so that tests see claims as they were accepted.
pub(crate) fn undecided(c: &mut Configs) {
    c.claims.background = false;
}

async fn status_of(suite: &Suite, token: &str, id: &str) -> i32 {
    get_claim(suite.gateway_channel().await, token, id).await.expect("claim").status
}

async fn wait_for_claim_status(
    suite: &Suite,
    token: &str,
    id: &str,
    want: cl::ClaimStatus,
) -> cl::Claim {
    eventually("the claim's decision", Duration::from_secs(15), || async {
        status_of(suite, token, id).await == want as i32
    })
    .await;
    get_claim(suite.gateway_channel().await, token, id).await.expect("claim")
}

#[tokio::test]
async fn a_professional_with_a_simplified_pin_files_the_indemnity_and_gets_a_protocol_number_and_a_receipt(
) {
    let suite = spawn_suite().await;
    suite.import_registry(&registry([professional_row(ROSSI)])).await.expect("registry");
    let initial = crate::auth::initial_pin(&suite, pin_request(ROSSI)).await;
    let session = suite.login_with_pin(ROSSI, &initial[..8]).await.expect("simplified PIN");

    let form = cash(claim_form("PROFESSIONISTI_COCOCO", ROSSI, "portal-1"));
    let receipt =
        submit(suite.gateway_channel().await, &session.access_token, form).await.expect("accepted");
    assert!(receipt.protocol_number.starts_with("INPS.0000."), "{}", receipt.protocol_number);
    assert_eq!(receipt.amount_cents, 60_000);

    // Cash at the post office needs no bank check: approved at once, and the citizen told.
    let claim = wait_for_claim_status(
        &suite,
        &session.access_token,
        &receipt.claim_id,
        cl::ClaimStatus::Approved,
    )
    .await;
    assert_eq!(claim.fiscal_code, ROSSI);
    assert!(claim.post_office_cash);
    assert_eq!(
        claim.filed_by.expect("filer").role,
        sportello_proto::identity::v1::PrincipalRole::Citizen as i32
    );
    suite.db.outbox_relayed().await;
    let receipts = suite.db.count("notify", "messages", "template = 'CLAIM_RECEIPT'").await;
    assert_eq!(receipts, 1, "one receipt");
    eventually("the decision notice", Duration::from_secs(10), || async {
        suite.db.outbox_relayed().await;
        suite.db.count("notify", "messages", "template = 'CLAIM_DECISION'").await == 1
    })
    .await;
    let left = benefit(&suite, "PROFESSIONISTI_COCOCO").await;
    eventually("the remaining budget to show the claim", Duration::from_secs(5), || async {
        let b = benefit(&suite, "PROFESSIONISTI_COCOCO").await;
        b.remaining_cents == left.ceiling_cents - 60_000
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_claims_against_a_ceiling_for_six_hundred_accept_exactly_six_hundred()
{
    let suite = spawn_suite_with(undecided).await;
    let citizens: Vec<String> = (0..1_000).map(nth_cf).collect();
    let imported =
        suite.import_registry(&registry(citizens.iter().map(|cf| professional_row(cf)))).await;
    assert_eq!(imported.expect("registry").rows_changed, 1_000);
    set_ceiling(&suite, "PROFESSIONISTI_COCOCO", 600 * 60_000).await;

    // Straight at claims-svc, all at once: the gateway's per-client rate limit is not the test.
    let channel = connect(suite.claims.addr).await;
    let mut calls = tokio::task::JoinSet::new();
    for cf in &citizens {
        let token = suite.citizen_token(cf, Level::Simplified);
        let form = claim_form("PROFESSIONISTI_COCOCO", cf, "click-day");
        let channel = channel.clone();
        calls.spawn(async move {
            loop {
                match submit(channel.clone(), &token, form.clone()).await {
                    // Refused at once for load, nothing written: retried as RetryInfo says.
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    answer => break answer.map_err(|s| reason(&s)),
                }
            }
        });
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    while let Some(done) = calls.join_next().await {
        let key = match done.expect("call") {
            Ok(_) => "ACCEPTED".to_owned(),
            Err(reason) => reason,
        };
        *outcomes.entry(key).or_default() += 1;
    }
    assert_eq!(outcomes.get("ACCEPTED"), Some(&600), "{outcomes:?}");
    assert_eq!(outcomes.get("CEILING_REACHED"), Some(&400), "{outcomes:?}");
    let store = claims_store(&suite).await;
    let (reserved, live) = store.reserved("PROFESSIONISTI_COCOCO").await.expect("totals");
    assert_eq!(reserved, 600 * 60_000, "reserved to the cent");
    assert_eq!(live, reserved, "the claims add up to the reservation");
    let protocols = suite.db.count("claims", "claims", "protocol_number LIKE 'INPS.0000.%'").await;
    assert_eq!(protocols, 600);
}

/// claims-svc's store on the test's database, for totals no RPC reports.
pub(crate) async fn claims_store(suite: &Suite) -> claims_svc::store::Store {
    let db =
        sportello_platform::db::open(&suite.db.url("claims"), "claims", &claims_svc::MIGRATIONS, 2)
            .await
            .expect("claims database");
    claims_svc::store::Store::new(db)
}

#[tokio::test]
async fn fifty_submissions_with_one_idempotency_key_file_one_claim_and_get_fifty_identical_answers()
{
    let suite = spawn_suite_with(undecided).await;
    suite.import_registry(&registry([professional_row(ROSSI)])).await.expect("registry");
    let token = suite.citizen_token(ROSSI, Level::Simplified);
    let channel = connect(suite.claims.addr).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (channel, token) = (channel.clone(), token.clone());
        calls.spawn(async move {
            submit(channel, &token, claim_form("PROFESSIONISTI_COCOCO", ROSSI, "retry-me")).await
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = calls.join_next().await {
        answers.push(done.expect("call").expect("accepted"));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "identical answers");
    assert_eq!(suite.db.count("claims", "claims", "1 = 1").await, 1);
    // The same key for another claim is a client bug, not a retry.
    let other = cash(claim_form("PROFESSIONISTI_COCOCO", ROSSI, "retry-me"));
    let refused = submit(channel, &token, other).await.expect_err("key reused");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED")
    );
}

#[tokio::test]
async fn bad_forms_are_refused_field_by_field_and_write_nothing() {
    let suite = spawn_suite_with(undecided).await;
    suite.import_registry(&registry([professional_row(ROSSI)])).await.expect("registry");
    let token = suite.citizen_token(ROSSI, Level::Simplified);
    let gateway = suite.gateway_channel().await;

    let mut malformed = claim_form("PROFESSIONISTI_COCOCO", ROSSI, "k1");
    if let Some(cl::payment::Method::BankTransfer(t)) =
        malformed.payment.as_mut().and_then(|p| p.method.as_mut())
    {
        t.iban = "IT60X0542811101000000123457".into();
    }
    let refused = submit(gateway.clone(), &token, malformed).await.expect_err("bad IBAN");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&refused), ["payment.bank_transfer.iban"]);

    let someone_else = claim_form("PROFESSIONISTI_COCOCO", &nth_cf(1), "k2");
    let refused = submit(gateway.clone(), &token, someone_else).await.expect_err("holder");
    assert_eq!(violated_fields(&refused), ["payment.bank_transfer.holder_fiscal_code"]);

    let unknown = claim_form("BONUS_VACANZE", ROSSI, "k3");
    let refused = submit(gateway.clone(), &token, unknown).await.expect_err("benefit");
    assert_eq!(violated_fields(&refused), ["benefit_code"]);

    // A benefit that needs more than a simplified PIN, and one not open yet.
    let pool = suite.db.pool("claims").await;
    let sql = format!(
        "UPDATE {} SET min_level = 'ORDINARY' WHERE code = 'AGRICOLI'",
        suite.db.table("claims", "benefits")
    );
    sqlx::query(&sql).execute(&pool).await.expect("level");
    let refused = submit(gateway.clone(), &token, claim_form("AGRICOLI", ROSSI, "k4"))
        .await
        .expect_err("level");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "LEVEL_TOO_LOW")
    );

    let (mut bo, bo_token) = backoffice(&suite).await;
    let tomorrow = prost_types::Timestamp {
        seconds: sportello_platform::now_millis() / 1000 + 86_400,
        nanos: 0,
    };
    let later = cl::UpdateBenefitRequest {
        code: "PROFESSIONISTI_COCOCO".into(),
        opens_at: Some(tomorrow),
        reason: "click day moved".into(),
        ..Default::default()
    };
    bo.update_benefit(with_token(&bo_token, later)).await.expect("moved");
    let refused = submit(gateway.clone(), &token, claim_form("PROFESSIONISTI_COCOCO", ROSSI, "k5"))
        .await
        .expect_err("closed");
    assert_eq!(reason(&refused), "NOT_OPEN_YET");

    // Not eligible: the reasons travel in the ErrorInfo.
    let refused = submit(gateway, &token, claim_form("SPETTACOLO", ROSSI, "k6"))
        .await
        .expect_err("not eligible");
    assert_eq!(reason(&refused), "NOT_ELIGIBLE");
    let info = refused.get_details_error_info().expect("info");
    assert!(
        info.metadata.get("reasons").is_some_and(|r| r.contains("NOT_IN_ENTERTAINMENT_FUND")),
        "{info:?}"
    );

    assert_eq!(suite.db.count("claims", "claims", "1 = 1").await, 0, "nothing written");
    assert_eq!(suite.db.count("claims", "outbox", "1 = 1").await, 0, "nothing announced");
    assert_eq!(
        suite.db.count("claims", "benefits", "reserved_cents <> 0").await,
        0,
        "nothing reserved"
    );
}

#[tokio::test]
async fn a_citizen_reads_only_their_own_claims_also_when_calling_claims_svc_directly() {
    let suite = spawn_suite_with(undecided).await;
    let other = nth_cf(7);
    suite
        .import_registry(&registry([professional_row(ROSSI), professional_row(&other)]))
        .await
        .expect("registry");
    let mine = suite.citizen_token(ROSSI, Level::Simplified);
    let theirs = suite.citizen_token(&other, Level::Dispositive);
    let receipt = submit(suite.gateway_channel().await, &mine, claim_form("AGRICOLI", ROSSI, "k"))
        .await
        .expect("filed");

    for channel in [suite.gateway_channel().await, connect(suite.claims.addr).await] {
        let refused =
            get_claim(channel.clone(), &theirs, &receipt.claim_id).await.expect_err("not theirs");
        assert_eq!(refused.code(), Code::NotFound);
        let listed = claims(channel.clone())
            .list_claims(with_token(&theirs, cl::ListClaimsRequest::default()))
            .await;
        assert!(listed.expect("list").into_inner().claims.is_empty());
        // Naming the other citizen changes nothing: a citizen's listing is always their own.
        let named = cl::ListClaimsRequest { fiscal_code: ROSSI.into(), ..Default::default() };
        let listed = claims(channel.clone()).list_claims(with_token(&theirs, named)).await;
        assert!(listed.expect("list").into_inner().claims.is_empty());
        let withdraw = cl::WithdrawClaimRequest { claim_id: receipt.claim_id.clone() };
        let refused = claims(channel)
            .withdraw_claim(with_token(&theirs, withdraw))
            .await
            .expect_err("not theirs");
        assert_eq!(refused.code(), Code::NotFound);
    }
    let own =
        get_claim(suite.gateway_channel().await, &mine, &receipt.claim_id).await.expect("own");
    assert_eq!(own.iban_masked, "IT60 **** 3456");

    // Staff read any claim, on the record.
    let operator =
        get_claim(suite.gateway_channel().await, &suite.operator_token, &receipt.claim_id).await;
    assert_eq!(operator.expect("operator").fiscal_code, ROSSI);
    let trail = claims_store(&suite).await.audit_of(ROSSI).await.expect("audit");
    assert!(trail.contains(&(OPERATOR_ID.to_owned(), "GetClaim".to_owned())), "{trail:?}");
}

#[tokio::test]
async fn one_indemnity_per_person_and_a_withdrawal_releases_the_amount_and_the_place() {
    let suite = spawn_suite_with(undecided).await;
    suite.import_registry(&registry([professional_row(ROSSI)])).await.expect("registry");
    let token = suite.citizen_token(ROSSI, Level::Simplified);
    let gateway = suite.gateway_channel().await;
    let first = submit(gateway.clone(), &token, claim_form("PROFESSIONISTI_COCOCO", ROSSI, "a"))
        .await
        .expect("first");
    let refused = submit(gateway.clone(), &token, claim_form("AGRICOLI", ROSSI, "b"))
        .await
        .expect_err("art. 31");
    assert_eq!(reason(&refused), "ALREADY_CLAIMED");

    let withdraw = cl::WithdrawClaimRequest { claim_id: first.claim_id.clone() };
    let withdrawn = claims(gateway.clone())
        .withdraw_claim(with_token(&token, withdraw.clone()))
        .await
        .expect("withdrawn");
    assert_eq!(
        withdrawn.into_inner().claim.expect("claim").status,
        cl::ClaimStatus::Withdrawn as i32
    );
    let store = claims_store(&suite).await;
    assert_eq!(store.reserved("PROFESSIONISTI_COCOCO").await.expect("totals"), (0, 0));
    let again = claims(gateway.clone())
        .withdraw_claim(with_token(&token, withdraw))
        .await
        .expect_err("twice");
    assert_eq!(reason(&again), "ALREADY_DECIDED");

    submit(gateway, &token, claim_form("AGRICOLI", ROSSI, "c"))
        .await
        .expect("now the other indemnity");
    assert_eq!(store.reserved("AGRICOLI").await.expect("totals"), (60_000, 60_000));
}

#[tokio::test]
async fn a_patronato_files_only_under_a_live_mandate_and_the_citizen_sees_who_filed() {
    let suite = spawn_suite_with(undecided).await;
    suite.import_registry(&registry([professional_row(ROSSI)])).await.expect("registry");
    let office = suite.login_staff(PATRONATO_ID, PATRONATO_PASSWORD).await.access_token;
    let citizen = suite.citizen_token(ROSSI, Level::Simplified);
    let gateway = suite.gateway_channel().await;
    let mut form = claim_form("PROFESSIONISTI_COCOCO", ROSSI, "pat-1");
    form.fiscal_code = ROSSI.into();

    let refused = submit(gateway.clone(), &office, form.clone()).await.expect_err("no mandate");
    assert_eq!(reason(&refused), "NO_MANDATE");
    let mandate = cl::RegisterMandateRequest {
        fiscal_code: ROSSI.into(),
        signed_form_reference: "INCA/2020/0042".into(),
    };
    let mandate = claims(gateway.clone())
        .register_mandate(with_token(&office, mandate))
        .await
        .expect("mandate");
    let mandate = mandate.into_inner().mandate.expect("mandate");

    let receipt = submit(gateway.clone(), &office, form).await.expect("filed under the mandate");
    let seen =
        get_claim(gateway.clone(), &citizen, &receipt.claim_id).await.expect("the citizen's claim");
    let filer = seen.filed_by.expect("filer");
    assert_eq!(
        (filer.role, filer.id.as_str()),
        (sportello_proto::identity::v1::PrincipalRole::Patronato as i32, PATRONATO_ID)
    );
    let listed = claims(gateway.clone())
        .list_mandates(with_token(&citizen, cl::ListMandatesRequest {}))
        .await;
    assert_eq!(listed.expect("mandates").into_inner().mandates.len(), 1);

    let revoke = cl::RevokeMandateRequest { mandate_id: mandate.mandate_id };
    claims(gateway.clone()).revoke_mandate(with_token(&citizen, revoke)).await.expect("revoked");
    let withdraw = cl::WithdrawClaimRequest { claim_id: receipt.claim_id };
    claims(gateway.clone())
        .withdraw_claim(with_token(&citizen, withdraw))
        .await
        .expect("withdrawn");
    let mut again = claim_form("PROFESSIONISTI_COCOCO", ROSSI, "pat-3");
    again.fiscal_code = ROSSI.into();
    let refused = submit(gateway, &office, again).await.expect_err("mandate revoked");
    assert_eq!(reason(&refused), "NO_MANDATE");
    let trail = claims_store(&suite).await.audit_of(ROSSI).await.expect("audit");
    assert!(trail.contains(&(PATRONATO_ID.to_owned(), "SubmitClaim".to_owned())), "{trail:?}");
}

/// The claims a patronato's session lists.
async fn filed_by(channel: Channel, token: &str) -> Vec<cl::Claim> {
    let list = cl::ListClaimsRequest {
        fiscal_code: String::new(),
        page_size: 50,
        page_token: String::new(),
    };
    claims(channel).list_claims(with_token(token, list)).await.expect("list").into_inner().claims
}

/// Found by `sportello chaos isolation`: the office kept reading the claims it had filed after
/// the citizen revoked its mandate.
#[tokio::test]
async fn a_patronato_without_a_mandate_cannot_read_a_citizens_claim() {
    let suite = spawn_suite_with(undecided).await;
    suite.import_registry(&registry([professional_row(ROSSI)])).await.expect("registry");
    let office = suite.login_staff(PATRONATO_ID, PATRONATO_PASSWORD).await.access_token;
    let citizen = suite.citizen_token(ROSSI, Level::Simplified);
    let gateway = suite.gateway_channel().await;
    let mandate = cl::RegisterMandateRequest {
        fiscal_code: ROSSI.into(),
        signed_form_reference: "INCA/2020/0077".into(),
    };
    let mandate = claims(gateway.clone())
        .register_mandate(with_token(&office, mandate))
        .await
        .expect("mandate")
        .into_inner()
        .mandate
        .expect("mandate");
    let mut form = claim_form("PROFESSIONISTI_COCOCO", ROSSI, "pat-revoked");
    form.fiscal_code = ROSSI.into();
    let receipt = submit(gateway.clone(), &office, form).await.expect("filed under the mandate");
    get_claim(gateway.clone(), &office, &receipt.claim_id).await.expect("while mandated");
    assert_eq!(filed_by(gateway.clone(), &office).await.len(), 1);

    let revoke = cl::RevokeMandateRequest { mandate_id: mandate.mandate_id };
    claims(gateway.clone()).revoke_mandate(with_token(&citizen, revoke)).await.expect("revoked");

    let refused =
        get_claim(gateway.clone(), &office, &receipt.claim_id).await.expect_err("revoked");
    assert_eq!(refused.code(), Code::NotFound);
    assert!(filed_by(gateway.clone(), &office).await.is_empty());
    // Nor does filing it again with the same key answer with the claim.
    let mut again = claim_form("PROFESSIONISTI_COCOCO", ROSSI, "pat-revoked");
    again.fiscal_code = ROSSI.into();
    let refused = submit(gateway.clone(), &office, again.clone()).await.expect_err("no mandate");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // A mandate the office registers again does not bring back what was filed under the
    // revoked one.
    let renewed = cl::RegisterMandateRequest {
        fiscal_code: ROSSI.into(),
        signed_form_reference: "INCA/2020/0078".into(),
    };
    claims(gateway.clone()).register_mandate(with_token(&office, renewed)).await.expect("renewed");
    let refused = get_claim(gateway.clone(), &office, &receipt.claim_id).await.expect_err("old");
    assert_eq!(refused.code(), Code::NotFound);
    assert!(filed_by(gateway.clone(), &office).await.is_empty());
    let refused = submit(gateway.clone(), &office, again).await.expect_err("filed before it");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // The citizen's own view does not change.
    get_claim(gateway, &citizen, &receipt.claim_id).await.expect("the citizen's claim");
}

/// Found by `sportello chaos isolation`: the queue showed citizens' claims to the back office
/// with a single row on the officer's own trail, none on the citizens'.
#[tokio::test]
async fn the_back_office_reading_the_review_queue_is_on_each_citizens_audit_trail() {
    let provider = fake_account_check(HashMap::new()).await;
    let suite = spawn_suite_with(|c| c.claims.account_verification_url = provider).await;
    let (first, second) = (nth_cf(1), nth_cf(2));
    let rows = [&first, &second].map(|cf| professional_row(cf));
    suite.import_registry(&registry(rows)).await.expect("registry");
    let gateway = suite.gateway_channel().await;
    for cf in [&first, &second] {
        let token = suite.citizen_token(cf, Level::Simplified);
        let receipt = submit(gateway.clone(), &token, claim_form("PROFESSIONISTI_COCOCO", cf, "q"))
            .await
            .expect("filed");
        wait_for_claim_status(&suite, &token, &receipt.claim_id, cl::ClaimStatus::InReview).await;
    }
    let (mut bo, token) = backoffice(&suite).await;
    let queue = bo
        .list_review_queue(with_token(&token, cl::ListReviewQueueRequest::default()))
        .await
        .expect("queue");
    assert_eq!(queue.into_inner().claims.len(), 2);
    let store = claims_store(&suite).await;
    for cf in [&first, &second] {
        let trail = store.audit_of(cf).await.expect("audit");
        let read = (BACKOFFICE_ID.to_owned(), "ListReviewQueue".to_owned());
        assert!(trail.contains(&read), "{cf}: {trail:?}");
    }
}

/// The bank's account check, as a fake provider on 127.0.0.1: answers by fiscal code.
async fn fake_account_check(verdicts: HashMap<String, &'static str>) -> String {
    fake_account_check_asked(verdicts).await.0
}

/// [`fake_account_check`], keeping what it is asked (`{"iban", "fiscal_code"}` each time).
async fn fake_account_check_asked(verdicts: HashMap<String, &'static str>) -> (String, Questions) {
    fake_authority(move |q| {
        let cf = q["fiscal_code"].as_str().unwrap_or_default();
        (verdicts.get(cf).copied().unwrap_or("UNKNOWN"), Duration::ZERO)
    })
    .await
}

#[tokio::test]
async fn the_automatic_decision_follows_the_bank_check_and_leaves_the_unknown_to_the_back_office() {
    let (owner, stranger, unknown) = (nth_cf(1), nth_cf(2), nth_cf(3));
    let verdicts = HashMap::from([(owner.clone(), "MATCH"), (stranger.clone(), "NO_MATCH")]);
    let provider = fake_account_check(verdicts).await;
    let suite = spawn_suite_with(|c| c.claims.account_verification_url = provider).await;
    let rows = [&owner, &stranger, &unknown].map(|cf| professional_row(cf));
    suite.import_registry(&registry(rows)).await.expect("registry");
    let gateway = suite.gateway_channel().await;
    let mut filed = Vec::new();
    for cf in [&owner, &stranger, &unknown] {
        let token = suite.citizen_token(cf, Level::Simplified);
        let receipt = submit(gateway.clone(), &token, claim_form("PROFESSIONISTI_COCOCO", cf, "k"))
            .await
            .expect("filed");
        filed.push((token, receipt.claim_id));
    }
    wait_for_claim_status(&suite, &filed[0].0, &filed[0].1, cl::ClaimStatus::Approved).await;
    let rejected =
        wait_for_claim_status(&suite, &filed[1].0, &filed[1].1, cl::ClaimStatus::Rejected).await;
    assert_eq!(rejected.reasons, ["IBAN_NOT_OWNED"]);
    let waiting =
        wait_for_claim_status(&suite, &filed[2].0, &filed[2].1, cl::ClaimStatus::InReview).await;
    assert_eq!(waiting.reasons, ["IBAN_OWNERSHIP_UNKNOWN"]);
    let store = claims_store(&suite).await;
    assert_eq!(
        store.reserved("PROFESSIONISTI_COCOCO").await.expect("totals"),
        (120_000, 120_000),
        "the rejection released its amount"
    );

    let (mut bo, token) = backoffice(&suite).await;
    let queue = bo
        .list_review_queue(with_token(&token, cl::ListReviewQueueRequest::default()))
        .await
        .expect("queue");
    let queue: Vec<String> = queue
        .into_inner()
        .claims
        .into_iter()
        .map(|c| c.receipt.expect("receipt").claim_id)
        .collect();
    assert_eq!(queue, [filed[2].1.clone()]);
    let reject_without_reason = cl::DecideClaimRequest {
        claim_id: filed[2].1.clone(),
        decision: cl::Decision::Reject as i32,
        ..Default::default()
    };
    let refused =
        bo.decide_claim(with_token(&token, reject_without_reason)).await.expect_err("reason");
    assert_eq!(violated_fields(&refused), ["reason"]);
    let approve = cl::DecideClaimRequest {
        claim_id: filed[2].1.clone(),
        decision: cl::Decision::Approve as i32,
        note: "statement seen".into(),
        ..Default::default()
    };
    let decided = bo.decide_claim(with_token(&token, approve.clone())).await.expect("approved");
    assert_eq!(decided.into_inner().claim.expect("claim").status, cl::ClaimStatus::Approved as i32);
    let twice = bo.decide_claim(with_token(&token, approve)).await.expect_err("decided");
    assert_eq!(reason(&twice), "ALREADY_DECIDED");
    let trail = store.audit_of(&unknown).await.expect("audit");
    assert!(trail.contains(&(BACKOFFICE_ID.to_owned(), "DecideClaim".to_owned())), "{trail:?}");
    eventually("three decision notices", Duration::from_secs(10), || async {
        suite.db.outbox_relayed().await;
        suite.db.count("notify", "messages", "template = 'CLAIM_DECISION'").await == 3
    })
    .await;
}

#[tokio::test]
async fn the_registry_import_keeps_good_rows_reports_bad_ones_by_line_and_column_and_is_idempotent()
{
    let suite = spawn_suite().await;
    let csv = registry([
        professional_row(ROSSI),
        format!("{},MARTIANS:2015-01-01:,2015-01-01,,0,60,,0", nth_cf(1)),
        "RSSMRA85T10A562X,,,,,,,".to_owned(),
        professional_row(&nth_cf(2)),
        professional_row(ROSSI),
    ]);
    let first = suite.import_registry(&csv).await.expect("import");
    assert_eq!((first.rows_read, first.rows_changed, first.rows_rejected), (5, 2, 3));
    let errors: Vec<(i64, &str)> =
        first.errors.iter().map(|e| (e.line, e.column.as_str())).collect();
    assert_eq!(errors, [(3, "schemes"), (4, "fiscal_code"), (6, "fiscal_code")]);
    let again = suite.import_registry(&csv).await.expect("again");
    assert_eq!((again.rows_changed, again.rows_unchanged), (0, 2));
    let trail = claims_store(&suite).await.audit_of("").await.expect("audit");
    let imports =
        trail.iter().filter(|(by, action)| by == BACKOFFICE_ID && action == "ImportRegistry");
    assert_eq!(imports.count(), 2, "each written batch is on the record");

    let citizen = suite.citizen_token(ROSSI, Level::Simplified);
    let mut bo = ClaimsBackOfficeServiceClient::new(suite.gateway_channel().await);
    let chunks = tokio_stream::iter(vec![cl::ImportRegistryRequest { chunk: csv.into_bytes() }]);
    let denied = bo
        .import_registry(with_token(&citizen, chunks))
        .await
        .expect_err("citizens do not load it");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn the_back_office_changes_a_ceiling_on_the_record_and_the_catalogue_shows_what_is_left() {
    let suite = spawn_suite_with(undecided).await;
    suite.import_registry(&registry([professional_row(ROSSI)])).await.expect("registry");
    let changed = set_ceiling(&suite, "AGRICOLI", 1_000_000).await;
    assert_eq!((changed.ceiling_cents, changed.remaining_cents), (1_000_000, 1_000_000));
    let token = suite.citizen_token(ROSSI, Level::Simplified);
    submit(suite.gateway_channel().await, &token, claim_form("AGRICOLI", ROSSI, "k"))
        .await
        .expect("filed");
    eventually("the remaining budget", Duration::from_secs(5), || async {
        benefit(&suite, "AGRICOLI").await.remaining_cents == 940_000
    })
    .await;
    // Below what is already reserved: refused, on the field.
    let (mut bo, bo_token) = backoffice(&suite).await;
    let too_low = cl::UpdateBenefitRequest {
        code: "AGRICOLI".into(),
        ceiling_cents: Some(10_000),
        reason: "cut".into(),
        ..Default::default()
    };
    let refused =
        bo.update_benefit(with_token(&bo_token, too_low)).await.expect_err("below reserved");
    assert_eq!(violated_fields(&refused), ["ceiling_cents"]);
    let trail = claims_store(&suite).await.audit_of("").await.expect("audit");
    assert!(trail.contains(&(BACKOFFICE_ID.to_owned(), "UpdateBenefit".to_owned())), "{trail:?}");
    // The catalogue itself is not the citizens' to change.
    let mut as_citizen = ClaimsBackOfficeServiceClient::new(suite.gateway_channel().await);
    let change = cl::UpdateBenefitRequest {
        code: "AGRICOLI".into(),
        ceiling_cents: Some(0),
        reason: "mine".into(),
        ..Default::default()
    };
    let denied = as_citizen.update_benefit(with_token(&token, change)).await.expect_err("citizen");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

/// `sportello claims` as an operator runs it, on `addr`, against the test's database.
fn claims_process(suite: &Suite, addr: std::net::SocketAddr) -> tokio::process::Child {
    let mut cmd = service_process(&suite.db, "claims", addr);
    cmd.env("SPORTELLO_CLAIMS__IDENTITY_URL", url(suite.identity.addr))
        .env("SPORTELLO_CLAIMS__NOTIFY_URL", url(suite.notify.addr));
    cmd.spawn().expect("sportello claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claims_svc_killed_mid_flood_keeps_every_accepted_claim_and_sends_each_receipt_once() {
    use tonic_health::pb::health_check_response::ServingStatus;
    const FILERS: i64 = 400;
    // The in-process claims-svc only serves; the one killed is a process of its own.
    let suite = spawn_suite_with(undecided).await;
    let citizens: Vec<String> = (0..FILERS + 50).map(nth_cf).collect();
    suite
        .import_registry(&registry(citizens.iter().map(|cf| professional_row(cf))))
        .await
        .expect("registry");
    let (listener, addr) = listener().await;
    drop(listener);
    let mut child = claims_process(&suite, addr);
    wait_for_status(addr, "sportello.claims.v1.ClaimsService", ServingStatus::Serving).await;

    let filers: Vec<(String, String)> = citizens[..FILERS as usize]
        .iter()
        .map(|cf| (cf.clone(), suite.citizen_token(cf, Level::Simplified)))
        .collect();
    let channel = connect(addr).await;
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(16));
    let mut calls = tokio::task::JoinSet::new();
    for (cf, token) in filers.clone() {
        let (channel, accepted, semaphore) = (channel.clone(), accepted.clone(), semaphore.clone());
        calls.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore");
            let form = claim_form("PROFESSIONISTI_COCOCO", &cf, &format!("flood-{cf}"));
            let answer =
                tokio::time::timeout(Duration::from_secs(5), submit(channel, &token, form)).await;
            let answer = answer.ok().and_then(Result::ok);
            if answer.is_some() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (cf, answer)
        });
    }
    eventually("the flood to be under way", Duration::from_secs(30), || async {
        accepted.load(std::sync::atomic::Ordering::Relaxed) >= 100
    })
    .await;
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;
    let mut answered: HashMap<String, cl::ClaimReceipt> = HashMap::new();
    while let Some(done) = calls.join_next().await {
        if let (cf, Some(receipt)) = done.expect("call") {
            answered.insert(cf, receipt);
        }
    }
    assert!(
        answered.len() < FILERS as usize,
        "the kill came mid-flood ({} answered)",
        answered.len()
    );

    let mut child = claims_process(&suite, addr);
    wait_for_status(addr, "sportello.claims.v1.ClaimsService", ServingStatus::Serving).await;
    // Every answer given before the kill stands.
    let channel = connect(addr).await;
    for (cf, receipt) in &answered {
        let token = &filers.iter().find(|(c, _)| c == cf).expect("filer").1;
        let claim = get_claim(channel.clone(), token, &receipt.claim_id).await.expect("kept");
        assert_eq!(claim.receipt.as_ref(), Some(receipt));
    }
    // Whoever lost the answer retries with the same key and gets the one claim.
    for (cf, token) in &filers {
        let form = claim_form("PROFESSIONISTI_COCOCO", cf, &format!("flood-{cf}"));
        let receipt = submit(channel.clone(), token, form).await.expect("retry answered");
        if let Some(first) = answered.get(cf) {
            assert_eq!(&receipt, first, "a retry gets the first answer");
        }
    }
    assert_eq!(
        suite.db.count("claims", "claims", "1 = 1").await,
        FILERS,
        "one claim per filer, none for anyone else"
    );
    let store = claims_store(&suite).await;
    let (reserved, live) = store.reserved("PROFESSIONISTI_COCOCO").await.expect("totals");
    assert_eq!((reserved, live), (FILERS * 60_000, FILERS * 60_000));
    eventually("every receipt relayed", Duration::from_secs(60), || async {
        suite.db.count("claims", "outbox", "done_at IS NULL").await == 0
    })
    .await;
    let receipts = suite.db.count("notify", "messages", "template = 'CLAIM_RECEIPT'").await;
    assert_eq!(receipts, FILERS, "each receipt sent exactly once");
    child.start_kill().expect("stop");
}

#[tokio::test]
async fn sportello_import_registry_loads_a_file_over_several_calls_and_reports_bad_rows_by_file_line(
) {
    let suite = spawn_suite().await;
    let file = suite.db.data_dir().join("positions.csv");
    let csv = registry([
        professional_row(&nth_cf(1)),
        professional_row(&nth_cf(2)),
        professional_row(&nth_cf(3)),
        format!("{},GESTIONE_SEPARATA:2015-01-01:,2015-01-01,,maybe,0,,0", nth_cf(4)),
        professional_row(&nth_cf(5)),
    ]);
    std::fs::write(&file, csv).expect("file");
    let run = || async {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
            .args(["import", "registry"])
            .arg(&file)
            .args(["--gateway", &url(suite.gateway.addr), "--username", BACKOFFICE_ID])
            // Two rows per call: line numbers must still be the file's.
            .args(["--rows-per-call", "2"])
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
    assert_eq!(lines[0], "line 5, pensioner: \"maybe\" is not 1 or 0", "{stdout}");
    assert!(lines[1].starts_with("5 rows read: 4 changed, 0 unchanged, 1 rejected"), "{stdout}");
    assert_eq!(suite.db.count("claims", "insured_positions", "1 = 1").await, 4);
    let again = run().await;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("0 changed, 4 unchanged"), "the same file changes nothing: {stdout}");
}

#[tokio::test]
async fn the_baby_sitting_bonus_is_filed_with_a_simplified_pin_but_redeemed_only_with_an_ordinary_one(
) {
    use identity_svc::domain::codice_fiscale::{compute, Sex};
    let suite = spawn_suite().await;
    let born = chrono::NaiveDate::from_ymd_opt(2015, 3, 1).expect("date");
    let child = compute("Esposito", "Sara", born, Sex::Female, "F839");
    let (mother, father) = (nth_cf(11), nth_cf(12));
    let parent = |cf: &str| format!("{cf},,,,0,0,{child}:2015-03-01,0");
    suite.import_registry(&registry([parent(&mother), parent(&father)])).await.expect("registry");
    let gateway = suite.gateway_channel().await;
    let bonus = |cf: &str, key: &str| {
        let mut form = cash(claim_form("BONUS_BABY_SITTING", cf, key));
        form.child_fiscal_code = child.clone();
        form.declarations =
            Some(cl::Declarations { truthful: true, no_parental_leave_instead: true });
        form
    };
    let simplified = suite.citizen_token(&mother, Level::Simplified);
    let receipt = submit(gateway.clone(), &simplified, bonus(&mother, "b1"))
        .await
        .expect("filed with a simplified PIN");
    // One bonus per child, whichever parent asks.
    let other = suite.citizen_token(&father, Level::Simplified);
    let refused =
        submit(gateway.clone(), &other, bonus(&father, "b2")).await.expect_err("the same child");
    assert_eq!(reason(&refused), "ALREADY_CLAIMED");
    wait_for_claim_status(&suite, &simplified, &receipt.claim_id, cl::ClaimStatus::Approved).await;

    let redeem = |token: String| {
        let request = cl::RedeemBabySittingBonusRequest { claim_id: receipt.claim_id.clone() };
        let mut client = claims(gateway.clone());
        async move { client.redeem_baby_sitting_bonus(with_token(&token, request)).await }
    };
    let refused = redeem(simplified).await.expect_err("simplified PIN");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "LEVEL_TOO_LOW")
    );
    let ordinary = suite.citizen_token(&mother, Level::Ordinary);
    let first =
        redeem(ordinary.clone()).await.expect("redeemed").into_inner().claim.expect("claim");
    assert!(first.redeemed_at.is_some());
    let again = redeem(ordinary).await.expect("again").into_inner().claim.expect("claim");
    assert_eq!(again.redeemed_at, first.redeemed_at, "redeeming twice changes nothing");
    let theirs =
        redeem(suite.citizen_token(&father, Level::Ordinary)).await.expect_err("not theirs");
    assert_eq!(theirs.code(), Code::NotFound);
}

/// What the pain.001.001.03 schema finds wrong with `xml`, if anything.
fn schema_errors(xml: &[u8]) -> Option<String> {
    let schema = include_bytes!("../../claims-svc/data/pain.001.001.03.xsd");
    xsd_check::validate(schema, xml).err()
}

#[tokio::test]
async fn approved_claims_are_paid_in_a_batch_by_sepa_transfer_or_at_the_post_office_and_the_citizens_told(
) {
    // The creditor of the transfer is on the register of residents, which names them.
    let (bank, resident) = citizen_request(
        "Esposito",
        "Carmela",
        (1961, 3, 8),
        sportello_proto::identity::v1::Sex::Female,
    );
    let cash_citizen = nth_cf(22);
    let provider = fake_account_check(HashMap::from([(bank.clone(), "MATCH")])).await;
    let suite = spawn_suite_with(|c| c.claims.account_verification_url = provider).await;
    suite.register_residents(&[&resident]).await;
    suite
        .import_registry(&registry([professional_row(&bank), professional_row(&cash_citizen)]))
        .await
        .expect("registry");
    let gateway = suite.gateway_channel().await;
    let bank_token = suite.citizen_token(&bank, Level::Simplified);
    let cash_token = suite.citizen_token(&cash_citizen, Level::Simplified);
    let by_transfer = submit(gateway.clone(), &bank_token, claim_form("AGRICOLI", &bank, "k"))
        .await
        .expect("filed");
    let by_cash =
        submit(gateway.clone(), &cash_token, cash(claim_form("AGRICOLI", &cash_citizen, "k")))
            .await
            .expect("filed");
    wait_for_claim_status(&suite, &bank_token, &by_transfer.claim_id, cl::ClaimStatus::Approved)
        .await;
    wait_for_claim_status(&suite, &cash_token, &by_cash.claim_id, cl::ClaimStatus::Approved).await;

    let (mut bo, token) = backoffice(&suite).await;
    let batch =
        bo.create_payment_batch(with_token(&token, cl::CreatePaymentBatchRequest::default())).await;
    let batch = batch.expect("ordered").into_inner();
    assert_eq!((batch.transfers, batch.transfers_total_cents), (1, 60_000));
    assert_eq!(
        batch.cash.iter().map(|c| c.claim_id.as_str()).collect::<Vec<_>>(),
        [by_cash.claim_id.as_str()]
    );
    assert_eq!(schema_errors(&batch.sepa_credit_transfer), None, "a valid pain.001.001.03 file");
    let xml = String::from_utf8(batch.sepa_credit_transfer.clone()).expect("UTF-8");
    assert!(
        xml.contains(&format!("<EndToEndId>{}</EndToEndId>", by_transfer.protocol_number)),
        "{xml}"
    );
    assert!(xml.contains("<IBAN>IT60X0542811101000000123456</IBAN>"));
    assert!(xml.contains("<Cdtr><Nm>Carmela Esposito</Nm></Cdtr>"), "named as registered: {xml}");
    assert_eq!(
        status_of(&suite, &bank_token, &by_transfer.claim_id).await,
        cl::ClaimStatus::PaymentOrdered as i32
    );
    let nothing =
        bo.create_payment_batch(with_token(&token, cl::CreatePaymentBatchRequest::default())).await;
    assert_eq!(reason(&nothing.expect_err("nothing left")), "NOTHING_TO_PAY");

    let confirm = cl::ConfirmPaymentBatchRequest { batch_id: batch.batch_id.clone() };
    let paid =
        bo.confirm_payment_batch(with_token(&token, confirm.clone())).await.expect("confirmed");
    assert_eq!(paid.into_inner().claims_paid, 2);
    let again = bo.confirm_payment_batch(with_token(&token, confirm)).await.expect("again");
    assert_eq!(again.into_inner().claims_paid, 2, "confirming twice changes nothing");
    assert_eq!(
        status_of(&suite, &cash_token, &by_cash.claim_id).await,
        cl::ClaimStatus::Paid as i32
    );
    eventually("two payment notices", Duration::from_secs(10), || async {
        suite.db.outbox_relayed().await;
        suite.db.count("notify", "messages", "template = 'CLAIM_PAYMENT'").await == 2
    })
    .await;
    let unknown = cl::ConfirmPaymentBatchRequest { batch_id: "no-such-batch".into() };
    let refused = bo.confirm_payment_batch(with_token(&token, unknown)).await.expect_err("unknown");
    assert_eq!(refused.code(), Code::NotFound);
    let trail = claims_store(&suite).await.audit_of("").await.expect("audit");
    assert!(
        trail.contains(&(BACKOFFICE_ID.to_owned(), "ConfirmPaymentBatch".to_owned())),
        "{trail:?}"
    );
}

#[tokio::test]
async fn claim_and_mandate_rpcs_refuse_bad_input_by_field_and_other_citizens_by_not_found() {
    let suite = spawn_suite_with(undecided).await;
    let other = nth_cf(31);
    let gateway = suite.gateway_channel().await;
    let mine = suite.citizen_token(ROSSI, Level::Ordinary);
    let theirs = suite.citizen_token(&other, Level::Ordinary);
    let office = suite.login_staff(PATRONATO_ID, PATRONATO_PASSWORD).await.access_token;

    let not_an_id = || "not-a-claim".to_owned();
    let refused = get_claim(gateway.clone(), &mine, &not_an_id()).await.expect_err("bad id");
    assert_eq!(violated_fields(&refused), ["claim_id"]);
    let withdraw = cl::WithdrawClaimRequest { claim_id: not_an_id() };
    let refused = claims(gateway.clone())
        .withdraw_claim(with_token(&mine, withdraw))
        .await
        .expect_err("bad id");
    assert_eq!(violated_fields(&refused), ["claim_id"]);
    let redeem = cl::RedeemBabySittingBonusRequest { claim_id: not_an_id() };
    let refused = claims(gateway.clone())
        .redeem_baby_sitting_bonus(with_token(&mine, redeem))
        .await
        .expect_err("bad id");
    assert_eq!(violated_fields(&refused), ["claim_id"]);
    let page = cl::ListClaimsRequest { page_token: "garbage".into(), ..Default::default() };
    let refused =
        claims(gateway.clone()).list_claims(with_token(&mine, page)).await.expect_err("bad token");
    assert_eq!(violated_fields(&refused), ["page_token"]);
    let unknown = claims(gateway.clone())
        .get_benefit(cl::GetBenefitRequest { code: "BONUS_VACANZE".into() })
        .await;
    assert_eq!(unknown.expect_err("no such benefit").code(), Code::NotFound);

    let bad_mandate = cl::RegisterMandateRequest {
        fiscal_code: "RSSMRA85T10A562X".into(),
        signed_form_reference: " ".into(),
    };
    let refused = claims(gateway.clone())
        .register_mandate(with_token(&office, bad_mandate))
        .await
        .expect_err("bad");
    assert_eq!(violated_fields(&refused), ["fiscal_code", "signed_form_reference"]);

    // A mandate of mine is neither listed to nor revocable by another citizen.
    let mandate = cl::RegisterMandateRequest {
        fiscal_code: ROSSI.into(),
        signed_form_reference: "INCA/2020/7".into(),
    };
    let mandate = claims(gateway.clone())
        .register_mandate(with_token(&office, mandate))
        .await
        .expect("registered");
    let mandate_id = mandate.into_inner().mandate.expect("mandate").mandate_id;
    let listed = claims(gateway.clone())
        .list_mandates(with_token(&theirs, cl::ListMandatesRequest {}))
        .await;
    assert!(listed.expect("list").into_inner().mandates.is_empty());
    let revoke = cl::RevokeMandateRequest { mandate_id: mandate_id.clone() };
    let refused = claims(gateway.clone())
        .revoke_mandate(with_token(&theirs, revoke.clone()))
        .await
        .expect_err("not theirs");
    assert_eq!(refused.code(), Code::NotFound);
    let listed =
        claims(gateway.clone()).list_mandates(with_token(&mine, cl::ListMandatesRequest {})).await;
    let listed = listed.expect("list").into_inner().mandates;
    assert!(listed.iter().all(|m| m.revoked_at.is_none()), "still live: {listed:?}");

    // The back-office RPCs are the back office's only, and check their input.
    let mut bo = ClaimsBackOfficeServiceClient::new(gateway.clone());
    let batch =
        bo.create_payment_batch(with_token(&mine, cl::CreatePaymentBatchRequest::default())).await;
    assert_eq!(batch.expect_err("citizen").code(), Code::PermissionDenied);
    let (mut bo, token) = backoffice(&suite).await;
    let change = cl::UpdateBenefitRequest { code: "BONUS_VACANZE".into(), ..Default::default() };
    let refused = bo.update_benefit(with_token(&token, change)).await.expect_err("bad");
    assert_eq!(violated_fields(&refused), ["code", "reason", "amount_cents"]);
    let decide = cl::DecideClaimRequest { claim_id: not_an_id(), ..Default::default() };
    let refused = bo.decide_claim(with_token(&token, decide)).await.expect_err("bad");
    assert_eq!(violated_fields(&refused), ["claim_id", "decision"]);
}

/// The account a citizen moves a claim's money to, as typed and in electronic form.
const NEW_IBAN: &str = "de89 3704 0044 0532 0130 00";
const NEW_IBAN_ELECTRONIC: &str = "DE89370400440532013000";

/// Claim `claim_id` to be paid to `iban` held by `holder` from now on.
fn to_account(claim_id: &str, iban: &str, holder: &str) -> cl::UpdatePaymentDetailsRequest {
    cl::UpdatePaymentDetailsRequest {
        claim_id: claim_id.into(),
        payment: Some(cl::Payment {
            method: Some(cl::payment::Method::BankTransfer(cl::BankTransfer {
                iban: iban.into(),
                holder_fiscal_code: holder.into(),
            })),
        }),
    }
}

async fn update_payment(
    channel: Channel,
    token: &str,
    request: cl::UpdatePaymentDetailsRequest,
) -> Result<cl::Claim, tonic::Status> {
    let reply = claims(channel).update_payment_details(with_token(token, request)).await?;
    Ok(reply.into_inner().claim.expect("claim"))
}

/// Payment changes on record: (audit rows, notices queued).
async fn payment_changes(suite: &Suite) -> (i64, i64) {
    let audited = suite.db.count("claims", "audit_events", "action = 'UpdatePaymentDetails'").await;
    let announced =
        suite.db.count("claims", "outbox", "template = 'CLAIM_PAYMENT_DETAILS_CHANGED'").await;
    (audited, announced)
}

/// Rossi's claim, filed with a simplified PIN and paid to [`IBAN`]: its id.
async fn rossis_claim(suite: &Suite) -> String {
    suite.import_registry(&registry([professional_row(ROSSI)])).await.expect("registry");
    let token = suite.citizen_token(ROSSI, Level::Simplified);
    let form = claim_form("PROFESSIONISTI_COCOCO", ROSSI, "k");
    submit(suite.gateway_channel().await, &token, form).await.expect("filed").claim_id
}

/// The claim as its citizen sees it, paid as it was filed, and nothing of a change on record.
async fn assert_payment_unchanged(suite: &Suite, id: &str) {
    let token = suite.citizen_token(ROSSI, Level::Simplified);
    let claim = get_claim(suite.gateway_channel().await, &token, id).await.expect("claim");
    assert_eq!(claim.iban_masked, "IT60 **** 3456");
    assert_eq!(claim.status, cl::ClaimStatus::Submitted as i32);
    assert_eq!(payment_changes(suite).await, (0, 0), "nothing audited nor announced");
}

#[tokio::test]
async fn a_dispositive_session_moves_its_claim_to_another_account_and_the_bank_checks_the_new_one()
{
    let (provider, asked) =
        fake_account_check_asked(HashMap::from([(ROSSI.to_owned(), "MATCH")])).await;
    let suite = spawn_suite_with(|c| c.claims.account_verification_url = provider).await;
    let id = rossis_claim(&suite).await;
    let simplified = suite.citizen_token(ROSSI, Level::Simplified);
    wait_for_claim_status(&suite, &simplified, &id, cl::ClaimStatus::Approved).await;

    let spid = suite.citizen_token(ROSSI, Level::Dispositive);
    let gateway = suite.gateway_channel().await;
    let moved = update_payment(gateway.clone(), &spid, to_account(&id, NEW_IBAN, ROSSI))
        .await
        .expect("moved");
    assert_eq!(moved.iban_masked, "DE89 **** 3000");
    assert!(!moved.post_office_cash);
    // The approval was for the old account: the new one goes through the bank's check.
    assert_eq!(moved.status, cl::ClaimStatus::Submitted as i32);
    let decided = wait_for_claim_status(&suite, &simplified, &id, cl::ClaimStatus::Approved).await;
    assert_eq!(decided.iban_masked, "DE89 **** 3000");
    let checked = asked.lock().expect("lock").clone();
    assert_eq!(
        checked.iter().map(|q| q["iban"].as_str().unwrap_or_default()).collect::<Vec<_>>(),
        ["IT60X0542811101000000123456", NEW_IBAN_ELECTRONIC],
        "the old account at submission, the new one after the change"
    );

    // Asking again for the account the claim has (a retry) changes nothing.
    let again = update_payment(gateway, &spid, to_account(&id, NEW_IBAN, ROSSI)).await;
    assert_eq!(again.expect("again").status, cl::ClaimStatus::Approved as i32);
    assert_eq!(payment_changes(&suite).await, (1, 1), "one audit row, one notice");
    let trail = claims_store(&suite).await.audit_of(ROSSI).await.expect("audit");
    assert!(trail.contains(&(ROSSI.to_owned(), "UpdatePaymentDetails".to_owned())), "{trail:?}");
    let whole_account = format!("%{}%", &NEW_IBAN_ELECTRONIC[4..]);
    let masked = "%DE89 **** 3000%";
    assert_eq!(
        suite.db.count("claims", "audit_events", &format!("detail LIKE '{masked}'")).await,
        1,
        "the audit row shows the account masked"
    );
    for (table, column) in [("audit_events", "detail"), ("outbox", "params")] {
        let filter = format!("{column} LIKE '{whole_account}'");
        assert_eq!(suite.db.count("claims", table, &filter).await, 0, "{table}: never in full");
    }
    eventually("the notice relayed to notify", Duration::from_secs(10), || async {
        suite.db.outbox_relayed().await;
        let filter =
            format!("template = 'CLAIM_PAYMENT_DETAILS_CHANGED' AND params LIKE '{masked}'");
        suite.db.count("notify", "messages", &filter).await == 1
    })
    .await;
    eventually("both decisions notified", Duration::from_secs(10), || async {
        suite.db.outbox_relayed().await;
        suite.db.count("notify", "messages", "template = 'CLAIM_DECISION'").await == 2
    })
    .await;
}

#[tokio::test]
async fn an_ordinary_pin_cannot_move_a_claims_money_to_another_account() {
    let suite = spawn_suite_with(undecided).await;
    let id = rossis_claim(&suite).await;
    let request = to_account(&id, NEW_IBAN, ROSSI);
    // Through the gateway and straight at claims-svc: claims-svc itself asks the level, and
    // says which.
    for channel in [suite.gateway_channel().await, connect(suite.claims.addr).await] {
        let ordinary = suite.citizen_token(ROSSI, Level::Ordinary);
        let refused =
            update_payment(channel, &ordinary, request.clone()).await.expect_err("ordinary PIN");
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(refused.message().contains("DISPOSITIVE"), "{}", refused.message());
        let info = refused.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "LEVEL_TOO_LOW");
        assert_eq!(info.metadata.get("required_level").map(String::as_str), Some("DISPOSITIVE"));
    }
    let simplified = suite.citizen_token(ROSSI, Level::Simplified);
    let direct = update_payment(connect(suite.claims.addr).await, &simplified, request.clone())
        .await
        .expect_err("simplified PIN");
    assert_eq!(
        (direct.code(), reason(&direct).as_str()),
        (Code::PermissionDenied, "LEVEL_TOO_LOW")
    );
    // The gateway keeps simplified PINs out before claims-svc is asked.
    let gated = update_payment(suite.gateway_channel().await, &simplified, request)
        .await
        .expect_err("simplified PIN");
    assert_eq!(gated.code(), Code::PermissionDenied);
    assert_payment_unchanged(&suite, &id).await;
}

#[tokio::test]
async fn nobody_moves_another_citizens_claim_to_another_account_not_even_calling_claims_svc_directly(
) {
    let suite = spawn_suite_with(undecided).await;
    let other = nth_cf(51);
    let id = rossis_claim(&suite).await;
    let theirs = suite.citizen_token(&other, Level::Dispositive);
    let office = suite.login_staff(PATRONATO_ID, PATRONATO_PASSWORD).await.access_token;
    let nobodys = uuid::Uuid::now_v7().to_string();
    for channel in [suite.gateway_channel().await, connect(suite.claims.addr).await] {
        // Their own account, well formed: the only answer is that there is no such claim, the
        // same as for a claim that does not exist.
        let refused = update_payment(channel.clone(), &theirs, to_account(&id, NEW_IBAN, &other))
            .await
            .expect_err("not theirs");
        assert_eq!(refused.code(), Code::NotFound);
        let missing =
            update_payment(channel.clone(), &theirs, to_account(&nobodys, NEW_IBAN, &other))
                .await
                .expect_err("no such claim");
        assert_eq!((missing.code(), missing.message()), (refused.code(), refused.message()));
        // Patronati and staff do not move a citizen's money.
        for staff in [&office, &suite.operator_token] {
            let denied = update_payment(channel.clone(), staff, to_account(&id, NEW_IBAN, ROSSI))
                .await
                .expect_err("not a citizen");
            assert_eq!(denied.code(), Code::PermissionDenied);
        }
    }
    assert_payment_unchanged(&suite, &id).await;
}

#[tokio::test]
async fn a_bad_iban_or_someone_elses_account_is_refused_by_field_and_the_payment_details_stay() {
    let suite = spawn_suite_with(undecided).await;
    let id = rossis_claim(&suite).await;
    let spid = suite.citizen_token(ROSSI, Level::Dispositive);
    let gateway = suite.gateway_channel().await;
    let refuse = |request: cl::UpdatePaymentDetailsRequest| {
        let (gateway, spid) = (gateway.clone(), spid.clone());
        async move {
            let refused = update_payment(gateway, &spid, request).await.expect_err("refused");
            assert_eq!(refused.code(), Code::InvalidArgument);
            violated_fields(&refused)
        }
    };
    let mistyped = to_account(&id, "DE89 3704 0044 0532 0130 01", ROSSI);
    assert_eq!(refuse(mistyped).await, ["payment.bank_transfer.iban"]);
    let outside_sepa = to_account(&id, "BR15 0000 0000 0000 1093 2840 814P 2", ROSSI);
    assert_eq!(refuse(outside_sepa).await, ["payment.bank_transfer.iban"]);
    let someone_elses = to_account(&id, NEW_IBAN, &nth_cf(52));
    assert_eq!(refuse(someone_elses).await, ["payment.bank_transfer.holder_fiscal_code"]);
    let no_holder = to_account(&id, NEW_IBAN, " ");
    assert_eq!(refuse(no_holder).await, ["payment.bank_transfer.holder_fiscal_code"]);
    let nothing = cl::UpdatePaymentDetailsRequest { claim_id: "not-a-claim".into(), payment: None };
    assert_eq!(refuse(nothing).await, ["claim_id", "payment.method"]);
    assert_payment_unchanged(&suite, &id).await;
}

#[tokio::test]
async fn payment_details_are_frozen_once_the_payment_is_ordered_and_on_a_withdrawn_claim() {
    // No bank check configured: cash claims are approved, accounts wait for the back office.
    let suite = spawn_suite().await;
    let (paid, withdrawn) = (nth_cf(53), nth_cf(54));
    let rows = [professional_row(&paid), professional_row(&withdrawn)];
    suite.import_registry(&registry(rows)).await.expect("registry");
    let gateway = suite.gateway_channel().await;
    let paid_token = suite.citizen_token(&paid, Level::Dispositive);
    let by_cash = submit(gateway.clone(), &paid_token, cash(claim_form("AGRICOLI", &paid, "k")))
        .await
        .expect("filed")
        .claim_id;
    wait_for_claim_status(&suite, &paid_token, &by_cash, cl::ClaimStatus::Approved).await;
    let withdrawn_token = suite.citizen_token(&withdrawn, Level::Dispositive);
    let to_withdraw =
        submit(gateway.clone(), &withdrawn_token, claim_form("AGRICOLI", &withdrawn, "k"))
            .await
            .expect("filed")
            .claim_id;
    let withdraw = cl::WithdrawClaimRequest { claim_id: to_withdraw.clone() };
    claims(gateway.clone())
        .withdraw_claim(with_token(&withdrawn_token, withdraw))
        .await
        .expect("withdrawn");

    let (mut bo, bo_token) = backoffice(&suite).await;
    let batch = bo
        .create_payment_batch(with_token(&bo_token, cl::CreatePaymentBatchRequest::default()))
        .await
        .expect("ordered")
        .into_inner();
    assert_eq!(batch.cash.len(), 1);
    let move_paid =
        || update_payment(gateway.clone(), &paid_token, to_account(&by_cash, NEW_IBAN, &paid));
    let refused = move_paid().await.expect_err("payment ordered");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "PAYMENT_ALREADY_ORDERED")
    );
    let confirm = cl::ConfirmPaymentBatchRequest { batch_id: batch.batch_id };
    bo.confirm_payment_batch(with_token(&bo_token, confirm)).await.expect("paid");
    let refused = move_paid().await.expect_err("paid");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "PAYMENT_ALREADY_ORDERED")
    );
    let refused = update_payment(
        gateway.clone(),
        &withdrawn_token,
        to_account(&to_withdraw, NEW_IBAN, &withdrawn),
    )
    .await
    .expect_err("withdrawn");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "CLAIM_CLOSED")
    );
    let paid_claim = get_claim(gateway, &paid_token, &by_cash).await.expect("claim");
    assert!(paid_claim.post_office_cash, "still paid as it was");
    assert_eq!(payment_changes(&suite).await, (0, 0));
}

#[tokio::test]
async fn the_back_office_cannot_approve_a_claim_the_automatic_checks_have_not_seen() {
    let suite = spawn_suite_with(undecided).await;
    let cf = nth_cf(41);
    suite.import_registry(&registry([professional_row(&cf)])).await.expect("registry");
    let token = suite.citizen_token(&cf, Level::Simplified);
    let filed = submit(suite.gateway_channel().await, &token, claim_form("AGRICOLI", &cf, "k"))
        .await
        .expect("filed");
    let (mut bo, staff) = backoffice(&suite).await;
    let decide = |decision: cl::Decision, reason: &str| cl::DecideClaimRequest {
        claim_id: filed.claim_id.clone(),
        decision: decision as i32,
        reason: reason.into(),
        ..Default::default()
    };
    let refused = bo
        .decide_claim(with_token(&staff, decide(cl::Decision::Approve, "")))
        .await
        .expect_err("not reviewed");
    assert_eq!(reason(&refused), "NOT_IN_REVIEW");
    let rejected = bo
        .decide_claim(with_token(&staff, decide(cl::Decision::Reject, "DUPLICATE_FILING")))
        .await
        .expect("a rejection needs no review");
    assert_eq!(
        rejected.into_inner().claim.expect("claim").status,
        cl::ClaimStatus::Rejected as i32
    );
}

/// A cash claim of citizen `cf`, approved (cash needs no bank check).
async fn approved_cash_claim(suite: &Suite, cf: &str) -> (String, String) {
    suite.import_registry(&registry([professional_row(cf)])).await.expect("registry");
    let token = suite.citizen_token(cf, Level::Simplified);
    let form = cash(claim_form("AGRICOLI", cf, "k"));
    let receipt = submit(suite.gateway_channel().await, &token, form).await.expect("filed");
    wait_for_claim_status(suite, &token, &receipt.claim_id, cl::ClaimStatus::Approved).await;
    (token, receipt.claim_id)
}

fn cancel_batch(batch_id: &str, reason: &str) -> cl::CancelPaymentBatchRequest {
    cl::CancelPaymentBatchRequest { batch_id: batch_id.into(), reason: reason.into() }
}

#[tokio::test]
async fn a_cancelled_batch_returns_its_claims_to_approved_and_they_can_be_batched_again() {
    let suite = spawn_suite().await;
    let cf = nth_cf(31);
    let (citizen, claim_id) = approved_cash_claim(&suite, &cf).await;
    let (mut bo, token) = backoffice(&suite).await;
    let order = || with_token(&token, cl::CreatePaymentBatchRequest::default());
    let first = bo.create_payment_batch(order()).await.expect("ordered").into_inner();
    assert_eq!(
        status_of(&suite, &citizen, &claim_id).await,
        cl::ClaimStatus::PaymentOrdered as i32
    );

    let unexplained =
        bo.cancel_payment_batch(with_token(&token, cancel_batch(&first.batch_id, " ")));
    assert_eq!(violated_fields(&unexplained.await.expect_err("no reason")), ["reason"]);
    let long = "x".repeat(501);
    let rambling =
        bo.cancel_payment_batch(with_token(&token, cancel_batch(&first.batch_id, &long)));
    assert_eq!(violated_fields(&rambling.await.expect_err("too long")), ["reason"]);
    let unknown = bo.cancel_payment_batch(with_token(&token, cancel_batch("no-such-batch", "x")));
    assert_eq!(unknown.await.expect_err("unknown").code(), Code::NotFound);
    // An operator or the citizen may not take a batch back.
    let by_operator =
        bo.cancel_payment_batch(suite.as_operator(cancel_batch(&first.batch_id, "x")));
    assert_eq!(by_operator.await.expect_err("an operator").code(), Code::PermissionDenied);

    let why = "the bank refused the file";
    let cancel = || with_token(&token, cancel_batch(&first.batch_id, why));
    let cancelled = bo.cancel_payment_batch(cancel()).await.expect("taken back").into_inner();
    assert_eq!(cancelled.claims_returned, 1);
    assert_eq!(status_of(&suite, &citizen, &claim_id).await, cl::ClaimStatus::Approved as i32);
    let again = bo.cancel_payment_batch(cancel()).await.expect_err("once");
    assert_eq!(reason(&again), "BATCH_CANCELLED");
    let confirm =
        |id: &str| with_token(&token, cl::ConfirmPaymentBatchRequest { batch_id: id.into() });
    let paid_anyway = bo.confirm_payment_batch(confirm(&first.batch_id)).await;
    assert_eq!(reason(&paid_anyway.expect_err("taken back")), "BATCH_CANCELLED");
    let filter = format!(
        "action = 'CancelPaymentBatch' AND operator_id = '{BACKOFFICE_ID}' \
         AND detail LIKE '%{why}%'"
    );
    assert_eq!(
        suite.db.count("claims", "audit_events", &filter).await,
        1,
        "audited with the reason"
    );

    // The next batch takes the claim again, and once confirmed it stays paid.
    let second = bo.create_payment_batch(order()).await.expect("ordered again").into_inner();
    assert_ne!(second.batch_id, first.batch_id);
    assert_eq!(
        second.cash.iter().map(|c| c.claim_id.as_str()).collect::<Vec<_>>(),
        [claim_id.as_str()]
    );
    let paid = bo.confirm_payment_batch(confirm(&second.batch_id)).await.expect("confirmed");
    assert_eq!(paid.into_inner().claims_paid, 1);
    let too_late = bo.cancel_payment_batch(with_token(&token, cancel_batch(&second.batch_id, why)));
    assert_eq!(reason(&too_late.await.expect_err("confirmed")), "BATCH_CONFIRMED");
    assert_eq!(status_of(&suite, &citizen, &claim_id).await, cl::ClaimStatus::Paid as i32);
}

#[tokio::test]
async fn the_decider_never_asks_the_bank_about_a_withdrawn_claim() {
    let (withdrawn, marker) = (nth_cf(41), nth_cf(42));
    // The bank check is down for the first citizen: an answer it cannot read, late enough for
    // the claim to be withdrawn while the question is out. The second citizen's account checks.
    let slow = withdrawn.clone();
    let (provider, asked) = fake_authority(move |q| match q["fiscal_code"].as_str() {
        Some(cf) if cf == slow => ("BROKEN", Duration::from_millis(1_500)),
        _ => ("MATCH", Duration::ZERO),
    })
    .await;
    let suite = spawn_suite_with(|c| c.claims.account_verification_url = provider).await;
    let rows = [&withdrawn, &marker].map(|cf| professional_row(cf));
    suite.import_registry(&registry(rows)).await.expect("registry");
    let gateway = suite.gateway_channel().await;
    let questions_about =
        |cf: &str| asked.lock().expect("lock").iter().filter(|q| q["fiscal_code"] == cf).count();

    let token = suite.citizen_token(&withdrawn, Level::Simplified);
    let filed = submit(gateway.clone(), &token, claim_form("AGRICOLI", &withdrawn, "k"))
        .await
        .expect("filed");
    eventually("the bank asked", Duration::from_secs(10), || async {
        questions_about(&withdrawn) == 1
    })
    .await;
    let withdraw = cl::WithdrawClaimRequest { claim_id: filed.claim_id.clone() };
    claims(gateway.clone()).withdraw_claim(with_token(&token, withdraw)).await.expect("withdrawn");

    // The decider takes one batch at a time: once a later claim is decided, the batch that
    // asked about the withdrawn one is over, its failed answer handled.
    let marker_token = suite.citizen_token(&marker, Level::Simplified);
    let later =
        submit(gateway, &marker_token, claim_form("AGRICOLI", &marker, "k")).await.expect("filed");
    wait_for_claim_status(&suite, &marker_token, &later.claim_id, cl::ClaimStatus::Approved).await;
    let waiting = format!("id = '{}' AND decide_at IS NOT NULL", filed.claim_id);
    assert_eq!(suite.db.count("claims", "claims", &waiting).await, 0, "no further attempt due");
    let store = claims_store(&suite).await;
    assert!(store.claim_undecided(100, 0).await.expect("lease").is_empty(), "nothing to decide");
    assert_eq!(questions_about(&withdrawn), 1, "asked once, before the withdrawal");
    assert_eq!(status_of(&suite, &token, &filed.claim_id).await, cl::ClaimStatus::Withdrawn as i32);
}

#[tokio::test]
async fn execution_dates_outside_the_next_thirty_business_days_are_refused() {
    use chrono::Datelike;
    use claims_svc::domain::sepa::{is_business_day, next_business_day};
    let suite = spawn_suite().await;
    approved_cash_claim(&suite, &nth_cf(51)).await;
    let (mut bo, token) = backoffice(&suite).await;
    let today = chrono::Utc::now().date_naive();
    let at = |day: chrono::NaiveDate| {
        let seconds = day.and_hms_opt(12, 0, 0).expect("noon").and_utc().timestamp();
        prost_types::Timestamp { seconds, nanos: 0 }
    };
    let days = |n: u64| today + chrono::Days::new(n);
    let weekend =
        (1..=7).map(days).find(|d| d.weekday().number_from_monday() >= 6).expect("a Saturday");
    let refused = [
        ("yesterday", at(today - chrono::Days::new(1))),
        ("today + 31", at(days(31))),
        ("a weekend day", at(weekend)),
        ("year 10000", prost_types::Timestamp { seconds: 253_402_300_800, nanos: 0 }),
        ("seconds = 2^63-1", prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }),
        ("negative nanos", prost_types::Timestamp { seconds: at(days(1)).seconds, nanos: -1 }),
    ];
    for (what, date) in refused {
        let order = cl::CreatePaymentBatchRequest { max_claims: 0, execution_date: Some(date) };
        let status = bo.create_payment_batch(with_token(&token, order)).await.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}");
        assert_eq!(violated_fields(&status), ["execution_date"], "{what}");
    }
    assert_eq!(suite.db.count("claims", "payment_batches", "1 = 1").await, 0, "nothing ordered");

    let last = (0..=30).rev().map(days).find(|d| is_business_day(*d)).expect("a business day");
    for day in [next_business_day(today), last] {
        let order = cl::CreatePaymentBatchRequest { max_claims: 0, execution_date: Some(at(day)) };
        let batch = bo.create_payment_batch(with_token(&token, order)).await.expect("accepted");
        let batch_id = batch.into_inner().batch_id;
        let filter = format!("id = '{batch_id}' AND execution_date = '{day}'");
        assert_eq!(suite.db.count("claims", "payment_batches", &filter).await, 1, "{day}");
        // Taken back, so the same claim can be ordered on the next date.
        let cancel = cancel_batch(&batch_id, "trying the dates");
        bo.cancel_payment_batch(with_token(&token, cancel)).await.expect("taken back");
    }
}
