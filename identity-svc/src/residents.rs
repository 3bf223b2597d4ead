//! The register of residents at work (issue 8 §6): its bulk import (`ResidentsService`, back
//! office only), the demo register `sportello up` loads, the CSV layout both read, and the
//! register's say in a PIN request (`Pins::letter_decision`, `Pins::hold`).

use crate::domain::codice_fiscale::CodiceFiscale;
use crate::domain::pin::Pin;
use crate::domain::pin_request::PinRequest;
use crate::domain::residents::{decide, LetterDecision, RegisterCheck, Resident};
use crate::error::IdentityError;
use crate::notifier::Destination;
use crate::pins::{FiledBy, Pins};
use crate::store::{self, HeldRequest, Outcome, Store};
use sportello_platform::auth::{principal, require_service, Role};
use sportello_platform::error::FieldViolations;
use sportello_proto::identity::v1 as wire;
use sportello_proto::identity::v1::residents_service_server::ResidentsService;
use std::collections::HashMap;
use tonic::{Request, Response, Status, Streaming};

/// Rejections reported in full; beyond them only the count.
const MAX_REPORTED: usize = 1_000;
/// Entries per message of the import stream, at most.
pub const MAX_BATCH: usize = 1_000;

/// The demo register `sportello up` loads on its defaults (listed in the README).
pub const DEMO_REGISTER: &str = include_str!("../data/demo-residents.csv");

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

impl Pins {
    /// What the register says about `req` (issue 8 §6): where the letter goes, or why nothing
    /// is sent yet.
    pub(crate) async fn letter_decision(
        &self,
        cf: &str,
        req: &PinRequest,
    ) -> Result<LetterDecision, IdentityError> {
        let entry = self.store.resident(cf).await?;
        Ok(decide(entry.as_ref(), req))
    }

    /// Records a request the register did not let through (issuing nothing, sending nothing),
    /// with its form for the contact center and the audit row saying why.
    pub(crate) async fn hold(
        &self,
        request_id: &str,
        req: &PinRequest,
        by: FiledBy<'_>,
        check: RegisterCheck,
    ) -> Result<(String, Outcome), IdentityError> {
        let outcome = match check {
            RegisterCheck::AnagraficaMismatch => Outcome::RegisterMismatch,
            _ => Outcome::PendingValidation,
        };
        let cf = req.fiscal_code.canonical();
        let held = HeldRequest {
            id: request_id,
            fiscal_code: &cf,
            channel: req.first_half_channel,
            filed_by: by.as_str(),
            actor: by.actor(),
            form: &req.form_record(),
            check,
        };
        self.store.record_held_request(&held, outcome.as_str()).await?;
        tracing::info!(
            fiscal_code = %req.fiscal_code.masked(),
            register_check = check.as_str(),
            "PIN request held by the register of residents"
        );
        Ok((request_id.to_owned(), outcome))
    }
}

impl Pins {
    /// The contact center's validation of a request the register held back (issue 8 §6): the
    /// operator has checked the caller's identity and residence by phone, so the PIN is issued —
    /// first half by the channel the form chose, the letter to the registered residence if the
    /// citizen is on the register by now (it may have been loaded since the request was held),
    /// else to the residence on the form.
    /// Returns the fiscal code and where the first half went.
    pub async fn validate_pending(
        &self,
        operator: &str,
        request_id: &str,
        identity_verified: bool,
    ) -> Result<(String, Destination), IdentityError> {
        let mut v = FieldViolations::new();
        if !identity_verified {
            v.add("identity_verified", "check the caller's identity and residence by phone first");
        }
        // Request ids are UUIDs: anything else names no request, and is not worth a query.
        if uuid::Uuid::parse_str(request_id.trim()).is_err() {
            v.add("request_id", "must be the id of a PIN request (a UUID)");
        }
        if !v.is_empty() {
            return Err(v.into());
        }
        let request = self
            .store
            .request(request_id.trim())
            .await?
            .ok_or(IdentityError::NotFound("PIN request"))?;
        let not_pending = IdentityError::Precondition {
            reason: "NOT_PENDING_VALIDATION",
            message: "this request does not wait for validation",
        };
        let form = match (&request.outcome, &request.validated_by, request.form) {
            (Outcome::PendingValidation, None, Some(form)) => form,
            _ => return Err(not_pending),
        };
        let cf = request.fiscal_code;
        let pin = Pin::generate_initial();
        let (full, simplified) = tokio::try_join!(
            self.hasher.hash(pin.expose().to_owned()),
            self.hasher.hash(pin.first_half().to_owned()),
        )?;
        // Read before the transaction: a re-import racing the validation moves the letter at
        // worst to the address it replaced, which the citizen is told of (RESIDENCE_CHANGED).
        let letter = match self.store.resident(&cf).await? {
            Some(entry) => entry.postal_lines(),
            None => format!("{} {}\n{}", form.given_name, form.surname, form.residence),
        };
        let mut tx = self.store.begin().await?;
        if !store::claim_initial_pin(&mut tx, &cf, &full, &simplified, &form.contacts).await? {
            return Err(IdentityError::Precondition {
                reason: "ALREADY_HAS_PIN",
                message: "the citizen holds a PIN: use ripristino, or revoke it first",
            });
        }
        if !store::issue_validated(&mut tx, &request.id, operator).await? {
            return Err(not_pending);
        }
        let first = (&form.contacts, request.first_half_channel);
        let to =
            crate::pins::queue_halves(&mut tx, &self.store, &request.id, &cf, first, &pin, letter)
                .await?;
        let detail = format!("request {}", request.id);
        self.commit_done(tx, operator, "ValidatePendingPinRequest", &cf, &detail).await?;
        Ok((cf, to))
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub received: i64,
    pub written: i64,
    pub unchanged: i64,
    pub rejected: i64,
    pub rejections: Vec<wire::RejectedResident>,
    pub rejections_not_listed: i64,
}

impl ImportReport {
    fn reject(&mut self, line: i64, problems: impl IntoIterator<Item = (String, String)>) {
        self.rejected += 1;
        for (field, description) in problems {
            if self.rejections.len() < MAX_REPORTED {
                self.rejections.push(wire::RejectedResident { line, field, description });
            } else {
                self.rejections_not_listed += 1;
            }
        }
    }
}

/// An import under way: every batch is checked and written in its own transaction, so good
/// entries are kept whatever happens later; a fiscal code named twice is rejected the second
/// time (the register holds one residence per person).
#[derive(Debug)]
pub struct Import<'a> {
    store: &'a Store,
    /// Who loads the register: the audit rows of the citizens whose entries change name them.
    actor: &'a str,
    seen: HashMap<String, i64>,
    pub report: ImportReport,
}

impl<'a> Import<'a> {
    pub fn new(store: &'a Store, actor: &'a str) -> Self {
        Self { store, actor, seen: HashMap::new(), report: ImportReport::default() }
    }

    pub async fn batch(&mut self, records: Vec<wire::ResidentRecord>) -> Result<(), IdentityError> {
        // Checking a thousand entries is CPU work: off the runtime's threads, so that health
        // checks and other calls are not held up by a bulk load.
        let parsed = tokio::task::spawn_blocking(move || {
            let today = today();
            records.into_iter().map(|r| (r.line, Resident::parse(&r, today))).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let mut good = Vec::with_capacity(parsed.len());
        for (line, parsed) in parsed {
            self.report.received += 1;
            match parsed {
                Ok(resident) => match self.seen.get(&resident.fiscal_code) {
                    Some(first) => {
                        let why = format!("the same fiscal code is already on line {first}");
                        self.report.reject(line, [("fiscal_code".to_owned(), why)]);
                    }
                    None => {
                        self.seen.insert(resident.fiscal_code.clone(), line);
                        good.push(resident);
                    }
                },
                Err(v) => self.report.reject(
                    line,
                    v.iter().map(|(f, d)| (f.to_owned(), d.to_owned())).collect::<Vec<_>>(),
                ),
            }
        }
        let written = self.store.put_residents(&good, self.actor).await?;
        self.report.written += written.written as i64;
        self.report.unchanged += written.unchanged as i64;
        Ok(())
    }
}

/// Who the audit trail names for changes the demo register makes.
const DEMO_ACTOR: &str = "demo-register";

/// Loads the demo register: idempotent, so every start of `sportello up` may do it.
pub async fn load_demo(store: &Store) -> anyhow::Result<()> {
    let (records, problems) = csv::parse(DEMO_REGISTER.as_bytes());
    anyhow::ensure!(problems.is_empty(), "demo register: {problems:?}");
    let mut import = Import::new(store, DEMO_ACTOR);
    for chunk in records.chunks(MAX_BATCH) {
        import.batch(chunk.to_vec()).await?;
    }
    let r = &import.report;
    anyhow::ensure!(r.rejected == 0, "demo register: {:?}", r.rejections);
    tracing::info!(entries = r.received, written = r.written, "demo register of residents loaded");
    Ok(())
}

/// `sportello.identity.v1.ResidentsService`.
#[derive(Clone, Debug)]
pub struct Residents {
    store: Store,
}

impl Residents {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl ResidentsService for Residents {
    async fn import_residents(
        &self,
        request: Request<Streaming<wire::ImportResidentsRequest>>,
    ) -> Result<Response<wire::ImportResidentsResponse>, Status> {
        let claims = principal(&request)?;
        if claims.role != Role::Backoffice {
            return Err(Status::permission_denied("the register is loaded by the back office"));
        }
        let mut stream = request.into_inner();
        let mut import = Import::new(&self.store, &claims.sub);
        while let Some(message) = stream.message().await? {
            if message.residents.len() > MAX_BATCH {
                let mut v = FieldViolations::new();
                v.add("residents", format!("send at most {MAX_BATCH} entries per message"));
                return Err(IdentityError::Invalid(v).into());
            }
            import.batch(message.residents).await?;
        }
        let r = import.report;
        let detail = format!(
            "received {} written {} unchanged {} rejected {}",
            r.received, r.written, r.unchanged, r.rejected
        );
        // An action on no one citizen: it belongs to the importer's own trail.
        let entry = crate::store::Entry {
            operator_id: &claims.sub,
            action: "ImportResidents",
            fiscal_code: "",
            outcome: "OK",
            detail: &detail,
        };
        self.store.audit(&entry).await.map_err(IdentityError::from)?;
        tracing::info!(by = %claims.sub, received = r.received, written = r.written, rejected = r.rejected, "register of residents imported");
        Ok(Response::new(wire::ImportResidentsResponse {
            received: r.received,
            written: r.written,
            unchanged: r.unchanged,
            rejected: r.rejected,
            rejections: r.rejections,
            rejections_not_listed: r.rejections_not_listed,
        }))
    }

    async fn batch_get_resident_names(
        &self,
        request: Request<wire::BatchGetResidentNamesRequest>,
    ) -> Result<Response<wire::BatchGetResidentNamesResponse>, Status> {
        require_service(&request)?;
        let given = request.into_inner().fiscal_codes;
        let mut v = FieldViolations::new();
        if given.len() > MAX_BATCH {
            v.add("fiscal_codes", format!("ask for at most {MAX_BATCH} fiscal codes per call"));
            return Err(IdentityError::Invalid(v).into());
        }
        // Answered under the code as asked, looked up under its canonical form.
        let mut asked: HashMap<String, Vec<String>> = HashMap::new();
        for (i, raw) in given.iter().enumerate() {
            match CodiceFiscale::parse(raw, today()) {
                Ok(cf) => asked.entry(cf.canonical()).or_default().push(raw.trim().to_owned()),
                Err(e) => v.add(format!("fiscal_codes[{i}]"), e.to_string()),
            }
        }
        v.into_result(()).map_err(IdentityError::Invalid)?;
        let canonical: Vec<String> = asked.keys().cloned().collect();
        let names = self.store.names(&canonical).await.map_err(IdentityError::from)?;
        let residents = names
            .into_iter()
            .flat_map(|(cf, (given_name, surname))| {
                asked.remove(&cf).unwrap_or_default().into_iter().map(move |fiscal_code| {
                    wire::ResidentName {
                        fiscal_code,
                        given_name: given_name.clone(),
                        surname: surname.clone(),
                    }
                })
            })
            .collect();
        Ok(Response::new(wire::BatchGetResidentNamesResponse { residents }))
    }
}

/// The register's file layout, shared by the demo register and `sportello import residents`:
/// CSV with a header row naming these columns (any order; extra columns ignored):
///
/// `fiscal_code, surname, given_name, birth_date, sex, birth_province, birth_municipality,
/// birth_country, street, street_number, postal_code, province, municipality, country, address`
///
/// `birth_date` as `1985-12-10` or `10/12/1985`; `sex` `M` or `F`; born abroad: `birth_country`
/// instead of province and municipality; resident abroad: `country` and `address` (lines
/// separated by `|` or quoted newlines) instead of the Italian address.
pub mod csv {
    use super::wire;

    pub const COLUMNS: [&str; 15] = [
        "fiscal_code",
        "surname",
        "given_name",
        "birth_date",
        "sex",
        "birth_province",
        "birth_municipality",
        "birth_country",
        "street",
        "street_number",
        "postal_code",
        "province",
        "municipality",
        "country",
        "address",
    ];

    /// The column of the file a field of `ResidentRecord` comes from: its last path segment
    /// (`residence.italy.postal_code` → `postal_code`).
    pub fn column_of(field: &str) -> &str {
        field.rsplit('.').next().unwrap_or(field)
    }

    /// A problem found before the entry could be sent (a row that is not an entry at all).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct RowProblem {
        pub line: i64,
        pub column: String,
        pub description: String,
    }

    /// Reads every row of `input` into a record (line numbers as in the file), or a problem.
    pub fn parse(input: impl std::io::Read) -> (Vec<wire::ResidentRecord>, Vec<RowProblem>) {
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for row in rows(input) {
            match row {
                Ok(record) => records.push(record),
                Err(problem) => problems.push(problem),
            }
        }
        (records, problems)
    }

    /// The rows of `input`, one at a time, for files too big to hold.
    pub fn rows(
        input: impl std::io::Read,
    ) -> impl Iterator<Item = Result<wire::ResidentRecord, RowProblem>> {
        let mut reader =
            ::csv::ReaderBuilder::new().flexible(true).trim(::csv::Trim::All).from_reader(input);
        let header = match reader.headers() {
            Ok(h) => {
                let names: Vec<String> = h.iter().map(|n| n.to_ascii_lowercase()).collect();
                let index: Vec<Option<usize>> =
                    COLUMNS.iter().map(|c| names.iter().position(|n| n == c)).collect();
                if index[0].is_some() {
                    Ok(index)
                } else {
                    Err(problem(1, "fiscal_code", "the first row must name the columns"))
                }
            }
            Err(_) => Err(problem(1, "", "is not a readable CSV header")),
        };
        let (index, header_problem) = match header {
            Ok(index) => (index, None),
            Err(p) => (Vec::new(), Some(p)),
        };
        let body = header_problem.is_none().then(|| reader.into_records()).into_iter().flatten();
        header_problem.map(Err).into_iter().chain(body.map(move |row| {
            let row = row.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line() as i64);
                problem(line, "", "is not a readable CSV row")
            })?;
            let line = row.position().map_or(0, |p| p.line() as i64);
            let get = |name: &str| -> String {
                COLUMNS
                    .iter()
                    .position(|c| *c == name)
                    .and_then(|i| index[i])
                    .and_then(|i| row.get(i))
                    .unwrap_or_default()
                    .to_owned()
            };
            record(line, &get)
        }))
    }

    fn problem(line: i64, column: &str, description: &str) -> RowProblem {
        RowProblem { line, column: column.into(), description: description.into() }
    }

    fn record(line: i64, get: &dyn Fn(&str) -> String) -> Result<wire::ResidentRecord, RowProblem> {
        let birth_date = parse_date(&get("birth_date")).ok_or_else(|| {
            problem(line, "birth_date", "must be a date such as 1985-12-10 or 10/12/1985")
        })?;
        let sex = match get("sex").to_ascii_uppercase().as_str() {
            "M" => wire::Sex::Male,
            "F" => wire::Sex::Female,
            _ => return Err(problem(line, "sex", "must be M or F")),
        };
        let country = get("country");
        let abroad = !country.is_empty() && !country.eq_ignore_ascii_case("italia");
        let place = if abroad {
            wire::residence::Place::Abroad(wire::ForeignAddress {
                country,
                address: get("address").replace('|', "\n"),
            })
        } else {
            wire::residence::Place::Italy(wire::ItalianAddress {
                street: get("street"),
                street_number: get("street_number"),
                postal_code: get("postal_code"),
                province: get("province"),
                municipality: get("municipality"),
            })
        };
        Ok(wire::ResidentRecord {
            line,
            fiscal_code: get("fiscal_code"),
            personal_data: Some(wire::PersonalData {
                surname: get("surname"),
                given_name: get("given_name"),
                birth_date: Some(birth_date),
                sex: sex as i32,
                birth_province: get("birth_province"),
                birth_municipality: get("birth_municipality"),
                birth_country: get("birth_country"),
            }),
            residence: Some(wire::Residence { place: Some(place) }),
        })
    }

    fn parse_date(s: &str) -> Option<wire::Date> {
        let (y, m, d) = if let Some((d, rest)) = s.split_once('/') {
            let (m, y) = rest.split_once('/')?;
            (y, m, d)
        } else {
            let mut parts = s.splitn(3, '-');
            (parts.next()?, parts.next()?, parts.next()?)
        };
        Some(wire::Date { year: y.parse().ok()?, month: m.parse().ok()?, day: d.parse().ok()? })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rows_become_records_and_unreadable_rows_problems_by_line() {
            let file = "fiscal_code,surname,given_name,birth_date,sex,birth_province,birth_municipality,street,street_number,postal_code,province,municipality,country,address\n\
                RSSMRA85T10A562S,Rossi,Mario,10/12/1985,M,PI,San Giuliano Terme,Via Roma,1,56017,PI,San Giuliano Terme,,\n\
                RSSMRA85T10A562S,Rossi,Mario,1985-12-10,X,PI,San Giuliano Terme,Via Roma,1,56017,PI,San Giuliano Terme,,\n\
                RSSMRA85T10A562S,Rossi,Mario,1985-12-10,M,PI,San Giuliano Terme,,,,,,Francia,1 rue de la Paix|75002 Paris\n";
            let (records, problems) = parse(file.as_bytes());
            assert_eq!(records.len(), 2);
            assert_eq!(records[0].line, 2);
            assert_eq!(records[1].line, 4);
            assert_eq!(
                problems,
                [RowProblem {
                    line: 3,
                    column: "sex".into(),
                    description: "must be M or F".into()
                }]
            );
            let Some(wire::residence::Place::Abroad(a)) =
                records[1].residence.as_ref().and_then(|r| r.place.as_ref())
            else {
                panic!("abroad");
            };
            assert_eq!(a.address, "1 rue de la Paix\n75002 Paris");
        }

        #[test]
        fn every_field_path_names_a_column() {
            for path in [
                "fiscal_code",
                "personal_data.birth_province",
                "residence.italy.postal_code",
                "residence.abroad.address",
            ] {
                assert!(COLUMNS.contains(&column_of(path)), "{path}");
            }
        }

        #[test]
        fn the_demo_register_is_valid() {
            let (records, problems) = parse(super::super::DEMO_REGISTER.as_bytes());
            assert!(problems.is_empty(), "{problems:?}");
            let today = chrono::Utc::now().date_naive();
            for r in &records {
                let parsed = crate::domain::residents::Resident::parse(r, today);
                assert!(parsed.is_ok(), "line {}: {:?}", r.line, parsed.err());
            }
        }
    }
}

/// The PIN request Mario Rossi of the demo register fills in (with `fiscal_code`, which tests vary):
/// the honest form that tests, the bench and the chaos scenarios start from.
pub fn demo_pin_request(fiscal_code: &str) -> sportello_proto::identity::v1::RequestPinRequest {
    use sportello_proto::identity::v1 as id;
    id::RequestPinRequest {
        fiscal_code: fiscal_code.into(),
        personal_data: Some(id::PersonalData {
            surname: "Rossi".into(),
            given_name: "Mario".into(),
            birth_date: Some(id::Date { year: 1985, month: 12, day: 10 }),
            sex: id::Sex::Male as i32,
            birth_province: "PI".into(),
            birth_municipality: "San Giuliano Terme".into(),
            birth_country: String::new(),
        }),
        residence: Some(id::Residence {
            place: Some(id::residence::Place::Italy(id::ItalianAddress {
                street: "Via Roma".into(),
                street_number: "1".into(),
                postal_code: "56017".into(),
                province: "PI".into(),
                municipality: "San Giuliano Terme".into(),
            })),
        }),
        contacts: Some(id::Contacts {
            mobile_phone: "+393331234567".into(),
            email: "mario.rossi@example.it".into(),
            preferred_time_slot: id::TimeSlot::Morning as i32,
            ..Default::default()
        }),
        first_half_channel: id::DeliveryChannel::Sms as i32,
    }
}
