//! The `sportello.claims.v1` handlers: who the caller is and what they may see, then the store.
//! Ownership is enforced here, whatever the gateway did: a citizen reaches only their own
//! claims (NOT_FOUND for anyone else's), a patronato those it filed for citizens whose mandate
//! it still holds; staff reads are audited.

use crate::catalogue::Catalogue;
use crate::domain::claim::{ClaimForm, Filing, PaymentMethod, Status};
use crate::domain::csv_stream::{self, CsvStream, Item, Unreadable};
use crate::domain::eligibility::BenefitCode;
use crate::domain::iban::Iban;
use crate::domain::registry::{Layout, Registered};
use crate::domain::sepa;
use crate::domain::Benefit;
use crate::error::ClaimsError;
use crate::register::Register;
use crate::store::{
    BatchAnswer, BatchState, BenefitChange, ClaimRecord, ClaimsOf, Debtor, Decided, Filer,
    MandateRecord, PaymentChange, Store, Submission, Submitted, Written,
};
use sportello_domain::codice_fiscale::CodiceFiscale;
use sportello_domain::text::truncated;
use sportello_platform::audit::Entry;
use sportello_platform::auth::{principal, Claims as Principal, Level, Revoked, Role};
use sportello_platform::changes::{live, Session};
use sportello_platform::error::FieldViolations;
use sportello_platform::mask;
use sportello_proto::claims::v1 as wire;
use sportello_proto::claims::v1::claims_back_office_service_server::ClaimsBackOfficeService;
use sportello_proto::claims::v1::claims_service_server::ClaimsService;
use sportello_proto::identity::v1 as id;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

type Answer<T> = Result<Response<T>, GrpcStatus>;

/// Claims per page unless asked otherwise, and at most.
const PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;
/// Rows of the registry written per transaction, and errors reported in full.
const IMPORT_BATCH: usize = 5_000;
const MAX_REPORTED: usize = 1_000;

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn millis(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000)
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

fn wire_level(level: Level) -> id::CredentialLevel {
    match level {
        Level::Simplified => id::CredentialLevel::Simplified,
        Level::Ordinary => id::CredentialLevel::Ordinary,
        Level::Dispositive => id::CredentialLevel::Dispositive,
    }
}

impl From<Benefit> for wire::Benefit {
    fn from(b: Benefit) -> Self {
        wire::Benefit {
            code: b.code.as_str().to_owned(),
            remaining_cents: b.remaining_cents(),
            title: b.title,
            legal_basis: b.legal_basis,
            amount_cents: b.amount_cents,
            ceiling_cents: b.ceiling_cents,
            simplified_pin_allowed: b.min_level == Level::Simplified,
            opens_at: Some(timestamp(b.opens_at)),
            conditions: b.conditions,
            incompatibility_group: b.group.as_str().to_owned(),
            min_level: wire_level(b.min_level) as i32,
            increased_amount_cents: b.increased_amount_cents,
            increased_amount_condition: b.increased_amount_condition,
        }
    }
}

fn receipt(r: &ClaimRecord) -> wire::ClaimReceipt {
    wire::ClaimReceipt {
        claim_id: r.id.clone(),
        protocol_number: r.protocol_number.clone(),
        benefit_code: r.benefit_code.clone(),
        amount_cents: r.amount_cents,
        submitted_at: Some(timestamp(r.submitted_at)),
    }
}

pub(crate) fn wire_claim(r: &ClaimRecord) -> wire::Claim {
    let role = match r.filer_role.as_str() {
        "PATRONATO" => id::PrincipalRole::Patronato,
        _ => id::PrincipalRole::Citizen,
    };
    wire::Claim {
        receipt: Some(receipt(r)),
        fiscal_code: r.fiscal_code.clone(),
        status: r.status.wire() as i32,
        reasons: r.reasons.clone(),
        iban_masked: r
            .iban
            .as_deref()
            .and_then(|i| Iban::parse(i).ok())
            .map(|i| i.masked())
            .unwrap_or_default(),
        post_office_cash: r.iban.is_none(),
        filed_by: Some(wire::Filer { role: role as i32, id: r.filer_id.clone() }),
        updated_at: Some(timestamp(r.updated_at)),
        child_fiscal_code_masked: r
            .child_fiscal_code
            .as_deref()
            .map(mask::fiscal_code)
            .unwrap_or_default(),
        redeemed_at: r.redeemed_at.map(timestamp),
    }
}

fn wire_mandate(m: MandateRecord) -> wire::Mandate {
    wire::Mandate {
        mandate_id: m.id,
        patronato_id: m.patronato_id,
        fiscal_code: m.fiscal_code,
        signed_form_reference: m.signed_form_reference,
        registered_at: Some(timestamp(m.registered_at)),
        revoked_at: m.revoked_at.map(timestamp),
    }
}

fn is_staff(p: &Principal) -> bool {
    matches!(p.role, Role::Operator | Role::Backoffice)
}

fn require(p: &Principal, roles: &[Role], why: &'static str) -> Result<(), ClaimsError> {
    if roles.contains(&p.role) {
        Ok(())
    } else {
        Err(ClaimsError::PermissionDenied(why))
    }
}

/// A claim id as clients send it: anything that is not a UUID names no claim.
fn claim_id(field: &str, text: &str) -> Result<String, FieldViolations> {
    let mut v = FieldViolations::new();
    match uuid::Uuid::parse_str(text.trim()) {
        Ok(id) => Ok(id.to_string()),
        Err(_) => {
            v.add(field, "must be a claim id (a UUID)");
            Err(v)
        }
    }
}

fn page_size(requested: i32) -> i64 {
    match i64::from(requested) {
        n if n <= 0 => PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn page_token(field: &str, token: &str) -> Result<Option<(i64, String)>, FieldViolations> {
    if token.is_empty() {
        return Ok(None);
    }
    let parsed = token.split_once('.').and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())));
    parsed.map(Some).ok_or_else(|| {
        let mut v = FieldViolations::new();
        v.add(field, "not a page token of this listing");
        v
    })
}

fn next_token(page: &[ClaimRecord], limit: i64) -> String {
    match page.last() {
        Some(last) if page.len() as i64 == limit => format!("{}.{}", last.submitted_at, last.id),
        _ => String::new(),
    }
}

fn fiscal_code_field(field: &str, text: &str) -> Result<String, FieldViolations> {
    CodiceFiscale::parse(text, today()).map(|cf| cf.canonical()).map_err(|e| {
        let mut v = FieldViolations::new();
        v.add(field, e.to_string());
        v
    })
}

/// Both claims services: the catalogue in memory, the store, and the background work to wake
/// when a claim commits (its receipt's relay, its automatic decision).
#[derive(Clone, Debug)]
pub struct Claims {
    catalogue: Catalogue,
    store: Store,
    debtor: Debtor,
    register: Register,
    relay: Arc<Notify>,
    decider: Arc<Notify>,
    /// Sessions ended: a live stream ends with its session.
    revoked: Revoked,
}

impl Claims {
    pub fn new(
        catalogue: Catalogue,
        store: Store,
        debtor: Debtor,
        register: Register,
        (relay, decider): (Arc<Notify>, Arc<Notify>),
    ) -> Self {
        Self { catalogue, store, debtor, register, relay, decider, revoked: Revoked::default() }
    }

    /// Ends live streams when their session is in `revoked` (the verifier's list).
    pub fn ending_streams_with(mut self, revoked: Revoked) -> Self {
        self.revoked = revoked;
        self
    }

    fn wake(&self) {
        self.relay.notify_waiters();
        self.decider.notify_waiters();
    }

    /// The claim `id` if `p` may see it; staff reads are audited. NOT_FOUND otherwise, so that
    /// nobody learns whether someone else's claim exists.
    async fn visible_claim(
        &self,
        p: &Principal,
        id: &str,
        action: &str,
    ) -> Result<ClaimRecord, ClaimsError> {
        let found = self.store.claim(id).await?;
        let visible = match (&found, p.role) {
            (Some(c), Role::Citizen) => c.fiscal_code == p.sub,
            // Only while the mandate it was filed under lasts: a revoked one ends the office's
            // view too, and a mandate registered again later does not bring it back.
            (Some(c), Role::Patronato) => {
                c.filer_role == "PATRONATO"
                    && c.filer_id == p.sub
                    && self.store.holds_mandate(&p.sub, &c.fiscal_code, c.submitted_at).await?
            }
            (Some(_), Role::Operator | Role::Backoffice) => true,
            _ => false,
        };
        let claim = found.filter(|_| visible).ok_or(ClaimsError::NotFound("claim"))?;
        if is_staff(p) {
            self.audit_read(p, action, &claim.fiscal_code, &claim.protocol_number).await?;
        }
        Ok(claim)
    }

    async fn audit_read(
        &self,
        p: &Principal,
        action: &str,
        cf: &str,
        detail: &str,
    ) -> Result<(), ClaimsError> {
        let entry = Entry { operator_id: &p.sub, action, fiscal_code: cf, outcome: "OK", detail };
        Ok(self.store.audit(&entry, p.role).await?)
    }

    async fn submit(
        &self,
        p: Principal,
        req: wire::SubmitClaimRequest,
        deadline: Option<std::time::Duration>,
    ) -> Result<wire::ClaimReceipt, ClaimsError> {
        let (filing, filer) = match p.role {
            Role::Citizen => (Filing::Citizen(&p.sub), Filer::Citizen(p.sub.clone())),
            Role::Patronato => (Filing::Patronato, Filer::Patronato(p.sub.clone())),
            _ => {
                return Err(ClaimsError::PermissionDenied(
                    "claims are filed by citizens and patronati",
                ))
            }
        };
        let form = ClaimForm::parse(&req, filing, today())?;
        // A form that is wrong is told so whatever the load; a right one waits for the writer
        // only while the wait is short.
        let ticket = self.store.admit(deadline).ok_or(ClaimsError::Overloaded)?;
        let submission = Submission { form, filer, level: p.level, traceparent: None };
        let submitted = self.store.submit_admitted(submission, Some(ticket)).await?;
        match submitted {
            Submitted::Accepted(record) => {
                self.wake();
                Ok(receipt(&record))
            }
            Submitted::Existing(record) => Ok(receipt(&record)),
            Submitted::Refused(refusal) => Err(refusal.into()),
        }
    }
}

#[tonic::async_trait]
impl ClaimsService for Claims {
    type WatchMyClaimsStream =
        futures::stream::BoxStream<'static, Result<wire::WatchMyClaimsResponse, GrpcStatus>>;

    async fn watch_my_claims(
        &self,
        request: Request<wire::WatchMyClaimsRequest>,
    ) -> Answer<Self::WatchMyClaimsStream> {
        let p = principal(&request)?;
        require(&p, &[Role::Citizen], "a citizen watches their own claims")?;
        let session = Session::of(&p, &self.revoked, request.metadata());
        // Subscribed before the first read: a change committed in between is read again.
        let watching = self.store.changes().watch(&p.sub)?;
        let mine = crate::watch::MyClaims::new(self.store.clone(), p.sub);
        Ok(Response::new(live(session, watching, mine)))
    }

    async fn list_benefits(
        &self,
        _request: Request<wire::ListBenefitsRequest>,
    ) -> Answer<wire::ListBenefitsResponse> {
        Ok(Response::new(wire::ListBenefitsResponse::clone(&self.catalogue.current())))
    }

    async fn get_benefit(
        &self,
        request: Request<wire::GetBenefitRequest>,
    ) -> Answer<wire::GetBenefitResponse> {
        let code = request.into_inner().code;
        let catalogue = self.catalogue.current();
        let benefit = catalogue.benefits.iter().find(|b| b.code == code.trim()).cloned();
        let benefit = benefit.ok_or(ClaimsError::NotFound("benefit"))?;
        Ok(Response::new(wire::GetBenefitResponse { benefit: Some(benefit) }))
    }

    async fn submit_claim(
        &self,
        request: Request<wire::SubmitClaimRequest>,
    ) -> Answer<wire::SubmitClaimResponse> {
        let p = principal(&request)?;
        let deadline = sportello_platform::admission::deadline_of(&request);
        let receipt = self.submit(p, request.into_inner(), deadline).await?;
        Ok(Response::new(wire::SubmitClaimResponse { receipt: Some(receipt) }))
    }

    async fn get_claim(
        &self,
        request: Request<wire::GetClaimRequest>,
    ) -> Answer<wire::GetClaimResponse> {
        let p = principal(&request)?;
        let id = claim_id("claim_id", &request.get_ref().claim_id).map_err(ClaimsError::from)?;
        let claim = self.visible_claim(&p, &id, "GetClaim").await?;
        Ok(Response::new(wire::GetClaimResponse { claim: Some(wire_claim(&claim)) }))
    }

    async fn list_claims(
        &self,
        request: Request<wire::ListClaimsRequest>,
    ) -> Answer<wire::ListClaimsResponse> {
        let p = principal(&request)?;
        let req = request.into_inner();
        let before = page_token("page_token", &req.page_token).map_err(ClaimsError::from)?;
        let limit = page_size(req.page_size);
        let (of, who) = match p.role {
            Role::Citizen => (ClaimsOf::Citizen, p.sub.clone()),
            Role::Patronato => (ClaimsOf::Filer, p.sub.clone()),
            Role::Operator | Role::Backoffice => {
                let cf = fiscal_code_field("fiscal_code", &req.fiscal_code)
                    .map_err(ClaimsError::from)?;
                self.audit_read(&p, "ListClaims", &cf, "").await?;
                (ClaimsOf::Citizen, cf)
            }
            Role::Service => return Err(ClaimsError::PermissionDenied("not for services").into()),
        };
        let page =
            self.store.claims_where(of, &who, before, limit).await.map_err(ClaimsError::from)?;
        Ok(Response::new(wire::ListClaimsResponse {
            next_page_token: next_token(&page, limit),
            claims: page.iter().map(wire_claim).collect(),
        }))
    }

    async fn withdraw_claim(
        &self,
        request: Request<wire::WithdrawClaimRequest>,
    ) -> Answer<wire::WithdrawClaimResponse> {
        let p = principal(&request)?;
        require(&p, &[Role::Citizen], "only the citizen withdraws their claim")?;
        let id = claim_id("claim_id", &request.get_ref().claim_id).map_err(ClaimsError::from)?;
        let claim = self.visible_claim(&p, &id, "WithdrawClaim").await?;
        let withdrawn = Decided {
            to: Status::Withdrawn,
            reasons: vec![],
            by: None,
            note: String::new(),
            traceparent: None,
        };
        let undecided = &[Status::Submitted, Status::InReview];
        let done =
            self.store.decide(&claim.id, undecided, withdrawn).await.map_err(ClaimsError::from)?;
        let done = done.ok_or(ClaimsError::Precondition {
            reason: "ALREADY_DECIDED",
            message: "the claim has been decided: it can no longer be withdrawn".into(),
        })?;
        Ok(Response::new(wire::WithdrawClaimResponse { claim: Some(wire_claim(&done)) }))
    }

    async fn redeem_baby_sitting_bonus(
        &self,
        request: Request<wire::RedeemBabySittingBonusRequest>,
    ) -> Answer<wire::RedeemBabySittingBonusResponse> {
        let p = principal(&request)?;
        require(&p, &[Role::Citizen], "only the citizen redeems their bonus")?;
        let id = claim_id("claim_id", &request.get_ref().claim_id).map_err(ClaimsError::from)?;
        let claim = self.visible_claim(&p, &id, "RedeemBabySittingBonus").await?;
        let refuse =
            |reason, message: &str| ClaimsError::Precondition { reason, message: message.into() };
        if claim.benefit_code != BenefitCode::BonusBabySitting.as_str() {
            return Err(refuse(
                "NOT_A_BABY_SITTING_BONUS",
                "only the baby-sitting bonus is redeemed",
            )
            .into());
        }
        if p.level < Level::Ordinary {
            let why = "registering on the Libretto Famiglia needs at least an ordinary PIN";
            return Err(refuse("LEVEL_TOO_LOW", why).into());
        }
        let redeemed = match claim.redeemed_at {
            Some(_) => Some(claim),
            None => self.store.redeem(&id, &p.sub).await.map_err(ClaimsError::from)?,
        };
        let redeemed =
            redeemed.ok_or_else(|| refuse("NOT_APPROVED", "the bonus is not approved (yet)"))?;
        Ok(Response::new(wire::RedeemBabySittingBonusResponse {
            claim: Some(wire_claim(&redeemed)),
        }))
    }

    async fn update_payment_details(
        &self,
        request: Request<wire::UpdatePaymentDetailsRequest>,
    ) -> Answer<wire::UpdatePaymentDetailsResponse> {
        let p = principal(&request)?;
        require(&p, &[Role::Citizen], "only the citizen changes how their claim is paid")?;
        // Where the money goes is a dispositive act: asked before the claim is even looked at.
        if p.level < Level::Dispositive {
            let action = "changing how a claim is paid";
            return Err(ClaimsError::LevelTooLow { action, required: Level::Dispositive }.into());
        }
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let id = claim_id("claim_id", &req.claim_id).unwrap_or_else(|e| {
            e.iter().for_each(|(f, d)| v.add(f, d));
            String::new()
        });
        // Read and refused exactly as SubmitClaim reads it; the claim's applicant is the caller.
        let payment = PaymentMethod::parse(&mut v, req.payment.as_ref(), &p.sub, today());
        let payment = match payment {
            Some(payment) if v.is_empty() => payment,
            _ => return Err(ClaimsError::from(v).into()),
        };
        let changed =
            self.store.change_payment(&id, &p.sub, payment).await.map_err(ClaimsError::from)?;
        let claim = match changed {
            PaymentChange::Changed(claim) => {
                // The notice to relay, and the new account to check.
                self.wake();
                claim
            }
            PaymentChange::Unchanged(claim) => claim,
            PaymentChange::NotFound => return Err(ClaimsError::NotFound("claim").into()),
            PaymentChange::TooLate(status) => {
                let (reason, message) = match status {
                    Status::PaymentOrdered | Status::Paid => (
                        "PAYMENT_ALREADY_ORDERED",
                        "the claim's payment has been ordered: how it is paid can no longer change",
                    ),
                    _ => (
                        "CLAIM_CLOSED",
                        "the claim was rejected or withdrawn: there is no payment to change",
                    ),
                };
                return Err(ClaimsError::Precondition { reason, message: message.into() }.into());
            }
        };
        Ok(Response::new(wire::UpdatePaymentDetailsResponse { claim: Some(wire_claim(&claim)) }))
    }

    async fn register_mandate(
        &self,
        request: Request<wire::RegisterMandateRequest>,
    ) -> Answer<wire::RegisterMandateResponse> {
        let p = principal(&request)?;
        require(&p, &[Role::Patronato], "mandates are registered by patronati")?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let cf = fiscal_code_field("fiscal_code", &req.fiscal_code).unwrap_or_else(|e| {
            e.iter().for_each(|(f, d)| v.add(f, d));
            String::new()
        });
        let form = req.signed_form_reference.trim();
        if form.is_empty() || form.len() > 100 {
            v.add(
                "signed_form_reference",
                "the reference of the signed form (1 to 100 characters)",
            );
        }
        v.into_result(()).map_err(ClaimsError::from)?;
        let m = self.store.register_mandate(&p.sub, &cf, form).await.map_err(ClaimsError::from)?;
        Ok(Response::new(wire::RegisterMandateResponse { mandate: Some(wire_mandate(m)) }))
    }

    async fn list_mandates(
        &self,
        request: Request<wire::ListMandatesRequest>,
    ) -> Answer<wire::ListMandatesResponse> {
        let p = principal(&request)?;
        require(
            &p,
            &[Role::Citizen, Role::Patronato],
            "mandates are the citizen's and the patronato's",
        )?;
        let mandates = self
            .store
            .mandates(&p.sub, p.role == Role::Citizen)
            .await
            .map_err(ClaimsError::from)?;
        Ok(Response::new(wire::ListMandatesResponse {
            mandates: mandates.into_iter().map(wire_mandate).collect(),
        }))
    }

    async fn revoke_mandate(
        &self,
        request: Request<wire::RevokeMandateRequest>,
    ) -> Answer<wire::RevokeMandateResponse> {
        let p = principal(&request)?;
        require(&p, &[Role::Citizen], "only the citizen revokes their mandate")?;
        let id = request.into_inner().mandate_id;
        let m = self.store.revoke_mandate(id.trim(), &p.sub).await.map_err(ClaimsError::from)?;
        let m = m.ok_or(ClaimsError::NotFound("mandate"))?;
        Ok(Response::new(wire::RevokeMandateResponse { mandate: Some(wire_mandate(m)) }))
    }
}

/// Adds a written batch of the registry to the import's reply.
fn tally(
    reply: &mut wire::ImportRegistryResponse,
    written: Result<Result<Written, sqlx::Error>, tokio::task::JoinError>,
) -> Result<(), GrpcStatus> {
    let written = written.map_err(|e| GrpcStatus::internal(e.to_string()))?;
    let written = written.map_err(ClaimsError::from)?;
    reply.rows_changed += written.changed as i64;
    reply.rows_unchanged += written.unchanged as i64;
    Ok(())
}

fn backoffice<T>(request: &Request<T>) -> Result<Principal, GrpcStatus> {
    let p = principal(request)?;
    require(&p, &[Role::Backoffice], "for the back office")?;
    Ok(p)
}

/// The parsing side of a registry import: the file read as one CSV document across chunks,
/// rows read, problems found, positions to write.
#[derive(Debug, Default)]
struct ImportState {
    csv: CsvStream,
    layout: Option<Layout>,
    seen: HashMap<String, i64>,
    reply: wire::ImportRegistryResponse,
}

/// The longest description of a row error: a reply of 1,000 of them stays far below the
/// message limit whatever the file holds.
const MAX_DESCRIPTION: usize = 200;

impl ImportState {
    fn reject(&mut self, line: i64, problems: impl IntoIterator<Item = (String, String)>) {
        self.reply.rows_rejected += 1;
        self.error(line, problems);
    }

    fn error(&mut self, line: i64, problems: impl IntoIterator<Item = (String, String)>) {
        for (column, description) in problems {
            if self.reply.errors.len() < MAX_REPORTED {
                let description = truncated(&description, MAX_DESCRIPTION);
                self.reply.errors.push(wire::RowError { line, column, description });
            } else {
                self.reply.errors_not_listed += 1;
            }
        }
    }

    /// Reads the next chunk of the file (`None`: its end) into positions.
    fn read(&mut self, chunk: Option<&[u8]>) -> Vec<(String, Registered)> {
        let mut items = Vec::new();
        match chunk {
            Some(chunk) => self.csv.feed(chunk, &mut items),
            None => self.csv.finish(&mut items),
        }
        let today = today();
        let mut good = Vec::new();
        for item in items {
            let (line, cells) = match item {
                Item::Row { line, cells, .. } => (line, cells),
                Item::UnclosedQuote { line, lines } => {
                    self.reply.lines_unreadable += lines;
                    let why = format!(
                        "a quote opened on this line is never closed: lines {line} to {} could not be read",
                        line + lines - 1
                    );
                    self.error(line, [(String::new(), why)]);
                    continue;
                }
            };
            let record = match cells {
                Ok(cells) => csv::StringRecord::from(cells),
                Err(why) => {
                    let why = match why {
                        Unreadable::NotUtf8 => "is not UTF-8 text".to_owned(),
                        Unreadable::TooLong => {
                            format!("is longer than {} MiB", csv_stream::MAX_ROW_BYTES >> 20)
                        }
                    };
                    if self.layout.is_some() {
                        self.reply.rows_read += 1;
                    }
                    self.reject(line, [(String::new(), why)]);
                    continue;
                }
            };
            let Some(layout) = &self.layout else {
                match Layout::from_header(&record) {
                    Ok(layout) => self.layout = Some(layout),
                    Err(p) => self.reject(line, [(p.column.to_owned(), p.description)]),
                }
                continue;
            };
            if record.iter().all(|c| c.trim().is_empty()) {
                continue;
            }
            self.reply.rows_read += 1;
            match layout.parse(&record, today) {
                Ok((cf, registered)) => match self.seen.get(&cf) {
                    Some(first) => {
                        let why = format!("the same fiscal code is already on line {first}");
                        self.reject(line, [("fiscal_code".to_owned(), why)]);
                    }
                    None => {
                        self.seen.insert(cf.clone(), line);
                        good.push((cf, registered));
                    }
                },
                Err(problems) => self.reject(
                    line,
                    problems.into_iter().map(|p| (p.column.to_owned(), p.description)),
                ),
            }
        }
        good
    }
}

#[tonic::async_trait]
impl ClaimsBackOfficeService for Claims {
    async fn update_benefit(
        &self,
        request: Request<wire::UpdateBenefitRequest>,
    ) -> Answer<wire::UpdateBenefitResponse> {
        let p = backoffice(&request)?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let code = BenefitCode::parse(req.code.trim());
        if code.is_none() {
            v.add("code", "not a benefit of the catalogue");
        }
        if req.amount_cents.is_some_and(|a| !(1..=100_000_000).contains(&a)) {
            v.add("amount_cents", "between 1 cent and one million euro");
        }
        if req.ceiling_cents.is_some_and(|c| c < 0) {
            v.add("ceiling_cents", "0 (no ceiling of its own) or more");
        }
        if req.reason.trim().is_empty() {
            v.add("reason", "say why, for the audit trail");
        }
        if req.amount_cents.is_none() && req.ceiling_cents.is_none() && req.opens_at.is_none() {
            v.add("amount_cents", "change at least one of amount_cents, ceiling_cents, opens_at");
        }
        let code = v.into_result(code).map_err(ClaimsError::from)?.unwrap_or(BenefitCode::Agricoli);
        let change = BenefitChange {
            amount_cents: req.amount_cents,
            ceiling_cents: req.ceiling_cents,
            opens_at: req.opens_at.as_ref().map(millis),
        };
        let updated = self
            .store
            .update_benefit(code, change, &p.sub, req.reason.trim())
            .await
            .map_err(ClaimsError::from)?;
        let benefit = match updated {
            None => return Err(ClaimsError::NotFound("benefit").into()),
            Some(Err(reserved)) => {
                let mut v = FieldViolations::new();
                v.add("ceiling_cents", format!("{reserved} cents are already reserved against it"));
                return Err(ClaimsError::from(v).into());
            }
            Some(Ok(b)) => b,
        };
        if let Err(e) = self.catalogue.reload().await {
            tracing::warn!(error = %e, "catalogue reload after an update failed; it refreshes on its own");
        }
        Ok(Response::new(wire::UpdateBenefitResponse { benefit: Some(benefit.into()) }))
    }

    async fn import_registry(
        &self,
        request: Request<Streaming<wire::ImportRegistryRequest>>,
    ) -> Answer<wire::ImportRegistryResponse> {
        let p = backoffice(&request)?;
        let mut stream = request.into_inner();
        let mut state = ImportState::default();
        let mut pending: Vec<(String, Registered)> = Vec::new();
        let mut writing: Option<tokio::task::JoinHandle<Result<Written, sqlx::Error>>> = None;
        let mut finished = false;
        while !finished {
            let chunk = stream.message().await?.map(|m| m.chunk);
            finished = chunk.is_none();
            // Parsing is CPU work: off the runtime's threads.
            let (moved, good) = tokio::task::spawn_blocking(move || {
                let good = state.read(chunk.as_deref());
                (state, good)
            })
            .await
            .map_err(|e| GrpcStatus::internal(e.to_string()))?;
            state = moved;
            pending.extend(good);
            while pending.len() >= IMPORT_BATCH || (finished && !pending.is_empty()) {
                let rest = pending.split_off(pending.len().min(IMPORT_BATCH));
                let batch = std::mem::replace(&mut pending, rest);
                // One batch is written while the next is parsed.
                if let Some(previous) = writing.take() {
                    tally(&mut state.reply, previous.await)?;
                }
                let (store, by) = (self.store.clone(), p.sub.clone());
                writing = Some(tokio::spawn(async move { store.put_positions(batch, &by).await }));
            }
        }
        if let Some(last) = writing.take() {
            tally(&mut state.reply, last.await)?;
        }
        // Each written batch carries its own audit row, in its own transaction.
        let r = &state.reply;
        tracing::info!(by = %p.sub, read = r.rows_read, changed = r.rows_changed, rejected = r.rows_rejected, "insured-positions registry imported");
        Ok(Response::new(state.reply))
    }

    async fn list_review_queue(
        &self,
        request: Request<wire::ListReviewQueueRequest>,
    ) -> Answer<wire::ListReviewQueueResponse> {
        let p = backoffice(&request)?;
        let req = request.into_inner();
        let before = page_token("page_token", &req.page_token).map_err(ClaimsError::from)?;
        let limit = page_size(req.page_size);
        let page = self
            .store
            .claims_where(ClaimsOf::Status, Status::InReview.as_str(), before, limit)
            .await
            .map_err(ClaimsError::from)?;
        // The queue shows citizens' claims: each is on its citizen's trail, as a GetClaim is.
        let shown: Vec<Entry<'_>> = page
            .iter()
            .map(|c| Entry {
                operator_id: &p.sub,
                action: "ListReviewQueue",
                fiscal_code: &c.fiscal_code,
                outcome: "OK",
                detail: &c.protocol_number,
            })
            .collect();
        self.store.audit_all(&shown).await.map_err(ClaimsError::from)?;
        Ok(Response::new(wire::ListReviewQueueResponse {
            next_page_token: next_token(&page, limit),
            claims: page.iter().map(wire_claim).collect(),
        }))
    }

    async fn decide_claim(
        &self,
        request: Request<wire::DecideClaimRequest>,
    ) -> Answer<wire::DecideClaimResponse> {
        let p = backoffice(&request)?;
        let req = request.into_inner();
        let mut v = FieldViolations::new();
        let id = claim_id("claim_id", &req.claim_id).unwrap_or_else(|e| {
            e.iter().for_each(|(f, d)| v.add(f, d));
            String::new()
        });
        let reason = req.reason.trim().to_ascii_uppercase();
        let to = match wire::Decision::try_from(req.decision) {
            Ok(wire::Decision::Approve) => Some(Status::Approved),
            Ok(wire::Decision::Reject) => {
                if reason.is_empty() || !reason.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                {
                    v.add("reason", "a rejection needs its UPPER_SNAKE reason");
                }
                Some(Status::Rejected)
            }
            _ => {
                v.add("decision", "APPROVE or REJECT");
                None
            }
        };
        let to = v.into_result(to).map_err(ClaimsError::from)?.unwrap_or(Status::Approved);
        let reasons = if to == Status::Rejected { vec![reason] } else { vec![] };
        let decided = Decided {
            to,
            reasons,
            by: Some(p.sub.clone()),
            note: req.note.trim().to_owned(),
            traceparent: None,
        };
        // An approval stands on what the officer reviewed: a claim still SUBMITTED has not
        // been through the automatic checks yet (or its account changed since the review).
        let undecided: &[Status] = match to {
            Status::Approved => &[Status::InReview],
            _ => &[Status::Submitted, Status::InReview],
        };
        let done = self.store.decide(&id, undecided, decided).await.map_err(ClaimsError::from)?;
        let done = match done {
            Some(done) => done,
            None => match self.store.claim(&id).await.map_err(ClaimsError::from)? {
                None => return Err(ClaimsError::NotFound("claim").into()),
                Some(c) if c.status == Status::Submitted => {
                    return Err(ClaimsError::Precondition {
                        reason: "NOT_IN_REVIEW",
                        message: "the automatic checks have not run on this claim (again) yet"
                            .into(),
                    }
                    .into())
                }
                Some(_) => {
                    return Err(ClaimsError::Precondition {
                        reason: "ALREADY_DECIDED",
                        message: "the claim is not waiting for a decision".into(),
                    }
                    .into())
                }
            },
        };
        self.wake();
        Ok(Response::new(wire::DecideClaimResponse { claim: Some(wire_claim(&done)) }))
    }

    async fn create_payment_batch(
        &self,
        request: Request<wire::CreatePaymentBatchRequest>,
    ) -> Answer<wire::CreatePaymentBatchResponse> {
        let p = backoffice(&request)?;
        let req = request.into_inner();
        let max = match req.max_claims {
            n if n <= 0 => 10_000,
            n => i64::from(n).min(100_000),
        };
        let asked = req.execution_date.as_ref().map(|t| (t.seconds, t.nanos));
        let execution_date = sepa::execution_date(asked, today()).map_err(|why| {
            let mut v = FieldViolations::new();
            v.add("execution_date", why);
            ClaimsError::Invalid(v)
        })?;
        // Named before the batch is made; a claim approved in between is paid under its fiscal
        // code, which the bank's ownership check already tied to the account.
        let creditors = self.store.payable_by_transfer(max).await.map_err(ClaimsError::from)?;
        let names = self.register.names(&creditors).await?;
        let batch = self.store.create_payment_batch(
            &p.sub,
            max,
            execution_date,
            self.debtor.clone(),
            names,
        );
        let batch = batch.await.map_err(ClaimsError::from)?.ok_or(ClaimsError::Precondition {
            reason: "NOTHING_TO_PAY",
            message: "no approved claim is waiting for payment".into(),
        })?;
        Ok(Response::new(wire::CreatePaymentBatchResponse {
            batch_id: batch.id,
            transfers: batch.transfers.len() as i64,
            transfers_total_cents: batch.transfers.iter().map(|c| c.amount_cents).sum(),
            sepa_credit_transfer: batch.sepa_xml.unwrap_or_default().into_bytes(),
            cash: batch
                .cash
                .iter()
                .map(|c| wire::CashPayment {
                    claim_id: c.id.clone(),
                    protocol_number: c.protocol_number.clone(),
                    fiscal_code: c.fiscal_code.clone(),
                    amount_cents: c.amount_cents,
                })
                .collect(),
        }))
    }

    async fn confirm_payment_batch(
        &self,
        request: Request<wire::ConfirmPaymentBatchRequest>,
    ) -> Answer<wire::ConfirmPaymentBatchResponse> {
        let p = backoffice(&request)?;
        let id = request.into_inner().batch_id.trim().to_owned();
        let answer = self.store.confirm_payment_batch(&id, &p.sub).await;
        let paid = batch_answer(answer)?;
        self.wake();
        Ok(Response::new(wire::ConfirmPaymentBatchResponse { batch_id: id, claims_paid: paid }))
    }

    async fn cancel_payment_batch(
        &self,
        request: Request<wire::CancelPaymentBatchRequest>,
    ) -> Answer<wire::CancelPaymentBatchResponse> {
        let p = backoffice(&request)?;
        let req = request.into_inner();
        let (id, reason) = (req.batch_id.trim().to_owned(), req.reason.trim());
        let mut v = FieldViolations::new();
        if id.is_empty() {
            v.add("batch_id", "the id CreatePaymentBatch gave");
        }
        if reason.is_empty() {
            v.add("reason", "say why the batch is taken back");
        } else if reason.chars().count() > MAX_CANCEL_REASON {
            v.add("reason", format!("at most {MAX_CANCEL_REASON} characters"));
        }
        v.into_result(()).map_err(ClaimsError::Invalid)?;
        let answer = self.store.cancel_payment_batch(&id, &p.sub, reason).await;
        let returned = batch_answer(answer)?;
        Ok(Response::new(wire::CancelPaymentBatchResponse {
            batch_id: id,
            claims_returned: returned,
        }))
    }
}

/// The longest reason a cancelled payment batch keeps.
const MAX_CANCEL_REASON: usize = 500;

/// A batch step's answer as the RPC gives it: the claims it moved, or why not.
fn batch_answer(answer: Result<BatchAnswer, sqlx::Error>) -> Result<i64, ClaimsError> {
    match answer? {
        BatchAnswer::Done(claims) => Ok(claims),
        BatchAnswer::NotFound => Err(ClaimsError::NotFound("payment batch")),
        BatchAnswer::Refused(BatchState::Confirmed) => Err(ClaimsError::Precondition {
            reason: "BATCH_CONFIRMED",
            message: "the batch was confirmed paid: it can no longer be taken back".into(),
        }),
        BatchAnswer::Refused(_) => Err(ClaimsError::Precondition {
            reason: "BATCH_CANCELLED",
            message: "the batch was taken back: its claims wait for another batch".into(),
        }),
    }
}
