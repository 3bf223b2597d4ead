//! The PIN request form (what RequestPin and the contact center's RequestPinForCaller check
//! before anything is stored), fed Mario Rossi's valid form with any of its fields made hostile:
//! nothing panics, a refusal names each refused field by its proto path, and a form that is
//! accepted can be printed on the letter and shown to the operator. Case counts stay modest so
//! the suite stays fast; `PROPTEST_CASES` raises them for a longer hunt.

use chrono::NaiveDate;
use identity_svc::domain::pin_request::PinRequest;
use proptest::prelude::*;
use sportello_proto::identity::v1 as id;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 6).expect("date")
}

fn rossi() -> id::RequestPinRequest {
    identity_svc::residents::demo_pin_request("RSSMRA85T10A562S")
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        "\\PC{0,30}",
        "[\\x00-\\x1f\\x7f\\u{202e}\\u{feff}A-Z0-9 ]{0,20}",
        "[ÀÈÌÒÙàèìòùŁłŞş😀€'-]{0,40}",
        (1usize..3000).prop_map(|n| "À".repeat(n)),
    ]
}

fn hostile_int() -> impl Strategy<Value = i32> {
    prop_oneof![any::<i32>(), -2..40i32, Just(i32::MAX), Just(i32::MIN)]
}

/// One field of the form, made hostile.
#[derive(Clone, Debug)]
enum Change {
    Text(usize, String),
    Int(usize, i32),
    Absent(usize),
    Abroad(String, String),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0usize..16, hostile_text()).prop_map(|(at, t)| Change::Text(at, t)),
        (0usize..7, hostile_int()).prop_map(|(at, n)| Change::Int(at, n)),
        (0usize..4).prop_map(Change::Absent),
        (hostile_text(), hostile_text()).prop_map(|(c, a)| Change::Abroad(c, a)),
    ]
}

fn apply(form: &mut id::RequestPinRequest, change: Change) {
    let person = form.personal_data.get_or_insert_with(Default::default);
    let contacts = form.contacts.get_or_insert_with(Default::default);
    match change {
        Change::Text(at, text) => {
            let italy = match &mut form.residence {
                Some(id::Residence { place: Some(id::residence::Place::Italy(a)) }) => Some(a),
                _ => None,
            };
            let field = match at {
                0 => &mut form.fiscal_code,
                1 => &mut person.surname,
                2 => &mut person.given_name,
                3 => &mut person.birth_province,
                4 => &mut person.birth_municipality,
                5 => &mut person.birth_country,
                6 => &mut contacts.home_phone,
                7 => &mut contacts.mobile_phone,
                8 => &mut contacts.email,
                9 => &mut contacts.pec,
                _ => match italy {
                    Some(a) => match at {
                        10 => &mut a.street,
                        11 => &mut a.street_number,
                        12 => &mut a.postal_code,
                        13 => &mut a.province,
                        _ => &mut a.municipality,
                    },
                    None => &mut form.fiscal_code,
                },
            };
            *field = text;
        }
        Change::Int(at, n) => {
            let date = person.birth_date.get_or_insert_with(Default::default);
            match at {
                0 => date.year = n,
                1 => date.month = n,
                2 => date.day = n,
                3 => person.sex = n,
                4 => contacts.preferred_phone = n,
                5 => contacts.preferred_time_slot = n,
                _ => form.first_half_channel = n,
            }
        }
        Change::Absent(at) => match at {
            0 => form.personal_data = None,
            1 => form.residence = None,
            2 => form.contacts = None,
            _ => person.birth_date = None,
        },
        Change::Abroad(country, address) => {
            form.residence = Some(id::Residence {
                place: Some(id::residence::Place::Abroad(id::ForeignAddress { country, address })),
            });
        }
    }
}

const PARTS: [&str; 5] =
    ["fiscal_code", "personal_data", "residence", "contacts", "first_half_channel"];

#[test]
fn rossis_form_as_it_is_is_accepted() {
    PinRequest::parse(&rossi(), today()).expect("Rossi's form");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_pin_form_with_hostile_fields_is_refused_by_field_or_accepted_never_a_panic(
        changes in proptest::collection::vec(change(), 1..4),
    ) {
        let mut form = rossi();
        for change in changes {
            apply(&mut form, change);
        }
        match PinRequest::parse(&form, today()) {
            Ok(request) => {
                // What an accepted form is used for: the letter, the operator's screen.
                let pd = &request.personal_data;
                let _ = request.residence.postal_lines(&pd.surname, &pd.given_name);
                let record = request.form_record();
                let _ = (record.masked_residence(), record.callback_phone());
            }
            Err(refused) => {
                let fields: Vec<&str> = refused.iter().map(|(f, _)| f).collect();
                prop_assert!(!fields.is_empty());
                for field in fields {
                    prop_assert!(
                        PARTS.iter().any(|p| field == *p || field.starts_with(&format!("{p}."))),
                        "{field}"
                    );
                }
            }
        }
    }
}
