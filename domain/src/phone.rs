//! A phone number an SMS or a call can reach, kept in E.164 form (`+393331234567`).
//!
//! Parsed with the `phonenumber` crate (Google's libphonenumber metadata): a number is accepted
//! only when its country's numbering plan has it, so a digit too many or too few is caught when
//! the citizen types it rather than when the SMS provider refuses it. Numbers without a prefix
//! are read as Italian (`333 1234567`, `06 164164`); `00` is read as `+`.

use std::fmt;

/// The longest text read as a phone number: anything longer is not one.
const MAX_INPUT_CHARS: usize = 40;

/// A valid phone number in E.164 form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

/// Why a text is not a phone number; safe to show (it never repeats the number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("is not a phone number: write it as +39 333 1234567 or 333 1234567")]
    NotANumber,
    #[error("is not a number of its country's numbering plan: a digit is missing or too many")]
    Invalid,
    #[error("is not a mobile number: an SMS cannot reach it")]
    NotMobile,
}

impl PhoneNumber {
    /// Parses a number as people write it (spaces, hyphens, dots, slashes and brackets allowed).
    pub fn parse(text: &str) -> Result<Self, PhoneError> {
        let text = text.trim();
        let allowed =
            |c: char| c.is_ascii_digit() || c == '+' || c.is_whitespace() || "-./()".contains(c);
        if text.is_empty() || text.chars().count() > MAX_INPUT_CHARS || !text.chars().all(allowed) {
            return Err(PhoneError::NotANumber);
        }
        let compact: String = text.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect();
        let international = match compact.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => compact,
        };
        // Only digits and '+' are left, but maybe none of them ("-", "()"); a '+' only leads.
        if international.is_empty() || international.chars().skip(1).any(|c| c == '+') {
            return Err(PhoneError::NotANumber);
        }
        let number = phonenumber::parse(Some(phonenumber::country::Id::IT), &international)
            .map_err(|_| PhoneError::NotANumber)?;
        if !phonenumber::is_valid(&number) {
            return Err(PhoneError::Invalid);
        }
        Ok(Self(number.format().mode(phonenumber::Mode::E164).to_string()))
    }

    /// Like [`PhoneNumber::parse`], for numbers that must take an SMS: a landline is refused.
    pub fn parse_mobile(text: &str) -> Result<Self, PhoneError> {
        let parsed = Self::parse(text)?;
        let number = phonenumber::parse(None, &parsed.0).map_err(|_| PhoneError::NotANumber)?;
        use phonenumber::metadata::DATABASE;
        match number.number_type(&DATABASE) {
            phonenumber::Type::Mobile | phonenumber::Type::FixedLineOrMobile => Ok(parsed),
            _ => Err(PhoneError::NotMobile),
        }
    }

    /// `+393331234567`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `+39 *** *** 4567`.
    pub fn masked(&self) -> String {
        crate::mask::phone(&self.0)
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = PhoneError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<PhoneNumber> for String {
    fn from(number: PhoneNumber) -> Self {
        number.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// A number is personal data: debug output shows only its masked form.
impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_without_a_digit_is_not_a_number_and_does_not_panic() {
        for text in ["-", "()", " . / ", "+"] {
            assert!(PhoneNumber::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn numbers_as_people_write_them_are_kept_in_e164_form() {
        for (given, kept) in [
            ("+39 333 1234567", "+393331234567"),
            ("333 1234567", "+393331234567"),
            ("333-123.4567", "+393331234567"),
            ("0039 333 1234567", "+393331234567"),
            ("06 164164", "+3906164164"),
            ("(06) 164 164", "+3906164164"),
            ("+33 6 12 34 56 78", "+33612345678"),
        ] {
            assert_eq!(PhoneNumber::parse(given).map(|p| p.0), Ok(kept.to_owned()), "{given}");
        }
    }

    #[test]
    fn text_that_is_no_number_is_refused() {
        for bad in ["", "abc", "+39", "333", "+39 333 1234567\0", "+39 333 1234567\u{202e}", "3+33"]
        {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_digit_too_many_or_too_few_is_refused() {
        for bad in ["+39 333 12345678901", "+39 333 12", "+39 3"] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_sms_needs_a_mobile_number() {
        assert!(PhoneNumber::parse_mobile("333 1234567").is_ok());
        assert_eq!(PhoneNumber::parse_mobile("06 164164"), Err(PhoneError::NotMobile));
    }
}
