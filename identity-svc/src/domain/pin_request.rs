//! A PIN request (DOMAIN.md §4.1), parsed from the wire once: after this, the fiscal code is a
//! checked [`CodiceFiscale`] that agrees with the anagrafica, the residence names a real place,
//! and the contacts are well-formed.
//!
//! Every problem is reported at once, as a field violation on the proto path of the field
//! (`personal_data.birth_date`, `residence.italy.postal_code`, `contacts.preferred_phone`). The
//! descriptions never repeat what the citizen typed: the request carries personal data, and
//! violations end up in responses and logs.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sportello_platform::error::FieldViolations;
use sportello_proto::identity::v1::{self as wire, residence::Place as WirePlace, DeliveryChannel};

use super::belfiore::{self, Place};
use super::codice_fiscale::{name_code_for, surname_code_for, CfError, CodiceFiscale, Sex};
use sportello_domain::phone::PhoneError;
use sportello_domain::text::{self, PersonName, PostalAddress};
use sportello_domain::{Email, PhoneNumber};

/// Longest surname or given name accepted, in characters.
pub use sportello_domain::text::NAME_MAX_CHARS;
const STREET_MAX_CHARS: usize = 100;
const STREET_NUMBER_MAX_CHARS: usize = 10;
/// Nobody born before this date can still be requesting a PIN; the Belfiore table's foreign
/// countries start on this date too.
const EARLIEST_BIRTH: (i32, u32, u32) = (1900, 1, 1);

/// Where the first half of a PIN goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    Sms,
    Email,
    Pec,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "SMS",
            Channel::Email => "EMAIL",
            Channel::Pec => "PEC",
        }
    }

    /// The inverse of [`Channel::as_str`] (case-insensitive), e.g. for a stored column.
    pub fn parse(s: &str) -> Option<Channel> {
        [Channel::Sms, Channel::Email, Channel::Pec]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// Which phone the contact center should call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhoneKind {
    Home,
    Mobile,
}

impl PhoneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PhoneKind::Home => "HOME",
            PhoneKind::Mobile => "MOBILE",
        }
    }

    /// The inverse of [`PhoneKind::as_str`] (case-insensitive).
    pub fn parse(s: &str) -> Option<PhoneKind> {
        [PhoneKind::Home, PhoneKind::Mobile]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// When the contact center may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSlot {
    Morning,
    Afternoon,
    Evening,
}

impl TimeSlot {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeSlot::Morning => "MORNING",
            TimeSlot::Afternoon => "AFTERNOON",
            TimeSlot::Evening => "EVENING",
        }
    }

    /// The inverse of [`TimeSlot::as_str`] (case-insensitive).
    pub fn parse(s: &str) -> Option<TimeSlot> {
        [TimeSlot::Morning, TimeSlot::Afternoon, TimeSlot::Evening]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// How to reach the citizen; at least one phone and one of email/PEC.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contacts {
    pub home_phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub email: Option<String>,
    pub pec: Option<String>,
}

impl fmt::Debug for Contacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Contacts(<redacted>)")
    }
}

impl Contacts {
    /// Replaces the address of `channel` (an operator's correction).
    pub fn set(&mut self, channel: Channel, address: String) {
        let slot = match channel {
            Channel::Sms => &mut self.mobile_phone,
            Channel::Email => &mut self.email,
            Channel::Pec => &mut self.pec,
        };
        *slot = Some(address);
    }

    /// The address `channel` delivers to, if the citizen gave one.
    pub fn address(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Sms => self.mobile_phone.as_deref(),
            Channel::Email => self.email.as_deref(),
            Channel::Pec => self.pec.as_deref(),
        }
    }

    /// The phone number of that kind, if the citizen gave one.
    pub fn phone(&self, kind: PhoneKind) -> Option<&str> {
        match kind {
            PhoneKind::Home => self.home_phone.as_deref(),
            PhoneKind::Mobile => self.mobile_phone.as_deref(),
        }
    }
}

/// The anagrafica, checked against the fiscal code: the surname and name letter groups, the
/// birth date, the sex and the birthplace all agree with it.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonalData {
    /// Trimmed, runs of spaces collapsed, typographic apostrophes made ASCII; case as given.
    pub surname: String,
    /// Normalised like `surname`.
    pub given_name: String,
    /// The full date, whose last two year digits, month and day are those of the fiscal code
    /// (the anagrafica settles the century the code cannot tell).
    pub birth_date: NaiveDate,
    pub sex: Sex,
    /// The Belfiore entry of the fiscal code's birthplace as it was on the birth date.
    pub birthplace: &'static Place,
}

impl fmt::Debug for PersonalData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalData(<redacted>)")
    }
}

/// Where the citizen lives: the second half of the PIN is posted there.
#[derive(Clone, PartialEq, Eq)]
pub enum Residence {
    Italy {
        street: String,
        street_number: String,
        /// CAP: exactly five ASCII digits.
        postal_code: String,
        /// Upper-case two-letter code of a province in use today; equal to
        /// `municipality.province`.
        province: String,
        /// The municipality's Belfiore entry valid on the day of the request.
        municipality: &'static Place,
    },
    Abroad {
        /// A foreign country's Belfiore entry (`Z...`) valid on the day of the request.
        country: &'static Place,
        /// Free-form, one to five non-empty lines separated by `\n`, each trimmed.
        address: String,
    },
}

impl fmt::Debug for Residence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Residence(<redacted>)")
    }
}

impl Residence {
    /// The address block of the postal letter carrying the second half of the PIN, lines
    /// separated by `\n`:
    ///
    /// ```text
    /// Mario Rossi                      Mario Rossi
    /// Via Roma 1                       12 Main Street
    /// 56017 San Giuliano Terme (PI)    Springfield, IL 62701
    ///                                  STATI UNITI D'AMERICA
    /// ```
    ///
    /// Abroad, the country comes last in capitals, as international mail wants it.
    pub fn postal_lines(&self, surname: &str, given_name: &str) -> String {
        format!("{} {}\n{}", given_name.trim(), surname.trim(), self.address_lines())
    }

    /// The address without the addressee, lines separated by `\n`.
    pub fn address_lines(&self) -> String {
        match self {
            Residence::Italy { street, street_number, postal_code, province, municipality } => {
                format!(
                    "{street} {street_number}\n{postal_code} {} ({province})",
                    municipality.name
                )
            }
            Residence::Abroad { country, address } => {
                format!("{address}\n{}", country.name.to_uppercase())
            }
        }
    }

    pub fn is_abroad(&self) -> bool {
        matches!(self, Residence::Abroad { .. })
    }
}

/// Address lines (`\n`-separated) as operators and the audit trail show them: the town (or
/// country) in full, the lines before it masked.
pub fn masked_address(lines: &str) -> String {
    let lines: Vec<&str> = lines.lines().collect();
    let (last, rest) = lines.split_last().map_or(("", &[][..]), |(l, r)| (*l, r));
    rest.iter()
        .map(|l| sportello_platform::mask::postal(l))
        .chain(std::iter::once(last.to_owned()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a request form said, kept with the request so that an operator can verify a caller
/// against it and call back (DOMAIN.md §4.2); PIN-free, and never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormRecord {
    pub surname: String,
    pub given_name: String,
    pub birth_date: NaiveDate,
    /// `M` or `F`.
    pub sex: String,
    /// `San Giuliano Terme (PI)`, or the country of birth.
    pub birthplace: String,
    /// [`Residence::address_lines`] of the residence given.
    pub residence: String,
    pub contacts: Contacts,
    pub preferred_phone: PhoneKind,
    pub preferred_time_slot: TimeSlot,
}

impl fmt::Debug for FormRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FormRecord(<redacted>)")
    }
}

impl FormRecord {
    /// The residence as an operator sees it: the town (or country) in full, to compare with
    /// what the caller says, the lines before it masked.
    pub fn masked_residence(&self) -> String {
        masked_address(&self.residence)
    }

    /// The number to call back on, in full: the operator dials it.
    pub fn callback_phone(&self) -> Option<&str> {
        self.contacts.phone(self.preferred_phone)
    }
}

/// A checked PIN request.
#[derive(Clone, Debug)]
pub struct PinRequest {
    pub fiscal_code: CodiceFiscale,
    pub personal_data: PersonalData,
    pub residence: Residence,
    pub contacts: Contacts,
    /// The phone the contact center should call; always one the citizen gave.
    pub preferred_phone: PhoneKind,
    pub preferred_time_slot: TimeSlot,
    pub first_half_channel: Channel,
}

impl PinRequest {
    /// What the form said, to keep with the request.
    pub fn form_record(&self) -> FormRecord {
        let pd = &self.personal_data;
        let place = pd.birthplace;
        FormRecord {
            surname: pd.surname.clone(),
            given_name: pd.given_name.clone(),
            birth_date: pd.birth_date,
            sex: match pd.sex {
                Sex::Male => "M".into(),
                Sex::Female => "F".into(),
            },
            birthplace: if place.is_foreign() {
                place.name.to_owned()
            } else {
                format!("{} ({})", place.name, place.province)
            },
            residence: self.residence.address_lines(),
            contacts: self.contacts.clone(),
            preferred_phone: self.preferred_phone,
            preferred_time_slot: self.preferred_time_slot,
        }
    }

    /// Checks a request as received. `today` resolves the century of the fiscal code's birth
    /// year (unless the anagrafica's birth date settles it), bounds the birth date and dates the
    /// residence's municipality or country.
    pub fn parse(req: &wire::RequestPinRequest, today: NaiveDate) -> Result<Self, FieldViolations> {
        let mut v = FieldViolations::new();
        let person = parse_person(
            &req.fiscal_code,
            req.personal_data.as_ref(),
            req.residence.as_ref(),
            today,
            &mut v,
        );
        let contacts = parse_contacts(req.contacts.as_ref(), &mut v);
        let (preferred_phone, preferred_time_slot) =
            parse_call_preferences(req.contacts.as_ref(), &contacts, &mut v);
        let first_half_channel = parse_channel(req.first_half_channel, &contacts, &mut v);
        match person {
            Some((fiscal_code, personal_data, residence)) if v.is_empty() => Ok(PinRequest {
                fiscal_code,
                personal_data,
                residence,
                contacts,
                preferred_phone,
                preferred_time_slot,
                first_half_channel,
            }),
            _ => {
                debug_assert!(!v.is_empty(), "a part was rejected without a violation");
                Err(v)
            }
        }
    }
}

/// The fiscal code, anagrafica and residence of a person, each checked and the anagrafica
/// checked against the code: the part of the form the register of residents also holds. Problems
/// go to `v`, on the same field paths as in a PIN request.
pub fn parse_person(
    fiscal_code: &str,
    personal_data: Option<&wire::PersonalData>,
    residence: Option<&wire::Residence>,
    today: NaiveDate,
    v: &mut FieldViolations,
) -> Option<(CodiceFiscale, PersonalData, Residence)> {
    let claimed_birth =
        personal_data.and_then(|pd| parse_birth_date(pd.birth_date.as_ref(), today).ok());
    let fiscal_code = match parse_fiscal_code(fiscal_code, claimed_birth, today) {
        Ok(cf) => Some(cf),
        Err(e) => {
            v.add("fiscal_code", e.to_string());
            None
        }
    };
    let personal_data = parse_personal_data(personal_data, fiscal_code.as_ref(), today, v);
    let residence = parse_residence(residence, today, v);
    Some((fiscal_code?, personal_data?, residence?))
}

// ---------------------------------------------------------------------------------------------
// Fiscal code and anagrafica

/// Parses the fiscal code, letting a plausible anagrafica birth date settle the century.
///
/// The code has only two year digits, and `CodiceFiscale::parse` takes the latest century not
/// after `today`: a citizen born in 1920 gets 2020. When the anagrafica gives a date with the
/// same two digits, month and day, the code is re-read as of that date, so that its birthplace
/// is checked on the real birth date (a municipality suppressed in 2019 did exist in 1920).
/// The re-reading is kept only if it yields exactly the claimed date; otherwise the first
/// reading stands and the disagreement is reported on `personal_data.birth_date`.
fn parse_fiscal_code(
    input: &str,
    claimed_birth: Option<NaiveDate>,
    today: NaiveDate,
) -> Result<CodiceFiscale, CfError> {
    let first = CodiceFiscale::parse(input, today);
    let Some(claimed) = claimed_birth else {
        return first;
    };
    if first.as_ref().is_ok_and(|cf| cf.birth_date() == claimed) {
        return first;
    }
    match CodiceFiscale::parse(input, claimed) {
        Ok(cf) if cf.birth_date() == claimed => Ok(cf),
        _ => first,
    }
}

fn parse_personal_data(
    wire: Option<&wire::PersonalData>,
    cf: Option<&CodiceFiscale>,
    today: NaiveDate,
    v: &mut FieldViolations,
) -> Option<PersonalData> {
    let Some(pd) = wire else {
        v.add("personal_data", "is required: surname, given name, birth date, sex and birthplace");
        return None;
    };

    let surname = field(
        v,
        "personal_data.surname",
        name_agreeing(&pd.surname, cf.map(|cf| cf.surname_code()), surname_code_for, "surname"),
    );
    let given_name = field(
        v,
        "personal_data.given_name",
        name_agreeing(&pd.given_name, cf.map(|cf| cf.name_code()), name_code_for, "given-name"),
    );
    let birth_date = field(
        v,
        "personal_data.birth_date",
        parse_birth_date(pd.birth_date.as_ref(), today).and_then(|d| match cf {
            Some(cf) if cf.birth_date() != d => {
                Err("does not match the birth date in the fiscal code".into())
            }
            _ => Ok(d),
        }),
    );
    let sex = field(
        v,
        "personal_data.sex",
        parse_sex(pd.sex).and_then(|s| match cf {
            Some(cf) if cf.sex() != s => Err("does not match the sex in the fiscal code".into()),
            _ => Ok(s),
        }),
    );
    // With a valid code, its (century-settled) birth date dates the birthplace names; without
    // one, the anagrafica's own date, if it is valid.
    let birthplace = check_birthplace(
        pd,
        cf.map(CodiceFiscale::birthplace),
        cf.map(CodiceFiscale::birth_date).or(birth_date),
        today,
        v,
    );

    Some(PersonalData {
        surname: surname?,
        given_name: given_name?,
        birth_date: birth_date?,
        sex: sex?,
        birthplace: cf.and(birthplace)?,
    })
}

/// Records `result`'s error, if any, as a violation on `path`.
fn field<T>(v: &mut FieldViolations, path: &str, result: Result<T, String>) -> Option<T> {
    result.map_err(|e| v.add(path, e)).ok()
}

/// A name that must agree with its three letters in the fiscal code (when the code is valid).
fn name_agreeing(
    raw: &str,
    letters_in_cf: Option<&str>,
    letters_of: fn(&str) -> String,
    which: &str,
) -> Result<String, String> {
    parse_name(raw).and_then(|name| match letters_in_cf {
        Some(letters) if letters_of(&name) != letters => {
            Err(format!("does not match the {which} letters of the fiscal code"))
        }
        _ => Ok(name),
    })
}

/// A surname or given name: see [`PersonName`].
fn parse_name(raw: &str) -> Result<String, String> {
    PersonName::parse(raw).map(String::from).map_err(|e| e.to_string())
}

fn parse_birth_date(date: Option<&wire::Date>, today: NaiveDate) -> Result<NaiveDate, String> {
    let Some(date) = date else {
        return Err("is required".into());
    };
    let (Ok(month), Ok(day)) = (u32::try_from(date.month), u32::try_from(date.day)) else {
        return Err("is not a valid calendar date".into());
    };
    let date = NaiveDate::from_ymd_opt(date.year, month, day)
        .ok_or_else(|| "is not a valid calendar date".to_owned())?;
    if date > today {
        return Err("is in the future".into());
    }
    let (y, m, d) = EARLIEST_BIRTH;
    if NaiveDate::from_ymd_opt(y, m, d).is_some_and(|earliest| date < earliest) {
        return Err(format!("must not be before {y}"));
    }
    Ok(date)
}

fn parse_sex(sex: i32) -> Result<Sex, String> {
    match wire::Sex::try_from(sex) {
        Ok(wire::Sex::Male) => Ok(Sex::Male),
        Ok(wire::Sex::Female) => Ok(Sex::Female),
        Ok(wire::Sex::Unspecified) => Err("is required".into()),
        Err(_) => Err("is not a known value".into()),
    }
}

/// Checks the birthplace fields and returns the place they name.
///
/// With a valid fiscal code (`expected` is its birthplace), the fields must name that very
/// Belfiore code: an Italian municipality by its province and name, a foreign country by its
/// name, compared ignoring case, accents and punctuation. The name and province may be those of
/// the birth date or today's for the same code (people often give the current name of a
/// renamed municipality, or the province it moved to), but a municipality merged into a new
/// one has a new code and must be given by its old name.
///
/// Without a valid code the fields are checked on their own, so that the citizen learns of
/// every problem at once; `on` is then the anagrafica's birth date, if valid.
fn check_birthplace(
    pd: &wire::PersonalData,
    expected: Option<&'static Place>,
    on: Option<NaiveDate>,
    today: NaiveDate,
    v: &mut FieldViolations,
) -> Option<&'static Place> {
    const PROVINCE: &str = "personal_data.birth_province";
    const MUNICIPALITY: &str = "personal_data.birth_municipality";
    const COUNTRY: &str = "personal_data.birth_country";

    let province = pd.birth_province.trim().to_ascii_uppercase();
    let municipality = pd.birth_municipality.trim();
    let country = pd.birth_country.trim();
    let born_abroad = match expected {
        Some(place) => place.is_foreign(),
        None => !country.is_empty() && !is_italy(country),
    };
    // Same Belfiore code, whatever the period (name or province may have changed).
    let same =
        |found: Option<&'static Place>, place: &Place| found.is_some_and(|f| f.code == place.code);
    let mut ok = true;

    if born_abroad {
        if !(province.is_empty() || province == "EE") {
            v.add(PROVINCE, "must be empty for a person born abroad");
            ok = false;
        }
        if !municipality.is_empty() {
            v.add(MUNICIPALITY, "must be empty for a person born abroad");
            ok = false;
        }
        if country.is_empty() {
            let why = if expected.is_some() {
                "is required: the fiscal code gives a birthplace abroad"
            } else {
                "is required for a person born abroad"
            };
            v.add(COUNTRY, why);
            return None;
        }
        let on_birth = on.and_then(|d| belfiore::find_country(country, d));
        let on_today = belfiore::find_country(country, today);
        let found = match expected {
            Some(place) if same(on_birth, place) || same(on_today, place) => Some(place),
            Some(_) => {
                v.add(COUNTRY, "does not match the country of birth in the fiscal code");
                None
            }
            None => {
                let found = on_birth.or(on_today);
                if found.is_none() && on.is_some() {
                    v.add(COUNTRY, "is not a known country");
                }
                found
            }
        };
        return found.filter(|_| ok);
    }

    if !(country.is_empty() || is_italy(country)) {
        v.add(COUNTRY, "must be empty for a person born in Italy");
        ok = false;
    }
    if province.is_empty() {
        v.add(PROVINCE, "is required for a person born in Italy");
        ok = false;
    } else if !is_province_code(&province) || !belfiore::is_known_province(&province) {
        v.add(PROVINCE, "is not a known Italian province code");
        ok = false;
    }
    if municipality.is_empty() {
        v.add(MUNICIPALITY, "is required for a person born in Italy");
        return None;
    }
    if !ok {
        return None;
    }
    let named = |prov: &str, d: NaiveDate| belfiore::find_municipality(municipality, prov, d);
    match expected {
        Some(place) => {
            let on = on.unwrap_or(today);
            if same(named(&province, on), place) || same(named(&province, today), place) {
                return Some(place);
            }
            // Tell a right name in the wrong province from a wrong name.
            let province_today = belfiore::lookup(place.code, today).ok().map(|p| p.province);
            let name_is_right = same(named(place.province, on), place)
                || province_today.is_some_and(|p| same(named(p, today), place));
            if name_is_right {
                v.add(PROVINCE, "does not match the birthplace in the fiscal code");
            } else {
                v.add(
                    MUNICIPALITY,
                    "does not match the birthplace in the fiscal code \
                     (give the municipality as it was named on the birth date)",
                );
            }
            None
        }
        None => {
            let on = on?;
            let found = named(&province, on).or_else(|| named(&province, today));
            if found.is_none() {
                v.add(
                    MUNICIPALITY,
                    "is not a municipality of the given province on the birth date",
                );
            }
            found
        }
    }
}

fn is_province_code(p: &str) -> bool {
    p.len() == 2 && p.bytes().all(|b| b.is_ascii_uppercase())
}

/// Whether `name` names Italy, which has no Belfiore country code.
fn is_italy(name: &str) -> bool {
    let key: String =
        name.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase()).collect();
    matches!(key.as_str(), "italia" | "italy" | "repubblicaitaliana")
}

// ---------------------------------------------------------------------------------------------
// Residence

fn parse_residence(
    wire: Option<&wire::Residence>,
    today: NaiveDate,
    v: &mut FieldViolations,
) -> Option<Residence> {
    match wire.and_then(|r| r.place.as_ref()) {
        Some(WirePlace::Italy(a)) => parse_italian_address(a, today, v),
        Some(WirePlace::Abroad(a)) => parse_foreign_address(a, today, v),
        None => {
            v.add("residence", "is required: an address in Italy or abroad");
            None
        }
    }
}

fn parse_italian_address(
    a: &wire::ItalianAddress,
    today: NaiveDate,
    v: &mut FieldViolations,
) -> Option<Residence> {
    let street = field(v, "residence.italy.street", required_line(&a.street, STREET_MAX_CHARS));
    let street_number = field(
        v,
        "residence.italy.street_number",
        required_line(&a.street_number, STREET_NUMBER_MAX_CHARS).and_then(|n| {
            let shape = n.chars().any(|c| c.is_ascii_alphanumeric())
                && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '/' | '-'));
            if shape {
                Ok(n)
            } else {
                Err("must be a house number such as 12, 12/A or SNC".into())
            }
        }),
    );
    let postal_code = a.postal_code.trim();
    let postal_code = field(
        v,
        "residence.italy.postal_code",
        if postal_code.len() == 5 && postal_code.bytes().all(|b| b.is_ascii_digit()) {
            Ok(postal_code.to_owned())
        } else {
            Err("must be exactly 5 digits".into())
        },
    );
    let province = a.province.trim().to_ascii_uppercase();
    let province = field(
        v,
        "residence.italy.province",
        if province.is_empty() {
            Err("is required".into())
        } else if is_province_code(&province) && belfiore::is_province_in_use(&province, today) {
            Ok(province)
        } else {
            Err("is not the two-letter code of a current Italian province, e.g. RM".into())
        },
    );
    let name = a.municipality.trim();
    let municipality = if name.is_empty() {
        v.add("residence.italy.municipality", "is required");
        None
    } else {
        // Without a valid province the municipality cannot be checked: the province's
        // violation says what to fix.
        let province = province.as_deref()?;
        let found = belfiore::find_municipality(name, province, today);
        if found.is_none() {
            v.add(
                "residence.italy.municipality",
                "is not a current municipality of the given province",
            );
        }
        found
    };
    Some(Residence::Italy {
        street: street?,
        street_number: street_number?,
        postal_code: postal_code?,
        province: province?,
        municipality: municipality?,
    })
}

fn parse_foreign_address(
    a: &wire::ForeignAddress,
    today: NaiveDate,
    v: &mut FieldViolations,
) -> Option<Residence> {
    let name = a.country.trim();
    let country = field(
        v,
        "residence.abroad.country",
        if name.is_empty() {
            Err("is required".into())
        } else if is_italy(name) {
            Err("an address in Italy goes in residence.italy".into())
        } else {
            belfiore::find_country(name, today).ok_or_else(|| "is not a known country".into())
        },
    );
    let address = field(v, "residence.abroad.address", foreign_address(&a.address));
    Some(Residence::Abroad { country: country?, address: address? })
}

/// One line of free text: required, spaces collapsed, printable, at most `max` characters.
fn required_line(raw: &str, max: usize) -> Result<String, String> {
    text::line(raw, max).map_err(|e| e.to_string())
}

/// A free-form foreign address: see [`PostalAddress`].
fn foreign_address(raw: &str) -> Result<String, String> {
    PostalAddress::parse(raw).map(String::from).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Contacts

fn optional(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// An optional email or PEC address, lower-cased; an invalid one is kept as given (so that the
/// checks below do not also call it missing) and reported.
fn email(v: &mut FieldViolations, field: &str, raw: &str) -> Option<String> {
    let given = optional(raw)?;
    match Email::parse(&given) {
        Ok(email) => Some(email.into()),
        Err(e) => {
            v.add(field, e.to_string());
            Some(given)
        }
    }
}

fn parse_contacts(wire: Option<&wire::Contacts>, v: &mut FieldViolations) -> Contacts {
    let Some(c) = wire else {
        v.add("contacts", "is required: at least one phone and one of email or PEC");
        return Contacts { home_phone: None, mobile_phone: None, email: None, pec: None };
    };
    let mut phone = |field: &str, raw: &str, parse: fn(&str) -> Result<PhoneNumber, PhoneError>| {
        let given = optional(raw)?;
        match parse(&given) {
            Ok(number) => Some(String::from(number)),
            Err(e) => {
                v.add(field, e.to_string());
                // An invalid number is kept as given, so the checks below do not also call it
                // missing.
                Some(given)
            }
        }
    };
    let contacts = Contacts {
        home_phone: phone("contacts.home_phone", &c.home_phone, PhoneNumber::parse),
        // The first half of a PIN may go by SMS: a landline cannot take it.
        mobile_phone: phone("contacts.mobile_phone", &c.mobile_phone, PhoneNumber::parse_mobile),
        email: email(v, "contacts.email", &c.email),
        pec: email(v, "contacts.pec", &c.pec),
    };
    if contacts.home_phone.is_none() && contacts.mobile_phone.is_none() {
        v.add("contacts.mobile_phone", "give at least one phone number (home or mobile)");
    }
    if contacts.email.is_none() && contacts.pec.is_none() {
        v.add("contacts.email", "give at least one of email or PEC");
    }
    contacts
}

/// The preferred phone (by default the mobile if given, else the home phone) and time slot.
/// Without a contacts message, the `contacts` violation already covers both.
fn parse_call_preferences(
    wire: Option<&wire::Contacts>,
    contacts: &Contacts,
    v: &mut FieldViolations,
) -> (PhoneKind, TimeSlot) {
    let Some(c) = wire else {
        return (PhoneKind::Mobile, TimeSlot::Morning);
    };
    let phone = match wire::PhoneKind::try_from(c.preferred_phone) {
        Ok(wire::PhoneKind::Unspecified) => {
            if contacts.mobile_phone.is_none() && contacts.home_phone.is_some() {
                PhoneKind::Home
            } else {
                PhoneKind::Mobile
            }
        }
        Ok(wire::PhoneKind::Home) => PhoneKind::Home,
        Ok(wire::PhoneKind::Mobile) => PhoneKind::Mobile,
        Err(_) => {
            v.add("contacts.preferred_phone", "is not a known value");
            PhoneKind::Mobile
        }
    };
    let no_phone_at_all = contacts.home_phone.is_none() && contacts.mobile_phone.is_none();
    if c.preferred_phone != 0 && contacts.phone(phone).is_none() && !no_phone_at_all {
        let why = match phone {
            PhoneKind::Home => "refers to a home phone that was not given",
            PhoneKind::Mobile => "refers to a mobile phone that was not given",
        };
        v.add("contacts.preferred_phone", why);
    }
    let slot = match wire::TimeSlot::try_from(c.preferred_time_slot) {
        Ok(wire::TimeSlot::Morning) => TimeSlot::Morning,
        Ok(wire::TimeSlot::Afternoon) => TimeSlot::Afternoon,
        Ok(wire::TimeSlot::Evening) => TimeSlot::Evening,
        Ok(wire::TimeSlot::Unspecified) => {
            v.add("contacts.preferred_time_slot", "is required: morning, afternoon or evening");
            TimeSlot::Morning
        }
        Err(_) => {
            v.add("contacts.preferred_time_slot", "is not a known value");
            TimeSlot::Morning
        }
    };
    (phone, slot)
}

fn parse_channel(wire: i32, contacts: &Contacts, v: &mut FieldViolations) -> Channel {
    let channel = match DeliveryChannel::try_from(wire) {
        Ok(DeliveryChannel::Sms) => Channel::Sms,
        Ok(DeliveryChannel::Email) => Channel::Email,
        Ok(DeliveryChannel::Pec) => Channel::Pec,
        Ok(DeliveryChannel::Unspecified) => {
            if contacts.mobile_phone.is_some() {
                Channel::Sms
            } else if contacts.email.is_some() {
                Channel::Email
            } else if contacts.address(Channel::Pec).is_some() {
                Channel::Pec
            } else {
                // No contact at all: `contacts` says so; a channel to blame would mislead.
                return Channel::Sms;
            }
        }
        Err(_) => {
            v.add("first_half_channel", "unknown channel");
            return Channel::Sms;
        }
    };
    if contacts.address(channel).is_none() {
        v.add("first_half_channel", format!("no {} contact was given", channel.as_str()));
    }
    channel
}

#[cfg(test)]
mod tests {
    use super::super::codice_fiscale::compute;
    use super::*;

    // Mario Rossi, born 1985-12-10 in San Giuliano Terme (PI), Belfiore A562.
    const ROSSI: &str = "RSSMRA85T10A562S";

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    fn today() -> NaiveDate {
        date(2020, 4, 1)
    }

    fn wire_date(y: i32, m: i32, d: i32) -> Option<wire::Date> {
        Some(wire::Date { year: y, month: m, day: d })
    }

    fn born_in_italy(
        surname: &str,
        given_name: &str,
        (y, m, d): (i32, i32, i32),
        sex: wire::Sex,
        province: &str,
        municipality: &str,
    ) -> wire::PersonalData {
        wire::PersonalData {
            surname: surname.into(),
            given_name: given_name.into(),
            birth_date: wire_date(y, m, d),
            sex: sex as i32,
            birth_province: province.into(),
            birth_municipality: municipality.into(),
            birth_country: String::new(),
        }
    }

    fn born_abroad(
        surname: &str,
        given_name: &str,
        (y, m, d): (i32, i32, i32),
        sex: wire::Sex,
        country: &str,
    ) -> wire::PersonalData {
        wire::PersonalData {
            birth_country: country.into(),
            ..born_in_italy(surname, given_name, (y, m, d), sex, "", "")
        }
    }

    fn italian_address(
        street: &str,
        number: &str,
        cap: &str,
        province: &str,
        municipality: &str,
    ) -> Option<wire::Residence> {
        Some(wire::Residence {
            place: Some(WirePlace::Italy(wire::ItalianAddress {
                street: street.into(),
                street_number: number.into(),
                postal_code: cap.into(),
                province: province.into(),
                municipality: municipality.into(),
            })),
        })
    }

    fn abroad_address(country: &str, address: &str) -> Option<wire::Residence> {
        Some(wire::Residence {
            place: Some(WirePlace::Abroad(wire::ForeignAddress {
                country: country.into(),
                address: address.into(),
            })),
        })
    }

    /// A complete, valid request for Mario Rossi.
    fn request() -> wire::RequestPinRequest {
        wire::RequestPinRequest {
            fiscal_code: ROSSI.into(),
            personal_data: Some(born_in_italy(
                "Rossi",
                "Mario",
                (1985, 12, 10),
                wire::Sex::Male,
                "PI",
                "San Giuliano Terme",
            )),
            residence: italian_address("Via Roma", "1", "56017", "PI", "San Giuliano Terme"),
            contacts: Some(wire::Contacts {
                mobile_phone: "+39 333 1234567".into(),
                email: "mario.rossi@example.it".into(),
                preferred_time_slot: wire::TimeSlot::Morning as i32,
                ..Default::default()
            }),
            first_half_channel: DeliveryChannel::Unspecified as i32,
        }
    }

    /// `request()` for someone else.
    fn request_for(fiscal_code: &str, person: wire::PersonalData) -> wire::RequestPinRequest {
        wire::RequestPinRequest {
            fiscal_code: fiscal_code.into(),
            personal_data: Some(person),
            ..request()
        }
    }

    fn person(req: &mut wire::RequestPinRequest) -> &mut wire::PersonalData {
        req.personal_data.as_mut().expect("personal data")
    }

    fn contacts(req: &mut wire::RequestPinRequest) -> &mut wire::Contacts {
        req.contacts.as_mut().expect("contacts")
    }

    fn italy(req: &mut wire::RequestPinRequest) -> &mut wire::ItalianAddress {
        match req.residence.as_mut().and_then(|r| r.place.as_mut()) {
            Some(WirePlace::Italy(a)) => a,
            _ => panic!("not an Italian residence"),
        }
    }

    fn accepted(req: &wire::RequestPinRequest) -> PinRequest {
        PinRequest::parse(req, today()).unwrap_or_else(|v| panic!("rejected: {v:?}"))
    }

    /// The paths of the violations, in order; empty when the request is accepted.
    fn violations(req: &wire::RequestPinRequest) -> Vec<String> {
        match PinRequest::parse(req, today()) {
            Ok(_) => Vec::new(),
            Err(v) => v.iter().map(|(f, _)| f.to_owned()).collect(),
        }
    }

    fn description(req: &wire::RequestPinRequest, path: &str) -> String {
        let v = PinRequest::parse(req, today()).expect_err("rejected");
        let found = v.iter().find(|(f, _)| *f == path).map(|(_, d)| d.to_owned());
        found.unwrap_or_else(|| panic!("no violation on {path}: {v:?}"))
    }

    // --- the whole form -------------------------------------------------------------------

    #[test]
    fn a_complete_request_is_accepted_with_checked_types() {
        let parsed = accepted(&request());
        assert_eq!(parsed.fiscal_code.as_str(), ROSSI);
        let pd = &parsed.personal_data;
        assert_eq!(pd.surname, "Rossi");
        assert_eq!(pd.given_name, "Mario");
        assert_eq!(pd.birth_date, date(1985, 12, 10));
        assert_eq!(pd.sex, Sex::Male);
        assert_eq!(pd.birthplace.code, "A562");
        match &parsed.residence {
            Residence::Italy { street, street_number, postal_code, province, municipality } => {
                assert_eq!(
                    (street.as_str(), street_number.as_str(), postal_code.as_str()),
                    ("Via Roma", "1", "56017")
                );
                assert_eq!(province, "PI");
                assert_eq!(municipality.name, "San Giuliano Terme");
            }
            Residence::Abroad { .. } => panic!("Italian residence expected"),
        }
        assert_eq!(parsed.contacts.mobile_phone.as_deref(), Some("+393331234567"));
        assert_eq!(parsed.preferred_phone, PhoneKind::Mobile);
        assert_eq!(parsed.preferred_time_slot, TimeSlot::Morning);
        assert_eq!(parsed.first_half_channel, Channel::Sms, "SMS is the default with a mobile");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let req = wire::RequestPinRequest {
            fiscal_code: "RSSMRA85T10A562S".into(),
            personal_data: Some(born_in_italy(
                "Bianchi",
                "Marco",
                (1985, 12, 11),
                wire::Sex::Female,
                "LU",
                "San Giuliano Terme",
            )),
            residence: italian_address("", "", "5601", "XX", "Pisa"),
            contacts: Some(wire::Contacts {
                home_phone: "164164".into(),
                email: "mario".into(),
                preferred_phone: wire::PhoneKind::Mobile as i32,
                ..Default::default()
            }),
            first_half_channel: DeliveryChannel::Pec as i32,
        };
        assert_eq!(
            violations(&req),
            [
                "personal_data.surname",
                "personal_data.given_name",
                "personal_data.birth_date",
                "personal_data.sex",
                "personal_data.birth_province",
                "residence.italy.street",
                "residence.italy.street_number",
                "residence.italy.postal_code",
                "residence.italy.province",
                "contacts.home_phone",
                "contacts.email",
                "contacts.preferred_phone",
                "contacts.preferred_time_slot",
                "first_half_channel",
            ]
        );
    }

    #[test]
    fn missing_personal_data_and_residence_are_violations() {
        let mut req = request();
        req.personal_data = None;
        req.residence = None;
        assert_eq!(violations(&req), ["personal_data", "residence"]);
        req.residence = Some(wire::Residence { place: None });
        assert_eq!(violations(&req), ["personal_data", "residence"]);
    }

    #[test]
    fn violations_never_echo_the_fiscal_code_names_addresses_or_contacts() {
        let secrets = [
            ROSSI,
            "Bianchi",
            "Marcello",
            "Atlantide",
            "Via Segreta",
            "+39 06 164164",
            "06 164164",
            "mario@",
            "mario.rossi@pec",
        ];
        let requests = [
            wire::RequestPinRequest {
                fiscal_code: ROSSI.into(),
                personal_data: Some(born_in_italy(
                    "Bianchi",
                    "Marcello",
                    (1985, 12, 11),
                    wire::Sex::Female,
                    "PI",
                    "Atlantide",
                )),
                residence: italian_address("Via Segreta", "1", "5601", "PI", "Atlantide"),
                contacts: Some(wire::Contacts {
                    home_phone: "06 164164".into(),
                    email: "mario@".into(),
                    pec: "mario.rossi@pec".into(),
                    ..Default::default()
                }),
                first_half_channel: DeliveryChannel::Sms as i32,
            },
            wire::RequestPinRequest {
                fiscal_code: "RSSMRA85T10A562T".into(),
                personal_data: Some(born_abroad(
                    "Bianchi",
                    "Marcello",
                    (1985, 12, 10),
                    wire::Sex::Male,
                    "Atlantide",
                )),
                residence: abroad_address("Atlantide", ""),
                contacts: Some(wire::Contacts {
                    mobile_phone: "+39 06 164164".into(),
                    preferred_phone: wire::PhoneKind::Home as i32,
                    ..Default::default()
                }),
                first_half_channel: DeliveryChannel::Pec as i32,
            },
        ];
        for req in requests {
            let v = PinRequest::parse(&req, today()).expect_err("rejected");
            assert!(v.iter().count() >= 5, "{v:?}");
            for (path, message) in v.iter() {
                for secret in secrets {
                    assert!(!message.contains(secret), "{path}: {message}");
                }
                assert!(!message.contains("RSSMRA"), "{path}: {message}");
            }
        }
    }

    #[test]
    fn a_wrong_check_character_is_a_fiscal_code_violation() {
        let mut req = request();
        req.fiscal_code = "RSSMRA85T10A562T".into();
        assert_eq!(violations(&req), ["fiscal_code"]);
    }

    // --- names ----------------------------------------------------------------------------

    #[test]
    fn surname_that_disagrees_with_the_fiscal_code_is_a_violation() {
        let mut req = request();
        person(&mut req).surname = "Bianchi".into();
        assert_eq!(violations(&req), ["personal_data.surname"]);
        assert_eq!(
            description(&req, "personal_data.surname"),
            "does not match the surname letters of the fiscal code"
        );
        // Same letter group: accepted, the code cannot tell.
        person(&mut req).surname = "Russo".into();
        assert!(violations(&req).is_empty());
    }

    #[test]
    fn given_name_that_disagrees_with_the_fiscal_code_is_a_violation() {
        let mut req = request();
        person(&mut req).given_name = "Marco".into();
        assert_eq!(violations(&req), ["personal_data.given_name"]);
    }

    #[test]
    fn names_may_have_accents_apostrophes_spaces_and_hyphens() {
        let code = compute("D'Àngelo-Neri", "Maria Lù", date(1990, 1, 1), Sex::Female, "H501");
        let req = request_for(
            &code,
            born_in_italy(
                "  D’Àngelo-Neri ",
                "Maria   Lù",
                (1990, 1, 1),
                wire::Sex::Female,
                "RM",
                "Roma",
            ),
        );
        let parsed = accepted(&req);
        assert_eq!(parsed.personal_data.surname, "D'Àngelo-Neri");
        assert_eq!(parsed.personal_data.given_name, "Maria Lù");
    }

    #[test]
    fn names_with_digits_symbols_or_over_sixty_characters_are_violations() {
        for bad in ["Rossi2", "Rossi!", "R_ssi", "'-", "Ro\u{0}ssi"] {
            let mut req = request();
            person(&mut req).surname = bad.into();
            assert_eq!(violations(&req), ["personal_data.surname"], "{bad:?}");
        }
        let mut req = request();
        person(&mut req).given_name = "   ".into();
        assert_eq!(description(&req, "personal_data.given_name"), "is required");
        person(&mut req).given_name = format!("Mario {}", "a".repeat(NAME_MAX_CHARS));
        assert_eq!(description(&req, "personal_data.given_name"), "must be at most 60 characters");
        person(&mut req).given_name = format!("Mario {}", "a".repeat(NAME_MAX_CHARS - 6));
        assert!(violations(&req).is_empty(), "exactly 60 characters");
    }

    // --- birth date and sex ---------------------------------------------------------------

    #[test]
    fn birth_date_that_disagrees_with_the_fiscal_code_is_a_violation() {
        let mut req = request();
        person(&mut req).birth_date = wire_date(1985, 12, 11);
        assert_eq!(violations(&req), ["personal_data.birth_date"]);
        assert_eq!(
            description(&req, "personal_data.birth_date"),
            "does not match the birth date in the fiscal code"
        );
        // Same day and month a century earlier: the code cannot hold that either.
        person(&mut req).birth_date = wire_date(1885, 12, 10);
        assert_eq!(violations(&req), ["personal_data.birth_date"]);
    }

    #[test]
    fn birth_date_is_required_and_must_be_a_real_past_date() {
        for (birth_date, message) in [
            (None, "is required"),
            (wire_date(1985, 2, 30), "is not a valid calendar date"),
            (wire_date(1985, 13, 10), "is not a valid calendar date"),
            (wire_date(1985, -1, 10), "is not a valid calendar date"),
            (wire_date(2020, 4, 2), "is in the future"),
            (wire_date(1899, 12, 10), "must not be before 1900"),
        ] {
            let mut req = request();
            person(&mut req).birth_date = birth_date;
            assert_eq!(violations(&req), ["personal_data.birth_date"], "{message}");
            assert_eq!(description(&req, "personal_data.birth_date"), message);
        }
    }

    #[test]
    fn centenarian_is_dated_by_the_anagrafica_not_by_the_two_digit_year() {
        // Roma: the code alone reads 2015-06-02.
        let code = compute("Rossi", "Mario", date(1915, 6, 2), Sex::Male, "H501");
        let req = request_for(
            &code,
            born_in_italy("Rossi", "Mario", (1915, 6, 2), wire::Sex::Male, "RM", "Roma"),
        );
        let parsed = accepted(&req);
        assert_eq!(parsed.personal_data.birth_date, date(1915, 6, 2));
        assert_eq!(parsed.fiscal_code.birth_date(), date(1915, 6, 2));
        // Lusiana (VI) was suppressed in 2019: read as 2020 the code would be invalid.
        let code = compute("Rossi", "Mario", date(1920, 3, 15), Sex::Male, "E762");
        assert!(CodiceFiscale::parse(&code, today()).is_err());
        let req = request_for(
            &code,
            born_in_italy("Rossi", "Mario", (1920, 3, 15), wire::Sex::Male, "VI", "Lusiana"),
        );
        let parsed = accepted(&req);
        assert_eq!(parsed.personal_data.birthplace.name, "Lusiana");
        assert_eq!(parsed.personal_data.birth_date, date(1920, 3, 15));
    }

    #[test]
    fn sex_that_disagrees_with_the_fiscal_code_is_a_violation() {
        let mut req = request();
        person(&mut req).sex = wire::Sex::Female as i32;
        assert_eq!(violations(&req), ["personal_data.sex"]);
        assert_eq!(
            description(&req, "personal_data.sex"),
            "does not match the sex in the fiscal code"
        );
    }

    #[test]
    fn sex_is_required_and_must_be_a_known_value() {
        let mut req = request();
        person(&mut req).sex = wire::Sex::Unspecified as i32;
        assert_eq!(description(&req, "personal_data.sex"), "is required");
        person(&mut req).sex = 7;
        assert_eq!(description(&req, "personal_data.sex"), "is not a known value");
    }

    #[test]
    fn female_fiscal_code_matches_a_female_anagrafica() {
        let req = request_for(
            "BNCLRA90A41H501F",
            born_in_italy("Bianchi", "Laura", (1990, 1, 1), wire::Sex::Female, "RM", "Roma"),
        );
        assert_eq!(accepted(&req).personal_data.sex, Sex::Female);
    }

    #[test]
    fn omocode_fiscal_code_still_matches_its_anagrafica() {
        let mut req = request();
        req.fiscal_code = "RSSMRAURTMLARSNL".into();
        let parsed = accepted(&req);
        assert!(parsed.fiscal_code.is_omocode());
        assert_eq!(parsed.fiscal_code.canonical(), ROSSI);
        assert_eq!(parsed.personal_data.birth_date, date(1985, 12, 10));
        assert_eq!(parsed.personal_data.birthplace.code, "A562");
        person(&mut req).birth_date = wire_date(1985, 12, 9);
        assert_eq!(violations(&req), ["personal_data.birth_date"]);
    }

    // --- birthplace -----------------------------------------------------------------------

    #[test]
    fn italian_born_citizen_must_name_the_municipality_of_the_code() {
        let mut req = request();
        person(&mut req).birth_municipality = "Pisa".into();
        assert_eq!(violations(&req), ["personal_data.birth_municipality"]);
        person(&mut req).birth_municipality = "Atlantide".into();
        assert_eq!(violations(&req), ["personal_data.birth_municipality"]);
        person(&mut req).birth_municipality = String::new();
        person(&mut req).birth_province = String::new();
        assert_eq!(
            violations(&req),
            ["personal_data.birth_province", "personal_data.birth_municipality"]
        );
    }

    #[test]
    fn right_municipality_in_the_wrong_province_is_a_province_violation() {
        let mut req = request();
        person(&mut req).birth_province = "LU".into();
        assert_eq!(violations(&req), ["personal_data.birth_province"]);
        assert_eq!(
            description(&req, "personal_data.birth_province"),
            "does not match the birthplace in the fiscal code"
        );
        person(&mut req).birth_province = "ZZ".into();
        assert_eq!(
            description(&req, "personal_data.birth_province"),
            "is not a known Italian province code"
        );
    }

    #[test]
    fn birthplace_is_compared_ignoring_case_accents_and_apostrophes() {
        let mut req = request();
        person(&mut req).birth_province = " pi ".into();
        person(&mut req).birth_municipality = "SAN GIULIANO TERME".into();
        assert!(violations(&req).is_empty());
        // Agliè (TO), A074, as registry data often spells it.
        let code = compute("Rossi", "Mario", date(1980, 1, 1), Sex::Male, "A074");
        let req = request_for(
            &code,
            born_in_italy("Rossi", "Mario", (1980, 1, 1), wire::Sex::Male, "to", "AGLIE'"),
        );
        assert_eq!(accepted(&req).personal_data.birthplace.name, "Agliè");
    }

    #[test]
    fn italian_born_citizen_giving_a_foreign_birth_country_is_a_violation() {
        let mut req = request();
        person(&mut req).birth_country = "Francia".into();
        assert_eq!(violations(&req), ["personal_data.birth_country"]);
        person(&mut req).birth_country = "Italia".into();
        assert!(violations(&req).is_empty(), "naming Italy is harmless");
    }

    #[test]
    fn suppressed_municipality_is_accepted_for_people_born_before_its_suppression() {
        // Lusiana (VI), E762, merged into Lusiana Conco on 2019-02-20.
        let code = compute("Rossi", "Mario", date(1980, 3, 15), Sex::Male, "E762");
        let req = request_for(
            &code,
            born_in_italy("Rossi", "Mario", (1980, 3, 15), wire::Sex::Male, "VI", "Lusiana"),
        );
        let parsed = accepted(&req);
        assert_eq!(parsed.personal_data.birthplace.code, "E762");
        assert_eq!(parsed.personal_data.birthplace.valid_to, Some(date(2019, 2, 19)));
    }

    #[test]
    fn merged_municipality_must_be_given_by_its_name_on_the_birth_date() {
        let code = compute("Rossi", "Mario", date(1980, 3, 15), Sex::Male, "E762");
        let req = request_for(
            &code,
            born_in_italy("Rossi", "Mario", (1980, 3, 15), wire::Sex::Male, "VI", "Lusiana Conco"),
        );
        assert_eq!(violations(&req), ["personal_data.birth_municipality"]);
    }

    #[test]
    fn renamed_municipality_may_be_given_by_its_name_on_the_birth_date_or_today() {
        // A562 was "Bagni San Giuliano" until 1935-07-30.
        let code = compute("Rossi", "Mario", date(1930, 5, 5), Sex::Male, "A562");
        for name in ["Bagni San Giuliano", "San Giuliano Terme"] {
            let req = request_for(
                &code,
                born_in_italy("Rossi", "Mario", (1930, 5, 5), wire::Sex::Male, "PI", name),
            );
            let parsed = accepted(&req);
            assert_eq!(parsed.personal_data.birthplace.name, "Bagni San Giuliano");
        }
        // Bagno di Romagna, A565, was in Forlì (FO) until 1992, in Forlì-Cesena (FC) since.
        let code = compute("Rossi", "Mario", date(1980, 5, 5), Sex::Male, "A565");
        for province in ["FO", "FC"] {
            let req = request_for(
                &code,
                born_in_italy(
                    "Rossi",
                    "Mario",
                    (1980, 5, 5),
                    wire::Sex::Male,
                    province,
                    "Bagno di Romagna",
                ),
            );
            assert!(violations(&req).is_empty(), "{province}");
        }
    }

    #[test]
    fn foreign_born_citizen_names_the_country_of_the_z_code() {
        // Samantha Miller, born 1982-09-25 in the USA (Z404).
        let mut req = request_for(
            "MLLSNT82P65Z404U",
            born_abroad(
                "Miller",
                "Samantha",
                (1982, 9, 25),
                wire::Sex::Female,
                "stati uniti d'america",
            ),
        );
        let parsed = accepted(&req);
        assert_eq!(parsed.personal_data.birthplace.code, "Z404");
        person(&mut req).birth_province = "EE".into();
        assert!(violations(&req).is_empty(), "EE is the province of the foreign-born");
    }

    #[test]
    fn foreign_born_citizen_naming_another_or_no_country_is_a_violation() {
        let mut req = request_for(
            "MLLSNT82P65Z404U",
            born_abroad("Miller", "Samantha", (1982, 9, 25), wire::Sex::Female, "Francia"),
        );
        assert_eq!(violations(&req), ["personal_data.birth_country"]);
        assert_eq!(
            description(&req, "personal_data.birth_country"),
            "does not match the country of birth in the fiscal code"
        );
        person(&mut req).birth_country = String::new();
        assert_eq!(
            description(&req, "personal_data.birth_country"),
            "is required: the fiscal code gives a birthplace abroad"
        );
    }

    #[test]
    fn foreign_born_citizen_must_not_give_an_italian_birthplace() {
        let mut req = request_for(
            "MLLSNT82P65Z404U",
            born_abroad(
                "Miller",
                "Samantha",
                (1982, 9, 25),
                wire::Sex::Female,
                "Stati Uniti d'America",
            ),
        );
        person(&mut req).birth_province = "RM".into();
        person(&mut req).birth_municipality = "Roma".into();
        assert_eq!(
            violations(&req),
            ["personal_data.birth_province", "personal_data.birth_municipality"]
        );
    }

    #[test]
    fn country_that_no_longer_exists_is_named_as_on_the_birth_date() {
        // Jugoslavia, Z118, until 2003.
        let code = compute("Petrovic", "Marko", date(1980, 6, 1), Sex::Male, "Z118");
        let req = request_for(
            &code,
            born_abroad("Petrovic", "Marko", (1980, 6, 1), wire::Sex::Male, "Jugoslavia"),
        );
        assert_eq!(accepted(&req).personal_data.birthplace.name, "Jugoslavia");
    }

    #[test]
    fn birthplace_is_checked_on_its_own_when_the_fiscal_code_is_invalid() {
        let mut req = request();
        req.fiscal_code = "RSSMRA85T10A562T".into();
        person(&mut req).birth_municipality = "Atlantide".into();
        assert_eq!(violations(&req), ["fiscal_code", "personal_data.birth_municipality"]);
        let mut req = request();
        req.fiscal_code = "RSSMRA85T10A562T".into();
        *person(&mut req) =
            born_abroad("Rossi", "Mario", (1985, 12, 10), wire::Sex::Male, "Atlantide");
        assert_eq!(violations(&req), ["fiscal_code", "personal_data.birth_country"]);
    }

    // --- residence ------------------------------------------------------------------------

    #[test]
    fn italian_residence_needs_a_five_digit_cap_and_a_known_province() {
        for cap in ["5601", "560170", "5601A", "56 17", ""] {
            let mut req = request();
            italy(&mut req).postal_code = cap.into();
            assert_eq!(violations(&req), ["residence.italy.postal_code"], "{cap:?}");
        }
        let mut req = request();
        italy(&mut req).postal_code = " 56017 ".into();
        assert!(violations(&req).is_empty());
        for province in ["XX", "P", "PIS", "", "EE"] {
            let mut req = request();
            italy(&mut req).province = province.into();
            assert_eq!(violations(&req), ["residence.italy.province"], "{province:?}");
        }
    }

    #[test]
    fn italian_residence_in_a_suppressed_province_is_a_violation() {
        let mut req = request();
        *italy(&mut req) = wire::ItalianAddress {
            street: "Corso della Repubblica".into(),
            street_number: "1".into(),
            postal_code: "47121".into(),
            province: "FO".into(),
            municipality: "Forlì".into(),
        };
        assert_eq!(violations(&req), ["residence.italy.province"]);
        italy(&mut req).province = "fc".into();
        let parsed = accepted(&req);
        assert!(matches!(
            parsed.residence,
            Residence::Italy { ref province, .. } if province == "FC"
        ));
    }

    #[test]
    fn italian_residence_needs_a_street_and_a_house_number() {
        let mut req = request();
        italy(&mut req).street = " ".into();
        italy(&mut req).street_number = String::new();
        assert_eq!(violations(&req), ["residence.italy.street", "residence.italy.street_number"]);
        for number in ["12/A", "SNC", "12 bis", "7-9"] {
            let mut req = request();
            italy(&mut req).street_number = number.into();
            assert!(violations(&req).is_empty(), "{number}");
        }
        for number in ["#12", "/", "12345678901"] {
            let mut req = request();
            italy(&mut req).street_number = number.into();
            assert_eq!(violations(&req), ["residence.italy.street_number"], "{number}");
        }
        let mut req = request();
        italy(&mut req).street = "Via ".repeat(30);
        assert_eq!(violations(&req), ["residence.italy.street"]);
    }

    #[test]
    fn italian_residence_municipality_must_exist_in_that_province_today() {
        let mut req = request();
        italy(&mut req).municipality = "Pisa".into();
        assert!(violations(&req).is_empty());
        italy(&mut req).province = "LU".into();
        assert_eq!(violations(&req), ["residence.italy.municipality"]);
        italy(&mut req).municipality = String::new();
        assert_eq!(description(&req, "residence.italy.municipality"), "is required");
        // Lusiana was merged into Lusiana Conco in 2019.
        let mut req = request();
        *italy(&mut req) = wire::ItalianAddress {
            street: "Piazza IV Novembre".into(),
            street_number: "1".into(),
            postal_code: "36046".into(),
            province: "VI".into(),
            municipality: "Lusiana".into(),
        };
        assert_eq!(violations(&req), ["residence.italy.municipality"]);
        italy(&mut req).municipality = "lusiana conco".into();
        assert!(violations(&req).is_empty());
    }

    #[test]
    fn residence_abroad_needs_a_known_foreign_country_and_an_address() {
        let mut req = request();
        req.residence = abroad_address("germania", "Hauptstraße 5\n10115 Berlin");
        match accepted(&req).residence {
            Residence::Abroad { country, address } => {
                assert_eq!(country.code, "Z112");
                assert_eq!(address, "Hauptstraße 5\n10115 Berlin");
            }
            Residence::Italy { .. } => panic!("foreign residence expected"),
        }
        req.residence = abroad_address("Atlantide", " \n ");
        assert_eq!(violations(&req), ["residence.abroad.country", "residence.abroad.address"]);
        req.residence = abroad_address("Italia", "Via Roma 1, Pisa");
        assert_eq!(
            description(&req, "residence.abroad.country"),
            "an address in Italy goes in residence.italy"
        );
        req.residence = abroad_address("", "1 Main Street");
        assert_eq!(violations(&req), ["residence.abroad.country"]);
        req.residence = abroad_address("Francia", &"1 rue de Rivoli\n".repeat(6));
        assert_eq!(violations(&req), ["residence.abroad.address"]);
    }

    #[test]
    fn postal_lines_of_an_italian_residence() {
        let parsed = accepted(&request());
        let pd = &parsed.personal_data;
        assert_eq!(
            parsed.residence.postal_lines(&pd.surname, &pd.given_name),
            "Mario Rossi\nVia Roma 1\n56017 San Giuliano Terme (PI)"
        );
    }

    #[test]
    fn postal_lines_of_a_residence_abroad() {
        let mut req = request();
        req.residence = abroad_address(
            "Stati Uniti d'America",
            "  12 Main Street \n\n Springfield,   IL 62701 ",
        );
        let parsed = accepted(&req);
        assert_eq!(
            parsed.residence.postal_lines("Rossi", "Mario"),
            "Mario Rossi\n12 Main Street\nSpringfield, IL 62701\nSTATI UNITI D'AMERICA"
        );
    }

    #[test]
    fn debug_of_personal_data_residence_and_contacts_is_redacted() {
        let parsed = accepted(&request());
        let debug = format!("{parsed:?}");
        for secret in [
            ROSSI,
            "Rossi",
            "Mario",
            "1985",
            "Via Roma",
            "56017",
            "Giuliano",
            "1234567",
            "mario.rossi",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert_eq!(format!("{:?}", parsed.personal_data), "PersonalData(<redacted>)");
        assert_eq!(format!("{:?}", parsed.residence), "Residence(<redacted>)");
        assert_eq!(format!("{:?}", parsed.contacts), "Contacts(<redacted>)");
    }

    // --- contacts -------------------------------------------------------------------------

    #[test]
    fn at_least_one_phone_and_one_email_or_pec_are_required() {
        let mut req = request();
        req.contacts = Some(wire::Contacts {
            preferred_time_slot: wire::TimeSlot::Evening as i32,
            ..Default::default()
        });
        // With no contact at all the missing contacts are the fault, not the channel.
        assert_eq!(violations(&req), ["contacts.mobile_phone", "contacts.email"]);
        req.contacts = None;
        assert_eq!(violations(&req), ["contacts"]);
    }

    #[test]
    fn phones_that_are_not_phone_numbers_are_rejected() {
        for bad in ["164164", "333", "+39", "abc", "3331234567890", "+39 333 12345678901234"] {
            let mut req = request();
            contacts(&mut req).home_phone = bad.into();
            assert_eq!(violations(&req), ["contacts.home_phone"], "{bad}");
        }
    }

    #[test]
    fn italian_phones_written_without_prefix_are_accepted_in_e164_form() {
        for (given, normalised) in [
            ("333 1234567", "+393331234567"),
            ("333-123.4567", "+393331234567"),
            ("0039 333 1234567", "+393331234567"),
            ("  +39   333  1234567 ", "+393331234567"),
        ] {
            let mut req = request();
            contacts(&mut req).mobile_phone = given.into();
            let parsed = PinRequest::parse(&req, today()).expect("accepted");
            assert_eq!(parsed.contacts.mobile_phone.as_deref(), Some(normalised), "{given}");
        }
        let mut req = request();
        contacts(&mut req).home_phone = "(06) 164-164".into();
        let parsed = PinRequest::parse(&req, today()).expect("accepted");
        assert_eq!(parsed.contacts.home_phone.as_deref(), Some("+3906164164"));
    }

    #[test]
    fn a_landline_given_as_the_mobile_phone_is_refused() {
        let mut req = request();
        contacts(&mut req).mobile_phone = "06 164164".into();
        contacts(&mut req).home_phone = "06 164164".into();
        assert_eq!(violations(&req), ["contacts.mobile_phone"]);
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in ["mario", "mario@", "@example.it", "mario@example", "ma rio@example.it"] {
            let mut req = request();
            contacts(&mut req).email = bad.into();
            assert_eq!(violations(&req), ["contacts.email"], "{bad}");
        }
        let mut req = request();
        contacts(&mut req).pec = "mario@pec".into();
        assert_eq!(violations(&req), ["contacts.pec"]);
    }

    #[test]
    fn preferred_phone_defaults_to_mobile_when_given_else_home() {
        let mut req = request();
        contacts(&mut req).home_phone = "+39 06 164164".into();
        assert_eq!(accepted(&req).preferred_phone, PhoneKind::Mobile);
        contacts(&mut req).mobile_phone = String::new();
        req.first_half_channel = DeliveryChannel::Email as i32;
        let parsed = accepted(&req);
        assert_eq!(parsed.preferred_phone, PhoneKind::Home);
        assert_eq!(parsed.contacts.phone(parsed.preferred_phone), Some("+3906164164"));
    }

    #[test]
    fn preferred_phone_must_refer_to_a_phone_that_was_given() {
        let mut req = request();
        contacts(&mut req).preferred_phone = wire::PhoneKind::Home as i32;
        assert_eq!(violations(&req), ["contacts.preferred_phone"]);
        assert_eq!(
            description(&req, "contacts.preferred_phone"),
            "refers to a home phone that was not given"
        );
        contacts(&mut req).home_phone = "+39 06 164164".into();
        assert_eq!(accepted(&req).preferred_phone, PhoneKind::Home);
        contacts(&mut req).preferred_phone = 9;
        assert_eq!(violations(&req), ["contacts.preferred_phone"]);
    }

    #[test]
    fn preferred_time_slot_is_required() {
        let mut req = request();
        contacts(&mut req).preferred_time_slot = wire::TimeSlot::Unspecified as i32;
        assert_eq!(violations(&req), ["contacts.preferred_time_slot"]);
        contacts(&mut req).preferred_time_slot = 9;
        assert_eq!(violations(&req), ["contacts.preferred_time_slot"]);
        contacts(&mut req).preferred_time_slot = wire::TimeSlot::Afternoon as i32;
        assert_eq!(accepted(&req).preferred_time_slot, TimeSlot::Afternoon);
    }

    #[test]
    fn the_chosen_channel_needs_its_contact() {
        let mut req = request();
        req.first_half_channel = DeliveryChannel::Pec as i32;
        assert_eq!(violations(&req), ["first_half_channel"]);
        req.first_half_channel = 42;
        assert_eq!(violations(&req), ["first_half_channel"]);
    }

    #[test]
    fn channel_phone_kind_and_time_slot_round_trip_through_their_names() {
        for c in [Channel::Sms, Channel::Email, Channel::Pec] {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse(" email "), Some(Channel::Email));
        assert_eq!(Channel::parse("FAX"), None);
        for k in [PhoneKind::Home, PhoneKind::Mobile] {
            assert_eq!(PhoneKind::parse(k.as_str()), Some(k));
        }
        for t in [TimeSlot::Morning, TimeSlot::Afternoon, TimeSlot::Evening] {
            assert_eq!(TimeSlot::parse(t.as_str()), Some(t));
        }
        assert_eq!(TimeSlot::parse("NIGHT"), None);
    }

    #[test]
    fn contacts_phone_kind_and_time_slot_are_serde_types() {
        fn serde_type<T: Serialize + for<'de> Deserialize<'de>>() {}
        serde_type::<Contacts>();
        serde_type::<Channel>();
        serde_type::<PhoneKind>();
        serde_type::<TimeSlot>();
    }
}
