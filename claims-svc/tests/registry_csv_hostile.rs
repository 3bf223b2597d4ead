//! The registry import's CSV reader and row parser, fed arbitrary files: nothing panics, a file
//! reads the same however its chunks fall (the gRPC stream cuts it anywhere), and a row the
//! parser accepts names a fiscal code that parses. Case counts stay modest so the suite stays
//! fast; `PROPTEST_CASES` raises them for a longer hunt.

use chrono::NaiveDate;
use claims_svc::domain::csv_stream::{CsvStream, Item};
use claims_svc::domain::registry::{Layout, COLUMNS};
use proptest::prelude::*;
use sportello_domain::CodiceFiscale;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 6).expect("date")
}

/// What the reader makes of `file` fed in chunks cut at `cuts` (positions, in any order).
fn read(file: &[u8], cuts: &[usize]) -> Vec<Item> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (file.len() + 1)).collect();
    at.sort_unstable();
    let mut stream = CsvStream::new();
    let mut items = Vec::new();
    let mut from = 0;
    for cut in at.into_iter().chain([file.len()]) {
        stream.feed(&file[from..cut], &mut items);
        from = cut;
    }
    stream.finish(&mut items);
    items
}

/// A cell as a hostile registry file might hold it.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("RSSMRA85T10A562S".to_owned()),
        Just("GESTIONE_SEPARATA:2015-01-01:".to_owned()),
        "[0-9]{1,4}-[0-9]{1,2}-[0-9]{1,2}",
        "[0-9.,-]{0,12}",
        "[01ynYN]{0,2}",
        "[A-Z0-9:;|,-]{0,40}",
        "\\PC{0,20}",
        any::<String>(),
    ]
}

/// A file: a header of known column names (some missing, some repeated, in any order), then
/// rows, written with quotes where needed, or raw bytes.
fn file() -> impl Strategy<Value = Vec<u8>> {
    let header = proptest::sample::subsequence(COLUMNS.to_vec(), 0..=COLUMNS.len());
    let rows = proptest::collection::vec(proptest::collection::vec(cell(), 0..18), 0..6);
    prop_oneof![
        (header, rows).prop_map(|(header, rows)| {
            let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
            w.write_record(&header).expect("header");
            for row in rows {
                w.write_record(&row).expect("row");
            }
            w.into_inner().expect("written")
        }),
        proptest::collection::vec(any::<u8>(), 0..400),
        "[a-z_,\"\\r\\n\\x00\u{feff}é]{0,200}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_registry_file_reads_the_same_however_its_chunks_fall(
        file in file(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        prop_assert_eq!(read(&file, &cuts), read(&file, &[]));
    }

    #[test]
    fn no_registry_row_makes_the_parser_panic_and_an_accepted_row_names_a_valid_fiscal_code(
        file in file(),
    ) {
        let mut layout = None;
        for item in read(&file, &[]) {
            let Item::Row { cells: Ok(cells), .. } = item else { continue };
            let record = csv::StringRecord::from(cells);
            let Some(layout) = &layout else {
                layout = Layout::from_header(&record).ok();
                continue;
            };
            if let Ok((fiscal_code, _)) = layout.parse(&record, today()) {
                let parsed = CodiceFiscale::parse(&fiscal_code, today());
                prop_assert!(parsed.is_ok(), "{fiscal_code}");
                prop_assert_eq!(parsed.expect("checked").canonical(), fiscal_code);
            }
        }
    }
}
