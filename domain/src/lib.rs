//! Sportello's shared domain values, each parsed once with one rule set and used by identity,
//! claims and notify alike: the [`codice_fiscale::CodiceFiscale`] with its [`belfiore`] table,
//! [`email::Email`], [`phone::PhoneNumber`], [`iban::Iban`], [`text::PersonName`] and
//! [`text::PostalAddress`], and the masks that show them in listings and logs.
//!
//! The rule every type keeps: a value the edge accepts is a value every later step can store
//! (on SQLite and PostgreSQL), send (SMTP, SMS, SEPA) and print. Nothing here does I/O.

pub mod belfiore;
pub mod codice_fiscale;
pub mod email;
pub mod iban;
pub mod mask;
pub mod phone;
pub mod text;

pub use codice_fiscale::CodiceFiscale;
pub use email::Email;
pub use iban::Iban;
pub use phone::PhoneNumber;
pub use text::{PersonName, PostalAddress};
