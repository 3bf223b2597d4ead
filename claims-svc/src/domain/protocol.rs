//! The protocol number a claim receives when it is accepted, as the institute writes it:
//! `INPS.<office>.<year>.<number>`, e.g. `INPS.0000.2020.0012345`.

use std::fmt;
use std::str::FromStr;

/// A claim's protocol number: the registering office (`0000` for the online channel), the year,
/// and a number unique within both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolNumber {
    pub office: u16,
    pub year: u16,
    pub number: u32,
}

/// The office code of claims filed online, by citizens or patronati.
pub const ONLINE_OFFICE: u16 = 0;

/// The largest number a protocol number holds (seven digits).
pub const MAX_NUMBER: u32 = 9_999_999;

impl fmt::Display for ProtocolNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INPS.{:04}.{:04}.{:07}", self.office, self.year, self.number)
    }
}

/// A text that is not a protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("is not a protocol number (INPS.0000.2020.0012345)")]
pub struct NotAProtocolNumber;

impl FromStr for ProtocolNumber {
    type Err = NotAProtocolNumber;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.trim().split('.');
        let digits = |part: Option<&str>, len: usize| {
            part.filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u32>().ok())
                .ok_or(NotAProtocolNumber)
        };
        if parts.next() != Some("INPS") {
            return Err(NotAProtocolNumber);
        }
        let office = digits(parts.next(), 4)?;
        let year = digits(parts.next(), 4)?;
        let number = digits(parts.next(), 7)?;
        if parts.next().is_some() {
            return Err(NotAProtocolNumber);
        }
        // Four digits always fit a u16.
        Ok(Self { office: office as u16, year: year as u16, number })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_online_claim_of_2020_reads_as_the_institute_writes_it() {
        let p = ProtocolNumber { office: ONLINE_OFFICE, year: 2020, number: 12345 };
        assert_eq!(p.to_string(), "INPS.0000.2020.0012345");
        assert_eq!("INPS.0000.2020.0012345".parse(), Ok(p));
    }

    #[test]
    fn anything_else_is_not_a_protocol_number() {
        for text in [
            "",
            "INPS.0000.2020.12345",
            "INPS.0000.2020.0012345.1",
            "inps.0000.2020.0012345",
            "INPS.00a0.2020.0012345",
            "INPS.0000.2020.００１２３４５",
        ] {
            assert_eq!(text.parse::<ProtocolNumber>(), Err(NotAProtocolNumber), "{text:?}");
        }
    }

    #[test]
    fn the_largest_number_still_has_seven_digits() {
        let p = ProtocolNumber { office: 1234, year: 2020, number: MAX_NUMBER };
        assert_eq!(p.to_string(), "INPS.1234.2020.9999999");
    }
}
