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
    /// Granted, then revoked within the hold at the citizen's request.
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::AwaitingDocuments => "AWAITING_DOCUMENTS",
            Status::InReview => "IN_REVIEW",
            Status::Approved => "APPROVED",
            Status::Rejected => "REJECTED",
            Status::Withdrawn => "WITHDRAWN",
            Status::Revoked => "REVOKED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Status::AwaitingDocuments,
            Status::InReview,
            Status::Approved,
            Status::Rejected,
            Status::Withdrawn,
            Status::Revoked,
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
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentType::CartaIdentita => "CARTA_IDENTITA",
            DocumentType::Patente => "PATENTE",
            DocumentType::Passaporto => "PASSAPORTO",
        }
    }

    /// The longest validity the type can have: ten years for each, and a carta d'identità runs
    /// on to the holder's next birthday (so up to a year more); a day's slack for leap years.
    fn longest_validity(self) -> chrono::Months {
        match self {
            DocumentType::CartaIdentita => chrono::Months::new(12 * 11),
            DocumentType::Patente | DocumentType::Passaporto => chrono::Months::new(12 * 10),
        }
    }

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
    /// Issued after today or before the holder was born, expiring before it was issued, or valid
    /// for longer than its type can be.
    DocumentDatesInconsistent,
    HolderMismatch,
    /// The citizen is not on the register, so there is nothing to compare the document with.
    HolderNotOnFile,
    /// The signed form does not carry the request's number (or cannot be read: a scan).
    RequestNumberMissing,
    /// The "signed" form has the very pages that were downloaded: nobody signed it.
    FormNotSigned,
    /// The document's scan is the form.
    ScanIsTheForm,
    /// Requests for a minor or a person under guardianship are always looked at by a person.
    Guardianship,
    /// The identity-document registry did not confirm the document (it did not know it, did not
    /// answer, or none is configured): only an authority's MATCH makes a conversion instant.
    DocumentNotVerified,
    /// The notice of the request had not left for the citizen's contacts yet: the grant must
    /// never reach them first.
    NoticePending,
    /// The service could not read a file (its reader did not run): a person looks at it.
    FileNotRead,
    /// The scan is a PDF with no image on it: typed, not scanned.
    ScanWithoutImage,
    /// A grant to this citizen was revoked at their request: whoever asked may still hold the
    /// PIN, so a person decides from now on.
    PreviouslyRevoked,
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
            Failed::DocumentNotVerified => "DOCUMENT_NOT_VERIFIED",
            Failed::NoticePending => "NOTICE_PENDING",
            Failed::FileNotRead => "FILE_NOT_READ",
            Failed::ScanWithoutImage => "SCAN_WITHOUT_IMAGE",
            Failed::PreviouslyRevoked => "PREVIOUSLY_REVOKED",
        }
    }
}

/// Names compared as the register compares them: "Nicolò D'Amico" = "NICOLO' D'AMICO".
fn same_name(a: &str, b: &str) -> bool {
    super::residents::fold_name(a) == super::residents::fold_name(b)
}

/// What the signed form turned out to be once read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedForm<'a> {
    /// A PDF: its text, and whether its pages are those of the form as downloaded (however its
    /// bytes differ).
    Pdf { text: &'a str, as_downloaded: bool },
    /// A scan or a photograph of the printed, signed form.
    Image,
}

/// What a request's files and document are checked for, all at once.
pub struct Evidence<'a> {
    pub document: &'a Document,
    pub on_file: Option<&'a OnFile>,
    pub form: SignedForm<'a>,
    pub request_number: &'a str,
    pub guardian: bool,
    /// The scan is the form: the same file, or a PDF with the form's pages.
    pub scan_is_form: bool,
}

/// Whether the document's dates are possible for its type and holder on `today`.
fn dates_consistent(d: &Document, today: NaiveDate) -> bool {
    let longest = d.issued_on.checked_add_months(d.kind.longest_validity());
    d.issued_on <= today
        && d.issued_on > d.holder_birth_date
        && d.expires_on >= d.issued_on
        && longest.is_some_and(|l| d.expires_on <= l + chrono::Days::new(1))
}

/// The checks that failed, in a fixed order; empty means nothing stands in the way (the
/// registry's confirmation aside: see [`outcome`]).
pub fn automatic_checks(e: &Evidence<'_>, today: NaiveDate) -> Vec<Failed> {
    let mut failed = Vec::new();
    let d = e.document;
    if d.expires_on < today {
        failed.push(Failed::DocumentExpired);
    }
    if !dates_consistent(d, today) {
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
    let (text, as_downloaded) = match e.form {
        SignedForm::Pdf { text, as_downloaded } => (Some(text), as_downloaded),
        SignedForm::Image => (None, false),
    };
    let number_on_form = text.is_some_and(|t| {
        let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
        compact.contains(e.request_number)
    });
    if !number_on_form {
        failed.push(Failed::RequestNumberMissing);
    }
    if as_downloaded {
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

/// What the identity-document registry said of the document and its holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentCheck {
    Match,
    NoMatch,
    Unknown,
    /// No answer in time, or no registry configured.
    Unavailable,
}

impl DocumentCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentCheck::Match => "MATCH",
            DocumentCheck::NoMatch => "NO_MATCH",
            DocumentCheck::Unknown => "UNKNOWN",
            DocumentCheck::Unavailable => "UNAVAILABLE",
        }
    }
}

/// Where an upload goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed and the registry confirmed the document: the PIN is dispositivo now.
    Instant,
    /// A person decides; these checks failed.
    Review(Vec<Failed>),
    /// The registry says the document is not the holder's (or does not exist).
    Reject,
}

/// The reason a rejection by the registry gives the citizen.
pub const NOT_CONFIRMED: &str = "Il documento indicato non risulta all'archivio dei documenti \
    d'identità per questo titolare. Se è un errore, rivolgiti a una sede INPS con il documento.";

/// The decision on an upload: instant only on the registry's MATCH with nothing else failing.
pub fn outcome(mut failed: Vec<Failed>, check: DocumentCheck) -> Outcome {
    match check {
        DocumentCheck::NoMatch => Outcome::Reject,
        DocumentCheck::Match if failed.is_empty() => Outcome::Instant,
        DocumentCheck::Match => Outcome::Review(failed),
        DocumentCheck::Unknown | DocumentCheck::Unavailable => {
            failed.push(Failed::DocumentNotVerified);
            Outcome::Review(failed)
        }
    }
}

/// Whether someone born on `birth_date` is under 18 on `on`.
pub fn is_minor(birth_date: NaiveDate, on: NaiveDate) -> bool {
    birth_date.checked_add_months(chrono::Months::new(12 * 18)).is_some_and(|adult| on < adult)
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
    blocks.push(Block::body(text));
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
        let form = match form {
            Some(text) => SignedForm::Pdf { text, as_downloaded: false },
            None => SignedForm::Image,
        };
        let e = Evidence {
            document,
            on_file,
            form,
            request_number: "DISP.2020.0000042",
            guardian,
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
        let check = |as_downloaded, scan_is_form| {
            let e = Evidence {
                document: &doc,
                on_file: Some(&rossi),
                form: SignedForm::Pdf { text: FORM, as_downloaded },
                request_number: "DISP.2020.0000042",
                guardian: false,
                scan_is_form,
            };
            automatic_checks(&e, day(2020, 4, 1))
        };
        assert_eq!(check(true, false), [Failed::FormNotSigned]);
        assert_eq!(check(false, true), [Failed::ScanIsTheForm]);
    }

    #[test]
    fn a_document_issued_before_its_holder_was_born_or_valid_too_long_is_inconsistent() {
        let mut d = document();
        d.issued_on = day(1979, 1, 1);
        assert_eq!(
            checks(&d, Some(&rossi()), Some(FORM), false),
            [Failed::DocumentDatesInconsistent]
        );
        let mut d = document();
        d.kind = DocumentType::Passaporto;
        d.issued_on = day(2018, 5, 2);
        d.expires_on = day(2028, 5, 2);
        assert_eq!(checks(&d, Some(&rossi()), Some(FORM), false), []);
        d.expires_on = day(2029, 5, 2);
        assert_eq!(
            checks(&d, Some(&rossi()), Some(FORM), false),
            [Failed::DocumentDatesInconsistent]
        );
        // A carta d'identità runs on to the birthday after ten years.
        d.kind = DocumentType::CartaIdentita;
        assert_eq!(checks(&d, Some(&rossi()), Some(FORM), false), []);
        d.expires_on = day(2035, 1, 1);
        assert_eq!(
            checks(&d, Some(&rossi()), Some(FORM), false),
            [Failed::DocumentDatesInconsistent]
        );
    }

    #[test]
    fn holder_names_are_folded_as_the_register_folds_them() {
        let on_file = OnFile {
            surname: "D'AMICO".into(),
            given_name: "NICOLO'".into(),
            birth_date: day(1980, 1, 1),
        };
        let mut d = document();
        d.holder_surname = "D'Amico".into();
        d.holder_given_name = "Nicolò".into();
        assert_eq!(checks(&d, Some(&on_file), Some(FORM), false), []);
    }

    #[test]
    fn only_the_registrys_match_with_every_check_passed_is_instant() {
        assert_eq!(outcome(vec![], DocumentCheck::Match), Outcome::Instant);
        assert_eq!(outcome(vec![], DocumentCheck::NoMatch), Outcome::Reject);
        assert_eq!(outcome(vec![Failed::HolderMismatch], DocumentCheck::NoMatch), Outcome::Reject);
        assert_eq!(
            outcome(vec![Failed::FormNotSigned], DocumentCheck::Match),
            Outcome::Review(vec![Failed::FormNotSigned])
        );
        for unsure in [DocumentCheck::Unknown, DocumentCheck::Unavailable] {
            assert_eq!(outcome(vec![], unsure), Outcome::Review(vec![Failed::DocumentNotVerified]));
        }
    }

    #[test]
    fn a_citizen_is_a_minor_until_the_eighteenth_birthday() {
        assert!(is_minor(day(2002, 4, 2), day(2020, 4, 1)));
        assert!(!is_minor(day(2002, 4, 1), day(2020, 4, 1)));
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
