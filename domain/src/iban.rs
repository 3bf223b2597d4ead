//! The account a benefit is paid to: an IBAN of the SEPA area, checked once at the edge.

use std::fmt;

/// The countries whose accounts a SEPA credit transfer reaches (EU and EEA members, Switzerland,
/// the United Kingdom and the European microstates).
const SEPA_COUNTRIES: &[&str] = &[
    "AD", "AT", "BE", "BG", "CH", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GB", "GI", "GR",
    "HR", "HU", "IE", "IS", "IT", "LI", "LT", "LU", "LV", "MC", "MT", "NL", "NO", "PL", "PT", "RO",
    "SE", "SI", "SK", "SM", "VA",
];

/// An IBAN (ISO 13616) that passed the mod-97 check and its country's length and format, in a
/// SEPA country. Kept in electronic form (`IT60X0542811101000000123456`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Iban(iban::Iban);

/// Why a text is not an IBAN the institute can pay to; said to the citizen as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IbanError {
    #[error("is not an IBAN: two letters, two check digits, then the account")]
    Format,
    #[error("has a wrong check digit: a character is mistyped")]
    Checksum,
    #[error("does not have the length and format of its country's IBANs")]
    CountryFormat,
    #[error("is not an account in the SEPA area")]
    NotSepa,
}

impl Iban {
    /// Parses an IBAN as people write it: spaces anywhere, lower case accepted.
    pub fn parse(text: &str) -> Result<Self, IbanError> {
        let compact: String =
            text.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
        if !compact.is_ascii() {
            return Err(IbanError::Format);
        }
        let parsed = compact.parse::<iban::Iban>().map_err(|e| match e {
            iban::ParseIbanError::InvalidBaseIban {
                source: iban::ParseBaseIbanError::InvalidChecksum,
            } => IbanError::Checksum,
            iban::ParseIbanError::InvalidBaseIban { .. } => IbanError::Format,
            iban::ParseIbanError::InvalidBban(_) | iban::ParseIbanError::UnknownCountry(_) => {
                IbanError::CountryFormat
            }
        })?;
        use iban::IbanLike;
        if !SEPA_COUNTRIES.contains(&parsed.country_code()) {
            return Err(IbanError::NotSepa);
        }
        Ok(Self(parsed))
    }

    /// The electronic form: no spaces, upper case.
    pub fn as_str(&self) -> &str {
        use iban::IbanLike;
        self.0.electronic_str()
    }

    /// Two-letter country code.
    pub fn country(&self) -> &str {
        &self.as_str()[..2]
    }

    /// `IT60 **** **** **** **** **3456`: the country, check digits and last four characters,
    /// enough for a citizen to recognise the account and for nobody to reuse it.
    pub fn masked(&self) -> String {
        let s = self.as_str();
        let tail: String = s.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        format!("{} **** {tail}", &s[..4])
    }
}

// An account number is personal data: debug output shows only its masked form.
impl fmt::Debug for Iban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iban({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_italian_iban_is_accepted_with_spaces_and_in_lower_case() {
        let iban = Iban::parse("it60 x054 2811 1010 0000 0123 456").expect("valid");
        assert_eq!(iban.as_str(), "IT60X0542811101000000123456");
        assert_eq!(iban.country(), "IT");
    }

    #[test]
    fn sepa_accounts_abroad_are_accepted() {
        for text in [
            "DE89 3704 0044 0532 0130 00",
            "FR14 2004 1010 0505 0001 3M02 606",
            "CH9300762011623852957",
        ] {
            assert!(Iban::parse(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn a_mistyped_character_fails_the_check_digits() {
        assert_eq!(Iban::parse("IT60X0542811101000000123457"), Err(IbanError::Checksum));
    }

    /// `country` + correct check digits + `bban`: passes mod-97 whatever the BBAN looks like.
    fn with_check_digits(country: &str, bban: &str) -> String {
        let rearranged = format!("{bban}{country}00");
        let remainder = rearranged.chars().fold(0u32, |acc, c| {
            let value = c.to_digit(36).expect("alphanumeric");
            let acc = if value > 9 { acc * 100 + value } else { acc * 10 + value };
            acc % 97
        });
        format!("{country}{:02}{bban}", 98 - remainder)
    }

    #[test]
    fn right_check_digits_on_a_wrong_length_for_the_country_are_refused() {
        // Italian IBANs have 27 characters; this one has 26 and passes mod-97.
        let short = with_check_digits("IT", "X054281110100000012345");
        assert_eq!(short.len(), 26);
        assert_eq!(Iban::parse(&short), Err(IbanError::CountryFormat));
        let right = with_check_digits("IT", "X0542811101000000123456");
        assert_eq!(right, "IT60X0542811101000000123456");
    }

    #[test]
    fn accounts_outside_the_sepa_area_are_refused() {
        // A valid Brazilian IBAN.
        assert_eq!(Iban::parse("BR15 0000 0000 0000 1093 2840 814P 2"), Err(IbanError::NotSepa));
    }

    #[test]
    fn text_that_is_no_iban_is_a_format_error() {
        for text in ["", "IT", "12345", "IT60 X054 ÀÀÀ", "mario rossi"] {
            assert!(
                matches!(Iban::parse(text), Err(IbanError::Format | IbanError::Checksum)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn debug_output_masks_the_account() {
        let iban = Iban::parse("IT60X0542811101000000123456").expect("valid");
        let shown = format!("{iban:?}");
        assert_eq!(shown, "Iban(IT60 **** 3456)");
        assert!(!shown.contains("0542811101"));
    }
}
