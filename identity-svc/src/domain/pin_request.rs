//! A PIN request (DOMAIN.md §4.1), parsed from the wire once: after this, the fiscal code is a
//! checked [`CodiceFiscale`] and the contacts are well-formed.

use super::codice_fiscale::CodiceFiscale;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sportello_platform::error::FieldViolations;
use sportello_proto::identity::v1::{self as wire, DeliveryChannel};

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
}

/// How to reach the citizen; at least one phone and one of email/PEC.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contacts {
    pub home_phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub email: Option<String>,
    pub pec: Option<String>,
}

impl std::fmt::Debug for Contacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Contacts(<redacted>)")
    }
}

impl Contacts {
    /// The address `channel` delivers to, if the citizen gave one.
    pub fn address(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Sms => self.mobile_phone.as_deref(),
            Channel::Email => self.email.as_deref(),
            Channel::Pec => self.pec.as_deref(),
        }
    }
}

/// A checked PIN request.
#[derive(Clone, Debug)]
pub struct PinRequest {
    pub fiscal_code: CodiceFiscale,
    pub contacts: Contacts,
    pub first_half_channel: Channel,
}

/// A phone number in international form: `+`, then 8 to 15 digits (spaces allowed between).
pub fn is_international_phone(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('+') else {
        return false;
    };
    let digits: String = rest.chars().filter(|c| *c != ' ').collect();
    (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit())
}

/// An email address of the plain `local@domain.tld` shape (no display names, no spaces).
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && s.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && s.chars().all(|c| c.is_ascii_graphic())
        && !domain.contains('@')
}

fn optional(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn parse_contacts(wire: Option<&wire::Contacts>, v: &mut FieldViolations) -> Contacts {
    let Some(c) = wire else {
        v.add(
            "contacts",
            "is required: at least one phone and one of email or PEC",
        );
        return Contacts {
            home_phone: None,
            mobile_phone: None,
            email: None,
            pec: None,
        };
    };
    let contacts = Contacts {
        home_phone: optional(&c.home_phone),
        mobile_phone: optional(&c.mobile_phone),
        email: optional(&c.email).map(|e| e.to_ascii_lowercase()),
        pec: optional(&c.pec).map(|e| e.to_ascii_lowercase()),
    };
    for (field, value) in [
        ("contacts.home_phone", &contacts.home_phone),
        ("contacts.mobile_phone", &contacts.mobile_phone),
    ] {
        if value.as_deref().is_some_and(|p| !is_international_phone(p)) {
            v.add(field, "must be in international form, e.g. +39 333 1234567");
        }
    }
    for (field, value) in [
        ("contacts.email", &contacts.email),
        ("contacts.pec", &contacts.pec),
    ] {
        if value.as_deref().is_some_and(|e| !is_email(e)) {
            v.add(field, "is not a valid email address");
        }
    }
    if contacts.home_phone.is_none() && contacts.mobile_phone.is_none() {
        v.add(
            "contacts.mobile_phone",
            "give at least one phone number (home or mobile)",
        );
    }
    if contacts.email.is_none() && contacts.pec.is_none() {
        v.add("contacts.email", "give at least one of email or PEC");
    }
    contacts
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
            } else {
                Channel::Pec
            }
        }
        Err(_) => {
            v.add("first_half_channel", "unknown channel");
            return Channel::Sms;
        }
    };
    if contacts.address(channel).is_none() {
        v.add(
            "first_half_channel",
            format!("no {} contact was given", channel.as_str()),
        );
    }
    channel
}

impl PinRequest {
    /// Checks a request as received; `today` resolves the century of the birth year.
    pub fn parse(req: &wire::RequestPinRequest, today: NaiveDate) -> Result<Self, FieldViolations> {
        let mut v = FieldViolations::new();
        let fiscal_code = match CodiceFiscale::parse(&req.fiscal_code, today) {
            Ok(cf) => Some(cf),
            Err(e) => {
                v.add("fiscal_code", e.to_string());
                None
            }
        };
        let contacts = parse_contacts(req.contacts.as_ref(), &mut v);
        let first_half_channel = parse_channel(req.first_half_channel, &contacts, &mut v);
        match fiscal_code {
            Some(fiscal_code) if v.is_empty() => Ok(PinRequest {
                fiscal_code,
                contacts,
                first_half_channel,
            }),
            _ => Err(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2020, 4, 1).expect("date")
    }

    fn request() -> wire::RequestPinRequest {
        wire::RequestPinRequest {
            fiscal_code: "RSSMRA85T10A562S".into(),
            contacts: Some(wire::Contacts {
                mobile_phone: "+39 333 1234567".into(),
                email: "mario.rossi@example.it".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn fields(err: FieldViolations) -> Vec<String> {
        err.iter().map(|(f, _)| f.to_owned()).collect()
    }

    #[test]
    fn a_request_with_valid_fiscal_code_and_contacts_is_accepted() {
        let parsed = PinRequest::parse(&request(), today()).expect("valid");
        assert_eq!(
            parsed.first_half_channel,
            Channel::Sms,
            "SMS is the default with a mobile"
        );
    }

    #[test]
    fn a_wrong_check_character_is_a_fiscal_code_violation() {
        let mut req = request();
        req.fiscal_code = "RSSMRA85T10A562T".into();
        assert_eq!(
            fields(PinRequest::parse(&req, today()).unwrap_err()),
            ["fiscal_code"]
        );
    }

    #[test]
    fn at_least_one_phone_and_one_email_or_pec_are_required() {
        let mut req = request();
        req.contacts = Some(wire::Contacts::default());
        assert_eq!(
            fields(PinRequest::parse(&req, today()).unwrap_err()),
            [
                "contacts.mobile_phone",
                "contacts.email",
                "first_half_channel"
            ]
        );
    }

    #[test]
    fn phones_must_be_in_international_form() {
        let mut req = request();
        req.contacts.as_mut().expect("contacts").home_phone = "06 164164".into();
        assert_eq!(
            fields(PinRequest::parse(&req, today()).unwrap_err()),
            ["contacts.home_phone"]
        );
    }

    #[test]
    fn the_chosen_channel_needs_its_contact() {
        let mut req = request();
        req.first_half_channel = DeliveryChannel::Pec as i32;
        assert_eq!(
            fields(PinRequest::parse(&req, today()).unwrap_err()),
            ["first_half_channel"]
        );
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in [
            "mario",
            "mario@",
            "@example.it",
            "mario@example",
            "ma rio@example.it",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(is_email("mario.rossi@pec.example.it"));
    }
}
