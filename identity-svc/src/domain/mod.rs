//! identity-svc's rules, free of I/O: fiscal codes, PINs, and what a PIN request must contain.

pub mod belfiore;
pub mod codice_fiscale;
pub mod conversion;
pub mod pin;
pub mod pin_policy;
pub mod pin_request;
pub mod residents;
