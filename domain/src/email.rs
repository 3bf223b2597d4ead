//! An email (or PEC) address a message can be delivered to.
//!
//! The grammar of RFC 5321 allows far more than any mailbox uses (quoted local parts, comments,
//! IP literals), and every extra form is one the mail transport, a relay or a citizen's provider
//! may refuse later, after the citizen was told their request was taken. So the edge accepts
//! the plain `local@domain.tld` form only: a local part of at most 64 characters from the
//! RFC 5322 `atext` set, with single dots between its words; a domain of at least two labels
//! of letters, digits and hyphens (an internationalised domain is kept in its ASCII form). No
//! control characters, spaces, quotes, comments, angle brackets, commas or semicolons. What is
//! accepted is also checked by lettre's parser, the one the SMTP transport uses, so nothing
//! accepted here is refused when sending.

use std::fmt;

/// The longest address SMTP carries (RFC 5321 §4.5.3.1.3: a 256-octet path less the brackets).
pub const MAX_LEN: usize = 254;
/// The longest local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_LEN: usize = 64;
const MAX_LABEL_LEN: usize = 63;

/// A deliverable address, lower-cased.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// Why a text is not an address a message can be delivered to; safe to show (it never repeats
/// the address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("is not an email address: write it as name@domain.it")]
    Shape,
    #[error("is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("has more than {MAX_LOCAL_LEN} characters before the @")]
    LocalTooLong,
    #[error(
        "may hold before the @ only letters, digits, single dots and ! # $ % & ' * + - / = ? ^ _ ` {{ | }} ~ \
         (no spaces, quotes, brackets, commas or semicolons)"
    )]
    LocalCharacters,
    #[error("has no valid domain after the @ (such as example.it)")]
    Domain,
}

impl Email {
    /// Parses an address as typed: surrounding whitespace is dropped and the address is
    /// lower-cased (mailbox names are case-insensitive in practice, and one spelling lets the
    /// same address be recognised again).
    pub fn parse(text: &str) -> Result<Self, EmailError> {
        let text = text.trim();
        let (local, domain) = text.rsplit_once('@').ok_or(EmailError::Shape)?;
        if local.is_empty() || domain.is_empty() {
            return Err(EmailError::Shape);
        }
        if local.chars().count() > MAX_LOCAL_LEN {
            return Err(EmailError::LocalTooLong);
        }
        if !local.split('.').all(|word| !word.is_empty() && word.bytes().all(is_atext)) {
            return Err(EmailError::LocalCharacters);
        }
        let domain = ascii_domain(domain)?;
        let address = format!("{}@{domain}", local.to_ascii_lowercase());
        if address.len() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        // The transport's own parser has the last word: what it refuses is not an address.
        address.parse::<lettre::Address>().map_err(|_| EmailError::Shape)?;
        Ok(Self(address))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `m***@e***.it`: enough to recognise the address, not to use it.
    pub fn masked(&self) -> String {
        crate::mask::email(&self.0)
    }
}

/// RFC 5322 `atext`: what a dot-atom's words are made of.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// The domain in ASCII (an internationalised one converted to its `xn--` form), lower-cased,
/// with at least two labels of letters, digits and inner hyphens and a top-level label that is
/// not all digits.
fn ascii_domain(domain: &str) -> Result<String, EmailError> {
    if domain.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(EmailError::Domain);
    }
    let ascii = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(domain).map_err(|_| EmailError::Domain)?
    };
    let labels: Vec<&str> = ascii.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= MAX_LABEL_LEN
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let tld_ok = labels.last().is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
    if labels.len() < 2 || !labels.iter().all(label_ok) || !tld_ok {
        return Err(EmailError::Domain);
    }
    Ok(ascii)
}

impl TryFrom<String> for Email {
    type Error = EmailError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> Self {
        email.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// An address is personal data: debug output shows only its masked form.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The addresses issue 21 found accepted and never delivered.
    pub const UNDELIVERABLE: &[&str] = &[
        "mario;rossi@example.it",
        "a,b@example.it",
        "x@example..it",
        "<mario>@example.it",
        "mario<rossi@example.it",
        "m(comment)@example.it",
        "mario\u{202e}@example.it",
        "mario\u{1}@example.it",
        "\"mario rossi\"@example.it",
        "mario rossi@example.it",
        "mario@example",
        "mario@",
        "@example.it",
        "mario..rossi@example.it",
        ".mario@example.it",
        "mario.@example.it",
        "mario@[127.0.0.1]",
        "mario@-example.it",
        "mario@example.123",
        "mario\0@example.it",
    ];

    #[test]
    fn plain_addresses_are_accepted_and_lower_cased() {
        for (given, kept) in [
            ("mario.rossi@example.it", "mario.rossi@example.it"),
            ("  Mario.Rossi@PEC.Example.IT ", "mario.rossi@pec.example.it"),
            ("o'brien+inps@mail.example.co.uk", "o'brien+inps@mail.example.co.uk"),
            ("m@città.it", "m@xn--citt-3na.it"),
        ] {
            assert_eq!(Email::parse(given).map(|e| e.0), Ok(kept.to_owned()), "{given}");
        }
    }

    #[test]
    fn addresses_the_transport_would_refuse_or_misread_are_refused() {
        for bad in UNDELIVERABLE {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_local_part_over_64_characters_is_refused() {
        let long = format!("{}@example.it", "a".repeat(240));
        assert_eq!(Email::parse(&long), Err(EmailError::LocalTooLong));
        let longest = format!("{}@example.it", "a".repeat(64));
        assert!(Email::parse(&longest).is_ok());
    }

    #[test]
    fn an_address_over_254_characters_is_refused() {
        let domain = format!("{}.{}.{}.it", "d".repeat(63), "e".repeat(63), "f".repeat(63));
        assert_eq!(Email::parse(&format!("{}@{domain}", "a".repeat(64))), Err(EmailError::TooLong));
    }

    #[test]
    fn debug_output_masks_the_address() {
        let email = Email::parse("mario.rossi@example.it").expect("valid");
        assert_eq!(format!("{email:?}"), "Email(m***@e***.it)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The rule of the edge: what `Email` accepts, the SMTP transport's parser accepts.
        #[test]
        fn whatever_email_accepts_the_smtp_transport_accepts(text in "\\PC{0,80}|[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~@<>(),;:\"\\[\\] \\\\-]{1,80}") {
            if let Ok(email) = Email::parse(&text) {
                prop_assert!(email.as_str().parse::<lettre::Address>().is_ok(), "{email}");
                prop_assert!(email.as_str().is_ascii());
            }
        }

        #[test]
        fn addresses_built_from_the_allowed_alphabet_are_accepted_by_both(
            words in proptest::collection::vec("[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}", 1..4),
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..4),
        ) {
            let text = format!("{}@{}.it", words.join("."), labels.join("."));
            let email = Email::parse(&text);
            prop_assert!(email.is_ok(), "{text}");
            prop_assert!(text.parse::<lettre::Address>().is_ok(), "{text}");
        }
    }
}
