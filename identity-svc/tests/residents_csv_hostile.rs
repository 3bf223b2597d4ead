//! The register of residents' CSV reader (what `sportello import residents` and the demo
//! register read), fed arbitrary files: nothing panics, every record and problem has a line of
//! the file, and a file written from records reads back as those records. Case counts stay
//! modest so the suite stays fast; `PROPTEST_CASES` raises them for a longer hunt.

use identity_svc::residents::csv::{parse, COLUMNS};
use proptest::prelude::*;

/// A cell: anything CSV can hold once trimmed (commas, quotes, newlines, any script).
fn cell() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9 ,\"'\\n.-]{0,20}", "\\PC{0,12}"]
        .prop_map(|s| s.trim().replace('|', "/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_residents_file_makes_the_reader_panic_and_everything_it_reads_has_a_line(
        file in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            "[a-z_,\"\\r\\n\\x00\u{feff}0-9/-]{0,300}".prop_map(String::into_bytes),
            "\\PC{0,200}".prop_map(|body| format!("{}\n{body}", COLUMNS.join(",")).into_bytes()),
        ],
    ) {
        let (records, problems) = parse(file.as_slice());
        for record in &records {
            prop_assert!(record.line >= 2, "a record on line {}", record.line);
        }
        for problem in &problems {
            prop_assert!(problem.line >= 0);
        }
    }

    #[test]
    fn a_residents_file_written_from_entries_reads_back_as_those_entries(
        rows in proptest::collection::vec(
            (proptest::collection::vec(cell(), 9), 1900i32..2030, 1i32..13, 1i32..29, any::<bool>()),
            1..5,
        ),
    ) {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(COLUMNS).expect("header");
        for (cells, year, month, day, female) in &rows {
            let date = format!("{year}-{month:02}-{day:02}");
            let sex = if *female { "F" } else { "M" };
            let c = |i: usize| cells[i].as_str();
            w.write_record([
                c(0), c(1), c(2), &date, sex, c(3), c(4), c(5), c(6), c(7), c(8), "RM", "Roma", "",
                "",
            ])
            .expect("row");
        }
        let file = w.into_inner().expect("written");
        let (records, problems) = parse(file.as_slice());
        prop_assert!(problems.is_empty(), "{problems:?}");
        prop_assert_eq!(records.len(), rows.len());
        for (record, (cells, year, month, day, _)) in records.iter().zip(&rows) {
            prop_assert_eq!(&record.fiscal_code, &cells[0]);
            let person = record.personal_data.as_ref().expect("personal data");
            prop_assert_eq!((&person.surname, &person.given_name), (&cells[1], &cells[2]));
            let born = person.birth_date.as_ref().expect("birth date");
            prop_assert_eq!((born.year, born.month, born.day), (*year, *month, *day));
        }
    }
}
