//! What a citizen's own 8-character PIN must look like (DOMAIN.md §4.2, §4.3b): the PIN chosen
//! at first access, after a recovery, and on every change.
//!
//! PINs are case-insensitive: every PIN is compared in the form [`normalise`] gives (trimmed,
//! ASCII upper-case), so the login path must normalise the same way before hashing.
//!
//! The rules, checked in this order so that the message names the most basic problem:
//! 1. exactly 8 characters;
//! 2. only letters A–Z and digits 0–9;
//! 3. not one character repeated (`AAAAAAAA`);
//! 4. not a run of consecutive characters in either direction (`ABCDEFGH`, `87654321`,
//!    `6789ABCD`: digits come before letters, as in `0-9A-Z`);
//! 5. at least one letter and one digit;
//! 6. not a common PIN ([`BLOCKLIST`]);
//! 7. not one of the citizen's previous PINs.
//!
//! Errors never contain the PIN, so they can go into a field violation on `new_pin` as they are.

use std::fmt;

/// Length of a citizen's own PIN.
pub const LEN: usize = 8;

/// The order in which runs are recognised: `...789ABC...`.
const SEQUENCE: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Common PINs that pass every shape rule (an entry that did not would be dead weight: the
/// shape rules reject it first), in normalised form.
pub const BLOCKLIST: &[&str] = &[
    // Runs of letters and digits.
    "ABCD1234", "1234ABCD", "ABC12345", "12345ABC", "A1234567", "1234567A", "AB123456", "AA123456",
    "A1B2C3D4", "1A2B3C4D", // Keyboard walks.
    "QWERTY12", "QWERTZ12", "AZERTY12", "QWER1234", "ASDF1234", "ZXCV1234", "1QAZ2WSX", "ZAQ12WSX",
    "1Q2W3E4R", "Q1W2E3R4",
    // "Password" and friends ("PASSWORD" itself has no digit).
    "PASSW0RD", "P4SSW0RD", "PASS1234", "PASSWD12", "PASS2020", "LETMEIN1", "WELCOME1", "TRUSTNO1",
    "ADMIN123", "PIN12345", "12345PIN", // The institute, the year, the emergency.
    "INPS2020", "INPS2021", "INPS1234", "SPID2020", "COVID019", "APRILE20", "MARZO020",
    // Italian favourites.
    "CIAO1234", "AMORE123", "ROMA1234", "ITALIA12", "FORZA123", "MILAN123", "INTER123", "NAPOLI12",
    "LAZIO123",
];

/// Why a candidate PIN is refused. The messages are written to follow the field name
/// (`new_pin: must be exactly 8 characters`) and never contain the PIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PinPolicyError {
    #[error("must be exactly 8 characters, got {len}")]
    WrongLength { len: usize },
    #[error("may contain only the letters A-Z and the digits 0-9")]
    InvalidCharacter,
    #[error("must not be the same character repeated")]
    AllSameCharacter,
    #[error("must not be a run of consecutive letters or digits, forwards or backwards")]
    Sequence,
    #[error("must contain at least one letter and one digit")]
    NeedsLetterAndDigit,
    #[error("is too common: choose a less predictable PIN")]
    TooCommon,
    #[error("must differ from your current PIN and from the PIN you were sent")]
    SameAsPrevious,
}

/// A PIN a citizen chose that satisfies the policy, in normalised (upper-case) form.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPin(String);

impl fmt::Debug for NewPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPin(<redacted>)")
    }
}

impl NewPin {
    /// Checks `candidate` against the policy. `previous` holds the PINs it must differ from: the
    /// current PIN, or the initial PIN being replaced. A 16-character entry also excludes its
    /// two halves, so the initial PIN can be passed whole; passing the halves works too. Every
    /// comparison is on normalised forms.
    pub fn parse(candidate: &str, previous: &[&str]) -> Result<NewPin, PinPolicyError> {
        let pin = normalise(candidate);
        check_shape(&pin)?;
        if BLOCKLIST.contains(&pin.as_str()) {
            return Err(PinPolicyError::TooCommon);
        }
        let reused = previous.iter().map(|p| normalise(p)).any(|p| {
            p == pin || (p.len() == 2 * LEN && p.is_ascii() && (p[..LEN] == pin || p[LEN..] == pin))
        });
        if reused {
            return Err(PinPolicyError::SameAsPrevious);
        }
        Ok(NewPin(pin))
    }

    /// The PIN, upper-case: to hash, never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The form in which PINs are compared and hashed: surrounding whitespace dropped, ASCII letters
/// upper-cased.
pub fn normalise(pin: &str) -> String {
    pin.trim().to_ascii_uppercase()
}

/// Rules 1-5, on a normalised PIN.
fn check_shape(pin: &str) -> Result<(), PinPolicyError> {
    let len = pin.chars().count();
    if len != LEN {
        return Err(PinPolicyError::WrongLength { len });
    }
    let bytes = pin.as_bytes();
    if !bytes.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return Err(PinPolicyError::InvalidCharacter);
    }
    if bytes.iter().all(|&b| b == bytes[0]) {
        return Err(PinPolicyError::AllSameCharacter);
    }
    if is_run(bytes) {
        return Err(PinPolicyError::Sequence);
    }
    if !bytes.iter().any(u8::is_ascii_uppercase) || !bytes.iter().any(u8::is_ascii_digit) {
        return Err(PinPolicyError::NeedsLetterAndDigit);
    }
    Ok(())
}

/// Whether every character is the successor (or every one the predecessor) of the one before
/// it in [`SEQUENCE`].
fn is_run(pin: &[u8]) -> bool {
    let Some(ranks) =
        pin.iter().map(|b| SEQUENCE.iter().position(|s| s == b)).collect::<Option<Vec<usize>>>()
    else {
        return false;
    };
    let steps =
        |up: bool| ranks.windows(2).all(|w| if up { w[1] == w[0] + 1 } else { w[0] == w[1] + 1 });
    steps(true) || steps(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(candidate: &str) -> PinPolicyError {
        NewPin::parse(candidate, &[]).expect_err("refused")
    }

    #[test]
    fn a_pin_of_eight_letters_and_digits_is_accepted_and_upper_cased() {
        let pin = NewPin::parse("k7mq2xr9", &[]).expect("valid");
        assert_eq!(pin.expose(), "K7MQ2XR9");
        assert_eq!(NewPin::parse("  K7MQ2XR9\n", &[]), Ok(pin));
    }

    #[test]
    fn pin_must_be_exactly_eight_characters() {
        assert_eq!(err(""), PinPolicyError::WrongLength { len: 0 });
        assert_eq!(err("K7MQ2XR"), PinPolicyError::WrongLength { len: 7 });
        assert_eq!(err("K7MQ2XR9A"), PinPolicyError::WrongLength { len: 9 });
        assert_eq!(err("K7MQ2XRÈ"), PinPolicyError::InvalidCharacter, "counted in chars");
    }

    #[test]
    fn pin_may_contain_only_letters_and_digits() {
        for bad in ["K7MQ2X-9", "K7MQ 2X9", "K7MQ2X_9", "K7MQ2XRÀ"] {
            assert_eq!(err(bad), PinPolicyError::InvalidCharacter, "{bad:?}");
        }
    }

    #[test]
    fn pin_must_not_repeat_one_character() {
        assert_eq!(err("AAAAAAAA"), PinPolicyError::AllSameCharacter);
        assert_eq!(err("11111111"), PinPolicyError::AllSameCharacter);
        assert_eq!(err("zzzzzzzz"), PinPolicyError::AllSameCharacter);
    }

    #[test]
    fn pin_must_not_be_an_ascending_or_descending_run() {
        for run in [
            "ABCDEFGH", "12345678", "87654321", "HGFEDCBA", "stuvwxyz", "23456789", "6789ABCD",
            "DCBA9876",
        ] {
            assert_eq!(err(run), PinPolicyError::Sequence, "{run}");
        }
        // A run with one step out of place is not a run.
        assert!(NewPin::parse("1234568A", &[]).is_ok());
    }

    #[test]
    fn pin_needs_at_least_one_letter_and_one_digit() {
        assert_eq!(err("KXMQJXRW"), PinPolicyError::NeedsLetterAndDigit);
        assert_eq!(err("QWERTYUI"), PinPolicyError::NeedsLetterAndDigit);
        assert_eq!(err("PASSWORD"), PinPolicyError::NeedsLetterAndDigit);
        assert_eq!(err("20200401"), PinPolicyError::NeedsLetterAndDigit);
    }

    #[test]
    fn common_pins_are_refused_in_any_case() {
        for common in ["ABCD1234", "1234abcd", "Qwerty12", "inps2020", "pass1234", "a1234567"] {
            assert_eq!(err(common), PinPolicyError::TooCommon, "{common}");
        }
    }

    #[test]
    fn every_blocklisted_pin_satisfies_the_shape_rules() {
        assert!(BLOCKLIST.len() >= 40);
        for &pin in BLOCKLIST {
            assert_eq!(normalise(pin), pin, "{pin} is not normalised");
            assert_eq!(check_shape(pin), Ok(()), "{pin} is rejected before the blocklist");
        }
        let mut sorted = BLOCKLIST.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), BLOCKLIST.len(), "duplicates in the blocklist");
    }

    #[test]
    fn pin_must_differ_from_the_previous_pin() {
        assert_eq!(NewPin::parse("k7mq2xr9", &["K7MQ2XR9"]), Err(PinPolicyError::SameAsPrevious));
        assert_eq!(NewPin::parse("K7MQ2XR9", &[" k7mq2xr9 "]), Err(PinPolicyError::SameAsPrevious));
        assert!(NewPin::parse("K7MQ2XR8", &["K7MQ2XR9"]).is_ok());
    }

    #[test]
    fn pin_must_differ_from_both_halves_of_the_initial_pin() {
        let initial = "HK3M7PQR2XW9CDF4";
        for half in ["HK3M7PQR", "2XW9CDF4"] {
            assert_eq!(
                NewPin::parse(half, &[initial]),
                Err(PinPolicyError::SameAsPrevious),
                "whole initial PIN given"
            );
            assert_eq!(
                NewPin::parse(half, &["HK3M7PQR", "2XW9CDF4"]),
                Err(PinPolicyError::SameAsPrevious),
                "halves given"
            );
        }
        assert!(NewPin::parse("K3M7PQR2", &[initial]).is_ok());
    }

    #[test]
    fn debug_never_shows_the_pin() {
        let pin = NewPin::parse("K7MQ2XR9", &[]).expect("valid");
        let debug = format!("{pin:?}");
        assert!(!debug.contains("K7MQ2XR9"), "{debug}");
    }

    #[test]
    fn error_messages_never_contain_the_pin() {
        let candidates =
            ["K7MQ2X-9", "AAAAAAAA", "ABCDEFGH", "QWERTYUI", "ABCD1234", "K7MQ2XR", "K7MQ2XR9"];
        for candidate in candidates {
            let message = NewPin::parse(candidate, &["K7MQ2XR9"]).expect_err("refused").to_string();
            assert!(!message.contains(candidate), "{message}");
            assert!(message.starts_with(|c: char| c.is_ascii_lowercase()), "{message}");
        }
    }
}
