//! Every parser at the edge, fed arbitrary text: none panics, and what one accepts reads back
//! as itself (its printed form parses to the same value). Case counts stay modest so the suite
//! stays fast; `PROPTEST_CASES` raises them for a longer hunt.

use chrono::{Datelike, NaiveDate};
use proptest::prelude::*;
use sportello_domain::codice_fiscale::{compute, Sex};
use sportello_domain::{mask, CodiceFiscale, Email, Iban, PersonName, PhoneNumber};

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 6).expect("date")
}

/// Text as hostile input comes: anything printable or not, the alphabet of the format in
/// question, or a valid value with one character changed.
fn text(alphabet: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,40}",
        proptest::string::string_regex(alphabet).expect("a regex"),
        "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{202a}-\\u{202e}\\u{feff}]{0,8}",
        "[ÀÈÌÒÙàèìòùÇçŁłŞş😀€]{0,20}",
    ]
}

/// `valid` with the character at `at` (counted modulo its length) replaced by `with`.
fn one_changed(valid: &str, at: usize, with: char) -> String {
    let n = valid.chars().count();
    valid.chars().enumerate().map(|(i, c)| if i == at % n { with } else { c }).collect()
}

const VALID_CF: &str = "RSSMRA85T10A562S";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_fiscal_code_parser_never_panics_and_what_it_accepts_reads_back_as_itself(
        input in prop_oneof![
            text("[A-Za-z0-9 ]{0,20}"),
            (0usize..16, any::<char>()).prop_map(|(at, c)| one_changed(VALID_CF, at, c)),
        ],
    ) {
        if let Ok(cf) = CodiceFiscale::parse(&input, today()) {
            prop_assert_eq!(CodiceFiscale::parse(cf.as_str(), today()).ok(), Some(cf.clone()));
            prop_assert_eq!(CodiceFiscale::parse(&cf.to_string(), today()).ok(), Some(cf.clone()));
            prop_assert_eq!(CodiceFiscale::parse(&cf.canonical(), today()).ok(), Some(cf.clone()));
            prop_assert_eq!(cf.masked().chars().count(), 16);
        }
        let _ = mask::fiscal_code(&input);
    }

    #[test]
    fn a_fiscal_code_computed_from_any_name_and_birth_date_parses_to_that_birth_date_and_sex(
        surname in "\\PC{0,30}",
        given in "\\PC{0,30}",
        days_ago in 0u64..(98 * 365),
        female in any::<bool>(),
    ) {
        let born = today() - chrono::Days::new(days_ago);
        let sex = if female { Sex::Female } else { Sex::Male };
        let code = compute(&surname, &given, born, sex, "H501");
        let cf = CodiceFiscale::parse(&code, today());
        prop_assert!(cf.is_ok(), "{code} for {surname:?} {given:?}: {cf:?}");
        let cf = cf.expect("checked");
        prop_assert_eq!(cf.birth_date(), born);
        prop_assert_eq!(cf.sex(), sex);
        prop_assert_eq!(cf.birth_date().year(), born.year());
    }

    #[test]
    fn an_email_parser_never_panics_and_what_it_accepts_reads_back_as_itself(
        input in text("[a-zA-Z0-9.+_@-]{0,30}(\\.[a-z]{2,3})?"),
    ) {
        if let Ok(email) = Email::parse(&input) {
            prop_assert_eq!(Email::parse(email.as_str()).ok(), Some(email.clone()));
            prop_assert_eq!(Email::parse(&email.to_string()).ok(), Some(email.clone()));
            let _ = email.masked();
        }
        let _ = mask::email(&input);
        let _ = mask::any(&input);
    }

    #[test]
    fn an_iban_parser_never_panics_and_what_it_accepts_reads_back_as_itself(
        input in prop_oneof![
            text("[A-Za-z]{2}[0-9]{2}[A-Za-z0-9 ]{0,30}"),
            (0usize..27, any::<char>())
                .prop_map(|(at, c)| one_changed("IT60X0542811101000000123456", at, c)),
        ],
    ) {
        if let Ok(iban) = Iban::parse(&input) {
            prop_assert!(Iban::parse(iban.as_str()).ok() == Some(iban.clone()));
            // As people write it: groups of four.
            let grouped: Vec<String> = iban
                .as_str()
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).to_lowercase())
                .collect();
            prop_assert!(Iban::parse(&grouped.join(" ")).ok() == Some(iban.clone()));
            let _ = (iban.masked(), iban.country());
        }
    }

    #[test]
    fn a_phone_parser_never_panics_and_what_it_accepts_reads_back_as_itself(
        input in text("\\+?[0-9 ()./-]{0,20}"),
    ) {
        if let Ok(phone) = PhoneNumber::parse(&input) {
            prop_assert_eq!(PhoneNumber::parse(phone.as_str()).ok(), Some(phone.clone()));
            prop_assert_eq!(PhoneNumber::parse(&phone.to_string()).ok(), Some(phone.clone()));
            let _ = phone.masked();
        }
        if let Ok(mobile) = PhoneNumber::parse_mobile(&input) {
            prop_assert_eq!(PhoneNumber::parse_mobile(mobile.as_str()).ok(), Some(mobile.clone()));
        }
        let _ = mask::phone(&input);
    }

    #[test]
    fn a_name_parser_never_panics_and_what_it_accepts_reads_back_as_itself(
        input in text("[A-Za-zÀ-ÿ' -]{0,30}"),
    ) {
        if let Ok(name) = PersonName::parse(&input) {
            prop_assert_eq!(PersonName::parse(name.as_str()).ok(), Some(name.clone()));
        }
        let _ = mask::postal(&input);
    }
}
