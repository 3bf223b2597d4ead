//! Conversion of an ordinary PIN into a PIN dispositivo (DOMAIN §4.4): the request, its
//! pre-filled form, the identity document the citizen describes, and the automatic checks that
//! decide whether the conversion is instant ("istantanea") or goes to the back office.

use chrono::NaiveDate;
use sportello_platform::pdf::{self, Block};

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    AwaitingDocuments,
    InReview,
    Approved,
    Rejected,
    Withdrawn,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::AwaitingDocuments => "AWAITING_DOCUMENTS",
            Status::InReview => "IN_REVIEW",
            Status::Approved => "APPROVED",
            Status::Rejected => "REJECTED",
            Status::Withdrawn => "WITHDRAWN",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Status::AwaitingDocuments,
            Status::InReview,
            Status::Approved,
            Status::Rejected,
            Status::Withdrawn,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Not decided yet: the citizen may still withdraw it, and may not open another.
    pub fn is_open(self) -> bool {
        matches!(self, Status::AwaitingDocuments | Status::InReview)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DocumentType {
    CartaIdentita,
    Patente,
    Passaporto,
}

impl DocumentType {
    fn label(self) -> &'static str {
        match self {
            DocumentType::CartaIdentita => "carta d'identità",
            DocumentType::Patente => "patente",
            DocumentType::Passaporto => "passaporto",
        }
    }
}

/// The identity document as its holder describes it at upload, parsed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Document {
    pub kind: DocumentType,
    pub number: String,
    pub issuer: String,
    pub issued_on: NaiveDate,
    pub expires_on: NaiveDate,
    pub holder_surname: String,
    pub holder_given_name: String,
    pub holder_birth_date: NaiveDate,
}

impl Document {
    /// What the audit trail and the back office's list say of it: no number in full.
    pub fn describe(&self) -> String {
        let shown: String = self.number.chars().take(2).collect();
        format!("{} {shown}…, {}", self.kind.label(), self.issuer)
    }
}

/// The person on file the document must name: the register of residents' anagrafica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnFile {
    pub surname: String,
    pub given_name: String,
    pub birth_date: NaiveDate,
}

/// An automatic check that did not pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failed {
    DocumentExpired,
    /// Issued after today, or expiring before it was issued.
    DocumentDatesInconsistent,
    HolderMismatch,
    /// The citizen is not on the register, so there is nothing to compare the document with.
    HolderNotOnFile,
    /// The signed form does not carry the request's number (or cannot be read: a scan).
    RequestNumberMissing,
    /// The "signed" form is the very file that was downloaded: nobody signed it.
    FormNotSigned,
    /// The document's scan is the same file as the form.
    ScanIsTheForm,
    /// Requests for a minor or a person under guardianship are always looked at by a person.
    Guardianship,
}

impl Failed {
    pub fn as_str(self) -> &'static str {
        match self {
            Failed::DocumentExpired => "DOCUMENT_EXPIRED",
            Failed::DocumentDatesInconsistent => "DOCUMENT_DATES_INCONSISTENT",
            Failed::HolderMismatch => "HOLDER_MISMATCH",
            Failed::HolderNotOnFile => "HOLDER_NOT_ON_FILE",
            Failed::RequestNumberMissing => "REQUEST_NUMBER_MISSING",
            Failed::FormNotSigned => "FORM_NOT_SIGNED",
            Failed::ScanIsTheForm => "SCAN_IS_THE_FORM",
            Failed::Guardianship => "GUARDIANSHIP",
        }
    }
}

/// Names compared as people write them: case, accents' apostrophes and spacing aside.
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
    };
    norm(a) == norm(b)
}

/// What a request's files and document are checked for, all at once.
pub struct Evidence<'a> {
    pub document: &'a Document,
    pub on_file: Option<&'a OnFile>,
    /// The signed form's text when it is a PDF with text; `None` for a scan.
    pub form_text: Option<&'a str>,
    pub request_number: &'a str,
    pub guardian: bool,
    /// The signed form is byte for byte the form as it was downloaded.
    pub form_unchanged: bool,
    /// The scan and the signed form are the same file.
    pub scan_is_form: bool,
}

/// The checks that failed, in a fixed order; empty means the conversion is instant.
pub fn automatic_checks(e: &Evidence<'_>, today: NaiveDate) -> Vec<Failed> {
    let mut failed = Vec::new();
    let d = e.document;
    if d.expires_on < today {
        failed.push(Failed::DocumentExpired);
    }
    if d.issued_on > today || d.expires_on < d.issued_on {
        failed.push(Failed::DocumentDatesInconsistent);
    }
    // A guardian's document names the guardian, not the citizen on file.
    if !e.guardian {
        match e.on_file {
            None => failed.push(Failed::HolderNotOnFile),
            Some(p) => {
                let matches = same_name(&p.surname, &d.holder_surname)
                    && same_name(&p.given_name, &d.holder_given_name)
                    && p.birth_date == d.holder_birth_date;
                if !matches {
                    failed.push(Failed::HolderMismatch);
                }
            }
        }
    }
    let number_on_form = e.form_text.is_some_and(|t| {
        let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
        compact.contains(e.request_number)
    });
    if !number_on_form {
        failed.push(Failed::RequestNumberMissing);
    }
    if e.form_unchanged {
        failed.push(Failed::FormNotSigned);
    }
    if e.scan_is_form {
        failed.push(Failed::ScanIsTheForm);
    }
    if e.guardian {
        failed.push(Failed::Guardianship);
    }
    failed
}

/// `DISP.<year>.<7 digits>`, as printed on the form.
pub fn request_number(year: i32, n: i64) -> String {
    format!("DISP.{year}.{n:07}")
}

/// What the pre-filled form prints.
pub struct Form<'a> {
    pub request_number: &'a str,
    pub fiscal_code: &'a str,
    pub on_file: Option<&'a OnFile>,
    pub guardian_fiscal_code: Option<&'a str>,
    /// dd/mm/yyyy
    pub date: &'a str,
}

/// The form as a PDF: the anagrafica, fiscal code, date, request number and a signature box.
pub fn form_pdf(f: &Form<'_>) -> Vec<u8> {
    let mut blocks = pdf::letterhead();
    blocks.push(Block::bold("Richiesta di conversione del PIN in PIN dispositivo", 13.0));
    blocks.push(Block::blank());
    blocks.push(Block::body(format!("Numero di richiesta: {}", f.request_number)));
    blocks.push(Block::body(format!("Data: {}", f.date)));
    blocks.push(Block::blank());
    match f.on_file {
        Some(p) => {
            blocks.push(Block::body(format!("Cognome: {}", p.surname)));
            blocks.push(Block::body(format!("Nome: {}", p.given_name)));
            blocks
                .push(Block::body(format!("Data di nascita: {}", p.birth_date.format("%d/%m/%Y"))));
        }
        None => blocks.push(Block::body("Cognome, nome e data di nascita: ____________________")),
    }
    blocks.push(Block::body(format!("Codice fiscale: {}", f.fiscal_code)));
    if let Some(guardian) = f.guardian_fiscal_code {
        blocks.push(Block::body(format!(
            "Richiesta presentata dal tutore o genitore, codice fiscale: {guardian}"
        )));
    }
    blocks.push(Block::blank());
    let text = "Il sottoscritto chiede che il proprio PIN ordinario sia convertito in PIN \
                dispositivo, per i servizi che lo richiedono, e allega copia di un documento di \
                riconoscimento in corso di validità. Dichiara, consapevole delle sanzioni per le \
                dichiarazioni mendaci (DPR 445/2000, art. 76), che i dati indicati sono veri.";
    blocks.extend(pdf::wrap(text, pdf::WRAP).into_iter().map(Block::body));
    blocks.push(Block::blank());
    blocks.push(Block::body("Firma del richiedente"));
    blocks.push(Block::Boxed { text: String::new(), height: 60.0, width: Some(260.0) });
    pdf::render(&blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    fn rossi() -> OnFile {
        OnFile { surname: "Rossi".into(), given_name: "Maria".into(), birth_date: day(1980, 1, 1) }
    }

    fn document() -> Document {
        Document {
            kind: DocumentType::CartaIdentita,
            number: "CA12345AA".into(),
            issuer: "Comune di Roma".into(),
            issued_on: day(2018, 5, 2),
            expires_on: day(2028, 1, 1),
            holder_surname: "ROSSI".into(),
            holder_given_name: "maria".into(),
            holder_birth_date: day(1980, 1, 1),
        }
    }

    fn checks(
        document: &Document,
        on_file: Option<&OnFile>,
        form: Option<&str>,
        guardian: bool,
    ) -> Vec<Failed> {
        let e = Evidence {
            document,
            on_file,
            form_text: form,
            request_number: "DISP.2020.0000042",
            guardian,
            form_unchanged: false,
            scan_is_form: false,
        };
        automatic_checks(&e, day(2020, 4, 1))
    }

    const FORM: &str = "Numero di richiesta: DISP.2020.\n0000042";

    #[test]
    fn a_valid_document_naming_the_citizen_and_the_signed_form_pass_every_check() {
        assert_eq!(checks(&document(), Some(&rossi()), Some(FORM), false), []);
    }

    #[test]
    fn a_document_expired_the_day_before_fails_but_one_expiring_today_passes() {
        let mut d = document();
        d.expires_on = day(2020, 3, 31);
        assert_eq!(checks(&d, Some(&rossi()), Some(FORM), false), [Failed::DocumentExpired]);
        d.expires_on = day(2020, 4, 1);
        assert_eq!(checks(&d, Some(&rossi()), Some(FORM), false), []);
    }

    #[test]
    fn a_document_issued_in_the_future_is_inconsistent() {
        let mut d = document();
        d.issued_on = day(2020, 4, 2);
        assert_eq!(
            checks(&d, Some(&rossi()), Some(FORM), false),
            [Failed::DocumentDatesInconsistent]
        );
    }

    #[test]
    fn another_name_or_birth_date_on_the_document_is_a_mismatch() {
        let mut d = document();
        d.holder_birth_date = day(1980, 1, 2);
        assert_eq!(checks(&d, Some(&rossi()), Some(FORM), false), [Failed::HolderMismatch]);
        let mut d = document();
        d.holder_given_name = "Mario".into();
        assert_eq!(checks(&d, Some(&rossi()), Some(FORM), false), [Failed::HolderMismatch]);
        assert_eq!(checks(&document(), None, Some(FORM), false), [Failed::HolderNotOnFile]);
    }

    #[test]
    fn a_scan_or_a_form_of_another_request_leaves_the_number_unchecked() {
        assert_eq!(
            checks(&document(), Some(&rossi()), None, false),
            [Failed::RequestNumberMissing]
        );
        assert_eq!(
            checks(&document(), Some(&rossi()), Some("DISP.2020.0000041"), false),
            [Failed::RequestNumberMissing]
        );
    }

    #[test]
    fn the_form_sent_back_unsigned_or_twice_is_no_signed_form() {
        let (doc, rossi) = (document(), rossi());
        let check = |form_unchanged, scan_is_form| {
            let e = Evidence {
                document: &doc,
                on_file: Some(&rossi),
                form_text: Some(FORM),
                request_number: "DISP.2020.0000042",
                guardian: false,
                form_unchanged,
                scan_is_form,
            };
            automatic_checks(&e, day(2020, 4, 1))
        };
        assert_eq!(check(true, false), [Failed::FormNotSigned]);
        assert_eq!(check(false, true), [Failed::ScanIsTheForm]);
    }

    #[test]
    fn a_guardians_request_always_goes_to_the_back_office() {
        let mut guardian_doc = document();
        guardian_doc.holder_surname = "Bianchi".into();
        assert_eq!(checks(&guardian_doc, Some(&rossi()), Some(FORM), true), [Failed::Guardianship]);
    }

    #[test]
    fn the_form_prints_the_request_number_the_anagrafica_and_the_signature_box() {
        let pdf = form_pdf(&Form {
            request_number: "DISP.2020.0000042",
            fiscal_code: "RSSMRA80A41H501Y",
            on_file: Some(&rossi()),
            guardian_fiscal_code: None,
            date: "01/04/2020",
        });
        let text = pdf::text_of(&pdf).expect("readable");
        for expected in
            ["DISP.2020.0000042", "RSSMRA80A41H501Y", "Rossi", "Maria", "01/01/1980", "Firma"]
        {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }
}
