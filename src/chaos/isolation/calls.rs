//! One call of the isolation scenario per RPC: whose id or fiscal code it names (the caller's
//! own, someone else's, or one that names nothing), what the caller may get back, and which
//! audit row a staff call must leave.

use super::world::{bearer, claim, World};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::Rng as _;
use sportello_platform::auth::Role;
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient as ClaimsBackOffice;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient as Claims;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::contact_center_service_client::ContactCenterServiceClient as ContactCenter;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient as Identity;
use sportello_proto::identity::v1::pin_conversion_back_office_service_client::PinConversionBackOfficeServiceClient as ConversionBackOffice;
use sportello_proto::identity::v1::pin_conversion_service_client::PinConversionServiceClient as Conversions;
use sportello_proto::identity::v1::residents_service_client::ResidentsServiceClient as Residents;
use sportello_proto::notify::v1 as nt;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient as Notify;
use std::time::Duration;
use tonic::Code;

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Citizen(usize),
    Staff(Role),
}

impl Caller {
    pub fn role(self) -> Role {
        match self {
            Caller::Citizen(_) => Role::Citizen,
            Caller::Staff(role) => role,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Caller::Citizen(_) => "citizen",
            Caller::Staff(Role::Operator) => "operator",
            Caller::Staff(Role::Patronato) => "patronato",
            Caller::Staff(Role::Backoffice) => "backoffice",
            Caller::Staff(_) => "service",
        }
    }
}

/// What the caller may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Theirs to do: any answer but a failure of the system.
    Allowed,
    /// Not theirs: refused with one of these codes, nothing answered.
    Refused(&'static [Code]),
}

/// Someone else's id or fiscal code: as absent as one that does not exist, or refused.
pub const NOT_YOURS: Expect = Expect::Refused(&[Code::NotFound, Code::PermissionDenied]);
pub const DENIED: Expect = Expect::Refused(&[Code::PermissionDenied]);

/// Whose fiscal codes an OK answer may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// What the caller may see: a citizen their own, the patronato its mandated citizens, staff
    /// anyone.
    Caller,
    /// That citizen's only (a staff listing of one citizen's data).
    Only(String),
    /// Anything (the patronato's own list of the mandates it registered).
    Any,
}

/// The audit row a staff call must leave: in `service`'s audit table, by the caller, `action`,
/// about `fiscal_code` (when known).
#[derive(Clone, Debug)]
pub struct Audit {
    pub service: &'static str,
    pub action: &'static str,
    pub fiscal_code: Option<String>,
    /// Audited whatever the outcome (the contact center's calls), not only when OK.
    pub always: bool,
}

pub struct Call {
    pub expect: Expect,
    pub scope: Scope,
    pub audits: Vec<Audit>,
    pub code: Code,
    /// The answer (OK) or the status message, as text the checks search for fiscal codes.
    pub answer: String,
}

fn answer<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    match result {
        Ok(reply) => (Code::Ok, format!("{:?}", reply.get_ref())),
        Err(status) => (status.code(), status.message().to_owned()),
    }
}

/// A server stream read to its end (at most `limit` messages).
async fn drained<T: std::fmt::Debug>(
    result: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    limit: usize,
) -> (Code, Vec<T>) {
    let mut stream = match result {
        Ok(reply) => reply.into_inner(),
        Err(status) => return (status.code(), Vec::new()),
    };
    let mut out = Vec::new();
    while out.len() < limit {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(m))) => out.push(m),
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(status)) => return (status.code(), out),
        }
    }
    (Code::Ok, out)
}

fn audit(service: &'static str, action: &'static str, cf: Option<&str>) -> Vec<Audit> {
    vec![Audit { service, action, fiscal_code: cf.map(str::to_owned), always: false }]
}

fn audit_always(action: &'static str, cf: Option<&str>) -> Vec<Audit> {
    vec![Audit { service: "identity", action, fiscal_code: cf.map(str::to_owned), always: true }]
}

/// The RPCs the scenario calls, each with someone's id or fiscal code (or, for listings,
/// none: what comes back is checked all the same).
pub const CALLED: &[&str] = &[
    "sportello.claims.v1.ClaimsService/SubmitClaim",
    "sportello.claims.v1.ClaimsService/GetClaim",
    "sportello.claims.v1.ClaimsService/ListClaims",
    "sportello.claims.v1.ClaimsService/WithdrawClaim",
    "sportello.claims.v1.ClaimsService/RedeemBabySittingBonus",
    "sportello.claims.v1.ClaimsService/UpdatePaymentDetails",
    "sportello.claims.v1.ClaimsService/RegisterMandate",
    "sportello.claims.v1.ClaimsService/ListMandates",
    "sportello.claims.v1.ClaimsService/RevokeMandate",
    "sportello.claims.v1.ClaimsBackOfficeService/ListReviewQueue",
    "sportello.claims.v1.ClaimsBackOfficeService/DecideClaim",
    "sportello.claims.v1.ClaimsBackOfficeService/ConfirmPaymentBatch",
    "sportello.claims.v1.ClaimsBackOfficeService/CancelPaymentBatch",
    "sportello.identity.v1.IdentityService/ChangePin",
    "sportello.identity.v1.IdentityService/GetPinRequestStatus",
    "sportello.identity.v1.IdentityService/GetProfile",
    "sportello.identity.v1.ContactCenterService/RequestPinForCaller",
    "sportello.identity.v1.ContactCenterService/LookupCredential",
    "sportello.identity.v1.ContactCenterService/ListUndeliveredPinRequests",
    "sportello.identity.v1.ContactCenterService/ResendFirstHalf",
    "sportello.identity.v1.ContactCenterService/UpdateContacts",
    "sportello.identity.v1.ContactCenterService/ValidatePendingPinRequest",
    "sportello.identity.v1.ContactCenterService/RevokePin",
    "sportello.identity.v1.ContactCenterService/UnlockPin",
    "sportello.identity.v1.ContactCenterService/ListAuditEvents",
    "sportello.identity.v1.ContactCenterService/RevokeConversion",
    "sportello.identity.v1.ResidentsService/BatchGetResidentNames",
    "sportello.identity.v1.PinConversionService/DownloadConversionForm",
    "sportello.identity.v1.PinConversionService/UploadConversionDocuments",
    "sportello.identity.v1.PinConversionService/GetPinConversion",
    "sportello.identity.v1.PinConversionService/WithdrawPinConversion",
    "sportello.identity.v1.PinConversionBackOfficeService/ListPendingConversions",
    "sportello.identity.v1.PinConversionBackOfficeService/DownloadConversionFile",
    "sportello.identity.v1.PinConversionBackOfficeService/ApproveConversion",
    "sportello.identity.v1.PinConversionBackOfficeService/RejectConversion",
    "sportello.notify.v1.NotifyService/EnqueueMessage",
    "sportello.notify.v1.NotifyService/BatchGetMessages",
    "sportello.notify.v1.NotifyService/ResendMessage",
    "sportello.notify.v1.NotifyService/ReportDelivery",
    "sportello.notify.v1.NotifyService/ListMyMessages",
    "sportello.notify.v1.NotifyService/GetMyMessage",
    "sportello.notify.v1.NotifyService/WatchMessage",
    "sportello.notify.v1.NotifyService/GetMessage",
    "sportello.notify.v1.NotifyService/ListMessages",
];

/// RPCs that take a fiscal code or an id but are not about whose data it is, and why.
pub const NOT_OWNERSHIP: &[(&str, &str)] = &[
    (
        "sportello.identity.v1.IdentityService/RequestPin",
        "public: anyone may ask a PIN for a fiscal code; the answer is neutral",
    ),
    (
        "sportello.identity.v1.IdentityService/CompleteFirstAccess",
        "the caller proves who they are with the initial PIN",
    ),
    (
        "sportello.identity.v1.IdentityService/LoginWithPin",
        "the caller proves who they are with the PIN",
    ),
    (
        "sportello.identity.v1.IdentityService/StartPinRecovery",
        "public, neutral answer; the code goes to the contacts on file",
    ),
    (
        "sportello.identity.v1.IdentityService/ConfirmPinRecovery",
        "the caller proves who they are with the code sent to the contacts on file",
    ),
    (
        "sportello.identity.v1.PinConversionService/StartPinConversion",
        "opens the caller's own request; a guardian named is checked by the back office",
    ),
    ("sportello.identity.v1.ResidentsService/ImportResidents", "bulk load by the back office"),
    ("sportello.claims.v1.ClaimsBackOfficeService/ImportRegistry", "bulk load by the back office"),
    (
        "sportello.privacy.v1.CitizenDataService/ListAccessEntries",
        "internal: the gateway never forwards it (policy: Internal) and each service answers \
         only the gateway (tests/e2e/my_data.rs)",
    ),
    (
        "sportello.privacy.v1.CitizenDataService/ExportCitizenData",
        "internal: the gateway never forwards it (policy: Internal) and each service answers \
         only the gateway (tests/e2e/my_data.rs)",
    ),
];

/// The scenario's state while calling: the world, its random choices and the clients.
pub struct Runner {
    pub world: World,
    pub rng: StdRng,
    claims: Claims<tonic::transport::Channel>,
    back: ClaimsBackOffice<tonic::transport::Channel>,
    identity: Identity<tonic::transport::Channel>,
    contact: ContactCenter<tonic::transport::Channel>,
    residents: Residents<tonic::transport::Channel>,
    conversions: Conversions<tonic::transport::Channel>,
    conversion_back: ConversionBackOffice<tonic::transport::Channel>,
    notify: Notify<tonic::transport::Channel>,
    next: u64,
}

impl Runner {
    pub fn new(world: World, rng: StdRng) -> Self {
        let ch = world.channel.clone();
        Self {
            claims: Claims::new(ch.clone()),
            back: ClaimsBackOffice::new(ch.clone()),
            identity: Identity::new(ch.clone()),
            contact: ContactCenter::new(ch.clone()),
            residents: Residents::new(ch.clone()),
            conversions: Conversions::new(ch.clone()),
            conversion_back: ConversionBackOffice::new(ch.clone()),
            notify: Notify::new(ch),
            world,
            rng,
            next: 0,
        }
    }

    pub fn token(&self, caller: Caller) -> String {
        match caller {
            Caller::Citizen(i) => self.world.citizens[i].token.clone(),
            Caller::Staff(role) => self.world.staff[&role].token.clone(),
        }
    }

    /// Whose data the call names: the caller's own a third of the time, else someone else's.
    fn target(&mut self, caller: Caller) -> usize {
        let n = self.world.citizens.len();
        match caller {
            Caller::Citizen(me) if self.rng.random_bool(0.35) => me,
            Caller::Citizen(me) => (me + self.rng.random_range(1..n)) % n,
            Caller::Staff(_) => self.rng.random_range(0..n),
        }
    }

    /// One of `ids`, or (one time in ten, or when there is none) an id that names nothing.
    fn pick(&mut self, ids: &[String]) -> String {
        if ids.is_empty() || self.rng.random_bool(0.1) {
            return uuid::Uuid::new_v4().to_string();
        }
        ids.choose(&mut self.rng).cloned().unwrap_or_default()
    }

    fn unique(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn mandated(&self, cf: &str) -> bool {
        self.world
            .citizens
            .iter()
            .find(|c| c.cf == cf)
            .is_some_and(|c| c.mandates.iter().any(|m| !self.world.revoked_mandates.contains(m)))
    }

    fn own(caller: Caller, t: usize) -> bool {
        caller == Caller::Citizen(t)
    }

    /// Makes one call of `rpc` by `caller`.
    pub async fn call(&mut self, rpc: &str, caller: Caller) -> Call {
        let token = self.token(caller);
        let t = self.target(caller);
        let cf = self.world.citizens[t].cf.clone();
        let own = Self::own(caller, t);
        let role = caller.role();
        let staff = matches!(role, Role::Operator | Role::Backoffice);
        let method = rpc.rsplit('/').next().unwrap_or_default();
        let mut scope = Scope::Caller;
        let mut audit_row = Vec::new();
        let (expect, (code, text)) = match method {
            "SubmitClaim" => {
                let key = format!("iso-call-{}", self.unique());
                let form = claim(&cf, true, &key);
                let expect = match role {
                    Role::Citizen if own => Expect::Allowed,
                    Role::Citizen => Expect::Refused(&[
                        Code::InvalidArgument,
                        Code::PermissionDenied,
                        Code::NotFound,
                    ]),
                    Role::Patronato if self.mandated(&cf) => Expect::Allowed,
                    Role::Patronato => Expect::Refused(&[
                        Code::FailedPrecondition,
                        Code::PermissionDenied,
                        Code::NotFound,
                    ]),
                    _ => DENIED,
                };
                let result = self.claims.submit_claim(bearer(&token, form)).await;
                if let Ok(reply) = &result {
                    if let Some(r) = &reply.get_ref().receipt {
                        self.world.owner.insert(r.claim_id.clone(), t);
                        self.world.citizens[t].claims.push(r.claim_id.clone());
                        if role == Role::Patronato {
                            self.world.patronato_claims.insert(r.claim_id.clone());
                            audit_row = audit("claims", "SubmitClaim", Some(&cf));
                        }
                    }
                }
                (expect, answer(result))
            }
            "GetClaim" => {
                let claims = self.world.citizens[t].claims.clone();
                let claim_id = self.pick(&claims);
                let real = claims.contains(&claim_id);
                let expect = match role {
                    _ if !real => NOT_YOURS,
                    Role::Citizen if own => Expect::Allowed,
                    Role::Patronato
                        if self.world.patronato_claims.contains(&claim_id)
                            && self.mandated(&cf) =>
                    {
                        Expect::Allowed
                    }
                    _ if staff => {
                        audit_row = audit("claims", "GetClaim", Some(&cf));
                        Expect::Allowed
                    }
                    _ => NOT_YOURS,
                };
                let request = cl::GetClaimRequest { claim_id };
                (expect, answer(self.claims.get_claim(bearer(&token, request)).await))
            }
            "ListClaims" => {
                if staff {
                    scope = Scope::Only(cf.clone());
                    audit_row = audit("claims", "ListClaims", Some(&cf));
                }
                let request = cl::ListClaimsRequest {
                    fiscal_code: cf.clone(),
                    page_size: 50,
                    page_token: String::new(),
                };
                (Expect::Allowed, answer(self.claims.list_claims(bearer(&token, request)).await))
            }
            "WithdrawClaim" => {
                let claims = self.world.citizens[t].claims.clone();
                let claim_id = self.pick(&claims);
                let expect =
                    if own && claims.contains(&claim_id) { Expect::Allowed } else { NOT_YOURS };
                let request = cl::WithdrawClaimRequest { claim_id: claim_id.clone() };
                let result = self.claims.withdraw_claim(bearer(&token, request)).await;
                if result.is_ok() && expect == Expect::Allowed {
                    self.world.withdrawn_claims.insert(claim_id);
                }
                (expect, answer(result))
            }
            "RedeemBabySittingBonus" => {
                let claims = self.world.citizens[t].claims.clone();
                let claim_id = self.pick(&claims);
                let expect =
                    if own && claims.contains(&claim_id) { Expect::Allowed } else { NOT_YOURS };
                let request = cl::RedeemBabySittingBonusRequest { claim_id };
                (
                    expect,
                    answer(self.claims.redeem_baby_sitting_bonus(bearer(&token, request)).await),
                )
            }
            "UpdatePaymentDetails" => {
                let claims = self.world.citizens[t].claims.clone();
                let claim_id = self.pick(&claims);
                let expect =
                    if own && claims.contains(&claim_id) { Expect::Allowed } else { NOT_YOURS };
                // To cash at the post office: a dispositive session moves someone's money.
                let request = cl::UpdatePaymentDetailsRequest {
                    claim_id: claim_id.clone(),
                    payment: Some(cl::Payment {
                        method: Some(cl::payment::Method::PostOfficeCash(cl::PostOfficeCash {})),
                    }),
                };
                let result = self.claims.update_payment_details(bearer(&token, request)).await;
                if result.is_ok() && expect == Expect::Allowed {
                    self.world.paid_in_cash.insert(claim_id);
                }
                (expect, answer(result))
            }
            "RegisterMandate" => {
                let expect = if role == Role::Patronato { Expect::Allowed } else { DENIED };
                let request = cl::RegisterMandateRequest {
                    fiscal_code: cf.clone(),
                    signed_form_reference: format!("MOD-CALL-{}", self.unique()),
                };
                let result = self.claims.register_mandate(bearer(&token, request)).await;
                if let Ok(reply) = &result {
                    // A live mandate of the same office is answered as it is: nothing new.
                    let fresh = reply
                        .get_ref()
                        .mandate
                        .as_ref()
                        .filter(|m| !self.world.citizens[t].mandates.contains(&m.mandate_id));
                    if let Some(m) = fresh {
                        self.world.owner.insert(m.mandate_id.clone(), t);
                        self.world.citizens[t].mandates.push(m.mandate_id.clone());
                        if role == Role::Patronato {
                            audit_row = audit("claims", "RegisterMandate", Some(&cf));
                        }
                    }
                }
                (expect, answer(result))
            }
            "ListMandates" => {
                if role == Role::Patronato {
                    scope = Scope::Any;
                }
                let result =
                    self.claims.list_mandates(bearer(&token, cl::ListMandatesRequest {})).await;
                (Expect::Allowed, answer(result))
            }
            "RevokeMandate" => {
                let mandates = self.world.citizens[t].mandates.clone();
                let mandate_id = self.pick(&mandates);
                let expect =
                    if own && mandates.contains(&mandate_id) { Expect::Allowed } else { NOT_YOURS };
                let request = cl::RevokeMandateRequest { mandate_id: mandate_id.clone() };
                let result = self.claims.revoke_mandate(bearer(&token, request)).await;
                if result.is_ok() && expect == Expect::Allowed {
                    self.world.revoked_mandates.insert(mandate_id);
                }
                (expect, answer(result))
            }
            "ListReviewQueue" => {
                scope = Scope::Any;
                let request =
                    cl::ListReviewQueueRequest { page_size: 50, page_token: String::new() };
                let result = self.back.list_review_queue(bearer(&token, request)).await;
                // A read of citizens' claims: on each one's trail.
                if let Ok(reply) = &result {
                    for c in &reply.get_ref().claims {
                        audit_row.extend(audit("claims", "ListReviewQueue", Some(&c.fiscal_code)));
                    }
                }
                (Expect::Allowed, answer(result))
            }
            "DecideClaim" => {
                let claims = self.world.citizens[t].claims.clone();
                let claim_id = self.pick(&claims);
                let approve = self.rng.random_bool(0.5);
                audit_row = audit("claims", "DecideClaim", Some(&cf));
                let request = cl::DecideClaimRequest {
                    claim_id,
                    decision: if approve { cl::Decision::Approve } else { cl::Decision::Reject }
                        as i32,
                    reason: if approve { String::new() } else { "IBAN_NOT_OWNED".into() },
                    note: "isolation scenario".into(),
                };
                (Expect::Allowed, answer(self.back.decide_claim(bearer(&token, request)).await))
            }
            "ConfirmPaymentBatch" => {
                let batches = self.world.batches.clone();
                let batch_id = self.pick(&batches);
                let request = cl::ConfirmPaymentBatchRequest { batch_id: batch_id.clone() };
                let result = self.back.confirm_payment_batch(bearer(&token, request)).await;
                // Confirming again changes nothing, and has nothing to audit.
                if result.is_ok() && self.world.confirmed_batches.insert(batch_id) {
                    audit_row = audit("claims", "ConfirmPaymentBatch", None);
                }
                (Expect::Allowed, answer(result))
            }
            "CancelPaymentBatch" => {
                let batches = self.world.batches.clone();
                let batch_id = self.pick(&batches);
                audit_row = audit("claims", "CancelPaymentBatch", None);
                let request =
                    cl::CancelPaymentBatchRequest { batch_id, reason: "isolation scenario".into() };
                (
                    Expect::Allowed,
                    answer(self.back.cancel_payment_batch(bearer(&token, request)).await),
                )
            }
            "ChangePin" => {
                // Someone else's fiscal code with their real PIN: still not the caller's to change.
                let t = if own { (t + 1) % self.world.citizens.len() } else { t };
                let new_pin = format!("W{}", self.unique() % 10_000_000 + 10_000_000);
                let victim = &self.world.citizens[t];
                let request = id::ChangePinRequest {
                    fiscal_code: victim.cf.clone(),
                    current_pin: victim.pin.clone(),
                    new_pin,
                };
                (NOT_YOURS, answer(self.identity.change_pin(bearer(&token, request)).await))
            }
            "GetPinRequestStatus" => {
                // Public, on the knowledge of both: one's own fiscal code with someone's request.
                let mine = match caller {
                    Caller::Citizen(me) => me,
                    Caller::Staff(_) => self.rng.random_range(0..self.world.citizens.len()),
                };
                let expect = if mine == t { Expect::Allowed } else { NOT_YOURS };
                let request = id::GetPinRequestStatusRequest {
                    fiscal_code: self.world.citizens[mine].cf.clone(),
                    request_id: self.world.citizens[t].pin_request.clone(),
                };
                (
                    expect,
                    answer(self.identity.get_pin_request_status(bearer(&token, request)).await),
                )
            }
            "GetProfile" => (
                Expect::Allowed,
                answer(self.identity.get_profile(bearer(&token, id::GetProfileRequest {})).await),
            ),
            "RequestPinForCaller" => {
                audit_row = audit_always("RequestPinForCaller", Some(&cf));
                let request = id::RequestPinForCallerRequest {
                    form: Some(self.world.citizens[t].form.clone()),
                };
                (
                    Expect::Allowed,
                    answer(self.contact.request_pin_for_caller(bearer(&token, request)).await),
                )
            }
            "LookupCredential" => {
                let who = if self.rng.random_bool(0.1) {
                    self.world.outsider.clone()
                } else {
                    cf.clone()
                };
                scope = Scope::Only(who.clone());
                audit_row = audit_always("LookupCredential", Some(&who));
                let request = id::LookupCredentialRequest { fiscal_code: who };
                (
                    Expect::Allowed,
                    answer(self.contact.lookup_credential(bearer(&token, request)).await),
                )
            }
            "ListUndeliveredPinRequests" => {
                scope = Scope::Any;
                audit_row = audit_always("ListUndeliveredPinRequests", None);
                let request = id::ListUndeliveredPinRequestsRequest {
                    page_size: 50,
                    page_token: String::new(),
                };
                let result =
                    self.contact.list_undelivered_pin_requests(bearer(&token, request)).await;
                (Expect::Allowed, answer(result))
            }
            "ResendFirstHalf" => {
                audit_row = audit_always("ResendFirstHalf", Some(&cf));
                let request = id::ResendFirstHalfRequest {
                    request_id: self.world.citizens[t].pin_request.clone(),
                    identity_verified: true,
                    channel: 0,
                    address: String::new(),
                };
                (
                    Expect::Allowed,
                    answer(self.contact.resend_first_half(bearer(&token, request)).await),
                )
            }
            "UpdateContacts" => {
                audit_row = audit_always("UpdateContacts", Some(&cf));
                let request = id::UpdateContactsRequest {
                    fiscal_code: cf.clone(),
                    identity_verified: true,
                    channel: id::DeliveryChannel::Email as i32,
                    address: format!("nuovo{}@example.it", self.unique()),
                };
                (
                    Expect::Allowed,
                    answer(self.contact.update_contacts(bearer(&token, request)).await),
                )
            }
            "ValidatePendingPinRequest" => {
                audit_row = audit_always("ValidatePendingPinRequest", None);
                let request = id::ValidatePendingPinRequestRequest {
                    request_id: self.world.citizens[t].pin_request.clone(),
                    identity_verified: true,
                };
                let result =
                    self.contact.validate_pending_pin_request(bearer(&token, request)).await;
                (Expect::Allowed, answer(result))
            }
            "RevokePin" => {
                // Only of a fiscal code nobody holds: a revoked PIN would end the run's sessions.
                let who = self.world.outsider.clone();
                audit_row = audit_always("RevokePin", Some(&who));
                let request =
                    id::RevokePinRequest { fiscal_code: who, reason: "isolation scenario".into() };
                (Expect::Allowed, answer(self.contact.revoke_pin(bearer(&token, request)).await))
            }
            "UnlockPin" => {
                audit_row = audit_always("UnlockPin", Some(&cf));
                let request = id::UnlockPinRequest {
                    fiscal_code: cf.clone(),
                    reason: "isolation scenario".into(),
                };
                (Expect::Allowed, answer(self.contact.unlock_pin(bearer(&token, request)).await))
            }
            "ListAuditEvents" => {
                scope = Scope::Only(cf.clone());
                audit_row = audit_always("ListAuditEvents", Some(&cf));
                let request = id::ListAuditEventsRequest {
                    fiscal_code: cf.clone(),
                    page_size: 20,
                    page_token: String::new(),
                    operator_id: String::new(),
                };
                (
                    Expect::Allowed,
                    answer(self.contact.list_audit_events(bearer(&token, request)).await),
                )
            }
            "RevokeConversion" => {
                audit_row = audit_always("RevokeConversion", Some(&cf));
                let request = id::RevokeConversionRequest {
                    fiscal_code: cf.clone(),
                    reason: "non l'ho chiesta io".into(),
                };
                let result = self.contact.revoke_conversion(bearer(&token, request)).await;
                // The citizen's dispositive sessions end with their PIN dispositivo.
                if result.is_ok() {
                    if let Err(e) = self.world.login(t).await {
                        return Call {
                            expect: Expect::Allowed,
                            scope,
                            audits: audit_row,
                            code: Code::Internal,
                            answer: format!("logging in again after RevokeConversion: {e:#}"),
                        };
                    }
                }
                (Expect::Allowed, answer(result))
            }
            "ListPendingConversions" => {
                scope = Scope::Any;
                let request =
                    id::ListPendingConversionsRequest { page_size: 100, page_token: String::new() };
                let result =
                    self.conversion_back.list_pending_conversions(bearer(&token, request)).await;
                // One audit row per citizen shown.
                if let Ok(reply) = &result {
                    for c in &reply.get_ref().conversions {
                        audit_row.extend(audit(
                            "identity",
                            "ListPendingConversions",
                            Some(&c.fiscal_code),
                        ));
                    }
                }
                (Expect::Allowed, answer(result))
            }
            "BatchGetResidentNames" => {
                let request = id::BatchGetResidentNamesRequest { fiscal_codes: vec![cf.clone()] };
                (
                    DENIED,
                    answer(self.residents.batch_get_resident_names(bearer(&token, request)).await),
                )
            }
            "DownloadConversionForm" => {
                let ids: Vec<String> = self.world.citizens[t].conversion.iter().cloned().collect();
                let request_id = self.pick(&ids);
                let expect =
                    if own && ids.contains(&request_id) { Expect::Allowed } else { NOT_YOURS };
                let request = id::DownloadConversionFormRequest { request_id };
                let result =
                    self.conversions.download_conversion_form(bearer(&token, request)).await;
                let (code, chunks) = drained(result, 10_000).await;
                let pdf: Vec<u8> = chunks.into_iter().flat_map(|c| c.chunk).collect();
                let text = sportello_platform::pdf::text_of(&pdf).unwrap_or_default();
                (expect, (code, text))
            }
            "UploadConversionDocuments" => {
                // Someone else's request (an upload to one's own would need real files).
                let t = if own { (t + 1) % self.world.citizens.len() } else { t };
                let ids: Vec<String> = self.world.citizens[t].conversion.iter().cloned().collect();
                let request_id = self.pick(&ids);
                let date = |year| Some(id::Date { year, month: 3, day: 15 });
                let metadata = id::UploadMetadata {
                    request_id,
                    document: Some(id::IdentityDocument {
                        r#type: id::IdentityDocumentType::CartaIdentita as i32,
                        number: "CA12345AB".into(),
                        issuer: "Comune di Roma".into(),
                        issued_on: date(2020),
                        expires_on: date(2030),
                        holder_surname: "Rossi".into(),
                        holder_given_name: "Mario".into(),
                        holder_birth_date: date(1980),
                    }),
                };
                let first = id::UploadConversionDocumentsRequest {
                    part: Some(id::upload_conversion_documents_request::Part::Metadata(metadata)),
                };
                let request = bearer(&token, futures::stream::iter(vec![first]));
                (NOT_YOURS, answer(self.conversions.upload_conversion_documents(request).await))
            }
            "GetPinConversion" => {
                let result = self
                    .conversions
                    .get_pin_conversion(bearer(&token, id::GetPinConversionRequest {}))
                    .await;
                (Expect::Allowed, answer(result))
            }
            "WithdrawPinConversion" => {
                let ids: Vec<String> = self.world.citizens[t].conversion.iter().cloned().collect();
                let request_id = self.pick(&ids);
                let expect =
                    if own && ids.contains(&request_id) { Expect::Allowed } else { NOT_YOURS };
                let request = id::WithdrawPinConversionRequest { request_id: request_id.clone() };
                let result =
                    self.conversions.withdraw_pin_conversion(bearer(&token, request)).await;
                if result.is_ok() && expect == Expect::Allowed {
                    self.world.withdrawn_conversions.insert(request_id);
                }
                (expect, answer(result))
            }
            "DownloadConversionFile" => {
                let ids: Vec<String> = self.world.citizens[t].conversion.iter().cloned().collect();
                audit_row = audit("identity", "DownloadConversionFile", Some(&cf));
                let request = id::DownloadConversionFileRequest {
                    request_id: self.pick(&ids),
                    file: id::ConversionFile::SignedForm as i32,
                };
                let result =
                    self.conversion_back.download_conversion_file(bearer(&token, request)).await;
                let (code, chunks) = drained(result, 10_000).await;
                (Expect::Allowed, (code, format!("{} chunks", chunks.len())))
            }
            "ApproveConversion" => {
                let ids: Vec<String> = self.world.citizens[t].conversion.iter().cloned().collect();
                audit_row = audit("identity", "ApproveConversion", Some(&cf));
                let request = id::ApproveConversionRequest { request_id: self.pick(&ids) };
                (
                    Expect::Allowed,
                    answer(self.conversion_back.approve_conversion(bearer(&token, request)).await),
                )
            }
            "RejectConversion" => {
                let ids: Vec<String> = self.world.citizens[t].conversion.iter().cloned().collect();
                audit_row = audit("identity", "RejectConversion", Some(&cf));
                let request = id::RejectConversionRequest {
                    request_id: self.pick(&ids),
                    reason: "isolation scenario".into(),
                };
                (
                    Expect::Allowed,
                    answer(self.conversion_back.reject_conversion(bearer(&token, request)).await),
                )
            }
            "EnqueueMessage" => {
                let request = nt::EnqueueMessageRequest {
                    idempotency_key: format!("iso-{}", self.unique()),
                    fiscal_code: cf.clone(),
                    channel: nt::Channel::Email as i32,
                    address: "x@example.it".into(),
                    template: "CLAIM_RECEIPT".into(),
                    ..Default::default()
                };
                (DENIED, answer(self.notify.enqueue_message(bearer(&token, request)).await))
            }
            "BatchGetMessages" => {
                let messages = self.world.citizens[t].messages.clone();
                let request = nt::BatchGetMessagesRequest { message_ids: messages };
                (DENIED, answer(self.notify.batch_get_messages(bearer(&token, request)).await))
            }
            "ResendMessage" => {
                let messages = self.world.citizens[t].messages.clone();
                let request = nt::ResendMessageRequest {
                    message_id: self.pick(&messages),
                    idempotency_key: format!("iso-{}", self.unique()),
                    channel: 0,
                    address: String::new(),
                };
                (DENIED, answer(self.notify.resend_message(bearer(&token, request)).await))
            }
            "ReportDelivery" => {
                let request = nt::ReportDeliveryRequest {
                    provider: "sms:primary".into(),
                    provider_message_id: uuid::Uuid::new_v4().to_string(),
                    outcome: nt::DeliveryOutcome::Failed as i32,
                    reason: "isolation scenario".into(),
                };
                (DENIED, answer(self.notify.report_delivery(bearer(&token, request)).await))
            }
            "ListMyMessages" => {
                let request =
                    nt::ListMyMessagesRequest { page_size: 200, page_token: String::new() };
                (
                    Expect::Allowed,
                    answer(self.notify.list_my_messages(bearer(&token, request)).await),
                )
            }
            "GetMyMessage" => {
                let messages = self.world.citizens[t].messages.clone();
                let message_id = self.pick(&messages);
                let expect =
                    if own && messages.contains(&message_id) { Expect::Allowed } else { NOT_YOURS };
                let request = nt::GetMyMessageRequest { message_id };
                (expect, answer(self.notify.get_my_message(bearer(&token, request)).await))
            }
            "WatchMessage" => {
                let messages = self.world.citizens[t].messages.clone();
                audit_row = audit("notify", "WATCH_MESSAGE", Some(&cf));
                let request = nt::WatchMessageRequest { message_id: self.pick(&messages) };
                let result = self.notify.watch_message(bearer(&token, request)).await;
                let (code, first) = drained(result, 1).await;
                (Expect::Allowed, (code, format!("{first:?}")))
            }
            "GetMessage" => {
                let messages = self.world.citizens[t].messages.clone();
                audit_row = audit("notify", "GET_MESSAGE", Some(&cf));
                let request = nt::GetMessageRequest { message_id: self.pick(&messages) };
                (Expect::Allowed, answer(self.notify.get_message(bearer(&token, request)).await))
            }
            "ListMessages" => {
                scope = Scope::Only(cf.clone());
                audit_row = audit("notify", "LIST_MESSAGES", Some(&cf));
                let request = nt::ListMessagesRequest {
                    fiscal_code: cf.clone(),
                    page_size: 50,
                    page_token: String::new(),
                };
                (Expect::Allowed, answer(self.notify.list_messages(bearer(&token, request)).await))
            }
            other => unreachable!("no call for {other}"),
        };
        Call { expect, scope, audits: audit_row, code, answer: text }
    }
}
