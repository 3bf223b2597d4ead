//! Belfiore codes (codici catastali): the four-character codes that identify
//! the Italian municipality or foreign country of birth inside a codice fiscale.
//!
//! A code can denote different names or provinces over time, and a municipality
//! can be created or suppressed, so every entry carries a validity period and
//! lookups are always made "as of" a date.
//!
//! The table is embedded at compile time so the service has no runtime file
//! dependency, and parsed once on first use.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::NaiveDate;

static CSV: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/belfiore.csv"));

const EXPECTED_HEADER: &str = "code,name,province,valid_from,valid_to";

/// Province column value used for foreign countries.
const FOREIGN_PROVINCE: &str = "EE";

/// One validity period of a Belfiore code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Place {
    /// Upper-case letter followed by three digits, e.g. `H501`.
    pub code: &'static str,
    pub name: &'static str,
    /// Two-letter province code, or `EE` for a foreign country.
    pub province: &'static str,
    pub valid_from: NaiveDate,
    /// Last day (inclusive) the entry was valid; `None` if still valid.
    pub valid_to: Option<NaiveDate>,
}

impl Place {
    pub fn is_foreign(&self) -> bool {
        self.province == FOREIGN_PROVINCE
    }

    /// Both ends of the validity period are inclusive: in the table one period
    /// ends the day before the next one starts.
    pub fn valid_on(&self, d: NaiveDate) -> bool {
        self.valid_from <= d && self.valid_to.is_none_or(|to| d <= to)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown Belfiore code {code}")]
    UnknownCode { code: String },
    #[error("Belfiore code {code} was not in use on the requested date")]
    NotValidOn { code: String },
}

/// Finds the entry for `code` valid on `on`.
///
/// The code is matched case-insensitively. If the table has more than one entry
/// valid on that date (it happens for a handful of historical codes), the one
/// with the earliest `valid_from` is returned.
pub fn lookup(code: &str, on: NaiveDate) -> Result<&'static Place, LookupError> {
    let periods = by_code(code);
    if periods.is_empty() {
        return Err(LookupError::UnknownCode { code: normalise_code(code) });
    }
    periods
        .iter()
        .find(|p| p.valid_on(on))
        .ok_or_else(|| LookupError::NotValidOn { code: normalise_code(code) })
}

/// All validity periods of `code` (case-insensitive), oldest first; empty if
/// the code is unknown.
pub fn by_code(code: &str) -> &'static [Place] {
    let code = normalise_code(code);
    let places = table().places.as_slice();
    let start = places.partition_point(|p| p.code < code.as_str());
    let len = places[start..].partition_point(|p| p.code == code);
    &places[start..start + len]
}

/// Finds the Italian municipality called `name` in `province` as of `on`.
///
/// Names are compared ignoring case, accents, spaces, apostrophes and hyphens,
/// because registry data often spells "Agliè" as "AGLIE'" or "Montecatini-Terme"
/// as "Montecatini Terme". The province must be the one the municipality
/// belonged to on `on`, which for old dates may differ from today's.
pub fn find_municipality(name: &str, province: &str, on: NaiveDate) -> Option<&'static Place> {
    let province = province.trim();
    find_by_name(name, on, |p| !p.is_foreign() && p.province.eq_ignore_ascii_case(province))
}

/// Finds the foreign country called `name` as of `on`, with the same lenient
/// name comparison as [`find_municipality`].
pub fn find_country(name: &str, on: NaiveDate) -> Option<&'static Place> {
    find_by_name(name, on, Place::is_foreign)
}

/// Whether `p` is a province code appearing in the table, historical ones
/// included; `EE` (foreign country) is not a province.
pub fn is_known_province(p: &str) -> bool {
    let p = p.trim().to_ascii_uppercase();
    table().provinces.contains(p.as_str())
}

/// Whether `p` was a province on `on`, i.e. some Italian municipality of the
/// table belonged to it that day: true for today's provinces when `on` is
/// today, false for suppressed ones (e.g. `FO`, replaced by `FC` in 1992) and
/// for `EE`. Case-insensitive.
pub fn is_province_in_use(p: &str, on: NaiveDate) -> bool {
    let table = table();
    let p = p.trim().to_ascii_uppercase();
    table
        .by_province
        .get(p.as_str())
        .is_some_and(|indices| indices.iter().any(|&i| table.places[i].valid_on(on)))
}

/// Maps a Latin letter with diacritics or a stroke, in either case, to its upper-case ASCII
/// base letter, as the Agenzia delle Entrate does for the fiscal code (`Ł` → `L`, `Ș` → `S`,
/// `Ț` → `T`, `Ø` → `O`); any other character (a letter of another script, a digit, a space)
/// is returned unchanged. Covers Latin-1 Supplement, Latin Extended-A and -B and Latin Extended
/// Additional, by the transliteration of `deunicode`, keeping its first letter (`Æ` → `A`).
pub fn strip_accent(c: char) -> char {
    let latin = ('\u{C0}'..='\u{24F}').contains(&c) || ('\u{1E00}'..='\u{1EFF}').contains(&c);
    if !latin || !c.is_alphabetic() {
        return c;
    }
    deunicode::deunicode_char(c)
        .and_then(|ascii| ascii.chars().next())
        .filter(char::is_ascii_alphabetic)
        .map_or(c, |base| base.to_ascii_uppercase())
}

struct Table {
    /// Sorted by code, then by `valid_from`, so that `by_code` can binary-search.
    places: Vec<Place>,
    /// Name key (see `name_key`) to indices into `places`, in table order.
    by_name: HashMap<String, Vec<usize>>,
    provinces: HashSet<&'static str>,
    /// Province to indices into `places` of its municipalities (all periods).
    by_province: HashMap<&'static str, Vec<usize>>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| Table::parse(CSV));

fn table() -> &'static Table {
    &TABLE
}

impl Table {
    /// Panics on malformed data: the table is embedded at build time, so a bad
    /// row is a build defect that the unit tests surface, not a runtime error.
    fn parse(csv: &'static str) -> Table {
        let mut lines = csv.lines();
        let header = lines.next().expect("belfiore.csv is empty");
        assert_eq!(header.trim(), EXPECTED_HEADER, "belfiore.csv has unexpected columns");

        let mut places = Vec::new();
        for (index, line) in lines.enumerate() {
            let line_no = index + 2;
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&'static str> = line.split(',').collect();
            let [code, name, province, valid_from, valid_to] = fields[..] else {
                panic!("belfiore.csv line {line_no}: expected 5 fields");
            };
            // Rows whose code was never assigned (e.g. "ND") cannot appear in a
            // codice fiscale, and keeping them would let a name search return
            // a place whose code can never match.
            if !is_belfiore_code(code) {
                continue;
            }
            let valid_from = parse_date(valid_from, line_no);
            let valid_to = (!valid_to.is_empty()).then(|| parse_date(valid_to, line_no));
            assert!(
                valid_to.is_none_or(|to| valid_from <= to),
                "belfiore.csv line {line_no}: valid_to before valid_from"
            );
            places.push(Place { code, name, province, valid_from, valid_to });
        }
        // Stable sort: entries with the same code and start date keep file order.
        places.sort_by(|a, b| a.code.cmp(b.code).then(a.valid_from.cmp(&b.valid_from)));

        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut provinces = HashSet::new();
        let mut by_province: HashMap<&'static str, Vec<usize>> = HashMap::new();
        for (i, place) in places.iter().enumerate() {
            by_name.entry(name_key(place.name)).or_default().push(i);
            if !place.is_foreign() {
                provinces.insert(place.province);
                by_province.entry(place.province).or_default().push(i);
            }
        }

        Table { places, by_name, provinces, by_province }
    }
}

fn parse_date(s: &str, line_no: usize) -> NaiveDate {
    s.parse().unwrap_or_else(|_| panic!("belfiore.csv line {line_no}: invalid date {s:?}"))
}

fn is_belfiore_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 4 && b[0].is_ascii_uppercase() && b[1..].iter().all(u8::is_ascii_digit)
}

fn normalise_code(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}

fn name_key(name: &str) -> String {
    name.chars()
        .map(strip_accent)
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn find_by_name(
    name: &str,
    on: NaiveDate,
    accept: impl Fn(&Place) -> bool,
) -> Option<&'static Place> {
    let table = table();
    table
        .by_name
        .get(&name_key(name))?
        .iter()
        .map(|&i| &table.places[i])
        .find(|p| p.valid_on(on) && accept(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    #[test]
    fn embedded_table_parses_and_every_code_is_well_formed() {
        let places = &table().places;
        assert!(places.len() > 19_000);
        assert!(places.iter().all(|p| is_belfiore_code(p.code)));
        assert!(places
            .windows(2)
            .all(|w| (w[0].code, w[0].valid_from) <= (w[1].code, w[1].valid_from)));
    }

    #[test]
    fn lookup_returns_the_entry_valid_on_the_date() {
        let place = lookup("H501", date(1985, 12, 10)).expect("Rome");
        assert_eq!(place.name, "Roma");
        assert_eq!(place.province, "RM");
        assert!(!place.is_foreign());
    }

    #[test]
    fn lookup_is_case_insensitive_and_ignores_surrounding_whitespace() {
        assert_eq!(lookup(" h501 ", date(2000, 1, 1)).map(|p| p.name), Ok("Roma"));
    }

    #[test]
    fn renamed_municipality_has_one_entry_per_name_and_valid_to_is_inclusive() {
        assert_eq!(lookup("A001", date(1924, 11, 13)).map(|p| p.name), Ok("Abano"));
        assert_eq!(lookup("A001", date(1924, 11, 14)).map(|p| p.name), Ok("Abano Terme"));
        let names: Vec<_> = by_code("A001").iter().map(|p| p.name).collect();
        assert_eq!(names, ["Abano", "Abano Terme"]);
    }

    #[test]
    fn lookup_distinguishes_unknown_code_from_code_not_valid_on_date() {
        assert_eq!(
            lookup("Z999", date(2000, 1, 1)),
            Err(LookupError::UnknownCode { code: "Z999".into() })
        );
        // Lusiana (VI) was merged into Lusiana Conco on 2019-02-20.
        assert!(lookup("E762", date(2019, 2, 19)).is_ok());
        assert_eq!(
            lookup("E762", date(2019, 2, 20)),
            Err(LookupError::NotValidOn { code: "E762".into() })
        );
    }

    #[test]
    fn rows_without_an_assigned_code_are_not_loaded() {
        assert!(by_code("ND").is_empty());
        assert_eq!(find_municipality("Arizzano", "NO", date(1900, 1, 1)), None);
    }

    #[test]
    fn foreign_country_is_recognised_by_its_province() {
        let usa = lookup("Z404", date(1982, 9, 25)).expect("USA");
        assert!(usa.is_foreign());
        assert_eq!(usa.name, "Stati Uniti D'America");
    }

    #[test]
    fn find_municipality_ignores_case_accents_and_punctuation() {
        let on = date(1990, 1, 1);
        assert_eq!(find_municipality("BAGNO A RIPOLI", "fi", on).map(|p| p.code), Some("A564"));
        assert_eq!(find_municipality("montecatini terme", "PT", on).map(|p| p.code), Some("A561"));
        let aglie = find_municipality("AGLIE'", "TO", on).expect("Agliè");
        assert_eq!(aglie.name, "Agliè");
    }

    #[test]
    fn find_municipality_requires_the_province_of_the_time() {
        // Bagno di Romagna moved from Forlì (FO) to Forlì-Cesena (FC) in 1992.
        let name = "Bagno di Romagna";
        assert_eq!(find_municipality(name, "FO", date(1980, 1, 1)).map(|p| p.code), Some("A565"));
        assert_eq!(find_municipality(name, "FC", date(1980, 1, 1)), None);
        assert_eq!(find_municipality(name, "FC", date(2000, 1, 1)).map(|p| p.code), Some("A565"));
    }

    #[test]
    fn find_municipality_respects_validity_period() {
        // Fiumicino became a municipality on 1992-04-04.
        assert_eq!(find_municipality("Fiumicino", "RM", date(1990, 1, 1)), None);
        assert_eq!(
            find_municipality("Fiumicino", "RM", date(1995, 1, 1)).map(|p| p.code),
            Some("M297")
        );
    }

    #[test]
    fn find_country_matches_only_foreign_entries() {
        let on = date(2000, 1, 1);
        assert_eq!(find_country("stati uniti d'america", on).map(|p| p.code), Some("Z404"));
        assert_eq!(find_country("Roma", on), None);
        assert_eq!(find_municipality("Stati Uniti D'America", "EE", on), None);
    }

    #[test]
    fn find_country_respects_validity_period() {
        assert_eq!(find_country("Jugoslavia", date(1980, 1, 1)).map(|p| p.code), Some("Z118"));
        assert_eq!(find_country("Jugoslavia", date(2010, 1, 1)), None);
    }

    #[test]
    fn latin_letters_with_diacritics_or_strokes_fold_to_their_base_letter() {
        for (given, base) in [
            ('Ł', 'L'),
            ('ł', 'L'),
            ('Ș', 'S'),
            ('ș', 'S'),
            ('Ş', 'S'),
            ('Ț', 'T'),
            ('ţ', 'T'),
            ('à', 'A'),
            ('Ç', 'C'),
            ('ñ', 'N'),
            ('Ø', 'O'),
            ('đ', 'D'),
            ('ễ', 'E'),
            ('ß', 'S'),
        ] {
            assert_eq!(strip_accent(given), base, "{given}");
        }
        for other in ['A', 'z', ' ', '\'', 'Ж', 'Ω', '1'] {
            assert_eq!(strip_accent(other), other, "{other}");
        }
    }

    #[test]
    fn known_provinces_include_historical_ones_but_not_foreign_marker() {
        assert!(is_known_province("RM"));
        assert!(is_known_province("mi"));
        assert!(is_known_province("PL"), "Pola, historical");
        assert!(!is_known_province("EE"));
        assert!(!is_known_province("XX"));
        assert!(!is_known_province(""));
    }

    #[test]
    fn province_in_use_depends_on_the_date() {
        let today = date(2020, 4, 1);
        assert!(is_province_in_use("PI", today));
        assert!(is_province_in_use(" rm ", today));
        assert!(is_province_in_use("FC", today));
        // Forlì (FO) became Forlì-Cesena (FC) on 1992-04-16.
        assert!(!is_province_in_use("FO", today));
        assert!(is_province_in_use("FO", date(1980, 1, 1)));
        assert!(!is_province_in_use("FC", date(1980, 1, 1)));
        assert!(!is_province_in_use("PL", today), "Pola, historical");
        assert!(!is_province_in_use("EE", today));
        assert!(!is_province_in_use("XX", today));
    }
}
