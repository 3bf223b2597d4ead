//! The institute's register of residents, and the rule it settles (issue 8 §6): the second half
//! of a PIN is the proof that the requester lives at the citizen's registered residence, so its
//! letter goes only there, never to an address the form gives.
//!
//! - On the register, anagrafica agreeing: the letter goes to the registered residence.
//! - On the register, anagrafica disagreeing: nothing is issued or sent (the caller still gets
//!   the neutral answer).
//! - Not on the register, or registered abroad: the request waits for the contact center, who
//!   verify the caller by phone (the purpose of the 12-hour rule).

use chrono::NaiveDate;
use sportello_platform::error::FieldViolations;
use sportello_proto::identity::v1 as wire;

use super::belfiore::{self, Place};
use super::codice_fiscale::Sex;
use super::pin_request::{masked_address, parse_person, PersonalData, PinRequest, Residence};
use sportello_platform::mask;

/// One entry of the register, checked like a PIN request's form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resident {
    /// Canonical (non-omocode) fiscal code.
    pub fiscal_code: String,
    pub personal_data: PersonalData,
    pub residence: Residence,
}

impl Resident {
    /// Checks an entry as received; the violations' paths are those of `ResidentRecord`.
    pub fn parse(record: &wire::ResidentRecord, today: NaiveDate) -> Result<Self, FieldViolations> {
        let mut v = FieldViolations::new();
        let person = parse_person(
            &record.fiscal_code,
            record.personal_data.as_ref(),
            record.residence.as_ref(),
            today,
            &mut v,
        );
        match person {
            Some((cf, personal_data, residence)) if v.is_empty() => {
                Ok(Resident { fiscal_code: cf.canonical(), personal_data, residence })
            }
            _ => Err(v),
        }
    }

    /// The address block of the letter: the registered name at the registered residence.
    pub fn postal_lines(&self) -> String {
        self.residence.postal_lines(&self.personal_data.surname, &self.personal_data.given_name)
    }
}

/// What a re-import changed in a citizen's entry: a citizen's event, recorded in their audit
/// trail and told to them, because the next PIN letter goes where the register says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterChange {
    pub residence: bool,
    pub anagrafica: bool,
    /// Old and new values of what changed, masked as for the audit trail (`old → new`, one
    /// field a line; the town or country in full, street and names reduced to their start).
    pub detail: String,
}

impl RegisterChange {
    /// What changed from `old` to `new` (the same fiscal code), if anything the citizen should
    /// know of did.
    pub fn between(old: &Resident, new: &Resident) -> Option<Self> {
        let (was, is) = (&old.personal_data, &new.personal_data);
        let year = |d: NaiveDate| format!("{}-**-**", d.format("%Y"));
        // (field, changed, old masked, new masked). A change only in a masked part still shows
        // as a line: the mask hides the value, not the fact.
        let fields = [
            (
                "surname",
                was.surname != is.surname,
                mask::postal(&was.surname),
                mask::postal(&is.surname),
            ),
            (
                "given_name",
                was.given_name != is.given_name,
                mask::postal(&was.given_name),
                mask::postal(&is.given_name),
            ),
            (
                "birth_date",
                was.birth_date != is.birth_date,
                year(was.birth_date),
                year(is.birth_date),
            ),
            ("sex", was.sex != is.sex, sex_letter(was.sex).into(), sex_letter(is.sex).into()),
            (
                "birthplace",
                was.birthplace.code != is.birthplace.code,
                was.birthplace.code.into(),
                is.birthplace.code.into(),
            ),
        ];
        let anagrafica = fields.iter().any(|f| f.1);
        let (old_lines, new_lines) = (old.residence.address_lines(), new.residence.address_lines());
        let residence = old_lines != new_lines;
        if !anagrafica && !residence {
            return None;
        }
        let mut lines: Vec<String> = Vec::new();
        if residence {
            let flat = |l: &str| masked_address(l).replace('\n', ", ");
            lines.push(format!("residence: {} → {}", flat(&old_lines), flat(&new_lines)));
        }
        for (field, _, before, after) in fields.into_iter().filter(|f| f.1) {
            lines.push(format!("{field}: {before} → {after}"));
        }
        Some(RegisterChange { residence, anagrafica, detail: lines.join("\n") })
    }

    /// The outcome the audit row records.
    pub fn outcome(&self) -> &'static str {
        match (self.residence, self.anagrafica) {
            (true, true) => "RESIDENCE_AND_ANAGRAFICA_CHANGED",
            (true, false) => "RESIDENCE_CHANGED",
            _ => "ANAGRAFICA_CHANGED",
        }
    }
}

/// The Belfiore entry of `code` valid on `on`, else its latest one: a stored code whose
/// municipality was merged away since still names a place for the letter.
pub fn place(code: &str, on: NaiveDate) -> Option<&'static Place> {
    belfiore::lookup(code, on).ok().or_else(|| belfiore::by_code(code).last())
}

/// What the register said about a request; recorded with it and in the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterCheck {
    OnRegister,
    AnagraficaMismatch,
    NotOnRegister,
    ForeignResidence,
}

impl RegisterCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterCheck::OnRegister => "ON_REGISTER",
            RegisterCheck::AnagraficaMismatch => "ANAGRAFICA_MISMATCH",
            RegisterCheck::NotOnRegister => "NOT_ON_REGISTER",
            RegisterCheck::ForeignResidence => "FOREIGN_RESIDENCE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RegisterCheck::OnRegister,
            RegisterCheck::AnagraficaMismatch,
            RegisterCheck::NotOnRegister,
            RegisterCheck::ForeignResidence,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// Why a request with this check waits for the contact center, if it does.
    pub fn pending_reason(self) -> Option<&'static str> {
        match self {
            RegisterCheck::NotOnRegister => {
                Some("fiscal code not on the register of residents: verify the caller's identity and residence by phone")
            }
            RegisterCheck::ForeignResidence => {
                Some("residence abroad on the register: verify the caller's identity and address by phone")
            }
            RegisterCheck::OnRegister | RegisterCheck::AnagraficaMismatch => None,
        }
    }
}

/// Where the letter with the second half goes, if anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LetterDecision {
    /// Issue the PIN; the letter goes to these postal lines (the registered residence).
    SendTo(String),
    /// The form disagrees with the register: issue nothing, send nothing.
    Mismatch,
    /// Issue nothing yet: the contact center validates the request first.
    PendingValidation(RegisterCheck),
}

impl LetterDecision {
    pub fn check(&self) -> RegisterCheck {
        match self {
            LetterDecision::SendTo(_) => RegisterCheck::OnRegister,
            LetterDecision::Mismatch => RegisterCheck::AnagraficaMismatch,
            LetterDecision::PendingValidation(check) => *check,
        }
    }
}

/// The rule of issue 8 §6 for a request `form` and the register's entry for its fiscal code.
/// The form's residence plays no part: the register's is the one that counts.
pub fn decide(entry: Option<&Resident>, form: &PinRequest) -> LetterDecision {
    let Some(entry) = entry else {
        return LetterDecision::PendingValidation(RegisterCheck::NotOnRegister);
    };
    if !same_person(&entry.personal_data, &form.personal_data) {
        return LetterDecision::Mismatch;
    }
    if entry.residence.is_abroad() {
        return LetterDecision::PendingValidation(RegisterCheck::ForeignResidence);
    }
    LetterDecision::SendTo(entry.postal_lines())
}

/// Whether two anagrafiche name the same person: names compared as registers write them
/// ("D'Angelo" = "DANGELO", "Nicolò" = "NICOLO'"), birth date, sex and birthplace exactly.
fn same_person(registered: &PersonalData, given: &PersonalData) -> bool {
    fold_name(&registered.surname) == fold_name(&given.surname)
        && fold_name(&registered.given_name) == fold_name(&given.given_name)
        && registered.birth_date == given.birth_date
        && registered.sex == given.sex
        && registered.birthplace.code == given.birthplace.code
}

/// Upper-case ASCII letters only: accents stripped, spaces, apostrophes and hyphens dropped.
pub(crate) fn fold_name(name: &str) -> String {
    name.chars()
        .map(|c| belfiore::strip_accent(c).to_ascii_uppercase())
        .filter(char::is_ascii_uppercase)
        .collect()
}

/// `M` or `F`, as the register stores it.
pub fn sex_letter(sex: Sex) -> &'static str {
    match sex {
        Sex::Male => "M",
        Sex::Female => "F",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2020, 4, 1).expect("date")
    }

    fn person(surname: &str, given: &str) -> wire::PersonalData {
        wire::PersonalData {
            surname: surname.into(),
            given_name: given.into(),
            birth_date: Some(wire::Date { year: 1985, month: 12, day: 10 }),
            sex: wire::Sex::Male as i32,
            birth_province: "PI".into(),
            birth_municipality: "San Giuliano Terme".into(),
            birth_country: String::new(),
        }
    }

    fn italy(street: &str) -> wire::Residence {
        wire::Residence {
            place: Some(wire::residence::Place::Italy(wire::ItalianAddress {
                street: street.into(),
                street_number: "1".into(),
                postal_code: "56017".into(),
                province: "PI".into(),
                municipality: "San Giuliano Terme".into(),
            })),
        }
    }

    fn abroad() -> wire::Residence {
        wire::Residence {
            place: Some(wire::residence::Place::Abroad(wire::ForeignAddress {
                country: "Francia".into(),
                address: "1 rue de la Paix\n75002 Paris".into(),
            })),
        }
    }

    fn resident(surname: &str, residence: wire::Residence) -> Resident {
        let record = wire::ResidentRecord {
            line: 2,
            fiscal_code: "RSSMRA85T10A562S".into(),
            personal_data: Some(person(surname, "Mario")),
            residence: Some(residence),
        };
        Resident::parse(&record, today()).expect("valid entry")
    }

    fn form(surname: &str, street: &str) -> PinRequest {
        let req = wire::RequestPinRequest {
            fiscal_code: "RSSMRA85T10A562S".into(),
            personal_data: Some(person(surname, "Mario")),
            residence: Some(italy(street)),
            contacts: Some(wire::Contacts {
                mobile_phone: "+39 333 1234567".into(),
                email: "mario.rossi@example.it".into(),
                preferred_time_slot: wire::TimeSlot::Morning as i32,
                ..Default::default()
            }),
            first_half_channel: wire::DeliveryChannel::Sms as i32,
        };
        PinRequest::parse(&req, today()).expect("valid form")
    }

    #[test]
    fn the_letter_goes_to_the_registered_residence_not_the_one_on_the_form() {
        let entry = resident("Rossi", italy("Via Roma"));
        let decision = decide(Some(&entry), &form("Rossi", "Via del Ladro"));
        assert_eq!(
            decision,
            LetterDecision::SendTo("Mario Rossi\nVia Roma 1\n56017 San Giuliano Terme (PI)".into())
        );
        assert_eq!(decision.check(), RegisterCheck::OnRegister);
    }

    #[test]
    fn an_anagrafica_disagreeing_with_the_register_is_a_mismatch() {
        // "Rossini" has the same surname letters as "Rossi" (RSS), so the form is valid.
        let entry = resident("Rossini", italy("Via Roma"));
        assert_eq!(decide(Some(&entry), &form("Rossi", "Via Roma")), LetterDecision::Mismatch);
    }

    #[test]
    fn names_are_compared_as_registers_write_them() {
        assert_eq!(fold_name("D'Àngelo-Rossi"), "DANGELOROSSI");
        assert_eq!(fold_name("Nicolò"), fold_name("NICOLO'"));
    }

    #[test]
    fn a_fiscal_code_not_on_the_register_waits_for_the_contact_center() {
        assert_eq!(
            decide(None, &form("Rossi", "Via Roma")),
            LetterDecision::PendingValidation(RegisterCheck::NotOnRegister)
        );
    }

    #[test]
    fn a_residence_abroad_on_the_register_waits_for_the_contact_center() {
        let entry = resident("Rossi", abroad());
        assert_eq!(
            decide(Some(&entry), &form("Rossi", "Via Roma")),
            LetterDecision::PendingValidation(RegisterCheck::ForeignResidence)
        );
        assert!(RegisterCheck::ForeignResidence.pending_reason().is_some());
    }

    #[test]
    fn a_register_entry_is_checked_like_a_form_with_paths_of_the_record() {
        let record = wire::ResidentRecord {
            line: 7,
            fiscal_code: "RSSMRA85T10A562S".into(),
            personal_data: Some(person("Bianchi", "Mario")),
            residence: Some(wire::Residence {
                place: Some(wire::residence::Place::Italy(wire::ItalianAddress {
                    postal_code: "5601".into(),
                    ..Default::default()
                })),
            }),
        };
        let v = Resident::parse(&record, today()).expect_err("rejected");
        let paths: Vec<&str> = v.iter().map(|(p, _)| p).collect();
        assert!(paths.contains(&"personal_data.surname"), "{paths:?}");
        assert!(paths.contains(&"residence.italy.postal_code"), "{paths:?}");
    }

    #[test]
    fn a_move_is_a_change_shown_masked_and_the_same_entry_none() {
        let old = resident("Rossi", italy("Via Roma"));
        assert_eq!(RegisterChange::between(&old, &old), None);
        let moved = resident("Rossi", abroad());
        let change = RegisterChange::between(&old, &moved).expect("moved");
        assert_eq!((change.residence, change.anagrafica), (true, false));
        assert_eq!(change.outcome(), "RESIDENCE_CHANGED");
        assert_eq!(
            change.detail,
            "residence: Via***, 56017 San Giuliano Terme (PI) → 1 r***, 750***, FRANCIA"
        );
        let renamed = resident("Rossini", italy("Via Roma"));
        let change = RegisterChange::between(&old, &renamed).expect("renamed");
        assert_eq!(change.outcome(), "ANAGRAFICA_CHANGED");
        assert_eq!(change.detail, "surname: Ros*** → Ros***");
    }
}
