//! identity-svc's rules, free of I/O: fiscal codes, PINs, and what a PIN request must contain.

// The fiscal code and the Belfiore table live in the shared domain crate; their old paths stay.
pub use sportello_domain::{belfiore, codice_fiscale};

pub mod conversion;
pub mod pin;
pub mod pin_policy;
pub mod pin_request;
pub mod residents;
