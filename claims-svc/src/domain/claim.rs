//! A claim: the form as parsed at the edge, whether it can be accepted, and its states.

use super::eligibility::{self, BenefitCode, Reason};
use super::iban::Iban;
use super::registry::Registered;
use super::{Benefit, Group};
use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use sportello_domain::codice_fiscale::CodiceFiscale;
use sportello_domain::{Email, PhoneNumber};
use sportello_platform::auth::Level;
use sportello_platform::error::FieldViolations;
use sportello_proto::claims::v1 as wire;

/// How the benefit is paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentMethod {
    /// SEPA credit transfer to an account the applicant holds (the holder checked at the edge,
    /// the ownership by the bank check in the automatic decision).
    Bank(Iban),
    PostOfficeCash,
}

impl PaymentMethod {
    /// Reads a request's `payment` field for `applicant` (empty when the applicant itself is
    /// wrong: the holder is then not compared), every problem a violation on its proto path
    /// (`payment.method`, `payment.bank_transfer.iban`, `payment.bank_transfer.holder_fiscal_code`).
    pub fn parse(
        v: &mut FieldViolations,
        payment: Option<&wire::Payment>,
        applicant: &str,
        today: NaiveDate,
    ) -> Option<Self> {
        match payment.and_then(|p| p.method.as_ref()) {
            None => {
                v.add("payment.method", "choose a bank transfer or cash at the post office");
                None
            }
            Some(wire::payment::Method::PostOfficeCash(_)) => Some(PaymentMethod::PostOfficeCash),
            Some(wire::payment::Method::BankTransfer(t)) => {
                let iban = match Iban::parse(&t.iban) {
                    Ok(iban) => Some(iban),
                    Err(e) => {
                        v.add("payment.bank_transfer.iban", e.to_string());
                        None
                    }
                };
                let holder_field = "payment.bank_transfer.holder_fiscal_code";
                if t.holder_fiscal_code.trim().is_empty() {
                    v.add(holder_field, "the account holder's fiscal code is required");
                } else {
                    let holder = fiscal_code(v, holder_field, &t.holder_fiscal_code, today);
                    if !holder.is_empty() && !applicant.is_empty() && holder != applicant {
                        v.add(holder_field, "the account must be held or co-held by the applicant");
                    }
                }
                iban.map(PaymentMethod::Bank)
            }
        }
    }

    /// The account as stored: `None` for cash at the post office.
    pub fn stored(&self) -> Option<&str> {
        match self {
            PaymentMethod::Bank(iban) => Some(iban.as_str()),
            PaymentMethod::PostOfficeCash => None,
        }
    }
}

/// Where a claim in `status` stands once it is to be paid by `to` instead, or `Err` when its
/// payment can no longer change (ordered or paid; rejected or withdrawn: nothing to pay). A new
/// account has not been through the bank's ownership check: the claim is decided again
/// (SUBMITTED), even if it was approved. Cash needs no check: an approved claim stays approved.
pub fn after_payment_change(status: Status, to: &PaymentMethod) -> Result<Status, Status> {
    match (status, to) {
        (Status::Approved, PaymentMethod::PostOfficeCash) => Ok(Status::Approved),
        (Status::Submitted | Status::InReview | Status::Approved, _) => Ok(Status::Submitted),
        (Status::PaymentOrdered | Status::Paid | Status::Rejected | Status::Withdrawn, _) => {
            Err(status)
        }
    }
}

/// Where the receipt and decisions go.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Contacts {
    pub email: Option<String>,
    /// `+39` and the digits.
    pub mobile_phone: Option<String>,
}

/// A claim form, checked: the core never sees an unchecked field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimForm {
    pub benefit: BenefitCode,
    /// Canonical fiscal code of the applicant.
    pub applicant: String,
    pub payment: PaymentMethod,
    pub contacts: Contacts,
    /// Baby-sitting bonus: the child's canonical fiscal code.
    pub child: Option<String>,
    pub idempotency_key: String,
}

/// Who is filing: a citizen for themselves, or a patronato for a citizen it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filing<'a> {
    Citizen(&'a str),
    Patronato,
}

const MAX_KEY: usize = 128;

fn fiscal_code(v: &mut FieldViolations, field: &str, text: &str, today: NaiveDate) -> String {
    match CodiceFiscale::parse(text, today) {
        Ok(cf) => cf.canonical(),
        Err(e) => {
            v.add(field, e.to_string());
            String::new()
        }
    }
}

/// An optional contact: `None` when blank, else as `parse` keeps it, or a violation on `field`
/// (the text kept as given, so that it does not also count as missing).
fn contact<T: Into<String>, E: ToString>(
    v: &mut FieldViolations,
    field: &str,
    text: &str,
    parse: fn(&str) -> Result<T, E>,
) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match parse(text) {
        Ok(value) => Some(value.into()),
        Err(e) => {
            v.add(field, e.to_string());
            Some(text.to_owned())
        }
    }
}

impl ClaimForm {
    /// Checks `req` filed as `filing`; every problem is a violation on its proto field path.
    pub fn parse(
        req: &wire::SubmitClaimRequest,
        filing: Filing<'_>,
        today: NaiveDate,
    ) -> Result<Self, FieldViolations> {
        let mut v = FieldViolations::new();
        let benefit = BenefitCode::parse(req.benefit_code.trim());
        if benefit.is_none() {
            v.add("benefit_code", "not a benefit of the catalogue (see ListBenefits)");
        }
        let named = req.fiscal_code.trim();
        let applicant = match filing {
            Filing::Citizen(me) => {
                if !named.is_empty() && fiscal_code(&mut v, "fiscal_code", named, today) != me {
                    v.add("fiscal_code", "a citizen files for themselves only");
                }
                me.to_owned()
            }
            Filing::Patronato if named.is_empty() => {
                v.add("fiscal_code", "name the citizen the patronato files for");
                String::new()
            }
            Filing::Patronato => fiscal_code(&mut v, "fiscal_code", named, today),
        };
        let payment = PaymentMethod::parse(&mut v, req.payment.as_ref(), &applicant, today);
        let contacts = req.contacts.clone().unwrap_or_default();
        let contacts = Contacts {
            email: contact(&mut v, "contacts.email", &contacts.email, Email::parse),
            // The receipt goes by SMS: a landline cannot take it.
            mobile_phone: contact(
                &mut v,
                "contacts.mobile_phone",
                &contacts.mobile_phone,
                PhoneNumber::parse_mobile,
            ),
        };
        if contacts.email.is_none() && contacts.mobile_phone.is_none() {
            v.add("contacts", "give an email or a mobile number for the receipt");
        }
        let declarations = req.declarations.unwrap_or_default();
        if !declarations.truthful {
            v.add("declarations.truthful", "the self-declaration (DPR 445/2000) is required");
        }
        let child_text = req.child_fiscal_code.trim();
        let child = match benefit {
            Some(BenefitCode::BonusBabySitting) => {
                if !declarations.no_parental_leave_instead {
                    v.add(
                        "declarations.no_parental_leave_instead",
                        "the bonus is an alternative to the COVID-19 parental leave: declare it",
                    );
                }
                if child_text.is_empty() {
                    v.add("child_fiscal_code", "name the child the bonus is for");
                    None
                } else {
                    Some(fiscal_code(&mut v, "child_fiscal_code", child_text, today))
                }
            }
            _ => {
                if !child_text.is_empty() {
                    v.add("child_fiscal_code", "only the baby-sitting bonus names a child");
                }
                None
            }
        };
        let key = req.idempotency_key.trim();
        if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
            v.add("idempotency_key", format!("1 to {MAX_KEY} printable ASCII characters"));
        }
        match (benefit, payment) {
            (Some(benefit), Some(payment)) if v.is_empty() => Ok(ClaimForm {
                benefit,
                applicant,
                payment,
                contacts,
                child,
                idempotency_key: key.to_owned(),
            }),
            _ => Err(v),
        }
    }

    /// A digest of everything the form asks, so that a key reused for another form is told apart
    /// from a retry.
    pub fn digest(&self) -> String {
        let iban = match &self.payment {
            PaymentMethod::Bank(iban) => iban.as_str().to_owned(),
            PaymentMethod::PostOfficeCash => "CASH".to_owned(),
        };
        let fields = [
            self.benefit.as_str(),
            &self.applicant,
            &iban,
            self.child.as_deref().unwrap_or(""),
            self.contacts.email.as_deref().unwrap_or(""),
            self.contacts.mobile_phone.as_deref().unwrap_or(""),
        ];
        let mut hasher = Sha256::new();
        for field in fields {
            hasher.update(field.as_bytes());
            hasher.update([0]);
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Why a claim is not accepted, by its stable ErrorInfo reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotOpenYet,
    LevelTooLow,
    NoInsuredPosition,
    NotEligible(Vec<Reason>),
    ChildNotListed,
    AlreadyClaimed,
    CeilingReached,
    NoMandate,
    KeyReused,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotOpenYet => "NOT_OPEN_YET",
            Refusal::LevelTooLow => "LEVEL_TOO_LOW",
            Refusal::NoInsuredPosition => "NO_INSURED_POSITION",
            Refusal::NotEligible(_) => "NOT_ELIGIBLE",
            Refusal::ChildNotListed => "CHILD_NOT_LISTED",
            Refusal::AlreadyClaimed => "ALREADY_CLAIMED",
            Refusal::CeilingReached => "CEILING_REACHED",
            Refusal::NoMandate => "NO_MANDATE",
            Refusal::KeyReused => "IDEMPOTENCY_KEY_REUSED",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Refusal::NotOpenYet => "claims for this benefit are not open yet",
            Refusal::LevelTooLow => "this benefit needs a stronger credential",
            Refusal::NoInsuredPosition => {
                "the registry holds no insured position for the applicant"
            }
            Refusal::NotEligible(_) => "the applicant's insured position does not qualify",
            Refusal::ChildNotListed => "the registry lists no such child of the applicant",
            Refusal::AlreadyClaimed => {
                "a live claim already excludes this one (DL 18/2020 art. 31)"
            }
            Refusal::CeilingReached => "the benefit's spending ceiling has been reached",
            Refusal::NoMandate => "the patronato holds no live mandate of this citizen",
            Refusal::KeyReused => "this idempotency key was used for a different claim",
        }
    }
}

/// What accepting a claim reserves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acceptance {
    pub amount_cents: i64,
    /// The claim's place in its incompatibility group: one per person, or per child.
    pub exclusive_key: String,
}

/// The claim's place in its incompatibility group: one indemnity per person (art. 31), one
/// bonus per child whichever parent files it.
pub fn exclusive_key(group: Group, form: &ClaimForm) -> String {
    match group {
        Group::Indemnity => format!("{}:{}", Group::Indemnity.as_str(), form.applicant),
        Group::Child => format!(
            "{}:{}:{}",
            Group::Child.as_str(),
            form.benefit.as_str(),
            form.child.as_deref().unwrap_or_default()
        ),
    }
}

/// Whether `form` can be accepted for `benefit`, filed at `level` at `now` (Unix ms), on what
/// the registry holds for the applicant. Incompatibility with other claims and the ceiling are
/// decided by the database, in the transaction that commits the claim.
pub fn accept(
    benefit: &Benefit,
    form: &ClaimForm,
    level: Level,
    now: i64,
    registered: Option<&Registered>,
) -> Result<Acceptance, Refusal> {
    if now < benefit.opens_at {
        return Err(Refusal::NotOpenYet);
    }
    if level < benefit.min_level {
        return Err(Refusal::LevelTooLow);
    }
    let registered = registered.ok_or(Refusal::NoInsuredPosition)?;
    let mut position = registered.position.clone();
    if benefit.group == Group::Child {
        let child_code = form.child.as_deref().unwrap_or_default();
        let child = registered.child(child_code).ok_or(Refusal::ChildNotListed)?;
        // The bonus is for the child named: only that child counts.
        position.children = vec![child];
    }
    let exclusive_key = exclusive_key(benefit.group, form);
    eligibility::evaluate(form.benefit, &position).map_err(Refusal::NotEligible)?;
    let amount_cents = if eligibility::amount_cents(form.benefit, &position)
        > eligibility::amount_cents(form.benefit, &Default::default())
        && benefit.increased_amount_cents > 0
    {
        benefit.increased_amount_cents
    } else {
        benefit.amount_cents
    };
    Ok(Acceptance { amount_cents, exclusive_key })
}

/// Where a claim stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Submitted,
    InReview,
    Approved,
    Rejected,
    PaymentOrdered,
    Paid,
    Withdrawn,
}

impl Status {
    const ALL: [Status; 7] = [
        Status::Submitted,
        Status::InReview,
        Status::Approved,
        Status::Rejected,
        Status::PaymentOrdered,
        Status::Paid,
        Status::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "SUBMITTED",
            Status::InReview => "IN_REVIEW",
            Status::Approved => "APPROVED",
            Status::Rejected => "REJECTED",
            Status::PaymentOrdered => "PAYMENT_ORDERED",
            Status::Paid => "PAID",
            Status::Withdrawn => "WITHDRAWN",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The state as the citizen's portal shows it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Submitted => "Presentata",
            Status::InReview => "In istruttoria",
            Status::Approved => "Accolta",
            Status::Rejected => "Respinta",
            Status::PaymentOrdered => "Pagamento disposto",
            Status::Paid => "Pagata",
            Status::Withdrawn => "Ritirata",
        }
    }

    /// Not decided yet: the citizen may still withdraw it.
    pub fn is_undecided(self) -> bool {
        matches!(self, Status::Submitted | Status::InReview)
    }

    pub fn wire(self) -> wire::ClaimStatus {
        match self {
            Status::Submitted => wire::ClaimStatus::Submitted,
            Status::InReview => wire::ClaimStatus::InReview,
            Status::Approved => wire::ClaimStatus::Approved,
            Status::Rejected => wire::ClaimStatus::Rejected,
            Status::PaymentOrdered => wire::ClaimStatus::PaymentOrdered,
            Status::Paid => wire::ClaimStatus::Paid,
            Status::Withdrawn => wire::ClaimStatus::Withdrawn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::eligibility::{Child, InsuredPosition, Membership, Period, Scheme};

    const ME: &str = "RSSMRA80A01H501U";

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2020, 4, 1).expect("day")
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("day")
    }

    fn request(benefit: &str) -> wire::SubmitClaimRequest {
        wire::SubmitClaimRequest {
            benefit_code: benefit.into(),
            fiscal_code: String::new(),
            payment: Some(wire::Payment {
                method: Some(wire::payment::Method::BankTransfer(wire::BankTransfer {
                    iban: "it60 x054 2811 1010 0000 0123 456".into(),
                    holder_fiscal_code: ME.to_lowercase(),
                })),
            }),
            contacts: Some(wire::ClaimContacts {
                email: "mario.rossi@example.it".into(),
                mobile_phone: "333 123 4567".into(),
            }),
            declarations: Some(wire::Declarations {
                truthful: true,
                no_parental_leave_instead: false,
            }),
            child_fiscal_code: String::new(),
            idempotency_key: "k-1".into(),
        }
    }

    fn benefit(code: BenefitCode) -> Benefit {
        Benefit {
            code,
            title: String::new(),
            legal_basis: String::new(),
            amount_cents: 60_000,
            ceiling_cents: 60_000_000,
            reserved_cents: 0,
            opens_at: 1_000,
            min_level: Level::Simplified,
            group: if code.is_indemnity() { Group::Indemnity } else { Group::Child },
            conditions: vec![],
            increased_amount_cents: if code.is_indemnity() { 0 } else { 100_000 },
            increased_amount_condition: String::new(),
        }
    }

    fn professional() -> Registered {
        let open = Period { from: day(2015, 1, 1), to: None };
        Registered {
            position: InsuredPosition {
                memberships: vec![Membership { scheme: Scheme::GestioneSeparata, period: open }],
                vat_number: Some(open),
                ..Default::default()
            },
            child_codes: vec![],
        }
    }

    fn fields(v: FieldViolations) -> Vec<String> {
        v.iter().map(|(f, _)| f.to_owned()).collect()
    }

    #[test]
    fn a_citizens_form_reads_into_a_claim_for_themselves_with_the_normalised_contacts() {
        let form =
            ClaimForm::parse(&request("PROFESSIONISTI_COCOCO"), Filing::Citizen(ME), today())
                .expect("form");
        assert_eq!(form.applicant, ME);
        assert_eq!(form.contacts.mobile_phone.as_deref(), Some("+393331234567"));
        assert!(
            matches!(form.payment, PaymentMethod::Bank(ref i) if i.as_str() == "IT60X0542811101000000123456")
        );
    }

    #[test]
    fn an_account_held_by_someone_else_is_a_violation_on_the_holder() {
        let mut req = request("PROFESSIONISTI_COCOCO");
        if let Some(wire::payment::Method::BankTransfer(t)) =
            req.payment.as_mut().and_then(|p| p.method.as_mut())
        {
            t.holder_fiscal_code = "VRDGPP85M01F205Z".into();
        }
        let v = ClaimForm::parse(&req, Filing::Citizen(ME), today()).expect_err("holder");
        assert_eq!(fields(v), ["payment.bank_transfer.holder_fiscal_code"]);
    }

    #[test]
    fn a_new_account_is_checked_again_even_on_an_approved_claim_but_cash_keeps_the_approval() {
        let iban = Iban::parse("DE89 3704 0044 0532 0130 00").expect("valid");
        let bank = PaymentMethod::Bank(iban);
        let cash = PaymentMethod::PostOfficeCash;
        for status in [Status::Submitted, Status::InReview, Status::Approved] {
            assert_eq!(after_payment_change(status, &bank), Ok(Status::Submitted), "{status:?}");
        }
        assert_eq!(after_payment_change(Status::Approved, &cash), Ok(Status::Approved));
        assert_eq!(after_payment_change(Status::InReview, &cash), Ok(Status::Submitted));
        for status in [Status::PaymentOrdered, Status::Paid, Status::Rejected, Status::Withdrawn] {
            assert_eq!(after_payment_change(status, &bank), Err(status));
            assert_eq!(after_payment_change(status, &cash), Err(status));
        }
    }

    #[test]
    fn a_payment_alone_is_read_with_the_field_paths_of_the_claim_form() {
        let mut v = FieldViolations::new();
        let bad = wire::Payment {
            method: Some(wire::payment::Method::BankTransfer(wire::BankTransfer {
                iban: "IT60X0542811101000000123457".into(),
                holder_fiscal_code: "VRDGPP85M01F205Z".into(),
            })),
        };
        assert_eq!(PaymentMethod::parse(&mut v, Some(&bad), ME, today()), None);
        assert_eq!(
            fields(v),
            ["payment.bank_transfer.iban", "payment.bank_transfer.holder_fiscal_code"]
        );
        let mut v = FieldViolations::new();
        assert_eq!(PaymentMethod::parse(&mut v, None, ME, today()), None);
        assert_eq!(fields(v), ["payment.method"]);
    }

    #[test]
    fn a_malformed_form_names_every_field_at_once() {
        let req = wire::SubmitClaimRequest {
            benefit_code: "BONUS_VACANZE".into(),
            payment: Some(wire::Payment {
                method: Some(wire::payment::Method::BankTransfer(wire::BankTransfer {
                    iban: "IT60X0542811101000000123457".into(),
                    holder_fiscal_code: ME.into(),
                })),
            }),
            ..Default::default()
        };
        let v = ClaimForm::parse(&req, Filing::Citizen(ME), today()).expect_err("bad");
        assert_eq!(
            fields(v),
            [
                "benefit_code",
                "payment.bank_transfer.iban",
                "contacts",
                "declarations.truthful",
                "idempotency_key"
            ]
        );
    }

    #[test]
    fn a_patronato_must_name_the_citizen() {
        let v = ClaimForm::parse(&request("AGRICOLI"), Filing::Patronato, today()).expect_err("cf");
        assert!(fields(v).contains(&"fiscal_code".to_owned()));
    }

    #[test]
    fn the_baby_sitting_bonus_names_a_child_and_the_declaration_on_parental_leave() {
        let v = ClaimForm::parse(&request("BONUS_BABY_SITTING"), Filing::Citizen(ME), today())
            .expect_err("child");
        assert_eq!(fields(v), ["declarations.no_parental_leave_instead", "child_fiscal_code"]);
    }

    #[test]
    fn a_retry_has_the_same_digest_and_another_form_does_not() {
        let form = ClaimForm::parse(&request("AGRICOLI"), Filing::Citizen(ME), today()).expect("f");
        let mut other = form.clone();
        other.payment = PaymentMethod::PostOfficeCash;
        assert_eq!(form.digest(), form.clone().digest());
        assert_ne!(form.digest(), other.digest());
    }

    #[test]
    fn a_claim_before_the_opening_time_is_not_open_yet() {
        let form =
            ClaimForm::parse(&request("PROFESSIONISTI_COCOCO"), Filing::Citizen(ME), today())
                .expect("form");
        let b = benefit(BenefitCode::ProfessionistiCococo);
        let refused = accept(&b, &form, Level::Simplified, 999, Some(&professional()));
        assert_eq!(refused, Err(Refusal::NotOpenYet));
        let accepted = accept(&b, &form, Level::Simplified, 1_000, Some(&professional()));
        assert_eq!(accepted.map(|a| a.exclusive_key), Ok(format!("INDEMNITY:{ME}")));
    }

    #[test]
    fn citizen_with_simplified_pin_cannot_file_a_benefit_that_needs_an_ordinary_one() {
        let form =
            ClaimForm::parse(&request("PROFESSIONISTI_COCOCO"), Filing::Citizen(ME), today())
                .expect("form");
        let b =
            Benefit { min_level: Level::Ordinary, ..benefit(BenefitCode::ProfessionistiCococo) };
        assert_eq!(
            accept(&b, &form, Level::Simplified, 2_000, Some(&professional())),
            Err(Refusal::LevelTooLow)
        );
    }

    #[test]
    fn an_ineligible_position_is_refused_with_its_reasons() {
        let form = ClaimForm::parse(&request("AGRICOLI"), Filing::Citizen(ME), today()).expect("f");
        let refused = accept(
            &benefit(BenefitCode::Agricoli),
            &form,
            Level::Simplified,
            2_000,
            Some(&professional()),
        );
        assert_eq!(refused, Err(Refusal::NotEligible(vec![Reason::FewerThan50AgriculturalDays])));
        let none = accept(&benefit(BenefitCode::Agricoli), &form, Level::Simplified, 2_000, None);
        assert_eq!(none, Err(Refusal::NoInsuredPosition));
    }

    #[test]
    fn the_baby_sitting_bonus_is_one_per_child_and_larger_for_health_workers() {
        use sportello_domain::codice_fiscale::{compute, Sex};
        let born = day(2015, 3, 1);
        let code = compute("Bianchi", "Laura", born, Sex::Female, "H501");
        let mut req = request("BONUS_BABY_SITTING");
        req.declarations =
            Some(wire::Declarations { truthful: true, no_parental_leave_instead: true });
        req.child_fiscal_code = code.clone();
        let form = ClaimForm::parse(&req, Filing::Citizen(ME), today()).expect("form");
        let mut parent = Registered {
            position: InsuredPosition {
                children: vec![Child { birth_date: born, disabled: false }],
                health_or_security_worker: true,
                ..Default::default()
            },
            child_codes: vec![code.clone()],
        };
        let b = benefit(BenefitCode::BonusBabySitting);
        let accepted = accept(&b, &form, Level::Simplified, 2_000, Some(&parent)).expect("ok");
        assert_eq!(accepted.amount_cents, 100_000);
        assert_eq!(accepted.exclusive_key, format!("CHILD:BONUS_BABY_SITTING:{code}"));
        parent.child_codes = vec!["VRDGPP85M01F205Z".into()];
        assert_eq!(
            accept(&b, &form, Level::Simplified, 2_000, Some(&parent)),
            Err(Refusal::ChildNotListed)
        );
    }
}
