//! Benefits and the rules about them.

/// A benefit of the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Benefit {
    pub code: String,
    pub title: String,
    pub legal_basis: String,
    pub amount_cents: i64,
    pub ceiling_cents: i64,
    pub simplified_pin_allowed: bool,
}

pub mod eligibility;
pub mod iban;
pub mod protocol;
