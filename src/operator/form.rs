//! `request-pin`'s flags: the portal's form, one flag per field, each named after the field's
//! proto path (`--birth-date` is `personal_data.birth_date`), so that a field violation names
//! the flag to fix. Only the shape of a value is checked here (a date, one of the choices);
//! every rule of the form is identity-svc's, which reports all the problems at once.

use clap::ArgGroup;
use sportello_proto::identity::v1 as id;

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("italy").multiple(true).conflicts_with("abroad")))]
#[command(group(ArgGroup::new("abroad").multiple(true)))]
pub struct FormArgs {
    /// Codice fiscale, 16 characters (omocodes accepted).
    #[arg(long)]
    fiscal_code: String,
    /// Cognome.
    #[arg(long)]
    surname: Option<String>,
    /// Nome.
    #[arg(long)]
    given_name: Option<String>,
    /// YYYY-MM-DD or DD/MM/YYYY.
    #[arg(long, value_parser = parse_date)]
    birth_date: Option<id::Date>,
    #[arg(long, value_enum, ignore_case = true)]
    sex: Option<SexArg>,
    /// Province of birth (two letters), for people born in Italy.
    #[arg(long)]
    birth_province: Option<String>,
    /// Comune of birth, for people born in Italy.
    #[arg(long)]
    birth_municipality: Option<String>,
    /// Country of birth, for people born abroad.
    #[arg(long)]
    birth_country: Option<String>,
    /// Residence in Italy: street.
    #[arg(long, group = "italy")]
    street: Option<String>,
    /// Residence in Italy: numero civico.
    #[arg(long, group = "italy")]
    street_number: Option<String>,
    /// Residence in Italy: CAP.
    #[arg(long, group = "italy")]
    postal_code: Option<String>,
    /// Residence in Italy: province (two letters).
    #[arg(long, group = "italy")]
    province: Option<String>,
    /// Residence in Italy: comune.
    #[arg(long, group = "italy")]
    municipality: Option<String>,
    /// Residence abroad: country (residence.abroad.country).
    #[arg(long, group = "abroad")]
    abroad_country: Option<String>,
    /// Residence abroad: the postal address as used there (residence.abroad.address).
    #[arg(long, group = "abroad")]
    abroad_address: Option<String>,
    /// In international form, +39…
    #[arg(long)]
    mobile_phone: Option<String>,
    /// In international form, +39…
    #[arg(long)]
    home_phone: Option<String>,
    #[arg(long)]
    email: Option<String>,
    /// Posta elettronica certificata.
    #[arg(long)]
    pec: Option<String>,
    /// Which phone the contact center should call.
    #[arg(long, value_enum)]
    preferred_phone: Option<PhoneArg>,
    /// When the contact center may call.
    #[arg(long, value_enum)]
    preferred_time_slot: Option<TimeSlotArg>,
    /// Where the first half goes; by default SMS when a mobile phone is given, else email.
    #[arg(long, value_enum)]
    first_half_channel: Option<ChannelArg>,
}

impl FormArgs {
    /// The form as the portal sends it. Personal data and contacts always go, even empty, so
    /// that each missing field is reported by name rather than the whole block at once.
    pub fn into_request(self) -> id::RequestPinRequest {
        let text = Option::<String>::unwrap_or_default;
        let abroad = self.abroad_country.is_some() || self.abroad_address.is_some();
        let place = if abroad {
            id::residence::Place::Abroad(id::ForeignAddress {
                country: text(self.abroad_country),
                address: text(self.abroad_address),
            })
        } else {
            id::residence::Place::Italy(id::ItalianAddress {
                street: text(self.street),
                street_number: text(self.street_number),
                postal_code: text(self.postal_code),
                province: text(self.province),
                municipality: text(self.municipality),
            })
        };
        id::RequestPinRequest {
            fiscal_code: self.fiscal_code,
            personal_data: Some(id::PersonalData {
                surname: text(self.surname),
                given_name: text(self.given_name),
                birth_date: self.birth_date,
                sex: self.sex.map_or(id::Sex::Unspecified, Into::into) as i32,
                birth_province: text(self.birth_province),
                birth_municipality: text(self.birth_municipality),
                birth_country: text(self.birth_country),
            }),
            residence: Some(id::Residence { place: Some(place) }),
            contacts: Some(id::Contacts {
                home_phone: text(self.home_phone),
                mobile_phone: text(self.mobile_phone),
                email: text(self.email),
                pec: text(self.pec),
                preferred_phone: self.preferred_phone.map_or(id::PhoneKind::Unspecified, Into::into)
                    as i32,
                preferred_time_slot: self
                    .preferred_time_slot
                    .map_or(id::TimeSlot::Unspecified, Into::into)
                    as i32,
            }),
            first_half_channel: self
                .first_half_channel
                .map_or(id::DeliveryChannel::Unspecified, Into::into)
                as i32,
        }
    }
}

/// `1985-12-10` or `10/12/1985`; whether the day exists is identity-svc's to say.
fn parse_date(text: &str) -> Result<id::Date, String> {
    let numbers = |parts: Vec<&str>| -> Option<Vec<i32>> {
        parts.iter().map(|p| p.trim().parse().ok()).collect()
    };
    let ymd = match (text.split('-').collect::<Vec<_>>(), text.split('/').collect::<Vec<_>>()) {
        (iso, _) if iso.len() == 3 => numbers(iso),
        (_, it) if it.len() == 3 => numbers(it).map(|dmy| vec![dmy[2], dmy[1], dmy[0]]),
        _ => None,
    };
    match ymd.as_deref() {
        Some(&[year, month, day]) => Ok(id::Date { year, month, day }),
        _ => Err("give the date as YYYY-MM-DD or DD/MM/YYYY".into()),
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SexArg {
    M,
    F,
}

impl From<SexArg> for id::Sex {
    fn from(sex: SexArg) -> Self {
        match sex {
            SexArg::M => Self::Male,
            SexArg::F => Self::Female,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PhoneArg {
    Home,
    Mobile,
}

impl From<PhoneArg> for id::PhoneKind {
    fn from(phone: PhoneArg) -> Self {
        match phone {
            PhoneArg::Home => Self::Home,
            PhoneArg::Mobile => Self::Mobile,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TimeSlotArg {
    Morning,
    Afternoon,
    Evening,
}

impl From<TimeSlotArg> for id::TimeSlot {
    fn from(slot: TimeSlotArg) -> Self {
        match slot {
            TimeSlotArg::Morning => Self::Morning,
            TimeSlotArg::Afternoon => Self::Afternoon,
            TimeSlotArg::Evening => Self::Evening,
        }
    }
}

/// A channel for a first half or a contact.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ChannelArg {
    Sms,
    Email,
    Pec,
}

impl From<ChannelArg> for id::DeliveryChannel {
    fn from(channel: ChannelArg) -> Self {
        match channel {
            ChannelArg::Sms => Self::Sms,
            ChannelArg::Email => Self::Email,
            ChannelArg::Pec => Self::Pec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_taken_in_iso_or_italian_order() {
        let date = |y, m, d| id::Date { year: y, month: m, day: d };
        assert_eq!(parse_date("1985-12-10"), Ok(date(1985, 12, 10)));
        assert_eq!(parse_date("10/12/1985"), Ok(date(1985, 12, 10)));
        assert!(parse_date("10.12.1985").is_err());
        assert!(parse_date("1985-12").is_err());
    }
}
