//! The reader of citizens' uploads (`probe`: a PDF, a JPEG or PNG scan) and of PDFs' text, fed
//! real files with bytes changed, cut short or padded, and arbitrary bytes behind each file
//! type's signature: nothing panics, and a file reads the same every time. (In a service the
//! probe runs in a limited child process; the service's own documents are read in-process.)
//! Case counts stay modest so the suite stays fast; `PROPTEST_CASES` raises them.

use proptest::prelude::*;
use sportello_platform::pdf::{letterhead, render, text_of, Block};
use sportello_platform::probe::{probe, Budget};

/// A real one-page letter, as notify-svc prints them.
fn letter() -> Vec<u8> {
    let mut blocks = letterhead();
    blocks.push(Block::body("Gentile Mario Rossi, il suo PIN è nel riquadro."));
    render(&blocks)
}

/// A real 240 × 240 PNG.
fn png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(240, 240, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).expect("a PNG");
    out.into_inner()
}

/// A small budget, so that each case stays cheap.
fn budget() -> Budget {
    Budget {
        max_input_bytes: 1 << 20,
        max_pages: 4,
        max_objects: 2_000,
        max_content_bytes: 1 << 20,
        max_pixels: 1_000_000,
        min_side: 200,
        max_side: 2_000,
    }
}

/// How a file is damaged: bytes overwritten, the file cut, garbage inserted.
#[derive(Clone, Debug)]
enum Damage {
    Overwrite(usize, Vec<u8>),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let bytes = proptest::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        (any::<usize>(), bytes.clone()).prop_map(|(at, b)| Damage::Overwrite(at, b)),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), bytes).prop_map(|(at, b)| Damage::Insert(at, b)),
    ]
}

fn damaged(mut file: Vec<u8>, damages: Vec<Damage>) -> Vec<u8> {
    for d in damages {
        let len = file.len().max(1);
        match d {
            Damage::Overwrite(at, bytes) => {
                for (i, b) in bytes.into_iter().enumerate() {
                    if let Some(slot) = file.get_mut((at % len) + i) {
                        *slot = b;
                    }
                }
            }
            Damage::Cut(at) => file.truncate(at % len),
            Damage::Insert(at, bytes) => {
                let at = at % len;
                file.splice(at..at, bytes);
            }
        }
    }
    file
}

fn upload() -> impl Strategy<Value = Vec<u8>> {
    let garbage = proptest::collection::vec(any::<u8>(), 0..2048);
    prop_oneof![
        (proptest::collection::vec(damage(), 1..4)).prop_map(|d| damaged(letter(), d)),
        (proptest::collection::vec(damage(), 1..4)).prop_map(|d| damaged(png(), d)),
        garbage.clone().prop_map(|g| [b"%PDF-1.7\n".as_slice(), &g].concat()),
        garbage.clone().prop_map(|g| [b"\x89PNG\r\n\x1a\n".as_slice(), &g].concat()),
        garbage.clone().prop_map(|g| [b"\xff\xd8\xff\xe0".as_slice(), &g].concat()),
        garbage,
    ]
}

#[test]
fn a_real_letter_and_a_real_scan_read_as_what_they_are() {
    assert!(probe(&letter(), &budget()).is_ok());
    assert!(probe(&png(), &budget()).is_ok());
    assert!(text_of(&letter()).expect("text").contains("Mario Rossi"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn no_damaged_or_arbitrary_upload_makes_the_reader_panic_and_each_reads_the_same_twice(
        file in upload(),
    ) {
        let first = probe(&file, &budget());
        prop_assert_eq!(&first, &probe(&file, &budget()));
        let _ = text_of(&file);
    }
}
