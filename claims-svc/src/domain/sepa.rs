//! SEPA credit transfers as the institute's bank takes them: an ISO 20022
//! `pain.001.001.03` customer credit transfer initiation, one payment instruction from the
//! institute's account with one transaction per approved claim. The schema is
//! `claims-svc/data/pain.001.001.03.xsd`; the tests validate what this writes against it.

use chrono::{DateTime, NaiveDate, Utc};
use std::fmt::Write as _;

const NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03";

/// One transfer: a claim paid to its applicant's account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Travels with the money to the citizen's bank statement (the claim's protocol number).
    pub end_to_end_id: String,
    pub amount_cents: i64,
    pub creditor_name: String,
    /// Electronic form (no spaces).
    pub creditor_iban: String,
    /// Unstructured remittance text, cut to 140 characters.
    pub remittance: String,
}

/// A payment batch: who pays, from which account, when, and the transfers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditTransfer {
    /// Unique per file (at most 35 characters): the batch id.
    pub message_id: String,
    pub created_at: DateTime<Utc>,
    pub debtor_name: String,
    pub debtor_iban: String,
    /// The debtor bank's BIC, if known (`NOTPROVIDED` otherwise, as SEPA allows).
    pub debtor_bic: Option<String>,
    pub execution_date: NaiveDate,
    pub transfers: Vec<Transfer>,
}

/// How far ahead a payment batch may be dated, in days.
pub const MAX_DAYS_AHEAD: i64 = 30;

/// Whether the euro area's payment system (TARGET2) settles on `day`: Monday to Friday, except
/// 1 January, Good Friday, Easter Monday, 1 May, 25 and 26 December.
pub fn is_business_day(day: NaiveDate) -> bool {
    use chrono::Datelike;
    let easter = easter_sunday(day.year());
    let closed = [(1, 1), (5, 1), (12, 25), (12, 26)].contains(&(day.month(), day.day()))
        || easter
            .is_some_and(|e| day == e - chrono::Days::new(2) || day == e + chrono::Days::new(1));
    day.weekday().number_from_monday() <= 5 && !closed
}

/// The first business day after `day`.
pub fn next_business_day(day: NaiveDate) -> NaiveDate {
    day.iter_days().skip(1).find(|d| is_business_day(*d)).unwrap_or(day)
}

/// Easter Sunday of `year` (Gregorian; the anonymous algorithm of Meeus).
fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let (a, b, c) = (year % 19, year / 100, year % 100);
    let (d, e) = (b / 4, b % 4);
    let g = (8 * b + 13) / 25;
    let h = (19 * a + b - d - g + 15) % 30;
    let (i, k) = (c / 4, c % 4);
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 19 * l) / 433;
    let month = (h + l - 7 * m + 90) / 25;
    let day = (h + l - 7 * m + 33 * month + 19) % 32;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32)
}

/// The day a batch is executed: `asked` (a timestamp, read as its UTC day) when it is a business
/// day from `today` to `today` + [`MAX_DAYS_AHEAD`], the next business day when not given; why
/// not otherwise. A date in the past or years ahead would be written into a file the bank
/// refuses (or, worse, executes) after its claims are marked ordered.
pub fn execution_date(asked: Option<(i64, i32)>, today: NaiveDate) -> Result<NaiveDate, String> {
    let Some((seconds, nanos)) = asked else {
        return Ok(next_business_day(today));
    };
    let last = today + chrono::Days::new(MAX_DAYS_AHEAD as u64);
    let day = u32::try_from(nanos)
        .ok()
        .and_then(|n| DateTime::from_timestamp(seconds, n))
        .map(|t| t.date_naive())
        .filter(|d| (today..=last).contains(d));
    match day {
        Some(d) if is_business_day(d) => Ok(d),
        Some(_) => Err("is not a business day (weekends and TARGET2 holidays are not)".into()),
        None => Err(format!(
            "must be a business day from today to {last} (at most {MAX_DAYS_AHEAD} days ahead)"
        )),
    }
}

/// XML text content and attribute values, escaped, in the SEPA character set (Latin letters,
/// digits, `/ - ? : ( ) . , ' +` and space), as banks require: other letters transliterated
/// (`Jürgen Müller` → `Jurgen Muller`, `Łucja` → `Lucja`, `Ștefan` → `Stefan`, Cyrillic and Greek
/// by `deunicode`), anything else a space.
fn text(value: &str, max: usize) -> String {
    let sepa = |c: char| c.is_ascii_alphanumeric() || " /-?:().,'+".contains(c);
    let cleaned: String = value
        .chars()
        .flat_map(|c| {
            let ascii = match c {
                c if c.is_ascii() => c.to_string(),
                c => deunicode::deunicode_char(c).unwrap_or(" ").to_owned(),
            };
            ascii.chars().map(|a| if sepa(a) { a } else { ' ' }).collect::<Vec<_>>()
        })
        .take(max)
        .collect();
    let trimmed = cleaned.trim();
    let trimmed = if trimmed.is_empty() { "NOTPROVIDED" } else { trimmed };
    trimmed.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;")
}

/// Cents as the schema's decimal: `600.00`.
fn euro(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

impl CreditTransfer {
    /// The total of the transfers, in cents.
    pub fn total_cents(&self) -> i64 {
        self.transfers.iter().map(|t| t.amount_cents).sum()
    }

    /// The pain.001.001.03 document.
    pub fn to_xml(&self) -> String {
        let count = self.transfers.len();
        let total = euro(self.total_cents());
        let mut x = String::with_capacity(600 + count * 600);
        let _ = write!(
            x,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Document xmlns=\"{NAMESPACE}\">\
             <CstmrCdtTrfInitn><GrpHdr><MsgId>{id}</MsgId><CreDtTm>{at}</CreDtTm>\
             <NbOfTxs>{count}</NbOfTxs><CtrlSum>{total}</CtrlSum><InitgPty><Nm>{debtor}</Nm>\
             </InitgPty></GrpHdr><PmtInf><PmtInfId>{id}</PmtInfId><PmtMtd>TRF</PmtMtd>\
             <BtchBookg>false</BtchBookg><NbOfTxs>{count}</NbOfTxs><CtrlSum>{total}</CtrlSum>\
             <PmtTpInf><SvcLvl><Cd>SEPA</Cd></SvcLvl></PmtTpInf>\
             <ReqdExctnDt>{date}</ReqdExctnDt><Dbtr><Nm>{debtor}</Nm></Dbtr>\
             <DbtrAcct><Id><IBAN>{iban}</IBAN></Id></DbtrAcct><DbtrAgt><FinInstnId>{agent}\
             </FinInstnId></DbtrAgt><ChrgBr>SLEV</ChrgBr>",
            id = text(&self.message_id, 35),
            at = self.created_at.format("%Y-%m-%dT%H:%M:%S"),
            debtor = text(&self.debtor_name, 70),
            date = self.execution_date.format("%Y-%m-%d"),
            iban = text(&self.debtor_iban, 34),
            agent = match &self.debtor_bic {
                Some(bic) => format!("<BIC>{}</BIC>", text(bic, 11)),
                None => "<Othr><Id>NOTPROVIDED</Id></Othr>".to_owned(),
            },
        );
        for t in &self.transfers {
            let _ = write!(
                x,
                "<CdtTrfTxInf><PmtId><EndToEndId>{e2e}</EndToEndId></PmtId><Amt>\
                 <InstdAmt Ccy=\"EUR\">{amount}</InstdAmt></Amt><Cdtr><Nm>{name}</Nm></Cdtr>\
                 <CdtrAcct><Id><IBAN>{iban}</IBAN></Id></CdtrAcct><RmtInf><Ustrd>{info}</Ustrd>\
                 </RmtInf></CdtTrfTxInf>",
                e2e = text(&t.end_to_end_id, 35),
                amount = euro(t.amount_cents),
                name = text(&t.creditor_name, 70),
                iban = text(&t.creditor_iban, 34),
                info = text(&t.remittance, 140),
            );
        }
        x.push_str("</PmtInf></CstmrCdtTrfInitn></Document>\n");
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> CreditTransfer {
        CreditTransfer {
            message_id: "BATCH-2020-04-15-0001".into(),
            created_at: DateTime::from_timestamp(1_586_944_800, 0).expect("time"),
            debtor_name: "Istituto Nazionale della Previdenza Sociale".into(),
            debtor_iban: "IT60X0542811101000000123456".into(),
            debtor_bic: None,
            execution_date: NaiveDate::from_ymd_opt(2020, 4, 15).expect("day"),
            transfers: (0..n)
                .map(|i| Transfer {
                    end_to_end_id: format!("INPS.0000.2020.{i:07}"),
                    amount_cents: 60_000,
                    creditor_name: "Niccolò D'Angelo & figli <srl>".into(),
                    creditor_iban: "DE89370400440532013000".into(),
                    remittance: "Indennità COVID-19 DL 18/2020 art. 27".into(),
                })
                .collect(),
        }
    }

    /// Validates `xml` against the schema, so that what banks get is what the standard says.
    fn validate(xml: &str) -> Result<(), String> {
        let schema = include_bytes!("../../data/pain.001.001.03.xsd");
        xsd_check::validate(schema, xml.as_bytes())
    }

    #[test]
    fn a_payment_batch_is_a_valid_pain_001_001_03_document() {
        let xml = batch(3).to_xml();
        validate(&xml).expect("valid against pain.001.001.03.xsd");
        assert!(xml.contains("<NbOfTxs>3</NbOfTxs><CtrlSum>1800.00</CtrlSum>"), "{xml}");
        assert!(xml.contains("<InstdAmt Ccy=\"EUR\">600.00</InstdAmt>"));
        assert!(xml.contains("<EndToEndId>INPS.0000.2020.0000002</EndToEndId>"));
    }

    #[test]
    fn names_keep_to_the_sepa_character_set_and_are_escaped() {
        let xml = batch(1).to_xml();
        assert!(xml.contains("<Nm>Niccolo D&apos;Angelo   figli  srl</Nm>"), "{xml}");
        assert!(xml.contains("<Ustrd>Indennita COVID-19 DL 18/2020 art. 27</Ustrd>"));
    }

    #[test]
    fn names_as_written_are_transliterated_into_the_sepa_set_and_the_file_stays_valid() {
        let mut b = batch(4);
        for (t, name) in b.transfers.iter_mut().zip([
            "Jürgen Müller",
            "Çelik Núñez",
            "Łucja Ștefan Țurcanu",
            "Ирина Петрова",
        ]) {
            t.creditor_name = name.into();
        }
        let xml = b.to_xml();
        validate(&xml).expect("valid against pain.001.001.03.xsd");
        for name in ["Jurgen Muller", "Celik Nunez", "Lucja Stefan Turcanu", "Irina Petrova"] {
            assert!(xml.contains(&format!("<Nm>{name}</Nm>")), "{name}: {xml}");
        }
    }

    #[test]
    fn a_file_the_schema_refuses_is_told_apart() {
        let broken = batch(1).to_xml().replace("<PmtMtd>TRF</PmtMtd>", "<PmtMtd>CASH</PmtMtd>");
        assert!(validate(&broken).is_err(), "the validator must catch a wrong document");
    }

    fn at(day: NaiveDate) -> Option<(i64, i32)> {
        Some((day.and_hms_opt(12, 0, 0).expect("noon").and_utc().timestamp(), 0))
    }

    #[test]
    fn execution_dates_are_business_days_from_today_to_thirty_days_ahead() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("day");
        let today = day(2026, 12, 4); // a Friday
        assert_eq!(execution_date(None, today), Ok(day(2026, 12, 7)), "the next business day");
        assert_eq!(execution_date(at(today), today), Ok(today));
        assert!(execution_date(at(day(2026, 12, 3)), today).is_err(), "yesterday");
        assert!(execution_date(at(day(2026, 12, 5)), today).is_err(), "a Saturday");
        assert!(execution_date(at(day(2026, 12, 25)), today).is_err(), "Christmas");
        assert!(execution_date(at(day(2027, 1, 1)), today).is_err(), "New Year");
        let monday = day(2026, 12, 7);
        assert_eq!(execution_date(at(day(2027, 1, 6)), monday), Ok(day(2027, 1, 6)), "day 30");
        assert!(execution_date(at(day(2027, 1, 7)), monday).is_err(), "day 31");
        for bad in [
            Some((i64::MAX, 0)),
            Some((0, 0)),
            Some((-62_167_219_200, 0)),
            Some((253_402_300_800, 0)),
            Some((0, -1)),
        ] {
            assert!(execution_date(bad, today).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn good_friday_and_easter_monday_are_no_business_days() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("day");
        assert_eq!(easter_sunday(2026), Some(day(2026, 4, 5)));
        assert!(!is_business_day(day(2026, 4, 3)));
        assert!(!is_business_day(day(2026, 4, 6)));
        assert!(is_business_day(day(2026, 4, 7)));
    }

    #[test]
    fn amounts_are_written_with_two_decimals() {
        assert_eq!(euro(60_000), "600.00");
        assert_eq!(euro(100_005), "1000.05");
    }
}
