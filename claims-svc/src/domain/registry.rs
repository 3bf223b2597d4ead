//! The insured-positions registry's file layout: one CSV row per person, parsed into the
//! [`InsuredPosition`] eligibility is decided on, with every problem named by its column.
//!
//! Header row naming these columns (any order; extra columns ignored; empty cells mean "none"):
//!
//! | column | content |
//! |---|---|
//! | `fiscal_code` | the person |
//! | `schemes` | `SCHEME:from:to` enrolments separated by `;` (`to` empty while open); schemes `GESTIONE_SEPARATA`, `ARTIGIANI`, `COMMERCIANTI`, `COLTIVATORI_DIRETTI`, `SPETTACOLO`, `DIPENDENTI`, `OTHER` |
//! | `vat_from`, `vat_to` | the VAT number's period |
//! | `cococo_from`, `cococo_to` | the co.co.co. contract's period |
//! | `pensioner` | `1`/`0` (also `true`/`false`, `S`/`N`) |
//! | `seasonal_end`, `seasonal_involuntary` | the day a seasonal tourism or thermal job ended, and whether the worker did not choose it |
//! | `agricultural_days_2019`, `entertainment_contributions_2019` | counts |
//! | `entertainment_income_2019` | euro, `.` or `,` before the cents |
//! | `employed_17_03_2020`, `reddito_di_cittadinanza`, `health_or_security_worker` | `1`/`0` |
//! | `children` | `FISCALCODE:birth-date[:D]` separated by `;` (`D`: disabled) |
//!
//! Dates as `2020-02-23` or `23/02/2020`.

use super::eligibility::{Child, InsuredPosition, Membership, Period, Scheme, SeasonalEnd};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sportello_domain::codice_fiscale::CodiceFiscale;
use sportello_domain::text::excerpt;

pub const COLUMNS: [&str; 16] = [
    "fiscal_code",
    "schemes",
    "vat_from",
    "vat_to",
    "cococo_from",
    "cococo_to",
    "pensioner",
    "seasonal_end",
    "seasonal_involuntary",
    "agricultural_days_2019",
    "entertainment_contributions_2019",
    "entertainment_income_2019",
    "employed_17_03_2020",
    "reddito_di_cittadinanza",
    "health_or_security_worker",
    "children",
];

/// The columns a file must have; the others default to "none".
const REQUIRED: [&str; 1] = ["fiscal_code"];

/// A person's position as the registry holds it: the position, and the fiscal codes of the
/// children it lists (in the order of `position.children`), which the baby-sitting bonus names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub position: InsuredPosition,
    pub child_codes: Vec<String>,
}

impl Registered {
    /// The child named `fiscal_code`, if the registry lists it for this person.
    pub fn child(&self, fiscal_code: &str) -> Option<Child> {
        self.child_codes.iter().position(|c| c == fiscal_code).map(|i| self.position.children[i])
    }
}

/// A problem with one cell of a row (or with the whole row when `column` is empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellProblem {
    pub column: &'static str,
    pub description: String,
}

/// Where each known column sits in the file's rows.
#[derive(Clone, Debug)]
pub struct Layout {
    index: [Option<usize>; COLUMNS.len()],
}

impl Layout {
    /// Reads the header row; a problem names a required column missing.
    pub fn from_header(header: &csv::StringRecord) -> Result<Self, CellProblem> {
        let mut index = [None; COLUMNS.len()];
        for (at, name) in header.iter().enumerate() {
            let name = name.trim().trim_start_matches('\u{feff}');
            if let Some(i) = COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
                index[i] = Some(at);
            }
        }
        for required in REQUIRED {
            let i = COLUMNS.iter().position(|c| *c == required).unwrap_or_default();
            if index[i].is_none() {
                return Err(CellProblem {
                    column: required,
                    description: format!("the header has no {required} column"),
                });
            }
        }
        Ok(Self { index })
    }

    fn cell<'r>(&self, row: &'r csv::StringRecord, column: &str) -> &'r str {
        let i = COLUMNS.iter().position(|c| *c == column).unwrap_or_default();
        self.index[i].and_then(|at| row.get(at)).map_or("", str::trim)
    }

    /// Parses one data row into the canonical fiscal code and the position, or every problem
    /// found in it.
    pub fn parse(
        &self,
        row: &csv::StringRecord,
        today: NaiveDate,
    ) -> Result<(String, Registered), Vec<CellProblem>> {
        let mut p = Problems(Vec::new());
        let cell = |c| self.cell(row, c);
        let fiscal_code = match CodiceFiscale::parse(cell("fiscal_code"), today) {
            Ok(cf) => cf.canonical(),
            Err(e) => {
                p.add("fiscal_code", e.to_string());
                String::new()
            }
        };
        let memberships = p.list(cell("schemes"), "schemes", membership);
        let vat_number = p.period(cell("vat_from"), cell("vat_to"), ("vat_from", "vat_to"));
        let cococo_contract =
            p.period(cell("cococo_from"), cell("cococo_to"), ("cococo_from", "cococo_to"));
        let pensioner = p.flag(cell("pensioner"), "pensioner");
        let seasonal_end =
            p.date(cell("seasonal_end"), "seasonal_end").map(|ended_on| SeasonalEnd {
                ended_on,
                involuntary: p.flag(cell("seasonal_involuntary"), "seasonal_involuntary"),
            });
        let agricultural_days_2019 =
            p.count(cell("agricultural_days_2019"), "agricultural_days_2019");
        let entertainment_contributions_2019 =
            p.count(cell("entertainment_contributions_2019"), "entertainment_contributions_2019");
        let entertainment_income_2019_cents =
            p.euro(cell("entertainment_income_2019"), "entertainment_income_2019");
        let employed_on_17_march_2020 = p.flag(cell("employed_17_03_2020"), "employed_17_03_2020");
        let reddito_di_cittadinanza =
            p.flag(cell("reddito_di_cittadinanza"), "reddito_di_cittadinanza");
        let health_or_security_worker =
            p.flag(cell("health_or_security_worker"), "health_or_security_worker");
        let children = p.list(cell("children"), "children", |c| child(c, today));
        if !p.0.is_empty() {
            return Err(p.0);
        }
        let (child_codes, children) = children.into_iter().unzip();
        let position = InsuredPosition {
            memberships,
            vat_number,
            cococo_contract,
            pensioner,
            seasonal_end,
            agricultural_days_2019,
            entertainment_contributions_2019,
            entertainment_income_2019_cents,
            employed_on_17_march_2020,
            reddito_di_cittadinanza,
            children,
            health_or_security_worker,
        };
        Ok((fiscal_code, Registered { position, child_codes }))
    }
}

struct Problems(Vec<CellProblem>);

impl Problems {
    fn add(&mut self, column: &'static str, description: impl Into<String>) {
        self.0.push(CellProblem { column, description: description.into() });
    }

    fn date(&mut self, text: &str, column: &'static str) -> Option<NaiveDate> {
        if text.is_empty() {
            return None;
        }
        let parsed = date(text);
        if parsed.is_none() {
            self.add(column, format!("{} is not a date (2020-02-23 or 23/02/2020)", excerpt(text)));
        }
        parsed
    }

    fn period(
        &mut self,
        from: &str,
        to: &str,
        (from_column, to_column): (&'static str, &'static str),
    ) -> Option<Period> {
        let (start, end) = (self.date(from, from_column), self.date(to, to_column));
        match (start, end) {
            (Some(from), to) if to.is_none_or(|to| from <= to) => Some(Period { from, to }),
            (Some(_), Some(_)) => {
                self.add(to_column, "ends before it starts");
                None
            }
            (None, Some(_)) => {
                self.add(from_column, "a period with an end needs a start");
                None
            }
            _ => None,
        }
    }

    fn flag(&mut self, text: &str, column: &'static str) -> bool {
        match text.to_ascii_lowercase().as_str() {
            "" | "0" | "false" | "n" | "no" => false,
            "1" | "true" | "s" | "si" | "sì" | "y" | "yes" => true,
            _ => {
                self.add(column, format!("{} is not 1 or 0", excerpt(text)));
                false
            }
        }
    }

    fn count(&mut self, text: &str, column: &'static str) -> u32 {
        if text.is_empty() {
            return 0;
        }
        text.parse().unwrap_or_else(|_| {
            self.add(column, format!("{} is not a whole number of at least 0", excerpt(text)));
            0
        })
    }

    fn euro(&mut self, text: &str, column: &'static str) -> i64 {
        if text.is_empty() {
            return 0;
        }
        euro_cents(text).unwrap_or_else(|| {
            self.add(column, format!("{} is not an amount in euro (12345.67)", excerpt(text)));
            0
        })
    }

    fn list<T>(
        &mut self,
        text: &str,
        column: &'static str,
        item: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match item(part) {
                Ok(v) => out.push(v),
                Err(why) => self.add(column, why),
            }
        }
        out
    }
}

fn date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%d/%m/%Y"))
        .ok()
}

fn euro_cents(text: &str) -> Option<i64> {
    let text = text.replace(',', ".");
    let (whole, cents) = text.split_once('.').unwrap_or((&text, "0"));
    let cents = match cents.len() {
        1 => cents.parse::<i64>().ok()? * 10,
        2 => cents.parse::<i64>().ok()?,
        _ => return None,
    };
    let whole: i64 = whole.parse().ok().filter(|w| *w >= 0)?;
    whole.checked_mul(100)?.checked_add(cents)
}

fn scheme(name: &str) -> Option<Scheme> {
    Some(match name.to_ascii_uppercase().as_str() {
        "GESTIONE_SEPARATA" => Scheme::GestioneSeparata,
        "ARTIGIANI" => Scheme::Artigiani,
        "COMMERCIANTI" => Scheme::Commercianti,
        "COLTIVATORI_DIRETTI" => Scheme::ColtivatoriDiretti,
        "SPETTACOLO" => Scheme::Spettacolo,
        "DIPENDENTI" => Scheme::Dipendenti,
        "OTHER" => Scheme::Other,
        _ => return None,
    })
}

fn membership(text: &str) -> Result<Membership, String> {
    let mut parts = text.split(':');
    let name = parts.next().unwrap_or_default().trim();
    let scheme = scheme(name).ok_or_else(|| format!("{} is not a scheme", excerpt(name)))?;
    let from = parts.next().map(str::trim).and_then(date);
    let from =
        from.ok_or_else(|| format!("{}: the enrolment needs a start date", excerpt(text)))?;
    let to = match parts.next().map(str::trim) {
        None | Some("") => None,
        Some(to) => Some(date(to).ok_or_else(|| format!("{} is not a date", excerpt(to)))?),
    };
    if to.is_some_and(|to| to < from) {
        return Err(format!("{} ends before it starts", excerpt(text)));
    }
    Ok(Membership { scheme, period: Period { from, to } })
}

fn child(text: &str, today: NaiveDate) -> Result<(String, Child), String> {
    let mut parts = text.split(':').map(str::trim);
    let code = CodiceFiscale::parse(parts.next().unwrap_or_default(), today)
        .map_err(|e| format!("{}: {e}", excerpt(text)))?;
    let birth_date = parts
        .next()
        .and_then(date)
        .ok_or_else(|| format!("{}: the child needs a birth date", excerpt(text)))?;
    let disabled = match parts.next() {
        None | Some("") => false,
        Some(d) if d.eq_ignore_ascii_case("D") => true,
        Some(other) => return Err(format!("{} is not D (disabled)", excerpt(other))),
    };
    Ok((code.canonical(), Child { birth_date, disabled }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2020, 4, 1).expect("day")
    }

    fn parse(header: &str, row: &str) -> Result<(String, Registered), Vec<CellProblem>> {
        let header = csv::StringRecord::from(header.split(',').collect::<Vec<_>>());
        let row = csv::StringRecord::from(row.split(',').collect::<Vec<_>>());
        Layout::from_header(&header).expect("header").parse(&row, today())
    }

    #[test]
    fn a_professional_with_a_vat_number_reads_as_enrolled_in_the_gestione_separata() {
        let (cf, r) = parse(
            "fiscal_code,schemes,vat_from,pensioner",
            "rssmra80a01h501u,GESTIONE_SEPARATA:2015-01-01:,01/01/2015,0",
        )
        .expect("row");
        assert_eq!(cf, "RSSMRA80A01H501U");
        assert_eq!(r.position.memberships[0].scheme, Scheme::GestioneSeparata);
        assert_eq!(r.position.vat_number.map(|p| p.from), date("2015-01-01"));
        assert!(!r.position.pensioner);
    }

    #[test]
    fn children_keep_their_fiscal_codes_for_the_baby_sitting_bonus() {
        use sportello_domain::codice_fiscale::{compute, Sex};
        let born = NaiveDate::from_ymd_opt(2015, 3, 1).expect("day");
        let laura = compute("Bianchi", "Laura", born, Sex::Female, "H501");
        let row = format!("RSSMRA80A01H501U,{laura}:2015-03-01;");
        let (_, r) = parse("fiscal_code,children", &row).expect("row");
        assert_eq!(r.child_codes, std::slice::from_ref(&laura));
        assert!(r.child(&laura).is_some_and(|c| !c.disabled));
        assert!(r.child("RSSMRA80A01H501U").is_none());
    }

    #[test]
    fn every_bad_cell_is_reported_by_its_column() {
        let problems = parse(
            "fiscal_code,schemes,vat_from,vat_to,pensioner,entertainment_income_2019",
            "RSSMRA80A01H501X,MARTIANS:2015-01-01,2020-01-01,2019-01-01,maybe,12.345",
        )
        .expect_err("bad row");
        let columns: Vec<&str> = problems.iter().map(|p| p.column).collect();
        assert_eq!(
            columns,
            ["fiscal_code", "schemes", "vat_to", "pensioner", "entertainment_income_2019"]
        );
    }

    #[test]
    fn amounts_in_euro_become_cents() {
        assert_eq!(euro_cents("50000"), Some(5_000_000));
        assert_eq!(euro_cents("50000,01"), Some(5_000_001));
        assert_eq!(euro_cents("0.5"), Some(50));
        assert_eq!(euro_cents("-1"), None);
    }

    #[test]
    fn a_file_without_a_fiscal_code_column_is_refused_at_its_header() {
        let header = csv::StringRecord::from(vec!["schemes"]);
        assert_eq!(Layout::from_header(&header).expect_err("no cf").column, "fiscal_code");
    }
}
