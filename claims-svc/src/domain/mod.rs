//! Benefits, claims and the rules about them: pure logic, no I/O.

use eligibility::BenefitCode;
use sportello_platform::auth::Level;

pub mod claim;
pub mod csv_stream;
pub mod eligibility;
// The IBAN lives in the shared domain crate; its old path stays.
pub use sportello_domain::iban;
pub mod protocol;
pub mod registry;
pub mod sepa;

/// Which claims exclude each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Art. 31: one of the five indemnities per person.
    Indemnity,
    /// One baby-sitting bonus per child, whichever parent files it.
    Child,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Indemnity => "INDEMNITY",
            Group::Child => "CHILD",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Group::Indemnity, Group::Child].into_iter().find(|g| g.as_str() == text)
    }
}

/// A benefit of the catalogue, as the back office last set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Benefit {
    pub code: BenefitCode,
    pub title: String,
    pub legal_basis: String,
    pub amount_cents: i64,
    /// 0: no ceiling of its own.
    pub ceiling_cents: i64,
    pub reserved_cents: i64,
    /// Unix milliseconds.
    pub opens_at: i64,
    pub min_level: Level,
    pub group: Group,
    pub conditions: Vec<String>,
    pub increased_amount_cents: i64,
    pub increased_amount_condition: String,
}

impl Benefit {
    /// What is left of the ceiling (0 when there is none of its own).
    pub fn remaining_cents(&self) -> i64 {
        (self.ceiling_cents - self.reserved_cents).max(0)
    }
}

/// How credential levels are spelled in the database.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Simplified => "SIMPLIFIED",
        Level::Ordinary => "ORDINARY",
        Level::Dispositive => "DISPOSITIVE",
    }
}

pub fn parse_level(text: &str) -> Option<Level> {
    [Level::Simplified, Level::Ordinary, Level::Dispositive]
        .into_iter()
        .find(|l| level_name(*l) == text)
}
