//! Italian codice fiscale of a natural person (16 characters).
//!
//! Layout, 1-based positions:
//!
//! | positions | content                                              |
//! |-----------|------------------------------------------------------|
//! | 1-3       | surname letters                                      |
//! | 4-6       | given-name letters                                   |
//! | 7-8       | last two digits of the birth year                    |
//! | 9         | birth month letter (`ABCDEHLMPRST` = Jan..Dec)       |
//! | 10-11     | birth day, plus 40 for women                         |
//! | 12-15     | Belfiore code of the birthplace (`Z...` = abroad)    |
//! | 16        | check character                                      |
//!
//! Omocodia: when two people would get the same code, the tax agency replaces
//! digits (positions 7, 8, 10, 11, 13, 14, 15) with the letters `LMNPQRSTUV`
//! (for 0-9) and recomputes the check character. Such a code is as valid as the
//! plain one and denotes the same person, so equality and hashing use the
//! canonical (all-digit) form.
//!
//! A codice fiscale is personal data: `Debug` and every error message avoid
//! printing it; only `Display` and `as_str` give the full code.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::iter;

use chrono::{Datelike, NaiveDate};

use crate::belfiore::{self, LookupError, Place};

const LEN: usize = 16;
const MONTH_LETTERS: &[u8; 12] = b"ABCDEHLMPRST";
/// Letter replacing digit `i` in an omocode is `OMOCODE_LETTERS[i]`.
const OMOCODE_LETTERS: &[u8; 10] = b"LMNPQRSTUV";
/// 0-based indices of the characters that omocodia may turn into letters.
const OMOCODE_INDICES: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];
/// Value of each character at odd 1-based positions ("dispari" table), indexed
/// by letter (`A` = 0) or digit (`0` = 0, which shares the value of `A`).
const ODD_VALUES: [u32; 26] =
    [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23];
const FEMALE_DAY_OFFSET: u8 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    Male,
    Female,
}

/// Why a string is not a valid codice fiscale. Messages never contain the code
/// itself, so they are safe to log and to return to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CfError {
    #[error("a codice fiscale must be 16 characters long, got {len}")]
    WrongLength { len: usize },
    /// `position` is 1-based.
    #[error("invalid character at position {position} of the codice fiscale")]
    InvalidCharacter { position: usize },
    #[error("invalid birth month letter in the codice fiscale")]
    InvalidMonth,
    #[error("invalid birth day in the codice fiscale (must be 01-31, or 41-71 for women)")]
    InvalidDay,
    #[error("the birth date in the codice fiscale does not exist")]
    InvalidDate,
    #[error("unknown birthplace code {code} in the codice fiscale")]
    UnknownBirthplace { code: String },
    #[error("birthplace code {code} in the codice fiscale was not in use on the birth date")]
    BirthplaceNotValidOnBirthDate { code: String },
    #[error("the check character of the codice fiscale is wrong")]
    WrongCheckCharacter,
}

/// A validated codice fiscale.
#[derive(Clone)]
pub struct CodiceFiscale {
    /// As given, trimmed and upper-cased; all ASCII.
    code: String,
    canonical: String,
    birth_date: NaiveDate,
    sex: Sex,
    birthplace: &'static Place,
}

impl CodiceFiscale {
    /// Parses and validates `input`, which may be lower-case and surrounded by
    /// whitespace.
    ///
    /// The two-digit year is placed in the latest century that does not put
    /// the birth date after `today` (so with `today` in 2026, `25` means 2025,
    /// never 1925): the code alone cannot tell a newborn from a centenarian,
    /// and callers holding an independent birth date should compare it.
    ///
    /// Checks run in this order: length, characters, month, day, calendar
    /// date, check character, birthplace. The field checks come before the
    /// check character because they point at the faulty part of a mistyped
    /// code; the birthplace comes last so that an unknown code with a correct
    /// check character points at the reference table rather than at the input.
    pub fn parse(input: &str, today: NaiveDate) -> Result<Self, CfError> {
        let given = normalise(input)?;
        let canonical = canonical_bytes(&given);

        let month =
            MONTH_LETTERS.iter().position(|&m| m == canonical[8]).ok_or(CfError::InvalidMonth)?;
        let (day, sex) = match two_digits(canonical[9], canonical[10]) {
            d @ 1..=31 => (d, Sex::Male),
            d @ 41..=71 => (d - FEMALE_DAY_OFFSET, Sex::Female),
            _ => return Err(CfError::InvalidDay),
        };
        let birth_date = resolve_birth_date(
            two_digits(canonical[6], canonical[7]),
            month as u32 + 1,
            u32::from(day),
            today,
        )?;

        if check_character(&given[..LEN - 1]) != given[LEN - 1] {
            return Err(CfError::WrongCheckCharacter);
        }

        let birthplace = belfiore::lookup(&ascii_string(&canonical[11..15]), birth_date).map_err(
            |e| match e {
                LookupError::UnknownCode { code } => CfError::UnknownBirthplace { code },
                LookupError::NotValidOn { code } => CfError::BirthplaceNotValidOnBirthDate { code },
            },
        )?;

        Ok(CodiceFiscale {
            code: ascii_string(&given),
            canonical: ascii_string(&canonical),
            birth_date,
            sex,
            birthplace,
        })
    }

    /// The code as given, trimmed and upper-cased (omocodia letters kept).
    pub fn as_str(&self) -> &str {
        &self.code
    }

    /// The code with omocodia letters turned back into digits and the check
    /// character recomputed; equal to `as_str()` for a non-omocode.
    pub fn canonical(&self) -> String {
        self.canonical.clone()
    }

    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    pub fn sex(&self) -> Sex {
        self.sex
    }

    /// The Belfiore entry for the birthplace as it was on the birth date.
    pub fn birthplace(&self) -> &'static Place {
        self.birthplace
    }

    pub fn is_omocode(&self) -> bool {
        self.code != self.canonical
    }

    /// Log-safe form: the first 3 and last 2 characters of `as_str()` with the
    /// 11 in between replaced by `*`, e.g. `RSS***********2S`. Enough to tell
    /// records apart when reading logs, but the birth date, sex and most of the
    /// birthplace are hidden.
    pub fn masked(&self) -> String {
        crate::mask::fiscal_code(&self.code)
    }

    /// The three letters derived from the surname (positions 1-3).
    pub fn surname_code(&self) -> &str {
        &self.code[..3]
    }

    /// The three letters derived from the given name (positions 4-6).
    pub fn name_code(&self) -> &str {
        &self.code[3..6]
    }
}

impl fmt::Display for CodiceFiscale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

/// Prints only the masked form so that `{:?}` in logs and panics never leaks
/// the full code.
impl fmt::Debug for CodiceFiscale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CodiceFiscale").field(&self.masked()).finish()
    }
}

impl PartialEq for CodiceFiscale {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for CodiceFiscale {}

impl Hash for CodiceFiscale {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

/// The three surname letters of a codice fiscale: consonants, then vowels,
/// then `X` padding. Diacritics and strokes are disregarded (`Ł` is `L`, `Ș` is
/// `S`, see [`belfiore::strip_accent`]); spaces, apostrophes and any other
/// non-letter are skipped, as are letters of other scripts.
pub fn surname_code_for(surname: &str) -> String {
    let (consonants, vowels) = split_letters(surname);
    pad_code(consonants.into_iter().chain(vowels))
}

/// The three given-name letters of a codice fiscale: with four or more
/// consonants the 1st, 3rd and 4th; otherwise as for the surname.
pub fn name_code_for(given_name: &str) -> String {
    let (consonants, vowels) = split_letters(given_name);
    if let [first, _, third, fourth, ..] = consonants[..] {
        [first, third, fourth].iter().collect()
    } else {
        pad_code(consonants.into_iter().chain(vowels))
    }
}

/// Builds the plain (non-omocode) codice fiscale of a person: the inverse of
/// [`CodiceFiscale::parse`], so `parse(&compute(..))` gives back the birth
/// date (century resolved by `parse`'s rule), sex and birthplace.
///
/// `belfiore_code` is used as given (trimmed, upper-cased) and not looked up,
/// so a code that does not exist, or did not on `birth_date`, gives a string
/// that `parse` rejects. Omocodes are assigned by the tax agency and cannot be
/// derived from the anagrafica alone.
///
/// # Panics
///
/// If `belfiore_code` is not a letter followed by three digits.
pub fn compute(
    surname: &str,
    given_name: &str,
    birth_date: NaiveDate,
    sex: Sex,
    belfiore_code: &str,
) -> String {
    let place = belfiore_code.trim().to_ascii_uppercase();
    let p = place.as_bytes();
    assert!(
        p.len() == 4 && p[0].is_ascii_uppercase() && p[1..].iter().all(u8::is_ascii_digit),
        "a Belfiore code is a letter followed by three digits"
    );
    let day = match sex {
        Sex::Male => birth_date.day(),
        Sex::Female => birth_date.day() + u32::from(FEMALE_DAY_OFFSET),
    };
    let month = char::from(MONTH_LETTERS[birth_date.month0() as usize]);
    let mut code = format!(
        "{}{}{:02}{month}{day:02}{place}",
        surname_code_for(surname),
        name_code_for(given_name),
        birth_date.year().rem_euclid(100),
    );
    let check = check_character(code.as_bytes());
    code.push(char::from(check));
    code
}

fn split_letters(s: &str) -> (Vec<char>, Vec<char>) {
    s.chars()
        .map(|c| belfiore::strip_accent(c).to_ascii_uppercase())
        .filter(char::is_ascii_uppercase)
        .partition(|c| !matches!(c, 'A' | 'E' | 'I' | 'O' | 'U'))
}

fn pad_code(letters: impl Iterator<Item = char>) -> String {
    letters.chain(iter::repeat('X')).take(3).collect()
}

/// Trims, upper-cases and checks the character class of every position.
fn normalise(input: &str) -> Result<[u8; LEN], CfError> {
    let trimmed = input.trim();
    let len = trimmed.chars().count();
    if len != LEN {
        return Err(CfError::WrongLength { len });
    }
    let mut code = [0u8; LEN];
    for (i, (slot, c)) in code.iter_mut().zip(trimmed.chars()).enumerate() {
        *slot = u8::try_from(c.to_ascii_uppercase())
            .ok()
            .filter(|&b| allowed_at(i, b))
            .ok_or(CfError::InvalidCharacter { position: i + 1 })?;
    }
    Ok(code)
}

fn allowed_at(index: usize, b: u8) -> bool {
    if OMOCODE_INDICES.contains(&index) {
        b.is_ascii_digit() || OMOCODE_LETTERS.contains(&b)
    } else {
        b.is_ascii_uppercase()
    }
}

/// Expects a code that passed `normalise`.
fn canonical_bytes(code: &[u8; LEN]) -> [u8; LEN] {
    let mut out = *code;
    for &i in &OMOCODE_INDICES {
        if let Some(digit) = OMOCODE_LETTERS.iter().position(|&l| l == out[i]) {
            out[i] = b'0' + digit as u8;
        }
    }
    out[LEN - 1] = check_character(&out[..LEN - 1]);
    out
}

/// Check character over the first 15 characters (upper-case ASCII letters or
/// digits): odd 1-based positions use the "dispari" table, even positions the
/// character's ordinal, sum modulo 26 as a letter.
fn check_character(first15: &[u8]) -> u8 {
    let sum: u32 = first15
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let ordinal = if b.is_ascii_digit() { b - b'0' } else { b - b'A' };
            if i % 2 == 0 {
                ODD_VALUES[usize::from(ordinal)]
            } else {
                u32::from(ordinal)
            }
        })
        .sum();
    b'A' + (sum % 26) as u8
}

/// Expects ASCII digits (as in a canonical code).
fn two_digits(tens: u8, units: u8) -> u8 {
    (tens - b'0') * 10 + (units - b'0')
}

fn resolve_birth_date(
    year_in_century: u8,
    month: u32,
    day: u32,
    today: NaiveDate,
) -> Result<NaiveDate, CfError> {
    let century_start = today.year().div_euclid(100) * 100;
    let mut year = century_start + i32::from(year_in_century);
    // Compared as numbers rather than dates so that the century is chosen the
    // same way whether or not the day exists in that year.
    if (year, month, day) > (today.year(), today.month(), today.day()) {
        year -= 100;
    }
    NaiveDate::from_ymd_opt(year, month, day).ok_or(CfError::InvalidDate)
}

fn ascii_string(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    fn today() -> NaiveDate {
        date(2026, 6, 1)
    }

    /// Appends the check character to 15 characters, to build codes that fail
    /// only for the reason a test is about.
    fn with_check(first15: &str) -> String {
        assert_eq!(first15.len(), 15);
        let check = check_character(first15.as_bytes());
        format!("{first15}{}", char::from(check))
    }

    fn parse(code: &str) -> Result<CodiceFiscale, CfError> {
        CodiceFiscale::parse(code, today())
    }

    // Published examples: "RSSMRA85T10A562S" is the code used throughout
    // Italian documentation and validator test suites (A562 is San Giuliano
    // Terme, PI); the other two are the English Wikipedia "Italian fiscal code"
    // examples (Matteo Moretti, Milan, 9 April 1925; Samantha Miller, USA,
    // 25 September 1982).

    #[test]
    fn names_with_polish_and_romanian_letters_give_the_letters_of_their_base_letters() {
        assert_eq!(surname_code_for("Țurcanu"), "TRC");
        assert_eq!(name_code_for("Ștefan"), "SFN");
        assert_eq!(surname_code_for("Łukasik"), "LKS");
        assert_eq!(name_code_for("Łucja"), "LCJ");
        // Not the code of the name with the letter left out.
        assert_ne!(surname_code_for("Țurcanu"), surname_code_for("urcanu"));
    }

    #[test]
    fn published_example_rossi_mario_is_valid_male_born_1985() {
        let cf = parse("RSSMRA85T10A562S").expect("valid");
        assert_eq!(cf.as_str(), "RSSMRA85T10A562S");
        assert_eq!(cf.birth_date(), date(1985, 12, 10));
        assert_eq!(cf.sex(), Sex::Male);
        assert_eq!(cf.birthplace().code, "A562");
        assert_eq!(cf.birthplace().name, "San Giuliano Terme");
        assert_eq!(cf.surname_code(), "RSS");
        assert_eq!(cf.name_code(), "MRA");
        assert!(!cf.is_omocode());
        assert_eq!(cf.canonical(), "RSSMRA85T10A562S");
    }

    #[test]
    fn published_example_moretti_matteo_born_in_milan_is_valid() {
        let cf = CodiceFiscale::parse("MRTMTT25D09F205Z", date(2024, 1, 1)).expect("valid");
        assert_eq!(cf.birth_date(), date(1925, 4, 9));
        assert_eq!(cf.sex(), Sex::Male);
        assert_eq!(cf.birthplace().name, "Milano");
        assert_eq!(cf.birthplace().province, "MI");
    }

    #[test]
    fn published_example_miller_samantha_is_female_born_abroad() {
        let cf = parse("MLLSNT82P65Z404U").expect("valid");
        assert_eq!(cf.birth_date(), date(1982, 9, 25));
        assert_eq!(cf.sex(), Sex::Female);
        assert!(cf.birthplace().is_foreign());
        assert_eq!(cf.birthplace().name, "Stati Uniti D'America");
    }

    #[test]
    fn check_character_matches_published_examples() {
        assert_eq!(check_character(b"RSSMRA85T10A562"), b'S');
        assert_eq!(check_character(b"MRTMTT25D09F205"), b'Z');
        assert_eq!(check_character(b"MLLSNT82P65Z404"), b'U');
    }

    #[test]
    fn female_day_has_40_added_and_is_decoded_back() {
        let cf = parse("BNCLRA90A41H501F").expect("valid");
        assert_eq!(cf.sex(), Sex::Female);
        assert_eq!(cf.birth_date(), date(1990, 1, 1));
        let cf = parse(&with_check("BNCLRA90A71H501")).expect("valid");
        assert_eq!(cf.birth_date(), date(1990, 1, 31));
    }

    #[test]
    fn wrong_check_character_is_rejected() {
        assert_eq!(parse("RSSMRA85T10A562T").map(|_| ()), Err(CfError::WrongCheckCharacter));
    }

    #[test]
    fn omocode_with_letters_in_day_digits_is_valid_and_denotes_same_person() {
        let plain = parse("RSSMRA85T10A562S").expect("valid");
        let omocode = parse(&with_check("RSSMRA85TMLA562")).expect("valid omocode");
        assert!(omocode.is_omocode());
        assert_eq!(omocode.canonical(), "RSSMRA85T10A562S");
        assert_eq!(omocode.birth_date(), plain.birth_date());
        assert_eq!(omocode, plain);
    }

    #[test]
    fn omocodes_of_every_level_are_valid_and_denote_same_person() {
        let plain = parse("RSSMRA85T10A562S").expect("valid");
        // The agency substitutes from the rightmost digit leftwards.
        let levels = [
            "RSSMRA85T10A56N",
            "RSSMRA85T10A5SN",
            "RSSMRA85T10ARSN",
            "RSSMRA85T1LARSN",
            "RSSMRA85TMLARSN",
            "RSSMRA8RTMLARSN",
            "RSSMRAURTMLARSN",
        ];
        for first15 in levels {
            let code = with_check(first15);
            let omocode = parse(&code).expect("valid omocode");
            assert!(omocode.is_omocode(), "{first15}");
            assert_eq!(omocode.as_str(), code);
            assert_eq!(omocode.canonical(), plain.as_str());
            assert_eq!(omocode.birth_date(), plain.birth_date());
            assert_eq!(omocode.sex(), plain.sex());
            assert_eq!(omocode.birthplace(), plain.birthplace());
            assert_eq!(omocode, plain);
        }
    }

    #[test]
    fn omocode_with_all_seven_positions_substituted_has_expected_check_character() {
        let cf = parse("RSSMRAURTMLARSNL").expect("valid omocode");
        assert_eq!(cf.canonical(), "RSSMRA85T10A562S");
    }

    #[test]
    fn omocode_check_character_is_computed_on_the_letters_not_the_digits() {
        // Letters in place of digits but keeping the plain code's check character.
        assert_eq!(parse("RSSMRA85TMLA562S").map(|_| ()), Err(CfError::WrongCheckCharacter));
    }

    #[test]
    fn equal_codes_hash_equal_including_omocodes() {
        let mut set = HashSet::new();
        set.insert(parse("RSSMRA85T10A562S").expect("valid"));
        set.insert(parse("RSSMRAURTMLARSNL").expect("valid"));
        set.insert(parse("rssmra85t10a562s").expect("valid"));
        assert_eq!(set.len(), 1);
        assert_ne!(
            parse("RSSMRA85T10A562S").expect("valid"),
            parse("MLLSNT82P65Z404U").expect("valid")
        );
    }

    #[test]
    fn letter_outside_omocode_alphabet_in_digit_position_is_invalid_character() {
        assert_eq!(
            parse(&with_check("RSSMRAA5T10A562")).map(|_| ()),
            Err(CfError::InvalidCharacter { position: 7 })
        );
        assert_eq!(
            parse(&with_check("RSSMRA85T10A56W")).map(|_| ()),
            Err(CfError::InvalidCharacter { position: 15 })
        );
    }

    #[test]
    fn digit_in_letter_position_is_invalid_character() {
        assert_eq!(
            parse(&with_check("RSSMR185T10A562")).map(|_| ()),
            Err(CfError::InvalidCharacter { position: 6 })
        );
        assert_eq!(
            parse(&with_check("RSSMRA85T109562")).map(|_| ()),
            Err(CfError::InvalidCharacter { position: 12 })
        );
        assert_eq!(
            parse("RSSMRA85T10A5621").map(|_| ()),
            Err(CfError::InvalidCharacter { position: 16 })
        );
    }

    #[test]
    fn foreign_birth_uses_z_code_of_the_country() {
        let cf = parse(&with_check("SMTJHN70A01Z404")).expect("valid");
        assert!(cf.birthplace().is_foreign());
        assert_eq!(cf.birthplace().code, "Z404");
        assert_eq!(cf.birthplace().province, "EE");
    }

    #[test]
    fn suppressed_municipality_is_accepted_for_birth_before_its_suppression() {
        // Lusiana (VI), E762, existed until 2019-02-19.
        let cf = parse(&with_check("RSSMRA80C15E762")).expect("valid");
        assert_eq!(cf.birthplace().name, "Lusiana");
        assert_eq!(cf.birthplace().province, "VI");
        assert!(parse(&with_check("RSSMRA19B19E762")).is_ok());
    }

    #[test]
    fn suppressed_municipality_is_rejected_for_birth_after_its_suppression() {
        for first15 in ["RSSMRA19B20E762", "RSSMRA20C15E762"] {
            assert_eq!(
                parse(&with_check(first15)).map(|_| ()),
                Err(CfError::BirthplaceNotValidOnBirthDate { code: "E762".into() }),
                "{first15}"
            );
        }
    }

    #[test]
    fn municipality_is_rejected_for_birth_before_it_existed() {
        // Fiumicino (RM), M297, was created on 1992-04-04.
        assert_eq!(
            parse(&with_check("RSSMRA80A01M297")).map(|_| ()),
            Err(CfError::BirthplaceNotValidOnBirthDate { code: "M297".into() })
        );
        assert_eq!(
            parse(&with_check("RSSMRA92D04M297")).expect("valid").birthplace().name,
            "Fiumicino"
        );
    }

    #[test]
    fn unknown_birthplace_code_is_rejected() {
        assert_eq!(
            parse(&with_check("RSSMRA80A01Z999")).map(|_| ()),
            Err(CfError::UnknownBirthplace { code: "Z999".into() })
        );
    }

    #[test]
    fn birthplace_digits_written_as_omocode_letters_are_looked_up_as_digits() {
        let cf = parse(&with_check("RSSMRA85T10A5SN")).expect("valid");
        assert_eq!(cf.birthplace().code, "A562");
        let err = parse(&with_check("RSSMRA80A01ZVVV")).map(|_| ());
        assert_eq!(err, Err(CfError::UnknownBirthplace { code: "Z999".into() }));
    }

    #[test]
    fn invalid_month_letter_is_rejected() {
        for month in ["F", "G", "Z"] {
            let code = with_check(&format!("RSSMRA85{month}10A562"));
            assert_eq!(parse(&code).map(|_| ()), Err(CfError::InvalidMonth), "{month}");
        }
    }

    #[test]
    fn day_outside_male_and_female_ranges_is_rejected() {
        for day in ["00", "32", "39", "40", "72", "99"] {
            let code = with_check(&format!("RSSMRA85T{day}A562"));
            assert_eq!(parse(&code).map(|_| ()), Err(CfError::InvalidDay), "{day}");
        }
    }

    #[test]
    fn day_that_does_not_exist_in_the_month_is_rejected() {
        for first15 in ["RSSMRA85B30A562", "RSSMRA85B70A562", "RSSMRA85D31A562", "RSSMRA01B29A562"]
        {
            assert_eq!(
                parse(&with_check(first15)).map(|_| ()),
                Err(CfError::InvalidDate),
                "{first15}"
            );
        }
    }

    #[test]
    fn february_29_is_accepted_in_a_leap_year() {
        let cf = parse(&with_check("RSSMRA00B29A562")).expect("valid");
        assert_eq!(cf.birth_date(), date(2000, 2, 29));
    }

    #[test]
    fn lower_case_input_with_surrounding_whitespace_is_normalised() {
        let cf = parse("  rssmra85t10a562s\n").expect("valid");
        assert_eq!(cf.as_str(), "RSSMRA85T10A562S");
        assert_eq!(cf.to_string(), "RSSMRA85T10A562S");
    }

    #[test]
    fn internal_space_is_rejected() {
        assert_eq!(
            parse("RSSMRA 5T10A562S").map(|_| ()),
            Err(CfError::InvalidCharacter { position: 7 })
        );
        assert_eq!(parse("RSS MRA85T10A562S").map(|_| ()), Err(CfError::WrongLength { len: 17 }));
    }

    #[test]
    fn wrong_length_is_rejected_and_reported() {
        for (input, len) in [("", 0), ("RSSMRA85T10A562", 15), ("RSSMRA85T10A562SS", 17)] {
            assert_eq!(parse(input).map(|_| ()), Err(CfError::WrongLength { len }), "{input}");
        }
    }

    #[test]
    fn non_ascii_character_is_rejected_with_its_position() {
        // Length is counted in characters, so the accented letter is reported
        // where it is rather than as a length error.
        assert_eq!(
            parse("RSSMRÀ85T10A562S").map(|_| ()),
            Err(CfError::InvalidCharacter { position: 6 })
        );
        assert_eq!(
            parse("RSSMRA85T10A562ß").map(|_| ()),
            Err(CfError::InvalidCharacter { position: 16 })
        );
    }

    #[test]
    fn century_is_the_latest_that_does_not_put_the_birth_in_the_future() {
        let today = date(2026, 6, 1);
        let birth = |first15: &str| {
            CodiceFiscale::parse(&with_check(first15), today).map(|cf| cf.birth_date())
        };
        assert_eq!(birth("RSSMRA00A01H501"), Ok(date(2000, 1, 1)));
        assert_eq!(birth("RSSMRA25D09H501"), Ok(date(2025, 4, 9)));
        assert_eq!(birth("RSSMRA26E31H501"), Ok(date(2026, 5, 31)));
        // Born today is not in the future.
        assert_eq!(birth("RSSMRA26H01H501"), Ok(date(2026, 6, 1)));
        assert_eq!(birth("RSSMRA26H02H501"), Ok(date(1926, 6, 2)));
        assert_eq!(birth("RSSMRA99T31H501"), Ok(date(1999, 12, 31)));
    }

    #[test]
    fn same_code_resolves_to_a_different_century_depending_on_today() {
        let code = "MRTMTT25D09F205Z";
        let birth = |today| CodiceFiscale::parse(code, today).map(|cf| cf.birth_date());
        assert_eq!(birth(date(2025, 4, 8)), Ok(date(1925, 4, 9)));
        assert_eq!(birth(date(2025, 4, 9)), Ok(date(2025, 4, 9)));
    }

    #[test]
    fn debug_shows_only_the_masked_code() {
        let cf = parse("RSSMRA85T10A562S").expect("valid");
        assert_eq!(cf.masked(), "RSS***********2S");
        assert_eq!(cf.masked().len(), 16);
        let debug = format!("{cf:?}");
        assert!(debug.contains("RSS***********2S"), "{debug}");
        assert!(!debug.contains("RSSMRA85T10A562S"), "{debug}");
        assert_eq!(cf.to_string(), "RSSMRA85T10A562S");
    }

    #[test]
    fn masked_form_of_an_omocode_keeps_the_characters_as_given() {
        let cf = parse("RSSMRAURTMLARSNL").expect("valid");
        assert_eq!(cf.masked(), "RSS***********NL");
    }

    #[test]
    fn error_messages_do_not_contain_the_code() {
        let inputs = [
            "RSSMRA85T10A562T".to_string(),
            with_check("RSSMRA85F10A562"),
            with_check("RSSMRA85T32A562"),
            with_check("RSSMRA85B30A562"),
            with_check("RSSMRA80A01Z999"),
            with_check("RSSMRA80A01M297"),
            "RSSMRA85T10A5621".to_string(),
        ];
        for input in inputs {
            let message = parse(&input).expect_err("invalid").to_string();
            assert!(!message.contains(&input), "{message}");
            assert!(!message.contains("RSSMRA"), "{message}");
        }
    }

    #[test]
    fn surname_and_name_codes_of_the_code_match_the_registry_names() {
        let cf = parse("RSSMRA85T10A562S").expect("valid");
        assert_eq!(cf.surname_code(), surname_code_for("Rossi"));
        assert_eq!(cf.name_code(), name_code_for("Mario"));
        let cf = parse("MRTMTT25D09F205Z").expect("valid");
        assert_eq!(cf.surname_code(), surname_code_for("Moretti"));
        assert_eq!(cf.name_code(), name_code_for("Matteo"));
        let cf = parse("MLLSNT82P65Z404U").expect("valid");
        assert_eq!(cf.surname_code(), surname_code_for("Miller"));
        assert_eq!(cf.name_code(), name_code_for("Samantha"));
    }

    #[test]
    fn surname_code_takes_consonants_then_vowels_then_x() {
        assert_eq!(surname_code_for("Rossi"), "RSS");
        assert_eq!(surname_code_for("Masi"), "MSA");
        assert_eq!(surname_code_for("Fo"), "FOX");
        assert_eq!(surname_code_for("Hu"), "HUX");
        assert_eq!(surname_code_for("Ai"), "AIX");
        assert_eq!(surname_code_for(""), "XXX");
    }

    #[test]
    fn surname_code_ignores_spaces_apostrophes_and_accents() {
        assert_eq!(surname_code_for("De Luca"), "DLC");
        assert_eq!(surname_code_for("D'Angelo"), "DNG");
        assert_eq!(surname_code_for("dell'Ò"), "DLL");
        assert_eq!(surname_code_for("Pietà"), "PTI");
        assert_eq!(surname_code_for("PIETA'"), "PTI");
        assert_eq!(surname_code_for("Lù"), "LUX");
        assert_eq!(surname_code_for("Müller"), "MLL");
    }

    #[test]
    fn name_code_with_four_or_more_consonants_takes_first_third_and_fourth() {
        assert_eq!(name_code_for("Gianfranco"), "GFR");
        assert_eq!(name_code_for("Alessandro"), "LSN");
        assert_eq!(name_code_for("Francesca"), "FNC");
        assert_eq!(name_code_for("Niccolò"), "NCL");
    }

    #[test]
    fn name_code_with_fewer_than_four_consonants_follows_surname_rule() {
        assert_eq!(name_code_for("Mario"), "MRA");
        assert_eq!(name_code_for("Marco"), "MRC");
        assert_eq!(name_code_for("Luca"), "LCU");
        assert_eq!(name_code_for("Ugo"), "GUO");
        assert_eq!(name_code_for("Nicolò"), "NCL");
        assert_eq!(name_code_for("Èva"), "VEA");
        assert_eq!(name_code_for("Al"), "LAX");
    }

    #[test]
    fn compute_reproduces_the_published_examples() {
        assert_eq!(
            compute("Rossi", "Mario", date(1985, 12, 10), Sex::Male, "A562"),
            "RSSMRA85T10A562S"
        );
        assert_eq!(
            compute("Moretti", "Matteo", date(1925, 4, 9), Sex::Male, "F205"),
            "MRTMTT25D09F205Z"
        );
        assert_eq!(
            compute("Miller", "Samantha", date(1982, 9, 25), Sex::Female, "z404"),
            "MLLSNT82P65Z404U"
        );
    }

    #[test]
    fn compute_then_parse_round_trips_for_a_male_born_in_italy() {
        let code = compute("De Luca", "Gianfranco", date(1972, 7, 3), Sex::Male, "H501");
        assert_eq!(&code[..11], "DLCGFR72L03");
        let cf = parse(&code).expect("valid");
        assert_eq!(cf.as_str(), code);
        assert_eq!(cf.birth_date(), date(1972, 7, 3));
        assert_eq!(cf.sex(), Sex::Male);
        assert_eq!(cf.birthplace().name, "Roma");
        assert_eq!(cf.surname_code(), surname_code_for("De Luca"));
        assert_eq!(cf.name_code(), name_code_for("Gianfranco"));
        assert!(!cf.is_omocode());
    }

    #[test]
    fn compute_then_parse_round_trips_for_a_female() {
        let code = compute("Bianchi", "Laura", date(2001, 2, 28), Sex::Female, "F205");
        assert_eq!(&code[9..11], "68", "day plus 40");
        let cf = parse(&code).expect("valid");
        assert_eq!(cf.birth_date(), date(2001, 2, 28));
        assert_eq!(cf.sex(), Sex::Female);
        assert_eq!(cf.birthplace().name, "Milano");
    }

    #[test]
    fn compute_then_parse_round_trips_for_a_foreign_birth() {
        let code = compute("Müller", "Jürgen", date(1964, 11, 30), Sex::Male, "Z112");
        let cf = parse(&code).expect("valid");
        assert_eq!(cf.birth_date(), date(1964, 11, 30));
        assert_eq!(cf.sex(), Sex::Male);
        assert!(cf.birthplace().is_foreign());
        assert_eq!(cf.birthplace().name, "Germania");
        assert_eq!(cf.surname_code(), "MLL");
    }

    #[test]
    fn compute_with_a_birthplace_not_yet_in_use_gives_a_code_parse_rejects() {
        let code = compute("Rossi", "Mario", date(1980, 1, 1), Sex::Male, "M297");
        assert_eq!(
            parse(&code).map(|_| ()),
            Err(CfError::BirthplaceNotValidOnBirthDate { code: "M297".into() })
        );
    }

    #[test]
    #[should_panic(expected = "a Belfiore code is a letter followed by three digits")]
    fn compute_panics_on_a_malformed_belfiore_code() {
        compute("Rossi", "Mario", date(1985, 12, 10), Sex::Male, "Roma");
    }

    #[test]
    fn name_code_counts_consonants_across_multiple_given_names() {
        // "Gian Maria": G N M R -> 1st, 3rd, 4th.
        assert_eq!(name_code_for("Gian Maria"), "GMR");
    }
}
