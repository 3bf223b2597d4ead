//! PINs: generation of the initial 16-character PIN and its two halves.

use rand::seq::IndexedRandom;
use std::fmt;

/// Letters and digits that cannot be mistaken for one another when read from a letter or an SMS
/// (no I/1, O/0).
pub const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Length of the initial PIN; each half is half of it.
pub const INITIAL_LEN: usize = 16;

/// A PIN in clear. It lives only in memory between generation and hashing/sending; it has no
/// `Debug` output beyond its length and is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin(<{} characters>)", self.0.len())
    }
}

impl Pin {
    /// A new initial PIN from the thread's CSPRNG (ChaCha, seeded from the OS).
    pub fn generate_initial() -> Self {
        let mut rng = rand::rng();
        let pin = (0..INITIAL_LEN)
            .map(|_| *ALPHABET.choose(&mut rng).expect("alphabet is not empty") as char)
            .collect();
        Pin(pin)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first half: sent at once by SMS/email/PEC, and the simplified PIN.
    pub fn first_half(&self) -> &str {
        &self.0[..INITIAL_LEN / 2]
    }

    /// The second half: sent by post.
    pub fn second_half(&self) -> &str {
        &self.0[INITIAL_LEN / 2..]
    }
}

/// A PIN as a caller typed it, normalised (trimmed, upper case). It may be anything, so it is
/// only ever measured and split by characters after checking that it is ASCII: a right PIN
/// always is, and a wrong one must fail like any other wrong PIN, never panic.
#[derive(Clone, PartialEq, Eq)]
pub struct PinAttempt(String);

impl fmt::Debug for PinAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinAttempt(<redacted>)")
    }
}

impl PinAttempt {
    pub fn new(raw: &str) -> Self {
        PinAttempt(raw.trim().to_ascii_uppercase())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The two halves, when this can be a whole initial PIN (16 ASCII characters).
    pub fn halves(&self) -> Option<(&str, &str)> {
        (self.0.is_ascii() && self.0.len() == INITIAL_LEN).then(|| self.0.split_at(INITIAL_LEN / 2))
    }
}

/// An argon2id hash of a PIN in PHC string form (algorithm, parameters and salt included), the
/// only form in which a PIN is ever stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinHash(String);

impl PinHash {
    /// Wraps a stored PHC string.
    pub fn from_phc(phc: String) -> Self {
        PinHash(phc)
    }

    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

impl From<String> for PinHash {
    fn from(phc: String) -> Self {
        PinHash(phc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_pin_has_sixteen_unambiguous_characters() {
        let pin = Pin::generate_initial();
        assert_eq!(pin.expose().len(), 16);
        assert!(pin.expose().bytes().all(|b| ALPHABET.contains(&b)));
        assert!(!pin.expose().contains(['I', 'O', '0', '1']));
    }

    #[test]
    fn the_two_halves_make_the_whole_pin() {
        let pin = Pin::generate_initial();
        assert_eq!(format!("{}{}", pin.first_half(), pin.second_half()), pin.expose());
        assert_eq!(pin.first_half().len(), 8);
    }

    #[test]
    fn two_initial_pins_differ() {
        assert_ne!(Pin::generate_initial(), Pin::generate_initial());
    }

    #[test]
    fn a_typed_pin_of_sixteen_bytes_but_fewer_characters_has_no_halves() {
        assert_eq!(PinAttempt::new("AÀÀÀÀÀÀÀB").halves(), None);
        assert_eq!(PinAttempt::new(" abcdefgh23456789 ").halves(), Some(("ABCDEFGH", "23456789")));
        assert!(!format!("{:?}", PinAttempt::new("SECRET12")).contains("SECRET12"));
    }

    #[test]
    fn debug_never_shows_the_pin() {
        let pin = Pin::generate_initial();
        assert!(!format!("{pin:?}").contains(pin.expose()));
    }
}
